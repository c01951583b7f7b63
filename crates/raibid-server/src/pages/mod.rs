//! Web pages for people: a job's page, which the forge's commit status links to, and the job
//! list.
//!
//! HTML rendered on the server from the records the API serves, with the API's read rules
//! ([`CanRead`](crate::auth::CanRead)). A person may sign in with an API token
//! ([`session`]): the pages then read under `server.read_requires_token`, and a job's page
//! shows the buttons (cancel, retry, approve) the token may press ([`actions`]). Every value
//! shown comes from webhooks, pipelines and build output, that is from strangers, so the
//! templates escape all of it (askama) and the pages' Content Security Policy allows no inline
//! script: the one script, which follows a running job's log, is a file of its own.

mod actions;
mod agents;
mod assets;
mod job;
mod list;
mod log;
mod pools;
mod raw;
mod repos;
mod run;
mod schedules;
mod secrets;
mod session;
mod sessions;

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::routes::Route;
use crate::{ApiError, AppState};
pub(crate) use session::Viewer;

pub(crate) fn routes() -> Vec<Route> {
    vec![
        Route::get("/", index),
        Route::get("/jobs", list::list),
        Route::get("/jobs/{id}", job::show),
        Route::get("/jobs/{id}/raw", raw::raw),
        Route::post("/jobs/{id}/{action}", actions::act),
        Route::get("/agents", agents::list),
        Route::get("/repos", repos::list),
        Route::get("/repos/{owner}/{name}", repos::show),
        Route::get("/run", run::form),
        Route::post("/run", run::run),
        Route::get("/schedules", schedules::list),
        Route::post("/schedules/{name}/run", schedules::run),
        Route::post("/queues/{pool}/{action}", pools::act),
        Route::get("/secrets", secrets::show),
        Route::post("/secrets/set", secrets::set),
        Route::post("/secrets/delete", secrets::delete),
        Route::get("/login", session::form),
        Route::post("/login", session::login),
        Route::post("/logout", session::logout),
        Route::get("/sessions", sessions::list),
        Route::post("/sessions/end", sessions::end),
        Route::get("/assets/raibid.css", assets::css),
        Route::get("/assets/job.js", assets::script),
        Route::get("/assets/list.js", assets::list_script),
        Route::get("/assets/favicon.svg", assets::icon),
        Route::get("/favicon.ico", assets::icon),
    ]
}

/// Scripts only from the server's own files, styles also inline (the log's colours are
/// `style` attributes), no frames, forms only to the server itself.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// Where the pages live below the server's address: the path of `server.public_url`, when a
/// reverse proxy serves raibid below one (`https://git.example/ci`), so links, styles and the
/// script are asked for through it.
pub(crate) fn root(state: &AppState) -> String {
    reqwest::Url::parse(&state.config().server.public_url)
        .map(|url| url.path().trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

async fn index(State(state): State<AppState>) -> Redirect {
    Redirect::to(&format!("{}/jobs", root(&state)))
}

/// The header every page has: who is signed in, else where to sign in (when tokens exist).
pub(crate) struct Chrome {
    user: Option<String>,
    sign_in: Option<String>,
    /// The signed-in token may set secrets: the header links their page.
    secrets: bool,
}

/// The headers everything the pages serve has: its type, which the browser keeps to
/// (`nosniff`), its Content Security Policy, and no caching (a job's page changes as it runs).
fn served_as(response: &mut Response, content_type: &'static str, csp: &'static str) {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

/// A rendered page with the headers every page has.
fn page(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => {
            let mut response = (status, html).into_response();
            served_as(&mut response, "text/html; charset=utf-8", CSP);
            response
        }
        // A template that fails to render is a bug; the API's error body says which.
        Err(e) => ApiError::Internal(format!("rendering a page: {e}")).into_response(),
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    root: String,
    title: String,
    chrome: Chrome,
    message: String,
    hint: Option<&'static str>,
    /// On a 401, the way to the sign-in form.
    sign_in: Option<String>,
}

/// An [`ApiError`] met while making a page, answered as a page with the API's status code.
pub(crate) struct PageError {
    /// Boxed: pages return `Result<_, PageError>` everywhere, and the error is the rare path.
    error: Box<ApiError>,
    root: String,
    chrome: Chrome,
}

impl PageError {
    pub(crate) fn new(viewer: &Viewer, error: ApiError) -> Self {
        Self {
            error: Box::new(error),
            root: viewer.root().to_owned(),
            chrome: viewer.chrome(),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.error.status();
        if status.is_server_error() {
            tracing::warn!(code = self.error.code(), error = %self.error, "page failed");
        }
        let hint = match &*self.error {
            ApiError::Unauthorized(_) if self.chrome.sign_in.is_some() => Some(
                "Sign in with an API token (server.tokens) to see this page; `raibid job \
                 show`, `raibid job logs` and `raibid tui` read jobs with one too.",
            ),
            ApiError::Unauthorized(_) => Some(
                "`raibid job show`, `raibid job logs` and `raibid tui` read jobs with an API \
                 token too.",
            ),
            ApiError::QueueUnavailable(_) | ApiError::Timeout => {
                Some("The server cannot reach Redis just now; reload in a moment.")
            }
            _ => None,
        };
        let sign_in = match &*self.error {
            ApiError::Unauthorized(_) => self.chrome.sign_in.clone(),
            _ => None,
        };
        let template = ErrorPage {
            sign_in,
            root: self.root,
            chrome: self.chrome,
            title: format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("error")
            ),
            message: self.error.to_string(),
            hint,
        };
        let mut response = page(status, &template);
        if let Some(seconds) = self
            .error
            .retry_after()
            .and_then(|s| HeaderValue::try_from(s).ok())
        {
            response.headers_mut().insert(header::RETRY_AFTER, seconds);
        }
        response
    }
}
