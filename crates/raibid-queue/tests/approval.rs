//! Jobs that wait for a person's approval (`blocked`), against a real redis-server.

use std::time::Duration;

use raibid_model::{Event, Job, JobStatus, NewJob, PoolName};
use raibid_queue::{CancelResult, Enqueued, Queue, QueueError, QueueOptions};
use raibid_testkit::RedisServer;

fn options(redis: &RedisServer) -> QueueOptions {
    let mut o = QueueOptions::new(redis.url());
    o.command_timeout = Duration::from_secs(2);
    o
}

fn fork_pr(commit: char) -> NewJob {
    let mut spec = NewJob::new(
        "acme/app",
        "http://127.0.0.1/stranger/app.git",
        "refs/pull/3/head",
        commit.to_string().repeat(40),
        Event::PullRequest,
    );
    spec.pr_number = Some(3);
    spec.from_fork = true;
    spec
}

async fn blocked(q: &Queue, spec: NewJob) -> Job {
    match q.enqueue_blocked(spec).await.unwrap() {
        Enqueued::Created(job) => *job,
        other => panic!("expected a new job, got {other:?}"),
    }
}

async fn status(q: &Queue, id: &str) -> JobStatus {
    q.get(id).await.unwrap().expect("job exists").status
}

#[tokio::test]
async fn a_blocked_job_runs_only_once_approved() {
    let redis = RedisServer::start();
    let q = Queue::open(options(&redis)).unwrap();
    let job = blocked(&q, fork_pr('a')).await;
    assert_eq!(job.status, JobStatus::Blocked);
    assert_eq!(status(&q, &job.id).await, JobStatus::Blocked);
    let stats = q.stats(&PoolName::default()).await.unwrap();
    assert_eq!((stats.lag, stats.length), (0, 0), "nothing to scale up for");
    let mut agent = q.claimer("agent-1").await.unwrap();
    assert!(
        agent
            .claim(&[PoolName::default()], Duration::ZERO)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(q.count(JobStatus::Blocked).await.unwrap(), 1);

    let approved = q.approve_by(&job.id, "release-bot").await.unwrap();
    assert_eq!(approved.status, JobStatus::Queued);
    assert_eq!(approved.approved_by.as_deref(), Some("release-bot"));
    let recorded = q.get(&job.id).await.unwrap().unwrap();
    assert_eq!(recorded.approved_by.as_deref(), Some("release-bot"));
    assert_eq!(q.stats(&PoolName::default()).await.unwrap().lag, 1);
    let claimed = agent
        .claim(&[PoolName::default()], Duration::ZERO)
        .await
        .unwrap()
        .expect("the approved job is handed out");
    assert_eq!(claimed.job.id, job.id);
    assert!(claimed.job.spec.from_fork);
    assert_eq!(q.count(JobStatus::Blocked).await.unwrap(), 0);

    match q.approve(&job.id).await {
        Err(QueueError::NotBlocked { status, .. }) => assert_eq!(status, JobStatus::Running),
        other => panic!("a running job is not approved again: {other:?}"),
    }
    assert!(matches!(
        q.approve("01ARZ3NDEKTSV4RRFFQ69G5FAV").await,
        Err(QueueError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_blocked_job_can_be_declined_and_is_superseded_by_a_newer_push() {
    let redis = RedisServer::start();
    let q = Queue::open(options(&redis)).unwrap();
    let declined = blocked(&q, fork_pr('a')).await;
    assert_eq!(
        q.cancel_because(&declined.id, "declined").await.unwrap(),
        CancelResult::Cancelled
    );
    let job = q.get(&declined.id).await.unwrap().unwrap();
    assert_eq!(
        (job.status, job.reason.as_deref()),
        (JobStatus::Cancelled, Some("declined"))
    );
    assert!(matches!(
        q.approve(&declined.id).await,
        Err(QueueError::NotBlocked {
            status: JobStatus::Cancelled,
            ..
        })
    ));

    let older = blocked(&q, fork_pr('b')).await;
    assert!(q.supersede(&older).await.unwrap().is_empty());
    let newer = blocked(&q, fork_pr('c')).await;
    let done = q.supersede(&newer).await.unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(
        (done[0].id.as_str(), &done[0].result),
        (older.id.as_str(), &CancelResult::Cancelled)
    );
    assert_eq!(status(&q, &older.id).await, JobStatus::Cancelled);
    assert_eq!(status(&q, &newer.id).await, JobStatus::Blocked);
    assert_eq!(q.count(JobStatus::Blocked).await.unwrap(), 1);
}

#[tokio::test]
async fn a_redelivered_webhook_finds_its_blocked_job_and_a_full_queue_refuses_the_approval() {
    let redis = RedisServer::start();
    let mut o = options(&redis);
    o.maxlen = 1;
    let q = Queue::open(o).unwrap();
    let mut spec = fork_pr('a');
    spec.delivery_id = Some("0f0e0d0c-0000-4000-8000-000000000001".into());
    let job = blocked(&q, spec.clone()).await;
    match q.enqueue_blocked(spec).await.unwrap() {
        Enqueued::Duplicate { job_id } => assert_eq!(job_id, job.id),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    // Another job fills the pool's stream (nothing consumes it).
    let mut filler = fork_pr('b');
    filler.from_fork = false;
    filler.git_ref = "refs/heads/main".into();
    filler.event = Event::Push;
    q.enqueue(filler).await.unwrap();
    assert!(matches!(
        q.approve(&job.id).await,
        Err(QueueError::Full { .. })
    ));
    assert_eq!(
        status(&q, &job.id).await,
        JobStatus::Blocked,
        "still waiting, for a later approval"
    );
}

/// Blocked jobs older than the cutoff are declined with the reason given; younger ones, and
/// one approved meanwhile, are left alone; a stray index member is dropped.
#[tokio::test]
async fn blocked_jobs_past_the_cutoff_expire() {
    let redis = RedisServer::start();
    let q = Queue::open(options(&redis)).unwrap();
    let old = blocked(&q, fork_pr('a')).await;
    let mut other = fork_pr('b');
    other.pr_number = Some(4);
    other.git_ref = "refs/pull/4/head".into();
    let approved = blocked(&q, other).await;
    q.approve(&approved.id).await.unwrap();
    // Queued by the queue itself (as a concurrency group or workflows do): nobody approved.
    let record = q.get(&approved.id).await.unwrap().unwrap();
    assert_eq!(record.approved_by, None);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut young = fork_pr('c');
    young.pr_number = Some(5);
    young.git_ref = "refs/pull/5/head".into();
    let young = blocked(&q, young).await;
    // An index member whose record is gone.
    redis
        .command("ZADD raibid:ci-jobs:jobs:status:blocked 0 01ARZ3NDEKTSV4RRFFQ69G5FAV")
        .unwrap();
    // The approved job as an expiry that read the index just before the approval sees it.
    redis
        .command(&format!(
            "ZADD raibid:ci-jobs:jobs:status:blocked 0 {}",
            approved.id
        ))
        .unwrap();

    let expired = q.expire_blocked(cutoff, "approval expired").await.unwrap();
    assert_eq!(expired, vec![old.id.clone()]);
    let declined = q.get(&old.id).await.unwrap().unwrap();
    assert_eq!(declined.status, JobStatus::Cancelled);
    assert_eq!(declined.reason.as_deref(), Some("approval expired"));
    assert_eq!(status(&q, &approved.id).await, JobStatus::Queued);
    assert_eq!(status(&q, &young.id).await, JobStatus::Blocked);
    redis
        .command(&format!(
            "ZREM raibid:ci-jobs:jobs:status:blocked {}",
            approved.id
        ))
        .unwrap();
    assert_eq!(
        q.count(JobStatus::Blocked).await.unwrap(),
        1,
        "the stray is gone"
    );

    // Again: nothing more to do.
    assert!(q.expire_blocked(cutoff, "x").await.unwrap().is_empty());
}

/// Jobs blocked waiting for other workflows or for their concurrency group are not waiting for
/// a person: expiry leaves them, however many, and still finds the approval it should decline
/// behind them.
#[tokio::test]
async fn expiry_declines_only_jobs_waiting_for_approval() {
    let redis = RedisServer::start();
    let q = Queue::open(options(&redis)).unwrap();
    // More workflow waiters than one page of the expiry's scan.
    let mut waiting = Vec::new();
    for i in 0..105 {
        let mut spec = NewJob::new(
            "acme/app",
            "http://127.0.0.1/acme/app.git",
            "refs/heads/main",
            "a".repeat(40),
            Event::Push,
        );
        spec.env
            .insert("RAIBID_WORKFLOW".into(), format!("deploy{i}"));
        spec.needs = Some(raibid_model::Needs {
            workflows: vec!["build".into()],
            jobs: vec!["01ARZ3NDEKTSV4RRFFQ69G5FAV".into()],
            on_failure: false,
            on_success: true,
        });
        waiting.push(blocked(&q, spec).await.id);
    }
    // A job parked for its concurrency group, held by another.
    for sha in ['b', 'c'] {
        q.enqueue(NewJob::new(
            "acme/app",
            "http://127.0.0.1/acme/app.git",
            "refs/heads/main",
            sha.to_string().repeat(40),
            Event::Push,
        ))
        .await
        .unwrap();
    }
    let mut claimer = q.claimer("agent").await.unwrap();
    let pools = [PoolName::default()];
    let holder = claimer
        .claim(&pools, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        q.acquire_group(&holder, "production").await.unwrap(),
        raibid_queue::GroupClaim::Held
    );
    let parked = claimer
        .claim(&pools, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        q.acquire_group(&parked, "production").await.unwrap(),
        raibid_queue::GroupClaim::Parked { .. }
    ));
    let fork = blocked(&q, fork_pr('d')).await;
    tokio::time::sleep(Duration::from_millis(5)).await;

    let expired = q
        .expire_blocked(chrono::Utc::now(), "approval expired")
        .await
        .unwrap();
    assert_eq!(expired, vec![fork.id.clone()]);
    assert_eq!(status(&q, &parked.job.id).await, JobStatus::Blocked);
    for id in &waiting {
        assert_eq!(status(&q, id).await, JobStatus::Blocked);
    }
}
