//! The queue against a real redis-server.

use std::collections::HashSet;
use std::time::Duration;

use raibid_model::{Event, JobStatus, NewJob, Outcome, PoolName, StepResult, StepStatus};
use raibid_queue::{
    CancelResult, Claimed, Claimer, Enqueued, Heartbeat, JobFilter, LogCursor, LogWriter,
    MemoryPrune, MemoryReading, Queue, QueueError, QueueOptions, ReleaseResult, SessionClient,
    line_breaks,
};
use raibid_testkit::{RedisOptions, RedisServer};

fn options(redis: &RedisServer) -> QueueOptions {
    let mut o = QueueOptions::new(redis.url());
    o.command_timeout = Duration::from_secs(2);
    o
}

fn queue(redis: &RedisServer) -> Queue {
    Queue::open(options(redis)).unwrap()
}

fn pool(name: &str) -> PoolName {
    PoolName::new(name).unwrap()
}

fn job(repo: &str) -> NewJob {
    NewJob::new(
        repo,
        format!("http://127.0.0.1/{repo}.git"),
        "refs/heads/main",
        "0123456789abcdef0123456789abcdef01234567",
        Event::Push,
    )
}

fn created(e: Enqueued) -> raibid_model::Job {
    match e {
        Enqueued::Created(j) => *j,
        other => panic!("expected a new job, got {other:?}"),
    }
}

const NO_WAIT: Duration = Duration::ZERO;

/// A plain connection, to look at or change what the queue stored.
async fn redis_conn(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Stream nodes of 5 entries instead of 100, so that trimming by whole nodes (`~`) comes close
/// to its limit in tests of a few dozen jobs.
fn redis_with_small_stream_nodes() -> RedisServer {
    let redis = RedisServer::start();
    let set = redis.command("CONFIG SET stream-node-max-entries 5");
    assert_eq!(set.unwrap(), "+OK");
    redis
}

/// Claims from the default pool without waiting; a job must be queued there.
async fn claim_queued(c: &mut Claimer) -> Claimed {
    c.claim(&[PoolName::default()], NO_WAIT)
        .await
        .unwrap()
        .expect("a job is queued")
}

#[tokio::test]
async fn enqueue_claim_ack_round_trip() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let j = created(q.enqueue(job("acme/app")).await.unwrap());
    assert_eq!(j.status, JobStatus::Queued);
    assert_eq!(
        q.get(&j.id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );

    let mut claimer = q.claimer("agent-1").await.unwrap();
    let claimed = claim_queued(&mut claimer).await;
    assert_eq!(claimed.job.id, j.id);
    assert_eq!(claimed.job.status, JobStatus::Running);
    assert_eq!(claimed.job.attempt, 1);
    assert_eq!(claimed.job.agent.as_deref(), Some("agent-1"));
    assert_eq!(claimed.job.spec, j.spec);
    assert_eq!(claimed.job.created_at, j.created_at);
    assert!(!claimed.job.cancel_requested);
    // What the claim hands the agent is what the record says.
    let stored = q.get(&j.id).await.unwrap().unwrap();
    assert_eq!(claimed.job, stored);

    let mut outcome = Outcome::new(JobStatus::Success);
    outcome.steps.push(StepResult {
        name: "build".into(),
        status: StepStatus::Success,
        exit_code: Some(0),
        duration_ms: Some(12),
        tail: String::new(),
    });
    let artifacts = raibid_model::JobArtifacts {
        reference: "r.example/acme/app/artifacts@sha256:ab".into(),
        size: 10,
        files: 2,
        expires_at: None,
        expired: false,
    };
    outcome.artifacts = Some(artifacts.clone());
    let tests = raibid_model::TestReport {
        tests: 3,
        failed: 1,
        skipped: 0,
        seconds: 0.5,
        files: 1,
        failures: vec![raibid_model::TestFailure {
            suite: "app".into(),
            name: "divides".into(),
            message: "by zero".into(),
        }],
    };
    outcome.tests = Some(tests.clone());
    assert!(q.ack(&claimed, &outcome).await.unwrap());
    let done = q.get(&j.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Success);
    assert_eq!(done.steps.len(), 1);
    assert_eq!(done.artifacts, Some(artifacts));
    assert_eq!(done.tests, Some(tests));
    assert!(done.finished_at.is_some());

    let stats = q.stats(&PoolName::default()).await.unwrap();
    assert_eq!((stats.lag, stats.pending), (0, 0));
    assert!(
        claimer
            .claim(&[PoolName::default()], NO_WAIT)
            .await
            .unwrap()
            .is_none()
    );
}

/// An ack whose answer was lost to a timeout, though it landed, is sent again; the agent must
/// hear that its verdict stands, not that its claim was taken over.
#[tokio::test]
async fn an_ack_sent_again_is_answered_as_the_first() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let j = created(q.enqueue(job("acme/app")).await.unwrap());
    let mut claimer = q.claimer("agent-1").await.unwrap();
    let claimed = claim_queued(&mut claimer).await;
    let mut passed = Outcome::new(JobStatus::Success);
    passed.reason = Some("1 step(s) passed".into());
    assert!(q.ack(&claimed, &passed).await.unwrap());
    let first = q.get(&j.id).await.unwrap().unwrap();

    assert!(
        q.ack(&claimed, &passed).await.unwrap(),
        "the same ack again"
    );
    assert_eq!(
        q.get(&j.id).await.unwrap().unwrap(),
        first,
        "changes nothing"
    );
    // Another verdict for the same delivery is not this ack again: it must not land.
    assert!(
        !q.ack(&claimed, &Outcome::new(JobStatus::Failure))
            .await
            .unwrap()
    );
    assert_eq!(q.get(&j.id).await.unwrap().unwrap(), first);
}

#[tokio::test]
async fn claim_blocks_until_a_job_arrives() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let mut claimer = q.claimer("waiter").await.unwrap();
    let q2 = q.clone();
    let producer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        created(q2.enqueue(job("acme/late")).await.unwrap()).id
    });
    let claimed = claimer
        .claim(&[PoolName::default()], Duration::from_secs(5))
        .await
        .unwrap()
        .expect("the job arrives while blocked");
    assert_eq!(claimed.job.id, producer.await.unwrap());
}

#[tokio::test]
async fn two_consumers_never_get_the_same_job() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let mut all = HashSet::new();
    for i in 0..60 {
        all.insert(created(q.enqueue(job(&format!("acme/r{i}"))).await.unwrap()).id);
    }
    let mut handles = Vec::new();
    for name in ["a", "b"] {
        let q = q.clone();
        handles.push(tokio::spawn(async move {
            let mut claimer = q.claimer(name).await.unwrap();
            let mut got = Vec::new();
            while let Some(c) = claimer
                .claim(&[PoolName::default()], NO_WAIT)
                .await
                .unwrap()
            {
                got.push(c.job.id.clone());
                q.ack(&c, &Outcome::new(JobStatus::Success)).await.unwrap();
            }
            got
        }));
    }
    let a = handles.remove(0).await.unwrap();
    let b = handles.remove(0).await.unwrap();
    let sa: HashSet<_> = a.iter().cloned().collect();
    let sb: HashSet<_> = b.iter().cloned().collect();
    assert!(sa.is_disjoint(&sb), "a job was delivered twice");
    assert_eq!(a.len() + b.len(), 60);
    assert_eq!(&sa | &sb, all);
}

