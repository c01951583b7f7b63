//! `raibid pipeline check`: a `.raibid.yaml` (or the workflows of `.raibid/`) read exactly as
//! an agent reads it, before it is pushed (Woodpecker's `lint`, GitLab's CI lint), so a broken
//! file costs no job; without one, what the agent's autodetection would run.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use raibid_pipeline::{
    CloneOptions, Fetch, PIPELINE_DIR, PIPELINE_FILE, Pipeline, StepKind, Variables,
    WOODPECKER_DIR, WOODPECKER_FILES, WorkflowFile,
};

use crate::cli::PipelineCommand;

pub fn run(cmd: PipelineCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PipelineCommand::Check { file } => check(&file),
    }
}

fn check(file: &Path) -> anyhow::Result<ExitCode> {
    if file.is_dir() {
        let name = if file.file_name() == Some(WOODPECKER_DIR.as_ref()) {
            WOODPECKER_DIR
        } else {
            PIPELINE_DIR
        };
        return check_workflows(file, &workflows(file, name)?);
    }
    let is_pipeline_file = file.file_name() == Some(PIPELINE_FILE.as_ref());
    if is_pipeline_file {
        let root = file.parent().unwrap_or(Path::new(""));
        let dir = root.join(PIPELINE_DIR);
        let workflows = if dir.is_dir() {
            workflows(&dir, PIPELINE_DIR)?
        } else {
            Vec::new()
        };
        match (file.exists(), workflows.is_empty()) {
            (true, false) => {
                eprintln!(
                    "both {} and {} ({}) hold pipelines; an agent refuses the commit: keep one",
                    file.display(),
                    dir.display(),
                    workflows
                        .iter()
                        .map(|w| w.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return Ok(ExitCode::FAILURE);
            }
            (false, false) => return check_workflows(&dir, &workflows),
            (false, true) => return woodpecker_or_autodetected(root),
            (true, true) => {}
        }
    }
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    // One file of a `.raibid/`, checked alone: read as the agent reads a workflow.
    let dir = file.parent().and_then(Path::file_name);
    let in_woodpecker_dir = dir.is_some_and(|dir| dir == WOODPECKER_DIR);
    let in_workflows = in_woodpecker_dir || dir.is_some_and(|dir| dir == PIPELINE_DIR);
    let woodpecker = in_woodpecker_dir
        || file
            .file_name()
            .is_some_and(|name| WOODPECKER_FILES.iter().any(|w| name == *w));
    let shown = file.display().to_string();
    let parsed = match (woodpecker, in_workflows) {
        (true, workflow) => read_woodpecker(&shown, &bytes, workflow),
        (false, true) => raibid_pipeline::parse_workflow_bytes(&shown, &bytes),
        (false, false) => raibid_pipeline::parse_bytes(&shown, &bytes),
    };
    match parsed {
        Ok(pipeline) => {
            print!("{}", summary(&file.display().to_string(), &pipeline));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            // `file:line:column: message`, as the failed job's log would say it.
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Without raibid's files, an agent runs Woodpecker's (its directory first, then its single
/// file), and only without those autodetects.
fn woodpecker_or_autodetected(root: &Path) -> anyhow::Result<ExitCode> {
    let dir = root.join(WOODPECKER_DIR);
    if dir.is_dir() {
        let workflows = workflows(&dir, WOODPECKER_DIR)?;
        if !workflows.is_empty() {
            return check_workflows(&dir, &workflows);
        }
    }
    for name in WOODPECKER_FILES {
        let file = root.join(name);
        if file.is_file() {
            return check(&file);
        }
    }
    autodetected(root)
}

/// The workflow files of directory `dir` (a `.raibid/`, or `.woodpecker/`: `name`), as an
/// agent picks them.
fn workflows(dir: &Path, name: &'static str) -> anyhow::Result<Vec<WorkflowFile>> {
    let names = std::fs::read_dir(dir)
        .and_then(|entries| {
            entries
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .with_context(|| format!("listing {}", dir.display()))?;
    raibid_pipeline::workflow_files_in(name, &names).map_err(anyhow::Error::msg)
}

/// Each workflow of `dir` checked as an agent checks it: every error is printed, not only the
/// first, and any makes the exit code 1.
fn check_workflows(dir: &Path, workflows: &[WorkflowFile]) -> anyhow::Result<ExitCode> {
    if workflows.is_empty() {
        eprintln!("{}: no workflow files (*.yaml, *.yml)", dir.display());
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "{} workflow(s), one job each (one per variant of a matrix):",
        workflows.len()
    );
    let mut code = ExitCode::SUCCESS;
    let mut deps: Vec<Vec<String>> = Vec::new();
    for workflow in workflows {
        // `.raibid/x.yaml` names the file the way the agent's errors do; the path of `dir`
        // as given is what the reader can open.
        let path = dir.join(
            workflow
                .path
                .trim_start_matches(&format!("{}/", workflow.dir())),
        );
        let shown = path.display().to_string();
        let bytes = std::fs::read(&path).with_context(|| format!("reading {shown}"))?;
        let parsed = if workflow.dir() == WOODPECKER_DIR {
            read_woodpecker(&shown, &bytes, true)
        } else {
            raibid_pipeline::parse_workflow_bytes(&shown, &bytes)
        };
        match parsed {
            Ok(pipeline) => {
                print!("{}", summary(&shown, &pipeline));
                deps.push(pipeline.depends_on);
            }
            Err(e) => {
                eprintln!("{e}");
                code = ExitCode::FAILURE;
            }
        }
    }
    if deps.len() == workflows.len() {
        let names: Vec<&str> = workflows.iter().map(|w| w.name.as_str()).collect();
        let lists: Vec<&[String]> = deps.iter().map(Vec::as_slice).collect();
        if let Err(e) = raibid_pipeline::workflow_order(&names, &lists) {
            eprintln!("{}: {e}", dir.display());
            code = ExitCode::FAILURE;
        }
    }
    Ok(code)
}

/// A repository without a pipeline file: what the agent's autodetection makes of `root`.
fn autodetected(root: &Path) -> anyhow::Result<ExitCode> {
    let root = if root.as_os_str().is_empty() {
        Path::new(".")
    } else {
        root
    };
    let listing = raibid_agent::repo_listing(root).map_err(anyhow::Error::msg)?;
    match raibid_pipeline::autodetect(&listing) {
        Ok(detected) => {
            println!("{}", detected.explanation);
            print!("{}", summary("autodetected pipeline", &detected.pipeline));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: {e}", root.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// What the agent will run, one line per part.
/// A Woodpecker file as an agent reads it, but without a job: each `${NAME}` becomes `NAME`
/// (the job's variables are known only when it runs), its syntax checked all the same.
fn read_woodpecker(
    shown: &str,
    bytes: &[u8],
    workflow: bool,
) -> Result<Pipeline, raibid_pipeline::PipelineError> {
    let none = |_: &str| None;
    raibid_pipeline::parse_woodpecker_bytes(shown, bytes, workflow, &Variables::Known(&none))
}

/// What the checkout fetches besides the commit, in words; `None` for the commit alone.
fn clone_summary(clone: &CloneOptions) -> Option<String> {
    let mut parts = Vec::new();
    for (what, fetch, auto) in [
        ("tags", clone.tags, "tags on tag events"),
        ("submodules", clone.submodules, "submodules if it has any"),
        ("LFS files", clone.lfs, "LFS files if it has any"),
    ] {
        match fetch {
            Fetch::No => {}
            Fetch::Yes => parts.push(what.to_owned()),
            Fetch::Auto => parts.push(auto.to_owned()),
        }
    }
    (!parts.is_empty()).then(|| format!("the commit, {}", parts.join(", ")))
}

fn summary(name: &str, pipeline: &Pipeline) -> String {
    let mut out = format!("{name}: valid\n");
    let variants = pipeline.expand_matrix();
    if pipeline.matrix.is_some() {
        let _ = writeln!(out, "matrix: {} jobs", variants.len());
        for variant in &variants {
            let _ = writeln!(out, "  {}", variant.name);
        }
    }
    if !pipeline.when.is_empty() {
        out.push_str("when: runs only for jobs that match its `when`\n");
    }
    if let Some(clone) = clone_summary(&pipeline.clone) {
        let _ = writeln!(out, "clone: {clone}");
    }
    if let Some(pool) = &pipeline.pool {
        let _ = writeln!(out, "pool: runs on the agents of pool {pool}");
    }
    if let Some(group) = &pipeline.concurrency {
        let _ = writeln!(
            out,
            "concurrency: one job of the repository's group {group} runs at a time; the \
             others wait, oldest first"
        );
    }
    if !pipeline.depends_on.is_empty() {
        let _ = writeln!(
            out,
            "depends_on: starts after {} {}",
            pipeline.depends_on.join(", "),
            match (pipeline.runs_on_success, pipeline.runs_on_failure) {
                (true, true) => "have ended, however they ended",
                (false, _) => "have ended, only if one of them failed",
                (true, false) => "have succeeded",
            }
        );
    }
    if !pipeline.services.is_empty() {
        out.push_str("services:\n");
        for service in &pipeline.services {
            let _ = match &service.ready {
                Some(ready) => writeln!(
                    out,
                    "  {} ({}, ready when `{}` succeeds, waited for up to {} s)",
                    service.name,
                    service.image,
                    ready.run,
                    ready.timeout.as_secs()
                ),
                None => writeln!(out, "  {} ({})", service.name, service.image),
            };
        }
    }
    out.push_str(if pipeline.runs_as_graph() {
        "steps (side by side, each after those it depends on):\n"
    } else {
        "steps:\n"
    });
    for step in &pipeline.steps {
        let what = match &step.kind {
            StepKind::Run { .. } => match step.image.as_ref().or(pipeline.image.as_ref()) {
                Some(image) => format!("run in {image}"),
                None => "run".to_owned(),
            },
            StepKind::ImageBuild(build) => format!("image-build {}", build.tags.join(", ")),
            StepKind::Plugin { settings } if settings.is_empty() => {
                format!("plugin {}", step.image.as_deref().unwrap_or_default())
            }
            StepKind::Plugin { settings } => format!(
                "plugin {}, settings {settings}",
                step.image.as_deref().unwrap_or_default()
            ),
        };
        let when = if step.when.is_empty() {
            ""
        } else {
            ", with `when`"
        };
        let after = match &step.depends_on {
            Some(names) if !names.is_empty() => format!(", after {}", names.join(", ")),
            _ => String::new(),
        };
        let retry = match step.retry {
            0 => String::new(),
            n => format!(", retried up to {n} time(s)"),
        };
        let dir = match &step.directory {
            Some(dir) => format!(", in {dir}"),
            None => String::new(),
        };
        let _ = writeln!(out, "  {} ({what}{dir}{when}{after}{retry})", step.name);
    }
    let secrets = secrets_used(pipeline);
    if !secrets.is_empty() {
        out.push_str(
            "secrets (the repository's or its owner's, `raibid secret set`, or the agents' \
             agent.secrets):\n",
        );
        for (secret, uses) in &secrets {
            let _ = writeln!(out, "  {secret} ({})", uses.join("; "));
        }
    }
    if let Some(artifacts) = pipeline.artifacts.as_ref().filter(|a| !a.junit.is_empty()) {
        let _ = writeln!(
            out,
            "test reports (JUnit, read after the steps): {}",
            artifacts.junit.join(", ")
        );
    }
    if let Some(artifacts) = pipeline.artifacts.as_ref().filter(|a| !a.paths.is_empty()) {
        let _ = writeln!(
            out,
            "artifacts: {} ({}{})",
            artifacts.paths.join(", "),
            artifacts.when.as_str(),
            match artifacts.expire_in {
                Some(expire_in) => format!(", expire in {expire_in}"),
                None => String::new(),
            }
        );
    }
    out
}

/// Every secret the pipeline names, with where and as what: what must be set for it to run.
fn secrets_used(pipeline: &Pipeline) -> std::collections::BTreeMap<&str, Vec<String>> {
    let mut used: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for service in &pipeline.services {
        for name in &service.secrets {
            used.entry(name)
                .or_default()
                .push(format!("service {}", service.name));
        }
        for (var, name) in &service.secret_env {
            used.entry(name)
                .or_default()
                .push(format!("service {} as {var}", service.name));
        }
    }
    for step in &pipeline.steps {
        let build = matches!(step.kind, StepKind::ImageBuild(_));
        for name in &step.secrets {
            used.entry(name).or_default().push(if build {
                format!("step {}, build secret", step.name)
            } else {
                format!("step {}", step.name)
            });
        }
        for (var, name) in &step.secret_env {
            used.entry(name)
                .or_default()
                .push(format!("step {} as {var}", step.name));
        }
        if let StepKind::Plugin { settings } = &step.kind {
            for (var, name) in settings.secret_uses() {
                used.entry(name)
                    .or_default()
                    .push(format!("step {} in {var}", step.name));
            }
        }
    }
    used
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_steps_show_their_image_settings_and_secrets() {
        let pipeline = raibid_pipeline::parse(
            ".woodpecker.yaml",
            "steps:\n  - name: publish\n    image: woodpeckerci/plugin-docker-buildx\n    \
             settings:\n      repo: acme/app\n      password:\n        from_secret: pw\n  \
             - name: notify\n    image: acme/notify:1\n    directory: deploy\n",
        )
        .unwrap();
        let shown = summary(".woodpecker.yaml", &pipeline);
        assert!(
            shown.contains(
                "  publish (plugin woodpeckerci/plugin-docker-buildx, settings \
                 PLUGIN_PASSWORD, PLUGIN_REPO)\n  notify (plugin acme/notify:1, in deploy)\n"
            ),
            "{shown}"
        );
        assert!(
            shown.contains("  pw (step publish in PLUGIN_PASSWORD)\n"),
            "{shown}"
        );
    }

    #[test]
    fn the_summary_names_what_the_agent_will_run() {
        let pipeline = raibid_pipeline::parse(
            ".raibid.yaml",
            "image: rust:1\nmatrix:\n  RUST: [\"1.80\", \"1.85\"]\nservices:\n  - name: db\n    image: postgres:16\n    ready: pg_isready\n  - name: cache\n    image: redis:7\n  - name: app\n    image: app:distroless\n    ready: [/app, --health, \"db up\"]\nartifacts:\n  paths: [dist, report.xml]\n  expire_in: 3 weeks and 2 days\n  reports:\n    junit: report.xml\nsteps:\n  - name: test\n    run: cargo test\n  - name: image\n    when: {branch: main}\n    image-build:\n      tags: [\"{registry}/{repo}:{sha}-{matrix}\"]\n",
        )
        .unwrap();
        assert_eq!(
            summary(".raibid.yaml", &pipeline),
            ".raibid.yaml: valid\nmatrix: 2 jobs\n  RUST=1.80\n  RUST=1.85\nservices:\n  db (postgres:16, ready when `pg_isready` succeeds, waited for up to 60 s)\n  cache (redis:7)\n  app (app:distroless, ready when `/app --health \"db up\"` succeeds, waited for up to 60 s)\n\
             steps:\n  test (run in rust:1)\n  image (image-build {registry}/{repo}:{sha}-{matrix}, with `when`)\n\
             test reports (JUnit, read after the steps): report.xml\n\
             artifacts: dist, report.xml (on_success, expire in 23 days)\n"
        );
    }

    #[test]
    fn the_summary_lists_the_secrets_to_set() {
        let pipeline = raibid_pipeline::parse(
            ".raibid.yaml",
            "services:\n  - name: db\n    image: postgres:16\n    environment:\n      \
             POSTGRES_PASSWORD: { from_secret: db_password }\n\
             steps:\n  - name: test\n    secrets: [db_password]\n    run: cargo test\n  \
             - name: push\n    env: { DOCKER_PASSWORD: { from_secret: docker_password } }\n    \
             run: docker push\n  - name: image\n    secrets: [NPM_TOKEN]\n    \
             image-build: { tags: [x] }\n",
        )
        .unwrap();
        let text = summary(".raibid.yaml", &pipeline);
        let listed = text.split_once("agent.secrets):\n").unwrap().1;
        assert_eq!(
            listed,
            "  NPM_TOKEN (step image, build secret)\n  \
             db_password (service db as POSTGRES_PASSWORD; step test)\n  \
             docker_password (step push as DOCKER_PASSWORD)\n"
        );
    }

    #[test]
    fn the_summary_names_the_pool() {
        let pipeline = raibid_pipeline::parse(
            ".raibid.yaml",
            "pool: gpu\nsteps:\n  - name: t\n    run: t\n",
        )
        .unwrap();
        assert_eq!(
            summary(".raibid.yaml", &pipeline),
            ".raibid.yaml: valid\npool: runs on the agents of pool gpu\nsteps:\n  t (run)\n"
        );
    }

    #[test]
    fn the_summary_of_a_graph_says_what_waits_for_what() {
        let pipeline = raibid_pipeline::parse(
            ".raibid.yaml",
            "steps:\n  - name: a\n    run: a\n  - name: b\n    run: b\n    retry: 2\n  - name: c\n    depends_on: [a, b]\n    run: c\n",
        )
        .unwrap();
        assert_eq!(
            summary(".raibid.yaml", &pipeline),
            ".raibid.yaml: valid\nsteps (side by side, each after those it depends on):\n  a (run)\n  b (run, retried up to 2 time(s))\n  c (run, after a, b)\n"
        );
    }
}
