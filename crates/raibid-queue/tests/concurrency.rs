//! Concurrency groups (a pipeline's `concurrency:`), against a real redis-server: one holder at
//! a time; the others wait `blocked`, holding no stream entry, and are queued oldest first.

use std::time::Duration;

use raibid_model::{Event, Job, JobStatus, NewJob, Outcome, PoolName};
use raibid_queue::{Claimed, Enqueued, GroupClaim, Queue, QueueOptions};
use raibid_testkit::RedisServer;

fn queue(redis: &RedisServer) -> Queue {
    let mut o = QueueOptions::new(redis.url());
    o.command_timeout = Duration::from_secs(2);
    Queue::open(o).unwrap()
}

fn spec(repo: &str) -> NewJob {
    NewJob::new(
        repo,
        format!("http://127.0.0.1/{repo}.git"),
        "refs/heads/main",
        "a".repeat(40),
        Event::Push,
    )
}

async fn enqueue(q: &Queue, repo: &str) -> Job {
    match q.enqueue(spec(repo)).await.unwrap() {
        Enqueued::Created(job) => *job,
        other => panic!("expected a new job, got {other:?}"),
    }
}

/// Claims the next job, which must be `id`.
async fn claim(q: &Queue, id: &str) -> Claimed {
    let mut agent = q.claimer(format!("agent-{id}")).await.unwrap();
    let claimed = agent
        .claim(&[PoolName::default()], Duration::ZERO)
        .await
        .unwrap()
        .expect("a job to claim");
    assert_eq!(claimed.job.id, id);
    claimed
}

async fn job(q: &Queue, id: &str) -> Job {
    q.get(id).await.unwrap().unwrap()
}

#[tokio::test]
async fn one_job_holds_a_group_and_the_next_waits_without_an_agent() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let a = enqueue(&q, "acme/app").await;
    let b = enqueue(&q, "acme/app").await;
    let first = claim(&q, &a.id).await;
    assert_eq!(
        q.acquire_group(&first, "deploy").await.unwrap(),
        GroupClaim::Held
    );
    // Asking again (a requeued attempt of the holder) finds it held.
    assert_eq!(
        q.acquire_group(&first, "deploy").await.unwrap(),
        GroupClaim::Held
    );
    let second = claim(&q, &b.id).await;
    assert_eq!(
        q.acquire_group(&second, "deploy").await.unwrap(),
        GroupClaim::Parked {
            holder: Some(a.id.clone())
        }
    );
    let parked = job(&q, &b.id).await;
    assert_eq!(parked.status, JobStatus::Blocked);
    assert_eq!(parked.concurrency.as_deref(), Some("deploy"));
    assert_eq!(parked.attempt, 0, "waiting is not an attempt");
    assert_eq!(
        parked.reason.as_deref(),
        Some(format!("waiting for concurrency group deploy, held by job {}", a.id).as_str())
    );
    let stats = q.stats(&PoolName::default()).await.unwrap();
    assert_eq!(
        (stats.lag, stats.pending),
        (0, 1),
        "only the holder's entry is pending; nothing scales up for the waiting job"
    );
    // Its agent's ack of the parked claim changes nothing.
    assert!(
        !q.ack(&second, &Outcome::new(JobStatus::Success))
            .await
            .unwrap()
    );
    assert_eq!(job(&q, &b.id).await.status, JobStatus::Blocked);

    assert_eq!(q.release_group("acme/app", "deploy").await.unwrap(), None);
    assert!(
        q.ack(&first, &Outcome::new(JobStatus::Success))
            .await
            .unwrap()
    );
    assert_eq!(
        q.release_group("acme/app", "deploy").await.unwrap(),
        Some(b.id.clone())
    );
    assert_eq!(job(&q, &b.id).await.status, JobStatus::Queued);
    let again = claim(&q, &b.id).await;
    assert_eq!(again.job.attempt, 1);
    assert_eq!(
        q.acquire_group(&again, "deploy").await.unwrap(),
        GroupClaim::Held
    );
    assert!(
        q.ack(&again, &Outcome::new(JobStatus::Failure))
            .await
            .unwrap()
    );
    // Nobody waits: the group is forgotten.
    assert_eq!(q.release_group("acme/app", "deploy").await.unwrap(), None);
    assert!(q.sweep_groups().await.unwrap().is_empty());
}

