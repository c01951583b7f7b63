//! Newer builds cancelling older ones of the same ref, against a real redis-server.

use std::time::Duration;

use raibid_model::{Event, Job, JobStatus, NewJob, Outcome, PoolName};
use raibid_queue::{
    CancelResult, Claimed, Enqueued, Heartbeat, LANE_MAX, Queue, QueueOptions, ReleaseResult,
    Superseded,
};
use raibid_testkit::RedisServer;

fn queue(redis: &RedisServer) -> Queue {
    let mut o = QueueOptions::new(redis.url());
    o.command_timeout = Duration::from_secs(2);
    Queue::open(o).unwrap()
}

fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

fn build(git_ref: &str, commit: char, event: Event) -> NewJob {
    NewJob::new(
        "acme/app",
        "http://127.0.0.1/acme/app.git",
        git_ref,
        sha(commit),
        event,
    )
}

fn push(branch: &str, commit: char) -> NewJob {
    build(&format!("refs/heads/{branch}"), commit, Event::Push)
}

async fn enqueue(q: &Queue, spec: NewJob) -> Job {
    match q.enqueue(spec).await.unwrap() {
        Enqueued::Created(job) => *job,
        other => panic!("expected a new job, got {other:?}"),
    }
}

async fn status(q: &Queue, id: &str) -> (JobStatus, Option<String>, bool) {
    let job = q.get(id).await.unwrap().expect("job exists");
    (job.status, job.reason, job.cancel_requested)
}

/// Claims the only queued job.
async fn claim(q: &Queue, name: &str) -> Claimed {
    let mut c = q.claimer(name).await.unwrap();
    c.claim(&[PoolName::default()], Duration::ZERO)
        .await
        .unwrap()
        .expect("a job is queued")
}

/// Queues a build and supersedes as the server does on a webhook; what it superseded.
async fn webhook(q: &Queue, spec: NewJob) -> (Job, Vec<Superseded>) {
    let job = enqueue(q, spec).await;
    let superseded = q.supersede(&job).await.unwrap();
    (job, superseded)
}

/// A build of `commit` on main, from its webhook, that an agent has claimed.
async fn running(q: &Queue, commit: char) -> Claimed {
    webhook(q, push("main", commit)).await;
    claim(q, "agent-1").await
}

/// Acks as an agent does when a heartbeat told it to stop.
async fn ack_cancelled(q: &Queue, claimed: &Claimed) {
    let mut outcome = Outcome::new(JobStatus::Cancelled);
    outcome.reason = Some("cancelled".into());
    assert!(q.ack(claimed, &outcome).await.unwrap());
}

fn ids(superseded: &[Superseded]) -> Vec<&str> {
    superseded.iter().map(|s| s.id.as_str()).collect()
}

#[tokio::test]
async fn a_push_cancels_the_older_builds_of_its_branch_and_nothing_else() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let (running, none) = webhook(&q, push("main", 'a')).await;
    assert!(none.is_empty());
    let claimed = claim(&q, "agent-1").await;
    assert_eq!(claimed.job.id, running.id);
    let (other_branch, _) = webhook(&q, push("dev", 'a')).await;
    let (pull, _) = webhook(&q, build("refs/pull/7/head", 'a', Event::PullRequest)).await;
    let manual = enqueue(&q, build("refs/heads/main", 'a', Event::Manual)).await;

    let (second, done) = webhook(&q, push("main", 'b')).await;
    assert_eq!(
        done,
        vec![Superseded {
            id: running.id.clone(),
            result: CancelResult::Requested
        }]
    );
    assert_eq!(
        status(&q, &running.id).await,
        (JobStatus::Running, None, true)
    );
    // The same commit again (pushed to the branch by another delivery): nothing to cancel,
    // the running one is being cancelled already.
    let (same_commit, done) = webhook(&q, push("main", 'b')).await;
    assert!(done.is_empty(), "{done:?}");

    let (newest, done) = webhook(&q, push("main", 'c')).await;
    assert_eq!(
        done,
        vec![
            Superseded {
                id: same_commit.id.clone(),
                result: CancelResult::Cancelled
            },
            Superseded {
                id: second.id.clone(),
                result: CancelResult::Cancelled
            },
        ],
        "newest first"
    );
    let reason = format!("superseded by job {} (cccccccccc)", newest.id);
    assert_eq!(
        status(&q, &second.id).await,
        (JobStatus::Cancelled, Some(reason.clone()), false)
    );
    for untouched in [&other_branch, &pull, &manual, &newest] {
        assert_eq!(
            status(&q, &untouched.id).await,
            (JobStatus::Queued, None, false),
            "{} {}",
            untouched.spec.git_ref,
            untouched.spec.event
        );
    }

    // The agent learns of it from its heartbeat and acks as it does for any cancel; the
    // record keeps why, and which build it was.
    assert_eq!(
        q.heartbeat(&claimed).await.unwrap(),
        Heartbeat::CancelRequested
    );
    ack_cancelled(&q, &claimed).await;
    assert_eq!(
        status(&q, &running.id).await,
        (
            JobStatus::Cancelled,
            Some(format!("superseded by job {} (bbbbbbbbbb)", second.id)),
            true
        )
    );
    assert!(
        q.supersede(&newest).await.unwrap().is_empty(),
        "nothing is left to cancel"
    );
}

