use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::PoolName;

/// What made a job exist. Pipelines filter steps on it (`when.event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Push,
    Tag,
    PullRequest,
    Manual,
    /// Queued by one of the server's schedules (`server.schedules`), as Woodpecker's cron
    /// pipelines and Gitea Actions' `on: schedule`; the job's `schedule` names which.
    Cron,
}

impl Event {
    pub const ALL: [Event; 5] = [
        Event::Push,
        Event::Tag,
        Event::PullRequest,
        Event::Manual,
        Event::Cron,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Push => "push",
            Event::Tag => "tag",
            Event::PullRequest => "pull_request",
            Event::Manual => "manual",
            Event::Cron => "cron",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Event {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Event::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| {
                format!("unknown event {s:?} (expected push, tag, pull_request, manual or cron)")
            })
    }
}

/// Which forge sent the webhook, and so which API receives the commit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Forge {
    Gitea,
    Forgejo,
    Github,
}

impl Forge {
    pub fn as_str(self) -> &'static str {
        match self {
            Forge::Gitea => "gitea",
            Forge::Forgejo => "forgejo",
            Forge::Github => "github",
        }
    }
}

impl fmt::Display for Forge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Forge {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gitea" => Ok(Forge::Gitea),
            "forgejo" => Ok(Forge::Forgejo),
            "github" => Ok(Forge::Github),
            _ => Err(format!(
                "unknown forge {s:?} (expected gitea, forgejo or github)"
            )),
        }
    }
}

/// The life of a job. `Queued -> Running -> {Success, Failure, Error, Cancelled}`; a job whose
/// agents keep dying ends in `Dead` (moved to the dead-letter stream). `Blocked` comes before
/// `Queued` for a job waiting for a person, for the workflows it depends on (ending `Skipped`
/// when they end otherwise than it wants), or for its concurrency group (a running job parked
/// there goes `Running -> Blocked` without counting an attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for a person to approve it before it is queued (`server.approval`): a pull
    /// request from a fork, say. It is in no stream, so nothing scales up for it.
    Blocked,
    Queued,
    Running,
    Success,
    /// A step failed: the pipeline's own verdict.
    Failure,
    /// The job could not be run (bad pipeline file, checkout failed): not the code's fault.
    Error,
    Cancelled,
    /// Given up after `max_attempts` deliveries; the reason is in `Job::reason`.
    Dead,
    /// Not run, as its pipeline asked: a workflow whose `depends_on` did not end as its
    /// `runs_on` wants (GitHub's and Woodpecker's "skipped"). Neither a verdict on the code nor
    /// a person's cancel; the reason says why (`not run: test failed`).
    Skipped,
}

impl JobStatus {
    pub const ALL: [JobStatus; 9] = [
        JobStatus::Blocked,
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Success,
        JobStatus::Failure,
        JobStatus::Error,
        JobStatus::Cancelled,
        JobStatus::Dead,
        JobStatus::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Blocked => "blocked",
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Success => "success",
            JobStatus::Failure => "failure",
            JobStatus::Error => "error",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Dead => "dead",
            JobStatus::Skipped => "skipped",
        }
    }

    /// A final status never changes again.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            JobStatus::Blocked | JobStatus::Queued | JobStatus::Running
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown status {s:?} (expected one of blocked, queued, running, success, failure, error, cancelled, dead, skipped)"
                )
            })
    }
}

