//! `raibid bench e2e`: the whole system as a user runs it, `raibid up` as a separate process.
//!
//! Jobs are no-op pipelines (`steps: [{name: noop, run: "true"}]`) of a tiny repository served
//! over smart HTTP (`raibid_server::git_http`, what `raibid up --demo` uses: the forge parser
//! wants an http(s) clone URL), submitted as signed Gitea push webhooks, the path a forge
//! takes. Every `raibid up` gets its own data directory; its first job (creating the agent's
//! mirror of the repository) is a warm-up and not measured, so later jobs check out from the
//! mirror as they would on a machine that has built the repository before.
//!
//! Three phases, each with its own `raibid up`:
//! - warm: `--max-agents 0` plus one long-running `raibid agent` (not `--once`) on the same
//!   Redis, already waiting for work when each webhook is sent;
//! - idle: the default local pool, every job sent once the pool is back to zero agents, so
//!   each one pays for the pool noticing the lag and starting `raibid agent --once`;
//! - throughput: `--max-agents 4` (configurable), all jobs sent at once, timed until the last
//!   success is recorded.
//!
//! Timestamps: "sent" and "seen" are this process's wall clock; "queued", "claimed" and
//! "success recorded" are the job record's (milliseconds); "checked out", "step started" and
//! "step done" are the ids of the log stream entries the agent wrote (milliseconds, Redis's
//! clock). All clocks are the same machine's, so the phases add up to within a millisecond.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use raibid_forge::send::{Push, gitea_push_body, gitea_push_headers};
use raibid_model::JobStatus;
use raibid_queue::{LogCursor, Queue, QueueOptions};
use raibid_testkit::GitRepo;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::BenchError;
use crate::procs::{Proc, check_raibid, default_raibid_exe, git, require_tool};
use crate::report::{
    LATENCY_HEADERS, LatencySummary, Machine, TargetCheck, latency_row, mib, table, targets_table,
};
use crate::webhooks::{TARGET_SERVER_RSS_MIB, random_secret, server_idle_memory};

// Targets from the issue; the server's memory target is the webhook benchmark's.
pub const TARGET_WARM_FIRST_STEP_P50_MS: f64 = 20.0;
pub const TARGET_IDLE_FIRST_STEP_P50_MS: f64 = 300.0;
pub const TARGET_NOOP_P50_MS: f64 = 150.0;
pub const TARGET_NOOP_P99_MS: f64 = 400.0;
pub const TARGET_JOBS_PER_S: f64 = 20.0;
pub const TARGET_AGENT_RSS_MIB: f64 = 15.0;

/// `up.polling_interval_ms` when the configuration does not set it.
const DEFAULT_POLLING_INTERVAL_MS: u64 = 200;
const NOOP_REPO: &str = "bench/noop";
const PIPELINE: &str = "steps:\n  - name: noop\n    run: \"true\"\n";
const WARM_AGENT: &str = "bench-warm";
/// Time for a job to go from webhook to recorded success before the run is declared broken.
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct E2eBenchOptions {
    /// The `raibid` executable run as `raibid up`, `raibid agent` and `raibid server`.
    pub raibid_exe: PathBuf,
    /// Sequential jobs with a warm agent.
    pub warm_jobs: usize,
    /// Sequential jobs, each from a pool of zero agents.
    pub idle_jobs: usize,
    /// Jobs sent at once for the throughput figure.
    pub throughput_jobs: usize,
    pub throughput_max_agents: u32,
    /// `up.polling_interval_ms`; `None` keeps the product's default (200 ms).
    pub polling_interval_ms: Option<u64>,
    /// `agent.executor` (`auto`, `host`, `bwrap`); `None` keeps the default (`auto`: bubblewrap
    /// when it works on this machine).
    pub executor: Option<String>,
    /// Idle time before a process's resident memory is read.
    pub idle_settle: Duration,
    /// Pause between two warm jobs, so that each finds the agent back in its blocking claim.
    pub warm_gap: Duration,
}

impl Default for E2eBenchOptions {
    fn default() -> Self {
        Self {
            raibid_exe: default_raibid_exe(),
            warm_jobs: 200,
            idle_jobs: 50,
            throughput_jobs: 500,
            throughput_max_agents: 4,
            polling_interval_ms: None,
            executor: None,
            idle_settle: Duration::from_secs(5),
            warm_gap: Duration::from_millis(50),
        }
    }
}

