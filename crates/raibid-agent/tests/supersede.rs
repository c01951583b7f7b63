//! A newer build of the branch stopping the one an agent is running, unless its pipeline says
//! `interruptible: false`: a real agent loop, bubblewrap steps, git and redis-server.

use std::time::Duration;

use raibid_agent::{JobEnd, SecretStore};
use raibid_model::{JobStatus, StepStatus};
use raibid_queue::{CancelResult, Queue, Superseded};
use raibid_testkit::GitRepo;

mod support;
use support::Harness;

/// What a test starts from: a push of a commit with `pipeline`, queued as its webhook would
/// have it, and a task that waits until that job's log shows `text`, then pushes a newer commit
/// (a quick pipeline) and supersedes as the server does. The task gives the newer job's id and
/// what it superseded.
struct Pushes {
    /// Kept until the test ends: the agent checks it out.
    _repo: GitRepo,
    job: raibid_model::Job,
    newer_commit: String,
    superseding: tokio::task::JoinHandle<(String, Vec<Superseded>)>,
}

async fn push_then_push_again(h: &Harness, pipeline: &str, text: &'static str) -> Pushes {
    let repo = GitRepo::new();
    let old = repo.commit(&[(".raibid.yaml", pipeline)], "old");
    let newer_commit = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: quick\n    run: echo quick\n",
        )],
        "new",
    );
    let job = h.enqueue(&repo.url(), &old).await;
    // As the server does on the webhook: the build joins its branch's lane.
    assert!(h.queue.supersede(&job).await.unwrap().is_empty());
    let queue: Queue = h.queue.clone();
    let (url, id, newer) = (repo.url(), job.id.clone(), newer_commit.clone());
    let superseding = tokio::spawn(async move {
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
    });
    Pushes {
        _repo: repo,
        job,
        newer_commit,
        superseding,
    }
}

#[tokio::test]
async fn a_newer_push_stops_the_build_the_agent_is_running() {
    let h = Harness::new();
    // `wait""ing` prints what the log is watched for; the command itself does not contain it.
    let mut pushes = push_then_push_again(
        &h,
        "steps:\n  - name: wait\n    run: echo wait\"\"ing; sleep 120\n",
        "waiting",
    )
    .await;
    let (job, new) = (&pushes.job, &pushes.newer_commit);

    let started = std::time::Instant::now();
    let ends = h.run_once(h.runner(SecretStore::default())).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped, not waited for"
    );
    let (newer, superseded) = (&mut pushes.superseding).await.unwrap();
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
    let mut pushes = push_then_push_again(
        &h,
        "interruptible: false\nsteps:\n  - name: deploy\n    run: echo deploy\"\"ing; sleep 2; echo deployed\n",
        "deploying",
    )
    .await;
    let job = &pushes.job;

    let ends = h.run_once(h.runner(SecretStore::default())).await;
    assert_eq!(
        (&mut pushes.superseding).await.unwrap().1,
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