/// Everything needed to create a job; the queue adds id, status, timestamps and attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// `owner/name` as the forge spells it.
    pub repo: String,
    pub clone_url: String,
    /// Full ref, e.g. `refs/heads/main`, `refs/tags/v1.0`, `refs/pull/3/head`.
    pub git_ref: String,
    /// The exact commit to build; 40 (or 64) hex digits.
    pub sha: String,
    pub event: Event,
    #[serde(default)]
    pub pool: PoolName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge: Option<Forge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_number: Option<u64>,
    /// Pull request from a fork: secrets are withheld unless configured otherwise.
    #[serde(default)]
    pub from_fork: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// The webhook delivery that created this job, for idempotent redelivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    /// Extra environment given at manual submission.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The job this one re-runs, when created by `retry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
    /// The job whose matrix this variant is one of (the variant's name is in the environment
    /// as `RAIBID_MATRIX`). Absent in specs written before matrices had parents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix_parent: Option<String>,
    /// For a pull request, the branch it targets (its `git_ref` is `refs/pull/<n>/head`, which
    /// names no branch): what `when: branch` filters match and `CI_COMMIT_BRANCH` says, as in
    /// Woodpecker, so a step limited to `main` also runs for pull requests into `main`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_branch: Option<String>,
    /// The commit `when: path` filters compare `sha` with (40 or 64 hex digits, like `sha`):
    /// for a branch push the commit the branch pointed to before, for a pull request its base
    /// (the changes are then those since the merge base). `None` when there is none (a tag, a
    /// manual job, a push that created the branch): path filters then match. Retries and
    /// matrix variants keep their job's. Absent in specs written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_base: Option<String>,
    /// The name of the schedule (`server.schedules`) that queued this job, for `cron` jobs:
    /// steps get it as `CI_PIPELINE_CRON`, so one pipeline can tell its nightly from its weekly
    /// run. Retries keep it. Absent in specs written before schedules existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// For the job of a workflow with `depends_on`: the jobs it waits for. It is created
    /// `blocked` and queued by the server once they have all ended (see [`Needs`]). Absent in
    /// specs written before workflows could wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<Needs>,
    /// The repository's pipeline number (Woodpecker's `CI_PIPELINE_NUMBER`): one more than the
    /// last the server gave the repository, when a webhook, a submission or a schedule queues
    /// the job. A push's workflows and a matrix's variants share their first job's, and a
    /// retry keeps it: the same pipeline, run again. `None` for jobs queued otherwise
    /// (`raibid exec`) and in specs written before numbers existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u64>,
    /// The branch a pull request comes from (Woodpecker's `CI_COMMIT_SOURCE_BRANCH`), when its
    /// head is a branch: not for a Gitea AGit pull request, whose head is its own ref. Checked
    /// as a branch name. Absent for other events and in specs written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_branch: Option<String>,
    /// The repository's web page on its forge, as the webhook named it (`CI_REPO_URL`, and the
    /// links of the job's page): an `http(s)` URL without credentials, query or fragment, or
    /// absent (submissions, schedules, older specs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
    /// A pull request's labels when the webhook was sent (Woodpecker's
    /// `CI_COMMIT_PULL_REQUEST_LABELS`): at most [`MAX_PR_LABELS`], each a name without control
    /// characters of at most [`MAX_PR_LABEL_LEN`] bytes. Empty for other events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pr_labels: Vec<String>,
    /// What the build is about, in one line, as Woodpecker's and GitHub's run lists name a
    /// run: a push's head commit's subject, a pull request's title ([`title_line`]). Absent
    /// where the webhook has none (a tag's, often), for submissions, schedules and older specs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// The longest title a job keeps, in characters; a longer one is cut, ending in `…`.
pub const MAX_TITLE_CHARS: usize = 200;

/// A job's [`NewJob::title`] from a commit message or a pull request's title: its first line,
/// trimmed, control characters as spaces, at most [`MAX_TITLE_CHARS`]; `None` when nothing is
/// left. The text comes from whoever pushed, so it is made fit for a table cell and a log line.
pub fn title_line(text: &str) -> Option<String> {
    let line: String = text
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    if line.chars().count() <= MAX_TITLE_CHARS {
        return Some(line.to_owned());
    }
    let mut cut: String = line.chars().take(MAX_TITLE_CHARS - 1).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    Some(cut)
}

/// The most labels of a pull request a job keeps: the job record stays small whatever the
/// forge sends.
pub const MAX_PR_LABELS: usize = 64;
/// The longest label name a job keeps, in bytes (Gitea's and GitHub's own limits are lower).
pub const MAX_PR_LABEL_LEN: usize = 255;

