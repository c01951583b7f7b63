//! Sending one commit-status request, retrying what a retry can fix.
//!
//! 5xx, 429 and transport errors are retried with exponential backoff, a bounded number of
//! times; any other 4xx (bad token, unknown repository or commit) would fail the same way
//! again and is given up at once, as is a redirect (the client follows none, see
//! [`super::client`]).
//!
//! The request is prepared anew before every attempt: with several replicas, or after a
//! backoff, the job may have moved on, and a status sent from an old event would overwrite a
//! newer one on the forge.

use std::time::Duration;

use raibid_forge::StatusRequest;
use reqwest::StatusCode;
use reqwest::header::{HeaderName, HeaderValue};

const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
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
    #[error("the forge answered {status} {attempts} times: {body}")]
    Failing {
        status: StatusCode,
        attempts: u32,
        body: String,
    },
    #[error("could not reach the forge after {attempts} attempts: {source}")]
    Unreachable {
        attempts: u32,
        source: reqwest::Error,
    },
}

/// What was sent.
#[derive(Debug)]
pub(crate) struct Sent<T> {
    pub attempts: u32,
    /// What `prepare` returned with the request that was accepted.
    pub what: T,
}

/// Sends what `prepare` returns, calling it again before every retry; `Ok(None)` when
/// `prepare` found nothing (left) to send.
pub(crate) async fn send<T, F, Fut>(
    client: &reqwest::Client,
    auth: &(HeaderName, HeaderValue),
    mut prepare: F,
) -> Result<Option<Sent<T>>, SendError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<(StatusRequest, T)>, SendError>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        let Some((request, what)) = prepare().await? else {
            return Ok(None);
        };
        let sent = client
            .request(request.method.clone(), &request.url)
            .header(auth.0.clone(), auth.1.clone())
            .json(&request.body)
            .send()
            .await;
        let error = match sent {
            Ok(response) if response.status().is_success() => {
                return Ok(Some(Sent {
                    attempts: attempt,
                    what,
                }));
            }
            Ok(response) if response.status().is_redirection() => {
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
                return Err(SendError::Redirected {
                    status: response.status(),
                    location,
                });
            }
            Ok(response) => {
                let status = response.status();
                let body = snippet(response).await;
                if !(status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS) {
                    return Err(SendError::Refused { status, body });
                }
                SendError::Failing {
                    status,
                    attempts: attempt,
                    body,
                }
            }
            // A request that cannot even be built will not build next time either.
            Err(source) if source.is_builder() => {
                return Err(SendError::Unreachable {
                    attempts: attempt,
                    source,
                });
            }
            Err(source) => SendError::Unreachable {
                attempts: attempt,
                source,
            },
        };
        if attempt == ATTEMPTS {
            return Err(error);
        }
        tracing::debug!(attempt, error = %error, "commit status not accepted yet; retrying");
        tokio::time::sleep(backoff).await;
        backoff *= 2;
        attempt += 1;
    }
}

async fn snippet(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    text.chars().take(BODY_SNIPPET_CHARS).collect()
}
