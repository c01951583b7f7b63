//! A pipeline's `concurrency:` group: a job whose group another job holds waits, `blocked`,
//! without keeping its agent, and runs once the holder has ended. A real agent loop,
//! redis-server and git repository.

use std::time::Duration;

use raibid_agent::{JobEnd, SecretStore};
use raibid_model::{Event, Job, JobStatus, NewJob, Outcome, PoolName};
use raibid_queue::{Claimed, GroupClaim};
use raibid_testkit::GitRepo;

mod support;
use support::Harness;

const DEPLOY: &str =
    "concurrency: production\nsteps:\n  - name: deploy\n    run: echo deploying $CI_COMMIT_SHA\n";

/// Claims `job` (the next queued) as an agent elsewhere would, and takes `group` for it.
async fn hold(h: &Harness, job: &Job, group: &str) -> Claimed {
    let mut elsewhere = h.queue.claimer("elsewhere").await.unwrap();
    let held = elsewhere
        .claim(&[PoolName::default()], Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.job.id, job.id);
    assert_eq!(
        h.queue.acquire_group(&held, group).await.unwrap(),
        GroupClaim::Held
    );
    held
}

#[tokio::test]
async fn a_job_waits_for_its_group_without_an_agent_and_runs_when_it_is_free() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(&[(".raibid.yaml", DEPLOY)], "deploy");
    // Another deployment of the repository holds the group (claimed by hand: its agent is
    // elsewhere).
    let holder = h.enqueue(&repo.url(), &sha).await;
    let held = hold(&h, &holder, "production").await;

    let waiting = h.enqueue(&repo.url(), &sha).await;
    let runner = h.runner(SecretStore::default());
    let ends = h.run_once(runner.clone()).await;
    assert_eq!(ends, [(waiting.id.clone(), JobEnd::Parked)]);
    let parked = h.job(&waiting.id).await;
    assert_eq!(parked.status, JobStatus::Blocked);
    assert_eq!(parked.concurrency.as_deref(), Some("production"));
    assert!(parked.steps.is_empty(), "no step ran");
    let log = h.log(&waiting.id).await;
    assert!(
        log.contains(&format!(
            "concurrency group production: job {} holds it; this job waits",
            holder.id
        )),
        "{log}"
    );
    assert!(!log.contains("deploying"), "{log}");
    assert!(
        h.run_once(runner.clone()).await.is_empty(),
        "nothing to run"
    );

    // The holder ends; the server (here the test) hands the group on.
    assert!(
        h.queue
            .ack(&held, &Outcome::new(JobStatus::Success))
            .await
            .unwrap()
    );
    assert_eq!(
        h.queue
            .release_group("acme/app", "production")
            .await
            .unwrap(),
        Some(waiting.id.clone())
    );
    let ends = h.run_once(runner).await;
    assert_eq!(
        ends,
        [(waiting.id.clone(), JobEnd::Acked(JobStatus::Success))]
    );
    let done = h.job(&waiting.id).await;
    assert_eq!(done.attempt, 1, "the wait was not an attempt");
    let log = h.log(&waiting.id).await;
    assert!(
        log.contains("concurrency group production: this job holds it"),
        "{log}"
    );
    assert!(log.contains(&format!("deploying {sha}")), "{log}");
}

/// `concurrency: deploy-{branch}`: one group per branch, filled in for each job.
#[tokio::test]
async fn a_group_template_makes_a_group_per_branch() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "concurrency: deploy-{branch}\nsteps:\n  - name: deploy\n    run: echo deployed\n",
        )],
        "deploy per branch",
    );
    let on = |branch: &str| {
        NewJob::new(
            "acme/app",
            repo.url(),
            format!("refs/heads/{branch}"),
            sha.clone(),
            Event::Push,
        )
    };
    // A deployment of main holds `deploy-main`.
    let holder = h.enqueue_spec(on("main")).await;
    hold(&h, &holder, "deploy-main").await;

    let feature = h.enqueue_spec(on("feature/login")).await;
    let main = h.enqueue_spec(on("main")).await;
    let runner = h.runner(SecretStore::default());
    let ends = h.run_once(runner.clone()).await;
    assert_eq!(
        ends,
        [(feature.id.clone(), JobEnd::Acked(JobStatus::Success))]
    );
    assert_eq!(
        h.job(&feature.id).await.concurrency.as_deref(),
        Some("deploy-feature-login")
    );
    let ends = h.run_once(runner).await;
    assert_eq!(ends, [(main.id.clone(), JobEnd::Parked)]);
    assert_eq!(
        h.job(&main.id).await.concurrency.as_deref(),
        Some("deploy-main")
    );
}
