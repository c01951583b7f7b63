//! What a commit status says about a job: a forge state, a one-line description, a link.

use chrono::{DateTime, Utc};
use raibid_forge::{CommitStatus, StatusState};
use raibid_model::{BuildStatus, Job, JobStatus, Needs, PoolPause, StepStatus};

/// The status to show for `job` as it is now.
pub(crate) fn commit_status(job: &Job, public_url: &str) -> CommitStatus {
    CommitStatus {
        state: StatusState::from_job(job.status),
        // The job's web page, where the forge's "Details" link takes people.
        target_url: job.page_url(public_url),
        description: describe(job, job.status, Utc::now()),
        context: context(job),
    }
}

/// What the status of queued `job` says while its pool is paused: who paused it stays out (a
/// commit status is public to the repository's readers), why is what they need.
pub(crate) fn held(status: &mut CommitStatus, job: &Job, pause: &PoolPause) {
    status.description = if pause.reason.is_empty() {
        format!("queued: pool {} is paused", job.spec.pool)
    } else {
        format!("queued: pool {} is paused: {}", job.spec.pool, pause.reason)
    };
}

/// The status of matrix job `parent`: its variants' (`children`, in the order recorded;
/// `None` for one that no longer exists) combined. The matrix job itself succeeds as soon as
/// it has queued them, so its own status says nothing about the code.
///
/// Any variant failed (or could not run, or was given up): failure, naming them; else any
/// cancelled: as a cancelled job shows; else all succeeded or were skipped (workflows whose
/// `runs_on` kept them from running): success, naming the skipped; else pending.
pub(crate) fn matrix_status(
    parent: &Job,
    children: &[Option<Job>],
    public_url: &str,
) -> CommitStatus {
    let total = children.len();
    let with = |wanted: &[JobStatus]| -> Vec<String> {
        children
            .iter()
            .flatten()
            .filter(|child| wanted.contains(&child.status))
            .map(|child| child.label().unwrap_or_else(|| child.id.clone()))
            .collect()
    };
    // A matrix's children are its variants; the workflows of `.raibid/` (and their variants),
    // or a pipeline queued again in its own pool, are jobs.
    let variants = children.iter().flatten().all(|child| {
        child.spec.env.contains_key("RAIBID_MATRIX")
            && !child.spec.env.contains_key("RAIBID_WORKFLOW")
    });
    let noun = match (variants, total) {
        (true, 1) => "variant",
        (true, _) => "variants",
        // A pipeline queued again in the pool it names: its one job.
        (false, 1) => "job",
        (false, _) => "jobs",
    };
    let failed = with(&[JobStatus::Failure, JobStatus::Error, JobStatus::Dead]);
    let cancelled = with(&[JobStatus::Cancelled]);
    let skipped = with(&[JobStatus::Skipped]);
    let finished = children
        .iter()
        .flatten()
        .filter(|child| child.status.is_final())
        .count();
    let status = BuildStatus::combine(children.iter().map(Option::as_ref));
    let description = match status {
        JobStatus::Failure => format!(
            "{} of {total} {noun} failed: {}",
            failed.len(),
            failed.join(", ")
        ),
        JobStatus::Cancelled => format!("cancelled: {}", cancelled.join(", ")),
        JobStatus::Success if skipped.is_empty() => format!("all {total} {noun} succeeded"),
        JobStatus::Success => format!(
            "{} of {total} {noun} succeeded, skipped: {}",
            total - skipped.len(),
            skipped.join(", ")
        ),
        _ => format!("{finished} of {total} {noun} finished"),
    };
    CommitStatus {
        state: StatusState::from_job(status),
        target_url: parent.page_url(public_url),
        description,
        context: context(parent),
    }
}

/// `raibid/<event>/<pool>`, plus `/<workflow>` for a job of one workflow of `.raibid/`, plus
/// `/<variant>` for a matrix variant.
///
/// Jobs carry their pool, so one check per pool; the event keeps the push and the pull request
/// builds of one commit apart (Woodpecker: `ci/woodpecker/<event>/<workflow>`), and the
/// workflow and variant keep the jobs of one push apart, or the last to finish would win.
pub(crate) fn context(job: &Job) -> String {
    let base = format!("raibid/{}/{}", job.spec.event, job.spec.pool);
    match job.label() {
        Some(label) => format!("{base}/{label}"),
        None => base,
    }
}

