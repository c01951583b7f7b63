//! `GET /agents`: the agents running (and those that went silent within the hour without
//! saying goodbye), what each runs, and what the autoscalers last decided, as Woodpecker's
//! agents page and GitLab's runners page show them. The farm's, the same for every reader, as
//! `GET /api/v1/agents` is.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::SecondsFormat;
use raibid_model::human;

use super::{Chrome, PageError, Viewer, page};
use crate::api::pools::{FORGET_AGENTS_AFTER, stale_after};
use crate::auth::CanRead;
use crate::{ApiError, AppState};

/// Seconds between reloads while any agent is listed: heartbeats come every few seconds.
const REFRESH_SECS: u32 = 10;

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    root: String,
    title: String,
    chrome: Chrome,
    agents: Vec<AgentRow>,
    scalers: Vec<ScalerRow>,
    refresh: Option<u32>,
}

struct AgentRow {
    name: String,
    /// `working`, `idle`, or `stale` (silent for three heartbeats: probably dead, its jobs
    /// soon reclaimed).
    state: &'static str,
    /// The status class its state is shown with.
    class: &'static str,
    pools: String,
    arch: String,
    labels: String,
    jobs: Vec<String>,
    done: u64,
    up: String,
    heard: String,
    heard_at: String,
    version: String,
}

struct ScalerRow {
    pool: String,
    source: String,
    agents: u64,
    starting: u64,
    max: u64,
    lag: u64,
    held: String,
    updated: String,
}

pub(super) async fn list(
    viewer: Viewer,
    reader: Result<CanRead, ApiError>,
    State(state): State<AppState>,
) -> Result<Response, PageError> {
    reader.map_err(|e| viewer.fail(e))?;
    let queue = state.queue();
    let (agents, scalers) =
        tokio::try_join!(queue.agents(FORGET_AGENTS_AFTER), queue.scaler_statuses())
            .map_err(|e| viewer.fail(e))?;
    let now = state.clock().now();
    let stale = stale_after(state.config());
    let ago = |at| format!("{} ago", human::duration(now - at));
    let template = AgentsPage {
        refresh: (!agents.is_empty()).then_some(REFRESH_SECS),
        agents: agents
            .into_iter()
            .map(|a| {
                let (state, class) = if a.is_stale(now, stale) {
                    ("stale", "failure")
                } else if a.current_jobs.is_empty() {
                    ("idle", "cancelled")
                } else {
                    ("working", "running")
                };
                AgentRow {
                    state,
                    class,
                    pools: a
                        .pools
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    labels: a
                        .labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    up: human::duration(now - a.started_at),
                    heard: ago(a.last_heartbeat),
                    heard_at: a.last_heartbeat.to_rfc3339_opts(SecondsFormat::Secs, true),
                    name: a.name,
                    arch: a.arch,
                    jobs: a.current_jobs,
                    done: a.jobs_done,
                    version: a.version,
                }
            })
            .collect(),
        scalers: scalers
            .into_iter()
            .map(|s| ScalerRow {
                pool: s.pool.to_string(),
                source: s.source,
                agents: s.agents,
                starting: s.starting,
                max: s.max_agents,
                lag: s.lag,
                held: s.held.unwrap_or_default(),
                updated: ago(s.updated_at),
            })
            .collect(),
        title: "Agents".to_owned(),
        root: viewer.root().to_owned(),
        chrome: viewer.chrome(),
    };
    Ok(page(StatusCode::OK, &template))
}
