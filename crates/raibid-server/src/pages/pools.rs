//! `POST /queues/{pool}/pause` and `/resume`: the job list's Pause and Resume buttons, for a
//! signed-in token of the `pools` scope for every repository; the API's own pause and resume.

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Redirect;
use raibid_config::TokenScope;
use serde::Deserialize;

use super::actions::form_caller;
use super::{PageError, Viewer};
use crate::api::pools::{pause_pool, resume_pool};
use crate::{ApiError, AppState};

#[derive(Debug, Default, Deserialize)]
pub(super) struct PauseForm {
    #[serde(default)]
    reason: String,
}

/// Pauses or resumes the pool, then back to the job list, whose queue table shows the result.
pub(super) async fn act(
    viewer: Viewer,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((pool, action)): Path<(String, String)>,
    form: Result<Form<PauseForm>, FormRejection>,
) -> Result<Redirect, PageError> {
    let fail = |e: ApiError| viewer.fail(e);
    let to = match action.as_str() {
        "pause" => "pause pools",
        "resume" => "resume pools",
        _ => {
            return Err(fail(ApiError::RouteNotFound(format!(
                "POST /queues/{pool}/{action}: a pool has no such button"
            ))));
        }
    };
    let caller = form_caller(&viewer, &state, &headers, to, TokenScope::Pools)?;
    if action == "pause" {
        let Form(form) = form.map_err(|e| fail(ApiError::InvalidRequest(e.body_text())))?;
        pause_pool(&state, &caller, &pool, &form.reason)
            .await
            .map_err(fail)?;
    } else {
        resume_pool(&state, &caller, &pool).await.map_err(fail)?;
    }
    Ok(Redirect::to(&format!("{}/jobs", viewer.root())))
}