/// Identifies what a status says, to tell whether it was sent already.
pub(crate) fn fingerprint(status: &CommitStatus) -> String {
    format!(
        "{}|{}|{}",
        status.state.as_str(),
        status.context,
        status.description
    )
}

fn describe(job: &Job, status: JobStatus, now: DateTime<Utc>) -> String {
    let verdict = verdict(job, status, now);
    // What its JUnit reports said, after the verdict, as GitLab's pipeline shows it.
    match (&job.tests, status) {
        (Some(tests), JobStatus::Success | JobStatus::Failure) => {
            format!("{verdict}; {}", tests.summary())
        }
        _ => verdict,
    }
}

fn verdict(job: &Job, status: JobStatus, now: DateTime<Utc>) -> String {
    let took = job.duration(now).map(human);
    let reason = job.reason.as_deref();
    match status {
        JobStatus::Blocked => match (&job.concurrency, &job.spec.needs) {
            (Some(group), _) => format!("waiting for concurrency group {group}"),
            (None, Some(needs)) => format!("waiting for {}", needs.workflows.join(", ")),
            (None, None) => format!("waiting for approval: raibid job approve {}", job.id),
        },
        JobStatus::Queued => "queued".into(),
        JobStatus::Running => match &job.agent {
            Some(agent) => format!("running on {agent}"),
            None => "running".into(),
        },
        // A pipeline whose `when` does not match the job (or whose steps' do not): what
        // Woodpecker shows as a skipped pipeline, not a build that passed.
        JobStatus::Success
            if !job.steps.is_empty()
                && job.steps.iter().all(|s| s.status == StepStatus::Skipped) =>
        {
            "skipped: when does not match".into()
        }
        // A job of `.raibid/` workflows, none of which runs for it.
        JobStatus::Success if reason.is_some_and(|r| r.starts_with("skipped: no workflow")) => {
            "skipped: no workflow's when matches".into()
        }
        JobStatus::Success => match took {
            Some(t) => format!("succeeded in {t}"),
            None => "succeeded".into(),
        },
        JobStatus::Failure => match (reason, took) {
            (Some(r), _) => format!("failed: {r}"),
            (None, Some(t)) => format!("failed after {t}"),
            (None, None) => "failed".into(),
        },
        JobStatus::Error => match reason {
            Some(r) => format!("could not run: {r}"),
            None => "could not run".into(),
        },
        // Why, when it is more than "cancelled": a newer build superseded it, its matrix job
        // was cancelled; who, when a person did.
        JobStatus::Cancelled => match reason.filter(|r| *r != "cancelled") {
            Some(r) if r.starts_with("cancelled by ") => r.to_owned(),
            Some(r) => format!("cancelled: {r}"),
            None => "cancelled".into(),
        },
        JobStatus::Dead => match reason {
            Some(r) => format!("gave up: {r}"),
            None => "gave up".into(),
        },
        // `not run: test failed` -> `skipped: test failed`.
        JobStatus::Skipped => match reason.map(|r| r.strip_prefix(Needs::NOT_RUN).unwrap_or(r)) {
            Some(r) => format!("skipped: {r}"),
            None => "skipped".into(),
        },
    }
}

