//! `GET /api/v1/queues` and `GET /api/v1/agents`: what is waiting and who is working.

use std::collections::BTreeSet;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use chrono::{Duration, Utc};
use raibid_config::Config;
use raibid_model::{AgentInfo, PoolName, PoolStats, ScalerStatus};
use raibid_queue::{Queue, QueueError};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::auth::{Caller, CanHoldPools, CanRead};
use crate::{ApiError, AppState};

/// A pause's reason is a line for a table or a page header, not a document.
const REASON_MAX_CHARS: usize = 200;

/// The body of `POST /api/v1/queues/{pool}/pause`; an empty body pauses without a reason.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseRequest {
    #[serde(default)]
    reason: String,
}

/// `POST /api/v1/queues/{pool}/pause`: holds the pool's jobs, queued, until it is resumed;
/// running ones go on. Pausing a paused pool replaces its reason. Answers the pool's state.
pub(crate) async fn pause(
    CanHoldPools(caller): CanHoldPools,
    State(state): State<AppState>,
    Path(pool): Path<String>,
    body: Bytes,
) -> Result<Json<PoolStats>, ApiError> {
    let request: PauseRequest = if body.iter().all(u8::is_ascii_whitespace) {
        PauseRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::InvalidRequest(format!("the body must be {{\"reason\": \"...\"}}: {e}"))
        })?
    };
    pause_pool(&state, &caller, &pool, &request.reason)
        .await
        .map(Json)
}

/// Pauses `pool` for `caller`, as the API and the job list's Pause button do.
pub(crate) async fn pause_pool(
    state: &AppState,
    caller: &Caller,
    pool: &str,
    reason: &str,
) -> Result<PoolStats, ApiError> {
    caller.may_change_all("pausing a pool")?;
    let pool = known_pool(state, pool).await?;
    let reason = reason.trim();
    if reason.chars().count() > REASON_MAX_CHARS {
        return Err(ApiError::InvalidField {
            field: "reason".into(),
            message: format!("at most {REASON_MAX_CHARS} characters"),
        });
    }
    if reason.chars().any(char::is_control) {
        return Err(ApiError::InvalidField {
            field: "reason".into(),
            message: "one line without control characters".into(),
        });
    }
    let queue = state.queue();
    queue.pause_pool(&pool, &caller.name(), reason).await?;
    warn!(pool = %pool, token = %caller.name(), reason, "pool paused: its jobs stay queued");
    Ok(queue.stats(&pool).await?)
}

/// `POST /api/v1/queues/{pool}/resume`: agents take the pool's jobs again. Resuming a pool
/// that is not paused changes nothing. Answers the pool's state.
pub(crate) async fn resume(
    CanHoldPools(caller): CanHoldPools,
    State(state): State<AppState>,
    Path(pool): Path<String>,
) -> Result<Json<PoolStats>, ApiError> {
    resume_pool(&state, &caller, &pool).await.map(Json)
}

/// Resumes `pool` for `caller`, as the API and the job list's Resume button do.
pub(crate) async fn resume_pool(
    state: &AppState,
    caller: &Caller,
    pool: &str,
) -> Result<PoolStats, ApiError> {
    caller.may_change_all("resuming a pool")?;
    let queue = state.queue();
    let name = pool_name(pool)?;
    // A paused pool is resumed even if nothing names it any more.
    let pool = if queue.paused_pools().await?.contains_key(&name) {
        name
    } else {
        known_pool(state, pool).await?
    };
    if queue.resume_pool(&pool).await? {
        info!(pool = %pool, token = %caller.name(), "pool resumed");
    }
    Ok(queue.stats(&pool).await?)
}

/// `name` as a pool the server knows ([`known_pools`]): a typo must not pause nothing while
/// its author believes the pool held.
async fn known_pool(state: &AppState, name: &str) -> Result<PoolName, ApiError> {
    let pool = pool_name(name)?;
    let known = known_pools(state.config(), state.queue()).await?;
    if known.contains(&pool) {
        return Ok(pool);
    }
    Err(ApiError::NotFound(format!(
        "no pool {pool}: the pools are {}",
        known
            .iter()
            .map(PoolName::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

fn pool_name(name: &str) -> Result<PoolName, ApiError> {
    PoolName::new(name).map_err(|e| ApiError::InvalidRequest(format!("pool {name:?}: {e}")))
}

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