#[tokio::test]
async fn a_pull_request_push_cancels_older_builds_of_that_pull_request_only() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let (older, _) = webhook(&q, build("refs/pull/7/head", 'a', Event::PullRequest)).await;
    let (other_pr, _) = webhook(&q, build("refs/pull/8/head", 'a', Event::PullRequest)).await;
    let (branch, _) = webhook(&q, push("feature", 'a')).await;
    let (_, done) = webhook(&q, build("refs/pull/7/head", 'b', Event::PullRequest)).await;
    assert_eq!(ids(&done), vec![older.id.as_str()]);
    assert_eq!(status(&q, &other_pr.id).await.0, JobStatus::Queued);
    assert_eq!(status(&q, &branch.id).await.0, JobStatus::Queued);
}

#[tokio::test]
async fn tags_manual_jobs_and_late_webhooks_supersede_nothing() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let older = enqueue(&q, push("main", 'a')).await;
    let manual = enqueue(&q, build("refs/heads/main", 'b', Event::Manual)).await;
    assert!(q.supersede(&manual).await.unwrap().is_empty());
    let tag = enqueue(&q, build("refs/tags/v1", 'b', Event::Tag)).await;
    assert!(q.supersede(&tag).await.unwrap().is_empty());
    // A newer push handled before the older one's webhook handler got to superseding: the
    // older one does not cancel it.
    let (later, _) = webhook(&q, push("main", 'c')).await;
    assert!(q.supersede(&older).await.unwrap().is_empty());
    assert_eq!(status(&q, &later.id).await.0, JobStatus::Queued);
    let (_, done) = webhook(&q, push("main", 'd')).await;
    assert_eq!(
        ids(&done),
        vec![later.id.as_str(), older.id.as_str()],
        "the late one joined the lane all the same"
    );
}

#[tokio::test]
async fn a_running_job_that_may_not_be_interrupted_is_kept() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let claimed = running(&q, 'a').await;
    assert_eq!(
        q.mark_uninterruptible(&claimed).await.unwrap(),
        Heartbeat::Continue
    );

    let (second, done) = webhook(&q, push("main", 'b')).await;
    let kept = Superseded {
        id: claimed.job.id.clone(),
        result: CancelResult::Kept,
    };
    assert_eq!(done, vec![kept.clone()]);
    assert_eq!(
        status(&q, &claimed.job.id).await,
        (JobStatus::Running, None, false)
    );
    assert_eq!(q.heartbeat(&claimed).await.unwrap(), Heartbeat::Continue);
    let (_, done) = webhook(&q, push("main", 'c')).await;
    assert_eq!(
        done,
        vec![
            Superseded {
                id: second.id.clone(),
                result: CancelResult::Cancelled
            },
            kept
        ],
        "kept again, and still in its lane"
    );

    // A person can still cancel it.
    assert_eq!(
        q.cancel(&claimed.job.id).await.unwrap(),
        CancelResult::Requested
    );
}

