//! `/api/v1/repos/{owner}/{name}/secrets`: a repository's secrets, set and deleted by token
//! holders (`raibid secret`), read by that repository's steps that name them.
//!
//! Every call needs a token, listing included, since a repository's secrets are its
//! administrators' business (as on Gitea and GitHub). A value goes in and never comes out:
//! the list has names, events and times only.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use raibid_model::{Event, RepoSecret};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::submit::json_error;
use super::validate;
use crate::auth::CanWrite;
use crate::{ApiError, AppState};

/// Names go into steps' environments, so they are variable names; 128 characters is
/// GitHub's bound less its prefix rules.
const MAX_NAME_LEN: usize = 128;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetSecret {
    value: String,
    #[serde(default)]
    events: Vec<Event>,
}

#[derive(Debug, Serialize)]
pub(crate) struct SecretList {
    secrets: Vec<RepoSecret>,
}

pub(crate) async fn list(
    _: CanWrite,
    State(state): State<AppState>,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Json<SecretList>, ApiError> {
    let repo = repo(&owner, &name)?;
    let secrets = state.queue().secrets(&repo).await?;
    Ok(Json(SecretList { secrets }))
}

pub(crate) async fn set(
    _: CanWrite,
    State(state): State<AppState>,
    Path((owner, name, secret)): Path<(String, String, String)>,
    request: Result<Json<SetSecret>, JsonRejection>,
) -> Result<(StatusCode, Json<RepoSecret>), ApiError> {
    let repo = repo(&owner, &name)?;
    secret_name(&secret)?;
    let Json(request) = request.map_err(json_error)?;
    if request.value.is_empty() {
        return Err(ApiError::InvalidField {
            field: "value".into(),
            message: "a secret needs a value".into(),
        });
    }
    if request.value.len() > raibid_queue::MAX_SECRET_BYTES {
        return Err(ApiError::InvalidField {
            field: "value".into(),
            message: format!(
                "{} bytes; a secret holds at most {}",
                request.value.len(),
                raibid_queue::MAX_SECRET_BYTES
            ),
        });
    }
    if request.value.contains('\0') {
        return Err(ApiError::InvalidField {
            field: "value".into(),
            message: "a secret becomes an environment variable, which cannot hold NUL".into(),
        });
    }
    let (listed, created) = state
        .queue()
        .set_secret(&repo, &secret, &request.value, &request.events)
        .await?;
    info!(repo = %repo, secret = %secret, created, "repository secret set");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(listed)))
}

pub(crate) async fn delete(
    _: CanWrite,
    State(state): State<AppState>,
    Path((owner, name, secret)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let repo = repo(&owner, &name)?;
    secret_name(&secret)?;
    if !state.queue().delete_secret(&repo, &secret).await? {
        return Err(ApiError::NotFound(format!(
            "repository {repo} has no secret {secret}"
        )));
    }
    info!(repo = %repo, secret = %secret, "repository secret deleted");
    Ok(StatusCode::NO_CONTENT)
}

fn repo(owner: &str, name: &str) -> Result<String, ApiError> {
    let repo = format!("{owner}/{name}");
    validate::repo(&repo).map_err(|m| ApiError::InvalidParameter {
        name: "repo",
        message: m.to_owned(),
    })?;
    Ok(repo)
}

/// A name a step can read as `$NAME`, and not one of the agent's own `RAIBID_*` variables,
/// which say what the job is.
fn secret_name(name: &str) -> Result<(), ApiError> {
    let invalid = |message: String| ApiError::InvalidParameter {
        name: "secret",
        message,
    };
    if name.len() > MAX_NAME_LEN {
        return Err(invalid(format!(
            "a secret's name has at most {MAX_NAME_LEN} characters"
        )));
    }
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !(first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')) {
        return Err(invalid(format!(
            "{name:?}: a secret's name is a variable name: letters, digits and '_', not \
             starting with a digit"
        )));
    }
    if name.starts_with("RAIBID_") {
        return Err(invalid(format!(
            "{name:?}: RAIBID_* variables are set by the agent; choose another name"
        )));
    }
    Ok(())
}
