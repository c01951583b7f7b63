//! `raibid bench webhooks`: signed Gitea push deliveries against `raibid server` on loopback.
//!
//! The server runs as its own process (the release binary) so that the load generator, which
//! lives in this process, never shares its runtime or its cores' scheduling with it; both
//! still share the machine, as they would on a small CI host. Every delivery has a unique id,
//! and afterwards the queue is counted: a fast server that loses or duplicates jobs has no
//! figure worth recording.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use raibid_forge::send::{Push, gitea_push_body, gitea_push_headers};
use raibid_model::{Event, Forge, NewJob, PoolName};
use raibid_queue::{Queue, QueueOptions};
use serde::Serialize;
use tracing::info;

use crate::BenchError;
use crate::procs::{Memory, Proc, check_raibid, cpu_times, default_raibid_exe, start_redis};
use crate::report::{
    LATENCY_HEADERS, LatencySummary, Machine, TargetCheck, latency_row, mib, table, targets_table,
};

/// Target from the issue: sustained webhooks per second on 2 cores.
pub const TARGET_RATE: f64 = 5_000.0;
/// Target from the issue: p99 of a delivery's round trip.
pub const TARGET_P99_MS: f64 = 20.0;
/// Target from the issue: resident memory of an idle `raibid server`.
pub const TARGET_SERVER_RSS_MIB: f64 = 30.0;

/// The webhook the load generator sends; the repository name is what the jobs are filed under.
const BENCH_REPO: &str = "bench/webhooks";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// The `i`th commit the load generator pushes: [`SHA`] first.
fn commit(i: usize) -> String {
    if i == 0 {
        SHA.to_owned()
    } else {
        format!("{i:040x}")
    }
}

#[derive(Debug, Clone)]
pub struct WebhookBenchOptions {
    /// The `raibid` executable started as `raibid server`.
    pub raibid_exe: PathBuf,
    /// Concurrent keep-alive connections, each sending its next delivery as soon as the
    /// previous one is answered.
    pub connections: usize,
    /// Load before measuring starts (connections opened, caches and allocator warm).
    pub warmup: Duration,
    /// How long the rate and latencies are measured.
    pub duration: Duration,
    /// How long the server sits idle after start before its resident memory is read.
    pub idle_settle: Duration,
    /// How long the in-process `Queue::enqueue` ceiling is measured.
    pub baseline_duration: Duration,
    /// `RAIBID_LOG` for the server; `None` keeps its default (`info`, one line per job queued).
    pub server_log: Option<String>,
    /// Distinct commits the deliveries push to the branch, in turn. 1: every delivery pushes
    /// the same commit, so none supersedes another. More: consecutive deliveries push different
    /// commits, as in a storm of pushes, and each cancels the build queued before it
    /// (`server.cancel_superseded`).
    pub commits: usize,
}