/// Median and p99 of one stretch of a job's life.
#[derive(Debug, Clone, Serialize)]
pub struct Stretch {
    pub name: String,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub jobs: usize,
    /// Webhook sent -> the step's header in the job's log.
    pub first_step: LatencySummary,
    /// Webhook sent -> success seen on the job events stream.
    pub end_to_end: LatencySummary,
    /// Where the time goes, stretch by stretch.
    pub breakdown: Vec<Stretch>,
    /// CPU (user + system) per job of the agents and everything they ran (git, bwrap, the
    /// step).
    pub agent_cpu_ms_per_job: f64,
    /// CPU per job of the `raibid up` process itself: server and local pool.
    pub up_cpu_ms_per_job: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThroughputReport {
    pub jobs: usize,
    pub max_agents: u32,
    /// First webhook sent -> last success seen.
    pub elapsed_s: f64,
    pub jobs_per_sec: f64,
    /// `max_agents` jobs per job run time (claim to success): the rate if every agent slot
    /// were busy all the time. The pool refills a slot when its agent exits, so the measured
    /// rate falls short of it by each `raibid agent --once` process's start-up and exit.
    pub run_bound_per_sec: f64,
    /// Claimed -> success recorded: one job's time inside its agent.
    pub run_p50_ms: f64,
    /// Queued -> claimed.
    pub wait_p50_ms: f64,
    /// As in [`PhaseReport`]: agents (with their git, bwrap and step processes), and
    /// `raibid up` itself.
    pub agent_cpu_ms_per_job: f64,
    pub up_cpu_ms_per_job: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct E2eReport {
    pub machine: Machine,
    /// What the agents run steps with (from the warm agent's log).
    pub executor: String,
    /// What the agents are: `raibid-agent`, or `raibid agent` without it beside `raibid`.
    pub agent_program: String,
    pub polling_interval_ms: u64,
    pub warm: PhaseReport,
    pub idle: PhaseReport,
    pub throughput: ThroughputReport,
    /// `raibid server` alone, idle.
    pub server_idle_rss_kib: u64,
    /// `raibid up` (server + local pool in one process, Redis and agents not included), idle.
    pub up_idle_rss_kib: u64,
    /// The long-running agent, waiting for work before its first job.
    pub agent_idle_rss_kib: u64,
    /// The same agent waiting again after the warm jobs.
    pub agent_idle_after_jobs_rss_kib: u64,
    pub targets: Vec<TargetCheck>,
}

impl E2eReport {
    pub fn render_table(&self) -> String {
        let mut out = format!(
            "e2e: `raibid up` as its own process, signed Gitea push webhooks, no-op pipeline of a \
             tiny repository over smart HTTP (mirror warm), executor {}, pool polling every {} ms\n\
             machine: {}\n\n",
            self.executor, self.polling_interval_ms, self.machine
        );
        out.push_str(&table(
            &LATENCY_HEADERS,
            &[
                latency_row("webhook -> first step, warm agent", &self.warm.first_step),
                latency_row("webhook -> first step, idle pool", &self.idle.first_step),
                latency_row("no-op job end to end, warm agent", &self.warm.end_to_end),
                latency_row("no-op job end to end, idle pool", &self.idle.end_to_end),
            ],
        ));
        for (name, phase) in [("warm agent", &self.warm), ("idle pool", &self.idle)] {
            out.push('\n');
            let rows: Vec<Vec<String>> = phase
                .breakdown
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        format!("{:.1}", s.p50_ms),
                        format!("{:.1}", s.p99_ms),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[&format!("BREAKDOWN, {name}"), "P50 MS", "P99 MS"],
                &rows,
            ));
        }
        out.push('\n');
        let t = &self.throughput;
        out.push_str(&table(
            &[
                "THROUGHPUT",
                "JOBS",
                "SECONDS",
                "JOBS/S",
                "RUN BOUND/S",
                "RUN P50 MS",
                "WAIT P50 MS",
            ],
            &[vec![
                format!("max_agents {}", t.max_agents),
                t.jobs.to_string(),
                format!("{:.1}", t.elapsed_s),
                format!("{:.1}", t.jobs_per_sec),
                format!("{:.0}", t.run_bound_per_sec),
                format!("{:.0}", t.run_p50_ms),
                format!("{:.0}", t.wait_p50_ms),
            ]],
        ));
        out.push('\n');
        out.push_str(&table(
            &["CPU PER JOB", "AGENT MS", "RAIBID UP MS"],
            &[
                vec![
                    "warm agent".into(),
                    format!("{:.1}", self.warm.agent_cpu_ms_per_job),
                    format!("{:.1}", self.warm.up_cpu_ms_per_job),
                ],
                vec![
                    "idle pool (agent --once per job)".into(),
                    format!("{:.1}", self.idle.agent_cpu_ms_per_job),
                    format!("{:.1}", self.idle.up_cpu_ms_per_job),
                ],
                vec![
                    "throughput".into(),
                    format!("{:.1}", t.agent_cpu_ms_per_job),
                    format!("{:.1}", t.up_cpu_ms_per_job),
                ],
            ],
        ));
        out.push('\n');
        out.push_str(&table(
            &["MEMORY (RSS)", "MIB"],
            &[
                vec![
                    "raibid server, idle".into(),
                    format!("{:.1}", mib(self.server_idle_rss_kib)),
                ],
                vec![
                    "raibid up (server + pool), idle".into(),
                    format!("{:.1}", mib(self.up_idle_rss_kib)),
                ],
                vec![
                    format!("{}, waiting, before any job", self.agent_program),
                    format!("{:.1}", mib(self.agent_idle_rss_kib)),
                ],
                vec![
                    format!(
                        "{}, waiting, after {} jobs",
                        self.agent_program, self.warm.jobs
                    ),
                    format!("{:.1}", mib(self.agent_idle_after_jobs_rss_kib)),
                ],
            ],
        ));
        out.push('\n');
        out.push_str(&targets_table(&self.targets));
        out
    }
}

