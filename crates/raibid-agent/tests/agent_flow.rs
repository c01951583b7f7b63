//! The whole agent path with real processes: redis-server, git repositories, bubblewrap,
//! buildah and an OCI registry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use raibid_agent::executor::HostExecutor;
use raibid_agent::{JobEnd, SecretStore, StepUser, run_agent};
use raibid_model::{Event, JobStatus, NewJob, PoolName, StepStatus};
use raibid_queue::{LogCursor, Queue, QueueOptions};
use raibid_testkit::{GitDaemon, GitRepo, RedisServer, require_binary};
use tokio_util::sync::CancellationToken;

mod support;
use support::{Harness, options};

const TWO_STEPS: &str = "steps:\n  - name: build\n    run: echo building-$RAIBID_REPO > \"$HOME/state\"\n  - name: test\n    run: |\n      echo testing\n      test -f README.md\n      cat \"$HOME/state\"\n";

#[tokio::test]
async fn a_two_step_pipeline_runs_under_bwrap_and_succeeds() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(".raibid.yaml", TWO_STEPS), ("README.md", "hi\n")],
        "init",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    let ends = h.run_once(h.runner(SecretStore::default())).await;
    assert_eq!(
        ends,
        vec![(job.id.clone(), JobEnd::Acked(JobStatus::Success))]
    );

    let done = h.job(&job.id).await;
    assert_eq!(done.status, JobStatus::Success);
    assert_eq!(done.steps.len(), 2);
    assert!(
        done.steps.iter().all(|s| s.status == StepStatus::Success),
        "{:?}",
        done.steps
    );
    let log = h.log(&job.id).await;
    assert!(
        log.contains("▶ step build") && log.contains("▶ step test"),
        "{log}"
    );
    assert!(log.contains("building-acme/app"), "{log}");
    assert!(log.contains("testing"), "{log}");
    assert!(log.contains(&sha), "the log names the commit: {log}");
    assert_eq!(h.work_left(), Vec::<String>::new(), "workspace removed");
}

/// Woodpecker's variables of the commit, the repository and the step reach every step.
#[tokio::test]
async fn the_commit_repository_and_step_variables_reach_the_steps() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: show\n    run: |\n      echo \"step=$CI_STEP_NAME owner=$CI_REPO_OWNER name=$CI_REPO_NAME\"\n      echo \"author=$CI_COMMIT_AUTHOR <$CI_COMMIT_AUTHOR_EMAIL>\"\n      printf 'message=%s|\\n' \"$CI_COMMIT_MESSAGE\"\n      echo \"page=$CI_PIPELINE_URL on=$CI_MACHINE by=$CI_SYSTEM_NAME step=$CI_STEP_NUMBER\"\n",
        )],
        "Add the pipeline\n\nWith a body.",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let log = h.log(&job.id).await;
    assert_eq!(h.job(&job.id).await.status, JobStatus::Success, "{log}");
    assert!(log.contains("step=show owner=acme name=app\n"), "{log}");
    assert!(
        log.contains("author=raibid test <test@raibid.invalid>\n"),
        "{log}"
    );
    assert!(
        log.contains("message=Add the pipeline\n\nWith a body.|\n"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "page={}/jobs/{} on={} by=raibid step=1\n",
            support::PUBLIC_URL,
            job.id,
            support::AGENT_NAME
        )),
        "{log}"
    );
}

/// A job's steps learn how the branch's previous job went (Woodpecker's `CI_PREV_*`), which a
/// notification step compares with its own to say "fixed"; another branch's job is not it.
#[tokio::test]
async fn steps_are_told_about_the_branch_s_previous_job() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let show = "steps:\n  - name: show\n    run: echo \"prev=${CI_PREV_PIPELINE_STATUS:-none} sha=${CI_PREV_COMMIT_SHA:-none} msg=${CI_PREV_COMMIT_MESSAGE:-none}\"\n";
    let broken = repo.commit(
        &[(".raibid.yaml", "steps:\n  - name: fail\n    run: exit 3\n")],
        "broken",
    );
    let fixed = repo.commit(&[(".raibid.yaml", show)], "fixed");

    let first = h.enqueue(&repo.url(), &broken).await;
    h.run_once(h.runner(SecretStore::default())).await;
    assert_eq!(h.job(&first.id).await.status, JobStatus::Failure);
    // A job of another branch in between.
    let other = NewJob::new(
        "acme/app",
        repo.url(),
        "refs/heads/dev",
        &fixed,
        Event::Push,
    );
    let other = h.enqueue_spec(other).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let log = h.log(&other.id).await;
    assert!(
        log.contains("prev=none sha=none msg=none\n"),
        "dev has no earlier job: {log}"
    );

    let second = h.enqueue(&repo.url(), &fixed).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let log = h.log(&second.id).await;
    assert_eq!(h.job(&second.id).await.status, JobStatus::Success, "{log}");
    assert!(
        log.contains(&format!("prev=failure sha={broken} msg=broken\n")),
        "{log}"
    );
}

/// The variables name the workspace and HOME where the sandbox shows them, the same in every
/// job, not the job's directories on the host.
#[tokio::test]
async fn sandboxed_steps_are_told_the_paths_they_see() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: paths\n    run: |\n      echo \"ws=$CI_WORKSPACE raibid=$RAIBID_WORKSPACE pwd=$(pwd) home=$HOME\"\n      test -f README.md && test -w \"$HOME\" && echo usable\n",
        ),
        ("README.md", "hi\n")],
        "init",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner(SecretStore::default())).await;
    assert_eq!(h.job(&job.id).await.status, JobStatus::Success);
    let log = h.log(&job.id).await;
    let (ws, home) = (
        raibid_agent::executor::SANDBOX_WORKSPACE,
        raibid_agent::executor::SANDBOX_HOME,
    );
    assert!(
        log.contains(&format!("ws={ws} raibid={ws} pwd={ws} home={home}\nusable")),
        "{log}"
    );
}

#[tokio::test]
async fn a_failing_step_fails_the_job_with_its_exit_code() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: ok\n    run: echo fine\n  - name: broken\n    run: exit 3\n  - name: never\n    run: echo unreachable\n",
        )],
        "init",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let done = h.job(&job.id).await;
    assert_eq!(done.status, JobStatus::Failure);
    assert_eq!(done.steps[1].exit_code, Some(3));
    assert_eq!(done.steps[1].status, StepStatus::Failure);
    assert_eq!(done.steps[2].status, StepStatus::Skipped);
    assert!(done.reason.unwrap().contains("exit code 3"));
    assert!(!h.log(&job.id).await.contains("unreachable"));
}

/// Woodpecker's `failure: ignore` and `when: status`: an ignored failure lets the job go on
/// and pass; after a real failure only `status: failure` steps run, see how the job stands,
/// and cannot change its verdict.
#[tokio::test]
async fn ignored_failures_go_on_and_failure_steps_run_after_a_failure() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let passing = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: lint\n    run: exit 4\n    failure: ignore\n  \
             - name: test\n    run: echo tested-$CI_PIPELINE_STATUS\n  \
             - name: on-failure\n    run: echo unreachable-cleanup\n    when: { status: failure }\n  \
             - name: always\n    run: echo always-$RAIBID_JOB_STATUS\n    when: { status: [success, failure] }\n",
        )],
        "an ignored failure",
    );
    let (done, log) = h.run(&repo.url(), &passing).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    use StepStatus::{Failure, Skipped, Success};
    let statuses = |job: &raibid_model::Job| job.steps.iter().map(|s| s.status).collect::<Vec<_>>();
    assert_eq!(statuses(&done), [Failure, Success, Skipped, Success]);
    assert_eq!(done.steps[0].exit_code, Some(4));
    assert!(log.contains("ignored (failure: ignore)"), "{log}");
    assert!(
        log.contains("tested-success") && log.contains("always-success"),
        "{log}"
    );
    assert!(!log.contains("unreachable-cleanup"), "{log}");
    assert_eq!(
        done.reason.as_deref(),
        Some("2 step(s) passed, 1 failed (failure: ignore)")
    );

    let failing = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: test\n    run: exit 3\n  \
             - name: skipped\n    run: echo unreachable-step\n  \
             - name: logs\n    run: echo cleanup-$CI_PIPELINE_STATUS; exit 9\n    when: { status: failure }\n  \
             - name: elsewhere\n    run: echo unreachable-branch\n    when: { status: failure, branch: other }\n  \
             - name: always\n    run: echo always-$RAIBID_JOB_STATUS\n    when: { status: [success, failure] }\n",
        )],
        "a real failure",
    );
    let (done, log) = h.run(&repo.url(), &failing).await;
    assert_eq!(done.status, JobStatus::Failure, "{log}");
    assert_eq!(
        statuses(&done),
        [Failure, Skipped, Failure, Skipped, Success]
    );
    assert!(
        log.contains("cleanup-failure") && log.contains("always-failure"),
        "{log}"
    );
    assert!(!log.contains("unreachable-"), "{log}");
    // The first failure is the verdict, not the clean-up step's.
    assert_eq!(done.reason.as_deref(), Some("step test exit code 3"));
}

