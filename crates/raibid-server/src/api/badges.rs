//! Status badges: the SVG a repository's README embeds to show whether its branch builds, as
//! Woodpecker's `/api/badges/<repo>/status.svg` and GitLab's pipeline badge do.
//!
//! A badge shows the newest *finished* build of the branch, so a push does not turn it grey
//! while its job runs. A matrix job shows its variants combined, as its commit status does;
//! the variants themselves are skipped. Pull requests and tags never count: the badge is about
//! the branch.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use raibid_forge::StatusState;
use raibid_model::{Event, Job, JobStatus};
use raibid_queue::JobFilter;
use serde::Deserialize;

use super::validate;
use crate::auth::CanRead;
use crate::reporter::matrix_status;
use crate::{ApiError, AppState};

/// How many of the repository's newest jobs are looked through for one of the branch. A
/// branch not built among them shows `unknown`: a badge is fetched on every view of a README,
/// and must not walk a long history each time.
const SCAN_JOBS: usize = 200;

/// Jobs read per round trip while scanning.
const PAGE: usize = 50;

#[derive(Debug, Deserialize)]
pub(crate) struct BadgeParams {
    branch: Option<String>,
    /// One workflow of `.raibid/`, as GitHub's per-workflow badges.
    workflow: Option<String>,
}

/// What a badge says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Passing,
    Failing,
    Error,
    Cancelled,
    Unknown,
}

impl Verdict {
    fn text(self) -> &'static str {
        match self {
            Verdict::Passing => "passing",
            Verdict::Failing => "failing",
            Verdict::Error => "error",
            Verdict::Cancelled => "cancelled",
            Verdict::Unknown => "unknown",
        }
    }

    /// shields.io's colours, which readers of READMEs already know.
    fn colour(self) -> &'static str {
        match self {
            Verdict::Passing => "#4c1",
            Verdict::Failing | Verdict::Error => "#e05d44",
            Verdict::Cancelled | Verdict::Unknown => "#9f9f9f",
        }
    }

    fn of_job(status: JobStatus) -> Option<Self> {
        match status {
            JobStatus::Success => Some(Verdict::Passing),
            JobStatus::Failure => Some(Verdict::Failing),
            JobStatus::Error | JobStatus::Dead => Some(Verdict::Error),
            JobStatus::Cancelled => Some(Verdict::Cancelled),
            JobStatus::Blocked | JobStatus::Queued | JobStatus::Running => None,
            // Only a workflow's job is ever skipped, and a badge shows whole builds; were one
            // skipped, it would say nothing about the code, as a build not run says nothing.
            JobStatus::Skipped => None,
        }
    }
}

pub(crate) async fn badge(
    reader: CanRead,
    State(state): State<AppState>,
    Path((owner, name)): Path<(String, String)>,
    params: Result<Query<BadgeParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let repo = format!("{owner}/{name}");
    validate::repo(&repo).map_err(|m| ApiError::InvalidParameter {
        name: "repo",
        message: m.to_owned(),
    })?;
    reader.check(&repo)?;
    let branch = params.branch.filter(|b| !b.is_empty());
    let workflow = params.workflow.filter(|w| !w.is_empty());
    if let Some(workflow) = &workflow
        && !raibid_pipeline::valid_workflow_name(workflow)
    {
        return Err(ApiError::InvalidParameter {
            name: "workflow",
            message: "not a workflow name: letters, digits, '.', '_' and '-', at most 64".into(),
        });
    }
    let verdict = newest_verdict(&state, &repo, branch.as_deref(), workflow.as_deref()).await?;
    Ok((
        [
            (CONTENT_TYPE, "image/svg+xml;charset=utf-8"),
            // Proxies that fetch README images (GitHub's camo) keep them otherwise.
            (CACHE_CONTROL, "no-cache, max-age=0"),
        ],
        svg(workflow.as_deref().unwrap_or("build"), verdict),
    )
        .into_response())
}

