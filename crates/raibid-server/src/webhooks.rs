//! Forge webhooks in: `POST /webhooks/{gitea,forgejo,github}`.
//!
//! The checks run in a fixed order, each on the cheapest information that settles it: body
//! size (the body-limit layer), signature, content type, payload, allow-list, event filter,
//! then one Redis round trip to enqueue. Nothing from the body is acted on before the signature
//! has been verified; the only thing read earlier is the repository name, to pick the secret.

use std::borrow::Cow;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use raibid_config::Config;
use raibid_forge::Parsed;
use raibid_model::Forge;
use raibid_queue::Enqueued;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::metrics::WebhookLabels;
use crate::repos::RepoRules;
use crate::routes::Route;
use crate::{ApiError, AppState};

pub(crate) fn routes() -> Vec<Route> {
    vec![
        Route::post("/webhooks/gitea", gitea),
        Route::post("/webhooks/forgejo", forgejo),
        Route::post("/webhooks/github", github),
    ]
}

async fn gitea(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    receive(Forge::Gitea, &state, &headers, body).await
}

async fn forgejo(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    receive(Forge::Forgejo, &state, &headers, body).await
}

async fn github(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    receive(Forge::Github, &state, &headers, body).await
}

/// What a webhook led to, as the forge's delivery log will show it.
#[derive(Serialize)]
#[serde(untagged)]
enum Reply {
    Queued {
        job_id: String,
        status: &'static str,
    },
    Duplicate {
        job_id: String,
        duplicate: bool,
    },
    Ignored {
        ignored: String,
    },
}

impl Reply {
    fn outcome(&self) -> &'static str {
        match self {
            Reply::Queued { .. } => "queued",
            Reply::Duplicate { .. } => "duplicate",
            Reply::Ignored { .. } => "ignored",
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let status = match self {
            Reply::Duplicate { .. } => StatusCode::OK,
            Reply::Queued { .. } | Reply::Ignored { .. } => StatusCode::ACCEPTED,
        };
        (status, axum::Json(self)).into_response()
    }
}

async fn receive(
    forge: Forge,
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = handle(forge, state, headers, body).await;
    let outcome = match &result {
        Ok(reply) => reply.outcome(),
        Err(e) => e.code(),
    };
    state.metrics().webhook(WebhookLabels {
        forge: forge.as_str(),
        event: event_label(forge, headers),
        outcome,
    });
    match result {
        Ok(reply) => reply.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn handle(
    forge: Forge,
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Reply, ApiError> {
    let config = state.config();
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: config.server.body_limit_bytes,
            }
        } else {
            ApiError::InvalidRequest(rejection.body_text())
        }
    })?;

    let secret = secret_for(state.repos(), config, &body);
    if secret.is_empty() {
        return Err(ApiError::NoWebhookSecret);
    }
    raibid_forge::verify(forge, headers, &body, secret.as_bytes()).map_err(|e| {
        warn!(%forge, error = %e, "webhook rejected: bad signature");
        ApiError::BadSignature(e.to_string())
    })?;

    check_content_type(headers)?;
    let parsed = raibid_forge::parse(forge, headers, &body)
        .map_err(|e| ApiError::InvalidPayload(e.to_string()))?;

    let trigger = match parsed {
        Parsed::Trigger(trigger) => trigger,
        Parsed::Ignored { reason } => {
            if let Some(repo) = repo_in(&body).filter(|r| !state.repos().is_allowed(r)) {
                return Err(ApiError::RepoNotAllowed(repo.into_owned()));
            }
            debug!(%forge, %reason, "webhook ignored");
            return Ok(Reply::Ignored { ignored: reason });
        }
    };
    if !state.repos().is_allowed(&trigger.repo) {
        return Err(ApiError::RepoNotAllowed(trigger.repo));
    }
    if !config.server.events.contains(&trigger.event) {
        let reason = format!("{} events are not enabled in server.events", trigger.event);
        debug!(%forge, repo = %trigger.repo, %reason, "webhook ignored");
        return Ok(Reply::Ignored { ignored: reason });
    }

    let pool = state.repos().pool_for(&trigger.repo).clone();
    let delivery = raibid_forge::delivery_id(forge, headers);
    match state
        .queue()
        .enqueue(trigger.into_new_job(pool, delivery))
        .await?
    {
        Enqueued::Created(job) => {
            state.metrics().job_queued(&job.spec.pool);
            info!(
                job = %job.id,
                %forge,
                repo = %job.spec.repo,
                git_ref = %job.spec.git_ref,
                event = %job.spec.event,
                pool = %job.spec.pool,
                "webhook queued a job"
            );
            Ok(Reply::Queued {
                job_id: job.id,
                status: "queued",
            })
        }
        Enqueued::Duplicate { job_id } => {
            debug!(job = %job_id, %forge, "webhook redelivered");
            Ok(Reply::Duplicate {
                job_id,
                duplicate: true,
            })
        }
    }
}