#[tokio::test]
async fn an_invalid_pipeline_file_errors_with_file_line_and_column() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: build\n    run: make\n    tiemout: 5m\n",
        )],
        "typo",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let done = h.job(&job.id).await;
    assert_eq!(done.status, JobStatus::Error);
    let reason = done.reason.unwrap();
    assert!(reason.starts_with(".raibid.yaml:4:"), "{reason}");
    assert!(reason.contains("tiemout"), "{reason}");
    assert!(h.log(&job.id).await.contains(".raibid.yaml:4:"));
}

#[tokio::test]
async fn without_a_pipeline_file_the_makefile_is_detected() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(&[("Makefile", "test:\n\t@echo from-make-test\n")], "make");
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let done = h.job(&job.id).await;
    let log = h.log(&job.id).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert!(log.contains("from-make-test"), "{log}");
    assert!(
        log.to_lowercase().contains("makefile"),
        "the log says what was detected: {log}"
    );
}

#[tokio::test]
async fn secrets_are_masked_and_denied_to_other_repositories() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: use\n    secrets: [TOKEN]\n    run: echo the token is $TOKEN\n",
        )],
        "init",
    );
    let values = BTreeMap::from([("TOKEN".to_owned(), "tok-9f8e7d6c".to_owned())]);
    let allowed = BTreeMap::from([("TOKEN".to_owned(), vec!["acme/*".to_owned()])]);
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner(SecretStore::new(values.clone(), &allowed, false).unwrap()))
        .await;
    let log = h.log(&job.id).await;
    assert_eq!(h.job(&job.id).await.status, JobStatus::Success, "{log}");
    assert!(log.contains("the token is ***"), "{log}");
    assert!(!log.contains("tok-9f8e7d6c"), "{log}");

    let other = BTreeMap::from([("TOKEN".to_owned(), vec!["someone-else/*".to_owned()])]);
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner(SecretStore::new(values, &other, false).unwrap()))
        .await;
    let done = h.job(&job.id).await;
    assert_eq!(done.status, JobStatus::Error);
    assert!(
        done.reason
            .unwrap()
            .contains("not available to repository acme/app")
    );
}

#[tokio::test]
async fn cancelling_a_running_job_stops_it() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: wait\n    run: sleep 120\n",
        )],
        "slow",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    h.cancel_when(&job.id, |job| job.status == JobStatus::Running);
    let started = std::time::Instant::now();
    let ends = h.run_once(h.runner(SecretStore::default())).await;
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(ends[0].1, JobEnd::Acked(JobStatus::Cancelled));
    assert_eq!(h.job(&job.id).await.status, JobStatus::Cancelled);
}

#[tokio::test]
async fn a_step_timeout_fails_the_job() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: hang\n    timeout: 1s\n    run: sleep 120\n",
        )],
        "hang",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let done = h.job(&job.id).await;
    assert_eq!(done.status, JobStatus::Failure);
    assert!(done.reason.unwrap().contains("timed out"));
}

#[tokio::test]
async fn checkout_over_git_daemon_reuses_the_mirror() {
    let h = Harness::new();
    let base = tempfile::tempdir().unwrap();
    let repo = GitRepo::new();
    let first = repo.commit(&[(".raibid.yaml", TWO_STEPS), ("README.md", "1\n")], "one");
    let bare = base.path().join("acme").join("app.git");
    std::fs::create_dir_all(bare.parent().unwrap()).unwrap();
    repo.git(&["clone", "--quiet", "--bare", ".", bare.to_str().unwrap()]);
    let daemon = GitDaemon::serve(base.path());
    let url = daemon.url_for(&bare);

    let runner = h.runner(SecretStore::default());
    let job = h.enqueue(&url, &first).await;
    h.run_once(runner.clone()).await;
    assert_eq!(
        h.job(&job.id).await.status,
        JobStatus::Success,
        "{}",
        h.log(&job.id).await
    );
    assert!(h.log(&job.id).await.contains("new mirror"));

    // The same commit again: no network at all.
    let job = h.enqueue(&url, &first).await;
    h.run_once(runner.clone()).await;
    assert!(
        h.log(&job.id)
            .await
            .contains("mirror already had the commit")
    );

    // A new commit: fetched into the mirror; and the checkout is exactly that commit.
    let second = repo.commit(&[("README.md", "2\n")], "two");
    repo.git(&["push", "--quiet", bare.to_str().unwrap(), "main"]);
    let job = h.enqueue(&url, &second).await;
    h.run_once(runner.clone()).await;
    let log = h.log(&job.id).await;
    assert!(log.contains("mirror fetched"), "{log}");
    assert_eq!(h.job(&job.id).await.status, JobStatus::Success, "{log}");

    // The older commit again, after the branch moved on: served from the mirror.
    let job = h.enqueue(&url, &first).await;
    h.run_once(runner).await;
    assert_eq!(h.job(&job.id).await.status, JobStatus::Success);
    assert!(
        h.log(&job.id)
            .await
            .contains("mirror already had the commit")
    );
}

#[tokio::test]
async fn the_exact_commit_is_built_not_the_branch_head() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let old = repo.commit(
        &[
            (
                ".raibid.yaml",
                "steps:\n  - name: which\n    run: cat version.txt\n",
            ),
            ("version.txt", "old-version\n"),
        ],
        "old",
    );
    repo.commit(&[("version.txt", "new-version\n")], "new");
    let job = h.enqueue(&repo.url(), &old).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let log = h.log(&job.id).await;
    assert!(
        log.contains("old-version") && !log.contains("new-version"),
        "{log}"
    );
}

#[tokio::test]
async fn an_unknown_commit_is_a_clear_error() {
    let h = Harness::new();
    let repo = GitRepo::new();
    repo.commit(&[("a", "b")], "init");
    let job = h.enqueue(&repo.url(), &"ab".repeat(20)).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let done = h.job(&job.id).await;
    assert_eq!(done.status, JobStatus::Error);
    assert!(done.reason.unwrap().contains("is not in"));
}

#[tokio::test]
async fn a_matrix_pipeline_becomes_one_job_per_variant() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "matrix:\n  FLAVOUR: [plain, fancy]\nsteps:\n  - name: show\n    run: echo flavour=$FLAVOUR\n",
        )],
        "matrix",
    );
    let parent = h.enqueue(&repo.url(), &sha).await;
    let runner = h.runner(SecretStore::default());
    h.run_once(runner.clone()).await;
    let done = h.job(&parent.id).await;
    assert_eq!(done.status, JobStatus::Success);
    assert!(done.reason.unwrap().contains("expanded into 2 jobs"));
    let mut seen = Vec::new();
    for _ in 0..2 {
        for (id, _) in h.run_once(runner.clone()).await {
            seen.push(h.log(&id).await);
        }
    }
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().any(|l| l.contains("flavour=plain")));
    assert!(seen.iter().any(|l| l.contains("flavour=fancy")));
}

/// A job queued without a title (a submission, a schedule: only a webhook brings one) gets
/// its commit's subject once its agent has checked the commit out, as Woodpecker shows a
/// manual or cron pipeline's commit message; the variants it queues carry it.
#[tokio::test]
async fn a_job_queued_without_a_title_gets_its_commits_subject() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "matrix:\n  FLAVOUR: [plain, fancy]\nsteps:\n  - name: show\n    run: echo $FLAVOUR\n",
        )],
        "Speed up the parser\n\nIt read every line twice.",
    );
    let parent = h.enqueue(&repo.url(), &sha).await;
    assert_eq!(parent.spec.title, None);
    let runner = h.runner(SecretStore::default());
    h.run_once(runner.clone()).await;
    let done = h.job(&parent.id).await;
    assert_eq!(done.spec.title.as_deref(), Some("Speed up the parser"));
    assert_eq!(done.children.len(), 2, "{:?}", done.reason);
    for child in &done.children {
        let child = h.job(child).await;
        assert_eq!(child.spec.title.as_deref(), Some("Speed up the parser"));
    }

    // A webhook's title stays as the forge sent it (a pull request's is not its commit's).
    let sha = repo.commit(
        &[(".raibid.yaml", "steps:\n  - name: show\n    run: echo hi\n")],
        "Inline the lexer",
    );
    let mut spec = Harness::pull_request(&repo.url(), &sha, 7, false);
    spec.title = Some("Make parsing faster".into());
    // Of its own: the variants above wait in the first one's queue.
    let (done, log) = Harness::new().run_spec(spec).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert_eq!(done.spec.title.as_deref(), Some("Make parsing faster"));
}

