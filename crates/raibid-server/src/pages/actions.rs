//! The job page's buttons: cancel, retry, retry the failed variants, approve. Each is a form
//! posted by a signed-in browser ([`Viewer`]) from the server's own pages ([`same_origin`]),
//! carried out by the API's handler with the token's rights (scope `jobs`, its repositories),
//! and answered with a redirect to the page that shows the result.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Redirect;
use raibid_config::TokenScope;

use super::PageError;
use super::session::{Viewer, same_origin};
use crate::api::jobs;
use crate::auth::{CanRunJobs, require};
use crate::{ApiError, AppState};

/// The button's caller, if the form may be carried out at all.
pub(super) fn caller(
    viewer: &Viewer,
    state: &AppState,
    headers: &HeaderMap,
    to: &str,
) -> Result<CanRunJobs, PageError> {
    let check = || {
        same_origin(headers, state)?;
        require(viewer.token(to)?, TokenScope::Jobs).map(CanRunJobs)
    };
    check().map_err(|e: ApiError| viewer.fail(e))
}

fn to_job(viewer: &Viewer, id: &str) -> Redirect {
    Redirect::to(&format!("{}/jobs/{id}", viewer.root()))
}

pub(super) async fn cancel(
    viewer: Viewer,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Redirect, PageError> {
    let caller = caller(&viewer, &state, &headers, "cancel jobs")?;
    // What the API would answer is on the page the redirect leads to.
    let _ = jobs::cancel(caller, State(state), Path(id.clone()))
        .await
        .map_err(|e| viewer.fail(e))?;
    Ok(to_job(&viewer, &id))
}

/// To the retry's page: the new job is the one to watch.
pub(super) async fn retry(
    viewer: Viewer,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Redirect, PageError> {
    let caller = caller(&viewer, &state, &headers, "retry jobs")?;
    let (_, axum::Json(job)) = jobs::retry(caller, State(state), Path(id))
        .await
        .map_err(|e| viewer.fail(e))?;
    Ok(to_job(&viewer, &job.id))
}

/// Back to the parent's page, whose list of jobs now has the retries in the failures' place.
pub(super) async fn retry_failed(
    viewer: Viewer,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Redirect, PageError> {
    let caller = caller(&viewer, &state, &headers, "retry jobs")?;
    // What the API would answer is on the page the redirect leads to.
    let _ = jobs::retry_failed(caller, State(state), Path(id.clone()))
        .await
        .map_err(|e| viewer.fail(e))?;
    Ok(to_job(&viewer, &id))
}

pub(super) async fn approve(
    viewer: Viewer,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Redirect, PageError> {
    let caller = caller(&viewer, &state, &headers, "approve jobs")?;
    // What the API would answer is on the page the redirect leads to.
    let _ = jobs::approve(caller, State(state), Path(id.clone()))
        .await
        .map_err(|e| viewer.fail(e))?;
    Ok(to_job(&viewer, &id))
}
