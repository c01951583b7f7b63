//! Steps that run as a graph (`depends_on`): side by side, each after those it depends on,
//! under the bwrap sandbox with real processes, a real git repository and a real redis-server.

use raibid_agent::{JobEnd, SecretStore};
use raibid_model::{JobStatus, StepStatus};
use raibid_testkit::GitRepo;

mod support;
use support::Harness;

/// Runs a job of `pipeline` on one agent; its id, how the agent ended it, and its log.
async fn run_pipeline(h: &Harness, pipeline: &str) -> (String, Vec<(String, JobEnd)>, String) {
    let repo = GitRepo::new();
    let sha = repo.commit(&[(".raibid.yaml", pipeline)], "pipeline");
    let job = h.enqueue(&repo.url(), &sha).await;
    let ends = h.run_once(h.runner(SecretStore::default())).await;
    let log = h.log(&job.id).await;
    (job.id, ends, log)
}

/// `a` and `b` each wait for the other to have started, which only steps running at the same
/// time can do (one after the other, each would give up after 10 s and fail); `after` waits for
/// both, and `later` for a step its `when` skipped.
const SIDE_BY_SIDE: &str = r#"steps:
  - name: a
    run: |
      touch .a-started
      for i in $(seq 1 100); do test -f .b-started && break; sleep 0.1; done
      test -f .b-started && echo a-saw-b
  - name: b
    run: |
      touch .b-started
      for i in $(seq 1 100); do test -f .a-started && break; sleep 0.1; done
      test -f .a-started && echo b-saw-a
  - name: after
    depends_on: [a, b]
    run: test -f .a-started && test -f .b-started && echo both-done
  - name: tags-only
    depends_on: [after]
    run: echo never
    when: { event: tag }
  - name: later
    depends_on: [tags-only]
    run: echo after-a-skipped-step
"#;

#[tokio::test]
async fn steps_without_dependencies_run_side_by_side_and_the_rest_wait_for_theirs() {
    let h = Harness::new();
    let (id, ends, log) = run_pipeline(&h, SIDE_BY_SIDE).await;
    assert_eq!(
        ends,
        vec![(id.clone(), JobEnd::Acked(JobStatus::Success))],
        "{log}"
    );
    let done = h.job(&id).await;
    let statuses: Vec<(&str, StepStatus)> = done
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("a", StepStatus::Success),
            ("b", StepStatus::Success),
            ("after", StepStatus::Success),
            ("tags-only", StepStatus::Skipped),
            ("later", StepStatus::Success),
        ]
    );
    for line in [
        "[a] a-saw-b\n",
        "[b] b-saw-a\n",
        "[after] both-done\n",
        "[later] after-a-skipped-step\n",
    ] {
        assert!(log.contains(line), "{line:?} in {log}");
    }
    assert!(!log.contains("never"), "{log}");
    let done_at = log.find("[after] both-done").unwrap();
    assert!(
        log.find("[a] a-saw-b").unwrap() < done_at && log.find("[b] b-saw-a").unwrap() < done_at,
        "after ran after both: {log}"
    );
    let tail = &done.steps[0].tail;
    assert!(
        tail.ends_with("\na-saw-b") && !tail.contains("[a]") && !tail.contains("b-saw-a"),
        "each step's own tail, without the prefix: {tail:?}"
    );
}

/// A failure stops what has not started (but steps for failures), and lets what runs beside
/// it finish; the job's reason is the failure's.
const FAILING: &str = r#"steps:
  - name: fails
    run: exit 3
  - name: slow
    run: sleep 1 && echo slow-finished
  - name: dependent
    depends_on: [fails]
    run: echo should-not-run
  - name: cleanup
    depends_on: [fails]
    run: echo cleaning-up
    when: { status: [failure] }
"#;