/// Runs the end-to-end benchmark; see the module documentation.
pub async fn e2e(opts: E2eBenchOptions) -> Result<E2eReport, BenchError> {
    let machine = Machine::detect();
    check_raibid(&opts.raibid_exe)?;
    require_tool("git", "git")?;
    require_tool("redis-server", "redis-server")?;
    let dir = tempfile::Builder::new()
        .prefix("raibid-bench-e2e-")
        .tempdir()
        .map_err(BenchError::io("creating a temporary directory"))?;
    let root = dir.path();

    info!("idle memory of raibid server");
    let server_idle = server_idle_memory(&opts.raibid_exe, opts.idle_settle).await?;

    let git_root = root.join("git");
    let sha = noop_repository(&git_root, root).await?;
    let (ctx, stop_git) = Ctx::serving(
        &opts.raibid_exe,
        root,
        &config_yaml(&opts),
        git_root,
        NOOP_REPO,
        sha,
    )
    .await?;

    let result = async {
        let warm = warm_phase(&ctx, &opts).await?;
        let idle = idle_phase(&ctx, &opts).await?;
        let throughput = throughput_phase(&ctx, &opts).await?;
        Ok::<_, BenchError>((warm, idle, throughput))
    }
    .await;
    stop_git.cancel();
    let (warm, idle, throughput) = result?;

    let polling_interval_ms = opts
        .polling_interval_ms
        .unwrap_or(DEFAULT_POLLING_INTERVAL_MS);
    let agent_rss = warm.agent_before.rss_kib.max(warm.agent_after.rss_kib);
    let targets = vec![
        TargetCheck::below(
            "webhook -> first step p50, warm agent",
            "ms",
            TARGET_WARM_FIRST_STEP_P50_MS,
            warm.phase.first_step.p50_ms,
        ),
        TargetCheck::below(
            "webhook -> first step p50, idle pool",
            "ms",
            TARGET_IDLE_FIRST_STEP_P50_MS,
            idle.phase.first_step.p50_ms,
        ),
        TargetCheck::below(
            "no-op job p50, warm agent",
            "ms",
            TARGET_NOOP_P50_MS,
            warm.phase.end_to_end.p50_ms,
        ),
        TargetCheck::below(
            "no-op job p99, warm agent",
            "ms",
            TARGET_NOOP_P99_MS,
            warm.phase.end_to_end.p99_ms,
        ),
        TargetCheck::below(
            "no-op job p50, idle pool",
            "ms",
            TARGET_NOOP_P50_MS,
            idle.phase.end_to_end.p50_ms,
        ),
        TargetCheck::below(
            "no-op job p99, idle pool",
            "ms",
            TARGET_NOOP_P99_MS,
            idle.phase.end_to_end.p99_ms,
        ),
        TargetCheck::at_least(
            &format!(
                "{} no-op jobs, max_agents {}",
                throughput.jobs, throughput.max_agents
            ),
            "jobs/s",
            TARGET_JOBS_PER_S,
            throughput.jobs_per_sec,
        ),
        TargetCheck::below(
            "server idle RSS",
            "MiB",
            TARGET_SERVER_RSS_MIB,
            mib(server_idle.rss_kib),
        ),
        TargetCheck::below(
            "idle agent RSS (worse of before/after jobs)",
            "MiB",
            TARGET_AGENT_RSS_MIB,
            mib(agent_rss),
        ),
    ];
    Ok(E2eReport {
        machine,
        executor: warm.executor,
        agent_program: warm.agent_program,
        polling_interval_ms,
        warm: warm.phase,
        idle: idle.phase,
        throughput,
        server_idle_rss_kib: server_idle.rss_kib,
        up_idle_rss_kib: idle.up_rss_kib,
        agent_idle_rss_kib: warm.agent_before.rss_kib,
        agent_idle_after_jobs_rss_kib: warm.agent_after.rss_kib,
        targets,
    })
}

/// What every phase needs (also `raibid bench cache`'s).
pub(crate) struct Ctx {
    pub(crate) exe: PathBuf,
    pub(crate) root: PathBuf,
    pub(crate) config: PathBuf,
    pub(crate) http: reqwest::Client,
    pub(crate) secret: String,
    pub(crate) clone_url: String,
    pub(crate) sha: String,
}

