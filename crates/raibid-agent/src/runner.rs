//! Runs one claimed job from checkout to ack.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use raibid_model::{Job, JobStatus, NewJob, Outcome, PoolName, StepResult, StepStatus};
use raibid_pipeline::{
    Cache, Fetch, GroupContext, PIPELINE_FILE, Pipeline, RepoListing, RunState, Service, StepKind,
    TagContext, TriggerContext,
};
use raibid_queue::{Claimed, Enqueued, GroupClaim, Heartbeat, Queue, QueueError, ReleaseResult};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::artifacts::ArtifactStore;
use crate::checkout::{Changes, GitCheckout};
use crate::env::{JobFacts, StepPlace, is_reserved, job_env, step_base_env};
use crate::executor::{Executor, ServiceGroup, ServicesSpec, StepExit, StepSpec};
use crate::image::{BuildRequest, ImageBuilder, ImageError};
use crate::job_cache::{JobCache, JobCacheError, Restored, Saved};
use crate::logsink::JobLog;
use crate::remove;
use crate::secrets::SecretStore;
use crate::workspace_file;
use crate::workspace_lock::{self, InUse};

mod outage;
mod steps;
mod workflows;

use outage::through_outage;
use workflows::Source;
pub use workflows::WORKFLOW_ENV;

/// Jobs without a `timeout:` stop after this, or after their longest step timeout if that is
/// longer; a step without a timeout of its own may take what is left of its job's.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// Everything a runner needs that does not change from job to job.
pub struct Runner {
    pub queue: Queue,
    pub executor: Arc<dyn Executor>,
    pub git: GitCheckout,
    pub images: Option<Arc<ImageBuilder>>,
    /// Where `artifacts:` go; `None`: this agent keeps none (no registry, or
    /// `agent.artifacts_max_bytes` is 0), which the job log says.
    pub artifacts: Option<ArtifactStore>,
    pub secrets: SecretStore,
    pub settings: RunnerSettings,
}

#[derive(Debug, Clone)]
pub struct RunnerSettings {
    pub agent_name: String,
    /// Per-job directories are created here and removed afterwards.
    pub workspace_root: PathBuf,
    pub keep_workspace: bool,
    pub heartbeat_interval: Duration,
    /// `PATH` given to steps that run on the host's filesystem (not to container steps, whose
    /// image has its own).
    pub step_path: String,
    /// Extra variables for steps on the host's filesystem (e.g. `RUSTUP_HOME` so toolchains
    /// work in a sandbox); container steps keep their image's instead.
    pub step_env: BTreeMap<String, String>,
    /// Value of `{registry}` in image tags.
    pub registry: String,
    /// The repositories whose jobs this agent runs (`agent.repos`).
    pub repos: crate::RepoFilter,
    /// The server's address for people (`server.public_url`): steps' `CI_PIPELINE_URL` links
    /// the job's page below it. Empty: not known, no links.
    pub public_url: String,
    /// The agent of one run (`raibid exec`), whose queue and registry go with it: the log
    /// does not say how to fetch a job's artifacts by its id later or when they expire.
    pub ephemeral: bool,
}

/// How a job left this agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    Acked(JobStatus),
    /// The claim was taken away while we ran (we were presumed dead); nothing was acked.
    Lost,
    /// Handed back unfinished (agent shutting down).
    Released(ReleaseResult),
    /// Waiting, `blocked`, for its concurrency group (the pipeline's `concurrency:`), held by
    /// another job: queued again when that ends. Nothing was acked.
    Parked,
}

const RUNNING: u8 = 0;
const CANCEL_REQUESTED: u8 = 1;
const LOST: u8 = 2;
const INTERRUPTED: u8 = 3;
const PARKED: u8 = 4;

/// Why the job's cancel token fired.
struct StopReason(AtomicU8);

impl StopReason {
    fn set(&self, reason: u8) {
        let _ = self
            .0
            .compare_exchange(RUNNING, reason, Ordering::SeqCst, Ordering::SeqCst);
    }
    fn get(&self) -> u8 {
        self.0.load(Ordering::SeqCst)
    }
}

impl Runner {
    /// Removes workspaces left by agents that died mid-job (SIGKILL, OOM, a lost node): the
    /// runner removes a workspace when its job ends, but a dead agent never gets there, and
    /// agents under `raibid up` share one workspace root. A directory `<job>-a<attempt>` is
    /// orphaned once that attempt can no longer be running: the job is gone, queued again,
    /// final, or on a later attempt, and no live process holds its lock (`workspace_lock`: the
    /// root may be shared with agents of another queue, whose jobs this queue does not know).
    /// A running attempt is left alone: it may be a live agent's
    /// (or a dead one the reaper has not requeued yet; the next sweep takes it). Best effort:
    /// Redis errors and racing deletions only postpone the cleanup. Returns how many were
    /// removed.
    pub async fn sweep_orphaned_workspaces(&self) -> usize {
        if self.settings.keep_workspace {
            return 0;
        }
        let Ok(mut dir) = tokio::fs::read_dir(&self.settings.workspace_root).await else {
            return 0;
        };
        let mut removed = 0;
        while let Ok(Some(entry)) = dir.next_entry().await {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if let Some(dir_name) = workspace_lock::locked_dir(name) {
                // The lock of a directory already gone, left by an agent that died between
                // removing the one and the other.
                let job_dir = self.settings.workspace_root.join(dir_name);
                if (parse_workspace_name(dir_name).is_some() || parse_slot_name(dir_name).is_some())
                    && !tokio::fs::try_exists(&job_dir).await.unwrap_or(true)
                    && let Ok(Some(lock)) = InUse::try_take(&job_dir)
                {
                    lock.release();
                }
                continue;
            }
            if parse_slot_name(name).is_some() {
                // A slot no live process holds is a dead agent's, whatever its job was.
                removed += usize::from(remove_unless_in_use(entry.path(), name).await);
                continue;
            }
            let Some((job_id, attempt)) = parse_workspace_name(name) else {
                continue;
            };
            let orphaned = match self.queue.get(job_id).await {
                Ok(None) => true,
                Ok(Some(job)) => job.status != JobStatus::Running || job.attempt != attempt,
                Err(e) => {
                    warn!(error = %e, "cannot check for orphaned workspaces now");
                    return removed;
                }
            };
            if !orphaned {
                continue;
            }
            // Only a directory no live process uses: another queue's agent may share this
            // root, and to this queue its jobs are unknown.
            removed += usize::from(remove_unless_in_use(entry.path(), name).await);
        }
        removed
    }

