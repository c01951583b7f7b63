//! A newer build of the branch stopping the one an agent is running, unless its pipeline says
//! `interruptible: false`: a real agent loop, bubblewrap steps, git and redis-server.

use std::time::Duration;

use raibid_agent::{JobEnd, SecretStore};
use raibid_model::{JobStatus, StepStatus};
use raibid_queue::{CancelResult, Queue, Superseded};
use raibid_testkit::GitRepo;

mod support;
use support::Harness;

/// Waits until job `id`'s log contains `text`, then queues a push of `newer` to the same
/// branch and supersedes as the server does; the newer job's id, and what it cancelled.
fn supersede_when_logged(
    h: &Harness,
    url: &str,
    id: &str,
    text: &'static str,
    newer: String,
) -> tokio::task::JoinHandle<(String, Vec<Superseded>)> {
    let queue: Queue = h.queue.clone();
    let (url, id) = (url.to_owned(), id.to_owned());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let batch = queue
                .read_log(&id, &raibid_queue::LogCursor::start(), 10_000)
                .await
                .unwrap();
            let log: Vec<u8> = batch.chunks.into_iter().flat_map(|c| c.data).collect();
            if String::from_utf8_lossy(&log).contains(text) {
                break;
            }
        }
        let spec = raibid_model::NewJob::new(
            "acme/app",
            url,
            "refs/heads/main",
            newer,
            raibid_model::Event::Push,
        );
        let raibid_queue::Enqueued::Created(job) = queue.enqueue(spec).await.unwrap() else {
            panic!("not created");
        };
        let superseded = queue.supersede(&job).await.unwrap();
        (job.id, superseded)
    })
}

#[tokio::test]
async fn a_newer_push_stops_the_build_the_agent_is_running() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let old = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: wait\n    run: echo wait\"\"ing; sleep 120\n",
        )],
        "slow",
    );
    let new = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: quick\n    run: echo quick\n",
        )],
        "quick",
    );
    let job = h.enqueue(&repo.url(), &old).await;
    // As the server does on the webhook: the build joins its branch's lane.
    assert!(h.queue.supersede(&job).await.unwrap().is_empty());
    let superseding = supersede_when_logged(&h, &repo.url(), &job.id, "waiting", new.clone());

    let started = std::time::Instant::now();
    let ends = h.run_once(h.runner(SecretStore::default())).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped, not waited for"
    );
    let (newer, superseded) = superseding.await.unwrap();
    assert_eq!(
        superseded,
        vec![Superseded {
            id: job.id.clone(),
            result: CancelResult::Requested
        }]
    );
    assert_eq!(
        ends,
        vec![(job.id.clone(), JobEnd::Acked(JobStatus::Cancelled))]
    );
    let done = h.job(&job.id).await;
    assert_eq!(done.status, JobStatus::Cancelled);
    assert_eq!(
        done.reason.unwrap(),
        format!("superseded by job {newer} ({})", &new[..10])
    );
    let ends = h.run_once(h.runner(SecretStore::default())).await;
    assert_eq!(
        ends,
        vec![(newer, JobEnd::Acked(JobStatus::Success))],
        "the newer build runs"
    );
    assert_eq!(done.steps[0].status, StepStatus::Cancelled);
}

#[tokio::test]
async fn a_pipeline_that_may_not_be_interrupted_runs_to_its_end() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let old = repo.commit(
        &[(
            ".raibid.yaml",
            "interruptible: false\nsteps:\n  - name: deploy\n    run: echo deploy\"\"ing; sleep 2; echo deployed\n",
        )],
        "deploy",
    );
    let new = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: quick\n    run: echo quick\n",
        )],
        "quick",
    );
    let job = h.enqueue(&repo.url(), &old).await;
    // As the server does on the webhook: the build joins its branch's lane.
    assert!(h.queue.supersede(&job).await.unwrap().is_empty());
    let superseding = supersede_when_logged(&h, &repo.url(), &job.id, "deploying", new);

    let ends = h.run_once(h.runner(SecretStore::default())).await;
    assert_eq!(
        superseding.await.unwrap().1,
        vec![Superseded {
            id: job.id.clone(),
            result: CancelResult::Kept
        }]
    );
    assert_eq!(
        ends,
        vec![(job.id.clone(), JobEnd::Acked(JobStatus::Success))]
    );
    let log = h.log(&job.id).await;
    assert!(
        log.contains("interruptible: false: a newer build of this ref will not cancel this one"),
        "{log}"
    );
    assert!(log.contains("deployed"), "{log}");
}
