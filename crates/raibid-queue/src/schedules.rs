//! What the server's scheduler remembers between wake-ups, replicas and restarts: per
//! schedule, the newest occurrence it has handled and the last job it queued.
//!
//! Queuing an occurrence's job is made exactly-once by its delivery id (`cron:<name>:<time>`,
//! checked by the enqueue script); the mark is what lets a scheduler tell, after a restart or
//! past the delivery ids' 24 h, that an occurrence was already handled, and what
//! `GET /api/v1/schedules` shows as the last job.

use std::collections::HashMap;

use crate::{Queue, QueueError, scripts};

/// A schedule's mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleMark {
    /// The newest occurrence handled (queued, or passed over), in unix seconds.
    pub occurrence: i64,
    /// The last job an occurrence queued, if any has.
    pub job_id: Option<String>,
}

impl Queue {
    /// The mark of schedule `name`; `None` before any scheduler has seen the schedule.
    pub async fn schedule_mark(&self, name: &str) -> Result<Option<ScheduleMark>, QueueError> {
        let fields: HashMap<String, String> = self
            .conn
            .run(redis::cmd("HGETALL").arg(self.keys.schedule(name)))
            .await?;
        let Some(occurrence) = fields.get("occurrence") else {
            return Ok(None);
        };
        let occurrence = occurrence.parse().map_err(|_| {
            QueueError::Protocol(format!("schedule {name}: occurrence {occurrence:?}"))
        })?;
        Ok(Some(ScheduleMark {
            occurrence,
            job_id: fields.get("job").cloned(),
        }))
    }

    /// Marks `occurrence` of schedule `name` handled, with the job it queued if any. The mark
    /// never moves back: returns false (and changes nothing but a missing job id of the same
    /// occurrence) when it already stands at or past `occurrence`.
    pub async fn mark_schedule(
        &self,
        name: &str,
        occurrence: i64,
        job_id: Option<&str>,
    ) -> Result<bool, QueueError> {
        let mut invocation = scripts::MARK_SCHEDULE.prepare_invoke();
        invocation
            .key(self.keys.schedule(name))
            .arg(occurrence.to_string())
            .arg(job_id.unwrap_or_default());
        let moved: i64 = self.conn.script(&invocation).await?;
        Ok(moved == 1)
    }
}
