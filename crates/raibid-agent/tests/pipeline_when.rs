//! The pipeline's own `when` (Woodpecker's workflow filter): a job it does not match runs no
//! step, queues no matrix variant, and ends as a success whose steps are all `skipped`.

use raibid_agent::SecretStore;
use raibid_model::{Event, Job, JobStatus, NewJob, PoolName, StepStatus};
use raibid_testkit::GitRepo;

mod support;
use support::Harness;

const ON_MAIN: &str = "when: { branch: main }\nsteps:\n  - name: build\n    run: echo ran-build\n  \
                       - name: cleanup\n    run: echo ran-cleanup\n    when: { status: failure }\n  \
                       - name: always\n    run: echo ran-always\n    when: { status: [success, failure] }\n";

const SKIPPED: &str = "pipeline skipped: the pipeline's `when` does not match";

/// A push of `sha` to `branch`, compared with `base`.
fn push(repo: &GitRepo, branch: &str, sha: &str, base: Option<&str>) -> NewJob {
    let mut spec = NewJob::new(
        "acme/app",
        repo.url(),
        format!("refs/heads/{branch}"),
        sha,
        Event::Push,
    );
    spec.diff_base = base.map(str::to_owned);
    spec
}

async fn run(h: &Harness, spec: NewJob) -> (Job, String) {
    let job = h.enqueue_spec(spec).await;
    h.run_once(h.runner(SecretStore::default())).await;
    (h.job(&job.id).await, h.log(&job.id).await)
}

fn statuses(job: &Job) -> Vec<(&str, StepStatus)> {
    job.steps
        .iter()
        .map(|s| (s.name.as_str(), s.status))
        .collect()
}

#[tokio::test]
async fn a_pipeline_whose_when_does_not_match_skips_every_step_and_succeeds() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let on_main = repo.commit(&[(".raibid.yaml", ON_MAIN)], "init");
    repo.checkout_new_branch("dev");
    let on_dev = repo.commit(&[("README.md", "dev\n")], "dev work");

    let (done, log) = run(&h, push(&repo, "dev", &on_dev, None)).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert_eq!(
        statuses(&done),
        [
            ("build", StepStatus::Skipped),
            ("cleanup", StepStatus::Skipped),
            ("always", StepStatus::Skipped)
        ],
        "{log}"
    );
    assert_eq!(log.matches(SKIPPED).count(), 1, "{log}");
    assert!(
        log.contains("(`branch`: the job's branch is dev); no step runs"),
        "{log}"
    );
    assert!(!log.contains("ran-"), "{log}");
    assert!(
        done.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("skipped: the pipeline's when does not match")),
        "{:?}",
        done.reason
    );

    let (done, log) = run(&h, push(&repo, "main", &on_main, None)).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert_eq!(
        statuses(&done),
        [
            ("build", StepStatus::Success),
            ("cleanup", StepStatus::Skipped),
            ("always", StepStatus::Success)
        ],
        "{log}"
    );
    assert!(!log.contains(SKIPPED), "{log}");
    assert!(
        log.contains("ran-build") && log.contains("ran-always"),
        "{log}"
    );
}

/// The matrix job decides for its variants: when the pipeline does not run, none is queued.
#[tokio::test]
async fn a_matrix_pipeline_whose_when_does_not_match_queues_no_variant() {
    let h = Harness::new();
    let repo = GitRepo::new();
    repo.commit(&[("README.md", "hi\n")], "init");
    repo.checkout_new_branch("dev");
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "when:\n  branch: main\nmatrix:\n  FLAVOUR: [plain, fancy]\nsteps:\n  - name: show\n    run: echo flavour=$FLAVOUR\n",
        )],
        "matrix",
    );
    let (done, log) = run(&h, push(&repo, "dev", &sha, None)).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert_eq!(statuses(&done), [("show", StepStatus::Skipped)], "{log}");
    assert!(done.children.is_empty(), "{:?}", done.children);
    assert_eq!(log.matches(SKIPPED).count(), 1, "{log}");
    assert!(!log.contains("queued"), "{log}");
    let stats = h.queue.stats(&PoolName::default()).await.unwrap();
    assert_eq!(stats.lag, 0, "nothing left to run: {stats:?}");
    assert!(
        h.run_once(h.runner(SecretStore::default()))
            .await
            .is_empty()
    );
}

