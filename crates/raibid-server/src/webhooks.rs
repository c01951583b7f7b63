//! Forge webhooks in: `POST /webhooks/{gitea,forgejo,github}`.
//!
//! The checks run in a fixed order, each on the cheapest information that settles it: body
//! size (the body-limit layer), signature, content type, payload, allow-list, event filter,
//! then one Redis round trip to enqueue. Nothing from the body is acted on before the signature
//! has been verified; the only thing read earlier is the repository name, to pick the secret.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use raibid_config::{Config, Secret};
use raibid_forge::Parsed;
use raibid_model::Forge;
use raibid_queue::{CancelResult, Enqueued};
use serde::Serialize;
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
        /// Older builds of the same branch or pull request this one cancelled (or asked to
        /// stop), so the forge's delivery log says where they went.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        superseded: Vec<String>,
    },
    Duplicate {
        job_id: String,
        duplicate: bool,
        /// What the redelivery superseded: builds the first delivery failed to cancel.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        superseded: Vec<String>,
    },
    Ignored {
        ignored: String,
    },
    /// A pull request was closed: its builds that were still queued or running.
    Closed {
        closed: u64,
        cancelled: Vec<String>,
    },
}

impl Reply {
    fn outcome(&self) -> &'static str {
        match self {
            Reply::Queued { .. } => "queued",
            Reply::Duplicate { .. } => "duplicate",
            Reply::Ignored { .. } => "ignored",
            Reply::Closed { .. } => "closed",
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let status = match self {
            Reply::Duplicate { .. } => StatusCode::OK,
            Reply::Queued { .. } | Reply::Ignored { .. } | Reply::Closed { .. } => {
                StatusCode::ACCEPTED
            }
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

    let key = secret_for(state.repos(), config, &body);
    if key.expose().is_empty() {
        return Err(ApiError::NoWebhookSecret);
    }
    raibid_forge::verify(forge, headers, &body, key.expose().as_bytes()).map_err(|e| {
        warn!(%forge, error = %e, "webhook rejected: bad signature");
        ApiError::BadSignature(e.to_string())
    })?;

    check_content_type(headers)?;
    let parsed = raibid_forge::parse(forge, headers, &body)
        .map_err(|e| ApiError::InvalidPayload(e.to_string()))?;

    let trigger = match parsed {
        Parsed::Trigger(trigger) => trigger,
        Parsed::Ignored { reason } => {
            if let Some(repo) =
                raibid_forge::repository_name(&body).filter(|r| !state.repos().is_allowed(r))
            {
                return Err(ApiError::RepoNotAllowed(repo));
            }
            debug!(%forge, %reason, "webhook ignored");
            return Ok(Reply::Ignored { ignored: reason });
        }
        Parsed::Closed(closed) => return close(state, key, closed).await,
    };
    check_signed_by_own_secret(state.repos(), key, &trigger.repo).inspect_err(|e| {
        warn!(%forge, repo = %trigger.repo, error = %e, "webhook rejected: wrong secret");
    })?;
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
    let mut spec = trigger.into_new_job(pool, delivery);
    spec.number = Some(state.queue().next_pipeline_number(&spec.repo).await?);
    let blocked = config.server.approval.requires(spec.event, spec.from_fork);
    let enqueued = if blocked {
        state.queue().enqueue_blocked(spec).await?
    } else {
        state.queue().enqueue(spec).await?
    };
    match enqueued {
        Enqueued::Created(job) => {
            // Counted as queued when approved, if it waits (`blocked`).
            if !blocked {
                state.metrics().job_queued(&job.spec.pool);
            }
            info!(
                job = %job.id,
                %forge,
                repo = %job.spec.repo,
                git_ref = %job.spec.git_ref,
                event = %job.spec.event,
                pool = %job.spec.pool,
                status = %job.status,
                "webhook queued a job"
            );
            let superseded = if config.server.cancel_superseded.contains(&job.spec.event) {
                supersede(state, &job).await?
            } else {
                Vec::new()
            };
            Ok(Reply::Queued {
                job_id: job.id,
                status: job.status.as_str(),
                superseded,
            })
        }
        Enqueued::Duplicate { job_id } => {
            debug!(job = %job_id, %forge, "webhook redelivered");
            // The first delivery may have queued the job and then failed to supersede (its
            // answer was a 503): the redelivery finishes that. Superseding again is harmless,
            // as the builds it cancelled are no longer unfinished.
            let superseded = match state.queue().get(&job_id).await? {
                Some(job) if config.server.cancel_superseded.contains(&job.spec.event) => {
                    supersede(state, &job).await?
                }
                _ => Vec::new(),
            };
            Ok(Reply::Duplicate {
                job_id,
                duplicate: true,
                superseded,
            })
        }
    }
}

/// A closed (or merged) pull request: its builds still queued, waiting for approval or
/// running are cancelled, as a newer push to it would have them, when pull request builds are
/// superseded at all (`server.cancel_superseded`). A redelivery finds nothing left to cancel.
async fn close(
    state: &AppState,
    key: &Secret,
    closed: raibid_forge::PullRequestClosed,
) -> Result<Reply, ApiError> {
    check_signed_by_own_secret(state.repos(), key, &closed.repo)?;
    if !state.repos().is_allowed(&closed.repo) {
        return Err(ApiError::RepoNotAllowed(closed.repo));
    }
    let config = state.config();
    if !config
        .server
        .cancel_superseded
        .contains(&raibid_model::Event::PullRequest)
        || !config
            .server
            .events
            .contains(&raibid_model::Event::PullRequest)
    {
        return Ok(Reply::Ignored {
            ignored: "pull_request action \"closed\": its builds are left to run \
                      (server.cancel_superseded has no pull_request)"
                .into(),
        });
    }
    let reason = format!("pull request #{} closed", closed.number);
    let cancelled = state
        .queue()
        .cancel_lane(&closed.repo, &closed.git_ref(), &reason)
        .await?;
    for build in &cancelled {
        info!(job = %build.id, repo = %closed.repo, result = ?build.result, "{reason}: cancelled");
    }
    Ok(Reply::Closed {
        closed: closed.number,
        cancelled: cancelled.into_iter().map(|b| b.id).collect(),
    })
}

/// Cancels the older builds `job` supersedes; returns those it cancelled or asked to stop.
///
/// The new job is queued already when this fails (Redis lost in between), and it has not
/// joined its lane either, so no later push would find it. The answer is then a 503 naming
/// the job, so that the forge delivers the webhook again: the redelivery is a duplicate, which
/// supersedes again instead of queueing.
async fn supersede(state: &AppState, job: &raibid_model::Job) -> Result<Vec<String>, ApiError> {
    let done = state.queue().supersede(job).await.map_err(|e| {
        warn!(job = %job.id, error = %e, "cannot cancel the builds this one supersedes");
        ApiError::QueueUnavailable(format!(
            "job {} is queued, but the older builds it supersedes could not be cancelled \
             ({e}); deliver this webhook again to finish",
            job.id
        ))
    })?;
    Ok(done
        .into_iter()
        .filter_map(|s| match s.result {
            CancelResult::Kept => {
                info!(job = %s.id, by = %job.id, "superseded, but its pipeline is not interruptible");
                None
            }
            _ => {
                info!(job = %s.id, by = %job.id, result = ?s.result, "superseded");
                Some(s.id)
            }
        })
        .collect())
}

/// The secret the body must be signed with: the repository's own, else the global one.
///
/// The repository name is read from the still-unverified body only to choose the key; a
/// forged name merely selects a secret the forger does not know either. The name is matched
/// ignoring case, as the forge resolves it: `ACME/app` must not fall back to the global secret
/// while its statuses land on `acme/app`.
fn secret_for<'c>(rules: &'c RepoRules, config: &'c Config, body: &[u8]) -> &'c Secret {
    raibid_forge::repository_name(body)
        .and_then(|repo| rules.secret_for(&repo))
        .unwrap_or(&config.server.webhook_secret)
}

/// Refuses a build of `repo` unless `key`, the secret that verified the body, is `repo`'s own
/// secret or `repo` has none.
///
/// The key was chosen from a name read before parsing; the build is for the name the parser
/// found. The two readings are meant to agree (raibid_forge reads both from JSON objects
/// only), but if they ever did not, a body signed with the global secret, which every other
/// repository's webhook holds, would build a repository whose own secret is there precisely to
/// keep those webhooks out. The check is by identity, not value: `key` came from `rules` or is
/// the global secret.
fn check_signed_by_own_secret(rules: &RepoRules, key: &Secret, repo: &str) -> Result<(), ApiError> {
    match rules.secret_for(repo) {
        Some(own) if !std::ptr::eq(own, key) => Err(ApiError::BadSignature(format!(
            "{repo} has its own webhook secret in server.repo_secrets and the body is not \
             signed with it"
        ))),
        _ => Ok(()),
    }
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
        let secret_for = |body: &[u8]| secret_for(&rules, &config, body).expose().to_owned();
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
        let array = br#"{"repository": ["acme/app", "https://evil.example/x.git", null, null]}"#;
        assert_eq!(secret_for(array), "global");
    }

    /// A body whose signature the global secret verified never builds a repository with a
    /// secret of its own, whatever name the secret was chosen by.
    #[test]
    fn only_a_repositorys_own_secret_signs_its_builds() {
        let mut config = Config::default();
        config.server.webhook_secret = Secret::new("global");
        for (repo, secret) in [("acme/app", "own"), ("acme/lib", "own")] {
            config
                .server
                .repo_secrets
                .insert(repo.into(), Secret::new(secret));
        }
        let rules = RepoRules::new(&config).unwrap();
        let global = &config.server.webhook_secret;
        let app = rules.secret_for("acme/app").unwrap();
        let lib = rules.secret_for("acme/lib").unwrap();

        assert!(check_signed_by_own_secret(&rules, app, "acme/app").is_ok());
        assert!(check_signed_by_own_secret(&rules, app, "ACME/App").is_ok());
        assert!(check_signed_by_own_secret(&rules, global, "acme/other").is_ok());
        // Chosen by one name, built for another: refused even where the values are equal.
        assert!(check_signed_by_own_secret(&rules, lib, "acme/app").is_err());
        let refused = check_signed_by_own_secret(&rules, global, "acme/app").unwrap_err();
        assert_eq!(refused.code(), "bad_signature");
        assert!(refused.to_string().contains("acme/app"), "{refused}");
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
