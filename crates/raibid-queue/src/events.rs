//! The stream of job status changes.
//!
//! Every script that changes a job's status also appends `{job, status}` to one events stream,
//! in the same atomic step. Consumers (the commit-status reporter) read it through their own
//! consumer group, so several server replicas share the work and a crash mid-report means the
//! event is delivered again rather than forgotten.

use std::time::Duration;

use raibid_model::JobStatus;
use redis::Value;

use crate::conn::bounded;
use crate::{Queue, QueueError, reply};

/// One status change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    /// Stream id; pass to [`JobEvents::ack`] once handled.
    pub id: String,
    pub job_id: String,
    pub status: JobStatus,
}

/// A consumer of the events stream in consumer group `group`.
pub struct JobEvents {
    queue: Queue,
    conn: Option<redis::aio::MultiplexedConnection>,
    group: String,
    consumer: String,
    /// Redeliver our own unacknowledged events first (after a restart), then new ones.
    backlog_done: bool,
}

impl Queue {
    /// Joins `group` on the events stream as `consumer` (created at the stream's end: a new
    /// reporter does not replay history).
    pub async fn job_events(&self, group: &str, consumer: &str) -> Result<JobEvents, QueueError> {
        let created: Result<String, QueueError> = self
            .conn
            .run(
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(self.keys.events())
                    .arg(group)
                    .arg("$")
                    .arg("MKSTREAM"),
            )
            .await;
        match created {
            Ok(_) => {}
            Err(QueueError::Redis(e)) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e),
        }
        Ok(JobEvents {
            queue: self.clone(),
            conn: None,
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            backlog_done: false,
        })
    }
}

impl JobEvents {
    /// Up to `count` events, waiting up to `block` for the first.
    pub async fn next(
        &mut self,
        count: usize,
        block: Duration,
    ) -> Result<Vec<JobEvent>, QueueError> {
        if !self.backlog_done {
            let backlog = self.read(count, block).await?;
            if !backlog.is_empty() {
                return Ok(backlog);
            }
            self.backlog_done = true;
        }
        self.read(count, block).await
    }

    async fn read(&mut self, count: usize, block: Duration) -> Result<Vec<JobEvent>, QueueError> {
        if self.conn.is_none() {
            self.conn = Some(self.queue.conn.dedicated().await?);
        }
        let start = if self.backlog_done { ">" } else { "0" };
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count.max(1));
        if self.backlog_done {
            cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(self.queue.keys.events()).arg(start);
        let conn = self.conn.as_mut().expect("connected above");
        let reply: Value =
            match bounded(block + self.queue.conn.timeout(), cmd.query_async(conn)).await {
                Ok(v) => v,
                Err(e) => {
                    self.conn = None;
                    return Err(e);
                }
            };
        let mut events = Vec::new();
        for entry in reply::stream_entries(&reply)? {
            let status = entry
                .field("status")?
                .and_then(|s| s.parse::<JobStatus>().ok());
            match (entry.field("job")?, status) {
                (Some(job_id), Some(status)) => events.push(JobEvent {
                    id: entry.id,
                    job_id,
                    status,
                }),
                // Unreadable entries are acknowledged so they cannot block the group.
                _ => self.ack(&entry.id).await?,
            }
        }
        Ok(events)
    }

    pub async fn ack(&self, id: &str) -> Result<(), QueueError> {
        let _: i64 = self
            .queue
            .conn
            .run(
                redis::cmd("XACK")
                    .arg(self.queue.keys.events())
                    .arg(&self.group)
                    .arg(id),
            )
            .await?;
        Ok(())
    }
}
