//! Several workflows in `.raibid/`: a push's first job queues one job per workflow (and per
//! variant of a workflow's matrix), with a real agent, redis-server and git repositories.

use raibid_agent::SecretStore;
use raibid_model::{Event, Job, JobStatus, NewJob, PoolName};
use raibid_testkit::GitRepo;

mod support;
use support::Harness;

const BUILD: &str =
    "steps:\n  - name: build\n    run: echo \"built by $CI_WORKFLOW_NAME/$RAIBID_WORKFLOW\"\n";
const TEST: &str = "matrix:\n  FLAVOUR: [plain, fancy]\nsteps:\n  - name: test\n    run: echo \"tested $FLAVOUR in $CI_WORKFLOW_NAME\"\n";
const DEPLOY: &str = "when:\n  event: tag\nsteps:\n  - name: deploy\n    run: echo deployed\n";

/// Runs agents until every job in `ids` has ended; the jobs, in that order.
async fn run_all(h: &Harness, ids: &[String]) -> Vec<Job> {
    for _ in 0..ids.len() + 1 {
        let mut all_done = true;
        for id in ids {
            all_done &= h.job(id).await.status.is_final();
        }
        if all_done {
            break;
        }
        h.run_once(h.runner(SecretStore::default())).await;
    }
    let mut jobs = Vec::new();
    for id in ids {
        jobs.push(h.job(id).await);
    }
    jobs
}

/// Queues a push of `sha` and runs the job that queues its workflows, which must succeed
/// with a reason starting `queued` and ending `skipped`; the job and its log.
async fn fan_out(
    h: &Harness,
    repo: &GitRepo,
    sha: &str,
    queued: &str,
    skipped: &str,
) -> (Job, String) {
    let parent = h.enqueue(&repo.url(), sha).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let done = h.job(&parent.id).await;
    assert_eq!(done.status, JobStatus::Success, "{:?}", done.reason);
    let reason = done.reason.clone().unwrap();
    assert!(
        reason.starts_with(queued) && reason.ends_with(skipped),
        "{reason}"
    );
    let log = h.log(&parent.id).await;
    (done, log)
}

#[tokio::test]
async fn each_workflow_becomes_a_job_of_its_own() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[
            (".raibid/build.yaml", BUILD),
            (".raibid/test.yml", TEST),
            (".raibid/deploy.yaml", DEPLOY),
            (".raibid/README.md", "not a workflow\n"),
        ],
        "workflows",
    );
    let (done, log) = fan_out(
        &h,
        &repo,
        &sha,
        "2 workflow(s) queued as 3 job(s)",
        "skipped: deploy",
    )
    .await;
    assert!(
        log.contains("3 workflow(s) in .raibid/: build, deploy, test"),
        "{log}"
    );
    assert!(log.contains("workflow deploy skipped"), "{log}");
    assert_eq!(done.children.len(), 3);

    let children = run_all(&h, &done.children).await;
    let mut seen = Vec::new();
    for child in &children {
        assert_eq!(child.status, JobStatus::Success, "{:?}", child.reason);
        assert_eq!(child.spec.matrix_parent.as_deref(), Some(done.id.as_str()));
        assert!(child.children.is_empty(), "variants are not grandchildren");
        let workflow = child.spec.env["RAIBID_WORKFLOW"].clone();
        let variant = child.spec.env.get("RAIBID_MATRIX").cloned();
        seen.push((workflow, variant));
        let log = h.log(&child.id).await;
        match child.spec.env.get("RAIBID_MATRIX") {
            None => assert!(log.contains("built by build/build"), "{log}"),
            Some(v) => {
                let flavour = v.strip_prefix("FLAVOUR=").unwrap();
                assert!(log.contains(&format!("tested {flavour} in test")), "{log}");
            }
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("build".to_owned(), None),
            ("test".to_owned(), Some("FLAVOUR=fancy".to_owned())),
            ("test".to_owned(), Some("FLAVOUR=plain".to_owned())),
        ]
    );
}

#[tokio::test]
async fn a_broken_workflow_fails_the_push_and_queues_nothing() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[
            (".raibid/build.yaml", BUILD),
            (
                ".raibid/lint.yaml",
                "steps:\n  - name: lint\n    rnu: cargo clippy\n",
            ),
        ],
        "broken",
    );
    let parent = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let done = h.job(&parent.id).await;
    assert_eq!(done.status, JobStatus::Error);
    let reason = done.reason.unwrap();
    assert!(reason.starts_with(".raibid/lint.yaml:3:"), "{reason}");
    assert!(done.children.is_empty());
    assert_eq!(h.queue.stats(&PoolName::default()).await.unwrap().lag, 0);
}

#[tokio::test]
async fn a_pipeline_file_and_workflows_together_are_refused() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(".raibid.yaml", BUILD), (".raibid/test.yaml", TEST)],
        "both",
    );
    let (job, _) = h.run(&repo.url(), &sha).await;
    assert_eq!(job.status, JobStatus::Error);
    assert_eq!(
        job.reason.as_deref(),
        Some("both .raibid.yaml and .raibid/ (test) hold pipelines; keep one")
    );
    // A `.raibid/` without workflow files (scripts the steps call) is no conflict.
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(".raibid.yaml", BUILD), (".raibid/helper.sh", "echo hi\n")],
        "scripts",
    );
    let (job, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(job.status, JobStatus::Success, "{log}");
}

