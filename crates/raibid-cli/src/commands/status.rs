//! `raibid status`: one screen saying what is running, from the API.

use std::process::ExitCode;

use chrono::Utc;
use raibid_client::ListJobs;
use raibid_config::Config;
use raibid_model::JobStatus;

use crate::cli::{Output, StatusArgs};
use crate::commands::job::jobs_table;
use crate::output::{duration, table};

/// Exits non-zero when anything it checked is not ready (in both output modes, so scripts and
/// probes can rely on it): the server, Redis behind it, and, when a cluster is reachable, the
/// cluster's nodes and raibid's pods, ScaledJobs and Flux objects. Without any cluster (a
/// `raibid up` machine) only the server and Redis count; `status <component>|all` asks about
/// the cluster, so there an unreachable cluster is a failure too.
pub async fn run(config: &Config, args: StatusArgs) -> anyhow::Result<ExitCode> {
    if let Some(component) = args.component {
        // The cluster's view of one component, or of all.
        let problems = raibid_infra::status(
            raibid_infra::StatusArgs {
                components: raibid_infra::expand_components(&[component]),
                json: args.api.output == Output::Json,
            },
            config,
        )
        .await?;
        return Ok(verdict(&problems));
    }
    let client = super::api_client(config, &args.api)?;
    let ready = match client.ready().await {
        Ok(ready) => ready,
        Err(e) => {
            println!("server    {}: not reachable ({e})", client.base_url());
            println!(
                "          start one with `raibid up` (or point --server / RAIBID_SERVER at it)"
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let cluster = raibid_infra::cluster_status(config).await;
    let mut problems = Vec::new();
    if !ready {
        problems.push(format!(
            "server {} is up, but Redis is unreachable",
            client.base_url()
        ));
    }
    if cluster.reachable {
        problems.extend(cluster.problems(&[]));
    }
    if !ready {
        // The queue, agents and jobs all live in Redis: nothing more to ask the server.
        if args.api.output == Output::Json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "server": client.base_url(),
                    "redis_reachable": false,
                    "ready": false,
                    "problems": problems,
                    "cluster": cluster,
                }))?
            );
        } else {
            println!(
                "server    {}  up, but Redis is unreachable",
                client.base_url()
            );
            println!();
            print!("{cluster}");
            println!();
        }
        return Ok(verdict(&problems));
    }
    let queues = client.queues().await?;
    let (pause_problems, pause_notes) = if cluster.reachable {
        pause_mismatches(&queues.pools, &cluster.scaled_jobs)
    } else {
        (Vec::new(), Vec::new())
    };
    problems.extend(pause_problems);
    let agents = client.agents().await?;
    let mut failures = Vec::new();
    for status in [JobStatus::Failure, JobStatus::Error, JobStatus::Dead] {
        let page = client
            .list(&ListJobs {
                status: Some(status),
                limit: Some(5),
                ..Default::default()
            })
            .await?;
        failures.extend(page.jobs);
    }
    failures.sort_by(|a, b| b.job.id.cmp(&a.job.id));
    failures.truncate(5);

    if args.api.output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "server": client.base_url(),
                "redis_reachable": ready,
                "ready": problems.is_empty(),
                "problems": problems,
                "queues": queues,
                "agents": agents,
                "recent_failures": failures,
                "cluster": cluster,
            }))?
        );
        return Ok(verdict(&problems));
    }

    println!("server    {}  ready", client.base_url());
    let now = Utc::now();
    let rows: Vec<Vec<String>> = queues
        .pools
        .iter()
        .map(|p| {
            let scaler = queues.scalers.iter().find(|s| s.pool == p.pool);
            vec![
                match p.paused {
                    Some(_) => format!("{} (paused)", p.pool),
                    None => p.pool.to_string(),
                },
                p.lag.to_string(),
                p.pending.to_string(),
                scaler
                    .map(|s| format!("{}/{}", s.agents, s.max_agents))
                    .unwrap_or_else(|| "-".into()),
                scaler
                    .map(|s| match &s.held {
                        // The line under the table says who paused it and why.
                        Some(_) if p.paused.is_some() => format!("{} (held: paused)", s.source),
                        Some(why) => format!("{} (held: {why})", s.source),
                        None => s.source.clone(),
                    })
                    .unwrap_or_else(|| "-".into()),
                p.oldest_queued_ms
                    .map(|ms| duration(chrono::Duration::milliseconds(ms as i64)))
                    .unwrap_or_else(|| "-".into()),
                p.dead_letters.to_string(),
            ]
        })
        .collect();
    println!();
    print!(
        "{}",
        table(
            &[
                "POOL", "QUEUED", "RUNNING", "AGENTS", "SCALER", "OLDEST", "DEAD"
            ],
            &rows
        )
    );
    for p in &queues.pools {
        if let Some(pause) = &p.paused {
            println!(
                "{} {} (`raibid pool resume {}`)",
                p.pool,
                pause.describe(now),
                p.pool
            );
        }
    }
    for note in &pause_notes {
        println!("note: {note}");
    }
    println!();
    if agents.is_empty() {
        println!("agents    none connected (the local pool starts them when jobs arrive)");
    } else {
        let rows: Vec<Vec<String>> = agents
            .iter()
            .map(|a| {
                vec![
                    a.info.name.clone(),
                    a.info.arch.clone(),
                    a.info
                        .pools
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                    a.info.current_jobs.join(","),
                    format!("{} ago", duration(now - a.info.last_heartbeat)),
                    if a.stale {
                        "stale".into()
                    } else {
                        String::new()
                    },
                ]
            })
            .collect();
        print!(
            "{}",
            table(&["AGENT", "ARCH", "POOLS", "JOB", "HEARTBEAT", ""], &rows)
        );
    }
    println!();
    if failures.is_empty() {
        println!("recent failures: none");
    } else {
        println!("recent failures:");
        print!("{}", jobs_table(&failures));
    }
    println!();
    print!("{cluster}");
    println!();
    Ok(verdict(&problems))
}