    /// The job's directory, locked (`None` when it could not be: logged). Jobs run in slots,
    /// `<workspace_root>/slot-<n>`, the first one no live process holds, as GitLab Runner
    /// reuses one build directory per concurrent job: an agent running one job at a time (an
    /// agent pod, `raibid up`'s pool one job after another) gives every job the same path, and
    /// tools that record absolute paths (cargo's fingerprints of dependencies, under the job's
    /// `HOME` or in the workspace) find them again after a `cache:` restore. The lock is taken
    /// before anything of the directory is touched and let go after it is gone, so no sweeper,
    /// of this queue or another, removes it in use; what a dead agent left in a free slot is
    /// removed first. With `keep_workspace` every attempt keeps a directory of its own,
    /// `<job>-a<attempt>`, so that the next job does not clear it.
    async fn take_job_dir(&self, job: &Job) -> (PathBuf, Option<InUse>) {
        let root = &self.settings.workspace_root;
        let per_attempt = root.join(format!("{}-a{}", job.id, job.attempt));
        if let Err(e) = tokio::fs::create_dir_all(root).await {
            warn!(job = %job.id, dir = %root.display(), error = %e, "cannot create the workspace root");
            return (per_attempt, None);
        }
        // Before a slot is taken: a dead agent's step may still be running in it.
        let swept = self.executor.sweep_orphans().await;
        if swept > 0 {
            info!(job = %job.id, swept, "removed steps that dead agents left running");
        }
        if !self.settings.keep_workspace {
            match take_slot(root).await {
                Ok(Some((dir, lock))) => return (dir, Some(lock)),
                Ok(None) => {
                    warn!(job = %job.id, slots = MAX_SLOTS, "every workspace slot is in use; the job gets a directory of its own")
                }
                Err(e) => {
                    warn!(job = %job.id, error = %e, "cannot take a workspace slot; the job gets a directory of its own")
                }
            }
        }
        let mut in_use = InUse::try_take(&per_attempt);
        // Held for a moment by a sweeper that found the lock before the directory existed;
        // it deletes the file, and a fresh one is then ours.
        for _ in 0..20 {
            if !matches!(in_use, Ok(None)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            in_use = InUse::try_take(&per_attempt);
        }
        let in_use = match in_use {
            Ok(Some(lock)) => Some(lock),
            Ok(None) => {
                warn!(job = %job.id, dir = %per_attempt.display(), "the job's directory is locked by another process");
                None
            }
            Err(e) => {
                warn!(job = %job.id, dir = %per_attempt.display(), error = %e, "cannot lock the job's directory");
                None
            }
        };
        (per_attempt, in_use)
    }

    /// Runs `claimed` to the end. `interrupt` fires when the agent must give the job back
    /// (shutdown grace period over): the step is stopped and the job released, not acked.
    pub async fn run(
        &self,
        claimed: Claimed,
        interrupt: CancellationToken,
    ) -> Result<JobEnd, QueueError> {
        let job = claimed.job.clone();
        let stop = CancellationToken::new();
        let reason = Arc::new(StopReason(AtomicU8::new(RUNNING)));
        let heartbeat = self.spawn_heartbeat(claimed.clone(), stop.clone(), reason.clone());
        let shutdown = interrupt.clone();
        let interrupt_watch = {
            let stop = stop.clone();
            let reason = reason.clone();
            tokio::spawn(async move {
                interrupt.cancelled().await;
                reason.set(INTERRUPTED);
                stop.cancel();
            })
        };

        let (job_dir, in_use) = self.take_job_dir(&job).await;
        let mut log = JobLog::new(self.queue.clone(), job.id.clone(), shutdown.clone());
        for secret in self.secrets.values() {
            log.mask(secret);
        }
        let outcome = self
            .execute(&claimed, &job_dir, &mut log, &stop, &reason)
            .await;
        log.finish().await;

        heartbeat.abort();
        interrupt_watch.abort();
        // The verdict goes to Redis before the workspace is removed: removing a large tree can
        // outlast `stale_after`, and without heartbeats the reaper would requeue a job that
        // has finished, so its result would be discarded and the job run again. An agent that
        // dies between the two leaves a final job's workspace, which the orphan sweeper takes.
        let end = self.end(&claimed, outcome, reason.get(), &shutdown).await;
        if !self.settings.keep_workspace
            && let Err(e) = remove_job_dir(job_dir.clone()).await
        {
            // Left on disk, it is the orphan sweeper's to retry.
            warn!(job = %job.id, dir = %job_dir.display(), error = %e, "cannot remove the job's directory");
        }
        if let Some(lock) = in_use {
            lock.release();
        }
        end
    }

    /// Acks the job, or releases it (interrupted), or leaves it (claim lost). An ack waits
    /// out a Redis outage unless the agent is shutting down (`shutdown`): a finished job whose
    /// verdict is not recorded is run again.
    async fn end(
        &self,
        claimed: &Claimed,
        mut outcome: Outcome,
        reason: u8,
        shutdown: &CancellationToken,
    ) -> Result<JobEnd, QueueError> {
        let job = &claimed.job;
        match reason {
            LOST => {
                warn!(job = %job.id, "claim lost while running; the job runs elsewhere");
                Ok(JobEnd::Lost)
            }
            PARKED => Ok(JobEnd::Parked),
            INTERRUPTED => {
                let result = self
                    .queue
                    .release(claimed, "agent shut down before the job finished")
                    .await?;
                Ok(JobEnd::Released(result))
            }
            CANCEL_REQUESTED => {
                outcome.status = JobStatus::Cancelled;
                outcome.reason = Some("cancelled".into());
                self.ack(claimed, &outcome, shutdown).await
            }
            _ => self.ack(claimed, &outcome, shutdown).await,
        }
    }

    async fn ack(
        &self,
        claimed: &Claimed,
        outcome: &Outcome,
        shutdown: &CancellationToken,
    ) -> Result<JobEnd, QueueError> {
        // A try that timed out may have landed; the queue answers the next as it did the first.
        let ack = || self.queue.ack(claimed, outcome);
        if through_outage(&claimed.job.id, "recording the job's end", shutdown, ack).await? {
            Ok(JobEnd::Acked(outcome.status))
        } else {
            Ok(JobEnd::Lost)
        }
    }

    fn spawn_heartbeat(
        &self,
        claimed: Claimed,
        stop: CancellationToken,
        reason: Arc<StopReason>,
    ) -> tokio::task::JoinHandle<()> {
        let queue = self.queue.clone();
        let every = self.settings.heartbeat_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                match queue.heartbeat(&claimed).await {
                    Ok(Heartbeat::Continue) => {}
                    Ok(Heartbeat::CancelRequested) => {
                        reason.set(CANCEL_REQUESTED);
                        stop.cancel();
                    }
                    Ok(Heartbeat::Lost) => {
                        reason.set(LOST);
                        stop.cancel();
                        return;
                    }
                    // Redis away: keep running; if it stays away long enough the reaper
                    // requeues the job and the next heartbeat says so.
                    Err(e) => warn!(job = %claimed.job.id, error = %e, "heartbeat failed"),
                }
            }
        })
    }

    async fn execute(
        &self,
        claimed: &Claimed,
        job_dir: &Path,
        log: &mut JobLog,
        stop: &CancellationToken,
        reason: &StopReason,
    ) -> Outcome {
        let job = &claimed.job;
        log.line(&format!(
            "\x1b[1mraibid\x1b[0m job {} attempt {} on agent {} ({}, {})",
            job.id,
            job.attempt,
            self.settings.agent_name,
            self.executor.name(),
            Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ))
        .await;
        log.line(&format!(
            "{} {} at {}",
            job.spec.repo, job.spec.git_ref, job.spec.sha
        ))
        .await;

        if !self.settings.repos.allows(&job.spec.repo) {
            return error_outcome(
                log,
                format!(
                    "repository {} may not run on agent {}: it is not in agent.repos ({})",
                    job.spec.repo,
                    self.settings.agent_name,
                    self.settings.repos.globs().join(", ")
                ),
            )
            .await;
        }
        let workspace = job_dir.join("src");
        let home = job_dir.join("home");
        // The agent's own files about the steps and builds (crate::private_dir): never handed
        // to the step user, never bound into a sandbox.
        let private = job_dir.join("agent");
        let created = tokio::fs::create_dir_all(&home).await.and_then(|()| {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().mode(0o700).create(&private)
        });
        if let Err(e) = created {
            return error_outcome(log, format!("cannot create the job directory: {e}")).await;
        }
        // The checkout and the fetches after it are network git commands that may stall for up
        // to their own timeout; a cancel, a shutdown or a lost claim must not wait for them
        // (dropping the future kills the git process group).
        let stopped = || Outcome::new(JobStatus::Cancelled);
        let Some(checkout) = unless_stopped(stop, self.git.checkout(job, &workspace)).await else {
            return stopped();
        };
        let borrowed = match &checkout {
            Ok(report) => vec![report.objects.clone()],
            Err(_) => Vec::new(),
        };
        match checkout {
            Ok(report) => {
                let how = match (report.mirror_created, report.fetched) {
                    (true, _) => "new mirror",
                    (false, true) => "mirror fetched",
                    (false, false) => "mirror already had the commit",
                };
                log.line(&format!(
                    "checked out {} in {:.2}s ({how})",
                    short(&job.spec.sha),
                    report.duration.as_secs_f64()
                ))
                .await;
            }
            Err(e) => return error_outcome(log, format!("checkout failed: {e}")).await,
        }

        let mut trigger = TriggerContext::new(
            job.spec.event,
            job.build_branch().map(str::to_owned),
            job.tag().map(str::to_owned),
        );
        trigger.git_ref = Some(job.spec.git_ref.clone());
        trigger.repo = Some(job.spec.repo.clone());
        trigger.cron = job.spec.schedule.clone();
        trigger.platform = crate::image::Platform::native().map(|p| p.to_string());
        // Before the workspace goes to the step user, as git reads it (see below). The facts
        // are independent git processes and Redis reads, all before the first step: side by
        // side, the job waits for the slowest rather than for their sum.
        let commit = async {
            let (info, default_branch) = tokio::join!(
                self.git.commit_info(&workspace, &job.spec.sha),
                self.git.default_branch(job)
            );
            match info {
                Ok(mut commit) => {
                    commit.default_branch = default_branch;
                    Some(commit)
                }
                Err(e) => {
                    warn!(job = %job.id, error = %e, "cannot read the commit's message and author");
                    None
                }
            }
        };
        let previous = async {
            let previous = self.previous_job(job, stop).await;
            // Only from what the workspace's repository has: a commit pushed away is not
            // fetched for a variable.
            let commit = match &previous {
                Some(previous) => self
                    .git
                    .commit_info(&workspace, &previous.spec.sha)
                    .await
                    .ok(),
                None => None,
            };
            (previous, commit)
        };
        let changed = async {
            match self.git.changed_files_at_hand(job, &workspace).await {
                Changes::Known(files) => Some(files),
                Changes::Unknown(_) => None,
            }
        };
        let (commit, (previous, previous_commit), changed_files) =
            tokio::join!(commit, previous, changed);
        trigger.message = commit.as_ref().map(|c| c.message.clone());
        // A job queued without a title (a submission, a schedule) shows its commit's subject,
        // as a webhook's does; the jobs it queues (variants, workflows, another pool's) keep it.
        let titled;
        let job = match (&job.spec.title, &commit) {
            (None, Some(commit)) => match raibid_model::title_line(&commit.message) {
                Some(title) => {
                    if let Err(e) = self.queue.record_title(claimed, &commit.message).await {
                        warn!(job = %job.id, error = %e, "cannot record the job's title");
                    }
                    let mut with_title = job.clone();
                    with_title.spec.title = Some(title);
                    titled = with_title;
                    &titled
                }
                None => job,
            },
            _ => job,
        };
        // What `when: path` compares with, when known without a fetch (see `path_context`).
        trigger.changed_files = changed_files.clone();
        let facts = JobFacts {
            commit,
            previous,
            previous_commit,
            changed_files,
        };
        trigger.env = self.expression_env(job, &workspace, &facts);
        // A Woodpecker file's `${NAME}` are substituted from these variables as it is read.
        let source = match workflows::load(&workspace, job, &trigger.env, log).await {
            Ok(source) => source,
            Err(message) => return error_outcome(log, message).await,
        };
        let pipeline = match source {
            Source::One(pipeline) => *pipeline,
            Source::Workflows(workflows) => {
                return self
                    .queue_workflows(job, &workflows, &workspace, trigger, log, stop)
                    .await;
            }
        };
        // The first delivery of a matrix job only queues its variants, which compare for
        // their own steps; the pipeline's `when` needs the changes before that.
        let queues_variants =
            pipeline.matrix.is_some() && !job.spec.env.contains_key("RAIBID_MATRIX");
        let step_paths = !queues_variants && pipeline.steps.iter().any(|s| s.when.has_path());
        // Before the workspace goes to the step user: git refuses a repository another user
        // owns (`safe.directory`).
        if step_paths || pipeline.when.has_path() {
            let what = match (pipeline.when.has_path(), step_paths) {
                (true, true) => "the pipeline and steps with `when: path` run",
                (true, false) => "the pipeline runs",
                _ => "steps with `when: path` run",
            };
            let Some(()) = unless_stopped(
                stop,
                self.path_context(job, &workspace, what, &mut trigger, log),
            )
            .await
            else {
                return stopped();
            };
        }
        // Decided before anything else is fetched, restored or queued: a pipeline that does
        // not run for this job runs nothing, a matrix's variants included.
        if let Some(keys) = pipeline.when.mismatch(&trigger) {
            return skip_pipeline(&pipeline, &keys, &trigger, log).await;
        }
        // A pipeline for another pool's agents runs there, as a job of its own; a matrix's
        // variants are queued there directly, below.
        if let Some(pool) = &pipeline.pool
            && *pool != job.spec.pool
            && !queues_variants
        {
            return self.move_to_pool(job, pool, log, stop).await;
        }
        if !pipeline.interruptible {
            match self.queue.mark_uninterruptible(claimed).await {
                Ok(Heartbeat::Continue) => {
                    log.line(
                        "interruptible: false: a newer build of this ref will not cancel this one",
                    )
                    .await;
                }
                Ok(Heartbeat::CancelRequested) => {
                    reason.set(CANCEL_REQUESTED);
                    stop.cancel();
                    return stopped();
                }
                Ok(Heartbeat::Lost) => {
                    reason.set(LOST);
                    stop.cancel();
                    return stopped();
                }
                // Without the mark a newer build may cancel this one; failing a deployment
                // over a Redis hiccup would be no better, and while Redis is away nothing can
                // cancel it anyway.
                Err(e) => {
                    warn!(job = %job.id, error = %e, "cannot record interruptible: false");
                    log.line(&format!(
                        "interruptible: false could not be recorded ({e}): a newer build of \
                         this ref may cancel this one"
                    ))
                    .await;
                }
            }
        }
        // `Fetch::Auto` (Woodpecker's defaults): submodules when the commit has a
        // `.gitmodules`, tags for a tag, LFS files when some file is in LFS.
        let submodules = pipeline.clone.submodules.wanted(|| {
            std::fs::symlink_metadata(workspace.join(".gitmodules")).is_ok_and(|m| m.is_file())
        });
        if submodules {
            match unless_stopped(stop, self.git.update_submodules(job, &workspace)).await {
                None => return stopped(),
                Some(Err(e)) => return error_outcome(log, format!("submodules: {e}")).await,
                Some(Ok(())) => {}
            }
        }
        let tags = pipeline
            .clone
            .tags
            .wanted(|| job.spec.git_ref.starts_with("refs/tags/"));
        if tags {
            match unless_stopped(stop, self.git.fetch_tags(job, &workspace)).await {
                None => return stopped(),
                Some(Err(e)) => return error_outcome(log, format!("tags: {e}")).await,
                Some(Ok(())) => {}
            }
        }
        let lfs = match pipeline.clone.lfs {
            Fetch::Auto => match unless_stopped(stop, self.git.uses_lfs(&workspace)).await {
                None => return stopped(),
                Some(Err(e)) => return error_outcome(log, format!("git lfs: {e}")).await,
                Some(Ok(uses)) => uses,
            },
            fetch => fetch == Fetch::Yes,
        };
        if lfs {
            match unless_stopped(stop, self.git.lfs_pull(job, &workspace)).await {
                None => return stopped(),
                // The error says when git-lfs is missing (GitCheckout::lfs_pull), and only then.
                Some(Err(e)) if pipeline.clone.lfs == Fetch::Auto => {
                    let why = format!(
                        "git lfs: {e} (Woodpecker's clone fetches a repository's LFS files \
                         unless its settings say `lfs: false`)"
                    );
                    return error_outcome(log, why).await;
                }
                Some(Err(e)) => return error_outcome(log, format!("git lfs: {e}")).await,
                Some(Ok(())) => {}
            }
        }

        if pipeline.skip_clone {
            let emptied = {
                let workspace = workspace.clone();
                tokio::task::spawn_blocking(move || empty_dir(&workspace))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            };
            if let Err(e) = emptied {
                return error_outcome(log, format!("skip_clone: emptying the workspace: {e}"))
                    .await;
            }
            log.line("skip_clone: the steps start in an empty workspace")
                .await;
        }
        let variant_env = match self.matrix_variant(job, &pipeline, log, stop).await {
            MatrixStep::Run(env) => env,
            MatrixStep::Expanded(outcome) => return outcome,
        };
        trigger.matrix.clone_from(&variant_env);
        if let Some(template) = &pipeline.concurrency {
            let group = raibid_pipeline::concurrency_group(
                template,
                &GroupContext {
                    branch: job.build_branch().map(str::to_owned),
                    git_ref: job.spec.git_ref.clone(),
                    event: job.spec.event,
                    matrix: job.spec.env.get("RAIBID_MATRIX").cloned(),
                },
            );
            match self.take_group(claimed, &group, log, stop).await {
                Ok(None) => {}
                Ok(Some(stop_reason)) => {
                    reason.set(stop_reason);
                    if stop_reason != PARKED {
                        stop.cancel();
                    }
                    return stopped();
                }
                Err(outcome) => return outcome,
            }
        }
        // Restored before the workspace goes to the step user, so the hand-over below gives
        // the restored files to it too.
        let cache = self.cache_key(job, &pipeline, log).await;
        if let Some((cache, key)) = &cache
            && cache.policy.pulls()
        {
            self.restore_cache(job, cache, key, &workspace, stop, log)
                .await;
        }
        if let Some(user) = self.executor.step_user() {
            let (src, home_dir) = (workspace.clone(), home.clone());
            let given = tokio::task::spawn_blocking(move || {
                user.give(&src)?;
                user.give(&home_dir)
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            if let Err(e) = given {
                return error_outcome(
                    log,
                    format!("cannot give the workspace to the step user {user}: {e}"),
                )
                .await;
            }
        }
        let mut outcome = self
            .run_steps(
                claimed,
                &pipeline,
                &trigger,
                &facts,
                variant_env,
                &workspace,
                &home,
                &private,
                &borrowed,
                log,
                stop,
                reason,
            )
            .await;
        if let Some(artifacts) = &pipeline.artifacts {
            self.read_test_reports(job, artifacts, &workspace, &mut outcome, stop, log)
                .await;
            self.keep_artifacts(
                job,
                artifacts,
                &workspace,
                &private,
                &mut outcome,
                stop,
                log,
            )
            .await;
        }
        if let Some((cache, key)) = &cache
            && cache.policy.pushes()
        {
            self.save_cache(job, cache, key, &workspace, &outcome, stop, log)
                .await;
        }
        outcome
    }

    /// The pipeline's cache and its key for this job, when the cache is to be used at all; the
    /// log says why not when it is not.
    async fn cache_key(
        &self,
        job: &Job,
        pipeline: &Pipeline,
        log: &mut JobLog,
    ) -> Option<(Cache, String)> {
        let cache = pipeline.cache.as_ref()?;
        if !self.git.job_cache().enabled() {
            log.line("cache: off on this agent (agent.job_cache_max_bytes is 0)")
                .await;
            return None;
        }
        // A fork's pipeline is anyone's code: restoring would hand it what trusted builds left
        // in cached paths (binaries built with secrets, tokens a tool wrote under `target/`),
        // the way secrets and the registry's layer cache are withheld from it.
        if !self.secrets.trusts(job) {
            log.line(
                "cache: not used: pull requests from forks get no cache unless \
                 agent.secrets_for_forks is on",
            )
            .await;
            return None;
        }
        let ctx = TagContext {
            registry: self.settings.registry.clone(),
            repo: job.spec.repo.clone(),
            sha: job.spec.sha.clone(),
            // The branch the build is about: a pull request's first build starts from the
            // cache of the branch it targets (a trusted fork's only reads it: see
            // `save_cache`).
            branch: job.build_branch().map(str::to_owned),
            tag: job.tag().map(str::to_owned),
            matrix: job.spec.env.get("RAIBID_MATRIX").cloned(),
        };
        match cache.render_key(&ctx) {
            Ok(key) => Some((cache.clone(), key)),
            Err(e) => {
                warn!(job = %job.id, error = %e, "cache not used");
                log.line(&format!("\x1b[33mcache: not used: {e}\x1b[0m"))
                    .await;
                None
            }
        }
    }

    /// Runs `op` (restore or save) on the job's cache entry off the async threads: it copies
    /// whole directory trees.
    async fn in_job_cache<T: Send + 'static>(
        &self,
        job: &Job,
        cache: &Cache,
        key: &str,
        workspace: &Path,
        stop: &CancellationToken,
        op: CacheOp<T>,
    ) -> Result<T, JobCacheError> {
        let store = self.git.job_cache();
        let (repo, key, paths, workspace, stop) = (
            job.spec.repo.clone(),
            key.to_owned(),
            cache.paths.clone(),
            workspace.to_path_buf(),
            stop.clone(),
        );
        tokio::task::spawn_blocking(move || op(&store, &repo, &key, &paths, &workspace, &stop))
            .await
            .unwrap_or_else(|e| Err(join_error(e)))
    }

    /// Copies the cache into the workspace. A miss is normal and a failure only costs time:
    /// neither fails the job.
    async fn restore_cache(
        &self,
        job: &Job,
        cache: &Cache,
        key: &str,
        workspace: &Path,
        stop: &CancellationToken,
        log: &mut JobLog,
    ) {
        let started = Instant::now();
        let result = self
            .in_job_cache(job, cache, key, workspace, stop, JobCache::restore)
            .await;
        match result {
            Ok(Restored::Miss) => {
                log.line(&format!("cache: nothing saved under key {key:?} yet"))
                    .await;
            }
            Ok(Restored::Hit {
                paths,
                skipped,
                size,
                saved_at,
            }) => {
                for s in &skipped {
                    log.line(&format!(
                        "\x1b[33mcache: {} not restored: {}\x1b[0m",
                        s.path, s.why
                    ))
                    .await;
                }
                log.line(&format!(
                    "cache: restored {} from key {key:?} ({}, saved {}) in {:.2}s",
                    listed(&paths),
                    human_size(size),
                    saved_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    started.elapsed().as_secs_f64()
                ))
                .await;
            }
            Err(e) => {
                warn!(job = %job.id, error = %e, "cache not restored");
                log.line(&format!("\x1b[33mcache: not restored: {e}\x1b[0m"))
                    .await;
            }
        }
    }

    /// Saves the workspace's cache paths, as GitLab's default `when: on_success`: only after
    /// every step passed, and never for a pull request from a fork, whose pipeline is anyone's
    /// code: what it saved, the next build of the branch it targets would restore and run.
    #[allow(clippy::too_many_arguments)]
    async fn save_cache(
        &self,
        job: &Job,
        cache: &Cache,
        key: &str,
        workspace: &Path,
        outcome: &Outcome,
        stop: &CancellationToken,
        log: &mut JobLog,
    ) {
        let why_not = if job.spec.from_fork {
            Some(
                "pull requests from forks never write the cache (builds of the branch they target would restore what they put there)",
            )
        } else if outcome.status != JobStatus::Success || stop.is_cancelled() {
            Some("the job did not succeed")
        } else {
            None
        };
        if let Some(why) = why_not {
            log.line(&format!("cache: not saved: {why}")).await;
            return;
        }
        let started = Instant::now();
        let result = self
            .in_job_cache(job, cache, key, workspace, stop, JobCache::save)
            .await;
        let saved = match result {
            Ok(saved) => saved,
            Err(e) => {
                warn!(job = %job.id, error = %e, "cache not saved");
                log.line(&format!("\x1b[33mcache: not saved: {e}\x1b[0m"))
                    .await;
                return;
            }
        };
        self.log_saved(key, &saved, started.elapsed(), log).await;
    }

    async fn log_saved(&self, key: &str, saved: &Saved, took: Duration, log: &mut JobLog) {
        for s in &saved.skipped {
            log.line(&format!(
                "\x1b[33mcache: {} not saved: {}\x1b[0m",
                s.path, s.why
            ))
            .await;
        }
        for d in &saved.dropped {
            log.line(&format!("\x1b[33mcache: left out {d}\x1b[0m"))
                .await;
        }
        let max = self.git.job_cache().max_bytes();
        if saved.paths.is_empty() {
            log.line("cache: not saved: none of its paths could be saved")
                .await;
        } else if !saved.kept {
            log.line(&format!(
                "\x1b[33mcache: not kept: {} of {} is more than the agent's cache may hold \
                 (agent.job_cache_max_bytes: {})\x1b[0m",
                human_size(saved.size),
                listed(&saved.paths),
                human_size(max)
            ))
            .await;
        } else {
            log.line(&format!(
                "cache: saved {} as key {key:?} ({}) in {:.2}s",
                listed(&saved.paths),
                human_size(saved.size),
                took.as_secs_f64()
            ))
            .await;
            if saved.reused > 0 {
                log.line(&format!(
                    "cache: {} of {} files unchanged since the last save, kept rather than copied",
                    saved.reused, saved.files
                ))
                .await;
            }
        }
        if !saved.evicted.is_empty() {
            let freed: u64 = saved.evicted.iter().map(|m| m.size).sum();
            log.line(&format!(
                "cache: removed {} least recently used entr{} ({}) to stay under {}",
                saved.evicted.len(),
                if saved.evicted.len() == 1 { "y" } else { "ies" },
                human_size(freed),
                human_size(max)
            ))
            .await;
        }
    }

    /// Takes the job's concurrency group, or parks the job until it is free; `Some` stop
    /// reason when the job stops here (parked, cancelled, claim lost), the outcome that ends
    /// it when Redis cannot be asked.
    async fn take_group(
        &self,
        claimed: &Claimed,
        group: &str,
        log: &mut JobLog,
        stop: &CancellationToken,
    ) -> Result<Option<u8>, Outcome> {
        let job = &claimed.job;
        let acquire = || self.queue.acquire_group(claimed, group);
        match through_outage(&job.id, "taking the concurrency group", stop, acquire).await {
            Ok(GroupClaim::Held) => {
                log.line(&format!("concurrency group {group}: this job holds it"))
                    .await;
                Ok(None)
            }
            Ok(GroupClaim::Parked { holder }) => {
                let held = match &holder {
                    Some(holder) => format!("job {holder} holds it"),
                    None => "older jobs wait for it".to_owned(),
                };
                log.line(&format!(
                    "concurrency group {group}: {held}; this job waits, blocked, without an \
                     agent, and is queued again when its turn comes"
                ))
                .await;
                // The holder may have ended between the look and the parking, with nobody
                // left to hand the group on.
                if let Err(e) = self.queue.release_group(&job.spec.repo, group).await {
                    warn!(job = %job.id, error = %e, "cannot look at the concurrency group again");
                }
                Ok(Some(PARKED))
            }
            Ok(GroupClaim::CancelRequested) => Ok(Some(CANCEL_REQUESTED)),
            Ok(GroupClaim::Lost) => Ok(Some(LOST)),
            Err(e) => Err(error_outcome(log, format!("concurrency group {group}: {e}")).await),
        }
    }

    /// A matrix pipeline runs as one job per variant: the first delivery (no `RAIBID_MATRIX`)
    /// queues the variants as jobs of their own, so they spread over agents like any job.
    async fn matrix_variant(
        &self,
        job: &Job,
        pipeline: &Pipeline,
        log: &mut JobLog,
        stop: &CancellationToken,
    ) -> MatrixStep {
        if pipeline.matrix.is_none() {
            return MatrixStep::Run(BTreeMap::new());
        }
        if let Some(wanted) = job.spec.env.get("RAIBID_MATRIX") {
            return match pipeline
                .expand_matrix()
                .into_iter()
                .find(|v| &v.name == wanted)
            {
                Some(v) => {
                    log.line(&format!("matrix variant {}", v.name)).await;
                    MatrixStep::Run(v.env)
                }
                None => MatrixStep::Expanded(
                    error_outcome(
                        log,
                        format!("matrix variant {wanted:?} is not in the pipeline's matrix"),
                    )
                    .await,
                ),
            };
        }
        let children = variant_specs(&job.spec, pipeline, &format!("matrix:{}", job.id))
            .into_iter()
            .map(|(variant, spec)| (variant.unwrap_or_default(), spec))
            .collect();
        let ids = match self
            .queue_children(job, children, "matrix variant", log, stop)
            .await
        {
            Ok(ids) => ids,
            Err(outcome) => return MatrixStep::Expanded(outcome),
        };
        let mut outcome = Outcome::new(JobStatus::Success);
        outcome.reason = Some(format!(
            "matrix expanded into {} jobs: {}",
            ids.len(),
            ids.join(" ")
        ));
        MatrixStep::Expanded(outcome)
    }

    /// Queues `job` again in `pool`, which its pipeline names (`pool:`), as its one child: the
    /// job itself ends once that is done, and its commit status follows the child's.
    async fn move_to_pool(
        &self,
        job: &Job,
        pool: &PoolName,
        log: &mut JobLog,
        stop: &CancellationToken,
    ) -> Outcome {
        let mut spec = job.spec.clone();
        spec.pool = pool.clone();
        spec.delivery_id = Some(format!("pool:{}:{pool}", job.id));
        log.line(&format!(
            "the pipeline runs in pool {pool} (`pool:`), not {}: queued again there",
            job.spec.pool
        ))
        .await;
        let label = format!("pool {pool}");
        match self
            .queue_children(job, vec![(label, spec)], "job", log, stop)
            .await
        {
            Ok(ids) => Outcome::new(JobStatus::Success)
                .with_reason(format!("runs in pool {pool} as {}", ids.join(" "))),
            Err(outcome) => outcome,
        }
    }

    /// Queues `children` (what the log calls each, and its spec) as jobs of `job`'s own and
    /// records them on it (see [`Runner::enqueue_child`] and [`Runner::record_children`]). The
    /// ids queued, or the outcome that ends `job` when that fails.
    async fn queue_children(
        &self,
        job: &Job,
        children: Vec<(String, NewJob)>,
        what: &str,
        log: &mut JobLog,
        stop: &CancellationToken,
    ) -> Result<Vec<String>, Outcome> {
        let mut ids = Vec::with_capacity(children.len());
        for (label, spec) in children {
            ids.push(
                self.enqueue_child(job, &label, spec, what, log, stop)
                    .await?,
            );
        }
        self.record_children(job, &ids, what, log, stop).await?;
        Ok(ids)
    }

    /// Queues `spec` as a child of `job` (blocked when it waits for other jobs); its id, or the
    /// outcome that ends `job`. Its spec is `job`'s but for what the caller changed; it needs a
    /// delivery id of its own, which makes a rerun of `job` find the child it queued already.
    async fn enqueue_child(
        &self,
        job: &Job,
        label: &str,
        mut spec: NewJob,
        what: &str,
        log: &mut JobLog,
        stop: &CancellationToken,
    ) -> Result<String, Outcome> {
        debug_assert!(spec.delivery_id.is_some(), "a child needs a delivery id");
        spec.retry_of = None;
        spec.matrix_parent = Some(job.id.clone());
        let waits = spec.needs.is_some();
        // Tried again after a timeout, when it may have been queued: its delivery id makes the
        // second try find it (`Duplicate`).
        let enqueue = || {
            let spec = spec.clone();
            async move {
                if waits {
                    self.queue.enqueue_blocked(spec).await
                } else {
                    self.queue.enqueue(spec).await
                }
            }
        };
        let enqueued = through_outage(&job.id, "queueing a job", stop, enqueue).await;
        match enqueued {
            Ok(Enqueued::Created(child)) => {
                let how = if waits { "recorded" } else { "queued" };
                log.line(&format!("{how} {} for {label}", child.id)).await;
                Ok(child.id.clone())
            }
            Ok(Enqueued::Duplicate { job_id }) => {
                log.line(&format!("{job_id} was already queued for {label}"))
                    .await;
                Ok(job_id)
            }
            Err(e) => Err(error_outcome(log, format!("queueing {what} {label}: {e}")).await),
        }
    }

    /// Records `ids` as `job`'s children, before `job` is acknowledged: its commit status
    /// combines theirs, and a cancel of it reaches them.
    async fn record_children(
        &self,
        job: &Job,
        ids: &[String],
        what: &str,
        log: &mut JobLog,
        stop: &CancellationToken,
    ) -> Result<(), Outcome> {
        let record = || self.queue.set_children(&job.id, ids);
        match through_outage(&job.id, "recording the jobs queued", stop, record).await {
            Ok(false) => Ok(()),
            Ok(true) => {
                log.line(&format!(
                    "cancelled while queueing its {what}s, so they are cancelled too"
                ))
                .await;
                Ok(())
            }
            Err(e) => Err(error_outcome(log, format!("recording the {what}s: {e}")).await),
        }
    }

    /// The repository's job before `job` about the same branch, of the same workflow and
    /// matrix variant (Woodpecker's previous pipeline, for `CI_PREV_*`), looked for among the
    /// repository's [`raibid_queue::LIST_SCAN_MAX`] jobs before it. A job without a branch
    /// (a tag's) has none. A Redis outage is waited out (see [`outage`]); should the queue
    /// fail otherwise, the steps run without those variables.
    async fn previous_job(&self, job: &Job, stop: &CancellationToken) -> Option<Job> {
        let branch = job.build_branch()?;
        let label = job.label();
        let filter = raibid_queue::JobFilter {
            repo: Some(job.spec.repo.clone()),
            ..Default::default()
        };
        let same = |other: &Job| other.build_branch() == Some(branch) && other.label() == label;
        let look = || self.queue.list_where(&filter, Some(&job.id), 1, &same);
        match through_outage(&job.id, "looking up the previous job", stop, look).await {
            Ok(page) => page.jobs.into_iter().next(),
            Err(e) => {
                warn!(job = %job.id, error = %e, "cannot look up the previous job of the branch");
                None
            }
        }
    }

    /// The variables a `when: evaluate` of the pipeline or of a workflow reads, decided before
    /// the steps' environment exists: the job's and its commit's `CI_*` variables and the
    /// job's own (`raibid job submit --env`). Steps' `when` read theirs (see `run_steps`).
    fn expression_env(
        &self,
        job: &Job,
        workspace: &Path,
        facts: &JobFacts,
    ) -> BTreeMap<String, String> {
        let seen = self
            .executor
            .image_workspace()
            .or(self.executor.step_paths().map(|p| p.workspace))
            .unwrap_or(workspace);
        let mut env = job_env(job, seen, &self.settings.public_url);
        env.extend(facts.env(&self.settings.public_url));
        env.extend(
            job.spec
                .env
                .iter()
                .filter(|(k, _)| !is_reserved(k))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        env
    }

    /// Fills in the files the commit changes, which `when: path` filters look at (its message
    /// is read for every job, before this), fetching a base the mirror lacks when the job's
    /// facts could not name them without one. When the changes cannot be known (or are none),
    /// says once in the log why path filters do not apply; the pipeline and the steps that
    /// have them then run.
    async fn path_context(
        &self,
        job: &Job,
        workspace: &Path,
        what: &str,
        trigger: &mut TriggerContext,
        log: &mut JobLog,
    ) {
        // Already read with the job's facts (`CI_PIPELINE_FILES`) when the base was at hand.
        let changes = match trigger.changed_files.take() {
            Some(files) => Changes::Known(files),
            None => self.git.changed_files(job, workspace).await,
        };
        let why = match changes {
            Changes::Known(files) if files.is_empty() => {
                // Known to be none, which a filter with `on_empty: false` does not match.
                trigger.changed_files = Some(files);
                log.line(&format!(
                    "\x1b[33mpath filters: the commit changes no files compared with its base, \
                     so {what} unless a filter says `on_empty: false`\x1b[0m"
                ))
                .await;
                return;
            }
            Changes::Known(files) => {
                let base = job.spec.diff_base.as_deref().unwrap_or_default();
                log.line(&format!(
                    "path filters: {} file(s) changed since {}",
                    files.len(),
                    short(base)
                ))
                .await;
                trigger.changed_files = Some(files);
                return;
            }
            Changes::Unknown(why) => why,
        };
        info!(job = %job.id, %why, "path filters not applied");
        log.line(&format!(
            "\x1b[33mpath filters not applied, {what}: {why}\x1b[0m"
        ))
        .await;
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_steps(
        &self,
        claimed: &Claimed,
        pipeline: &Pipeline,
        trigger: &TriggerContext,
        facts: &JobFacts,
        variant_env: BTreeMap<String, String>,
        workspace: &Path,
        home: &Path,
        private: &Path,
        // Outside the workspace, readable by steps: the mirror objects the checkout borrows.
        read_only: &[PathBuf],
        log: &mut JobLog,
        stop: &CancellationToken,
        reason: &StopReason,
    ) -> Outcome {
        let job = &claimed.job;
        let job_limit = job_limit(pipeline);
        let job_deadline = Instant::now() + job_limit;
        // The paths the step sees, which the sandbox may have moved from the host's.
        let (seen_workspace, seen_home) = match self.executor.step_paths() {
            Some(paths) => (paths.workspace, paths.home),
            None => (workspace, home),
        };
        let place = match self.executor.image_workspace() {
            Some(inside) => StepPlace::Image { workspace: inside },
            None => StepPlace::Host {
                workspace: seen_workspace,
                home: seen_home,
                path: &self.settings.step_path,
                toolchain: &self.settings.step_env,
            },
        };
        let mut base_env = step_base_env(job, place, &self.settings.public_url);
        base_env.extend(facts.env(&self.settings.public_url));
        for (k, v) in pipeline.env.iter().chain(&variant_env).chain(&job.spec.env) {
            if !is_reserved(k) {
                base_env.insert(k.clone(), v.clone());
            }
        }
        // A step's `when: evaluate` reads what its steps get.
        let trigger = &TriggerContext {
            env: base_env.clone(),
            ..trigger.clone()
        };

        let mut results: Vec<StepResult> = pipeline
            .steps
            .iter()
            .map(|s| StepResult {
                name: s.name.clone(),
                status: StepStatus::Pending,
                exit_code: None,
                duration_ms: None,
                tail: String::new(),
            })
            .collect();
        // The repository's secrets, every value masked from here on, whether or not a step
        // names it: a step may print one it got some other way (a file the last build left).
        let open = || self.queue.open_secrets(&job.spec.repo);
        let job_secrets = match through_outage(&job.id, "reading the secrets", stop, open).await {
            Ok(secrets) => secrets,
            Err(e) => {
                for r in &mut results {
                    r.status = StepStatus::Skipped;
                }
                let mut outcome =
                    error_outcome(log, format!("cannot read the repository's secrets: {e}")).await;
                outcome.steps = results;
                return outcome;
            }
        };
        for secret in job_secrets.values() {
            if let Ok(opened) = &secret.opened {
                log.mask(&opened.value);
            }
        }
        // Only for a job in which some `run` step can run at all: services are containers to
        // pull and start, for nothing when `when` skips every step that could reach them.
        let steps_can_use_services = pipeline.steps.iter().any(|s| {
            matches!(s.kind, StepKind::Run { .. } | StepKind::Plugin { .. })
                && (s.when.runs(trigger, RunState::Success)
                    || s.when.runs(trigger, RunState::Failure))
        });
        let services = if pipeline.services.is_empty() || !steps_can_use_services {
            None
        } else {
            let started = match self
                .services_with_secrets(job, &pipeline.services, &job_secrets, log)
                .await
            {
                Ok(services) => {
                    let spec = ServicesSpec {
                        services,
                        private: Some(private.to_path_buf()),
                        untrusted: !self.secrets.trusts(job),
                        timeout: job_deadline.saturating_duration_since(Instant::now()),
                    };
                    self.start_services(&spec, log, stop).await
                }
                Err(message) => Err(message),
            };
            match started {
                Ok(group) => Some(group),
                Err(message) => {
                    for r in &mut results {
                        r.status = StepStatus::Skipped;
                    }
                    let mut outcome = if stop.is_cancelled() {
                        log.line(&format!("\x1b[31m✘ services: {message}\x1b[0m"))
                            .await;
                        Outcome::new(JobStatus::Cancelled).with_reason(message)
                    } else {
                        error_outcome(log, format!("services: {message}")).await
                    };
                    outcome.steps = results;
                    return outcome;
                }
            }
        };
        let ctx = steps::StepContext {
            claimed,
            pipeline,
            trigger,
            base_env: &base_env,
            workspace,
            home,
            private,
            read_only,
            job_secrets: &job_secrets,
            network: services.as_ref().map(|s| s.network().to_owned()),
            job_limit,
            job_deadline,
            stop,
            reason,
        };
        let mut outcome = Outcome::new(JobStatus::Success);
        if pipeline.runs_as_graph() {
            self.run_graph(&ctx, &mut results, &mut outcome, log).await;
        } else {
            self.run_in_order(&ctx, &mut results, &mut outcome, log)
                .await;
        }
        if let Some(group) = services {
            let (tx, rx) = mpsc::channel(64);
            tokio::join!(group.finish(tx), log.pump(rx));
        }
        if outcome.status == JobStatus::Success {
            let count = |status| results.iter().filter(|r| r.status == status).count();
            let ran = count(StepStatus::Success);
            // A job that passed has no failed step but those `failure: ignore` let through.
            let ignored = count(StepStatus::Failure);
            outcome.reason = Some(if ignored == 0 {
                format!("{ran} step(s) passed")
            } else {
                format!("{ran} step(s) passed, {ignored} failed (failure: ignore)")
            });
        }
        outcome.steps = results;
        outcome
    }

    /// The job's services with the secrets they name in their environment (masked in the log
    /// from here on), under the rules a step's `secrets:` follow.
    async fn services_with_secrets(
        &self,
        job: &Job,
        services: &[Service],
        job_secrets: &raibid_queue::JobSecrets,
        log: &mut JobLog,
    ) -> Result<Vec<Service>, String> {
        let mut out = Vec::with_capacity(services.len());
        for service in services {
            let mut names = service.secrets.clone();
            names.extend(service.secret_env.values().cloned());
            let secrets = self
                .secrets
                .resolve(job, &names, job_secrets)
                .map_err(|e| format!("service {}: {e}", service.name))?;
            for value in secrets.values() {
                log.mask(value);
            }
            let mut service = service.clone();
            for (var, secret) in std::mem::take(&mut service.secret_env) {
                if let Some(value) = secrets.get(&secret) {
                    service.env.insert(var, value.clone());
                }
            }
            service
                .env
                .extend(SecretStore::variables(&service.secrets, &secrets));
            service.secrets.clear();
            out.push(service);
        }
        Ok(out)
    }

    /// Starts the job's services, with their notes in the log under a heading of their own.
    async fn start_services(
        &self,
        spec: &ServicesSpec,
        log: &mut JobLog,
        stop: &CancellationToken,
    ) -> Result<ServiceGroup, String> {
        log.line(&format!(
            "\n\x1b[1;36m▶ services\x1b[0m \x1b[2m{}\x1b[0m",
            spec.services
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .await;
        let (tx, rx) = mpsc::channel(64);
        let start = self.executor.start_services(spec, tx, stop.clone());
        let (result, ()) = tokio::join!(start, log.pump(rx));
        result.map_err(|e| e.to_string())
    }

    async fn run_script(
        &self,
        spec: &StepSpec,
        log: &mut JobLog,
        stop: &CancellationToken,
    ) -> Result<StepExit, String> {
        let (tx, rx) = mpsc::channel(64);
        let run = self.executor.run_step(spec, tx, stop.clone());
        let (result, ()) = tokio::join!(run, log.pump(rx));
        result.map_err(|e| e.to_string())
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_image_build(
        &self,
        job: &Job,
        build: &raibid_pipeline::ImageBuild,
        workspace: &Path,
        private: &Path,
        // The step's (else the pipeline's) limit, as for a `run` step.
        timeout: Duration,
        log: &mut JobLog,
        stop: &CancellationToken,
        images: &mut Vec<String>,
        // The step's `secrets:`, resolved: build secrets.
        secrets: BTreeMap<String, String>,
    ) -> Result<StepExit, String> {
        let Some(builder) = &self.images else {
            return Err("image builds need buildah on the agent (apt-get install buildah)".into());
        };
        let tag_context = TagContext {
            registry: self.settings.registry.clone(),
            repo: job.spec.repo.clone(),
            sha: job.spec.sha.clone(),
            // The pushed branch only: a pull request must not tag images as its target branch.
            branch: job.branch().map(str::to_owned),
            tag: job.tag().map(str::to_owned),
            matrix: job.spec.env.get("RAIBID_MATRIX").cloned(),
        };
        let tags = build.render_tags(&tag_context).map_err(|e| e.to_string())?;
        // The agent's registry credentials push both the tags and the layer cache: a fork's
        // pipeline could overwrite `:latest` or poison the cache later builds start from.
        let trusted = self.secrets.trusts(job);
        if !trusted && build.push {
            log.line(
                "[raibid] images from pull requests from forks are built but not pushed, \
                 and the registry's layer cache is not used (agent.secrets_for_forks is off)",
            )
            .await;
        }
        let cache_repo = build
            .render_cache(&tag_context)
            .map_err(|e| e.to_string())?
            .map(|repo| per_arch_cache(&repo, &build.platforms))
            .filter(|_| trusted);
        // buildah follows links on the host: a context or Containerfile linked out of the
        // workspace would put the agent's files into an image that is then pushed.
        let inside = |what: &str, relative: &str| {
            workspace_file::resolve_inside(workspace, relative)
                .map_err(|e| format!("image-build {what}: {e}"))
        };
        let context_dir = inside("context", &build.context)?;
        let containerfile = match &build.file {
            Some(f) => inside("file", f)?,
            None => {
                let mut found = None;
                for name in ["Containerfile", "Dockerfile"] {
                    let relative = format!("{}/{name}", build.context);
                    match workspace_file::resolve_inside(workspace, &relative) {
                        Ok(path) => {
                            found = Some(path);
                            break;
                        }
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(format!("image-build file: {e}")),
                    }
                }
                found
                    .ok_or_else(|| format!("no Containerfile or Dockerfile in {}", build.context))?
            }
        };
        let ignore = build_ignore(workspace, &build.context)
            .await
            .map_err(|e| format!("image-build: {e}"))?;
        let request = BuildRequest {
            context_dir,
            containerfile,
            ignore,
            tags,
            platforms: build.platforms.clone(),
            build_args: build.build_args.clone(),
            secrets: crate::image::BuildSecrets(secrets),
            push: build.push && trusted,
            credentials: trusted,
            cache_repo,
            timeout: Some(timeout),
            private: Some(private.to_path_buf()),
        };
        let started = Instant::now();
        let (tx, rx) = mpsc::channel(64);
        let run = builder.build_and_push(&request, tx, stop.clone());
        let (result, ()) = tokio::join!(run, log.pump(rx));
        match result {
            Ok(built) => {
                for digest in &built.digests {
                    log.line(&format!("pushed {digest}")).await;
                }
                images.extend(built.digests);
                Ok(StepExit {
                    code: Some(0),
                    signal: None,
                    timed_out: false,
                    cancelled: false,
                    duration: started.elapsed(),
                })
            }
            Err(_) if stop.is_cancelled() => Ok(StepExit {
                code: None,
                signal: None,
                timed_out: false,
                cancelled: true,
                duration: started.elapsed(),
            }),
            // Reported like a `run` step that timed out: same status, same wording.
            Err(ImageError::TimedOut) => Ok(StepExit {
                code: None,
                signal: None,
                timed_out: true,
                cancelled: false,
                duration: started.elapsed(),
            }),
            Err(e) => match e.build_failure() {
                // The Containerfile failing is the step's own failure, like a script's
                // non-zero exit (`failure: ignore` applies); not being able to pull, push or
                // build at all is the agent's error.
                Some((code, signal)) => Ok(StepExit {
                    code,
                    signal,
                    timed_out: false,
                    cancelled: false,
                    duration: started.elapsed(),
                }),
                None => Err(e.to_string()),
            },
        }
    }
}

enum MatrixStep {
    Run(BTreeMap<String, String>),
    Expanded(Outcome),
}

/// [`JobCache::restore`] or [`JobCache::save`]: repository, key, paths, workspace.
type CacheOp<T> =
    fn(&JobCache, &str, &str, &[String], &Path, &CancellationToken) -> Result<T, JobCacheError>;

fn join_error(e: tokio::task::JoinError) -> JobCacheError {
    JobCacheError::Io {
        what: "copying",
        path: PathBuf::from("the cache"),
        source: std::io::Error::other(e),
    }
}

/// `target, .npm` for the job log.
pub(crate) fn listed(paths: &[String]) -> String {
    if paths.is_empty() {
        "nothing".to_owned()
    } else {
        paths.join(", ")
    }
}

/// Sizes in the job log, binary units like `du -h`.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// How long the whole job may take: the pipeline's `timeout`, else the default or the longest
/// step timeout, whichever is longer (a step's own `timeout: 2h` is a request to run that long).
fn job_limit(pipeline: &Pipeline) -> Duration {
    pipeline.timeout.unwrap_or_else(|| {
        pipeline
            .steps
            .iter()
            .filter_map(|s| s.timeout)
            .fold(DEFAULT_TIMEOUT, Duration::max)
    })
}

/// A step's time limit given what is left of the job's, and whether the job's is the one that
/// binds (for the message when it runs out).
fn step_limit(own: Option<Duration>, remaining: Duration) -> (Duration, bool) {
    match own {
        Some(own) if own <= remaining => (own, false),
        _ => (remaining, true),
    }
}

fn job_limit_reached(limit: Duration) -> String {
    format!(
        "stopped: the job's time limit of {}s ran out",
        limit.as_secs()
    )
}

/// The job of a pipeline whose own `when` does not match it: it succeeds with every step
/// `skipped` (Woodpecker shows such a pipeline as skipped; a job has no such status), and the
/// log says once why.
async fn skip_pipeline(
    pipeline: &Pipeline,
    keys: &[&str],
    trigger: &TriggerContext,
    log: &mut JobLog,
) -> Outcome {
    let (why, reason) = why_skipped(keys, trigger);
    log.line(&format!(
        "\x1b[33mpipeline skipped: the pipeline's `when` does not match ({why}); \
         no step runs\x1b[0m"
    ))
    .await;
    let mut outcome = Outcome::new(JobStatus::Success).with_reason(format!(
        "skipped: the pipeline's when does not match ({reason})"
    ));
    outcome.steps = pipeline
        .steps
        .iter()
        .map(|s| StepResult {
            name: s.name.clone(),
            status: StepStatus::Skipped,
            exit_code: None,
            duration_ms: None,
            tail: String::new(),
        })
        .collect();
    outcome
}

/// Removes everything in `dir`, which stays: a `skip_clone` workspace, checked out only to read
/// the pipeline.
fn empty_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        remove::remove_tree(&entry?.path())?;
    }
    Ok(())
}

/// Why a `when` does not match, from the keys [`raibid_pipeline::When::mismatch`] names: a
/// sentence for the log, and the short form for the job's reason.
fn why_skipped(keys: &[&str], trigger: &TriggerContext) -> (String, String) {
    let job_has = |key: &str| match key {
        "event" => format!("the job's event is {}", trigger.event),
        "branch" => match &trigger.branch {
            Some(branch) => format!("the job's branch is {branch}"),
            None => "the job has no branch".to_owned(),
        },
        "tag" => match &trigger.tag {
            Some(tag) => format!("the job's tag is {tag}"),
            None => "the job has no tag".to_owned(),
        },
        "ref" => match &trigger.git_ref {
            Some(git_ref) => format!("the job's ref is {git_ref}"),
            None => "the job's ref is not known".to_owned(),
        },
        "repo" => match &trigger.repo {
            Some(repo) => format!("the job's repository is {repo}"),
            None => "the job's repository is not known".to_owned(),
        },
        "cron" => match &trigger.cron {
            Some(cron) => format!("the job's schedule is {cron}"),
            None => "the job is not of a schedule".to_owned(),
        },
        // Only steps have `matrix` filters; kept for the wording should that change.
        "matrix" => "the job's matrix variant differs".to_owned(),
        "platform" => match &trigger.platform {
            Some(platform) => format!("this agent's platform is {platform}"),
            None => "this agent's platform is not known".to_owned(),
        },
        "evaluate" => "the condition does not hold with the job's variables".to_owned(),
        _ => match &trigger.changed_files {
            Some(files) if files.is_empty() => {
                "the commit changes no files (`on_empty: false`)".to_owned()
            }
            Some(files) => format!("none of the {} changed file(s) is wanted", files.len()),
            None => "the changes are not known".to_owned(),
        },
    };
    // One block (a mapping, or a list of one) keeps the single-key wording; for a list, each
    // block's first key that does not match.
    match keys {
        [key] => (format!("`{key}`: {}", job_has(key)), (*key).to_owned()),
        _ => {
            let blocks: Vec<String> = keys
                .iter()
                .enumerate()
                .map(|(i, key)| format!("block {} `{key}`: {}", i + 1, job_has(key)))
                .collect();
            (
                format!("no block matches: {}", blocks.join("; ")),
                format!("no block matches: {}", keys.join(", ")),
            )
        }
    }
}

/// The specs of the jobs that run `pipeline` for `base`: one per matrix variant (with
/// `RAIBID_MATRIX`, and the variant's name for the caller's labels), else `base` alone; each
/// in the pipeline's `pool:` if it names one. Delivery ids are `<key>:<variant>`, or `<key>`:
/// a rerun of the job that queues them (its agent died after queueing some) finds those it
/// queued already instead of queueing them twice.
fn variant_specs(base: &NewJob, pipeline: &Pipeline, key: &str) -> Vec<(Option<String>, NewJob)> {
    let mut base = base.clone();
    if let Some(pool) = &pipeline.pool {
        base.pool = pool.clone();
    }
    if pipeline.matrix.is_none() {
        base.delivery_id = Some(key.to_owned());
        return vec![(None, base)];
    }
    pipeline
        .expand_matrix()
        .into_iter()
        .map(|variant| {
            let mut spec = base.clone();
            spec.delivery_id = Some(format!("{key}:{}", variant.name));
            spec.env
                .insert("RAIBID_MATRIX".into(), variant.name.clone());
            (Some(variant.name), spec)
        })
        .collect()
}

async fn error_outcome(log: &mut JobLog, message: String) -> Outcome {
    log.line(&format!("\x1b[31merror: {message}\x1b[0m")).await;
    info!(%message, "job error");
    Outcome::new(JobStatus::Error).with_reason(message)
}

/// The layer cache of one architecture: `<repo>/<arch>` for a build of one platform (the
/// agent's own when none is named), so that arm64 and amd64 builds never push over each
/// other's cache; a multi-platform build shares `<repo>` (its layers differ by digest anyway).
/// Below the repository, not beside it (`<repo>-<arch>`): the rendered repository passed the
/// ownership check of its template, and names below it are the job's too, while a sibling of
/// `{registry}/{repo}` is another repository's.
fn per_arch_cache(repo: &str, platforms: &[String]) -> String {
    let arch = match platforms {
        [] => raibid_oci::normalize_arch(std::env::consts::ARCH).to_owned(),
        [one] => one.split('/').skip(1).collect::<Vec<_>>().join("-"),
        _ => return repo.to_owned(),
    };
    format!("{repo}/{arch}")
}

/// Removes the job directory `dir` (named `name` in the logs) unless a live process holds its
/// lock; whether it did.
async fn remove_unless_in_use(dir: PathBuf, name: &str) -> bool {
    let lock = match InUse::try_take(&dir) {
        Ok(Some(lock)) => lock,
        Ok(None) => return false,
        Err(e) => {
            warn!(dir = name, error = %e, "cannot check whether a workspace is in use");
            return false;
        }
    };
    let removed = match remove_job_dir(dir).await {
        Ok(()) => {
            info!(dir = name, "removed the workspace of a dead agent");
            true
        }
        Err(e) => {
            warn!(dir = name, error = %e, "could not remove an orphaned workspace");
            false
        }
    };
    lock.release();
    removed
}

/// [`remove::remove_tree`] off the async threads: a job's tree can be large.
async fn remove_job_dir(dir: PathBuf) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || remove::remove_tree(&dir))
        .await
        .map_err(std::io::Error::other)?
}

/// How many slots [`Runner::take_job_dir`] tries: far more than the jobs one machine runs at
/// once.
const MAX_SLOTS: u32 = 1024;

fn slot_name(n: u32) -> String {
    format!("slot-{n}")
}

/// `slot-<n>` (no leading zeros, as [`slot_name`] writes it) -> n.
fn parse_slot_name(name: &str) -> Option<u32> {
    let n: u32 = name.strip_prefix("slot-")?.parse().ok()?;
    (slot_name(n) == name).then_some(n)
}

/// The first free slot under `root`, emptied of what a dead agent left there, and its lock;
/// `None` when all [`MAX_SLOTS`] are in use. A slot that cannot be emptied is skipped.
async fn take_slot(root: &Path) -> std::io::Result<Option<(PathBuf, InUse)>> {
    for n in 0..MAX_SLOTS {
        let dir = root.join(slot_name(n));
        let Some(lock) = InUse::try_take(&dir)? else {
            continue;
        };
        match remove_job_dir(dir.clone()).await {
            Ok(()) => return Ok(Some((dir, lock))),
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "cannot empty a workspace slot; trying the next");
                lock.release();
            }
        }
    }
    Ok(None)
}