impl Ctx {
    /// Serves the bare repositories under `git_root` over smart HTTP until the returned token
    /// is cancelled, writes `raibid up`'s configuration, and makes the context of jobs that
    /// clone `<repo>.git` at `sha` from there.
    pub(crate) async fn serving(
        exe: &Path,
        root: &Path,
        config_yaml: &str,
        git_root: PathBuf,
        repo: &str,
        sha: String,
    ) -> Result<(Self, CancellationToken), BenchError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(BenchError::io("binding the git HTTP server"))?;
        let clone_url = format!(
            "http://{}/{repo}.git",
            listener
                .local_addr()
                .map_err(BenchError::io("git HTTP server address"))?
        );
        let config = root.join("config.yaml");
        std::fs::write(&config, config_yaml).map_err(BenchError::io("writing config.yaml"))?;
        let ctx = Ctx {
            exe: exe.to_path_buf(),
            root: root.to_path_buf(),
            config,
            http: reqwest::Client::builder().tcp_nodelay(true).build()?,
            secret: random_secret(),
            clone_url,
            sha,
        };
        let stop = CancellationToken::new();
        tokio::spawn(raibid_server::git_http::serve(listener, git_root, {
            let stop = stop.clone();
            async move { stop.cancelled().await }
        }));
        Ok((ctx, stop))
    }
}

fn config_yaml(opts: &E2eBenchOptions) -> String {
    let mut yaml = String::from("# raibid bench e2e\n");
    if let Some(executor) = &opts.executor {
        yaml.push_str(&format!("agent:\n  executor: {executor}\n"));
    }
    if let Some(ms) = opts.polling_interval_ms {
        yaml.push_str(&format!("up:\n  polling_interval_ms: {ms}\n"));
    }
    yaml
}

/// The no-op repository as a bare repository under `git_root`; returns its commit.
async fn noop_repository(git_root: &Path, home: &Path) -> Result<String, BenchError> {
    let (work, sha) = tokio::task::spawn_blocking(|| {
        let repo = GitRepo::new();
        let sha = repo.commit(
            &[(".raibid.yaml", PIPELINE)],
            "a pipeline that does nothing",
        );
        (repo, sha)
    })
    .await
    .map_err(|e| BenchError::Process {
        what: "creating the no-op repository".into(),
        message: e.to_string(),
    })?;
    let bare = git_root.join(format!("{NOOP_REPO}.git"));
    let bare_arg = bare.display().to_string();
    git(
        Some(work.path()),
        &["clone", "--quiet", "--bare", ".", &bare_arg],
        home,
    )
    .await?;
    Ok(sha)
}

/// One `raibid up` with its own data directory, and a queue handle on its private Redis.
pub(crate) struct Up {
    pub(crate) proc: Proc,
    pub(crate) url: String,
    pub(crate) queue: Queue,
    pub(crate) data: PathBuf,
}

impl Up {
    pub(crate) async fn start(
        ctx: &Ctx,
        name: &str,
        max_agents: Option<u32>,
    ) -> Result<Self, BenchError> {
        let data = ctx.root.join(name);
        let listen = format!("127.0.0.1:{}", raibid_testkit::free_port());
        let config = ctx.config.display().to_string();
        let data_arg = data.display().to_string();
        let max = max_agents.map(|m| m.to_string());
        // A file, as an operator keeps it (RAIBID_UP_WEBHOOK_SECRET would do as well).
        let secret_file = ctx.root.join("webhook-secret");
        std::fs::write(&secret_file, &ctx.secret)
            .map_err(BenchError::io("writing the webhook secret"))?;
        let secret_arg = secret_file.display().to_string();
        let mut args = vec![
            "--config",
            &config,
            "up",
            "--data-dir",
            &data_arg,
            "--listen",
            &listen,
            "--webhook-secret-file",
            &secret_arg,
        ];
        if let Some(max) = &max {
            args.extend(["--max-agents", max]);
        }
        let mut proc = Proc::spawn(
            "raibid up",
            &ctx.exe,
            &args,
            &[],
            &ctx.root.join(format!("{name}.log")),
        )?;
        let url = format!("http://{listen}");
        proc.wait_http_ok(&ctx.http, &format!("{url}/readyz"), Duration::from_secs(60))
            .await?;
        let mut redis_url = None;
        for _ in 0..100 {
            let log = std::fs::read_to_string(proc.log()).unwrap_or_default();
            redis_url = redis_url_in(&log);
            if redis_url.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let redis_url = redis_url.ok_or_else(|| proc.died("printed no redis URL"))?;
        // The private Redis requires the password `raibid up` generated in its data directory
        // (it prints the URL without it).
        let redis_url = match std::fs::read_to_string(data.join("redis-password")) {
            Ok(password) => with_password(&redis_url, password.trim()),
            Err(_) => redis_url,
        };
        let queue = Queue::open(QueueOptions::new(redis_url))?;
        queue.ping().await?;
        Ok(Self {
            proc,
            url,
            queue,
            data,
        })
    }

    pub(crate) async fn stop(self) {
        self.proc.stop(Duration::from_secs(60)).await;
    }
}

/// The private Redis `raibid up` announces on its `redis` line.
fn redis_url_in(output: &str) -> Option<String> {
    output
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("redis "))
        .flat_map(str::split_whitespace)
        .find(|w| w.starts_with("redis://"))
        .map(str::to_owned)
}

/// `redis://host:port/` (or the printed `redis://:***@host:port/`) with `password` (hex, as
/// `raibid up` generates it) for AUTH.
fn with_password(url: &str, password: &str) -> String {
    match url.strip_prefix("redis://") {
        Some(rest) if !password.is_empty() => {
            let host = rest.split_once('@').map_or(rest, |(_, host)| host);
            format!("redis://:{password}@{host}")
        }
        _ => url.to_owned(),
    }
}

