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
    let sibling_of = job
        .spec
        .matrix_parent
        .as_deref()
        .filter(|_| job.spec.env.contains_key("RAIBID_WORKFLOW"));
    if let Some(group) = &job.concurrency {
        release_group(state, job, group).await;
    }
    let parent_of = (!job.children.is_empty()).then_some(job.id.as_str());
    for parent in [sibling_of, parent_of].into_iter().flatten() {
        loop {
            match state.queue().release_waiting(parent).await {
                Ok(released) => {
                    debug!(job = %job.id, %parent, ?released, "looked at the waiting jobs");
                    break;
                }
                Err(e) if e.is_transient() => {
                    debug!(job = %job.id, error = %e, "waiting for Redis to release jobs");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => {
                    warn!(job = %job.id, %parent, error = %e, "cannot release the jobs waiting for this one");
                    break;
                }
            }
        }
    }
}

/// After `job`, which held or waited for its repository's concurrency group `group`, ended:
/// the group goes to the next job waiting for it ([`raibid_queue::Queue::release_group`]).
async fn release_group(state: &AppState, job: &Job, group: &str) {
    loop {
        match state.queue().release_group(&job.spec.repo, group).await {
            Ok(next) => {
                debug!(job = %job.id, %group, ?next, "looked at the concurrency group");
                return;
            }
            Err(e) if e.is_transient() => {
                debug!(job = %job.id, error = %e, "waiting for Redis to hand the group on");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(e) => {
                warn!(job = %job.id, %group, error = %e, "cannot hand the concurrency group on");
                return;
            }
        }
    }
}
