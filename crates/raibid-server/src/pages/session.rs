//! Signing in on the web pages with one of `server.tokens`, so a browser's pages read under
//! `server.read_requires_token` and show the buttons its token may press.
//!
//! There is no user database: the token is the identity, as for the CLI. Signing in starts a
//! session in Redis, kept under a hash of a random id, that names the token by its hash; the
//! browser's cookie holds the id, never the token, `HttpOnly` (no script reads it),
//! `SameSite=Lax` (sent when a forge's "Details" link is followed, never with another site's
//! form) and `Secure` when `server.public_url` is https. A session ends after 7 days, when its
//! browser signs out, or when its token leaves `server.tokens`. Forms that change something
//! must also come from the server's own pages ([`same_origin`]), which covers browsers that do
//! not enforce `SameSite`.

use std::net::SocketAddr;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use raibid_config::{ApiToken, TokenScope};
use raibid_queue::SessionClient;
use rand::RngCore;
use serde::Deserialize;

use super::{Chrome, PageError, page, root};
use crate::auth::{SESSION_COOKIE, session_cookie, session_key, session_of, token_entry};
use crate::{ApiError, AppState, auth_limit};

/// How long a browser stays signed in; Gitea's "remember me" keeps a login for 7 days too.
const SESSION_SECS: u64 = 7 * 24 * 60 * 60;

/// Who is looking at a page and where: for the header's sign-in link and the buttons its token
/// may press. Never refuses a request; a page that needs a token asks [`crate::auth::CanRead`].
pub(crate) struct Viewer {
    root: String,
    /// The signed-in token, when the browser's cookie holds one of `server.tokens`.
    token: Option<ApiToken>,
    /// Whether any token is configured, that is whether signing in can work.
    can_sign_in: bool,
    /// The page's path and query below the root, to come back to after signing in.
    here: String,
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // A session that cannot be read (Redis down) shows the page as to nobody; the page
        // itself then says what is wrong.
        let token = session_of(parts, state).await.ok().flatten();
        Ok(Viewer {
            root: root(state),
            token,
            can_sign_in: !state.config().server.tokens.is_empty(),
            here: parts
                .uri
                .path_and_query()
                .map_or_else(|| "/jobs".to_owned(), |p| p.as_str().to_owned()),
        })
    }
}

impl Viewer {
    pub(crate) fn root(&self) -> &str {
        &self.root
    }

    /// The header's part of a page.
    pub(crate) fn chrome(&self) -> Chrome {
        Chrome {
            user: self.token.as_ref().map(ApiToken::name),
            sign_in: (self.token.is_none() && self.can_sign_in)
                .then(|| login_href(&self.root, &self.here)),
            secrets: self
                .token
                .as_ref()
                .is_some_and(|t| t.has_scope(TokenScope::Secrets)),
        }
    }

    /// Whether the signed-in token has `scope` for `repo`: the buttons and links it is shown
    /// (`jobs`: cancel, retry, approve, run; `secrets`: the repository's secrets).
    pub(crate) fn may(&self, scope: TokenScope, repo: &str) -> bool {
        self.token
            .as_ref()
            .is_some_and(|t| t.has_scope(scope) && t.covers(repo))
    }

    /// Whether the signed-in token may pause and resume pools: the `pools` scope, for every
    /// repository (what the API asks of it).
    pub(crate) fn may_hold_pools(&self) -> bool {
        self.token
            .as_ref()
            .is_some_and(|t| t.has_scope(TokenScope::Pools) && t.covers_all())
    }

    /// The signed-in token, or a 401 naming what signing in is for.
    pub(crate) fn token(&self, to: &str) -> Result<ApiToken, ApiError> {
        self.token
            .clone()
            .ok_or_else(|| ApiError::Unauthorized(format!("sign in with an API token to {to}")))
    }

    pub(crate) fn fail(&self, error: impl Into<ApiError>) -> PageError {
        PageError::new(self, error.into())
    }
}

/// `/login?next=<here>`.
fn login_href(root: &str, here: &str) -> String {
    let next: String = form_urlencoded::byte_serialize(here.as_bytes()).collect();
    format!("{root}/login?next={next}")
}