/// A `path` filter on the pipeline compares the commit with its base like a step's does,
/// and unknown changes run the pipeline.
#[tokio::test]
async fn a_pipeline_path_filter_skips_the_pipeline_for_other_files() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let first = repo.commit(
        &[
            (
                ".raibid.yaml",
                "when: { path: \"src/**\" }\nsteps:\n  - name: build\n    run: echo ran-build\n",
            ),
            ("src/main.rs", "fn main() {}\n"),
        ],
        "init",
    );
    let docs = repo.commit(&[("docs/index.md", "# docs\n")], "docs only");
    let code = repo.commit(&[("src/main.rs", "fn main() { }\n")], "code");

    let (done, log) = run(&h, push(&repo, "main", &docs, Some(&first))).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert_eq!(statuses(&done), [("build", StepStatus::Skipped)], "{log}");
    assert!(
        log.contains("(`path`: none of the 1 changed file(s) is wanted)"),
        "{log}"
    );

    let (done, log) = run(&h, push(&repo, "main", &code, Some(&docs))).await;
    assert_eq!(statuses(&done), [("build", StepStatus::Success)], "{log}");

    let (done, log) = run(&h, push(&repo, "main", &docs, None)).await;
    assert_eq!(statuses(&done), [("build", StepStatus::Success)], "{log}");
    assert!(
        log.contains("path filters not applied, the pipeline runs: the push created the branch"),
        "{log}"
    );
}

/// Woodpecker's `on_empty`: a commit known to change no files runs the steps whose path
/// filter leaves it at its default and skips those with `on_empty: false`; and a branch filter
/// that excludes a branch skips the step there.
#[tokio::test]
async fn on_empty_and_an_excluded_branch_decide_as_in_woodpecker() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let pipeline = "steps:\n  - name: default\n    run: echo ran-default\n    \
                    when: { path: \"src/**\" }\n  - name: strict\n    run: echo ran-strict\n    \
                    when: { path: { include: \"src/**\", on_empty: false } }\n  \
                    - name: not-on-main\n    run: echo ran-not-on-main\n    \
                    when: { branch: { exclude: main } }\n";
    let first = repo.commit(&[(".raibid.yaml", pipeline)], "init");
    repo.git(&["commit", "--quiet", "--allow-empty", "-m", "nothing"]);
    let empty = repo.git(&["rev-parse", "HEAD"]);
    let (done, log) = run(&h, push(&repo, "main", empty.trim(), Some(&first))).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert_eq!(
        statuses(&done),
        [
            ("default", StepStatus::Success),
            ("strict", StepStatus::Skipped),
            ("not-on-main", StepStatus::Skipped)
        ],
        "{log}"
    );
    assert!(
        log.contains(
            "the commit changes no files compared with its base, so steps with `when: path` \
             run unless a filter says `on_empty: false`"
        ),
        "{log}"
    );
    let (done, log) = run(&h, push(&repo, "dev", empty.trim(), Some(&first))).await;
    assert_eq!(
        statuses(&done),
        [
            ("default", StepStatus::Success),
            ("strict", StepStatus::Skipped),
            ("not-on-main", StepStatus::Success)
        ],
        "{log}"
    );
}

/// A tag `name` of `sha` (tagged in `repo`), built as a tag push.
fn tag_push(repo: &GitRepo, name: &str, sha: &str) -> NewJob {
    repo.git(&["tag", name, sha]);
    NewJob::new(
        "acme/app",
        repo.url(),
        format!("refs/tags/{name}"),
        sha,
        Event::Tag,
    )
}