fn human(d: chrono::Duration) -> String {
    let secs = d.num_seconds().max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use raibid_model::{Event, NewJob, PoolName};

    use super::*;

    fn job() -> Job {
        let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
        Job {
            id: "01JABCDEFGHJKMNPQRSTVWXYZ0".into(),
            spec: NewJob {
                pool: PoolName::new("gpu").unwrap(),
                ..NewJob::new(
                    "o/r",
                    "https://g/o/r.git",
                    "refs/heads/main",
                    "a".repeat(40),
                    Event::Push,
                )
            },
            status: JobStatus::Success,
            attempt: 1,
            created_at: t0,
            started_at: Some(t0),
            finished_at: Some(t0 + chrono::Duration::seconds(72)),
            agent: Some("spark-1".into()),
            reason: None,
            cancel_requested: false,
            steps: Vec::new(),
            images: Vec::new(),
            children: Vec::new(),
            artifacts: None,
            tests: None,
            log_pruned: false,
            log_erased: None,
            concurrency: None,
            approved_by: None,
        }
    }

    #[test]
    fn descriptions() {
        let j = job();
        let now = Utc::now();
        assert_eq!(describe(&j, JobStatus::Queued, now), "queued");
        assert_eq!(describe(&j, JobStatus::Running, now), "running on spark-1");
        assert_eq!(describe(&j, JobStatus::Success, now), "succeeded in 1m 12s");
        assert_eq!(describe(&j, JobStatus::Failure, now), "failed after 1m 12s");
        let mut failed = job();
        failed.reason = Some("step test exited with 1".into());
        assert_eq!(
            describe(&failed, JobStatus::Failure, now),
            "failed: step test exited with 1"
        );
        // With JUnit reports, what they said follows the verdict.
        failed.tests = Some(raibid_model::TestReport {
            tests: 120,
            failed: 2,
            skipped: 1,
            files: 1,
            ..Default::default()
        });
        assert_eq!(
            describe(&failed, JobStatus::Failure, now),
            "failed: step test exited with 1; 120 tests: 117 passed, 2 failed, 1 skipped"
        );
        assert_eq!(
            describe(&failed, JobStatus::Running, now),
            "running on spark-1"
        );
        assert_eq!(describe(&j, JobStatus::Cancelled, now), "cancelled");
        let mut superseded = job();
        superseded.reason =
            Some("superseded by job 01KBQ0000000000000000000NW (abcdef0123)".into());
        assert_eq!(
            describe(&superseded, JobStatus::Cancelled, now),
            "cancelled: superseded by job 01KBQ0000000000000000000NW (abcdef0123)"
        );
        superseded.reason = Some("cancelled".into());
        assert_eq!(
            describe(&superseded, JobStatus::Cancelled, now),
            "cancelled"
        );
        superseded.reason = Some("cancelled by alice".into());
        assert_eq!(
            describe(&superseded, JobStatus::Cancelled, now),
            "cancelled by alice"
        );
        superseded.reason = Some("declined by alice".into());
        assert_eq!(
            describe(&superseded, JobStatus::Cancelled, now),
            "cancelled: declined by alice"
        );
        assert_eq!(
            describe(&j, JobStatus::Blocked, now),
            format!("waiting for approval: raibid job approve {}", j.id)
        );
        let mut parked = j.clone();
        parked.concurrency = Some("production".into());
        assert_eq!(
            describe(&parked, JobStatus::Blocked, now),
            "waiting for concurrency group production"
        );
        assert_eq!(
            raibid_forge::StatusState::from_job(JobStatus::Blocked),
            raibid_forge::StatusState::Pending
        );
    }

    #[test]
    fn a_job_whose_steps_were_all_skipped_says_so() {
        let step = |name: &str, status| raibid_model::StepResult {
            name: name.into(),
            status,
            exit_code: None,
            duration_ms: None,
            tail: String::new(),
        };
        let mut skipped = job();
        skipped.reason = Some("skipped: the pipeline's when does not match (branch)".into());
        skipped.steps = vec![
            step("build", StepStatus::Skipped),
            step("test", StepStatus::Skipped),
        ];
        let status = commit_status(&skipped, "");
        assert_eq!(status.state, StatusState::Success);
        assert_eq!(status.description, "skipped: when does not match");
        skipped.steps[1].status = StepStatus::Success;
        assert_eq!(
            describe(&skipped, JobStatus::Success, Utc::now()),
            "succeeded in 1m 12s"
        );
    }

    #[test]
    fn links_to_the_job_and_names_the_pool() {
        let mut running = job();
        running.status = JobStatus::Running;
        let status = commit_status(&running, "https://ci.example/");
        assert_eq!(status.state, StatusState::Pending);
        assert_eq!(
            status.target_url.as_deref(),
            Some("https://ci.example/jobs/01JABCDEFGHJKMNPQRSTVWXYZ0")
        );
        assert_eq!(status.context, "raibid/push/gpu");
        assert_eq!(commit_status(&job(), "").target_url, None);
    }

    #[test]
    fn contexts_keep_events_and_matrix_variants_apart() {
        let mut pr = job();
        pr.spec.event = Event::PullRequest;
        assert_eq!(context(&pr), "raibid/pull_request/gpu");
        pr.spec
            .env
            .insert("RAIBID_MATRIX".into(), "rust-1.80".into());
        pr.spec.matrix_parent = Some("01JABCDEFGHJKMNPQRSTVWXYZ1".into());
        assert_eq!(context(&pr), "raibid/pull_request/gpu/rust-1.80");
    }

    #[test]
    fn a_matrix_job_shows_its_variants_combined() {
        let variant = |name: &str, status: JobStatus| {
            let mut child = job();
            child.status = status;
            child.spec.env.insert("RAIBID_MATRIX".into(), name.into());
            child.spec.matrix_parent = Some(job().id);
            Some(child)
        };
        let parent = job();
        let combined = |children: &[Option<Job>]| {
            let status = matrix_status(&parent, children, "");
            assert_eq!(status.context, "raibid/push/gpu");
            (status.state, status.description)
        };
        assert_eq!(
            combined(&[
                variant("a", JobStatus::Success),
                variant("b", JobStatus::Running)
            ]),
            (StatusState::Pending, "1 of 2 variants finished".into())
        );
        assert_eq!(
            combined(&[
                variant("a", JobStatus::Dead),
                variant("b", JobStatus::Cancelled),
                variant("c", JobStatus::Running)
            ]),
            (StatusState::Failure, "1 of 3 variants failed: a".into())
        );
        assert_eq!(
            combined(&[
                variant("a", JobStatus::Success),
                variant("b", JobStatus::Cancelled)
            ]),
            (StatusState::Error, "cancelled: b".into())
        );
        assert_eq!(
            combined(&[
                variant("a", JobStatus::Success),
                variant("b", JobStatus::Success)
            ]),
            (StatusState::Success, "all 2 variants succeeded".into())
        );
    }

    #[test]
    fn workflows_have_contexts_of_their_own_and_combine_as_jobs() {
        let parent = job();
        let child = |workflow: &str, variant: Option<&str>, status: JobStatus| {
            let mut child = job();
            child.status = status;
            child.spec.matrix_parent = Some(parent.id.clone());
            child
                .spec
                .env
                .insert("RAIBID_WORKFLOW".into(), workflow.into());
            if let Some(variant) = variant {
                child
                    .spec
                    .env
                    .insert("RAIBID_MATRIX".into(), variant.into());
            }
            child
        };
        let build = child("build", None, JobStatus::Success);
        let test = child("test", Some("RUST=1.80"), JobStatus::Failure);
        assert_eq!(context(&build), "raibid/push/gpu/build");
        assert_eq!(context(&test), "raibid/push/gpu/test/RUST=1.80");
        // Submitted by hand to run one workflow, which has a matrix: the matrix as a whole.
        let mut by_hand = job();
        by_hand
            .spec
            .env
            .insert("RAIBID_WORKFLOW".into(), "test".into());
        by_hand
            .spec
            .env
            .insert("RAIBID_MATRIX".into(), "RUST=1.80".into());
        assert_eq!(context(&by_hand), "raibid/push/gpu/test");
        let status = matrix_status(&parent, &[Some(build.clone()), Some(test)], "");
        assert_eq!(status.context, "raibid/push/gpu");
        assert_eq!(
            (status.state, status.description),
            (
                StatusState::Failure,
                "1 of 2 jobs failed: test/RUST=1.80".into()
            )
        );
        let status = matrix_status(&parent, &[Some(build.clone()), None], "");
        assert_eq!(status.description, "1 of 2 jobs finished");

        // A workflow its `runs_on` kept from running passes, named, and shows as skipped.
        let mut notify = child("notify", None, JobStatus::Skipped);
        notify.reason = Some("not run: build succeeded, and it runs only after a failure".into());
        let status = matrix_status(&parent, &[Some(build), Some(notify.clone())], "");
        assert_eq!(
            (status.state, status.description),
            (
                StatusState::Success,
                "1 of 2 jobs succeeded, skipped: notify".into()
            )
        );
        let own = commit_status(&notify, "");
        assert_eq!(own.state, StatusState::Success);
        assert_eq!(
            own.description,
            "skipped: build succeeded, and it runs only after a failure"
        );
    }

    #[test]
    fn one_child_is_one_job() {
        let parent = job();
        let mut moved = job();
        moved.status = JobStatus::Success;
        moved.spec.matrix_parent = Some(parent.id.clone());
        let status = matrix_status(&parent, &[Some(moved)], "");
        assert_eq!(status.description, "all 1 job succeeded");
    }

    #[test]
    fn a_push_whose_workflows_all_skip_says_so() {
        let mut parent = job();
        parent.status = JobStatus::Success;
        parent.reason = Some("skipped: no workflow's when matches (build, test)".into());
        assert_eq!(
            commit_status(&parent, "").description,
            "skipped: no workflow's when matches"
        );
    }

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(human(chrono::Duration::seconds(12)), "12s");
        assert_eq!(human(chrono::Duration::seconds(3725)), "1h 2m");
    }
}
