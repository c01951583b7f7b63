use serde::{Deserialize, Serialize};

use crate::PoolName;

/// The state of one pool's stream, as `XINFO GROUPS`/`XINFO CONSUMERS` report it.
///
/// `lag` is the number KEDA's `redis-streams` scaler reads with `lagCount` (entries added to the
/// stream and not yet delivered to the consumer group), so the local pool scaler and KEDA act on
/// the same signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolStats {
    pub pool: PoolName,
    pub stream: String,
    /// `XLEN`: entries kept in the stream, delivered or not (bounded by `MAXLEN ~`).
    pub length: u64,
    /// Entries not yet delivered to the group.
    pub lag: u64,
    /// Entries delivered and not yet acknowledged: jobs being worked on.
    pub pending: u64,
    pub consumers: Vec<ConsumerStats>,
    /// Age of the oldest undelivered entry, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_queued_ms: Option<u64>,
    /// Entries in the pool's dead-letter stream.
    pub dead_letters: u64,
    /// Set while an operator holds the pool's jobs back (`raibid pool pause`): agents claim
    /// none of them and the local pool starts no agent for them; they stay queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<PoolPause>,
}

/// Who paused a pool, when and why: what `raibid status`, the dashboard and the pages show so
/// that a held queue is not mistaken for a broken one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolPause {
    /// The name of the token that paused it.
    pub by: String,
    /// Free text; may be empty.
    #[serde(default)]
    pub reason: String,
    pub since: chrono::DateTime<chrono::Utc>,
}

impl PoolPause {
    /// One line: `paused by ops 5m ago: reason`.
    pub fn describe(&self, now: chrono::DateTime<chrono::Utc>) -> String {
        let ago = format!("{} ago", crate::human::duration(now - self.since));
        if self.reason.is_empty() {
            format!("paused by {} {ago}", self.by)
        } else {
            format!("paused by {} {ago}: {}", self.by, self.reason)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumerStats {
    pub name: String,
    pub pending: u64,
    pub idle_ms: u64,
}

/// What an autoscaler last decided for a pool, for `/metrics`, `raibid status` and the
/// dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalerStatus {
    pub pool: PoolName,
    /// `local` (the `raibid up` pool) or `keda`.
    pub source: String,
    /// Agents that exist now.
    pub agents: u64,
    /// Of those, agents that have not taken a job yet.
    pub starting: u64,
    /// Agents started at the last look.
    pub started: u64,
    pub max_agents: u64,
    pub lag: u64,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// Why it starts no agents whatever the lag, when it holds them back: `raibid up`'s pool
    /// while it drains its agents for the private registry's garbage collection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_reads_as_who_when_and_why() {
        let since = chrono::DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z")
            .unwrap()
            .to_utc();
        let now = since + chrono::Duration::seconds(300);
        let mut pause = PoolPause {
            by: "ops".into(),
            reason: "GPU driver upgrade".into(),
            since,
        };
        assert_eq!(
            pause.describe(now),
            "paused by ops 5m00s ago: GPU driver upgrade"
        );
        pause.reason.clear();
        assert_eq!(pause.describe(now), "paused by ops 5m00s ago");
    }
}
