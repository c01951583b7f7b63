//! Listing, showing, cancelling and retrying jobs.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use std::collections::HashMap;

use raibid_model::{BuildStatus, Event, Job, JobStatus, ListedJob, PoolName};
use raibid_queue::{CancelResult, JobFilter, LIST_SCAN_MAX, QueueError};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::validate;
use crate::auth::{CanRead, CanRunJobs};
use crate::{ApiError, AppState};

pub(crate) const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1000;

/// Every parameter arrives as text so that a bad one is reported by name.
#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    status: Option<String>,
    repo: Option<String>,
    pool: Option<String>,
    branch: Option<String>,
    event: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct JobList {
    pub jobs: Vec<ListedJob>,
    pub next_cursor: Option<String>,
}

/// A listing's parameters, checked: the API's and the web pages' listings take the same.
pub(crate) struct Listing {
    pub filter: JobFilter,
    pub cursor: Option<String>,
    pub limit: usize,
}

impl ListParams {
    pub(crate) fn check(self) -> Result<Listing, ApiError> {
        let bad = |name, message: &str| ApiError::InvalidParameter {
            name,
            message: message.to_owned(),
        };
        let given = |value: Option<String>| value.filter(|v| !v.is_empty());

        let status = given(self.status)
            .map(|s| s.parse::<JobStatus>().map_err(|e| bad("status", &e)))
            .transpose()?;
        let repo = given(self.repo)
            .map(|r| validate::repo(&r).map(|()| r).map_err(|m| bad("repo", m)))
            .transpose()?;
        let pool = given(self.pool)
            .map(|p| PoolName::new(p).map_err(|e| bad("pool", &e.to_string())))
            .transpose()?;
        let branch = given(self.branch)
            .map(|b| {
                validate::branch(&b)
                    .map(|()| b)
                    .map_err(|m| bad("branch", m))
            })
            .transpose()?;
        let event = given(self.event)
            .map(|e| e.parse::<Event>().map_err(|e| bad("event", &e)))
            .transpose()?;
        let cursor = given(self.cursor)
            .map(|c| {
                validate::job_id(&c)
                    .map(|()| c)
                    .map_err(|m| bad("cursor", m))
            })
            .transpose()?;
        let limit = given(self.limit)
            .map(|l| match l.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
                _ => Err(bad("limit", "must be a number from 1 to 1000")),
            })
            .transpose()?
            .unwrap_or(DEFAULT_PAGE);
        Ok(Listing {
            filter: JobFilter {
                status,
                repo,
                pool,
                branch,
                event,
            },
            cursor,
            limit,
        })
    }
}

/// One page of the jobs `listing` asks for, of the repositories `reader` may read.
pub(crate) async fn page(
    state: &AppState,
    reader: &CanRead,
    listing: Listing,
) -> Result<JobList, ApiError> {
    if let Some(repo) = &listing.filter.repo {
        reader.check(repo)?;
    }
    let keep = |job: &Job| reader.may_read(&job.spec.repo);
    let Some(status) = listing.filter.status else {
        let page = state
            .queue()
            .list_where(
                &listing.filter,
                listing.cursor.as_deref(),
                listing.limit,
                &keep,
            )
            .await?;
        return Ok(JobList {
            jobs: listed(state, page.jobs).await?,
            next_cursor: page.next_cursor,
        });
    };
    by_shown_status(state, &listing, status, &keep).await
}