impl NewJob {
    /// The variables the job was given (a submission's, a schedule's), without the two that
    /// say which workflow or matrix variant it runs, which are shown as such.
    pub fn variables(&self) -> impl Iterator<Item = (&str, &str)> {
        self.env
            .iter()
            .filter(|(name, _)| !matches!(name.as_str(), "RAIBID_WORKFLOW" | "RAIBID_MATRIX"))
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// The commit's page on the forge (Gitea, Forgejo and GitHub all serve `<repo>/commit/<sha>`).
    pub fn commit_url(&self) -> Option<String> {
        let repo = self.repo_url.as_deref()?.trim_end_matches('/');
        Some(format!("{repo}/commit/{}", self.sha))
    }

    /// The pull request's page on the forge: GitHub's `<repo>/pull/<n>`, Gitea's and
    /// Forgejo's `<repo>/pulls/<n>`.
    pub fn pull_request_url(&self) -> Option<String> {
        let repo = self.repo_url.as_deref()?.trim_end_matches('/');
        let path = match self.forge? {
            Forge::Github => "pull",
            Forge::Gitea | Forge::Forgejo => "pulls",
        };
        Some(format!("{repo}/{path}/{}", self.pr_number?))
    }

    /// What started the job, on the forge (Woodpecker's `CI_PIPELINE_FORGE_URL`): the pull
    /// request, else the commit.
    pub fn forge_url(&self) -> Option<String> {
        self.pull_request_url().or_else(|| self.commit_url())
    }
}

/// What the job of a workflow with `depends_on` waits for: the jobs of the workflows it names
/// (each variant of a matrix), all of them siblings under the same parent job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Needs {
    /// The workflows, by name, for people (`waiting for build, test`).
    pub workflows: Vec<String>,
    /// Their jobs' ids.
    pub jobs: Vec<String>,
    /// Whether it runs when one of them failed (`runs_on: [success, failure]` or
    /// `[failure]`); a cancelled or skipped one always stops it.
    #[serde(default)]
    pub on_failure: bool,
    /// Whether it runs when they all succeeded: false for `runs_on: [failure]` alone (a
    /// workflow that reports failures, say).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub on_success: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// What to do with a job that waits for others ([`Needs`]), given how they stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeedsVerdict {
    /// Some have not ended.
    Wait,
    /// Queue it.
    Run,
    /// End it as [`JobStatus::Skipped`], for this reason.
    Skip(String),
}

impl Needs {
    /// How the reason of a job skipped by its [`NeedsVerdict`] begins.
    pub const NOT_RUN: &'static str = "not run: ";

    /// When the waiting job runs, as people read it after "waits for ...".
    pub fn after(&self) -> &'static str {
        match (self.on_success, self.on_failure) {
            (true, true) => "however they end",
            (false, _) => "if one of them fails",
            (true, false) => "if they succeed",
        }
    }

    /// Decides from the jobs it waits for, as they are now (`None`: one no longer exists,
    /// which counts as cancelled: nothing can tell how it ended).
    pub fn verdict(&self, jobs: &[Option<&Job>]) -> NeedsVerdict {
        let skip = |why: String| NeedsVerdict::Skip(format!("{}{why}", Self::NOT_RUN));
        let mut failed = Vec::new();
        let mut succeeded = Vec::new();
        for job in jobs {
            let Some(job) = job else {
                return skip("a job it depends on no longer exists".into());
            };
            if !job.status.is_final() {
                return NeedsVerdict::Wait;
            }
            let name = job
                .spec
                .env
                .get("RAIBID_WORKFLOW")
                .map_or(job.id.as_str(), String::as_str);
            let into = match job.status {
                JobStatus::Cancelled => return skip(format!("{name} was cancelled")),
                JobStatus::Skipped => return skip(format!("{name} was skipped")),
                JobStatus::Success => &mut succeeded,
                _ => &mut failed,
            };
            if !into.contains(&name) {
                into.push(name);
            }
        }
        match (failed.is_empty(), self.on_success, self.on_failure) {
            (true, true, _) | (false, _, true) => NeedsVerdict::Run,
            (true, false, _) => skip(format!(
                "{} succeeded, and it runs only after a failure",
                succeeded.join(", ")
            )),
            (false, _, false) => skip(format!("{} failed", failed.join(", "))),
        }
    }
}

impl NewJob {
    /// A job for `sha` at `git_ref` of `repo`, the rest at its defaults: the default pool, no
    /// forge or pull request, not from a fork, no extra environment.
    pub fn new(
        repo: impl Into<String>,
        clone_url: impl Into<String>,
        git_ref: impl Into<String>,
        sha: impl Into<String>,
        event: Event,
    ) -> Self {
        Self {
            repo: repo.into(),
            clone_url: clone_url.into(),
            git_ref: git_ref.into(),
            sha: sha.into(),
            event,
            pool: PoolName::default(),
            forge: None,
            pr_number: None,
            from_fork: false,
            sender: None,
            delivery_id: None,
            env: BTreeMap::new(),
            retry_of: None,
            matrix_parent: None,
            target_branch: None,
            diff_base: None,
            schedule: None,
            needs: None,
            number: None,
            source_branch: None,
            pr_labels: Vec::new(),
            title: None,
            repo_url: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    Success,
    Failure,
    Skipped,
    Cancelled,
}

impl StepStatus {
    /// The name the API gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Success => "success",
            StepStatus::Failure => "failure",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
        }
    }
}

