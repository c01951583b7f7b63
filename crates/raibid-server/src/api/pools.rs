//! `GET /api/v1/queues` and `GET /api/v1/agents`: what is waiting and who is working.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use chrono::{Duration, Utc};
use raibid_config::Config;
use raibid_model::{AgentInfo, PoolName, PoolStats, ScalerStatus};
use raibid_queue::{Queue, QueueError};
use serde::Serialize;

use crate::auth::CanRead;
use crate::{ApiError, AppState};

/// Agents silent this long are dropped from the registry altogether.
pub(crate) const FORGET_AGENTS_AFTER: Duration = Duration::hours(1);

#[derive(Debug, Serialize)]
pub(crate) struct Pools {
    pools: Vec<PoolStats>,
    /// What the autoscalers (the local pool of `raibid up`) last decided, per pool.
    scalers: Vec<ScalerStatus>,
}

pub(crate) async fn queues(
    _: CanRead,
    State(state): State<AppState>,
) -> Result<Json<Pools>, ApiError> {
    // Concurrently: each is one round trip, and on a busy machine every sequential round trip
    // is another wait for the scheduler (the load test's API latency probe).
    let queue = state.queue();
    let (pools, scalers) =
        tokio::try_join!(pool_stats(state.config(), queue), queue.scaler_statuses(),)?;
    Ok(Json(Pools { pools, scalers }))
}

/// The queue of every pool [`known_pools`] names, read concurrently.
pub(crate) async fn pool_stats(
    config: &Config,
    queue: &Queue,
) -> Result<Vec<PoolStats>, QueueError> {
    let known = known_pools(config, queue).await?;
    futures::future::try_join_all(known.iter().map(|pool| queue.stats(pool))).await
}

/// Pools the queue has seen, plus the configured ones that may not have had a job yet.
pub(crate) async fn known_pools(
    config: &Config,
    queue: &Queue,
) -> Result<BTreeSet<PoolName>, QueueError> {
    let mut pools: BTreeSet<PoolName> = queue.pools().await?.into_iter().collect();
    pools.insert(config.server.default_pool.clone());
    pools.extend(config.server.pools.iter().cloned());
    pools.extend(
        config
            .server
            .pool_rules
            .iter()
            .map(|rule| rule.pool.clone()),
    );
    pools.extend(
        config
            .server
            .schedules
            .iter()
            .filter_map(|s| s.pool.clone()),
    );
    Ok(pools)
}

#[derive(Debug, Serialize)]
pub(crate) struct Agent {
    #[serde(flatten)]
    info: AgentInfo,
    /// No heartbeat for three heartbeat intervals: probably dead, its jobs soon reclaimed.
    stale: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct Agents {
    agents: Vec<Agent>,
}

pub(crate) async fn agents(
    _: CanRead,
    State(state): State<AppState>,
) -> Result<Json<Agents>, ApiError> {
    let stale_after = stale_after(state.config());
    let now = Utc::now();
    let agents = state
        .queue()
        .agents(FORGET_AGENTS_AFTER)
        .await?
        .into_iter()
        .map(|info| Agent {
            stale: info.is_stale(now, stale_after),
            info,
        })
        .collect();
    Ok(Json(Agents { agents }))
}

/// Three missed heartbeats: one late beat is noise, three are an agent in trouble.
pub(crate) fn stale_after(config: &Config) -> Duration {
    let interval = i64::try_from(config.agent.heartbeat_interval_secs).unwrap_or(i64::MAX / 3);
    Duration::seconds(interval.saturating_mul(3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_means_three_missed_heartbeats() {
        let mut config = Config::default();
        config.agent.heartbeat_interval_secs = 10;
        assert_eq!(stale_after(&config), Duration::seconds(30));
    }
}
