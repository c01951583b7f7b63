//! A client for `/api/v1`.
//!
//! The CLI's `raibid job ...` commands and the dashboard both talk to the server through this
//! crate, never to Redis, so they work the same against a local `raibid up` and a remote cluster.

mod backoff;
mod sse;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use raibid_model::{
    AgentInfo, Event, Job, JobStatus, ListedJob, PoolStats, RepoSecret, ScalerStatus, SecretScope,
};
use serde::{Deserialize, Serialize};

pub use backoff::Backoff;
pub use sse::{LogEvent, SseParser};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the raibid server at {url}: {message}")]
    Unreachable { url: String, message: String },
    /// The server's own `{"error": {"code", "message"}}`. A log stream's `gone` event
    /// becomes status 410 with code `gone`: like a 4xx, asking again will not help.
    #[error("{status}: {message} ({code})")]
    Api {
        status: u16,
        code: String,
        message: String,
        /// The server's `Retry-After` (429, 503): when asking again may succeed.
        retry_after: Option<std::time::Duration>,
    },
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// An argument no request can be made of (a repository that is not `owner/name`).
    #[error("{0}")]
    InvalidArgument(String),
}

/// What `POST /api/v1/jobs` takes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SubmitJob {
    pub repo: String,
    pub clone_url: String,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListJobs {
    pub status: Option<JobStatus>,
    pub repo: Option<String>,
    pub pool: Option<String>,
    /// The branch the jobs build: pushes to it and pull requests into it.
    pub branch: Option<String>,
    pub event: Option<Event>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct JobList {
    pub jobs: Vec<ListedJob>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct CancelReply {
    pub result: String,
    pub status: JobStatus,
    /// A matrix job's variants cancelled with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<String>,
}

/// `POST /api/v1/jobs/{id}/retry-failed`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Retried {
    pub retried: Vec<Job>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct AgentEntry {
    #[serde(flatten)]
    pub info: AgentInfo,
    #[serde(default)]
    pub stale: bool,
}

/// `GET /api/v1/queues`: every pool's stream and what its autoscaler last decided.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Queues {
    pub pools: Vec<PoolStats>,
    #[serde(default)]
    pub scalers: Vec<ScalerStatus>,
}

/// A build (a job that is no matrix variant nor another workflow's job of its push) and the
/// status its commit status gives: for the first job of several, theirs combined.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Build {
    pub status: JobStatus,
    /// What a combined status says (`1 of 3 variants failed: ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub job: Job,
}

/// One entry of `GET /api/v1/repos`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RepoEntry {
    pub repo: String,
    /// When its newest job was queued.
    pub last_queued_at: chrono::DateTime<chrono::Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<Build>,
}

/// A branch, pull request (its number) or tag, and its newest build.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RefBuild {
    pub name: String,
    #[serde(flatten)]
    pub build: Build,
}

/// `GET /api/v1/repos/{owner}/{name}`: a repository's refs with their newest builds, found
/// among its `scanned` newest jobs (`complete` when those were all).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RepoOverview {
    pub repo: String,
    pub branches: Vec<RefBuild>,
    pub pull_requests: Vec<RefBuild>,
    pub tags: Vec<RefBuild>,
    pub scanned: usize,
    pub complete: bool,
}

#[derive(Debug, Deserialize)]
struct Repos {
    repos: Vec<RepoEntry>,
}

/// One entry of `GET /api/v1/schedules`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ScheduleEntry {
    pub name: String,
    pub repo: String,
    pub branch: String,
    pub cron: String,
    pub pool: String,
    /// The next occurrence, in UTC; none for an expression that never matches again.
    #[serde(default)]
    pub next: Option<chrono::DateTime<chrono::Utc>>,
    /// The newest occurrence a scheduler handled (queued, or passed over as too old).
    #[serde(default)]
    pub last_occurrence: Option<chrono::DateTime<chrono::Utc>>,
    /// The job the last queued occurrence made.
    #[serde(default)]
    pub last_job: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct SecretList {
    secrets: Vec<RepoSecret>,
}

#[derive(Debug, Clone, Deserialize)]
struct Schedules {
    schedules: Vec<ScheduleEntry>,
}

