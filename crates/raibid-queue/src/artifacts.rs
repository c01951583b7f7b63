//! When jobs' artifacts expire: a sorted set of `<job id> <reference>` by the time they are
//! due for deletion (`agent.artifacts_expire_days`). The record of the job says where they
//! are; this index is what lets an agent find the due ones without reading every job. An
//! agent takes the due entries (each goes to one agent), deletes them from the registry, and
//! marks the job's artifacts expired.

use chrono::{DateTime, Utc};
use raibid_model::JobArtifacts;

use crate::{Queue, QueueError, scripts};

/// Artifacts due for deletion, taken by one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueArtifacts {
    pub job_id: String,
    /// Pinned by digest, as the job records it.
    pub reference: String,
}

impl Queue {
    /// Schedules job `job_id`'s artifacts at `reference` for deletion at `at` (again, if a
    /// deletion failed and is tried later).
    pub async fn schedule_artifacts_expiry(
        &self,
        job_id: &str,
        reference: &str,
        at: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        if reference.contains(' ') || job_id.contains(' ') {
            return Err(QueueError::Invalid(format!(
                "artifacts reference {reference:?} of job {job_id}"
            )));
        }
        let _: i64 = self
            .conn
            .run(
                redis::cmd("ZADD")
                    .arg(self.keys.artifacts_expiry())
                    .arg(at.timestamp_millis())
                    .arg(format!("{job_id} {reference}")),
            )
            .await?;
        Ok(())
    }

    /// Takes up to `limit` artifacts due by `now`: each is handed to one caller only, which
    /// deletes it or schedules it again.
    pub async fn take_due_artifacts(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueArtifacts>, QueueError> {
        let mut invocation = scripts::TAKE_DUE.prepare_invoke();
        invocation
            .key(self.keys.artifacts_expiry())
            .arg(now.timestamp_millis())
            .arg(limit);
        let members: Vec<String> = self.conn.script(&invocation).await?;
        Ok(members
            .into_iter()
            .filter_map(|member| {
                let (job_id, reference) = member.split_once(' ')?;
                Some(DueArtifacts {
                    job_id: job_id.to_owned(),
                    reference: reference.to_owned(),
                })
            })
            .collect())
    }

    /// Marks job `job_id`'s artifacts expired, if the job still records the ones at
    /// `reference` (a job retried since records its retry's under its own id). Returns false
    /// for a job gone (pruned) or recording others.
    pub async fn mark_artifacts_expired(
        &self,
        job_id: &str,
        reference: &str,
    ) -> Result<bool, QueueError> {
        let key = self.keys.job(job_id);
        let recorded: Option<String> = self
            .conn
            .run(redis::cmd("HGET").arg(&key).arg("artifacts"))
            .await?;
        let Some(mut artifacts) = recorded
            .and_then(|json| serde_json::from_str::<JobArtifacts>(&json).ok())
            .filter(|a| a.reference == reference)
        else {
            return Ok(false);
        };
        artifacts.expired = true;
        let json = serde_json::to_string(&artifacts)
            .map_err(|e| QueueError::Protocol(format!("encoding artifacts: {e}")))?;
        let mut invocation = scripts::SET_IF_PRESENT.prepare_invoke();
        invocation.key(&key).arg("artifacts").arg(json);
        let set: i64 = self.conn.script(&invocation).await?;
        Ok(set == 1)
    }
}
