//! `raibid pool pause <POOL>` and `raibid pool resume <POOL>`: an operator's hold on a pool's
//! jobs, through the API (`POST /api/v1/queues/{pool}/pause|resume`), and, where this machine
//! has a cluster, KEDA's pause on the pool's ScaledJobs, so that KEDA does not start agent
//! pods for jobs no agent may take.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use raibid_config::Config;
use raibid_infra::cluster::KedaPause;
use raibid_model::PoolStats;

use crate::cli::{Output, PoolArgs, PoolCommand};

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
    // The pause is in force (agents read it from Redis); KEDA's side follows, where this
    // machine has a cluster, and a failure there is a warning with the command to run by hand.
    let kubeconfig = raibid_infra::cluster::kubeconfig_path(config);
    if kubeconfig.exists() {
        let keda = raibid_infra::cluster::pause_pool_scaled_jobs(
            &kubeconfig,
            &config.cluster.namespace,
            stats.pool.as_str(),
            paused,
        )
        .await;
        match keda {
            KedaPause::Done(line) if args.api.output != Output::Json => println!("{line}"),
            KedaPause::Done(_) => {}
            KedaPause::Failed(warning) => eprintln!("warning: {warning}"),
        }
    }
    Ok(ExitCode::SUCCESS)
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
    use raibid_model::{PoolName, PoolPause};

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
