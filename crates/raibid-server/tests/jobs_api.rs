//! The jobs API against the real server and a real redis-server.

mod support;

use std::path::Path;
use std::process::Command;

use chrono::Utc;
use raibid_model::{AgentInfo, Job, JobStatus, Outcome, PoolName};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{SHA, TOKEN, TestServer, config, json};

fn submission(repo: &str) -> Value {
    json!({
        "repo": repo,
        "clone_url": format!("https://git.example/{repo}.git"),
        "sha": SHA,
    })
}

async fn submit(server: &TestServer, body: Value) -> Job {
    let response = server.post_json("/api/v1/jobs", &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    serde_json::from_value(json(response).await).unwrap()
}

async fn error(response: reqwest::Response) -> (StatusCode, String, String) {
    let status = response.status();
    let body = json(response).await;
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn submit_with_a_sha_queues_a_manual_job() {
    let mut cfg = config();
    cfg.server.pool_rules = vec![raibid_config::PoolRule {
        repo: "ml/*".into(),
        pool: PoolName::new("gpu").unwrap(),
    }];
    let server = TestServer::start_with(cfg).await;
    let body = json!({
        "repo": "ml/model",
        "clone_url": "https://git.example/ml/model.git",
        "ref": "main",
        "sha": SHA.to_ascii_uppercase(),
        "env": { "EPOCHS": "3" }
    });
    let job = submit(&server, body).await;
    assert_eq!(job.spec.repo, "ml/model");
    assert_eq!(job.spec.git_ref, "refs/heads/main");
    assert_eq!(job.spec.sha, SHA);
    assert_eq!(job.spec.event, raibid_model::Event::Manual);
    assert_eq!(job.spec.pool.as_str(), "gpu");
    assert_eq!(job.spec.env["EPOCHS"], "3");
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(server.queue.get(&job.id).await.unwrap().unwrap(), job);

    let explicit = submit(
        &server,
        json!({ "repo": "ml/model", "clone_url": "file:///srv/git/model.git", "sha": SHA, "pool": "cpu" }),
    )
    .await;
    assert_eq!(explicit.spec.pool.as_str(), "cpu");
    // The repository's pipeline numbers, whatever the case of its name.
    assert_eq!((job.spec.number, explicit.spec.number), (Some(1), Some(2)));
    let other = submit(
        &server,
        json!({ "repo": "ML/Model", "clone_url": "file:///srv/git/model.git", "sha": SHA }),
    )
    .await;
    assert_eq!(other.spec.number, Some(3));
}

/// `server.allowed_repos` and `server.events` bound what the server builds, whoever asks: a
/// token holder gets the webhook's answer (403), and nothing is queued.
#[tokio::test]
async fn submissions_obey_allowed_repos_and_events() {
    let mut cfg = config();
    cfg.server.allowed_repos = vec!["acme/*".into()];
    let mut server = TestServer::start_with(cfg.clone()).await;
    let body =
        |repo: &str| json!({ "repo": repo, "clone_url": "https://git.example/x.git", "sha": SHA });
    let (status, code, message) =
        error(server.post_json("/api/v1/jobs", &body("evil/x")).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "repo_not_allowed")
    );
    assert!(
        message.contains("evil/x") && message.contains("server.allowed_repos"),
        "{message}"
    );
    submit(&server, body("ACME/app")).await;
    server.shutdown().await;

    cfg.server
        .events
        .retain(|e| *e != raibid_model::Event::Manual);
    let server = TestServer::start_with(cfg).await;
    let (status, code, message) =
        error(server.post_json("/api/v1/jobs", &body("acme/app")).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "event_not_enabled")
    );
    assert!(
        message.contains("manual") && message.contains("server.events"),
        "{message}"
    );
    let page = server
        .queue
        .list(&Default::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 0, "nothing queued: {page:?}");
}

