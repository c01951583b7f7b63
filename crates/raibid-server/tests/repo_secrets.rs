//! Repository and owner secrets through the API against a real redis-server: token holders
//! set, list and delete them; values go in and never come out, not in answers and not in the server's
//! log; bad names, values and bodies are refused with what is wrong; without
//! `redis.secrets_key` setting one is refused, and without Redis it is 503.

mod support;

use std::time::Duration;

use raibid_model::SecretScope;
use raibid_queue::{QueueOptions, SecretsKey};
use raibid_testkit::RedisServer;
use reqwest::StatusCode;
use serde_json::json;
use support::{TOKEN, TestServer, config, json};

const KEY: &str = "a-secrets-key-of-at-least-32-characters";
const VALUE: &str = "dckr_pat_9Xk2mQ7wLp";

/// A queue on `redis` that seals with `key` and also opens what `previous` keys sealed.
fn queue_with_keys(redis: &RedisServer, key: &str, previous: &[&str]) -> raibid_queue::Queue {
    let mut options = QueueOptions::new(redis.url());
    options.command_timeout = Duration::from_secs(2);
    options.secrets_key = Some(SecretsKey::derive(key).unwrap());
    options.secrets_previous_keys = previous
        .iter()
        .map(|k| SecretsKey::derive(k).unwrap())
        .collect();
    raibid_queue::Queue::open(options).unwrap()
}

async fn server_with_keys(key: &str, previous: &[&str], redis: RedisServer) -> TestServer {
    let queue = queue_with_keys(&redis, key, previous);
    TestServer::start_with_queue(redis, config(), raibid_server::system_clock(), queue).await
}

async fn server_with_key() -> TestServer {
    server_with_keys(KEY, &[], RedisServer::start()).await
}

const SECRETS: &str = "/api/v1/repos/acme/app/secrets";

