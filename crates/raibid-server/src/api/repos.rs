//! `GET /api/v1/repos` and `GET /api/v1/repos/{owner}/{name}`: the repositories with builds,
//! and one repository's branches, pull requests and tags, each with its newest build, as
//! Woodpecker's repository list and its Branches and Pull Requests tabs show them.
//!
//! A build is a job that is no matrix variant and no other workflow's job of the same push:
//! the job its commit status stands for. Its status is the one its commit status gives, so a
//! matrix whose first job passed while a variant still runs is `running`.
//!
//! There is no index by ref: a repository's refs are found among its newest [`SCAN_JOBS`]
//! jobs, as the badge finds a branch's, so one request never walks a long history. A ref
//! last built before them is not listed, and the answer says so (`complete: false`).

use std::collections::{HashMap, HashSet};

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use raibid_model::{BuildStatus, Event, Job, JobStatus};
use raibid_queue::{JobFilter, QueueError};
use serde::Serialize;

use super::validate;
use crate::auth::CanRead;
use crate::reporter::matrix_status;
use crate::{ApiError, AppState};

/// How many of a repository's newest jobs are read for its refs.
pub(crate) const SCAN_JOBS: usize = 1000;

/// Jobs read per round trip while scanning.
const PAGE: usize = 200;

/// Refs listed per kind (branches, pull requests, tags), the most recently built first.
pub(crate) const MAX_REFS: usize = 100;

/// Repositories listed, the most recently active first.
pub(crate) const MAX_REPOS: usize = 1000;

/// A build and the status its commit status gives.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Build {
    /// The job's own status; for the first job of a matrix or of several workflows, once it
    /// passed, its jobs' combined: `running` until they all end, then `failure` if one
    /// failed, else `cancelled` if one was cancelled, else `success`.
    pub status: JobStatus,
    /// What the combined status says (`1 of 3 variants failed: ...`); none for a single job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub job: Job,
}

/// A ref and its newest build.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RefBuild {
    /// The branch, the tag, or the pull request's number.
    pub name: String,
    #[serde(flatten)]
    pub build: Build,
}

#[derive(Debug, Serialize)]
pub(crate) struct RepoSummary {
    pub repo: String,
    /// When its newest job was queued.
    pub last_queued_at: DateTime<Utc>,
    /// Its newest build; none when its jobs went while this was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest: Option<Build>,
}

#[derive(Debug, Serialize)]
pub(crate) struct RepoList {
    pub repos: Vec<RepoSummary>,
}

#[derive(Debug, Serialize)]
pub(crate) struct RepoOverview {
    pub repo: String,
    pub branches: Vec<RefBuild>,
    pub pull_requests: Vec<RefBuild>,
    pub tags: Vec<RefBuild>,
    /// How many of the repository's newest jobs were read.
    pub scanned: usize,
    /// Whether they were all its jobs: if not, refs built only before them are missing.
    pub complete: bool,
}

/// `GET /api/v1/repos`.
pub(crate) async fn list(
    reader: CanRead,
    State(state): State<AppState>,
) -> Result<Json<RepoList>, ApiError> {
    repositories(&state, &reader).await.map(Json)
}