#[tokio::test]
async fn a_cancel_asked_before_the_mark_wins() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let claimed = running(&q, 'a').await;
    let (_, done) = webhook(&q, push("main", 'b')).await;
    assert_eq!(ids(&done), vec![claimed.job.id.as_str()]);
    assert_eq!(
        q.mark_uninterruptible(&claimed).await.unwrap(),
        Heartbeat::CancelRequested,
        "too late: the job must stop"
    );
    ack_cancelled(&q, &claimed).await;
    assert_eq!(
        q.mark_uninterruptible(&claimed).await.unwrap(),
        Heartbeat::Lost,
        "no longer running"
    );
}

#[tokio::test]
async fn an_agent_that_dies_after_the_cancel_leaves_the_job_cancelled_with_its_reason() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let claimed = running(&q, 'a').await;
    let (newer, _) = webhook(&q, push("main", 'b')).await;
    assert_eq!(
        q.release(&claimed, "agent went away").await.unwrap(),
        ReleaseResult::Cancelled
    );
    let (st, reason, _) = status(&q, &claimed.job.id).await;
    assert_eq!(st, JobStatus::Cancelled);
    assert_eq!(
        reason.unwrap(),
        format!("superseded by job {} (bbbbbbbbbb)", newer.id)
    );
}

#[tokio::test]
async fn a_requeued_job_forgets_that_it_may_not_be_interrupted() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let claimed = running(&q, 'a').await;
    assert_eq!(
        q.mark_uninterruptible(&claimed).await.unwrap(),
        Heartbeat::Continue
    );
    assert_eq!(
        q.release(&claimed, "agent shut down").await.unwrap(),
        ReleaseResult::Requeued
    );
    let again = claim(&q, "agent-2").await;
    let (_, done) = webhook(&q, push("main", 'b')).await;
    assert_eq!(
        done,
        vec![Superseded {
            id: again.job.id.clone(),
            result: CancelResult::Requested
        }],
        "the new attempt has not read its pipeline yet"
    );
}

#[tokio::test]
async fn a_retry_of_an_older_commit_is_superseded_by_the_next_push() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let claimed = running(&q, 'a').await;
    assert!(
        q.ack(&claimed, &Outcome::new(JobStatus::Failure))
            .await
            .unwrap()
    );
    let retry = q.retry(&claimed.job.id).await.unwrap();
    let (_, done) = webhook(&q, push("main", 'b')).await;
    assert_eq!(ids(&done), vec![retry.id.as_str()]);
}

#[tokio::test]
async fn a_lane_remembers_its_newest_builds_only() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let mut builds = Vec::new();
    for _ in 0..LANE_MAX + 3 {
        let (job, done) = webhook(&q, push("main", 'a')).await;
        assert!(done.is_empty(), "one commit supersedes nothing of its own");
        builds.push(job.id);
    }
    let (_, done) = webhook(&q, push("main", 'b')).await;
    assert_eq!(done.len(), LANE_MAX);
    for forgotten in &builds[..3] {
        assert_eq!(status(&q, forgotten).await.0, JobStatus::Queued);
    }
    assert_eq!(status(&q, &builds[3]).await.0, JobStatus::Cancelled);
    let ttl = redis.command("TTL raibid:ci-jobs:lane:acme/app:refs/heads/main");
    let ttl: i64 = ttl.unwrap().trim_start_matches(':').trim().parse().unwrap();
    assert!(ttl > 6 * 24 * 3600, "a lane lives a week: {ttl}");
}

