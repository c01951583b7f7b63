//! Pausing a pool: an operator's hold on its jobs (maintenance, a machine needed for something
//! else) without losing them, as Buildkite pauses a queue's dispatch and GitLab pauses a
//! runner. Jobs are still queued and still count as lag; agents pass the pool over (the claim
//! scripts read the same hash) and the local pool starts no agent for it. Jobs already running
//! go on.

use std::collections::BTreeMap;

use chrono::Utc;
use raibid_model::{PoolName, PoolPause};
use redis::Value;

use crate::{Queue, QueueError, stats};

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
        Ok(removed == 1)
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
