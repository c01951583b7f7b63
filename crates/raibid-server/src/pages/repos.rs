//! `GET /repos` and `GET /repos/{owner}/{name}`: the repositories with builds, and one
//! repository's branches, pull requests and tags with their newest builds, as
//! [`crate::api::repos`] reads them.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use raibid_model::human;

use super::list::url_query;
use super::{Chrome, PageError, Viewer, page};
use crate::api::repos::{self, Build, RefBuild};
use crate::auth::CanRead;
use crate::{ApiError, AppState};

/// Seconds between reloads while a build on the page runs.
const REFRESH_SECS: u32 = 10;

#[derive(Template)]
#[template(path = "repos.html")]
struct ReposPage {
    root: String,
    title: String,
    chrome: Chrome,
    rows: Vec<RepoRow>,
    refresh: Option<u32>,
}

struct RepoRow {
    repo: String,
    build: Option<BuildCells>,
}

#[derive(Template)]
#[template(path = "repo.html")]
struct RepoPage {
    root: String,
    title: String,
    chrome: Chrome,
    /// The job list of the repository's jobs.
    jobs_href: String,
    /// The repository's page on the forge, from its newest build.
    forge: Option<String>,
    sections: Vec<Section>,
    /// How many jobs were read, when they were not all of them.
    partial: Option<usize>,
    refresh: Option<u32>,
}

struct Section {
    title: &'static str,
    /// What the first column holds.
    noun: &'static str,
    rows: Vec<RefRow>,
}

struct RefRow {
    name: String,
    /// Where the name leads: a branch's builds in the job list, a pull request on the forge.
    href: Option<String>,
    /// A pull request's `source → target`.
    detail: String,
    build: BuildCells,
}

/// The cells every build's row has.
struct BuildCells {
    id: String,
    /// `#12`, or the job id of a job without a pipeline number.
    label: String,
    /// The head commit's subject or the pull request's title.
    title: String,
    status: &'static str,
    /// The combined status's words, for a build of several jobs.
    description: String,
    git_ref: String,
    sha: String,
    queued_at: String,
    queued_ago: String,
    duration: String,
}

impl BuildCells {
    fn of(build: &Build, now: DateTime<Utc>) -> Self {
        let job = &build.job;
        Self {
            id: job.id.clone(),
            label: job
                .spec
                .number
                .map(|n| format!("#{n}"))
                .unwrap_or_else(|| job.id.clone()),
            title: job.spec.title.clone().unwrap_or_default(),
            status: build.status.as_str(),
            description: build.description.clone().unwrap_or_default(),
            git_ref: job.spec.git_ref.trim_start_matches("refs/").to_owned(),
            sha: job.spec.sha.chars().take(10).collect(),
            queued_at: job.created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            queued_ago: format!("{} ago", human::duration(now - job.created_at)),
            duration: job
                .duration(now)
                .map(human::precise_duration)
                .unwrap_or_default(),
        }
    }
}

fn refresh(mut builds: impl Iterator<Item = Build>) -> Option<u32> {
    builds.any(|b| !b.status.is_final()).then_some(REFRESH_SECS)
}

pub(super) async fn list(
    viewer: Viewer,
    reader: Result<CanRead, ApiError>,
    State(state): State<AppState>,
) -> Result<Response, PageError> {
    let reader = reader.map_err(|e| viewer.fail(e))?;
    let listed = repos::repositories(&state, &reader)
        .await
        .map_err(|e| viewer.fail(e))?;
    let now = state.clock().now();
    let template = ReposPage {
        refresh: refresh(listed.repos.iter().filter_map(|r| r.latest.clone())),
        rows: listed
            .repos
            .iter()
            .map(|r| RepoRow {
                repo: r.repo.clone(),
                build: r.latest.as_ref().map(|b| BuildCells::of(b, now)),
            })
            .collect(),
        title: "Repositories".to_owned(),
        root: viewer.root().to_owned(),
        chrome: viewer.chrome(),
    };
    Ok(page(StatusCode::OK, &template))
}

pub(super) async fn show(
    viewer: Viewer,
    reader: Result<CanRead, ApiError>,
    State(state): State<AppState>,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let reader = reader.map_err(|e| viewer.fail(e))?;
    let repo = format!("{owner}/{name}");
    let overview = repos::overview(&state, &reader, &repo)
        .await
        .map_err(|e| viewer.fail(e))?;
    let root = viewer.root().to_owned();
    let now = state.clock().now();
    let all = || {
        overview
            .branches
            .iter()
            .chain(&overview.pull_requests)
            .chain(&overview.tags)
    };
    let forge = all()
        .max_by_key(|r| r.build.job.created_at)
        .and_then(|r| r.build.job.spec.repo_url.clone());
    let row = |r: &RefBuild, href: Option<String>, detail: String| RefRow {
        name: r.name.clone(),
        href,
        detail,
        build: BuildCells::of(&r.build, now),
    };
    let sections = [
        Section {
            title: "Branches",
            noun: "branch",
            rows: overview
                .branches
                .iter()
                .map(|r| {
                    let query = url_query(&[("repo", &repo), ("branch", &r.name)]);
                    row(r, Some(format!("{root}/jobs?{query}")), String::new())
                })
                .collect(),
        },
        Section {
            title: "Pull requests",
            noun: "pull request",
            rows: overview
                .pull_requests
                .iter()
                .map(|r| {
                    let spec = &r.build.job.spec;
                    let detail = match (&spec.source_branch, &spec.target_branch) {
                        (Some(from), Some(to)) => format!("{from} → {to}"),
                        (None, Some(to)) => format!("→ {to}"),
                        _ => String::new(),
                    };
                    RefRow {
                        name: format!("#{}", r.name),
                        ..row(r, spec.pull_request_url(), detail)
                    }
                })
                .collect(),
        },
        Section {
            title: "Tags",
            noun: "tag",
            rows: overview
                .tags
                .iter()
                .map(|r| row(r, None, String::new()))
                .collect(),
        },
    ]
    .into_iter()
    .filter(|s| !s.rows.is_empty())
    .collect();
    let template = RepoPage {
        refresh: refresh(all().map(|r| r.build.clone())),
        jobs_href: format!("{root}/jobs?{}", url_query(&[("repo", &repo)])),
        forge,
        sections,
        partial: (!overview.complete).then_some(overview.scanned),
        title: repo,
        root,
        chrome: viewer.chrome(),
    };
    Ok(page(StatusCode::OK, &template))
}