impl Default for WebhookBenchOptions {
    fn default() -> Self {
        Self {
            raibid_exe: default_raibid_exe(),
            connections: 32,
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(15),
            idle_settle: Duration::from_secs(5),
            baseline_duration: Duration::from_secs(5),
            server_log: None,
            commits: 1,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WebhookReport {
    pub machine: Machine,
    pub connections: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub server_log: String,
    /// Distinct commits pushed in turn (see `WebhookBenchOptions::commits`).
    pub commits: usize,
    /// Jobs cancelled because a newer push superseded them (their status after the run).
    pub superseded: u64,
    /// Deliveries sent over the whole run (warm-up included).
    pub sent: u64,
    /// Answered 202 with a job id.
    pub queued: u64,
    /// Answered 200 "duplicate": must be 0, every delivery id is unique.
    pub duplicates: u64,
    /// Answered 2xx without a job (event filtered): must be 0 for pushes.
    pub ignored: u64,
    /// Answered with a non-2xx status.
    pub rejected: u64,
    /// No answer (connection error or 30 s timeout).
    pub errors: u64,
    /// The first rejection or error, to explain it.
    pub first_failure: Option<String>,
    /// Accepted deliveries per second within the measured window.
    pub rate_per_sec: f64,
    /// Round trip of the accepted deliveries started within the measured window.
    pub latency: LatencySummary,
    pub distinct_job_ids: u64,
    /// Entries in the pool's stream after the run (nothing consumes them).
    pub stream_length: u64,
    /// Every accepted delivery has its own job and its own stream entry, and no other exists.
    pub exactly_once: bool,
    pub server_idle_rss_kib: u64,
    pub server_rss_after_kib: u64,
    pub server_peak_rss_kib: u64,
    /// `Queue::enqueue` from this process with the same concurrency on the same redis-server:
    /// what the server could do if HTTP, signature checks and parsing were free.
    pub baseline_enqueue_per_sec: f64,
    /// CPU time per delivery over the whole run, by process.
    pub cpu_per_webhook: CpuPerWebhook,
    /// The rate the three processes could sustain with every core of the machine to
    /// themselves: cores / total CPU per delivery. On a busy machine this, not the measured
    /// rate, says whether the target is within reach.
    pub projected_rate_per_sec: f64,
    pub targets: Vec<TargetCheck>,
}

/// Microseconds of CPU (user + system) per delivery.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuPerWebhook {
    pub server_us: f64,
    pub redis_us: f64,
    pub load_generator_us: f64,
}

impl WebhookReport {
    pub fn render_table(&self) -> String {
        let mut out = format!(
            "webhooks: {} keep-alive connections, {:.0} s measured after {:.0} s warm-up; \
             `raibid server` as its own process (RAIBID_LOG={}), private redis-server without \
             persistence\npushes: {}\nmachine: {}\n\n",
            self.connections,
            self.duration_s,
            self.warmup_s,
            self.server_log,
            if self.commits <= 1 {
                "one commit, again and again (none supersedes another)".to_owned()
            } else {
                format!(
                    "{} commits in turn, each superseding the build before it: {} jobs cancelled",
                    self.commits, self.superseded
                )
            },
            self.machine
        );
        out.push_str(&table(
            &[
                "SENT",
                "QUEUED",
                "DUPLICATE",
                "IGNORED",
                "REJECTED",
                "ERRORS",
                "JOB IDS",
                "STREAM",
            ],
            &[vec![
                self.sent.to_string(),
                self.queued.to_string(),
                self.duplicates.to_string(),
                self.ignored.to_string(),
                self.rejected.to_string(),
                self.errors.to_string(),
                self.distinct_job_ids.to_string(),
                self.stream_length.to_string(),
            ]],
        ));
        if let Some(f) = &self.first_failure {
            out.push_str(&format!("first failure: {f}\n"));
        }
        out.push('\n');
        out.push_str(&table(
            &["RATE", "WEBHOOKS/S"],
            &[
                vec![
                    "webhooks -> server -> queue".into(),
                    format!("{:.0}", self.rate_per_sec),
                ],
                vec![
                    "baseline: Queue::enqueue in-process".into(),
                    format!("{:.0}", self.baseline_enqueue_per_sec),
                ],
            ],
        ));
        out.push('\n');
        let c = &self.cpu_per_webhook;
        out.push_str(&table(
            &["CPU PER WEBHOOK", "US"],
            &[
                vec!["raibid server".into(), format!("{:.0}", c.server_us)],
                vec!["redis-server".into(), format!("{:.0}", c.redis_us)],
                vec![
                    "load generator".into(),
                    format!("{:.0}", c.load_generator_us),
                ],
                vec![
                    format!(
                        "total -> projected rate with {} idle cores: {:.0}/s",
                        self.machine.cores, self.projected_rate_per_sec
                    ),
                    format!("{:.0}", c.server_us + c.redis_us + c.load_generator_us),
                ],
            ],
        ));
        out.push('\n');
        out.push_str(&table(
            &LATENCY_HEADERS,
            &[latency_row("webhook round trip", &self.latency)],
        ));
        out.push('\n');
        out.push_str(&format!(
            "server memory: idle {:.1} MiB, after the run {:.1} MiB (peak {:.1} MiB)\n\n",
            mib(self.server_idle_rss_kib),
            mib(self.server_rss_after_kib),
            mib(self.server_peak_rss_kib)
        ));
        out.push_str(&targets_table(&self.targets));
        out
    }
}

/// Runs the webhook benchmark; see the module documentation.
pub async fn webhooks(opts: WebhookBenchOptions) -> Result<WebhookReport, BenchError> {
    let machine = Machine::detect();
    check_raibid(&opts.raibid_exe)?;
    let dir = tempfile::Builder::new()
        .prefix("raibid-bench-webhooks-")
        .tempdir()
        .map_err(BenchError::io("creating a temporary directory"))?;
    let redis = start_redis().await?;
    let secret = random_secret();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.connections)
        .tcp_nodelay(true)
        .build()?;
    let mut server = ServerProcess::start(
        &opts.raibid_exe,
        dir.path(),
        &redis.url(),
        &secret,
        opts.server_log.as_deref(),
        &http,
    )
    .await?;
    info!(settle = ?opts.idle_settle, "server started; letting it idle before reading its memory");
    tokio::time::sleep(opts.idle_settle).await;
    let idle = server.proc.memory()?;
    info!(
        connections = opts.connections,
        duration = ?(opts.warmup + opts.duration),
        "sending webhooks"
    );

    let redis_pid = redis.pid().ok_or_else(|| BenchError::Process {
        what: "redis-server".into(),
        message: "not running".into(),
    })?;
    let cpu_before = (
        server.proc.cpu()?,
        cpu_times(redis_pid)?,
        cpu_times(std::process::id())?,
    );
    let load = generate_load(&http, &server.url, &secret, &opts).await;
    server.proc.check_alive()?;
    let cpu_after = (
        server.proc.cpu()?,
        cpu_times(redis_pid)?,
        cpu_times(std::process::id())?,
    );
    let after = server.proc.memory()?;
    server.proc.stop(Duration::from_secs(15)).await;

    let queue = Queue::open(QueueOptions::new(redis.url()))?;
    let stream_length = queue.stats(&PoolName::default()).await?.length;
    let superseded = queue.count(raibid_model::JobStatus::Cancelled).await?;
    info!(duration = ?opts.baseline_duration, "measuring the Queue::enqueue baseline");
    let baseline = enqueue_baseline(&redis.url(), opts.connections, opts.baseline_duration).await?;

    let distinct = load.job_ids.len() as u64;
    let exactly_once = load.duplicates == 0
        && load.ignored == 0
        && distinct == load.queued
        && stream_length == load.queued;
    let latency = LatencySummary::of(&load.window_latencies);
    let rate = load.window_accepted as f64 / opts.duration.as_secs_f64();
    let per_webhook = |after: crate::procs::CpuTimes, before| {
        after.since(before).own.as_secs_f64() * 1e6 / load.sent.max(1) as f64
    };
    let cpu_per_webhook = CpuPerWebhook {
        server_us: per_webhook(cpu_after.0, cpu_before.0),
        redis_us: per_webhook(cpu_after.1, cpu_before.1),
        load_generator_us: per_webhook(cpu_after.2, cpu_before.2),
    };
    let total_us =
        cpu_per_webhook.server_us + cpu_per_webhook.redis_us + cpu_per_webhook.load_generator_us;
    let projected_rate_per_sec = machine.cores as f64 * 1e6 / total_us.max(f64::MIN_POSITIVE);
    let targets = vec![
        TargetCheck::at_least("sustained rate", "webhooks/s", TARGET_RATE, rate),
        TargetCheck::below("round trip p99", "ms", TARGET_P99_MS, latency.p99_ms),
        TargetCheck::below(
            "server idle RSS",
            "MiB",
            TARGET_SERVER_RSS_MIB,
            mib(idle.rss_kib),
        ),
        TargetCheck {
            name: "accepted = queued exactly once".into(),
            target: "all".into(),
            measured: format!(
                "{} accepted, {distinct} job ids, {stream_length} stream entries",
                load.queued + load.duplicates + load.ignored
            ),
            met: exactly_once,
        },
    ];
    Ok(WebhookReport {
        machine,
        connections: opts.connections,
        warmup_s: opts.warmup.as_secs_f64(),
        duration_s: opts.duration.as_secs_f64(),
        server_log: opts.server_log.clone().unwrap_or_else(|| "default".into()),
        commits: opts.commits.max(1),
        superseded,
        sent: load.sent,
        queued: load.queued,
        duplicates: load.duplicates,
        ignored: load.ignored,
        rejected: load.rejected,
        errors: load.errors,
        first_failure: load.first_failure,
        rate_per_sec: rate,
        latency,
        distinct_job_ids: distinct,
        stream_length,
        exactly_once,
        server_idle_rss_kib: idle.rss_kib,
        server_rss_after_kib: after.rss_kib,
        server_peak_rss_kib: after.hwm_kib,
        baseline_enqueue_per_sec: baseline,
        cpu_per_webhook,
        projected_rate_per_sec,
        targets,
    })
}

/// `raibid server` as a process of its own, configured through `RAIBID_*` variables and an
/// empty configuration file (so the developer's own file is not read).
pub(crate) struct ServerProcess {
    pub proc: Proc,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

impl ServerProcess {
    pub async fn start(
        exe: &Path,
        dir: &Path,
        redis_url: &str,
        secret: &str,
        log_filter: Option<&str>,
        http: &reqwest::Client,
    ) -> Result<Self, BenchError> {
        let config = dir.join("server-config.yaml");
        std::fs::write(
            &config,
            "# raibid bench: everything comes from RAIBID_* variables\n",
        )
        .map_err(BenchError::io("writing the server's configuration"))?;
        let listen = format!("127.0.0.1:{}", raibid_testkit::free_port());
        let config_arg = config.display().to_string();
        let mut env = vec![
            ("RAIBID_REDIS_URL", redis_url),
            ("RAIBID_SERVER_LISTEN", listen.as_str()),
            ("RAIBID_SERVER_WEBHOOK_SECRET", secret),
            // Nothing consumes during the benchmark: the queue must not refuse for being full.
            ("RAIBID_REDIS_MAXLEN", "100000000"),
        ];
        if let Some(filter) = log_filter {
            env.push(("RAIBID_LOG", filter));
        }
        let mut proc = Proc::spawn(
            "raibid server",
            exe,
            &["--config", &config_arg, "server"],
            &env,
            &dir.join("server.log"),
        )?;
        let url = format!("http://{listen}");
        proc.wait_http_ok(http, &format!("{url}/readyz"), Duration::from_secs(30))
            .await?;
        Ok(Self { proc, url })
    }
}

/// Resident memory of a `raibid server` that has been idle for `settle`, against its own
/// private redis-server.
pub(crate) async fn server_idle_memory(exe: &Path, settle: Duration) -> Result<Memory, BenchError> {
    check_raibid(exe)?;
    let dir = tempfile::Builder::new()
        .prefix("raibid-bench-server-")
        .tempdir()
        .map_err(BenchError::io("creating a temporary directory"))?;
    let redis = start_redis().await?;
    let http = reqwest::Client::new();
    let server =
        ServerProcess::start(exe, dir.path(), &redis.url(), &random_secret(), None, &http).await?;
    tokio::time::sleep(settle).await;
    let memory = server.proc.memory();
    server.proc.stop(Duration::from_secs(15)).await;
    memory
}

/// Unique per run, so that a stray server from another run cannot accept our deliveries.
pub(crate) fn random_secret() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("bench-{}-{nanos:x}", std::process::id())
}

#[derive(Default)]
struct Load {
    sent: u64,
    queued: u64,
    duplicates: u64,
    ignored: u64,
    rejected: u64,
    errors: u64,
    first_failure: Option<String>,
    job_ids: HashSet<String>,
    window_accepted: u64,
    window_latencies: Vec<Duration>,
}

enum Answer {
    Queued(String),
    Duplicate,
    Ignored,
    Rejected(String),
    Failed(String),
}

/// A push body and its headers (signature included).
type Delivery = (bytes::Bytes, Vec<(&'static str, String)>);

/// `connections` tasks, each sending deliveries back to back until warm-up plus duration.
async fn generate_load(
    http: &reqwest::Client,
    server_url: &str,
    secret: &str,
    opts: &WebhookBenchOptions,
) -> Load {
    // The signature covers the body only, so one body and one signature per commit serve
    // every delivery; only the delivery id differs. The generator then spends its time on
    // HTTP, not HMACs.
    let bodies: Arc<Vec<Delivery>> = Arc::new(
        (0..opts.commits.max(1))
            .map(|i| {
                let push = Push {
                    repo: BENCH_REPO.into(),
                    clone_url: format!("http://127.0.0.1:9/{BENCH_REPO}.git"),
                    git_ref: "refs/heads/main".into(),
                    before: "0".repeat(40),
                    after: commit(i),
                    sender: "bench".into(),
                    message: "push".into(),
                };
                let body = bytes::Bytes::from(gitea_push_body(&push));
                let headers = gitea_push_headers(&body, secret.as_bytes(), "-");
                (body, headers)
            })
            .collect(),
    );
    let turn = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let url = Arc::new(format!("{server_url}/webhooks/gitea"));
    let start = Instant::now();
    let window = opts.warmup..opts.warmup + opts.duration;
    let run_id = random_secret();
    let mut tasks = Vec::new();
    for conn in 0..opts.connections {
        let http = http.clone();
        let bodies = bodies.clone();
        let turn = turn.clone();
        let url = url.clone();
        let window = window.clone();
        let run_id = run_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut n = 0u64;
            loop {
                let sent_at = start.elapsed();
                if sent_at >= window.end {
                    break;
                }
                let delivery = format!("{run_id}-{conn}-{n}");
                n += 1;
                let next = turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (body, headers) = &bodies[next % bodies.len()];
                let mut req = http
                    .post(url.as_str())
                    .timeout(Duration::from_secs(30))
                    .body(body.clone());
                for (name, value) in headers.iter() {
                    let value = if name.eq_ignore_ascii_case("X-Gitea-Delivery") {
                        delivery.as_str()
                    } else {
                        value.as_str()
                    };
                    req = req.header(*name, value);
                }
                let answer = answer(req.send().await).await;
                samples.push((sent_at, start.elapsed() - sent_at, answer));
            }
            samples
        }));
    }
    let mut load = Load::default();
    for task in tasks {
        let Ok(samples) = task.await else {
            load.errors += 1;
            continue;
        };
        for (sent_at, latency, answer) in samples {
            load.sent += 1;
            let accepted = matches!(
                answer,
                Answer::Queued(_) | Answer::Duplicate | Answer::Ignored
            );
            match answer {
                Answer::Queued(id) => {
                    load.queued += 1;
                    load.job_ids.insert(id);
                }
                Answer::Duplicate => load.duplicates += 1,
                Answer::Ignored => load.ignored += 1,
                Answer::Rejected(why) => {
                    load.rejected += 1;
                    load.first_failure.get_or_insert(why);
                }
                Answer::Failed(why) => {
                    load.errors += 1;
                    load.first_failure.get_or_insert(why);
                }
            }
            if accepted && window.contains(&sent_at) {
                load.window_accepted += 1;
                load.window_latencies.push(latency);
            }
        }
    }
    load
}

