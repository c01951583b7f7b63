//! `GET /api/v1/schedules`: the configured schedules, when each runs next and its last job;
//! `POST /api/v1/schedules/{name}/run`: a schedule's job now, as Woodpecker's "Run" button on
//! a cron job.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use raibid_model::{Event, Job, PoolName};
use raibid_queue::Enqueued;
use serde::Serialize;
use tracing::info;

use crate::auth::{CanRead, CanRunJobs};
use crate::scheduler::{self, ScheduleError};
use crate::{ApiError, AppState};

#[derive(Debug, Serialize)]
pub(crate) struct Schedules {
    pub(crate) schedules: Vec<ScheduleInfo>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ScheduleInfo {
    pub(crate) name: String,
    pub(crate) repo: String,
    pub(crate) branch: String,
    pub(crate) cron: String,
    pub(crate) pool: PoolName,
    /// The next occurrence after now, in UTC.
    pub(crate) next: Option<DateTime<Utc>>,
    /// The newest occurrence a scheduler has handled (queued, or passed over).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_occurrence: Option<DateTime<Utc>>,
    /// The job the last queued occurrence made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_job: Option<String>,
}

pub(crate) async fn list(
    reader: CanRead,
    State(state): State<AppState>,
) -> Result<Json<Schedules>, ApiError> {
    let now = state.clock().now();
    let visible: Vec<_> = state
        .config()
        .server
        .schedules
        .iter()
        .filter(|s| reader.may_read(&s.repo))
        .collect();
    let marks = futures::future::try_join_all(
        visible
            .iter()
            .map(|s| state.queue().schedule_mark(s.name.as_str())),
    )
    .await?;
    let schedules = visible
        .into_iter()
        .zip(marks)
        .map(|(s, mark)| ScheduleInfo {
            name: s.name.to_string(),
            repo: s.repo.clone(),
            branch: s.branch.clone(),
            cron: s.cron.to_string(),
            pool: s
                .pool
                .clone()
                .unwrap_or_else(|| state.repos().pool_for(&s.repo).clone()),
            next: s.cron.next_after(now),
            last_occurrence: mark
                .as_ref()
                .and_then(|m| DateTime::from_timestamp(m.occurrence, 0)),
            last_job: mark.and_then(|m| m.job_id),
        })
        .collect();
    Ok(Json(Schedules { schedules }))
}

/// Queues the job an occurrence of schedule `name` would queue (event `cron`, the head of its
/// branch resolved now, its pool and env), without waiting for one.
///
/// The scheduler's mark is left alone: a run by hand is not an occurrence, so the scheduler
/// neither skips the next one nor repeats the last, and the schedule's `last_job` stays the
/// last occurrence's. The job's delivery id, `cron:<name>:manual:<ulid>`, is neither an
/// occurrence's (`cron:<name>:<unix seconds>`) nor another run's: the queue never takes a run
/// for a redelivery, nor an occurrence for a redelivery of a run.
pub(crate) async fn run(
    CanRunJobs(caller): CanRunJobs,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    let schedule = state
        .config()
        .server
        .schedules
        .iter()
        .find(|s| s.name.as_str() == name)
        .ok_or_else(|| {
            ApiError::NotFound(format!("schedule {name} not found in server.schedules"))
        })?;
    caller.may_change(&schedule.repo)?;
    // The same bounds as the scheduler's: a token queues nothing the timetable would not.
    if !state.config().server.events.contains(&Event::Cron) {
        return Err(ApiError::Conflict(format!(
            "schedule {name} cannot run: cron is not in server.events, so no schedule queues \
             jobs on this server"
        )));
    }
    if let Some(problem) = scheduler::unusable(&state, schedule) {
        return Err(ApiError::Conflict(format!(
            "schedule {name} cannot run: the server skips it ({problem})"
        )));
    }
    let delivery_id = format!("cron:{name}:manual:{}", ulid::Ulid::new());
    let job = match scheduler::enqueue(&state, schedule, delivery_id).await? {
        Enqueued::Created(job) => *job,
        Enqueued::Duplicate { job_id } => {
            return Err(ApiError::Internal(format!(
                "the run of schedule {name} was taken for a redelivery of job {job_id}"
            )));
        }
    };
    info!(
        schedule = %name,
        job = %job.id,
        sha = %job.spec.sha,
        pool = %job.spec.pool,
        token = %caller.name(),
        "schedule run by hand"
    );
    Ok((StatusCode::CREATED, Json(job)))
}

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> Self {
        match e {
            ScheduleError::Queue(e) => e.into(),
            ScheduleError::Resolve(e) => e.into(),
        }
    }
}
