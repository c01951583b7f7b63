//! `GET /api/v1/jobs/{id}/logs`: a job's output, read once as text or followed as
//! Server-Sent Events (`?follow=true`, see [`super::follow`]).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use std::net::SocketAddr;

use axum::Extension;
use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use raibid_model::Job;
use raibid_queue::{EraseLog, LogCursor};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::follow;
use super::jobs::{changeable, not_found, readable};
use crate::auth::{CanRead, CanRunJobs, token_index};
use crate::client_addr::client_ip;
use crate::{ApiError, AppState};

/// Bound on one plain response; the client continues from the returned cursor.
const PLAIN_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Chunks per Redis read.
const READ_BATCH: usize = 256;

const CURSOR_HEADER: HeaderName = HeaderName::from_static("x-raibid-log-cursor");
const FINISHED_HEADER: HeaderName = HeaderName::from_static("x-raibid-log-finished");
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

#[derive(Debug, Deserialize)]
pub(crate) struct LogParams {
    cursor: Option<String>,
    follow: Option<String>,
}

pub(crate) async fn logs(
    reader: CanRead,
    State(state): State<AppState>,
    Path(id): Path<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    params: Result<Query<LogParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let follow = match params.follow.as_deref() {
        None | Some("" | "false" | "0") => false,
        Some("true" | "1") => true,
        Some(_) => {
            return Err(ApiError::InvalidParameter {
                name: "follow",
                message: "must be true or false".into(),
            });
        }
    };
    // A reconnecting EventSource sends the id of the last event it saw; it wins over the
    // cursor of the original URL, which it repeats unchanged.
    let reconnect = headers
        .get(LAST_EVENT_ID)
        .filter(|_| follow)
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let cursor = match reconnect.or(params.cursor).filter(|c| !c.is_empty()) {
        Some(c) => LogCursor::parse(&c).ok_or_else(|| ApiError::InvalidParameter {
            name: "cursor",
            message: "expected a cursor returned by an earlier read (<ms>-<seq>)".into(),
        })?,
        None => LogCursor::start(),
    };
    let job = readable(&state, &reader, &id).await?;
    if follow {
        // Behind a reverse proxy every anonymous follower has the proxy's address, unless the
        // proxy is trusted to name them (`server.trusted_proxies`); tokens always do.
        let token = match reader.checked_token() {
            Some(i) => Some(i),
            None => token_index(&headers, &state).await,
        };
        let client = match token {
            Some(i) => format!("token:{i}"),
            None => match peer {
                Some(Extension(ConnectInfo(addr))) => {
                    let trusted = &state.config().server.trusted_proxies;
                    format!("ip:{}", client_ip(addr.ip(), &headers, trusted))
                }
                None => "unknown".to_owned(),
            },
        };
        let slot =
            state
                .client_log_slot(client)
                .ok_or_else(|| ApiError::TooManyLogStreamsForClient {
                    limit: state.config().server.max_log_streams_per_client,
                })?;
        let limit = state.config().server.max_log_streams;
        let permit = Arc::clone(state.log_streams())
            .try_acquire_owned()
            .map_err(|_| ApiError::TooManyLogStreams { limit })?;
        // A finished job's log is drained over the shared connection: only a job that can
        // still write needs a connection of its own for blocking reads.
        let follower = if job.status.is_final() {
            None
        } else {
            Some(state.queue().log_follower(&job.id).await?)
        };
        Ok(follow::stream(state, job, cursor, follower, (permit, slot)))
    } else {
        plain(&state, &job, cursor).await
    }
}

/// Said in place of a log that the reaper deleted to keep Redis below its memory limit.
pub(crate) const PRUNED_LOG_NOTE: &str = "[raibid] this job's log was deleted to keep Redis below its memory limit \
     (redis.prune_memory_percent); the job's record and result are kept\n";

/// What stands at the start of `job`'s log in place of what was deleted: a person's erasure,
/// or the reaper's pruning; `None` while the log is whole.
pub(crate) fn gone_note(job: &Job) -> Option<String> {
    match &job.log_erased {
        Some(erased) => Some(format!("[raibid] {}\n", erased.note())),
        None => job.log_pruned.then(|| PRUNED_LOG_NOTE.to_owned()),
    }
}

