//! Jobs that wait for other jobs (a workflow of `.raibid/` with `depends_on`, a job waiting
//! for its concurrency group): when a job ends, the server queues or skips its siblings whose
//! wait is over ([`raibid_queue::Queue::release_waiting`]) and hands its concurrency group on
//! ([`raibid_queue::Queue::release_group`]). Driven by the events stream, which the
//! reporter reads at least once, so an ending is never missed while a server runs.

use std::time::Duration;

use raibid_model::Job;
use tracing::{debug, warn};

use crate::AppState;

const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// After `job` ended: its siblings, when it is a workflow's job (a matrix variant of a
/// `.raibid.yaml` has no sibling that waits), and its own children, when it queued some
/// (the agent that ran it looked already; this covers that agent failing to). Waits out
/// Redis outages, as the event must not be acknowledged before this is done.
pub(crate) async fn job_ended(state: &AppState, job: &Job) {
    let queue = state.queue();
    if let Some(group) = &job.concurrency {
        let done = until_done(job, "hand its concurrency group on", || {
            queue.release_group(&job.spec.repo, group)
        })
        .await;
        debug!(job = %job.id, %group, next = ?done, "looked at the concurrency group");
    }
    let sibling_of = job
        .spec
        .matrix_parent
        .as_deref()
        .filter(|_| job.spec.env.contains_key("RAIBID_WORKFLOW"));
    let parent_of = (!job.children.is_empty()).then_some(job.id.as_str());
    for parent in [sibling_of, parent_of].into_iter().flatten() {
        let released = until_done(job, "release the jobs waiting for it", || {
            queue.release_waiting(parent)
        })
        .await;
        debug!(job = %job.id, %parent, ?released, "looked at the waiting jobs");
    }
}

/// Runs `op` until it succeeds or fails for good (`None`, logged), pausing while Redis is away.
async fn until_done<T, F, Fut>(job: &Job, what: &str, op: F) -> Option<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, raibid_queue::QueueError>>,
{
    loop {
        match op().await {
            Ok(done) => return Some(done),
            Err(e) if e.is_transient() => {
                debug!(job = %job.id, error = %e, "waiting for Redis to {what}");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(e) => {
                warn!(job = %job.id, error = %e, "cannot {what}");
                return None;
            }
        }
    }
}
