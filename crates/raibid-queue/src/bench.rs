//! The raw Redis Streams ceiling, for `raibid bench queue`.
//!
//! Benchmarks compare the queue against plain `XADD` + `XREADGROUP` + `XACK` with the same
//! client and the same concurrency, measured in the same run, so the figure says how much the
//! job bookkeeping costs rather than how fast the machine is. It lives here because this crate is
//! the only one that speaks Redis.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use redis::Value;

use crate::QueueError;
use crate::conn::{Conn, QueueOptions};
use crate::reply;

/// How many enqueues are in flight at once, in both the raw and the queue benchmark.
pub const PRODUCER_CONCURRENCY: usize = 16;

/// The small job both the queue benchmark and `examples/redis_cost.rs` enqueue.
pub fn job(i: usize) -> raibid_model::NewJob {
    raibid_model::NewJob::new(
        "bench/noop",
        "file:///dev/null",
        "refs/heads/main",
        format!("{i:040x}"),
        raibid_model::Event::Manual,
    )
}

/// The consumer group of the raw loop.
const GROUP: &str = "g";

/// The raw loop's commands. `examples/redis_cost.rs` counts the instructions of these very
/// commands, so its figures and the benchmark's timings are of the same work.
pub mod raw {
    use super::GROUP;

    pub fn create_group(stream: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM");
        cmd
    }

    /// `XADD` with the same `MAXLEN ~` trimming as the queue's enqueue.
    pub fn add(stream: &str, job: usize) -> redis::Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(100_000)
            .arg("*")
            .arg("job")
            .arg(job);
        cmd
    }

    /// One entry for `consumer`, waiting up to `block_ms`.
    pub fn read(stream: &str, consumer: &str, block_ms: u64) -> redis::Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(stream)
            .arg(">");
        cmd
    }

    pub fn ack(stream: &str, entry: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("XACK");
        cmd.arg(stream).arg(GROUP).arg(entry);
        cmd
    }
}

/// Counts acknowledged jobs and notes when the last one was acknowledged.
///
/// A run ends at its last ack, not when its consumers have noticed: they notice only when
/// their blocking read times out, up to one `BLOCK` period later, which added as much as 10%
/// to a one-second raw run and so flattered the ratio (BENCHMARKS.md, queue).
pub struct Finish {
    jobs: usize,
    acked: AtomicUsize,
    at: OnceLock<Instant>,
}

impl Finish {
    pub fn new(jobs: usize) -> Arc<Self> {
        Arc::new(Self {
            jobs,
            acked: AtomicUsize::new(0),
            at: OnceLock::new(),
        })
    }

    pub fn acked(&self) {
        if self.acked.fetch_add(1, Ordering::Relaxed) + 1 == self.jobs {
            let _ = self.at.set(Instant::now());
        }
    }

    pub fn all_acked(&self) -> bool {
        self.acked.load(Ordering::Relaxed) >= self.jobs
    }

    /// From `started` to the last ack (to now if it has not happened).
    pub fn elapsed_since(&self, started: Instant) -> Duration {
        self.at.get().copied().unwrap_or_else(Instant::now) - started
    }
}