#[tokio::test]
async fn a_job_whose_agent_died_is_requeued_and_counted_by_the_lag() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let j = created(q.enqueue(job("acme/app")).await.unwrap());
    {
        // The only consumer claims and dies without acking.
        let mut dying = q.claimer("dying").await.unwrap();
        claim_queued(&mut dying).await;
    }
    let stats = q.stats(&PoolName::default()).await.unwrap();
    assert_eq!(
        (stats.lag, stats.pending),
        (0, 1),
        "pending, not lag: no scaler sees it"
    );

    tokio::time::sleep(Duration::from_millis(150)).await;
    let report = q.requeue_stale(Duration::from_millis(100)).await.unwrap();
    assert_eq!(report.requeued, vec![j.id.clone()]);
    let stats = q.stats(&PoolName::default()).await.unwrap();
    assert_eq!(
        (stats.lag, stats.pending),
        (1, 0),
        "the lag counts it again"
    );
    assert_eq!(
        q.get(&j.id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );

    let mut other = q.claimer("other").await.unwrap();
    let again = claim_queued(&mut other).await;
    assert_eq!(again.job.id, j.id);
    assert_eq!(again.job.attempt, 2);
    assert!(
        q.ack(&again, &Outcome::new(JobStatus::Success))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn heartbeats_keep_a_claim_and_a_lost_claim_cannot_ack() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    created(q.enqueue(job("acme/app")).await.unwrap());
    let mut claimer = q.claimer("slow").await.unwrap();
    let claimed = claim_queued(&mut claimer).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(q.heartbeat(&claimed).await.unwrap(), Heartbeat::Continue);
        let report = q.requeue_stale(Duration::from_millis(100)).await.unwrap();
        assert!(
            report.requeued.is_empty(),
            "a heart-beating job must not be requeued"
        );
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let report = q.requeue_stale(Duration::from_millis(100)).await.unwrap();
    assert_eq!(report.requeued.len(), 1);
    assert_eq!(q.heartbeat(&claimed).await.unwrap(), Heartbeat::Lost);
    assert!(
        !q.ack(&claimed, &Outcome::new(JobStatus::Success))
            .await
            .unwrap()
    );
    assert_eq!(
        q.get(&claimed.job.id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    // The presumed-dead agent may still be running steps; what it records must not land on
    // the attempt that replaced it.
    let step = |name: &str| StepResult {
        name: name.into(),
        status: StepStatus::Running,
        exit_code: None,
        duration_ms: None,
        tail: String::new(),
    };
    let mut other = q.claimer("other").await.unwrap();
    let current = claim_queued(&mut other).await;
    assert_eq!(current.job.attempt, 2);
    assert!(
        q.record_progress(&current, &[step("current")])
            .await
            .unwrap()
    );
    assert!(!q.record_progress(&claimed, &[step("stale")]).await.unwrap());
    let steps = q.get(&claimed.job.id).await.unwrap().unwrap().steps;
    assert_eq!(steps, vec![step("current")]);
    // So with the title it read from the commit it checked out.
    assert!(!q.record_title(&claimed, "stale\n\nbody").await.unwrap());
    assert_eq!(
        q.get(&claimed.job.id).await.unwrap().unwrap().spec.title,
        None
    );
    assert!(
        !q.record_title(&current, "\n\n").await.unwrap(),
        "no first line"
    );
    assert!(
        q.record_title(&current, "Current\tone\n\nbody")
            .await
            .unwrap()
    );
    let job = q.get(&claimed.job.id).await.unwrap().unwrap();
    assert_eq!(job.spec.title.as_deref(), Some("Current one"));
    // And a retry keeps it.
    q.ack(&current, &Outcome::new(JobStatus::Failure))
        .await
        .unwrap();
    let retried = q.retry(&job.id).await.unwrap();
    assert_eq!(retried.spec.title.as_deref(), Some("Current one"));
}

/// Step results ride in the job record, rewritten after every step; many noisy steps must not
/// grow it past a bound (the log has `log_max_bytes`; the record had nothing).
#[tokio::test]
async fn step_results_in_the_record_stay_bounded() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    created(q.enqueue(job("acme/noisy")).await.unwrap());
    let mut claimer = q.claimer("agent").await.unwrap();
    let claimed = claim_queued(&mut claimer).await;
    let tail = ("\u{1}".repeat(1000) + "\n").repeat(20);
    let steps: Vec<StepResult> = (0..50)
        .map(|i| StepResult {
            name: format!("step-{i}"),
            status: StepStatus::Success,
            exit_code: Some(0),
            duration_ms: Some(1),
            tail: tail.clone(),
        })
        .collect();
    assert!(q.record_progress(&claimed, &steps).await.unwrap());
    let mut conn = redis_conn(&redis).await;
    let stored: String = redis::cmd("HGET")
        .arg(format!("raibid:ci-jobs:job:{}", claimed.job.id))
        .arg("steps")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(stored.len() <= 256 * 1024, "{}", stored.len());
    let mut outcome = Outcome::new(JobStatus::Failure);
    outcome.steps = steps.clone();
    assert!(q.ack(&claimed, &outcome).await.unwrap());
    let done = q.get(&claimed.job.id).await.unwrap().unwrap();
    assert_eq!(done.steps.len(), 50);
    assert_eq!(
        done.steps[49].tail, tail,
        "the last step's tail says why it failed"
    );
    assert!(done.steps[0].tail.is_empty());
}

#[tokio::test]
async fn dead_letter_after_max_attempts() {
    let redis = RedisServer::start();
    let mut o = options(&redis);
    o.max_attempts = 2;
    let q = Queue::open(o).unwrap();
    let j = created(q.enqueue(job("acme/poison")).await.unwrap());
    for round in 0..2 {
        let mut c = q.claimer(format!("victim-{round}")).await.unwrap();
        claim_queued(&mut c).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
        q.requeue_stale(Duration::from_millis(50)).await.unwrap();
    }
    let dead = q.get(&j.id).await.unwrap().unwrap();
    assert_eq!(dead.status, JobStatus::Dead);
    assert_eq!(dead.attempt, 2);
    let reason = dead.reason.unwrap();
    assert!(
        reason.contains("stopped heart-beating") && reason.contains("2 attempts"),
        "{reason}"
    );
    let stats = q.stats(&PoolName::default()).await.unwrap();
    assert_eq!(stats.dead_letters, 1);
    assert_eq!((stats.lag, stats.pending), (0, 0));
    let dlq = redis
        .command(&format!("XLEN {}", q.dead_letter_key(&PoolName::default())))
        .unwrap();
    assert_eq!(dlq, ":1");
}

#[tokio::test]
async fn release_requeues_then_dead_letters() {
    let redis = RedisServer::start();
    let mut o = options(&redis);
    o.max_attempts = 2;
    let q = Queue::open(o).unwrap();
    let j = created(q.enqueue(job("acme/app")).await.unwrap());
    let mut c = q.claimer("a").await.unwrap();
    let first = claim_queued(&mut c).await;
    assert_eq!(
        q.release(&first, "shutting down").await.unwrap(),
        ReleaseResult::Requeued
    );
    let second = claim_queued(&mut c).await;
    assert_eq!(second.job.attempt, 2);
    assert_eq!(
        q.release(&second, "checkout failed").await.unwrap(),
        ReleaseResult::DeadLettered
    );
    assert_eq!(q.get(&j.id).await.unwrap().unwrap().status, JobStatus::Dead);
}

#[tokio::test]
async fn cancel_queued_and_running_jobs() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let queued = created(q.enqueue(job("acme/a")).await.unwrap());
    assert_eq!(q.cancel(&queued.id).await.unwrap(), CancelResult::Cancelled);
    let mut c = q.claimer("a").await.unwrap();
    assert!(
        c.claim(&[PoolName::default()], NO_WAIT)
            .await
            .unwrap()
            .is_none(),
        "a cancelled job is never handed out"
    );
    assert_eq!(q.stats(&PoolName::default()).await.unwrap().pending, 0);

    created(q.enqueue(job("acme/b")).await.unwrap());
    let running = claim_queued(&mut c).await;
    assert_eq!(
        q.cancel(&running.job.id).await.unwrap(),
        CancelResult::Requested
    );
    assert_eq!(
        q.heartbeat(&running).await.unwrap(),
        Heartbeat::CancelRequested
    );
    assert!(
        q.ack(&running, &Outcome::new(JobStatus::Cancelled))
            .await
            .unwrap()
    );
    assert_eq!(
        q.cancel(&running.job.id).await.unwrap(),
        CancelResult::AlreadyFinished(JobStatus::Cancelled)
    );
    assert!(matches!(
        q.cancel("01ARZ3NDEKTSV4RRFFQ69G5FAV").await,
        Err(QueueError::NotFound(_))
    ));
}

#[tokio::test]
async fn redelivered_webhook_is_not_queued_twice() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let mut spec = job("acme/app");
    spec.delivery_id = Some("f1e2d3c4-0000-4000-8000-000000000001".into());
    let first = created(q.enqueue(spec.clone()).await.unwrap());
    match q.enqueue(spec).await.unwrap() {
        Enqueued::Duplicate { job_id } => assert_eq!(job_id, first.id),
        other => panic!("expected duplicate, got {other:?}"),
    }
    assert_eq!(q.stats(&PoolName::default()).await.unwrap().lag, 1);
}

