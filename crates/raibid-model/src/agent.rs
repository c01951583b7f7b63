use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::PoolName;

/// What an agent tells the world about itself while it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub name: String,
    /// `std::env::consts::ARCH` of the agent's machine (`aarch64`, `x86_64`).
    pub arch: String,
    pub pools: Vec<PoolName>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub current_jobs: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat: DateTime<Utc>,
    #[serde(default)]
    pub jobs_done: u64,
    #[serde(default)]
    pub version: String,
}

impl AgentInfo {
    /// An agent silent for longer than `after` is presumed dead; its jobs will be reclaimed.
    pub fn is_stale(&self, now: DateTime<Utc>, after: chrono::Duration) -> bool {
        now - self.last_heartbeat > after
    }
}