/// A Woodpecker file's `${NAME}` are substituted before it is read, as Woodpecker does it: from
/// the job's variables and a matrix variant's values, with bash's operations, and `$$` stands
/// for a `$` left to the step's shell; a variable the job does not have is an error naming it,
/// with its line and column.
#[tokio::test]
async fn a_woodpecker_file_s_variables_are_substituted_before_it_is_read() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".woodpecker.yaml",
            "steps:\n  - name: show\n    commands:\n      \
             - echo short=${CI_COMMIT_SHA:0:7} branch=${CI_COMMIT_BRANCH^^}\n      \
             - echo home=$${HOME} dollar=$$ unset=${NOT_SET:-none}\n    \
             when:\n      branch: ${CI_REPO_DEFAULT_BRANCH}\n",
        )],
        "substituted",
    );
    let (job, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(job.status, JobStatus::Success, "{log}");
    assert!(
        log.contains(&format!("short={} branch=MAIN", &sha[..7])),
        "{log}"
    );
    // `$${HOME}` reached the shell as `${HOME}`: a path, not the shell's process id.
    assert!(log.contains("home=/"), "{log}");
    assert!(log.contains("unset=none"), "{log}");

    let sha = repo.commit(
        &[(
            ".woodpecker.yaml",
            "steps:\n  - name: show\n    commands:\n      - echo ${HOME}\n",
        )],
        "a variable the pipeline does not have",
    );
    let (job, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(job.status, JobStatus::Error, "{log}");
    let reason = job.reason.unwrap_or_default();
    assert!(
        reason.contains(".woodpecker.yaml:4:14: no variable HOME") && reason.contains("$${HOME}"),
        "{reason}"
    );

    let sha = repo.commit(
        &[(
            ".woodpecker.yaml",
            "matrix:\n  GO: [\"1.21\", \"1.22\"]\nsteps:\n  - name: show\n    \
             image: golang:${GO}\n    commands: [echo go=${GO}]\n",
        )],
        "matrix",
    );
    let parent = h.enqueue(&repo.url(), &sha).await;
    let runner = h.runner(SecretStore::default());
    h.run_once(runner.clone()).await;
    let done = h.job(&parent.id).await;
    assert_eq!(
        done.status,
        JobStatus::Success,
        "{}",
        h.log(&parent.id).await
    );
    let mut seen = Vec::new();
    for _ in 0..2 {
        for (id, _) in h.run_once(runner.clone()).await {
            seen.push(h.log(&id).await);
        }
    }
    assert!(seen.iter().any(|l| l.contains("go=1.21")), "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("go=1.22")), "{seen:?}");
}

#[tokio::test]
async fn shutdown_hands_a_running_job_back_after_the_grace_period() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: wait\n    run: sleep 120\n",
        )],
        "slow",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(run_agent(
        h.runner(SecretStore::default()),
        options(false),
        shutdown.clone(),
    ));
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if h.job(&job.id).await.status == JobStatus::Running {
            break;
        }
    }
    shutdown.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .expect("agent stops")
        .unwrap()
        .unwrap();
    assert!(
        matches!(summary.jobs[0].1, JobEnd::Released(_)),
        "{summary:?}"
    );
    let job = h.job(&job.id).await;
    assert_eq!(
        job.status,
        JobStatus::Queued,
        "handed back for another agent"
    );
    assert_eq!(h.queue.stats(&PoolName::default()).await.unwrap().lag, 1);
}

#[tokio::test]
async fn an_idle_once_agent_exits_quietly() {
    let h = Harness::new();
    let started = std::time::Instant::now();
    let ends = h.run_once(h.runner(SecretStore::default())).await;
    assert!(ends.is_empty());
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(
        h.queue
            .agents(chrono::Duration::minutes(5))
            .await
            .unwrap()
            .is_empty(),
        "deregistered"
    );
}

#[tokio::test]
async fn an_image_build_step_pushes_to_the_registry_and_records_the_digest() {
    require_binary("buildah", "buildah");
    let h = Harness::new();
    let registry = raibid_testkit::Registry::start();
    let builder = h.image_builder(&registry);
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[
            (
                ".raibid.yaml",
                "steps:\n  - name: image\n    image-build:\n      tags: [\"{registry}/{repo}:{short_sha}\"]\n      cache: \"{registry}/{repo}/cache\"\n",
            ),
            ("Containerfile", "FROM scratch\nCOPY hello.txt /hello.txt\n"),
            ("hello.txt", "hello from raibid\n"),
        ],
        "image",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner_with_images(SecretStore::default(), Some(builder), &registry.host()))
        .await;
    let done = h.job(&job.id).await;
    let log = h.log(&job.id).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert_eq!(done.images.len(), 1, "{:?}", done.images);
    assert!(done.images[0].contains("@sha256:"), "{:?}", done.images);
    assert!(registry.tags("acme/app").contains(&sha[..7].to_owned()));
    // The layer cache went to this architecture's own repository.
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        "x86_64" => "amd64",
        other => other,
    };
    assert!(
        !registry.tags(&format!("acme/app/cache/{arch}")).is_empty(),
        "no layer cache in acme/app/cache/{arch}: {log}"
    );
}

/// As in Woodpecker, a pull request's branch is the one it targets: `when: branch: main`
/// runs for a pull request into main, and `CI_COMMIT_BRANCH` names it.
#[tokio::test]
async fn branch_filters_match_the_branch_a_pull_request_targets() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: on-main\n    when: { branch: main }\n    \
             run: echo \"branch=$CI_COMMIT_BRANCH target=$CI_COMMIT_TARGET_BRANCH\"\n  \
             - name: on-release\n    when: { branch: release }\n    run: echo never\n",
        )],
        "init",
    );
    let mut spec = NewJob::new(
        "acme/app",
        repo.url(),
        "refs/pull/7/head",
        &sha,
        Event::PullRequest,
    );
    spec.pr_number = Some(7);
    spec.target_branch = Some("main".into());
    let job = h.enqueue_spec(spec).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let done = h.job(&job.id).await;
    let log = h.log(&job.id).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert!(log.contains("branch=main target=main"), "{log}");
    assert!(!log.contains("never"), "{log}");
    let ran: Vec<_> = done
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.status))
        .collect();
    assert_eq!(ran[0], ("on-main", StepStatus::Success), "{ran:?}");
}

/// Two steps with Woodpecker's `when: path`, one for the code and one for the docs.
const PATH_STEPS: &str = "steps:\n  - name: code\n    when: { path: \"src/**\" }\n    run: echo ran-code\n  \
                          - name: docs\n    when: { path: \"docs/**\" }\n    run: echo ran-docs\n";

/// A push of `sha` to main compared with `base`.
fn push_since(repo: &GitRepo, sha: &str, base: Option<&str>) -> NewJob {
    let mut spec = NewJob::new("acme/app", repo.url(), "refs/heads/main", sha, Event::Push);
    spec.diff_base = base.map(str::to_owned);
    spec
}

/// Every step of a push learns the files it changes (Woodpecker's `CI_PIPELINE_FILES`, a
/// JSON list), without a path filter; a job without a base to compare with has none.
#[tokio::test]
async fn steps_are_told_the_files_the_commit_changes() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let show = "steps:\n  - name: files\n    run: echo \"files=${CI_PIPELINE_FILES:-unset}\"\n";
    let first = repo.commit(&[(".raibid.yaml", show), ("a.txt", "a\n")], "init");
    let second = repo.commit(
        &[("src/b c.rs", "fn b() {}\n"), ("a.txt", "a2\n")],
        "two files",
    );
    let job = h
        .enqueue_spec(push_since(&repo, &second, Some(&first)))
        .await;
    h.run_once(h.runner(SecretStore::default())).await;
    let log = h.log(&job.id).await;
    assert_eq!(h.job(&job.id).await.status, JobStatus::Success, "{log}");
    assert!(log.contains(r#"files=["a.txt","src/b c.rs"]"#), "{log}");

    let job = h.enqueue_spec(push_since(&repo, &second, None)).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let log = h.log(&job.id).await;
    assert!(log.contains("files=unset\n"), "{log}");
}

/// `when: path` skips a step whose files the commit did not touch, exactly as a branch filter
/// does (status `skipped`, the same log line); a pull request counts its changes from the
/// merge base, so what its target branch did meanwhile does not run the code step.
#[tokio::test]
async fn path_filters_skip_steps_whose_files_did_not_change() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let first = repo.commit(
        &[
            (".raibid.yaml", PATH_STEPS),
            ("src/main.rs", "fn main() {}\n"),
            ("docs/index.md", "# docs\n"),
        ],
        "init",
    );
    let second = repo.commit(&[("docs/index.md", "# better docs\n")], "docs only");
    let job = h
        .enqueue_spec(push_since(&repo, &second, Some(&first)))
        .await;
    h.run_once(h.runner(SecretStore::default())).await;
    let done = h.job(&job.id).await;
    let log = h.log(&job.id).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    let statuses: Vec<_> = done
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.status))
        .collect();
    assert_eq!(
        statuses,
        [("code", StepStatus::Skipped), ("docs", StepStatus::Success)],
        "{log}"
    );
    assert!(
        log.contains("- step code skipped (when does not match)"),
        "{log}"
    );
    assert!(
        log.contains("ran-docs") && !log.contains("ran-code"),
        "{log}"
    );
    assert!(
        log.contains("path filters: 1 file(s) changed since"),
        "{log}"
    );

    // A pull request from a docs branch into main, which has since changed src/.
    repo.checkout_new_branch("feature");
    let head = repo.commit(&[("docs/more.md", "more\n")], "more docs");
    repo.checkout("main");
    let main_now = repo.commit(&[("src/main.rs", "fn main() { }\n")], "code on main");
    let mut spec = NewJob::new(
        "acme/app",
        repo.url(),
        "refs/pull/3/head",
        &head,
        Event::PullRequest,
    );
    spec.pr_number = Some(3);
    spec.target_branch = Some("main".into());
    spec.diff_base = Some(main_now);
    let job = h.enqueue_spec(spec).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let done = h.job(&job.id).await;
    let log = h.log(&job.id).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert_eq!(done.steps[0].status, StepStatus::Skipped, "{log}");
    assert_eq!(done.steps[1].status, StepStatus::Success, "{log}");
}