/// The verdict of the newest finished build of `branch` (any branch when `None`), or of the
/// newest that ran `workflow` to its end.
async fn newest_verdict(
    state: &AppState,
    repo: &str,
    branch: Option<&str>,
    workflow: Option<&str>,
) -> Result<Verdict, ApiError> {
    let queue = state.queue();
    let filter = JobFilter {
        repo: Some(repo.to_owned()),
        ..JobFilter::default()
    };
    let mut cursor = None;
    let mut scanned = 0;
    while scanned < SCAN_JOBS {
        let page = queue.list(&filter, cursor.as_deref(), PAGE).await?;
        scanned += page.jobs.len();
        for job in &page.jobs {
            if !about_branch(job, branch) {
                continue;
            }
            if let Some(verdict) = verdict(state, job, workflow).await? {
                return Ok(verdict);
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(Verdict::Unknown)
}

/// A build of the branch itself: not a pull request, a tag or a matrix variant.
fn about_branch(job: &Job, branch: Option<&str>) -> bool {
    job.spec.event != Event::PullRequest
        && job.spec.matrix_parent.is_none()
        && match (job.branch(), branch) {
            (Some(built), Some(wanted)) => built == wanted,
            (Some(_), None) => true,
            (None, _) => false,
        }
}

/// `None` while the job (or any of its matrix variants) has not finished; with `workflow`,
/// also when the build did not run that workflow (its `when` left it out, or the build
/// failed before queueing it).
async fn verdict(
    state: &AppState,
    job: &Job,
    workflow: Option<&str>,
) -> Result<Option<Verdict>, ApiError> {
    if !job.status.is_final() {
        return Ok(None);
    }
    // A build of that one workflow (`raibid job submit --env RAIBID_WORKFLOW=...`) is judged
    // as any build.
    let of_workflow = |j: &Job| j.spec.env.get("RAIBID_WORKFLOW").map(String::as_str) == workflow;
    let whole = workflow.is_none() || of_workflow(job);
    if job.children.is_empty() || job.status != JobStatus::Success {
        return Ok(if whole {
            Verdict::of_job(job.status)
        } else {
            None
        });
    }
    // At once, as the reporter reads them: the shared connection pipelines the reads.
    let mut children =
        futures::future::try_join_all(job.children.iter().map(|id| state.queue().get(id))).await?;
    if !whole {
        children.retain(|child| child.as_ref().is_some_and(of_workflow));
        if children.is_empty() {
            return Ok(None);
        }
    }
    Ok(match matrix_status(job, &children, "").state {
        StatusState::Pending => None,
        StatusState::Success => Some(Verdict::Passing),
        StatusState::Failure => Some(Verdict::Failing),
        // What a matrix with a cancelled variant shows (see `matrix_status`).
        StatusState::Error => Some(Verdict::Cancelled),
    })
}

/// Verdana 11px advance widths, roughly, as shields.io lays its badges out: the texts are
/// this module's own words, so a coarse table is enough.
fn text_width(text: &str) -> u32 {
    text.chars()
        .map(|c| match c {
            'i' | 'l' | 'j' | '.' | ',' | ':' | '!' | '|' => 3,
            'f' | 't' | 'r' | ' ' => 5,
            'm' | 'w' => 11,
            c if c.is_ascii_uppercase() => 8,
            _ => 7,
        })
        .sum()
}

/// A flat badge: `label` on grey, the verdict on its colour.
fn svg(label: &str, verdict: Verdict) -> String {
    let value = verdict.text();
    let label_width = text_width(label) + 10;
    let value_width = text_width(value) + 10;
    let width = label_width + value_width;
    let label_x = label_width * 5;
    let value_x = label_width * 10 + value_width * 5;
    let colour = verdict.colour();
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" aria-label="{label}: {value}"><title>{label}: {value}</title><linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient><clipPath id="r"><rect width="{width}" height="20" rx="3" fill="#fff"/></clipPath><g clip-path="url(#r)"><rect width="{label_width}" height="20" fill="#555"/><rect x="{label_width}" width="{value_width}" height="20" fill="{colour}"/><rect width="{width}" height="20" fill="url(#s)"/></g><g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="110"><text x="{label_x}" y="150" fill="#010101" fill-opacity=".3" transform="scale(.1)">{label}</text><text x="{label_x}" y="140" transform="scale(.1)">{label}</text><text x="{value_x}" y="150" fill="#010101" fill-opacity=".3" transform="scale(.1)">{value}</text><text x="{value_x}" y="140" transform="scale(.1)">{value}</text></g></svg>"##
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_badge_is_well_formed_svg_naming_its_verdict() {
        for verdict in [
            Verdict::Passing,
            Verdict::Failing,
            Verdict::Error,
            Verdict::Cancelled,
            Verdict::Unknown,
        ] {
            let svg = svg("build", verdict);
            let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
            let root = doc.root_element();
            assert_eq!(root.tag_name().name(), "svg");
            assert_eq!(
                root.attribute("aria-label"),
                Some(format!("build: {}", verdict.text()).as_str())
            );
            let fills: Vec<&str> = doc
                .descendants()
                .filter_map(|n| n.attribute("fill"))
                .collect();
            assert!(fills.contains(&verdict.colour()), "{svg}");
            let width: u32 = root.attribute("width").unwrap().parse().unwrap();
            assert_eq!(width, text_width("build") + text_width(verdict.text()) + 20);
        }
    }
}
