//! Sending one commit-status request, and telling a failure worth retrying from one that is
//! not.
//!
//! One attempt per call: retries are the reporter's ([`super`]), which keeps the event
//! unacknowledged and tries again later with a growing pause, so that a forge restarting for a
//! minute loses no final status and a batch of events is never held up by one job's backoff.

use raibid_forge::StatusRequest;
use reqwest::StatusCode;
use reqwest::header::{HeaderName, HeaderValue};

/// Enough of an error body to tell why, not enough to flood a log line.
const BODY_SNIPPET_CHARS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error("cannot build the commit status request: {0}")]
    Invalid(#[from] raibid_forge::StatusError),
    #[error("the forge refused the status with {status}: {body}")]
    Refused { status: StatusCode, body: String },
    #[error("the forge answered {status} redirecting to {location:?}; the status was not sent")]
    Redirected {
        status: StatusCode,
        location: String,
    },
    #[error("the forge answered {status}: {body}")]
    Failing { status: StatusCode, body: String },
    #[error("could not reach the forge: {0}")]
    Unreachable(reqwest::Error),
}

impl SendError {
    /// Whether the same request may succeed later: the forge is down, overloaded or slow
    /// (transport errors, 5xx, 408, 429). Anything else (bad token, unknown repository or
    /// commit, a redirect, a request that cannot be built) would fail the same way again.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            SendError::Failing { .. } => true,
            SendError::Unreachable(source) => !source.is_builder(),
            SendError::Invalid(_) | SendError::Refused { .. } | SendError::Redirected { .. } => {
                false
            }
        }
    }
}

/// Sends `request` once.
pub(crate) async fn send(
    client: &reqwest::Client,
    auth: &(HeaderName, HeaderValue),
    request: &StatusRequest,
) -> Result<(), SendError> {
    let response = client
        .request(request.method.clone(), &request.url)
        .header(auth.0.clone(), auth.1.clone())
        .json(&request.body)
        .send()
        .await
        .map_err(SendError::Unreachable)?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    if status.is_redirection() {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .chars()
                    .take(BODY_SNIPPET_CHARS)
                    .collect()
            })
            .unwrap_or_default();
        return Err(SendError::Redirected { status, location });
    }
    let body = snippet(response).await;
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        Err(SendError::Failing { status, body })
    } else {
        Err(SendError::Refused { status, body })
    }
}

async fn snippet(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    text.chars().take(BODY_SNIPPET_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::http::StatusCode as AxumStatus;
    use axum::routing::any;
    use raibid_forge::{CommitStatus, StatusState, status_request};
    use raibid_model::Forge;

    use super::*;

    /// A forge on loopback answering every request with `status` and `location`.
    async fn forge(status: u16, location: &'static str) -> String {
        let app = Router::new().fallback(any(move || async move {
            (
                AxumStatus::from_u16(status).unwrap(),
                [("location", location)],
                "no",
            )
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        base
    }

    async fn send_to(base: &str) -> Result<(), SendError> {
        let status = CommitStatus {
            state: StatusState::Success,
            target_url: None,
            description: "ok".into(),
            context: "raibid/push".into(),
        };
        let request = status_request(
            Forge::Gitea,
            base,
            "acme/app",
            "0123456789abcdef0123456789abcdef01234567",
            &status,
        )
        .unwrap();
        let auth = (
            reqwest::header::AUTHORIZATION,
            HeaderValue::from_static("token t"),
        );
        send(&super::super::client().unwrap(), &auth, &request).await
    }

    #[tokio::test]
    async fn a_redirect_is_a_refusal_that_names_where_it_points() {
        let base = forge(302, "https://git.example/login").await;
        let err = send_to(&base).await.unwrap_err();
        assert!(matches!(err, SendError::Redirected { .. }), "{err:?}");
        assert!(!err.is_transient());
        assert!(
            err.to_string().contains("https://git.example/login"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn only_failures_a_retry_may_fix_are_transient() {
        for (status, transient) in [
            (500, true),
            (502, true),
            (503, true),
            (408, true),
            (429, true),
            (400, false),
            (401, false),
            (404, false),
            (422, false),
        ] {
            let base = forge(status, "").await;
            let err = send_to(&base).await.unwrap_err();
            assert_eq!(err.is_transient(), transient, "{status}: {err}");
        }
        assert!(send_to(&forge(201, "").await).await.is_ok());
        // Nobody listening: connection refused.
        let nowhere = format!("http://127.0.0.1:{}", raibid_testkit::free_port());
        let err = send_to(&nowhere).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
    }
}
