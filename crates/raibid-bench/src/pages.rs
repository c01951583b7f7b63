//! `raibid bench pages`: what reading a long history costs, through `raibid server` as its own
//! process, against what Redis alone takes to hand over the same records.
//!
//! The history is written straight into the queue (no agents): `jobs` finished jobs over a
//! few repositories and branches, `failures` of them failed and spread through it, and three
//! jobs whose logs are `log_bytes` of build output in a first step and a second. Then each
//! request is sent `requests` times, one at a time, on a warm connection:
//!
//! - a job's page: the last MiB of a log numbered as in the whole log (a log that counted its
//!   lines as it was written, and one written by an agent that did not, which is counted by
//!   reading it), one step's page (the whole log read for the step's lines), the raw log;
//! - the job list, unfiltered and by status: `status=failure` also scans the passed jobs for
//!   builds that failed, in the index of the jobs that queued others (one job in 10 here),
//!   reading on until its page is full;
//! - a repository's page, built from its 1,000 newest jobs.
//!
//! Each row's ceiling is the Redis reads the server cannot avoid for it, made from this
//! process on the same redis-server: the log's entries a page shows, the whole log, the
//! records a page or a scan reads.

use std::time::{Duration, Instant};

use raibid_model::{Event, JobStatus, NewJob, Outcome, PoolName, StepResult, StepStatus};
use raibid_queue::{Enqueued, Queue, QueueOptions};
use serde::Serialize;
use tracing::info;

use crate::BenchError;
use crate::procs::{check_raibid, start_redis};
use crate::report::{LatencySummary, Machine, median, table};
use crate::webhooks::{ServerProcess, random_secret};

/// Jobs of the history are spread over this many repositories, each with a few branches.
const REPOS: usize = 4;
/// One job in this many queues another (a matrix of one variant): a build.
const BUILD_EVERY: usize = 10;
const BRANCHES: usize = 20;
/// What a job page shows of a log (`pages::log::TAIL_BYTES`).
const PAGE_BYTES: usize = 1024 * 1024;
/// The agent's log chunk (`JobLog`'s flush size).
const CHUNK: usize = 64 * 1024;
const LINE: &str = "raibid bench: a line of build output, about as long as a compiler's warning\n";

#[derive(Debug, Clone)]
pub struct PagesBenchOptions {
    /// The `raibid` executable started as `raibid server`.
    pub raibid_exe: std::path::PathBuf,
    /// Finished jobs in the history.
    pub jobs: usize,
    /// Of which failed.
    pub failures: usize,
    /// The long logs' size (the default log cap, `redis.log_max_bytes`).
    pub log_bytes: usize,
    /// Times each request is sent.
    pub requests: usize,
}