/// Time to push `jobs` entries through XADD -> XREADGROUP -> XACK with `consumers` readers.
///
/// The producers share one connection, as the server's webhook handlers do; each consumer has
/// connections of its own, as each agent process does. The queue benchmark must be laid out
/// the same way: a consumer whose `XACK` waited behind the producers' pipelined commands on a
/// shared connection held this loop to 65-80% of its speed, which understated the ceiling
/// (BENCHMARKS.md, queue).
pub async fn raw_throughput(
    url: &str,
    jobs: usize,
    consumers: usize,
) -> Result<Duration, QueueError> {
    let conn = Conn::open(&QueueOptions::new(url))?;
    let stream = format!("bench-raw:{}", ulid::Ulid::new());
    create_group(&conn, &stream).await?;
    let done = Finish::new(jobs);
    let started = Instant::now();
    let mut readers = Vec::new();
    for c in 0..consumers {
        let conn = Conn::open(&QueueOptions::new(url))?;
        let mut reader = conn.dedicated().await?;
        let stream = stream.clone();
        let done = done.clone();
        readers.push(tokio::spawn(async move {
            while !done.all_acked() {
                let reply: Value = raw::read(&stream, &format!("c{c}"), 100)
                    .query_async(&mut reader)
                    .await?;
                for id in entry_ids(&reply)? {
                    let _: i64 = conn.run(&raw::ack(&stream, &id)).await?;
                    done.acked();
                }
            }
            Ok::<_, QueueError>(())
        }));
    }
    let results: Vec<Result<String, QueueError>> = futures::stream::iter(0..jobs)
        .map(|i| {
            let conn = conn.clone();
            let stream = stream.clone();
            async move { conn.run(&raw::add(&stream, i)).await }
        })
        .buffer_unordered(PRODUCER_CONCURRENCY)
        .collect()
        .await;
    for r in results {
        r?;
    }
    for reader in readers {
        reader
            .await
            .map_err(|e| QueueError::Protocol(e.to_string()))??;
    }
    let elapsed = done.elapsed_since(started);
    let _: i64 = conn.run(redis::cmd("DEL").arg(&stream)).await?;
    Ok(elapsed)
}

/// Enqueue-to-delivery latency of plain XADD -> XREADGROUP BLOCK, one entry every `interval`.
pub async fn raw_latency(
    url: &str,
    jobs: usize,
    interval: Duration,
) -> Result<Vec<Duration>, QueueError> {
    let conn = Conn::open(&QueueOptions::new(url))?;
    let stream = format!("bench-raw:{}", ulid::Ulid::new());
    create_group(&conn, &stream).await?;
    let mut reader = conn.dedicated().await?;
    let reader_conn = conn.clone();
    let reader_stream = stream.clone();
    let base = Instant::now();
    let consumer = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(jobs);
        while latencies.len() < jobs {
            let reply: Value = raw::read(&reader_stream, "c", 1000)
                .query_async(&mut reader)
                .await?;
            let now = base.elapsed();
            for (id, sent_ns) in entries_with_field(&reply, "t")? {
                latencies.push(now.saturating_sub(Duration::from_nanos(sent_ns)));
                let _: i64 = reader_conn.run(&raw::ack(&reader_stream, &id)).await?;
            }
        }
        Ok::<_, QueueError>(latencies)
    });
    for _ in 0..jobs {
        let sent = base.elapsed().as_nanos() as u64;
        let _: String = conn
            .run(redis::cmd("XADD").arg(&stream).arg("*").arg("t").arg(sent))
            .await?;
        tokio::time::sleep(interval).await;
    }
    let latencies = consumer
        .await
        .map_err(|e| QueueError::Protocol(e.to_string()))??;
    let _: i64 = conn.run(redis::cmd("DEL").arg(&stream)).await?;
    Ok(latencies)
}

async fn create_group(conn: &Conn, stream: &str) -> Result<(), QueueError> {
    let _: String = conn.run(&raw::create_group(stream)).await?;
    Ok(())
}

fn entry_ids(reply: &Value) -> Result<Vec<String>, QueueError> {
    Ok(reply::stream_entries(reply)?
        .into_iter()
        .map(|e| e.id)
        .collect())
}

/// `(id, numeric value of field)` for every entry of an XREADGROUP reply.
fn entries_with_field(reply: &Value, field: &str) -> Result<Vec<(String, u64)>, QueueError> {
    Ok(reply::stream_entries(reply)?
        .into_iter()
        .map(|e| {
            let value = reply::int(e.fields.get(field)).unwrap_or(0) as u64;
            (e.id, value)
        })
        .collect())
}
