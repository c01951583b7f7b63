//! Samples queue depth and agent count into gauges, so `/metrics` answers from memory and a
//! scrape never waits on Redis.

use std::time::Duration;

use chrono::Utc;
use tracing::debug;

use crate::AppState;
use crate::api::pools::{FORGET_AGENTS_AFTER, known_pools, stale_after};

const EVERY: Duration = Duration::from_secs(5);

pub(crate) async fn run(state: AppState) {
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown().cancelled() => return,
            _ = ticks.tick() => {}
        }
        tokio::select! {
            () = state.shutdown().cancelled() => return,
            () = sample(&state) => {}
        }
    }
}

async fn sample(state: &AppState) {
    let queue = state.queue();
    // Reached if the pools could be listed: a pool's stats failing alone (a stream trimmed
    // away meanwhile) is not Redis being down.
    let reached = match known_pools(state.config(), queue).await {
        Ok(pools) => {
            for pool in pools {
                match queue.stats(&pool).await {
                    Ok(stats) => state.metrics().pool_sample(&stats),
                    Err(e) => debug!(%pool, error = %e, "could not sample the pool"),
                }
            }
            true
        }
        Err(e) => {
            debug!(error = %e, "could not list pools");
            false
        }
    };
    state.metrics().redis_sample(reached);
    match queue.scaler_statuses().await {
        Ok(statuses) => statuses
            .iter()
            .for_each(|s| state.metrics().scaler_sample(s)),
        Err(e) => debug!(error = %e, "could not sample the autoscalers"),
    }
    let stale = stale_after(state.config());
    match queue.agents(FORGET_AGENTS_AFTER).await {
        Ok(agents) => {
            let now = Utc::now();
            let live = agents.iter().filter(|a| !a.is_stale(now, stale)).count();
            state.metrics().agents_sample(live);
        }
        Err(e) => debug!(error = %e, "could not sample agents"),
    }
}