/// The record of one pipeline step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    pub name: String,
    pub status: StepStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Last lines of output, to show why a step failed without fetching the whole log.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tail: String,
}

/// How an agent finished a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: JobStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub steps: Vec<StepResult>,
    /// Pushed images as `name@sha256:...`.
    #[serde(default)]
    pub images: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<JobArtifacts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestReport>,
}

/// What a job's JUnit XML reports (`artifacts: reports: junit:`) say, as GitLab's test
/// report summary shows: counts over every test case, and the first failures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestReport {
    /// Test cases, however they ended.
    pub tests: u64,
    /// Failed or errored.
    pub failed: u64,
    pub skipped: u64,
    /// Of every test case, as the reports give them.
    pub seconds: f64,
    /// Reports read.
    pub files: u32,
    /// The first [`TestReport::MAX_FAILURES`] failed test cases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<TestFailure>,
}

impl TestReport {
    /// Failures kept by name: enough to see what broke, bounded for the job's record.
    pub const MAX_FAILURES: usize = 20;

    pub fn passed(&self) -> u64 {
        self.tests.saturating_sub(self.failed + self.skipped)
    }

    /// `120 tests: 117 passed, 2 failed, 1 skipped`, leaving out what is zero.
    pub fn summary(&self) -> String {
        let mut parts = vec![format!("{} passed", self.passed())];
        if self.failed > 0 {
            parts.push(format!("{} failed", self.failed));
        }
        if self.skipped > 0 {
            parts.push(format!("{} skipped", self.skipped));
        }
        let plural = if self.tests == 1 { "" } else { "s" };
        format!("{} test{plural}: {}", self.tests, parts.join(", "))
    }
}

/// One failed (or errored) test case of a [`TestReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestFailure {
    /// The test case's `classname` (a module, a class), or its suite's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub suite: String,
    pub name: String,
    /// The first line of the failure's message (or of its text), shortened.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl std::fmt::Display for TestFailure {
    /// `suite name: message`, leaving out what is empty: how the log and `raibid job show`
    /// name a failure.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.suite.is_empty() {
            write!(f, "{} ", self.suite)?;
        }
        f.write_str(&self.name)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// A job's `artifacts:`, as the agent pushed them to the forge's registry: one gzipped tar in an
/// OCI artifact, tagged with the job's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobArtifacts {
    /// `<registry>/<owner>/<name>/artifacts@sha256:...`, pinned: what `raibid job artifacts`
    /// (or `oras pull`) fetches.
    pub reference: String,
    /// Of the archive, compressed.
    pub size: u64,
    /// Regular files in it.
    pub files: u64,
    /// When an agent deletes them from the registry (the pipeline's `expire_in`, else
    /// `agent.artifacts_expire_days`, as GitHub's artifact retention); `None`: kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Deleted: the reference no longer resolves.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expired: bool,
}

impl JobArtifacts {
    /// `expires_at` as people read it: `2026-12-05 18:02 UTC`.
    pub fn expiry(&self) -> Option<String> {
        self.expires_at
            .map(|at| at.format("%Y-%m-%d %H:%M UTC").to_string())
    }

    /// What became of them, once `expired`: `expired 2026-12-05 18:02 UTC, deleted from the
    /// registry`.
    pub fn expired_note(&self) -> Option<String> {
        self.expired.then(|| {
            let at = self.expiry().map(|at| format!(" {at}")).unwrap_or_default();
            format!("expired{at}, deleted from the registry")
        })
    }

    /// What the CLI and the job's page say of artifacts still kept: `3 files, 2048 bytes;
    /// `raibid job artifacts <id>`; kept until 2026-12-05 18:02 UTC`.
    pub fn summary(&self, job_id: &str) -> String {
        format!(
            "{} files, {} bytes; `raibid job artifacts {job_id}`{}",
            self.files,
            self.size,
            self.expiry()
                .map(|at| format!("; kept until {at}"))
                .unwrap_or_default()
        )
    }
}

