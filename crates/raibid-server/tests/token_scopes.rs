//! Named, limited API tokens (`server.tokens` entries with `scopes` and `repos`) against the
//! real server and a real redis-server: a token changes only what its scopes and repositories
//! allow, is refused with 403 naming what it lacks, and a refused call changes nothing.

mod support;

use std::time::Duration;

use raibid_config::{ApiToken, Config, CronExpr, Schedule, ScheduleName, TokenHash, TokenScope};
use raibid_model::{JobStatus, SecretScope};
use raibid_queue::{QueueOptions, SecretsKey};
use raibid_testkit::RedisServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{SHA, TOKEN, TestServer, config, json};

/// `jobs` for repositories of acme only.
const BOT: &str = "rbd_bot_token_0c9f1d";
/// `read` only.
const READER: &str = "rbd_reader_token_7a21";
/// `secrets` for acme/app only.
const KEEPER: &str = "rbd_keeper_token_55e0";

fn token(name: &str, token: &str, scopes: &[TokenScope], repos: &[&str]) -> ApiToken {
    ApiToken {
        name: name.into(),
        hash: TokenHash::of(token),
        scopes: scopes.to_vec(),
        repos: repos.iter().map(|r| r.to_string()).collect(),
    }
}

fn limited_config() -> Config {
    let mut config = config();
    config.server.read_requires_token = true;
    config.server.tokens.extend([
        token("bot", BOT, &[TokenScope::Jobs], &["acme/*"]),
        token("reader", READER, &[TokenScope::Read], &["*"]),
        token("keeper", KEEPER, &[TokenScope::Secrets], &["acme/app"]),
    ]);
    config.server.schedules = vec![Schedule {
        name: ScheduleName::new("nightly").unwrap(),
        repo: "other/app".into(),
        clone_url: "https://git.example/other/app.git".into(),
        branch: "main".into(),
        cron: CronExpr::parse("0 3 * * *").unwrap(),
        pool: None,
        env: Default::default(),
    }];
    config
}

async fn server() -> TestServer {
    let redis = RedisServer::start();
    let mut options = QueueOptions::new(redis.url());
    options.command_timeout = Duration::from_secs(2);
    options.secrets_key =
        Some(SecretsKey::derive("a-secrets-key-of-at-least-32-characters").unwrap());
    let queue = raibid_queue::Queue::open(options).unwrap();
    TestServer::start_with_queue(
        redis,
        limited_config(),
        raibid_server::system_clock(),
        queue,
    )
    .await
}

