//! `raibid bench queue`: throughput of enqueue -> claim -> ack and claim latency, each next to
//! the raw Redis Streams ceiling measured in the same run on the same redis-server.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures::StreamExt;
use raibid_model::{JobStatus, Outcome, PoolName};
use raibid_queue::bench::{self, Finish, PRODUCER_CONCURRENCY, raw_latency, raw_throughput};
use raibid_queue::{Queue, QueueOptions};
use serde::Serialize;

use crate::cli::{BenchQueueArgs, Output};
use crate::local_redis::{Durability, LocalRedis};

#[derive(Debug, Serialize)]
struct ThroughputRow {
    consumers: usize,
    jobs: usize,
    rounds: usize,
    /// Medians over the rounds.
    raw_per_sec: f64,
    queue_per_sec: f64,
    ratio: f64,
    raw_min_max: (f64, f64),
    queue_min_max: (f64, f64),
}

#[derive(Debug, Serialize)]
struct LatencyRow {
    which: &'static str,
    samples: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: String,
    throughput: Vec<ThroughputRow>,
    latency: Vec<LatencyRow>,
}

pub async fn run(args: BenchQueueArgs) -> anyhow::Result<ExitCode> {
    let dir = tempfile::tempdir()?;
    let (url, redis) = match &args.redis_url {
        Some(url) => (url.clone(), None),
        None => {
            let redis = LocalRedis::start(dir.path(), None, Durability::Memory, None, None).await?;
            (redis.url(), Some(redis))
        }
    };
    let mut report = Report {
        machine: machine(),
        throughput: Vec::new(),
        latency: Vec::new(),
    };
    for &consumers in &args.consumers {
        let mut raw_rates = Vec::new();
        let mut our_rates = Vec::new();
        for round in 1..=args.rounds.max(1) {
            eprintln!(
                "throughput: {} jobs, {consumers} consumer(s), round {round}/{}...",
                args.jobs,
                args.rounds.max(1)
            );
            let raw = raw_throughput(&url, args.jobs, consumers).await?;
            let ours = queue_throughput(&url, args.jobs, consumers).await?;
            raw_rates.push(args.jobs as f64 / raw.as_secs_f64());
            our_rates.push(args.jobs as f64 / ours.as_secs_f64());
        }
        let raw_rate = median(&mut raw_rates);
        let our_rate = median(&mut our_rates);
        report.throughput.push(ThroughputRow {
            consumers,
            jobs: args.jobs,
            rounds: args.rounds.max(1),
            raw_per_sec: raw_rate,
            queue_per_sec: our_rate,
            ratio: our_rate / raw_rate,
            raw_min_max: (raw_rates[0], raw_rates[raw_rates.len() - 1]),
            queue_min_max: (our_rates[0], our_rates[our_rates.len() - 1]),
        });
    }
    eprintln!("latency: {} jobs, one every 5 ms...", args.latency_jobs);
    let interval = Duration::from_millis(5);
    report.latency.push(summarize(
        "raw XADD->XREADGROUP",
        raw_latency(&url, args.latency_jobs, interval).await?,
    ));
    report.latency.push(summarize(
        "enqueue->claim",
        queue_latency(&url, args.latency_jobs, interval).await?,
    ));
    if let Some(redis) = redis {
        redis.stop().await;
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => print_report(&report),
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_queue(url: &str) -> anyhow::Result<Queue> {
    let mut options = QueueOptions::new(url);
    // A private stream name per run: runs never see each other's jobs.
    options.stream_name = format!("bench-{}", std::process::id());
    options.maxlen = 1_000_000;
    Ok(Queue::open(options)?)
}

async fn queue_throughput(url: &str, jobs: usize, consumers: usize) -> anyhow::Result<Duration> {
    let queue = bench_queue(url)?;
    queue.ping().await?;
    let done = Finish::new(jobs);
    let pools = vec![PoolName::default()];
    let started = Instant::now();
    let mut workers = Vec::new();
    for c in 0..consumers {
        // Connections of its own, like an agent process (and like the raw loop's consumers).
        let queue = bench_queue(url)?;
        let mut claimer = queue.claimer(format!("bench-{c}")).await?;
        let done = done.clone();
        let pools = pools.clone();
        workers.push(tokio::spawn(async move {
            let success = Outcome::new(JobStatus::Success);
            while !done.all_acked() {
                if let Some(claimed) = claimer.claim(&pools, Duration::from_millis(100)).await? {
                    queue.ack(&claimed, &success).await?;
                    done.acked();
                }
            }
            Ok::<_, raibid_queue::QueueError>(())
        }));
    }
    let results: Vec<_> = futures::stream::iter(0..jobs)
        .map(|i| {
            let queue = queue.clone();
            async move { queue.enqueue(bench::job(i)).await }
        })
        .buffer_unordered(PRODUCER_CONCURRENCY)
        .collect()
        .await;
    for r in results {
        r?;
    }
    for w in workers {
        w.await??;
    }
    Ok(done.elapsed_since(started))
}

async fn queue_latency(
    url: &str,
    jobs: usize,
    interval: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let queue = bench_queue(url)?;
    queue.ping().await?;
    let mut claimer = queue.claimer("latency").await?;
    let base = Instant::now();
    let consumer_queue = queue.clone();
    let consumer = tokio::spawn(async move {
        let mut claimed_at = HashMap::with_capacity(jobs);
        let pools = vec![PoolName::default()];
        let success = Outcome::new(JobStatus::Success);
        while claimed_at.len() < jobs {
            if let Some(c) = claimer.claim(&pools, Duration::from_secs(1)).await? {
                claimed_at.insert(c.job.id.clone(), base.elapsed());
                consumer_queue.ack(&c, &success).await?;
            }
        }
        Ok::<_, raibid_queue::QueueError>(claimed_at)
    });
    let mut sent_at = HashMap::with_capacity(jobs);
    for i in 0..jobs {
        let sent = base.elapsed();
        let job = queue.enqueue(bench::job(i)).await?;
        sent_at.insert(job.job_id().to_owned(), sent);
        tokio::time::sleep(interval).await;
    }
    let claimed_at = consumer.await??;
    Ok(sent_at
        .into_iter()
        .filter_map(|(id, sent)| claimed_at.get(&id).map(|c| c.saturating_sub(sent)))
        .collect())
}

/// Sorts `rates` and returns their median.
fn median(rates: &mut [f64]) -> f64 {
    rates.sort_by(f64::total_cmp);
    let n = rates.len();
    if n % 2 == 1 {
        rates[n / 2]
    } else {
        (rates[n / 2 - 1] + rates[n / 2]) / 2.0
    }
}

fn summarize(which: &'static str, mut samples: Vec<Duration>) -> LatencyRow {
    samples.sort();
    let pct = |p: f64| {
        let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    LatencyRow {
        which,
        samples: samples.len(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
    }
}

fn print_report(report: &Report) {
    println!("machine: {}", report.machine);
    let rows: Vec<Vec<String>> = report
        .throughput
        .iter()
        .map(|r| {
            vec![
                r.consumers.to_string(),
                r.jobs.to_string(),
                r.rounds.to_string(),
                format!(
                    "{:.0} ({:.0}-{:.0})",
                    r.raw_per_sec, r.raw_min_max.0, r.raw_min_max.1
                ),
                format!(
                    "{:.0} ({:.0}-{:.0})",
                    r.queue_per_sec, r.queue_min_max.0, r.queue_min_max.1
                ),
                format!("{:.0}%", r.ratio * 100.0),
            ]
        })
        .collect();
    print!(
        "{}",
        crate::output::table(
            &[
                "CONSUMERS",
                "JOBS",
                "ROUNDS",
                "RAW JOBS/S median (min-max)",
                "QUEUE JOBS/S median (min-max)",
                "QUEUE/RAW"
            ],
            &rows
        )
    );
    println!();
    let rows: Vec<Vec<String>> = report
        .latency
        .iter()
        .map(|r| {
            vec![
                r.which.to_owned(),
                r.samples.to_string(),
                format!("{:.3}", r.p50_ms),
                format!("{:.3}", r.p99_ms),
                format!("{:.3}", r.max_ms),
            ]
        })
        .collect();
    print!(
        "{}",
        crate::output::table(&["LATENCY", "SAMPLES", "P50 MS", "P99 MS", "MAX MS"], &rows)
    );
}

/// One line naming the machine, for BENCHMARKS.md.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{} {} cores, {cpu}", std::env::consts::ARCH, cores)
}
