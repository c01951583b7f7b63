//! `GET /jobs/{id}`: one job, its steps and the end of its log, followed live while it runs.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use raibid_config::TokenScope;
use raibid_model::{BuildStatus, Event, Job, JobStatus, LogErased, PoolPause, human};

use super::{Chrome, PageError, Viewer, log, page};
use crate::ApiError;
use crate::AppState;
use crate::api::jobs::readable;
use crate::auth::CanRead;

/// A matrix's variants shown on its page; a matrix is far smaller in practice.
const MAX_CHILDREN: usize = 256;
/// How often a build's page reloads while its jobs run.
const BUILD_REFRESH_SECS: u32 = 5;

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    root: String,
    title: String,
    chrome: Chrome,
    /// The buttons the signed-in token may press.
    actions: Vec<Action>,
    /// "Run pipeline" for the job's repository and ref, when the token may.
    run: Option<String>,
    /// The repository's secrets, when the token may set them.
    secrets: Option<String>,
    id: String,
    /// The job's status, or for the first job of several its build's (see `show`).
    status: &'static str,
    /// Seconds after which the page reloads: while a build's jobs run.
    refresh: Option<u32>,
    fields: Vec<Field>,
    /// The variables the job was given, by name.
    variables: Vec<(String, String)>,
    children: Vec<Child>,
    steps: Vec<Step>,
    tests: Option<Tests>,
    images: Vec<String>,
    artifacts: Option<Artifacts>,
    log: Log,
    /// The job can still write: the page follows its log.
    live: bool,
}

/// One line of the job's description, linked where there is somewhere to go.
struct Field {
    name: &'static str,
    value: String,
    href: Option<String>,
}

/// A button: a form posted to `/jobs/{id}/{path}`.
struct Action {
    path: &'static str,
    label: &'static str,
    /// Cancelling and declining lose work: the button looks it.
    danger: bool,
    /// What a second button says, shown only once the first is pressed: for what cannot be
    /// undone, asked again without a script.
    confirm: Option<&'static str>,
}

struct Child {
    id: String,
    name: String,
    status: &'static str,
    duration: String,
}

struct Step {
    name: String,
    status: &'static str,
    exit: String,
    time: String,
}

struct Artifacts {
    summary: String,
    /// The API's download, through the server, while the registry still has them.
    download: Option<String>,
}

struct Tests {
    summary: String,
    failures: Vec<String>,
    more: u64,
}

struct Log {
    /// The step whose lines these are (`?step=NAME`); `None`: the whole log.
    step: Option<String>,
    /// The step's first lines left out.
    hidden_lines: u64,
    /// For a step's lines followed live: the log's unfinished last line, and whether the log
    /// so far ends inside the step's section (`log::StepLines`).
    partial: String,
    inside: bool,
    html: String,
    /// The number of the line a follower writes into next, and whether the page's last line
    /// is unfinished (the script continues it): see `log::Lines`.
    line: u64,
    open: bool,
    skipped: u64,
    cursor: String,
    empty: bool,
    pruned: bool,
    /// Who erased the log and when, in words.
    erased: Option<String>,
}

/// `?step=NAME`: one step's lines of the log rather than the log's end.
#[derive(Debug, serde::Deserialize)]
pub(super) struct ShowQuery {
    step: Option<String>,
}