#[derive(Debug, Clone, Deserialize)]
struct Agents {
    agents: Vec<AgentEntry>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// Plain-text log read: the text and where to continue.
#[derive(Debug, Clone, PartialEq)]
pub struct LogText {
    pub text: String,
    pub cursor: Option<String>,
    pub finished: bool,
}

#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    stream_idle: Duration,
}

/// How long a followed log may stay silent: the server sends a keep-alive every 15 s, so
/// three missed ones mean the connection is gone (a half-open TCP connection, after a server
/// node died or a NAT forgot it, would otherwise look "live" for many minutes).
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(45);

impl Client {
    pub fn new(base_url: &str, token: Option<String>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(Self {
            base: base_url.trim_end_matches('/').to_owned(),
            token: token.filter(|t| !t.is_empty()),
            http,
            stream_idle: STREAM_IDLE_TIMEOUT,
        })
    }

    /// Replaces [`STREAM_IDLE_TIMEOUT`] for followed logs.
    pub fn with_stream_idle_timeout(mut self, idle: Duration) -> Self {
        self.stream_idle = idle;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            message: e.without_url().to_string(),
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        // Seconds only: the server sends no HTTP dates.
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(std::time::Duration::from_secs);
        let body = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&body) {
            Ok(e) => Err(ClientError::Api {
                status,
                code: e.error.code,
                message: e.error.message,
                retry_after,
            }),
            Err(_) => Err(ClientError::Api {
                status,
                code: "http".into(),
                message: body.chars().take(200).collect(),
                retry_after,
            }),
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = self.send(req.timeout(Duration::from_secs(30))).await?;
        resp.json()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub async fn submit(&self, job: &SubmitJob) -> Result<Job, ClientError> {
        self.json(
            self.request(reqwest::Method::POST, "/api/v1/jobs")
                .json(job),
        )
        .await
    }

    /// [`Self::submit`] with an `Idempotency-Key`: sent again, with the same job and key, after
    /// an answer that left it unknown whether the job was queued (a 503, a timeout, no
    /// answer), it queues no second job; the server answers with the one queued before.
    pub async fn submit_with_key(&self, job: &SubmitJob, key: &str) -> Result<Job, ClientError> {
        self.json(
            self.request(reqwest::Method::POST, "/api/v1/jobs")
                .header("Idempotency-Key", key)
                .json(job),
        )
        .await
    }

    pub async fn list(&self, q: &ListJobs) -> Result<JobList, ClientError> {
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(s) = q.status {
            params.push(("status", s.to_string()));
        }
        if let Some(r) = &q.repo {
            params.push(("repo", r.clone()));
        }
        if let Some(p) = &q.pool {
            params.push(("pool", p.clone()));
        }
        if let Some(b) = &q.branch {
            params.push(("branch", b.clone()));
        }
        if let Some(e) = q.event {
            params.push(("event", e.as_str().to_owned()));
        }
        if let Some(c) = &q.cursor {
            params.push(("cursor", c.clone()));
        }
        if let Some(l) = q.limit {
            params.push(("limit", l.to_string()));
        }
        self.json(
            self.request(reqwest::Method::GET, "/api/v1/jobs")
                .query(&params),
        )
        .await
    }

    pub async fn job(&self, id: &str) -> Result<Job, ClientError> {
        self.json(self.request(
            reqwest::Method::GET,
            &format!("/api/v1/jobs/{}", segment(id)),
        ))
        .await
    }

    /// `GET /api/v1/jobs/{id}/build`: the job with the status its commit status gives (for the
    /// first job of a matrix or of several workflows, its jobs' combined).
    pub async fn build(&self, id: &str) -> Result<Build, ClientError> {
        self.json(self.request(
            reqwest::Method::GET,
            &format!("/api/v1/jobs/{}/build", segment(id)),
        ))
        .await
    }

    /// [`Client::job`], with `None` for a job the server does not have (never existed, or pruned
    /// since it was last seen), for callers that watch jobs which may go away.
    pub async fn find_job(&self, id: &str) -> Result<Option<Job>, ClientError> {
        match self.job(id).await {
            Ok(job) => Ok(Some(job)),
            Err(ClientError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn cancel(&self, id: &str) -> Result<CancelReply, ClientError> {
        self.json(self.request(
            reqwest::Method::POST,
            &format!("/api/v1/jobs/{}/cancel", segment(id)),
        ))
        .await
    }

    pub async fn retry(&self, id: &str) -> Result<Job, ClientError> {
        self.json(self.request(
            reqwest::Method::POST,
            &format!("/api/v1/jobs/{}/retry", segment(id)),
        ))
        .await
    }

    /// Retries the failed jobs that job `id` queued (its matrix variants or workflows); the
    /// retries.
    pub async fn retry_failed(&self, id: &str) -> Result<Vec<Job>, ClientError> {
        let reply: Retried = self
            .json(self.request(
                reqwest::Method::POST,
                &format!("/api/v1/jobs/{}/retry-failed", segment(id)),
            ))
            .await?;
        Ok(reply.retried)
    }

    /// Queues a job that waits for approval (`blocked`); the job as queued.
    pub async fn approve(&self, id: &str) -> Result<Job, ClientError> {
        self.json(self.request(
            reqwest::Method::POST,
            &format!("/api/v1/jobs/{}/approve", segment(id)),
        ))
        .await
    }

    /// Erases finished job `id`'s log; the job, saying who erased it. A job that has not
    /// ended is [`ClientError::Api`] with status 409.
    pub async fn erase_log(&self, id: &str) -> Result<Job, ClientError> {
        self.json(self.request(
            reqwest::Method::DELETE,
            &format!("/api/v1/jobs/{}/logs", segment(id)),
        ))
        .await
    }

    /// Erases the logs of the build job `id` is the first job of: its own and those of every
    /// job it queued; the ids of the jobs whose logs were erased. A build with a job that has
    /// not ended is [`ClientError::Api`] with status 409, nothing erased.
    pub async fn erase_build_logs(&self, id: &str) -> Result<Vec<String>, ClientError> {
        #[derive(Deserialize)]
        struct Erased {
            erased: Vec<String>,
        }
        let erased: Erased = self
            .json(self.request(
                reqwest::Method::DELETE,
                &format!("/api/v1/jobs/{}/build/logs", segment(id)),
            ))
            .await?;
        Ok(erased.erased)
    }

    pub async fn queues(&self) -> Result<Queues, ClientError> {
        self.json(self.request(reqwest::Method::GET, "/api/v1/queues"))
            .await
    }

    /// The repositories with jobs, the most recently active first.
    pub async fn repos(&self) -> Result<Vec<RepoEntry>, ClientError> {
        let r: Repos = self
            .json(self.request(reqwest::Method::GET, "/api/v1/repos"))
            .await?;
        Ok(r.repos)
    }

    /// `repo`'s branches, pull requests and tags with their newest builds; a repository
    /// without jobs is [`ClientError::Api`] with status 404.
    pub async fn repo(&self, repo: &str) -> Result<RepoOverview, ClientError> {
        let (owner, name) = repo.split_once('/').ok_or_else(|| {
            ClientError::InvalidArgument(format!("{repo:?} is not a repository (owner/name)"))
        })?;
        self.json(self.request(
            reqwest::Method::GET,
            &format!("/api/v1/repos/{}/{}", segment(owner), segment(name)),
        ))
        .await
    }

    pub async fn schedules(&self) -> Result<Vec<ScheduleEntry>, ClientError> {
        let s: Schedules = self
            .json(self.request(reqwest::Method::GET, "/api/v1/schedules"))
            .await?;
        Ok(s.schedules)
    }

    /// `POST /api/v1/schedules/{name}/run`: queues the job an occurrence of schedule `name`
    /// would, now, and returns it. An unknown name is [`ClientError::Api`] with status 404; a
    /// server that does not run the schedule (no `cron` in `server.events`, the repository not
    /// allowed) answers 409.
    pub async fn run_schedule(&self, name: &str) -> Result<Job, ClientError> {
        self.json(self.request(
            reqwest::Method::POST,
            &format!("/api/v1/schedules/{}/run", segment(name)),
        ))
        .await
    }

    /// Pauses `pool` (its jobs stay queued, agents take none) with `reason`, which may be
    /// empty; the pool as it is now.
    pub async fn pause_pool(&self, pool: &str, reason: &str) -> Result<PoolStats, ClientError> {
        self.json(
            self.request(
                reqwest::Method::POST,
                &format!("/api/v1/queues/{}/pause", segment(pool)),
            )
            .json(&serde_json::json!({ "reason": reason })),
        )
        .await
    }

    /// Ends `pool`'s pause; the pool as it is now.
    pub async fn resume_pool(&self, pool: &str) -> Result<PoolStats, ClientError> {
        self.json(self.request(
            reqwest::Method::POST,
            &format!("/api/v1/queues/{}/resume", segment(pool)),
        ))
        .await
    }

    /// The secrets of a repository or an owner, without their values.
    pub async fn secrets(&self, scope: &SecretScope) -> Result<Vec<RepoSecret>, ClientError> {
        let s: SecretList = self
            .json(self.request(reqwest::Method::GET, &secrets_path(scope, None)?))
            .await?;
        Ok(s.secrets)
    }

    /// Sets a secret of a repository or an owner, readable by jobs of `events` (every event
    /// if empty) and, if `branches` has globs, only by jobs of pushes to matching branches;
    /// the secret as listed, and whether it is new.
    pub async fn set_secret(
        &self,
        scope: &SecretScope,
        name: &str,
        value: &str,
        events: &[Event],
        branches: &[String],
    ) -> Result<(RepoSecret, bool), ClientError> {
        let body = serde_json::json!({ "value": value, "events": events, "branches": branches });
        let resp = self
            .send(
                self.request(reqwest::Method::PUT, &secrets_path(scope, Some(name))?)
                    .json(&body)
                    .timeout(Duration::from_secs(30)),
            )
            .await?;
        let created = resp.status() == reqwest::StatusCode::CREATED;
        let secret = resp
            .json()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok((secret, created))
    }

    /// Deletes a secret of a repository or an owner; one it does not have is
    /// [`ClientError::Api`] with status 404.
    pub async fn delete_secret(&self, scope: &SecretScope, name: &str) -> Result<(), ClientError> {
        self.send(
            self.request(reqwest::Method::DELETE, &secrets_path(scope, Some(name))?)
                .timeout(Duration::from_secs(30)),
        )
        .await?;
        Ok(())
    }

    pub async fn agents(&self) -> Result<Vec<AgentEntry>, ClientError> {
        let a: Agents = self
            .json(self.request(reqwest::Method::GET, "/api/v1/agents"))
            .await?;
        Ok(a.agents)
    }

    /// Delivers a webhook as a forge would (`POST /webhooks/<forge>`); returns the status code
    /// and the JSON answer.
    pub async fn post_webhook(
        &self,
        forge: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<(u16, serde_json::Value), ClientError> {
        let mut req = self
            .http
            .post(format!("{}/webhooks/{forge}", self.base))
            .timeout(Duration::from_secs(30))
            .body(body);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            message: e.without_url().to_string(),
        })?;
        let status = resp.status().as_u16();
        let json = resp.json().await.unwrap_or(serde_json::Value::Null);
        Ok((status, json))
    }

    /// `GET /readyz`: the server is up and can reach Redis.
    pub async fn ready(&self) -> Result<bool, ClientError> {
        let resp = self
            .request(reqwest::Method::GET, "/readyz")
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: self.base.clone(),
                message: e.without_url().to_string(),
            })?;
        Ok(resp.status().is_success())
    }

    /// Downloads a job's artifacts archive (a `.tar.gz`) through the server into `dest`,
    /// checking its size and digest; on any failure `dest` is removed. Returns the archive's
    /// size and `sha256:` digest.
    pub async fn download_artifacts(
        &self,
        id: &str,
        dest: &std::path::Path,
    ) -> Result<(u64, String), ClientError> {
        use sha2::Digest;
        use tokio::io::AsyncWriteExt;
        /// A registry behind the server that stops sending for this long has stalled.
        const IDLE: Duration = Duration::from_secs(60);
        let mut resp = self
            .send(self.request(
                reqwest::Method::GET,
                &format!("/api/v1/jobs/{}/artifacts", segment(id)),
            ))
            .await?;
        let expected_digest = resp
            .headers()
            .get("x-raibid-artifacts-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                ClientError::Protocol("the answer names no X-Raibid-Artifacts-Digest".into())
            })?;
        let expected_size = resp.content_length();
        let written = async {
            let io = |e: std::io::Error| {
                ClientError::Protocol(format!("writing {}: {e}", dest.display()))
            };
            let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
            let mut hasher = sha2::Sha256::new();
            let mut size = 0u64;
            loop {
                let chunk = tokio::time::timeout(IDLE, resp.chunk())
                    .await
                    .map_err(|_| ClientError::Unreachable {
                        url: self.base.clone(),
                        message: format!("the download stalled for {} s", IDLE.as_secs()),
                    })?
                    .map_err(|e| ClientError::Unreachable {
                        url: self.base.clone(),
                        message: format!("the download broke off: {}", e.without_url()),
                    })?;
                let Some(chunk) = chunk else { break };
                size += chunk.len() as u64;
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(io)?;
            }
            file.flush().await.map_err(io)?;
            let digest = format!("sha256:{:x}", hasher.finalize());
            if digest != expected_digest || expected_size.is_some_and(|n| n != size) {
                return Err(ClientError::Protocol(format!(
                    "the archive received ({size} bytes, {digest}) is not the one the server \
                     named ({expected_digest})"
                )));
            }
            Ok((size, digest))
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(dest).await;
        }
        written
    }

