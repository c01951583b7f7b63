//! The agent's life: register, claim, run, heartbeat, and leave cleanly.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use raibid_model::{AgentInfo, PoolName};
use raibid_queue::QueueError;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::runner::{JobEnd, Runner};

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub name: String,
    pub pools: Vec<PoolName>,
    pub labels: BTreeMap<String, String>,
    /// Run at most one job, then exit (a KEDA ScaledJob pod, a local pool agent).
    pub once: bool,
    /// With `once`: exit quietly if nothing arrives for this long (KEDA may over-provision).
    pub idle_timeout: Duration,
    pub concurrency: usize,
    /// After shutdown is requested, running jobs get this long before they are handed back.
    pub grace_period: Duration,
    pub heartbeat_interval: Duration,
}

/// What the agent did, for its exit message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentSummary {
    pub jobs: Vec<(String, JobEnd)>,
}

/// Runs until `shutdown` fires (or, with `once`, after one job or the idle timeout).
pub async fn run_agent(
    runner: Arc<Runner>,
    options: AgentOptions,
    shutdown: CancellationToken,
) -> Result<AgentSummary, QueueError> {
    let info = Arc::new(Mutex::new(AgentInfo {
        name: options.name.clone(),
        arch: std::env::consts::ARCH.to_owned(),
        pools: options.pools.clone(),
        labels: options.labels.clone(),
        current_jobs: Vec::new(),
        started_at: Utc::now(),
        last_heartbeat: Utc::now(),
        jobs_done: 0,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }));
    // Registration failing is not fatal: the agent's job is jobs, the registry is for humans.
    let snapshot = info.lock().expect("lock").clone();
    if let Err(e) = runner.queue.agent_heartbeat(&snapshot).await {
        warn!(error = %e, "could not register the agent");
    }
    let registry = spawn_registration(runner.clone(), info.clone(), options.heartbeat_interval);
    // Steps first: a dead agent's step container may still be writing in a workspace.
    let stopped = runner.executor.sweep_orphans().await;
    if stopped > 0 {
        info!(stopped, "removed steps that dead agents left running");
    }
    let swept = runner.sweep_orphaned_workspaces().await;
    if swept > 0 {
        info!(swept, "removed workspaces that dead agents left behind");
    }
    // Beside the first job; awaited before the agent returns, since the entries it took are
    // this agent's to delete or schedule again.
    let expiry = runner.artifacts.clone().map(|store| {
        let queue = runner.queue.clone();
        tokio::spawn(async move {
            let deleted = crate::keep_artifacts::expire_artifacts(&queue, &store).await;
            if deleted > 0 {
                info!(deleted, "deleted expired artifacts from the registry");
            }
        })
    });

    let mirrors = tokio::spawn(expire_mirrors(runner.clone()));

    // Running jobs are interrupted only when the grace period after shutdown is over.
    let interrupt = CancellationToken::new();
    let grace = {
        let shutdown = shutdown.clone();
        let interrupt = interrupt.clone();
        let grace = options.grace_period;
        tokio::spawn(async move {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
            interrupt.cancel();
        })
    };

    let workers = if options.once {
        1
    } else {
        options.concurrency.max(1)
    };
    let mut handles = Vec::new();
    for i in 0..workers {
        let consumer = if workers == 1 {
            options.name.clone()
        } else {
            format!("{}/{i}", options.name)
        };
        handles.push(tokio::spawn(worker(
            runner.clone(),
            options.clone(),
            consumer,
            info.clone(),
            shutdown.clone(),
            interrupt.clone(),
        )));
    }
    let mut summary = AgentSummary::default();
    let mut first_error = None;
    for handle in handles {
        match handle.await {
            Ok(Ok(jobs)) => summary.jobs.extend(jobs),
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(QueueError::Protocol(e.to_string()))),
        }
    }
    if let Some(expiry) = expiry {
        let _ = expiry.await;
    }
    let _ = mirrors.await;
    grace.abort();
    registry.abort();
    if let Err(e) = runner.queue.agent_gone(&options.name).await {
        warn!(error = %e, "could not deregister the agent");
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}

fn spawn_registration(
    runner: Arc<Runner>,
    info: Arc<Mutex<AgentInfo>>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let snapshot = info.lock().expect("lock").clone();
            if let Err(e) = runner.queue.agent_heartbeat(&snapshot).await {
                warn!(error = %e, "agent heartbeat failed");
            }
        }
    })
}

async fn worker(
    runner: Arc<Runner>,
    options: AgentOptions,
    consumer: String,
    info: Arc<Mutex<AgentInfo>>,
    shutdown: CancellationToken,
    interrupt: CancellationToken,
) -> Result<Vec<(String, JobEnd)>, QueueError> {
    let mut done = Vec::new();
    let mut backoff = Duration::from_millis(200);
    let mut claimer = None;
    let block = if options.once {
        options.idle_timeout
    } else {
        Duration::from_secs(5)
    };
    while !shutdown.is_cancelled() {
        if claimer.is_none() {
            match runner.queue.claimer(consumer.clone()).await {
                Ok(c) => claimer = Some(c),
                Err(e) if e.is_transient() => {
                    warn!(error = %e, "redis unavailable; retrying");
                    sleep_or_shutdown(backoff, &shutdown).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        let c = claimer.as_mut().expect("set above");
        let claimed = tokio::select! {
            r = c.claim(&options.pools, block) => r,
            _ = shutdown.cancelled() => break,
        };
        let claimed = match claimed {
            Ok(Some(claimed)) => claimed,
            Ok(None) if options.once => {
                info!(idle = ?options.idle_timeout, "no job arrived; exiting");
                break;
            }
            Ok(None) => continue,
            Err(e) if e.is_transient() => {
                warn!(error = %e, "claim failed; retrying");
                claimer = None;
                sleep_or_shutdown(backoff, &shutdown).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
            Err(e) => return Err(e),
        };
        backoff = Duration::from_millis(200);
        let id = claimed.job.id.clone();
        info.lock().expect("lock").current_jobs.push(id.clone());
        let end = runner.run(claimed, interrupt.clone()).await;
        {
            let mut info = info.lock().expect("lock");
            info.current_jobs.retain(|j| j != &id);
            info.jobs_done += 1;
        }
        match end {
            Ok(end) => {
                info!(job = %id, ?end, "job done");
                done.push((id, end));
            }
            Err(e) => {
                warn!(job = %id, error = %e, "could not record the job's end; it will be requeued")
            }
        }
        if options.once {
            break;
        }
        // A long-running agent outlives the agents that die beside it on a shared root.
        runner.sweep_orphaned_workspaces().await;
        expire_mirrors(runner.clone()).await;
    }
    if let Err(e) = runner
        .queue
        .retire_consumer(&consumer, &options.pools)
        .await
    {
        warn!(error = %e, consumer, "could not remove the consumer from the group");
    }
    Ok(done)
}

/// The cache directory's daily sweep of unused git mirrors: beside the first job, and after
/// each job of an agent that lives for days.
async fn expire_mirrors(runner: Arc<Runner>) {
    match runner.git.expire_mirrors().await {
        Ok(Some(sweep)) if !sweep.expired.is_empty() || sweep.leftovers > 0 => info!(
            expired = ?sweep.expired,
            leftovers = sweep.leftovers,
            "removed git mirrors no job used within agent.mirror_expire_days"
        ),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot sweep the git mirrors"),
    }
}

async fn sleep_or_shutdown(d: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.cancelled() => {}
    }
}
