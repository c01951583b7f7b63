//! The local agent pool: KEDA ScaledJob's behaviour on one machine.
//!
//! At every polling interval it reads each pool's consumer-group lag and starts
//! `raibid agent --once` processes by the same arithmetic as the ScaledJob manifests
//! ([`raibid_model::scaling`]). Each agent takes one job and exits; one that finds nothing within
//! the cooldown exits too, so the pool returns to zero agents by itself.
//!
//! One departure from a pure poller: an agent that exits cleanly frees its slot at once, and
//! the pool looks at the lag again right then instead of at the next tick. With one job per
//! process, a slot otherwise idles for half a polling interval on average after every job,
//! which bounded a burst's drain rate by the interval rather than by the machine. An agent
//! that fails (a broken configuration, say) waits for the tick, so a crash loop cannot spin.
//!
//! The pool also knows when the farm is quiet, which the private registry's garbage collection
//! needs (it must not run beside uploads, and only agents upload): with no agent process alive
//! and nothing queued or pending, no upload can be under way, and none can start while the
//! pool, which alone starts agents, waits for the collection to end. A farm busy around the
//! clock has no such moment, and its registry would grow until the disk is full: once the
//! collection is overdue by as long again, the pool starts no more agents, lets the running
//! ones finish their jobs, and collects when the last has exited, queued jobs waiting.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use chrono::Utc;
use raibid_agent::AgentProgram;
use raibid_model::scaling::{ScaleInput, agents_to_start};
use raibid_model::{PoolName, ScalerStatus};
use raibid_queue::Queue;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// What starts an agent: `raibid-agent`, or `raibid agent`.
    pub agent: AgentProgram,
    /// Arguments that come before the agent's own (e.g. `--config FILE`).
    pub global_args: Vec<String>,
    /// Environment for agents on top of ours (e.g. the private Redis URL).
    pub env: Vec<(String, String)>,
    /// Arguments after `agent` that `raibid up` decided for every agent (`--executor`).
    pub agent_args: Vec<String>,
    pub agent_data_dir: PathBuf,
    /// Agents' stderr goes here.
    pub log_file: PathBuf,
    pub max_agents: u64,
    pub polling_interval: Duration,
    /// An agent with nothing to do exits after this long.
    pub cooldown: Duration,
    /// Pools served even before they have seen a job.
    pub pools: Vec<PoolName>,
    /// Grace period for running jobs when the pool stops.
    pub grace_period: Duration,
    /// The private registry's garbage collection, when there is one to do.
    pub upkeep: Option<UpkeepSettings>,
}

#[derive(Debug, Clone)]
pub struct UpkeepSettings {
    /// At the first quiet moment this long after the last one (or after the start, which
    /// collects too).
    pub every: Duration,
    /// How much longer than `every` to wait for a quiet moment before draining the agents to
    /// make one.
    pub drain_after: Duration,
    /// Asks the registry's keeper ([`super::keeper::keep`]).
    pub requests: mpsc::Sender<super::keeper::Upkeep>,
}

struct AgentProcess {
    child: Child,
    name: String,
    pool: PoolName,
}

pub struct LocalPool {
    queue: Queue,
    settings: PoolSettings,
    agents: Vec<AgentProcess>,
    started_total: u64,
    last: HashMap<PoolName, (u64, u64)>,
    last_upkeep: Instant,
    /// Whether the pool said it is draining for an overdue collection, so it says it once.
    draining: bool,
}

impl LocalPool {
    pub fn new(queue: Queue, settings: PoolSettings) -> Self {
        Self {
            queue,
            settings,
            agents: Vec::new(),
            started_total: 0,
            last: HashMap::new(),
            last_upkeep: Instant::now(),
            draining: false,
        }
    }