#[tokio::test]
async fn invalid_submissions_are_400_naming_the_field() {
    let server = TestServer::start().await;
    let cases = [
        (
            json!({ "repo": "../etc", "clone_url": "https://g/x.git", "sha": SHA }),
            "repo",
        ),
        (
            json!({ "repo": "o/r", "clone_url": "ext::sh -c id", "sha": SHA }),
            "clone_url",
        ),
        (
            json!({ "repo": "o/r", "clone_url": "https://g/x.git", "ref": "a..b", "sha": SHA }),
            "ref",
        ),
        (
            json!({ "repo": "o/r", "clone_url": "https://g/x.git", "sha": "main" }),
            "sha",
        ),
        (
            json!({ "repo": "o/r", "clone_url": "https://g/x.git", "sha": SHA, "pool": "GPU!" }),
            "pool",
        ),
        (
            json!({ "repo": "o/r", "clone_url": "https://g/x.git", "sha": SHA, "env": { "A-B": "1" } }),
            "env.A-B",
        ),
        (
            json!({ "repo": "o/r", "clone_url": "https://g/x.git", "sha": SHA, "env": { "RAIBID_SHA": "0" } }),
            "env.RAIBID_SHA",
        ),
    ];
    for (body, field) in cases {
        let (status, code, message) = error(server.post_json("/api/v1/jobs", &body).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, "invalid_field"),
            "{body}"
        );
        assert!(
            message.starts_with(&format!("{field}:")),
            "{field}: {message}"
        );
    }
    let (status, _, message) = error(
        server
            .post_json(
                "/api/v1/jobs",
                &json!({ "repo": "o/r", "clone_url": "https://g/x.git", "branch": "x" }),
            )
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("branch"), "{message}");

    let response = server
        .client
        .post(server.url("/api/v1/jobs"))
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body(submission("o/r").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(server.job_count().await, 0);
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn submit_without_a_sha_resolves_the_ref_with_ls_remote() {
    raibid_testkit::require_binary("git", "git");
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(repo.path().join("README"), "one\n").unwrap();
    git(repo.path(), &["add", "README"]);
    git(repo.path(), &["commit", "-q", "-m", "one"]);
    let first = git(repo.path(), &["rev-parse", "HEAD"]);
    git(repo.path(), &["tag", "-a", "v1", "-m", "release 1"]);
    std::fs::write(repo.path().join("README"), "two\n").unwrap();
    git(repo.path(), &["commit", "-q", "-am", "two"]);
    let second = git(repo.path(), &["rev-parse", "HEAD"]);
    let url = format!("file://{}", repo.path().display());

    let server = TestServer::start().await;
    let main = submit(&server, json!({ "repo": "local/repo", "clone_url": url })).await;
    assert_eq!(main.spec.git_ref, "refs/heads/main");
    assert_eq!(main.spec.sha, second);

    let tag = submit(
        &server,
        json!({ "repo": "local/repo", "clone_url": url, "ref": "refs/tags/v1" }),
    )
    .await;
    assert_eq!(
        tag.spec.sha, first,
        "an annotated tag resolves to its commit"
    );

    let (status, code, message) = error(
        server
            .post_json(
                "/api/v1/jobs",
                &json!({ "repo": "local/repo", "clone_url": url, "ref": "nope" }),
            )
            .await,
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "unresolvable_ref")
    );
    assert!(message.contains("refs/heads/nope"), "{message}");

    let missing = format!("file://{}/does-not-exist", repo.path().display());
    let (status, _, _) = error(
        server
            .post_json(
                "/api/v1/jobs",
                &json!({ "repo": "local/repo", "clone_url": missing }),
            )
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(server.job_count().await, 2);
}

#[tokio::test]
async fn list_filters_and_pages_newest_first() {
    let server = TestServer::start().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let repo = if i % 2 == 0 { "acme/even" } else { "acme/odd" };
        let mut body = submission(repo);
        if i == 4 {
            body["pool"] = "gpu".into();
        }
        if i == 2 {
            body["ref"] = "release/1.x".into();
        }
        ids.push(submit(&server, body).await.id);
    }
    let cancelled = ids[1].clone();
    assert_eq!(
        json(
            server
                .post_json(&format!("/api/v1/jobs/{cancelled}/cancel"), &json!({}))
                .await
        )
        .await["result"],
        "cancelled"
    );

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/jobs?limit=2&cursor={c}"),
            None => "/api/v1/jobs?limit=2".to_owned(),
        };
        let page = json(server.get(&path).await).await;
        pages += 1;
        for job in page["jobs"].as_array().unwrap() {
            seen.push(job["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => {
                assert!(page["next_cursor"].is_null());
                break;
            }
        }
    }
    let newest_first: Vec<_> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    assert_eq!(pages, 3);

    let ids_of = |page: Value| -> Vec<String> {
        page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let odd = ids_of(json(server.get("/api/v1/jobs?repo=acme/odd").await).await);
    assert_eq!(odd, vec![ids[3].clone(), ids[1].clone()]);
    let gpu = ids_of(json(server.get("/api/v1/jobs?pool=gpu").await).await);
    assert_eq!(gpu, vec![ids[4].clone()]);
    let cancelled_only = ids_of(json(server.get("/api/v1/jobs?status=cancelled").await).await);
    assert_eq!(cancelled_only, vec![cancelled.clone()]);
    let queued_odd =
        ids_of(json(server.get("/api/v1/jobs?status=queued&repo=acme/odd").await).await);
    assert_eq!(queued_odd, vec![ids[3].clone()]);
    let release = ids_of(json(server.get("/api/v1/jobs?branch=release/1.x").await).await);
    assert_eq!(release, vec![ids[2].clone()]);
    let main_even = ids_of(json(server.get("/api/v1/jobs?branch=main&repo=acme/even").await).await);
    assert_eq!(main_even, vec![ids[4].clone(), ids[0].clone()]);
    let manual = ids_of(json(server.get("/api/v1/jobs?event=manual").await).await);
    assert_eq!(manual.len(), 5, "submitted jobs are manual");
    let pushes = ids_of(json(server.get("/api/v1/jobs?event=push").await).await);
    assert_eq!(pushes, Vec::<String>::new());

    for (query, name) in [
        ("status=done", "status"),
        ("pool=Big_Pool", "pool"),
        ("cursor=../x", "cursor"),
        ("limit=0", "limit"),
        ("limit=lots", "limit"),
        ("repo=no-slash", "repo"),
        ("branch=refs/heads/main", "branch"),
        ("branch=a..b", "branch"),
        ("event=deploy", "event"),
    ] {
        let (status, code, message) =
            error(server.get(&format!("/api/v1/jobs?{query}")).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, "invalid_parameter"),
            "{query}"
        );
        assert!(message.contains(name), "{query}: {message}");
    }
}