/// Final statuses from the job events stream, as they arrive, with the time they were seen.
pub(crate) struct Finished {
    rx: mpsc::UnboundedReceiver<(String, JobStatus, f64)>,
    seen: HashMap<String, (JobStatus, f64)>,
    task: tokio::task::JoinHandle<()>,
    /// How long [`Finished::wait`] waits for one job.
    timeout: Duration,
}

impl Finished {
    /// Joins the events stream with a group of our own, from now on.
    pub(crate) async fn start(queue: &Queue) -> Result<Self, BenchError> {
        Self::start_with_timeout(queue, JOB_TIMEOUT).await
    }

    /// As [`Finished::start`], for jobs that may take longer than a no-op one (a build).
    pub(crate) async fn start_with_timeout(
        queue: &Queue,
        timeout: Duration,
    ) -> Result<Self, BenchError> {
        let mut events = queue
            .job_events(&format!("bench-{}", random_secret()), "bench")
            .await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match events.next(256, Duration::from_secs(1)).await {
                    Ok(batch) => {
                        let seen = now_ms();
                        for e in batch.into_iter().filter(|e| e.status.is_final()) {
                            if tx.send((e.job_id, e.status, seen)).is_err() {
                                return;
                            }
                        }
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Ok(Self {
            rx,
            seen: HashMap::new(),
            task,
            timeout,
        })
    }

    pub(crate) async fn wait(&mut self, id: &str) -> Result<(JobStatus, f64), BenchError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            if let Some(done) = self.seen.get(id) {
                return Ok(*done);
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((job, status, at))) => {
                    self.seen.insert(job, (status, at));
                }
                Ok(None) => return Err(BenchError::Invalid("the events reader stopped".into())),
                Err(_) => {
                    return Err(BenchError::Invalid(format!(
                        "job {id} did not finish within {:?}",
                        self.timeout
                    )));
                }
            }
        }
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0
}

/// Sends one signed push webhook; returns the queued job's id.
async fn send_push(ctx: &Ctx, up: &Up, delivery: &str) -> Result<String, BenchError> {
    push_webhook(ctx, up, NOOP_REPO, &ctx.sha, delivery).await
}

/// Sends one signed push webhook of `sha` on `main` of `repo` (cloned from `ctx.clone_url`);
/// returns the queued job's id.
pub(crate) async fn push_webhook(
    ctx: &Ctx,
    up: &Up,
    repo: &str,
    sha: &str,
    delivery: &str,
) -> Result<String, BenchError> {
    let push = Push {
        repo: repo.into(),
        clone_url: ctx.clone_url.clone(),
        git_ref: "refs/heads/main".into(),
        before: "0".repeat(40),
        after: sha.to_owned(),
        sender: "bench".into(),
        message: "push".into(),
    };
    let body = gitea_push_body(&push);
    let headers = gitea_push_headers(&body, ctx.secret.as_bytes(), delivery);
    let mut req = ctx
        .http
        .post(format!("{}/webhooks/gitea", up.url))
        .timeout(Duration::from_secs(30))
        .body(body);
    for (name, value) in &headers {
        req = req.header(*name, value);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let answer: serde_json::Value = resp.json().await.unwrap_or_default();
    match answer.get("job_id").and_then(|v| v.as_str()) {
        Some(id) if status == reqwest::StatusCode::ACCEPTED => Ok(id.to_owned()),
        _ => Err(BenchError::Invalid(format!(
            "the webhook was answered {status}: {answer}"
        ))),
    }
}

/// The moments of one job's life, in milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
struct JobTiming {
    sent: f64,
    queued: f64,
    claimed: f64,
    checked_out: f64,
    step_started: f64,
    step_done: f64,
    recorded: f64,
    seen: f64,
}

impl JobTiming {
    const STRETCHES: [&str; 7] = [
        "webhook sent -> job queued",
        "queued -> claimed by an agent",
        "claimed -> checked out",
        "checked out -> step started",
        "step started -> step done (`true`)",
        "step done -> success recorded",
        "recorded -> seen on the events stream",
    ];

    fn points(&self) -> [f64; 8] {
        [
            self.sent,
            self.queued,
            self.claimed,
            self.checked_out,
            self.step_started,
            self.step_done,
            self.recorded,
            self.seen,
        ]
    }
}

fn ms_to_duration(ms: f64) -> Duration {
    Duration::from_secs_f64(ms.max(0.0) / 1000.0)
}

fn summarize(timings: &[JobTiming], cpu: JobCpu) -> PhaseReport {
    let of = |f: &dyn Fn(&JobTiming) -> f64| {
        LatencySummary::of(
            &timings
                .iter()
                .map(|t| ms_to_duration(f(t)))
                .collect::<Vec<_>>(),
        )
    };
    let breakdown = JobTiming::STRETCHES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let s = of(&|t| t.points()[i + 1] - t.points()[i]);
            Stretch {
                name: (*name).to_owned(),
                p50_ms: s.p50_ms,
                p99_ms: s.p99_ms,
            }
        })
        .collect();
    PhaseReport {
        jobs: timings.len(),
        first_step: of(&|t| t.step_started - t.sent),
        end_to_end: of(&|t| t.seen - t.sent),
        breakdown,
        agent_cpu_ms_per_job: cpu.agent_ms,
        up_cpu_ms_per_job: cpu.up_ms,
    }
}

