//! raibid-ci's terminal dashboard, `raibid tui`.
//!
//! It shows jobs, one job's steps and live log, queues and agents, reading everything through
//! the server's HTTP API (`raibid-client`), so it works the same against a local `raibid up`
//! and a remote server.
//!
//! The shape follows gitui and bottom: [`App`] holds the state and draws from it alone; each
//! screen is a component with `draw` and `handle_event`; one event loop takes terminal input,
//! clock ticks and background data from a single channel. Background tasks poll the server and
//! stream the open job's log, so a frame never waits on the network: a slow or lost server
//! shows as a banner, not a frozen screen.

mod ansi;
mod app;
mod cluster_poller;
mod components;
mod data;
mod event;
mod fmt;
mod log_buffer;
mod poller;
#[cfg(test)]
mod render_tests;
mod terminal;
#[cfg(test)]
mod test_support;

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use crossterm::event::EventStream;
use futures::StreamExt;
use raibid_client::Client;
use raibid_infra::cluster::KedaPause;
use raibid_model::PoolName;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};

pub use app::App;
pub use components::Kubeconfig;
pub use data::{ClusterUpdate, DataEvent, JobsUpdate};

use cluster_poller::{CLUSTER_REFRESH, ClusterPoller};
use components::Command;
use event::Message;
use poller::{Poller, follow_log};
use terminal::TerminalGuard;

/// How often clocks on screen (ages, countdowns) move when nothing else happens.
const TICK: Duration = Duration::from_secs(1);
/// Polling faster than this would load the server for no visible gain.
const MIN_REFRESH: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TuiOptions {
    /// How often jobs, queues and agents are polled.
    pub refresh: Duration,
    /// The cluster's kubeconfig; `None` looks at `$KUBECONFIG`, then `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// The namespace raibid's agents and ScaledJobs live in (`cluster.namespace`).
    pub namespace: String,
}

impl Default for TuiOptions {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(1),
            kubeconfig: None,
            namespace: raibid_infra::DEFAULT_NAMESPACE.to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error("the dashboard needs an interactive terminal: stdin and stdout must be a TTY")]
    NotATerminal,
    #[error("terminal error: {0}")]
    Terminal(#[from] io::Error),
    /// A poller or log stream panicked; the panic hook has printed why.
    #[error("a background task of the dashboard panicked: {0}")]
    BackgroundTask(String),
}

/// Runs the dashboard until the user quits. The terminal is restored on return, on error and
/// on panic.
pub async fn run(client: Client, options: TuiOptions) -> Result<(), TuiError> {
    if !io::stdin().is_terminal() || !io::stdout().is_terminal() {
        return Err(TuiError::NotATerminal);
    }
    let kubeconfig = Kubeconfig::locate(options.kubeconfig);
    let mut app = App::new(client.base_url(), kubeconfig.clone(), &options.namespace);
    let mut guard = TerminalGuard::enter()?;
    let (events, mut inbox) = mpsc::unbounded_channel();
    let (open_job, open_job_rx) = watch::channel(None);
    let wake = Arc::new(Notify::new());
    let (cluster_visible, cluster_visible_rx) = watch::channel(false);
    let mut runtime = Runtime {
        client: client.clone(),
        cluster: match &kubeconfig {
            Kubeconfig::Found(path) => Some((path.clone(), options.namespace.clone())),
            _ => None,
        },
        events: events.clone(),
        open_job,
        wake: Arc::clone(&wake),
        tasks: JoinSet::new(),
        log_task: None,
    };
    runtime.tasks.spawn(read_input(events.clone()));
    runtime.tasks.spawn(tick(events.clone()));
    if let Kubeconfig::Found(path) = kubeconfig {
        runtime.tasks.spawn(
            ClusterPoller {
                kubeconfig: path,
                namespace: options.namespace.clone(),
                events: events.clone(),
                visible: cluster_visible_rx,
                refresh: CLUSTER_REFRESH,
            }
            .run(),
        );
    }
    runtime.tasks.spawn(
        Poller {
            client,
            events,
            refresh: options.refresh.max(MIN_REFRESH),
            open_job: open_job_rx,
            wake,
        }
        .run(),
    );

    let result = 'frames: loop {
        guard.terminal.draw(|frame| app.draw(frame, Utc::now()))?;
        let Some(first) = inbox.recv().await else {
            break Ok(());
        };
        // Everything already waiting is applied before the next frame, so a burst of log
        // output costs one redraw, not one per chunk.
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Input(event) => {
                    if let Some(command) = app.handle_input(&event)
                        && !runtime.execute(command, &mut guard)?
                    {
                        break 'frames Ok(());
                    }
                }
                Message::Tick => {}
                Message::Data(data) => app.apply(data),
                Message::InputClosed(None) => break 'frames Ok(()),
                Message::InputClosed(Some(e)) => break 'frames Err(e.into()),
            }
            next = inbox.try_recv().ok();
        }
        cluster_visible.send_if_modified(|shown| {
            let now = app.showing_cluster();
            std::mem::replace(shown, now) != now
        });
        runtime.reap()?;
    };
    runtime.tasks.abort_all();
    drop(guard);
    result
}

/// What the event loop owns besides the state: the client and the background tasks.
struct Runtime {
    client: Client,
    /// The cluster's kubeconfig and namespace, when there is one: a pool paused here has its
    /// KEDA ScaledJobs paused too, as `raibid pool pause` does.
    cluster: Option<(PathBuf, String)>,
    events: mpsc::UnboundedSender<Message>,
    open_job: watch::Sender<Option<String>>,
    wake: Arc<Notify>,
    tasks: JoinSet<()>,
    log_task: Option<AbortHandle>,
}

