//! The registry of agents, for `GET /api/v1/agents` and the dashboard.

use std::collections::HashMap;

use chrono::Utc;
use raibid_model::{AgentInfo, PoolName, ScalerStatus};

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

    /// Removes `consumer` from the pools' groups if it holds nothing, so that thousands of
    /// short-lived agents (one per KEDA pod) do not pile up in `XINFO CONSUMERS`. A consumer
    /// that still owns entries is kept: deleting it would drop them from the pending list.
    pub async fn retire_consumer(
        &self,
        consumer: &str,
        pools: &[PoolName],
    ) -> Result<(), QueueError> {
        for pool in pools {
            let mut invocation = crate::scripts::RETIRE.prepare_invoke();
            invocation
                .key(self.keys.stream(pool))
                .arg(&self.options.consumer_group)
                .arg(consumer);
            let _: i64 = self.conn.script(&invocation).await?;
        }
        Ok(())
    }

    /// Publishes an autoscaler's latest decision for a pool.
    pub async fn set_scaler_status(&self, status: &ScalerStatus) -> Result<(), QueueError> {
        let json = serde_json::to_string(status).expect("scaler status serializes");
        let _: i64 = self
            .conn
            .run(
                redis::cmd("HSET")
                    .arg(self.keys.scalers())
                    .arg(status.pool.as_str())
                    .arg(json),
            )
            .await?;
        Ok(())
    }

    /// Every pool's latest autoscaler decision.
    pub async fn scaler_statuses(&self) -> Result<Vec<ScalerStatus>, QueueError> {
        let raw: HashMap<String, String> = self
            .conn
            .run(redis::cmd("HGETALL").arg(self.keys.scalers()))
            .await?;
        let mut out: Vec<ScalerStatus> = raw
            .values()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect();
        out.sort_by(|a, b| a.pool.cmp(&b.pool));
        Ok(out)
    }
}