/// `DELETE /api/v1/jobs/{id}/logs`: erases a finished job's log (a secret that reached it
/// unmasked, say), as GitLab's "Erase job log" and Woodpecker's log deletion do. The job's
/// record and result stay, saying who erased it and when; the server's log names the token.
pub(crate) async fn erase(
    CanRunJobs(caller): CanRunJobs,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let queue = state.queue();
    let job = changeable(&state, &caller, &id).await?;
    match queue.erase_log(&id, &caller.name()).await? {
        EraseLog::Erased => {}
        EraseLog::Missing => return Err(not_found(&id)),
        EraseLog::Unfinished(status) => {
            return Err(ApiError::Conflict(format!(
                "job {id} is {status}: a log is erased once its job has ended (its agent \
                 may still write to it); cancel the job first, or wait for it to end"
            )));
        }
    }
    warn!(job = %id, repo = %job.spec.repo, token = %caller.name(), "job log erased");
    queue
        .get(&id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(&id))
}

/// What `DELETE /api/v1/jobs/{id}/build/logs` erased.
#[derive(Debug, Serialize)]
pub(crate) struct ErasedBuild {
    /// The jobs whose logs were erased: the first job, then those it queued, then theirs.
    pub erased: Vec<String>,
}

/// `DELETE /api/v1/jobs/{id}/build/logs`: erases the logs of a build, the job and every job
/// it queued (matrix variants, workflows, their variants), as Woodpecker's `log purge` of a
/// pipeline and GitHub's "Delete all logs" of a run do: a secret printed by a step of a
/// matrix is in every variant's log. Only once all of them have ended; otherwise nothing is
/// erased and the answer names one that has not. Jobs gone from Redis (past
/// `redis.retain_jobs`) are passed over.
pub(crate) async fn erase_build(
    CanRunJobs(caller): CanRunJobs,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ErasedBuild>, ApiError> {
    let queue = state.queue();
    let first = changeable(&state, &caller, &id).await?;
    let jobs = build_jobs(&state, first).await?;
    if let Some(running) = jobs.iter().find(|job| !job.status.is_final()) {
        return Err(ApiError::Conflict(format!(
            "job {} of this build is {}: logs are erased once every job of the build has \
             ended (an agent may still write to them); cancel the build first, or wait for it \
             to end",
            running.id, running.status
        )));
    }
    let mut erased = Vec::new();
    for job in &jobs {
        match queue.erase_log(&job.id, &caller.name()).await? {
            EraseLog::Erased => erased.push(job.id.clone()),
            EraseLog::Missing => {}
            EraseLog::Unfinished(status) => {
                return Err(ApiError::Conflict(format!(
                    "job {} of this build is {status}; the logs of {} were erased",
                    job.id,
                    if erased.is_empty() {
                        "none of its jobs".to_owned()
                    } else {
                        erased.join(", ")
                    }
                )));
            }
        }
    }
    warn!(job = %id, repo = %jobs[0].spec.repo, jobs = erased.len(), token = %caller.name(), "build's logs erased");
    Ok(Json(ErasedBuild { erased }))
}

/// `first` and every job it queued, and they queued, in that order; those gone from Redis
/// left out.
async fn build_jobs(state: &AppState, first: Job) -> Result<Vec<Job>, ApiError> {
    let mut jobs = vec![first];
    let mut seen: std::collections::HashSet<String> = std::iter::once(jobs[0].id.clone()).collect();
    let mut next = 0;
    while next < jobs.len() {
        let children: Vec<String> = jobs[next]
            .children
            .iter()
            .filter(|c| seen.insert((*c).clone()))
            .cloned()
            .collect();
        let read =
            futures::future::try_join_all(children.iter().map(|c| state.queue().get(c))).await?;
        jobs.extend(read.into_iter().flatten());
        next += 1;
    }
    Ok(jobs)
}

async fn plain(state: &AppState, job: &Job, mut cursor: LogCursor) -> Result<Response, ApiError> {
    // Every log entry of a job that had finished when we looked has been written; reaching the
    // end of the stream then means the end of the log, even past its end marker.
    let was_final = job.status.is_final();
    let mut body = Vec::new();
    if let Some(note) = gone_note(job)
        && cursor == LogCursor::start()
    {
        body.extend_from_slice(note.as_bytes());
    }
    let finished = 'read: loop {
        let batch = state.queue().read_log(&job.id, &cursor, READ_BATCH).await?;
        if batch.next == cursor {
            break was_final;
        }
        for chunk in batch.chunks {
            if !body.is_empty() && body.len() + chunk.data.len() > PLAIN_MAX_BYTES {
                break 'read false;
            }
            body.extend_from_slice(&chunk.data);
            cursor = chunk.cursor;
        }
        cursor = batch.next;
        if batch.finished {
            break true;
        }
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        CURSOR_HEADER,
        HeaderValue::from_str(&cursor.0).expect("stream ids are ASCII"),
    );
    headers.insert(
        FINISHED_HEADER,
        HeaderValue::from_static(if finished { "true" } else { "false" }),
    );
    Ok(response)
}