/// `GET /api/v1/repos/{owner}/{name}`.
pub(crate) async fn show(
    reader: CanRead,
    State(state): State<AppState>,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Json<RepoOverview>, ApiError> {
    let repo = format!("{owner}/{name}");
    overview(&state, &reader, &repo).await.map(Json)
}

/// The repositories `reader` may read that have jobs, the most recently active first, each
/// with its newest build.
pub(crate) async fn repositories(state: &AppState, reader: &CanRead) -> Result<RepoList, ApiError> {
    let queue = state.queue();
    let active: Vec<_> = queue
        .repositories()
        .await?
        .into_iter()
        .filter(|r| reader.may_read(&r.repo))
        .take(MAX_REPOS)
        .collect();
    // At once: the shared connection pipelines the reads.
    let latest =
        futures::future::try_join_all(active.iter().map(|r| latest_build(state, &r.repo))).await?;
    Ok(RepoList {
        repos: active
            .into_iter()
            .zip(latest)
            .map(|(r, latest)| RepoSummary {
                repo: r.repo,
                last_queued_at: r.last_queued_at,
                latest,
            })
            .collect(),
    })
}

/// `repo`'s newest build: its newest job, or that job's parent when it is a variant.
async fn latest_build(state: &AppState, repo: &str) -> Result<Option<Build>, QueueError> {
    let filter = JobFilter {
        repo: Some(repo.to_owned()),
        ..JobFilter::default()
    };
    let Some(newest) = state.queue().list(&filter, None, 1).await?.jobs.pop() else {
        return Ok(None);
    };
    let job = match &newest.spec.matrix_parent {
        Some(parent) => state.queue().get(parent).await?.unwrap_or(newest),
        None => newest,
    };
    build(state, job).await.map(Some)
}

/// `repo`'s branches, pull requests and tags with their newest builds.
pub(crate) async fn overview(
    state: &AppState,
    reader: &CanRead,
    repo: &str,
) -> Result<RepoOverview, ApiError> {
    validate::repo(repo).map_err(|m| ApiError::InvalidParameter {
        name: "repo",
        message: m.to_owned(),
    })?;
    reader.check(repo)?;
    let filter = JobFilter {
        repo: Some(repo.to_owned()),
        ..JobFilter::default()
    };
    let mut refs = Refs::default();
    let mut scanned = 0;
    let mut cursor = None;
    let complete = loop {
        let page = state
            .queue()
            .list(&filter, cursor.as_deref(), PAGE.min(SCAN_JOBS - scanned))
            .await?;
        scanned += page.jobs.len();
        for job in page.jobs {
            refs.add(job);
        }
        match page.next_cursor {
            None => break true,
            Some(_) if scanned >= SCAN_JOBS => break false,
            next => cursor = next,
        }
    };
    if scanned == 0 {
        return Err(ApiError::NotFound(format!("no jobs of {repo}")));
    }
    let builds = |list: Vec<(String, Job)>| {
        futures::future::try_join_all(list.into_iter().map(|(name, job)| async move {
            Ok::<_, QueueError>(RefBuild {
                name,
                build: build(state, job).await?,
            })
        }))
    };
    let (branches, pull_requests, tags) = tokio::try_join!(
        builds(refs.branches.list),
        builds(refs.pull_requests.list),
        builds(refs.tags.list),
    )?;
    Ok(RepoOverview {
        repo: repo.to_owned(),
        branches,
        pull_requests,
        tags,
        scanned,
        complete,
    })
}

/// The newest build of each ref, in the order the scan (newest first) meets them.
#[derive(Default)]
struct Refs {
    branches: Newest,
    pull_requests: Newest,
    tags: Newest,
}

#[derive(Default)]
struct Newest {
    seen: HashSet<String>,
    list: Vec<(String, Job)>,
}

impl Newest {
    fn offer(&mut self, name: String, job: Job) {
        if self.list.len() < MAX_REFS && self.seen.insert(name.clone()) {
            self.list.push((name, job));
        }
    }
}

impl Refs {
    fn add(&mut self, job: Job) {
        if job.spec.matrix_parent.is_some() {
            return;
        }
        if job.spec.event == Event::PullRequest {
            if let Some(number) = job.spec.pr_number {
                self.pull_requests.offer(number.to_string(), job);
            }
        } else if let Some(branch) = job.branch() {
            self.branches.offer(branch.to_owned(), job);
        } else if let Some(tag) = job.tag() {
            self.tags.offer(tag.to_owned(), job);
        }
    }
}

/// `job` with the status its commit status gives: for the first job of several that passed,
/// its jobs' combined status, as the reporter and the badge combine them.
pub(crate) async fn build(state: &AppState, job: Job) -> Result<Build, QueueError> {
    let BuildStatus {
        status,
        description,
    } = build_status(state, &job, &HashMap::new()).await?;
    Ok(Build {
        status,
        description,
        job,
    })
}

/// [`build`]'s status of `job`. Its jobs found in `read` (jobs just read, a list's page) are
/// not read again: a page of the newest jobs holds most jobs of its builds.
pub(crate) async fn build_status(
    state: &AppState,
    job: &Job,
    read: &HashMap<&str, &Job>,
) -> Result<BuildStatus, QueueError> {
    if !job.stands_for_its_jobs() {
        return Ok(BuildStatus {
            status: job.status,
            description: None,
        });
    }
    let children = futures::future::try_join_all(job.children.iter().map(|id| async move {
        match read.get(id.as_str()) {
            Some(child) => Ok(Some((*child).clone())),
            None => state.queue().get(id).await,
        }
    }))
    .await?;
    Ok(combined(job, &children))
}

/// Matrix job (or workflows' first job) `job`'s status and description as its commit status
/// combines its jobs' (`children`, as recorded; `None` for one that is gone).
pub(crate) fn combined(job: &Job, children: &[Option<Job>]) -> BuildStatus {
    BuildStatus {
        status: BuildStatus::combine(children.iter().map(Option::as_ref)),
        description: Some(matrix_status(job, children, "").description),
    }
}

#[cfg(test)]
mod tests {
    use raibid_model::NewJob;

    use super::*;

    fn job(id: &str, git_ref: &str, event: Event) -> Job {
        let mut spec = NewJob::new(
            "acme/app",
            "https://git.example/acme/app.git",
            git_ref,
            "a".repeat(40),
            event,
        );
        if event == Event::PullRequest {
            spec.pr_number = git_ref
                .strip_prefix("refs/pull/")
                .and_then(|r| r.strip_suffix("/head"))
                .and_then(|n| n.parse().ok());
            spec.target_branch = Some("main".into());
        }
        Job::queued(id, spec, Utc::now())
    }

    #[test]
    fn each_ref_keeps_its_newest_build_and_variants_are_no_builds() {
        let mut refs = Refs::default();
        let mut variant = job("9", "refs/heads/dev", Event::Push);
        variant.spec.matrix_parent = Some("8".into());
        for j in [
            variant,
            job("8", "refs/heads/dev", Event::Push),
            job("7", "refs/pull/3/head", Event::PullRequest),
            job("6", "refs/heads/main", Event::Manual),
            job("5", "refs/tags/v1", Event::Tag),
            job("4", "refs/heads/main", Event::Push),
            job("3", "refs/pull/3/head", Event::PullRequest),
            job("2", "refs/pull/2/head", Event::PullRequest),
            job("1", "refs/heads/main", Event::Cron),
        ] {
            refs.add(j);
        }
        let names = |n: &Newest| {
            n.list
                .iter()
                .map(|(name, job)| format!("{name}={}", job.id))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&refs.branches), ["dev=8", "main=6"]);
        assert_eq!(names(&refs.pull_requests), ["3=7", "2=2"]);
        assert_eq!(names(&refs.tags), ["v1=5"]);
    }

    #[test]
    fn refs_past_the_limit_are_not_listed() {
        let mut refs = Refs::default();
        for i in 0..MAX_REFS + 5 {
            refs.add(job(
                &i.to_string(),
                &format!("refs/heads/b{i}"),
                Event::Push,
            ));
        }
        assert_eq!(refs.branches.list.len(), MAX_REFS);
        assert_eq!(refs.branches.list[0].0, "b0");
    }
}