#[tokio::test]
async fn a_failure_skips_the_steps_after_it_and_lets_the_running_ones_finish() {
    let h = Harness::new();
    let (id, ends, log) = run_pipeline(&h, FAILING).await;
    assert_eq!(
        ends,
        vec![(id.clone(), JobEnd::Acked(JobStatus::Failure))],
        "{log}"
    );
    let done = h.job(&id).await;
    assert_eq!(done.reason.as_deref(), Some("step fails exit code 3"));
    let status = |name: &str| done.steps.iter().find(|s| s.name == name).unwrap().status;
    assert_eq!(status("fails"), StepStatus::Failure);
    assert_eq!(status("slow"), StepStatus::Success);
    assert_eq!(status("dependent"), StepStatus::Skipped);
    assert_eq!(status("cleanup"), StepStatus::Success);
    assert!(log.contains("[slow] slow-finished\n"), "{log}");
    assert!(log.contains("[cleanup] cleaning-up\n"), "{log}");
    assert!(!log.contains("should-not-run"), "{log}");
}

/// A step may wait for one written after it (Woodpecker's order-free `depends_on`).
#[tokio::test]
async fn a_step_may_wait_for_a_step_written_after_it() {
    let h = Harness::new();
    let (id, ends, log) = run_pipeline(
        &h,
        "steps:\n  - name: test\n    depends_on: [build]\n    run: cat built\n  - name: build\n    depends_on: []\n    run: echo made > built\n",
    )
    .await;
    assert_eq!(
        ends,
        vec![(id.clone(), JobEnd::Acked(JobStatus::Success))],
        "{log}"
    );
    assert!(log.contains("[test] made\n"), "{log}");
    let build = log.find("[build]").or_else(|| log.find("build")).unwrap();
    let test = log.find("[test] made").unwrap();
    assert!(build < test, "{log}");
}

/// A cancel stops every step running side by side, and no step starts after it.
#[tokio::test]
async fn cancelling_a_graph_stops_all_its_running_steps() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: one\n    run: sleep 120\n  - name: two\n    run: sleep 120\n  \
             - name: three\n    depends_on: [one]\n    run: echo too-late\n",
        )],
        "slow",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    h.cancel_when(&job.id, |job| {
        let running = job.steps.iter().filter(|s| s.status == StepStatus::Running);
        job.status == JobStatus::Running && running.count() == 2
    });
    let started = std::time::Instant::now();
    let ends = h.run_once(h.runner(SecretStore::default())).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert_eq!(ends[0].1, JobEnd::Acked(JobStatus::Cancelled));
    let done = h.job(&job.id).await;
    let statuses: Vec<StepStatus> = done.steps.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [
            StepStatus::Cancelled,
            StepStatus::Cancelled,
            StepStatus::Skipped
        ]
    );
    assert!(!h.log(&job.id).await.contains("too-late"));
}

/// `retry`: a step that fails is run again, up to its count, with `CI_STEP_ATTEMPT`; the last
/// run decides.
#[tokio::test]
async fn a_failing_step_is_retried_as_often_as_it_asks() {
    let h = Harness::new();
    let (id, ends, log) = run_pipeline(
        &h,
        r#"steps:
  - name: flaky
    retry: 2
    run: |
      n=$(cat "$HOME/tries" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$HOME/tries"
      echo "try $n attempt $CI_STEP_ATTEMPT"
      test $n -ge 2
  - name: hopeless
    retry: 1
    failure: ignore
    run: echo nope; exit 4
"#,
    )
    .await;
    assert_eq!(
        ends,
        vec![(id.clone(), JobEnd::Acked(JobStatus::Success))],
        "{log}"
    );
    for line in [
        "try 1 attempt 1\n",
        "↻ flaky: exit code 1",
        "retrying, attempt 2 of 3",
        "try 2 attempt 2\n",
        "↻ hopeless: exit code 4",
    ] {
        assert!(log.contains(line), "{line:?} in {log}");
    }
    assert!(!log.contains("try 3"), "no third run after a pass: {log}");
    assert_eq!(log.matches("nope\n").count(), 2, "{log}");
    let done = h.job(&id).await;
    assert_eq!(done.steps[0].status, StepStatus::Success);
    assert_eq!(done.steps[1].status, StepStatus::Failure);
    assert_eq!(done.steps[1].exit_code, Some(4));
    assert!(!done.steps[0].tail.contains("try 1"), "the last run's tail");
}
