//! Pausing and resuming a pool through the API, against the real server and a real
//! redis-server: a paused pool's jobs are still accepted and stay queued, no agent gets them,
//! and only a token of the `pools` scope for every repository may pause.

mod support;

use raibid_config::{ApiToken, TokenHash, TokenScope};
use raibid_model::PoolName;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{SHA, TOKEN, TestServer, config, json};

/// `jobs` for every repository, no `pools`.
const RUNNER: &str = "rbd_runner_token_31aa0e";
/// `pools`, for acme's repositories only.
const ACME_OPS: &str = "rbd_acme_ops_token_8d2f";

async fn server() -> TestServer {
    let mut config = config();
    config.server.pools = vec![PoolName::new("gpu").unwrap()];
    let limited = |name: &str, token: &str, scope: TokenScope, repos: &str| ApiToken {
        name: name.into(),
        hash: TokenHash::of(token),
        scopes: vec![scope],
        repos: vec![repos.into()],
    };
    config.server.tokens.extend([
        limited("runner", RUNNER, TokenScope::Jobs, "*"),
        limited("acme-ops", ACME_OPS, TokenScope::Pools, "acme/*"),
    ]);
    TestServer::start_with(config).await
}

async fn post(
    server: &TestServer,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> reqwest::Response {
    let mut request = server
        .client
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// The answer has `status` and its error message contains `says`.
async fn refused(response: reqwest::Response, status: StatusCode, says: &str) -> Value {
    assert_eq!(response.status(), status);
    let body = json(response).await;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "expected {says:?} in {body}");
    body
}

async fn pool_of(server: &TestServer, name: &str) -> Value {
    let queues = json(server.get("/api/v1/queues").await).await;
    queues["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pool"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no pool {name} in {queues}"))
}

#[tokio::test]
async fn a_paused_pool_takes_jobs_but_hands_none_out_until_resumed() {
    let server = server().await;
    let paused = post(
        &server,
        "/api/v1/queues/default/pause",
        Some(TOKEN),
        r#"{"reason": "disk swap"}"#,
    )
    .await;
    assert_eq!(paused.status(), StatusCode::OK);
    let paused = json(paused).await;
    assert_eq!(paused["pool"], "default");
    assert_eq!(paused["paused"]["reason"], "disk swap");
    assert!(
        paused["paused"]["by"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "a bare hash's token is named by its hash: {paused}"
    );

    let submitted = server
        .post_json(
            "/api/v1/jobs",
            &json!({ "repo": "acme/app", "clone_url": "https://git.example/acme/app.git", "sha": SHA }),
        )
        .await;
    assert_eq!(submitted.status(), StatusCode::CREATED, "still accepted");
    let listed = pool_of(&server, "default").await;
    assert_eq!(
        (listed["lag"].clone(), listed["paused"]["reason"].clone()),
        (json!(1), json!("disk swap"))
    );
    assert!(pool_of(&server, "gpu").await.get("paused").is_none());

    let mut agent = server.queue.claimer("agent").await.unwrap();
    let pools = [PoolName::default()];
    assert!(
        agent
            .claim(&pools, std::time::Duration::ZERO)
            .await
            .unwrap()
            .is_none()
    );

    // An empty body pauses too (without a reason); resuming answers the pool unpaused.
    let gpu = post(&server, "/api/v1/queues/gpu/pause", Some(TOKEN), "").await;
    assert_eq!(gpu.status(), StatusCode::OK);
    assert_eq!(json(gpu).await["paused"]["reason"], "");
    let resumed = post(&server, "/api/v1/queues/default/resume", Some(TOKEN), "").await;
    assert_eq!(resumed.status(), StatusCode::OK);
    assert!(json(resumed).await.get("paused").is_none());
    let claimed = agent
        .claim(&pools, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert!(claimed.is_some(), "the held job is handed out once resumed");
    // Resuming again changes nothing and is no error.
    let again = post(&server, "/api/v1/queues/default/resume", Some(TOKEN), "").await;
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_bad_pause_is_refused_naming_why_and_pauses_nothing() {
    let server = server().await;
    let pause = "/api/v1/queues/default/pause";
    refused(
        post(&server, pause, None, "").await,
        StatusCode::UNAUTHORIZED,
        "Bearer",
    )
    .await;
    let body = refused(
        post(&server, pause, Some(RUNNER), "").await,
        StatusCode::FORBIDDEN,
        "`pools` scope",
    )
    .await;
    assert_eq!(body["error"]["code"], "forbidden");
    refused(
        post(&server, pause, Some(ACME_OPS), "").await,
        StatusCode::FORBIDDEN,
        "every repository",
    )
    .await;
    refused(
        post(&server, "/api/v1/queues/defualt/pause", Some(TOKEN), "").await,
        StatusCode::NOT_FOUND,
        "no pool defualt: the pools are default, gpu",
    )
    .await;
    refused(
        post(
            &server,
            "/api/v1/queues/Not%20A%20Pool/pause",
            Some(TOKEN),
            "",
        )
        .await,
        StatusCode::BAD_REQUEST,
        "pool",
    )
    .await;
    refused(
        post(&server, pause, Some(TOKEN), r#"{"reason": "two\nlines"}"#).await,
        StatusCode::BAD_REQUEST,
        "reason: one line",
    )
    .await;
    let long = json!({ "reason": "x".repeat(201) }).to_string();
    refused(
        post(&server, pause, Some(TOKEN), &long).await,
        StatusCode::BAD_REQUEST,
        "at most 200",
    )
    .await;
    refused(
        post(&server, pause, Some(TOKEN), r#"{"why": "typo"}"#).await,
        StatusCode::BAD_REQUEST,
        "unknown field `why`",
    )
    .await;
    refused(
        post(&server, "/api/v1/queues/default/resume", Some(RUNNER), "").await,
        StatusCode::FORBIDDEN,
        "`pools` scope",
    )
    .await;
    assert!(server.queue.paused_pools().await.unwrap().is_empty());
}

/// The job list's queue table has Pause and Resume buttons for a signed-in token that may hold
/// pools, and only for it; the buttons are the API's pause and resume, from this site only.
#[tokio::test]
async fn the_job_list_pauses_and_resumes_a_pool_for_a_token_that_may() {
    use support::browser::{From, get_with, post_form, sign_in};

    let server = server().await;
    let ops = sign_in(&server, TOKEN).await;
    let (_, list) = get_with(&server, "/jobs", &ops).await;
    assert!(
        list.contains("<form class=\"inline\" method=\"post\" action=\"/queues/gpu/pause\">"),
        "{list}"
    );
    for (token, who) in [
        (RUNNER, "a jobs token"),
        (ACME_OPS, "a token for acme only"),
    ] {
        let cookie = sign_in(&server, token).await;
        let (_, list) = get_with(&server, "/jobs", &cookie).await;
        assert!(!list.contains("/queues/gpu/pause"), "{who}: {list}");
        let (status, _, _) =
            post_form(&server, "/queues/gpu/pause", Some(&cookie), From::Here, &[]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who}");
    }
    let (status, _, _) = post_form(
        &server,
        "/queues/gpu/pause",
        Some(&ops),
        From::Elsewhere,
        &[("reason", "from elsewhere")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another site's form");
    assert!(server.queue.paused_pools().await.unwrap().is_empty());

    let (status, headers, body) = post_form(
        &server,
        "/queues/gpu/pause",
        Some(&ops),
        From::Here,
        &[("reason", "new GPUs")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(headers["location"], "/jobs");
    let (_, list) = get_with(&server, "/jobs", &ops).await;
    assert!(list.contains(" ago: new GPUs</strong>"), "{list}");
    assert!(
        list.contains("action=\"/queues/gpu/resume\"><button>Resume</button>"),
        "{list}"
    );
    let (status, _, body) = post_form(
        &server,
        "/queues/gpu/pause",
        Some(&ops),
        From::Here,
        &[("reason", &"x".repeat(201))],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("at most 200"), "{body}");

    let (status, _, _) =
        post_form(&server, "/queues/gpu/resume", Some(&ops), From::Here, &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(server.queue.paused_pools().await.unwrap().is_empty());
    let (status, _, _) = post_form(&server, "/queues/gpu/drain", Some(&ops), From::Here, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
