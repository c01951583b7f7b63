//! A workflow's job that waits for others (`depends_on`) is queued or dropped by the server
//! when they end, through the events stream of a real redis-server, and cannot be approved by
//! hand.

mod support;

use std::time::Duration;

use raibid_model::{Event, Job, JobStatus, Needs, NewJob, Outcome};
use raibid_queue::Enqueued;
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
async fn family(server: &TestServer, on_failure: bool) -> (Job, Job, Job) {
    let parent = created(
        server
            .queue
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
    let claimed = server.claim_one("agent-parent").await;
    assert_eq!(claimed.job.id, parent.id);
    let build = created(
        server
            .queue
            .enqueue(workflow(&parent, "build"))
            .await
            .unwrap(),
    )
    .await;
    let mut deploy = workflow(&parent, "deploy");
    deploy.needs = Some(Needs {
        workflows: vec!["build".into()],
        jobs: vec![build.id.clone()],
        on_failure,
    });
    let deploy = created(server.queue.enqueue_blocked(deploy).await.unwrap()).await;
    server
        .queue
        .set_children(&parent.id, &[build.id.clone(), deploy.id.clone()])
        .await
        .unwrap();
    assert!(
        server
            .queue
            .ack(&claimed, &Outcome::new(JobStatus::Success))
            .await
            .unwrap()
    );
    (parent, build, deploy)
}

/// Claims the next job, which must be `id`, and acknowledges it with `status`, as its agent
/// would.
async fn finish(server: &TestServer, id: &str, status: JobStatus) {
    let claimed = server.claim_one("agent").await;
    assert_eq!(claimed.job.id, id);
    assert!(
        server
            .queue
            .ack(&claimed, &Outcome::new(status))
            .await
            .unwrap()
    );
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
    let (_, build, deploy) = family(&server, false).await;

    // Waiting for build, not for a person.
    let response = server
        .post_json(
            &format!("/api/v1/jobs/{}/approve", deploy.id),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body = json(response).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("waits for the workflows build, not for approval"),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.queue.get(&deploy.id).await.unwrap().unwrap().status,
        JobStatus::Blocked
    );

    finish(&server, &build.id, JobStatus::Success).await;
    status_becomes(&server, &deploy.id, JobStatus::Queued).await;
    assert_eq!(server.claim_one("agent-deploy").await.job.id, deploy.id);
}

#[tokio::test]
async fn the_server_drops_a_waiting_workflow_when_what_it_needs_failed() {
    let server = TestServer::start().await;
    let (_, build, deploy) = family(&server, false).await;
    finish(&server, &build.id, JobStatus::Failure).await;
    let dropped = status_becomes(&server, &deploy.id, JobStatus::Cancelled).await;
    assert_eq!(dropped.reason.as_deref(), Some("not run: build failed"));

    // `runs_on: [success, failure]`: queued all the same.
    let (_, build, notify) = family(&server, true).await;
    finish(&server, &build.id, JobStatus::Failure).await;
    status_becomes(&server, &notify.id, JobStatus::Queued).await;
}
