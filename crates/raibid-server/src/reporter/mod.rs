//! The commit-status reporter: turns job status changes into statuses on the forge, and into
//! the job metrics.
//!
//! It reads the queue's events stream in the consumer group [`GROUP`], so replicas share the
//! work and an event is acknowledged only once handled; after a crash the consumer's
//! unacknowledged events are delivered again. Events of different jobs are handled
//! concurrently, those of one job in order, and only the newest status of a job in a batch is
//! sent: the forge shows the latest status per context anyway. A report that fails is logged
//! and counted, never held against the job.

mod describe;
mod send;

use std::time::Duration;

use futures::StreamExt;
use raibid_forge::{auth_header, status_request};
use raibid_model::{Forge, Job};
use raibid_queue::{JobEvent, JobEvents};
use tracing::{debug, info, warn};

use crate::metrics::ReportOutcome;
use crate::{AppState, ServerError};

/// The consumer group of every server replica's reporter.
pub(crate) const GROUP: &str = "raibid-status";
const BATCH: usize = 64;
const BLOCK: Duration = Duration::from_secs(1);
/// Jobs whose statuses are sent at the same time.
const CONCURRENCY: usize = 16;
const RETRY_PAUSE: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn client() -> Result<reqwest::Client, ServerError> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("raibid-ci/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(ServerError::HttpClient)
}

pub(crate) async fn run(state: AppState, consumer: String, client: reqwest::Client) {
    let reporter = Reporter { state, client };
    let shutdown = reporter.state.shutdown().clone();
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = reporter.consume(&consumer) => {}
    }
}

struct Reporter {
    state: AppState,
    client: reqwest::Client,
}

impl Reporter {
    /// Reads events until the task is cancelled, rejoining the group after any error (which
    /// also recreates the group if Redis lost it).
    async fn consume(&self, consumer: &str) {
        let mut failing = false;
        loop {
            let mut events = match self.state.queue().job_events(GROUP, consumer).await {
                Ok(events) => events,
                Err(e) => {
                    log_failure(&mut failing, &e);
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            loop {
                match events.next(BATCH, BLOCK).await {
                    Ok(batch) => {
                        if failing {
                            info!("commit-status reporter reading events again");
                            failing = false;
                        }
                        self.handle(&events, batch).await;
                    }
                    Err(e) => {
                        log_failure(&mut failing, &e);
                        tokio::time::sleep(RETRY_PAUSE).await;
                        break;
                    }
                }
            }
        }
    }

    async fn handle(&self, events: &JobEvents, batch: Vec<JobEvent>) {
        let mut by_job: Vec<(String, Vec<JobEvent>)> = Vec::new();
        for event in batch {
            match by_job.iter_mut().find(|(id, _)| *id == event.job_id) {
                Some((_, list)) => list.push(event),
                None => by_job.push((event.job_id.clone(), vec![event])),
            }
        }
        futures::stream::iter(by_job)
            .for_each_concurrent(CONCURRENCY, |(job_id, list)| {
                self.handle_job(events, job_id, list)
            })
            .await;
    }

    async fn handle_job(&self, events: &JobEvents, job_id: String, list: Vec<JobEvent>) {
        if let Some(job) = self.load(&job_id).await {
            let metrics = self.state.metrics();
            for event in &list {
                metrics.transition(&job.spec.pool, event.status);
                if event.status.is_final()
                    && let (Some(start), Some(end)) = (job.started_at, job.finished_at)
                {
                    let seconds = (end - start).num_milliseconds().max(0) as f64 / 1000.0;
                    metrics.job_finished(&job.spec.pool, event.status, seconds);
                }
            }
            if let (Some(forge), Some(last)) = (job.spec.forge, list.last()) {
                self.report(forge, &job, last).await;
            }
        }
        for event in &list {
            if let Err(e) = events.ack(&event.id).await {
                warn!(job = %job_id, error = %e, "could not acknowledge a status event");
            }
        }
    }

    /// The job an event is about; `None` when it no longer exists (pruned) or its record is
    /// unreadable. Waits out Redis outages rather than dropping the event.
    async fn load(&self, job_id: &str) -> Option<Job> {
        loop {
            match self.state.queue().get(job_id).await {
                Ok(job) => return job,
                Err(e) if e.is_transient() => {
                    debug!(job = %job_id, error = %e, "waiting for Redis to load the job");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => {
                    warn!(job = %job_id, error = %e, "cannot read the job of a status event");
                    return None;
                }
            }
        }
    }

    async fn report(&self, forge: Forge, job: &Job, event: &JobEvent) {
        let config = self.state.config();
        let metrics = self.state.metrics();
        let (api_base, token) = match forge {
            Forge::Gitea | Forge::Forgejo => (&config.gitea.url, &config.gitea.token),
            Forge::Github => (&config.server.github_api_url, &config.server.github_token),
        };
        if api_base.is_empty() || token.is_empty() {
            debug!(job = %job.id, %forge, "no API URL or token for this forge; commit status not sent");
            metrics.status_report(forge, ReportOutcome::Skipped);
            return;
        }
        let status = describe::commit_status(job, event.status, &config.server.public_url);
        let prepared = status_request(forge, api_base, &job.spec.repo, &job.spec.sha, &status)
            .and_then(|request| Ok((request, auth_header(forge, token.expose())?)));
        let (request, auth) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                warn!(job = %job.id, %forge, error = %e, "cannot build the commit status request");
                metrics.status_report(forge, ReportOutcome::Failure);
                return;
            }
        };
        match send::send(&self.client, &request, &auth).await {
            Ok(attempts) => {
                debug!(job = %job.id, %forge, state = status.state.as_str(), attempts, "commit status sent");
                metrics.status_report(forge, ReportOutcome::Success);
            }
            Err(e) => {
                warn!(job = %job.id, %forge, state = status.state.as_str(), error = %e, "gave up on a commit status");
                metrics.status_report(forge, ReportOutcome::Failure);
            }
        }
    }
}

/// Warns once when the events stream becomes unreadable, then stays quiet until it recovers.
fn log_failure(failing: &mut bool, error: &raibid_queue::QueueError) {
    if *failing {
        debug!(%error, "commit-status reporter still cannot read events");
    } else {
        warn!(%error, "commit-status reporter cannot read events; retrying");
        *failing = true;
    }
}
