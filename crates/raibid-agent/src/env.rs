//! The environment a step sees: built from nothing, so the agent's own variables (tokens,
//! Redis URLs) never leak into a build.

use std::collections::BTreeMap;
use std::path::Path;

use raibid_model::Job;

use crate::checkout::CommitInfo;

/// Where a step's commands run, which decides what its environment must name.
#[derive(Debug, Clone, Copy)]
pub enum StepPlace<'a> {
    /// On the host's filesystem (host and bwrap executors): nothing is inherited, so the agent
    /// supplies `PATH`, the job's `HOME` and its toolchain variables (`RUSTUP_HOME`, ...).
    Host {
        workspace: &'a Path,
        home: &'a Path,
        path: &'a str,
        toolchain: &'a BTreeMap<String, String>,
    },
    /// In a container image, whose own `PATH`, `HOME` and toolchain variables must stand (the
    /// host's would hide `/usr/local/cargo/bin` of `rust:1`, say); the workspace is mounted at
    /// `workspace`.
    Image { workspace: &'a Path },
}

/// The environment every step of `job` starts from, before the pipeline's own `env`.
/// `public_url` is the server's address for people (`server.public_url`; empty: unknown).
pub fn step_base_env(
    job: &Job,
    place: StepPlace<'_>,
    public_url: &str,
) -> BTreeMap<String, String> {
    match place {
        StepPlace::Host {
            workspace,
            home,
            path,
            toolchain,
        } => {
            let mut env = job_env(job, workspace, public_url);
            env.insert("PATH".into(), path.into());
            env.insert("HOME".into(), home.to_string_lossy().into_owned());
            env.extend(toolchain.iter().map(|(k, v)| (k.clone(), v.clone())));
            env
        }
        StepPlace::Image { workspace } => job_env(job, workspace, public_url),
    }
}

