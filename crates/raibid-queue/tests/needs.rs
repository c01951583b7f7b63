//! Jobs that wait for other jobs (a workflow's `depends_on`), against a real redis-server:
//! recorded blocked, queued or dropped by `release_waiting` once what they need has ended.

use std::time::Duration;

use raibid_model::{Event, Job, JobStatus, Needs, NeedsVerdict, NewJob, Outcome, PoolName};
use raibid_queue::{Enqueued, Queue, QueueOptions};
use raibid_testkit::RedisServer;

fn queue(redis: &RedisServer) -> Queue {
    let mut o = QueueOptions::new(redis.url());
    o.command_timeout = Duration::from_secs(2);
    Queue::open(o).unwrap()
}

fn spec(workflow: Option<&str>) -> NewJob {
    let mut spec = NewJob::new(
        "acme/app",
        "http://127.0.0.1/acme/app.git",
        "refs/heads/main",
        "a".repeat(40),
        Event::Push,
    );
    if let Some(workflow) = workflow {
        spec.env.insert("RAIBID_WORKFLOW".into(), workflow.into());
    }
    spec
}

fn created(enqueued: Enqueued) -> Job {
    match enqueued {
        Enqueued::Created(job) => *job,
        other => panic!("expected a new job, got {other:?}"),
    }
}

/// A parent, its workflow `build` (queued) and `deploy` (blocked, waiting for build).
async fn family(q: &Queue, on_failure: bool) -> (Job, Job, Job) {
    let parent = created(q.enqueue(spec(None)).await.unwrap());
    let mut build = spec(Some("build"));
    build.delivery_id = Some(format!("workflow:{}:build", parent.id));
    build.matrix_parent = Some(parent.id.clone());
    let build = created(q.enqueue(build).await.unwrap());
    let mut deploy = spec(Some("deploy"));
    deploy.delivery_id = Some(format!("workflow:{}:deploy", parent.id));
    deploy.matrix_parent = Some(parent.id.clone());
    deploy.needs = Some(Needs {
        workflows: vec!["build".into()],
        jobs: vec![build.id.clone()],
        on_failure,
    });
    let deploy = created(q.enqueue_blocked(deploy).await.unwrap());
    q.set_children(&parent.id, &[build.id.clone(), deploy.id.clone()])
        .await
        .unwrap();
    (parent, build, deploy)
}

/// Claims the next job (which must be `id`) and acknowledges it with `status`.
async fn finish(q: &Queue, id: &str, status: JobStatus) {
    let mut agent = q.claimer("agent").await.unwrap();
    let claimed = agent
        .claim(&[PoolName::default()], Duration::ZERO)
        .await
        .unwrap()
        .expect("a job to claim");
    assert_eq!(claimed.job.id, id);
    assert!(q.ack(&claimed, &Outcome::new(status)).await.unwrap());
}

async fn job(q: &Queue, id: &str) -> Job {
    q.get(id).await.unwrap().unwrap()
}

#[tokio::test]
async fn a_waiting_job_is_queued_once_what_it_needs_succeeded() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let (parent, build, deploy) = family(&q, false).await;
    assert_eq!(job(&q, &deploy.id).await.status, JobStatus::Blocked);
    assert_eq!(
        q.stats(&PoolName::default()).await.unwrap().lag,
        2,
        "parent and build"
    );
    // The parent itself is first in line.
    finish(&q, &parent.id, JobStatus::Success).await;
    assert!(
        q.release_waiting(&parent.id).await.unwrap().is_empty(),
        "build still queued"
    );
    assert_eq!(job(&q, &deploy.id).await.status, JobStatus::Blocked);

    finish(&q, &build.id, JobStatus::Success).await;
    let released = q.release_waiting(&parent.id).await.unwrap();
    assert_eq!(released.len(), 1);
    assert_eq!(
        (released[0].id.as_str(), &released[0].verdict),
        (deploy.id.as_str(), &NeedsVerdict::Run)
    );
    assert_eq!(job(&q, &deploy.id).await.status, JobStatus::Queued);
    // Looking again (the other party) changes nothing.
    assert!(q.release_waiting(&parent.id).await.unwrap().is_empty());
    finish(&q, &deploy.id, JobStatus::Success).await;
}

#[tokio::test]
async fn a_failed_need_drops_the_waiting_job_unless_it_runs_on_failure() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let (parent, build, deploy) = family(&q, false).await;
    finish(&q, &parent.id, JobStatus::Success).await;
    finish(&q, &build.id, JobStatus::Failure).await;
    q.release_waiting(&parent.id).await.unwrap();
    let dropped = job(&q, &deploy.id).await;
    assert_eq!(dropped.status, JobStatus::Cancelled);
    assert_eq!(dropped.reason.as_deref(), Some("not run: build failed"));
    assert_eq!(q.stats(&PoolName::default()).await.unwrap().lag, 0);

    let (parent, build, notify) = family(&q, true).await;
    finish(&q, &parent.id, JobStatus::Success).await;
    finish(&q, &build.id, JobStatus::Error).await;
    q.release_waiting(&parent.id).await.unwrap();
    assert_eq!(job(&q, &notify.id).await.status, JobStatus::Queued);
}

#[tokio::test]
async fn cancelling_the_parent_reaches_the_waiting_jobs() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let (parent, build, deploy) = family(&q, true).await;
    finish(&q, &parent.id, JobStatus::Success).await;
    q.cancel_variants(&parent.id, &[build.id.clone(), deploy.id.clone()])
        .await
        .unwrap();
    assert_eq!(job(&q, &build.id).await.status, JobStatus::Cancelled);
    assert_eq!(job(&q, &deploy.id).await.status, JobStatus::Cancelled);
    assert!(q.release_waiting(&parent.id).await.unwrap().is_empty());
    assert_eq!(job(&q, &deploy.id).await.status, JobStatus::Cancelled);
}

/// The reaper's safety net: a dependency that ended without anyone looking (its event never
/// read) still releases what waits for it, once the waiting job is older than the cutoff.
#[tokio::test]
async fn a_sweep_releases_what_nobody_looked_at() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    // Older jobs waiting for approval, more than a page of them, do not hide it.
    for i in 0..450 {
        let mut spec = spec(None);
        spec.sha = format!("{i:040x}");
        created(q.enqueue_blocked(spec).await.unwrap());
    }
    let (parent, build, deploy) = family(&q, false).await;
    finish(&q, &parent.id, JobStatus::Success).await;
    finish(&q, &build.id, JobStatus::Success).await;
    let before = chrono::Utc::now() - chrono::TimeDelta::minutes(1);
    assert!(
        q.sweep_waiting(before).await.unwrap().is_empty(),
        "too young"
    );
    assert_eq!(job(&q, &deploy.id).await.status, JobStatus::Blocked);
    let later = chrono::Utc::now() + chrono::TimeDelta::seconds(1);
    let released = q.sweep_waiting(later).await.unwrap();
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].id, deploy.id);
    assert_eq!(job(&q, &deploy.id).await.status, JobStatus::Queued);
}
