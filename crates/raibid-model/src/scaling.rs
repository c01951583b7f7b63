//! The autoscaling arithmetic shared by the local pool (`raibid up`) and the KEDA ScaledJob
//! manifests, so that one machine and a cluster react to a queue the same way.
//!
//! KEDA's ScaledJob with `scalingStrategy.strategy: accurate` and a `redis-streams` trigger with
//! `lagCount: "1"` computes, at every polling interval:
//!
//! ```text
//! maxScale = ceil(lag / lagCount)                      (lagCount = 1: one agent per job)
//! if maxScale + running > maxReplicaCount:  new = maxReplicaCount - running
//! else:                                     new = maxScale - pending
//! ```
//!
//! where `running` counts the agent jobs (pods) that exist and `pending` those not yet running a
//! build. Each new agent claims one job and exits (`raibid agent --once`), so capacity follows
//! the lag down to zero without a scale-down decision.

/// One look at a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleInput {
    /// Consumer-group lag: jobs nobody has taken yet.
    pub lag: u64,
    /// Agents that exist for this pool (starting, idle or busy).
    pub running: u64,
    /// Of those, agents that have not taken a job yet.
    pub pending: u64,
    /// `maxReplicaCount` / `max_agents`.
    pub max: u64,
}

/// How many agents to start now (KEDA's accurate strategy, `lagCount` = 1).
pub fn agents_to_start(input: ScaleInput) -> u64 {
    let max_scale = input.lag;
    if max_scale + input.running > input.max {
        input.max.saturating_sub(input.running)
    } else {
        max_scale.saturating_sub(input.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(lag: u64, running: u64, pending: u64, max: u64) -> u64 {
        agents_to_start(ScaleInput {
            lag,
            running,
            pending,
            max,
        })
    }

    #[test]
    fn scales_from_zero_one_agent_per_job() {
        assert_eq!(start(3, 0, 0, 4), 3);
    }

    #[test]
    fn never_exceeds_the_maximum() {
        assert_eq!(start(20, 0, 0, 4), 4);
        assert_eq!(start(20, 4, 0, 4), 0);
        assert_eq!(start(20, 3, 3, 4), 1);
    }

    #[test]
    fn agents_still_starting_are_not_started_twice() {
        assert_eq!(start(2, 2, 2, 8), 0);
        assert_eq!(start(3, 2, 2, 8), 1);
    }

    #[test]
    fn nothing_queued_starts_nothing() {
        assert_eq!(start(0, 0, 0, 4), 0);
        assert_eq!(start(0, 3, 1, 4), 0);
    }
}