/// The jobs whose status as the lists show it ([`ListedJob::status`]) is `status`, as the
/// dashboard's filter reads it: a failed build's first job, which passed itself (it queued the
/// others), is among the failures, not the successes. The queue indexes jobs by their own
/// status, so the first jobs of builds come from a second scan, of the index of builds (the
/// jobs that queued others), keeping the passed ones. The two scans, each newest first, are
/// merged: everything newer than the newer of their stops has been read by both, and the scan
/// that stopped there reads on, until the page is full, both have ended, or [`STATUS_ROUNDS`]
/// reads were made or they read [`LIST_SCAN_MAX`] records between them (a filtered scan, of a
/// repository's jobs for its builds, may read that many at once); the next page goes on from
/// the last stop. (Without reading on, a page of failures on a history where one job in ten
/// is a build covered only the jobs as old as the builds scan's first `limit` builds: a
/// handful of failures.) A page may still hold fewer jobs than asked for and have a cursor.
async fn by_shown_status(
    state: &AppState,
    listing: &Listing,
    status: JobStatus,
    keep: &(dyn Fn(&Job) -> bool + Sync),
) -> Result<JobList, ApiError> {
    let own = listing.filter.clone();
    // A build's combined status is one of these; a first job that passed shows no other.
    let builds = matches!(
        status,
        JobStatus::Running | JobStatus::Failure | JobStatus::Cancelled
    )
    .then(|| JobFilter {
        status: Some(JobStatus::Success),
        ..listing.filter.clone()
    });
    let mut scans = vec![Scan::new(own, false)];
    scans.extend(builds.map(|filter| Scan::new(filter, true)));
    let mut scanned = 0;
    for scan in &mut scans {
        scanned += scan
            .read(state, listing.cursor.as_deref(), listing.limit, keep)
            .await?;
    }
    let mut shown: Vec<ListedJob> = Vec::new();
    let mut rounds = 1;
    loop {
        // Every scan has read every job newer than the newest stop (ids sort by time).
        let stop = scans.iter().filter_map(|s| s.next.clone()).max();
        let mut jobs: Vec<Job> = scans
            .iter_mut()
            .flat_map(|scan| scan.take_down_to(stop.as_deref()))
            .collect();
        jobs.sort_by(|a, b| b.id.cmp(&a.id));
        // A first job that passed between the two scans is in both.
        jobs.dedup_by(|a, b| a.id == b.id);
        let jobs = with_shown_status(state, jobs, status).await?;
        shown.extend(
            listed(state, jobs)
                .await?
                .into_iter()
                .filter(|listed| listed.status() == status),
        );
        let Some(stop) = stop else {
            return Ok(full_page(shown, listing.limit, None));
        };
        if shown.len() >= listing.limit || rounds == STATUS_ROUNDS || scanned >= LIST_SCAN_MAX {
            return Ok(full_page(shown, listing.limit, Some(stop)));
        }
        // Each read on asks for twice as many as its last: the scan that lags is the sparse
        // one, and walking it `limit` at a time would take many round trips.
        for scan in scans.iter_mut().filter(|s| s.next.as_ref() == Some(&stop)) {
            let more = (scan.asked * 2).min(MAX_PAGE);
            scanned += scan.read(state, Some(&stop), more, keep).await?;
        }
        rounds += 1;
    }
}

/// Of `jobs`, those whose status as the lists show it is `status`, weighed by their builds'
/// jobs' statuses alone (read in one round trip). Most of the builds scan's jobs are builds
/// that passed, and reading their jobs' whole records only to drop them cost more than the
/// rest of the page; [`listed`] reads the records of the builds kept, to describe them.
async fn with_shown_status(
    state: &AppState,
    jobs: Vec<Job>,
    status: JobStatus,
) -> Result<Vec<Job>, QueueError> {
    // Those of the jobs themselves, then those read for the builds' other jobs.
    let mut statuses: HashMap<String, Option<JobStatus>> = jobs
        .iter()
        .map(|job| (job.id.clone(), Some(job.status)))
        .collect();
    let unknown: Vec<String> = jobs
        .iter()
        .filter(|job| job.stands_for_its_jobs())
        .flat_map(|job| &job.children)
        .filter(|id| !statuses.contains_key(*id))
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let read = state.queue().statuses(&unknown).await?;
    statuses.extend(unknown.into_iter().zip(read));
    let shown = |job: &Job| {
        if job.stands_for_its_jobs() {
            BuildStatus::combine_statuses(
                job.children
                    .iter()
                    .map(|id| statuses.get(id).copied().flatten()),
            )
        } else {
            job.status
        }
    };
    Ok(jobs
        .into_iter()
        .filter(|job| shown(job) == status)
        .collect())
}

/// Reads one page of the status filter may take (see [`by_shown_status`]): with the second
/// scan's reads doubling from the page's limit, 50 + 100 + 200 + 400 builds at most for a
/// page of 50.
const STATUS_ROUNDS: usize = 4;

/// One of the status filter's scans: the jobs read and not yet merged, newest first, and
/// where it stopped.
struct Scan {
    filter: JobFilter,
    builds: bool,
    jobs: std::collections::VecDeque<Job>,
    next: Option<String>,
    asked: usize,
}

