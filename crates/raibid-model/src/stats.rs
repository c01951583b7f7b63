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