/// CPU milliseconds per job, of the agents and of `raibid up`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct JobCpu {
    agent_ms: f64,
    up_ms: f64,
}

impl JobCpu {
    fn per_job(agent: Duration, up: Duration, jobs: usize) -> Self {
        let per = |d: Duration| d.as_secs_f64() * 1000.0 / jobs.max(1) as f64;
        Self {
            agent_ms: per(agent),
            up_ms: per(up),
        }
    }
}

/// Sends one job and waits for its success; returns its timeline.
async fn run_job(
    ctx: &Ctx,
    up: &Up,
    finished: &mut Finished,
    delivery: &str,
) -> Result<JobTiming, BenchError> {
    let sent = now_ms();
    let id = send_push(ctx, up, delivery).await?;
    let (status, seen) = finished.wait(&id).await?;
    timing(up, &id, status, sent, seen).await
}

async fn timing(
    up: &Up,
    id: &str,
    status: JobStatus,
    sent: f64,
    seen: f64,
) -> Result<JobTiming, BenchError> {
    let job = up
        .queue
        .get(id)
        .await?
        .ok_or_else(|| BenchError::Invalid(format!("job {id} disappeared")))?;
    if status != JobStatus::Success {
        return Err(BenchError::Invalid(format!(
            "no-op job {id} ended {status}: {}",
            job.reason.unwrap_or_default()
        )));
    }
    let marks = log_marks(&up.queue, id).await?;
    let mark = |needle: &str| {
        marks
            .iter()
            .find(|(_, text)| text.contains(needle))
            .map(|(ms, _)| *ms)
            .ok_or_else(|| BenchError::Invalid(format!("job {id}'s log has no {needle:?} line")))
    };
    let ms = |t: Option<chrono::DateTime<chrono::Utc>>, what: &str| {
        t.map(|t| t.timestamp_millis() as f64)
            .ok_or_else(|| BenchError::Invalid(format!("job {id} has no {what} time")))
    };
    Ok(JobTiming {
        sent,
        queued: job.created_at.timestamp_millis() as f64,
        claimed: ms(job.started_at, "start")?,
        checked_out: mark("checked out ")?,
        step_started: mark("\u{25b6} step")?,
        step_done: mark("\u{2714} ")?,
        recorded: ms(job.finished_at, "finish")?,
        seen,
    })
}

/// Every entry of a job's log: the millisecond in its stream id, and its text.
pub(crate) async fn log_marks(queue: &Queue, id: &str) -> Result<Vec<(f64, String)>, BenchError> {
    let mut cursor = LogCursor::start();
    let mut marks = Vec::new();
    loop {
        let batch = queue.read_log(id, &cursor, 256).await?;
        if batch.chunks.is_empty() {
            return Ok(marks);
        }
        for chunk in &batch.chunks {
            marks.push((
                stream_id_ms(&chunk.cursor.0).unwrap_or(0.0),
                String::from_utf8_lossy(&chunk.data).into_owned(),
            ));
        }
        cursor = batch.next;
    }
}

/// `1700000000123-4` -> 1700000000123.
fn stream_id_ms(id: &str) -> Option<f64> {
    id.split_once('-')?
        .0
        .parse::<u64>()
        .ok()
        .map(|ms| ms as f64)
}

struct Warm {
    phase: PhaseReport,
    executor: String,
    agent_program: String,
    agent_before: crate::procs::Memory,
    agent_after: crate::procs::Memory,
}