impl Default for PagesBenchOptions {
    fn default() -> Self {
        Self {
            raibid_exe: crate::default_raibid_exe(),
            jobs: 10_000,
            failures: 50,
            log_bytes: 10 * 1024 * 1024,
            requests: 20,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PagesReport {
    pub machine: Machine,
    pub jobs: usize,
    pub failures: usize,
    pub log_bytes: usize,
    pub rows: Vec<PageRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PageRow {
    pub what: String,
    pub request: String,
    pub response_bytes: usize,
    /// How many jobs an API list held (`None` for a web page).
    pub jobs_listed: Option<usize>,
    pub latency: LatencySummary,
    /// The Redis reads the request cannot avoid, from this process.
    pub ceiling: String,
    pub ceiling_ms: f64,
}

impl PagesReport {
    pub fn render_table(&self) -> String {
        let mut out = format!(
            "pages: GETs to `raibid server` (its own process) one at a time on a warm \
             connection; private redis-server (no persistence) holding {} finished jobs ({} \
             failed) and logs of {:.0} MiB\nmachine: {}\n\n",
            self.jobs,
            self.failures,
            self.log_bytes as f64 / 1_048_576.0,
            self.machine
        );
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.what.clone(),
                    format!("{:.0}", r.response_bytes as f64 / 1024.0),
                    r.jobs_listed.map_or("-".into(), |n| n.to_string()),
                    format!("{:.1}", r.latency.p50_ms),
                    format!("{:.1}", r.latency.p99_ms),
                    format!("{:.1}", r.ceiling_ms),
                    r.ceiling.clone(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "REQUEST",
                "KIB",
                "JOBS",
                "P50 MS",
                "P99 MS",
                "REDIS MS",
                "REDIS ALONE (CEILING)",
            ],
            &rows,
        ));
        out.push('\n');
        for r in &self.rows {
            out.push_str(&format!("{}: GET {}\n", r.what, r.request));
        }
        out
    }
}

/// Runs the pages benchmark; see the module documentation.
pub async fn pages(opts: PagesBenchOptions) -> Result<PagesReport, BenchError> {
    let machine = Machine::detect();
    check_raibid(&opts.raibid_exe)?;
    if opts.failures > opts.jobs || opts.requests == 0 || opts.log_bytes < PAGE_BYTES {
        return Err(BenchError::Invalid(format!(
            "want failures <= jobs, requests > 0 and logs of at least {PAGE_BYTES} bytes"
        )));
    }
    let dir = tempfile::Builder::new()
        .prefix("raibid-bench-pages-")
        .tempdir()
        .map_err(BenchError::io("creating a temporary directory"))?;
    let redis = start_redis().await?;
    let mut options = QueueOptions::new(redis.url());
    options.log_max_bytes = opts.log_bytes as u64 + CHUNK as u64;
    let queue = Queue::open(options)?;
    let mut raw = redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?;

    info!(jobs = opts.jobs, "writing the history");
    let history = History::write(&queue, &opts).await?;
    let counted = history.log_job(&queue, &opts, "counted").await?;
    let uncounted = history.log_job(&queue, &opts, "uncounted").await?;
    // As an agent older than the line count leaves it: counted by reading.
    let _: () = redis::cmd("HDEL")
        .arg(format!("raibid:ci-jobs:job:{uncounted}"))
        .arg("log_lines")
        .query_async(&mut raw)
        .await?;
    let small = {
        let mut small = opts.clone();
        small.log_bytes = PAGE_BYTES;
        history.log_job(&queue, &small, "small").await?
    };

    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let server = ServerProcess::start(
        &opts.raibid_exe,
        dir.path(),
        &redis.url(),
        &random_secret(),
        Some("warn"),
        &http,
    )
    .await?;
    let url = server.url.clone();
    let repo = format!("bench/repo-{}", REPOS - 1);
    let log_key = |id: &str| format!("raibid:ci-jobs:log:{id}");
    let n = opts.requests;
    let mut rows = Vec::new();

    // (what, path, the Redis reads it cannot avoid)
    let page_tail = Ceiling::LogEnd {
        key: log_key(&counted),
        entries: entries_of_last(&mut raw, &log_key(&counted), PAGE_BYTES).await?,
    };
    let whole = Ceiling::WholeLog(log_key(&counted));
    let list = Ceiling::Records(vec![("raibid:ci-jobs:jobs".into(), 50)]);
    // The status filter's two scans: a page of failures, and the builds that passed as far
    // back as the server reads on for them (four reads, doubling from the page's 50) to fill
    // its page.
    let scan = Ceiling::Records(vec![
        ("raibid:ci-jobs:jobs:status:failure".into(), 50),
        ("raibid:ci-jobs:jobs:builds".into(), 750),
    ]);
    let repo_jobs = Ceiling::Records(vec![(format!("raibid:ci-jobs:jobs:repo:{repo}"), 1_000)]);
    let requests: Vec<(&str, String, Ceiling)> = vec![
        (
            "job page, 1 MiB log (all of it)",
            format!("/jobs/{small}"),
            Ceiling::WholeLog(log_key(&small)),
        ),
        (
            "job page, long log (its last MiB)",
            format!("/jobs/{counted}"),
            page_tail,
        ),
        (
            "job page, long log an older agent wrote",
            format!("/jobs/{uncounted}"),
            whole.clone(),
        ),
        (
            "step page, long log",
            format!("/jobs/{counted}?step=build"),
            whole.clone(),
        ),
        ("raw log, long log", format!("/jobs/{counted}/raw"), whole),
        (
            "job list (API)",
            "/api/v1/jobs?limit=50".into(),
            list.clone(),
        ),
        (
            "job list, status=success (API)",
            "/api/v1/jobs?limit=50&status=success".into(),
            list.clone(),
        ),
        (
            "job list, status=failure (API)",
            "/api/v1/jobs?limit=50&status=failure".into(),
            scan.clone(),
        ),
        (
            "job list page, status=failure",
            "/jobs?status=failure".into(),
            scan,
        ),
        ("repository page", format!("/repos/{repo}"), repo_jobs),
    ];
    for (what, path, ceiling) in requests {
        info!(what, "timing");
        let target = format!("{url}{path}");
        let mut samples = Vec::with_capacity(n);
        let mut size = 0;
        let mut jobs_listed = None;
        // The first is a warm-up.
        for i in 0..=n {
            let start = Instant::now();
            let response = http.get(&target).send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            let took = start.elapsed();
            if !status.is_success() {
                return Err(BenchError::Invalid(format!(
                    "GET {path}: {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                )));
            }
            size = body.len();
            if path.starts_with("/api/") {
                let list: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| BenchError::Invalid(format!("GET {path}: {e}")))?;
                jobs_listed = list["jobs"].as_array().map(Vec::len);
            }
            if i > 0 {
                samples.push(took);
            }
        }
        let mut raw_samples = Vec::with_capacity(n);
        for _ in 0..n {
            raw_samples.push(ceiling.time(&mut raw).await?);
        }
        rows.push(PageRow {
            what: what.to_owned(),
            request: path,
            response_bytes: size,
            jobs_listed,
            latency: LatencySummary::of(&samples),
            ceiling: ceiling.describe(),
            ceiling_ms: median(&raw_samples).as_secs_f64() * 1000.0,
        });
    }
    server.proc.stop(Duration::from_secs(15)).await;
    Ok(PagesReport {
        machine,
        jobs: opts.jobs,
        failures: opts.failures,
        log_bytes: opts.log_bytes,
        rows,
    })
}

/// The jobs written, and what the long logs are attached to.
struct History {
    pool: PoolName,
}

impl History {
    async fn write(queue: &Queue, opts: &PagesBenchOptions) -> Result<Self, BenchError> {
        let pool = PoolName::default();
        let mut claimer = queue.claimer("bench-pages").await?;
        let mut claim = async || {
            claimer
                .claim(std::slice::from_ref(&pool), Duration::ZERO)
                .await?
                .ok_or_else(|| BenchError::Invalid("a job just queued was not claimed".into()))
        };
        // Half the failures are a build's second job (its first passed, having queued it),
        // half are jobs of their own.
        let every = (opts.jobs * 2)
            .checked_div(opts.failures)
            .unwrap_or(usize::MAX);
        let status = |n: usize| {
            if every >= 10 && (n % every == 1 || n % every == every / 2 + 3) {
                JobStatus::Failure
            } else {
                JobStatus::Success
            }
        };
        let mut i = 0;
        while i < opts.jobs {
            let id = enqueue(queue, i, None).await?;
            let claimed = claim().await?;
            if i % BUILD_EVERY == 0 && i + 1 < opts.jobs {
                // Of the same repository and branch, as a matrix's variants are.
                let child = enqueue(queue, i, Some(&id)).await?;
                queue.set_children(&id, &[child]).await?;
                queue
                    .ack(&claimed, &Outcome::new(JobStatus::Success))
                    .await?;
                let claimed = claim().await?;
                queue.ack(&claimed, &Outcome::new(status(i + 1))).await?;
                i += 2;
            } else {
                queue.ack(&claimed, &Outcome::new(status(i))).await?;
                i += 1;
            }
        }
        Ok(Self { pool })
    }

    /// A finished job whose log is `opts.log_bytes` of output in two steps, `build` then
    /// `test`, written in the agent's chunks.
    async fn log_job(
        &self,
        queue: &Queue,
        opts: &PagesBenchOptions,
        name: &str,
    ) -> Result<String, BenchError> {
        let mut claimer = queue.claimer(format!("bench-pages-{name}")).await?;
        enqueue(queue, 0, None).await?;
        let claimed = claimer
            .claim(std::slice::from_ref(&self.pool), Duration::ZERO)
            .await?
            .ok_or_else(|| BenchError::Invalid("a job just queued was not claimed".into()))?;
        let id = claimed.job.id.clone();
        let mut log = Vec::with_capacity(opts.log_bytes);
        let steps = [("build", opts.log_bytes / 5), ("test", opts.log_bytes)];
        for (step, until) in steps {
            log.extend_from_slice(
                format!("\n\x1b[1;36m▶ step {step}\x1b[0m 2026-12-07T00:00:00.000Z\n").as_bytes(),
            );
            while log.len() + LINE.len() + 40 < until {
                log.extend_from_slice(LINE.as_bytes());
            }
            log.extend_from_slice(format!("\x1b[32m✔ {step} (1.00s)\x1b[0m\n").as_bytes());
        }
        for chunk in log.chunks(CHUNK) {
            if !queue.append_log(&id, chunk).await? {
                return Err(BenchError::Invalid("the log hit its cap".into()));
            }
        }
        let mut outcome = Outcome::new(JobStatus::Success);
        outcome.steps = steps
            .iter()
            .map(|(step, _)| StepResult {
                name: (*step).to_owned(),
                status: StepStatus::Success,
                exit_code: Some(0),
                duration_ms: Some(1_000),
                tail: String::new(),
            })
            .collect();
        queue.ack(&claimed, &outcome).await?;
        Ok(id)
    }
}

async fn enqueue(queue: &Queue, i: usize, parent: Option<&str>) -> Result<String, BenchError> {
    let repo = format!("bench/repo-{}", i % REPOS);
    let mut job = NewJob::new(
        &repo,
        format!("http://127.0.0.1/{repo}.git"),
        format!("refs/heads/branch-{}", (i / REPOS) % BRANCHES),
        format!("{:040x}", i + 1 + usize::from(parent.is_some()) * (1 << 40)),
        Event::Push,
    );
    job.matrix_parent = parent.map(str::to_owned);
    match queue.enqueue(job).await? {
        Enqueued::Created(job) => Ok(job.id),
        other => Err(BenchError::Invalid(format!(
            "job {i} was not queued: {other:?}"
        ))),
    }
}

/// A log stream's entry as Redis gives it: its id and its fields.
type Entry = (String, Vec<(String, Vec<u8>)>);

/// How many of the log's newest entries hold its last `bytes`.
async fn entries_of_last(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    bytes: usize,
) -> Result<usize, BenchError> {
    let entries: Vec<Entry> = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .query_async(conn)
        .await?;
    let mut held = 0;
    for (n, (_, fields)) in entries.iter().enumerate() {
        held += fields.iter().map(|(_, v)| v.len()).sum::<usize>();
        if held >= bytes {
            return Ok(n + 1);
        }
    }
    Ok(entries.len())
}

/// Redis reads a request cannot do without.
#[derive(Debug, Clone)]
enum Ceiling {
    /// The fewest newest entries of a log that hold [`PAGE_BYTES`], in one read.
    LogEnd { key: String, entries: usize },
    /// All of a log, 512 entries at a time.
    WholeLog(String),
    /// The newest ids of each index, as many as its count, and their records, 100 at a time.
    Records(Vec<(String, usize)>),
}

impl Ceiling {
    fn describe(&self) -> String {
        match self {
            Self::LogEnd { .. } => "XREVRANGE of the log's last MiB".into(),
            Self::WholeLog(_) => "XRANGE of the whole log".into(),
            Self::Records(indexes) => {
                let counts: Vec<String> = indexes.iter().map(|(_, n)| n.to_string()).collect();
                let of = match indexes.len() {
                    1 => String::new(),
                    n => format!(" of {n} indexes"),
                };
                format!(
                    "ZRANGE + HGETALL of {} records{of}, 100 a round trip",
                    counts.join(" + ")
                )
            }
        }
    }

    async fn time(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> Result<Duration, BenchError> {
        let start = Instant::now();
        match self {
            Self::LogEnd { key, entries } => {
                let _: Vec<Entry> = redis::cmd("XREVRANGE")
                    .arg(key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(entries)
                    .query_async(conn)
                    .await?;
            }
            Self::WholeLog(key) => {
                let mut start = "-".to_owned();
                loop {
                    let entries: Vec<Entry> = redis::cmd("XRANGE")
                        .arg(key)
                        .arg(&start)
                        .arg("+")
                        .arg("COUNT")
                        .arg(512)
                        .query_async(conn)
                        .await?;
                    let Some((last, _)) = entries.last() else {
                        break;
                    };
                    start = format!("({last}");
                }
            }
            Self::Records(indexes) => {
                for (index, count) in indexes {
                    Self::records(conn, index, *count).await?;
                }
            }
        }
        Ok(start.elapsed())
    }

    async fn records(
        conn: &mut redis::aio::MultiplexedConnection,
        index: &str,
        count: usize,
    ) -> Result<(), BenchError> {
        let mut start = "+".to_owned();
        let mut read = 0;
        while read < count {
            let ids: Vec<String> = redis::cmd("ZRANGE")
                .arg(index)
                .arg(&start)
                .arg("-")
                .arg("BYLEX")
                .arg("REV")
                .arg("LIMIT")
                .arg(0)
                .arg(100.min(count - read))
                .query_async(conn)
                .await?;
            let Some(last) = ids.last() else {
                break;
            };
            start = format!("({last}");
            read += ids.len();
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HGETALL").arg(format!("raibid:ci-jobs:job:{id}"));
            }
            let _: Vec<std::collections::HashMap<String, String>> = pipe.query_async(conn).await?;
        }
        Ok(())
    }
}