async fn answer(result: Result<reqwest::Response, reqwest::Error>) -> Answer {
    let resp = match result {
        Ok(r) => r,
        Err(e) => return Answer::Failed(e.without_url().to_string()),
    };
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        return Answer::Rejected(format!(
            "{status}: {}",
            text.chars().take(200).collect::<String>()
        ));
    }
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    match (
        json.get("job_id").and_then(|v| v.as_str()),
        json.get("duplicate").is_some(),
    ) {
        (Some(_), true) => Answer::Duplicate,
        (Some(id), false) => Answer::Queued(id.to_owned()),
        (None, _) => Answer::Ignored,
    }
}

/// Enqueues the job a delivery would create, straight through `Queue::enqueue`, with
/// `concurrency` in flight, for `duration`; returns jobs per second.
async fn enqueue_baseline(
    redis_url: &str,
    concurrency: usize,
    duration: Duration,
) -> Result<f64, BenchError> {
    let mut options = QueueOptions::new(redis_url);
    // Its own keys: the webhook run's stream is counted above and must stay as it was.
    options.stream_name = "bench-baseline".into();
    options.maxlen = 100_000_000;
    let queue = Queue::open(options)?;
    queue.ping().await?;
    let run_id = random_secret();
    let start = Instant::now();
    let results: Vec<Result<_, _>> = futures::stream::iter(0u64..)
        .take_while(|_| std::future::ready(start.elapsed() < duration))
        .map(|i| {
            let queue = queue.clone();
            let spec = NewJob {
                repo: BENCH_REPO.into(),
                clone_url: format!("http://127.0.0.1:9/{BENCH_REPO}.git"),
                git_ref: "refs/heads/main".into(),
                sha: SHA.into(),
                event: Event::Push,
                pool: PoolName::default(),
                forge: Some(Forge::Gitea),
                pr_number: None,
                from_fork: false,
                sender: Some("bench".into()),
                delivery_id: Some(format!("{run_id}-{i}")),
                env: Default::default(),
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
            };
            async move { queue.enqueue(spec).await }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let elapsed = start.elapsed();
    let done = results.len();
    for r in results {
        r?;
    }
    Ok(done as f64 / elapsed.as_secs_f64())
}