#[tokio::test]
async fn stats_match_xinfo() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    for i in 0..5 {
        q.enqueue(job(&format!("acme/{i}"))).await.unwrap();
    }
    let mut c = q.claimer("worker").await.unwrap();
    claim_queued(&mut c).await;
    claim_queued(&mut c).await;
    let stats = q.stats(&PoolName::default()).await.unwrap();
    assert_eq!(stats.stream, "ci-jobs:default");
    assert_eq!(stats.length, 5);
    assert_eq!(stats.lag, 3);
    assert_eq!(stats.pending, 2);
    assert_eq!(stats.consumers.len(), 1);
    assert_eq!(stats.consumers[0].name, "worker");
    assert_eq!(stats.consumers[0].pending, 2);
    assert!(stats.oldest_queued_ms.is_some());

    // Compare with what Redis itself says, as KEDA would read it.
    let mut conn = redis_conn(&redis).await;
    let raw: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg("ci-jobs:default")
        .query_async(&mut conn)
        .await
        .unwrap();
    let text = format!("{raw:?}");
    assert!(text.contains("ci-workers"), "{text}");
    let group = match &raw {
        redis::Value::Array(groups) => match &groups[0] {
            redis::Value::Array(kv) => kv.clone(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    let field = |name: &str| {
        let i = group
            .iter()
            .position(|v| matches!(v, redis::Value::BulkString(b) if b == name.as_bytes()))
            .unwrap();
        match &group[i + 1] {
            redis::Value::Int(n) => *n as u64,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(field("lag"), stats.lag);
    assert_eq!(field("pending"), stats.pending);
}

#[tokio::test]
async fn pools_are_separate_streams() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let mut gpu_job = job("ml/model");
    gpu_job.pool = pool("gpu");
    let g = created(q.enqueue(gpu_job).await.unwrap());
    let a = created(q.enqueue(job("web/site")).await.unwrap());

    let mut arm = q.claimer("arm").await.unwrap();
    let got = claim_queued(&mut arm).await;
    assert_eq!(got.job.id, a.id);
    assert!(
        arm.claim(&[PoolName::default()], NO_WAIT)
            .await
            .unwrap()
            .is_none()
    );
    let mut gpu = q.claimer("gpu").await.unwrap();
    let got = gpu.claim(&[pool("gpu")], NO_WAIT).await.unwrap().unwrap();
    assert_eq!(got.job.id, g.id);
    let pools = q.pools().await.unwrap();
    assert_eq!(pools, vec![PoolName::default(), pool("gpu")]);
}

#[tokio::test]
async fn claiming_from_several_pools_takes_one_and_returns_the_rest() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let mut x = job("a/x");
    x.pool = pool("x");
    let mut y = job("a/y");
    y.pool = pool("y");
    q.enqueue(x).await.unwrap();
    q.enqueue(y).await.unwrap();
    let mut c = q.claimer("both").await.unwrap();
    // Let the read see both streams at once.
    let first = c
        .claim(&[pool("x"), pool("y")], Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    let second = c
        .claim(&[pool("x"), pool("y")], Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(first.job.id, second.job.id);
    assert_eq!(
        second.job.attempt, 1,
        "a returned, unstarted delivery does not count"
    );
}

#[tokio::test]
async fn trimming_bounds_the_stream_and_never_drops_unread_jobs() {
    let redis = redis_with_small_stream_nodes();
    let mut o = options(&redis);
    o.maxlen = 20;
    let q = Queue::open(o).unwrap();
    for i in 0..20 {
        q.enqueue(job(&format!("a/{i}"))).await.unwrap();
    }
    match q.enqueue(job("a/overflow")).await {
        Err(QueueError::Full { depth, limit, .. }) => assert_eq!((depth, limit), (20, 20)),
        other => panic!("a full queue must refuse, got {other:?}"),
    }
    let mut c = q.claimer("w").await.unwrap();
    for i in 0..200 {
        while let Some(job) = c.claim(&[PoolName::default()], NO_WAIT).await.unwrap() {
            q.ack(&job, &Outcome::new(JobStatus::Success))
                .await
                .unwrap();
        }
        q.enqueue(job(&format!("b/{i}"))).await.unwrap();
    }
    let stats = q.stats(&PoolName::default()).await.unwrap();
    assert!(stats.length <= 30, "stream kept {} entries", stats.length);
    assert_eq!(stats.lag, 1);
}

/// A long job's entry must outlive any number of newer jobs: in Redis 7 a heartbeat's XCLAIM of
/// a trimmed entry drops it from the pending list, and the job would then be "running" for ever
/// with nothing left for the reaper to find.
#[tokio::test]
async fn trimming_keeps_the_entry_of_a_long_running_job() {
    let redis = redis_with_small_stream_nodes();
    let mut o = options(&redis);
    o.maxlen = 10;
    let q = Queue::open(o).unwrap();
    q.enqueue(job("a/long")).await.unwrap();
    let long = claim_queued(&mut q.claimer("long").await.unwrap()).await;
    let mut c = q.claimer("w").await.unwrap();
    for i in 0..60 {
        q.enqueue(job(&format!("a/{i}"))).await.unwrap();
        let short = claim_queued(&mut c).await;
        assert!(
            q.ack(&short, &Outcome::new(JobStatus::Success))
                .await
                .unwrap()
        );
    }
    q.enqueue(job("a/last")).await.unwrap();
    for _ in 0..2 {
        assert_eq!(q.heartbeat(&long).await.unwrap(), Heartbeat::Continue);
    }
    let stats = q.stats(&PoolName::default()).await.unwrap();
    assert_eq!((stats.pending, stats.lag), (1, 1));
    assert!(
        q.ack(&long, &Outcome::new(JobStatus::Success))
            .await
            .unwrap()
    );
    // Once nothing older is owed, the stream is trimmed back to about `maxlen`.
    let last = claim_queued(&mut c).await;
    assert!(
        q.ack(&last, &Outcome::new(JobStatus::Success))
            .await
            .unwrap()
    );
    q.enqueue(job("a/after")).await.unwrap();
    let stats = q.stats(&PoolName::default()).await.unwrap();
    assert!(stats.length <= 10, "not trimmed: {}", stats.length);
}

/// The events stream keeps what the status reporter's group has not handled, however far
/// behind it is, and is trimmed once it has.
#[tokio::test]
async fn events_are_trimmed_only_once_their_group_has_read_them() {
    let redis = redis_with_small_stream_nodes();
    let mut o = options(&redis);
    o.events_maxlen = 10;
    let q = Queue::open(o).unwrap();
    // Without a group nothing is owed: trimmed to about the limit.
    for i in 0..40 {
        q.enqueue(job(&format!("a/{i}"))).await.unwrap();
    }
    let len = || async { redis.command("XLEN raibid:ci-jobs:events").unwrap() };
    let first = len().await;
    assert!(first.starts_with(':'), "{first}");
    assert!(first[1..].parse::<u64>().unwrap() <= 16, "{first}");
    let mut events = q.job_events("reporter", "r1").await.unwrap();
    for i in 0..40 {
        q.enqueue(job(&format!("b/{i}"))).await.unwrap();
    }
    let unread = len().await[1..].parse::<u64>().unwrap();
    assert!(
        unread >= 40,
        "events the reporter has not read were trimmed: {unread} left"
    );
    let mut read = 0;
    loop {
        let batch = events.next(100, Duration::from_millis(10)).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for e in &batch {
            events.ack(&e.id).await.unwrap();
        }
        read += batch.len();
    }
    assert_eq!(read, 40);
    q.enqueue(job("c/0")).await.unwrap();
    let after = len().await[1..].parse::<u64>().unwrap();
    assert!(after <= 10, "read events were kept: {after}");
}

/// A group nobody reads any more cannot pin the events stream for ever: past 20 times its
/// size the oldest events go regardless.
#[tokio::test]
async fn an_abandoned_group_pins_the_events_stream_only_up_to_a_hard_cap() {
    let redis = redis_with_small_stream_nodes();
    let mut o = options(&redis);
    o.events_maxlen = 5;
    let q = Queue::open(o).unwrap();
    let _abandoned = q.job_events("gone-reporter", "r1").await.unwrap();
    for i in 0..150 {
        q.enqueue(job(&format!("a/{i}"))).await.unwrap();
    }
    let len = redis.command("XLEN raibid:ci-jobs:events").unwrap();
    let len: u64 = len[1..].parse().unwrap();
    assert!((100..=105).contains(&len), "events kept: {len}");
}

#[tokio::test]
async fn aof_restart_between_enqueue_and_claim_loses_nothing() {
    let mut redis = RedisServer::start_with(RedisOptions {
        aof: true,
        ..Default::default()
    });
    let q = queue(&redis);
    let mut ids = HashSet::new();
    for i in 0..10 {
        ids.insert(created(q.enqueue(job(&format!("a/{i}"))).await.unwrap()).id);
    }
    redis.kill();
    redis.restart();
    let q = queue(&redis);
    let mut c = q.claimer("after-restart").await.unwrap();
    let mut got = HashSet::new();
    while let Some(j) = c.claim(&[PoolName::default()], NO_WAIT).await.unwrap() {
        got.insert(j.job.id.clone());
        q.ack(&j, &Outcome::new(JobStatus::Success)).await.unwrap();
    }
    assert_eq!(got, ids);
}

#[tokio::test]
async fn the_queue_survives_a_redis_restart_on_the_same_handle() {
    let mut redis = RedisServer::start_with(RedisOptions {
        aof: true,
        ..Default::default()
    });
    let q = queue(&redis);
    q.enqueue(job("a/before")).await.unwrap();
    redis.kill();
    let err = q.enqueue(job("a/during")).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    redis.restart();
    // The connection manager reconnects by itself.
    let mut ok = false;
    for _ in 0..50 {
        if q.enqueue(job("a/after")).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the queue did not reconnect");
    assert_eq!(q.stats(&PoolName::default()).await.unwrap().lag, 2);
}

#[tokio::test]
async fn redis_down_is_a_typed_error_not_a_hang() {
    let mut redis = RedisServer::start();
    let q = queue(&redis);
    redis.kill();
    let outcome = tokio::time::timeout(Duration::from_secs(10), q.enqueue(job("a/b"))).await;
    let err = outcome
        .expect("bounded by the command timeout")
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let err = tokio::time::timeout(Duration::from_secs(10), q.claimer("x"))
        .await
        .expect("bounded")
        .err()
        .expect("no connection");
    assert!(err.is_transient(), "{err:?}");
}

/// A Redis that answers but refuses writes is away for what must be written: past its
/// `maxmemory` (`noeviction`, as on Kubernetes and in `raibid up`) until the reaper deletes old
/// logs, or unable to save (`MISCONF`: a full disk) until the disk has room. Callers wait and
/// retry as through an outage (the server answers 503, an agent holds its log and its
/// verdict) instead of treating it as a bug: dropping log output, giving up a finished job's
/// ack so that the job runs again, or an agent exiting.
#[tokio::test]
async fn a_redis_refusing_writes_is_away_not_broken() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let running = created(q.enqueue(job("a/running")).await.unwrap()).id;
    let mut c = q.claimer("agent").await.unwrap();
    let claimed = claim_queued(&mut c).await;
    assert_eq!(claimed.job.id, running);

    for set in [
        "CONFIG SET maxmemory-policy noeviction",
        "CONFIG SET maxmemory 1",
    ] {
        assert_eq!(redis.command(set).unwrap(), "+OK");
    }
    let err = q.enqueue(job("a/full")).await.unwrap_err();
    assert!(err.is_transient(), "enqueue at maxmemory: {err:?}");
    let err = q.append_log(&running, b"a line\n").await.unwrap_err();
    assert!(err.is_transient(), "log at maxmemory: {err:?}");
    assert_eq!(redis.command("CONFIG SET maxmemory 0").unwrap(), "+OK");
    assert!(q.append_log(&running, b"a line\n").await.unwrap());

    redis.refuse_writes();
    let err = q.enqueue(job("a/no-disk")).await.unwrap_err();
    assert!(err.is_transient(), "enqueue refused: {err:?}");
    let err = q
        .ack(&claimed, &Outcome::new(JobStatus::Success))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "ack refused: {err:?}");
    assert_eq!(
        q.get(&running).await.unwrap().unwrap().status,
        JobStatus::Running
    );
    redis.accept_writes();
    assert!(
        q.ack(&claimed, &Outcome::new(JobStatus::Success))
            .await
            .unwrap()
    );
    assert_eq!(
        q.get(&running).await.unwrap().unwrap().status,
        JobStatus::Success
    );
    created(q.enqueue(job("a/after")).await.unwrap());
}

/// A script that runs past `busy-reply-threshold` (someone's, or a long prune) makes Redis
/// answer everyone else `BUSY` until it ends or is killed: an outage, not a bug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_busy_with_a_long_script_is_away_not_broken() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let threshold = redis.command("CONFIG SET busy-reply-threshold 100");
    assert_eq!(threshold.unwrap(), "+OK");
    let (busy, killed, ended) = std::thread::scope(|scope| {
        let looping = scope.spawn(|| redis.command("EVAL \"while true do end\" 0"));
        std::thread::sleep(Duration::from_millis(300));
        let busy = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(q.enqueue(job("a/busy")))
        });
        let killed = redis.command("SCRIPT KILL");
        (busy.map(|_| ()), killed, looping.join().unwrap())
    });
    let err = busy.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(killed.unwrap(), "+OK");
    let ended = ended.unwrap();
    assert!(ended.starts_with("-ERR Script killed"), "{ended}");
    created(q.enqueue(job("a/after")).await.unwrap());
}

#[tokio::test]
async fn paused_redis_times_out() {
    let redis = RedisServer::start();
    let mut o = options(&redis);
    o.command_timeout = Duration::from_millis(300);
    let q = Queue::open(o).unwrap();
    q.ping().await.unwrap();
    redis.pause();
    let result = tokio::time::timeout(Duration::from_secs(5), q.ping()).await;
    redis.resume();
    let err = result.expect("bounded").unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn logs_append_read_follow_and_truncate() {
    let redis = RedisServer::start();
    let mut o = options(&redis);
    o.log_max_bytes = 64;
    let q = Queue::open(o).unwrap();
    let j = created(q.enqueue(job("a/logs")).await.unwrap());
    let mut c = q.claimer("w").await.unwrap();
    let claimed = claim_queued(&mut c).await;

    assert!(q.append_log(&j.id, b"line one\n").await.unwrap());
    let batch = q.read_log(&j.id, &LogCursor::start(), 100).await.unwrap();
    assert_eq!(batch.chunks.len(), 1);
    assert_eq!(batch.chunks[0].data, b"line one\n");
    assert!(!batch.finished);

    let mut follower = q.log_follower(&j.id).await.unwrap();
    let after = batch.next.clone();
    let q2 = q.clone();
    let id = j.id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        q2.append_log(&id, b"line two\n").await.unwrap();
    });
    let next = follower.next(&after, Duration::from_secs(5)).await.unwrap();
    assert_eq!(next.chunks[0].data, b"line two\n");

    // Past the cap: stored up to it, then a marker, then nothing.
    assert!(!q.append_log(&j.id, &[b'x'; 100]).await.unwrap());
    assert!(!q.append_log(&j.id, b"dropped").await.unwrap());
    q.ack(&claimed, &Outcome::new(JobStatus::Success))
        .await
        .unwrap();
    let all = q.read_log(&j.id, &LogCursor::start(), 100).await.unwrap();
    let text: Vec<u8> = all.chunks.iter().flat_map(|c| c.data.clone()).collect();
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("log truncated"), "{text}");
    assert!(!text.contains("dropped"));
    assert!(all.finished, "ack marks the end of the log");
}

