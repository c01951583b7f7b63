//! Per-pool statistics: the autoscaling signal.

use chrono::Utc;
use raibid_model::{ConsumerStats, PoolName, PoolStats};
use redis::Value;

use crate::{Queue, QueueError, reply};

impl Queue {
    /// What `XINFO GROUPS` says about the pool's group, the same numbers KEDA's
    /// `redis-streams` scaler reads (`lag` for `lagCount`).
    pub async fn stats(&self, pool: &PoolName) -> Result<PoolStats, QueueError> {
        let stream = self.keys.stream(pool);
        let mut pipe = redis::pipe();
        pipe.cmd("XLEN")
            .arg(&stream)
            .cmd("XLEN")
            .arg(self.keys.dlq(pool));
        let (length, dead_letters): (u64, u64) = self.conn.pipe(&pipe).await?;
        let mut stats = PoolStats {
            pool: pool.clone(),
            stream: stream.clone(),
            length,
            lag: 0,
            pending: 0,
            consumers: Vec::new(),
            oldest_queued_ms: None,
            dead_letters,
        };
        if length == 0 {
            return Ok(stats);
        }
        let groups: Value = match self
            .conn
            .run(redis::cmd("XINFO").arg("GROUPS").arg(&stream))
            .await
        {
            Ok(v) => v,
            Err(QueueError::Redis(e)) if e.code() == Some("ERR") => return Ok(stats),
            Err(e) => return Err(e),
        };
        let mut last_delivered = None;
        let mut group_found = false;
        for group in reply::array(&groups) {
            let info = reply::pairs(group)?;
            if info.get("name").map(reply::string).transpose()?.as_deref()
                != Some(self.options.consumer_group.as_str())
            {
                continue;
            }
            group_found = true;
            stats.pending = reply::int(info.get("pending")).unwrap_or(0) as u64;
            // Redis reports nil lag when it cannot compute it (entries deleted mid-stream);
            // treat that like KEDA does, as "everything may be waiting".
            stats.lag = reply::int(info.get("lag"))
                .map(|l| l as u64)
                .unwrap_or(length);
            last_delivered = info
                .get("last-delivered-id")
                .map(reply::string)
                .transpose()?;
        }
        if !group_found {
            stats.lag = length;
        }
        if group_found {
            let consumers: Value = self
                .conn
                .run(
                    redis::cmd("XINFO")
                        .arg("CONSUMERS")
                        .arg(&stream)
                        .arg(&self.options.consumer_group),
                )
                .await?;
            for consumer in reply::array(&consumers) {
                let info = reply::pairs(consumer)?;
                stats.consumers.push(ConsumerStats {
                    name: info
                        .get("name")
                        .map(reply::string)
                        .transpose()?
                        .unwrap_or_default(),
                    pending: reply::int(info.get("pending")).unwrap_or(0) as u64,
                    idle_ms: reply::int(info.get("idle")).unwrap_or(0) as u64,
                });
            }
        }
        if stats.lag > 0 {
            let from = match &last_delivered {
                Some(id) if id != "0-0" => format!("({id}"),
                _ => "-".to_owned(),
            };
            let oldest: Value = self
                .conn
                .run(
                    redis::cmd("XRANGE")
                        .arg(&stream)
                        .arg(from)
                        .arg("+")
                        .arg("COUNT")
                        .arg(1),
                )
                .await?;
            if let Some(entry) = reply::array(&oldest).first() {
                let id = reply::array(entry).first().map(reply::string).transpose()?;
                if let Some(ms) = id.as_deref().and_then(reply::id_millis) {
                    stats.oldest_queued_ms =
                        Some((Utc::now().timestamp_millis() - ms).max(0) as u64);
                }
            }
        }
        Ok(stats)
    }
}
