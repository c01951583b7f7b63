//! Pausing a pool against a real redis-server: its jobs stay queued and counted, no claimer
//! takes them, and a resume hands them out again, first attempt intact.

use std::time::Duration;

use raibid_model::{Event, JobStatus, NewJob, PoolName};
use raibid_queue::{Enqueued, Queue, QueueOptions};
use raibid_testkit::RedisServer;

fn queue(redis: &RedisServer) -> Queue {
    let mut o = QueueOptions::new(redis.url());
    o.command_timeout = Duration::from_secs(2);
    Queue::open(o).unwrap()
}

fn job_in(repo: &str, pool: &PoolName) -> NewJob {
    let mut job = NewJob::new(
        repo,
        format!("http://127.0.0.1/{repo}.git"),
        "refs/heads/main",
        "0123456789abcdef0123456789abcdef01234567",
        Event::Push,
    );
    job.pool = pool.clone();
    job
}

async fn enqueue(q: &Queue, job: NewJob) -> String {
    match q.enqueue(job).await.unwrap() {
        Enqueued::Created(j) => j.id,
        other => panic!("expected a new job, got {other:?}"),
    }
}

#[tokio::test]
async fn a_paused_pool_keeps_its_jobs_and_hands_out_none_until_resumed() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let gpu = PoolName::new("gpu").unwrap();
    let default = PoolName::default();
    let held = enqueue(&q, job_in("ml/model", &gpu)).await;
    let other = enqueue(&q, job_in("web/site", &default)).await;

    let pause = q.pause_pool(&gpu, "ops", "driver upgrade").await.unwrap();
    assert_eq!(
        (pause.by.as_str(), pause.reason.as_str()),
        ("ops", "driver upgrade")
    );
    // Paused again with another reason: the pause keeps its start.
    let again = q.pause_pool(&gpu, "ops2", "longer").await.unwrap();
    assert_eq!(again.since, pause.since);
    assert_eq!(again.reason, "longer");

    let mut c = q.claimer("agent").await.unwrap();
    let pools = [gpu.clone(), default.clone()];
    let got = c.claim(&pools, Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(
        got.job.id, other,
        "the paused pool, first in order, is passed over"
    );
    assert!(c.claim(&pools, Duration::ZERO).await.unwrap().is_none());
    // Nor does a blocking read take it.
    assert!(
        c.claim(&pools, Duration::from_millis(300))
            .await
            .unwrap()
            .is_none()
    );

    let stats = q.stats(&gpu).await.unwrap();
    assert_eq!(
        (stats.lag, stats.pending),
        (1, 0),
        "still queued and counted"
    );
    assert_eq!(stats.paused.as_ref().unwrap().by, "ops2");
    assert!(q.stats(&default).await.unwrap().paused.is_none());
    assert_eq!(q.paused_pools().await.unwrap().len(), 1);
    assert_eq!(
        q.get(&held).await.unwrap().unwrap().status,
        JobStatus::Queued
    );

    assert!(q.resume_pool(&gpu).await.unwrap());
    assert!(!q.resume_pool(&gpu).await.unwrap(), "already resumed");
    let got = c.claim(&pools, Duration::ZERO).await.unwrap().unwrap();
    assert_eq!((got.job.id.as_str(), got.job.attempt), (held.as_str(), 1));
    assert!(q.stats(&gpu).await.unwrap().paused.is_none());
}

#[tokio::test]
async fn a_claimer_waiting_on_a_paused_pool_takes_its_job_once_resumed() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let pool = PoolName::default();
    q.pause_pool(&pool, "ops", "").await.unwrap();
    let id = enqueue(&q, job_in("web/site", &pool)).await;
    let mut c = q.claimer("agent").await.unwrap();
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { c.claim(&[pool], Duration::from_secs(20)).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "nothing to take while paused");
    q.resume_pool(&pool).await.unwrap();
    let got = waiting.await.unwrap().unwrap().expect("taken once resumed");
    assert_eq!(got.job.id, id);
}

#[tokio::test]
async fn a_job_read_as_its_pool_is_paused_is_handed_back_unstarted() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let pool = PoolName::default();
    let mut c = q.claimer("agent").await.unwrap();
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { c.claim(&[pool], Duration::from_secs(3)).await })
    };
    // The claimer is in its blocking read of an unpaused pool when the pause and then a job
    // arrive: the read returns the job's entry, which must not start.
    tokio::time::sleep(Duration::from_millis(300)).await;
    q.pause_pool(&pool, "ops", "").await.unwrap();
    let id = enqueue(&q, job_in("web/site", &pool)).await;
    assert!(waiting.await.unwrap().unwrap().is_none());

    let job = q.get(&id).await.unwrap().unwrap();
    assert_eq!((job.status, job.attempt), (JobStatus::Queued, 0));
    let stats = q.stats(&pool).await.unwrap();
    assert_eq!(
        (stats.length, stats.lag, stats.pending),
        (2, 1, 0),
        "the entry read was acknowledged and the job queued again as a new one"
    );

    q.resume_pool(&pool).await.unwrap();
    let mut c = q.claimer("agent2").await.unwrap();
    let got = c.claim(&[pool], Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(
        (got.job.id, got.job.attempt),
        (id, 1),
        "the hand-back did not count"
    );
}

/// A pause record edited by hand into something unreadable still pauses its pool (the claim
/// scripts look only for the field) and is shown, not an error hiding every pool's numbers.
#[tokio::test]
async fn an_unreadable_pause_record_still_pauses_and_still_reads() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let pool = PoolName::default();
    enqueue(&q, job_in("web/site", &pool)).await;
    let set = redis.command("HSET raibid:ci-jobs:paused default not-json");
    assert_eq!(set.unwrap(), ":1");
    let stats = q.stats(&pool).await.unwrap();
    assert_eq!(stats.lag, 1);
    assert_eq!(stats.paused.unwrap().by, "?");
    assert_eq!(q.paused_pools().await.unwrap()[&pool].by, "?");
    let mut c = q.claimer("agent").await.unwrap();
    assert!(c.claim(&[pool], Duration::ZERO).await.unwrap().is_none());
}