/// Where to go after signing in: a path of this server's pages, never another site (an open
/// redirect would let a link to this server's sign-in page send the person anywhere).
fn next_path(next: Option<&str>) -> &str {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && !path.chars().any(|c| c.is_control() || c == '\\') =>
        {
            path
        }
        _ => "/jobs",
    }
}

/// Refuses (403) a form that did not come from the server's own pages: a browser says where a
/// form was sent from (`Sec-Fetch-Site`, else `Origin`); a request that says neither is not
/// a browser's form, and is refused too. The API's bearer token needs none of this, since no
/// other site can make a browser send it.
pub(crate) fn same_origin(headers: &HeaderMap, state: &AppState) -> Result<(), ApiError> {
    let refused = |from: &str| {
        Err(ApiError::Forbidden(format!(
            "this form must be sent from raibid's own pages, not from {from}"
        )))
    };
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.to_str() {
            Ok("same-origin") => Ok(()),
            Ok(other) => refused(&format!("a {other} page")),
            Err(_) => refused("an unknown page"),
        };
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return refused("a request that names no Origin");
    };
    let origin_host = reqwest::Url::parse(origin)
        .ok()
        .filter(|url| url.scheme() == "http" || url.scheme() == "https")
        .and_then(|url| {
            let host = url.host_str()?.to_owned();
            Some(match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        });
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let public = reqwest::Url::parse(&state.config().server.public_url)
        .ok()
        .map(|url| url.origin().ascii_serialization());
    match origin_host {
        Some(origin_host) if Some(origin_host.as_str()) == host => Ok(()),
        Some(_) if public.as_deref() == Some(origin) => Ok(()),
        _ => refused(origin),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    root: String,
    title: String,
    chrome: Chrome,
    next: String,
    error: Option<String>,
    can_sign_in: bool,
}

#[derive(Deserialize)]
pub(super) struct LoginQuery {
    next: Option<String>,
}

pub(super) async fn form(
    viewer: Viewer,
    axum::extract::Query(query): axum::extract::Query<LoginQuery>,
) -> Response {
    login_page(&viewer, next_path(query.next.as_deref()), None)
}

fn login_page(viewer: &Viewer, next: &str, error: Option<String>) -> Response {
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    page(
        status,
        &LoginPage {
            root: viewer.root.clone(),
            title: "Sign in".into(),
            chrome: Chrome {
                sign_in: None,
                ..viewer.chrome()
            },
            next: next.to_owned(),
            error,
            can_sign_in: viewer.can_sign_in,
        },
    )
}

#[derive(Deserialize)]
pub(super) struct Login {
    token: String,
    next: Option<String>,
}

pub(super) async fn login(
    viewer: Viewer,
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(login): Form<Login>,
) -> Result<Response, PageError> {
    // Another site must not sign a browser in with a token of its choosing either: the
    // person would then act, unawares, as that token.
    same_origin(&headers, &state).map_err(|e| viewer.fail(e))?;
    let client = auth_limit::client(peer.map(|Extension(ConnectInfo(a))| a), &headers, &state);
    auth_limit::check(&state, client).map_err(|e| viewer.fail(e))?;
    let next = next_path(login.next.as_deref());
    let token = login.token.trim();
    let Some(entry) = token_entry(&state, token) else {
        auth_limit::record(&state, client);
        tracing::info!("sign-in with a token that is not in server.tokens");
        let error = if viewer.can_sign_in {
            "That token is not one of this server's (server.tokens)."
        } else {
            "This server has no API tokens (server.tokens), so no one can sign in."
        };
        return Ok(login_page(&viewer, next, Some(error.into())));
    };
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let signed_in_from = SessionClient {
        user_agent: user_agent(&headers),
        address: client.map(|ip| ip.to_string()).unwrap_or_default(),
    };
    state
        .queue()
        .start_session(
            &session_key(&id),
            &entry.hash.to_string(),
            std::time::Duration::from_secs(SESSION_SECS),
            &signed_in_from,
        )
        .await
        .map_err(|e| viewer.fail(e))?;
    tracing::info!(token = %entry.name(), "signed in on the web pages");
    let secure = state.config().server.public_url.starts_with("https://");
    let cookie = cookie(&viewer.root, &id, SESSION_SECS, secure);
    Ok(redirect_with_cookie(
        &format!("{}{next}", viewer.root),
        &cookie,
    ))
}

/// `POST /logout`: ends this browser's session; with `everywhere=1` (the header's "Sign out
/// everywhere"), every session signed in with the same token, in every browser, as GitHub's
/// "sign out of all sessions" does for a lost laptop.
pub(super) async fn logout(
    viewer: Viewer,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    same_origin(&headers, &state).map_err(|e| viewer.fail(e))?;
    let everywhere = form_urlencoded::parse(&body).any(|(k, v)| k == "everywhere" && v == "1");
    // Ended in Redis, not only forgotten by this browser: a copy of the cookie is no use.
    if let Some(id) = session_cookie(&headers) {
        let queue = state.queue();
        let key = session_key(&id);
        let signed_in_as = if everywhere {
            queue.session(&key).await.map_err(|e| viewer.fail(e))?
        } else {
            None
        };
        match signed_in_as {
            Some(token_hash) => {
                let ended = queue
                    .end_sessions_of(&token_hash)
                    .await
                    .map_err(|e| viewer.fail(e))?;
                // The session itself, should it predate the index of sessions.
                queue.end_session(&key).await.map_err(|e| viewer.fail(e))?;
                let token = viewer
                    .token
                    .as_ref()
                    .map_or_else(|| token_hash.clone(), ApiToken::name);
                tracing::info!(token = %token, sessions = ended, "signed out everywhere");
            }
            None => queue.end_session(&key).await.map_err(|e| viewer.fail(e))?,
        }
    }
    let secure = state.config().server.public_url.starts_with("https://");
    let cookie = cookie(&viewer.root, "", 0, secure);
    Ok(redirect_with_cookie(
        &format!("{}/jobs", viewer.root),
        &cookie,
    ))
}

/// The longest `User-Agent` a session keeps: enough to tell browsers apart.
const MAX_USER_AGENT: usize = 200;

/// The browser's `User-Agent`, for the list of sessions: without control characters, at most
/// [`MAX_USER_AGENT`] characters.
fn user_agent(headers: &HeaderMap) -> String {
    let raw = headers
        .get(header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    raw.chars()
        .filter(|c| !c.is_control())
        .take(MAX_USER_AGENT)
        .collect()
}

fn cookie(root: &str, value: &str, max_age: u64, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={value}; Path={root}/; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    )
}

fn redirect_with_cookie(to: &str, cookie: &str) -> Response {
    let mut response = Redirect::to(to).into_response();
    match HeaderValue::from_str(cookie) {
        Ok(value) => {
            response.headers_mut().insert(header::SET_COOKIE, value);
            response
        }
        // The value is percent-encoded and the root a URL's path: a bug if it happens.
        Err(e) => ApiError::Internal(format!("the sign-in cookie: {e}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_server() {
        assert_eq!(next_path(Some("/jobs/01J?x=1")), "/jobs/01J?x=1");
        assert_eq!(next_path(Some("//evil.example/")), "/jobs");
        assert_eq!(next_path(Some("/\\evil.example/")), "/jobs");
        assert_eq!(next_path(Some("https://evil.example/")), "/jobs");
        assert_eq!(next_path(Some("/jobs\r\nSet-Cookie: x")), "/jobs");
        assert_eq!(next_path(Some("")), "/jobs");
        assert_eq!(next_path(None), "/jobs");
    }

    #[test]
    fn login_link_carries_the_page() {
        assert_eq!(
            login_href("/ci", "/jobs?repo=acme/app&status=failure"),
            "/ci/login?next=%2Fjobs%3Frepo%3Dacme%2Fapp%26status%3Dfailure"
        );
    }

    #[test]
    fn a_user_agent_is_kept_short_and_printable() {
        let mut headers = HeaderMap::new();
        assert_eq!(user_agent(&headers), "");
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_bytes(b"Mozilla/5.0\t(X11) \xff").unwrap(),
        );
        assert_eq!(user_agent(&headers), "Mozilla/5.0(X11) \u{fffd}");
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_str(&"x".repeat(500)).unwrap(),
        );
        assert_eq!(user_agent(&headers).len(), MAX_USER_AGENT);
    }

    #[test]
    fn cookie_attributes() {
        assert_eq!(
            cookie("/ci", "abc", 60, true),
            "raibid_session=abc; Path=/ci/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
        assert_eq!(
            cookie("", "", 0, false),
            "raibid_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"
        );
    }
}
