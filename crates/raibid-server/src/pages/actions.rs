//! The job page's buttons: cancel, retry, retry the failed variants, approve, erase the log
//! (or the whole build's).
//! Each is a form posted by a signed-in browser ([`Viewer`]) from the server's own pages
//! ([`same_origin`]), carried out by the API's handler with the token's rights (scope `jobs`,
//! its repositories), and answered with a redirect to the page that shows the result.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Redirect;
use raibid_config::TokenScope;

use super::PageError;
use super::session::{Viewer, same_origin};
use crate::api::{jobs, logs};
use crate::auth::{Caller, CanRunJobs, require};
use crate::{ApiError, AppState};

/// The button's caller, if the form may be carried out at all.
pub(super) fn caller(
    viewer: &Viewer,
    state: &AppState,
    headers: &HeaderMap,
    to: &str,
) -> Result<CanRunJobs, PageError> {
    form_caller(viewer, state, headers, to, TokenScope::Jobs).map(CanRunJobs)
}

/// The signed-in token of a form from the server's own pages, if it has `scope`.
pub(super) fn form_caller(
    viewer: &Viewer,
    state: &AppState,
    headers: &HeaderMap,
    to: &str,
    scope: TokenScope,
) -> Result<Caller, PageError> {
    let check = || {
        same_origin(headers, state)?;
        require(viewer.token(to)?, scope)
    };
    check().map_err(|e: ApiError| viewer.fail(e))
}

/// `POST /jobs/{id}/{action}`: `cancel`, `retry` (to the retry's page: the new job is the one
/// to watch), `retry-failed` (back to the parent's page, whose list of jobs now has the retries
/// in the failures' place), `approve`, `erase-log` or `erase-build-logs`.
pub(super) async fn act(
    viewer: Viewer,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> Result<Redirect, PageError> {
    let to = match action.as_str() {
        "cancel" => "cancel jobs",
        "retry" | "retry-failed" => "retry jobs",
        "approve" => "approve jobs",
        "erase-log" | "erase-build-logs" => "erase jobs' logs",
        _ => {
            return Err(viewer.fail(ApiError::RouteNotFound(format!(
                "POST /jobs/{id}/{action}: a job's page has no such button"
            ))));
        }
    };
    let caller = caller(&viewer, &state, &headers, to)?;
    let (state, path) = (State(state), Path(id.clone()));
    // What the API would answer is on the page the redirect leads to.
    let shown = match action.as_str() {
        "cancel" => jobs::cancel(caller, state, path).await.map(|_| id),
        "retry" => jobs::retry(caller, state, path)
            .await
            .map(|(_, axum::Json(job))| job.id),
        "retry-failed" => jobs::retry_failed(caller, state, path).await.map(|_| id),
        "erase-log" => logs::erase(caller, state, path).await.map(|_| id),
        "erase-build-logs" => logs::erase_build(caller, state, path).await.map(|_| id),
        _ => jobs::approve(caller, state, path).await.map(|_| id),
    }
    .map_err(|e| viewer.fail(e))?;
    Ok(Redirect::to(&format!("{}/jobs/{shown}", viewer.root())))
}