/// A writer's chunk tried again is stored once: the try before may have landed after it timed
/// out. Each writer (steps side by side each have one) is numbered on its own.
#[tokio::test]
async fn a_writer_s_chunk_tried_again_is_stored_once() {
    let redis = RedisServer::start();
    let q = Queue::open(options(&redis)).unwrap();
    let j = created(q.enqueue(job("a/logs")).await.unwrap());
    let (a, b) = (LogWriter::new(), LogWriter::new());
    assert!(q.append_log_as(&j.id, b"a0\n", &a, 0).await.unwrap());
    assert!(
        q.append_log_as(&j.id, b"a0\n", &a, 0).await.unwrap(),
        "again"
    );
    assert!(q.append_log_as(&j.id, b"b0\n", &b, 0).await.unwrap());
    assert!(q.append_log_as(&j.id, b"a1\n", &a, 1).await.unwrap());
    assert!(
        q.append_log_as(&j.id, b"a1\n", &a, 1).await.unwrap(),
        "again"
    );
    assert!(q.append_log(&j.id, b"plain\n").await.unwrap());
    assert!(q.append_log(&j.id, b"plain\n").await.unwrap());
    let all = q.read_log(&j.id, &LogCursor::start(), 100).await.unwrap();
    let text: Vec<u8> = all.chunks.iter().flat_map(|c| c.data.clone()).collect();
    assert_eq!(
        String::from_utf8_lossy(&text),
        "a0\nb0\na1\nplain\nplain\n",
        "unnumbered appends are each stored"
    );
    let mut conn = redis_conn(&redis).await;
    let counts: (u64, String) = redis::cmd("HMGET")
        .arg(format!("raibid:ci-jobs:job:{}", j.id))
        .arg("log_bytes")
        .arg("log_lines")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        counts,
        (21, "21:5".to_owned()),
        "the byte and line counts leave the repeats out"
    );
}

/// The end of a log read backwards: the newest chunks, oldest first, the exact bytes before
/// them (the truncation notice included), where a follower continues, and whether it ended.
#[tokio::test]
async fn the_end_of_a_log_is_read_from_the_end() {
    let redis = RedisServer::start();
    let mut o = options(&redis);
    o.log_max_bytes = 1_000;
    let q = Queue::open(o).unwrap();
    let j = created(q.enqueue(job("a/logs")).await.unwrap());
    let end = q.read_log_end(&j.id, 100, 3).await.unwrap();
    assert_eq!(end.chunks, Vec::new());
    assert_eq!((end.skipped, end.finished), (0, false));
    assert_eq!(
        end.cursor,
        LogCursor::start(),
        "no log yet: follow from its start"
    );

    let mut c = q.claimer("w").await.unwrap();
    let claimed = claim_queued(&mut c).await;
    // 40 chunks of 10 bytes.
    for i in 0..40 {
        assert!(
            q.append_log(&j.id, format!("chunk {i:02}\n\n").as_bytes())
                .await
                .unwrap()
        );
    }
    let all = q.read_log(&j.id, &LogCursor::start(), 100).await.unwrap();
    // At least 95 bytes, three entries first (30 bytes), then the seven that 65 bytes take
    // at 10 bytes an entry: ten chunks, no more.
    let end = q.read_log_end(&j.id, 95, 3).await.unwrap();
    assert_eq!(end.chunks, all.chunks[30..].to_vec());
    assert_eq!(end.skipped, 300);
    assert_eq!(end.lines_before, Some(60), "two line breaks a chunk");
    // One entry first: the rest in one more read, still no more than needed.
    let one = q.read_log_end(&j.id, 95, 1).await.unwrap();
    assert_eq!(one.chunks, all.chunks[30..].to_vec());
    assert_eq!(end.cursor, all.next);
    assert!(!end.finished);
    // More than there is: the whole log.
    let whole = q.read_log_end(&j.id, 10_000, 7).await.unwrap();
    assert_eq!(
        (whole.chunks, whole.skipped, whole.lines_before),
        (all.chunks.clone(), 0, Some(0))
    );

    // Past the cap: the notice the byte count leaves out is still counted; ended.
    assert!(!q.append_log(&j.id, &b"x\n".repeat(350)).await.unwrap());
    q.ack(&claimed, &Outcome::new(JobStatus::Success))
        .await
        .unwrap();
    let all = q.read_log(&j.id, &LogCursor::start(), 100).await.unwrap();
    let total: usize = all.chunks.iter().map(|c| c.data.len()).sum();
    let end = q.read_log_end(&j.id, 50, 2).await.unwrap();
    let shown: usize = end.chunks.iter().map(|c| c.data.len()).sum();
    assert_eq!(end.skipped as usize + shown, total);
    assert_eq!(end.chunks.last(), all.chunks.last(), "the notice");
    let before = &all.chunks[..all.chunks.len() - end.chunks.len()];
    assert_eq!(
        end.lines_before,
        Some(before.iter().map(|c| line_breaks(&c.data)).sum()),
        "counted up to the cut, the notice's own lines after it"
    );
    assert!(end.finished);
    assert_eq!(end.cursor, all.next, "after the end marker");
}

/// A log whose lines were not all counted as they were written (an agent from before the count
/// appended to it, as in a rolling upgrade) gives no line count rather than a wrong one.
#[tokio::test]
async fn a_log_appended_to_without_the_count_has_no_line_count() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let j = created(q.enqueue(job("a/logs")).await.unwrap());
    assert!(q.append_log(&j.id, b"one\ntwo\n").await.unwrap());
    let end = q.read_log_end(&j.id, 4, 1).await.unwrap();
    assert_eq!(end.lines_before, Some(0));
    // What the append script did before it counted lines.
    let mut conn = redis_conn(&redis).await;
    let _: () = redis::pipe()
        .cmd("XADD")
        .arg(format!("raibid:ci-jobs:log:{}", j.id))
        .arg("*")
        .arg("d")
        .arg("three\n")
        .cmd("HINCRBY")
        .arg(format!("raibid:ci-jobs:job:{}", j.id))
        .arg("log_bytes")
        .arg(6)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(q.append_log(&j.id, b"four\n").await.unwrap());
    let end = q.read_log_end(&j.id, 4, 1).await.unwrap();
    assert_eq!(end.skipped, 14);
    assert_eq!(end.lines_before, None, "three's line went uncounted");
}

#[tokio::test]
async fn list_is_newest_first_with_filters_and_cursor() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let mut ids = Vec::new();
    for i in 0..25 {
        let repo = if i % 2 == 0 { "acme/even" } else { "acme/odd" };
        ids.push(created(q.enqueue(job(repo)).await.unwrap()).id);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let page = q.list(&JobFilter::default(), None, 10).await.unwrap();
    assert_eq!(page.jobs.len(), 10);
    assert_eq!(page.jobs[0].id, ids[24], "newest first");
    let page2 = q
        .list(&JobFilter::default(), page.next_cursor.as_deref(), 10)
        .await
        .unwrap();
    assert_eq!(page2.jobs[0].id, ids[14]);
    let page3 = q
        .list(&JobFilter::default(), page2.next_cursor.as_deref(), 10)
        .await
        .unwrap();
    assert_eq!(page3.jobs.len(), 5);
    assert!(page3.next_cursor.is_none());

    let even = q
        .list(
            &JobFilter {
                repo: Some("acme/even".into()),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(even.jobs.len(), 13);
    assert!(even.jobs.iter().all(|j| j.spec.repo == "acme/even"));

    q.cancel(&ids[3]).await.unwrap();
    let cancelled = q
        .list(
            &JobFilter {
                status: Some(JobStatus::Cancelled),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(cancelled.jobs.len(), 1);
    assert_eq!(cancelled.jobs[0].id, ids[3]);
    assert!(
        q.list(&JobFilter::default(), Some("../x"), 10)
            .await
            .is_err()
    );
}

/// The branch filter takes a build's branch: pushes to it and pull requests into it, not
/// tags or other branches; the event filter takes the job's event; both go with the others.
#[tokio::test]
async fn list_filters_by_branch_and_event() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let sha = "a".repeat(40);
    let spec = |git_ref: &str, event| {
        NewJob::new(
            "acme/app",
            "https://git.example/acme/app.git",
            git_ref,
            &sha,
            event,
        )
    };
    let push_main = created(
        q.enqueue(spec("refs/heads/main", Event::Push))
            .await
            .unwrap(),
    )
    .id;
    let push_dev = created(
        q.enqueue(spec("refs/heads/dev", Event::Push))
            .await
            .unwrap(),
    )
    .id;
    let tag = created(q.enqueue(spec("refs/tags/v1", Event::Tag)).await.unwrap()).id;
    let mut pr = spec("refs/pull/7/head", Event::PullRequest);
    pr.pr_number = Some(7);
    pr.target_branch = Some("main".into());
    let pr_main = created(q.enqueue(pr).await.unwrap()).id;
    let manual_main = created(
        q.enqueue(spec("refs/heads/main", Event::Manual))
            .await
            .unwrap(),
    )
    .id;
    let ids = |filter: JobFilter| {
        let q = q.clone();
        async move {
            let page = q.list(&filter, None, 100).await.unwrap();
            page.jobs.into_iter().map(|j| j.id).collect::<Vec<_>>()
        }
    };
    let branch = |b: &str| JobFilter {
        branch: Some(b.into()),
        ..Default::default()
    };
    assert_eq!(
        ids(branch("main")).await,
        [manual_main.clone(), pr_main.clone(), push_main.clone()]
    );
    assert_eq!(ids(branch("dev")).await, vec![push_dev.clone()]);
    assert_eq!(
        ids(branch("v1")).await,
        Vec::<String>::new(),
        "a tag is no branch"
    );
    let event = |e| JobFilter {
        event: Some(e),
        ..Default::default()
    };
    assert_eq!(ids(event(Event::Tag)).await, vec![tag.clone()]);
    assert_eq!(ids(event(Event::PullRequest)).await, vec![pr_main.clone()]);
    assert_eq!(
        ids(JobFilter {
            event: Some(Event::Push),
            ..branch("main")
        })
        .await,
        vec![push_main.clone()]
    );
    assert_eq!(
        ids(JobFilter {
            repo: Some("acme/other".into()),
            ..branch("main")
        })
        .await,
        Vec::<String>::new()
    );
}

/// A caller who may see few jobs (a token limited to some repositories) is answered after
/// `LIST_SCAN_MAX` records at most, with a cursor to go on from, and going on finds the rest.
#[tokio::test]
async fn a_filtered_listing_reads_a_bounded_number_of_records_per_call() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let theirs = created(q.enqueue(job("acme/theirs")).await.unwrap()).id;
    // Concurrently: one round trip each, and this is only the setting of the scene.
    futures::future::try_join_all(
        (0..raibid_queue::LIST_SCAN_MAX + 10).map(|_| q.enqueue(job("acme/other"))),
    )
    .await
    .unwrap();
    let mine = |job: &raibid_model::Job| job.spec.repo == "acme/theirs";
    let first = q
        .list_where(&JobFilter::default(), None, 10, &mine)
        .await
        .unwrap();
    assert!(first.jobs.is_empty(), "{:?}", first.jobs);
    assert_eq!(first.scanned, raibid_queue::LIST_SCAN_MAX);
    let cursor = first.next_cursor.expect("more to read");
    let rest = q
        .list_where(&JobFilter::default(), Some(&cursor), 10, &mine)
        .await
        .unwrap();
    assert_eq!(
        rest.jobs.iter().map(|j| &j.id).collect::<Vec<_>>(),
        [&theirs]
    );
    assert_eq!(rest.next_cursor, None);
    assert_eq!(rest.scanned, 11, "the rest of the others and theirs");
    // Unfiltered, a page is full whatever the bound.
    let all = q.list(&JobFilter::default(), None, 1000).await.unwrap();
    assert_eq!((all.jobs.len(), all.scanned), (1000, 1000));
}

#[tokio::test]
async fn retry_creates_a_new_job() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let mut spec = job("a/b");
    spec.diff_base = Some("f".repeat(40));
    let j = created(q.enqueue(spec).await.unwrap());
    let mut c = q.claimer("agent-1").await.unwrap();
    let claimed = claim_queued(&mut c).await;
    q.ack(&claimed, &Outcome::new(JobStatus::Failure))
        .await
        .unwrap();
    let r = q.retry(&j.id).await.unwrap();
    assert_ne!(r.id, j.id);
    assert_eq!(r.spec.retry_of.as_deref(), Some(j.id.as_str()));
    assert_eq!(r.status, JobStatus::Queued);
    // The retry compares with the same commit for `when: path`.
    assert_eq!(r.spec.diff_base, j.spec.diff_base);
}

/// A copy of a job that can still run would build the same commit at once, and the last to
/// finish would set the status.
#[tokio::test]
async fn retry_refuses_a_job_that_is_not_finished() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let j = created(q.enqueue(job("a/b")).await.unwrap());
    let err = q.retry(&j.id).await.unwrap_err();
    assert!(
        matches!(&err, QueueError::NotFinal { id, status: JobStatus::Queued } if *id == j.id),
        "{err:?}"
    );
    let mut c = q.claimer("agent-1").await.unwrap();
    claim_queued(&mut c).await;
    let err = q.retry(&j.id).await.unwrap_err();
    assert!(
        matches!(
            err,
            QueueError::NotFinal {
                status: JobStatus::Running,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("running"), "{err}");
    assert_eq!(q.stats(&PoolName::default()).await.unwrap().length, 1);
}

#[tokio::test]
async fn invalid_jobs_are_refused_before_anything_is_written() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let mut bad = job("a/b");
    bad.sha = "main; rm -rf /".into();
    assert!(matches!(q.enqueue(bad).await, Err(QueueError::Invalid(_))));
    let mut bad = job("a b");
    bad.repo = "a b".into();
    assert!(matches!(q.enqueue(bad).await, Err(QueueError::Invalid(_))));
    let mut bad = job("a/b");
    bad.diff_base = Some("--output=/tmp/x".into());
    assert!(matches!(q.enqueue(bad).await, Err(QueueError::Invalid(_))));
    assert!(
        q.pools().await.unwrap().is_empty()
            || q.stats(&PoolName::default()).await.unwrap().length == 0
    );
}

#[tokio::test]
async fn prune_keeps_the_newest_finished_jobs() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(created(q.enqueue(job(&format!("a/{i}"))).await.unwrap()).id);
    }
    for id in &ids[..4] {
        q.cancel(id).await.unwrap();
    }
    let removed = q.prune(3).await.unwrap();
    assert_eq!(removed, 3);
    assert!(q.get(&ids[0]).await.unwrap().is_none());
    // An agent still printing for a pruned job brings back neither record nor log.
    assert!(!q.append_log(&ids[0], b"late\n").await.unwrap());
    assert_eq!(
        redis
            .command(&format!(
                "EXISTS raibid:ci-jobs:job:{0} raibid:ci-jobs:log:{0}",
                ids[0]
            ))
            .unwrap(),
        ":0"
    );
    assert!(q.get(&ids[3]).await.unwrap().is_some());
    assert!(
        q.get(&ids[4]).await.unwrap().is_some(),
        "queued jobs are never pruned"
    );
    // Nothing of a pruned job is left in any index.
    let mut conn = redis_conn(&redis).await;
    for key in [
        "raibid:ci-jobs:jobs".to_owned(),
        "raibid:ci-jobs:jobs:status:cancelled".to_owned(),
        "raibid:ci-jobs:jobs:repo:a/0".to_owned(),
        "raibid:ci-jobs:jobs:pool:default".to_owned(),
    ] {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(&key)
            .arg(&ids[0])
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(score, None, "{} still in {key}", ids[0]);
    }
}