async fn call(
    server: &TestServer,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = server
        .client
        .request(method, server.url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// The answer is 403 and its message contains every one of `says`.
async fn forbidden(response: reqwest::Response, says: &[&str]) {
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body = json(response).await;
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    for part in says {
        assert!(message.contains(part), "expected {part:?} in {body}");
    }
}

fn submission(repo: &str) -> Value {
    json!({ "repo": repo, "clone_url": format!("https://git.example/{repo}.git"), "sha": SHA })
}

async fn submit(server: &TestServer, token: &str, repo: &str) -> reqwest::Response {
    call(
        server,
        Method::POST,
        "/api/v1/jobs",
        token,
        Some(submission(repo)),
    )
    .await
}

async fn job_id(response: reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::CREATED);
    json(response).await["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_jobs_token_changes_only_its_repositories_jobs() {
    let server = server().await;
    let ours = job_id(submit(&server, BOT, "acme/app").await).await;
    let theirs = job_id(submit(&server, TOKEN, "other/app").await).await;

    forbidden(
        submit(&server, BOT, "other/lib").await,
        &["token bot may not change other/lib", "acme/*"],
    )
    .await;
    let listed = server
        .queue
        .list(&Default::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(
        listed.jobs.len(),
        2,
        "the refused submission queued nothing"
    );

    for action in ["cancel", "retry", "approve", "retry-failed"] {
        let path = format!("/api/v1/jobs/{theirs}/{action}");
        forbidden(
            call(&server, Method::POST, &path, BOT, None).await,
            &["token bot may not change other/app"],
        )
        .await;
    }
    let theirs_now = server.queue.get(&theirs).await.unwrap().unwrap();
    assert_eq!(theirs_now.status, JobStatus::Queued, "untouched");
    forbidden(
        call(
            &server,
            Method::POST,
            "/api/v1/schedules/nightly/run",
            BOT,
            None,
        )
        .await,
        &["token bot may not change other/app"],
    )
    .await;

    // Its own repository's blocked job it approves, and is named as the approver.
    let mut fork = raibid_model::NewJob::new(
        "acme/app",
        "https://git.example/acme/app.git",
        "refs/pull/7/head",
        SHA,
        raibid_model::Event::PullRequest,
    );
    fork.from_fork = true;
    let blocked = match server.queue.enqueue_blocked(fork).await.unwrap() {
        raibid_queue::Enqueued::Created(job) => job.id,
        other => panic!("{other:?}"),
    };
    let path = format!("/api/v1/jobs/{blocked}/approve");
    let response = call(&server, Method::POST, &path, BOT, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await["approved_by"], "bot");

    // Its own repository's job it cancels; a job id that does not exist is still 404.
    let path = format!("/api/v1/jobs/{ours}/cancel");
    let response = call(&server, Method::POST, &path, BOT, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = call(&server, Method::POST, "/api/v1/jobs/nope/cancel", BOT, None).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // Secrets are not its scope, for any repository.
    let path = "/api/v1/repos/acme/app/secrets/TOKEN";
    let set = Some(json!({ "value": "v" }));
    forbidden(
        call(&server, Method::PUT, path, BOT, set).await,
        &["token bot", "needs the `secrets` scope", "its scopes: jobs"],
    )
    .await;
}

#[tokio::test]
async fn a_read_token_reads_and_changes_nothing() {
    let server = server().await;
    let id = job_id(submit(&server, TOKEN, "acme/app").await).await;
    let response = call(
        &server,
        Method::GET,
        &format!("/api/v1/jobs/{id}"),
        READER,
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    // Every scope reads: the bot follows what it submitted.
    let response = call(&server, Method::GET, "/api/v1/jobs", BOT, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    // Reads still need a token here.
    assert_eq!(
        server.get("/api/v1/jobs").await.status(),
        StatusCode::UNAUTHORIZED
    );

    forbidden(
        submit(&server, READER, "acme/app").await,
        &["token reader may not do this", "the `jobs` scope"],
    )
    .await;
    let path = format!("/api/v1/jobs/{id}/cancel");
    forbidden(
        call(&server, Method::POST, &path, READER, None).await,
        &["the `jobs` scope"],
    )
    .await;
    assert_eq!(
        server.queue.get(&id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    forbidden(
        call(
            &server,
            Method::GET,
            "/api/v1/repos/acme/app/secrets",
            READER,
            None,
        )
        .await,
        &["the `secrets` scope"],
    )
    .await;
}

/// When reads need a token, a token limited to some repositories reads only their jobs, logs,
/// artifacts, badges and schedules: another repository's job is "not found", as a private
/// repository is on Gitea; a repository it names itself is refused.
#[tokio::test]
async fn a_limited_token_reads_only_its_repositories() {
    let server = server().await;
    let ours = job_id(submit(&server, TOKEN, "ACME/App").await).await;
    let theirs = job_id(submit(&server, TOKEN, "other/app").await).await;
    let get = |path: String, token: &'static str| {
        let server = &server;
        async move { call(server, Method::GET, &path, token, None).await }
    };

    let listed = json(get("/api/v1/jobs".into(), BOT).await).await;
    let ids: Vec<&str> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [ours.as_str()], "{listed}");
    let listed = json(get("/api/v1/jobs".into(), READER).await).await;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 2, "{listed}");
    forbidden(
        get("/api/v1/jobs?repo=other/app".into(), BOT).await,
        &["token bot may not read other/app", "acme/*"],
    )
    .await;
    assert_eq!(
        get("/api/v1/jobs?repo=acme/app".into(), BOT).await.status(),
        StatusCode::OK
    );

    for path in ["", "/logs", "/artifacts"] {
        let response = get(format!("/api/v1/jobs/{theirs}{path}"), BOT).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let body = json(response).await;
        assert_eq!(
            body["error"]["message"],
            format!("job {theirs} not found"),
            "{path}"
        );
    }
    assert_eq!(
        get(format!("/api/v1/jobs/{ours}"), BOT).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get(format!("/api/v1/jobs/{ours}/logs"), BOT).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get(format!("/api/v1/jobs/{theirs}"), READER).await.status(),
        StatusCode::OK
    );

    forbidden(
        get("/api/v1/repos/other/app/badge.svg".into(), BOT).await,
        &["token bot may not read other/app"],
    )
    .await;
    assert_eq!(
        get("/api/v1/repos/acme/app/badge.svg".into(), BOT)
            .await
            .status(),
        StatusCode::OK
    );

    let repos = json(get("/api/v1/repos".into(), BOT).await).await;
    assert_eq!(repos["repos"].as_array().unwrap().len(), 1, "{repos}");
    assert_eq!(repos["repos"][0]["repo"], "ACME/App", "{repos}");
    let repos = json(get("/api/v1/repos".into(), READER).await).await;
    assert_eq!(repos["repos"].as_array().unwrap().len(), 2, "{repos}");
    forbidden(
        get("/api/v1/repos/other/app".into(), BOT).await,
        &["token bot may not read other/app"],
    )
    .await;
    assert_eq!(
        get("/api/v1/repos/ACME/App".into(), BOT).await.status(),
        StatusCode::OK
    );

    // The nightly schedule builds other/app.
    let schedules = json(get("/api/v1/schedules".into(), BOT).await).await;
    assert_eq!(schedules["schedules"], json!([]), "{schedules}");
    let schedules = json(get("/api/v1/schedules".into(), READER).await).await;
    assert_eq!(schedules["schedules"][0]["name"], "nightly", "{schedules}");

    // The farm's queues and agents are no repository's.
    for path in ["/api/v1/queues", "/api/v1/agents"] {
        assert_eq!(
            get(path.into(), BOT).await.status(),
            StatusCode::OK,
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_secrets_token_sets_only_its_repositories_secrets() {
    let server = server().await;
    let set = || Some(json!({ "value": "s3cr3t-value" }));
    let response = call(
        &server,
        Method::PUT,
        "/api/v1/repos/acme/app/secrets/DEPLOY_KEY",
        KEEPER,
        set(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = call(
        &server,
        Method::GET,
        "/api/v1/repos/acme/app/secrets",
        KEEPER,
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    for (method, path) in [
        (Method::PUT, "/api/v1/repos/acme/lib/secrets/DEPLOY_KEY"),
        (Method::GET, "/api/v1/repos/acme/lib/secrets"),
        (Method::DELETE, "/api/v1/repos/acme/lib/secrets/DEPLOY_KEY"),
    ] {
        let body = (method == Method::PUT).then(set).flatten();
        forbidden(
            call(&server, method, path, KEEPER, body).await,
            &[
                "token keeper may not change acme/lib",
                "its repos are acme/app",
            ],
        )
        .await;
    }
    // An owner's secrets reach every repository of the owner: not for a token of one.
    forbidden(
        call(
            &server,
            Method::PUT,
            "/api/v1/orgs/acme/secrets/DEPLOY_KEY",
            KEEPER,
            set(),
        )
        .await,
        &["every repository of acme (`acme/*`)"],
    )
    .await;
    for scope in [
        SecretScope::Repo("acme/lib".into()),
        SecretScope::Owner("acme".into()),
    ] {
        assert!(server.queue.secrets(&scope).await.unwrap().is_empty());
    }
    // A bad name is still 400 before the token's repositories are looked at.
    let response = call(
        &server,
        Method::PUT,
        "/api/v1/repos/acme/app/secrets/RAIBID_X",
        KEEPER,
        set(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // The unlimited token sets the owner's.
    let response = call(
        &server,
        Method::PUT,
        "/api/v1/orgs/acme/secrets/DEPLOY_KEY",
        TOKEN,
        set(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
}
