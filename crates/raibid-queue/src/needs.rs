//! Jobs that wait for other jobs: a workflow of `.raibid/` with `depends_on` is recorded
//! `blocked` with [`raibid_model::Needs`], and queued (or dropped) once the jobs it names have
//! ended.
//!
//! Two parties look, so none is missed without either keeping state: the job that queued
//! the workflows looks right after recording its children (a dependency may have ended before
//! its dependant existed), and the server looks whenever a child ends (the events stream, at
//! least once). Both may decide for the same job; approving or cancelling a job that is no
//! longer blocked changes nothing, so the second one loses harmlessly.

use raibid_model::{Job, JobStatus, NeedsVerdict};

use crate::queue::CancelScope;
use crate::{CancelResult, Queue, QueueError};

/// What [`Queue::release_waiting`] did with one waiting job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub id: String,
    /// [`NeedsVerdict::Run`]: queued; [`NeedsVerdict::Drop`]: cancelled with that reason.
    pub verdict: NeedsVerdict,
}

impl Queue {
    /// Queues or drops every child of `parent` that waits for other jobs and whose wait is
    /// over; what it did. Children still waiting, or decided already, are left alone.
    pub async fn release_waiting(&self, parent: &str) -> Result<Vec<Released>, QueueError> {
        let mut released = Vec::new();
        let children = self.children_of(parent).await?;
        if children.is_empty() {
            return Ok(released);
        }
        // Every child of a workflow's job ending looks here, so only the statuses are read
        // for all of them (one round trip), and only blocked children in full.
        let mut pipe = redis::pipe();
        for child in &children {
            pipe.cmd("HGET").arg(self.keys.job(child)).arg("status");
        }
        let statuses: Vec<Option<String>> = self.conn.pipe(&pipe).await?;
        let blocked = JobStatus::Blocked.as_str();
        for (child, status) in children.iter().zip(statuses) {
            if status.as_deref() != Some(blocked) {
                continue;
            }
            let Some(job) = self.get(child).await? else {
                continue;
            };
            let Some(needs) = job.spec.needs.as_ref() else {
                continue;
            };
            if job.status != JobStatus::Blocked {
                continue;
            }
            let mut needed: Vec<Option<Job>> = Vec::with_capacity(needs.jobs.len());
            for id in &needs.jobs {
                needed.push(self.get(id).await?);
            }
            let verdict = needs.verdict(&needed.iter().map(Option::as_ref).collect::<Vec<_>>());
            match &verdict {
                NeedsVerdict::Wait => continue,
                NeedsVerdict::Run => match self.approve(&job.id).await {
                    Ok(_) => {}
                    // Decided by the other party (or cancelled) meanwhile.
                    Err(QueueError::NotBlocked { .. }) => continue,
                    Err(e) => return Err(e),
                },
                NeedsVerdict::Drop(reason) => {
                    match self
                        .cancel_job(&job.id, reason, CancelScope::Blocked)
                        .await?
                    {
                        CancelResult::Cancelled => {}
                        _ => continue,
                    }
                }
            }
            tracing::info!(job = %job.id, ?verdict, "a job that waited for others");
            released.push(Released {
                id: job.id,
                verdict,
            });
        }
        Ok(released)
    }
}