/// A retried matrix variant takes the place of the run it repeats among the matrix job's
/// children, which the combined commit status is computed from.
#[tokio::test]
async fn a_retried_variant_replaces_its_predecessor_among_the_children() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let parent = created(q.enqueue(job("a/matrix")).await.unwrap());
    let mut variants = Vec::new();
    for _ in 0..2 {
        let mut spec = job("a/matrix");
        spec.matrix_parent = Some(parent.id.clone());
        variants.push(created(q.enqueue(spec).await.unwrap()).id);
    }
    q.set_children(&parent.id, &variants).await.unwrap();
    q.cancel(&variants[0]).await.unwrap();
    let retried = q.retry(&variants[0]).await.unwrap();
    assert_eq!(retried.spec.retry_of.as_deref(), Some(variants[0].as_str()));
    let children = q.get(&parent.id).await.unwrap().unwrap().children;
    assert_eq!(children, vec![retried.id.clone(), variants[1].clone()]);
    // A job outside any matrix is retried as before.
    q.cancel(&variants[1]).await.unwrap();
    let plain = created(q.enqueue(job("a/plain")).await.unwrap());
    q.cancel(&plain.id).await.unwrap();
    assert!(q.retry(&plain.id).await.is_ok());
}

/// The first jobs of builds (the jobs that queued others) have an index of their own, which
/// the status filter scans instead of every passed job: filled by `set_children`, filled once
/// from the records of a Redis from before it, emptied by pruning.
#[tokio::test]
async fn the_first_jobs_of_builds_are_listed_from_an_index_of_their_own() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let ids_of = |page: raibid_queue::JobPage| -> Vec<String> {
        page.jobs.into_iter().map(|j| j.id).collect()
    };
    let passed = JobFilter {
        status: Some(JobStatus::Success),
        ..JobFilter::default()
    };
    let everything = |_: &raibid_model::Job| true;
    // Read once while empty: from then on the index is taken as complete.
    let page = q
        .list_builds_where(&passed, None, 10, &everything)
        .await
        .unwrap();
    assert_eq!((page.jobs.len(), page.next_cursor), (0, None));
    let mut c = q.claimer("w").await.unwrap();
    let mut builds = Vec::new();
    for n in 0..3 {
        let parent = created(q.enqueue(job("a/matrix")).await.unwrap());
        let claimed = claim_queued(&mut c).await;
        assert_eq!(claimed.job.id, parent.id);
        let mut spec = job("a/matrix");
        spec.matrix_parent = Some(parent.id.clone());
        let variant = created(q.enqueue(spec).await.unwrap()).id;
        q.set_children(&parent.id, &[variant]).await.unwrap();
        let status = if n == 1 {
            JobStatus::Failure
        } else {
            JobStatus::Success
        };
        q.ack(&claimed, &Outcome::new(status)).await.unwrap();
        // Its variant, and a job that queued nothing, passed as well.
        let claimed = claim_queued(&mut c).await;
        q.ack(&claimed, &Outcome::new(JobStatus::Success))
            .await
            .unwrap();
        let plain = created(q.enqueue(job("a/plain")).await.unwrap());
        let claimed = claim_queued(&mut c).await;
        assert_eq!(claimed.job.id, plain.id);
        q.ack(&claimed, &Outcome::new(JobStatus::Success))
            .await
            .unwrap();
        builds.push(parent.id);
    }
    let newest_first = vec![builds[2].clone(), builds[0].clone()];
    let page = q
        .list_builds_where(&passed, None, 10, &everything)
        .await
        .unwrap();
    assert_eq!(page.next_cursor, None);
    assert_eq!(
        ids_of(page),
        newest_first,
        "the passed builds, nothing else"
    );
    let page = q
        .list_builds_where(&passed, None, 1, &everything)
        .await
        .unwrap();
    assert_eq!(page.next_cursor.as_deref(), Some(builds[2].as_str()));
    // A repository's: from its own index.
    let of_repo = |repo: &str| JobFilter {
        repo: Some(repo.into()),
        ..passed.clone()
    };
    let page = q
        .list_builds_where(&of_repo("a/matrix"), None, 10, &everything)
        .await
        .unwrap();
    assert_eq!(ids_of(page), newest_first);
    let page = q
        .list_builds_where(&of_repo("a/plain"), None, 10, &everything)
        .await
        .unwrap();
    assert_eq!(page.jobs, Vec::new());

    // A Redis from before the index: filled from the records, once.
    let mut conn = redis_conn(&redis).await;
    let _: () = redis::cmd("DEL")
        .arg("raibid:ci-jobs:jobs:builds")
        .arg("raibid:ci-jobs:jobs:builds:indexed")
        .query_async(&mut conn)
        .await
        .unwrap();
    let page = q
        .list_builds_where(&passed, None, 10, &everything)
        .await
        .unwrap();
    assert_eq!(ids_of(page), newest_first);
    assert_eq!(
        builds_index(&mut conn).await,
        builds,
        "every build, whatever its status"
    );

    // Pruned jobs leave it.
    assert!(q.prune(3).await.unwrap() > 0);
    assert_eq!(
        builds_index(&mut conn).await,
        vec![builds[2].clone()],
        "the newest three jobs kept"
    );
}