/// Variables every step gets, named like Woodpecker's `CI_*` so existing scripts work, plus
/// `RAIBID_*` equivalents. `workspace` is the checkout as the step sees it; `public_url` the
/// server's address for people, for links to the job's page (empty: none).
pub(crate) fn job_env(job: &Job, workspace: &Path, public_url: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        env.insert(k.to_owned(), v.to_owned());
    };
    set("LANG", "C.UTF-8");
    set("CI", "true");
    set("RAIBID", "true");
    set("RAIBID_JOB_ID", &job.id);
    set("RAIBID_ATTEMPT", &job.attempt.to_string());
    set("RAIBID_REPO", &job.spec.repo);
    set("RAIBID_SHA", &job.spec.sha);
    set("RAIBID_REF", &job.spec.git_ref);
    set("RAIBID_EVENT", job.spec.event.as_str());
    set("RAIBID_POOL", job.spec.pool.as_str());
    set("RAIBID_WORKSPACE", &workspace.to_string_lossy());
    set("CI_REPO", &job.spec.repo);
    if let Some((owner, name)) = job.spec.repo.rsplit_once('/') {
        set("CI_REPO_OWNER", owner);
        set("CI_REPO_NAME", name);
    }
    // The workspace's `origin` already says it; Woodpecker's name for it.
    set("CI_REPO_CLONE_URL", &job.spec.clone_url);
    if let Some(forge) = job.spec.forge {
        set("CI_FORGE_TYPE", forge.as_str());
    }
    set("CI_SYSTEM_NAME", "raibid");
    set("CI_SYSTEM_VERSION", env!("CARGO_PKG_VERSION"));
    if let Some(agent) = &job.agent {
        set("CI_MACHINE", agent);
    }
    if let Some(page) = job.page_url(public_url) {
        set("CI_SYSTEM_URL", public_url.trim_end_matches('/'));
        set("CI_PIPELINE_URL", &page);
        // Woodpecker links each step; raibid's page holds them all.
        set("CI_STEP_URL", &page);
    }
    // Links to the forge, from the repository's web page a webhook named.
    if let Some(url) = &job.spec.repo_url {
        set("CI_REPO_URL", url);
        if let Some((scheme, rest)) = url.split_once("://") {
            let host = rest.split('/').next().unwrap_or_default();
            set("CI_FORGE_URL", &format!("{scheme}://{host}"));
        }
    }
    if let Some(url) = job.spec.forge_url() {
        set("CI_PIPELINE_FORGE_URL", &url);
    }
    set(
        "CI_PIPELINE_CREATED",
        &job.created_at.timestamp().to_string(),
    );
    if let Some(started) = job.started_at {
        set("CI_PIPELINE_STARTED", &started.timestamp().to_string());
    }
    set("CI_COMMIT_SHA", &job.spec.sha);
    set("CI_COMMIT_REF", &job.spec.git_ref);
    set("CI_PIPELINE_EVENT", job.spec.event.as_str());
    if let Some(number) = job.spec.number {
        set("CI_PIPELINE_NUMBER", &number.to_string());
    }
    set("CI_WORKSPACE", &workspace.to_string_lossy());
    // For a pull request the branch is the one it targets, as in Woodpecker.
    if let Some(branch) = job.build_branch() {
        set("RAIBID_BRANCH", branch);
        set("CI_COMMIT_BRANCH", branch);
    }
    if let Some(target) = job.spec.target_branch.as_deref() {
        set("RAIBID_TARGET_BRANCH", target);
        set("CI_COMMIT_TARGET_BRANCH", target);
    }
    if !job.spec.pr_labels.is_empty() {
        set(
            "CI_COMMIT_PULL_REQUEST_LABELS",
            &job.spec.pr_labels.join(","),
        );
    }
    if let Some(source) = job.spec.source_branch.as_deref() {
        set("CI_COMMIT_SOURCE_BRANCH", source);
        if let Some(target) = job.spec.target_branch.as_deref() {
            set("CI_COMMIT_REFSPEC", &format!("{source}:{target}"));
        }
    }
    if let Some(tag) = job.tag() {
        set("RAIBID_TAG", tag);
        set("CI_COMMIT_TAG", tag);
    }
    if let Some(pr) = job.spec.pr_number {
        set("RAIBID_PULL_REQUEST", &pr.to_string());
        set("CI_COMMIT_PULL_REQUEST", &pr.to_string());
    }
    // One workflow of `.raibid/` (Woodpecker's name for it).
    if let Some(workflow) = job.spec.env.get(crate::runner::WORKFLOW_ENV) {
        set("RAIBID_WORKFLOW", workflow);
        set("CI_WORKFLOW_NAME", workflow);
    }
    // Woodpecker's name for the cron job that started the pipeline.
    if let Some(schedule) = job.spec.schedule.as_deref() {
        set("RAIBID_SCHEDULE", schedule);
        set("CI_PIPELINE_CRON", schedule);
    }
    env
}

/// The longest `CI_COMMIT_MESSAGE`: a process's environment strings are bounded (128 KiB each
/// on Linux), and a step must not fail to start because of a long commit message.
const MAX_MESSAGE: usize = 16 * 1024;

/// Woodpecker's variables of the commit itself.
pub fn commit_env(commit: &CommitInfo) -> BTreeMap<String, String> {
    let mut message = commit.message.trim_end().to_owned();
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    let mut env = BTreeMap::new();
    env.insert("CI_COMMIT_MESSAGE".to_owned(), message);
    if !commit.author_name.is_empty() {
        env.insert("CI_COMMIT_AUTHOR".to_owned(), commit.author_name.clone());
    }
    if !commit.author_email.is_empty() {
        env.insert(
            "CI_COMMIT_AUTHOR_EMAIL".to_owned(),
            commit.author_email.clone(),
        );
    }
    if let Some(branch) = &commit.default_branch {
        env.insert("CI_REPO_DEFAULT_BRANCH".to_owned(), branch.clone());
    }
    env
}

