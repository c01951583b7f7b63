//! `raibid bench logs`: step output through the real path, HostExecutor -> JobLog -> Redis.
//!
//! Both figures come from real jobs run by the agent's `Runner` (checkout of a local
//! repository, pipeline file, step, ack), so nothing is skipped that a job would pay:
//!
//! - throughput: a step prints `bytes` of lines as fast as `yes` can; the figure is bytes
//!   stored per second of the step's recorded duration. Two ceilings measured in the same run
//!   say which side limits it: the executor alone (output read and discarded) and
//!   `Queue::append_log` alone (64 KiB appends one after another, as `JobLog` sends them).
//! - follow latency: a step prints its wall-clock time in nanoseconds every ~10 ms; a
//!   follower reading the log the way the SSE endpoint does (`Queue::log_follower`) takes the
//!   difference to its own clock when the line arrives.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use raibid_agent::executor::{Executor, HostExecutor, StepSpec};
use raibid_agent::{GitCheckout, JobEnd, Runner, RunnerSettings, SecretStore};
use raibid_model::{Event, JobStatus, NewJob, PoolName};
use raibid_queue::{LogCursor, Queue, QueueOptions};
use raibid_testkit::GitRepo;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::BenchError;
use crate::procs::{require_tool, start_redis};
use crate::report::{
    LATENCY_HEADERS, LatencySummary, Machine, TargetCheck, latency_row, table, targets_table,
};

/// Target from the issue: stored log throughput, MB (10^6 bytes) per second.
pub const TARGET_MB_PER_S: f64 = 50.0;
/// Target from the issue: printed -> visible to a follower, p99.
pub const TARGET_FOLLOW_P99_MS: f64 = 100.0;

/// The chunk size `JobLog` flushes at; the append ceiling uses the same.
const APPEND_CHUNK: usize = 64 * 1024;
const LINE: &str = "raibid bench: a line of build output, about as long as a compiler's";
const STEP_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone)]
pub struct LogBenchOptions {
    /// Output of the throughput step.
    pub bytes: u64,
    /// Timestamped lines printed by the follow step.
    pub follow_lines: usize,
    /// Pause between two timestamped lines.
    pub follow_interval: Duration,
}

