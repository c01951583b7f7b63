//! `GET /api/v1/schedules`: the configured schedules, when each runs next and its last job.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use raibid_model::PoolName;
use serde::Serialize;

use crate::auth::CanRead;
use crate::{ApiError, AppState};

#[derive(Debug, Serialize)]
pub(crate) struct Schedules {
    schedules: Vec<ScheduleInfo>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ScheduleInfo {
    name: String,
    repo: String,
    branch: String,
    cron: String,
    pool: PoolName,
    /// The next occurrence after now, in UTC.
    next: Option<DateTime<Utc>>,
    /// The newest occurrence a scheduler has handled (queued, or passed over).
    #[serde(skip_serializing_if = "Option::is_none")]
    last_occurrence: Option<DateTime<Utc>>,
    /// The job the last queued occurrence made.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_job: Option<String>,
}

pub(crate) async fn list(
    _: CanRead,
    State(state): State<AppState>,
) -> Result<Json<Schedules>, ApiError> {
    let now = state.clock().now();
    let marks = futures::future::try_join_all(
        state
            .config()
            .server
            .schedules
            .iter()
            .map(|s| state.queue().schedule_mark(s.name.as_str())),
    )
    .await?;
    let schedules = state
        .config()
        .server
        .schedules
        .iter()
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
