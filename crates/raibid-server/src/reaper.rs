//! The reaper: hands jobs of agents that stopped heart-beating back to the queue, declines
//! jobs that waited for approval past `server.approval_expiry_days`, releases workflows whose
//! wait ended unseen (`Queue::sweep_waiting`) and concurrency groups whose holder ended unseen
//! (`Queue::sweep_groups`), seals secrets again after `redis.secrets_key` changed
//! (`Queue::reseal_secrets`), and prunes old finished jobs: beyond `redis.retain_jobs`, and
//! while Redis is close to its `maxmemory`.
//!
//! Every server replica runs one; the queue's scripts make concurrent reaping safe.

use std::time::Duration;

use tracing::{info, warn};

use crate::AppState;

const EVERY: Duration = Duration::from_secs(5);
/// Waiting workflows are swept every this many passes (a minute), and only those recorded at
/// least [`SWEEP_AGE`] ago: younger ones are released by the events as they come.
const SWEEP_EVERY_TICKS: u32 = 12;
const SWEEP_AGE: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

pub(crate) async fn run(state: AppState) {
    let min_idle = Duration::from_secs(state.config().redis.stale_after_secs);
    let keep = state.config().redis.retain_jobs;
    let memory_percent = state.config().redis.prune_memory_percent;
    let expiry_days = state.config().server.approval_expiry_days;
    let expiry = (expiry_days > 0).then(|| {
        (
            chrono::TimeDelta::days(i64::from(expiry_days)),
            format!("approval expired: waited more than {expiry_days} day(s)"),
        )
    });
    // Said once per episode, not every five seconds.
    let mut full_warned = false;
    let mut refused_warned = false;
    let mut sweep_in = 0u32;
    // Rotating `redis.secrets_key`: secrets sealed with a previous key are sealed again with
    // the new one, once (tried again each minute until it has worked).
    let options = state.queue().options();
    let mut reseal = options.secrets_key.is_some() && !options.secrets_previous_keys.is_empty();
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
            if let Some((max_wait, reason)) = &expiry {
                let cutoff = state.clock().now() - *max_wait;
                match state.queue().expire_blocked(cutoff, reason).await {
                    Ok(expired) if expired.is_empty() => {}
                    Ok(expired) => {
                        info!(?expired, "declined jobs that waited too long for approval")
                    }
                    Err(e) => {
                        warn!(error = %e, "reaper could not expire jobs waiting for approval")
                    }
                }
            }
            // Workflows waiting for jobs whose endings no server read (the events were
            // trimmed while every server was down); once a minute, for jobs older than one.
            if sweep_in == 0 {
                let cutoff = state.clock().now() - SWEEP_AGE;
                match state.queue().sweep_waiting(cutoff).await {
                    Ok(released) if released.is_empty() => {}
                    Ok(released) => info!(?released, "released workflows that waited"),
                    Err(e) => warn!(error = %e, "reaper could not look at waiting workflows"),
                }
                match state.queue().sweep_groups().await {
                    Ok(queued) if queued.is_empty() => {}
                    Ok(queued) => info!(?queued, "handed concurrency groups on"),
                    Err(e) => warn!(error = %e, "reaper could not look at concurrency groups"),
                }
                if reseal {
                    match state.queue().reseal_secrets().await {
                        Ok(report) => {
                            reseal = false;
                            info!(
                                resealed = report.resealed,
                                unopenable = report.unopenable,
                                "repository secrets are sealed with redis.secrets_key: \
                                 redis.secrets_previous_keys may go"
                            );
                        }
                        Err(e) => warn!(error = %e, "reaper could not seal secrets again"),
                    }
                }
            }
            sweep_in = (sweep_in + 1) % SWEEP_EVERY_TICKS;
            match state.queue().prune(keep).await {
                Ok(0) => {}
                Ok(removed) => info!(removed, keep, "pruned old jobs"),
                Err(e) => warn!(error = %e, "reaper could not prune old jobs"),
            }
            match state.queue().prune_for_memory(memory_percent).await {
                Ok(report) => {
                    if report.logs_removed > 0 {
                        info!(
                            logs_removed = report.logs_removed,
                            memory = ?report.memory,
                            "deleted the logs of old finished jobs: Redis was above \
                             {memory_percent}% of its maxmemory"
                        );
                    }
                    if report.nothing_left && !full_warned {
                        warn!(
                            memory = ?report.memory,
                            "Redis is above {memory_percent}% of its maxmemory with no finished \
                             job's log left to delete; once full it refuses new jobs: raise its \
                             maxmemory, lower redis.log_max_bytes or redis.retain_jobs"
                        );
                    }
                    full_warned = report.nothing_left;
                    if let Some(why) = &report.refused
                        && !refused_warned
                    {
                        warn!(
                            error = %why,
                            "Redis refuses INFO, so the reaper cannot see how full it is and \
                             redis.prune_memory_percent does nothing: allow +info for this user"
                        );
                    }
                    refused_warned = report.refused.is_some();
                }
                Err(e) => warn!(error = %e, "reaper could not check Redis's memory"),
            }
        };
        tokio::select! {
            () = state.shutdown().cancelled() => return,
            () = pass => {}
        }
    }
}