pub(super) async fn show(
    viewer: Viewer,
    reader: Result<CanRead, ApiError>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<ShowQuery>, QueryRejection>,
) -> Result<Response, PageError> {
    let fail = |e: ApiError| viewer.fail(e);
    let reader = reader.map_err(fail)?;
    let Query(query) = query.map_err(|e| fail(ApiError::InvalidRequest(e.body_text())))?;
    let job = readable(&state, &reader, &id).await.map_err(fail)?;
    let step = query.step.filter(|s| !s.is_empty());
    if let Some(step) = &step
        && !job.steps.iter().any(|s| s.name == *step)
    {
        return Err(fail(ApiError::NotFound(format!(
            "job {} has no step {step:?}",
            job.id
        ))));
    }
    let queue = state.queue();
    // Read side by side, as the badge reads them: one round trip's wait, not one per variant.
    let children: Vec<Option<Job>> =
        futures::future::try_join_all(job.children.iter().take(MAX_CHILDREN).map(|c| queue.get(c)))
            .await
            .map_err(|e| fail(e.into()))?;
    // The first job of a matrix or of several workflows passes once it has queued them: the
    // page heads with the build's status, theirs combined, as its commit status, the badge and
    // the repository's page give it.
    let build = job
        .stands_for_its_jobs()
        .then(|| crate::api::repos::combined(&job, &children));
    let children: Vec<Job> = children.into_iter().flatten().collect();
    let log = match &step {
        None => {
            let tail = log::tail(queue, &job.id, log::TAIL_BYTES)
                .await
                .map_err(|e| fail(e.into()))?;
            let lines = log::numbered(&tail.text, tail.first_line);
            Log {
                step: None,
                hidden_lines: 0,
                partial: String::new(),
                inside: false,
                empty: tail.text.is_empty(),
                html: lines.html,
                line: lines.next,
                open: lines.open,
                skipped: tail.skipped,
                cursor: tail.cursor.0,
                pruned: job.log_pruned,
                erased: job.log_erased.as_ref().map(erased_note),
            }
        }
        Some(step) => {
            let follow = !job.status.is_final();
            let lines = log::step_lines(queue, &job.id, step, log::TAIL_BYTES, follow)
                .await
                .map_err(|e| fail(e.into()))?;
            Log {
                step: Some(step.clone()),
                hidden_lines: lines.hidden,
                empty: lines.empty,
                html: lines.html,
                line: lines.next,
                // The script keeps the step's lines whole: it shows none unfinished.
                open: false,
                partial: lines.partial,
                inside: lines.inside,
                skipped: 0,
                cursor: lines.cursor.0,
                pruned: job.log_pruned,
                erased: job.log_erased.as_ref().map(erased_note),
            }
        }
    };
    // Why a queued job does not start, when an operator is holding its pool.
    let pause = if job.status == JobStatus::Queued {
        queue
            .paused_pools()
            .await
            .map_err(|e| fail(e.into()))?
            .remove(&job.spec.pool)
    } else {
        None
    };
    let now = state.clock().now();
    let root = viewer.root().to_owned();
    let may_run = viewer.may(TokenScope::Jobs, &job.spec.repo);
    let template = JobPage {
        chrome: viewer.chrome(),
        actions: if may_run {
            actions(&job, &children)
        } else {
            Vec::new()
        },
        run: may_run.then(|| {
            // A pull request's ref is the forge's, not one to run by hand: its target branch.
            let git_ref = match &job.spec.target_branch {
                Some(target) if job.spec.pr_number.is_some() => target.clone(),
                _ => job.spec.git_ref.clone(),
            };
            super::run::href(&root, &job.spec.repo, &job.spec.clone_url, &git_ref)
        }),
        secrets: viewer
            .may(TokenScope::Secrets, &job.spec.repo)
            .then(|| super::secrets::href(&root, &job.spec.repo)),
        title: title(&job),
        id: job.id.clone(),
        status: build
            .as_ref()
            .map_or(job.status, |build| build.status)
            .as_str(),
        // Until its jobs have ended (a failed one fails the build at once); the job's own
        // script follows only its own status.
        refresh: (build.is_some() && children.iter().any(|c| !c.status.is_final()))
            .then_some(BUILD_REFRESH_SECS),
        fields: fields(&job, &root, now, pause.as_ref(), build.as_ref()),
        variables: variables(&job),
        children: children
            .iter()
            .map(|c| Child {
                id: c.id.clone(),
                name: c.label().unwrap_or_else(|| c.id.clone()),
                status: c.status.as_str(),
                duration: c
                    .duration(now)
                    .map(human::precise_duration)
                    .unwrap_or_default(),
            })
            .collect(),
        steps: job
            .steps
            .iter()
            .map(|s| Step {
                name: s.name.clone(),
                status: s.status.as_str(),
                exit: s.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                time: s.duration_ms.map(human::precise_millis).unwrap_or_default(),
            })
            .collect(),
        tests: job.tests.as_ref().map(|t| Tests {
            summary: t.summary(),
            failures: t.failures.iter().map(ToString::to_string).collect(),
            more: t.failed.saturating_sub(t.failures.len() as u64),
        }),
        images: job.images.clone(),
        artifacts: job.artifacts.as_ref().map(|a| artifacts(&job, a, &root)),
        log,
        live: !job.status.is_final(),
        root,
    };
    Ok(page(StatusCode::OK, &template))
}

