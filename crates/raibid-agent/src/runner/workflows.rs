//! Finding what a checkout runs (`.raibid.yaml`, the workflows of `.raibid/`, or what
//! autodetection makes of it), and queueing one job per workflow.
//!
//! A repository with several workflows runs like a matrix: the first job of a push reads
//! every workflow file, drops those whose `when` does not match, and queues one job per
//! workflow (per variant of a workflow's matrix) as its children. So workflows spread over
//! agents like any job, each has its own commit status, and the first job's status combines
//! theirs, as Woodpecker reports a pipeline of several workflows.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use raibid_model::{Job, JobStatus, Needs, NeedsVerdict, NewJob, Outcome};
use raibid_pipeline::{
    MAX_VARIANTS, PIPELINE_DIR, PIPELINE_FILE, Pipeline, TriggerContext, Variables, WOODPECKER_DIR,
    WOODPECKER_FILES, WorkflowFile,
};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Runner, error_outcome, repo_listing, unless_stopped, variant_specs, why_skipped};
use crate::logsink::JobLog;
use crate::workspace_file;

/// The job variable that names the workflow a job runs; set on the jobs the first one queues,
/// and accepted from a manual submission to run one workflow.
pub const WORKFLOW_ENV: &str = "RAIBID_WORKFLOW";

/// What a job found to run.
pub(super) enum Source {
    /// One pipeline: `.raibid.yaml`, the job's workflow, or autodetected.
    One(Box<Pipeline>),
    /// The workflows of `.raibid/`, for a job that names none: it queues them.
    Workflows(Vec<(WorkflowFile, Pipeline)>),
}

/// What `job` runs in `workspace`. Errors are ready for the log and the commit status (file,
/// line and column included). The agent reads these files itself, unsandboxed, so they are
/// read through [`workspace_file`]: no links, bounded size. `env` holds the variables a
/// Woodpecker file's `${NAME}` are substituted from (the `CI_*` ones and the job's own).
pub(super) async fn load(
    workspace: &Path,
    job: &Job,
    env: &BTreeMap<String, String>,
    log: &mut JobLog,
) -> Result<Source, String> {
    let (mut single, mut workflows) = (
        read(workspace, PIPELINE_FILE.to_owned())
            .await?
            .map(|bytes| (PIPELINE_FILE, bytes)),
        list_workflows(workspace, PIPELINE_DIR).await?,
    );
    let (file_shown, dir) = if single.is_none() && workflows.is_empty() {
        // A repository moving from Woodpecker runs its files as they are, in Woodpecker's
        // order: its directory, else its single file.
        workflows = list_workflows(workspace, WOODPECKER_DIR).await?;
        if workflows.is_empty() {
            for name in WOODPECKER_FILES {
                if let Some(bytes) = read(workspace, name.to_owned()).await? {
                    single = Some((name, bytes));
                    break;
                }
            }
        }
        if let Some((name, _)) = &single {
            log.line(&format!("no {PIPELINE_FILE}: running Woodpecker's {name}"))
                .await;
        } else if !workflows.is_empty() {
            log.line(&format!(
                "no {PIPELINE_FILE} or {PIPELINE_DIR}/: running the workflows of Woodpecker's \
                 {WOODPECKER_DIR}/"
            ))
            .await;
        }
        (
            single.as_ref().map_or(PIPELINE_FILE, |(name, _)| *name),
            WOODPECKER_DIR,
        )
    } else {
        (PIPELINE_FILE, PIPELINE_DIR)
    };
    if single.is_some() && !workflows.is_empty() {
        return Err(format!(
            "both {file_shown} and {dir}/ ({}) hold pipelines; keep one",
            list(&workflows)
        ));
    }
    if let Some(wanted) = job.spec.env.get(WORKFLOW_ENV) {
        let Some(file) = workflows.iter().find(|w| &w.name == wanted) else {
            return Err(if workflows.is_empty() {
                format!(
                    "the job runs workflow {wanted:?} ({WORKFLOW_ENV}), but the commit has no \
                     workflow files in {dir}/"
                )
            } else {
                format!(
                    "the job runs workflow {wanted:?} ({WORKFLOW_ENV}), which is not in \
                     {dir}/ ({})",
                    list(&workflows)
                )
            });
        };
        log.line(&format!("workflow {} ({})", file.name, file.path))
            .await;
        return parse(workspace, file, job, env)
            .await
            .map(|p| Source::One(Box::new(p)));
    }
    if let Some((name, bytes)) = single {
        let parsed = if WOODPECKER_FILES.contains(&name) {
            parse_woodpecker(name, &bytes, false, job, env)
        } else {
            raibid_pipeline::parse_bytes(name, &bytes).map_err(|e| e.to_string())
        };
        return parsed.map(|p| Source::One(Box::new(p)));
    }
    if !workflows.is_empty() {
        let mut parsed = Vec::with_capacity(workflows.len());
        // Every file is checked before anything is queued: a broken one fails the push
        // as a broken `.raibid.yaml` would, with its file, line and column.
        for file in workflows {
            let pipeline = parse(workspace, &file, job, env).await?;
            parsed.push((file, pipeline));
        }
        return Ok(Source::Workflows(parsed));
    }
    let root = workspace.to_path_buf();
    let listing = tokio::task::spawn_blocking(move || repo_listing(&root))
        .await
        .map_err(|e| format!("listing the workspace: {e}"))??;
    let detected = raibid_pipeline::autodetect(&listing).map_err(|e| e.to_string())?;
    log.line(&detected.explanation).await;
    Ok(Source::One(Box::new(detected.pipeline)))
}