/// A build whose jobs an agent older than the index recorded (its own `HSET` of `children`,
/// no `ZADD`) is indexed when asked: the server asks for the build of every job that ends.
#[tokio::test]
async fn a_build_an_older_agent_recorded_is_indexed_when_asked() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let mut conn = redis_conn(&redis).await;
    let plain = created(q.enqueue(job("a/b")).await.unwrap()).id;
    let build = created(q.enqueue(job("a/b")).await.unwrap()).id;
    let variant = created(q.enqueue(job("a/b")).await.unwrap()).id;
    assert!(
        !q.index_build(&build).await.unwrap(),
        "no jobs recorded yet"
    );
    let _: () = redis::cmd("HSET")
        .arg(format!("raibid:ci-jobs:job:{build}"))
        .arg("children")
        .arg(format!("[\"{variant}\"]"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(builds_index(&mut conn).await.is_empty());
    assert!(q.index_build(&build).await.unwrap());
    assert!(q.index_build(&build).await.unwrap(), "again: no change");
    assert!(!q.index_build(&plain).await.unwrap());
    let gone = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    assert!(!q.index_build(gone).await.unwrap());
    assert!(!q.index_build("../not-an-id").await.unwrap());
    assert_eq!(builds_index(&mut conn).await, vec![build]);
}

/// The ids in the index of builds, oldest first.
async fn builds_index(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    redis::cmd("ZRANGE")
        .arg("raibid:ci-jobs:jobs:builds")
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .unwrap()
}

/// Redis as it runs on Kubernetes: a fixed `maxmemory` with `noeviction`. Finished jobs' logs
/// filled it long before `retain_jobs` was reached, and from then on every enqueue failed.
/// Pruning by memory deletes the logs of the oldest finished jobs (never of queued ones) to
/// stay below the mark, so enqueues keep working; every record stays, marked, for the
/// commit-status reporter and matrix jobs.
#[tokio::test]
async fn pruning_by_memory_keeps_a_full_redis_accepting_jobs() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let waiting = created(q.enqueue(job("a/waiting")).await.unwrap()).id;
    assert!(q.append_log(&waiting, b"still waiting\n").await.unwrap());
    assert_eq!(q.memory().await.unwrap(), MemoryReading::Unlimited);
    assert_eq!(redis.command("CONFIG SET maxmemory 1gb").unwrap(), "+OK");
    let MemoryReading::Limited(memory) = q.memory().await.unwrap() else {
        panic!("maxmemory is set");
    };
    let max = memory.used + 6 * 1024 * 1024;
    for set in [
        format!("CONFIG SET maxmemory {max}"),
        "CONFIG SET maxmemory-policy noeviction".to_owned(),
    ] {
        assert_eq!(redis.command(&set).unwrap(), "+OK");
    }
    let chunk = vec![b'x'; 10 * 1024];
    let mut finished = Vec::new();
    let mut removed = 0;
    // 30 MB of logs into 6 MB of room.
    for i in 0..300 {
        let id = created(
            q.enqueue(job(&format!("a/{i}")))
                .await
                .unwrap_or_else(|e| panic!("enqueue {i} failed: {e}")),
        )
        .id;
        for _ in 0..10 {
            assert!(q.append_log(&id, &chunk).await.unwrap());
        }
        q.cancel(&id).await.unwrap();
        finished.push(id);
        if i % 5 == 4 {
            let report = q.prune_for_memory(80).await.unwrap();
            assert!(!report.nothing_left, "{report:?}");
            let memory = report.memory.expect("maxmemory is set");
            assert!(memory.percent() <= 80, "{report:?}");
            removed += report.logs_removed;
        }
    }
    assert!(removed > 100, "only {removed} logs deleted");
    let oldest = q.get(&finished[0]).await.unwrap().expect("records stay");
    assert!(oldest.log_pruned);
    let log = q
        .read_log(&oldest.id, &LogCursor::start(), 10)
        .await
        .unwrap();
    assert!(log.chunks.is_empty());
    let newest = q.get(&finished[299]).await.unwrap().unwrap();
    assert!(!newest.log_pruned);
    let log = q
        .read_log(&newest.id, &LogCursor::start(), 10)
        .await
        .unwrap();
    assert_eq!(log.chunks.len(), 10);
    let log = q.read_log(&waiting, &LogCursor::start(), 10).await.unwrap();
    assert_eq!(log.chunks.len(), 1, "queued jobs keep their logs");
    assert_eq!(
        q.list(&JobFilter::default(), None, 1000)
            .await
            .unwrap()
            .jobs
            .len(),
        301,
        "no record is deleted"
    );
    // With no finished job's log left, it says so instead of spinning.
    assert_eq!(redis.command("CONFIG SET maxmemory 1024").unwrap(), "+OK");
    let report = q.prune_for_memory(80).await.unwrap();
    assert!(report.nothing_left, "{report:?}");
    assert_eq!(q.prune_for_memory(80).await.unwrap().logs_removed, 0);
    assert_eq!(
        q.read_log(&waiting, &LogCursor::start(), 10)
            .await
            .unwrap()
            .chunks
            .len(),
        1
    );
    // 0 turns it off.
    assert_eq!(q.prune_for_memory(0).await.unwrap(), MemoryPrune::default());
}

/// Pruning frees about what Redis is over by, not a fixed number of logs: logs of a megabyte
/// or more are ordinary, and a batch of them would empty a small Redis to free a few hundred
/// kilobytes.
#[tokio::test]
async fn pruning_by_memory_deletes_only_as_many_logs_as_it_must() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let chunk = vec![b'x'; 64 * 1024];
    let mut finished = Vec::new();
    for i in 0..10 {
        let id = created(q.enqueue(job(&format!("a/{i}"))).await.unwrap()).id;
        for _ in 0..8 {
            assert!(q.append_log(&id, &chunk).await.unwrap());
        }
        q.cancel(&id).await.unwrap();
        finished.push(id);
    }
    assert_eq!(redis.command("CONFIG SET maxmemory 1gb").unwrap(), "+OK");
    let MemoryReading::Limited(memory) = q.memory().await.unwrap() else {
        panic!("maxmemory is set");
    };
    // 300 KB over 80%: one log of 512 KB makes room.
    let max = (memory.used - 300 * 1024) * 100 / 80;
    assert_eq!(
        redis
            .command(&format!("CONFIG SET maxmemory {max}"))
            .unwrap(),
        "+OK"
    );
    let report = q.prune_for_memory(80).await.unwrap();
    assert_eq!(report.logs_removed, 1, "{report:?}");
    assert!(report.memory.unwrap().percent() <= 80, "{report:?}");
    let mut pruned = Vec::new();
    for id in &finished {
        pruned.push(q.get(id).await.unwrap().unwrap().log_pruned);
    }
    assert_eq!(pruned.iter().filter(|p| **p).count(), 1, "{pruned:?}");
    assert!(pruned[0], "the oldest goes first: {pruned:?}");
}

/// A long build finishes after pruning has scanned past its id (the scan goes oldest id
/// first): its log, often the longest, is still found once the scan reaches the newest job and
/// starts over.
#[tokio::test]
async fn pruning_by_memory_comes_back_for_jobs_that_finished_late() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let chunk = vec![b'x'; 64 * 1024];
    let long = created(q.enqueue(job("a/long")).await.unwrap()).id;
    let mut claimer = q.claimer("agent-1").await.unwrap();
    let running = claim_queued(&mut claimer).await;
    assert_eq!(running.job.id, long);
    let mut short = Vec::new();
    for i in 0..4 {
        let id = created(q.enqueue(job(&format!("a/{i}"))).await.unwrap()).id;
        for _ in 0..4 {
            assert!(q.append_log(&id, &chunk).await.unwrap());
        }
        q.cancel(&id).await.unwrap();
        short.push(id);
    }
    let set_max = |max: u64| {
        let answer = redis
            .command(&format!("CONFIG SET maxmemory {max}"))
            .unwrap();
        assert_eq!(answer, "+OK");
    };
    set_max(1 << 30);
    let used = |reading| match reading {
        MemoryReading::Limited(memory) => memory.used,
        other => panic!("{other:?}"),
    };
    // Far over: every short job's log goes, and the scan ends at the newest.
    set_max(used(q.memory().await.unwrap()) * 100 / 85);
    let report = q.prune_for_memory(50).await.unwrap();
    assert_eq!(report.logs_removed, 4, "{report:?}");

    // The long build ends with a big log; Redis is over again.
    for _ in 0..16 {
        assert!(q.append_log(&long, &chunk).await.unwrap());
    }
    assert!(
        q.ack(&running, &Outcome::new(JobStatus::Success))
            .await
            .unwrap()
    );
    set_max(1 << 30);
    set_max(used(q.memory().await.unwrap()) * 100 / 85);
    let report = q.prune_for_memory(80).await.unwrap();
    assert_eq!(report.logs_removed, 1, "{report:?}");
    assert!(!report.nothing_left, "{report:?}");
    assert!(q.get(&long).await.unwrap().unwrap().log_pruned);

    // A round that finds nothing more says so.
    set_max(1024);
    assert!(q.prune_for_memory(80).await.unwrap().nothing_left);
}

/// A Redis user without `INFO` (`-@dangerous`, as Redis's ACL documentation suggests) cannot
/// see how full Redis is: pruning by memory says so instead of silently doing nothing.
#[tokio::test]
async fn pruning_by_memory_says_when_redis_refuses_info() {
    let redis = RedisServer::start();
    assert_eq!(
        redis
            .command("ACL SETUSER ci on >secret ~* &* +@all -@dangerous")
            .unwrap(),
        "+OK"
    );
    let url = redis.url().replacen("redis://", "redis://ci:secret@", 1);
    let q = Queue::open(QueueOptions::new(url)).unwrap();
    q.ping().await.unwrap();
    assert!(matches!(
        q.memory().await.unwrap(),
        MemoryReading::Refused(why) if why.contains("NOPERM") || why.contains("permission")
    ));
    let report = q.prune_for_memory(80).await.unwrap();
    assert!(report.refused.is_some(), "{report:?}");
}

/// Old jobs that stay queued (a pool without agents) do not stop the pruning of finished
/// jobs that came after them.
#[tokio::test]
async fn prune_passes_over_old_queued_jobs() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let gpu = PoolName::new("gpu").unwrap();
    let mut waiting = Vec::new();
    for i in 0..250 {
        let mut spec = job(&format!("a/gpu{i}"));
        spec.pool = gpu.clone();
        waiting.push(created(q.enqueue(spec).await.unwrap()).id);
    }
    let mut finished = Vec::new();
    for i in 0..300 {
        let id = created(q.enqueue(job(&format!("a/{i}"))).await.unwrap()).id;
        q.cancel(&id).await.unwrap();
        finished.push(id);
    }
    assert_eq!(q.prune(400).await.unwrap(), 150);
    assert!(q.get(&finished[149]).await.unwrap().is_none());
    assert!(q.get(&finished[150]).await.unwrap().is_some());
    assert_eq!(q.prune(100).await.unwrap(), 150);
    for id in waiting {
        assert!(
            q.get(&id).await.unwrap().is_some(),
            "queued jobs are never pruned"
        );
    }
}

/// Records written one field per attribute (before the `spec` field) are read and pruned.
#[tokio::test]
async fn records_of_the_older_layout_are_read_and_pruned() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let mut conn = redis_conn(&redis).await;
    let id = "01JD0000000000000000000000";
    let _: () = redis::pipe()
        .hset_multiple(
            format!("raibid:ci-jobs:job:{id}"),
            &[
                ("id", id),
                ("repo", "old/layout"),
                ("clone_url", "http://127.0.0.1/old/layout.git"),
                ("git_ref", "refs/heads/main"),
                ("sha", "0123456789abcdef0123456789abcdef01234567"),
                ("event", "push"),
                ("pool", "default"),
                ("status", "success"),
                ("attempt", "1"),
                ("created_at", "1700000000000"),
            ],
        )
        .zadd("raibid:ci-jobs:jobs", id, 0)
        .zadd("raibid:ci-jobs:jobs:status:success", id, 0)
        .zadd("raibid:ci-jobs:jobs:repo:old/layout", id, 0)
        .zadd("raibid:ci-jobs:jobs:pool:default", id, 0)
        .query_async(&mut conn)
        .await
        .unwrap();
    let old = q.get(id).await.unwrap().expect("the old record is read");
    assert_eq!(old.spec.repo, "old/layout");
    assert_eq!(old.status, JobStatus::Success);
    created(q.enqueue(job("new/layout")).await.unwrap());

    assert_eq!(q.prune(1).await.unwrap(), 1);
    assert!(q.get(id).await.unwrap().is_none());
    let left: u64 = redis::cmd("ZCARD")
        .arg("raibid:ci-jobs:jobs:repo:old/layout")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0, "the old record's repo index entry is gone");
}