    /// Scales until `shutdown`, then stops every agent (SIGTERM, grace, SIGKILL).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.polling_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = clean_exit(&mut self.agents) => {}
                _ = shutdown.cancelled() => break,
            }
            if let Err(e) = self.step().await {
                warn!(error = %e, "local pool: cannot read the queue; retrying");
            }
        }
        self.stop_all().await;
    }

    /// One look at the queue: reap exited agents, start new ones where the lag calls for it.
    async fn step(&mut self) -> Result<(), raibid_queue::QueueError> {
        self.agents
            .retain_mut(|a| matches!(a.child.try_wait(), Ok(None)));
        let mut pools: BTreeSet<PoolName> = self.settings.pools.iter().cloned().collect();
        pools.extend(self.queue.pools().await?);
        self.upkeep_if_quiet(&pools).await?;
        let draining = self.upkeep_overdue();
        if draining != self.draining {
            self.draining = draining;
            if draining {
                warn!(
                    agents = self.agents.len(),
                    waited = ?self.last_upkeep.elapsed(),
                    "local pool: no quiet moment for the registry's collection; starting no \
                     agents until the running ones have ended"
                );
            }
        }
        for pool in pools {
            let stats = self.queue.stats(&pool).await?;
            let mine: Vec<&AgentProcess> = self.agents.iter().filter(|a| a.pool == pool).collect();
            let busy = mine
                .iter()
                .filter(|a| {
                    stats
                        .consumers
                        .iter()
                        .any(|c| c.name == a.name && c.pending > 0)
                })
                .count() as u64;
            let running = mine.len() as u64;
            let others = self.agents.len() as u64 - running;
            let input = ScaleInput {
                lag: stats.lag,
                running,
                pending: running - busy,
                max: self.settings.max_agents.saturating_sub(others),
            };
            // A paused pool's jobs wait for `raibid pool resume`; agents would only idle.
            let start = if draining || stats.paused.is_some() {
                0
            } else {
                agents_to_start(input)
            };
            for _ in 0..start {
                match self.spawn(&pool) {
                    Ok(agent) => self.agents.push(agent),
                    Err(e) => {
                        warn!(error = %e, "local pool: cannot start an agent");
                        break;
                    }
                }
            }
            let now_running = running + start;
            if start > 0 || self.last.get(&pool) != Some(&(stats.lag, now_running)) {
                info!(
                    pool = %pool,
                    lag = stats.lag,
                    agents = running,
                    idle = running - busy,
                    started = start,
                    max = self.settings.max_agents,
                    "local pool"
                );
                self.last.insert(pool.clone(), (stats.lag, now_running));
            }
            self.queue
                .set_scaler_status(&ScalerStatus {
                    pool: pool.clone(),
                    source: "local".into(),
                    agents: now_running,
                    starting: running - busy + start,
                    started: start,
                    max_agents: self.settings.max_agents,
                    lag: stats.lag,
                    updated_at: Utc::now(),
                    held: match &stats.paused {
                        Some(pause) => Some(pause.describe(Utc::now())),
                        None => draining.then(|| {
                            "draining for the registry's garbage collection: agents start \
                             again once it has run"
                                .to_owned()
                        }),
                    },
                })
                .await?;
        }
        Ok(())
    }

    /// Whether the registry's collection has waited for a quiet moment so long that the pool
    /// drains its agents to make one.
    fn upkeep_overdue(&self) -> bool {
        self.settings
            .upkeep
            .as_ref()
            .is_some_and(|u| self.last_upkeep.elapsed() >= u.every + u.drain_after)
    }

    /// The registry's upkeep, when it is due and nothing could be uploading: no agent alive,
    /// and in every pool nothing queued (but in a paused pool) and nothing pending (a pending
    /// entry is a job whose agent died; the reaper queues it again); or, when overdue
    /// ([`Self::upkeep_overdue`]), as soon as the last agent has exited, whatever is queued.
    /// Jobs queued meanwhile wait for it to end.
    async fn upkeep_if_quiet(
        &mut self,
        pools: &BTreeSet<PoolName>,
    ) -> Result<(), raibid_queue::QueueError> {
        let Some(upkeep) = &self.settings.upkeep else {
            return Ok(());
        };
        if !self.agents.is_empty() || self.last_upkeep.elapsed() < upkeep.every {
            return Ok(());
        }
        let overdue = self.upkeep_overdue();
        if !overdue {
            for pool in pools {
                let stats = self.queue.stats(pool).await?;
                // A paused pool's queued jobs start nothing that could upload, however long
                // they wait; its running ones (pending) still could.
                let waiting = stats.lag > 0 && stats.paused.is_none();
                if waiting || stats.pending > 0 {
                    return Ok(());
                }
            }
        }
        let requests = upkeep.requests.clone();
        self.last_upkeep = Instant::now();
        if overdue {
            info!("local pool: agents drained; the registry collects unused layers");
        } else {
            info!("local pool: quiet; the registry collects unused layers");
        }
        let (done, result) = oneshot::channel();
        if requests.send(done).await.is_err() {
            return Ok(());
        }
        // Otherwise the keeper said why, and starts the registry again if it is down.
        if let Ok(Ok(())) = result.await {
            info!(
                took = ?self.last_upkeep.elapsed(),
                "local pool: registry collected; agents start again"
            );
        }
        Ok(())
    }

    fn spawn(&mut self, pool: &PoolName) -> std::io::Result<AgentProcess> {
        self.started_total += 1;
        let name = format!(
            "local-{}-{}-{}",
            pool,
            std::process::id(),
            self.started_total
        );
        let log =
            crate::log_files::open_append(&self.settings.log_file, crate::log_files::MAX_BYTES)?;
        let agent = &self.settings.agent;
        let mut cmd = Command::new(&agent.program);
        cmd.args(&self.settings.global_args)
            .args(agent.subcommand)
            .arg("--once")
            .args(&self.settings.agent_args)
            .arg("--idle-timeout")
            .arg(self.settings.cooldown.as_secs().max(1).to_string())
            .arg("--grace-period")
            .arg(self.settings.grace_period.as_secs().to_string())
            .arg("--name")
            .arg(&name)
            .arg("--pool")
            .arg(pool.as_str())
            .arg("--data-dir")
            .arg(&self.settings.agent_data_dir)
            .envs(self.settings.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Not in the terminal's foreground group: Ctrl-C reaches `raibid up` alone, which
        // stops the agents in order (SIGTERM, grace period) before the server and Redis.
        crate::child_process::owned(&mut cmd);
        let child = cmd.spawn()?;
        Ok(AgentProcess {
            child,
            name,
            pool: pool.clone(),
        })
    }

    async fn stop_all(&mut self) {
        if self.agents.is_empty() {
            return;
        }
        info!(agents = self.agents.len(), "stopping local agents");
        for a in &self.agents {
            if let Some(pid) = a.child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        let deadline =
            tokio::time::Instant::now() + self.settings.grace_period + Duration::from_secs(10);
        for a in &mut self.agents {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if tokio::time::timeout(left, a.child.wait()).await.is_err() {
                warn!(agent = %a.name, "agent did not stop in time; killing it");
                let _ = a.child.kill().await;
            }
        }
        self.agents.clear();
    }
}

/// Resolves when one of `agents` has exited with success; never while there are none, nor for
/// one that failed (its exit is noticed at the next tick). `Child::wait` is cancel-safe and
/// keeps the status, so the reaping in `step` still sees every exit.
async fn clean_exit(agents: &mut [AgentProcess]) {
    if agents.is_empty() {
        return std::future::pending().await;
    }
    let waits = agents.iter_mut().map(|a| Box::pin(a.child.wait()));
    let mut waits: Vec<_> = waits.collect();
    loop {
        let (status, _, rest) = futures::future::select_all(waits).await;
        if matches!(status, Ok(s) if s.success()) {
            return;
        }
        if rest.is_empty() {
            return std::future::pending().await;
        }
        waits = rest;
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn agent(script: &str) -> AgentProcess {
        AgentProcess {
            child: Command::new("sh")
                .args(["-c", script])
                .kill_on_drop(true)
                .spawn()
                .expect("spawn sh"),
            name: script.to_owned(),
            pool: PoolName::default(),
        }
    }

    /// A push's job, for the queue to hold.
    fn push() -> raibid_model::NewJob {
        raibid_model::NewJob::new(
            "acme/app",
            "http://127.0.0.1/acme/app.git",
            "refs/heads/main",
            "0123456789abcdef0123456789abcdef01234567",
            raibid_model::Event::Push,
        )
    }

    fn pool_with_upkeep(
        queue: Queue,
        every: Duration,
    ) -> (LocalPool, mpsc::Receiver<super::super::keeper::Upkeep>) {
        pool_draining_after(queue, every, Duration::from_secs(3600))
    }

    fn pool_draining_after(
        queue: Queue,
        every: Duration,
        drain_after: Duration,
    ) -> (LocalPool, mpsc::Receiver<super::super::keeper::Upkeep>) {
        let (requests, received) = mpsc::channel(1);
        let settings = PoolSettings {
            agent: AgentProgram::subcommand_of(Path::new("/bin/false")),
            global_args: Vec::new(),
            env: Vec::new(),
            agent_args: Vec::new(),
            agent_data_dir: PathBuf::from("/nonexistent"),
            log_file: PathBuf::from("/dev/null"),
            max_agents: 1,
            polling_interval: Duration::from_millis(100),
            cooldown: Duration::from_secs(1),
            pools: vec![PoolName::default()],
            grace_period: Duration::from_secs(1),
            upkeep: Some(UpkeepSettings {
                every,
                drain_after,
                requests,
            }),
        };
        (LocalPool::new(queue, settings), received)
    }

    /// Runs one upkeep check, answering a request if one comes; whether one came.
    async fn upkeep_asked(
        pool: &mut LocalPool,
        received: &mut mpsc::Receiver<super::super::keeper::Upkeep>,
    ) -> bool {
        let pools: BTreeSet<PoolName> = [PoolName::default()].into();
        let answer = async {
            let done = received.recv().await.expect("the pool holds a sender");
            done.send(Ok(())).unwrap();
        };
        tokio::select! {
            r = pool.upkeep_if_quiet(&pools) => {
                r.unwrap();
                // Asked and answered in one go would have been seen by the other branch.
                received.try_recv().is_ok()
            }
            () = answer => true,
        }
    }

    /// The registry's garbage collection runs only when it is due and nothing could be
    /// uploading: no agent alive, nothing queued or pending.
    #[tokio::test]
    async fn the_registry_is_collected_only_when_due_and_the_farm_is_quiet() {
        let redis = raibid_testkit::RedisServer::start();
        let queue = Queue::open(raibid_queue::QueueOptions::new(redis.url())).unwrap();

        let (mut pool, mut received) = pool_with_upkeep(queue.clone(), Duration::from_secs(3600));
        assert!(
            !upkeep_asked(&mut pool, &mut received).await,
            "not due: collected at the start"
        );

        let (mut pool, mut received) = pool_with_upkeep(queue.clone(), Duration::ZERO);
        pool.agents.push(agent("exec sleep 30"));
        assert!(
            !upkeep_asked(&mut pool, &mut received).await,
            "an agent is alive"
        );
        pool.agents.clear();

        queue.enqueue(push()).await.unwrap();
        assert!(
            !upkeep_asked(&mut pool, &mut received).await,
            "a job is queued"
        );
        // Claimed by an agent that died: pending, not queued, and still not quiet.
        let mut claimer = queue.claimer("gone").await.unwrap();
        let claimed = claimer
            .claim(&[PoolName::default()], Duration::ZERO)
            .await
            .unwrap()
            .expect("the job");
        assert!(
            !upkeep_asked(&mut pool, &mut received).await,
            "a job is pending"
        );

        queue
            .ack(
                &claimed,
                &raibid_model::Outcome::new(raibid_model::JobStatus::Success),
            )
            .await
            .unwrap();
        assert!(
            upkeep_asked(&mut pool, &mut received).await,
            "quiet and due"
        );

        // Queued in a paused pool: nothing can start, so still quiet.
        queue.enqueue(push()).await.unwrap();
        queue
            .pause_pool(&PoolName::default(), "ops", "")
            .await
            .unwrap();
        let (mut pool, mut received) = pool_with_upkeep(queue.clone(), Duration::ZERO);
        assert!(
            upkeep_asked(&mut pool, &mut received).await,
            "only a paused pool's jobs wait"
        );
    }

    /// A paused pool gets no agent whatever its lag, says why, and gets one once resumed.
    #[tokio::test]
    async fn a_paused_pool_gets_no_agent_until_resumed() {
        let redis = raibid_testkit::RedisServer::start();
        let queue = Queue::open(raibid_queue::QueueOptions::new(redis.url())).unwrap();
        queue.enqueue(push()).await.unwrap();
        queue
            .pause_pool(&PoolName::default(), "ops", "new disk")
            .await
            .unwrap();
        let (mut pool, _received) =
            pool_draining_after(queue.clone(), Duration::from_secs(3600), Duration::ZERO);
        pool.step().await.unwrap();
        assert!(pool.agents.is_empty(), "no agent for a paused pool");
        let status = queue.scaler_statuses().await.unwrap().remove(0);
        let why = status.held.expect("held");
        assert!(
            why.starts_with("paused by ops") && why.ends_with(": new disk"),
            "{why}"
        );
        assert_eq!(status.lag, 1);

        queue.resume_pool(&PoolName::default()).await.unwrap();
        pool.step().await.unwrap();
        assert_eq!(pool.agents.len(), 1, "an agent once resumed");
        assert_eq!(queue.scaler_statuses().await.unwrap()[0].held, None);
    }

    /// A farm never quiet: once the collection is overdue the pool starts no agents, and
    /// collects as soon as the last running one has exited, with jobs still queued.
    #[tokio::test]
    async fn an_overdue_collection_drains_the_agents_and_runs_with_jobs_queued() {
        let redis = raibid_testkit::RedisServer::start();
        let queue = Queue::open(raibid_queue::QueueOptions::new(redis.url())).unwrap();
        queue.enqueue(push()).await.unwrap();

        // Due, not overdue: a queued job gets an agent, and the collection waits.
        let (mut pool, mut received) =
            pool_draining_after(queue.clone(), Duration::ZERO, Duration::from_secs(3600));
        pool.step().await.unwrap();
        assert_eq!(pool.agents.len(), 1, "an agent for the queued job");
        assert!(received.try_recv().is_err(), "not quiet: a job is queued");
        let held =
            |queue: Queue| async move { queue.scaler_statuses().await.unwrap()[0].held.clone() };
        assert_eq!(held(queue.clone()).await, None);

        // Overdue: with an agent still running, none is started and nothing collected.
        let (mut pool, mut received) =
            pool_draining_after(queue.clone(), Duration::ZERO, Duration::ZERO);
        pool.agents.push(agent("exec sleep 30"));
        pool.step().await.unwrap();
        assert_eq!(pool.agents.len(), 1, "no agent started while draining");
        assert!(pool.draining);
        // `raibid status` (and `GET /api/v1/queues`) says why the queued job waits.
        let why = held(queue.clone()).await.expect("held");
        assert!(why.contains("garbage collection"), "{why}");
        assert!(received.try_recv().is_err(), "an agent is alive");
        // The last agent gone: collected, the job still queued.
        pool.agents.clear();
        assert!(
            upkeep_asked(&mut pool, &mut received).await,
            "overdue and drained"
        );
        assert_eq!(queue.stats(&PoolName::default()).await.unwrap().lag, 1);
    }

    #[tokio::test]
    async fn a_clean_exit_wakes_the_pool_and_a_failure_does_not() {
        let mut agents = vec![agent("exit 3"), agent("sleep 0.3; exit 0")];
        let started = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), clean_exit(&mut agents))
            .await
            .expect("the clean exit is noticed");
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "woke for the failed agent"
        );
        // Both exits are still there for the reaping in `step`.
        for a in &mut agents {
            assert!(a.child.try_wait().unwrap().is_some());
        }

        let mut failing = vec![agent("exit 1")];
        assert!(
            tokio::time::timeout(Duration::from_millis(500), clean_exit(&mut failing))
                .await
                .is_err(),
            "a failing agent waits for the tick"
        );
        let mut none: Vec<AgentProcess> = Vec::new();
        assert!(
            tokio::time::timeout(Duration::from_millis(100), clean_exit(&mut none))
                .await
                .is_err()
        );
    }
}