/// The workflow files of `dir` in the checkout (none when it does not exist).
async fn list_workflows(workspace: &Path, dir: &'static str) -> Result<Vec<WorkflowFile>, String> {
    let root = workspace.to_path_buf();
    let names = tokio::task::spawn_blocking(move || workspace_file::list_dir(&root, dir))
        .await
        .map_err(|e| format!("listing {dir}/: {e}"))?
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    raibid_pipeline::workflow_files_in(dir, &names).map_err(|e| e.to_string())
}

async fn parse(
    workspace: &Path,
    file: &WorkflowFile,
    job: &Job,
    env: &BTreeMap<String, String>,
) -> Result<Pipeline, String> {
    // Listed a moment ago; gone now only if something else changed the checkout.
    let bytes = read(workspace, file.path.clone())
        .await?
        .ok_or_else(|| format!("{} disappeared while it was read", file.path))?;
    if file.dir() == WOODPECKER_DIR {
        parse_woodpecker(&file.path, &bytes, true, job, env)
    } else {
        raibid_pipeline::parse_workflow_bytes(&file.path, &bytes).map_err(|e| e.to_string())
    }
}

/// A Woodpecker file with its `${NAME}` substituted from `env`, and for a matrix variant's job
/// from the variant's values too, which only the file itself gives: it is read once with what
/// is known to find them. A matrix's first job, which only queues the variants, keeps that
/// reading.
fn parse_woodpecker(
    name: &str,
    bytes: &[u8],
    workflow: bool,
    job: &Job,
    env: &BTreeMap<String, String>,
) -> Result<Pipeline, String> {
    let parse = |variables: &Variables<'_>| {
        raibid_pipeline::parse_woodpecker_bytes(name, bytes, workflow, variables)
            .map_err(|e| e.to_string())
    };
    let known = |n: &str| env.get(n).cloned();
    let first = parse(&Variables::Known(&known))?;
    if first.matrix.is_none() {
        return parse(&Variables::Job(&known));
    }
    let Some(wanted) = job.spec.env.get("RAIBID_MATRIX") else {
        return Ok(first);
    };
    let Some(variant) = first
        .expand_matrix()
        .into_iter()
        .find(|v| &v.name == wanted)
    else {
        // The runner says that the variant is not in the matrix.
        return Ok(first);
    };
    let with_variant = |n: &str| variant.env.get(n).or_else(|| env.get(n)).cloned();
    parse(&Variables::Job(&with_variant))
}