impl Scan {
    fn new(filter: JobFilter, builds: bool) -> Self {
        Self {
            filter,
            builds,
            jobs: Default::default(),
            next: None,
            asked: 0,
        }
    }

    /// The next `limit` jobs after `cursor`; how many records that read.
    async fn read(
        &mut self,
        state: &AppState,
        cursor: Option<&str>,
        limit: usize,
        keep: &(dyn Fn(&Job) -> bool + Sync),
    ) -> Result<usize, QueueError> {
        let queue = state.queue();
        let page = if self.builds {
            queue
                .list_builds_where(&self.filter, cursor, limit, keep)
                .await?
        } else {
            queue.list_where(&self.filter, cursor, limit, keep).await?
        };
        self.jobs.extend(page.jobs);
        self.next = page.next_cursor;
        self.asked = limit;
        Ok(page.scanned)
    }

    /// The jobs read that are not older than `stop` (all of them without one).
    fn take_down_to(&mut self, stop: Option<&str>) -> Vec<Job> {
        let keep = self
            .jobs
            .iter()
            .take_while(|job| stop.is_none_or(|stop| job.id.as_str() >= stop))
            .count();
        self.jobs.drain(..keep).collect()
    }
}

/// `shown`, newest first, cut to `limit`, with the cursor of the next page: after the last
/// job kept if some were cut, else `stop`, where the scans stopped.
fn full_page(mut shown: Vec<ListedJob>, limit: usize, stop: Option<String>) -> JobList {
    let next_cursor = if shown.len() > limit {
        shown.truncate(limit);
        shown.last().map(|listed| listed.job.id.clone())
    } else {
        stop
    };
    JobList {
        jobs: shown,
        next_cursor,
    }
}

/// `jobs` with their builds' statuses, read from `jobs` themselves where a build's jobs are
/// among them (they usually are, being listed together), else from Redis.
async fn listed(state: &AppState, jobs: Vec<Job>) -> Result<Vec<ListedJob>, QueueError> {
    let read: HashMap<&str, &Job> = jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    let builds =
        futures::future::try_join_all(jobs.iter().map(|job| build_of(state, job, &read))).await?;
    Ok(jobs
        .into_iter()
        .zip(builds)
        .map(|(job, build)| ListedJob { job, build })
        .collect())
}

/// The status of the build `job` is the first job of, if it queued others; `read`: the page's
/// jobs (see `repos::build_status`).
async fn build_of(
    state: &AppState,
    job: &Job,
    read: &HashMap<&str, &Job>,
) -> Result<Option<BuildStatus>, QueueError> {
    if job.children.is_empty() {
        return Ok(None);
    }
    super::repos::build_status(state, job, read).await.map(Some)
}

pub(crate) async fn list(
    reader: CanRead,
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<JobList>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    page(&state, &reader, params.check()?).await.map(Json)
}

pub(crate) async fn show(
    reader: CanRead,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    readable(&state, &reader, &id).await.map(Json)
}

/// The job with the status its commit status gives: for the first job of a matrix or of
/// several workflows, its jobs' combined, which its own `success` (it queued them) does not
/// say. `raibid job show` reads this.
pub(crate) async fn build(
    reader: CanRead,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<super::repos::Build>, ApiError> {
    let job = readable(&state, &reader, &id).await?;
    Ok(Json(super::repos::build(&state, job).await?))
}

pub(crate) fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("job {id} not found"))
}

/// Job `id`, if the caller may read its repository. A job of another repository is "not
/// found", as Gitea and GitHub answer for a private repository: a token limited to some
/// repositories learns nothing of the others, not even that a job id exists.
pub(crate) async fn readable(
    state: &AppState,
    reader: &CanRead,
    id: &str,
) -> Result<Job, ApiError> {
    state
        .queue()
        .get(id)
        .await?
        .filter(|job| reader.may_read(&job.spec.repo))
        .ok_or_else(|| not_found(id))
}

/// Job `id`, if it exists and the caller's token may change its repository.
pub(crate) async fn changeable(
    state: &AppState,
    caller: &crate::auth::Caller,
    id: &str,
) -> Result<Job, ApiError> {
    let job = state.queue().get(id).await?.ok_or_else(|| not_found(id))?;
    caller.may_change(&job.spec.repo)?;
    Ok(job)
}

