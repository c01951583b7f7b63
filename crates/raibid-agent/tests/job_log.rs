//! The job log as steps running side by side write it ([`JobLog::fork`]), stored in a real
//! redis-server and read back as `raibid job logs` reads it.

use std::time::Duration;

use raibid_agent::JobLog;
use raibid_model::{Event, NewJob};
use raibid_queue::{Enqueued, LogCursor, Queue, QueueOptions};
use raibid_testkit::{RedisOptions, RedisServer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

async fn job(redis: &RedisServer) -> (Queue, String) {
    job_on(&Queue::open(QueueOptions::new(redis.url())).unwrap()).await
}

/// [`job`] on a queue whose calls give up after `command_timeout`, for a Redis that a test
/// stops or kills.
async fn job_with_timeout(redis: &RedisServer, command_timeout: Duration) -> (Queue, String) {
    let mut options = QueueOptions::new(redis.url());
    options.command_timeout = command_timeout;
    job_on(&Queue::open(options).unwrap()).await
}

async fn job_on(queue: &Queue) -> (Queue, String) {
    let queue = queue.clone();
    let spec = NewJob::new(
        "acme/app",
        "http://127.0.0.1/acme/app.git",
        "refs/heads/main",
        "a".repeat(40),
        Event::Push,
    );
    let Enqueued::Created(job) = queue.enqueue(spec).await.unwrap() else {
        panic!("not created");
    };
    (queue, job.id)
}

async fn stored(queue: &Queue, id: &str) -> String {
    let batch = queue.read_log(id, &LogCursor::start(), 1000).await.unwrap();
    let bytes: Vec<u8> = batch.chunks.into_iter().flat_map(|c| c.data).collect();
    String::from_utf8(bytes).unwrap()
}

/// A job log that wrote `before` to a Redis (with an append-only file, so that a restart
/// keeps it) which has just been killed; `shutdown` is the log's.
async fn log_whose_redis_died(shutdown: CancellationToken) -> (RedisServer, Queue, String, JobLog) {
    let mut redis = RedisServer::start_with(RedisOptions {
        aof: true,
        ..Default::default()
    });
    let (queue, id) = job_with_timeout(&redis, Duration::from_millis(500)).await;
    let mut log = JobLog::new(queue.clone(), id.clone(), shutdown);
    log.line("before").await;
    redis.kill();
    (redis, queue, id, log)
}

/// Restarts the killed `redis` on its port after `after`, off the runtime.
fn restart_after(mut redis: RedisServer, after: Duration) -> tokio::task::JoinHandle<RedisServer> {
    tokio::task::spawn_blocking(move || {
        std::thread::sleep(after);
        redis.restart();
        redis
    })
}

#[tokio::test]
async fn forks_write_whole_prefixed_lines_and_mask_the_same_secrets() {
    let redis = RedisServer::start();
    let (queue, id) = job(&redis).await;
    let mut log = JobLog::new(queue.clone(), id.clone(), CancellationToken::new());
    log.mask("hunter22");
    log.line("before").await;
    let mut a = log.fork("[a] ");
    let mut b = log.fork("[b] ");
    a.write(b"one ").await;
    b.write(b"two\nthree").await;
    a.write(b"half hunt").await;
    a.write(b"er22\n").await;
    b.write(b" end").await;
    a.flush().await;
    b.flush().await;
    assert_eq!(
        stored(&queue, &id).await,
        "before\n[a] one half ***\n[b] two\n[b] three end\n",
        "a's line was whole first; b's unfinished line ends at its flush"
    );
    assert_eq!(a.tail(), "one half ***", "the tail has no prefix");
    assert_eq!(b.tail(), "two\nthree end");
}

#[tokio::test]
async fn an_unfinished_line_waits_a_second_at_most() {
    let redis = RedisServer::start();
    let (queue, id) = job(&redis).await;
    let log = JobLog::new(queue.clone(), id.clone(), CancellationToken::new());
    let mut step = log.fork("[s] ");
    let (tx, rx) = mpsc::channel(8);
    let pump = tokio::spawn(async move {
        step.pump(rx).await;
        step
    });
    tx.send(b"line\nprompt> ".to_vec()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stored(&queue, &id).await,
        "[s] line\n",
        "whole lines go at once"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(stored(&queue, &id).await, "[s] line\n[s] prompt> \n");
    tx.send(b"yes\n".to_vec()).await.unwrap();
    drop(tx);
    pump.await.unwrap();
    assert_eq!(
        stored(&queue, &id).await,
        "[s] line\n[s] prompt> \n[s] yes\n"
    );
}

/// Redis stalls (SIGSTOP) while the log writes a chunk: each try times out, and the tries
/// queued in the stalled Redis all run once it goes on. The chunk is stored once.
#[tokio::test]
async fn a_chunk_tried_again_through_a_stall_is_stored_once() {
    let redis = RedisServer::start();
    let (queue, id) = job_with_timeout(&redis, Duration::from_millis(200)).await;
    let mut log = JobLog::new(queue.clone(), id.clone(), CancellationToken::new());
    log.line("before the stall").await;
    redis.pause();
    let writing = tokio::spawn(async move {
        log.line("during the stall").await;
        log
    });
    // Two tries or more have timed out by now (200 ms each, 50 and 100 ms apart).
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.resume();
    let mut log = writing.await.unwrap();
    log.line("after the stall").await;
    assert_eq!(
        stored(&queue, &id).await,
        "before the stall\nduring the stall\nafter the stall\n"
    );
}

/// Redis dies under a job log: what the log is given meanwhile is held, and written in order
/// once Redis is back, by the next write or by the log's end, which waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_given_while_redis_is_away_is_written_when_it_is_back() {
    let (redis, queue, id, mut log) = log_whose_redis_died(CancellationToken::new()).await;
    log.line("while away 1").await;
    log.line("while away 2").await;
    let mut redis = restart_after(redis, Duration::ZERO).await.unwrap();
    log.line("back").await;
    assert_eq!(
        stored(&queue, &id).await,
        "before\nwhile away 1\nwhile away 2\nback\n"
    );

    // Away again at the log's end: its end waits for Redis.
    redis.kill();
    log.line("at the end").await;
    let restart = restart_after(redis, Duration::from_secs(1));
    log.finish().await;
    let _redis = restart.await.unwrap();
    assert_eq!(
        stored(&queue, &id).await,
        "before\nwhile away 1\nwhile away 2\nback\nat the end\n"
    );
}

/// Redis away at a job log's end for longer than the log ever waited before (10 s): the end
/// waits for it, as the job's ack does, and the log is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_s_end_waits_out_a_long_outage() {
    let (redis, queue, id, mut log) = log_whose_redis_died(CancellationToken::new()).await;
    log.write(b"the last line\n").await;
    let restart = restart_after(redis, Duration::from_secs(12));
    log.finish().await;
    let _redis = restart.await.unwrap();
    assert_eq!(stored(&queue, &id).await, "before\nthe last line\n");
}

/// The agent shutting down (its grace period over) ends a log's wait for Redis: what the log
/// held is given up rather than holding the agent's exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_ends_a_log_s_wait_for_redis() {
    let shutdown = CancellationToken::new();
    let (redis, queue, id, mut log) = log_whose_redis_died(shutdown.clone()).await;
    log.write(b"held\n").await;
    let finishing = tokio::spawn(async move { log.finish().await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !finishing.is_finished(),
        "the log's end did not wait for redis"
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), finishing)
        .await
        .expect("the log's end gave up once the agent shut down")
        .unwrap();
    let _redis = restart_after(redis, Duration::ZERO).await.unwrap();
    assert_eq!(stored(&queue, &id).await, "before\n");
}