#[tokio::test]
async fn a_job_may_name_the_workflow_it_runs() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(".raibid/build.yaml", BUILD), (".raibid/test.yaml", TEST)],
        "workflows",
    );
    let manual = |workflow: &str| {
        let mut spec = NewJob::new(
            "acme/app",
            repo.url(),
            "refs/heads/main",
            &sha,
            Event::Manual,
        );
        spec.env.insert("RAIBID_WORKFLOW".into(), workflow.into());
        spec
    };
    let one = h.enqueue_spec(manual("build")).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let done = h.job(&one.id).await;
    assert_eq!(done.status, JobStatus::Success, "{:?}", done.reason);
    assert!(done.children.is_empty());
    let log = h.log(&one.id).await;
    assert!(log.contains("workflow build (.raibid/build.yaml)"), "{log}");
    assert!(log.contains("built by build/build"), "{log}");
    assert!(!log.contains("tested"), "{log}");

    let missing = h.enqueue_spec(manual("deploy")).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let done = h.job(&missing.id).await;
    assert_eq!(done.status, JobStatus::Error);
    assert_eq!(
        done.reason.as_deref(),
        Some(
            "the job runs workflow \"deploy\" (RAIBID_WORKFLOW), which is not in .raibid/ \
             (build, test)"
        )
    );
}

#[tokio::test]
async fn a_push_no_workflow_runs_for_is_skipped() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let base = repo.commit(
        &[
            (".raibid/deploy.yaml", DEPLOY),
            (
                ".raibid/docs.yaml",
                "when:\n  path: \"docs/**\"\nsteps:\n  - name: docs\n    run: echo docs\n",
            ),
        ],
        "workflows",
    );
    let sha = repo.commit(&[("src/main.rs", "fn main() {}\n")], "code only");
    let mut spec = NewJob::new("acme/app", repo.url(), "refs/heads/main", &sha, Event::Push);
    spec.diff_base = Some(base);
    let parent = h.enqueue_spec(spec).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let done = h.job(&parent.id).await;
    assert_eq!(done.status, JobStatus::Success, "{:?}", done.reason);
    assert!(done.children.is_empty());
    let reason = done.reason.unwrap();
    assert!(
        reason == "skipped: no workflow's when matches (deploy, docs)",
        "{reason}"
    );
    assert_eq!(h.queue.stats(&PoolName::default()).await.unwrap().lag, 0);
}

#[tokio::test]
async fn a_workflow_waits_for_the_workflows_it_depends_on() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let test = format!("depends_on: [build]\n{TEST}");
    let sha = repo.commit(
        &[
            (".raibid/build.yaml", BUILD),
            (".raibid/test.yaml", test.as_str()),
            (
                ".raibid/notify.yaml",
                "depends_on: [test]\nruns_on: [success, failure]\nsteps:\n  - name: n\n    run: echo notified\n",
            ),
            (
                ".raibid/page.yaml",
                "depends_on: [test]\nruns_on: [failure]\nsteps:\n  - name: p\n    run: echo paged\n",
            ),
            (".raibid/deploy.yaml", DEPLOY),
            (
                ".raibid/publish.yaml",
                "depends_on: [deploy]\nsteps:\n  - name: p\n    run: echo published\n",
            ),
        ],
        "waiting workflows",
    );
    let (done, log) = fan_out(
        &h,
        &repo,
        &sha,
        "4 workflow(s) queued as 5 job(s)",
        "skipped: deploy, publish",
    )
    .await;
    assert!(
        log.contains("workflow publish skipped: it depends on deploy, which does not run"),
        "{log}"
    );
    // Queued in dependency order: build, test's variants, notify and page.
    let kids = {
        let mut kids = Vec::new();
        for id in &done.children {
            kids.push(h.job(id).await);
        }
        kids
    };
    let workflow = |j: &Job| j.spec.env["RAIBID_WORKFLOW"].clone();
    assert_eq!(
        kids.iter().map(workflow).collect::<Vec<_>>(),
        ["build", "test", "test", "notify", "page"]
    );
    let (build, tests, notify, page) = (&kids[0], &kids[1..3], &kids[3], &kids[4]);
    assert_eq!(build.status, JobStatus::Queued);
    assert!(build.spec.needs.is_none());
    for t in tests {
        assert_eq!(t.status, JobStatus::Blocked);
        let needs = t.spec.needs.as_ref().unwrap();
        assert_eq!(
            (needs.workflows.as_slice(), needs.jobs.as_slice()),
            (&["build".to_owned()][..], &[build.id.clone()][..])
        );
        assert!(!needs.on_failure);
    }
    let needs = notify.spec.needs.as_ref().unwrap();
    assert_eq!(needs.jobs, [tests[0].id.clone(), tests[1].id.clone()]);
    assert!(needs.on_failure && needs.on_success);
    let needs = page.spec.needs.as_ref().unwrap();
    assert!(needs.on_failure && !needs.on_success);

    // Only build runs; what the server does when a job ends, the test does by hand.
    let ends = h.run_once(h.runner(SecretStore::default())).await;
    assert_eq!(
        ends.iter().map(|(id, _)| id).collect::<Vec<_>>(),
        [&build.id]
    );
    assert_eq!(h.job(&tests[0].id).await.status, JobStatus::Blocked);
    let released = h.queue.release_waiting(&done.id).await.unwrap();
    assert_eq!(released.len(), 2, "{released:?}");
    let ids: Vec<String> = tests.iter().map(|t| t.id.clone()).collect();
    for t in run_all(&h, &ids).await {
        assert_eq!(t.status, JobStatus::Success, "{:?}", t.reason);
    }
    assert_eq!(h.job(&notify.id).await.status, JobStatus::Blocked);
    h.queue.release_waiting(&done.id).await.unwrap();
    // `runs_on: [failure]` and nothing failed.
    let page = h.job(&page.id).await;
    assert_eq!(page.status, JobStatus::Skipped);
    assert_eq!(
        page.reason.as_deref(),
        Some("not run: test succeeded, and it runs only after a failure")
    );
    let notify = &run_all(&h, std::slice::from_ref(&notify.id)).await[0];
    assert_eq!(notify.status, JobStatus::Success, "{:?}", notify.reason);
    assert!(h.log(&notify.id).await.contains("notified"));
}

