//! The commit-status reporter: turns job status changes into statuses on the forge, and into
//! the job metrics; a job's end also releases the jobs that wait for it ([`crate::waiting`]).
//!
//! It reads the queue's events stream in the consumer group [`GROUP`], so replicas share the
//! work and an event is acknowledged only once handled; after a crash the consumer's
//! unacknowledged events are delivered again. Events of different jobs are handled
//! concurrently, those of one job in order, and only the newest status of a job in a batch is
//! sent: the forge shows the latest status per context anyway. A report that fails is logged
//! and counted, never held against the job.
//!
//! An event is acknowledged once its report is sent, found sent already, or refused for good
//! (a 4xx other than 408 and 429, a redirect). While the forge is unreachable or answers 5xx,
//! 408 or 429 the job's events stay unacknowledged and the report is retried, the pause
//! doubling from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`], for up to [`GIVE_UP_AFTER`]: a forge
//! restarting must not cost a final status, which nothing would ever send again. Events of a
//! replica that stops meanwhile are taken over like any others it left.
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
//! Replicas are renamed on every rollout (the consumer name is the pod's host name, plus when
//! the reader joined: see [`Reporter::consume`]), so on start and every [`SWEEP_EVERY`] the
//! reporter takes over events other consumers read and left unacknowledged for
//! [`STALE_AFTER`], and removes consumers idle for [`FORGET_AFTER`] with nothing pending.

mod describe;

pub(crate) use describe::matrix_status;
mod send;

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use raibid_forge::{StatusRequest, auth_header, status_request};
use raibid_model::{Forge, Job, JobStatus};
use raibid_queue::{JobEvent, JobEvents};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use self::send::SendError;

use crate::metrics::ReportOutcome;
use crate::{AppState, ServerError};

/// The consumer group of every server replica's reporter.
pub(crate) const GROUP: &str = "raibid-status";
/// No more than are reported at once: idle time counts from the read, and a batch several
/// times [`CONCURRENCY`] could outlast [`STALE_AFTER`] and be taken over from this live
/// replica by another one (tested below).
const BATCH: usize = CONCURRENCY;
const BLOCK: Duration = Duration::from_secs(1);
/// Jobs whose statuses are sent at the same time.
const CONCURRENCY: usize = 16;
const RETRY_PAUSE: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause after a report's first failure that a retry may fix; it doubles up to
/// [`MAX_BACKOFF`], so a forge that is down for good gets one attempt per job a minute.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a job's events stay unacknowledged while its report keeps failing. Pending events
/// keep the events stream from being trimmed (up to its hard cap), so a forge gone for good
/// cannot hold them for ever; a forge back within the hour gets every final status.
const GIVE_UP_AFTER: Duration = Duration::from_secs(3600);
/// Longer than a batch takes to report (one round of at most two requests of at most
/// [`REQUEST_TIMEOUT`] each, for a variant and its matrix job), so events being reported are
/// not taken over from a live replica. Events waiting for a retry are kept fresh
/// ([`Touched`]).
const STALE_AFTER: Duration = Duration::from_secs(60);
/// How often the events waiting for a retry are touched. Touches come between reads and
/// reports, so two are at most this plus one report round (two requests of
/// [`REQUEST_TIMEOUT`]) or one read apart: well under [`STALE_AFTER`].
const TOUCH_EVERY: Duration = Duration::from_secs(15);
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

/// A job whose events are read and not acknowledged yet.
struct Work {
    job_id: String,
    events: Vec<JobEvent>,
    /// How many of `events` were counted in the metrics already (they are counted once, not
    /// on every retry).
    counted: usize,
    /// Set once a report failed in a way a retry may fix.
    retry: Option<Retry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Retry {
    /// When the first report failed; past [`GIVE_UP_AFTER`] the events are dropped.
    since: Instant,
    /// The pause before the next attempt.
    backoff: Duration,
    due: Instant,
}

impl Retry {
    /// The retry after an attempt that failed at `now`, `previous` being the one that led to
    /// it; `None` once reports have failed for [`GIVE_UP_AFTER`].
    fn after(previous: Option<Retry>, now: Instant) -> Option<Retry> {
        let (since, backoff) = match previous {
            None => (now, FIRST_BACKOFF),
            Some(retry) if now.duration_since(retry.since) >= GIVE_UP_AFTER => return None,
            Some(retry) => (retry.since, (retry.backoff * 2).min(MAX_BACKOFF)),
        };
        Some(Retry {
            since,
            backoff,
            due: now + backoff,
        })
    }
}

/// Whether a job's events are done with (acknowledged) or wait for another attempt at
/// reporting to this forge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Done,
    Retry(Forge),
}

