//! Running a job's steps: one after the other in the file's order, or as a graph when some step
//! has `depends_on` (Woodpecker's rule), each step starting once those it depends on have ended
//! and running beside the others, its output lines prefixed with its name.
//!
//! Both orders decide, prepare and run a step the same way; only who waits for whom differs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::stream::{FuturesUnordered, StreamExt};
use raibid_model::{JobStatus, Outcome, StepResult, StepStatus};
use raibid_pipeline::{OnFailure, Pipeline, RunState, Step, StepKind, TriggerContext};
use raibid_queue::Claimed;
use tokio_util::sync::CancellationToken;

use super::{INTERRUPTED, LOST, Runner, StopReason, job_limit_reached, step_limit};
use crate::SecretStore;
use crate::env::is_reserved;
use crate::executor::{StepExit, StepSpec};
use crate::logsink::JobLog;

/// What every step of a job shares.
pub(super) struct StepContext<'a> {
    pub claimed: &'a Claimed,
    pub pipeline: &'a Pipeline,
    pub trigger: &'a TriggerContext,
    pub base_env: &'a BTreeMap<String, String>,
    pub workspace: &'a Path,
    pub home: &'a Path,
    pub private: &'a Path,
    pub read_only: &'a [PathBuf],
    /// The secrets of the job's repository and its owner (`raibid secret set`), opened.
    pub job_secrets: &'a raibid_queue::JobSecrets,
    /// The services' network, which `run` steps join.
    pub network: Option<String>,
    pub job_limit: Duration,
    pub job_deadline: Instant,
    pub stop: &'a CancellationToken,
    pub reason: &'a StopReason,
}

/// How one step ended, and what it does to the job.
struct StepRun {
    status: StepStatus,
    exit_code: Option<i32>,
    duration_ms: Option<u64>,
    tail: String,
    /// The job's status and reason, if this is its first failure.
    fails_job: Option<(JobStatus, String)>,
}

impl StepRun {
    fn failed(tail: String, status: JobStatus, reason: String) -> Self {
        StepRun {
            status: StepStatus::Failure,
            exit_code: None,
            duration_ms: None,
            tail,
            fails_job: Some((status, reason)),
        }
    }
}

/// A step ready to start: its environment and time limit.
struct Ready {
    env: BTreeMap<String, String>,
    timeout: Duration,
    /// Whether `timeout` is what is left of the job's time rather than the step's own.
    job_bound: bool,
}

/// A step's own failure in words: its exit code, signal or own time limit.
fn failure_of(exit: &StepExit, timeout: Duration) -> String {
    if exit.timed_out {
        return format!("timed out after {}s", timeout.as_secs());
    }
    match (exit.code, exit.signal) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "failed".to_owned(),
    }
}

/// The first failure makes the job's status and reason; later ones change neither.
fn fail(outcome: &mut Outcome, status: JobStatus, reason: String) {
    if outcome.status == JobStatus::Success {
        outcome.status = status;
        outcome.reason = Some(reason);
    }
}

fn state_of(outcome: &Outcome) -> RunState {
    if outcome.status == JobStatus::Success {
        RunState::Success
    } else {
        RunState::Failure
    }
}

fn apply(result: &mut StepResult, run: StepRun, outcome: &mut Outcome) {
    result.status = run.status;
    result.exit_code = run.exit_code;
    if run.duration_ms.is_some() {
        result.duration_ms = run.duration_ms;
    }
    result.tail = run.tail;
    if let Some((status, reason)) = run.fails_job {
        fail(outcome, status, reason);
    }
}