/// When the changes cannot be known, path filters match: every step runs, and the log says
/// once why the filters did not apply.
#[tokio::test]
async fn without_known_changes_path_filtered_steps_run_and_the_log_says_why() {
    let h = Harness::new();
    let repo = GitRepo::new();
    repo.commit(
        &[
            (".raibid.yaml", PATH_STEPS),
            ("src/main.rs", "fn main() {}\n"),
        ],
        "init",
    );
    let sha = repo.commit(&[("docs/index.md", "# docs\n")], "docs only");
    let nowhere = "0123456789".repeat(4);
    for (base, why) in [
        (Some(nowhere.as_str()), nowhere.as_str()),
        (None, "the push created the branch"),
    ] {
        let job = h.enqueue_spec(push_since(&repo, &sha, base)).await;
        h.run_once(h.runner(SecretStore::default())).await;
        let done = h.job(&job.id).await;
        let log = h.log(&job.id).await;
        assert_eq!(done.status, JobStatus::Success, "{log}");
        assert!(
            done.steps.iter().all(|s| s.status == StepStatus::Success),
            "{:?}\n{log}",
            done.steps
        );
        assert!(
            log.contains("ran-code") && log.contains("ran-docs"),
            "{log}"
        );
        assert_eq!(
            log.matches("path filters not applied, steps with `when: path` run:")
                .count(),
            1,
            "{log}"
        );
        assert!(log.contains(why), "{why} missing:\n{log}");
    }
}

/// Adds `sub` to `repo` at `vendor/sub` and commits it; the new commit.
fn add_submodule(repo: &GitRepo, sub: &GitRepo) -> String {
    repo.git(&[
        "-c",
        "protocol.file.allow=always",
        "submodule",
        "add",
        "--quiet",
        &sub.url(),
        "vendor/sub",
    ]);
    repo.commit(&[], "add submodule")
}

#[tokio::test]
async fn submodules_are_checked_out_when_the_pipeline_asks() {
    let h = Harness::new();
    let sub = GitRepo::new();
    sub.commit(&[("lib.txt", "from the submodule\n")], "sub");
    let repo = GitRepo::new();
    repo.commit(
        &[(
            ".raibid.yaml",
            "clone:\n  submodules: true\nsteps:\n  - name: read\n    run: cat vendor/sub/lib.txt\n",
        )],
        "init",
    );
    let sha = add_submodule(&repo, &sub);
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let log = h.log(&job.id).await;
    assert_eq!(h.job(&job.id).await.status, JobStatus::Success, "{log}");
    assert!(log.contains("from the submodule"), "{log}");
}

/// A Woodpecker file without `clone:` is checked out as Woodpecker's clone step would do it: with
/// its submodules, since it has some, and with the tags for a tag's job only.
#[tokio::test]
async fn a_woodpecker_file_gets_submodules_and_a_tag_s_tags_by_default() {
    let h = Harness::new();
    let sub = GitRepo::new();
    sub.commit(&[("lib.txt", "from the submodule\n")], "sub");
    let repo = GitRepo::new();
    repo.commit(&[("a.txt", "1\n")], "first");
    repo.git(&["tag", "v1.0.0"]);
    repo.commit(
        &[(
            ".woodpecker.yaml",
            "steps:\n  - name: read\n    commands:\n      - cat vendor/sub/lib.txt\n      \
             - echo describe=$(git describe --tags 2>/dev/null || echo none)\n",
        )],
        "pipeline",
    );
    let sha = add_submodule(&repo, &sub);

    let (job, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(job.status, JobStatus::Success, "{log}");
    assert!(log.contains("from the submodule"), "{log}");
    assert!(log.contains("describe=none"), "a push gets no tags:\n{log}");

    repo.git(&["tag", "v1.1.0"]);
    let tag = NewJob::new("acme/app", repo.url(), "refs/tags/v1.1.0", &sha, Event::Tag);
    let (job, log) = h.run_spec(tag).await;
    assert_eq!(job.status, JobStatus::Success, "{log}");
    assert!(log.contains("describe=v1.1.0"), "{log}");
}

/// The workspace is a repository that git inside the bubblewrap sandbox can use, although the
/// mirror it borrows objects from sits in the agent's hidden cache: on the pushed branch at the
/// exact commit, with full history, `origin` the public URL, clean; tags only when asked.
#[tokio::test]
async fn git_works_in_the_sandboxed_workspace_and_tags_come_when_asked() {
    let h = Harness::new();
    let repo = GitRepo::new();
    repo.commit(&[("a.txt", "1\n")], "first");
    repo.git(&["tag", "v1.0.0"]);
    let probe = "    run: |\n      echo branch=$(git rev-parse --abbrev-ref HEAD)\n      \
                 echo head=$(git rev-parse HEAD)\n      echo origin=$(git remote get-url origin)\n      \
                 echo commits=$(git rev-list --count HEAD)\n      \
                 echo describe=$(git describe --tags 2>/dev/null || echo none)\n      \
                 echo dirty=$(git status --porcelain | wc -l)\n";
    let sha = repo.commit(
        &[(".raibid.yaml", &format!("steps:\n  - name: git\n{probe}"))],
        "pipeline",
    );
    let runner = h.runner(SecretStore::default());
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(runner.clone()).await;
    let log = h.log(&job.id).await;
    assert_eq!(h.job(&job.id).await.status, JobStatus::Success, "{log}");
    for expected in [
        "branch=main".to_owned(),
        format!("head={sha}"),
        format!("origin={}", repo.url()),
        "commits=2".to_owned(),
        "describe=none".to_owned(),
        "dirty=0".to_owned(),
    ] {
        assert!(log.contains(&expected), "{expected} missing:\n{log}");
    }

    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            &format!("clone:\n  tags: true\nsteps:\n  - name: git\n{probe}"),
        )],
        "with tags",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(runner).await;
    let log = h.log(&job.id).await;
    assert_eq!(h.job(&job.id).await.status, JobStatus::Success, "{log}");
    assert!(log.contains("describe=v1.0.0-2-g"), "{log}");
    assert!(log.contains("commits=3"), "{log}");
}

/// Commits a symbolic link `name -> target` (and nothing else) to `repo`.
fn commit_symlink(repo: &GitRepo, name: &str, target: &std::path::Path) -> String {
    std::os::unix::fs::symlink(target, repo.path().join(name)).unwrap();
    repo.git(&["add", "--", name]);
    repo.commit(&[], "symlink")
}

#[tokio::test]
async fn a_pipeline_file_symlinked_out_of_the_workspace_is_refused_unread() {
    let h = Harness::new();
    // Stands for a private key or the server's webhook secret: a YAML parse error would quote it.
    let marker = "raibid-private-marker-5c1e9a";
    let outside = h.dir.path().join("private.txt");
    std::fs::write(&outside, format!("steps: {marker}\n")).unwrap();
    let repo = GitRepo::new();
    let sha = commit_symlink(&repo, ".raibid.yaml", &outside);
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let done = h.job(&job.id).await;
    let log = h.log(&job.id).await;
    assert_eq!(done.status, JobStatus::Error, "{log}");
    let reason = done.reason.unwrap();
    assert!(reason.contains(".raibid.yaml"), "{reason}");
    assert!(reason.contains("symbolic link"), "{reason}");
    assert!(!reason.contains(marker), "{reason}");
    assert!(!log.contains(marker), "{log}");
}

#[tokio::test]
async fn an_image_context_symlinked_out_of_the_workspace_is_refused() {
    let h = Harness::new();
    let registry = raibid_testkit::Registry::start();
    let outside = h.dir.path().join("host-files");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(
        outside.join("Containerfile"),
        "FROM scratch\nCOPY . /host/\n",
    )
    .unwrap();
    std::fs::write(outside.join("private.txt"), "raibid-private-marker-77d0\n").unwrap();
    let repo = GitRepo::new();
    repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: image\n    image-build:\n      context: ctx\n      tags: [\"{registry}/{repo}:{short_sha}\"]\n",
        )],
        "image",
    );
    let sha = commit_symlink(&repo, "ctx", &outside);
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner_with_images(
        SecretStore::default(),
        Some(h.image_builder(&registry)),
        &registry.host(),
    ))
    .await;
    let done = h.job(&job.id).await;
    let log = h.log(&job.id).await;
    assert_eq!(done.status, JobStatus::Error, "{log}");
    assert!(
        done.reason
            .as_deref()
            .unwrap()
            .contains("outside the workspace"),
        "{:?}",
        done.reason
    );
    assert!(registry.tags("acme/app").is_empty(), "{log}");
}

