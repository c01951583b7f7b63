//! `/api/v1/repos/{owner}/{name}/secrets`: a repository's secrets, and
//! `/api/v1/orgs/{owner}/secrets`: those of every repository of an owner (an organization or a
//! user), set and deleted by token holders (`raibid secret`), read by the steps that name them.
//!
//! Every call needs a token, listing included, since secrets are their repositories'
//! administrators' business (as on Gitea and GitHub). A value goes in and never comes out:
//! the list has names, events and times only.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use raibid_model::{Event, RepoSecret, SecretScope};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::submit::json_error;
use super::validate;
use crate::auth::{Caller, CanSetSecrets};
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
    #[serde(default)]
    branches: Vec<String>,
}

impl SetSecret {
    /// What the web pages' form sets, checked as a request's body is.
    pub(crate) fn new(value: String, events: Vec<Event>, branches: Vec<String>) -> Self {
        Self {
            value,
            events,
            branches,
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct SecretList {
    pub(crate) secrets: Vec<RepoSecret>,
}

pub(crate) async fn list(
    CanSetSecrets(caller): CanSetSecrets,
    State(state): State<AppState>,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Json<SecretList>, ApiError> {
    list_of(&state, repo_for(&caller, &owner, &name)?).await
}

pub(crate) async fn set(
    CanSetSecrets(caller): CanSetSecrets,
    State(state): State<AppState>,
    Path((owner, name, secret)): Path<(String, String, String)>,
    request: Result<Json<SetSecret>, JsonRejection>,
) -> Result<(StatusCode, Json<RepoSecret>), ApiError> {
    set_in(
        &state,
        &caller,
        repo_for(&caller, &owner, &name)?,
        &secret,
        request,
    )
    .await
}

pub(crate) async fn delete(
    CanSetSecrets(caller): CanSetSecrets,
    State(state): State<AppState>,
    Path((owner, name, secret)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    delete_from(&state, &caller, repo_for(&caller, &owner, &name)?, &secret).await
}

pub(crate) async fn list_owner(
    CanSetSecrets(caller): CanSetSecrets,
    State(state): State<AppState>,
    Path(owner): Path<String>,
) -> Result<Json<SecretList>, ApiError> {
    list_of(&state, owner_for(&caller, &owner)?).await
}

pub(crate) async fn set_owner(
    CanSetSecrets(caller): CanSetSecrets,
    State(state): State<AppState>,
    Path((owner, secret)): Path<(String, String)>,
    request: Result<Json<SetSecret>, JsonRejection>,
) -> Result<(StatusCode, Json<RepoSecret>), ApiError> {
    set_in(
        &state,
        &caller,
        owner_for(&caller, &owner)?,
        &secret,
        request,
    )
    .await
}

pub(crate) async fn delete_owner(
    CanSetSecrets(caller): CanSetSecrets,
    State(state): State<AppState>,
    Path((owner, secret)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    delete_from(&state, &caller, owner_for(&caller, &owner)?, &secret).await
}

pub(crate) async fn list_of(
    state: &AppState,
    scope: SecretScope,
) -> Result<Json<SecretList>, ApiError> {
    let secrets = state.queue().secrets(&scope).await?;
    Ok(Json(SecretList { secrets }))
}

pub(crate) async fn set_in(
    state: &AppState,
    caller: &Caller,
    scope: SecretScope,
    secret: &str,
    request: Result<Json<SetSecret>, JsonRejection>,
) -> Result<(StatusCode, Json<RepoSecret>), ApiError> {
    secret_name(secret)?;
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
    branch_globs(&request.branches)?;
    let (listed, created) = state
        .queue()
        .set_secret(
            &scope,
            secret,
            &request.value,
            &request.events,
            &request.branches,
        )
        .await?;
    info!(%scope, secret, created, token = %caller.name(), "secret set");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(listed)))
}

pub(crate) async fn delete_from(
    state: &AppState,
    caller: &Caller,
    scope: SecretScope,
    secret: &str,
) -> Result<StatusCode, ApiError> {
    secret_name(secret)?;
    if !state.queue().delete_secret(&scope, secret).await? {
        return Err(ApiError::NotFound(format!(
            "{scope} has no secret {secret}"
        )));
    }
    info!(%scope, secret, token = %caller.name(), "secret deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Globs over branch names, as the agent matches them ([`raibid_config::branch_glob`]).
fn branch_globs(globs: &[String]) -> Result<(), ApiError> {
    const MAX_BRANCH_GLOBS: usize = 20;
    let invalid = |i: usize, message: String| ApiError::InvalidField {
        field: format!("branches[{i}]"),
        message,
    };
    if globs.len() > MAX_BRANCH_GLOBS {
        return Err(ApiError::InvalidField {
            field: "branches".into(),
            message: format!("at most {MAX_BRANCH_GLOBS} globs"),
        });
    }
    for (i, glob) in globs.iter().enumerate() {
        if glob.is_empty() || glob.len() > 200 || glob.contains('\0') {
            return Err(invalid(
                i,
                "a glob over branch names, like main or release/*".into(),
            ));
        }
        raibid_config::branch_glob(glob).map_err(|e| invalid(i, format!("{glob:?}: {e}")))?;
    }
    Ok(())
}

fn repo(owner: &str, name: &str) -> Result<SecretScope, ApiError> {
    let repo = format!("{owner}/{name}");
    validate::repo(&repo).map_err(|m| ApiError::InvalidParameter {
        name: "repo",
        message: m.to_owned(),
    })?;
    Ok(SecretScope::Repo(repo))
}

/// The secrets named as the web pages name them, `owner/name` (a repository's) or `owner`
/// (every repository's of that owner), if the caller's token may change them.
pub(crate) fn scope_named(caller: &Caller, of: &str) -> Result<SecretScope, ApiError> {
    match of.split_once('/') {
        Some((owner, name)) => repo_for(caller, owner, name),
        None => owner_for(caller, of),
    }
}

/// A repository's secrets, if the caller's token is for that repository.
fn repo_for(caller: &Caller, owner: &str, name: &str) -> Result<SecretScope, ApiError> {
    let scope = repo(owner, name)?;
    caller.may_change(&format!("{owner}/{name}"))?;
    Ok(scope)
}

/// An owner's secrets, which all its repositories read, if the caller's token is for all of
/// them.
fn owner_for(caller: &Caller, owner: &str) -> Result<SecretScope, ApiError> {
    let scope = owner_scope(owner)?;
    caller.may_change_owner(owner)?;
    Ok(scope)
}

/// An owner is valid if its repositories' names can be.
fn owner_scope(owner: &str) -> Result<SecretScope, ApiError> {
    validate::repo(&format!("{owner}/x")).map_err(|m| ApiError::InvalidParameter {
        name: "owner",
        message: m.to_owned(),
    })?;
    Ok(SecretScope::Owner(owner.to_owned()))
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
    if !validate::is_variable_name(name) {
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

#[cfg(test)]
mod tests {
    use raibid_config::{ApiToken, TokenHash, TokenScope, hash_token};

    use super::*;

    #[test]
    fn a_name_with_a_slash_is_a_repository_s_secrets_else_an_owner_s() {
        let token = ApiToken {
            name: "admin".into(),
            hash: TokenHash::parse(&hash_token("t")).unwrap(),
            scopes: vec![TokenScope::Secrets],
            repos: vec!["acme/*".into()],
        };
        let caller = crate::auth::require(token, TokenScope::Secrets).unwrap();
        assert_eq!(
            scope_named(&caller, "acme/app").unwrap(),
            SecretScope::Repo("acme/app".into())
        );
        assert_eq!(
            scope_named(&caller, "acme").unwrap(),
            SecretScope::Owner("acme".into())
        );
        for (of, status) in [
            ("a/b/c", StatusCode::BAD_REQUEST),
            ("acme/", StatusCode::BAD_REQUEST),
            ("other/app", StatusCode::FORBIDDEN),
            ("other", StatusCode::FORBIDDEN),
        ] {
            assert_eq!(
                scope_named(&caller, of).unwrap_err().status(),
                status,
                "{of}"
            );
        }
    }
}