/// `<job id>-a<attempt>`, as `run` names workspaces; job ids never contain `-a` followed by
/// digits only at their end, so the last `-a` splits.
fn parse_workspace_name(name: &str) -> Option<(&str, u32)> {
    let (id, attempt) = name.rsplit_once("-a")?;
    if id.is_empty() || attempt.is_empty() || !attempt.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((id, attempt.parse().ok()?))
}

/// `work`'s result, or `None` when the job is stopped first (`work` is dropped).
async fn unless_stopped<T>(stop: &CancellationToken, work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        result = work => Some(result),
        () = stop.cancelled() => None,
    }
}

/// What autodetection reads of a repository without a `.raibid.yaml`: the names at its root
/// and the makefile `make` would read there (through [`workspace_file::read`], as the agent
/// reads the pipeline file). Blocking; `raibid pipeline check` shares it.
pub fn repo_listing(root: &Path) -> Result<RepoListing, String> {
    let names = std::fs::read_dir(root)
        .and_then(|dir| {
            dir.map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .map_err(|e| format!("listing {}: {e}", root.display()))?;
    let mut listing = RepoListing::new(names);
    for name in RepoListing::MAKEFILES {
        let makefile = workspace_file::read(root, name, workspace_file::MAX_READ_BYTES)
            .map_err(|e| format!("no {PIPELINE_FILE}, and for autodetection: {e}"))?;
        if let Some(bytes) = makefile {
            listing = listing.with_makefile(String::from_utf8_lossy(&bytes));
            break;
        }
    }
    Ok(listing)
}

/// The ignore patterns buildah would read from the build context (`.containerignore` first,
/// as buildah does), read by the agent so that buildah never opens a link the repository made:
/// links are followed only while they stay inside the workspace. Empty when there is none.
async fn build_ignore(workspace: &Path, context: &str) -> Result<Vec<u8>, String> {
    let workspace = workspace.to_path_buf();
    let context = context.to_owned();
    tokio::task::spawn_blocking(move || {
        for name in [".containerignore", ".dockerignore"] {
            let relative = format!("{context}/{name}");
            let read = workspace_file::read_inside(&workspace, &relative, MAX_IGNORE_BYTES)
                .map_err(|e| e.to_string())?;
            if let Some(bytes) = read {
                return Ok(bytes);
            }
        }
        Ok(Vec::new())
    })
    .await
    .map_err(|e| format!("reading the build context's ignore file: {e}"))?
}

/// Ignore files list patterns; a megabyte of them is far past any real one.
const MAX_IGNORE_BYTES: u64 = workspace_file::MAX_READ_BYTES;

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(10)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn build_ignore_prefers_containerignore_and_stays_in_the_workspace() {
        let ws = tempfile::tempdir().unwrap();
        let ctx = ws.path().join("app");
        std::fs::create_dir(&ctx).unwrap();
        assert!(build_ignore(ws.path(), "app").await.unwrap().is_empty());
        std::fs::write(ctx.join(".dockerignore"), "docker\n").unwrap();
        assert_eq!(build_ignore(ws.path(), "app").await.unwrap(), b"docker\n");
        std::fs::write(ctx.join(".containerignore"), "container\n").unwrap();
        assert_eq!(
            build_ignore(ws.path(), "app").await.unwrap(),
            b"container\n"
        );
        // buildah as root would read the link's target: a device, or the agent's own files.
        std::fs::remove_file(ctx.join(".containerignore")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", ctx.join(".containerignore")).unwrap();
        let err = build_ignore(ws.path(), "app").await.unwrap_err();
        assert!(
            err.contains("app/.containerignore") && err.contains("outside"),
            "{err}"
        );
    }

    #[test]
    fn steps_get_what_is_left_of_the_jobs_time() {
        let parse = |yaml: &str| {
            raibid_pipeline::parse(".raibid.yaml", yaml).unwrap_or_else(|e| panic!("{e}"))
        };
        let hour = Duration::from_secs(3600);
        // A pipeline timeout longer than the default carries steps without their own.
        let p = parse("timeout: 3h\nsteps:\n  - name: a\n    run: x\n");
        assert_eq!(job_limit(&p), 3 * hour);
        assert_eq!(step_limit(None, 3 * hour), (3 * hour, true));
        // A step's own longer timeout raises the default job limit.
        let p = parse("steps:\n  - name: a\n    run: x\n    timeout: 2h\n");
        assert_eq!(job_limit(&p), 2 * hour);
        let p = parse("steps:\n  - name: a\n    run: x\n    timeout: 5m\n");
        assert_eq!(job_limit(&p), hour);
        // The step's own limit binds until the job has less left.
        assert_eq!(step_limit(Some(hour), 2 * hour), (hour, false));
        assert_eq!(step_limit(Some(2 * hour), hour), (hour, true));
        assert_eq!(
            step_limit(Some(hour), Duration::ZERO),
            (Duration::ZERO, true)
        );
    }

    #[test]
    fn layer_caches_are_keyed_by_architecture() {
        use super::per_arch_cache;
        let own = raibid_oci::normalize_arch(std::env::consts::ARCH);
        assert_eq!(
            per_arch_cache("r/acme/cache", &[]),
            format!("r/acme/cache/{own}")
        );
        assert_eq!(
            per_arch_cache("r/acme/cache", &["linux/arm/v7".into()]),
            "r/acme/cache/arm-v7"
        );
        assert_eq!(
            per_arch_cache(
                "r/acme/cache",
                &["linux/amd64".into(), "linux/arm64".into()]
            ),
            "r/acme/cache"
        );
    }

    #[test]
    fn a_per_architecture_cache_stays_in_the_jobs_repository() {
        use super::per_arch_cache;
        use raibid_pipeline::{ImageBuild, TagContext};
        let ctx = TagContext {
            registry: "r.example:5000".into(),
            repo: "acme/app".into(),
            sha: "0123456789abcdef0123456789abcdef01234567".into(),
            branch: Some("main".into()),
            tag: None,
            matrix: None,
        };
        let image_build = |cache: &str, tags: Vec<String>| ImageBuild {
            context: ".".into(),
            file: None,
            tags,
            platforms: vec![],
            push: true,
            build_args: BTreeMap::new(),
            cache: Some(cache.into()),
        };
        // `{registry}/{repo}` itself is a valid cache; the per-architecture name made from it
        // must pass the same ownership check as a tag (`r.example:5000/acme/app-amd64` is the
        // repository `acme/app-amd64`, not `acme/app`'s).
        for template in ["{registry}/{repo}", "{registry}/{repo}/cache"] {
            let rendered = image_build(template, vec!["{registry}/{repo}:x".into()])
                .render_cache(&ctx)
                .unwrap()
                .unwrap();
            for platforms in [vec![], vec!["linux/arm/v7".to_owned()]] {
                let cache = per_arch_cache(&rendered, &platforms);
                let as_tag = image_build(template, vec![format!("{cache}:x")]);
                assert_eq!(
                    as_tag.render_tags(&ctx),
                    Ok(vec![format!("{cache}:x")]),
                    "{template} {platforms:?}"
                );
            }
        }
    }

    #[test]
    fn workspace_names_round_trip_and_strangers_are_ignored() {
        assert_eq!(
            parse_workspace_name("01JD0000000000000000000000-a3"),
            Some(("01JD0000000000000000000000", 3))
        );
        assert_eq!(parse_workspace_name("x-a-a12"), Some(("x-a", 12)));
        assert_eq!(parse_slot_name("slot-0"), Some(0));
        assert_eq!(parse_slot_name("slot-17"), Some(17));
        for stranger in [
            "slot-",
            "slot-01",
            "slot-+1",
            "slot-x",
            "slot-1.lock",
            "slots-1",
        ] {
            assert_eq!(parse_slot_name(stranger), None, "{stranger}");
        }
        for stranger in ["lost+found", "-a1", "job-a", "job-ax", "job-a1x", "job"] {
            assert_eq!(parse_workspace_name(stranger), None, "{stranger}");
        }
    }
}