#[tokio::test]
async fn images_from_fork_pull_requests_are_built_but_not_pushed() {
    let h = Harness::new();
    let registry = raibid_testkit::Registry::start();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[
            (
                ".raibid.yaml",
                "steps:\n  - name: image\n    image-build:\n      tags: [\"{registry}/{repo}:latest\"]\n      cache: \"{registry}/{repo}/cache\"\n",
            ),
            ("Containerfile", "FROM scratch\nCOPY hello.txt /hello.txt\n"),
            ("hello.txt", "hello from a fork\n"),
        ],
        "image",
    );
    let pull_request = |from_fork| Harness::pull_request(&repo.url(), &sha, 7, from_fork);
    let runner = || {
        h.runner_with_images(
            SecretStore::default(),
            Some(h.image_builder(&registry)),
            &registry.host(),
        )
    };

    let fork = h.enqueue_spec(pull_request(true)).await;
    h.run_once(runner()).await;
    let done = h.job(&fork.id).await;
    let log = h.log(&fork.id).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert_eq!(done.steps[0].status, StepStatus::Success, "{log}");
    assert!(log.contains("built but not pushed"), "{log}");
    assert!(done.images.is_empty(), "{:?}", done.images);
    assert!(registry.tags("acme/app").is_empty(), "{log}");
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        "x86_64" => "amd64",
        other => other,
    };
    assert!(
        registry.tags(&format!("acme/app/cache/{arch}")).is_empty(),
        "a fork wrote the layer cache: {log}"
    );

    let same_repo = h.enqueue_spec(pull_request(false)).await;
    h.run_once(runner()).await;
    let done = h.job(&same_repo.id).await;
    let log = h.log(&same_repo.id).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert_eq!(registry.tags("acme/app"), ["latest"], "{log}");
    assert_eq!(done.images.len(), 1, "{:?}", done.images);
}

/// A pull request from a fork runs its container steps only in images that their registry
/// serves without a login: the engine's own login (here to a private registry) is for
/// trusted jobs, a pull request from the repository itself included.
#[tokio::test]
async fn container_steps_of_fork_pull_requests_get_no_engine_login() {
    use raibid_agent::executor::ContainerOptions;
    use raibid_testkit::registry::{TEST_PASSWORD, TEST_PASSWORD_BCRYPT, TEST_USER};
    use raibid_testkit::{Podman, Registry, TestEngine};

    let h = Harness::new();
    let podman = Podman::new();
    let registry = Registry::start_with_auth(TEST_USER, TEST_PASSWORD, TEST_PASSWORD_BCRYPT);
    podman.allow_plain_http(&registry.host());
    podman.login(&registry.host(), TEST_USER, TEST_PASSWORD);
    let image = format!("{}/team/tool:1", registry.host());
    podman.push_busybox(&image);
    let executor = podman_executor(&podman, ContainerOptions::default()).await;
    let runner = || {
        h.runner_on(
            executor.clone(),
            SecretStore::default(),
            None,
            "registry.invalid",
        )
    };
    let repo = GitRepo::new();
    let pipeline = format!("image: {image}\nsteps:\n  - name: tool\n    run: echo tool-ran\n");
    let sha = repo.commit(&[(".raibid.yaml", pipeline.as_str())], "private image");
    let pull_request = |from_fork| Harness::pull_request(&repo.url(), &sha, 8, from_fork);

    let fork = h.enqueue_spec(pull_request(true)).await;
    h.run_once(runner()).await;
    let done = h.job(&fork.id).await;
    let log = h.log(&fork.id).await;
    // Not the code's verdict, so `error` as for any image that cannot run.
    assert_eq!(done.status, JobStatus::Error, "{log}");
    assert!(
        log.contains("without a login") && !log.contains("tool-ran"),
        "{log}"
    );

    let same_repo = h.enqueue_spec(pull_request(false)).await;
    h.run_once(runner()).await;
    let done = h.job(&same_repo.id).await;
    let log = h.log(&same_repo.id).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert!(log.contains("tool-ran"), "{log}");
}

/// A job's `services:` start before its first step and every step reaches them by name; a
/// secret a service names reaches it (and is masked in the log); their output follows the
/// steps in the job's log, and nothing is left on the engine.
#[tokio::test]
async fn container_jobs_with_services_reach_them_by_name() {
    use raibid_agent::executor::ContainerOptions;
    use raibid_testkit::{BUSYBOX_IMAGE, Podman, TestEngine};

    let _bridges = raibid_testkit::network_lock();
    let h = Harness::new();
    let podman = Podman::new();
    let repo = GitRepo::new();
    // One job at a time, each with an agent of its own that holds the secret.
    let run = |sha: String| {
        let (h, podman, url) = (&h, &podman, repo.url());
        async move {
            let job = h.enqueue(&url, &sha).await;
            let options = ContainerOptions {
                default_image: BUSYBOX_IMAGE.into(),
                network: false,
                ..ContainerOptions::default()
            };
            let executor = podman_executor(podman, options).await;
            let secrets = BTreeMap::from([("KV_TOKEN".to_owned(), "kv-secret-5a1t".to_owned())]);
            let secrets = SecretStore::new(secrets, &BTreeMap::new(), false).unwrap();
            h.run_once(h.runner_on(executor, secrets, None, "registry.invalid"))
                .await;
            (h.job(&job.id).await, h.log(&job.id).await)
        }
    };
    let pipeline = format!(
        "services:\n  - name: kv\n    image: {BUSYBOX_IMAGE}\n    \
         environment: {{ANSWER: \"42\", PASS: {{from_secret: KV_TOKEN}}}}\n    \
         secrets: [KV_TOKEN]\n    \
         command: [sh, -c, 'echo kv up; sleep 1; while true; do echo \"$ANSWER $KV_TOKEN $PASS\" | nc -l -p 6000; done']\n    \
         ready: nc -w 1 127.0.0.1 6000 </dev/null | grep -q 42\n\
         steps:\n  - name: ask\n    run: |\n      answer=$(nc -w 2 kv 6000 </dev/null)\n      \
         echo \"the answer is $answer\"\n  - name: again\n    run: nc -w 2 kv 6000 </dev/null\n"
    );
    let sha = repo.commit(&[(".raibid.yaml", pipeline.as_str())], "services");
    let (done, log) = run(sha).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    // The secret by its own name and, Woodpecker's way, under the service's (`from_secret`).
    assert!(log.contains("the answer is 42 *** ***\n"), "{log}");
    assert!(!log.contains("kv-secret-5a1t"), "{log}");
    let services = log.find("\u{25b6} services").expect("services heading");
    let first_step = log.find("\u{25b6} step ask").expect("step heading");
    let service_log = log
        .find("\u{25b6} service kv\nkv up\n")
        .expect("service log");
    let ready = log
        .find("[raibid] service kv is ready (")
        .expect("ready note");
    assert!(
        services < ready && ready < first_step && first_step < service_log,
        "{log}"
    );
    assert_eq!(podman.containers(), Vec::<String>::new());
    assert_eq!(podman.raibid_networks(), Vec::<String>::new());

    // A service that never gets ready ends the job in `error` before any step. What its check
    // printed is in the log, masked; the job's reason (the commit status) repeats none of it.
    let pipeline = format!(
        "services:\n  - name: kv\n    image: {BUSYBOX_IMAGE}\n    secrets: [KV_TOKEN]\n    \
         command: [sleep, '1000']\n    \
         ready:\n      run: echo \"no answer for $KV_TOKEN\"; exit 1\n      timeout: 2s\n\
         steps:\n  - name: ask\n    run: echo step-ran\n"
    );
    let sha = repo.commit(&[(".raibid.yaml", pipeline.as_str())], "never ready");
    let (done, log) = run(sha).await;
    assert_eq!(done.status, JobStatus::Error, "{log}");
    let reason = done.reason.unwrap_or_default();
    assert!(
        reason.starts_with("services: service kv: not ready within 2 s ("),
        "{reason}"
    );
    assert!(
        !reason.contains("kv-secret-5a1t") && !reason.contains("no answer for ***"),
        "{reason}"
    );
    assert!(log.contains("no answer for ***\n"), "{log}");
    assert!(
        !log.contains("kv-secret-5a1t") && !log.contains("step-ran"),
        "{log}"
    );
    assert_eq!(podman.containers(), Vec::<String>::new());
    assert_eq!(podman.raibid_networks(), Vec::<String>::new());
}

/// Only the container executor runs services: elsewhere the job ends in `error` before any
/// step, saying so. A job whose steps `when` skips all starts none.
#[tokio::test]
async fn services_outside_the_container_executor_are_an_error() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "services:\n  - name: db\n    image: postgres:16\nsteps:\n  - name: t\n    run: echo step-ran\n",
        )],
        "services",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let done = h.job(&job.id).await;
    let log = h.log(&job.id).await;
    assert_eq!(done.status, JobStatus::Error, "{log}");
    assert!(
        log.contains("`services:` run only under the container executor"),
        "{log}"
    );
    assert!(!log.contains("step-ran"), "{log}");
    assert!(
        done.steps
            .iter()
            .all(|s| s.status == raibid_model::StepStatus::Skipped),
        "{:?}",
        done.steps
    );

    // Nothing to start when `when` skips every step: the job passes, its steps skipped.
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "services:\n  - name: db\n    image: postgres:16\nsteps:\n  - name: t\n    run: echo step-ran\n    when: {branch: never}\n",
        )],
        "services of skipped steps",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let done = h.job(&job.id).await;
    let log = h.log(&job.id).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert!(!log.contains("services"), "{log}");
}

