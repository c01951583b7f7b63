//! `POST /api/v1/jobs`: a job submitted by hand (the CLI's `raibid job submit`).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use raibid_model::{Event, Job, NewJob, PoolName};
use raibid_queue::Enqueued;
use serde::Deserialize;
use tracing::info;

use super::git;
use super::validate;
use crate::auth::CanRunJobs;
use crate::{ApiError, AppState};

#[derive(Debug, Deserialize)]
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

pub(crate) async fn submit(
    CanRunJobs(caller): CanRunJobs,
    State(state): State<AppState>,
    request: Result<Json<SubmitRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    let Json(request) = request.map_err(json_error)?;
    let mut spec = validated(&state, request)?;
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
        // Submissions carry no delivery id, so the queue has nothing to deduplicate them by.
        Enqueued::Duplicate { job_id } => {
            return Err(ApiError::Internal(format!(
                "submission was taken for a redelivery of job {job_id}"
            )));
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
    Ok((StatusCode::CREATED, Json(job)))
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