/// What can be done to the job now, as the API would allow it: cancel what has not ended
/// (decline what waits for approval), approve what waits for a person (not for other workflows
/// or its concurrency group), retry what has ended, retry the failed jobs of a matrix or of
/// several workflows, and erase the log of what has ended, or of the whole build once the
/// jobs it queued have ended too.
fn actions(job: &Job, children: &[Job]) -> Vec<Action> {
    let action = |path, label, danger| Action {
        path,
        label,
        danger,
        confirm: None,
    };
    let mut actions = Vec::new();
    if job.status == JobStatus::Blocked && job.concurrency.is_none() && job.spec.needs.is_none() {
        actions.push(action("approve", "Approve", false));
        actions.push(action("cancel", "Decline", true));
    } else if !job.status.is_final() {
        actions.push(action("cancel", "Cancel", true));
    } else {
        let failed = children.iter().any(|c| {
            matches!(
                c.status,
                JobStatus::Failure | JobStatus::Error | JobStatus::Dead
            )
        });
        if failed {
            actions.push(action("retry-failed", "Retry failed jobs", false));
        }
        actions.push(action("retry", "Retry", false));
        // Last: they lose logs for good.
        if job.log_erased.is_none() {
            actions.push(Action {
                confirm: Some("Erase the log for good"),
                ..action("erase-log", "Erase log…", true)
            });
        }
        // A secret a step printed is in every variant's log; the API checks the jobs that
        // these queued in turn.
        if !children.is_empty() && children.iter().all(|c| c.status.is_final()) {
            actions.push(Action {
                confirm: Some("Erase the logs of this job and of every job it queued for good"),
                ..action("erase-build-logs", "Erase the build's logs…", true)
            });
        }
    }
    actions
}

/// [`LogErased::note`] as a sentence of its own.
fn erased_note(erased: &LogErased) -> String {
    let mut note = erased.note();
    if let Some(first) = note.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    note
}

/// `acme/app #12 · build/linux`: what the forge's list of checks calls it.
fn title(job: &Job) -> String {
    let mut title = job.spec.repo.clone();
    if let Some(number) = job.spec.number {
        title.push_str(&format!(" #{number}"));
    }
    if let Some(label) = job.label() {
        title.push_str(&format!(" · {label}"));
    }
    title
}

/// Shown values are cut here: a variable can hold up to 64 KiB, a page's table should not.
const VARIABLE_SHOWN_CHARS: usize = 200;

/// The job's variables (a manual run's, a schedule's), each value cut to
/// [`VARIABLE_SHOWN_CHARS`]; the API has them whole.
fn variables(job: &Job) -> Vec<(String, String)> {
    job.spec
        .variables()
        .map(|(name, value)| {
            let mut shown: String = value.chars().take(VARIABLE_SHOWN_CHARS).collect();
            if shown.len() < value.len() {
                shown.push('…');
            }
            (name.to_owned(), shown)
        })
        .collect()
}