/// What the agent learns about a job before its steps run, for their variables: its commit
/// (from git) and the repository's previous job of the same branch (from the queue).
#[derive(Debug, Default)]
pub struct JobFacts {
    pub commit: Option<CommitInfo>,
    pub previous: Option<Job>,
    /// The previous job's commit, when the workspace's repository has it (no fetch for it).
    pub previous_commit: Option<CommitInfo>,
    /// The files the commit changes compared with its base, when known without a fetch.
    pub changed_files: Option<Vec<String>>,
}

/// Past this many changed files `CI_PIPELINE_FILES` is not set, as Woodpecker leaves it empty
/// past 500.
const MAX_PIPELINE_FILES: usize = 500;
/// Nor past this much JSON: one environment string may not exceed 128 KiB on Linux.
const MAX_PIPELINE_FILES_BYTES: usize = 64 * 1024;

/// Woodpecker's `CI_PIPELINE_FILES`: the changed files as a JSON list of strings.
fn pipeline_files(files: &[String]) -> Option<String> {
    if files.len() > MAX_PIPELINE_FILES {
        return None;
    }
    serde_json::to_string(files)
        .ok()
        .filter(|json| json.len() <= MAX_PIPELINE_FILES_BYTES)
}

impl JobFacts {
    /// Their variables; `public_url` as for [`job_env`].
    pub fn env(&self, public_url: &str) -> BTreeMap<String, String> {
        let mut env = self.commit.as_ref().map(commit_env).unwrap_or_default();
        if let Some(files) = self.changed_files.as_deref().and_then(pipeline_files) {
            env.insert("CI_PIPELINE_FILES".to_owned(), files);
        }
        if let Some(previous) = &self.previous {
            env.extend(previous_env(previous, public_url));
            if let Some(commit) = &self.previous_commit {
                env.extend(
                    commit_env(commit)
                        .into_iter()
                        .filter_map(|(k, v)| {
                            Some((format!("CI_PREV_{}", k.strip_prefix("CI_")?), v))
                        })
                        .filter(|(k, _)| k.starts_with("CI_PREV_COMMIT_")),
                );
            }
        }
        env
    }
}

/// Woodpecker's `CI_PREV_*` variables of the previous job: notification steps compare its
/// status with this one's to say "fixed" or "still failing". Its commit's message and author
/// come from git ([`JobFacts::previous_commit`]).
fn previous_env(previous: &Job, public_url: &str) -> BTreeMap<String, String> {
    let spec = &previous.spec;
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        env.insert(format!("CI_PREV_{k}"), v);
    };
    if let Some(number) = spec.number {
        set("PIPELINE_NUMBER", number.to_string());
    }
    set("PIPELINE_STATUS", previous.status.as_str().to_owned());
    set("PIPELINE_EVENT", spec.event.as_str().to_owned());
    if let Some(page) = previous.page_url(public_url) {
        set("PIPELINE_URL", page);
    }
    if let Some(url) = spec.forge_url() {
        set("PIPELINE_FORGE_URL", url);
    }
    set(
        "PIPELINE_CREATED",
        previous.created_at.timestamp().to_string(),
    );
    if let Some(at) = previous.started_at {
        set("PIPELINE_STARTED", at.timestamp().to_string());
    }
    if let Some(at) = previous.finished_at {
        set("PIPELINE_FINISHED", at.timestamp().to_string());
    }
    set("COMMIT_SHA", spec.sha.clone());
    set("COMMIT_REF", spec.git_ref.clone());
    if let Some(branch) = previous.build_branch() {
        set("COMMIT_BRANCH", branch.to_owned());
    }
    if let Some(url) = spec.commit_url() {
        set("COMMIT_URL", url);
    }
    if let Some(target) = &spec.target_branch {
        set("COMMIT_TARGET_BRANCH", target.clone());
    }
    if let Some(source) = &spec.source_branch {
        set("COMMIT_SOURCE_BRANCH", source.clone());
        if let Some(target) = &spec.target_branch {
            set("COMMIT_REFSPEC", format!("{source}:{target}"));
        }
    }
    env
}

/// Env names that a pipeline or a manual submission may not override: they carry the agent's
/// own guarantees (where the checkout is, which commit it is).
pub fn is_reserved(name: &str) -> bool {
    name.starts_with("RAIBID_") && name != "RAIBID_MATRIX"
}