#[tokio::test]
async fn every_variant_of_a_superseded_matrix_goes_with_it() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let parent = running(&q, 'a').await;
    // As the agent expands a matrix: one job per variant, recorded as the parent's children,
    // then the parent acked.
    let variant = |name: usize| {
        let mut spec = parent.job.spec.clone();
        spec.matrix_parent = Some(parent.job.id.clone());
        spec.env.insert("RAIBID_MATRIX".into(), format!("v{name}"));
        spec
    };
    let mut children = Vec::new();
    for n in 0..4 {
        children.push(enqueue(&q, variant(n)).await.id);
    }
    // The newer push's webhook handler supersedes only once the matrix job has finished.
    let newer = enqueue(&q, push("main", 'b')).await;
    children.push(enqueue(&q, variant(4)).await.id);
    assert!(!q.set_children(&parent.job.id, &children).await.unwrap());
    assert!(
        q.ack(&parent, &Outcome::new(JobStatus::Success))
            .await
            .unwrap()
    );
    let running_variant = claim(&q, "agent-2").await;

    let done = q.supersede(&newer).await.unwrap();
    let mut cancelled = ids(&done);
    cancelled.sort_unstable();
    let mut expected: Vec<&str> = children.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(cancelled, expected);
    for s in &done {
        let want = if s.id == running_variant.job.id {
            CancelResult::Requested
        } else {
            CancelResult::Cancelled
        };
        assert_eq!(s.result, want, "{}", s.id);
    }
    assert_eq!(
        status(&q, &parent.job.id).await.0,
        JobStatus::Success,
        "a finished job keeps its verdict"
    );
    assert!(
        q.supersede(&newer).await.unwrap().is_empty(),
        "the finished matrix job has left its lane"
    );
}

#[tokio::test]
async fn variants_queued_while_their_matrix_job_was_being_cancelled_are_cancelled_too() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let parent = running(&q, 'a').await;
    // The newer build arrives before the matrix job has queued anything: only the matrix job
    // itself is found, and asked to stop.
    let (newer, done) = webhook(&q, push("main", 'b')).await;
    assert_eq!(ids(&done), vec![parent.job.id.as_str()]);
    let mut children = Vec::new();
    for name in ["x", "y"] {
        let mut spec = parent.job.spec.clone();
        spec.matrix_parent = Some(parent.job.id.clone());
        spec.env.insert("RAIBID_MATRIX".into(), name.into());
        children.push(enqueue(&q, spec).await.id);
    }
    assert!(q.set_children(&parent.job.id, &children).await.unwrap());
    let reason = format!("job {}, which queued it, was cancelled", parent.job.id);
    for child in &children {
        assert_eq!(
            status(&q, child).await,
            (JobStatus::Cancelled, Some(reason.clone()), false)
        );
    }
    assert_eq!(status(&q, &newer.id).await.0, JobStatus::Queued);

    // Without a cancel, the variants are left to run.
    let other = enqueue(&q, push("dev", 'c')).await;
    let mut c = q.claimer("agent-2").await.unwrap();
    let running = loop {
        let claimed = c
            .claim(&[PoolName::default()], Duration::ZERO)
            .await
            .unwrap()
            .expect("jobs are queued");
        if claimed.job.id == other.id {
            break claimed;
        }
    };
    let mut spec = running.job.spec.clone();
    spec.matrix_parent = Some(running.job.id.clone());
    let child = enqueue(&q, spec).await;
    assert!(
        !q.set_children(&running.job.id, std::slice::from_ref(&child.id))
            .await
            .unwrap()
    );
    assert_eq!(status(&q, &child.id).await.0, JobStatus::Queued);
}

#[tokio::test]
async fn a_retry_of_the_new_commit_is_looked_past() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    // e is built and fails; f is pushed after it; e is retried; then e is pushed again (the
    // branch reset to it). The retry is of the new commit, so it stays; f must go, though it
    // is older than the retry, which superseded nothing.
    webhook(&q, push("main", 'e')).await;
    let failed = claim(&q, "agent-1").await;
    assert!(
        q.ack(&failed, &Outcome::new(JobStatus::Failure))
            .await
            .unwrap()
    );
    let (pushed, _) = webhook(&q, push("main", 'f')).await;
    let retry = q.retry(&failed.job.id).await.unwrap();
    let (_, done) = webhook(&q, push("main", 'e')).await;
    assert_eq!(ids(&done), vec![pushed.id.as_str()]);
    assert_eq!(status(&q, &retry.id).await.0, JobStatus::Queued);
}