#[derive(Debug, Serialize)]
pub(crate) struct Cancelled {
    result: &'static str,
    status: JobStatus,
    /// A matrix job's variants that were cancelled with it (or asked to stop).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    variants: Vec<String>,
}

pub(crate) async fn cancel(
    CanRunJobs(caller): CanRunJobs,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Cancelled>, ApiError> {
    let queue = state.queue();
    let job = changeable(&state, &caller, &id).await?;
    // A job waiting for approval that is cancelled was turned down, as Woodpecker says; and
    // by whom, as Woodpecker and GitHub show, in its record and commit status.
    let why = format!(
        "{} by {}",
        if job.status == JobStatus::Blocked {
            "declined"
        } else {
            "cancelled"
        },
        caller.name()
    );
    let (result, status) = match queue.cancel_because(&id, &why).await? {
        CancelResult::Cancelled => ("cancelled", JobStatus::Cancelled),
        // Kept is superseding's answer only; a person's cancel is never refused.
        CancelResult::Requested | CancelResult::Kept => ("requested", JobStatus::Running),
        CancelResult::AlreadyFinished(status) => ("already_finished", status),
    };
    info!(job = %id, result, token = %caller.name(), "cancel");
    // A matrix job is done once it has queued its variants, which are the build: cancelling
    // it means cancelling them, as cancelling a pipeline does in Woodpecker and GitLab.
    let variants = queue.cancel_variants(&id, &job.children).await?;
    for variant in &variants {
        info!(job = %variant, matrix = %id, "cancel");
    }
    Ok(Json(Cancelled {
        result,
        status,
        variants,
    }))
}

pub(crate) async fn retry(
    CanRunJobs(caller): CanRunJobs,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    may_change_job(&state, &caller, &id).await?;
    let job = state.queue().retry(&id).await?;
    state.metrics().job_queued(&job.spec.pool);
    info!(
        job = %job.id, retry_of = %id, pool = %job.spec.pool, token = %caller.name(),
        "job retried"
    );
    Ok((StatusCode::CREATED, Json(job)))
}

/// Refuses a change to a job of a repository the caller's token is not for; a job that is
/// not there is left for the queue's own answer.
async fn may_change_job(
    state: &AppState,
    caller: &crate::auth::Caller,
    id: &str,
) -> Result<(), ApiError> {
    match state.queue().get(id).await? {
        Some(job) => caller.may_change(&job.spec.repo),
        None => Ok(()),
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Retried {
    retried: Vec<Job>,
}

/// GitHub's "Re-run failed jobs": the failed jobs that a matrix or workflow job queued.
pub(crate) async fn retry_failed(
    CanRunJobs(caller): CanRunJobs,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Retried>), ApiError> {
    may_change_job(&state, &caller, &id).await?;
    let retried = state.queue().retry_failed(&id).await?;
    for job in &retried {
        state.metrics().job_queued(&job.spec.pool);
        info!(
            job = %job.id, retry_of = ?job.spec.retry_of, parent = %id, token = %caller.name(),
            "job retried"
        );
    }
    Ok((StatusCode::CREATED, Json(Retried { retried })))
}

pub(crate) async fn approve(
    CanRunJobs(caller): CanRunJobs,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let job = changeable(&state, &caller, &id).await?;
    // A workflow's job waiting for others, or a job waiting for its concurrency group, is not
    // waiting for a person: approving it would start it without what it waits for.
    if job.status == JobStatus::Blocked {
        if let Some(group) = &job.concurrency {
            return Err(ApiError::Conflict(format!(
                "job {id} waits for its concurrency group {group}, not for approval; it is \
                 queued when the job that holds the group has ended"
            )));
        }
        if let Some(needs) = &job.spec.needs {
            return Err(ApiError::Conflict(format!(
                "job {id} waits for the workflows {}, not for approval; it is queued when they \
                 have ended",
                needs.workflows.join(", ")
            )));
        }
    }
    let job = state.queue().approve_by(&id, &caller.name()).await?;
    state.metrics().job_queued(&job.spec.pool);
    info!(
        job = %job.id, repo = %job.spec.repo, pool = %job.spec.pool, token = %caller.name(),
        "job approved"
    );
    Ok(Json(job))
}
