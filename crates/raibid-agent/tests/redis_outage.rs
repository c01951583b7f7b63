//! Redis dies under an agent running a job and is started again from its append-only file, as
//! `raibid up`'s keeper and a Kubernetes StatefulSet do. The job waits for it and goes on
//! where it was, rather than failing over a restart that lost nothing. So it does when Redis
//! answers but refuses writes (a full disk). A real agent runner, redis-server (SIGKILLed, or
//! its background save failed) and git repository.

use std::time::Duration;

use raibid_agent::{JobEnd, Runner, SecretStore};
use raibid_model::{Event, Job, JobStatus, NewJob, PoolName};
use raibid_queue::Claimed;
use raibid_testkit::GitRepo;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod support;
use support::{AGENT_NAME, Harness};

/// How long Redis is away.
const OUTAGE: Duration = Duration::from_secs(6);

/// What the agent's calls to Redis wait at most: a call made as Redis dies can wait this long,
/// and the job writes its log's first lines before it reads anything from Redis.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// Kills Redis, waits [`OUTAGE`] (the job `run` must still be waiting then), and starts Redis
/// again on its port from its data.
async fn outage(h: &mut Harness, run: &JoinHandle<JobEnd>) {
    h.redis.kill();
    tokio::time::sleep(OUTAGE).await;
    assert!(!run.is_finished(), "the job waits while Redis is away");
    tokio::task::block_in_place(|| h.redis.restart());
}

/// Claims the next job as the tests' agent would, and starts running it.
async fn start(h: &Harness, runner: std::sync::Arc<Runner>) -> (Claimed, JoinHandle<JobEnd>) {
    let mut claimer = h.queue.claimer(AGENT_NAME).await.unwrap();
    let claimed = claimer
        .claim(&[PoolName::default()], Duration::ZERO)
        .await
        .unwrap()
        .expect("a job to claim");
    let run = {
        let claimed = claimed.clone();
        tokio::spawn(async move {
            runner
                .run(claimed, CancellationToken::new())
                .await
                .expect("the job's end is recorded")
        })
    };
    (claimed, run)
}

/// The job `run` runs, once it has been acked `success` by this agent.
async fn succeeded(h: &Harness, run: JoinHandle<JobEnd>, id: &str) -> Job {
    let end = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the job ends once Redis answers")
        .unwrap();
    assert_eq!(end, JobEnd::Acked(JobStatus::Success));
    let done = h.job(id).await;
    assert_eq!(done.status, JobStatus::Success, "{:?}", done.reason);
    done
}

/// Before its first step a job reads the previous job of its branch (for `CI_PREV_*`) and the
/// repository's secrets: with Redis gone from the claim on, both wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_job_reads_before_its_steps_waits_for_redis() {
    let mut h = Harness::with_aof(COMMAND_TIMEOUT);
    let repo = GitRepo::new();
    let first = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: show\n    run: echo \"previous=$CI_PREV_COMMIT_SHA\"\n",
        )],
        "first",
    );
    let (previous, _) = h.run(&repo.url(), &first).await;
    assert_eq!(previous.status, JobStatus::Success);
    let second = repo.commit(&[("README", "again\n")], "second");
    let job = h.enqueue(&repo.url(), &second).await;

    let (claimed, run) = start(&h, h.runner(SecretStore::default())).await;
    assert_eq!(claimed.job.id, job.id);
    outage(&mut h, &run).await;
    succeeded(&h, run, &job.id).await;
    let log = h.log(&job.id).await;
    assert!(log.contains(&format!("previous={first}")), "{log}");
    // Written while Redis was away, held by the log and written once it was back.
    assert!(log.contains("checked out"), "{log}");
}

/// A tag's job has no previous job to look up: the repository's secrets are the first thing
/// it reads from Redis, and that waits too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_s_job_waits_for_redis_to_read_its_secrets() {
    let mut h = Harness::with_aof(COMMAND_TIMEOUT);
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: release\n    run: echo \"releasing $CI_COMMIT_TAG\"\n",
        )],
        "release",
    );
    let job = h
        .enqueue_spec(NewJob::new(
            "acme/app",
            repo.url(),
            "refs/tags/v1.0.0",
            &sha,
            Event::Tag,
        ))
        .await;
    let (_claimed, run) = start(&h, h.runner(SecretStore::default())).await;
    outage(&mut h, &run).await;
    succeeded(&h, run, &job.id).await;
    let log = h.log(&job.id).await;
    assert!(log.contains("releasing v1.0.0"), "{log}");
}

/// A job whose steps end while Redis is away records its verdict once Redis is back,
/// instead of leaving the job to be run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verdict_reached_while_redis_is_away_is_recorded_once_it_is_back() {
    let mut h = Harness::with_aof(COMMAND_TIMEOUT);
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: work\n    run: sleep 2 && echo done\n",
        )],
        "work",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    let (_claimed, run) = start(&h, h.runner(SecretStore::default())).await;
    // The step is under way (or about to be) when Redis dies, and ends well before it is back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    outage(&mut h, &run).await;
    let done = succeeded(&h, run, &job.id).await;
    assert_eq!(done.attempt, 1, "not run again");
}

/// Redis answering but refusing writes (`MISCONF`: it cannot save, its disk full) is an
/// outage too: the job's log lines wait for it, and so does its verdict, instead of being
/// dropped, the job run again, while reads go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verdict_reached_while_redis_refuses_writes_is_recorded_once_it_takes_them() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: work\n    run: sleep 1 && echo written while refused\n",
        )],
        "work",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    let (_claimed, run) = start(&h, h.runner(SecretStore::default())).await;
    tokio::task::block_in_place(|| h.redis.refuse_writes());
    tokio::time::sleep(OUTAGE).await;
    assert!(
        !run.is_finished(),
        "the job waits while Redis refuses writes"
    );
    tokio::task::block_in_place(|| h.redis.accept_writes());
    let done = succeeded(&h, run, &job.id).await;
    assert_eq!(done.attempt, 1, "not run again");
    let log = h.log(&job.id).await;
    assert!(log.contains("written while refused"), "{log}");
}
