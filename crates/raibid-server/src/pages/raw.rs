//! `GET /jobs/{id}/raw`: a job's whole log as plain text, for the job page's "raw" link.
//!
//! The API's `GET /api/v1/jobs/{id}/logs` gives the log as stored, escape codes and all, in
//! pages of at most 8 MiB that a client continues from a cursor: right for `raibid job logs`,
//! which passes the colours to a terminal, but a browser shows the codes as `[1;36m` litter
//! and follows no cursor. This streams the whole log (at most `redis.log_max_bytes`) without
//! holding it, its escape codes stripped as `raibid job logs` strips them in a pipe; a code
//! cut between two of the agent's writes is removed whole, since the stripping carries its
//! state from one read to the next.

use anstream::adapter::StripBytes;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use raibid_queue::LogCursor;

use super::{PageError, Viewer, served_as};
use crate::ApiError;
use crate::AppState;
use crate::api::jobs::readable;
use crate::api::logs::gone_note;
use crate::auth::CanRead;

/// Chunks per Redis read: about what one read of the API's plain log takes.
const READ_BATCH: usize = 256;

pub(super) async fn raw(
    viewer: Viewer,
    reader: Result<CanRead, ApiError>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let fail = |e: ApiError| viewer.fail(e);
    let reader = reader.map_err(fail)?;
    let job = readable(&state, &reader, &id).await.map_err(fail)?;
    let note = gone_note(&job);
    // Saved under the job's name; ids are checked ULIDs, nothing to quote.
    let disposition = HeaderValue::from_str(&format!("inline; filename=\"job-{}.log\"", job.id));
    let mut response = Body::from_stream(plain_log(state, job.id, note)).into_response();
    served_as(
        &mut response,
        "text/plain; charset=utf-8",
        "default-src 'none'; frame-ancestors 'none'",
    );
    if let Ok(value) = disposition {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// Job `id`'s log from its start, `note` first, escape codes stripped, read batch by batch as
/// the client takes it.
fn plain_log(
    state: AppState,
    id: String,
    note: Option<String>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send {
    async_stream::try_stream! {
        if let Some(note) = note {
            yield Bytes::from(note);
        }
        let mut strip = StripBytes::new();
        let mut cursor = LogCursor::start();
        loop {
            let batch = state
                .queue()
                .read_log(&id, &cursor, READ_BATCH)
                .await
                .map_err(std::io::Error::other)?;
            if batch.chunks.is_empty() {
                break;
            }
            let mut text = Vec::new();
            for chunk in &batch.chunks {
                for printable in strip.strip_next(&chunk.data) {
                    text.extend_from_slice(printable);
                }
            }
            if !text.is_empty() {
                yield Bytes::from(text);
            }
            if batch.finished {
                break;
            }
            cursor = batch.next;
        }
    }
}
