//! Jobs that wait for other jobs: a workflow of `.raibid/` with `depends_on` is recorded
//! `blocked` with [`raibid_model::Needs`], and queued (or skipped) once the jobs it names have
//! ended.
//!
//! Several parties look, so none is missed without any keeping state: the job that queued
//! the workflows looks right after recording its children (a dependency may have ended before
//! its dependant existed), the server looks whenever a child ends (the events stream, at least
//! once), and its reaper sweeps the older waiting jobs now and then ([`Queue::sweep_waiting`]),
//! for endings whose events no server read before the stream was trimmed. Several may decide
//! for the same job; approving or cancelling a job that is no longer blocked changes nothing,
//! so the later ones lose harmlessly.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use raibid_model::{Job, JobStatus, Needs, NeedsVerdict};

use crate::{Enqueued, Queue, QueueError, scripts};

/// What [`Queue::release_waiting`] did with one waiting job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub id: String,
    /// [`NeedsVerdict::Run`]: queued; [`NeedsVerdict::Skip`]: skipped with that reason.
    pub verdict: NeedsVerdict,
}

/// Blocked jobs read per page of a sweep, and the most pages: the reaper calls it every
/// minute, and jobs waiting for a person's approval are in the same index.
const SWEEP_BATCH: usize = 200;
const SWEEP_PAGES: usize = 25;

impl Queue {
    /// Releases (see [`Queue::release_waiting`]) what waits among the blocked jobs recorded
    /// before `cutoff`, the oldest first, at most [`SWEEP_PAGES`] pages of [`SWEEP_BATCH`].
    pub async fn sweep_waiting(&self, cutoff: DateTime<Utc>) -> Result<Vec<Released>, QueueError> {
        let cutoff = cutoff.timestamp_millis();
        if cutoff <= 0 {
            return Ok(Vec::new());
        }
        // Job ids are ULIDs, ordered by time: the smallest id of the cutoff's millisecond.
        let bound = format!("({}", ulid::Ulid::from_parts(cutoff as u64, 0));
        let mut parents = BTreeSet::new();
        // Page by id: jobs waiting for a person's approval can stay for days, and must not
        // hide the waiting workflows behind them.
        let mut from = "-".to_owned();
        for _ in 0..SWEEP_PAGES {
            let ids: Vec<String> = self
                .conn
                .run(
                    redis::cmd("ZRANGE")
                        .arg(self.keys.by_status(JobStatus::Blocked))
                        .arg(&from)
                        .arg(&bound)
                        .arg("BYLEX")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(SWEEP_BATCH),
                )
                .await?;
            for id in &ids {
                if let Some(job) = self.get(id).await?
                    && job.spec.needs.is_some()
                    && let Some(parent) = job.spec.matrix_parent
                {
                    parents.insert(parent);
                }
            }
            match ids.last() {
                Some(last) if ids.len() == SWEEP_BATCH => from = format!("({last}"),
                _ => break,
            }
        }
        let mut released = Vec::new();
        for parent in parents {
            released.extend(self.release_waiting(&parent).await?);
        }
        Ok(released)
    }

