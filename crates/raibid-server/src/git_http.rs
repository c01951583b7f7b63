//! Serving git repositories over smart HTTP through `git http-backend`, read-only.
//!
//! `raibid up --demo` needs a forge-like clone URL (`http://...`) for its demo repository
//! without a forge; this is that, and nothing more: no push, no authentication.

use std::path::PathBuf;
use std::process::Stdio;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Largest request body (a clone's negotiation) accepted.
const MAX_REQUEST: usize = 64 * 1024 * 1024;

/// Routes `/<repo path>/info/refs`, `/<repo path>/git-upload-pack` and friends under `root`.
///
/// axum's default body limit (2 MB) would refuse a large clone's negotiation with 413 before
/// the handler sees it, so the limit is raised to [`MAX_REQUEST`].
pub fn router(root: PathBuf) -> Router {
    Router::new()
        .route("/{*path}", axum::routing::any(backend))
        .layer(DefaultBodyLimit::max(MAX_REQUEST))
        .with_state(root)
}

/// Serves `root` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    root: PathBuf,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(root))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn backend(
    State(root): State<PathBuf>,
    method: Method,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if path.split('/').any(|c| c == ".." || c.starts_with('.')) {
        return (StatusCode::BAD_REQUEST, "invalid repository path").into_response();
    }
    if path.ends_with("git-receive-pack")
        || query
            .as_deref()
            .is_some_and(|q| q.contains("git-receive-pack"))
    {
        return (StatusCode::FORBIDDEN, "this server is read-only").into_response();
    }
    if body.len() > MAX_REQUEST {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", format!("/{path}"))
        .env("QUERY_STRING", query.unwrap_or_default())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("git http-backend: {e}"),
            )
                .into_response();
        }
    };
    let mut stdin = child.stdin.take().expect("piped");
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let output = match child.wait_with_output().await {
        Ok(o) => o,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("git http-backend: {e}"),
            )
                .into_response();
        }
    };
    let _ = writer.await;
    cgi_response(&output.stdout)
}

/// Splits a CGI response into status, headers and body.
fn cgi_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((end, sep)) = split else {
        return (StatusCode::BAD_GATEWAY, "malformed CGI response").into_response();
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut builder = Response::builder().status(StatusCode::OK);
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::BAD_GATEWAY);
            builder = builder.status(code);
        } else {
            builder = builder.header(name.trim(), value);
        }
    }
    builder
        .body(Body::from(raw[end + sep..].to_vec()))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cgi_status_and_headers() {
        let r = cgi_response(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()["content-type"], "text/plain");
    }

    #[test]
    fn garbage_is_a_bad_gateway() {
        assert_eq!(
            cgi_response(b"no headers").status(),
            StatusCode::BAD_GATEWAY
        );
    }
}