#[tokio::test]
async fn show_cancel_and_retry() {
    let server = TestServer::start().await;
    let job = submit(&server, submission("acme/app")).await;

    // A job that can still run is not copied: both would build the same commit at once.
    let (status, code, message) = error(
        server
            .post_json(&format!("/api/v1/jobs/{}/retry", job.id), &json!({}))
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (StatusCode::CONFLICT, "conflict"));
    assert!(message.contains("queued"), "{message}");

    let shown: Job =
        serde_json::from_value(json(server.get(&format!("/api/v1/jobs/{}", job.id)).await).await)
            .unwrap();
    assert_eq!(shown, job);
    let (status, code, _) =
        error(server.get("/api/v1/jobs/01JABCDEFGHJKMNPQRSTVWXYZ0").await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, _, _) = error(server.get("/api/v1/jobs/not-a-ulid").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A running job gets a cancel request; a finished one says so.
    let claimed = server.claim_one("agent-1").await;
    let requested = json(
        server
            .post_json(&format!("/api/v1/jobs/{}/cancel", job.id), &json!({}))
            .await,
    )
    .await;
    assert_eq!(
        requested,
        json!({ "result": "requested", "status": "running" })
    );
    server
        .queue
        .ack(&claimed, &Outcome::new(JobStatus::Cancelled))
        .await
        .unwrap();
    let finished = json(
        server
            .post_json(&format!("/api/v1/jobs/{}/cancel", job.id), &json!({}))
            .await,
    )
    .await;
    assert_eq!(
        finished,
        json!({ "result": "already_finished", "status": "cancelled" })
    );
    // The agent only knows it was asked; the record says who asked, as the server's log names
    // the token (its entry's name, else the start of its hash).
    let who = &raibid_config::hash_token(TOKEN)[..15];
    assert_eq!(
        server.queue.get(&job.id).await.unwrap().unwrap().reason,
        Some(format!("cancelled by {who}"))
    );
    let (status, _, _) = error(
        server
            .post_json("/api/v1/jobs/01JABCDEFGHJKMNPQRSTVWXYZ0/cancel", &json!({}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let response = server
        .post_json(&format!("/api/v1/jobs/{}/retry", job.id), &json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let retried: Job = serde_json::from_value(json(response).await).unwrap();
    assert_ne!(retried.id, job.id);
    assert_eq!(retried.spec.retry_of.as_deref(), Some(job.id.as_str()));
    assert_eq!(retried.spec.sha, job.spec.sha);
    assert_eq!(retried.status, JobStatus::Queued);
    let (status, _, _) = error(
        server
            .post_json("/api/v1/jobs/01JABCDEFGHJKMNPQRSTVWXYZ0/retry", &json!({}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// KEDA reads each pool's lag from the moment its ScaledJob exists: the streams and groups of
/// the pools the configuration names exist before their first job.
#[tokio::test]
async fn named_pools_have_their_consumer_groups_before_any_job() {
    let mut cfg = config();
    cfg.server.pools = vec![PoolName::new("gpu").unwrap()];
    let server = TestServer::start_with(cfg).await;
    let stream = server.queue.stream_key(&PoolName::new("gpu").unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // `*1`: one group (the reply's first line); `*0` or an error: not yet.
    while server
        .redis
        .command(&format!("XINFO GROUPS {stream}"))
        .unwrap()
        != "*1"
    {
        assert!(std::time::Instant::now() < deadline, "no group on {stream}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn queues_and_agents() {
    let mut cfg = config();
    cfg.agent.heartbeat_interval_secs = 1;
    let server = TestServer::start_with(cfg).await;
    submit(&server, submission("acme/app")).await;
    let mut gpu = submission("acme/app");
    gpu["pool"] = "gpu".into();
    submit(&server, gpu).await;

    let pools = json(server.get("/api/v1/queues").await).await;
    let pools = pools["pools"].as_array().unwrap();
    let lag = |name: &str| {
        pools
            .iter()
            .find(|p| p["pool"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {pools:?}"))["lag"]
            .as_u64()
            .unwrap()
    };
    assert_eq!((lag("default"), lag("gpu")), (1, 1));

    let info = |name: &str| AgentInfo {
        name: name.into(),
        arch: "aarch64".into(),
        pools: vec![PoolName::default()],
        labels: Default::default(),
        current_jobs: Vec::new(),
        started_at: Utc::now(),
        last_heartbeat: Utc::now(),
        jobs_done: 0,
        version: "test".into(),
    };
    server.queue.agent_heartbeat(&info("old")).await.unwrap();
    // Three heartbeat intervals (3 s here) without news make an agent stale.
    tokio::time::sleep(std::time::Duration::from_millis(3300)).await;
    server.queue.agent_heartbeat(&info("fresh")).await.unwrap();
    let agents = json(server.get("/api/v1/agents").await).await;
    let agents = agents["agents"].as_array().unwrap();
    let stale: Vec<(String, bool)> = agents
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_owned(),
                a["stale"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(stale, vec![("fresh".into(), false), ("old".into(), true)]);
    assert_eq!(agents[0]["arch"], "aarch64");
}

#[tokio::test]
async fn mutating_calls_need_a_valid_token() {
    let server = TestServer::start().await;
    let job = submit(&server, submission("acme/app")).await;
    for path in [
        "/api/v1/jobs".to_owned(),
        format!("/api/v1/jobs/{}/cancel", job.id),
        format!("/api/v1/jobs/{}/retry", job.id),
        format!("/api/v1/jobs/{}/retry-failed", job.id),
        format!("/api/v1/jobs/{}/approve", job.id),
    ] {
        let missing = server
            .client
            .post(server.url(&path))
            .json(&submission("acme/app"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            missing.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let wrong = server
            .client
            .post(server.url(&path))
            .bearer_auth("not-the-token")
            .json(&submission("acme/app"))
            .send()
            .await
            .unwrap();
        let (status, code, _) = error(wrong).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{path}"
        );
    }
    assert_eq!(
        server.job_count().await,
        1,
        "nothing was created or retried"
    );
    assert_eq!(
        server.queue.get(&job.id).await.unwrap().unwrap().status,
        JobStatus::Queued,
        "nothing was cancelled"
    );
    // Reads stay open by default.
    assert_eq!(server.get("/api/v1/jobs").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn without_configured_tokens_mutations_are_refused_with_advice() {
    let mut cfg = config();
    cfg.server.tokens.clear();
    let server = TestServer::start_with(cfg).await;
    let (status, _, message) = error(
        server
            .post_json("/api/v1/jobs", &submission("acme/app"))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(message.contains("server.tokens"), "{message}");
    assert_eq!(server.job_count().await, 0);
}

#[tokio::test]
async fn read_requires_token_closes_the_read_calls() {
    let mut cfg = config();
    cfg.server.read_requires_token = true;
    let server = TestServer::start_with(cfg).await;
    let job = submit(&server, submission("acme/app")).await;
    for path in [
        "/api/v1/jobs".to_owned(),
        format!("/api/v1/jobs/{}", job.id),
        format!("/api/v1/jobs/{}/logs", job.id),
        "/api/v1/queues".to_owned(),
        "/api/v1/agents".to_owned(),
    ] {
        assert_eq!(
            server.get(&path).await.status(),
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            server.get_authed(&path).await.status(),
            StatusCode::OK,
            "{path}"
        );
    }
    // Operations endpoints stay open for probes and scrapers.
    for path in ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"] {
        assert_eq!(server.get(path).await.status(), StatusCode::OK, "{path}");
    }
}

/// A submission sent with an `Idempotency-Key` and sent again (the client got a 503 or no
/// answer) queues one job: the second answer is that job, 200, `Idempotent-Replayed: true`.
/// The key is the token's own; another submission with it is refused (422); a malformed one is
/// refused (400) rather than ignored.
#[tokio::test]
async fn a_submission_sent_again_with_its_idempotency_key_queues_one_job() {
    use raibid_config::{ApiToken, TokenHash, TokenScope, hash_token};
    const OTHER: &str = "rbd_other_token_77a1c3";
    let mut cfg = config();
    cfg.server.tokens.push(ApiToken {
        name: "other".into(),
        hash: TokenHash::parse(&hash_token(OTHER)).unwrap(),
        scopes: vec![TokenScope::Jobs],
        repos: vec!["*".into()],
    });
    let server = TestServer::start_with(cfg).await;
    let send = |token: &'static str, key: &'static str, body: Value| {
        let request = server
            .client
            .post(server.url("/api/v1/jobs"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let body = json!({
        "repo": "acme/app",
        "clone_url": "https://git.example/acme/app.git",
        "sha": SHA,
        "env": { "DEPLOY": "1" },
    });
    let key = "01JD3Q7Z8X9Y0ABCDEFGHJKMNP";

    let first = send(TOKEN, key, body.clone()).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Job = serde_json::from_value(json(first).await).unwrap();
    let again = send(TOKEN, key, body.clone()).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Job = serde_json::from_value(json(again).await).unwrap();
    assert_eq!(again.id, first.id);

    let mut changed = body.clone();
    changed["env"]["DEPLOY"] = json!("0");
    let (status, code, message) = error(send(TOKEN, key, changed).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code, "idempotency_key_reused");
    assert!(message.contains(&first.id), "{message}");

    // A key whose job is no longer kept (its record pruned) queues nothing new.
    let gone = send(TOKEN, "key-of-a-pruned-job", body.clone()).await;
    let gone: Job = serde_json::from_value(json(gone).await).unwrap();
    let deleted = server
        .redis
        .command(&format!("DEL raibid:ci-jobs:job:{}", gone.id));
    assert_eq!(deleted.unwrap(), ":1");
    let (status, code, message) =
        error(send(TOKEN, "key-of-a-pruned-job", body.clone()).await).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code, "conflict");
    assert!(message.contains("no longer kept"), "{message}");

    // Another token's key of the same name is its own.
    let other = send(OTHER, key, body.clone()).await;
    assert_eq!(other.status(), StatusCode::CREATED);
    // Without a key, each submission is a job.
    submit(&server, body.clone()).await;

    for bad in ["", "a b", "a/b", "a:b", &"k".repeat(129)] {
        let response = server
            .client
            .post(server.url("/api/v1/jobs"))
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", bad)
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, code, message) = error(response).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(code, "invalid_request");
        assert!(message.contains("Idempotency-Key"), "{message}");
    }
    let listed = json(server.get("/api/v1/jobs").await).await;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 3, "{listed}");
}