#[tokio::test]
async fn password_protected_redis() {
    let redis = RedisServer::start_with(RedisOptions {
        password: Some("pa55word".into()),
        ..Default::default()
    });
    let q = queue(&redis);
    q.ping().await.unwrap();
    let mut wrong = QueueOptions::new(format!("redis://:nope@127.0.0.1:{}/", redis.port()));
    wrong.command_timeout = Duration::from_secs(2);
    let err = Queue::open(wrong).unwrap().ping().await.unwrap_err();
    assert!(
        !err.to_string().contains("nope"),
        "the password leaked: {err}"
    );
}

#[tokio::test]
async fn every_status_change_is_an_event() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let mut events = q.job_events("reporter", "r1").await.unwrap();
    let j = created(q.enqueue(job("a/events")).await.unwrap());
    let mut c = q.claimer("w").await.unwrap();
    let claimed = claim_queued(&mut c).await;
    q.ack(&claimed, &Outcome::new(JobStatus::Failure))
        .await
        .unwrap();
    let cancelled = created(q.enqueue(job("a/events")).await.unwrap());
    q.cancel(&cancelled.id).await.unwrap();

    let mut seen = Vec::new();
    for _ in 0..3 {
        for e in events.next(10, Duration::from_millis(200)).await.unwrap() {
            seen.push((e.job_id.clone(), e.status));
            events.ack(&e.id).await.unwrap();
        }
    }
    assert_eq!(
        seen,
        vec![
            (j.id.clone(), JobStatus::Queued),
            (j.id.clone(), JobStatus::Running),
            (j.id.clone(), JobStatus::Failure),
            (cancelled.id.clone(), JobStatus::Queued),
            (cancelled.id.clone(), JobStatus::Cancelled),
        ]
    );
}

#[tokio::test]
async fn unacknowledged_events_are_redelivered_to_a_restarted_reporter() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let mut first = q.job_events("reporter", "r1").await.unwrap();
    let j = created(q.enqueue(job("a/events")).await.unwrap());
    let got = first.next(10, Duration::from_millis(200)).await.unwrap();
    assert_eq!(got.len(), 1);
    drop(first); // crashed before acking
    let mut again = q.job_events("reporter", "r1").await.unwrap();
    let got = again.next(10, Duration::from_millis(200)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].job_id, j.id);
}

/// A live reporter keeps the events it holds for a retry fresh; no other replica takes them.
#[tokio::test]
async fn events_a_reporter_touches_are_not_taken_over() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let mut live = q.job_events("reporter", "pod-a").await.unwrap();
    created(q.enqueue(job("a/events")).await.unwrap());
    let held = live.next(10, Duration::from_millis(200)).await.unwrap();
    assert_eq!(held.len(), 1);
    let other = q.job_events("reporter", "pod-b").await.unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        live.touch(&[held[0].id.as_str()]).await.unwrap();
        assert!(
            other
                .claim_stale(Duration::from_secs(1), 10)
                .await
                .unwrap()
                .is_empty(),
            "a held event was taken over"
        );
    }
    // The reporter rejoins under a new name after a Redis error and touches what it holds:
    // those events are not handed back as the new name's backlog; new events come.
    drop(live);
    let mut rejoined = q.job_events("reporter", "pod-a.2").await.unwrap();
    rejoined.touch(&[held[0].id.as_str()]).await.unwrap();
    created(q.enqueue(job("a/later")).await.unwrap());
    let next = rejoined.next(10, Duration::from_millis(500)).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_ne!(next[0].id, held[0].id, "a held event came back as backlog");
}

/// Replicas are renamed on every rollout: what a stopped one had read is taken over by another
/// once idle long enough, and its name is then removed from the group.
#[tokio::test]
async fn events_of_a_stopped_reporter_are_taken_over_and_its_name_forgotten() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let mut gone = q.job_events("reporter", "pod-a").await.unwrap();
    let j = created(q.enqueue(job("a/events")).await.unwrap());
    assert_eq!(
        gone.next(10, Duration::from_millis(200))
            .await
            .unwrap()
            .len(),
        1
    );
    drop(gone); // stopped before acking

    let heir = q.job_events("reporter", "pod-b").await.unwrap();
    assert!(
        heir.claim_stale(Duration::from_secs(60), 10)
            .await
            .unwrap()
            .is_empty(),
        "not idle long enough yet"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let taken = heir
        .claim_stale(Duration::from_millis(100), 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(
        (taken[0].job_id.as_str(), taken[0].status),
        (j.id.as_str(), JobStatus::Queued)
    );
    // pod-a has nothing pending any more, but has been idle only briefly.
    assert!(
        heir.forget_idle_consumers(Duration::from_secs(3600))
            .await
            .unwrap()
            .is_empty()
    );
    heir.ack(&taken[0].id).await.unwrap();
    assert_eq!(
        heir.forget_idle_consumers(Duration::from_millis(100))
            .await
            .unwrap(),
        vec!["pod-a".to_owned()]
    );
    let consumers = redis
        .command("XINFO CONSUMERS raibid:ci-jobs:events reporter")
        .unwrap();
    // The reply's first line is the array header: only pod-b is left.
    assert_eq!(consumers, "*1");
}

#[tokio::test]
async fn the_reaper_recreates_groups_redis_lost_so_the_lag_counts_again() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    q.enqueue(job("a/before")).await.unwrap();
    assert_eq!(redis.command("FLUSHALL").unwrap(), "+OK");
    // This handle still believes the group exists: the job lands in a stream without one.
    q.enqueue(job("a/after")).await.unwrap();
    // The reply's first line is the array header: "*<number of groups>".
    let groups = || redis.command("XINFO GROUPS ci-jobs:default").unwrap();
    assert_eq!(groups(), "*0");
    q.requeue_stale(Duration::from_secs(60)).await.unwrap();
    assert_eq!(groups(), "*1");
    assert_eq!(q.stats(&PoolName::default()).await.unwrap().lag, 1);
}

#[tokio::test]
async fn claim_recovers_when_redis_lost_its_groups() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    q.enqueue(job("a/before")).await.unwrap();
    assert_eq!(redis.command("FLUSHALL").unwrap(), "+OK");
    let j = created(q.enqueue(job("a/after")).await.unwrap());
    let mut c = q.claimer("w").await.unwrap();
    let got = claim_queued(&mut c).await;
    assert_eq!(got.job.id, j.id);
}

/// An idle agent spends its time in a blocking read; Redis 7 ends that read with `UNBLOCKED`
/// when the stream disappears under it (FLUSHALL, a restart without persistence).
#[tokio::test]
async fn a_blocked_claim_survives_its_stream_being_deleted() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let mut c = q.claimer("w").await.unwrap();
    // Creates the group, then blocks.
    let waiting = tokio::spawn(async move {
        let got = c
            .claim(&[PoolName::default()], Duration::from_secs(20))
            .await;
        (c, got)
    });
    // Until the read is parked in Redis.
    let blocked =
        "EVAL \"return tonumber(redis.call('INFO', 'clients'):match('blocked_clients:(%d+)'))\" 0";
    while redis.command(blocked).unwrap() != ":1" {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(redis.command("FLUSHALL").unwrap(), "+OK");
    let j = created(q.enqueue(job("a/after")).await.unwrap());
    let (_c, got) = waiting.await.unwrap();
    assert_eq!(got.unwrap().unwrap().job.id, j.id);
}

#[tokio::test]
async fn idle_consumers_are_retired_busy_ones_kept() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    q.enqueue(job("a/b")).await.unwrap();
    let mut busy = q.claimer("busy").await.unwrap();
    let _held = claim_queued(&mut busy).await;
    let mut idle = q.claimer("idle").await.unwrap();
    assert!(
        idle.claim(&[PoolName::default()], NO_WAIT)
            .await
            .unwrap()
            .is_none()
    );
    q.retire_consumer("idle", &[PoolName::default()])
        .await
        .unwrap();
    q.retire_consumer("busy", &[PoolName::default()])
        .await
        .unwrap();
    // A pool nobody has queued to has no stream and no group: nothing to do, no error.
    q.retire_consumer("idle", &[pool("never-used")])
        .await
        .unwrap();
    let names: Vec<String> = q
        .stats(&PoolName::default())
        .await
        .unwrap()
        .consumers
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, vec!["busy".to_owned()]);
}

#[tokio::test]
async fn tls_connections_work() {
    let redis = RedisServer::start_with(RedisOptions {
        tls: true,
        ..Default::default()
    });
    assert!(redis.url().starts_with("rediss://"));
    let q = queue(&redis);
    q.ping().await.unwrap();
    let j = created(q.enqueue(job("a/tls")).await.unwrap());
    let mut c = q.claimer("tls").await.unwrap();
    assert_eq!(claim_queued(&mut c).await.job.id, j.id);
}

/// Keys in Redis that match `pattern`.
async fn keys(redis: &RedisServer, pattern: &str) -> Vec<String> {
    let mut conn = redis_conn(redis).await;
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn jobs_that_print_nothing_leave_no_log_stream_and_their_followers_still_end() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let ran = created(q.enqueue(job("quiet/ran")).await.unwrap());
    let never_ran = created(q.enqueue(job("quiet/cancelled")).await.unwrap());
    let mut follower = q.log_follower(&ran.id).await.unwrap();
    let mut c = q.claimer("w").await.unwrap();
    let claimed = claim_queued(&mut c).await;
    assert_eq!(claimed.job.id, ran.id);

    let wait = Duration::from_millis(100);
    let running = follower.next(&LogCursor::start(), wait).await.unwrap();
    assert!(!running.finished, "a running job's log has not ended");

    assert!(
        q.ack(&claimed, &Outcome::new(JobStatus::Success))
            .await
            .unwrap()
    );
    assert_eq!(
        q.cancel(&never_ran.id).await.unwrap(),
        CancelResult::Cancelled
    );
    assert_eq!(
        keys(&redis, "raibid:ci-jobs:log:*").await,
        Vec::<String>::new(),
        "no stream is created only to hold an end marker"
    );
    let ended = follower.next(&LogCursor::start(), wait).await.unwrap();
    assert!(
        ended.finished,
        "the follower learns the end from the status"
    );
    assert!(ended.chunks.is_empty());
    let mut follower = q.log_follower(&never_ran.id).await.unwrap();
    assert!(
        follower
            .next(&LogCursor::start(), wait)
            .await
            .unwrap()
            .finished
    );
}

