//! A workflow's job that waits for others (`depends_on`) is queued or dropped by the server
//! when they end, through the events stream of a real redis-server, and cannot be approved by
//! hand.

mod support;

use std::time::Duration;

use raibid_model::{Event, Job, JobStatus, Needs, NewJob, Outcome, PoolName};
use raibid_queue::{Claimed, Enqueued, Queue};
use reqwest::StatusCode;
use support::{TestServer, eventually, json};

fn workflow(parent: &Job, name: &str) -> NewJob {
    let mut spec = parent.spec.clone();
    spec.matrix_parent = Some(parent.id.clone());
    spec.delivery_id = Some(format!("workflow:{}:{name}", parent.id));
    spec.env.insert("RAIBID_WORKFLOW".into(), name.into());
    spec
}

async fn created(enqueued: Enqueued) -> Job {
    match enqueued {
        Enqueued::Created(job) => *job,
        other => panic!("not created: {other:?}"),
    }
}

/// A push's parent job (acknowledged), its `build` (queued) and `deploy` (waiting for it).
async fn family(queue: &Queue, on_failure: bool) -> (Job, Job, Job) {
    let parent = created(
        queue
            .enqueue(NewJob::new(
                "acme/app",
                "https://git.example/acme/app.git",
                "refs/heads/main",
                "a".repeat(40),
                Event::Push,
            ))
            .await
            .unwrap(),
    )
    .await;
    let claimed = claim(queue, &parent.id).await;
    let build = created(queue.enqueue(workflow(&parent, "build")).await.unwrap()).await;
    let mut deploy = workflow(&parent, "deploy");
    deploy.needs = Some(Needs {
        workflows: vec!["build".into()],
        jobs: vec![build.id.clone()],
        on_failure,
        on_success: true,
    });
    let deploy = created(queue.enqueue_blocked(deploy).await.unwrap()).await;
    queue
        .set_children(&parent.id, &[build.id.clone(), deploy.id.clone()])
        .await
        .unwrap();
    assert!(
        queue
            .ack(&claimed, &Outcome::new(JobStatus::Success))
            .await
            .unwrap()
    );
    (parent, build, deploy)
}

/// Claims the next job of the default pool, which must be `id`, as an agent would.
async fn claim(queue: &Queue, id: &str) -> Claimed {
    let claimed = queue
        .claimer("agent")
        .await
        .unwrap()
        .claim(&[PoolName::default()], Duration::ZERO)
        .await
        .unwrap()
        .expect("a job is queued");
    assert_eq!(claimed.job.id, id);
    claimed
}

/// Claims `id` and acknowledges it with `status`.
async fn finish(queue: &Queue, id: &str, status: JobStatus) {
    let claimed = claim(queue, id).await;
    assert!(queue.ack(&claimed, &Outcome::new(status)).await.unwrap());
}

async fn status_becomes(server: &TestServer, id: &str, wanted: JobStatus) -> Job {
    eventually(
        Duration::from_secs(10),
        &format!("{id} to be {wanted}"),
        || async {
            let job = server.queue.get(id).await.unwrap().unwrap();
            (job.status == wanted).then_some(job)
        },
    )
    .await
}

#[tokio::test]
async fn the_server_queues_a_waiting_workflow_when_what_it_needs_succeeded() {
    let server = TestServer::start().await;
    let (_, build, deploy) = family(&server.queue, false).await;

    // Waiting for build, not for a person.
    server
        .post_conflict(
            &format!("/api/v1/jobs/{}/approve", deploy.id),
            "waits for the workflows build, not for approval",
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.queue.get(&deploy.id).await.unwrap().unwrap().status,
        JobStatus::Blocked
    );

    finish(&server.queue, &build.id, JobStatus::Success).await;
    status_becomes(&server, &deploy.id, JobStatus::Queued).await;
    claim(&server.queue, &deploy.id).await;
}

#[tokio::test]
async fn the_server_skips_a_waiting_workflow_when_what_it_needs_failed() {
    let server = TestServer::start().await;
    let (_, build, deploy) = family(&server.queue, false).await;
    finish(&server.queue, &build.id, JobStatus::Failure).await;
    let dropped = status_becomes(&server, &deploy.id, JobStatus::Skipped).await;
    assert_eq!(dropped.reason.as_deref(), Some("not run: build failed"));

    // `runs_on: [success, failure]`: queued all the same.
    let (_, build, notify) = family(&server.queue, true).await;
    finish(&server.queue, &build.id, JobStatus::Failure).await;
    status_becomes(&server, &notify.id, JobStatus::Queued).await;
}

/// `POST /api/v1/jobs/{id}/retry-failed`: the failed workflow again, and what the server
/// skipped because of it waiting for the retry and queued when it passes.
#[tokio::test]
async fn retrying_the_failed_jobs_of_a_push_through_the_api() {
    let server = TestServer::start().await;
    let (parent, build, deploy) = family(&server.queue, false).await;
    finish(&server.queue, &build.id, JobStatus::Failure).await;
    status_becomes(&server, &deploy.id, JobStatus::Skipped).await;

    let response = server
        .post_json(
            &format!("/api/v1/jobs/{}/retry-failed", parent.id),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body = json(response).await;
    let retried = body["retried"].as_array().unwrap();
    assert_eq!(retried.len(), 1, "{body}");
    assert_eq!(retried[0]["retry_of"], build.id.as_str(), "{body}");
    let retry = retried[0]["id"].as_str().unwrap().to_owned();
    let children = server
        .queue
        .get(&parent.id)
        .await
        .unwrap()
        .unwrap()
        .children;
    assert_eq!(children[0], retry);
    let deploy2 = children[1].clone();
    assert_ne!(deploy2, deploy.id);
    assert_eq!(
        server.queue.get(&deploy2).await.unwrap().unwrap().status,
        JobStatus::Blocked
    );
    finish(&server.queue, &retry, JobStatus::Success).await;
    status_becomes(&server, &deploy2, JobStatus::Queued).await;

    // Nothing failed any more; a job that queued none.
    for (id, says) in [(&parent.id, "none of the jobs"), (&retry, "queued no jobs")] {
        server
            .post_conflict(&format!("/api/v1/jobs/{id}/retry-failed"), says)
            .await;
    }
}

/// A clock some minutes ahead, as if the server had run that long.
struct Ahead(chrono::TimeDelta);

impl raibid_server::Clock for Ahead {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + self.0
    }
}

/// The reaper's sweep: a dependency that ended while no server read the events (its group
/// starts after them here) still releases what waits for it, once that is a minute old.
#[tokio::test]
async fn the_reaper_releases_a_workflow_whose_wait_ended_unseen() {
    let redis = raibid_testkit::RedisServer::start();
    let queue = support::queue_for(&redis);
    let (_, build, deploy) = family(&queue, false).await;
    finish(&queue, &build.id, JobStatus::Success).await;
    let clock = std::sync::Arc::new(Ahead(chrono::TimeDelta::minutes(2)));
    let server = TestServer::start_with_clock(redis, support::config(), clock).await;
    status_becomes(&server, &deploy.id, JobStatus::Queued).await;
}
