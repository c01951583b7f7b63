//! Drives one job's worth of Redis work at a time, phase by phase, for `scripts/queue-cost.sh`,
//! which runs redis-server under callgrind and counts the instructions of each phase.
//!
//! Timings on a small shared VM swing by 20% from run to run; instruction counts do not, so a
//! change to the scripts can be judged by them (BENCHMARKS.md, queue). Between phases this
//! program asks callgrind to dump its counters (`callgrind_control --dump=<phase>`).
//!
//! Usage: `redis_cost <redis url> <raw|queue> <jobs>`; phases: enqueue, claim, ack.

use std::process::Command;
use std::time::Duration;

use raibid_model::{JobStatus, Outcome, PoolName};
use raibid_queue::bench::{self, raw};
use raibid_queue::{Queue, QueueOptions};

fn dump(phase: &str) {
    let status = Command::new("callgrind_control")
        .arg(format!("--dump={phase}"))
        .output()
        .expect("callgrind_control runs (valgrind installed)");
    assert!(status.status.success(), "callgrind_control --dump failed");
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, mode, jobs] = args.as_slice() else {
        panic!("usage: redis_cost <redis url> <raw|queue> <jobs>");
    };
    let jobs: usize = jobs.parse().expect("jobs is a number");
    match mode.as_str() {
        "queue" => queue(url, jobs).await,
        "raw" => raw_loop(url, jobs).await,
        other => panic!("unknown mode {other}"),
    }
}

/// The queue's enqueue, claim and ack, one job at a time.
async fn queue(url: &str, jobs: usize) {
    let mut options = QueueOptions::new(url);
    options.stream_name = "cost".into();
    options.maxlen = 1_000_000;
    let queue = Queue::open(options).expect("queue opens");
    let pools = vec![PoolName::default()];
    queue.ensure_pool(&pools[0]).await.expect("pool");
    let mut claimer = queue.claimer("c").await.expect("claimer");
    dump("start");
    for i in 0..jobs {
        queue.enqueue(bench::job(i)).await.expect("enqueue");
    }
    dump("enqueue");
    let mut claimed = Vec::with_capacity(jobs);
    for _ in 0..jobs {
        let job = claimer
            .claim(&pools, Duration::from_millis(100))
            .await
            .expect("claim");
        claimed.push(job.expect("a job is queued"));
    }
    dump("claim");
    let success = Outcome::new(JobStatus::Success);
    for job in &claimed {
        assert!(queue.ack(job, &success).await.expect("ack"));
    }
    dump("ack");
}

/// Plain XADD, XREADGROUP and XACK, as `raibid bench queue` measures the raw ceiling.
async fn raw_loop(url: &str, jobs: usize) {
    let client = redis::Client::open(url).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let stream = "raw";
    let _: () = raw::create_group(stream)
        .query_async(&mut conn)
        .await
        .expect("group");
    dump("start");
    for i in 0..jobs {
        let _: String = raw::add(stream, i)
            .query_async(&mut conn)
            .await
            .expect("xadd");
    }
    dump("enqueue");
    let mut ids = Vec::with_capacity(jobs);
    for _ in 0..jobs {
        let reply: redis::streams::StreamReadReply = raw::read(stream, "c", 100)
            .query_async(&mut conn)
            .await
            .expect("xreadgroup");
        ids.push(reply.keys[0].ids[0].id.clone());
    }
    dump("claim");
    for id in &ids {
        let _: i64 = raw::ack(stream, id)
            .query_async(&mut conn)
            .await
            .expect("xack");
    }
    dump("ack");
}
