//! The registry of agents, for `GET /api/v1/agents` and the dashboard.

use std::collections::HashMap;

use chrono::Utc;
use raibid_model::AgentInfo;

use crate::{Queue, QueueError};

impl Queue {
    /// Registers or refreshes an agent (its `last_heartbeat` is set to now).
    pub async fn agent_heartbeat(&self, info: &AgentInfo) -> Result<(), QueueError> {
        let mut info = info.clone();
        info.last_heartbeat = Utc::now();
        let json = serde_json::to_string(&info).expect("agent info serializes");
        let _: i64 = self
            .conn
            .run(
                redis::cmd("HSET")
                    .arg(self.keys.agents())
                    .arg(&info.name)
                    .arg(json),
            )
            .await?;
        for pool in &info.pools {
            let _: i64 = self
                .conn
                .run(redis::cmd("SADD").arg(self.keys.pools()).arg(pool.as_str()))
                .await?;
        }
        Ok(())
    }

    pub async fn agent_gone(&self, name: &str) -> Result<(), QueueError> {
        let _: i64 = self
            .conn
            .run(redis::cmd("HDEL").arg(self.keys.agents()).arg(name))
            .await?;
        Ok(())
    }

    /// All registered agents; ones silent for longer than `forget_after` are removed.
    pub async fn agents(
        &self,
        forget_after: chrono::Duration,
    ) -> Result<Vec<AgentInfo>, QueueError> {
        let raw: HashMap<String, String> = self
            .conn
            .run(redis::cmd("HGETALL").arg(self.keys.agents()))
            .await?;
        let now = Utc::now();
        let mut agents = Vec::new();
        for (name, json) in raw {
            match serde_json::from_str::<AgentInfo>(&json) {
                Ok(info) if !info.is_stale(now, forget_after) => agents.push(info),
                _ => self.agent_gone(&name).await?,
            }
        }
        agents.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(agents)
    }
}
