//! Reading and following job logs.

mod support;

use std::time::Duration;

use raibid_model::{Job, JobStatus, Outcome};
use raibid_queue::Claimed;
use reqwest::StatusCode;
use serde_json::json;
use support::sse::SseReader;
use support::{SHA, TestServer, json};

const WAIT: Duration = Duration::from_secs(10);

async fn running_job(server: &TestServer) -> Claimed {
    let response = server
        .post_json(
            "/api/v1/jobs",
            &json!({ "repo": "acme/app", "clone_url": "https://git.example/acme/app.git", "sha": SHA }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let job: Job = serde_json::from_value(json(response).await).unwrap();
    let claimed = server.claim_one("agent-1").await;
    assert_eq!(claimed.job.id, job.id);
    claimed
}

async fn read_plain(server: &TestServer, path: &str) -> (String, String, String) {
    let response = server.get(path).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let cursor = response.headers()["x-raibid-log-cursor"]
        .to_str()
        .unwrap()
        .to_owned();
    let finished = response.headers()["x-raibid-log-finished"]
        .to_str()
        .unwrap()
        .to_owned();
    (response.text().await.unwrap(), cursor, finished)
}

#[tokio::test]
async fn plain_reads_continue_from_the_cursor_until_finished() {
    let server = TestServer::start().await;
    let claimed = running_job(&server).await;
    let id = &claimed.job.id;
    server.queue.append_log(id, b"line 1\n").await.unwrap();
    server.queue.append_log(id, b"line 2\n").await.unwrap();

    let base = format!("/api/v1/jobs/{id}/logs");
    let (text, cursor, finished) = read_plain(&server, &base).await;
    assert_eq!(
        (text.as_str(), finished.as_str()),
        ("line 1\nline 2\n", "false")
    );

    server.queue.append_log(id, b"line 3\n").await.unwrap();
    let (text, cursor, finished) = read_plain(&server, &format!("{base}?cursor={cursor}")).await;
    assert_eq!((text.as_str(), finished.as_str()), ("line 3\n", "false"));

    server
        .queue
        .ack(&claimed, &Outcome::new(JobStatus::Success))
        .await
        .unwrap();
    let (text, cursor, finished) = read_plain(&server, &format!("{base}?cursor={cursor}")).await;
    assert_eq!((text.as_str(), finished.as_str()), ("", "true"));
    let (text, _, finished) = read_plain(&server, &format!("{base}?cursor={cursor}")).await;
    assert_eq!(
        (text.as_str(), finished.as_str()),
        ("", "true"),
        "past the end is still the end"
    );
    let (text, _, finished) = read_plain(&server, &base).await;
    assert_eq!(
        (text.as_str(), finished.as_str()),
        ("line 1\nline 2\nline 3\n", "true")
    );

    let bad = server.get(&format!("{base}?cursor=latest")).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(
        json(bad).await["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cursor")
    );
    let unknown = server
        .get("/api/v1/jobs/01JABCDEFGHJKMNPQRSTVWXYZ0/logs")
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn following_streams_chunks_as_they_come_then_the_end() {
    let server = TestServer::start().await;
    let claimed = running_job(&server).await;
    let id = claimed.job.id.clone();
    server.queue.append_log(&id, b"first\n").await.unwrap();

    let path = format!("/api/v1/jobs/{id}/logs?follow=true");
    let mut events = SseReader::new(server.get(&path).await);
    let first = events.next(WAIT).await.unwrap();
    assert_eq!(first.event, "log");
    assert_eq!(first.data, json!({ "text": "first\n" }));
    let first_id = first.id.clone().expect("log events carry their cursor");

    // Output written while the client follows arrives as it is written.
    server
        .queue
        .append_log(&id, b"second\nthird\n")
        .await
        .unwrap();
    let second = events.next(WAIT).await.unwrap();
    assert_eq!(second.data, json!({ "text": "second\nthird\n" }));
    server
        .queue
        .append_log(&id, "ünïcode ✓\n".as_bytes())
        .await
        .unwrap();
    assert_eq!(
        events.next(WAIT).await.unwrap().data,
        json!({ "text": "ünïcode ✓\n" })
    );

    // The agent finishes the job: claim was made above, ack ends the log.
    server
        .queue
        .ack(&claimed, &Outcome::new(JobStatus::Failure))
        .await
        .unwrap();
    let end = events.next(WAIT).await.unwrap();
    assert_eq!(end.event, "end");
    assert_eq!(end.data, json!({ "status": "failure" }));
    assert_eq!(events.next(WAIT).await, None, "the stream closes after end");

    // A reconnect with Last-Event-ID resumes after that event, and ends at once.
    let resumed = server
        .client
        .get(server.url(&path))
        .header("last-event-id", &first_id)
        .send()
        .await
        .unwrap();
    let mut events = SseReader::new(resumed);
    assert_eq!(
        events.next(WAIT).await.unwrap().data,
        json!({ "text": "second\nthird\n" })
    );
    assert_eq!(
        events.next(WAIT).await.unwrap().data,
        json!({ "text": "ünïcode ✓\n" })
    );
    assert_eq!(events.next(WAIT).await.unwrap().event, "end");
    assert_eq!(events.next(WAIT).await, None);

    // Following from the end of a finished log just ends.
    let last = server
        .client
        .get(server.url(&path))
        .header("last-event-id", second.id.unwrap())
        .send()
        .await
        .unwrap();
    let mut events = SseReader::new(last);
    assert_eq!(events.next(WAIT).await.unwrap().event, "log");
    assert_eq!(
        events.next(WAIT).await.unwrap().data,
        json!({ "status": "failure" })
    );
}

#[tokio::test]
async fn following_a_queued_job_waits_for_its_first_output() {
    let server = TestServer::start().await;
    let response = server
        .post_json(
            "/api/v1/jobs",
            &json!({ "repo": "acme/app", "clone_url": "https://git.example/acme/app.git", "sha": SHA }),
        )
        .await;
    let id = json(response).await["id"].as_str().unwrap().to_owned();
    let mut events = SseReader::new(
        server
            .get(&format!("/api/v1/jobs/{id}/logs?follow=1"))
            .await,
    );
    let cancel = server
        .post_json(&format!("/api/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(json(cancel).await["result"], "cancelled");
    let end = events.next(WAIT).await.unwrap();
    assert_eq!(
        (end.event.as_str(), &end.data),
        ("end", &json!({ "status": "cancelled" }))
    );
}
