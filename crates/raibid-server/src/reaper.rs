//! The reaper: hands jobs of agents that stopped heart-beating back to the queue, and prunes
//! old finished jobs.
//!
//! Every server replica runs one; the queue's scripts make concurrent reaping safe.

use std::time::Duration;

use tracing::{info, warn};

use crate::AppState;

const EVERY: Duration = Duration::from_secs(5);

pub(crate) async fn run(state: AppState) {
    let min_idle = Duration::from_secs(state.config().redis.stale_after_secs);
    let keep = state.config().redis.retain_jobs;
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown().cancelled() => return,
            _ = ticks.tick() => {}
        }
        let pass = async {
            match state.queue().requeue_stale(min_idle).await {
                Ok(report) => {
                    if !(report.requeued.is_empty()
                        && report.dead.is_empty()
                        && report.cancelled.is_empty())
                    {
                        info!(
                            requeued = ?report.requeued,
                            dead = ?report.dead,
                            cancelled = ?report.cancelled,
                            "reaped jobs of silent agents"
                        );
                    }
                }
                Err(e) => warn!(error = %e, "reaper could not look for stale jobs"),
            }
            match state.queue().prune(keep).await {
                Ok(0) => {}
                Ok(removed) => info!(removed, keep, "pruned old jobs"),
                Err(e) => warn!(error = %e, "reaper could not prune old jobs"),
            }
        };
        tokio::select! {
            () = state.shutdown().cancelled() => return,
            () = pass => {}
        }
    }
}