/// Woodpecker's list form of `when`: a step, or the whole pipeline, runs when any of its
/// blocks matches: a push to main and a tag run it, a push to dev does not.
#[tokio::test]
async fn a_when_list_runs_when_any_of_its_blocks_matches() {
    const STEP_LIST: &str = "steps:\n  - name: build\n    run: echo ran-build\n  \
                             - name: release\n    run: echo ran-release\n    when:\n      \
                             - branch: main\n      - event: tag\n";
    const PIPELINE_LIST: &str = "when:\n  - { event: push, branch: main }\n  - event: tag\n\
                                 steps:\n  - name: build\n    run: echo ran-build\n";
    let h = Harness::new();
    let repo = GitRepo::new();
    let step_main = repo.commit(&[(".raibid.yaml", STEP_LIST)], "step list");
    let pipeline_main = repo.commit(&[(".raibid.yaml", PIPELINE_LIST)], "pipeline list");
    repo.checkout_new_branch("dev");
    let step_dev = repo.commit(&[(".raibid.yaml", STEP_LIST)], "step list on dev");
    let pipeline_dev = repo.commit(&[(".raibid.yaml", PIPELINE_LIST)], "pipeline list on dev");

    for (spec, release) in [
        (push(&repo, "main", &step_main, None), StepStatus::Success),
        (tag_push(&repo, "v1", &step_main), StepStatus::Success),
        (push(&repo, "dev", &step_dev, None), StepStatus::Skipped),
    ] {
        let (done, log) = run(&h, spec).await;
        assert_eq!(done.status, JobStatus::Success, "{log}");
        assert_eq!(
            statuses(&done),
            [("build", StepStatus::Success), ("release", release)],
            "{log}"
        );
        assert_eq!(
            log.contains("ran-release"),
            release == StepStatus::Success,
            "{log}"
        );
    }

    for spec in [
        push(&repo, "main", &pipeline_main, None),
        tag_push(&repo, "v2", &pipeline_main),
    ] {
        let (done, log) = run(&h, spec).await;
        assert_eq!(statuses(&done), [("build", StepStatus::Success)], "{log}");
        assert!(!log.contains(SKIPPED), "{log}");
    }
    let (done, log) = run(&h, push(&repo, "dev", &pipeline_dev, None)).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert_eq!(statuses(&done), [("build", StepStatus::Skipped)], "{log}");
    assert!(
        log.contains(
            "(no block matches: block 1 `branch`: the job's branch is dev; block 2 `event`: \
             the job's event is push); no step runs"
        ),
        "{log}"
    );
    assert_eq!(
        done.reason.as_deref(),
        Some("skipped: the pipeline's when does not match (no block matches: branch, event)")
    );
}

/// Woodpecker's `when: matrix` (a step of one variant only), `cron` (a step of one schedule),
/// `repo` and `ref`, as the agent fills them in for each job.
#[tokio::test]
async fn steps_filter_on_the_variant_the_schedule_the_repository_and_the_ref() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: publish\n    run: echo ran-publish-$RUST\n    when: { matrix: { RUST: stable } }\n  \
             - name: nightly\n    run: echo ran-nightly\n    when: { cron: \"night*\" }\n  \
             - name: upstream\n    run: echo ran-upstream\n    when: { repo: ACME/app }\n  \
             - name: main\n    run: echo ran-main\n    when: { ref: refs/heads/main }\n\
             matrix:\n  RUST: [stable, \"1.80\"]\n",
        )],
        "filters",
    );
    // A push: the matrix job queues two variants; each runs `publish` only if it is stable.
    let parent = h.enqueue_spec(push(&repo, "main", &sha, None)).await;
    let runner = h.runner(SecretStore::default());
    h.run_once(runner.clone()).await;
    let mut ran = Vec::new();
    for _ in 0..2 {
        for (id, _) in h.run_once(runner.clone()).await {
            let job = h.job(&id).await;
            let log = h.log(&id).await;
            assert_eq!(job.status, JobStatus::Success, "{log}");
            ran.push((
                job.spec.env["RAIBID_MATRIX"].clone(),
                statuses(&job)
                    .iter()
                    .map(|(n, s)| (n.to_string(), *s))
                    .collect::<Vec<_>>(),
                log,
            ));
        }
    }
    ran.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(ran.len(), 2, "{parent:?}");
    let (stable, other) = (&ran[1], &ran[0]);
    assert_eq!(stable.0, "RUST=stable");
    let expect = |publish| {
        vec![
            ("publish".to_owned(), publish),
            ("nightly".to_owned(), StepStatus::Skipped),
            ("upstream".to_owned(), StepStatus::Success),
            ("main".to_owned(), StepStatus::Success),
        ]
    };
    assert_eq!(stable.1, expect(StepStatus::Success), "{}", stable.2);
    assert!(stable.2.contains("ran-publish-stable"), "{}", stable.2);
    assert_eq!(other.1, expect(StepStatus::Skipped), "{}", other.2);

    // A job of the `nightly` schedule, on a branch, of a fork: `nightly` runs, `upstream`
    // and `main` do not.
    let mut spec = push(&repo, "dev", &sha, None);
    spec.repo = "someone/app".into();
    spec.event = Event::Cron;
    spec.schedule = Some("nightly".into());
    spec.env.insert("RAIBID_MATRIX".into(), "RUST=1.80".into());
    let (done, log) = run(&h, spec).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert_eq!(
        statuses(&done),
        [
            ("publish", StepStatus::Skipped),
            ("nightly", StepStatus::Success),
            ("upstream", StepStatus::Skipped),
            ("main", StepStatus::Skipped)
        ],
        "{log}"
    );
    assert!(log.contains("ran-nightly"), "{log}");
}
