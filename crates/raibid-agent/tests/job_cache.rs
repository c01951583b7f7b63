//! The pipeline's `cache:` across whole jobs: a real agent, a real redis-server, bwrap steps.

use std::sync::Arc;

use raibid_agent::executor::HostExecutor;
use raibid_agent::{SecretStore, StepUser};
use raibid_model::{Event, JobStatus, NewJob};
use raibid_testkit::GitRepo;

mod support;
use support::Harness;

/// Each job says what `target/marker` held before its first step, then leaves its own id in it
/// (and fails when asked to).
const PIPELINE: &str = "cache:\n  key: \"{branch}\"\n  paths: [target]\nsteps:\n  - name: build\n    run: |\n      \
                        echo \"found=$(cat target/marker 2>/dev/null || echo none)\"\n      \
                        mkdir -p target\n      echo \"$RAIBID_JOB_ID\" > target/marker\n      \
                        test -f target/stable || echo kept > target/stable\n      \
                        if [ -n \"$FAIL\" ]; then exit 1; fi\n";

fn push(repo: &GitRepo, sha: &str) -> NewJob {
    NewJob::new("acme/app", repo.url(), "refs/heads/main", sha, Event::Push)
}

/// Runs one job; its status and log.
async fn run(h: &Harness, spec: NewJob) -> (String, JobStatus, String) {
    let job = h.enqueue_spec(spec).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let log = h.log(&job.id).await;
    (job.id.clone(), h.job(&job.id).await.status, log)
}

#[tokio::test]
async fn the_cache_carries_target_to_the_next_job_but_not_from_forks_or_failures() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(&[(".raibid.yaml", PIPELINE)], "init");

    let (first, status, log) = run(&h, push(&repo, &sha)).await;
    assert_eq!(status, JobStatus::Success, "{log}");
    assert!(
        log.contains("cache: nothing saved under key \"main\" yet"),
        "{log}"
    );
    assert!(log.contains("found=none"), "{log}");
    assert!(log.contains("cache: saved target as key \"main\""), "{log}");

    let (second, status, log) = run(&h, push(&repo, &sha)).await;
    assert_eq!(status, JobStatus::Success, "{log}");
    assert!(
        log.contains("cache: restored target from key \"main\""),
        "{log}"
    );
    assert!(log.contains(&format!("found={first}\n")), "{log}");
    assert!(log.contains("cache: saved target"), "{log}");
    // target/stable came back as saved and stayed: the save keeps the first save's copy.
    assert!(
        log.contains("cache: 1 of 2 files unchanged since the last save, kept rather than copied"),
        "{log}"
    );

    // A fork's pull request into main gets no cache: not main's (what trusted builds left
    // there is not for anyone's pipeline), and it saves nothing.
    let mut fork = NewJob::new(
        "acme/app",
        repo.url(),
        "refs/pull/7/head",
        &sha,
        Event::PullRequest,
    );
    fork.pr_number = Some(7);
    fork.target_branch = Some("main".into());
    fork.from_fork = true;
    let (_, status, log) = run(&h, fork.clone()).await;
    assert_eq!(status, JobStatus::Success, "{log}");
    assert!(log.contains("found=none\n"), "{log}");
    assert!(
        log.contains("cache: not used: pull requests from forks get no cache"),
        "{log}"
    );
    assert!(!log.contains("cache: saved"), "{log}");

    // With agent.secrets_for_forks the operator trusts forks: one starts from main's cache,
    // and still leaves it as it was.
    let trusting =
        raibid_agent::SecretStore::new(Default::default(), &Default::default(), true).unwrap();
    let job = h.enqueue_spec(fork).await;
    h.run_once(h.runner(trusting)).await;
    let log = h.log(&job.id).await;
    assert_eq!(h.job(&job.id).await.status, JobStatus::Success, "{log}");
    assert!(log.contains(&format!("found={second}\n")), "{log}");
    assert!(
        log.contains("cache: not saved: pull requests from forks never write the cache"),
        "{log}"
    );
    assert!(!log.contains("cache: saved"), "{log}");

    // A job whose step fails does not save what it left behind.
    let mut failing = push(&repo, &sha);
    failing.env.insert("FAIL".into(), "1".into());
    let (_, status, log) = run(&h, failing).await;
    assert_eq!(status, JobStatus::Failure, "{log}");
    assert!(log.contains(&format!("found={second}\n")), "{log}");
    assert!(
        log.contains("cache: not saved: the job did not succeed"),
        "{log}"
    );

    let (_, status, log) = run(&h, push(&repo, &sha)).await;
    assert_eq!(status, JobStatus::Success, "{log}");
    assert!(
        log.contains(&format!("found={second}\n")),
        "the fork or the failed job wrote the cache: {log}"
    );

    // Another branch has a cache of its own.
    let other = NewJob::new("acme/app", repo.url(), "refs/heads/dev", &sha, Event::Push);
    let (_, status, log) = run(&h, other).await;
    assert_eq!(status, JobStatus::Success, "{log}");
    assert!(log.contains("found=none"), "{log}");
}

/// Under `agent.step_user`, restored files belong to the step user like the rest of the
/// workspace, whoever's they were when saved (agents of one machine share the cache, each with
/// a step user of its own): restoring comes before the workspace is handed over.
#[tokio::test]
async fn restored_files_belong_to_the_step_user() {
    use std::os::unix::fs::PermissionsExt;
    let h = Harness::for_step_users();
    let repo = GitRepo::new();
    let script = "cache: [target]\nsteps:\n  - name: build\n    run: |\n      \
                  if [ -e target/marker ]; then echo owner=$(stat -c %u target/marker):$(stat -c %u target); fi\n      \
                  mkdir -p target\n      echo again >> target/marker\n";
    let sha = repo.commit(&[(".raibid.yaml", script)], "init");
    // uids of this test's own (see host_steps_run_as_the_step_user_and_cannot_write_the_mirror):
    // one agent saves, another restores.
    let runner = |uid| {
        let user = StepUser { uid, gid: uid };
        h.runner_on(
            Arc::new(HostExecutor::new().as_user(user)),
            SecretStore::default(),
            None,
            "registry.invalid",
        )
    };
    for (round, uid) in [64_997, 64_996].into_iter().enumerate() {
        let job = h.enqueue_spec(push(&repo, &sha)).await;
        h.run_once(runner(uid)).await;
        let log = h.log(&job.id).await;
        assert_eq!(h.job(&job.id).await.status, JobStatus::Success, "{log}");
        if round == 1 {
            assert!(log.contains("cache: restored target"), "{log}");
            assert!(log.contains("owner=64996:64996\n"), "{log}");
        }
    }
    // Steps of the step user cannot reach the saved entries.
    let jobs = h.cache().join("jobs");
    let mode = std::fs::metadata(&jobs).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}