async fn warm_phase(ctx: &Ctx, opts: &E2eBenchOptions) -> Result<Warm, BenchError> {
    info!(
        jobs = opts.warm_jobs,
        "warm agent: raibid up --max-agents 0 plus raibid agent"
    );
    let up = Up::start(ctx, "warm", Some(0)).await?;
    let result = async {
        let config = ctx.config.display().to_string();
        let agent_data = up.data.join("agent").display().to_string();
        let redis_url = up.queue.options().url.clone();
        // The program `raibid up`'s pool starts agents with, so its memory is theirs.
        let program = raibid_agent::AgentProgram::beside(&ctx.exe);
        let mut args = vec!["--config", &config, "--log-format", "json"];
        args.extend(program.subcommand);
        args.extend(["--name", WARM_AGENT, "--data-dir", &agent_data]);
        let agent = Proc::spawn(
            &format!("{program} (warm)"),
            &program.program,
            &args,
            &[("RAIBID_REDIS_URL", &redis_url)],
            &ctx.root.join("warm-agent.log"),
        )?;
        let result = async {
            wait_agents(&up.queue, |names| names.iter().any(|n| n == WARM_AGENT)).await?;
            tokio::time::sleep(opts.idle_settle).await;
            let agent_before = agent.memory()?;
            let mut finished = Finished::start(&up.queue).await?;
            for i in 0..3 {
                run_job(
                    ctx,
                    &up,
                    &mut finished,
                    &format!("warm-up-{i}-{}", ctx.secret),
                )
                .await?;
            }
            let mut timings = Vec::with_capacity(opts.warm_jobs);
            let (agent_cpu, up_cpu) = (agent.cpu()?, up.proc.cpu()?);
            for i in 0..opts.warm_jobs {
                tokio::time::sleep(opts.warm_gap).await;
                timings.push(
                    run_job(ctx, &up, &mut finished, &format!("warm-{i}-{}", ctx.secret)).await?,
                );
            }
            let agent_cpu = agent.cpu()?.since(agent_cpu);
            let cpu = JobCpu::per_job(
                agent_cpu.own + agent_cpu.children,
                up.proc.cpu()?.since(up_cpu).own,
                timings.len(),
            );
            tokio::time::sleep(opts.idle_settle).await;
            let agent_after = agent.memory()?;
            let log = std::fs::read_to_string(agent.log()).unwrap_or_default();
            Ok::<_, BenchError>(Warm {
                phase: summarize(&timings, cpu),
                executor: executor_in(&log).unwrap_or_else(|| "unknown".into()),
                agent_program: program.to_string(),
                agent_before,
                agent_after,
            })
        }
        .await;
        agent.stop(Duration::from_secs(30)).await;
        result
    }
    .await;
    up.stop().await;
    result
}

struct Idle {
    phase: PhaseReport,
    up_rss_kib: u64,
}

async fn idle_phase(ctx: &Ctx, opts: &E2eBenchOptions) -> Result<Idle, BenchError> {
    info!(
        jobs = opts.idle_jobs,
        "idle pool: each job from zero agents"
    );
    let up = Up::start(ctx, "idle", None).await?;
    let result = async {
        tokio::time::sleep(opts.idle_settle).await;
        let up_rss_kib = up.proc.memory()?.rss_kib;
        let mut finished = Finished::start(&up.queue).await?;
        run_job(
            ctx,
            &up,
            &mut finished,
            &format!("idle-warm-up-{}", ctx.secret),
        )
        .await?;
        let mut timings = Vec::with_capacity(opts.idle_jobs);
        wait_for_empty_pool(&up.queue, opts).await?;
        let before = up.proc.cpu()?;
        for i in 0..opts.idle_jobs {
            if i > 0 {
                wait_for_empty_pool(&up.queue, opts).await?;
            }
            let delivery = format!("idle-{i}-{}", ctx.secret);
            timings.push(run_job(ctx, &up, &mut finished, &delivery).await?);
        }
        // The last agent is counted once the pool has reaped it.
        wait_for_empty_pool(&up.queue, opts).await?;
        let used = up.proc.cpu()?.since(before);
        let cpu = JobCpu::per_job(used.children, used.own, timings.len());
        Ok::<_, BenchError>(Idle {
            phase: summarize(&timings, cpu),
            up_rss_kib,
        })
    }
    .await;
    up.stop().await;
    result
}

async fn throughput_phase(
    ctx: &Ctx,
    opts: &E2eBenchOptions,
) -> Result<ThroughputReport, BenchError> {
    let max_agents = opts.throughput_max_agents;
    info!(jobs = opts.throughput_jobs, max_agents, "throughput");
    let up = Up::start(ctx, "throughput", Some(max_agents)).await?;
    let result = async {
        let mut finished = Finished::start(&up.queue).await?;
        run_job(
            ctx,
            &up,
            &mut finished,
            &format!("tp-warm-up-{}", ctx.secret),
        )
        .await?;
        wait_for_empty_pool(&up.queue, opts).await?;
        let before = up.proc.cpu()?;
        let first_sent = now_ms();
        let sent: Vec<Result<(String, f64), BenchError>> =
            futures::stream::iter(0..opts.throughput_jobs)
                .map(|i| {
                    let up = &up;
                    async move {
                        let sent = now_ms();
                        let id = send_push(ctx, up, &format!("tp-{i}-{}", ctx.secret)).await?;
                        Ok((id, sent))
                    }
                })
                .buffer_unordered(8)
                .collect()
                .await;
        let mut last_seen = first_sent;
        let mut timings = Vec::with_capacity(sent.len());
        for s in sent {
            let (id, sent) = s?;
            let (status, seen) = finished.wait(&id).await?;
            last_seen = last_seen.max(seen);
            timings.push(timing(&up, &id, status, sent, seen).await?);
        }
        let elapsed_s = (last_seen - first_sent) / 1000.0;
        wait_for_empty_pool(&up.queue, opts).await?;
        let used = up.proc.cpu()?.since(before);
        let cpu = JobCpu::per_job(used.children, used.own, timings.len());
        let median_of = |f: &dyn Fn(&JobTiming) -> f64| {
            LatencySummary::of(
                &timings
                    .iter()
                    .map(|t| ms_to_duration(f(t)))
                    .collect::<Vec<_>>(),
            )
            .p50_ms
        };
        let run_p50_ms = median_of(&|t| t.recorded - t.claimed);
        Ok::<_, BenchError>(ThroughputReport {
            jobs: timings.len(),
            max_agents,
            elapsed_s,
            jobs_per_sec: timings.len() as f64 / elapsed_s.max(f64::MIN_POSITIVE),
            run_bound_per_sec: f64::from(max_agents) * 1000.0 / run_p50_ms.max(1.0),
            run_p50_ms,
            wait_p50_ms: median_of(&|t| t.claimed - t.queued),
            agent_cpu_ms_per_job: cpu.agent_ms,
            up_cpu_ms_per_job: cpu.up_ms,
        })
    }
    .await;
    up.stop().await;
    result
}