    /// The log after `cursor` as plain text.
    pub async fn logs(&self, id: &str, cursor: Option<&str>) -> Result<LogText, ClientError> {
        let mut req = self.request(
            reqwest::Method::GET,
            &format!("/api/v1/jobs/{}/logs", segment(id)),
        );
        if let Some(c) = cursor {
            req = req.query(&[("cursor", c)]);
        }
        let resp = self.send(req.timeout(Duration::from_secs(60))).await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let cursor = header("x-raibid-log-cursor");
        let finished = header("x-raibid-log-finished").as_deref() == Some("true");
        let text = resp
            .text()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(LogText {
            text,
            cursor,
            finished,
        })
    }

    /// Follows a job's log over Server-Sent Events, calling `on_event` for each event until
    /// the job ends (returns its final status) or the stream breaks (returns `None`: resume
    /// with the id of the last log event). A job deleted before its log ended is
    /// [`ClientError::Api`] with status 410 and code `gone`.
    pub async fn follow_logs(
        &self,
        id: &str,
        last_event_id: Option<&str>,
        mut on_event: impl FnMut(&LogEvent),
    ) -> Result<Option<JobStatus>, ClientError> {
        let mut req = self
            .request(
                reqwest::Method::GET,
                &format!("/api/v1/jobs/{}/logs", segment(id)),
            )
            .query(&[("follow", "true")])
            .header("accept", "text/event-stream");
        if let Some(last) = last_event_id {
            req = req.header("last-event-id", last);
        }
        let resp = self.send(req).await?;
        let mut parser = SseParser::default();
        let mut body = resp.bytes_stream();
        loop {
            let Ok(next) = tokio::time::timeout(self.stream_idle, body.next()).await else {
                return Err(ClientError::Unreachable {
                    url: self.base.clone(),
                    message: format!(
                        "the log stream sent nothing, not even a keep-alive, for {}s",
                        self.stream_idle.as_secs_f64()
                    ),
                });
            };
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| ClientError::Unreachable {
                url: self.base.clone(),
                message: e.without_url().to_string(),
            })?;
            for event in parser.feed(&chunk) {
                on_event(&event);
                match event {
                    LogEvent::End { status } => return Ok(Some(status)),
                    LogEvent::Gone { message } => {
                        return Err(ClientError::Api {
                            status: 410,
                            code: "gone".into(),
                            message,
                            retry_after: None,
                        });
                    }
                    LogEvent::Log { .. } => {}
                }
            }
        }
        Ok(None)
    }
}

