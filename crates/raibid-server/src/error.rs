//! The two error types of the crate: what a request can fail with ([`ApiError`], always a
//! JSON body with a stable `code`), and what keeps the server from running ([`ServerError`]).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use raibid_queue::QueueError;
use serde::Serialize;

/// Seconds a client should wait before retrying while Redis is unreachable.
const RETRY_AFTER_UNAVAILABLE: &str = "5";
/// A full queue drains at the speed of the agents, so asking again at once only adds load.
const RETRY_AFTER_FULL: &str = "30";
/// Stream slots free up as followed jobs end or clients leave; a few seconds is enough to
/// find one without a tight loop of refused requests.
const RETRY_AFTER_STREAMS: &str = "10";

/// Every way a request can fail.
///
/// Each variant maps to one status and one machine-readable `code`, so clients (the CLI, forges'
/// delivery logs) can branch on the code and show the message. Client mistakes are 4xx with a
/// message naming what to fix; only faults of the server itself are 500.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    /// A request body field with a bad value; `field` is its JSON path.
    #[error("{field}: {message}")]
    InvalidField { field: String, message: String },
    /// A query parameter with a bad value.
    #[error("query parameter {name}: {message}")]
    InvalidParameter { name: &'static str, message: String },
    /// A webhook body the forge should not have sent (malformed JSON, missing fields).
    #[error("{0}")]
    InvalidPayload(String),
    #[error("{0}")]
    Unauthorized(String),
    /// Webhook signatures are not bearer tokens, so these 401s carry no `WWW-Authenticate`.
    #[error("{0}")]
    BadSignature(String),
    #[error(
        "no webhook secret is configured: set server.webhook_secret (or a per-repository \
         secret in server.repo_secrets) and the same secret on the forge's webhook; unsigned \
         webhooks are never accepted"
    )]
    NoWebhookSecret,
    #[error("repository {0} is not in server.allowed_repos")]
    RepoNotAllowed(String),
    /// A valid token that may not make this change (its scopes or repositories).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} jobs are not enabled in server.events")]
    EventNotEnabled(raibid_model::Event),
    #[error("{0}")]
    NotFound(String),
    /// What was asked for existed and is gone for good (expired artifacts).
    #[error("{0}")]
    Gone(String),
    /// A server the request needed (the registry) failed or refused.
    #[error("{0}")]
    BadGateway(String),
    /// The request contradicts the job's current state (retrying a job that is still running).
    #[error("{0}")]
    Conflict(String),
    #[error("no route for {0}")]
    RouteNotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    UnresolvableRef(String),
    /// An `Idempotency-Key` sent again with a different submission.
    #[error("{0}")]
    IdempotencyKeyReused(String),
    #[error("the job queue is unavailable: {0}")]
    QueueUnavailable(String),
    #[error("{0}")]
    QueueFull(String),
    /// Every log stream slot (`server.max_log_streams`) is taken.
    #[error(
        "too many log streams are open (server.max_log_streams = {limit}); retry later, or read \
         the log without follow"
    )]
    TooManyLogStreams { limit: u32 },
    /// This client holds all of its log stream slots (`server.max_log_streams_per_client`).
    #[error(
        "this client already follows {limit} logs (server.max_log_streams_per_client); close \
         one, or read the log without follow"
    )]
    TooManyLogStreamsForClient { limit: u32 },
    /// The client presented too many tokens that were not one of `server.tokens`.
    #[error(
        "too many failed authentications from this address ({max} within {window_secs} s, \
         server.auth_failures_max): its tokens are refused unchecked for another \
         {retry_after_secs} s"
    )]
    TooManyAuthFailures {
        max: u32,
        window_secs: u64,
        retry_after_secs: u64,
    },
    #[error("the request took too long and was abandoned")]
    Timeout,
    /// A feature this server's configuration leaves off (repository secrets without a key).
    #[error("{0}")]
    NotImplemented(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_)
            | ApiError::InvalidField { .. }
            | ApiError::InvalidParameter { .. }
            | ApiError::InvalidPayload(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) | ApiError::BadSignature(_) | ApiError::NoWebhookSecret => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::RepoNotAllowed(_) | ApiError::EventNotEnabled(_) | ApiError::Forbidden(_) => {
                StatusCode::FORBIDDEN
            }
            ApiError::NotFound(_) | ApiError::RouteNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::UnresolvableRef(_) | ApiError::IdempotencyKeyReused(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::TooManyLogStreamsForClient { .. } | ApiError::TooManyAuthFailures { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::QueueUnavailable(_)
            | ApiError::QueueFull(_)
            | ApiError::TooManyLogStreams { .. }
            | ApiError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// Stable identifier of the failure; also the `outcome` label of the webhook metric, so
    /// the set must stay small and fixed.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::InvalidField { .. } => "invalid_field",
            ApiError::InvalidParameter { .. } => "invalid_parameter",
            ApiError::InvalidPayload(_) => "invalid_payload",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::BadSignature(_) => "bad_signature",
            ApiError::NoWebhookSecret => "no_webhook_secret",
            ApiError::RepoNotAllowed(_) => "repo_not_allowed",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::EventNotEnabled(_) => "event_not_enabled",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Gone(_) => "gone",
            ApiError::BadGateway(_) => "bad_gateway",
            ApiError::RouteNotFound(_) => "route_not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::UnresolvableRef(_) => "unresolvable_ref",
            ApiError::IdempotencyKeyReused(_) => "idempotency_key_reused",
            ApiError::QueueUnavailable(_) => "unavailable",
            ApiError::QueueFull(_) => "queue_full",
            ApiError::TooManyLogStreams { .. } => "too_many_log_streams",
            ApiError::TooManyLogStreamsForClient { .. } => "too_many_log_streams_for_client",
            ApiError::TooManyAuthFailures { .. } => "too_many_auth_failures",
            ApiError::Timeout => "timeout",
            ApiError::Internal(_) => "internal",
            ApiError::NotImplemented(_) => "not_implemented",
        }
    }

    /// Seconds, for a `Retry-After` header.
    pub(crate) fn retry_after(&self) -> Option<String> {
        match self {
            ApiError::QueueUnavailable(_) | ApiError::Timeout => Some(RETRY_AFTER_UNAVAILABLE),
            ApiError::QueueFull(_) => Some(RETRY_AFTER_FULL),
            ApiError::TooManyLogStreams { .. } | ApiError::TooManyLogStreamsForClient { .. } => {
                Some(RETRY_AFTER_STREAMS)
            }
            ApiError::TooManyAuthFailures {
                retry_after_secs, ..
            } => return Some(retry_after_secs.to_string()),
            _ => None,
        }
        .map(str::to_owned)
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Unavailable(_) | QueueError::Timeout(_) | QueueError::Redis(_) => {
                ApiError::QueueUnavailable(e.to_string())
            }
            QueueError::Full { .. } => ApiError::QueueFull(e.to_string()),
            QueueError::NotFound(id) => ApiError::NotFound(format!("job {id} not found")),
            QueueError::NotFinal { .. }
            | QueueError::NotBlocked { .. }
            | QueueError::NothingToRetry(_) => ApiError::Conflict(e.to_string()),
            QueueError::Invalid(message) | QueueError::InvalidSecret(message) => {
                ApiError::InvalidRequest(message)
            }
            QueueError::TooManySecrets { .. } => ApiError::Conflict(e.to_string()),
            QueueError::SecretsOff => ApiError::NotImplemented(e.to_string()),
            QueueError::BadUrl(_) | QueueError::Protocol(_) => ApiError::Internal(e.to_string()),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(code = self.code(), error = %self, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = self
            .retry_after()
            .and_then(|s| HeaderValue::try_from(s).ok())
        {
            headers.insert(header::RETRY_AFTER, seconds);
        }
        if matches!(self, ApiError::Unauthorized(_)) {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"raibid\""),
            );
        }
        response
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid glob {glob:?} in {setting}: {source}")]
    Glob {
        setting: &'static str,
        glob: String,
        source: globset::Error,
    },
    #[error("could not build the HTTP client for commit statuses: {0}")]
    HttpClient(reqwest::Error),
    #[error("the HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_queue_errors_are_503_with_retry_after() {
        for e in [
            QueueError::Unavailable("down".into()),
            QueueError::Timeout(5),
        ] {
            let response = ApiError::from(e).into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        }
        let full = ApiError::from(QueueError::Full {
            pool: "default".into(),
            depth: 10,
            limit: 10,
        });
        assert_eq!(full.code(), "queue_full");
        assert!(full.to_string().contains("full"), "{full}");
        assert!(
            full.into_response()
                .headers()
                .contains_key(header::RETRY_AFTER)
        );
    }

    #[test]
    fn only_bearer_failures_challenge_for_a_token() {
        let bearer = ApiError::Unauthorized("no".into()).into_response();
        assert!(bearer.headers().contains_key(header::WWW_AUTHENTICATE));
        let webhook = ApiError::BadSignature("no".into()).into_response();
        assert_eq!(webhook.status(), StatusCode::UNAUTHORIZED);
        assert!(!webhook.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
