//! A real server on a free loopback port in front of a private redis-server, and helpers to
//! talk to it the way forges and the CLI do.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the kit"
)]

pub mod browser;
pub mod sse;

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use raibid_config::{Config, Secret, TokenHash, hash_token};
use raibid_queue::{Queue, QueueOptions};
use raibid_server::{ServerError, ServerOptions};
use raibid_testkit::RedisServer;
use reqwest::header::{HeaderMap, HeaderValue};
use sha2::Sha256;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The secret every fixture signature was computed with.
pub const SECRET: &str = "IsWishesWereHorsesWedAllBeEatingSteak!";
/// The API token the test config accepts.
pub const TOKEN: &str = "rbd_test_token_5f0c2a8e9d";
/// The consumer group of the server's commit-status reporter.
pub const STATUS_GROUP: &str = "raibid-status";
pub const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// The configuration tests start from: fixture secret, one API token.
pub fn config() -> Config {
    let mut config = Config::default();
    config.server.webhook_secret = Secret::new(SECRET);
    config.server.tokens = vec![TokenHash::parse(&hash_token(TOKEN)).unwrap().into()];
    config
}

pub struct TestServer {
    pub redis: RedisServer,
    /// A queue of the test's own, on the same Redis as the server's.
    pub queue: Queue,
    pub base: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), ServerError>>>,
}

pub fn queue_for(redis: &RedisServer) -> Queue {
    let mut options = QueueOptions::new(redis.url());
    options.command_timeout = Duration::from_secs(2);
    Queue::open(options).unwrap()
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(config()).await
    }

    pub async fn start_with(config: Config) -> Self {
        Self::start_on(RedisServer::start(), config).await
    }

    /// A server on a Redis the test prepared.
    pub async fn start_on(redis: RedisServer, config: Config) -> Self {
        Self::start_with_clock(redis, config, raibid_server::system_clock()).await
    }

    /// A server whose scheduler takes the time from `clock`.
    pub async fn start_with_clock(
        redis: RedisServer,
        config: Config,
        clock: std::sync::Arc<dyn raibid_server::Clock>,
    ) -> Self {
        let server_queue = queue_for(&redis);
        Self::start_with_queue(redis, config, clock, server_queue).await
    }

    /// A server that speaks to Redis through `server_queue` (another Redis user, say).
    pub async fn start_with_queue(
        redis: RedisServer,
        config: Config,
        clock: std::sync::Arc<dyn raibid_server::Clock>,
        server_queue: Queue,
    ) -> Self {
        let queue = queue_for(&redis);
        // The reporter's consumer group starts at the end of the events stream; creating it
        // first means no event of the test can come before it.
        queue.job_events(STATUS_GROUP, "test").await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let options = ServerOptions {
            config,
            queue: server_queue,
            instance: "test".into(),
            clock,
        };
        let handle = tokio::spawn(raibid_server::serve(listener, options, async move {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            redis,
            queue,
            base,
            client,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Asks the server to stop and returns how long `serve` took to return.
    pub async fn shutdown(&mut self) -> Duration {
        let started = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let handle = self.handle.take().expect("server running");
        tokio::time::timeout(Duration::from_secs(15), handle)
            .await
            .expect("serve returned within 15 s")
            .expect("serve did not panic")
            .expect("serve returned Ok");
        started.elapsed()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn get_authed(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete_authed(&self, path: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// POSTs an empty JSON body to `path` with the token and checks the answer is 409 whose
    /// message contains `says`.
    pub async fn post_conflict(&self, path: &str, says: &str) {
        let response = self.post_json(path, &serde_json::json!({})).await;
        assert_eq!(response.status(), reqwest::StatusCode::CONFLICT, "{path}");
        let body = json(response).await;
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(says)),
            "{path}: {body}"
        );
    }

    pub async fn post_webhook(
        &self,
        forge: &str,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/webhooks/{forge}")))
            .headers(headers)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Sends a recorded fixture as the forge did.
    pub async fn deliver(&self, name: &str) -> reqwest::Response {
        let (body, headers) = fixture(name);
        let forge = name.split('/').next().unwrap();
        self.post_webhook(forge, headers, body).await
    }

    /// Claims the job queued in the default pool as agent `agent`, as an agent would.
    pub async fn claim_one(&self, agent: &str) -> raibid_queue::Claimed {
        let mut claimer = self.queue.claimer(agent).await.unwrap();
        claimer
            .claim(
                &[raibid_model::PoolName::default()],
                std::time::Duration::ZERO,
            )
            .await
            .unwrap()
            .expect("a job is queued")
    }

    /// Queues `spec` and has an agent claim it, leaving it running. Jobs are listed newest
    /// first by id, which counts milliseconds: the pause keeps their order the order of the
    /// calls.
    pub async fn run_claimed(&self, spec: raibid_model::NewJob) -> raibid_queue::Claimed {
        tokio::time::sleep(Duration::from_millis(3)).await;
        let raibid_queue::Enqueued::Created(job) = self.queue.enqueue(spec).await.unwrap() else {
            panic!("not created");
        };
        let claimed = self.claim_one("agent").await;
        assert_eq!(claimed.job.id, job.id);
        claimed
    }

    /// Queues `spec` and has an agent run it to `end`; its id.
    pub async fn run_to(&self, spec: raibid_model::NewJob, end: raibid_model::JobStatus) -> String {
        let claimed = self.run_claimed(spec).await;
        self.end(&claimed, end).await;
        claimed.job.id
    }

    /// Ends the claimed job as `status`, as its agent's ack does; the claim must still hold.
    pub async fn end(&self, claimed: &raibid_queue::Claimed, status: raibid_model::JobStatus) {
        assert!(
            self.queue
                .ack(claimed, &raibid_model::Outcome::new(status))
                .await
                .unwrap(),
            "the claim of {} was lost",
            claimed.job.id
        );
    }

    /// Total number of jobs in the queue.
    pub async fn job_count(&self) -> usize {
        self.queue
            .list(&Default::default(), None, 1000)
            .await
            .unwrap()
            .jobs
            .len()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub use raibid_testkit::fixtures::webhook as fixture;

pub fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Headers of a Gitea `event` delivery of `body` signed with `secret`.
pub fn gitea_headers(event: &str, delivery: &str, secret: &str, body: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("x-gitea-event", HeaderValue::from_str(event).unwrap());
    headers.insert("x-gitea-delivery", HeaderValue::from_str(delivery).unwrap());
    headers.insert(
        "x-gitea-signature",
        HeaderValue::from_str(&hmac_hex(secret, body)).unwrap(),
    );
    headers
}

/// A minimal Gitea push of `branch` at `sha` in `repo`.
pub fn push_body(repo: &str, branch: &str, sha: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ref": format!("refs/heads/{branch}"),
        "before": "0000000000000000000000000000000000000001",
        "after": sha,
        "repository": {
            "full_name": repo,
            "clone_url": format!("https://git.example/{repo}.git"),
            "html_url": format!("https://git.example/{repo}"),
            "default_branch": "main"
        },
        "sender": { "login": "tester" }
    }))
    .unwrap()
}

pub async fn json(response: reqwest::Response) -> serde_json::Value {
    let status = response.status();
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"))
}

/// Polls `check` every 50 ms until it returns `Some`, failing after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the test binary's tracing logs, kept to be searched: the one global subscriber of the
/// binary, installed by the first call (later calls share it, whatever level they ask for).
pub fn capture_logs(level: tracing::Level) -> raibid_testkit::LogBuffer {
    static LOGS: std::sync::OnceLock<raibid_testkit::LogBuffer> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = raibid_testkit::LogBuffer::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
    .clone()
}