impl Outcome {
    pub fn new(status: JobStatus) -> Self {
        Self {
            status,
            reason: None,
            steps: Vec::new(),
            images: Vec::new(),
            artifacts: None,
            tests: None,
        }
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// A job as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// A ULID: sortable by creation time.
    pub id: String,
    #[serde(flatten)]
    pub spec: NewJob,
    pub status: JobStatus,
    /// How many times an agent has started this job.
    pub attempt: u32,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub cancel_requested: bool,
    #[serde(default)]
    pub steps: Vec<StepResult>,
    #[serde(default)]
    pub images: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<JobArtifacts>,
    /// What its JUnit reports said, once it has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestReport>,
    /// The jobs a matrix job expanded into, one per variant; its commit status is theirs
    /// combined.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
    /// The job's log was deleted to keep Redis below its memory limit (the record stays).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log_pruned: bool,
    /// Who erased the job's log, and when: a person, through `DELETE /api/v1/jobs/{id}/logs`
    /// (a secret that reached the log unmasked, say). The record stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_erased: Option<LogErased>,
    /// The concurrency group of its repository (the pipeline's `concurrency:`) that it holds
    /// or waits for (`blocked`), once an agent has read the pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<String>,
    /// Who let it run when it waited for approval (`server.approval`): the name of the API
    /// token (or the start of its hash) that approved it, as Woodpecker shows its approver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
}

/// A job as the job lists serve it: the stored record, and for a job that queued others its
/// build's status, so that a list does not show a matrix green whose variant failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListedJob {
    #[serde(flatten)]
    pub job: Job,
    /// Set for a job that queued others (matrix variants, the workflows of `.raibid/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildStatus>,
}

impl ListedJob {
    /// The status a list shows: the build's, for a job that queued others.
    pub fn status(&self) -> JobStatus {
        self.build.as_ref().map_or(self.job.status, |b| b.status)
    }
}

/// The status of a build of several jobs, as its commit status combines them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildStatus {
    /// The first job's own status until it passed; then its jobs' combined: `running` until
    /// they all end, then `failure` if one failed, else `cancelled` if one was cancelled, else
    /// `success`.
    pub status: JobStatus,
    /// What the combined status says (`1 of 3 variants failed: N=2`), once the first job passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl BuildStatus {
    /// The status of a build whose first job passed, from its jobs' (`children`; `None` for
    /// one that no longer exists): `failure` if one failed (or could not run, or was given
    /// up), else `cancelled` if one was, else `success` once all ended (skipped jobs
    /// too), else `running`. The commit status, the web pages, the API and
    /// the dashboard all combine by this one rule.
    pub fn combine<'a>(children: impl IntoIterator<Item = Option<&'a Job>>) -> JobStatus {
        Self::combine_statuses(children.into_iter().map(|c| c.map(|c| c.status)))
    }

    /// [`BuildStatus::combine`] of the jobs' statuses alone.
    pub fn combine_statuses(children: impl IntoIterator<Item = Option<JobStatus>>) -> JobStatus {
        let mut cancelled = false;
        let mut ended = true;
        for child in children {
            match child {
                Some(JobStatus::Failure | JobStatus::Error | JobStatus::Dead) => {
                    return JobStatus::Failure;
                }
                Some(JobStatus::Cancelled) => cancelled = true,
                Some(status) if status.is_final() => {}
                _ => ended = false,
            }
        }
        if cancelled {
            JobStatus::Cancelled
        } else if ended {
            JobStatus::Success
        } else {
            JobStatus::Running
        }
    }
}

/// Who erased a job's log ([`Job::log_erased`]), and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogErased {
    /// The API token's name (or the start of its hash), as the server's log names it.
    pub by: String,
    pub at: DateTime<Utc>,
}