impl Runner {
    /// Steps one after the other, in the file's order.
    pub(super) async fn run_in_order(
        &self,
        ctx: &StepContext<'_>,
        results: &mut [StepResult],
        outcome: &mut Outcome,
        log: &mut JobLog,
    ) {
        for (i, step) in ctx.pipeline.steps.iter().enumerate() {
            let state = state_of(outcome);
            if !self.should_run(ctx, step, state, outcome, log).await {
                results[i].status = StepStatus::Skipped;
                continue;
            }
            let ready = match self.prepare(ctx, i, step, state, log).await {
                Ok(ready) => ready,
                Err(run) => {
                    apply(&mut results[i], run, outcome);
                    continue;
                }
            };
            results[i].status = StepStatus::Running;
            let _ = self.queue.record_progress(ctx.claimed, results).await;
            let run = self
                .run_step(ctx, step, ready, log, &mut outcome.images)
                .await;
            apply(&mut results[i], run, outcome);
            let _ = self.queue.record_progress(ctx.claimed, results).await;
        }
    }

    /// Steps as a graph: each starts once every step it depends on has ended (whatever its
    /// result), and steps without `depends_on` start at once. A step decides whether it runs
    /// when it starts, from how the job stands then: after a failure only steps with
    /// `when: status: failure` start, while steps already running go on to their end.
    pub(super) async fn run_graph(
        &self,
        ctx: &StepContext<'_>,
        results: &mut [StepResult],
        outcome: &mut Outcome,
        log: &mut JobLog,
    ) {
        let steps = &ctx.pipeline.steps;
        let index: HashMap<&str, usize> = steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let mut started = vec![false; steps.len()];
        let mut ended = vec![false; steps.len()];
        let mut running = FuturesUnordered::new();
        // The forks write beside this log from now on: nothing of it may be left to come later.
        log.finish().await;
        loop {
            // Skipping a step can free those that depend on it, so look until nothing changes.
            let mut changed = true;
            let mut any_started = false;
            while changed {
                changed = false;
                for (i, step) in steps.iter().enumerate() {
                    let waits = step
                        .depends_on
                        .iter()
                        .flatten()
                        .any(|d| !ended[index[d.as_str()]]);
                    if started[i] || waits {
                        continue;
                    }
                    started[i] = true;
                    changed = true;
                    let state = state_of(outcome);
                    if !self.should_run(ctx, step, state, outcome, log).await {
                        results[i].status = StepStatus::Skipped;
                        ended[i] = true;
                        continue;
                    }
                    results[i].status = StepStatus::Running;
                    any_started = true;
                    let fork = log.fork(&format!("[{}] ", step.name));
                    running.push(self.graph_step(ctx, i, step, state, fork));
                }
            }
            if any_started {
                let _ = self.queue.record_progress(ctx.claimed, results).await;
            }
            let Some((i, run, images)) = running.next().await else {
                break;
            };
            ended[i] = true;
            outcome.images.extend(images);
            apply(&mut results[i], run, outcome);
            let _ = self.queue.record_progress(ctx.claimed, results).await;
        }
    }

    /// One step of a graph, on a log of its own.
    async fn graph_step(
        &self,
        ctx: &StepContext<'_>,
        i: usize,
        step: &Step,
        state: RunState,
        mut log: JobLog,
    ) -> (usize, StepRun, Vec<String>) {
        let mut images = Vec::new();
        let run = match self.prepare(ctx, i, step, state, &mut log).await {
            Ok(ready) => self.run_step(ctx, step, ready, &mut log, &mut images).await,
            Err(run) => run,
        };
        log.finish().await;
        (i, run, images)
    }

    /// Whether `step` runs with the job in `state`; a step its `when` filters out says so.
    async fn should_run(
        &self,
        ctx: &StepContext<'_>,
        step: &Step,
        state: RunState,
        outcome: &Outcome,
        log: &mut JobLog,
    ) -> bool {
        if ctx.stop.is_cancelled()
            || outcome.status == JobStatus::Cancelled
            || !step.when.runs_in(state)
        {
            return false;
        }
        // Some block allows `state`, but none of those matches the trigger.
        if !step.when.runs(ctx.trigger, state) {
            log.line(&format!(
                "\x1b[2m- step {} skipped (when does not match)\x1b[0m",
                step.name
            ))
            .await;
            return false;
        }
        true
    }