/// Waits until no agent is registered, then a few polling intervals more so that the pool has
/// reaped the exited processes too: the next job then starts from a truly idle pool.
async fn wait_for_empty_pool(queue: &Queue, opts: &E2eBenchOptions) -> Result<(), BenchError> {
    wait_agents(queue, <[String]>::is_empty).await?;
    let polling = opts
        .polling_interval_ms
        .unwrap_or(DEFAULT_POLLING_INTERVAL_MS);
    tokio::time::sleep(Duration::from_millis(polling * 3 + 100)).await;
    Ok(())
}

/// Polls the agent registry until `done` holds for the registered names (at most 90 s: an
/// agent the pool started in excess exits after its idle timeout, 30 s by default).
async fn wait_agents(queue: &Queue, done: impl Fn(&[String]) -> bool) -> Result<(), BenchError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let names: Vec<String> = queue
            .agents(chrono::Duration::seconds(60))
            .await?
            .into_iter()
            .map(|a| a.name)
            .collect();
        if done(&names) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(BenchError::Invalid(format!(
                "the agent registry did not settle: {names:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The executor an agent announced in its JSON log (`agent starting`, field `executor`).
fn executor_in(log: &str) -> Option<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| {
            let fields = v.get("fields")?;
            (fields.get("message")?.as_str()? == "agent starting")
                .then(|| fields.get("executor")?.as_str().map(str::to_owned))?
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_private_redis_in_up_output() {
        let out = "raibid up\n  data      /tmp/x\n\u{1b}[2m2025\u{1b}[0m INFO redis started\n  \
                   redis     redis://127.0.0.1:40123/ (private, AOF in /tmp/x/redis)\n  server    \
                   http://127.0.0.1:8080\n";
        assert_eq!(
            redis_url_in(out).as_deref(),
            Some("redis://127.0.0.1:40123/")
        );
        assert_eq!(redis_url_in("raibid up\n"), None);
    }

    #[test]
    fn the_private_redis_url_gets_its_password() {
        assert_eq!(
            with_password("redis://127.0.0.1:40123/", "ab12"),
            "redis://:ab12@127.0.0.1:40123/"
        );
        assert_eq!(
            with_password("redis://:***@127.0.0.1:40123/", "ab12"),
            "redis://:ab12@127.0.0.1:40123/"
        );
        assert_eq!(
            with_password("redis://127.0.0.1:40123/", ""),
            "redis://127.0.0.1:40123/"
        );
    }

    #[test]
    fn finds_the_executor_in_a_json_log() {
        let log = r#"{"timestamp":"t","level":"WARN","fields":{"message":"bubblewrap is not usable"}}
{"timestamp":"t","level":"INFO","fields":{"message":"agent starting","executor":"host","name":"a"}}"#;
        assert_eq!(executor_in(log).as_deref(), Some("host"));
        assert_eq!(executor_in("not json\n"), None);
    }

    #[test]
    fn stream_ids_carry_milliseconds() {
        assert_eq!(stream_id_ms("1700000000123-4"), Some(1_700_000_000_123.0));
        assert_eq!(stream_id_ms("nope"), None);
    }

    #[test]
    fn breakdown_stretches_add_up_to_the_end_to_end_time() {
        let t = JobTiming {
            sent: 1000.0,
            queued: 1001.0,
            claimed: 1002.0,
            checked_out: 1010.0,
            step_started: 1012.0,
            step_done: 1020.0,
            recorded: 1021.0,
            seen: 1021.5,
        };
        let report = summarize(&[t], JobCpu::default());
        let total: f64 = report.breakdown.iter().map(|s| s.p50_ms).sum();
        assert!((total - report.end_to_end.p50_ms).abs() < 1e-6);
        assert_eq!(report.first_step.p50_ms, 12.0);
        assert_eq!(report.breakdown.len(), JobTiming::STRETCHES.len());
    }

    #[test]
    fn config_sets_only_what_was_asked() {
        let mut opts = E2eBenchOptions::default();
        assert!(!config_yaml(&opts).contains(':'));
        opts.executor = Some("host".into());
        opts.polling_interval_ms = Some(50);
        assert_eq!(
            config_yaml(&opts),
            "# raibid bench e2e\nagent:\n  executor: host\nup:\n  polling_interval_ms: 50\n"
        );
    }
}
