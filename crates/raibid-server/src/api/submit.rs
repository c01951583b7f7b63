//! `POST /api/v1/jobs`: a job submitted by hand (the CLI's `raibid job submit`).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use raibid_model::{Event, Job, NewJob, PoolName};
use raibid_queue::Enqueued;
use serde::Deserialize;
use tracing::info;

use super::git;
use super::validate;
use crate::auth::{Caller, CanRunJobs};
use crate::{ApiError, AppState};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitRequest {
    repo: String,
    clone_url: String,
    #[serde(rename = "ref", default)]
    git_ref: Option<String>,
    #[serde(default)]
    sha: Option<String>,
    #[serde(default)]
    pool: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

impl SubmitRequest {
    /// Whether `job` is what this request queues: what it names is the job's (a ref it leaves
    /// out is the default's, a commit it leaves out was resolved, a pool it leaves out was
    /// chosen by the server).
    fn made(&self, job: &Job) -> bool {
        let spec = &job.spec;
        let git_ref = validate::full_ref(self.git_ref.as_deref().unwrap_or("refs/heads/main"));
        spec.repo == self.repo
            && spec.clone_url == self.clone_url
            && git_ref.is_ok_and(|r| r == spec.git_ref)
            && self
                .sha
                .as_ref()
                .is_none_or(|sha| sha.eq_ignore_ascii_case(&spec.sha))
            && self
                .pool
                .as_ref()
                .is_none_or(|pool| *pool == spec.pool.as_str())
            && spec.env == self.env
            && spec.event == Event::Manual
    }

    /// A submission of branch or tag `git_ref` (resolved by the server), as the web page's
    /// "Run pipeline" form makes one.
    pub(crate) fn of_ref(
        repo: String,
        clone_url: String,
        git_ref: String,
        env: BTreeMap<String, String>,
    ) -> Self {
        Self {
            repo,
            clone_url,
            git_ref: Some(git_ref),
            sha: None,
            pool: None,
            env,
        }
    }
}

/// The header of a submission a client may send again (IETF httpapi's `Idempotency-Key`, as
/// Stripe's API takes it): a client that got a 503 or no answer cannot know whether the job
/// was queued (a timeout leaves the command in Redis's hands), and sending the same key again
/// returns the job the first made instead of queueing a second build. Remembered as long as
/// webhook delivery ids (24 h), per token.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Set on the answer to a submission whose key had already queued its job.
const REPLAYED: &str = "idempotent-replayed";

pub(crate) async fn submit(
    CanRunJobs(caller): CanRunJobs,
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Result<Json<SubmitRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let Json(request) = request.map_err(json_error)?;
    Ok(match queue(&caller, &state, request, key).await? {
        Submitted::Queued(job) => (StatusCode::CREATED, Json(job)).into_response(),
        Submitted::Again(job) => {
            let mut response = (StatusCode::OK, Json(job)).into_response();
            response
                .headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
            response
        }
    })
}

/// What a submission led to.
pub(crate) enum Submitted {
    Queued(Job),
    /// Its `Idempotency-Key` had queued this job already.
    Again(Job),
}

/// Queues `request` for `caller`, once per `key` (see [`IDEMPOTENCY_KEY`]).
pub(crate) async fn queue(
    caller: &Caller,
    state: &AppState,
    request: SubmitRequest,
    key: Option<String>,
) -> Result<Submitted, ApiError> {
    let asked = request.clone();
    let mut spec = validated(state, request)?;
    spec.delivery_id = key
        .as_ref()
        .map(|key| format!("api:{}:{key}", caller.key_scope()));
    caller.may_change(&spec.repo)?;
    // A token is no way around what the server builds at all: the same limits as webhooks.
    if !state.repos().is_allowed(&spec.repo) {
        return Err(ApiError::RepoNotAllowed(spec.repo));
    }
    if !state.config().server.events.contains(&Event::Manual) {
        return Err(ApiError::EventNotEnabled(Event::Manual));
    }
    if spec.sha.is_empty() {
        spec.sha = git::resolve(&spec.clone_url, &spec.git_ref).await?;
    }
    spec.number = Some(state.queue().next_pipeline_number(&spec.repo).await?);
    let job = match state.queue().enqueue(spec).await? {
        Enqueued::Created(job) => *job,
        // Only a submission with a key has a delivery id to be a duplicate of.
        Enqueued::Duplicate { job_id } => {
            let key = key.unwrap_or_default();
            let Some(job) = state.queue().get(&job_id).await? else {
                return Err(ApiError::Conflict(format!(
                    "Idempotency-Key {key} queued job {job_id}, which is no longer kept \
                     (redis.retain_jobs); send a new key to queue another"
                )));
            };
            if !asked.made(&job) {
                return Err(ApiError::IdempotencyKeyReused(format!(
                    "Idempotency-Key {key} was sent with another submission, which queued job \
                     {job_id}; send a new key for a new submission"
                )));
            }
            info!(job = %job.id, token = %caller.name(), "submission sent again; its job is already queued");
            return Ok(Submitted::Again(job));
        }
    };
    state.metrics().job_queued(&job.spec.pool);
    info!(
        job = %job.id,
        repo = %job.spec.repo,
        git_ref = %job.spec.git_ref,
        pool = %job.spec.pool,
        token = %caller.name(),
        "job submitted"
    );
    Ok(Submitted::Queued(job))
}

/// The request's `Idempotency-Key`, if it sent one; a malformed one is refused (400) rather
/// than ignored, as ignoring it would queue a second build on a retry.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    checked_key(value.to_str().unwrap_or_default()).map(Some)
}

