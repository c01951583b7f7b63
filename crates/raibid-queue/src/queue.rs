use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use raibid_model::{Event, Job, JobStatus, NewJob, Outcome, PoolName};
use redis::Value;
use redis::aio::MultiplexedConnection;
use tracing::{debug, info, warn};

use crate::QueueError;
use crate::conn::{Conn, QueueOptions, bounded};
use crate::keys::Keys;
use crate::record;
use crate::reply;
use crate::scripts;

/// The job queue. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Queue {
    pub(crate) conn: Conn,
    pub(crate) keys: Keys,
    pub(crate) options: Arc<QueueOptions>,
    groups_ready: Arc<Mutex<HashSet<String>>>,
}

/// Result of [`Queue::enqueue`].
#[derive(Debug, Clone, PartialEq)]
pub enum Enqueued {
    Created(Box<Job>),
    /// The delivery id was seen within the last 24 h; nothing new was queued.
    Duplicate {
        job_id: String,
    },
}

impl Enqueued {
    pub fn job_id(&self) -> &str {
        match self {
            Enqueued::Created(job) => &job.id,
            Enqueued::Duplicate { job_id } => job_id,
        }
    }
}

/// A job this agent has been given, and what it needs to heartbeat and ack it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job: Job,
    pub entry: String,
    pub consumer: String,
}

