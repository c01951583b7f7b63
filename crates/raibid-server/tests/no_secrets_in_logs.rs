//! Tokens and secrets never reach the logs, whatever the level.

mod support;

use std::time::Duration;

use raibid_config::Secret;
use reqwest::StatusCode;
use serde_json::json;
use support::{SECRET, SHA, TOKEN, TestServer, config, gitea_headers, json, push_body};

const GITEA_TOKEN: &str = "gitea-api-token-should-not-leak";
const GITHUB_TOKEN: &str = "ghp_should_not_leak_either";
const REPO_SECRET: &str = "repository-secret-should-not-leak";

#[tokio::test]
async fn tokens_and_secrets_stay_out_of_trace_logs() {
    let capture = support::capture_logs(tracing::Level::TRACE);

    let mut cfg = config();
    let nowhere = format!("http://127.0.0.1:{}", raibid_testkit::free_port());
    cfg.gitea.url = nowhere.clone();
    cfg.gitea.token = Secret::new(GITEA_TOKEN);
    cfg.server.github_api_url = nowhere;
    cfg.server.github_token = Secret::new(GITHUB_TOKEN);
    cfg.server
        .repo_secrets
        .insert("acme/own".into(), Secret::new(REPO_SECRET));
    let server = TestServer::start_with(cfg).await;

    let submitted = server
        .post_json(
            "/api/v1/jobs",
            &json!({ "repo": "acme/app", "clone_url": "https://git.example/acme/app.git", "sha": SHA }),
        )
        .await;
    assert_eq!(submitted.status(), StatusCode::CREATED);
    let id = json(submitted).await["id"].as_str().unwrap().to_owned();
    assert_eq!(
        server.get_authed("/api/v1/jobs").await.status(),
        StatusCode::OK
    );
    let cancel = server
        .post_json(&format!("/api/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(cancel.status(), StatusCode::OK);
    let wrong = server
        .client
        .post(server.url("/api/v1/jobs"))
        .bearer_auth(format!("{TOKEN}x"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    assert_eq!(
        server.deliver("gitea/push").await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        server.deliver("github/push").await.status(),
        StatusCode::ACCEPTED
    );
    let body = push_body("acme/own", "main", SHA);
    let headers = gitea_headers("push", "own-1", REPO_SECRET, &body);
    assert_eq!(
        server.post_webhook("gitea", headers, body).await.status(),
        StatusCode::ACCEPTED
    );
    let body = push_body("acme/own", "main", SHA);
    let headers = gitea_headers("push", "own-2", SECRET, &body);
    assert_eq!(
        server.post_webhook("gitea", headers, body).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // The reporter tries (and fails, to be retried) to send statuses with both forge tokens.
    support::eventually(
        Duration::from_secs(15),
        "the reporter to try both forges",
        || async {
            let text = server.get("/metrics").await.text().await.unwrap();
            (text.contains(r#"forge="gitea",outcome="retry""#)
                && text.contains(r#"forge="github",outcome="retry""#))
            .then_some(())
        },
    )
    .await;

    let logs = capture.text();
    assert!(
        logs.contains("webhook queued a job"),
        "logs were captured:\n{logs}"
    );
    assert!(
        logs.contains("commit status not accepted yet"),
        "reporter logged:\n{logs}"
    );
    for secret in [TOKEN, SECRET, REPO_SECRET, GITEA_TOKEN, GITHUB_TOKEN] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
    }
}