fn fields(
    job: &Job,
    root: &str,
    now: DateTime<Utc>,
    pause: Option<&PoolPause>,
    build: Option<&BuildStatus>,
) -> Vec<Field> {
    let mut fields = Vec::new();
    let mut add =
        |name, value: String, href: Option<String>| fields.push(Field { name, value, href });
    let job_href = |id: &str| Some(format!("{root}/jobs/{id}"));
    if let Some(description) = build.and_then(|b| b.description.clone()) {
        add("build", description, None);
    }
    add("job", job.id.clone(), None);
    add(
        "repository",
        job.spec.repo.clone(),
        // Its branches, pull requests and tags, each with its newest build.
        Some(format!("{root}/repos/{}", job.spec.repo)),
    );
    if let Some(title) = &job.spec.title {
        add("title", title.clone(), None);
    }
    add("event", job.spec.event.to_string(), None);
    add("ref", job.spec.git_ref.clone(), None);
    add("commit", job.spec.sha.clone(), job.spec.commit_url());
    if let Some(pr) = job.spec.pr_number {
        add(
            "pull request",
            format!("#{pr}"),
            job.spec.pull_request_url(),
        );
    }
    if let Some(source) = &job.spec.source_branch {
        add("from", source.clone(), None);
    }
    if !job.spec.pr_labels.is_empty() {
        add("labels", job.spec.pr_labels.join(", "), None);
    }
    if let Some(target) = &job.spec.target_branch
        && job.spec.event == Event::PullRequest
    {
        add("into", target.clone(), None);
    }
    if let Some(sender) = &job.spec.sender {
        add("by", sender.clone(), None);
    }
    if let Some(workflow) = job.spec.env.get("RAIBID_WORKFLOW") {
        add("workflow", workflow.clone(), None);
    }
    if let Some(variant) = job.spec.env.get("RAIBID_MATRIX") {
        add("variant", variant.clone(), None);
    }
    if let Some(parent) = &job.spec.matrix_parent {
        add("queued by", parent.clone(), job_href(parent));
    }
    if let Some(original) = &job.spec.retry_of {
        add("retry of", original.clone(), job_href(original));
    }
    if let Some(schedule) = &job.spec.schedule {
        add("schedule", schedule.clone(), None);
    }
    match pause {
        Some(pause) => add(
            "pool",
            format!("{}, {}: the job waits", job.spec.pool, pause.describe(now)),
            None,
        ),
        None => add("pool", job.spec.pool.to_string(), None),
    }
    add("attempt", job.attempt.to_string(), None);
    if let Some(agent) = &job.agent {
        add("agent", agent.clone(), None);
    }
    add("queued", at(job.created_at, now), None);
    if let Some(started) = job.started_at {
        add("started", at(started, now), None);
    }
    if let Some(d) = job.duration(now) {
        add("duration", human::precise_duration(d), None);
    }
    if let Some(reason) = &job.reason {
        add("reason", reason.clone(), None);
    }
    if let Some(approver) = &job.approved_by {
        add("approved by", approver.clone(), None);
    }
    if let Some(group) = &job.concurrency {
        add("concurrency", group.clone(), None);
    }
    if let Some(needs) = &job.spec.needs {
        add(
            "waits for",
            format!("{}, {}", needs.workflows.join(", "), needs.after()),
            None,
        );
    }
    fields
}

/// `2026-12-05 18:02:11 UTC (3m05s ago)`.
fn at(time: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!(
        "{} ({} ago)",
        time.format("%Y-%m-%d %H:%M:%S UTC"),
        human::duration(now - time)
    )
}

fn artifacts(job: &Job, artifacts: &raibid_model::JobArtifacts, root: &str) -> Artifacts {
    match artifacts.expired_note() {
        Some(note) => Artifacts {
            summary: note,
            download: None,
        },
        None => Artifacts {
            summary: artifacts.summary(&job.id),
            download: Some(format!("{root}/api/v1/jobs/{}/artifacts", job.id)),
        },
    }
}