    /// Queues or skips every child of `parent` that waits for other jobs and whose wait is
    /// over; what it did. Children still waiting, or decided already, are left alone.
    pub async fn release_waiting(&self, parent: &str) -> Result<Vec<Released>, QueueError> {
        let mut released = Vec::new();
        let children = self.children_of(parent).await?;
        if children.is_empty() {
            return Ok(released);
        }
        // Every child of a workflow's job ending looks here, so only the statuses are read
        // for all of them (one round trip), and only blocked children in full.
        let statuses = self.statuses(&children).await?;
        for (child, status) in children.iter().zip(statuses) {
            if status != Some(JobStatus::Blocked) {
                continue;
            }
            let Some(job) = self.get(child).await? else {
                continue;
            };
            let Some(needs) = job.spec.needs.as_ref() else {
                continue;
            };
            // Released once already, and now waiting for its concurrency group, which
            // releases it (`Queue::release_group`).
            if job.status != JobStatus::Blocked || job.concurrency.is_some() {
                continue;
            }
            // Most looks find something still running: decided from the statuses alone
            // (one round trip), before reading every record the verdict names.
            if self.any_running(&needs.jobs).await? {
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
                NeedsVerdict::Skip(reason) => {
                    if !self.skip_blocked(&job.id, reason).await? {
                        continue;
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

    /// After siblings under `parent` were retried (`replaced`: each original's id and its
    /// retry's): records again, waiting for the retries, the siblings skipped because of how
    /// those ended (and those skipped because one of them was), as GitHub re-runs what depends
    /// on a re-run job. Siblings still waiting for an original wait for its retry instead.
    /// Each copy replaces its original among `parent`'s children, so the combined status
    /// waits for it. The ids of the copies.
    ///
    /// Jobs a person (or a cancel of `parent`) cancelled stay so.
    pub(crate) async fn revive_dependants(
        &self,
        parent: &str,
        replaced: &BTreeMap<String, String>,
    ) -> Result<Vec<String>, QueueError> {
        // Children are recorded in dependency order, so one pass finds a dependant's
        // dependants after it.
        let mut replaced = replaced.clone();
        let mut revived = Vec::new();
        for child in self.children_of(parent).await? {
            let Some(job) = self.get(&child).await? else {
                continue;
            };
            let Some(needs) = job.spec.needs.as_ref() else {
                continue;
            };
            if !needs.jobs.iter().any(|id| replaced.contains_key(id)) {
                continue;
            }
            let revive = if job.status == JobStatus::Blocked {
                let (old, new) = needs
                    .jobs
                    .iter()
                    .find_map(|id| replaced.get_key_value(id.as_str()))
                    .expect("checked above");
                let reason = format!(
                    "{}replaced by a copy that waits for {new}, the retry of {old}",
                    Needs::NOT_RUN
                );
                // Not blocked any more: decided meanwhile, queued (it runs) or skipped
                // (revived all the same).
                self.skip_blocked(&job.id, &reason).await?
                    || self.get(&child).await?.is_some_and(|now| skipped(&now))
            } else {
                skipped(&job)
            };
            if !revive {
                continue;
            }
            let mut spec = job.spec.clone();
            if let Some(needs) = spec.needs.as_mut() {
                for id in &mut needs.jobs {
                    if let Some(new) = replaced.get(id.as_str()) {
                        id.clone_from(new);
                    }
                }
            }
            spec.delivery_id = None;
            spec.retry_of = Some(job.id.clone());
            let copy = match self.enqueue_blocked(spec).await? {
                Enqueued::Created(copy) => copy.id,
                Enqueued::Duplicate { job_id } => {
                    return Err(QueueError::Protocol(format!(
                        "a copy of {} collided with delivery of {job_id}",
                        job.id
                    )));
                }
            };
            self.replace_child(parent, &job.id, &copy).await?;
            replaced.insert(job.id, copy.clone());
            revived.push(copy);
        }
        Ok(revived)
    }

    /// Ends blocked job `id` as [`JobStatus::Skipped`] with `reason`; false when it was no
    /// longer blocked (decided by another party, or cancelled).
    async fn skip_blocked(&self, id: &str, reason: &str) -> Result<bool, QueueError> {
        let mut invocation = scripts::SKIP.prepare_invoke();
        invocation
            .key(self.keys.job(id))
            .key(self.keys.by_status(JobStatus::Blocked))
            .key(self.keys.by_status(JobStatus::Skipped))
            .key(self.keys.log(id))
            .key(self.keys.events())
            .arg(Utc::now().timestamp_millis())
            .arg(id)
            .arg(reason);
        let reply: String = self.conn.script(&invocation).await?;
        match reply.as_str() {
            "skipped" => Ok(true),
            "missing" => Err(QueueError::NotFound(id.to_owned())),
            _ => Ok(false),
        }
    }

    /// Whether any of `ids` has not ended yet.
    async fn any_running(&self, ids: &[String]) -> Result<bool, QueueError> {
        Ok(self
            .statuses(ids)
            .await?
            .into_iter()
            .flatten()
            .any(|status| !status.is_final()))
    }
}

/// Whether `job` was not run because what it waited for did not end as it wanted (not by a
/// person's cancel). Jobs recorded before [`JobStatus::Skipped`] existed were cancelled,
/// with a reason that [`Needs::NOT_RUN`] begins.
fn skipped(job: &Job) -> bool {
    job.status == JobStatus::Skipped
        || job.status == JobStatus::Cancelled
            && job
                .reason
                .as_deref()
                .is_some_and(|reason| reason.starts_with(Needs::NOT_RUN))
}