/// [`workspace_file::read`] with the agent's size limit, off the async threads.
async fn read(workspace: &Path, name: String) -> Result<Option<Vec<u8>>, String> {
    let workspace = workspace.to_path_buf();
    tokio::task::spawn_blocking(move || {
        workspace_file::read(&workspace, &name, workspace_file::MAX_READ_BYTES)
    })
    .await
    .map_err(|e| format!("reading the pipeline: {e}"))?
    .map_err(|e| e.to_string())
}

fn list(workflows: &[WorkflowFile]) -> String {
    workflows
        .iter()
        .map(|w| w.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Runner {
    /// Queues a job for each workflow whose `when` matches (one per variant of a workflow's
    /// matrix); the outcome of `job`, which runs no step itself.
    pub(super) async fn queue_workflows(
        &self,
        job: &Job,
        workflows: &[(WorkflowFile, Pipeline)],
        workspace: &Path,
        mut trigger: TriggerContext,
        log: &mut JobLog,
        stop: &CancellationToken,
    ) -> Outcome {
        let dir = workflows
            .first()
            .map_or(PIPELINE_DIR, |(file, _)| file.dir());
        log.line(&format!(
            "{} workflow(s) in {dir}/: {}",
            workflows.len(),
            workflows
                .iter()
                .map(|(file, _)| file.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .await;
        if workflows.iter().any(|(_, p)| p.when.has_path()) {
            let context = self.path_context(
                job,
                workspace,
                "workflows with `when: path` run",
                &mut trigger,
                log,
            );
            if unless_stopped(stop, context).await.is_none() {
                return Outcome::new(JobStatus::Cancelled);
            }
        }
        let names: Vec<&str> = workflows.iter().map(|(f, _)| f.name.as_str()).collect();
        let deps: Vec<&[String]> = workflows
            .iter()
            .map(|(_, p)| p.depends_on.as_slice())
            .collect();
        let order = match raibid_pipeline::workflow_order(&names, &deps) {
            Ok(order) => order,
            Err(e) => return error_outcome(log, e).await,
        };
        let index = |name: &str| names.iter().position(|n| *n == name).unwrap_or_default();
        let mut runs = vec![true; workflows.len()];
        let mut skipped = Vec::new();
        for (i, (file, pipeline)) in workflows.iter().enumerate() {
            if let Some(keys) = pipeline.when.mismatch(&trigger) {
                let (why, _) = why_skipped(&keys, &trigger);
                log.line(&format!(
                    "\x1b[33mworkflow {} skipped: its `when` does not match ({why})\x1b[0m",
                    file.name
                ))
                .await;
                runs[i] = false;
                skipped.push(file.name.as_str());
            }
        }
        // A workflow waiting for one that does not run does not run either (as in Woodpecker):
        // it would either never start or start without what it waits for. In queueing order,
        // so what a skip causes further down is seen.
        for &i in &order {
            if !runs[i] {
                continue;
            }
            if let Some(dep) = deps[i].iter().find(|d| !runs[index(d)]) {
                log.line(&format!(
                    "\x1b[33mworkflow {} skipped: it depends on {dep}, which does not run\x1b[0m",
                    names[i]
                ))
                .await;
                runs[i] = false;
                skipped.push(names[i]);
            }
        }
        // One job per workflow, one per variant of a workflow's matrix; the variants are this
        // job's children too, not grandchildren: one level of jobs whose statuses this one's
        // combines.
        let mut planned: Vec<(usize, String, NewJob)> = Vec::new();
        for &i in order.iter().filter(|&&i| runs[i]) {
            let (file, pipeline) = &workflows[i];
            let mut base: NewJob = job.spec.clone();
            base.env.insert(WORKFLOW_ENV.into(), file.name.clone());
            let key = format!("workflow:{}:{}", job.id, file.name);
            for (variant, spec) in variant_specs(&base, pipeline, &key) {
                let label = match variant {
                    Some(variant) => format!("{} {variant}", file.name),
                    None => file.name.clone(),
                };
                planned.push((i, label, spec));
            }
        }
        if planned.len() > MAX_VARIANTS {
            return error_outcome(
                log,
                format!(
                    "the workflows in {dir}/ would queue {} jobs for this commit \
                     (their matrix variants included); at most {MAX_VARIANTS} are allowed",
                    planned.len()
                ),
            )
            .await;
        }
        if planned.is_empty() {
            log.line("\x1b[33mno workflow runs for this job\x1b[0m")
                .await;
            return Outcome::new(JobStatus::Success).with_reason(format!(
                "skipped: no workflow's when matches ({})",
                skipped.join(", ")
            ));
        }
        let mut ids = Vec::with_capacity(planned.len());
        let mut ids_of: Vec<Vec<String>> = vec![Vec::new(); workflows.len()];
        for (i, label, mut spec) in planned {
            let pipeline = &workflows[i].1;
            if !pipeline.depends_on.is_empty() {
                // Queued in dependency order, so the ids of what it waits for are known.
                spec.needs = Some(Needs {
                    workflows: pipeline.depends_on.clone(),
                    jobs: pipeline
                        .depends_on
                        .iter()
                        .flat_map(|d| ids_of[index(d)].iter().cloned())
                        .collect(),
                    on_failure: pipeline.runs_on_failure,
                    on_success: pipeline.runs_on_success,
                });
            }
            let id = match self
                .enqueue_child(job, &label, spec, "workflow job", log, stop)
                .await
            {
                Ok(id) => id,
                Err(outcome) => return outcome,
            };
            ids_of[i].push(id.clone());
            ids.push(id);
        }
        if let Err(outcome) = self
            .record_children(job, &ids, "workflow job", log, stop)
            .await
        {
            return outcome;
        }
        if workflows.iter().any(|(_, p)| !p.depends_on.is_empty()) {
            self.release_waiting(job, log).await;
        }
        let mut reason = format!(
            "{} workflow(s) queued as {} job(s): {}",
            workflows.len() - skipped.len(),
            ids.len(),
            ids.join(" ")
        );
        if !skipped.is_empty() {
            reason.push_str(&format!("; skipped: {}", skipped.join(", ")));
        }
        Outcome::new(JobStatus::Success).with_reason(reason)
    }

    /// Queues (or skips) the waiting children whose dependencies ended before they were
    /// recorded, which the server, looking when a child ends, may have missed. It looks again
    /// when this job has ended, so this only saves that wait.
    async fn release_waiting(&self, job: &Job, log: &mut JobLog) {
        let mut pause = Duration::from_millis(200);
        for attempt in 1..=6 {
            match self.queue.release_waiting(&job.id).await {
                Ok(released) => {
                    for r in released {
                        let what = match r.verdict {
                            NeedsVerdict::Run => "queued".to_owned(),
                            NeedsVerdict::Skip(reason) => reason,
                            NeedsVerdict::Wait => continue,
                        };
                        log.line(&format!("{}: {what}", r.id)).await;
                    }
                    return;
                }
                Err(e) if attempt < 6 => {
                    warn!(job = %job.id, error = %e, "cannot look at the waiting workflows yet");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) => {
                    warn!(job = %job.id, error = %e, "cannot look at the waiting workflows");
                    log.line(&format!(
                        "\x1b[33mcould not look whether the waiting workflows may start ({e}); \
                         the server looks again once this job has ended\x1b[0m"
                    ))
                    .await;
                }
            }
        }
    }
}