/// `key` if it can be an `Idempotency-Key`: it becomes a delivery id, so it is held to the rule
/// forges' delivery ids are (a UUID or a ULID fits).
pub(crate) fn checked_key(key: &str) -> Result<String, ApiError> {
    if raibid_forge::is_safe_id(key) {
        Ok(key.to_owned())
    } else {
        Err(ApiError::InvalidRequest(format!(
            "header Idempotency-Key: 1 to {} characters of A-Z, a-z, 0-9, '.', '_' and '-' (a \
             UUID or a ULID)",
            raibid_forge::MAX_DELIVERY_ID_LEN
        )))
    }
}

/// Maps body problems to 415 (not JSON) or 400 (bad JSON, unknown or mistyped fields).
pub(crate) fn json_error(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("expected Content-Type application/json".into())
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
            limit: super::BODY_LIMIT as u64,
        },
        other => ApiError::InvalidRequest(other.body_text()),
    }
}

/// The job to queue; `sha` is left empty when it still has to be resolved.
fn validated(state: &AppState, request: SubmitRequest) -> Result<NewJob, ApiError> {
    let field = |name: &str, message: &str| ApiError::InvalidField {
        field: name.to_owned(),
        message: message.to_owned(),
    };
    validate::repo(&request.repo).map_err(|m| field("repo", m))?;
    validate::clone_url(&request.clone_url).map_err(|m| field("clone_url", m))?;
    let git_ref = validate::full_ref(request.git_ref.as_deref().unwrap_or("refs/heads/main"))
        .map_err(|m| field("ref", m))?;
    let sha = match request.sha {
        Some(sha) => {
            validate::sha(&sha).map_err(|m| field("sha", m))?;
            sha.to_ascii_lowercase()
        }
        None => String::new(),
    };
    let pool = match request.pool {
        Some(pool) => PoolName::new(pool).map_err(|e| field("pool", &e.to_string()))?,
        None => state.repos().pool_for(&request.repo).clone(),
    };
    let mut env_bytes = 0;
    for (name, value) in &request.env {
        validate::env_name(name).map_err(|m| field(&format!("env.{name}"), m))?;
        validate::env_value(name, value).map_err(|m| field(&format!("env.{name}"), m))?;
        env_bytes += name.len() + value.len();
    }
    validate::env_size(request.env.len(), env_bytes).map_err(|m| field("env", m))?;
    Ok(NewJob {
        repo: request.repo,
        clone_url: request.clone_url,
        git_ref,
        sha,
        event: Event::Manual,
        pool,
        forge: None,
        pr_number: None,
        from_fork: false,
        sender: None,
        delivery_id: None,
        env: request.env,
        retry_of: None,
        matrix_parent: None,
        target_branch: None,
        diff_base: None,
        schedule: None,
        needs: None,
        number: None,
        source_branch: None,
        pr_labels: Vec::new(),
        title: None,
        repo_url: None,
    })
}