impl LogErased {
    /// What stands in place of the log.
    pub fn note(&self) -> String {
        format!(
            "this job's log was erased by {} at {}",
            self.by,
            self.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}

impl Job {
    /// `spec` as the queue records it when it is created: queued, never started.
    pub fn queued(id: impl Into<String>, spec: NewJob, created_at: DateTime<Utc>) -> Self {
        Self {
            id: id.into(),
            spec,
            status: JobStatus::Queued,
            attempt: 0,
            created_at,
            started_at: None,
            finished_at: None,
            agent: None,
            reason: None,
            cancel_requested: false,
            steps: Vec::new(),
            images: Vec::new(),
            children: Vec::new(),
            artifacts: None,
            tests: None,
            log_pruned: false,
            log_erased: None,
            concurrency: None,
            approved_by: None,
        }
    }

    /// Wall time from start to finish (or to `now` while running).
    pub fn duration(&self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        let start = self.started_at?;
        Some(self.finished_at.unwrap_or(now) - start)
    }

    /// Branch name for `refs/heads/*`.
    pub fn branch(&self) -> Option<&str> {
        self.spec.git_ref.strip_prefix("refs/heads/")
    }

    /// The branch a build is about: the pushed branch, or the branch a pull request targets.
    pub fn build_branch(&self) -> Option<&str> {
        match self.spec.event {
            Event::PullRequest => self.spec.target_branch.as_deref(),
            _ => self.branch(),
        }
    }

    /// What tells the job apart from the others of its push, as its commit status's context
    /// ends: `<workflow>`, `<workflow>/<variant>` or `<variant>`. A variant counts only on a
    /// variant job (one with a parent): the first job of a matrix stands for the whole.
    pub fn label(&self) -> Option<String> {
        match self.label_parts() {
            (Some(workflow), Some(variant)) => Some(format!("{workflow}/{variant}")),
            (Some(one), None) | (None, Some(one)) => Some(one.clone()),
            (None, None) => None,
        }
    }

    /// Whether it is the first job of a matrix or of several workflows and has passed, which it
    /// does once it has queued its jobs: its own status then says nothing of the code, and
    /// everything that shows it shows its build's, its jobs' combined ([`BuildStatus::combine`]).
    pub fn stands_for_its_jobs(&self) -> bool {
        self.status == JobStatus::Success && !self.children.is_empty()
    }

    /// How the job lists name it, as Woodpecker's names a workflow of a pipeline: its pipeline
    /// number and its label (`#17 test/RUST=1.80`), or either alone; `None` for a job with
    /// neither (queued before pipelines were numbered), which its id names.
    pub fn list_name(&self) -> Option<String> {
        match (self.spec.number, self.label()) {
            (Some(n), Some(label)) => Some(format!("#{n} {label}")),
            (Some(n), None) => Some(format!("#{n}")),
            (None, label) => label,
        }
    }

    /// The parts of [`Self::label`]: the workflow's name and the matrix variant's, each where
    /// the job is one.
    pub fn label_parts(&self) -> (Option<&String>, Option<&String>) {
        let workflow = self.spec.env.get("RAIBID_WORKFLOW");
        let variant = self
            .spec
            .matrix_parent
            .as_ref()
            .and(self.spec.env.get("RAIBID_MATRIX"));
        (workflow, variant)
    }

    /// The job's web page below `public_url`, the server's address for people
    /// (`server.public_url`), which serves it at `/jobs/<id>`; `None` when that is not known.
    pub fn page_url(&self, public_url: &str) -> Option<String> {
        let public_url = public_url.trim_end_matches('/');
        (!public_url.is_empty()).then(|| format!("{public_url}/jobs/{}", self.id))
    }

    /// Tag name for `refs/tags/*`.
    pub fn tag(&self) -> Option<&str> {
        self.spec.git_ref.strip_prefix("refs/tags/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_title_is_one_clean_bounded_line() {
        assert_eq!(
            title_line("Fix the parser\n\nIt broke on tabs.").as_deref(),
            Some("Fix the parser")
        );
        assert_eq!(
            title_line("  spaced\tand\u{1b}[31mred  ").as_deref(),
            Some("spaced and [31mred")
        );
        assert_eq!(title_line(""), None);
        assert_eq!(title_line(" \n body only"), None);
        let long = "é".repeat(MAX_TITLE_CHARS + 10);
        let cut = title_line(&long).unwrap();
        assert_eq!(cut.chars().count(), MAX_TITLE_CHARS);
        assert!(cut.ends_with('…'));
        let exact = "x".repeat(MAX_TITLE_CHARS);
        assert_eq!(title_line(&exact).as_deref(), Some(exact.as_str()));
    }

    #[test]
    fn forge_links_come_from_the_repository_s_web_page() {
        let mut spec = NewJob::new(
            "acme/app",
            "x",
            "refs/pull/7/head",
            "a".repeat(40),
            Event::PullRequest,
        );
        spec.pr_number = Some(7);
        spec.forge = Some(Forge::Gitea);
        assert_eq!(spec.forge_url(), None, "no web page, no links");
        spec.repo_url = Some("https://git.example/acme/app/".into());
        let commit = format!("https://git.example/acme/app/commit/{}", "a".repeat(40));
        assert_eq!(spec.commit_url().as_deref(), Some(commit.as_str()));
        assert_eq!(
            spec.forge_url().as_deref(),
            Some("https://git.example/acme/app/pulls/7")
        );
        spec.forge = Some(Forge::Github);
        assert_eq!(
            spec.pull_request_url().as_deref(),
            Some("https://git.example/acme/app/pull/7")
        );
        spec.pr_number = None;
        assert_eq!(spec.forge_url().as_deref(), Some(commit.as_str()));
    }

    #[test]
    fn expired_artifacts_say_when() {
        let mut artifacts = JobArtifacts {
            reference: "r".into(),
            size: 1,
            files: 1,
            expires_at: Some(DateTime::from_timestamp(1_796_493_720, 0).unwrap()),
            expired: false,
        };
        assert_eq!(artifacts.expiry().as_deref(), Some("2026-12-05 18:02 UTC"));
        assert_eq!(artifacts.expired_note(), None, "still kept");
        artifacts.expired = true;
        assert_eq!(
            artifacts.expired_note().as_deref(),
            Some("expired 2026-12-05 18:02 UTC, deleted from the registry")
        );
    }

    #[test]
    fn step_statuses_are_named_as_the_api_serializes_them() {
        use StepStatus::*;
        for status in [Pending, Running, Success, Failure, Skipped, Cancelled] {
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::Value::from(status.as_str())
            );
        }
    }

    /// The job of workflow `workflow`, ended (or not) as `status`.
    fn job(workflow: &str, status: JobStatus) -> Job {
        let mut spec = NewJob::new("o/r", "u", "refs/heads/main", "a".repeat(40), Event::Push);
        spec.env.insert("RAIBID_WORKFLOW".into(), workflow.into());
        let mut job = Job::queued(format!("id-{workflow}"), spec, chrono::Utc::now());
        job.status = status;
        job
    }

    #[test]
    fn a_build_fails_as_soon_as_one_job_fails_and_passes_once_all_ended() {
        use JobStatus::*;
        let combine = |statuses: &[Option<JobStatus>]| {
            let jobs: Vec<Option<Job>> = statuses
                .iter()
                .enumerate()
                .map(|(i, s)| s.map(|s| job(&i.to_string(), s)))
                .collect();
            BuildStatus::combine(jobs.iter().map(Option::as_ref))
        };
        assert_eq!(combine(&[Some(Running), Some(Failure)]), Failure);
        assert_eq!(combine(&[Some(Cancelled), Some(Dead)]), Failure);
        assert_eq!(combine(&[Some(Error), Some(Success)]), Failure);
        assert_eq!(combine(&[Some(Queued), Some(Cancelled)]), Cancelled);
        assert_eq!(combine(&[Some(Success), Some(Skipped)]), Success);
        assert_eq!(combine(&[Some(Success), Some(Blocked)]), Running);
        // A job that is gone never ends, as the commit status counts it.
        assert_eq!(combine(&[Some(Success), None]), Running);
    }

    #[test]
    fn a_listed_job_is_the_record_with_its_build_beside() {
        use JobStatus::*;
        let mut record = job("w", Success);
        record.children = vec!["c".into()];
        let listed = ListedJob {
            job: record.clone(),
            build: Some(BuildStatus {
                status: Failure,
                description: Some("1 of 1 job failed: c".into()),
            }),
        };
        let value = serde_json::to_value(&listed).unwrap();
        assert_eq!(value["id"], "id-w");
        assert_eq!(value["status"], "success");
        assert_eq!(value["build"]["status"], "failure");
        assert_eq!(serde_json::from_value::<ListedJob>(value).unwrap(), listed);
        assert_eq!(listed.status(), Failure);
        // A record of its own, as a server without builds in its lists gives it.
        let plain: ListedJob = serde_json::to_value(&record)
            .and_then(serde_json::from_value)
            .unwrap();
        assert_eq!((plain.status(), plain.build), (Success, None));
        assert_eq!(plain.job, record);
    }

    #[test]
    fn a_waiting_job_runs_once_what_it_needs_has_ended_well() {
        let needs = |on_failure| Needs {
            workflows: vec!["build".into(), "test".into()],
            jobs: vec!["id-build".into(), "id-test".into()],
            on_failure,
            on_success: true,
        };
        let build = job("build", JobStatus::Success);
        let running = job("test", JobStatus::Running);
        let passed = job("test", JobStatus::Success);
        let failed = job("test", JobStatus::Failure);
        let dead = job("test", JobStatus::Dead);
        let cancelled = job("test", JobStatus::Cancelled);
        let verdict =
            |on_failure, other: &Job| needs(on_failure).verdict(&[Some(&build), Some(other)]);
        assert_eq!(verdict(false, &running), NeedsVerdict::Wait);
        assert_eq!(verdict(true, &running), NeedsVerdict::Wait);
        assert_eq!(verdict(false, &passed), NeedsVerdict::Run);
        assert_eq!(
            verdict(false, &failed),
            NeedsVerdict::Skip("not run: test failed".into())
        );
        assert_eq!(
            verdict(false, &dead),
            NeedsVerdict::Skip("not run: test failed".into())
        );
        assert_eq!(verdict(true, &failed), NeedsVerdict::Run);
        assert_eq!(
            verdict(true, &cancelled),
            NeedsVerdict::Skip("not run: test was cancelled".into())
        );
        assert!(matches!(
            needs(true).verdict(&[Some(&build), None]),
            NeedsVerdict::Skip(_)
        ));
        // Two failed variants of one workflow name it once.
        assert_eq!(
            needs(false).verdict(&[Some(&failed), Some(&failed)]),
            NeedsVerdict::Skip("not run: test failed".into())
        );
    }

    /// `runs_on: [failure]`: a workflow for failures only (Woodpecker's key).
    #[test]
    fn a_job_for_failures_runs_only_after_one() {
        let needs = Needs {
            workflows: vec!["build".into(), "test".into()],
            jobs: vec!["id-build".into(), "id-test".into()],
            on_failure: true,
            on_success: false,
        };
        let build = job("build", JobStatus::Success);
        let verdict = |other: &Job| needs.verdict(&[Some(&build), Some(other)]);
        assert_eq!(
            verdict(&job("test", JobStatus::Success)),
            NeedsVerdict::Skip(
                "not run: build, test succeeded, and it runs only after a failure".into()
            )
        );
        assert_eq!(verdict(&job("test", JobStatus::Error)), NeedsVerdict::Run);
        assert_eq!(
            verdict(&job("test", JobStatus::Running)),
            NeedsVerdict::Wait
        );
        // What was itself not run stops it either way.
        assert_eq!(
            verdict(&job("test", JobStatus::Skipped)),
            NeedsVerdict::Skip("not run: test was skipped".into())
        );
        // Stored before `on_success` existed: it ran after success.
        let old: Needs =
            serde_json::from_str(r#"{"workflows":["b"],"jobs":["x"],"on_failure":false}"#).unwrap();
        assert!(old.on_success);
        assert!(
            !serde_json::to_string(&old).unwrap().contains("on_success"),
            "the default is left out"
        );
    }

    #[test]
    fn status_round_trips_through_strings() {
        for st in JobStatus::ALL {
            assert_eq!(st.as_str().parse::<JobStatus>().unwrap(), st);
        }
        assert!("nope".parse::<JobStatus>().is_err());
    }

    #[test]
    fn only_blocked_queued_and_running_are_not_final() {
        let open: Vec<_> = JobStatus::ALL
            .into_iter()
            .filter(|s| !s.is_final())
            .collect();
        assert_eq!(
            open,
            vec![JobStatus::Blocked, JobStatus::Queued, JobStatus::Running]
        );
    }

    #[test]
    fn event_serializes_snake_case() {
        assert_eq!(
            serde_json::to_string(&Event::PullRequest).unwrap(),
            "\"pull_request\""
        );
        assert_eq!("pull_request".parse::<Event>().unwrap(), Event::PullRequest);
    }

    #[test]
    fn cron_is_an_event_and_old_specs_have_no_schedule() {
        assert_eq!("cron".parse::<Event>().unwrap(), Event::Cron);
        assert_eq!(serde_json::to_string(&Event::Cron).unwrap(), "\"cron\"");
        let old = r#"{"repo":"a/b","clone_url":"u","git_ref":"refs/heads/main","sha":"s","event":"push"}"#;
        let spec: NewJob = serde_json::from_str(old).unwrap();
        assert_eq!(spec.schedule, None);
        assert!(!serde_json::to_string(&spec).unwrap().contains("schedule"));
        let mut nightly = NewJob::new("a/b", "u", "refs/heads/main", "s", Event::Cron);
        nightly.schedule = Some("nightly".into());
        let text = serde_json::to_string(&nightly).unwrap();
        assert!(text.contains(r#""schedule":"nightly""#), "{text}");
        assert_eq!(serde_json::from_str::<NewJob>(&text).unwrap(), nightly);
    }
}