#[cfg(test)]
mod tests {
    use raibid_model::{Forge, NewJob};

    use super::*;

    #[test]
    fn variables_are_listed_by_name_with_long_values_cut() {
        let mut spec = NewJob::new(
            "acme/app",
            "https://git.example/acme/app.git",
            "refs/heads/main",
            "0".repeat(40),
            Event::Manual,
        );
        spec.env.insert("B".into(), "é".repeat(250));
        spec.env.insert("A".into(), "1".into());
        spec.env.insert("RAIBID_WORKFLOW".into(), "deploy".into());
        let job = Job::queued("01ARZ3NDEKTSV4RRFFQ69G5FAV", spec, Utc::now());
        let shown = variables(&job);
        assert_eq!(shown.len(), 2, "the workflow is a field of its own");
        assert_eq!(shown[0], ("A".to_owned(), "1".to_owned()));
        assert_eq!(shown[1].1, format!("{}…", "é".repeat(VARIABLE_SHOWN_CHARS)));
    }

    #[test]
    fn a_pull_request_names_its_branches_and_links_to_the_forge() {
        let mut spec = NewJob::new(
            "acme/app",
            "https://github.com/acme/app.git",
            "refs/pull/7/head",
            "0".repeat(40),
            Event::PullRequest,
        );
        spec.forge = Some(Forge::Github);
        spec.pr_number = Some(7);
        spec.target_branch = Some("main".into());
        spec.source_branch = Some("fix-<b>".into());
        spec.repo_url = Some("https://github.com/acme/app".into());
        let job = Job::queued("01ARZ3NDEKTSV4RRFFQ69G5FAV", spec, Utc::now());
        let fields = fields(&job, "/ci", Utc::now(), None, None);
        let field = |name| fields.iter().find(|f| f.name == name).unwrap();
        assert_eq!(
            field("pull request").href.as_deref(),
            Some("https://github.com/acme/app/pull/7")
        );
        assert_eq!(field("into").value, "main");
        assert_eq!(field("from").value, "fix-<b>", "escaped by the template");
        assert_eq!(
            field("repository").href.as_deref(),
            Some("/ci/repos/acme/app")
        );
        assert_eq!(field("pool").value, "default");

        // A queued job of a paused pool says why it does not start.
        let now = Utc::now();
        let pause = PoolPause {
            by: "ops".into(),
            reason: "new disk".into(),
            since: now - chrono::Duration::seconds(90),
        };
        let paused = super::fields(&job, "/ci", now, Some(&pause), None);
        let pool = paused.iter().find(|f| f.name == "pool").unwrap();
        assert_eq!(
            pool.value,
            "default, paused by ops 1m30s ago: new disk: the job waits"
        );
    }

    #[test]
    fn artifacts_are_downloaded_through_the_server_until_they_expire() {
        let spec = NewJob::new(
            "acme/app",
            "https://git.example/acme/app.git",
            "refs/heads/main",
            "0".repeat(40),
            Event::Push,
        );
        let job = Job::queued("01ARZ3NDEKTSV4RRFFQ69G5FAV", spec, Utc::now());
        let mut kept = raibid_model::JobArtifacts {
            reference: "registry.example/acme/app/artifacts@sha256:00".into(),
            size: 2048,
            files: 3,
            expires_at: None,
            expired: false,
        };
        let shown = artifacts(&job, &kept, "/ci");
        assert_eq!(
            shown.download.as_deref(),
            Some("/ci/api/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV/artifacts")
        );
        assert!(
            shown.summary.starts_with("3 files, 2048 bytes"),
            "{}",
            shown.summary
        );
        kept.expired = true;
        let gone = artifacts(&job, &kept, "/ci");
        assert_eq!(gone.download, None);
        assert!(gone.summary.contains("deleted"), "{}", gone.summary);
    }
}