/// Where the queue's pauses and KEDA's disagree: a ScaledJob paused for a pool that is not
/// (its jobs would wait for ever: a problem), and a pool paused whose ScaledJob is not (KEDA
/// starts agent pods that find nothing to take: a note). A pause made through the API or the
/// web pages, or resumed there, leaves KEDA as it was.
fn pause_mismatches(
    pools: &[raibid_model::PoolStats],
    scaled_jobs: &[raibid_infra::cluster::ScaledJobStatus],
) -> (Vec<String>, Vec<String>) {
    let (mut problems, mut notes) = (Vec::new(), Vec::new());
    for job in scaled_jobs {
        let Some(pool) = job
            .pool
            .as_deref()
            .and_then(|name| pools.iter().find(|p| p.pool.as_str() == name))
        else {
            continue;
        };
        match (job.paused, pool.paused.is_some()) {
            (true, false) => problems.push(format!(
                "ScaledJob {} is paused ({}) but pool {} is not: KEDA starts no agent for its \
                 jobs; `raibid pool resume {}` from here resumes both",
                job.name,
                raibid_infra::cluster::KEDA_PAUSED,
                pool.pool,
                pool.pool
            )),
            (false, true) => notes.push(format!(
                "pool {} is paused but its ScaledJob {} is not: KEDA may start agent pods that \
                 find nothing to take; `raibid pool pause {}` from here pauses both",
                pool.pool, job.name, pool.pool
            )),
            _ => {}
        }
    }
    (problems, notes)
}

/// The exit code, with what is not ready on stderr (stdout stays the report, or pure JSON).
fn verdict(problems: &[String]) -> ExitCode {
    if problems.is_empty() {
        return ExitCode::SUCCESS;
    }
    for problem in problems {
        eprintln!("not ready: {problem}");
    }
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use raibid_infra::cluster::ScaledJobStatus;
    use raibid_model::{PoolName, PoolPause, PoolStats};

    use super::*;

    fn pool(name: &str, paused: bool) -> PoolStats {
        PoolStats {
            pool: PoolName::new(name).unwrap(),
            stream: format!("ci-jobs:{name}"),
            length: 1,
            lag: 1,
            pending: 0,
            consumers: Vec::new(),
            oldest_queued_ms: None,
            dead_letters: 0,
            paused: paused.then(|| PoolPause {
                by: "ops".into(),
                reason: String::new(),
                since: Utc::now(),
            }),
        }
    }

    fn scaled_job(pool: &str, paused: bool) -> ScaledJobStatus {
        ScaledJobStatus {
            name: format!("raibid-agent-{pool}"),
            pool: Some(pool.into()),
            ready: true,
            message: "Ready=True".into(),
            max_replicas: Some(20),
            active_jobs: 0,
            paused,
        }
    }

    #[test]
    fn pauses_that_disagree_with_keda_are_named() {
        let pools = [
            pool("arm64", false),
            pool("gpu", true),
            pool("amd64", true),
            pool("x", false),
        ];
        let jobs = [
            scaled_job("arm64", true),
            scaled_job("gpu", false),
            scaled_job("amd64", true),
            scaled_job("x", false),
            scaled_job("gone", true),
        ];
        let (problems, notes) = pause_mismatches(&pools, &jobs);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("ScaledJob raibid-agent-arm64 is paused")
                && problems[0].ends_with("`raibid pool resume arm64` from here resumes both"),
            "{problems:?}"
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with("pool gpu is paused but its ScaledJob raibid-agent-gpu is not"),
            "{notes:?}"
        );
    }
}
