//! Load: many short jobs through long-running agents, with a small `redis.maxlen` and
//! `redis.retain_jobs` so that backpressure, stream trimming and pruning all happen.
//!
//! The CI size checks correctness only: every job ends exactly once, what the agents owe never
//! passes `maxlen` (backpressure), an enqueue into a full stream trims what was acked, old
//! records are pruned. The full size (`RAIBID_RELIABILITY_FULL=1`: 10,000
//! jobs, 20 agents) also holds the API to a p99 latency of 50 ms and the server's memory to no
//! growth between the first and the second half of the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use raibid_client::SubmitJob;
use raibid_model::JobStatus;
use raibid_reliability::{
    EventTap, LatencyProbe, Ledger, Settings, Stack, exclusive, full, procs, report, size,
    submit_until_accepted,
};
use raibid_testkit::GitRepo;
use serde_json::json;

/// One look at the resources of the run.
#[derive(Debug, Clone, Copy)]
struct Sample {
    server_rss_kib: u64,
    redis_rss_kib: u64,
    redis_used_kib: u64,
    stream_len: u64,
    /// Entries the pool's group has yet to read or to ack (lag + pending), counted from the
    /// entries themselves rather than from the group's `lag`, which the server trusts.
    owed: u64,
    records: u64,
}

/// The pool stream's length and what its group owes, read in one step (a script), so that no
/// enqueue or ack falls between the two.
const STREAM_NOW: &str = r#"
local len = redis.call('XLEN', KEYS[1])
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not ok then return {len, len} end
local owed = 0
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local unread = #redis.call('XRANGE', KEYS[1], '(' .. info['last-delivered-id'], '+')
  owed = math.max(owed, unread + info['pending'])
end
return {len, owed}
"#;

fn stream_now(conn: &mut redis::Connection) -> (u64, u64) {
    redis::Script::new(STREAM_NOW)
        .key(STREAM)
        .invoke(conn)
        .unwrap()
}

const STREAM: &str = "ci-jobs:default";