impl Verdict {
    fn and(self, other: Verdict) -> Verdict {
        match self {
            Verdict::Retry(_) => self,
            Verdict::Done => other,
        }
    }
}

impl Reporter {
    /// Reads events until the task is cancelled, rejoining the group after any error (which
    /// also recreates the group if Redis lost it), and retries the jobs whose reports failed
    /// for a reason that may pass.
    ///
    /// Every join reads as a consumer name of its own (`<consumer>.<unix ms>`): a reader starts
    /// with its name's unacknowledged events, and under a name that still had events waiting
    /// for a retry it would be handed those same events again and again, never reaching new
    /// ones. Events left under an earlier name are retried from `waiting`, or after a restart
    /// taken over like those of a stopped replica.
    async fn consume(&self, consumer: &str) {
        let mut failing = false;
        let mut waiting: HashMap<String, Work> = HashMap::new();
        loop {
            let name = format!("{consumer}.{}", chrono::Utc::now().timestamp_millis());
            let mut events = match self.state.queue().job_events(GROUP, &name).await {
                Ok(events) => events,
                Err(e) => {
                    log_failure(&mut failing, &e);
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            let mut next_sweep = Instant::now();
            let mut touched = Touched::default();
            loop {
                touched.refresh(&events, &waiting).await;
                if Instant::now() >= next_sweep {
                    self.take_over(&events, &mut waiting, &mut touched).await;
                    next_sweep = Instant::now() + SWEEP_EVERY;
                }
                // At most one round of retries between two reads: against a forge that times
                // out, a round takes longer than the pauses, and new events (of other forges
                // too) would never be read.
                let now = Instant::now();
                let mut due: Vec<(Instant, String)> = waiting
                    .iter()
                    .filter_map(|(id, work)| {
                        let due = work.retry.as_ref()?.due;
                        (due <= now).then(|| (due, id.clone()))
                    })
                    .collect();
                if !due.is_empty() {
                    due.sort();
                    let work = due
                        .iter()
                        .take(CONCURRENCY)
                        .filter_map(|(_, id)| waiting.remove(id))
                        .collect();
                    touched.refresh(&events, &waiting).await;
                    self.handle(&events, work, &mut waiting).await;
                }
                let now = Instant::now();
                let block = waiting
                    .values()
                    .filter_map(|work| work.retry.as_ref().map(|r| r.due))
                    .min()
                    .map_or(BLOCK, |due| {
                        due.saturating_duration_since(now)
                            .clamp(Duration::from_millis(1), BLOCK)
                    });
                match events.next(BATCH, block).await {
                    Ok(batch) => {
                        if failing {
                            info!("commit-status reporter reading events again");
                            failing = false;
                        }
                        let work = merge(batch, &mut waiting);
                        touched.refresh(&events, &waiting).await;
                        self.handle(&events, work, &mut waiting).await;
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
    async fn take_over(
        &self,
        events: &JobEvents,
        waiting: &mut HashMap<String, Work>,
        touched: &mut Touched,
    ) {
        loop {
            match events.claim_stale(STALE_AFTER, BATCH).await {
                Ok(batch) if batch.is_empty() => break,
                Ok(batch) => {
                    // Our own events waiting for a retry are idle too; they stay where they are.
                    let batch: Vec<JobEvent> = batch
                        .into_iter()
                        .filter(|event| {
                            !waiting
                                .values()
                                .any(|work| work.events.iter().any(|e| e.id == event.id))
                        })
                        .collect();
                    if batch.is_empty() {
                        continue;
                    }
                    info!(
                        events = batch.len(),
                        "taking over status events a stopped replica left"
                    );
                    let work = merge(batch, waiting);
                    touched.refresh(events, waiting).await;
                    self.handle(events, work, waiting).await;
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

    /// Reports `work` concurrently, acknowledges what is done and puts back in `waiting` what
    /// is to be retried.
    async fn handle(
        &self,
        events: &JobEvents,
        work: Vec<Work>,
        waiting: &mut HashMap<String, Work>,
    ) {
        let handled: Vec<(Work, Verdict)> = futures::stream::iter(work)
            .map(|work| async move {
                let verdict = self.handle_job(&work).await;
                (work, verdict)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (mut work, verdict) in handled {
            work.counted = work.events.len();
            let previous = work.retry.take();
            let retry = match verdict {
                Verdict::Done => None,
                Verdict::Retry(forge) => {
                    let retry = Retry::after(previous, Instant::now());
                    if previous.is_none() {
                        // Once per job; the attempts themselves are logged at debug level.
                        warn!(job = %work.job_id, %forge, "the forge did not take a commit status; retrying for up to an hour");
                    } else if retry.is_none() {
                        warn!(job = %work.job_id, %forge, "gave up on a commit status the forge has not taken for an hour");
                        self.state
                            .metrics()
                            .status_report(forge, ReportOutcome::Failure);
                    }
                    retry
                }
            };
            match retry {
                Some(retry) => {
                    debug!(job = %work.job_id, retry_in = ?retry.backoff, "commit status will be retried");
                    work.retry = Some(retry);
                    waiting.insert(work.job_id.clone(), work);
                }
                None => {
                    for event in &work.events {
                        if let Err(e) = events.ack(&event.id).await {
                            warn!(job = %work.job_id, error = %e, "could not acknowledge a status event");
                        }
                    }
                }
            }
        }
    }

    async fn handle_job(&self, work: &Work) -> Verdict {
        let Some(job) = self.load(&work.job_id).await else {
            return Verdict::Done;
        };
        let metrics = self.state.metrics();
        for event in &work.events[work.counted..] {
            metrics.transition(&job.spec.pool, event.status);
            if event.status.is_final()
                && let (Some(start), Some(end)) = (job.started_at, job.finished_at)
            {
                let seconds = (end - start).num_milliseconds().max(0) as f64 / 1000.0;
                metrics.job_finished(&job.spec.pool, event.status, seconds);
            }
        }
        // Before any report, which may wait for the forge for a long time.
        if work.events.iter().any(|event| event.status.is_final()) {
            crate::waiting::job_ended(&self.state, &job).await;
            self.index_build(&job).await;
        }
        let Some(forge) = job.spec.forge else {
            return Verdict::Done;
        };
        let mut verdict = self.report(forge, &work.job_id).await;
        if let Some(parent) = &job.spec.matrix_parent
            && work.events.iter().any(|event| event.status.is_final())
        {
            verdict = verdict.and(self.report(forge, parent).await);
        }
        verdict
    }

    /// Puts the build `job` belongs to (its matrix job's, or its own if it queued others) in
    /// the index of builds, which an agent older than the index does not (see
    /// [`raibid_queue::Queue::index_build`]); the status filter lists failed builds from it.
    async fn index_build(&self, job: &Job) {
        let own = (!job.children.is_empty()).then_some(job.id.as_str());
        for build in [job.spec.matrix_parent.as_deref(), own]
            .into_iter()
            .flatten()
        {
            if let Err(e) = self.state.queue().index_build(build).await {
                warn!(job = %job.id, %build, error = %e, "could not index the job's build");
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
    async fn report(&self, forge: Forge, job_id: &str) -> Verdict {
        let config = self.state.config();
        let metrics = self.state.metrics();
        let (api_base, token) = match forge {
            Forge::Gitea | Forge::Forgejo => (&config.gitea.url, &config.gitea.token),
            Forge::Github => (&config.server.github_api_url, &config.server.github_token),
        };
        if api_base.is_empty() || token.is_empty() {
            debug!(job = %job_id, %forge, "no API URL or token for this forge; commit status not sent");
            metrics.status_report(forge, ReportOutcome::Skipped);
            return Verdict::Done;
        }
        let auth = match auth_header(forge, token.expose()) {
            Ok(auth) => auth,
            Err(e) => {
                warn!(job = %job_id, %forge, error = %e, "cannot build the commit status request");
                metrics.status_report(forge, ReportOutcome::Failure);
                return Verdict::Done;
            }
        };
        let sent = match self.prepare(forge, api_base, job_id).await {
            Ok(Some((request, fingerprint))) => send::send(&self.client, &auth, &request)
                .await
                .map(|()| Some(fingerprint)),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match sent {
            Ok(Some(fingerprint)) => {
                debug!(job = %job_id, %forge, status = %fingerprint, "commit status sent");
                metrics.status_report(forge, ReportOutcome::Success);
                if let Err(e) = self
                    .state
                    .queue()
                    .set_last_report(job_id, &fingerprint)
                    .await
                {
                    debug!(job = %job_id, error = %e, "cannot remember the status sent");
                }
                Verdict::Done
            }
            Ok(None) => {
                debug!(job = %job_id, %forge, "commit status already sent");
                metrics.status_report(forge, ReportOutcome::Skipped);
                Verdict::Done
            }
            Err(e) if e.is_transient() => {
                debug!(job = %job_id, %forge, error = %e, "commit status not accepted yet");
                metrics.status_report(forge, ReportOutcome::Retry);
                Verdict::Retry(forge)
            }
            Err(e) => {
                warn!(job = %job_id, %forge, error = %e, "gave up on a commit status");
                metrics.status_report(forge, ReportOutcome::Failure);
                Verdict::Done
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
        if job.status == JobStatus::Queued {
            let mut status = describe::commit_status(job, public_url);
            // Why it waits, when its pool is paused: a pause or resume announces the pool's
            // queued jobs again, so this is said and unsaid as it changes.
            match self.state.queue().paused_pools().await {
                Ok(paused) => {
                    if let Some(pause) = paused.get(&job.spec.pool) {
                        describe::held(&mut status, job, pause);
                    }
                }
                Err(e) => debug!(job = %job.id, error = %e, "cannot read the paused pools"),
            }
            return status;
        }
        if job.children.is_empty() || !job.status.is_final() {
            return describe::commit_status(job, public_url);
        }
        let children = futures::future::join_all(job.children.iter().map(|id| self.load(id))).await;
        describe::matrix_status(job, &children, public_url)
    }
}

/// When the events waiting for a retry were last touched.
struct Touched(Instant);

impl Default for Touched {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Touched {
    /// Touches the events held in `waiting` if [`TOUCH_EVERY`] has passed, so that other
    /// replicas do not take them over as a stopped replica's and report them too.
    async fn refresh(&mut self, events: &JobEvents, waiting: &HashMap<String, Work>) {
        if self.0.elapsed() < TOUCH_EVERY {
            return;
        }
        let held: Vec<&str> = waiting
            .values()
            .flat_map(|work| work.events.iter().map(|e| e.id.as_str()))
            .collect();
        match events.touch(&held).await {
            Ok(()) => self.0 = Instant::now(),
            Err(e) => debug!(error = %e, "cannot refresh the status events waiting for a retry"),
        }
    }
}

/// Groups `batch` by job in reading order. Events of a job that is waiting for a retry join
/// it and wait too: its retry sends the job's status as it is then, which covers them.
fn merge(batch: Vec<JobEvent>, waiting: &mut HashMap<String, Work>) -> Vec<Work> {
    let mut work: Vec<Work> = Vec::new();
    for event in batch {
        if let Some(held) = waiting.get_mut(&event.job_id) {
            if !held.events.iter().any(|e| e.id == event.id) {
                held.events.push(event);
            }
            continue;
        }
        match work.iter_mut().find(|w| w.job_id == event.job_id) {
            Some(w) => w.events.push(event),
            None => work.push(Work {
                job_id: event.job_id.clone(),
                events: vec![event],
                counted: 0,
                retry: None,
            }),
        }
    }
    work
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The pause doubles up to a minute, so a forge down for good is not retried hot; after an
    /// hour of failures the events go, so they cannot pin the events stream for ever.
    #[test]
    fn retries_slow_down_to_a_minute_and_stop_after_an_hour() {
        let start = Instant::now();
        let mut retry = Retry::after(None, start).unwrap();
        let mut pauses = vec![retry.backoff];
        let mut given_up = false;
        // Bounded, so that a schedule without an end fails instead of hanging.
        for _ in 0..1000 {
            match Retry::after(Some(retry), retry.due) {
                Some(next) => {
                    assert_eq!(next.since, start);
                    retry = next;
                    pauses.push(retry.backoff);
                }
                None => {
                    given_up = true;
                    break;
                }
            }
        }
        assert!(given_up, "still retrying after {} attempts", pauses.len());
        assert_eq!(
            pauses[..3],
            [FIRST_BACKOFF, FIRST_BACKOFF * 2, FIRST_BACKOFF * 4]
        );
        assert_eq!(pauses.iter().max(), Some(&MAX_BACKOFF));
        let given_up_at = retry.due.duration_since(start);
        assert!(given_up_at >= GIVE_UP_AFTER, "{given_up_at:?}");
        assert!(
            given_up_at <= GIVE_UP_AFTER + MAX_BACKOFF,
            "{given_up_at:?}"
        );
        // About one attempt a minute for the hour, not one every few milliseconds.
        assert!(pauses.len() < 80, "{} attempts", pauses.len());
    }

    /// Events a live replica is reporting must not look stale to the others: every job of a
    /// batch is reported concurrently, each with at most two requests, with room to spare
    /// for the Redis commands around them.
    #[test]
    fn a_batch_is_reported_well_before_its_events_count_as_stale() {
        let rounds = BATCH.div_ceil(CONCURRENCY) as u32;
        let worst = rounds * 2 * REQUEST_TIMEOUT;
        assert!(
            worst * 2 <= STALE_AFTER,
            "{worst:?} against {STALE_AFTER:?}"
        );
    }
}