/// `when: platform` runs a step only on agents of that platform (`linux/arm64`), as
/// Woodpecker's does: this agent's runs it, another's is skipped, saying so.
#[tokio::test]
async fn steps_for_another_platform_are_skipped() {
    let (native, other) = match std::env::consts::ARCH {
        "aarch64" => ("linux/arm64", "linux/amd64"),
        "x86_64" => ("linux/amd64", "linux/arm64"),
        arch => panic!("no platform name known here for {arch}"),
    };
    let h = Harness::new();
    let repo = GitRepo::new();
    let pipeline = format!(
        "steps:\n  - name: here\n    when: {{ platform: {native} }}\n    run: echo ran-here\n  \
         - name: there\n    when: {{ platform: {other} }}\n    run: echo ran-there\n  \
         - name: any\n    when: {{ platform: \"linux/*\" }}\n    run: echo ran-any\n"
    );
    let sha = repo.commit(&[(".raibid.yaml", pipeline.as_str())], "platforms");
    let (done, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert!(
        log.contains("ran-here\n") && log.contains("ran-any\n"),
        "{log}"
    );
    assert!(
        !log.contains("ran-there") && log.contains("step there skipped"),
        "{log}"
    );
}

/// `when: evaluate` (Woodpecker's expressions) reads the variables the steps get: the commit's
/// message, the pipeline's `env`; the pipeline's own `when` may use it to skip the job.
#[tokio::test]
async fn evaluate_conditions_read_the_steps_variables() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let pipeline = "env:\n  MODE: fast\nsteps:\n  - name: deploy\n    when:\n      \
                    evaluate: 'CI_COMMIT_MESSAGE contains \"[deploy]\" && MODE == \"fast\"'\n    \
                    run: echo deploying\n  - name: slow\n    \
                    when: { evaluate: 'MODE == \"slow\"' }\n    run: echo slow-ran\n";
    let sha = repo.commit(&[(".raibid.yaml", pipeline)], "release [deploy]");
    let (done, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert!(
        log.contains("deploying\n") && !log.contains("slow-ran"),
        "{log}"
    );

    let pipeline = "when:\n  evaluate: 'CI_COMMIT_MESSAGE contains \"[run]\"'\n\
                    steps:\n  - name: a\n    run: echo ran-a\n";
    let sha = repo.commit(&[(".raibid.yaml", pipeline)], "nothing to see");
    let (done, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert!(
        log.contains("`evaluate`: the condition does not hold with the job's variables")
            && !log.contains("ran-a"),
        "{log}"
    );
    let sha = repo.commit(&[], "go [run]");
    let (done, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert!(log.contains("ran-a\n"), "{log}");
}

/// `skip_clone: true` (Woodpecker's): the steps start in an empty workspace, the commit having
/// been fetched only to read the pipeline.
#[tokio::test]
async fn skip_clone_leaves_the_workspace_empty() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let pipeline = "skip_clone: true\nsteps:\n  - name: look\n    run: |\n      \
                    echo \"entries: $(ls -A | wc -l)\"\n      touch made\n";
    let sha = repo.commit(
        &[
            (".raibid.yaml", pipeline),
            ("src/main.rs", "fn main() {}\n"),
        ],
        "no source needed",
    );
    let (done, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert!(
        log.contains("skip_clone: the steps start in an empty workspace")
            && log.contains("entries: 0\n"),
        "{log}"
    );
}

/// `directory:` starts a step in a directory of the repository, or one an earlier step made;
/// `CI_WORKSPACE` stays the workspace. A directory that is not there ends the job in `error`
/// before the step runs, saying which.
#[tokio::test]
async fn steps_start_in_their_directory_and_a_missing_one_is_an_error() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let pipeline = "steps:\n  - name: web\n    directory: apps/web\n    run: |\n      \
                    cat marker\n      test \"$(pwd)\" = \"$CI_WORKSPACE/apps/web\" && echo ws-ok\n  \
                    - name: make\n    run: mkdir -p out/x\n  - name: later\n    \
                    directory: out/x\n    run: echo \"in $(basename \"$(pwd)\")\"\n";
    let sha = repo.commit(
        &[(".raibid.yaml", pipeline), ("apps/web/marker", "in web\n")],
        "directories",
    );
    let (done, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert!(
        log.contains("in web\nws-ok\n") && log.contains("in x\n"),
        "{log}"
    );

    let pipeline = "steps:\n  - name: gone\n    directory: nowhere\n    run: echo ran-it\n";
    let sha = repo.commit(&[(".raibid.yaml", pipeline)], "missing directory");
    let (done, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(done.status, JobStatus::Error, "{log}");
    assert!(
        log.contains("`directory: nowhere` is not in the workspace") && !log.contains("ran-it"),
        "{log}"
    );
}

/// A Woodpecker plugin step (an `image`, `settings`, no commands) runs the image's entrypoint
/// with its settings as `PLUGIN_*` variables, as Woodpecker makes them; a secret named by
/// `from_secret`, at the top or inside a structured setting, is masked in the log, as written
/// and as JSON quotes it.
#[tokio::test]
async fn plugin_steps_get_their_settings_and_secrets() {
    use raibid_agent::executor::ContainerOptions;
    use raibid_testkit::{BUSYBOX_IMAGE, Podman, TestEngine};

    let h = Harness::new();
    let podman = Podman::new();
    let context = tempfile::tempdir().unwrap();
    std::fs::write(
        context.path().join("plugin.sh"),
        "#!/bin/sh\nenv | grep '^PLUGIN_' | sort\n",
    )
    .unwrap();
    std::fs::write(
        context.path().join("Containerfile"),
        format!(
            "FROM {BUSYBOX_IMAGE}\nCOPY plugin.sh /plugin.sh\nRUN chmod 755 /plugin.sh\n\
             ENTRYPOINT [\"/plugin.sh\"]\n"
        ),
    )
    .unwrap();
    let image = "localhost/raibid-test/plugin:1";
    podman.build(image, context.path());
    let executor = podman_executor(&podman, ContainerOptions::default()).await;
    let secret = "pa\"ss-7Yx4";
    let secrets = BTreeMap::from([("registry_password".to_owned(), secret.to_owned())]);
    let secrets = SecretStore::new(secrets, &BTreeMap::new(), false).unwrap();
    let repo = GitRepo::new();
    let pipeline = format!(
        "steps:\n  - name: publish\n    image: {image}\n    settings:\n      \
         repo: acme/app\n      dry-run: true\n      tags: [main, \"1.2\"]\n      \
         password:\n        from_secret: registry_password\n      logins:\n        \
         - registry: r.example\n          password:\n            \
         from_secret: registry_password\n"
    );
    let sha = repo.commit(&[(".raibid.yaml", pipeline.as_str())], "plugin");
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner_on(executor, secrets, None, "registry.invalid"))
        .await;
    let (done, log) = (h.job(&job.id).await, h.log(&job.id).await);
    assert_eq!(done.status, JobStatus::Success, "{log}");
    for line in [
        "PLUGIN_DRY_RUN=true\n",
        "PLUGIN_LOGINS=[{\"password\":\"***\",\"registry\":\"r.example\"}]\n",
        "PLUGIN_PASSWORD=***\n",
        "PLUGIN_REPO=acme/app\n",
        "PLUGIN_TAGS=main,1.2\n",
    ] {
        assert!(log.contains(line), "{line:?} in {log}");
    }
    assert!(!log.contains("7Yx4"), "{log}");
}

/// A container executor on the test's own podman.
async fn podman_executor(
    podman: &raibid_testkit::Podman,
    options: raibid_agent::executor::ContainerOptions,
) -> Arc<raibid_agent::executor::ContainerExecutor> {
    use raibid_testkit::TestEngine;
    let engine = raibid_agent::executor::ContainerEngine::detect_on_path(
        raibid_config::ContainerEngineKind::Auto,
        podman.bin_dir().as_os_str(),
    )
    .await
    .unwrap();
    Arc::new(raibid_agent::executor::ContainerExecutor::new(
        engine, options,
    ))
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            text.contains(needle).then_some(text)
        })
        .collect()
}

/// A repository with the smallest image context in which RUN works: scratch plus a static
/// busybox as `/bin/sh` (staged, not committed).
fn repo_with_busybox() -> GitRepo {
    let busybox = require_binary("busybox", "busybox-static");
    let repo = GitRepo::new();
    std::fs::create_dir(repo.path().join("bin")).unwrap();
    std::fs::copy(&busybox, repo.path().join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", repo.path().join("bin/sh")).unwrap();
    repo.git(&["add", "bin"]);
    repo
}

#[tokio::test]
async fn an_image_build_step_times_out_like_a_run_step() {
    let h = Harness::new();
    let registry = raibid_testkit::Registry::start();
    let repo = repo_with_busybox();
    let marker = format!("600.{}", std::process::id());
    let sha = repo.commit(
        &[
            (
                ".raibid.yaml",
                "steps:\n  - name: image\n    timeout: 3s\n    image-build:\n      tags: [\"{registry}/{repo}:{short_sha}\"]\n",
            ),
            (
                "Containerfile",
                &format!("FROM scratch\nCOPY bin/ /bin/\nRUN sleep {marker}\n"),
            ),
        ],
        "hang",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    let started = std::time::Instant::now();
    h.run_once(h.runner_with_images(
        SecretStore::default(),
        Some(h.image_builder(&registry)),
        &registry.host(),
    ))
    .await;
    let elapsed = started.elapsed();
    let done = h.job(&job.id).await;
    let log = h.log(&job.id).await;
    assert!(elapsed < Duration::from_secs(45), "took {elapsed:?}: {log}");
    assert_eq!(done.status, JobStatus::Failure, "{log}");
    assert_eq!(done.steps[0].status, StepStatus::Failure, "{log}");
    assert_eq!(
        done.reason.as_deref(),
        Some("step image timed out after 3s"),
        "{log}"
    );
    assert!(log.contains("image: timed out after 3s"), "{log}");
    assert!(
        log.contains(&format!("RUN sleep {marker}")),
        "the build never reached the RUN step: {log}"
    );
    let storage = h.dir.path().join("buildah").display().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<String> = processes_with(&marker)
            .into_iter()
            .chain(processes_with(&storage))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "build processes survived: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(registry.tags("acme/app").is_empty());
}

/// A Containerfile that fails to build is the step's own failure, like a script's non-zero
/// exit: the job fails (not `error`), and `failure: ignore` lets it go on.
#[tokio::test]
async fn a_failing_image_build_is_the_step_s_failure_and_can_be_ignored() {
    let h = Harness::new();
    let registry = raibid_testkit::Registry::start();
    let repo = repo_with_busybox();
    let image =
        "  - name: image\n    image-build:\n      tags: [\"{registry}/{repo}:{short_sha}\"]\n";
    let containerfile = (
        "Containerfile",
        "FROM scratch\nCOPY bin/ /bin/\nRUN exit 3\n",
    );
    let url = repo.url();
    let (h, url, registry) = (&h, &url, &registry);
    let run = |sha: String| async move {
        let job = h.enqueue(url, &sha).await;
        h.run_once(h.runner_with_images(
            SecretStore::default(),
            Some(h.image_builder(registry)),
            &registry.host(),
        ))
        .await;
        (h.job(&job.id).await, h.log(&job.id).await)
    };

    let ignored = repo.commit(
        &[
            (
                ".raibid.yaml",
                &format!("steps:\n{image}    failure: ignore\n  - name: after\n    run: echo after-$CI_PIPELINE_STATUS\n"),
            ),
            containerfile,
        ],
        "ignored",
    );
    let (done, log) = run(ignored).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert_eq!(done.steps[0].status, StepStatus::Failure, "{log}");
    assert_eq!(done.steps[1].status, StepStatus::Success, "{log}");
    assert!(log.contains("ignored (failure: ignore)"), "{log}");
    assert!(log.contains("after-success"), "{log}");
    assert!(
        log.contains("RUN exit 3"),
        "the build never reached the RUN: {log}"
    );
    assert_eq!(
        done.reason.as_deref(),
        Some("1 step(s) passed, 1 failed (failure: ignore)"),
        "{log}"
    );

    let failing = repo.commit(
        &[(".raibid.yaml", &format!("steps:\n{image}")), containerfile],
        "failing",
    );
    let (done, log) = run(failing).await;
    assert_eq!(done.status, JobStatus::Failure, "{log}");
    assert_eq!(done.steps[0].status, StepStatus::Failure, "{log}");
    assert_eq!(done.steps[0].exit_code, Some(3), "{log}");
    assert_eq!(
        done.reason.as_deref(),
        Some("step image exit code 3"),
        "{log}"
    );
    assert!(registry.tags("acme/app").is_empty());
}

/// Go's module cache (under the job's HOME) is read-only directories; a non-root agent cannot
/// delete inside them without first making them writable. As root this passes either way (root
/// ignores directory permissions); the unit tests of `remove_tree` drop that privilege.
#[tokio::test]
async fn a_workspace_with_read_only_directories_is_removed() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: lock\n    run: |\n      mkdir -p dir/sub \"$HOME/go/pkg/mod/x\"\n      echo x > dir/sub/file\n      echo x > \"$HOME/go/pkg/mod/x/f\"\n      chmod -R a-w dir \"$HOME/go\"\n",
        )],
        "read-only",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let log = h.log(&job.id).await;
    assert_eq!(h.job(&job.id).await.status, JobStatus::Success, "{log}");
    assert_eq!(h.work_left(), Vec::<String>::new());
}