fn sample(stack: &Stack) -> Sample {
    let mut conn = stack.redis.connection();
    let info: String = redis::cmd("INFO").arg("memory").query(&mut conn).unwrap();
    let used = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let (stream_len, owed) = stream_now(&mut conn);
    Sample {
        server_rss_kib: stack.server.pid().and_then(procs::rss_kib).unwrap_or(0),
        redis_rss_kib: stack.redis.rss_kib().unwrap_or(0),
        redis_used_kib: used / 1024,
        stream_len,
        owed,
        records: redis::cmd("ZCARD")
            .arg("raibid:ci-jobs:jobs")
            .query(&mut conn)
            .unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_jobs_many_agents_all_finish_with_bounded_memory() {
    let _machine = exclusive();
    let jobs: usize = size(300, 10_000);
    let agents = size(4, 20);
    let maxlen: u64 = size(100, 1_000);
    let retain: u64 = size(100, 2_000);
    let settings = Settings {
        executor: "host",
        maxlen,
        retain_jobs: retain,
        ..Settings::default()
    };
    let stack = Stack::start(&settings, agents, 1);
    if full() {
        // In production agents run on other machines than the server and Redis; here 20 of
        // them share two cores with both. At a lower priority they still get all the idle CPU,
        // but the API latency measured is the server's, not the scheduler's run queue.
        for agent in &stack.agents {
            let pid = agent.pid().unwrap().to_string();
            let reniced = std::process::Command::new("renice")
                .args(["-n", "10", "-p", &pid])
                .stdout(std::process::Stdio::null())
                .status()
                .expect("run renice");
            assert!(reniced.success());
        }
    }
    let tap = EventTap::start(&stack.redis.url());
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: quick\n    run: echo ok\n",
        )],
        "pipeline",
    );
    let client = stack.client();
    let probe = LatencyProbe::start(
        &stack.url(),
        &[
            "/api/v1/jobs?limit=20",
            "/api/v1/queues",
            "/api/v1/jobs?status=running&limit=50",
        ],
        Duration::from_millis(100),
    );

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let refusals = Arc::new(AtomicUsize::new(0));
    let submission = SubmitJob {
        repo: "acme/load".into(),
        clone_url: repo.url(),
        sha: Some(sha.clone()),
        ..Default::default()
    };
    let mut submitters = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (client, next, refusals) = (client.clone(), next.clone(), refusals.clone());
        let submission = submission.clone();
        submitters.spawn(async move {
            let mut ids = Vec::new();
            while next.fetch_add(1, Ordering::SeqCst) < jobs {
                let (job, refused) =
                    submit_until_accepted(&client, &submission, Duration::from_secs(600)).await;
                refusals.fetch_add(refused as usize, Ordering::SeqCst);
                ids.push(job.id);
            }
            ids
        });
    }
    let mut samples = Vec::new();
    let mut ledger = Ledger::default();
    let deadline = Instant::now() + Duration::from_secs(size(300, 3_600));
    while tap.finished() < jobs {
        assert!(
            Instant::now() < deadline,
            "{} of {jobs} jobs finished in time\n{}",
            tap.finished(),
            stack.logs()
        );
        samples.push(tokio::task::block_in_place(|| sample(&stack)));
        while let Some(ids) = submitters.try_join_next() {
            ledger.ids.extend(ids.expect("a submitter panicked"));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    while let Some(ids) = submitters.join_next().await {
        ledger.ids.extend(ids.expect("a submitter panicked"));
    }
    let elapsed = started.elapsed();
    let latencies = probe.stop().await;
    let verdict = ledger.wait_finished(&tap, Duration::from_secs(60)).await;
    verdict.assert_each_once(JobStatus::Success, "");
    assert_eq!(ledger.len(), jobs);

    // The reaper prunes every 5 s, at most 1000 records a pass, two round trips a record: on a
    // saturated machine it can fall behind the inflow, and catches up once the load is gone.
    let drained = Instant::now();
    let last = loop {
        let now = tokio::task::block_in_place(|| sample(&stack));
        if now.records <= retain || drained.elapsed() > Duration::from_secs(120) {
            break now;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let prune_caught_up = drained.elapsed();
    let peak = |f: fn(&Sample) -> u64| samples.iter().map(f).max().unwrap_or(0);
    let stream_peak = peak(|s| s.stream_len);
    // Backpressure: what the agents have yet to run never passes `maxlen`. The stream itself
    // may, by the entries acked after the oldest job still running (trimming keeps every
    // entry from there on, see raibid-queue's scripts.rs): how many depends on how long that
    // job runs and how fast the others go, so that is reported, and trimming is checked below.
    let owed_peak = peak(|s| s.owed);
    assert!(
        owed_peak <= maxlen,
        "the jobs owed stay within maxlen {maxlen}: peak {owed_peak}"
    );
    assert!(
        last.records <= retain,
        "finished jobs beyond retain_jobs are pruned: {} records kept",
        last.records
    );
    let trimmed_to =
        trimming_drops_what_was_acked(&stack, &tap, &client, &ledger, &submission, maxlen).await;
    assert_eq!(latencies.failures, 0, "the API always answered");
    assert_eq!(latencies.server_errors(), 0, "the API never failed");

    let half = samples.len() / 2;
    let server_first_half = samples[..half]
        .iter()
        .map(|s| s.server_rss_kib)
        .max()
        .unwrap_or(0);
    let server_second_half = samples[half..]
        .iter()
        .map(|s| s.server_rss_kib)
        .max()
        .unwrap_or(0);
    let p99 = latencies.quantile(0.99);
    report(
        "load",
        json!({
            "jobs": jobs,
            "agents": agents,
            "agents_niced": full(),
            "maxlen": maxlen,
            "retain_jobs": retain,
            "elapsed_s": elapsed.as_secs(),
            "jobs_per_s": jobs as f64 / elapsed.as_secs_f64(),
            "submissions_refused_queue_full": refusals.load(Ordering::SeqCst),
            "lost": verdict.unfinished.len(),
            "finished_twice": verdict.finished_twice.len(),
            "reruns": verdict.total_deliveries() - jobs as u64,
            "queued_to_final_p50_ms": verdict.latency_quantile(0.5),
            "queued_to_final_p99_ms": verdict.latency_quantile(0.99),
            "api_requests": latencies.millis.len(),
            "api_p50_ms": latencies.quantile(0.5),
            "api_p99_ms": p99,
            "api_max_ms": latencies.max(),
            "stream_len_peak": stream_peak,
            "owed_peak": owed_peak,
            "acked_but_kept_peak": peak(|s| s.stream_len - s.owed),
            "stream_len_after_a_trim": trimmed_to,
            "records_peak": peak(|s| s.records),
            "records_after_prune": last.records,
            "prune_caught_up_after_run_s": prune_caught_up.as_secs(),
            "server_rss_mib_first_half_peak": server_first_half / 1024,
            "server_rss_mib_second_half_peak": server_second_half / 1024,
            "redis_rss_mib_peak": peak(|s| s.redis_rss_kib) / 1024,
            "redis_used_mib_peak": peak(|s| s.redis_used_kib) / 1024,
            "redis_used_mib_end": last.redis_used_kib / 1024,
        }),
    );
    if full() {
        assert!(p99 < 50, "API p99 {p99} ms");
        assert!(
            server_second_half <= server_first_half + server_first_half / 4,
            "server memory grew from {server_first_half} KiB to {server_second_half} KiB"
        );
    }
}

/// Once every job has finished, an enqueue that finds the stream at `maxlen` trims away all
/// that was acked: the stream is left with the last entry delivered (a group's read position
/// is kept) and the new one. Jobs are first added, and run, until the stream is that long.
/// Returns the stream's length after that enqueue.
async fn trimming_drops_what_was_acked(
    stack: &Stack,
    tap: &EventTap,
    client: &raibid_client::Client,
    ledger: &Ledger,
    submission: &SubmitJob,
    maxlen: u64,
) -> u64 {
    let mut conn = stack.redis.connection();
    let (len, owed) = tokio::task::block_in_place(|| stream_now(&mut conn));
    assert_eq!(owed, 0, "every job finished, yet {owed} are owed");
    // The run's jobs too: the verdict names any job it does not know.
    let mut ledger = ledger.clone();
    for _ in len..maxlen {
        let (job, _) = submit_until_accepted(client, submission, Duration::from_secs(60)).await;
        ledger.add(job.id);
    }
    ledger
        .wait_finished(tap, Duration::from_secs(size(120, 600)))
        .await
        .assert_each_once(JobStatus::Success, "");
    let (filled, owed) = tokio::task::block_in_place(|| stream_now(&mut conn));
    assert!(
        filled >= maxlen && owed == 0,
        "{filled} entries, {owed} owed"
    );
    let (last, _) = submit_until_accepted(client, submission, Duration::from_secs(60)).await;
    let (after, _) = tokio::task::block_in_place(|| stream_now(&mut conn));
    assert_eq!(
        after, 2,
        "an enqueue into a stream of {filled} acked entries keeps the last one read and its own"
    );
    ledger.add(last.id);
    ledger
        .wait_finished(tap, Duration::from_secs(60))
        .await
        .assert_each_once(JobStatus::Success, "");
    after
}
