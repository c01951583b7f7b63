//! Pausing a pool: an operator's hold on its jobs (maintenance, a machine needed for something
//! else) without losing them, as Buildkite pauses a queue's dispatch and GitLab pauses a
//! runner. Jobs are still queued and still count as lag; agents pass the pool over (the claim
//! scripts read the same hash) and the local pool starts no agent for it. Jobs already running
//! go on.

use std::collections::BTreeMap;

use chrono::Utc;
use raibid_model::{JobStatus, PoolName, PoolPause};
use redis::Value;

use crate::{JobFilter, Queue, QueueError, stats};

/// The most queued jobs a pause or resume announces: their commit statuses say why they wait;
/// beyond that the newest are the ones people look at.
const ANNOUNCED_MAX: usize = 1000;

impl Queue {
    /// Pauses `pool`, or replaces the pause's reason if it already is paused (keeping when it
    /// started). Returns the pause in force.
    pub async fn pause_pool(
        &self,
        pool: &PoolName,
        by: &str,
        reason: &str,
    ) -> Result<PoolPause, QueueError> {
        let key = self.keys.paused();
        let current: Value = self
            .conn
            .run(redis::cmd("HGET").arg(&key).arg(pool.as_str()))
            .await?;
        let since = stats::pause_from_reply(Some(&current))?
            .map(|p| p.since)
            .unwrap_or_else(Utc::now);
        let pause = PoolPause {
            by: by.to_owned(),
            reason: reason.to_owned(),
            since,
        };
        let json = serde_json::to_string(&pause).expect("a pause serializes");
        let _: i64 = self
            .conn
            .run(redis::cmd("HSET").arg(&key).arg(pool.as_str()).arg(json))
            .await?;
        self.announce_queued(pool).await;
        Ok(pause)
    }

    /// Ends `pool`'s pause; returns whether it was paused.
    pub async fn resume_pool(&self, pool: &PoolName) -> Result<bool, QueueError> {
        let removed: i64 = self
            .conn
            .run(
                redis::cmd("HDEL")
                    .arg(self.keys.paused())
                    .arg(pool.as_str()),
            )
            .await?;
        if removed == 1 {
            self.announce_queued(pool).await;
        }
        Ok(removed == 1)
    }

    /// Appends a `queued` event for each of `pool`'s queued jobs (the newest
    /// [`ANNOUNCED_MAX`]), so that the commit-status reporter says again what they wait for:
    /// a pause changes what a queued job's status says, not the status itself.
    ///
    /// The pause itself is in force already, so a failure here is logged, not returned: the
    /// statuses then say what they said, until the jobs move.
    async fn announce_queued(&self, pool: &PoolName) {
        if let Err(e) = self.try_announce_queued(pool).await {
            tracing::warn!(pool = %pool, error = %e, "cannot announce the pool's queued jobs");
        }
    }

    async fn try_announce_queued(&self, pool: &PoolName) -> Result<(), QueueError> {
        let filter = JobFilter {
            status: Some(JobStatus::Queued),
            ..JobFilter::default()
        };
        let queued = self
            .list_where(&filter, None, ANNOUNCED_MAX, &|job| job.spec.pool == *pool)
            .await?;
        if queued.jobs.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for job in &queued.jobs {
            pipe.cmd("XADD")
                .arg(self.keys.events())
                .arg("*")
                .arg("job")
                .arg(&job.id)
                .arg("status")
                .arg(JobStatus::Queued.as_str())
                .ignore();
        }
        self.conn.pipe(&pipe).await
    }

    /// Every paused pool and its pause ([`stats::pause_record`]).
    pub async fn paused_pools(&self) -> Result<BTreeMap<PoolName, PoolPause>, QueueError> {
        let raw: BTreeMap<String, String> = self
            .conn
            .run(redis::cmd("HGETALL").arg(self.keys.paused()))
            .await?;
        Ok(raw
            .into_iter()
            .filter_map(|(name, json)| {
                Some((PoolName::new(name).ok()?, stats::pause_record(&json)))
            })
            .collect())
    }
}