#[tokio::test]
async fn a_follower_gets_output_written_just_before_the_job_ended() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let j = created(q.enqueue(job("late/output")).await.unwrap());
    let mut c = q.claimer("w").await.unwrap();
    let claimed = claim_queued(&mut c).await;
    assert!(q.append_log(&j.id, b"first\n").await.unwrap());
    let mut follower = q.log_follower(&j.id).await.unwrap();
    let first = follower
        .next(&LogCursor::start(), Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(first.chunks.len(), 1);
    assert!(!first.finished);
    // The stream exists, so the ack writes the end marker after the last line.
    assert!(q.append_log(&j.id, b"last\n").await.unwrap());
    assert!(
        q.ack(&claimed, &Outcome::new(JobStatus::Failure))
            .await
            .unwrap()
    );
    let rest = follower
        .next(&first.next, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(rest.chunks.len(), 1);
    assert_eq!(rest.chunks[0].data, b"last\n");
    assert!(rest.finished);
}

#[tokio::test]
async fn a_queued_record_of_the_older_layout_is_claimed_whole() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    q.ensure_pool(&PoolName::default()).await.unwrap();
    let mut conn = redis_conn(&redis).await;
    let id = "01JD0000000000000000000001";
    let entry: String = redis::cmd("XADD")
        .arg("ci-jobs:default")
        .arg("*")
        .arg("job")
        .arg(id)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::pipe()
        .hset_multiple(
            format!("raibid:ci-jobs:job:{id}"),
            &[
                ("id", id),
                ("entry", &entry),
                ("repo", "old/layout"),
                ("clone_url", "http://127.0.0.1/old/layout.git"),
                ("git_ref", "refs/heads/main"),
                ("sha", "0123456789abcdef0123456789abcdef01234567"),
                ("event", "push"),
                ("pool", "default"),
                ("status", "queued"),
                ("attempt", "0"),
                ("created_at", "1700000000000"),
            ],
        )
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut c = q.claimer("w").await.unwrap();
    let claimed = claim_queued(&mut c).await;
    assert_eq!(claimed.job.id, id);
    assert_eq!(claimed.job.spec.repo, "old/layout");
    assert_eq!(claimed.job.status, JobStatus::Running);
    assert_eq!(claimed.job.attempt, 1);
    assert_eq!(claimed.job, q.get(id).await.unwrap().unwrap());
}

/// Starts session `key` of `token_hash` for `secs` seconds, from a browser that said nothing
/// of itself.
async fn start_session(q: &Queue, key: &str, token_hash: &str, secs: u64) {
    q.start_session(
        key,
        token_hash,
        Duration::from_secs(secs),
        &SessionClient::default(),
    )
    .await
    .unwrap();
}

/// A web session lasts until its time is up or it is ended.
#[tokio::test]
async fn sessions_last_until_they_expire_or_end() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    start_session(&q, "k1", "sha256:aa", 60).await;
    start_session(&q, "k2", "sha256:bb", 1).await;
    assert_eq!(q.session("k1").await.unwrap().as_deref(), Some("sha256:aa"));
    assert_eq!(q.session("k2").await.unwrap().as_deref(), Some("sha256:bb"));
    assert_eq!(q.session("k3").await.unwrap(), None);
    q.end_session("k1").await.unwrap();
    assert_eq!(q.session("k1").await.unwrap(), None);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while q.session("k2").await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "k2 never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A token's sessions are listed with the browser each signed in from, only while they live
/// and only its own; one of them can be ended by its token, not by another.
#[tokio::test]
async fn a_token_s_sessions_are_listed_and_ended_one_by_one() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let laptop = SessionClient {
        user_agent: "Firefox on Linux".into(),
        address: "192.0.2.7".into(),
    };
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    q.start_session("laptop", "sha256:aa", Duration::from_secs(60), &laptop)
        .await
        .unwrap();
    start_session(&q, "phone", "sha256:aa", 120).await;
    q.start_session("ended", "sha256:aa", Duration::from_secs(90), &laptop)
        .await
        .unwrap();
    q.start_session("other", "sha256:bb", Duration::from_secs(60), &laptop)
        .await
        .unwrap();
    q.end_session("ended").await.unwrap();
    assert_eq!(
        redis
            .command("EXISTS raibid:ci-jobs:session-info:ended")
            .unwrap(),
        ":0",
        "a session's details go with it"
    );

    let listed = q.sessions_of("sha256:aa").await.unwrap();
    let keys: Vec<&str> = listed.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["laptop", "phone"], "soonest to expire first");
    assert_eq!(listed[0].client, laptop);
    let started = listed[0].started.expect("when it started");
    assert!(
        started >= before && started <= chrono::Utc::now(),
        "{started}"
    );
    let ttl = (listed[0].expires - started).num_seconds();
    assert!((59..=61).contains(&ttl), "{ttl}");
    assert_eq!(listed[1].client, SessionClient::default());

    assert!(
        !q.end_session_of("sha256:bb", "laptop").await.unwrap(),
        "another token's"
    );
    assert_eq!(
        q.session("laptop").await.unwrap().as_deref(),
        Some("sha256:aa")
    );
    assert!(q.end_session_of("sha256:aa", "laptop").await.unwrap());
    assert!(
        !q.end_session_of("sha256:aa", "laptop").await.unwrap(),
        "ended already"
    );
    assert_eq!(q.session("laptop").await.unwrap(), None);
    let keys: Vec<String> = q
        .sessions_of("sha256:aa")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.key)
        .collect();
    assert_eq!(keys, ["phone"]);
    assert_eq!(
        redis
            .command("ZSCORE raibid:ci-jobs:sessions-of:sha256:aa laptop")
            .unwrap(),
        "$-1",
        "out of the index too"
    );
    // A session started before sessions kept details is listed without them.
    redis
        .command("DEL raibid:ci-jobs:session-info:phone")
        .unwrap();
    let listed = q.sessions_of("sha256:aa").await.unwrap();
    assert_eq!(listed[0].started, None);
    assert_eq!(q.sessions_of("sha256:cc").await.unwrap(), Vec::new());
}

/// Signing a token out everywhere ends each of its live sessions and no other token's; its
/// index of sessions goes with them, and expires with its longest session meanwhile.
#[tokio::test]
async fn a_token_is_signed_out_everywhere_and_other_tokens_stay() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    for key in ["laptop", "phone", "ended"] {
        start_session(&q, key, "sha256:aa", 60).await;
    }
    start_session(&q, "other", "sha256:bb", 60).await;
    q.end_session("ended").await.unwrap();
    let ttl = redis
        .command("PTTL raibid:ci-jobs:sessions-of:sha256:aa")
        .unwrap();
    let ttl: i64 = ttl.trim_start_matches(':').parse().unwrap();
    assert!(
        ttl > 50_000 && ttl <= 60_000,
        "the index expires with its sessions: {ttl}"
    );

    assert_eq!(q.end_sessions_of("sha256:aa").await.unwrap(), 2);
    for key in ["laptop", "phone", "ended"] {
        assert_eq!(q.session(key).await.unwrap(), None, "{key}");
    }
    assert_eq!(
        q.session("other").await.unwrap().as_deref(),
        Some("sha256:bb")
    );
    assert_eq!(
        redis
            .command("EXISTS raibid:ci-jobs:sessions-of:sha256:aa")
            .unwrap(),
        ":0"
    );
    assert_eq!(
        q.end_sessions_of("sha256:aa").await.unwrap(),
        0,
        "none left"
    );
}

/// The repositories with jobs, the most recently active first; one whose jobs were all pruned
/// is gone; a Redis holding jobs from before the set existed has it filled when first read.
#[tokio::test]
async fn repositories_are_listed_by_their_newest_job() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    assert_eq!(q.repositories().await.unwrap(), Vec::new());
    let old = created(q.enqueue(job("acme/old")).await.unwrap());
    let first = created(q.enqueue(job("acme/app")).await.unwrap());
    tokio::time::sleep(Duration::from_millis(5)).await;
    let lib = created(q.enqueue(job("acme/lib")).await.unwrap());
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = created(q.enqueue(job("acme/app")).await.unwrap());
    let names = |list: Vec<raibid_queue::RepoActivity>| {
        list.into_iter().map(|r| r.repo).collect::<Vec<_>>()
    };
    let list = q.repositories().await.unwrap();
    assert_eq!(names(list.clone()), ["acme/app", "acme/lib", "acme/old"]);
    assert_eq!(list[0].last_queued_at, again.created_at);
    assert_eq!(list[1].last_queued_at, lib.created_at);
    assert!(first.created_at < again.created_at);

    // Every job of acme/old pruned: it is no repository with jobs any more.
    q.cancel(&old.id).await.unwrap();
    assert_eq!(q.prune(3).await.unwrap(), 1);
    assert_eq!(
        names(q.repositories().await.unwrap()),
        ["acme/app", "acme/lib"]
    );

    // As a Redis written before the set existed: filled from the per-repository indexes.
    let mut conn = redis_conn(&redis).await;
    let prefix = "raibid:ci-jobs";
    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}:repos"))
        .arg(format!("{prefix}:repos:indexed"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let list = q.repositories().await.unwrap();
    assert_eq!(names(list.clone()), ["acme/app", "acme/lib"]);
    assert_eq!(list[0].last_queued_at, again.created_at);
    assert_eq!(list[1].last_queued_at, lib.created_at);
}

/// A finished job's log can be erased, its record saying who erased it; a running job's
/// cannot, nor a job that is not there.
#[tokio::test]
async fn a_finished_job_s_log_is_erased_and_the_record_says_by_whom() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let j = created(q.enqueue(job("a/leak")).await.unwrap());
    assert_eq!(
        q.erase_log(&j.id, "ops").await.unwrap(),
        raibid_queue::EraseLog::Unfinished(JobStatus::Queued)
    );
    let mut c = q.claimer("w").await.unwrap();
    let claimed = claim_queued(&mut c).await;
    assert!(q.append_log(&j.id, b"token=hunter2\n").await.unwrap());
    assert_eq!(
        q.erase_log(&j.id, "ops").await.unwrap(),
        raibid_queue::EraseLog::Unfinished(JobStatus::Running)
    );
    assert!(
        q.ack(&claimed, &Outcome::new(JobStatus::Success))
            .await
            .unwrap()
    );
    assert_eq!(
        q.erase_log(&j.id, "ops").await.unwrap(),
        raibid_queue::EraseLog::Erased
    );
    let batch = q.read_log(&j.id, &LogCursor::start(), 100).await.unwrap();
    assert!(batch.chunks.is_empty(), "{batch:?}");
    let job = q.get(&j.id).await.unwrap().unwrap();
    let erased = job.log_erased.expect("marked");
    assert_eq!(erased.by, "ops");
    assert!((chrono::Utc::now() - erased.at).num_seconds() < 60);
    assert_eq!(job.status, JobStatus::Success, "the result stays");
    assert_eq!(
        q.erase_log("01ARZ3NDEKTSV4RRFFQ69G5FAV", "ops")
            .await
            .unwrap(),
        raibid_queue::EraseLog::Missing
    );
}
