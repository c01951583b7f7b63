//! Following a job's log as Server-Sent Events.
//!
//! Wire format (also in the OpenAPI description): each chunk of output is one `event: log`
//! whose `id` is the chunk's cursor and whose `data` is `{"text": "<chunk>"}`. SSE data lines
//! cannot hold raw newlines, and JSON-encoding the chunk keeps one event per chunk, which a
//! client decodes with any JSON parser. Bytes that are not UTF-8 are replaced with U+FFFD
//! (the plain-text endpoint returns them untouched). When the log ends, one `event: end` with
//! `{"status": "<final status>"}` closes the stream. If the job's record was deleted (pruned)
//! before its final status could be read, one `event: gone` with the error body of a 410
//! (`{"error": {"code": "gone", "message"}}`) closes it instead: an `end` without a status
//! would be unreadable, and reconnecting could only get 404. A stream cut by server shutdown
//! gets neither, so the client resumes with `Last-Event-ID`. Idle streams carry keep-alive
//! comments.
//!
//! Each stream of a job that can still write holds its own Redis connection (blocking reads
//! would stall a shared one) and waits at most [`FOLLOW_BLOCK`] per read, so server shutdown
//! and client disconnects end it promptly. Those connections are why streams are bounded: a
//! stream holds one of `server.max_log_streams` permits (and one of its client's
//! `server.max_log_streams_per_client`) while it is open, and is closed after
//! `server.log_stream_max_secs` without an `end` event, so the client reconnects with
//! `Last-Event-ID` (a queued job may never end, and its followers must not hold their
//! connections forever).

use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use raibid_model::{Job, JobStatus};
use raibid_queue::{LogChunk, LogCursor, LogFollower, Queue, QueueError};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::AppState;
use crate::state::ClientLogSlot;

const FOLLOW_BLOCK: Duration = Duration::from_secs(1);
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Pause before reconnecting after Redis failed mid-stream.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
const DRAIN_BATCH: usize = 512;

pub(crate) fn stream(
    state: AppState,
    job: Job,
    start: LogCursor,
    mut follower: Option<LogFollower>,
    permit: (OwnedSemaphorePermit, ClientLogSlot),
) -> Response {
    let queue = state.queue().clone();
    let shutdown = state.shutdown().clone();
    let lifetime = Duration::from_secs(state.config().server.log_stream_max_secs);
    let events = async_stream::stream! {
        // Dropped with the stream, whether it ended or the client went away.
        let _permit = permit;
        let gone = super::logs::gone_note(&job);
        let id = job.id;
        if let Some(note) = gone
            && start == LogCursor::start()
        {
            // No id: a client that resumes from here starts over, note included.
            let data = serde_json::json!({ "text": note });
            yield Ok::<Event, Infallible>(Event::default().event("log").data(data.to_string()));
        }
        let mut cursor = start;
        // A job already final has nothing more coming: read what is left without blocking
        // (the client's cursor may even be past the end marker).
        let draining = job.status.is_final();
        let expired = tokio::time::sleep(lifetime);
        tokio::pin!(expired);
        loop {
            let read = tokio::select! {
                () = shutdown.cancelled() => break,
                () = &mut expired => {
                    debug!(job = %id, "log follow reached its maximum lifetime");
                    break;
                }
                read = next_batch(&queue, &id, &cursor, draining, &mut follower) => read,
            };
            let batch = match read {
                Ok(batch) => batch,
                Err(e) => {
                    warn!(job = %id, error = %e, "log follow interrupted; retrying");
                    follower = None;
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(RETRY_PAUSE) => continue,
                    }
                }
            };
            let progressed = batch.next != cursor;
            for chunk in &batch.chunks {
                yield Ok::<Event, Infallible>(log_event(chunk));
            }
            cursor = batch.next;
            if batch.finished || (draining && !progressed) {
                let ending = if draining {
                    Ending::Status(job.status)
                } else {
                    final_status(&queue, &id, &shutdown).await
                };
                match ending {
                    Ending::Status(status) => yield Ok(end_event(status)),
                    Ending::Gone => yield Ok(gone_event(&id)),
                    // The log has not been seen to its end by this client: it resumes.
                    Ending::Shutdown => {}
                }
                break;
            }
        }
        debug!(job = %id, "log follow ended");
    };
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // Reverse proxies that buffer responses would hold the stream back.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

async fn next_batch(
    queue: &Queue,
    id: &str,
    cursor: &LogCursor,
    draining: bool,
    follower: &mut Option<LogFollower>,
) -> Result<raibid_queue::LogBatch, QueueError> {
    if draining {
        return queue.read_log(id, cursor, DRAIN_BATCH).await;
    }
    let follower = match follower {
        Some(f) => f,
        None => follower.insert(queue.log_follower(id).await?),
    };
    follower.next(cursor, FOLLOW_BLOCK).await
}

/// How a stream whose log has ended is closed.
enum Ending {
    Status(JobStatus),
    /// The job's record no longer exists (pruned).
    Gone,
    /// The server is shutting down before the status could be read.
    Shutdown,
}

/// The job's status once its log has ended.
async fn final_status(queue: &Queue, id: &str, shutdown: &CancellationToken) -> Ending {
    loop {
        match queue.get(id).await {
            Ok(Some(job)) => return Ending::Status(job.status),
            Ok(None) => return Ending::Gone,
            Err(e) => {
                warn!(job = %id, error = %e, "could not read the final status; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return Ending::Shutdown,
                    () = tokio::time::sleep(RETRY_PAUSE) => {}
                }
            }
        }
    }
}

fn log_event(chunk: &LogChunk) -> Event {
    let data = serde_json::json!({ "text": String::from_utf8_lossy(&chunk.data) });
    Event::default()
        .event("log")
        .id(chunk.cursor.0.as_str())
        .data(data.to_string())
}

fn end_event(status: JobStatus) -> Event {
    let data = serde_json::json!({ "status": status });
    Event::default().event("end").data(data.to_string())
}

fn gone_event(id: &str) -> Event {
    let data = serde_json::json!({ "error": {
        "code": "gone",
        "message": format!("job {id} was deleted before its log ended"),
    } });
    Event::default().event("gone").data(data.to_string())
}