/// Host steps have no sandbox to move their directories: jobs run in slots, and one agent's
/// jobs all see `slot-0`, as GitLab Runner reuses a build directory (so paths cargo records
/// stay valid after a `cache:` restore). What a dead agent left in a free slot is cleared
/// first; a slot a live process holds is skipped and left as it is.
#[tokio::test]
async fn host_jobs_reuse_the_first_free_workspace_slot() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: where\n    run: |\n      echo \"at=$PWD home=$HOME\"\n      echo \"home has: $(ls -A \"$HOME\")\"\n      touch \"$HOME/mine\"\n",
        )],
        "where",
    );
    let runner = || {
        h.runner_on(
            Arc::new(HostExecutor::new()),
            SecretStore::default(),
            None,
            "registry.invalid",
        )
    };
    let work = h.dir.path().join("work");
    let slot = |n: u32| work.join(format!("slot-{n}"));
    let run = |expected_slot: u32| {
        let (h, repo, sha, slot) = (&h, &repo, &sha, &slot);
        let runner = runner();
        async move {
            let job = h.enqueue(&repo.url(), sha).await;
            h.run_once(runner).await;
            let log = h.log(&job.id).await;
            assert_eq!(h.job(&job.id).await.status, JobStatus::Success, "{log}");
            let dir = slot(expected_slot);
            let at = format!(
                "at={} home={}\nhome has: \n",
                dir.join("src").display(),
                dir.join("home").display()
            );
            assert!(log.contains(&at), "wanted {at:?} in {log}");
        }
    };
    // One job after another: the same directories, each time empty.
    run(0).await;
    run(0).await;
    assert_eq!(h.work_left(), Vec::<String>::new());

    // A dead agent's leftovers in slot-0.
    std::fs::create_dir_all(slot(0).join("home")).unwrap();
    std::fs::write(slot(0).join("home").join("stale"), "x").unwrap();
    run(0).await;
    assert_eq!(h.work_left(), Vec::<String>::new());

    // slot-0 held by a live process (another agent's job).
    std::fs::create_dir_all(slot(0).join("src")).unwrap();
    std::fs::write(slot(0).join("src").join("theirs"), "x").unwrap();
    let held = nix::fcntl::Flock::lock(
        std::fs::File::create(work.join("slot-0.lock")).unwrap(),
        nix::fcntl::FlockArg::LockExclusiveNonblock,
    )
    .unwrap();
    run(1).await;
    assert!(
        slot(0).join("src").join("theirs").exists(),
        "a live slot was touched"
    );
    assert_eq!(h.work_left(), ["slot-0", "slot-0.lock"]);
    drop(held);
}

/// A step's environment (its secrets among the values) is written for the sandbox to read: in
/// the job's directory, private to the agent, so that an agent killed mid-step leaves it where
/// the next job in the slot or the orphan sweeper removes it, not in /tmp for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_s_environment_file_lives_in_the_job_s_private_directory() {
    use std::os::unix::fs::PermissionsExt;
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "env:\n  MARKER: env-file-marker-7d1\nsteps:\n  - name: wait\n    run: sleep 2\n",
        )],
        "wait",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    let agent = tokio::spawn(run_agent(
        h.runner(SecretStore::default()),
        options(true),
        CancellationToken::new(),
    ));
    let private = h.dir.path().join("work").join("slot-0").join("agent");
    // The file exists a moment before the agent has written it: wait for its contents.
    loop {
        let found = std::fs::read_dir(&private).ok().and_then(|dir| {
            dir.flatten()
                .map(|e| e.path().join("env"))
                .find(|f| f.exists())
        });
        let written = found
            .and_then(|file| std::fs::read_to_string(file).ok())
            .is_some_and(|text| text.contains("env-file-marker-7d1"));
        if written {
            break;
        }
        assert!(!agent.is_finished(), "{}", h.log(&job.id).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mode = std::fs::metadata(&private).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let ends = agent.await.unwrap().unwrap().jobs;
    assert_eq!(ends[0].1, JobEnd::Acked(JobStatus::Success));
    assert_eq!(h.work_left(), Vec::<String>::new());
}

/// With `agent.step_user` (how agent pods run, as root), host steps run as that user: they own
/// their workspace and `HOME` and can use git there, but cannot write the shared mirror their
/// checkout borrows objects from.
#[tokio::test]
async fn host_steps_run_as_the_step_user_and_cannot_write_the_mirror() {
    let h = Harness::for_step_users();
    let repo = GitRepo::new();
    let script = "steps:\n  - name: as-step-user\n    run: |\n      \
                  echo who=$(id -u):$(id -g):$(id -G)\n      \
                  echo head=$(git rev-parse HEAD) dirty=$(git status --porcelain | wc -l)\n      \
                  echo made > new-file\n      echo kept > \"$HOME/state\"\n      \
                  objects=$(cat .git/objects/info/alternates)\n      \
                  if touch \"$objects/planted\" 2>/dev/null; then echo wrote-the-mirror; fi\n      \
                  if echo x >> \"$objects/../config\" 2>/dev/null; then echo wrote-mirror-config; fi\n      \
                  echo done\n";
    let sha = repo.commit(&[(".raibid.yaml", script)], "init");
    // A uid of this test's own: after each step every process of the step user is killed,
    // and other tests run sandboxed steps as nobody.
    let user = StepUser {
        uid: 64_998,
        gid: 64_998,
    };
    let runner = h.runner_on(
        Arc::new(HostExecutor::new().as_user(user)),
        SecretStore::default(),
        None,
        "registry.invalid",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(runner).await;
    let log = h.log(&job.id).await;
    assert_eq!(h.job(&job.id).await.status, JobStatus::Success, "{log}");
    assert!(log.contains("who=64998:64998:64998\n"), "{log}");
    assert!(log.contains(&format!("head={sha} dirty=0")), "{log}");
    assert!(log.contains("done"), "{log}");
    assert!(!log.contains("wrote-the-mirror"), "{log}");
    assert!(!log.contains("wrote-mirror-config"), "{log}");
    let planted = std::process::Command::new("find")
        .arg(h.cache())
        .args(["-name", "planted"])
        .output()
        .unwrap();
    assert!(planted.stdout.is_empty(), "{planted:?}");
}

/// The pipeline's `timeout` bounds the whole job: the step that runs into it is stopped with a
/// message naming the job's limit, and later steps never start.
#[tokio::test]
async fn the_job_timeout_stops_the_step_that_runs_into_it() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "timeout: 2s\nsteps:\n  - name: quick\n    run: sleep 1\n  - name: slow\n    run: sleep 120\n  - name: never\n    run: echo never-ran\n",
        )],
        "job timeout",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let done = h.job(&job.id).await;
    let log = h.log(&job.id).await;
    assert_eq!(done.status, JobStatus::Failure, "{log}");
    let statuses: Vec<StepStatus> = done.steps.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [
            StepStatus::Success,
            StepStatus::Failure,
            StepStatus::Skipped
        ]
    );
    let reason = done.reason.unwrap();
    assert!(
        reason.contains("step slow stopped: the job's time limit of 2s ran out"),
        "{reason}"
    );
    assert!(!log.contains("never-ran"), "{log}");
}

