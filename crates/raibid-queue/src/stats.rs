//! Per-pool statistics: the autoscaling signal.

use chrono::Utc;
use raibid_model::{ConsumerStats, PoolName, PoolPause, PoolStats};
use redis::Value;

use crate::{Queue, QueueError, reply, scripts};

impl Queue {
    /// What `XINFO GROUPS` says about the pool's group, the same numbers KEDA's
    /// `redis-streams` scaler reads (`lag` for `lagCount`).
    pub async fn stats(&self, pool: &PoolName) -> Result<PoolStats, QueueError> {
        let stream = self.keys.stream(pool);
        let mut invocation = scripts::STATS.prepare_invoke();
        invocation
            .key(&stream)
            .key(self.keys.dlq(pool))
            .key(self.keys.paused())
            .arg(&self.options.consumer_group)
            .arg(pool.as_str());
        let reply: Value = self.conn.script(&invocation).await?;
        stats_from_reply(pool.clone(), stream, &reply, Utc::now().timestamp_millis())
    }
}

/// Decodes the STATS script's reply; `now_ms` dates the oldest waiting entry.
fn stats_from_reply(
    pool: PoolName,
    stream: String,
    reply: &Value,
    now_ms: i64,
) -> Result<PoolStats, QueueError> {
    let parts = reply::array(reply);
    let count = |i: usize| reply::int(parts.get(i)).unwrap_or(0).max(0) as u64;
    let length = count(0);
    let mut stats = PoolStats {
        pool,
        stream,
        length,
        lag: 0,
        pending: 0,
        consumers: Vec::new(),
        oldest_queued_ms: None,
        dead_letters: count(1),
        paused: pause_from_reply(parts.get(2))?,
    };
    if parts.len() < 9 {
        return Ok(stats);
    }
    stats.pending = count(4);
    // Redis reports nil lag when it cannot compute it (entries deleted mid-stream); treat
    // that like KEDA does, as "everything may be waiting".
    stats.lag = match reply::int(parts.get(5)) {
        Some(lag) if lag >= 0 => lag as u64,
        _ => length,
    };
    for consumer in reply::array(&parts[7]).chunks(3) {
        if let [name, pending, idle] = consumer {
            stats.consumers.push(ConsumerStats {
                name: reply::string(name)?,
                pending: reply::int(Some(pending)).unwrap_or(0).max(0) as u64,
                idle_ms: reply::int(Some(idle)).unwrap_or(0).max(0) as u64,
            });
        }
    }
    let oldest = reply::string(&parts[8])?;
    if stats.lag > 0
        && let Some(ms) = reply::id_millis(&oldest)
    {
        stats.oldest_queued_ms = Some((now_ms - ms).max(0) as u64);
    }
    Ok(stats)
}

/// A pool's pause as stored (JSON), or none.
pub(crate) fn pause_from_reply(value: Option<&Value>) -> Result<Option<PoolPause>, QueueError> {
    match value {
        None | Some(Value::Nil) => Ok(None),
        Some(v) => Ok(Some(pause_record(&reply::string(v)?))),
    }
}

/// A stored pause. One that no longer reads (edited by hand) still pauses its pool, since the
/// claim scripts look only for the field: it is shown with its author unknown, not as an error
/// that would hide every pool's statistics.
pub(crate) fn pause_record(json: &str) -> PoolPause {
    serde_json::from_str(json).unwrap_or_else(|_| PoolPause {
        by: "?".into(),
        reason: "(unreadable pause record)".into(),
        since: Utc::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn an_empty_stream_has_no_lag_and_unknown_lag_means_everything_waits() {
        let empty = Value::Array(vec![Value::Int(0), Value::Int(2), Value::Nil]);
        let s = stats_from_reply(PoolName::default(), "s".into(), &empty, 0).unwrap();
        assert_eq!((s.length, s.lag, s.dead_letters), (0, 0, 2));
        assert_eq!(s.paused, None);

        // Lag -1: Redis could not compute it (entries deleted mid-stream).
        let reply = Value::Array(vec![
            Value::Int(7),
            Value::Int(0),
            bulk(r#"{"by":"ops","reason":"upgrade","since":"2026-12-06T10:00:00Z"}"#),
            Value::Int(1),
            Value::Int(1),
            Value::Int(-1),
            bulk("1700000000000-0"),
            Value::Array(vec![bulk("agent-1"), Value::Int(1), Value::Int(250)]),
            bulk("1700000001000-0"),
        ]);
        let s =
            stats_from_reply(PoolName::default(), "s".into(), &reply, 1_700_000_004_000).unwrap();
        assert_eq!((s.length, s.lag, s.pending), (7, 7, 1));
        assert_eq!(s.consumers[0].name, "agent-1");
        assert_eq!(s.consumers[0].idle_ms, 250);
        assert_eq!(s.oldest_queued_ms, Some(3_000));
        assert_eq!(s.paused.unwrap().reason, "upgrade");
    }
}