impl Default for LogBenchOptions {
    fn default() -> Self {
        Self {
            bytes: 200_000_000,
            follow_lines: 1_000,
            follow_interval: Duration::from_millis(10),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LogReport {
    pub machine: Machine,
    pub bytes_printed: u64,
    /// Everything in the job's log stream (the step's output plus the runner's few lines).
    pub bytes_stored: u64,
    /// The step's duration as the runner recorded it.
    pub step_s: f64,
    pub stored_mb_per_s: f64,
    /// Ceiling: the same step through `HostExecutor` with its output discarded.
    pub executor_only_mb_per_s: f64,
    /// Ceiling: `Queue::append_log` of 64 KiB chunks, one at a time, on the same Redis.
    pub append_only_mb_per_s: f64,
    pub follow: LatencySummary,
    pub follow_lines: usize,
    pub follow_interval_ms: f64,
    pub targets: Vec<TargetCheck>,
}

impl LogReport {
    pub fn render_table(&self) -> String {
        let mut out = format!(
            "logs: real jobs through Runner + HostExecutor -> JobLog -> private redis-server \
             (no persistence); MB = 10^6 bytes\nmachine: {}\n\n",
            self.machine
        );
        out.push_str(&table(
            &["THROUGHPUT", "MB", "SECONDS", "MB/S"],
            &[
                vec![
                    "step -> executor -> JobLog -> redis (stored)".into(),
                    format!("{:.0}", self.bytes_stored as f64 / 1e6),
                    format!("{:.2}", self.step_s),
                    format!("{:.0}", self.stored_mb_per_s),
                ],
                vec![
                    "ceiling: step -> executor, output discarded".into(),
                    format!("{:.0}", self.bytes_printed as f64 / 1e6),
                    String::new(),
                    format!("{:.0}", self.executor_only_mb_per_s),
                ],
                vec![
                    "ceiling: Queue::append_log, 64 KiB chunks".into(),
                    format!("{:.0}", self.bytes_printed as f64 / 1e6),
                    String::new(),
                    format!("{:.0}", self.append_only_mb_per_s),
                ],
            ],
        ));
        out.push('\n');
        out.push_str(&table(
            &LATENCY_HEADERS,
            &[latency_row(
                &format!(
                    "printed -> follower ({} lines, one every {:.0} ms)",
                    self.follow_lines, self.follow_interval_ms
                ),
                &self.follow,
            )],
        ));
        out.push('\n');
        out.push_str(&targets_table(&self.targets));
        out
    }
}

/// Runs the log benchmark; see the module documentation.
pub async fn logs(opts: LogBenchOptions) -> Result<LogReport, BenchError> {
    let machine = Machine::detect();
    require_tool("git", "git")?;
    let redis = start_redis().await?;
    let dir = tempfile::Builder::new()
        .prefix("raibid-bench-logs-")
        .tempdir()
        .map_err(BenchError::io("creating a temporary directory"))?;
    let mut options = QueueOptions::new(redis.url());
    options.stream_name = "bench-logs".into();
    // The default cap (10 MiB) would truncate the flood after a few milliseconds.
    options.log_max_bytes = opts.bytes + 16 * 1024 * 1024;
    let queue = Queue::open(options)?;
    queue.ping().await?;

    let flood = format!("yes \"{LINE}\" | head -c {}", opts.bytes);
    let tick = format!(
        "i=0\nwhile [ \"$i\" -lt {} ]; do\n  date +%s%N\n  sleep {}\n  i=$((i + 1))\ndone",
        opts.follow_lines,
        opts.follow_interval.as_secs_f64()
    );
    let repo = {
        let (flood, tick) = (flood.clone(), tick.clone());
        tokio::task::spawn_blocking(move || {
            let repo = GitRepo::new();
            let flood_sha = repo.commit(&[(".raibid.yaml", &pipeline("flood", &flood))], "flood");
            let tick_sha = repo.commit(&[(".raibid.yaml", &pipeline("tick", &tick))], "tick");
            (repo, flood_sha, tick_sha)
        })
        .await
        .map_err(|e| BenchError::Process {
            what: "creating the benchmark repository".into(),
            message: e.to_string(),
        })?
    };
    let (repo, flood_sha, tick_sha) = repo;
    let runner = Arc::new(Runner {
        queue: queue.clone(),
        executor: Arc::new(HostExecutor::new()),
        git: GitCheckout::new(dir.path().join("mirrors"), None),
        images: None,
        artifacts: None,
        secrets: SecretStore::new(BTreeMap::new(), &BTreeMap::new(), false)
            .map_err(|e| BenchError::Invalid(e.to_string()))?,
        settings: RunnerSettings {
            agent_name: "bench-logs".into(),
            workspace_root: dir.path().join("workspaces"),
            keep_workspace: false,
            heartbeat_interval: Duration::from_secs(5),
            step_path: STEP_PATH.into(),
            step_env: BTreeMap::new(),
            registry: String::new(),
            repos: raibid_agent::RepoFilter::any(),
            public_url: String::new(),
            ephemeral: false,
        },
    });

    info!(bytes = opts.bytes, "throughput: flood step");
    let flood_id = enqueue(&queue, PoolName::default(), &repo.url(), &flood_sha).await?;
    run_one(&runner, &queue).await?;
    let job = queue
        .get(&flood_id)
        .await?
        .ok_or_else(|| BenchError::Invalid("the flood job disappeared".into()))?;
    let step_ms = job
        .steps
        .first()
        .and_then(|s| s.duration_ms)
        .ok_or_else(|| BenchError::Invalid("the flood step has no duration".into()))?;
    let step_s = step_ms as f64 / 1000.0;
    let (bytes_stored, truncated) = stored_bytes(&queue, &flood_id).await?;
    if truncated || bytes_stored < opts.bytes {
        return Err(BenchError::Invalid(format!(
            "the log holds {bytes_stored} bytes of the {} printed{}",
            opts.bytes,
            if truncated { " (truncated)" } else { "" }
        )));
    }
    let stored_mb_per_s = opts.bytes as f64 / 1e6 / step_s.max(f64::MIN_POSITIVE);
    let executor_only = executor_only(&flood, &dir.path().join("discard")).await?;
    let append_only = append_only(&queue, opts.bytes).await?;

    info!(lines = opts.follow_lines, "follow latency: timestamp step");
    let tick_id = enqueue(&queue, PoolName::default(), &repo.url(), &tick_sha).await?;
    let follower = tokio::spawn(follow(
        queue.clone(),
        tick_id.clone(),
        Duration::from_secs(60) + opts.follow_interval * opts.follow_lines as u32 * 3,
    ));
    run_one(&runner, &queue).await?;
    let latencies = follower.await.map_err(|e| BenchError::Process {
        what: "log follower".into(),
        message: e.to_string(),
    })??;
    if latencies.len() != opts.follow_lines {
        return Err(BenchError::Invalid(format!(
            "the follower saw {} of the {} timestamped lines",
            latencies.len(),
            opts.follow_lines
        )));
    }
    let follow = LatencySummary::of(&latencies);
    drop(redis);

    Ok(LogReport {
        machine,
        bytes_printed: opts.bytes,
        bytes_stored,
        step_s,
        stored_mb_per_s,
        executor_only_mb_per_s: opts.bytes as f64 / 1e6 / executor_only.as_secs_f64(),
        append_only_mb_per_s: opts.bytes as f64 / 1e6 / append_only.as_secs_f64(),
        follow,
        follow_lines: opts.follow_lines,
        follow_interval_ms: opts.follow_interval.as_secs_f64() * 1000.0,
        targets: vec![
            TargetCheck::at_least(
                "stored log throughput",
                "MB/s",
                TARGET_MB_PER_S,
                stored_mb_per_s,
            ),
            TargetCheck::below(
                "follow latency p99",
                "ms",
                TARGET_FOLLOW_P99_MS,
                follow.p99_ms,
            ),
        ],
    })
}

fn pipeline(name: &str, script: &str) -> String {
    let mut yaml = format!("steps:\n  - name: {name}\n    run: |\n");
    for line in script.lines() {
        yaml.push_str("      ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

async fn enqueue(
    queue: &Queue,
    pool: PoolName,
    url: &str,
    sha: &str,
) -> Result<String, BenchError> {
    let job = queue
        .enqueue(NewJob {
            repo: "bench/logs".into(),
            clone_url: url.to_owned(),
            git_ref: "refs/heads/main".into(),
            sha: sha.to_owned(),
            event: Event::Manual,
            pool,
            forge: None,
            pr_number: None,
            from_fork: false,
            sender: None,
            delivery_id: None,
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
        })
        .await?;
    Ok(job.job_id().to_owned())
}

/// Claims the next job and runs it to the end, as an agent would; it must succeed.
async fn run_one(runner: &Runner, queue: &Queue) -> Result<(), BenchError> {
    let mut claimer = queue.claimer("bench-logs").await?;
    let claimed = claimer
        .claim(&[PoolName::default()], Duration::from_secs(5))
        .await?
        .ok_or_else(|| BenchError::Invalid("the queued job was not delivered".into()))?;
    let id = claimed.job.id.clone();
    match runner.run(claimed, CancellationToken::new()).await? {
        JobEnd::Acked(JobStatus::Success) => Ok(()),
        other => {
            let reason = queue.get(&id).await?.and_then(|j| j.reason);
            Err(BenchError::Invalid(format!(
                "job {id} ended {other:?}: {}",
                reason.unwrap_or_default()
            )))
        }
    }
}

/// Bytes in a job's log, and whether the cap cut it.
async fn stored_bytes(queue: &Queue, id: &str) -> Result<(u64, bool), BenchError> {
    let mut cursor = LogCursor::start();
    let mut total = 0u64;
    let mut truncated = false;
    loop {
        let batch = queue.read_log(id, &cursor, 256).await?;
        if batch.chunks.is_empty() {
            return Ok((total, truncated));
        }
        for chunk in &batch.chunks {
            total += chunk.data.len() as u64;
            truncated |= chunk.data.starts_with(b"\n[raibid] log truncated");
        }
        cursor = batch.next;
    }
}

/// The flood step through `HostExecutor` alone: how fast output reaches the agent at all.
async fn executor_only(script: &str, workspace: &std::path::Path) -> Result<Duration, BenchError> {
    tokio::fs::create_dir_all(workspace)
        .await
        .map_err(BenchError::io("creating a workspace"))?;
    let spec = StepSpec {
        name: "flood".into(),
        script: script.to_owned(),
        plugin: false,
        workspace: workspace.to_path_buf(),
        directory: None,
        home: None,
        read_only: Vec::new(),
        private: None,
        env: BTreeMap::from([("PATH".to_owned(), STEP_PATH.to_owned())]),
        timeout: Duration::from_secs(600),
        image: None,
        pull: false,
        untrusted: false,
        network: None,
    };
    let executor = HostExecutor::new();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let started = Instant::now();
    let drain = async {
        let mut n = 0usize;
        while let Some(chunk) = rx.recv().await {
            n += chunk.len();
        }
        n
    };
    let (exit, _) = tokio::join!(
        executor.run_step(&spec, tx, CancellationToken::new()),
        drain
    );
    let elapsed = started.elapsed();
    if !exit?.success() {
        return Err(BenchError::Invalid("the flood step failed".into()));
    }
    Ok(elapsed)
}

/// `bytes` appended to a job's log in 64 KiB chunks, one request at a time like `JobLog`.
async fn append_only(queue: &Queue, bytes: u64) -> Result<Duration, BenchError> {
    // A job of a pool nobody claims from: only its log is used.
    let pool = PoolName::new("bench-append").expect("a valid pool name");
    let id = enqueue(queue, pool, "file:///dev/null", &"0".repeat(40)).await?;
    let chunk: Vec<u8> = LINE
        .bytes()
        .chain(std::iter::once(b'\n'))
        .cycle()
        .take(APPEND_CHUNK)
        .collect();
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        let n = (bytes - sent).min(APPEND_CHUNK as u64) as usize;
        if !queue.append_log(&id, &chunk[..n]).await? {
            return Err(BenchError::Invalid(
                "the append ceiling hit the log cap".into(),
            ));
        }
        sent += n as u64;
    }
    Ok(started.elapsed())
}

/// Follows a job's log until it ends; returns printed -> received for every timestamp line.
async fn follow(queue: Queue, id: String, timeout: Duration) -> Result<Vec<Duration>, BenchError> {
    let mut follower = queue.log_follower(&id).await?;
    let mut cursor = LogCursor::start();
    let mut pending = Vec::new();
    let mut latencies = Vec::new();
    let deadline = Instant::now() + timeout;
    loop {
        if Instant::now() > deadline {
            return Err(BenchError::Invalid(format!(
                "the follow job did not end within {timeout:?}"
            )));
        }
        let batch = follower.next(&cursor, Duration::from_secs(1)).await?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        for chunk in &batch.chunks {
            pending.extend_from_slice(&chunk.data);
            latencies.extend(take_timestamps(&mut pending, now));
        }
        cursor = batch.next;
        if batch.finished {
            return Ok(latencies);
        }
    }
}

/// Consumes the complete lines of `pending`; for each that is a nanosecond timestamp,
/// `now` minus it (negative clock differences count as zero).
fn take_timestamps(pending: &mut Vec<u8>, now: Duration) -> Vec<Duration> {
    let Some(end) = pending.iter().rposition(|&b| b == b'\n') else {
        return Vec::new();
    };
    let lines: Vec<u8> = pending.drain(..=end).collect();
    lines
        .split(|&b| b == b'\n')
        .filter(|l| l.len() >= 18 && l.iter().all(u8::is_ascii_digit))
        .filter_map(|l| std::str::from_utf8(l).ok()?.parse::<u64>().ok())
        .map(|ns| now.saturating_sub(Duration::from_nanos(ns)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_taken_from_complete_lines_only() {
        let now = Duration::from_nanos(1_700_000_000_500_000_000);
        let mut pending = b"\x1b[1m header\n1700000000400000000\n17000000004".to_vec();
        let got = take_timestamps(&mut pending, now);
        assert_eq!(got, vec![Duration::from_millis(100)]);
        assert_eq!(pending, b"17000000004");
        pending.extend_from_slice(b"50000000\n");
        assert_eq!(
            take_timestamps(&mut pending, now),
            vec![Duration::from_millis(50)]
        );
        assert!(pending.is_empty());
    }

    #[test]
    fn pipelines_keep_multi_line_scripts() {
        let yaml = pipeline("tick", "i=0\necho \"$i\"");
        assert_eq!(
            yaml,
            "steps:\n  - name: tick\n    run: |\n      i=0\n      echo \"$i\"\n"
        );
    }
}
