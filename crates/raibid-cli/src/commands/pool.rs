//! `raibid pool pause <POOL>` and `raibid pool resume <POOL>`: an operator's hold on a pool's
//! jobs, through the API (`POST /api/v1/queues/{pool}/pause|resume`), and, where this machine
//! has a cluster, KEDA's pause on the pool's ScaledJobs, so that KEDA does not start agent
//! pods for jobs no agent may take.

use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use raibid_config::Config;
use raibid_model::{PoolName, PoolStats};

use crate::cli::{Output, PoolArgs, PoolCommand};

/// How long to wait for a cluster's API server before leaving KEDA as it is.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(config: &Config, args: PoolArgs) -> anyhow::Result<ExitCode> {
    let client = super::api_client(config, &args.api)?;
    let (stats, paused) = match &args.command {
        PoolCommand::Pause { pool, reason } => (client.pause_pool(pool, reason).await?, true),
        PoolCommand::Resume { pool } => (client.resume_pool(pool).await?, false),
    };
    if args.api.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        println!("{}", summary(&stats, Utc::now()));
    }
    // The pause is in force (agents read it from Redis); KEDA's side follows, and a failure
    // there is a warning with the command that does it by hand.
    match keda(config, &stats.pool, paused).await {
        Keda::NoCluster => {}
        Keda::Done(line) => {
            if args.api.output != Output::Json {
                println!("{line}");
            }
        }
        Keda::Failed(warning) => eprintln!("warning: {warning}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// What became of the pool's ScaledJobs.
#[derive(Debug, PartialEq, Eq)]
enum Keda {
    /// No kubeconfig here: a `raibid up` machine.
    NoCluster,
    /// What was done, for the user.
    Done(String),
    Failed(String),
}

/// Sets or clears KEDA's pause on the pool's ScaledJobs in `cluster.namespace`, when this
/// machine has a kubeconfig.
async fn keda(config: &Config, pool: &PoolName, paused: bool) -> Keda {
    let kubeconfig = raibid_infra::cluster::kubeconfig_path(config);
    if !kubeconfig.exists() {
        return Keda::NoCluster;
    }
    let namespace = &config.cluster.namespace;
    let result = match raibid_infra::cluster::connect(config, CLUSTER_TIMEOUT).await {
        Ok(cluster) => {
            raibid_infra::cluster::pause_scaled_jobs(&cluster, namespace, pool.as_str(), paused)
                .await
        }
        Err(e) => Err(e),
    };
    let (verb, value) = if paused {
        ("paused", "=true")
    } else {
        ("resumed", "-")
    };
    match result {
        Ok(names) if names.is_empty() => Keda::Done(format!(
            "KEDA: no ScaledJob of pool {pool} in namespace {namespace}"
        )),
        Ok(names) => Keda::Done(format!(
            "KEDA: ScaledJob {} {verb}{}",
            names.join(", "),
            if paused {
                " (it starts no agent pods)"
            } else {
                ""
            }
        )),
        Err(e) => Keda::Failed(format!(
            "KEDA's ScaledJobs of pool {pool} were not {verb} ({}); by hand: kubectl -n \
             {namespace} annotate scaledjob -l {}={pool} {}{value}",
            raibid_infra::cluster::error_chain(&e),
            raibid_infra::cluster::POOL_LABEL,
            raibid_infra::cluster::KEDA_PAUSED,
        )),
    }
}

/// What the pool does now, in the words an operator acts on.
fn summary(stats: &PoolStats, now: DateTime<Utc>) -> String {
    let pool = &stats.pool;
    let waiting = match stats.lag {
        1 => "1 queued job waits".to_owned(),
        n => format!("{n} queued jobs wait"),
    };
    match &stats.paused {
        Some(pause) => {
            let running = match stats.pending {
                0 => String::new(),
                n => format!("; {n} running go on"),
            };
            format!(
                "pool {pool} {}\n{waiting}, no agent takes one until `raibid pool resume {pool}`{running}",
                pause.describe(now)
            )
        }
        None if stats.lag == 0 => format!("pool {pool} is not paused; nothing is queued"),
        None => format!("pool {pool} is not paused; {waiting} for an agent"),
    }
}

#[cfg(test)]
mod tests {
    use raibid_model::PoolPause;

    use super::*;

    #[test]
    fn the_summary_says_what_waits_and_how_to_resume() {
        let now = DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z")
            .unwrap()
            .to_utc();
        let mut stats = PoolStats {
            pool: PoolName::new("gpu").unwrap(),
            stream: "ci-jobs:gpu".into(),
            length: 3,
            lag: 3,
            pending: 1,
            consumers: Vec::new(),
            oldest_queued_ms: None,
            dead_letters: 0,
            paused: Some(PoolPause {
                by: "ops".into(),
                reason: "driver upgrade".into(),
                since: now,
            }),
        };
        assert_eq!(
            summary(&stats, now),
            "pool gpu paused by ops 0s ago: driver upgrade\n3 queued jobs wait, no agent takes \
             one until `raibid pool resume gpu`; 1 running go on"
        );
        stats.paused = None;
        assert_eq!(
            summary(&stats, now),
            "pool gpu is not paused; 3 queued jobs wait for an agent"
        );
        stats.lag = 0;
        assert_eq!(
            summary(&stats, now),
            "pool gpu is not paused; nothing is queued"
        );
    }
}