#[cfg(test)]
mod tests {
    use raibid_model::{Event, JobStatus, NewJob};

    use super::*;

    fn job() -> Job {
        let spec = NewJob::new(
            "acme/app",
            "http://x",
            "refs/heads/main",
            "0".repeat(40),
            Event::Push,
        );
        Job {
            status: JobStatus::Running,
            attempt: 1,
            ..Job::queued("01ARZ3NDEKTSV4RRFFQ69G5FAV", spec, Default::default())
        }
    }

    fn toolchain() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("RUSTUP_HOME".to_owned(), "/opt/rustup".to_owned()),
            ("CARGO_HOME".to_owned(), "/opt/cargo".to_owned()),
        ])
    }

    #[test]
    fn host_steps_get_the_agents_path_home_and_toolchain() {
        let toolchain = toolchain();
        let env = step_base_env(
            &job(),
            StepPlace::Host {
                workspace: Path::new("/var/lib/raibid/work/j-a1/src"),
                home: Path::new("/var/lib/raibid/work/j-a1/home"),
                path: "/opt/cargo/bin:/usr/bin:/bin",
                toolchain: &toolchain,
            },
            "",
        );
        assert_eq!(env["PATH"], "/opt/cargo/bin:/usr/bin:/bin");
        assert_eq!(env["HOME"], "/var/lib/raibid/work/j-a1/home");
        assert_eq!(env["RUSTUP_HOME"], "/opt/rustup");
        assert_eq!(env["CI_WORKSPACE"], "/var/lib/raibid/work/j-a1/src");
        assert_eq!(env["RAIBID_WORKSPACE"], "/var/lib/raibid/work/j-a1/src");
    }

    #[test]
    fn image_steps_keep_the_images_environment_and_name_the_mounted_workspace() {
        let env = step_base_env(
            &job(),
            StepPlace::Image {
                workspace: Path::new("/workspace"),
            },
            "",
        );
        for host_only in ["PATH", "HOME", "RUSTUP_HOME", "CARGO_HOME"] {
            assert!(!env.contains_key(host_only), "{host_only} in {env:?}");
        }
        assert_eq!(env["CI_WORKSPACE"], "/workspace");
        assert_eq!(env["RAIBID_WORKSPACE"], "/workspace");
        assert_eq!(env["CI_REPO"], "acme/app");
        assert_eq!(env["RAIBID_SHA"], "0".repeat(40));
    }

    #[test]
    fn a_pull_requests_branch_is_the_one_it_targets() {
        let mut pr = job();
        pr.spec.event = Event::PullRequest;
        pr.spec.git_ref = "refs/pull/7/head".into();
        pr.spec.pr_number = Some(7);
        pr.spec.target_branch = Some("main".into());
        let env = job_env(&pr, Path::new("/w"), "");
        assert_eq!(env["CI_COMMIT_BRANCH"], "main");
        assert_eq!(env["RAIBID_BRANCH"], "main");
        assert_eq!(env["CI_COMMIT_TARGET_BRANCH"], "main");
        assert_eq!(env["CI_COMMIT_PULL_REQUEST"], "7");
        assert!(
            !env.contains_key("CI_COMMIT_SOURCE_BRANCH"),
            "not given: not set"
        );
        let push = job_env(&job(), Path::new("/w"), "");
        assert_eq!(push["CI_COMMIT_BRANCH"], "main");
        assert!(!push.contains_key("CI_COMMIT_TARGET_BRANCH"));

        assert!(!job_env(&pr, Path::new("/w"), "").contains_key("CI_COMMIT_PULL_REQUEST_LABELS"));
        pr.spec.source_branch = Some("fix/typo".into());
        pr.spec.pr_labels = vec!["kind/bug".into(), "needs review".into()];
        let env = job_env(&pr, Path::new("/w"), "");
        assert_eq!(env["CI_COMMIT_SOURCE_BRANCH"], "fix/typo");
        assert_eq!(env["CI_COMMIT_REFSPEC"], "fix/typo:main");
        assert_eq!(
            env["CI_COMMIT_PULL_REQUEST_LABELS"],
            "kind/bug,needs review"
        );
    }

    #[test]
    fn links_name_the_job_s_page_and_the_forge_s() {
        let mut pr = job();
        pr.spec.event = Event::PullRequest;
        pr.spec.forge = Some(raibid_model::Forge::Forgejo);
        pr.spec.pr_number = Some(7);
        pr.spec.repo_url = Some("https://codeberg.example/acme/app".into());
        pr.agent = Some("spark-3".into());
        let env = job_env(&pr, Path::new("/w"), "https://ci.example/raibid/");
        let page = "https://ci.example/raibid/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV";
        assert_eq!(env["CI_PIPELINE_URL"], page);
        assert_eq!(env["CI_STEP_URL"], page);
        assert_eq!(env["CI_SYSTEM_URL"], "https://ci.example/raibid");
        assert_eq!(env["CI_SYSTEM_NAME"], "raibid");
        assert_eq!(env["CI_MACHINE"], "spark-3");
        assert_eq!(env["CI_REPO_URL"], "https://codeberg.example/acme/app");
        assert_eq!(env["CI_FORGE_URL"], "https://codeberg.example");
        assert_eq!(
            env["CI_PIPELINE_FORGE_URL"],
            "https://codeberg.example/acme/app/pulls/7"
        );
        assert_eq!(
            env["CI_PIPELINE_CREATED"], "0",
            "the test job's creation: the epoch"
        );
        // Without a public address or a forge's page: no links.
        let plain = job_env(&job(), Path::new("/w"), "");
        for link in [
            "CI_PIPELINE_URL",
            "CI_SYSTEM_URL",
            "CI_REPO_URL",
            "CI_PIPELINE_FORGE_URL",
        ] {
            assert!(!plain.contains_key(link), "{link}");
        }
    }

    #[test]
    fn the_clone_url_the_forge_and_the_number_are_named() {
        let mut gitea = job();
        gitea.spec.forge = Some(raibid_model::Forge::Gitea);
        gitea.spec.number = Some(42);
        let env = job_env(&gitea, Path::new("/w"), "");
        assert_eq!(env["CI_REPO_CLONE_URL"], "http://x");
        assert_eq!(env["CI_FORGE_TYPE"], "gitea");
        assert_eq!(env["CI_PIPELINE_NUMBER"], "42");
        let plain = job_env(&job(), Path::new("/w"), "");
        assert!(!plain.contains_key("CI_FORGE_TYPE") && !plain.contains_key("CI_PIPELINE_NUMBER"));
    }

    #[test]
    fn a_scheduled_job_names_its_event_and_schedule() {
        let mut nightly = job();
        nightly.spec.event = Event::Cron;
        nightly.spec.schedule = Some("nightly".into());
        let env = job_env(&nightly, Path::new("/w"), "");
        assert_eq!(env["CI_PIPELINE_EVENT"], "cron");
        assert_eq!(env["RAIBID_EVENT"], "cron");
        assert_eq!(env["CI_PIPELINE_CRON"], "nightly");
        assert_eq!(env["RAIBID_SCHEDULE"], "nightly");
        assert_eq!(env["CI_COMMIT_BRANCH"], "main");
        let push = job_env(&job(), Path::new("/w"), "");
        assert!(!push.contains_key("CI_PIPELINE_CRON") && !push.contains_key("RAIBID_SCHEDULE"));
    }

    #[test]
    fn the_previous_job_is_named_as_woodpecker_names_its_previous_pipeline() {
        let mut previous = job();
        previous.status = JobStatus::Failure;
        previous.spec.number = Some(41);
        previous.spec.repo_url = Some("https://git.example/acme/app".into());
        previous.started_at = Some(previous.created_at + chrono::Duration::seconds(2));
        previous.finished_at = Some(previous.created_at + chrono::Duration::seconds(60));
        let mut facts = JobFacts {
            commit: None,
            previous: Some(previous),
            previous_commit: None,
            changed_files: None,
        };
        let env = facts.env("https://ci.example");
        assert!(
            !env.contains_key("CI_PREV_COMMIT_MESSAGE"),
            "no commit read"
        );
        assert_eq!(env["CI_PREV_PIPELINE_NUMBER"], "41");
        assert_eq!(env["CI_PREV_PIPELINE_STATUS"], "failure");
        assert_eq!(env["CI_PREV_PIPELINE_EVENT"], "push");
        assert_eq!(
            env["CI_PREV_PIPELINE_URL"],
            "https://ci.example/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV"
        );
        assert_eq!(env["CI_PREV_PIPELINE_STARTED"], "2");
        assert_eq!(env["CI_PREV_PIPELINE_FINISHED"], "60");
        assert_eq!(env["CI_PREV_COMMIT_BRANCH"], "main");
        assert_eq!(env["CI_PREV_COMMIT_SHA"], "0".repeat(40));
        assert_eq!(
            env["CI_PREV_COMMIT_URL"],
            format!("https://git.example/acme/app/commit/{}", "0".repeat(40))
        );
        facts.previous_commit = Some(CommitInfo {
            message: "Break it\n".into(),
            author_name: "Ada".into(),
            author_email: "ada@example.org".into(),
            default_branch: Some("main".into()),
        });
        let env = facts.env("https://ci.example");
        assert_eq!(env["CI_PREV_COMMIT_MESSAGE"], "Break it");
        assert_eq!(env["CI_PREV_COMMIT_AUTHOR"], "Ada");
        assert_eq!(env["CI_PREV_COMMIT_AUTHOR_EMAIL"], "ada@example.org");
        assert!(!env.contains_key("CI_PREV_REPO_DEFAULT_BRANCH"));
        assert!(
            !env.contains_key("CI_COMMIT_MESSAGE"),
            "not this job's commit"
        );
        assert!(JobFacts::default().env("").is_empty());
    }

    #[test]
    fn changed_files_are_a_json_list_up_to_woodpecker_s_bound() {
        let facts = |files: Vec<String>| JobFacts {
            changed_files: Some(files),
            ..JobFacts::default()
        };
        let env = facts(vec!["src/main.rs".into(), "docs/a \"b\".md".into()]).env("");
        assert_eq!(
            env["CI_PIPELINE_FILES"],
            r#"["src/main.rs","docs/a \"b\".md"]"#
        );
        assert_eq!(facts(Vec::new()).env("")["CI_PIPELINE_FILES"], "[]");
        let many = (0..501).map(|i| format!("f{i}")).collect();
        assert!(!facts(many).env("").contains_key("CI_PIPELINE_FILES"));
        let long = (0..300)
            .map(|i| format!("{i}{}", "x".repeat(250)))
            .collect();
        assert!(!facts(long).env("").contains_key("CI_PIPELINE_FILES"));
        assert!(
            !JobFacts::default()
                .env("")
                .contains_key("CI_PIPELINE_FILES")
        );
    }

    #[test]
    fn the_commit_s_variables_are_bounded() {
        let mut commit = CommitInfo {
            message: "Fix it\n\nbody\n".into(),
            author_name: "Ada".into(),
            author_email: "ada@example.org".into(),
            default_branch: Some("trunk".into()),
        };
        let env = commit_env(&commit);
        assert_eq!(env["CI_COMMIT_MESSAGE"], "Fix it\n\nbody");
        assert_eq!(env["CI_COMMIT_AUTHOR"], "Ada");
        assert_eq!(env["CI_COMMIT_AUTHOR_EMAIL"], "ada@example.org");
        assert_eq!(env["CI_REPO_DEFAULT_BRANCH"], "trunk");
        commit.message = "é".repeat(MAX_MESSAGE);
        assert!(commit_env(&commit)["CI_COMMIT_MESSAGE"].len() <= MAX_MESSAGE);
        commit.author_name.clear();
        assert!(!commit_env(&commit).contains_key("CI_COMMIT_AUTHOR"));
    }
}