/// Job ids are ULIDs; anything else is percent-encoded so it cannot change the path.
/// `/api/v1/repos/{owner}/{name}/secrets[/{secret}]` or `/api/v1/orgs/{owner}/secrets[/...]`.
fn secrets_path(scope: &SecretScope, secret: Option<&str>) -> Result<String, ClientError> {
    let mut path = match scope {
        SecretScope::Repo(repo) => {
            let (owner, name) = repo.split_once('/').ok_or_else(|| {
                ClientError::InvalidArgument(format!("{repo:?} is not a repository (owner/name)"))
            })?;
            format!("/api/v1/repos/{}/{}/secrets", segment(owner), segment(name))
        }
        SecretScope::Owner(owner) => {
            if owner.contains('/') {
                return Err(ClientError::InvalidArgument(format!(
                    "{owner:?} is not an owner: give its name alone, without /"
                )));
            }
            format!("/api/v1/orgs/{}/secrets", segment(owner))
        }
    };
    if let Some(secret) = secret {
        path.push('/');
        path.push_str(&segment(secret));
    }
    Ok(path)
}

fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_escape_the_path() {
        assert_eq!(segment("01ARZ3NDEK"), "01ARZ3NDEK");
        assert_eq!(segment("../x"), "%2E%2E%2Fx");
    }

    /// One canned HTTP response on a loopback port, for the client's side of the wire.
    async fn serve_once(response: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "request cut short");
                request.extend_from_slice(&buf[..n]);
            }
            socket.write_all(response.as_bytes()).await.unwrap();
        });
        base
    }

    #[tokio::test]
    async fn retry_after_is_carried_in_the_error() {
        let body = r#"{"error":{"code":"too_many_log_streams_for_client","message":"this client already follows 32 logs"}}"#;
        let response: &'static str = Box::leak(
            format!(
                "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
                 retry-after: 7\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        );
        let base = serve_once(response).await;
        let client = Client::new(&base, None).unwrap();
        match client.follow_logs("J", None, |_| {}).await {
            Err(ClientError::Api {
                status: 429,
                code,
                retry_after,
                ..
            }) => {
                assert_eq!(code, "too_many_log_streams_for_client");
                assert_eq!(retry_after, Some(std::time::Duration::from_secs(7)));
            }
            other => panic!("expected a 429, got {other:?}"),
        }
    }

    /// A connection that stays open but carries nothing (half-open: the server's node is gone)
    /// ends the follow as unreachable, so callers reconnect, instead of hanging for minutes.
    #[tokio::test]
    async fn a_silent_log_stream_is_unreachable_after_the_idle_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0; 4096];
            let _ = socket.read(&mut buf).await.unwrap();
            socket
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                      transfer-encoding: chunked\r\n\r\n",
                )
                .await
                .unwrap();
            let event = "event: log\nid: 1-0\ndata: {\"text\":\"a\\n\"}\n\n";
            let chunk = format!("{:x}\r\n{event}\r\n", event.len());
            socket.write_all(chunk.as_bytes()).await.unwrap();
            // Open, silent, until the test is over.
            let _ = released.await;
        });
        let client = Client::new(&base, None)
            .unwrap()
            .with_stream_idle_timeout(Duration::from_millis(300));
        let mut seen = 0;
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            client.follow_logs("J", None, |_| seen += 1),
        )
        .await
        .expect("the follow ends by itself");
        match result {
            Err(ClientError::Unreachable { message, .. }) => {
                assert!(message.contains("sent nothing"), "{message}")
            }
            other => panic!("expected unreachable, got {other:?}"),
        }
        assert_eq!(seen, 1);
        drop(release);
    }

    #[tokio::test]
    async fn a_gone_event_ends_the_follow_with_a_410() {
        let base = serve_once(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n\
             event: log\nid: 1-0\ndata: {\"text\":\"a\\n\"}\n\n\
             event: gone\ndata: {\"error\":{\"code\":\"gone\",\"message\":\"job J was deleted before its log ended\"}}\n\n",
        )
        .await;
        let client = Client::new(&base, None).unwrap();
        let mut seen = Vec::new();
        let result = client
            .follow_logs("J", None, |e| seen.push(e.clone()))
            .await;
        match result {
            Err(ClientError::Api {
                status: 410,
                code,
                message,
                ..
            }) => {
                assert_eq!(code, "gone");
                assert!(message.contains("deleted"), "{message}");
            }
            other => panic!("expected a 410 gone, got {other:?}"),
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
    }

    #[test]
    fn submit_serializes_ref_under_its_api_name() {
        let body = serde_json::to_value(SubmitJob {
            repo: "a/b".into(),
            clone_url: "file:///x".into(),
            git_ref: Some("main".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(body["ref"], "main");
        assert!(body.get("sha").is_none());
    }
}