async fn put(server: &TestServer, path: &str, body: serde_json::Value) -> reqwest::Response {
    server
        .client
        .put(server.url(path))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn delete(server: &TestServer, path: &str) -> reqwest::Response {
    server
        .client
        .delete(server.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
}

/// A refused request set nothing.
async fn assert_nothing_set(server: &TestServer) {
    let set = server
        .queue
        .secrets(&SecretScope::Repo("acme/app".into()))
        .await
        .unwrap();
    assert!(set.is_empty(), "{set:?}");
}

/// The answer's status is `status` and its message contains `says`.
async fn refused(response: reqwest::Response, status: StatusCode, says: &str) {
    assert_eq!(response.status(), status);
    let body = json(response).await;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "expected {says:?} in {body}");
}

#[tokio::test]
async fn token_holders_set_list_and_delete_secrets_whose_values_never_come_back() {
    let logs = support::capture_logs(tracing::Level::TRACE);
    let server = server_with_key().await;
    let path = format!("{SECRETS}/DOCKER_TOKEN");

    let created = put(
        &server,
        &path,
        json!({ "value": VALUE, "events": ["tag", "push"], "branches": ["release/*", "main"] }),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created = json(created).await;
    assert_eq!(created["name"], "DOCKER_TOKEN");
    assert_eq!(created["events"], json!(["push", "tag"]));
    assert_eq!(created["branches"], json!(["main", "release/*"]));
    assert!(created["updated_at"].is_string());
    let replaced = put(&server, &path, json!({ "value": format!("{VALUE}-2") })).await;
    assert_eq!(replaced.status(), StatusCode::OK);
    assert!(
        json(replaced).await.get("events").is_none(),
        "every event now"
    );
    put(
        &server,
        &format!("{SECRETS}/NPM_TOKEN"),
        json!({ "value": "npm-secret-value" }),
    )
    .await;

    // Repository names are compared ignoring case, as forges do.
    let listed = server.get_authed("/api/v1/repos/Acme/App/secrets").await;
    assert_eq!(listed.status(), StatusCode::OK);
    let text = listed.text().await.unwrap();
    assert!(
        !text.contains(VALUE) && !text.contains("npm-secret-value"),
        "{text}"
    );
    let listed: serde_json::Value = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = listed["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["DOCKER_TOKEN", "NPM_TOKEN"]);
    // The secret is the repository's alone.
    let other = json(server.get_authed("/api/v1/repos/acme/lib/secrets").await).await;
    assert_eq!(other["secrets"], json!([]));

    assert_eq!(
        delete(&server, &path).await.status(),
        StatusCode::NO_CONTENT
    );
    refused(
        delete(&server, &path).await,
        StatusCode::NOT_FOUND,
        "no secret DOCKER_TOKEN",
    )
    .await;
    let listed = json(server.get_authed(SECRETS).await).await;
    assert_eq!(listed["secrets"].as_array().unwrap().len(), 1);

    let logged = logs.text();
    assert!(
        logged.contains("secret set") && logged.contains("repository acme/app"),
        "the server says what it did"
    );
    assert!(!logged.contains(VALUE), "a value reached the server's log");
}

#[tokio::test]
async fn every_call_needs_a_token() {
    let server = server_with_key().await;
    let path = format!("{SECRETS}/TOKEN");
    let anonymous = [
        server.client.get(server.url(SECRETS)),
        server
            .client
            .put(server.url(&path))
            .json(&json!({ "value": VALUE })),
        server.client.delete(server.url(&path)),
        server
            .client
            .get(server.url(SECRETS))
            .bearer_auth("not-the-token"),
    ];
    for request in anonymous {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_nothing_set(&server).await;
}

#[tokio::test]
async fn bad_names_values_and_bodies_are_refused_saying_why() {
    let server = server_with_key().await;
    let ok = json!({ "value": VALUE });
    for (name, says) in [
        ("1TOKEN", "variable name"),
        ("MY-TOKEN", "variable name"),
        ("RAIBID_WORKSPACE", "set by the agent"),
        (&"T".repeat(129), "at most 128"),
    ] {
        refused(
            put(&server, &format!("{SECRETS}/{name}"), ok.clone()).await,
            StatusCode::BAD_REQUEST,
            says,
        )
        .await;
    }
    refused(
        put(&server, "/api/v1/repos/.acme/app/secrets/TOKEN", ok.clone()).await,
        StatusCode::BAD_REQUEST,
        "repo",
    )
    .await;
    let path = format!("{SECRETS}/TOKEN");
    for (body, says) in [
        (json!({ "value": "" }), "needs a value"),
        (
            json!({ "value": "x".repeat(64 * 1024 + 1) }),
            "at most 65536",
        ),
        (json!({ "value": "a\u{0}b" }), "NUL"),
        (
            json!({ "value": VALUE, "events": ["deploy"] }),
            "unknown variant",
        ),
        (json!({ "value": VALUE, "repos": [] }), "unknown field"),
        (
            json!({ "value": VALUE, "branches": ["main", "a[b"] }),
            "branches[1]",
        ),
        (json!({ "value": VALUE, "branches": [""] }), "branches[0]"),
        (json!({}), "missing field `value`"),
    ] {
        refused(
            put(&server, &path, body).await,
            StatusCode::BAD_REQUEST,
            says,
        )
        .await;
    }
    let not_json = server
        .client
        .put(server.url(&path))
        .bearer_auth(TOKEN)
        .body(VALUE)
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_nothing_set(&server).await;
}

#[tokio::test]
async fn without_a_secrets_key_setting_is_refused_and_without_redis_it_is_503() {
    let server = TestServer::start().await;
    refused(
        put(
            &server,
            &format!("{SECRETS}/TOKEN"),
            json!({ "value": VALUE }),
        )
        .await,
        StatusCode::NOT_IMPLEMENTED,
        "redis.secrets_key",
    )
    .await;
    // Listing needs no key.
    assert_eq!(server.get_authed(SECRETS).await.status(), StatusCode::OK);

    let mut server = server_with_key().await;
    server.redis.kill();
    let response = put(
        &server,
        &format!("{SECRETS}/TOKEN"),
        json!({ "value": VALUE }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        server.get_authed(SECRETS).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn an_owners_secrets_are_set_listed_and_deleted_apart_from_its_repositories() {
    let server = server_with_key().await;
    const ORG: &str = "/api/v1/orgs/acme/secrets";
    let created = put(
        &server,
        &format!("{ORG}/REGISTRY_TOKEN"),
        json!({ "value": VALUE, "events": ["push"] }),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(json(created).await["events"], json!(["push"]));
    put(
        &server,
        &format!("{SECRETS}/APP_ONLY"),
        json!({ "value": "app-only-value" }),
    )
    .await;

    let listed = server.get_authed("/api/v1/orgs/ACME/secrets").await;
    assert_eq!(listed.status(), StatusCode::OK);
    let text = listed.text().await.unwrap();
    assert!(
        text.contains("REGISTRY_TOKEN") && !text.contains("APP_ONLY") && !text.contains(VALUE),
        "{text}"
    );
    let repo = json(server.get_authed(SECRETS).await).await;
    assert_eq!(repo["secrets"].as_array().unwrap().len(), 1, "{repo}");
    // What an agent of one of acme's repositories opens.
    let opened = server.queue.open_secrets("acme/anything").await.unwrap();
    assert_eq!(
        opened["REGISTRY_TOKEN"].scope,
        SecretScope::Owner("acme".into())
    );

    refused(
        put(
            &server,
            "/api/v1/orgs/.acme/secrets/TOKEN",
            json!({ "value": VALUE }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "owner",
    )
    .await;
    refused(
        put(
            &server,
            &format!("{ORG}/RAIBID_X"),
            json!({ "value": VALUE }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "set by the agent",
    )
    .await;
    assert_eq!(
        server
            .client
            .get(server.url(ORG))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        delete(&server, &format!("{ORG}/REGISTRY_TOKEN"))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    refused(
        delete(&server, &format!("{ORG}/REGISTRY_TOKEN")).await,
        StatusCode::NOT_FOUND,
        "owner acme has no secret REGISTRY_TOKEN",
    )
    .await;
}

/// A server given a new `redis.secrets_key` with the old one among the previous keys seals
/// every secret again with the new key, so the old one can go.
#[tokio::test]
async fn a_rotated_key_is_applied_to_every_secret() {
    const NEW: &str = "a-new-secrets-key-of-at-least-32-characters";
    let redis = RedisServer::start();
    queue_with_keys(&redis, KEY, &[])
        .set_secret(
            &SecretScope::Repo("acme/app".into()),
            "TOKEN",
            VALUE,
            &[],
            &[],
        )
        .await
        .unwrap();
    let server = server_with_keys(NEW, &[KEY], redis).await;
    let new_only = queue_with_keys(&server.redis, NEW, &[]);
    support::eventually(
        Duration::from_secs(20),
        "the secret sealed again",
        || async {
            let opened = new_only.open_secrets("acme/app").await.unwrap();
            opened["TOKEN"]
                .opened
                .as_ref()
                .ok()
                .filter(|s| s.value == VALUE)
                .map(|_| ())
        },
    )
    .await;
}
