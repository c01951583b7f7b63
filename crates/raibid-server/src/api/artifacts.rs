//! `GET /api/v1/jobs/{id}/artifacts`: a job's `artifacts:` archive, fetched from the registry
//! the agent pushed it to, with the server's login there (`agent.registry`), and passed on as
//! it comes. Users then need what reading a job needs (nothing, or an API token with
//! `server.read_requires_token`) instead of a registry login of their own, as GitLab's
//! artifacts download is.
//!
//! The archive is checked against the digest its manifest names while it passes: a registry
//! that serves other bytes ends the response with an error instead of its last piece, so the
//! client sees a broken download (and the `X-Raibid-Artifacts-Digest` header lets it check
//! for itself).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::response::Response;
use raibid_oci::PreflightError;
use tracing::{info, warn};

use super::jobs::readable;
use crate::auth::CanRead;
use crate::{ApiError, AppState};

/// The digest of the archive, as the manifest the job recorded names it.
pub(crate) const DIGEST_HEADER: &str = "x-raibid-artifacts-digest";

pub(crate) async fn download(
    reader: CanRead,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = readable(&state, &reader, &id).await?;
    let Some(artifacts) = job.artifacts else {
        return Err(ApiError::NotFound(format!(
            "job {id} has no artifacts: its pipeline has no `artifacts:`, the job has not \
             finished, or they were not kept (its log says why)"
        )));
    };
    if artifacts.expired {
        return Err(ApiError::Gone(format!(
            "the artifacts of job {id} expired and were deleted from the registry; run the job \
             again to build them anew"
        )));
    }
    let config = state.config();
    let reference = artifacts.reference;
    let options = fetch_options(config, &reference);
    let download = raibid_oci::open_artifact(&reference, &options)
        .await
        .map_err(|e| match e {
            PreflightError::Refused { status: 404, .. } => ApiError::NotFound(format!(
                "the registry no longer has the artifacts of job {id} ({reference}): deleted \
                 there"
            )),
            e => {
                warn!(job = %id, %reference, error = %e, "artifacts: the registry failed");
                ApiError::BadGateway(format!("fetching {reference}: {e}"))
            }
        })?;
    info!(job = %id, %reference, size = download.size, "artifacts downloaded");
    let (size, digest) = (download.size, download.digest.clone());
    let job_id = id.clone();
    let body = futures::stream::unfold(Some(download), move |state| {
        let job_id = job_id.clone();
        async move {
            let mut download = state?;
            match download.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(download))),
                Ok(None) => None,
                Err(e) => {
                    warn!(job = %job_id, error = %e, "artifacts: download broken off");
                    Some((Err(std::io::Error::other(e.to_string())), None))
                }
            }
        }
    });
    Response::builder()
        .header(CONTENT_TYPE, "application/gzip")
        .header(CONTENT_LENGTH, size)
        .header(
            CONTENT_DISPOSITION,
            format!("attachment; filename=\"{id}-artifacts.tar.gz\""),
        )
        .header(DIGEST_HEADER, digest)
        .body(Body::from_stream(body))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// The agents' login where they push (`agent.registry`, on its host only), else none.
fn fetch_options(config: &raibid_config::Config, reference: &str) -> raibid_oci::FetchOptions {
    let (insecure, credentials) = config.registry_login_for(reference);
    raibid_oci::FetchOptions {
        insecure,
        timeout: std::time::Duration::from_secs(60),
        credentials,
    }
}
