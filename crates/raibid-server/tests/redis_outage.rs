//! Redis going away and coming back, under a running server.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use support::{SECRET, SHA, TestServer, eventually, gitea_headers, json, push_body};

async fn assert_503_with_retry_after(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
    assert_eq!(response.headers()["retry-after"], "5", "{what}");
    let body = json(response).await;
    assert_eq!(body["error"]["code"], "unavailable", "{what}: {body}");
}

#[tokio::test]
async fn without_redis_everything_is_503_and_recovers_by_itself() {
    let mut server = TestServer::start().await;
    assert_eq!(server.get("/readyz").await.status(), StatusCode::OK);
    server.redis.kill();

    let body = push_body("acme/app", "main", SHA);
    let headers = gitea_headers("push", "outage-1", SECRET, &body);
    assert_503_with_retry_after(server.post_webhook("gitea", headers, body).await, "webhook").await;
    assert_503_with_retry_after(server.deliver("github/push").await, "github webhook").await;
    let submission =
        json!({ "repo": "acme/app", "clone_url": "https://git.example/acme/app.git", "sha": SHA });
    assert_503_with_retry_after(
        server.post_json("/api/v1/jobs", &submission).await,
        "submit",
    )
    .await;
    assert_503_with_retry_after(server.get("/api/v1/jobs").await, "list").await;
    assert_503_with_retry_after(
        server.get("/api/v1/jobs/01JABCDEFGHJKMNPQRSTVWXYZ0").await,
        "show",
    )
    .await;
    assert_503_with_retry_after(server.get("/api/v1/queues").await, "queues").await;
    // The web pages say so to a person, and when to try again.
    for page in ["/jobs", "/jobs/01JABCDEFGHJKMNPQRSTVWXYZ0"] {
        let response = server.get(page).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{page}");
        assert_eq!(response.headers()["retry-after"], "5", "{page}");
        let body = response.text().await.unwrap();
        assert!(body.contains("cannot reach Redis"), "{page}: {body}");
    }
    assert_503_with_retry_after(server.get("/readyz").await, "readyz").await;
    assert_eq!(
        server.get("/healthz").await.status(),
        StatusCode::OK,
        "alive all the same"
    );

    server.redis.restart();
    let accepted = eventually(
        Duration::from_secs(15),
        "webhooks to be accepted again",
        || async {
            let body = push_body("acme/app", "main", SHA);
            let headers = gitea_headers("push", "outage-2", SECRET, &body);
            let response = server.post_webhook("gitea", headers, body).await;
            (response.status() != StatusCode::SERVICE_UNAVAILABLE).then_some(response)
        },
    )
    .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    assert_eq!(server.get("/readyz").await.status(), StatusCode::OK);
    assert_eq!(
        server.post_json("/api/v1/jobs", &submission).await.status(),
        StatusCode::CREATED
    );
    let listed = json(server.get("/api/v1/jobs").await).await;
    assert_eq!(
        listed["jobs"].as_array().unwrap().len(),
        2,
        "only what was accepted was queued"
    );
}

/// A Redis that answers but refuses writes, its disk full (`MISCONF`) or past its `maxmemory`
/// (`OOM`): the webhook is answered 503 so the forge delivers it again, reads go on, and the
/// delivery is queued once, when Redis takes writes again.
#[tokio::test]
async fn a_redis_refusing_writes_gets_webhooks_redelivered_and_still_reads() {
    let server = TestServer::start().await;
    let body = push_body("acme/app", "main", SHA);
    let delivery = || gitea_headers("push", "refused-1", SECRET, &body);

    server.redis.refuse_writes();
    let response = server.post_webhook("gitea", delivery(), body.clone()).await;
    assert_503_with_retry_after(response, "webhook, disk full").await;
    assert_eq!(server.get("/api/v1/jobs").await.status(), StatusCode::OK);
    server.redis.accept_writes();

    for set in [
        "CONFIG SET maxmemory-policy noeviction",
        "CONFIG SET maxmemory 1",
    ] {
        assert_eq!(server.redis.command(set).unwrap(), "+OK");
    }
    let response = server.post_webhook("gitea", delivery(), body.clone()).await;
    assert_503_with_retry_after(response, "webhook, memory full").await;
    assert_eq!(server.get("/api/v1/jobs").await.status(), StatusCode::OK);
    assert_eq!(
        server.redis.command("CONFIG SET maxmemory 0").unwrap(),
        "+OK"
    );

    let response = server.post_webhook("gitea", delivery(), body.clone()).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let listed = json(server.get("/api/v1/jobs").await).await;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1, "{listed}");
}