#[tokio::test]
async fn waiting_jobs_go_oldest_first_and_cancelled_ones_are_passed_over() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let a = enqueue(&q, "acme/app").await;
    let waiting = [
        enqueue(&q, "acme/app").await,
        enqueue(&q, "acme/app").await,
        enqueue(&q, "acme/app").await,
    ];
    let holder = claim(&q, &a.id).await;
    q.acquire_group(&holder, "deploy").await.unwrap();
    for w in &waiting {
        let c = claim(&q, &w.id).await;
        assert!(matches!(
            q.acquire_group(&c, "deploy").await.unwrap(),
            GroupClaim::Parked { .. }
        ));
    }
    q.cancel_because(&waiting[1].id, "not wanted")
        .await
        .unwrap();
    assert!(
        q.ack(&holder, &Outcome::new(JobStatus::Success))
            .await
            .unwrap()
    );
    assert_eq!(
        q.release_group("acme/app", "deploy").await.unwrap(),
        Some(waiting[0].id.clone())
    );
    let next = claim(&q, &waiting[0].id).await;
    assert_eq!(
        q.acquire_group(&next, "deploy").await.unwrap(),
        GroupClaim::Held
    );
    assert!(q.ack(&next, &Outcome::new(JobStatus::Error)).await.unwrap());
    assert_eq!(
        q.release_group("acme/app", "deploy").await.unwrap(),
        Some(waiting[2].id.clone()),
        "the cancelled one is passed over"
    );
}

/// Groups belong to a repository (its name compared ignoring case, as forges resolve it); a
/// newcomer does not overtake jobs already waiting when the holder has just ended.
#[tokio::test]
async fn groups_are_per_repository_and_newcomers_queue_behind() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let a = enqueue(&q, "acme/app").await;
    let other = enqueue(&q, "acme/other").await;
    let b = enqueue(&q, "Acme/App").await;
    let c = enqueue(&q, "acme/app").await;
    let holder = claim(&q, &a.id).await;
    q.acquire_group(&holder, "deploy").await.unwrap();
    let elsewhere = claim(&q, &other.id).await;
    assert_eq!(
        q.acquire_group(&elsewhere, "deploy").await.unwrap(),
        GroupClaim::Held,
        "another repository's group"
    );
    let same = claim(&q, &b.id).await;
    assert!(matches!(
        q.acquire_group(&same, "deploy").await.unwrap(),
        GroupClaim::Parked { .. }
    ));
    // The holder ends, and before anyone hands the group on, c asks: b was first.
    assert!(
        q.ack(&holder, &Outcome::new(JobStatus::Success))
            .await
            .unwrap()
    );
    let late = claim(&q, &c.id).await;
    assert_eq!(
        q.acquire_group(&late, "deploy").await.unwrap(),
        GroupClaim::Parked { holder: None }
    );
    assert_eq!(
        q.release_group("acme/app", "deploy").await.unwrap(),
        Some(b.id.clone())
    );
}

/// The reaper's sweep hands on a group whose holder's end nobody acted on; a holder whose
/// agent died keeps the group through its requeue.
#[tokio::test]
async fn the_sweep_hands_on_groups_and_a_requeued_holder_keeps_its_group() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let a = enqueue(&q, "acme/app").await;
    let b = enqueue(&q, "acme/app").await;
    {
        let dying = claim(&q, &a.id).await;
        assert_eq!(
            q.acquire_group(&dying, "deploy").await.unwrap(),
            GroupClaim::Held
        );
    }
    let waiting = claim(&q, &b.id).await;
    assert!(matches!(
        q.acquire_group(&waiting, "deploy").await.unwrap(),
        GroupClaim::Parked { .. }
    ));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let report = q.requeue_stale(Duration::from_millis(100)).await.unwrap();
    assert_eq!(report.requeued, vec![a.id.clone()]);
    assert!(
        q.sweep_groups().await.unwrap().is_empty(),
        "a is queued again"
    );
    let again = claim(&q, &a.id).await;
    assert_eq!(again.job.attempt, 2);
    assert_eq!(
        q.acquire_group(&again, "deploy").await.unwrap(),
        GroupClaim::Held
    );
    assert!(
        q.ack(&again, &Outcome::new(JobStatus::Success))
            .await
            .unwrap()
    );
    assert_eq!(q.sweep_groups().await.unwrap(), [b.id.as_str()]);
    assert_eq!(job(&q, &b.id).await.status, JobStatus::Queued);
}

#[tokio::test]
async fn a_cancel_asked_for_first_is_seen_and_a_lost_claim_is_told() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let a = enqueue(&q, "acme/app").await;
    let b = enqueue(&q, "acme/app").await;
    let holder = claim(&q, &a.id).await;
    q.cancel_because(&a.id, "stop").await.unwrap();
    assert_eq!(
        q.acquire_group(&holder, "deploy").await.unwrap(),
        GroupClaim::CancelRequested
    );
    assert!(
        q.ack(&holder, &Outcome::new(JobStatus::Cancelled))
            .await
            .unwrap()
    );
    let next = claim(&q, &b.id).await;
    assert_eq!(
        q.acquire_group(&next, "deploy").await.unwrap(),
        GroupClaim::Held
    );
    // A claim that is no longer the job's.
    let stale = Claimed {
        entry: "0-1".into(),
        ..next.clone()
    };
    assert_eq!(
        q.acquire_group(&stale, "deploy").await.unwrap(),
        GroupClaim::Lost
    );
}
