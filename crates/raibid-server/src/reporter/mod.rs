//! The commit-status reporter: turns job status changes into statuses on the forge, and into
//! the job metrics.
//!
//! It reads the queue's events stream in the consumer group [`GROUP`], so replicas share the
//! work and an event is acknowledged only once handled; after a crash the consumer's
//! unacknowledged events are delivered again. Events of different jobs are handled
//! concurrently, those of one job in order, and only the newest status of a job in a batch is
//! sent: the forge shows the latest status per context anyway. A report that fails is logged
//! and counted, never held against the job.
//!
//! Replicas handle events of one job concurrently and retry with backoff, so an old event
//! could land on the forge after a newer one. An event therefore only triggers a report: the
//! job is read again before every attempt and its *current* status is sent, unless that exact
//! status was sent already (remembered in Redis, shared by replicas).
//!
//! A matrix job expands into one job per variant and then succeeds at once: each variant
//! reports on its own context, and the matrix job's context shows the variants combined
//! ([`describe::matrix_status`]), recomputed when the matrix job ends and whenever one of its
//! variants ends.
//!
//! Replicas are renamed on every rollout (the consumer name is the pod's host name), so on
//! start and every [`SWEEP_EVERY`] the reporter takes over events other consumers read and
//! left unacknowledged for [`STALE_AFTER`], and removes consumers idle for [`FORGET_AFTER`]
//! with nothing pending.

mod describe;
mod send;

use std::time::Duration;

use futures::StreamExt;
use raibid_forge::{StatusRequest, auth_header, status_request};
use raibid_model::{Forge, Job};
use raibid_queue::{JobEvent, JobEvents};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use self::send::SendError;

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
/// Longer than any report takes with all its retries (4 attempts of at most
/// [`REQUEST_TIMEOUT`] plus backoff), so only events of a consumer that stopped qualify.
const STALE_AFTER: Duration = Duration::from_secs(60);
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// A live reporter reads every [`BLOCK`]; an hour of silence is a replica that is gone.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// The HTTP client of the reporter.
///
/// It follows no redirects: on a 301 or 302 reqwest would repeat the POST as a GET without
/// the body (and without the token, on another host), and the 200 of whatever page that lands
/// on would count as a status the forge accepted. A redirect is reported as a failure naming
/// where it points, which is usually a `gitea.url` to correct (`http` for `https`, an old host).
pub(crate) fn client() -> Result<reqwest::Client, ServerError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
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
            let mut next_sweep = Instant::now();
            loop {
                if Instant::now() >= next_sweep {
                    self.take_over(&events).await;
                    next_sweep = Instant::now() + SWEEP_EVERY;
                }
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

    /// Handles the events stopped replicas left unacknowledged, then forgets those replicas.
    async fn take_over(&self, events: &JobEvents) {
        loop {
            match events.claim_stale(STALE_AFTER, BATCH).await {
                Ok(batch) if batch.is_empty() => break,
                Ok(batch) => {
                    info!(
                        events = batch.len(),
                        "taking over status events a stopped replica left"
                    );
                    self.handle(events, batch).await;
                }
                Err(e) => {
                    debug!(error = %e, "cannot claim stale status events");
                    return;
                }
            }
        }
        match events.forget_idle_consumers(FORGET_AFTER).await {
            Ok(gone) if !gone.is_empty() => {
                info!(consumers = ?gone, "removed status consumers of stopped replicas");
            }
            Ok(_) => {}
            Err(e) => debug!(error = %e, "cannot list the status consumers"),
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
            if let Some(forge) = job.spec.forge {
                self.report(forge, &job_id).await;
                if let Some(parent) = &job.spec.matrix_parent
                    && list.iter().any(|event| event.status.is_final())
                {
                    self.report(forge, parent).await;
                }
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

    /// Sends job `job_id`'s current commit status, unless it was sent already.
    async fn report(&self, forge: Forge, job_id: &str) {
        let config = self.state.config();
        let metrics = self.state.metrics();
        let (api_base, token) = match forge {
            Forge::Gitea | Forge::Forgejo => (&config.gitea.url, &config.gitea.token),
            Forge::Github => (&config.server.github_api_url, &config.server.github_token),
        };
        if api_base.is_empty() || token.is_empty() {
            debug!(job = %job_id, %forge, "no API URL or token for this forge; commit status not sent");
            metrics.status_report(forge, ReportOutcome::Skipped);
            return;
        }
        let auth = match auth_header(forge, token.expose()) {
            Ok(auth) => auth,
            Err(e) => {
                warn!(job = %job_id, %forge, error = %e, "cannot build the commit status request");
                metrics.status_report(forge, ReportOutcome::Failure);
                return;
            }
        };
        let prepare = || self.prepare(forge, api_base, job_id);
        match send::send(&self.client, &auth, prepare).await {
            Ok(Some(sent)) => {
                debug!(job = %job_id, %forge, status = %sent.what, attempts = sent.attempts, "commit status sent");
                metrics.status_report(forge, ReportOutcome::Success);
                if let Err(e) = self.state.queue().set_last_report(job_id, &sent.what).await {
                    debug!(job = %job_id, error = %e, "cannot remember the status sent");
                }
            }
            Ok(None) => {
                debug!(job = %job_id, %forge, "commit status already sent");
                metrics.status_report(forge, ReportOutcome::Skipped);
            }
            Err(e) => {
                warn!(job = %job_id, %forge, error = %e, "gave up on a commit status");
                metrics.status_report(forge, ReportOutcome::Failure);
            }
        }
    }

    /// The request for the job's status as it is now (it may have moved past the event that
    /// asked for a report), with its fingerprint; `None` if the job is gone or exactly this
    /// status was the last one sent.
    async fn prepare(
        &self,
        forge: Forge,
        api_base: &str,
        job_id: &str,
    ) -> Result<Option<(StatusRequest, String)>, SendError> {
        let Some(job) = self.load(job_id).await else {
            return Ok(None);
        };
        let status = self.commit_status(&job).await;
        let fingerprint = describe::fingerprint(&status);
        match self.state.queue().last_report(job_id).await {
            Ok(Some(last)) if last == fingerprint => return Ok(None),
            Ok(_) => {}
            Err(e) => debug!(job = %job_id, error = %e, "cannot read the last status sent"),
        }
        let request = status_request(forge, api_base, &job.spec.repo, &job.spec.sha, &status)?;
        Ok(Some((request, fingerprint)))
    }

    /// The job's own status, or for a finished matrix job its variants' combined.
    async fn commit_status(&self, job: &Job) -> raibid_forge::CommitStatus {
        let public_url = &self.state.config().server.public_url;
        if job.children.is_empty() || !job.status.is_final() {
            return describe::commit_status(job, public_url);
        }
        let children = futures::future::join_all(job.children.iter().map(|id| self.load(id))).await;
        describe::matrix_status(job, &children, public_url)
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
