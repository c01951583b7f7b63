//! `GET /sessions`: the browsers signed in with the viewer's token, when each signed in, from
//! where and with what, and a button to sign each out, as GitHub's sessions page has; a
//! session nobody recognises is a token to replace. `POST /sessions/end` signs one out.

use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::SecondsFormat;
use raibid_model::human;

use super::session::same_origin;
use super::{Chrome, PageError, Viewer, page};
use crate::auth::{session_cookie, session_key};
use crate::{ApiError, AppState};

#[derive(Template)]
#[template(path = "sessions.html")]
struct SessionsPage {
    root: String,
    title: String,
    chrome: Chrome,
    token: String,
    rows: Vec<Row>,
}

struct Row {
    key: String,
    this_browser: bool,
    started: String,
    started_ago: String,
    expires: String,
    expires_in: String,
    user_agent: String,
    address: String,
}

pub(super) async fn list(
    viewer: Viewer,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let token = viewer
        .token("see the sessions of your token")
        .map_err(|e| viewer.fail(e))?;
    let here = session_cookie(&headers).map(|id| session_key(&id));
    let mut sessions = state
        .queue()
        .sessions_of(&token.hash.to_string())
        .await
        .map_err(|e| viewer.fail(e))?;
    // Newest sign-in first; those without details (from before sessions kept them) last.
    sessions.sort_by_key(|s| std::cmp::Reverse(s.started));
    let now = chrono::Utc::now();
    let stamp = |at: chrono::DateTime<chrono::Utc>| at.to_rfc3339_opts(SecondsFormat::Secs, true);
    let rows = sessions
        .into_iter()
        .map(|s| Row {
            this_browser: here.as_deref() == Some(s.key.as_str()),
            started: s.started.map(stamp).unwrap_or_default(),
            started_ago: s
                .started
                .map(|at| format!("{} ago", human::duration(now - at)))
                .unwrap_or_else(|| "before this version".into()),
            expires: stamp(s.expires),
            expires_in: format!("in {}", human::duration(s.expires - now)),
            user_agent: s.client.user_agent,
            address: s.client.address,
            key: s.key,
        })
        .collect();
    let template = SessionsPage {
        root: viewer.root().to_owned(),
        title: "Sessions".into(),
        chrome: viewer.chrome(),
        token: token.name(),
        rows,
    };
    Ok(page(StatusCode::OK, &template))
}

/// `POST /sessions/end` with `session=<key>`: signs that session of the viewer's token out.
/// Another token's session, or one that has ended, is 404: a key names a session only to its
/// own token.
pub(super) async fn end(
    viewer: Viewer,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    same_origin(&headers, &state).map_err(|e| viewer.fail(e))?;
    let token = viewer
        .token("sign your token's sessions out")
        .map_err(|e| viewer.fail(e))?;
    let key = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "session")
        .map(|(_, v)| v.into_owned())
        .filter(|k| k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            viewer.fail(ApiError::InvalidRequest(
                "the form names no session (`session`: a session's key from this page)".into(),
            ))
        })?;
    let ended = state
        .queue()
        .end_session_of(&token.hash.to_string(), &key)
        .await
        .map_err(|e| viewer.fail(e))?;
    if !ended {
        return Err(viewer.fail(ApiError::NotFound(
            "no such session of your token: it has ended, or it is another token's".into(),
        )));
    }
    tracing::info!(token = %token.name(), "signed a session out from the sessions page");
    Ok(Redirect::to(&format!("{}/sessions", viewer.root())).into_response())
}
