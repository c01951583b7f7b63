//! `GET /jobs`: the newest jobs first, filtered as the API's listing is.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::SecondsFormat;
use raibid_model::{Event, JobStatus, human};
use raibid_queue::QueueError;

use super::{Chrome, PageError, Viewer, page};
use crate::api::jobs::{DEFAULT_PAGE, ListParams, page as list_page};
use crate::api::pools::pool_stats;
use crate::auth::CanRead;
use crate::{ApiError, AppState};

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    root: String,
    title: String,
    chrome: Chrome,
    repo: String,
    pool: String,
    branch: String,
    /// Every status, and whether it is the one filtered on.
    statuses: Vec<(&'static str, bool)>,
    /// Every event, and whether it is the one filtered on.
    events: Vec<(&'static str, bool)>,
    filtered: bool,
    rows: Vec<Row>,
    next: Option<String>,
    refresh: bool,
    /// The pools' queues, on the first page.
    queues: Vec<QueueRow>,
    /// The signed-in token may pause and resume them: their buttons.
    can_hold_pools: bool,
}

/// One pool's queue, as `raibid status` shows it.
struct QueueRow {
    pool: String,
    queued: u64,
    running: u64,
    oldest: String,
    dead: u64,
    /// Who paused the pool, when and why; empty while it runs.
    paused: String,
}

struct Row {
    id: String,
    name: String,
    /// The head commit's subject or the pull request's title.
    title: String,
    /// For a job that queued others, its build's (see [`raibid_model::ListedJob`]).
    status: &'static str,
    /// What the build's status says (`1 of 3 variants failed: N=2`), for a job that queued
    /// others.
    build: String,
    repo: String,
    git_ref: String,
    /// The job list of the repository's builds of the branch the job builds, if it builds one.
    branch_href: Option<String>,
    sha: String,
    pool: String,
    agent: String,
    queued_at: String,
    queued_ago: String,
    duration: String,
}

pub(super) async fn list(
    viewer: Viewer,
    reader: Result<CanRead, ApiError>,
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, PageError> {
    let fail = |e: ApiError| viewer.fail(e);
    let reader = reader.map_err(fail)?;
    let Query(params) = params.map_err(|e| fail(ApiError::InvalidRequest(e.body_text())))?;
    let listing = params.check().map_err(fail)?;
    let filter = listing.filter.clone();
    let first_page = listing.cursor.is_none();
    let limit = listing.limit;
    let jobs = list_page(&state, &reader, listing).await.map_err(fail)?;
    let queues = if first_page {
        queue_rows(&state).await.map_err(|e| fail(e.into()))?
    } else {
        Vec::new()
    };

    let root = viewer.root().to_owned();
    let now = state.clock().now();
    let repo = filter.repo.clone().unwrap_or_default();
    let pool = filter
        .pool
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    let branch = filter.branch.clone().unwrap_or_default();
    let next = jobs.next_cursor.map(|cursor| {
        let limit = (limit != DEFAULT_PAGE).then(|| limit.to_string());
        let query = url_query(&[
            ("repo", &repo),
            ("status", filter.status.map(JobStatus::as_str).unwrap_or("")),
            ("pool", &pool),
            ("branch", &branch),
            ("event", filter.event.map(Event::as_str).unwrap_or("")),
            ("limit", limit.as_deref().unwrap_or("")),
            ("cursor", &cursor),
        ]);
        format!("{root}/jobs?{query}")
    });
    let template = JobsPage {
        title: match &filter.repo {
            Some(repo) => format!("Jobs of {repo}"),
            None => "Jobs".to_owned(),
        },
        statuses: JobStatus::ALL
            .iter()
            .map(|s| (s.as_str(), filter.status == Some(*s)))
            .collect(),
        events: Event::ALL
            .iter()
            .map(|e| (e.as_str(), filter.event == Some(*e)))
            .collect(),
        filtered: filter.status.is_some()
            || filter.repo.is_some()
            || filter.pool.is_some()
            || filter.branch.is_some()
            || filter.event.is_some(),
        refresh: first_page && jobs.jobs.iter().any(|j| !j.status().is_final()),
        rows: jobs
            .jobs
            .iter()
            .map(|listed| (listed, &listed.job))
            .map(|(listed, j)| Row {
                id: j.id.clone(),
                name: j.list_name().unwrap_or_else(|| j.id.clone()),
                title: j.spec.title.clone().unwrap_or_default(),
                status: listed.status().as_str(),
                build: listed
                    .build
                    .as_ref()
                    .and_then(|b| b.description.clone())
                    .unwrap_or_default(),
                repo: j.spec.repo.clone(),
                git_ref: j.spec.git_ref.trim_start_matches("refs/").to_owned(),
                branch_href: j.branch().map(|b| {
                    let query = url_query(&[("repo", &j.spec.repo), ("branch", b)]);
                    format!("{root}/jobs?{query}")
                }),
                sha: j.spec.sha.chars().take(10).collect(),
                pool: j.spec.pool.to_string(),
                agent: j.agent.clone().unwrap_or_default(),
                queued_at: j.created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                queued_ago: format!("{} ago", human::duration(now - j.created_at)),
                duration: j
                    .duration(now)
                    .map(human::precise_duration)
                    .unwrap_or_default(),
            })
            .collect(),
        next,
        repo,
        pool,
        branch,
        chrome: viewer.chrome(),
        root,
        queues,
        can_hold_pools: viewer.may_hold_pools(),
    };
    Ok(page(StatusCode::OK, &template))
}

/// Every pool's queue (those the queue has seen and the configured ones), as the API's
/// `/api/v1/queues` reports them: the farm's, the same for every reader.
async fn queue_rows(state: &AppState) -> Result<Vec<QueueRow>, QueueError> {
    Ok(pool_stats(state.config(), state.queue())
        .await?
        .into_iter()
        .map(|s| QueueRow {
            pool: s.pool.to_string(),
            queued: s.lag,
            running: s.pending,
            oldest: s.oldest_queued_ms.map(human::millis).unwrap_or_default(),
            dead: s.dead_letters,
            paused: s
                .paused
                .map(|p| p.describe(chrono::Utc::now()))
                .unwrap_or_default(),
        })
        .collect())
}

/// `a=1&b=2` of the pairs whose value is not empty, each value percent-encoded.
pub(super) fn url_query(pairs: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        query.append_pair(name, value);
    }
    query.finish()
}
