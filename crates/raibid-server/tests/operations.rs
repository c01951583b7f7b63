//! Health, readiness, metrics, the OpenAPI document, and graceful shutdown.

mod support;

use std::time::Duration;

use raibid_model::{JobStatus, Outcome};
use reqwest::StatusCode;
use serde_json::json;
use support::sse::SseReader;
use support::{SHA, TestServer, eventually, json};

#[tokio::test]
async fn health_and_readiness() {
    let mut server = TestServer::start().await;
    assert_eq!(
        json(server.get("/healthz").await).await,
        json!({ "status": "ok" })
    );
    assert_eq!(
        json(server.get("/readyz").await).await,
        json!({ "status": "ready" })
    );
    server.redis.kill();
    assert_eq!(
        server.get("/readyz").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(server.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let server = TestServer::start().await;
    let missing = server.get("/api/v2/jobs").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(json(missing).await["error"]["code"], "route_not_found");
    let wrong_method = server
        .client
        .delete(server.url("/api/v1/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        json(wrong_method).await["error"]["code"],
        "method_not_allowed"
    );
}

#[tokio::test]
async fn the_openapi_document_is_served() {
    let server = TestServer::start().await;
    let doc = json(server.get("/api/v1/openapi.json").await).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(
        doc["paths"]["/api/v1/jobs/{id}/logs"]["get"]["description"]
            .as_str()
            .unwrap()
            .contains("event: end")
    );
    assert!(doc["components"]["schemas"]["Job"].is_object());
    // Every call that needs a token says what a token not for it gets (scopes, repositories).
    let token_only: Vec<(&String, &serde_json::Value)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| item.as_object().unwrap().values().map(move |op| (path, op)))
        .filter(|(_, op)| op["security"] == json!([{ "bearer": [] }]))
        .collect();
    assert_eq!(token_only.len(), 16, "{token_only:?}");
    for (path, op) in token_only {
        let forbidden = op["responses"]["403"]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(forbidden.contains("code forbidden"), "{path}: {op}");
    }
}

#[tokio::test]
async fn metrics_cover_webhooks_jobs_queues_and_reports() {
    let server = TestServer::start().await;
    assert_eq!(
        server.deliver("gitea/push").await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        server.deliver("gitea/create-tag").await.status(),
        StatusCode::ACCEPTED
    );
    let (body, headers) = support::fixture("github/push");
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    assert_eq!(
        server
            .post_webhook("github", headers, tampered)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let submitted = server
        .post_json(
            "/api/v1/jobs",
            &json!({ "repo": "acme/app", "clone_url": "https://git.example/acme/app.git", "sha": SHA }),
        )
        .await;
    assert_eq!(submitted.status(), StatusCode::CREATED);

    // One job runs to completion, so the events stream has transitions and a duration.
    let claimed = server.claim_one("agent-1").await;
    server
        .queue
        .ack(&claimed, &Outcome::new(JobStatus::Success))
        .await
        .unwrap();

    let response = server.get("/metrics").await;
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let expected = [
        r#"raibid_webhooks_received_total{forge="gitea",event="push",outcome="queued"} 1"#,
        r#"raibid_webhooks_received_total{forge="gitea",event="create",outcome="ignored"} 1"#,
        r#"raibid_webhooks_received_total{forge="github",event="push",outcome="bad_signature"} 1"#,
        r#"raibid_jobs_queued_total{pool="default"} 2"#,
        r#"raibid_job_status_transitions_total{pool="default",status="running"} 1"#,
        r#"raibid_job_status_transitions_total{pool="default",status="success"} 1"#,
        r#"raibid_job_duration_seconds_count{pool="default",status="success"} 1"#,
        r#"raibid_queue_lag{pool="default"} 1"#,
        r#"raibid_queue_pending{pool="default"} 0"#,
        "raibid_agents_connected 0",
        // The Gitea job has a forge but no token is configured: counted, not sent.
        r#"raibid_status_reports_total{forge="gitea",outcome="skipped"}"#,
    ];
    let text = eventually(Duration::from_secs(15), "every metric family", || async {
        let text = server.get("/metrics").await.text().await.unwrap();
        expected
            .iter()
            .all(|line| text.contains(line))
            .then_some(text)
    })
    .await;
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[tokio::test]
async fn shutdown_ends_open_log_streams_and_returns_in_time() {
    let mut server = TestServer::start().await;
    let response = server
        .post_json(
            "/api/v1/jobs",
            &json!({ "repo": "acme/app", "clone_url": "https://git.example/acme/app.git", "sha": SHA }),
        )
        .await;
    let id = json(response).await["id"].as_str().unwrap().to_owned();
    let follow = server
        .get(&format!("/api/v1/jobs/{id}/logs?follow=true"))
        .await;
    assert_eq!(follow.status(), StatusCode::OK);
    let mut events = SseReader::new(follow);
    let reader = tokio::spawn(async move { events.next(Duration::from_secs(12)).await });
    // The stream is open and idle when shutdown comes.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let took = server.shutdown().await;
    assert!(
        took < Duration::from_secs(10),
        "serve took {took:?} to return"
    );
    assert_eq!(
        reader.await.unwrap(),
        None,
        "the stream was closed, not left hanging"
    );
    assert!(
        server
            .client
            .get(server.url("/healthz"))
            .send()
            .await
            .is_err(),
        "no longer accepting connections"
    );
}

/// The server's reaper keeps a Redis with a `maxmemory` (as on Kubernetes) below
/// `redis.prune_memory_percent` by deleting the logs of the oldest finished jobs, though far
/// fewer than `redis.retain_jobs` exist; their records stay, and the log API says what
/// happened.
#[tokio::test]
async fn the_reaper_prunes_finished_jobs_logs_while_redis_is_nearly_full() {
    let redis = raibid_testkit::RedisServer::start();
    let queue = support::queue_for(&redis);
    assert_eq!(redis.command("CONFIG SET maxmemory 1gb").unwrap(), "+OK");
    let used = |reading| match reading {
        raibid_queue::MemoryReading::Limited(memory) => memory,
        other => panic!("{other:?}"),
    };
    let empty = used(queue.memory().await.unwrap()).used;
    let chunk = vec![b'x'; 64 * 1024];
    let mut ids = Vec::new();
    for i in 0..40 {
        let spec = raibid_model::NewJob::new(
            format!("acme/app{i}"),
            "http://127.0.0.1/acme/app.git",
            "refs/heads/main",
            SHA,
            raibid_model::Event::Push,
        );
        let raibid_queue::Enqueued::Created(job) = queue.enqueue(spec).await.unwrap() else {
            panic!("not created");
        };
        assert!(queue.append_log(&job.id, &chunk).await.unwrap());
        queue.cancel(&job.id).await.unwrap();
        ids.push(job.id);
    }
    // Redis at 90% of its maxmemory.
    let full = used(queue.memory().await.unwrap()).used;
    assert!(full > empty + 2_000_000, "{empty} {full}");
    let max = full * 10 / 9;
    assert_eq!(
        redis
            .command(&format!("CONFIG SET maxmemory {max}"))
            .unwrap(),
        "+OK"
    );
    assert!(used(queue.memory().await.unwrap()).percent() > 80);
    let mut config = support::config();
    config.redis.prune_memory_percent = 80;
    let server = TestServer::start_on(redis, config).await;
    let memory = eventually(Duration::from_secs(20), "memory below 80%", || async {
        let memory = used(server.queue.memory().await.unwrap());
        (memory.percent() <= 80).then_some(memory)
    })
    .await;
    let oldest = server.queue.get(&ids[0]).await.unwrap().expect("kept");
    assert!(oldest.log_pruned, "the oldest went first ({memory:?})");
    assert!(
        !server
            .queue
            .get(&ids[39])
            .await
            .unwrap()
            .unwrap()
            .log_pruned
    );
    let text = server
        .get_authed(&format!("/api/v1/jobs/{}/logs", ids[0]))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.starts_with("[raibid] this job's log was deleted"),
        "{text}"
    );
    let job = json(server.get_authed(&format!("/api/v1/jobs/{}", ids[0])).await).await;
    assert_eq!(job["log_pruned"], true, "{job}");
    let mut follow = SseReader::new(
        server
            .get_authed(&format!("/api/v1/jobs/{}/logs?follow=true", ids[0]))
            .await,
    );
    let first = follow.next(Duration::from_secs(5)).await.expect("an event");
    assert_eq!(first.event, "log");
    assert!(
        first.data["text"]
            .as_str()
            .unwrap()
            .contains("log was deleted"),
        "{first:?}"
    );
}