impl Claimed {
    /// From the job's fields as the START and CLAIM scripts return them (flat pairs). The
    /// fields the script has just set to values the caller gave it are not sent back.
    fn from_reply(
        fields: &[String],
        entry: &str,
        consumer: &str,
        started_ms: i64,
    ) -> Result<Self, QueueError> {
        let mut fields: HashMap<String, String> = fields
            .chunks(2)
            .filter_map(|p| match p {
                [k, v] => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect();
        fields.insert("status".into(), JobStatus::Running.as_str().into());
        fields.insert("agent".into(), consumer.into());
        fields.insert("started_at".into(), started_ms.to_string());
        fields.insert("cancel_requested".into(), "0".into());
        let job = record::from_fields(&fields)?;
        info!(job = %job.id, attempt = job.attempt, consumer, "claimed");
        Ok(Self {
            job,
            entry: entry.to_owned(),
            consumer: consumer.to_owned(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    Continue,
    /// Somebody asked to cancel; stop the job and ack it as cancelled.
    CancelRequested,
    /// The claim was taken away (requeued after we went quiet); stop and do not ack.
    Lost,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelResult {
    /// Was queued; it will never run.
    Cancelled,
    /// Is running; its agent stops it within one heartbeat.
    Requested,
    /// Left as it is: running with a pipeline that says a newer build must not interrupt it
    /// (`interruptible: false`, when superseding), or no longer waiting for approval (when
    /// expiring blocked jobs).
    Kept,
    AlreadyFinished(JobStatus),
}

/// What became of a request to erase a job's log ([`Queue::erase_log`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EraseLog {
    Erased,
    /// No such job.
    Missing,
    /// The job has not ended (it is in this status): its log is still being written.
    Unfinished(JobStatus),
}

/// Which jobs a cancel may touch; the others end up [`CancelResult::Kept`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CancelScope {
    Any,
    /// Superseding: not a running job whose pipeline says `interruptible: false`.
    Interruptible,
    /// Expiring approvals: only a job still blocked, not one approved meanwhile.
    Blocked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseResult {
    Requeued,
    DeadLettered,
    Cancelled,
    /// The entry no longer stood for the job (it had been requeued or finished already).
    Stale,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapReport {
    pub requeued: Vec<String>,
    pub dead: Vec<String>,
    pub cancelled: Vec<String>,
}

/// How many job records one [`Queue::list_where`] call reads at most while looking for jobs
/// its filters keep.
pub const LIST_SCAN_MAX: usize = 5_000;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub repo: Option<String>,
    pub pool: Option<PoolName>,
    /// The branch a job builds ([`Job::build_branch`]): pushes to it and pull requests into
    /// it, as `when: branch` reads it. No index: looked for among the records the scan reads.
    pub branch: Option<String>,
    pub event: Option<Event>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Pass back to get the next (older) page; `None` at the end. A filtered page may hold
    /// fewer jobs than asked for and still have one (see [`Queue::list_where`]).
    pub next_cursor: Option<String>,
    /// How many records the page read: what it cost, for a caller that reads on over several
    /// pages within a budget.
    pub scanned: usize,
}

impl Queue {
    /// Prepares the connection; does not fail if Redis is down (calls will, with
    /// [`QueueError::Unavailable`]).
    pub fn open(options: QueueOptions) -> Result<Self, QueueError> {
        let conn = Conn::open(&options)?;
        Ok(Self {
            conn,
            keys: Keys::new(&options.stream_name),
            options: Arc::new(options),
            groups_ready: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    pub fn options(&self) -> &QueueOptions {
        &self.options
    }

    /// The stream a pool's jobs go to; KEDA's trigger must name the same key.
    pub fn stream_key(&self, pool: &PoolName) -> String {
        self.keys.stream(pool)
    }

    pub fn dead_letter_key(&self, pool: &PoolName) -> String {
        self.keys.dlq(pool)
    }

    pub async fn ping(&self) -> Result<(), QueueError> {
        let _: String = self.conn.run(&redis::cmd("PING")).await?;
        Ok(())
    }

    /// Creates the pool's consumer group (and stream) once per process.
    ///
    /// The group starts at id 0 so entries added before it existed are still delivered.
    async fn ensure_group(&self, pool: &PoolName) -> Result<(), QueueError> {
        let stream = self.keys.stream(pool);
        if self.groups_ready.lock().expect("lock").contains(&stream) {
            return Ok(());
        }
        let result: Result<String, QueueError> = self
            .conn
            .run(
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&stream)
                    .arg(&self.options.consumer_group)
                    .arg("0")
                    .arg("MKSTREAM"),
            )
            .await;
        match result {
            Ok(_) => {}
            Err(QueueError::Redis(e)) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e),
        }
        let _: i64 = self
            .conn
            .run(redis::cmd("SADD").arg(self.keys.pools()).arg(pool.as_str()))
            .await?;
        self.groups_ready.lock().expect("lock").insert(stream);
        Ok(())
    }

    /// Creates a pool's stream and consumer group ahead of its first job, so that an
    /// autoscaler watching the group (KEDA's trigger) sees it ready from the start.
    pub async fn ensure_pool(&self, pool: &PoolName) -> Result<(), QueueError> {
        self.ensure_group(pool).await
    }

    fn forget_group(&self, pool: &PoolName) {
        self.groups_ready
            .lock()
            .expect("lock")
            .remove(&self.keys.stream(pool));
    }

    /// Queues a job: one script writes the stream entry, the record and its indexes.
    pub async fn enqueue(&self, spec: NewJob) -> Result<Enqueued, QueueError> {
        self.enqueue_as(spec, JobStatus::Queued).await
    }

    /// Records a job that waits for a person's approval ([`JobStatus::Blocked`], see
    /// [`Queue::approve`]): like [`Queue::enqueue`], delivery ids included, but without a
    /// stream entry, so no agent sees it and nothing scales up for it.
    pub async fn enqueue_blocked(&self, spec: NewJob) -> Result<Enqueued, QueueError> {
        self.enqueue_as(spec, JobStatus::Blocked).await
    }

    async fn enqueue_as(&self, spec: NewJob, status: JobStatus) -> Result<Enqueued, QueueError> {
        record::validate(&spec)?;
        self.ensure_group(&spec.pool).await?;
        let id = next_id();
        let now = Utc::now().timestamp_millis();
        let delivery_key = spec
            .delivery_id
            .as_deref()
            .map(|d| self.keys.delivery(d))
            .unwrap_or_default();
        let mut invocation = scripts::ENQUEUE.prepare_invoke();
        invocation
            .key(self.keys.job(&id))
            .key(self.keys.stream(&spec.pool))
            .key(self.keys.all_jobs())
            .key(self.keys.by_status(status))
            .key(self.keys.by_repo(&spec.repo))
            .key(self.keys.by_pool(&spec.pool))
            .key(self.keys.pools())
            .key(&delivery_key)
            .key(self.keys.events())
            .key(self.keys.repos())
            .arg(&id)
            .arg(self.options.maxlen)
            .arg(&self.options.consumer_group)
            .arg(spec.pool.as_str())
            .arg(self.options.delivery_ttl.as_secs().max(1))
            .arg(record::spec_json(&spec))
            .arg(now)
            .arg(self.options.events_maxlen)
            .arg(status.as_str())
            .arg(&spec.repo);
        let reply: Vec<String> = self.conn.script(&invocation).await?;
        match reply.first().map(String::as_str) {
            Some("ok") => {
                debug!(job = %id, pool = %spec.pool, repo = %spec.repo, %status, "enqueued");
                let created_at = chrono::DateTime::from_timestamp_millis(now).unwrap_or_default();
                let mut job = Job::queued(id, spec, created_at);
                job.status = status;
                Ok(Enqueued::Created(Box::new(job)))
            }
            Some("dup") => Ok(Enqueued::Duplicate {
                job_id: reply.get(1).cloned().unwrap_or_default(),
            }),
            Some("full") => Err(self.full(&spec.pool, &reply)),
            _ => Err(QueueError::Protocol(format!("enqueue replied {reply:?}"))),
        }
    }

    /// The error for a script's `{"full", depth}` (ENQUEUE, APPROVE): the pool's stream is at
    /// `redis.maxlen`.
    fn full(&self, pool: &PoolName, reply: &[String]) -> QueueError {
        QueueError::Full {
            pool: pool.to_string(),
            depth: reply.get(1).and_then(|d| d.parse().ok()).unwrap_or(0),
            limit: self.options.maxlen,
        }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Job>, QueueError> {
        if !valid_id(id) {
            return Ok(None);
        }
        let fields: HashMap<String, String> = self
            .conn
            .run(redis::cmd("HGETALL").arg(self.keys.job(id)))
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        record::from_fields(&fields).map(Some)
    }

    /// The statuses of jobs `ids`, `None` for one that is gone, in one round trip: all that a
    /// build's combined status needs of its jobs, whose whole records cost many times more to
    /// read (the status filter weighs hundreds of builds to show a page).
    pub async fn statuses(&self, ids: &[String]) -> Result<Vec<Option<JobStatus>>, QueueError> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGET").arg(self.keys.job(id)).arg("status");
        }
        let read: Vec<Option<String>> = if ids.is_empty() {
            Vec::new()
        } else {
            self.conn.pipe(&pipe).await?
        };
        read.into_iter()
            .map(|status| {
                status
                    .map(|s| {
                        s.parse()
                            .map_err(|e| QueueError::Protocol(format!("job status {s:?}: {e}")))
                    })
                    .transpose()
            })
            .collect()
    }

    /// Opens the dedicated connection an agent claims on.
    pub async fn claimer(&self, consumer: impl Into<String>) -> Result<Claimer, QueueError> {
        Ok(Claimer {
            queue: self.clone(),
            consumer: consumer.into(),
            conn: Some(self.conn.dedicated().await?),
            backlog: true,
        })
    }

    /// Marks a delivered entry as running; `None` when the entry is to be skipped.
    async fn start(
        &self,
        pool: &PoolName,
        entry: &str,
        job_id: &str,
        consumer: &str,
    ) -> Result<Option<Claimed>, QueueError> {
        let now = Utc::now().timestamp_millis();
        let mut invocation = scripts::START.prepare_invoke();
        invocation
            .key(self.keys.job(job_id))
            .key(self.keys.stream(pool))
            .key(self.keys.by_status(JobStatus::Queued))
            .key(self.keys.by_status(JobStatus::Running))
            .key(self.keys.events())
            .key(self.keys.paused())
            .arg(&self.options.consumer_group)
            .arg(entry)
            .arg(consumer)
            .arg(now)
            .arg(job_id)
            .arg(pool.as_str());
        let reply: Vec<String> = self.conn.script(&invocation).await?;
        if reply.first().map(String::as_str) == Some("paused") {
            // Paused while the read waited: give the entry back as if never read, for
            // whoever claims once the pool is resumed. Should that fail, the entry stays
            // pending under this consumer and the reaper hands it back.
            debug!(job = job_id, entry, pool = %pool, "pool paused: entry handed back");
            if let Err(e) = self
                .release_entry(
                    pool,
                    entry,
                    job_id,
                    "returned unstarted: pool paused",
                    false,
                    None,
                )
                .await
            {
                warn!(job = %job_id, error = %e, "cannot hand back an entry of a paused pool now");
            }
            return Ok(None);
        }
        if reply.first().map(String::as_str) == Some("skip") {
            debug!(
                job = job_id,
                entry,
                reason = reply.get(1).map(String::as_str),
                "skipped entry"
            );
            return Ok(None);
        }
        Claimed::from_reply(&reply, entry, consumer, now).map(Some)
    }

    /// Reads and starts one job without waiting: one round trip when work is queued.
    async fn claim_now(
        &self,
        pools: &[PoolName],
        consumer: &str,
        conn: &mut MultiplexedConnection,
    ) -> Result<ClaimNow, QueueError> {
        let now = Utc::now().timestamp_millis();
        let mut invocation = scripts::CLAIM.prepare_invoke();
        invocation
            .key(self.keys.by_status(JobStatus::Queued))
            .key(self.keys.by_status(JobStatus::Running))
            .key(self.keys.events())
            .key(self.keys.paused());
        for pool in pools {
            invocation.key(self.keys.stream(pool));
        }
        invocation
            .arg(&self.options.consumer_group)
            .arg(consumer)
            .arg(now)
            .arg(self.keys.job(""));
        for pool in pools {
            invocation.arg(pool.as_str());
        }
        let reply: Vec<String> =
            bounded(self.conn.timeout(), invocation.invoke_async(conn)).await?;
        match reply.as_slice() {
            [] => Ok(ClaimNow::Empty),
            [marker, _] if marker == "nogroup" => Ok(ClaimNow::NoGroup),
            [_stream, entry, fields @ ..] => Ok(ClaimNow::Claimed(Box::new(Claimed::from_reply(
                fields, entry, consumer, now,
            )?))),
            other => Err(QueueError::Protocol(format!("claim replied {other:?}"))),
        }
    }

    /// Keeps the claim alive and reports a cancel request or a lost claim.
    pub async fn heartbeat(&self, claimed: &Claimed) -> Result<Heartbeat, QueueError> {
        let mut invocation = scripts::HEARTBEAT.prepare_invoke();
        invocation
            .key(self.keys.stream(&claimed.job.spec.pool))
            .key(self.keys.job(&claimed.job.id))
            .arg(&self.options.consumer_group)
            .arg(&claimed.consumer)
            .arg(&claimed.entry);
        let reply: String = self.conn.script(&invocation).await?;
        heartbeat_reply(&reply, "heartbeat")
    }

    /// Records the step results of a running job, for the dashboard; not part of the ack.
    /// Only while `claimed` is still the job's current claim: an agent presumed dead must not
    /// overwrite the steps of the attempt that replaced it, nor bring back a pruned record.
    /// Returns whether it was recorded.
    pub async fn record_progress(
        &self,
        claimed: &Claimed,
        steps: &[raibid_model::StepResult],
    ) -> Result<bool, QueueError> {
        self.record_claimed(claimed, "steps", &record::steps_json(steps))
            .await
    }

    /// Records the title of a job that was queued without one (a submission, a schedule, a
    /// retry of those): its commit's subject, which only the agent that checked the commit out
    /// knows, from its `message` ([`raibid_model::title_line`]). Under the same rule as
    /// [`Queue::record_progress`]: only while `claimed` is the job's current claim. Returns
    /// whether it was recorded (a message with no first line records nothing).
    pub async fn record_title(&self, claimed: &Claimed, message: &str) -> Result<bool, QueueError> {
        match raibid_model::title_line(message) {
            Some(title) => self.record_claimed(claimed, "title", &title).await,
            None => Ok(false),
        }
    }

    async fn record_claimed(
        &self,
        claimed: &Claimed,
        field: &str,
        value: &str,
    ) -> Result<bool, QueueError> {
        let mut invocation = scripts::RECORD_CLAIMED.prepare_invoke();
        invocation
            .key(self.keys.job(&claimed.job.id))
            .arg(&claimed.entry)
            .arg(field)
            .arg(value);
        let recorded: i64 = self.conn.script(&invocation).await?;
        Ok(recorded == 1)
    }

    /// XACK and the final status in one script. `false`: the claim had been lost, the result
    /// was discarded (the job runs, or ran, elsewhere). The same ack sent again is `true`: a
    /// try that timed out may have landed, and its sender must not then think the job lost.
    pub async fn ack(&self, claimed: &Claimed, outcome: &Outcome) -> Result<bool, QueueError> {
        if !outcome.status.is_final() || outcome.status == JobStatus::Dead {
            return Err(QueueError::Invalid(format!(
                "cannot ack with status {}",
                outcome.status
            )));
        }
        let id = &claimed.job.id;
        let mut invocation = scripts::ACK.prepare_invoke();
        invocation
            .key(self.keys.stream(&claimed.job.spec.pool))
            .key(self.keys.job(id))
            .key(self.keys.by_status(JobStatus::Running))
            .key(self.keys.by_status(outcome.status))
            .key(self.keys.log(id))
            .key(self.keys.events())
            .arg(&self.options.consumer_group)
            .arg(&claimed.entry)
            .arg(outcome.status.as_str())
            .arg(Utc::now().timestamp_millis())
            .arg(outcome.reason.as_deref().unwrap_or(""))
            .arg(record::steps_json(&outcome.steps))
            .arg(serde_json::to_string(&outcome.images).expect("images serialize"))
            .arg(id)
            .arg(
                outcome
                    .artifacts
                    .as_ref()
                    .map(|a| serde_json::to_string(a).expect("artifacts serialize"))
                    .unwrap_or_default(),
            )
            .arg(
                outcome
                    .tests
                    .as_ref()
                    .map(|t| serde_json::to_string(t).expect("test report serializes"))
                    .unwrap_or_default(),
            );
        let reply: String = self.conn.script(&invocation).await?;
        match reply.as_str() {
            "ok" => info!(job = %id, status = %outcome.status, "acked"),
            "again" => {
                info!(job = %id, status = %outcome.status, "already acked by an earlier try")
            }
            _ => warn!(job = %id, "ack discarded: the claim had been taken over"),
        }
        Ok(matches!(reply.as_str(), "ok" | "again"))
    }

    /// Gives a claimed job back without a verdict (agent shutting down, infrastructure
    /// failure): requeued for another agent, or dead-lettered after `max_attempts`.
    pub async fn release(
        &self,
        claimed: &Claimed,
        reason: &str,
    ) -> Result<ReleaseResult, QueueError> {
        self.release_entry(
            &claimed.job.spec.pool,
            &claimed.entry,
            &claimed.job.id,
            reason,
            true,
            None,
        )
        .await
    }

    /// `min_idle`: release only if the entry is still pending and idle that long (the reaper).
    async fn release_entry(
        &self,
        pool: &PoolName,
        entry: &str,
        job_id: &str,
        reason: &str,
        count_delivery: bool,
        min_idle: Option<Duration>,
    ) -> Result<ReleaseResult, QueueError> {
        let mut invocation = scripts::RELEASE.prepare_invoke();
        invocation
            .key(self.keys.stream(pool))
            .key(self.keys.job(job_id))
            .key(self.keys.dlq(pool))
            .key(self.keys.by_status(JobStatus::Queued))
            .key(self.keys.by_status(JobStatus::Running))
            .key(self.keys.by_status(JobStatus::Dead))
            .key(self.keys.by_status(JobStatus::Cancelled))
            .key(self.keys.log(job_id))
            .key(self.keys.events())
            .arg(&self.options.consumer_group)
            .arg(entry)
            .arg(self.options.max_attempts)
            .arg(self.options.maxlen)
            .arg(reason)
            .arg(Utc::now().timestamp_millis())
            .arg(job_id)
            .arg(if count_delivery { "1" } else { "0" })
            .arg(
                min_idle
                    .map(|d| (d.as_millis() as u64).to_string())
                    .unwrap_or_default(),
            );
        let reply: String = self.conn.script(&invocation).await?;
        let result = match reply.as_str() {
            "requeued" => ReleaseResult::Requeued,
            "dead" => ReleaseResult::DeadLettered,
            "cancelled" => ReleaseResult::Cancelled,
            "stale" | "gone" => ReleaseResult::Stale,
            "alive" => {
                debug!(
                    job = job_id,
                    entry, "not released: heart-beaten since it was found idle"
                );
                return Ok(ReleaseResult::Stale);
            }
            other => return Err(QueueError::Protocol(format!("release replied {other}"))),
        };
        info!(job = job_id, entry, ?result, reason, "released");
        Ok(result)
    }

    /// The reaper: entries delivered but idle (no heartbeat) for `min_idle` are handed back.
    ///
    /// With one-job-per-pod agents (KEDA ScaledJob) nobody would come for an entry whose agent
    /// died: it is pending, not lag. Re-adding it as a new entry makes the lag count it again.
    pub async fn requeue_stale(&self, min_idle: Duration) -> Result<ReapReport, QueueError> {
        let mut report = ReapReport::default();
        for pool in self.pools().await? {
            let stream = self.keys.stream(&pool);
            let pending: Value = match self
                .conn
                .run(
                    redis::cmd("XPENDING")
                        .arg(&stream)
                        .arg(&self.options.consumer_group)
                        .arg("IDLE")
                        .arg(min_idle.as_millis() as u64)
                        .arg("-")
                        .arg("+")
                        .arg(100),
                )
                .await
            {
                Ok(v) => v,
                Err(QueueError::Redis(e)) if e.code() == Some("NOGROUP") => {
                    // Redis lost its data (restart without persistence, FLUSHALL) and a job
                    // queued since recreated the stream without the group. Nothing pending can
                    // be lost, but until the group exists again no lag is counted, so an
                    // autoscaler starting agents from zero (KEDA) would never start one.
                    warn!(pool = %pool, "consumer group missing; recreating it");
                    self.forget_group(&pool);
                    self.ensure_group(&pool).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for item in reply::array(&pending) {
                let fields = reply::array(item);
                let Some(entry) = fields.first().map(reply::string).transpose()? else {
                    continue;
                };
                let Some(job_id) = self.job_of_entry(&pool, &entry).await? else {
                    // The entry was trimmed and no running job points at it: nothing to rerun.
                    let _: i64 = self
                        .conn
                        .run(
                            redis::cmd("XACK")
                                .arg(&stream)
                                .arg(&self.options.consumer_group)
                                .arg(&entry),
                        )
                        .await?;
                    continue;
                };
                let reason = format!(
                    "agent {} stopped heart-beating",
                    fields
                        .get(1)
                        .map(reply::string)
                        .transpose()?
                        .unwrap_or_default()
                );
                match self
                    .release_entry(&pool, &entry, &job_id, &reason, true, Some(min_idle))
                    .await?
                {
                    ReleaseResult::Requeued => report.requeued.push(job_id),
                    ReleaseResult::DeadLettered => report.dead.push(job_id),
                    ReleaseResult::Cancelled => report.cancelled.push(job_id),
                    ReleaseResult::Stale => {}
                }
            }
        }
        Ok(report)
    }

    async fn job_of_entry(
        &self,
        pool: &PoolName,
        entry: &str,
    ) -> Result<Option<String>, QueueError> {
        let found: Value = self
            .conn
            .run(
                redis::cmd("XRANGE")
                    .arg(self.keys.stream(pool))
                    .arg(entry)
                    .arg(entry),
            )
            .await?;
        if let Some(first) = reply::array(&found).first() {
            let fields = reply::array(first).get(1).map(reply::pairs).transpose()?;
            if let Some(job) = fields.and_then(|f| f.get("job").cloned()) {
                return reply::string(&job).map(Some);
            }
        }
        // Trimmed (by hand: the queue keeps pending entries): find the running job that still
        // points at this entry.
        let running: Vec<String> = self
            .conn
            .run(
                redis::cmd("ZRANGE")
                    .arg(self.keys.by_status(JobStatus::Running))
                    .arg(0)
                    .arg(-1),
            )
            .await?;
        for id in running {
            let e: Option<String> = self
                .conn
                .run(redis::cmd("HGET").arg(self.keys.job(&id)).arg("entry"))
                .await?;
            if e.as_deref() == Some(entry) {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    pub async fn cancel(&self, id: &str) -> Result<CancelResult, QueueError> {
        self.cancel_because(id, "cancelled").await
    }

    /// Cancels a job, saying why: the reason becomes the cancelled job's `reason`, also when
    /// its agent is the one to finish it.
    pub async fn cancel_because(&self, id: &str, reason: &str) -> Result<CancelResult, QueueError> {
        self.cancel_job(id, reason, CancelScope::Any).await
    }

    pub(crate) async fn cancel_job(
        &self,
        id: &str,
        reason: &str,
        scope: CancelScope,
    ) -> Result<CancelResult, QueueError> {
        if !valid_id(id) {
            return Err(QueueError::NotFound(id.to_owned()));
        }
        let mut invocation = scripts::CANCEL.prepare_invoke();
        invocation
            .key(self.keys.job(id))
            .key(self.keys.by_status(JobStatus::Queued))
            .key(self.keys.by_status(JobStatus::Cancelled))
            .key(self.keys.log(id))
            .key(self.keys.events())
            .key(self.keys.by_status(JobStatus::Blocked))
            .arg(Utc::now().timestamp_millis())
            .arg(id)
            .arg(reason)
            .arg(match scope {
                CancelScope::Any => "any",
                CancelScope::Interruptible => "interruptible",
                CancelScope::Blocked => "blocked",
            });
        let reply: String = self.conn.script(&invocation).await?;
        match reply.as_str() {
            "cancelled" => Ok(CancelResult::Cancelled),
            "requested" => Ok(CancelResult::Requested),
            "kept" => Ok(CancelResult::Kept),
            "missing" => Err(QueueError::NotFound(id.to_owned())),
            other => match other.strip_prefix("final:") {
                Some(status) => Ok(CancelResult::AlreadyFinished(
                    status.parse().map_err(QueueError::Protocol)?,
                )),
                None => Err(QueueError::Protocol(format!("cancel replied {other}"))),
            },
        }
    }

    /// Declines the jobs that have waited for approval since before `cutoff` (by their ids'
    /// time, which is when their webhook came); returns their ids. `reason` becomes theirs.
    /// A job approved meanwhile is left alone, and so are jobs blocked for other reasons than
    /// a person's approval: waiting for other workflows or for their concurrency group (they
    /// go on when those end). Bounded per call (1,000 blocked jobs looked at), as the reaper
    /// calls it often.
    pub async fn expire_blocked(
        &self,
        cutoff: DateTime<Utc>,
        reason: &str,
    ) -> Result<Vec<String>, QueueError> {
        const BATCH: usize = 100;
        let cutoff = cutoff.timestamp_millis();
        if cutoff <= 0 {
            return Ok(Vec::new());
        }
        // The smallest id of the cutoff's millisecond: every job id is a ULID, ordered by time.
        let bound = format!("({}", ulid::Ulid::from_parts(cutoff as u64, 0));
        let mut expired = Vec::new();
        // Paged by id: jobs blocked for other reasons than approval stay in the index.
        let mut from = "-".to_owned();
        for _ in 0..10 {
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
                        .arg(BATCH),
                )
                .await?;
            for id in &ids {
                match self.cancel_job(id, reason, CancelScope::Blocked).await {
                    Ok(CancelResult::Cancelled) => expired.push(id.clone()),
                    Ok(_) => {}
                    // An index member without its record (pruned by hand): drop the member,
                    // or every pass would find it again.
                    Err(QueueError::NotFound(_)) => {
                        let _: i64 = self
                            .conn
                            .run(
                                redis::cmd("ZREM")
                                    .arg(self.keys.by_status(JobStatus::Blocked))
                                    .arg(id),
                            )
                            .await?;
                    }
                    Err(e) => return Err(e),
                }
            }
            match ids.last() {
                Some(last) if ids.len() == BATCH => from = format!("({last}"),
                _ => break,
            }
        }
        Ok(expired)
    }

    /// Queues a blocked job (see [`Queue::enqueue_blocked`]) now that a person approved it;
    /// `approver` (an API token's name) is kept on its record.
    pub async fn approve_by(&self, id: &str, approver: &str) -> Result<Job, QueueError> {
        let mut job = self.approve_as(id, approver).await?;
        job.approved_by = Some(approver.to_owned());
        Ok(job)
    }

    /// Queues a blocked job whose wait the queue itself ended (its workflows ran, its
    /// concurrency group came free): nobody approved it.
    pub async fn approve(&self, id: &str) -> Result<Job, QueueError> {
        self.approve_as(id, "").await
    }

    async fn approve_as(&self, id: &str, approver: &str) -> Result<Job, QueueError> {
        let job = self
            .get(id)
            .await?
            .ok_or_else(|| QueueError::NotFound(id.to_owned()))?;
        if job.status != JobStatus::Blocked {
            return Err(QueueError::NotBlocked {
                id: job.id,
                status: job.status,
            });
        }
        self.ensure_group(&job.spec.pool).await?;
        let mut invocation = scripts::APPROVE.prepare_invoke();
        invocation
            .key(self.keys.job(id))
            .key(self.keys.stream(&job.spec.pool))
            .key(self.keys.by_status(JobStatus::Blocked))
            .key(self.keys.by_status(JobStatus::Queued))
            .key(self.keys.events())
            .arg(id)
            .arg(self.options.maxlen)
            .arg(&self.options.consumer_group)
            .arg(approver);
        let reply: Vec<String> = self.conn.script(&invocation).await?;
        match reply.first().map(String::as_str) {
            Some("ok") => {
                info!(job = %id, pool = %job.spec.pool, "approved");
                Ok(Job {
                    status: JobStatus::Queued,
                    ..job
                })
            }
            Some("missing") => Err(QueueError::NotFound(id.to_owned())),
            // Cancelled or approved by someone else between the two reads.
            Some("status") => Err(QueueError::NotBlocked {
                id: id.to_owned(),
                status: reply
                    .get(1)
                    .map(|s| s.parse())
                    .transpose()
                    .map_err(QueueError::Protocol)?
                    .unwrap_or(JobStatus::Queued),
            }),
            Some("full") => Err(self.full(&job.spec.pool, &reply)),
            _ => Err(QueueError::Protocol(format!("approve replied {reply:?}"))),
        }
    }

    /// Queues a fresh copy of a job (new id, attempt 0), remembering which one it re-runs.
    ///
    /// Only a finished job can be retried: a copy of a queued or running one would build the
    /// same commit at the same time, and whichever finished last would set the commit status.
    pub async fn retry(&self, id: &str) -> Result<Job, QueueError> {
        let old = self.finished(id).await?;
        let (job, parent) = self.copy_of(old.clone()).await?;
        if let Some(parent) = parent {
            let replaced = BTreeMap::from([(old.id, job.id.clone())]);
            let revived = self.revive_dependants(&parent, &replaced).await?;
            if !revived.is_empty() {
                info!(job = %job.id, ?revived, "jobs waiting for the retry");
            }
        }
        Ok(job)
    }

    /// Retries the jobs that `id` queued (a matrix's variants, the workflows of `.raibid/`)
    /// and that failed, could not run or were given up, as GitHub's "Re-run failed jobs";
    /// the workflows skipped because of them wait for the retries (see
    /// [`Queue::revive_dependants`]). The retries, in the order of the children.
    pub async fn retry_failed(&self, id: &str) -> Result<Vec<Job>, QueueError> {
        let parent = self.finished(id).await?;
        if parent.children.is_empty() {
            return Err(QueueError::NothingToRetry(format!(
                "job {id} queued no jobs (it has no matrix or workflows); retry it as a whole"
            )));
        }
        let mut failed = Vec::new();
        for child in &parent.children {
            if let Some(job) = self.get(child).await?
                && matches!(
                    job.status,
                    JobStatus::Failure | JobStatus::Error | JobStatus::Dead
                )
            {
                failed.push(job);
            }
        }
        if failed.is_empty() {
            return Err(QueueError::NothingToRetry(format!(
                "none of the jobs that job {id} queued failed (or they are still running)"
            )));
        }
        // All copies first, then one look at the dependants: one that waited for two of them
        // is recorded again once, waiting for both retries.
        let mut replaced = BTreeMap::new();
        let mut retries = Vec::with_capacity(failed.len());
        for old in failed {
            let old_id = old.id.clone();
            let (job, _) = self.copy_of(old).await?;
            replaced.insert(old_id, job.id.clone());
            retries.push(job);
        }
        let revived = self.revive_dependants(&parent.id, &replaced).await?;
        if !revived.is_empty() {
            info!(parent = %parent.id, ?revived, "jobs waiting for the retries");
        }
        Ok(retries)
    }

    /// Job `id`, which must have ended.
    async fn finished(&self, id: &str) -> Result<Job, QueueError> {
        let job = self
            .get(id)
            .await?
            .ok_or_else(|| QueueError::NotFound(id.to_owned()))?;
        if !job.status.is_final() {
            return Err(QueueError::NotFinal {
                id: job.id,
                status: job.status,
            });
        }
        Ok(job)
    }

    /// Queues a copy of ended job `old` and puts it in `old`'s place among its parent's
    /// children; the copy, and the parent's id when it has one.
    async fn copy_of(&self, old: Job) -> Result<(Job, Option<String>), QueueError> {
        let mut spec = old.spec;
        spec.delivery_id = None;
        spec.retry_of = Some(old.id.clone());
        let parent = spec.matrix_parent.clone().filter(|p| valid_id(p));
        let job = match self.enqueue(spec).await? {
            Enqueued::Created(job) => *job,
            Enqueued::Duplicate { job_id } => {
                return Err(QueueError::Protocol(format!(
                    "retry collided with delivery of {job_id}"
                )));
            }
        };
        self.join_lane(&job).await?;
        // The matrix job's status combines its children's: the retry stands in for the run
        // it repeats, or the combined status would never change again.
        if let Some(parent) = &parent {
            self.replace_child(parent, &old.id, &job.id).await?;
        }
        Ok((job, parent))
    }

    /// Puts `new` where `old` stands among `parent`'s children.
    pub(crate) async fn replace_child(
        &self,
        parent: &str,
        old: &str,
        new: &str,
    ) -> Result<(), QueueError> {
        let mut invocation = scripts::REPLACE_CHILD.prepare_invoke();
        invocation.key(self.keys.job(parent)).arg(old).arg(new);
        let _: i64 = self.conn.script(&invocation).await?;
        Ok(())
    }

    /// Records the jobs a matrix job expanded into, before the matrix job is acknowledged, so
    /// that its commit status can combine theirs (`Job::children`). If the matrix job was asked
    /// to cancel meanwhile, its variants are cancelled rather than left to run, and this says
    /// `true`.
    pub async fn set_children(
        &self,
        parent_id: &str,
        children: &[String],
    ) -> Result<bool, QueueError> {
        if !valid_id(parent_id) {
            return Err(QueueError::NotFound(parent_id.to_owned()));
        }
        let ids = serde_json::to_string(children).expect("ids serialize");
        // HSET on a missing key would create a record without a spec.
        let (status, cancel): (Option<String>, Option<String>) = self
            .conn
            .run(
                redis::cmd("HMGET")
                    .arg(self.keys.job(parent_id))
                    .arg("status")
                    .arg("cancel_requested"),
            )
            .await?;
        if status.is_none() {
            return Err(QueueError::NotFound(parent_id.to_owned()));
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(self.keys.job(parent_id))
            .arg("children")
            .arg(ids)
            .ignore();
        if !children.is_empty() {
            pipe.cmd("ZADD")
                .arg(self.keys.builds())
                .arg(0)
                .arg(parent_id)
                .ignore();
        }
        let () = self.conn.pipe(&pipe).await?;
        // Asked to cancel while it queued them (by a person, or a newer build): from now on
        // a cancel of the matrix job finds its variants, but this one came too early to.
        if cancel.as_deref() != Some("1") && status.as_deref() != Some("cancelled") {
            return Ok(false);
        }
        self.cancel_variants(parent_id, children).await?;
        Ok(true)
    }

    /// Cancels the children of a cancelled job (a matrix's variants, the jobs of its
    /// workflows), or asks their agents to stop, saying so as their reason; those that had
    /// finished or are gone are left. Returns the ones it cancelled or asked to stop.
    pub async fn cancel_variants(
        &self,
        parent_id: &str,
        variants: &[String],
    ) -> Result<Vec<String>, QueueError> {
        let reason = format!("job {parent_id}, which queued it, was cancelled");
        let mut cancelled = Vec::new();
        for id in variants {
            match self.cancel_because(id, &reason).await {
                Ok(CancelResult::AlreadyFinished(_)) | Err(QueueError::NotFound(_)) => {}
                Ok(_) => cancelled.push(id.clone()),
                Err(e) => return Err(e),
            }
        }
        Ok(cancelled)
    }

    /// Erases the log of finished job `id` for `by` (a secret that reached it unmasked, say):
    /// the log is deleted and the record says who erased it and when. Erasing again renames
    /// who did it.
    pub async fn erase_log(&self, id: &str, by: &str) -> Result<EraseLog, QueueError> {
        let mut invocation = scripts::ERASE_LOG.prepare_invoke();
        invocation
            .key(self.keys.job(id))
            .key(self.keys.log(id))
            .arg(by)
            .arg(Utc::now().timestamp_millis());
        let reply: Vec<String> = self.conn.script(&invocation).await?;
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(EraseLog::Erased),
            Some("missing") => Ok(EraseLog::Missing),
            Some("unfinished") => reply
                .get(1)
                .and_then(|s| s.parse().ok())
                .map(EraseLog::Unfinished)
                .ok_or_else(|| QueueError::Protocol(format!("erase_log replied {reply:?}"))),
            _ => Err(QueueError::Protocol(format!("erase_log replied {reply:?}"))),
        }
    }

    /// How many jobs have `status` (one read of its index).
    pub async fn count(&self, status: JobStatus) -> Result<u64, QueueError> {
        self.conn
            .run(redis::cmd("ZCARD").arg(self.keys.by_status(status)))
            .await
    }

    /// Newest first, `limit` at most, continuing after `cursor` (a job id).
    pub async fn list(
        &self,
        filter: &JobFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage, QueueError> {
        self.list_where(filter, cursor, limit, &|_| true).await
    }

    /// As [`Queue::list`], keeping only the jobs `keep` accepts (the repositories a caller
    /// may read). Such a scan reads at most [`LIST_SCAN_MAX`] records per call, so that a
    /// caller who sees few of the jobs cannot make one request walk the whole history: past
    /// that the page may hold fewer than `limit` jobs (none, even) and still have a
    /// `next_cursor` to continue from.
    pub async fn list_where(
        &self,
        filter: &JobFilter,
        cursor: Option<&str>,
        limit: usize,
        keep: &(dyn Fn(&Job) -> bool + Sync),
    ) -> Result<JobPage, QueueError> {
        let index = if let Some(repo) = &filter.repo {
            self.keys.by_repo(repo)
        } else if let Some(pool) = &filter.pool {
            self.keys.by_pool(pool)
        } else if let Some(status) = filter.status {
            self.keys.by_status(status)
        } else {
            self.keys.all_jobs()
        };
        self.scan_index(&index, filter, cursor, limit, keep).await
    }

    /// As [`Queue::list_where`], among the first jobs of builds only (the jobs that queued
    /// others, [`Job::children`]): a few of all jobs, where the status filter looks for builds
    /// whose status differs from their first job's. Read from the index of builds, or, for a
    /// repository or a pool, from its own index as [`Queue::list_where`] reads it: the index
    /// of builds holds every repository's.
    pub async fn list_builds_where(
        &self,
        filter: &JobFilter,
        cursor: Option<&str>,
        limit: usize,
        keep: &(dyn Fn(&Job) -> bool + Sync),
    ) -> Result<JobPage, QueueError> {
        let build = |job: &Job| !job.children.is_empty() && keep(job);
        if filter.repo.is_some() || filter.pool.is_some() {
            return self.list_where(filter, cursor, limit, &build).await;
        }
        let indexed: bool = self
            .conn
            .run(redis::cmd("EXISTS").arg(self.keys.builds_indexed()))
            .await?;
        if !indexed {
            self.index_builds().await?;
        }
        self.scan_index(&self.keys.builds(), filter, cursor, limit, &build)
            .await
    }

    /// Makes sure job `id`, if it queued others, is in the index of builds; whether it is. The
    /// server calls it for the build of every job that ends: an agent older than the index
    /// records a build's jobs without adding it, and the index is filled from the records
    /// only once.
    pub async fn index_build(&self, id: &str) -> Result<bool, QueueError> {
        if !valid_id(id) {
            return Ok(false);
        }
        let mut invocation = scripts::INDEX_BUILD.prepare_invoke();
        invocation
            .key(self.keys.job(id))
            .key(self.keys.builds())
            .arg(id);
        let indexed: i64 = self.conn.script(&invocation).await?;
        Ok(indexed == 1)
    }

    /// Fills the index of builds from the records of jobs kept from before it existed: every
    /// job whose record lists jobs it queued. Idempotent, so two servers doing it at once, or
    /// a build recorded meanwhile, change nothing; done once per Redis.
    async fn index_builds(&self) -> Result<(), QueueError> {
        const BATCH: usize = 1000;
        let mut start = "-".to_owned();
        loop {
            let ids: Vec<String> = self
                .conn
                .run(
                    redis::cmd("ZRANGE")
                        .arg(self.keys.all_jobs())
                        .arg(&start)
                        .arg("+")
                        .arg("BYLEX")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(BATCH),
                )
                .await?;
            let Some(last) = ids.last() else { break };
            start = format!("({last}");
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HGET").arg(self.keys.job(id)).arg("children");
            }
            let children: Vec<Option<String>> = self.conn.pipe(&pipe).await?;
            let builds: Vec<&String> = ids
                .iter()
                .zip(children)
                .filter(|(_, children)| {
                    children
                        .as_deref()
                        .is_some_and(|c| !c.is_empty() && c != "[]")
                })
                .map(|(id, _)| id)
                .collect();
            if !builds.is_empty() {
                let mut add = redis::cmd("ZADD");
                add.arg(self.keys.builds());
                for id in builds {
                    add.arg(0).arg(id);
                }
                let _: i64 = self.conn.run(&add).await?;
            }
            if ids.len() < BATCH {
                break;
            }
        }
        let _: () = self
            .conn
            .run(redis::cmd("SET").arg(self.keys.builds_indexed()).arg(1))
            .await?;
        Ok(())
    }

    /// The scan of [`Queue::list_where`] over `index`, the filter's other conditions read from
    /// the records.
    async fn scan_index(
        &self,
        index: &str,
        filter: &JobFilter,
        cursor: Option<&str>,
        limit: usize,
        keep: &(dyn Fn(&Job) -> bool + Sync),
    ) -> Result<JobPage, QueueError> {
        let limit = limit.clamp(1, 1000);
        let mut scanned = 0usize;
        let mut jobs = Vec::new();
        let mut start = match cursor {
            Some(c) if valid_id(c) => format!("({c}"),
            Some(_) => return Err(QueueError::Invalid("cursor is not a job id".into())),
            None => "+".to_owned(),
        };
        let batch = (limit * 2).max(50);
        loop {
            let ids: Vec<String> = self
                .conn
                .run(
                    redis::cmd("ZRANGE")
                        .arg(index)
                        .arg(&start)
                        .arg("-")
                        .arg("BYLEX")
                        .arg("REV")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(batch),
                )
                .await?;
            let exhausted = ids.len() < batch;
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HGETALL").arg(self.keys.job(id));
            }
            let records: Vec<HashMap<String, String>> = if ids.is_empty() {
                Vec::new()
            } else {
                self.conn.pipe(&pipe).await?
            };
            for (id, fields) in ids.iter().zip(records) {
                start = format!("({id}");
                scanned += 1;
                if fields.is_empty() {
                    continue;
                }
                let job = record::from_fields(&fields)?;
                if filter.status.is_some_and(|s| s != job.status)
                    || filter.pool.as_ref().is_some_and(|p| *p != job.spec.pool)
                    || filter.repo.as_ref().is_some_and(|r| *r != job.spec.repo)
                    || filter
                        .branch
                        .as_deref()
                        .is_some_and(|b| job.build_branch() != Some(b))
                    || filter.event.is_some_and(|e| e != job.spec.event)
                    || !keep(&job)
                {
                    if scanned >= LIST_SCAN_MAX
                        && !(exhausted && id == ids.last().expect("non-empty"))
                    {
                        return Ok(JobPage {
                            jobs,
                            scanned,
                            next_cursor: Some(id.clone()),
                        });
                    }
                    continue;
                }
                jobs.push(job);
                if jobs.len() == limit {
                    let next = if exhausted && id == ids.last().expect("non-empty") {
                        None
                    } else {
                        Some(id.clone())
                    };
                    return Ok(JobPage {
                        jobs,
                        scanned,
                        next_cursor: next,
                    });
                }
            }
            if exhausted {
                return Ok(JobPage {
                    jobs,
                    scanned,
                    next_cursor: None,
                });
            }
        }
    }

    /// The repository's next pipeline number ([`NewJob::number`]), counted in Redis with its
    /// jobs. Repository names are compared ignoring case, as forges resolve them. A number taken
    /// for a job that is then not queued (a redelivered webhook) is not given again.
    pub async fn next_pipeline_number(&self, repo: &str) -> Result<u64, QueueError> {
        let mut cmd = redis::cmd("HINCRBY");
        cmd.arg(self.keys.pipeline_numbers())
            .arg(repo.to_ascii_lowercase())
            .arg(1);
        self.conn.run(&cmd).await
    }

    /// Every pool that has ever had a job or a consumer.
    pub async fn pools(&self) -> Result<Vec<PoolName>, QueueError> {
        let names: Vec<String> = self
            .conn
            .run(redis::cmd("SMEMBERS").arg(self.keys.pools()))
            .await?;
        let mut pools: Vec<PoolName> = names
            .into_iter()
            .filter_map(|n| PoolName::new(n).ok())
            .collect();
        pools.sort();
        Ok(pools)
    }

    /// Deletes the oldest finished jobs (records, logs, index entries) beyond `keep`, at most
    /// 1,000 per call, in batches of 200 per round trip (one script call each, so Redis is
    /// never held for long and the reaper keeps up with a busy farm).
    pub async fn prune(&self, keep: u64) -> Result<u64, QueueError> {
        const BATCH: u64 = 200;
        let mut removed = 0;
        for _ in 0..5 {
            let mut invocation = scripts::PRUNE.prepare_invoke();
            invocation.key(self.keys.all_jobs());
            for index in self.keys.final_status_indexes() {
                invocation.key(index);
            }
            invocation.arg(self.keys.prefix()).arg(BATCH).arg(keep);
            let batch_removed: u64 = self.conn.script(&invocation).await?;
            removed += batch_removed;
            // Less than a batch: nothing beyond `keep` is left, or nothing finished to remove.
            if batch_removed < BATCH {
                break;
            }
        }
        Ok(removed)
    }

    /// Redis's memory use and limit (`INFO memory`).
    pub async fn memory(&self) -> Result<MemoryReading, QueueError> {
        let info: String = match self.conn.run(redis::cmd("INFO").arg("memory")).await {
            Ok(info) => info,
            // Connection problems are `Unavailable`; this is Redis saying no (an ACL user
            // without `INFO`, which `-@dangerous` takes away).
            Err(QueueError::Redis(e)) => return Ok(MemoryReading::Refused(e.to_string())),
            Err(e) => return Err(e),
        };
        Ok(match MemoryUse::parse(&info) {
            Some(memory) => MemoryReading::Limited(memory),
            None => MemoryReading::Unlimited,
        })
    }

    /// Deletes the logs of the oldest finished jobs while Redis uses more than `percent` of
    /// its `maxmemory`; their records stay, marked `log_pruned`. Redis on Kubernetes runs
    /// with a fixed `maxmemory` and `noeviction`: logs of kept jobs would otherwise fill it
    /// within weeks, and from then on every write fails, enqueues of new jobs first. Records
    /// are left to `retain_jobs`: the commit-status reporter and matrix jobs need them, and a
    /// matrix job finishes, oldest of all, before its variants. Each call of the script frees
    /// about what Redis is over by (one log can be megabytes), then memory is read again.
    pub async fn prune_for_memory(&self, percent: u32) -> Result<MemoryPrune, QueueError> {
        const BATCH: u64 = 100;
        const ROUNDS: usize = 50;
        let mut report = MemoryPrune::default();
        if percent == 0 {
            return Ok(report);
        }
        // Where this pass has got to: past maxmemory the script cannot store its cursor.
        let mut after = String::new();
        for _ in 0..ROUNDS {
            let memory = match self.memory().await? {
                MemoryReading::Limited(memory) => memory,
                MemoryReading::Unlimited => return Ok(report),
                MemoryReading::Refused(why) => {
                    report.refused = Some(why);
                    return Ok(report);
                }
            };
            report.memory = Some(memory);
            let allowed = memory.max / 100 * u64::from(percent);
            if memory.used <= allowed {
                return Ok(report);
            }
            let mut invocation = scripts::PRUNE_LOGS.prepare_invoke();
            for index in self.keys.final_status_indexes() {
                invocation.key(index);
            }
            invocation
                .key(self.keys.log_prune_cursor())
                .key(self.keys.log_prune_cycle())
                .arg(self.keys.prefix())
                .arg(BATCH)
                .arg(memory.used - allowed)
                .arg(&after);
            let (deleted, looked, round, last): (u64, u64, u64, String) =
                self.conn.script(&invocation).await?;
            after = last;
            report.logs_removed += deleted;
            if looked == 0 && round == 0 {
                // A whole round from the oldest job deleted nothing: every finished job's log
                // is gone, and queued and running jobs, and whatever else the instance holds,
                // fill it.
                report.nothing_left = true;
                return Ok(report);
            }
        }
        if let MemoryReading::Limited(memory) = self.memory().await? {
            report.memory = Some(memory);
        }
        Ok(report)
    }
}

/// What [`Queue::memory`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryReading {
    Limited(MemoryUse),
    /// No `maxmemory`: Redis may use the machine's memory.
    Unlimited,
    /// Redis refused `INFO` (the reason it gave).
    Refused(String),
}

/// `used_memory` and `maxmemory` from `INFO memory`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUse {
    pub used: u64,
    pub max: u64,
}

impl MemoryUse {
    fn parse(info: &str) -> Option<Self> {
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let max = field("maxmemory").filter(|m| *m > 0)?;
        Some(Self {
            used: field("used_memory")?,
            max,
        })
    }

    pub fn percent(&self) -> u64 {
        self.used * 100 / self.max
    }
}

/// What [`Queue::prune_for_memory`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryPrune {
    /// Logs deleted.
    pub logs_removed: u64,
    /// The last reading; `None` without a `maxmemory`.
    pub memory: Option<MemoryUse>,
    /// Still above the mark with no finished job's log left to delete.
    pub nothing_left: bool,
    /// Redis refused `INFO` (the reason), so memory pruning cannot work.
    pub refused: Option<String>,
}

/// ULIDs that sort in creation order even within one millisecond (listing is by id).
fn next_id() -> String {
    static GENERATOR: Mutex<Option<ulid::Generator>> = Mutex::new(None);
    let mut guard = GENERATOR.lock().expect("lock");
    let generator = guard.get_or_insert_with(ulid::Generator::new);
    match generator.generate() {
        Ok(id) => id.to_string(),
        // 2^80 ids in one millisecond: fall back to a random one rather than fail.
        Err(_) => ulid::Ulid::new().to_string(),
    }
}

enum ClaimNow {
    Claimed(Box<Claimed>),
    Empty,
    NoGroup,
}

/// What a script that answers like HEARTBEAT ("ok" | "cancel" | "lost") said.
pub(crate) fn heartbeat_reply(reply: &str, what: &str) -> Result<Heartbeat, QueueError> {
    match reply {
        "ok" => Ok(Heartbeat::Continue),
        "cancel" => Ok(Heartbeat::CancelRequested),
        "lost" => Ok(Heartbeat::Lost),
        other => Err(QueueError::Protocol(format!("{what} replied {other}"))),
    }
}

/// Job ids are ULIDs; anything else cannot name a key of ours.
pub(crate) fn valid_id(id: &str) -> bool {
    id.len() == 26 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The agent's side of claiming, on a connection of its own: the blocking `XREADGROUP` needs
/// one, and the claim script runs there too, so that an agent's claim does not queue behind
/// every other caller's commands on the shared connection (BENCHMARKS.md, queue: 10% more
/// jobs/s with four agents).
pub struct Claimer {
    queue: Queue,
    consumer: String,
    conn: Option<MultiplexedConnection>,
    /// Whether the last look found work. An idle agent goes straight to the blocking read
    /// instead of paying for a claim script that would find nothing.
    backlog: bool,
}

/// How soon a claimer waiting beside a paused pool notices that the pool was resumed.
const PAUSE_RECHECK: Duration = Duration::from_secs(2);

impl Claimer {
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Waits up to `block` for one job from any of `pools` (earlier pools first).
    pub async fn claim(
        &mut self,
        pools: &[PoolName],
        block: Duration,
    ) -> Result<Option<Claimed>, QueueError> {
        for pool in pools {
            self.queue.ensure_group(pool).await?;
        }
        let deadline = tokio::time::Instant::now() + block;
        loop {
            if self.backlog || block.is_zero() {
                let mut conn = self.take_conn().await?;
                let claimed = self
                    .queue
                    .claim_now(pools, &self.consumer, &mut conn)
                    .await?;
                self.conn = Some(conn);
                match claimed {
                    ClaimNow::Claimed(claimed) => return Ok(Some(*claimed)),
                    ClaimNow::NoGroup => {
                        // Redis lost its data (restart without AOF, FLUSHALL): recreate it.
                        self.recreate_groups(pools).await?;
                        continue;
                    }
                    ClaimNow::Empty => self.backlog = false,
                }
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Ok(None);
            }
            // One look per blocking read, on the idle path only: the claim script itself
            // passes paused pools over while work is queued.
            let paused = self.queue.paused_pools().await?;
            let open: Vec<PoolName> = pools
                .iter()
                .filter(|pool| !paused.contains_key(*pool))
                .cloned()
                .collect();
            // A blocked read does not see a pool resumed meanwhile: read in shorter spells.
            let wait = if paused.is_empty() {
                remaining
            } else {
                remaining.min(PAUSE_RECHECK)
            };
            if open.is_empty() {
                tokio::time::sleep(wait).await;
                continue;
            }
            let entries = match self.read(&open, wait).await {
                Ok(entries) => entries,
                // NOGROUP: the group was gone when the read started. UNBLOCKED: Redis 7
                // ends a blocked read whose stream is deleted (FLUSHALL, DEL) with it.
                Err(QueueError::Redis(e)) if matches!(e.code(), Some("NOGROUP" | "UNBLOCKED")) => {
                    self.recreate_groups(pools).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut claimed = None;
            for (pool, entry, job_id) in entries {
                if claimed.is_some() {
                    // XREADGROUP over several streams returns up to one entry per stream;
                    // hand the extras straight back without counting a delivery. If that
                    // fails, the job already started is still ours to run; the extra stays
                    // pending and the reaper hands it back.
                    if let Err(e) = self
                        .queue
                        .release_entry(&pool, &entry, &job_id, "returned unstarted", false, None)
                        .await
                    {
                        warn!(job = %job_id, error = %e, "cannot hand back an extra entry now");
                    }
                    continue;
                }
                claimed = self
                    .queue
                    .start(&pool, &entry, &job_id, &self.consumer)
                    .await?;
            }
            if claimed.is_some() {
                self.backlog = true;
                return Ok(claimed);
            }
        }
    }

    /// The claimer's connection, taken out while in use: a command that fails leaves it out
    /// (it may be broken, or hold a reply that timed out), and the next one opens another.
    async fn take_conn(&mut self) -> Result<MultiplexedConnection, QueueError> {
        match self.conn.take() {
            Some(conn) => Ok(conn),
            None => self.queue.conn.dedicated().await,
        }
    }

    async fn recreate_groups(&self, pools: &[PoolName]) -> Result<(), QueueError> {
        for pool in pools {
            self.queue.forget_group(pool);
            self.queue.ensure_group(pool).await?;
        }
        Ok(())
    }

    async fn read(
        &mut self,
        pools: &[PoolName],
        block: Duration,
    ) -> Result<Vec<(PoolName, String, String)>, QueueError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.queue.options.consumer_group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(1);
        if !block.is_zero() {
            cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS");
        for pool in pools {
            cmd.arg(self.queue.keys.stream(pool));
        }
        for _ in pools {
            cmd.arg(">");
        }
        let mut conn = self.take_conn().await?;
        let timeout = block + self.queue.conn.timeout();
        let reply: Value = bounded(timeout, cmd.query_async(&mut conn)).await?;
        self.conn = Some(conn);
        let mut out = Vec::new();
        for entry in reply::stream_entries(&reply)? {
            let Some(pool) = pools
                .iter()
                .find(|p| self.queue.keys.stream(p) == entry.stream)
            else {
                continue;
            };
            let job = entry.field("job")?.unwrap_or_default();
            out.push((pool.clone(), entry.id, job));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reaper picks entries by idle time, then releases them one round trip later; an agent
    /// back from a Redis outage may heart-beat in between, and its job must then stay its own.
    #[tokio::test]
    async fn the_reaper_keeps_a_job_heart_beaten_since_it_was_found_idle() {
        let redis = raibid_testkit::RedisServer::start();
        let q = Queue::open(QueueOptions::new(redis.url())).unwrap();
        let spec = NewJob::new(
            "a/b",
            "http://127.0.0.1/a/b.git",
            "refs/heads/main",
            "0123456789abcdef0123456789abcdef01234567",
            raibid_model::Event::Push,
        );
        q.enqueue(spec).await.unwrap();
        let mut c = q.claimer("w").await.unwrap();
        let pool = PoolName::default();
        let claimed = c
            .claim(std::slice::from_ref(&pool), Duration::ZERO)
            .await
            .unwrap();
        let claimed = claimed.expect("a job is queued");
        let release = |min_idle| {
            q.release_entry(
                &pool,
                &claimed.entry,
                &claimed.job.id,
                "agent w stopped heart-beating",
                true,
                Some(min_idle),
            )
        };
        // Idle for a few milliseconds, not the minute the reaper saw: left alone.
        let kept = release(Duration::from_secs(60)).await.unwrap();
        assert_eq!(kept, ReleaseResult::Stale);
        let job = q.get(&claimed.job.id).await.unwrap().unwrap();
        assert_eq!((job.status, job.attempt), (JobStatus::Running, 1));
        assert_eq!(q.heartbeat(&claimed).await.unwrap(), Heartbeat::Continue);
        // Idle long enough: handed back.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let requeued = release(Duration::from_millis(10)).await.unwrap();
        assert_eq!(requeued, ReleaseResult::Requeued);
    }

    #[test]
    fn ids_are_ulids_only() {
        assert!(valid_id(&ulid::Ulid::new().to_string()));
        assert!(!valid_id("../../etc/passwd"));
        assert!(!valid_id("01HZZZZZZZZZZZZZZZZZZZZZZ:"));
        assert!(!valid_id(""));
    }
}