/// The secret the body must be signed with: the repository's own, else the global one.
///
/// The repository name is read from the still-unverified body only to choose the key; a
/// forged name merely selects a secret the forger does not know either. The name is matched
/// ignoring case, as the forge resolves it: `ACME/app` must not fall back to the global secret
/// while its statuses land on `acme/app`.
fn secret_for<'c>(rules: &'c RepoRules, config: &'c Config, body: &[u8]) -> &'c str {
    if let Some(secret) = repo_in(body).and_then(|repo| rules.secret_for(&repo)) {
        return secret.expose();
    }
    config.server.webhook_secret.expose()
}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow)]
    repository: Option<ProbeRepository<'a>>,
}

#[derive(Deserialize)]
struct ProbeRepository<'a> {
    #[serde(borrow)]
    full_name: Option<Cow<'a, str>>,
}

/// `repository.full_name`, if the body has one; anything else about the body is ignored.
fn repo_in(body: &[u8]) -> Option<Cow<'_, str>> {
    serde_json::from_slice::<Probe>(body)
        .ok()?
        .repository?
        .full_name
}

/// Forges send `application/json`; Gitea can be set to send form-encoded payloads instead,
/// which would fail later as "not JSON" with a less helpful message.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .unwrap_or_default();
    let essence = value.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "expected Content-Type application/json, got {value:?}: set the webhook's content \
             type to JSON on the forge"
        )))
    }
}

/// Event names worth their own metric label; anything else is counted as `other`.
const KNOWN_EVENTS: &[&str] = &[
    "push",
    "pull_request",
    "create",
    "delete",
    "ping",
    "workflow_dispatch",
    "release",
];

fn event_label(forge: Forge, headers: &HeaderMap) -> &'static str {
    let names: &[&str] = match forge {
        Forge::Gitea => &["x-gitea-event"],
        Forge::Forgejo => &["x-forgejo-event", "x-gitea-event"],
        Forge::Github => &["x-github-event"],
    };
    let Some(value) = names.iter().find_map(|name| headers.get(*name)) else {
        return "none";
    };
    KNOWN_EVENTS
        .iter()
        .copied()
        .find(|known| known.as_bytes() == value.as_bytes())
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use raibid_config::Secret;

    use super::*;

    fn content_type(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn json_with_parameters_is_json() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=UTF-8",
        ] {
            assert!(check_content_type(&content_type(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "application/x-www-form-urlencoded",
            "text/plain",
            "application/jsonx",
        ] {
            assert!(check_content_type(&content_type(bad)).is_err(), "{bad}");
        }
        assert!(check_content_type(&HeaderMap::new()).is_err());
    }

    #[test]
    fn repository_secret_wins_over_the_global_one() {
        let mut config = Config::default();
        config.server.webhook_secret = Secret::new("global");
        config
            .server
            .repo_secrets
            .insert("Acme/App".into(), Secret::new("own"));
        let rules = RepoRules::new(&config).unwrap();
        let secret_for = |body: &[u8]| secret_for(&rules, &config, body).to_owned();
        let body = br#"{"ref": 1, "repository": {"full_name": "acme/app", "x": [1]}}"#;
        assert_eq!(secret_for(body), "own");
        assert_eq!(
            secret_for(br#"{"repository": {"full_name": "ACME/app"}}"#),
            "own"
        );
        let other = br#"{"repository": {"full_name": "acme/other"}}"#;
        assert_eq!(secret_for(other), "global");
        assert_eq!(secret_for(b"not json"), "global");
        assert_eq!(secret_for(br#"{"repository": "acme/app"}"#), "global");
    }

    #[test]
    fn unknown_events_share_one_label() {
        let mut headers = HeaderMap::new();
        headers.insert("x-github-event", HeaderValue::from_static("push"));
        assert_eq!(event_label(Forge::Github, &headers), "push");
        headers.insert("x-github-event", HeaderValue::from_static("x-random-123"));
        assert_eq!(event_label(Forge::Github, &headers), "other");
        assert_eq!(event_label(Forge::Gitea, &headers), "none");
    }
}
