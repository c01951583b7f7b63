//! Commit statuses sent to a forge: a real HTTP server on loopback stands in for Gitea and
//! GitHub, and every request it gets is checked against Gitea's own OpenAPI description.

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::routing::any;
use raibid_config::{Config, Secret};
use raibid_model::{JobStatus, Outcome, PoolName};
use raibid_testkit::fixtures::{gitea_swagger as swagger, json_type};
use serde_json::Value;
use support::{TestServer, config, eventually, json};

const GITEA_TOKEN: &str = "gitea-api-token-77";
const GITHUB_TOKEN: &str = "ghp_github_token_88";
const STATUS_PATH: &str = "/repos/{owner}/{repo}/statuses/{sha}";

#[derive(Debug, Clone)]
struct Call {
    method: Method,
    path: String,
    authorization: String,
    content_type: String,
    body: Value,
}

#[derive(Clone, Default)]
struct Forge {
    calls: Arc<Mutex<Vec<Call>>>,
    /// Statuses to answer with, in order; 201 once they run out.
    script: Arc<Mutex<VecDeque<StatusCode>>>,
    /// Answer every call with this instead.
    always: Arc<Mutex<Option<StatusCode>>>,
}

impl Forge {
    async fn start(self) -> String {
        let app = Router::new().fallback(any(record)).with_state(self);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        base
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    async fn wait_for_calls(&self, n: usize) -> Vec<Call> {
        eventually(
            Duration::from_secs(15),
            &format!("{n} status calls"),
            || async {
                let calls = self.calls();
                (calls.len() >= n).then_some(calls)
            },
        )
        .await
    }
}

async fn record(
    State(forge): State<Forge>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, &'static str) {
    let text = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    forge.calls.lock().unwrap().push(Call {
        method,
        path: uri.path().to_owned(),
        authorization: text("authorization"),
        content_type: text("content-type"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let status = match *forge.always.lock().unwrap() {
        Some(status) => status,
        None => forge
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(StatusCode::CREATED),
    };
    (status, "{}")
}

fn forge_config(base: &str) -> Config {
    let mut cfg = config();
    cfg.gitea.url = base.to_owned();
    cfg.gitea.token = Secret::new(GITEA_TOKEN);
    cfg.server.github_api_url = base.to_owned();
    cfg.server.github_token = Secret::new(GITHUB_TOKEN);
    cfg.server.public_url = "https://ci.example/".into();
    cfg
}

fn assert_gitea_create_status(spec: &Value, call: &Call, owner: &str, repo: &str, sha: &str) {
    let operation = &spec["paths"][STATUS_PATH]["post"];
    assert_eq!(operation["operationId"], "repoCreateStatus");
    assert_eq!(call.method, Method::POST);
    let expected_path = format!(
        "{}{}",
        spec["basePath"].as_str().unwrap(),
        STATUS_PATH
            .replace("{owner}", owner)
            .replace("{repo}", repo)
            .replace("{sha}", sha)
    );
    assert_eq!(call.path, expected_path);
    // Operations without their own `consumes` inherit the document's.
    let consumes = operation
        .get("consumes")
        .unwrap_or(&spec["consumes"])
        .as_array()
        .unwrap();
    assert!(
        consumes
            .iter()
            .any(|c| call.content_type.starts_with(c.as_str().unwrap())),
        "{} not in {consumes:?}",
        call.content_type
    );

    let body_param = operation["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["in"] == "body")
        .unwrap();
    let reference = body_param["schema"]["$ref"].as_str().unwrap();
    let name = reference.strip_prefix("#/definitions/").unwrap();
    assert_eq!(name, "CreateStatusOption");
    let schema = &spec["definitions"][name];
    assert_eq!(json_type(&call.body), schema["type"].as_str().unwrap());
    let properties = schema["properties"].as_object().unwrap();
    let body = call.body.as_object().unwrap();
    for (key, value) in body {
        let property = properties
            .get(key)
            .unwrap_or_else(|| panic!("{key} is not a CreateStatusOption property"));
        assert_eq!(
            property["type"].as_str().unwrap(),
            json_type(value),
            "{key}"
        );
        if let Some(allowed) = property["enum"].as_array() {
            assert!(allowed.contains(value), "{key}={value} not in {allowed:?}");
        }
    }
    for required in schema["required"].as_array().into_iter().flatten() {
        assert!(
            body.contains_key(required.as_str().unwrap()),
            "{required} missing"
        );
    }
    for key in ["state", "target_url", "description", "context"] {
        assert!(body.contains_key(key), "{key} is always sent: {body:?}");
    }
}

#[tokio::test]
async fn each_status_change_is_reported_as_gitea_and_github_expect() {
    let forge = Forge::default();
    let base = forge.clone().start().await;
    let server = TestServer::start_with(forge_config(&base)).await;
    let spec = swagger();
    let sha = "29be01c073851cf0db0c6a466e396b725a670453";

    let queued = json(server.deliver("gitea/push").await).await;
    let id = queued["job_id"].as_str().unwrap().to_owned();
    let calls = forge.wait_for_calls(1).await;
    let call = &calls[0];
    assert_gitea_create_status(&spec, call, "Test-CI", "multi-line-secrets", sha);
    assert_eq!(call.authorization, format!("token {GITEA_TOKEN}"));
    assert_eq!(call.body["state"], "pending");
    assert_eq!(call.body["description"], "queued");
    assert_eq!(call.body["context"], "raibid/push/default");
    assert_eq!(
        call.body["target_url"],
        format!("https://ci.example/jobs/{id}")
    );

    let claimed = server.claim_one("spark-7").await;
    let calls = forge.wait_for_calls(2).await;
    assert_gitea_create_status(&spec, &calls[1], "Test-CI", "multi-line-secrets", sha);
    assert_eq!(calls[1].body["state"], "pending");
    assert_eq!(calls[1].body["description"], "running on spark-7");

    server
        .queue
        .ack(
            &claimed,
            &Outcome::new(JobStatus::Failure).with_reason("step test exited with 2"),
        )
        .await
        .unwrap();
    let calls = forge.wait_for_calls(3).await;
    assert_gitea_create_status(&spec, &calls[2], "Test-CI", "multi-line-secrets", sha);
    assert_eq!(calls[2].body["state"], "failure");
    assert_eq!(
        calls[2].body["description"],
        "failed: step test exited with 2"
    );

    // GitHub: the same body at the API root, with a bearer token.
    server.deliver("github/push").await;
    let calls = forge.wait_for_calls(4).await;
    let call = &calls[3];
    assert_eq!(call.method, Method::POST);
    assert_eq!(
        call.path,
        "/repos/woodpecker-ci/woodpecker/statuses/366701fde727cb7a9e7f21eb88264f59f6f9b89c"
    );
    assert_eq!(call.authorization, format!("Bearer {GITHUB_TOKEN}"));
    assert_eq!(call.body["state"], "pending");

    // Manual submissions have no forge, so nothing is sent for them.
    let submitted = server
        .post_json(
            "/api/v1/jobs",
            &serde_json::json!({ "repo": "acme/app", "clone_url": "https://git.example/acme/app.git", "sha": sha }),
        )
        .await;
    assert_eq!(submitted.status(), reqwest::StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(forge.calls().len(), 4);
}

async fn metric_line(server: &TestServer, line: &str) {
    eventually(Duration::from_secs(10), line, || async {
        let text = server.get("/metrics").await.text().await.unwrap();
        text.contains(line).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_5xx_is_retried_until_it_succeeds() {
    let forge = Forge::default();
    forge
        .script
        .lock()
        .unwrap()
        .extend([StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE]);
    let base = forge.clone().start().await;
    let server = TestServer::start_with(forge_config(&base)).await;
    server.deliver("gitea/push").await;
    let calls = forge.wait_for_calls(3).await;
    assert!(
        calls.iter().all(|c| c.body == calls[0].body),
        "the same status each time"
    );
    metric_line(
        &server,
        r#"raibid_status_reports_total{forge="gitea",outcome="success"} 1"#,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(forge.calls().len(), 3, "no more calls once accepted");
}

#[tokio::test]
async fn a_4xx_is_not_retried_and_does_not_touch_the_job() {
    let forge = Forge::default();
    *forge.always.lock().unwrap() = Some(StatusCode::NOT_FOUND);
    let base = forge.clone().start().await;
    let server = TestServer::start_with(forge_config(&base)).await;
    let id = json(server.deliver("gitea/push").await).await["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    forge.wait_for_calls(1).await;
    metric_line(
        &server,
        r#"raibid_status_reports_total{forge="gitea",outcome="failure"} 1"#,
    )
    .await;
    // Longer than every backoff of the retry schedule together.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(forge.calls().len(), 1, "a 404 is final");
    assert_eq!(
        server.queue.get(&id).await.unwrap().unwrap().status,
        JobStatus::Queued,
        "a failed report never fails the job"
    );
    // The event was acknowledged after giving up: nothing is left pending for this reporter.
    let mut probe = server
        .queue
        .job_events(support::STATUS_GROUP, "test")
        .await
        .unwrap();
    assert!(
        probe
            .next(10, Duration::from_millis(100))
            .await
            .unwrap()
            .is_empty()
    );
}

/// reqwest follows a 301 by repeating the POST as a GET without the body; the 200 of the page
/// it lands on used to count as a status sent, and the status was never sent again.
#[tokio::test]
async fn a_redirect_is_a_failure_not_followed() {
    let elsewhere = Forge::default();
    *elsewhere.always.lock().unwrap() = Some(StatusCode::OK);
    let target = elsewhere.clone().start().await;
    let moved = Router::new().fallback(any(move |uri: Uri| {
        let location = format!("{target}{}", uri.path());
        async move { (StatusCode::MOVED_PERMANENTLY, [("location", location)], "") }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, moved).await.unwrap() });

    let server = TestServer::start_with(forge_config(&base)).await;
    let id = json(server.deliver("gitea/push").await).await["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    metric_line(
        &server,
        r#"raibid_status_reports_total{forge="gitea",outcome="failure"} 1"#,
    )
    .await;
    assert!(elsewhere.calls().is_empty(), "{:?}", elsewhere.calls());
    assert_eq!(server.queue.last_report(&id).await.unwrap(), None);
    let text = server.get("/metrics").await.text().await.unwrap();
    assert!(!text.contains(r#"outcome="success""#), "{text}");
}

/// How many events of the reporter's group are read and not acknowledged.
fn pending_status_events(server: &TestServer) -> String {
    server
        .redis
        .command(&format!(
            "EVAL \"return redis.call('XPENDING', KEYS[1], ARGV[1])[1]\" 1 raibid:ci-jobs:events {}",
            support::STATUS_GROUP
        ))
        .unwrap()
}

/// A forge that cannot be reached is retried without end (within the hour), at a pace that
/// slows down, and the event is kept meanwhile: acknowledging it would lose the status.
#[tokio::test]
async fn an_unreachable_forge_is_retried_and_its_event_kept() {
    // A port nobody listens on: connection refused on every attempt.
    let base = format!("http://127.0.0.1:{}", raibid_testkit::free_port());
    let server = TestServer::start_with(forge_config(&base)).await;
    server.deliver("gitea/push").await;
    // More attempts than the reporter used to make before giving up (4).
    metric_line(
        &server,
        r#"raibid_status_reports_total{forge="gitea",outcome="retry"} 5"#,
    )
    .await;
    let text = server.get("/metrics").await.text().await.unwrap();
    assert!(!text.contains(r#"outcome="failure""#), "{text}");
    assert_eq!(pending_status_events(&server), ":1");
}

/// A forge restarting for a few seconds: the final status, reported while it was down, reaches
/// it once it is back.
#[tokio::test]
async fn a_forge_back_after_an_outage_gets_the_final_status() {
    let port = raibid_testkit::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = TestServer::start_with(forge_config(&base)).await;
    server.deliver("gitea/push").await;
    let claimed = server.claim_one("spark-7").await;
    server
        .queue
        .ack(&claimed, &Outcome::new(JobStatus::Success))
        .await
        .unwrap();
    // Past the reporter's old retry schedule (4 attempts, 1.75 s in all).
    metric_line(
        &server,
        r#"raibid_status_reports_total{forge="gitea",outcome="retry"} 5"#,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let forge = Forge::default();
    let app = Router::new()
        .fallback(any(record))
        .with_state(forge.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let calls = eventually(Duration::from_secs(60), "the final status", || async {
        let calls = forge.calls();
        calls
            .iter()
            .any(|c| c.body["state"] == "success")
            .then_some(calls)
    })
    .await;
    // Every event of the job was folded into the retry, which sent the status of the moment.
    assert_eq!(calls.len(), 1, "{calls:#?}");
    eventually(
        Duration::from_secs(10),
        "the events acknowledged",
        || async { (pending_status_events(&server) == ":0").then_some(()) },
    )
    .await;
}

/// A reader rejoining the group under the name it had would first be handed its own
/// unacknowledged events, among them those waiting for a retry, over and over: it would never
/// read a new event while one forge is down.
#[tokio::test]
async fn a_forge_that_is_down_does_not_hold_up_the_others_after_a_redis_reconnect() {
    let forge = Forge::default();
    let github = forge.clone().start().await;
    let mut cfg = forge_config(&github);
    cfg.gitea.url = format!("http://127.0.0.1:{}", raibid_testkit::free_port());
    let server = TestServer::start_with(cfg).await;
    server.deliver("gitea/push").await;
    metric_line(
        &server,
        r#"raibid_status_reports_total{forge="gitea",outcome="retry"} 2"#,
    )
    .await;
    // Every client connection dropped: the reporter's read fails and it joins again.
    let killed = server.redis.command("CLIENT KILL TYPE normal").unwrap();
    assert!(killed.starts_with(':'), "{killed}");

    // The server's own connection was dropped too: its first command may fail (503).
    eventually(
        Duration::from_secs(10),
        "the GitHub push queued",
        || async {
            server
                .deliver("github/push")
                .await
                .status()
                .is_success()
                .then_some(())
        },
    )
    .await;
    let calls = forge.wait_for_calls(1).await;
    assert_eq!(calls[0].authorization, format!("Bearer {GITHUB_TOKEN}"));
    // The forge records the call before it answers; the GitHub event is acked after that.
    eventually(
        Duration::from_secs(10),
        "only the Gitea event still waits",
        || async { (pending_status_events(&server) == ":1").then_some(()) },
    )
    .await;
}

/// A forge that accepts connections and never answers costs every attempt the whole request
/// timeout (10 s). With more jobs waiting for it than are reported at once, their retries fall
/// due again before a round of them is over; the reporter must still read, and report, new
/// events in between.
#[tokio::test]
async fn retries_of_a_silent_forge_do_not_starve_new_events() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_base = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            held.push(connection);
        }
    });
    let forge = Forge::default();
    let github = forge.clone().start().await;
    let mut cfg = forge_config(&github);
    cfg.gitea.url = silent_base;
    let server = TestServer::start_with(cfg).await;
    for i in 0..20 {
        let sha = format!("{i:040x}");
        let body = support::push_body("acme/app", &format!("b{i}"), &sha);
        let headers = support::gitea_headers("push", &format!("s-{i}"), support::SECRET, &body);
        let response = server.post_webhook("gitea", headers, body).await;
        assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    }
    // As many failed attempts as jobs: the reporter is busy with retries from here on.
    eventually(Duration::from_secs(60), "20 failed attempts", || async {
        let text = server.get("/metrics").await.text().await.unwrap();
        let attempts = text
            .lines()
            .find(|l| l.contains(r#"forge="gitea",outcome="retry""#))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        (attempts >= 20).then_some(())
    })
    .await;

    server.deliver("github/push").await;
    let calls = eventually(Duration::from_secs(40), "the GitHub status", || async {
        let calls = forge.calls();
        (!calls.is_empty()).then_some(calls)
    })
    .await;
    assert_eq!(calls[0].authorization, format!("Bearer {GITHUB_TOKEN}"));
}

/// An event whose report is still being retried when the job moves on must not put its old
/// status on the forge after the new one: each attempt sends the job's status as it is then,
/// and the later events find that status already sent.
#[tokio::test]
async fn a_retried_report_sends_the_jobs_current_status_not_the_events() {
    let forge = Forge::default();
    *forge.always.lock().unwrap() = Some(StatusCode::SERVICE_UNAVAILABLE);
    let base = forge.clone().start().await;
    let server = TestServer::start_with(forge_config(&base)).await;
    server.deliver("gitea/push").await;
    let first = forge.wait_for_calls(1).await;
    assert_eq!(first[0].body["description"], "queued");

    // Within the first backoff (250 ms): the job runs and fails.
    let claimed = server.claim_one("spark-7").await;
    server
        .queue
        .ack(&claimed, &Outcome::new(JobStatus::Failure))
        .await
        .unwrap();
    let after_ack = forge.calls().len();
    *forge.always.lock().unwrap() = None;

    let calls = forge.wait_for_calls(after_ack + 1).await;
    // Longer than the rest of the retry schedule; the running and failure events come too.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let calls_now = forge.calls();
    let later: Vec<_> = calls_now[after_ack..]
        .iter()
        .map(|c| c.body["state"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(later, ["failure"], "{calls:?}");
}

/// Replicas get a new consumer name on every rollout: the events a stopped one had read and
/// not acknowledged are taken over by the next reporter.
#[tokio::test]
async fn events_a_stopped_replica_left_unacknowledged_are_reported() {
    let forge = Forge::default();
    let base = forge.clone().start().await;
    let redis = raibid_testkit::RedisServer::start();
    let queue = support::queue_for(&redis);
    let mut gone = queue
        .job_events(support::STATUS_GROUP, "server-old-pod")
        .await
        .unwrap();
    let (body, _) = support::fixture("gitea/push");
    let trigger = match raibid_forge::parse(
        raibid_model::Forge::Gitea,
        &support::fixture("gitea/push").1,
        &body,
    )
    .unwrap()
    {
        raibid_forge::Parsed::Trigger(trigger) => trigger,
        other => panic!("{other:?}"),
    };
    queue
        .enqueue(trigger.into_new_job(PoolName::default(), None))
        .await
        .unwrap();
    let read = gone.next(10, Duration::from_millis(500)).await.unwrap();
    assert_eq!(read.len(), 1);
    drop(gone); // the old pod stopped before reporting
    // As if it stopped two minutes ago: idle time is what the new reporter goes by.
    let pending = redis
        .command(&format!(
            "XCLAIM raibid:ci-jobs:events {} server-old-pod 0 {} IDLE 120000 JUSTID",
            support::STATUS_GROUP,
            read[0].id
        ))
        .unwrap();
    assert_eq!(pending, "*1");

    let _server = TestServer::start_on(redis, forge_config(&base)).await;
    let calls = forge.wait_for_calls(1).await;
    assert_eq!(calls[0].body["description"], "queued");
    assert_eq!(calls[0].body["context"], "raibid/push/default");
}

/// Runs a two-variant matrix (`FLAVOUR: [plain, fancy]`, step `run` = `step`) through a real
/// agent runner, including a rerun of the matrix job as after an agent died between queueing
/// the variants and acknowledging; returns the forge's calls once the matrix job's context
/// shows `expected_state`.
async fn run_matrix(step: &str, expected_state: &str) -> Vec<Call> {
    Matrix::run(step).await.settled(expected_state).await
}

/// A matrix job of two variants, `FLAVOUR` plain and fancy, run to the end with `step` by a
/// real runner, with the server's reporter sending statuses to a fake forge.
struct Matrix {
    forge: Forge,
    server: TestServer,
    runner: raibid_agent::Runner,
    parent: String,
    _dir: tempfile::TempDir,
}

impl Matrix {
    async fn run(step: &str) -> Self {
        use raibid_agent::executor::{BwrapExecutor, BwrapOptions, Executor};
        use raibid_agent::{GitCheckout, Runner, RunnerSettings, SecretStore};

        raibid_testkit::require_binary("bwrap", "bubblewrap");
        let forge = Forge::default();
        let base = forge.clone().start().await;
        let server = TestServer::start_with(forge_config(&base)).await;
        let repo = raibid_testkit::GitRepo::new();
        let pipeline = format!(
            "matrix:\n  FLAVOUR: [plain, fancy]\nsteps:\n  - name: check\n    run: {step}\n"
        );
        let sha = repo.commit(&[(".raibid.yaml", pipeline.as_str())], "matrix");
        let mut spec = raibid_model::NewJob::new(
            "acme/app",
            repo.url(),
            "refs/heads/main",
            &sha,
            raibid_model::Event::Push,
        );
        spec.forge = Some(raibid_model::Forge::Gitea);
        let parent = match server.queue.enqueue(spec).await.unwrap() {
            raibid_queue::Enqueued::Created(job) => job.id,
            other => panic!("{other:?}"),
        };

        let dir = tempfile::tempdir().unwrap();
        let executor: Arc<dyn Executor> = Arc::new(BwrapExecutor::new(BwrapOptions {
            network: false,
            hide: vec![dir.path().join("cache")],
            ..Default::default()
        }));
        let runner = Runner {
            queue: server.queue.clone(),
            executor,
            git: GitCheckout::new(dir.path().join("cache"), None),
            images: None,
            artifacts: None,
            secrets: SecretStore::default(),
            settings: RunnerSettings {
                agent_name: "spark-1".into(),
                workspace_root: dir.path().join("work"),
                keep_workspace: false,
                heartbeat_interval: Duration::from_millis(200),
                step_path: "/usr/local/bin:/usr/bin:/bin".into(),
                step_env: Default::default(),
                registry: "registry.invalid".into(),
                repos: raibid_agent::RepoFilter::any(),
                public_url: String::new(),
                ephemeral: false,
            },
        };
        let mut claimer = server.queue.claimer("spark-1").await.unwrap();
        let mut claim = async || {
            claimer
                .claim(&[PoolName::default()], Duration::ZERO)
                .await
                .unwrap()
                .expect("a job is queued")
        };
        let claimed = claim().await;
        assert_eq!(claimed.job.id, parent);
        let stop = tokio_util::sync::CancellationToken::new();
        runner.run(claimed.clone(), stop.clone()).await.unwrap();
        let children = server.queue.get(&parent).await.unwrap().unwrap().children;
        assert_eq!(children.len(), 2);
        // The rerun finds the variants it queued the first time.
        let _ = runner.run(claimed, stop.clone()).await;
        assert_eq!(
            server.queue.get(&parent).await.unwrap().unwrap().children,
            children
        );
        assert_eq!(server.job_count().await, 3, "no variant queued twice");

        for _ in 0..2 {
            let variant = claim().await;
            assert_eq!(
                variant.job.spec.matrix_parent.as_deref(),
                Some(parent.as_str())
            );
            assert!(children.contains(&variant.job.id));
            runner.run(variant, stop.clone()).await.unwrap();
        }
        drop(claimer);
        Self {
            forge,
            server,
            runner,
            parent,
            _dir: dir,
        }
    }

    /// The statuses sent, once the matrix context is in `expected_state` and stays there.
    async fn settled(&self, expected_state: &str) -> Vec<Call> {
        let forge = &self.forge;
        let parent_state = |calls: &[Call]| {
            calls
                .iter()
                .rfind(|c| c.body["context"] == "raibid/push/default")
                .map(|c| c.body["state"].as_str().unwrap().to_owned())
        };
        eventually(
            Duration::from_secs(15),
            &format!("the matrix context in state {expected_state}"),
            || async {
                (parent_state(&forge.calls()).as_deref() == Some(expected_state)).then_some(())
            },
        )
        .await;
        // Whatever events are still being handled must not change it.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let calls = forge.calls();
        assert_eq!(
            parent_state(&calls).as_deref(),
            Some(expected_state),
            "{calls:#?}"
        );
        calls
    }
}

fn last_on<'c>(calls: &'c [Call], context: &str) -> &'c Value {
    &calls
        .iter()
        .rfind(|c| c.body["context"] == context)
        .unwrap_or_else(|| panic!("nothing on {context}: {calls:#?}"))
        .body
}

#[tokio::test]
async fn a_matrix_with_a_failing_variant_fails_on_the_matrix_context() {
    let calls = run_matrix(r#"test "$FLAVOUR" = plain"#, "failure").await;
    let parent = last_on(&calls, "raibid/push/default");
    assert_eq!(
        parent["description"],
        "1 of 2 variants failed: FLAVOUR=fancy"
    );
    assert_eq!(
        last_on(&calls, "raibid/push/default/FLAVOUR=fancy")["state"],
        "failure"
    );
    assert_eq!(
        last_on(&calls, "raibid/push/default/FLAVOUR=plain")["state"],
        "success"
    );
}

/// A retried variant stands in for the run it repeats: once the failed variant passes on a
/// retry, the matrix context turns green.
#[tokio::test]
async fn a_retried_variant_changes_the_matrix_context() {
    // Visible read-only inside the sandbox (only /tmp and home directories are hidden).
    let flag_dir = tempfile::Builder::new()
        .prefix("raibid-test-flag-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let flag = flag_dir.path().join("fixed");
    let matrix = Matrix::run(&format!(
        r#"test "$FLAVOUR" = plain || test -e {}"#,
        flag.display()
    ))
    .await;
    matrix.settled("failure").await;
    std::fs::write(&flag, "").unwrap();
    let queue = &matrix.server.queue;
    let mut failed = None;
    for id in queue.get(&matrix.parent).await.unwrap().unwrap().children {
        if queue.get(&id).await.unwrap().unwrap().status == JobStatus::Failure {
            failed = Some(id);
        }
    }
    let retried = queue
        .retry(&failed.expect("a failed variant"))
        .await
        .unwrap();
    let mut claimer = queue.claimer("spark-2").await.unwrap();
    let claimed = claimer
        .claim(&[PoolName::default()], Duration::ZERO)
        .await
        .unwrap()
        .expect("the retry is queued");
    assert_eq!(claimed.job.id, retried.id);
    matrix
        .runner
        .run(claimed, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    let calls = matrix.settled("success").await;
    assert_eq!(
        last_on(&calls, "raibid/push/default")["description"],
        "all 2 variants succeeded"
    );
}

#[tokio::test]
async fn a_matrix_whose_variants_all_pass_succeeds_on_the_matrix_context() {
    let calls = run_matrix("true", "success").await;
    let parent = last_on(&calls, "raibid/push/default");
    assert_eq!(parent["description"], "all 2 variants succeeded");
    assert_eq!(
        last_on(&calls, "raibid/push/default/FLAVOUR=fancy")["state"],
        "success"
    );
    assert_eq!(
        last_on(&calls, "raibid/push/default/FLAVOUR=plain")["state"],
        "success"
    );
}

/// A queued job's status says when its pool is paused, and why; a pause and a resume change
/// what the statuses of jobs already queued say.
#[tokio::test]
async fn a_paused_pool_s_queued_jobs_say_why_they_wait() {
    let forge = Forge::default();
    let base = forge.clone().start().await;
    let server = TestServer::start_with(forge_config(&base)).await;

    server.deliver("gitea/push").await;
    let calls = forge.wait_for_calls(1).await;
    assert_eq!(calls[0].body["description"], "queued");

    let paused = server
        .post_json(
            "/api/v1/queues/default/pause",
            &serde_json::json!({ "reason": "driver upgrade" }),
        )
        .await;
    assert_eq!(paused.status(), reqwest::StatusCode::OK);
    let calls = forge.wait_for_calls(2).await;
    assert_eq!(calls[1].path, calls[0].path, "the same job's commit");
    assert_eq!(calls[1].body["state"], "pending");
    assert_eq!(
        calls[1].body["description"],
        "queued: pool default is paused: driver upgrade"
    );

    // Queued while the pool is paused.
    server.deliver("github/push").await;
    let calls = forge.wait_for_calls(3).await;
    assert!(calls[2].path.contains("woodpecker-ci"), "{:?}", calls[2]);
    assert_eq!(
        calls[2].body["description"],
        "queued: pool default is paused: driver upgrade"
    );

    let resumed = server
        .post_json("/api/v1/queues/default/resume", &serde_json::json!({}))
        .await;
    assert_eq!(resumed.status(), reqwest::StatusCode::OK);
    let calls = forge.wait_for_calls(5).await;
    for call in &calls[3..] {
        assert_eq!(call.body["description"], "queued", "{call:?}");
    }
    let mut paths: Vec<&str> = calls[3..].iter().map(|c| c.path.as_str()).collect();
    paths.sort();
    let mut before: Vec<&str> = calls[1..3].iter().map(|c| c.path.as_str()).collect();
    before.sort();
    assert_eq!(paths, before, "both queued jobs' statuses said again");

    // Nothing else: a resume of a running pool announces nothing.
    let resumed = server
        .post_json("/api/v1/queues/default/resume", &serde_json::json!({}))
        .await;
    assert_eq!(resumed.status(), reqwest::StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(forge.calls().len(), 5);
}