/// Removing what a job leaves can take longer than `stale_after` (here a tree 15,000
/// directories deep: one to several seconds to remove). The job's verdict must reach Redis
/// before that, or the reaper, seeing no heartbeats, requeues a finished job and its result is
/// thrown away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_workspace_removal_does_not_lose_the_verdict() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: deep\n    run: |\n      d=$(printf 'a/%.0s' $(seq 1500))\n      for i in $(seq 10); do mkdir -p \"$d\"; cd -P \"$d\"; done\n",
        )],
        "deep tree",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    let Ok(mut runner) = Arc::try_unwrap(h.runner(SecretStore::default())) else {
        unreachable!("the runner is not shared yet")
    };
    runner.settings.heartbeat_interval = Duration::from_millis(100);
    let agent = tokio::spawn(run_agent(
        Arc::new(runner),
        options(true),
        CancellationToken::new(),
    ));
    // A reaper far more eager than any real one, yet five heartbeats behind; it starts once
    // the step has ended, so that a slow heartbeat during the step cannot fail the test.
    let mut requeued = 0;
    while !agent.is_finished() {
        if !h.log(&job.id).await.contains("✔ deep") {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        requeued += h
            .queue
            .requeue_stale(Duration::from_millis(500))
            .await
            .unwrap()
            .requeued
            .len();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ends = agent.await.unwrap().unwrap().jobs;
    assert_eq!(
        ends,
        vec![(job.id.clone(), JobEnd::Acked(JobStatus::Success))],
        "requeued {requeued}; {}",
        h.log(&job.id).await
    );
    let done = h.job(&job.id).await;
    assert_eq!((done.status, done.attempt), (JobStatus::Success, 1));
    assert_eq!(h.work_left(), Vec::<String>::new());
}

/// A loopback port whose server accepts connections and never answers (for the rest of the
/// test process), where git hangs as on a stalled forge.
fn stalling_server() -> u16 {
    let stall = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = stall.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut connections = Vec::new();
        while let Ok((conn, _)) = stall.accept() {
            connections.push(conn);
        }
    });
    port
}

/// A cancel reaches a job whose submodule fetch has stalled (a server that accepts and never
/// answers) without waiting for git's own time limit of ten minutes.
#[tokio::test]
async fn a_cancel_stops_a_stalled_submodule_fetch() {
    let h = Harness::new();
    let port = stalling_server();
    let base = tempfile::tempdir().unwrap();
    let repo = GitRepo::new();
    repo.commit(
        &[
            (
                ".raibid.yaml",
                "clone:\n  submodules: true\nsteps:\n  - name: never\n    run: echo reached-the-step\n",
            ),
            (
                ".gitmodules",
                &format!(
                    "[submodule \"sub\"]\n\tpath = sub\n\turl = http://127.0.0.1:{port}/sub.git\n"
                ),
            ),
        ],
        "init",
    );
    let gitlink = format!("160000,{},sub", "1".repeat(40));
    repo.git(&["update-index", "--add", "--cacheinfo", &gitlink]);
    repo.git(&["commit", "--quiet", "-m", "add a submodule"]);
    let sha = repo.head();
    let bare = base.path().join("acme").join("app.git");
    std::fs::create_dir_all(bare.parent().unwrap()).unwrap();
    repo.git(&["clone", "--quiet", "--bare", ".", bare.to_str().unwrap()]);
    let daemon = GitDaemon::serve(base.path());
    let job = h.enqueue(&daemon.url_for(&bare), &sha).await;
    let queue = h.queue.clone();
    let id = job.id.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let log = queue
                .read_log(&id, &LogCursor::start(), 1000)
                .await
                .unwrap();
            let text: Vec<u8> = log.chunks.into_iter().flat_map(|c| c.data).collect();
            if String::from_utf8_lossy(&text).contains("checked out") {
                // Give git time to connect and hang.
                tokio::time::sleep(Duration::from_secs(1)).await;
                queue.cancel(&id).await.unwrap();
                return;
            }
        }
    });
    let ends = h.run_once(h.runner(SecretStore::default())).await;
    let log = h.log(&job.id).await;
    assert_eq!(ends[0].1, JobEnd::Acked(JobStatus::Cancelled), "{log}");
    assert!(!log.contains("reached-the-step"), "{log}");
    // `git submodule` runs `git clone` and a remote helper under it: none may go on.
    let needle = format!("127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !processes_with(&needle).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        processes_with(&needle).is_empty(),
        "{:?}",
        processes_with(&needle)
    );
}

/// Ctrl-C on an agent started in a terminal signals the terminal's whole foreground group.
/// The agent hands its job back on that; its git must not also die of it (the job would end
/// in `error`), so git runs in a process group of its own.
#[tokio::test]
async fn checkout_git_is_outside_the_agent_s_process_group() {
    let h = Harness::new();
    let port = stalling_server();
    let url = format!("http://127.0.0.1:{port}/acme/app.git");
    let job = h.enqueue(&url, &"2".repeat(40)).await;
    let agent = tokio::spawn(run_agent(
        h.runner(SecretStore::default()),
        options(true),
        CancellationToken::new(),
    ));
    let ours = nix::unistd::getpgrp().as_raw();
    let groups = loop {
        let groups: Vec<i32> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
                if !String::from_utf8_lossy(&cmdline).contains(&url) {
                    return None;
                }
                // Field 5 of stat, after the parenthesised command name.
                let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                let after = &stat[stat.rfind(')')? + 2..];
                after.split(' ').nth(2)?.parse().ok()
            })
            .collect();
        if !groups.is_empty() {
            break groups;
        }
        assert!(
            !agent.is_finished(),
            "the checkout ended: {}",
            h.log(&job.id).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    h.queue.cancel(&job.id).await.unwrap();
    assert!(
        groups.iter().all(|&g| g != ours),
        "git in our group {ours}: {groups:?}"
    );
    let ends = tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .jobs;
    assert_eq!(ends[0].1, JobEnd::Acked(JobStatus::Cancelled));
}

/// A standalone agent and `raibid up` share a workspace root by default, each with its own
/// queue. A sweeper must not take a job of the other queue, unknown to its own, for an orphan
/// and remove its workspace mid-step; a directory whose agent died is still swept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_leaves_workspaces_of_other_queues_alone() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: wait\n    run: sleep 3 && test -d \"$PWD\" && echo still-here\n",
        )],
        "slow",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    let agent = tokio::spawn(run_agent(
        h.runner(SecretStore::default()),
        options(true),
        CancellationToken::new(),
    ));
    let other_redis = RedisServer::start();
    let Ok(mut other) = Arc::try_unwrap(h.runner(SecretStore::default())) else {
        unreachable!("not shared")
    };
    other.queue = Queue::open(QueueOptions::new(other_redis.url())).unwrap();
    let job_dir = h.dir.path().join("work").join("slot-0");
    while !job_dir.join("src").exists() {
        assert!(!agent.is_finished(), "{}", h.log(&job.id).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A directory left by an agent that died: no lock held, its job unknown.
    let dead = h
        .dir
        .path()
        .join("work")
        .join("01JXK4Q3ZP8M5T7V2W9R000009-a1");
    std::fs::create_dir_all(dead.join("src")).unwrap();
    // And a slot of one: no lock held.
    let dead_slot = h.dir.path().join("work").join("slot-5");
    std::fs::create_dir_all(dead_slot.join("src")).unwrap();
    assert_eq!(other.sweep_orphaned_workspaces().await, 2);
    assert!(!dead.exists() && !dead_slot.exists());
    assert!(job_dir.exists(), "a live workspace was removed");
    let ends = agent.await.unwrap().unwrap().jobs;
    let log = h.log(&job.id).await;
    assert_eq!(ends[0].1, JobEnd::Acked(JobStatus::Success), "{log}");
    assert!(log.contains("still-here"), "{log}");
    let leftovers: Vec<_> = std::fs::read_dir(h.dir.path().join("work"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
