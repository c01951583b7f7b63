//! The stream of job status changes.
//!
//! Every script that changes a job's status also appends `{job, status}` to one events stream,
//! in the same atomic step. Consumers (the commit-status reporter) read it through their own
//! consumer group, so several server replicas share the work and a crash mid-report means the
//! event is delivered again rather than forgotten.
//!
//! A consumer is named after its server replica, and replicas get new names on every rollout
//! (pod host names), so the events a stopped replica had read but not acknowledged would stay
//! pending under its name forever: [`JobEvents::claim_stale`] takes them over, and
//! [`JobEvents::forget_idle_consumers`] removes the names that are left with nothing pending.

use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Redeliver our own unacknowledged events first (after a restart), then new ones. Atomic
    /// so that [`JobEvents::touch`] can end it through a shared reference.
    backlog_done: AtomicBool,
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
            backlog_done: AtomicBool::new(false),
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
        if !self.backlog_done.load(Ordering::Relaxed) {
            let backlog = self.read(count, block).await?;
            if !backlog.is_empty() {
                return Ok(backlog);
            }
            self.backlog_done.store(true, Ordering::Relaxed);
        }
        self.read(count, block).await
    }

    /// Takes over up to about `count` events that any consumer of the group read and has not
    /// acknowledged for `min_idle` (a replica that stopped mid-report), oldest first. They
    /// become this consumer's; acknowledge them as usual. Empty once nothing is that idle.
    pub async fn claim_stale(
        &self,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<JobEvent>, QueueError> {
        let key = self.queue.keys.events();
        let mut cursor = "0-0".to_owned();
        let mut events = Vec::new();
        loop {
            let reply: Value = self
                .queue
                .conn
                .run(
                    redis::cmd("XAUTOCLAIM")
                        .arg(&key)
                        .arg(&self.group)
                        .arg(&self.consumer)
                        .arg(min_idle.as_millis() as u64)
                        .arg(&cursor)
                        .arg("COUNT")
                        .arg(count.max(1)),
                )
                .await?;
            let parts = reply::array(&reply);
            let next = parts.first().map(reply::string).transpose()?;
            let claimed = reply::entries(&key, parts.get(1).unwrap_or(&Value::Nil))?;
            events.extend(self.decode(claimed).await?);
            match next {
                Some(next) if next != "0-0" && events.len() < count => cursor = next,
                _ => return Ok(events),
            }
        }
    }

    /// Resets the idle time of events this consumer holds (`ids`, read and not acknowledged),
    /// making them its own if an earlier name of it read them: events it keeps for a later
    /// retry must not look stale to other consumers' [`JobEvents::claim_stale`]. Ends the
    /// redelivery of this name's backlog: the touched events are pending under it now, and
    /// [`JobEvents::next`] would hand them back, over and over, to a caller that holds them.
    pub async fn touch(&self, ids: &[&str]) -> Result<(), QueueError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.backlog_done.store(true, Ordering::Relaxed);
        for chunk in ids.chunks(100) {
            let mut cmd = redis::cmd("XCLAIM");
            cmd.arg(self.queue.keys.events())
                .arg(&self.group)
                .arg(&self.consumer)
                .arg(0)
                .arg(chunk)
                .arg("JUSTID");
            let _: Value = self.queue.conn.run(&cmd).await?;
        }
        Ok(())
    }

    /// Deletes the group's consumers other than this one that have nothing pending and have
    /// not read for `idle` (replicas that are gone); returns their names.
    pub async fn forget_idle_consumers(&self, idle: Duration) -> Result<Vec<String>, QueueError> {
        let key = self.queue.keys.events();
        let reply: Value = self
            .queue
            .conn
            .run(
                redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(&key)
                    .arg(&self.group),
            )
            .await?;
        let mut forgotten = Vec::new();
        for consumer in reply::array(&reply) {
            let info = reply::pairs(consumer)?;
            let Some(name) = info.get("name").map(reply::string).transpose()? else {
                continue;
            };
            let pending = reply::int(info.get("pending")).unwrap_or(1);
            let idle_ms = reply::int(info.get("idle")).unwrap_or(0);
            if name == self.consumer || pending != 0 || idle_ms < idle.as_millis() as i64 {
                continue;
            }
            // Re-checked and deleted in one script: a replica waking up between XINFO and the
            // delete would otherwise lose the events it had just read.
            let mut invocation = crate::scripts::RETIRE.prepare_invoke();
            invocation.key(&key).arg(&self.group).arg(&name);
            let removed: i64 = self.queue.conn.script(&invocation).await?;
            if removed == 1 {
                forgotten.push(name);
            }
        }
        Ok(forgotten)
    }

    async fn read(&mut self, count: usize, block: Duration) -> Result<Vec<JobEvent>, QueueError> {
        if self.conn.is_none() {
            self.conn = Some(self.queue.conn.dedicated().await?);
        }
        let backlog_done = self.backlog_done.load(Ordering::Relaxed);
        let start = if backlog_done { ">" } else { "0" };
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count.max(1));
        if backlog_done {
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
        self.decode(reply::stream_entries(&reply)?).await
    }

    async fn decode(&self, entries: Vec<reply::StreamEntry>) -> Result<Vec<JobEvent>, QueueError> {
        let mut events = Vec::new();
        for entry in entries {
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

/// How long the reporter remembers what it last sent for a job; past that, at worst a status
/// is sent twice.
const REPORTED_TTL_SECS: u64 = 24 * 3600;

impl Queue {
    /// What the commit-status reporter last sent for job `id` (as given to
    /// [`Queue::set_last_report`]), shared by every server replica.
    pub async fn last_report(&self, id: &str) -> Result<Option<String>, QueueError> {
        self.conn
            .run(redis::cmd("GET").arg(self.keys.reported(id)))
            .await
    }

    /// Remembers what was just sent for job `id`, so a replica holding an older event of the
    /// job does not send the same status again (or an older one after it).
    pub async fn set_last_report(&self, id: &str, report: &str) -> Result<(), QueueError> {
        let _: () = self
            .conn
            .run(
                redis::cmd("SET")
                    .arg(self.keys.reported(id))
                    .arg(report)
                    .arg("EX")
                    .arg(REPORTED_TTL_SECS),
            )
            .await?;
        Ok(())
    }
}
