//! Failed authentications per client (`server.auth_failures_max`): past the limit, a
//! client's tokens are refused unchecked (429) until its window ends, on the API and on the
//! web pages' sign-in alike, while other clients go on.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use support::{SHA, TOKEN, TestServer, config, json};

/// Three failures per minute; the test reaches the server through a "proxy" (loopback,
/// trusted) so that `X-Forwarded-For` gives each request the client the test chooses.
async fn server(max: u32, window_secs: u64) -> TestServer {
    TestServer::start_with(limited(max, window_secs)).await
}

fn limited(max: u32, window_secs: u64) -> raibid_config::Config {
    let mut config = config();
    config.server.auth_failures_max = max;
    config.server.auth_failures_window_secs = window_secs;
    config.server.trusted_proxies = vec![raibid_config::IpRange::parse("127.0.0.1").unwrap()];
    config
}

/// A change the right token may make without changing anything: a job that does not exist,
/// so 404, or 429 while the client is locked out.
async fn cancel_nothing(server: &TestServer, client: &str, token: &str) -> StatusCode {
    server
        .client
        .post(server.url("/api/v1/jobs/01JNOSUCHJOB0000000000000A/cancel"))
        .header("x-forwarded-for", client)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

/// Two replicas on one Redis count a client's wrong tokens together: three guesses spread
/// over them lock it out where the third landed, not after three on each; the other replica
/// locks it out at its next guess.
#[tokio::test]
async fn replicas_count_a_client_s_failures_together() {
    let a = server(3, 60).await;
    let b = TestServer::start_with_queue(
        raibid_testkit::RedisServer::start(),
        limited(3, 60),
        raibid_server::system_clock(),
        support::queue_for(&a.redis),
    )
    .await;
    let guesser = "198.51.100.5";
    for guess in ["a", "b"] {
        assert_eq!(
            submit(&a, guesser, guess).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // Replica a adds its failures to the shared count off the request's path: the count must
    // have them before b's guess, so that b's is the one that reaches the limit.
    support::eventually(Duration::from_secs(5), "a's failures in Redis", || async {
        let count = a
            .redis
            .command("INCRBY raibid:ci-jobs:auth-failures:198.51.100.5 0")
            .unwrap();
        (count == ":2").then_some(())
    })
    .await;
    assert_eq!(
        submit(&b, guesser, "c").await.status(),
        StatusCode::UNAUTHORIZED
    );
    support::eventually(
        Duration::from_secs(5),
        "the shared count's lockout",
        || async {
            (cancel_nothing(&b, guesser, TOKEN).await == StatusCode::TOO_MANY_REQUESTS)
                .then_some(())
        },
    )
    .await;
    // Replica a has seen two; its next guess is the one past the shared limit.
    assert_eq!(
        cancel_nothing(&a, guesser, TOKEN).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        submit(&a, guesser, "d").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        cancel_nothing(&a, guesser, TOKEN).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        cancel_nothing(&b, "198.51.100.6", TOKEN).await,
        StatusCode::NOT_FOUND,
        "another client goes on"
    );
    assert_eq!(a.job_count().await, 0, "no guess queued anything");
}

/// `POST /api/v1/jobs` as `client` with `token`.
async fn submit(server: &TestServer, client: &str, token: &str) -> reqwest::Response {
    server
        .client
        .post(server.url("/api/v1/jobs"))
        .header("x-forwarded-for", client)
        .bearer_auth(token)
        .json(&json!({ "repo": "acme/app", "clone_url": "https://git.example/acme/app.git", "sha": SHA }))
        .send()
        .await
        .unwrap()
}

/// A sign-in on the web pages as `client`: status, headers, body.
async fn sign_in(
    server: &TestServer,
    client: &str,
    token: &str,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let response = support::browser::browser()
        .post(server.url("/login"))
        .header("x-forwarded-for", client)
        .header("sec-fetch-site", "same-origin")
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// The answer is 429 `too_many_auth_failures`, with a `Retry-After` within the window.
async fn locked_out(response: reqwest::Response, window_secs: u64) {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=window_secs).contains(&retry), "Retry-After {retry}");
    let body = json(response).await;
    assert_eq!(body["error"]["code"], "too_many_auth_failures", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("server.auth_failures_max"), "{message}");
}

#[tokio::test]
async fn a_client_that_fails_too_often_is_refused_even_the_right_token_and_others_go_on() {
    let logs = support::capture_logs(tracing::Level::INFO);
    let server = server(3, 60).await;
    let guesser = "198.51.100.1";
    for guess in ["a", "b", "c"] {
        let response = submit(&server, guesser, guess).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    // Asking without a token is not a guess: it neither counts nor is refused for the lockout.
    let anonymous = server
        .client
        .post(server.url("/api/v1/jobs/nope/cancel"))
        .header("x-forwarded-for", "198.51.100.9")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // The right token, from the locked-out client: refused unchecked, nothing queued.
    locked_out(submit(&server, guesser, TOKEN).await, 60).await;
    assert_eq!(server.job_count().await, 0);
    // Another client, and another of the guesser's own network's IPv4 neighbours, go on.
    let response = submit(&server, "198.51.100.2", TOKEN).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(server.job_count().await, 1);

    // The web pages' sign-in counts and refuses the same way, without a session.
    let browser_client = "203.0.113.5";
    for _ in 0..3 {
        let (status, _, body) = sign_in(&server, browser_client, "wrong").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let (status, headers, body) = sign_in(&server, browser_client, TOKEN).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(headers.get("set-cookie").is_none());
    assert!(headers.contains_key("retry-after"));
    assert!(body.contains("too many failed authentications"), "{body}");
    // And the sign-in's failures locked that client out of the API too.
    locked_out(submit(&server, browser_client, TOKEN).await, 60).await;

    let metrics = server.get("/metrics").await.text().await.unwrap();
    for expected in [
        r#"raibid_auth_failures_total{outcome="refused"} 6"#,
        r#"raibid_auth_failures_total{outcome="locked_out"} 3"#,
    ] {
        assert!(
            metrics.contains(expected),
            "{expected} missing from:\n{metrics}"
        );
    }
    let lines = logs.text();
    for client in [guesser, browser_client] {
        assert!(
            lines
                .lines()
                .any(|line| line.contains("too many failed authentications")
                    && line.contains(client)),
            "no lockout line for {client}:\n{lines}"
        );
    }
    assert!(!lines.contains(TOKEN));
}

#[tokio::test]
async fn the_lockout_ends_with_its_window_and_zero_turns_it_off() {
    let server = server(1, 1).await;
    let client = "2001:db8:7:7::1";
    assert_eq!(
        submit(&server, client, "wrong").await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Its whole /64 is the one client.
    locked_out(submit(&server, "2001:db8:7:7::2", TOKEN).await, 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        submit(&server, client, TOKEN).await.status(),
        StatusCode::CREATED
    );

    let off = server_without_limit().await;
    for _ in 0..30 {
        assert_eq!(
            submit(&off, client, "wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        submit(&off, client, TOKEN).await.status(),
        StatusCode::CREATED
    );
}

async fn server_without_limit() -> TestServer {
    let mut config = config();
    config.server.auth_failures_max = 0;
    config.server.trusted_proxies = vec![raibid_config::IpRange::parse("127.0.0.1").unwrap()];
    TestServer::start_with(config).await
}