impl Runtime {
    /// Carries out `command`; false means quit.
    fn execute(&mut self, command: Command, terminal: &mut TerminalGuard) -> io::Result<bool> {
        match command {
            Command::Quit => return Ok(false),
            Command::Copy(text) => terminal.write_raw(&terminal::osc52_copy(&text))?,
            Command::FollowJob(id) => {
                if let Some(previous) = self.log_task.take() {
                    previous.abort();
                }
                self.open_job.send_replace(Some(id.clone()));
                self.log_task = Some(self.tasks.spawn(follow_log(
                    self.client.clone(),
                    id,
                    self.events.clone(),
                )));
                self.wake.notify_one();
            }
            Command::Cancel(id) => {
                let client = self.client.clone();
                self.report(async move {
                    match client.cancel(&id).await {
                        Ok(reply) if !reply.variants.is_empty() => (
                            format!(
                                "cancel {id}: {} jobs it queued cancelled",
                                reply.variants.len()
                            ),
                            false,
                        ),
                        Ok(reply) => (
                            format!("cancel {id}: {} (now {})", reply.result, reply.status),
                            false,
                        ),
                        Err(e) => (format!("cancel {id} failed: {e}"), true),
                    }
                });
            }
            Command::Approve(id) => {
                let client = self.client.clone();
                self.report(async move {
                    match client.approve(&id).await {
                        Ok(job) => (format!("approved {id}: {}", job.status), false),
                        Err(e) => (format!("approve {id} failed: {e}"), true),
                    }
                });
            }
            Command::PausePool(pool) => self.hold(pool, true),
            Command::ResumePool(pool) => self.hold(pool, false),
            Command::Retry(id) => {
                let client = self.client.clone();
                self.report(async move {
                    match client.retry(&id).await {
                        Ok(job) => (format!("retry of {id} queued as {}", job.id), false),
                        Err(e) => (format!("retry {id} failed: {e}"), true),
                    }
                });
            }
            Command::RetryFailed(id) => {
                let client = self.client.clone();
                self.report(async move {
                    match client.retry_failed(&id).await {
                        Ok(jobs) => {
                            let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
                            (
                                format!("retried the failed jobs of {id}: {}", ids.join(" ")),
                                false,
                            )
                        }
                        Err(e) => (format!("retry of {id}'s failed jobs failed: {e}"), true),
                    }
                });
            }
        }
        Ok(true)
    }

    /// Collects finished tasks (cancel, retry, ended log streams). A panicked one ends the
    /// dashboard: its panic hook has already given the terminal back.
    fn reap(&mut self) -> Result<(), TuiError> {
        while let Some(done) = self.tasks.try_join_next() {
            if let Err(e) = done
                && e.is_panic()
            {
                return Err(TuiError::BackgroundTask(e.to_string()));
            }
        }
        Ok(())
    }

    /// Runs a request in the background; its answer becomes a notice, and the next poll is
    /// made at once so the lists show its effect.
    fn hold(&mut self, pool: PoolName, paused: bool) {
        let client = self.client.clone();
        let cluster = self.cluster.clone();
        self.report(hold_pool(client, cluster, pool, paused));
    }

    fn report(&mut self, answer: impl Future<Output = (String, bool)> + Send + 'static) {
        let events = self.events.clone();
        let wake = Arc::clone(&self.wake);
        self.tasks.spawn(async move {
            let (text, error) = answer.await;
            let _ = events.send(Message::Data(DataEvent::Notice { text, error }));
            wake.notify_one();
        });
    }
}

/// Pauses or resumes `pool` through the API, then its ScaledJobs where there is a cluster;
/// what happened, for the notice line, and whether it is an error.
async fn hold_pool(
    client: Client,
    cluster: Option<(PathBuf, String)>,
    pool: PoolName,
    paused: bool,
) -> (String, bool) {
    let answer = if paused {
        client.pause_pool(pool.as_str(), "").await
    } else {
        client.resume_pool(pool.as_str()).await
    };
    let verb = if paused { "paused" } else { "resumed" };
    if let Err(e) = answer {
        return (format!("pool {pool} not {verb}: {e}"), true);
    }
    let Some((kubeconfig, namespace)) = cluster else {
        return (format!("pool {pool} {verb}"), false);
    };
    match raibid_infra::cluster::pause_pool_scaled_jobs(
        &kubeconfig,
        &namespace,
        pool.as_str(),
        paused,
    )
    .await
    {
        KedaPause::Done(line) => (format!("pool {pool} {verb}; {line}"), false),
        KedaPause::Failed(why) => (format!("pool {pool} {verb}, but {why}"), true),
    }
}

async fn read_input(events: mpsc::UnboundedSender<Message>) {
    let mut input = EventStream::new();
    loop {
        let message = match input.next().await {
            Some(Ok(event)) => Message::Input(event),
            Some(Err(e)) => Message::InputClosed(Some(e)),
            None => Message::InputClosed(None),
        };
        let last = matches!(message, Message::InputClosed(_));
        if events.send(message).is_err() || last {
            return;
        }
    }
}

async fn tick(events: mpsc::UnboundedSender<Message>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        if events.send(Message::Tick).is_err() {
            return;
        }
    }
}
