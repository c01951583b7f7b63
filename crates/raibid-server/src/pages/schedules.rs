//! `GET /schedules`: the server's schedules (`server.schedules`), when each runs next and its
//! last job, with a Run button for a signed-in token that may run its repository's jobs, as
//! Woodpecker's cron list has.

use askama::Template;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Redirect, Response};
use chrono::SecondsFormat;
use raibid_config::TokenScope;
use raibid_model::human;

use super::actions::caller;
use super::{Chrome, PageError, Viewer, page};
use crate::api::schedules;
use crate::auth::CanRead;
use crate::{ApiError, AppState};

#[derive(Template)]
#[template(path = "schedules.html")]
struct SchedulesPage {
    root: String,
    title: String,
    chrome: Chrome,
    rows: Vec<Row>,
}

struct Row {
    name: String,
    repo: String,
    branch: String,
    cron: String,
    pool: String,
    next: String,
    next_in: String,
    last_occurrence: String,
    last_job: Option<String>,
    /// The signed-in token may run it.
    can_run: bool,
}

pub(super) async fn list(
    viewer: Viewer,
    reader: Result<CanRead, ApiError>,
    State(state): State<AppState>,
) -> Result<Response, PageError> {
    let reader = reader.map_err(|e| viewer.fail(e))?;
    let Json(listed) = schedules::list(reader, State(state.clone()))
        .await
        .map_err(|e| viewer.fail(e))?;
    let now = state.clock().now();
    let stamp = |at: chrono::DateTime<chrono::Utc>| at.to_rfc3339_opts(SecondsFormat::Secs, true);
    let rows = listed
        .schedules
        .into_iter()
        .map(|s| Row {
            can_run: viewer.may(TokenScope::Jobs, &s.repo),
            next: s.next.map(stamp).unwrap_or_else(|| "never".into()),
            next_in: s
                .next
                .map(|at| format!("in {}", human::duration(at - now)))
                .unwrap_or_default(),
            last_occurrence: s.last_occurrence.map(stamp).unwrap_or_default(),
            last_job: s.last_job,
            name: s.name,
            repo: s.repo,
            branch: s.branch,
            cron: s.cron,
            pool: s.pool.to_string(),
        })
        .collect();
    let template = SchedulesPage {
        root: viewer.root().to_owned(),
        title: "Schedules".into(),
        chrome: viewer.chrome(),
        rows,
    };
    Ok(page(StatusCode::OK, &template))
}

/// Runs schedule `name` now, as `POST /api/v1/schedules/{name}/run` does; to the job's page.
pub(super) async fn run(
    viewer: Viewer,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Redirect, PageError> {
    let caller = caller(&viewer, &state, &headers, "run schedules")?;
    let (_, Json(job)) = schedules::run(caller, State(state), Path(name))
        .await
        .map_err(|e| viewer.fail(e))?;
    Ok(Redirect::to(&format!("{}/jobs/{}", viewer.root(), job.id)))
}