#[tokio::test]
async fn workflows_that_wait_for_each_other_are_refused() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[
            (
                ".raibid/a.yaml",
                "depends_on: [b]\nsteps:\n  - name: a\n    run: 'true'\n",
            ),
            (
                ".raibid/b.yaml",
                "depends_on: [a]\nsteps:\n  - name: b\n    run: 'true'\n",
            ),
            (
                ".raibid/c.yaml",
                "depends_on: [d]\nsteps:\n  - name: c\n    run: 'true'\n",
            ),
        ],
        "cycle",
    );
    let (job, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(job.status, JobStatus::Error, "{log}");
    assert_eq!(
        job.reason.as_deref(),
        Some("workflow \"c\" depends on \"d\", which is not one of the workflows (a, b, c)")
    );
    let sha = repo.commit(&[(".raibid/c.yaml", BUILD)], "no d");
    let (job, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(job.status, JobStatus::Error, "{log}");
    assert!(
        job.reason
            .as_deref()
            .unwrap()
            .starts_with("the workflows a, b wait for each other"),
        "{:?}",
        job.reason
    );
    assert_eq!(h.queue.stats(&PoolName::default()).await.unwrap().lag, 0);
}

#[tokio::test]
async fn a_pipeline_file_cannot_wait_for_workflows() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "depends_on: [build]\nsteps:\n  - name: a\n    run: 'true'\n",
        )],
        "single",
    );
    let (job, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(job.status, JobStatus::Error, "{log}");
    let reason = job.reason.unwrap();
    assert!(
        reason.starts_with(".raibid.yaml:1:13: ") && reason.contains("only a workflow of .raibid/"),
        "{reason}"
    );
}

/// A repository moving from Woodpecker runs its files as they are when it has no raibid ones:
/// `.woodpecker/` first (one job per workflow), else `.woodpecker.yaml`, else
/// `.woodpecker.yml`; raibid's own files win over them.
#[tokio::test]
async fn woodpecker_files_run_when_there_are_no_raibid_ones() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let single = "steps:\n  hello:\n    image: alpine\n    commands: [echo \"from $CI_WORKFLOW_NAME woodpecker file\"]\n";
    let sha = repo.commit(&[(".woodpecker.yml", single)], "a woodpecker file");
    let (done, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert!(
        log.contains("no .raibid.yaml: running Woodpecker's .woodpecker.yml")
            && log.contains("woodpecker file\n"),
        "{log}"
    );

    let sha = repo.commit(
        &[
            (".woodpecker/build.yaml", BUILD),
            (".woodpecker/deploy.yaml", DEPLOY),
        ],
        "woodpecker workflows",
    );
    let (done, log) = fan_out(
        &h,
        &repo,
        &sha,
        "1 workflow(s) queued as 1 job(s)",
        "skipped: deploy",
    )
    .await;
    assert!(
        log.contains("running the workflows of Woodpecker's .woodpecker/")
            && log.contains("2 workflow(s) in .woodpecker/: build, deploy"),
        "{log}"
    );
    let jobs = run_all(&h, &done.children).await;
    assert_eq!(jobs[0].status, JobStatus::Success);
    assert!(
        h.log(&jobs[0].id).await.contains("built by build/build\n"),
        "{}",
        h.log(&jobs[0].id).await
    );

    let ours = "steps:\n  - name: ours\n    run: echo raibid file\n";
    let sha = repo.commit(&[(".raibid.yaml", ours)], "our own file too");
    let (done, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert!(
        log.contains("raibid file\n") && !log.contains("Woodpecker"),
        "{log}"
    );
}