    /// The step's secrets, environment and time limit; a step that cannot start fails here.
    /// `index` is its place among the pipeline's steps.
    async fn prepare(
        &self,
        ctx: &StepContext<'_>,
        index: usize,
        step: &Step,
        state: RunState,
        log: &mut JobLog,
    ) -> Result<Ready, StepRun> {
        let job = &ctx.claimed.job;
        if let Some(dir) = &step.directory
            && let Err(e) = step_directory(ctx.workspace, dir)
        {
            return Err(cannot_start(step, e, log).await);
        }
        // Those of `secrets:` by their own names, those of `env: { VAR: { from_secret } }`
        // under the step's.
        let mut names = step.secrets.clone();
        names.extend(step.secret_env.values().cloned());
        if let StepKind::Plugin { settings } = &step.kind {
            names.extend(settings.secrets());
        }
        let secrets = match self.secrets.resolve(job, &names, ctx.job_secrets) {
            Ok(s) => s,
            Err(e) => return Err(cannot_start(step, e.to_string(), log).await),
        };
        for value in secrets.values() {
            log.mask(value);
            // As a plugin's JSON setting holds it, should the plugin print that.
            if let StepKind::Plugin { .. } = &step.kind
                && let Ok(quoted) = serde_json::to_string(value)
                && quoted.len() > 2
                && quoted[1..quoted.len() - 1] != **value
            {
                log.mask(&quoted[1..quoted.len() - 1]);
            }
        }
        let mut env = ctx.base_env.clone();
        env.insert("RAIBID_JOB_STATUS".into(), state.as_str().into());
        env.insert("CI_STEP_NAME".into(), step.name.clone());
        env.insert("CI_STEP_NUMBER".into(), (index + 1).to_string());
        env.insert(
            "CI_STEP_STARTED".into(),
            chrono::Utc::now().timestamp().to_string(),
        );
        env.entry("CI_PIPELINE_STATUS".into())
            .or_insert_with(|| state.as_str().into());
        env.extend(
            step.env
                .iter()
                .filter(|(k, _)| !is_reserved(k))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        for (var, secret) in &step.secret_env {
            if let Some(value) = secrets.get(secret) {
                env.insert(var.clone(), value.clone());
            }
        }
        env.extend(SecretStore::variables(&step.secrets, &secrets));
        if let StepKind::Plugin { settings } = &step.kind {
            // Every secret they name was resolved above, or the step failed there.
            match settings.env(&|name| secrets.get(name).cloned()) {
                Ok(vars) => env.extend(vars),
                Err(e) => return Err(cannot_start(step, e, log).await),
            }
        }
        let remaining = ctx.job_deadline.saturating_duration_since(Instant::now());
        let (timeout, job_bound) = step_limit(step.timeout, remaining);
        if timeout.is_zero() {
            let why = job_limit_reached(ctx.job_limit);
            log.line(&format!("\x1b[31m✘ {}: {why}\x1b[0m", step.name))
                .await;
            return Err(StepRun::failed(
                String::new(),
                JobStatus::Failure,
                format!("step {} {why}", step.name),
            ));
        }
        Ok(Ready {
            env,
            timeout,
            job_bound,
        })
    }

    /// Runs a prepared step, again after a failure as its `retry` allows, and says how it
    /// ended, in the log and in the result.
    async fn run_step(
        &self,
        ctx: &StepContext<'_>,
        step: &Step,
        ready: Ready,
        log: &mut JobLog,
        images: &mut Vec<String>,
    ) -> StepRun {
        let Ready {
            mut env,
            mut timeout,
            mut job_bound,
        } = ready;
        let attempts = step.retry + 1;
        let first_start = Instant::now();
        let mut attempt = 1;
        loop {
            if attempts > 1 {
                env.insert("CI_STEP_ATTEMPT".into(), attempt.to_string());
            }
            log.start_tail();
            log.line(&format!(
                "\n\x1b[1;36m▶ step {}\x1b[0m \x1b[2m{}\x1b[0m",
                step.name,
                Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ))
            .await;
            let started = Instant::now();
            let result = self
                .run_once(ctx, step, env.clone(), timeout, log, images)
                .await;
            let elapsed = started.elapsed();
            // Only the step's own failure is worth another go.
            let retryable = matches!(&result, Ok(exit)
                if !(exit.success() || exit.cancelled || exit.timed_out && job_bound));
            if retryable && attempt < attempts && !ctx.stop.is_cancelled() {
                let remaining = ctx.job_deadline.saturating_duration_since(Instant::now());
                let (next, bound) = step_limit(step.timeout, remaining);
                if !next.is_zero() {
                    let Ok(exit) = &result else {
                        unreachable!("retryable")
                    };
                    log.line(&format!(
                        "\x1b[33m↻ {}: {} ({:.2}s); retrying, attempt {} of {attempts}\x1b[0m",
                        step.name,
                        failure_of(exit, timeout),
                        elapsed.as_secs_f64(),
                        attempt + 1
                    ))
                    .await;
                    attempt += 1;
                    (timeout, job_bound) = (next, bound);
                    continue;
                }
            }
            let mut run = self
                .verdict(ctx, step, result, timeout, job_bound, elapsed, log)
                .await;
            run.duration_ms = Some(first_start.elapsed().as_millis() as u64);
            return run;
        }
    }

    /// One run of the step's script or image build.
    async fn run_once(
        &self,
        ctx: &StepContext<'_>,
        step: &Step,
        env: BTreeMap<String, String>,
        timeout: Duration,
        log: &mut JobLog,
        images: &mut Vec<String>,
    ) -> Result<StepExit, String> {
        let job = &ctx.claimed.job;
        let (script, plugin) = match &step.kind {
            StepKind::Run { script } => (script.clone(), false),
            StepKind::Plugin { .. } => (String::new(), true),
            StepKind::ImageBuild(build) => {
                // `prepare` put the step's secrets, resolved, into its environment.
                let secrets = step
                    .secrets
                    .iter()
                    .filter_map(|name| env.get(name).map(|v| (name.clone(), v.clone())))
                    .collect();
                return self
                    .run_image_build(
                        job,
                        build,
                        ctx.workspace,
                        ctx.private,
                        timeout,
                        log,
                        ctx.stop,
                        images,
                        secrets,
                    )
                    .await;
            }
        };
        let spec = StepSpec {
            name: step.name.clone(),
            script,
            plugin,
            workspace: ctx.workspace.to_path_buf(),
            directory: step.directory.as_ref().map(PathBuf::from),
            home: Some(ctx.home.to_path_buf()),
            read_only: ctx.read_only.to_vec(),
            private: Some(ctx.private.to_path_buf()),
            env,
            timeout,
            image: step.image.clone().or_else(|| ctx.pipeline.image.clone()),
            pull: step.pull,
            untrusted: !self.secrets.trusts(job),
            network: ctx.network.clone(),
        };
        self.run_script(&spec, log, ctx.stop).await
    }

    /// How the step's last run ended, in the log (its result line) and as its result.
    #[allow(clippy::too_many_arguments)]
    async fn verdict(
        &self,
        ctx: &StepContext<'_>,
        step: &Step,
        result: Result<StepExit, String>,
        timeout: Duration,
        job_bound: bool,
        elapsed: Duration,
        log: &mut JobLog,
    ) -> StepRun {
        let mut run = StepRun {
            status: StepStatus::Success,
            exit_code: None,
            duration_ms: None,
            tail: log.tail(),
            fails_job: None,
        };
        match result {
            Ok(exit) if exit.success() => {
                run.exit_code = exit.code;
                log.line(&format!(
                    "\x1b[32m✔ {} ({:.2}s)\x1b[0m",
                    step.name,
                    elapsed.as_secs_f64()
                ))
                .await;
            }
            Ok(exit) => {
                run.exit_code = exit.code;
                // The job's own time running out is not the step's failure to ignore.
                let ignore = step.failure == OnFailure::Ignore
                    && !exit.cancelled
                    && !(exit.timed_out && job_bound);
                let why = if exit.cancelled {
                    run.status = StepStatus::Cancelled;
                    match ctx.reason.get() {
                        INTERRUPTED => "stopped: the agent is shutting down".to_owned(),
                        LOST => "stopped: the job was reassigned".to_owned(),
                        _ => "cancelled".to_owned(),
                    }
                } else if exit.timed_out && job_bound {
                    run.status = StepStatus::Failure;
                    job_limit_reached(ctx.job_limit)
                } else {
                    run.status = StepStatus::Failure;
                    failure_of(&exit, timeout)
                };
                let (colour, note) = if ignore {
                    ("33", ", ignored (failure: ignore)")
                } else {
                    ("31", "")
                };
                log.line(&format!(
                    "\x1b[{colour}m✘ {}: {why} ({:.2}s){note}\x1b[0m",
                    step.name,
                    elapsed.as_secs_f64()
                ))
                .await;
                if !ignore {
                    let status = if exit.cancelled {
                        JobStatus::Cancelled
                    } else {
                        JobStatus::Failure
                    };
                    run.fails_job = Some((status, format!("step {} {why}", step.name)));
                }
            }
            Err(message) => {
                run.status = StepStatus::Failure;
                log.line(&format!("\x1b[31m✘ {}: {message}\x1b[0m", step.name))
                    .await;
                run.fails_job = Some((JobStatus::Error, format!("step {}: {message}", step.name)));
            }
        }
        run
    }
}

/// A step that cannot start (its secrets, its directory): said in the log, and its result,
/// `error`, which the job's becomes.
async fn cannot_start(step: &Step, why: String, log: &mut JobLog) -> StepRun {
    log.line(&format!("\x1b[31m✘ step {}: {why}\x1b[0m", step.name))
        .await;
    let reason = format!("step {}: {why}", step.name);
    StepRun::failed(why, JobStatus::Error, reason)
}

/// Checks a step's `directory:` (relative, never `..`: the pipeline checked it) against the
/// workspace as the step finds it: a directory there, of the repository or made by an earlier
/// step, reached through no symbolic link, so that every executor starts the step in the same
/// place (a link would be followed on the host but resolved inside a sandbox or container).
fn step_directory(workspace: &Path, dir: &str) -> Result<(), String> {
    use std::path::Component;
    let mut path = workspace.to_path_buf();
    for component in Path::new(dir).components() {
        match component {
            Component::CurDir => continue,
            Component::Normal(name) => path.push(name),
            _ => return Err(format!("`directory: {dir}` leaves the workspace")),
        }
        let shown = path.strip_prefix(workspace).unwrap_or(&path).display();
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!(
                    "`directory: {dir}`: {shown} is a symbolic link; name the directory it \
                     points to"
                ));
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(format!("`directory: {dir}`: {shown} is not a directory")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "`directory: {dir}` is not in the workspace: give a directory of the \
                     repository, or one that an earlier step made"
                ));
            }
            Err(e) => return Err(format!("`directory: {dir}`: {shown}: {e}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod directory_tests {
    use super::*;

    #[test]
    fn a_step_directory_is_a_real_directory_of_the_workspace() {
        let ws = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(ws.path().join("apps/web")).unwrap();
        std::fs::write(ws.path().join("apps/file"), "").unwrap();
        std::os::unix::fs::symlink("/etc", ws.path().join("apps/etc")).unwrap();
        std::os::unix::fs::symlink("web", ws.path().join("apps/alias")).unwrap();
        assert_eq!(step_directory(ws.path(), "apps/web"), Ok(()));
        assert_eq!(step_directory(ws.path(), "./apps/web/"), Ok(()));
        for (dir, says) in [
            ("apps/etc", "apps/etc is a symbolic link"),
            ("apps/alias/x", "apps/alias is a symbolic link"),
            ("apps/file", "apps/file is not a directory"),
            ("apps/none", "is not in the workspace"),
            ("apps/../..", "leaves the workspace"),
        ] {
            let err = step_directory(ws.path(), dir).unwrap_err();
            assert!(err.contains(says), "{dir}: {err}");
        }
    }
}
