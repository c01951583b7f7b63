//! `server.approval`: webhooks' jobs that wait for a token holder before they run, through the
//! real webhook endpoint, the jobs API and a real redis-server.

mod support;

use raibid_config::ApprovalMode;
use raibid_model::{JobStatus, PoolName};
use reqwest::StatusCode;
use support::{TOKEN, TestServer, json};

async fn job(server: &TestServer, id: &str) -> raibid_model::Job {
    server.queue.get(id).await.unwrap().expect("job exists")
}

/// Delivers a recorded fixture; the reply's job id and status.
async fn deliver(server: &TestServer, name: &str) -> (String, String) {
    let response = server.deliver(name).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body = json(response).await;
    (
        body["job_id"].as_str().unwrap().to_owned(),
        body["status"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_pull_request_from_a_fork_waits_until_a_token_holder_approves_it() {
    let server = TestServer::start().await;
    // Gitea's AGit pull request: pushed by someone without write access, so a fork's.
    let (id, status) = deliver(&server, "gitea/pull_request-agit").await;
    assert_eq!(status, "blocked");
    let blocked = job(&server, &id).await;
    assert_eq!(blocked.status, JobStatus::Blocked);
    assert!(blocked.spec.from_fork);
    let stats = server.queue.stats(&PoolName::default()).await.unwrap();
    assert_eq!(stats.lag, 0, "no agent is started for it");

    let path = format!("/api/v1/jobs/{id}/approve");
    let anonymous = server.client.post(server.url(&path)).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(job(&server, &id).await.status, JobStatus::Blocked);

    let approved = server.post_json(&path, &serde_json::json!({})).await;
    assert_eq!(approved.status(), StatusCode::OK);
    let approved = json(approved).await;
    assert_eq!(approved["status"], "queued");
    // The approver is kept: an unnamed token by the start of its hash.
    let by = &raibid_config::hash_token(support::TOKEN)[..15];
    assert_eq!(approved["approved_by"], by);
    assert_eq!(job(&server, &id).await.approved_by.as_deref(), Some(by));
    assert_eq!(
        server.queue.stats(&PoolName::default()).await.unwrap().lag,
        1
    );
    let claimed = server.claim_one("agent-1").await;
    assert_eq!(claimed.job.id, id);

    let again = server.post_json(&path, &serde_json::json!({})).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let message = json(again).await.to_string();
    assert!(message.contains("is running"), "{message}");
    let missing = server
        .post_json(
            "/api/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV/approve",
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // A pull request from a branch of the repository itself runs at once.
    let (other, status) = deliver(&server, "github/pull_request-opened").await;
    assert_eq!(status, "queued");
    assert_eq!(job(&server, &other).await.status, JobStatus::Queued);
}

#[tokio::test]
async fn cancelling_a_blocked_job_declines_it() {
    let server = TestServer::start().await;
    let (id, _) = deliver(&server, "gitea/pull_request-agit").await;
    let response = server
        .post_json(&format!("/api/v1/jobs/{id}/cancel"), &serde_json::json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await["result"], "cancelled");
    let declined = job(&server, &id).await;
    let who = &raibid_config::hash_token(TOKEN)[..15];
    assert_eq!(
        (declined.status, declined.reason),
        (JobStatus::Cancelled, Some(format!("declined by {who}")))
    );
    let approve = server
        .post_json(
            &format!("/api/v1/jobs/{id}/approve"),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(approve.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn approval_follows_server_approval() {
    let mut config = support::config();
    config.server.approval = ApprovalMode::None;
    let server = TestServer::start_with(config).await;
    assert_eq!(
        deliver(&server, "gitea/pull_request-agit").await.1,
        "queued",
        "none: even forks run at once"
    );

    let mut config = support::config();
    config.server.approval = ApprovalMode::PullRequests;
    let server = TestServer::start_with(config).await;
    assert_eq!(
        deliver(&server, "github/pull_request-opened").await.1,
        "blocked"
    );
    assert_eq!(deliver(&server, "github/push").await.1, "queued");

    let mut config = support::config();
    config.server.approval = ApprovalMode::AllEvents;
    let server = TestServer::start_with(config).await;
    assert_eq!(deliver(&server, "github/push").await.1, "blocked");
    assert_eq!(deliver(&server, "gitea/push").await.1, "blocked");
    // A token holder's own submission is never blocked.
    let response = server
        .post_json(
            "/api/v1/jobs",
            &serde_json::json!({
                "repo": "acme/app",
                "clone_url": "https://git.example/acme/app.git",
                "sha": "0123456789abcdef0123456789abcdef01234567",
            }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(json(response).await["status"], "queued");
}

/// A clock the test moves forward, as if the server had run for days.
struct TestClock(std::sync::Mutex<chrono::DateTime<chrono::Utc>>);

impl raibid_server::Clock for TestClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        *self.0.lock().unwrap()
    }
}

/// `server.approval_expiry_days`: the reaper declines a job nobody approved in time, with a
/// reason that says so, and not before.
#[tokio::test]
async fn a_job_left_waiting_past_the_expiry_is_declined_by_the_reaper() {
    let mut config = support::config();
    config.server.approval_expiry_days = 2;
    let clock = std::sync::Arc::new(TestClock(std::sync::Mutex::new(chrono::Utc::now())));
    let server =
        TestServer::start_with_clock(raibid_testkit::RedisServer::start(), config, clock.clone())
            .await;
    let (id, status) = deliver(&server, "gitea/pull_request-agit").await;
    assert_eq!(status, "blocked");

    // A day and a half later: still waiting.
    *clock.0.lock().unwrap() = chrono::Utc::now() + chrono::TimeDelta::hours(36);
    // Two reaper passes (every 5 s) at this time leave it waiting.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let first = job(&server, &id).await;
    assert_eq!(first.status, JobStatus::Blocked, "{:?}", first.reason);

    // Two and a half days later: it has waited past two days.
    *clock.0.lock().unwrap() =
        chrono::Utc::now() + chrono::TimeDelta::days(3) - chrono::TimeDelta::hours(12);
    let expired = support::eventually(
        std::time::Duration::from_secs(15),
        "the reaper to decline the old job",
        || async {
            let j = job(&server, &id).await;
            (j.status != JobStatus::Blocked).then_some(j)
        },
    )
    .await;
    assert_eq!(expired.status, JobStatus::Cancelled);
    assert_eq!(
        expired.reason.as_deref(),
        Some("approval expired: waited more than 2 day(s)")
    );
}
