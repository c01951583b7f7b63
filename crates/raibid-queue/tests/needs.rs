//! Jobs that wait for other jobs (a workflow's `depends_on`), against a real redis-server:
//! recorded blocked, queued or dropped by `release_waiting` once what they need has ended.

use std::time::Duration;

use raibid_model::{Event, Job, JobStatus, Needs, NeedsVerdict, NewJob, Outcome, PoolName};
use raibid_queue::{Enqueued, Queue, QueueOptions};
use raibid_testkit::RedisServer;

fn queue(redis: &RedisServer) -> Queue {
    let mut o = QueueOptions::new(redis.url());
    o.command_timeout = Duration::from_secs(2);
    Queue::open(o).unwrap()
}

fn spec(workflow: Option<&str>) -> NewJob {
    let mut spec = NewJob::new(
        "acme/app",
        "http://127.0.0.1/acme/app.git",
        "refs/heads/main",
        "a".repeat(40),
        Event::Push,
    );
    if let Some(workflow) = workflow {
        spec.env.insert("RAIBID_WORKFLOW".into(), workflow.into());
    }
    spec
}

fn created(enqueued: Enqueued) -> Job {
    match enqueued {
        Enqueued::Created(job) => *job,
        other => panic!("expected a new job, got {other:?}"),
    }
}

/// A parent, its workflow `build` (queued) and `deploy` (blocked, waiting for build).
async fn family(q: &Queue, on_failure: bool) -> (Job, Job, Job) {
    let parent = created(q.enqueue(spec(None)).await.unwrap());
    let mut build = spec(Some("build"));
    build.delivery_id = Some(format!("workflow:{}:build", parent.id));
    build.matrix_parent = Some(parent.id.clone());
    let build = created(q.enqueue(build).await.unwrap());
    let mut deploy = spec(Some("deploy"));
    deploy.delivery_id = Some(format!("workflow:{}:deploy", parent.id));
    deploy.matrix_parent = Some(parent.id.clone());
    deploy.needs = Some(Needs {
        workflows: vec!["build".into()],
        jobs: vec![build.id.clone()],
        on_failure,
        on_success: true,
    });
    let deploy = created(q.enqueue_blocked(deploy).await.unwrap());
    q.set_children(&parent.id, &[build.id.clone(), deploy.id.clone()])
        .await
        .unwrap();
    (parent, build, deploy)
}

/// Claims the next job (which must be `id`) and acknowledges it with `status`.
async fn finish(q: &Queue, id: &str, status: JobStatus) {
    let mut agent = q.claimer("agent").await.unwrap();
    let claimed = agent
        .claim(&[PoolName::default()], Duration::ZERO)
        .await
        .unwrap()
        .expect("a job to claim");
    assert_eq!(claimed.job.id, id);
    assert!(q.ack(&claimed, &Outcome::new(status)).await.unwrap());
}

async fn job(q: &Queue, id: &str) -> Job {
    q.get(id).await.unwrap().unwrap()
}

#[tokio::test]
async fn a_waiting_job_is_queued_once_what_it_needs_succeeded() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let (parent, build, deploy) = family(&q, false).await;
    assert_eq!(job(&q, &deploy.id).await.status, JobStatus::Blocked);
    assert_eq!(
        q.stats(&PoolName::default()).await.unwrap().lag,
        2,
        "parent and build"
    );
    // The parent itself is first in line.
    finish(&q, &parent.id, JobStatus::Success).await;
    assert!(
        q.release_waiting(&parent.id).await.unwrap().is_empty(),
        "build still queued"
    );
    assert_eq!(job(&q, &deploy.id).await.status, JobStatus::Blocked);

    finish(&q, &build.id, JobStatus::Success).await;
    let released = q.release_waiting(&parent.id).await.unwrap();
    assert_eq!(released.len(), 1);
    assert_eq!(
        (released[0].id.as_str(), &released[0].verdict),
        (deploy.id.as_str(), &NeedsVerdict::Run)
    );
    assert_eq!(job(&q, &deploy.id).await.status, JobStatus::Queued);
    // Looking again (the other party) changes nothing.
    assert!(q.release_waiting(&parent.id).await.unwrap().is_empty());
    finish(&q, &deploy.id, JobStatus::Success).await;
}

#[tokio::test]
async fn a_failed_need_skips_the_waiting_job_unless_it_runs_on_failure() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let (parent, build, deploy) = family(&q, false).await;
    finish(&q, &parent.id, JobStatus::Success).await;
    finish(&q, &build.id, JobStatus::Failure).await;
    q.release_waiting(&parent.id).await.unwrap();
    let dropped = job(&q, &deploy.id).await;
    assert_eq!(dropped.status, JobStatus::Skipped);
    assert_eq!(dropped.reason.as_deref(), Some("not run: build failed"));
    assert_eq!(q.stats(&PoolName::default()).await.unwrap().lag, 0);

    let (parent, build, notify) = family(&q, true).await;
    finish(&q, &parent.id, JobStatus::Success).await;
    finish(&q, &build.id, JobStatus::Error).await;
    q.release_waiting(&parent.id).await.unwrap();
    assert_eq!(job(&q, &notify.id).await.status, JobStatus::Queued);
}

#[tokio::test]
async fn cancelling_the_parent_reaches_the_waiting_jobs() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let (parent, build, deploy) = family(&q, true).await;
    finish(&q, &parent.id, JobStatus::Success).await;
    q.cancel_variants(&parent.id, &[build.id.clone(), deploy.id.clone()])
        .await
        .unwrap();
    assert_eq!(job(&q, &build.id).await.status, JobStatus::Cancelled);
    assert_eq!(job(&q, &deploy.id).await.status, JobStatus::Cancelled);
    assert!(q.release_waiting(&parent.id).await.unwrap().is_empty());
    assert_eq!(job(&q, &deploy.id).await.status, JobStatus::Cancelled);
}

/// The reaper's safety net: a dependency that ended without anyone looking (its event never
/// read) still releases what waits for it, once the waiting job is older than the cutoff.
#[tokio::test]
async fn a_sweep_releases_what_nobody_looked_at() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    // Older jobs waiting for approval, more than a page of them, do not hide it.
    for i in 0..450 {
        let mut spec = spec(None);
        spec.sha = format!("{i:040x}");
        created(q.enqueue_blocked(spec).await.unwrap());
    }
    let (parent, build, deploy) = family(&q, false).await;
    finish(&q, &parent.id, JobStatus::Success).await;
    finish(&q, &build.id, JobStatus::Success).await;
    let before = chrono::Utc::now() - chrono::TimeDelta::minutes(1);
    assert!(
        q.sweep_waiting(before).await.unwrap().is_empty(),
        "too young"
    );
    assert_eq!(job(&q, &deploy.id).await.status, JobStatus::Blocked);
    let later = chrono::Utc::now() + chrono::TimeDelta::seconds(1);
    let released = q.sweep_waiting(later).await.unwrap();
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].id, deploy.id);
    assert_eq!(job(&q, &deploy.id).await.status, JobStatus::Queued);
}

/// A workflow job under `parent`, waiting for `needs` when there are any.
async fn workflow(q: &Queue, parent: &Job, name: &str, needs: &[&Job]) -> Job {
    let mut s = spec(Some(name));
    s.delivery_id = Some(format!("workflow:{}:{name}", parent.id));
    s.matrix_parent = Some(parent.id.clone());
    if needs.is_empty() {
        return created(q.enqueue(s).await.unwrap());
    }
    s.needs = Some(Needs {
        workflows: needs
            .iter()
            .map(|j| j.spec.env["RAIBID_WORKFLOW"].clone())
            .collect(),
        jobs: needs.iter().map(|j| j.id.clone()).collect(),
        on_failure: false,
        on_success: true,
    });
    created(q.enqueue_blocked(s).await.unwrap())
}

async fn children(q: &Queue, parent: &Job) -> Vec<String> {
    job(q, &parent.id).await.children
}

/// A push whose `build` failed, so that `deploy` (waiting for it) and `notify` (waiting for
/// deploy) were skipped: the parent and the three.
async fn failed_chain(q: &Queue) -> [Job; 4] {
    let parent = created(q.enqueue(spec(None)).await.unwrap());
    let build = workflow(q, &parent, "build", &[]).await;
    let deploy = workflow(q, &parent, "deploy", &[&build]).await;
    let notify = workflow(q, &parent, "notify", &[&deploy]).await;
    let ids = [build.id.clone(), deploy.id.clone(), notify.id.clone()];
    q.set_children(&parent.id, &ids).await.unwrap();
    finish(q, &parent.id, JobStatus::Success).await;
    finish(q, &build.id, JobStatus::Failure).await;
    q.release_waiting(&parent.id).await.unwrap();
    [parent, build, deploy, notify]
}

/// GitHub's "re-run failed jobs": what was not run because a job failed waits for its retry.
#[tokio::test]
async fn a_retry_records_again_what_was_not_run_because_the_job_failed() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let [parent, build, deploy, notify] = failed_chain(&q).await;
    assert_eq!(
        job(&q, &notify.id).await.reason.as_deref(),
        Some("not run: deploy was skipped")
    );

    let retry = q.retry(&build.id).await.unwrap();
    let now = children(&q, &parent).await;
    assert_eq!(now[0], retry.id);
    assert!(
        !now.contains(&deploy.id) && !now.contains(&notify.id),
        "{now:?}"
    );
    let deploy2 = job(&q, &now[1]).await;
    let notify2 = job(&q, &now[2]).await;
    assert_eq!(deploy2.status, JobStatus::Blocked);
    assert_eq!(deploy2.spec.retry_of.as_deref(), Some(deploy.id.as_str()));
    assert_eq!(
        deploy2.spec.needs.as_ref().unwrap().jobs,
        [retry.id.as_str()]
    );
    assert_eq!(deploy2.spec.needs.as_ref().unwrap().workflows, ["build"]);
    assert_eq!(notify2.status, JobStatus::Blocked);
    assert_eq!(
        notify2.spec.needs.as_ref().unwrap().jobs,
        [deploy2.id.as_str()]
    );
    // The originals keep how they ended.
    assert_eq!(job(&q, &deploy.id).await.status, JobStatus::Skipped);
    assert_eq!(
        q.stats(&PoolName::default()).await.unwrap().lag,
        1,
        "the retry"
    );

    finish(&q, &retry.id, JobStatus::Success).await;
    q.release_waiting(&parent.id).await.unwrap();
    assert_eq!(job(&q, &deploy2.id).await.status, JobStatus::Queued);
    finish(&q, &deploy2.id, JobStatus::Success).await;
    q.release_waiting(&parent.id).await.unwrap();
    assert_eq!(job(&q, &notify2.id).await.status, JobStatus::Queued);
}

/// Retrying a job that was not run runs it, and records again what waited for it.
#[tokio::test]
async fn a_retry_of_a_dropped_job_revives_its_own_dependants() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let [parent, build, deploy, _] = failed_chain(&q).await;

    let deploy2 = q.retry(&deploy.id).await.unwrap();
    assert_eq!(deploy2.status, JobStatus::Queued, "a retry runs at once");
    let now = children(&q, &parent).await;
    assert_eq!(now[..2], [build.id.clone(), deploy2.id.clone()]);
    let notify2 = job(&q, &now[2]).await;
    assert_eq!(notify2.status, JobStatus::Blocked);
    assert_eq!(notify2.spec.needs.unwrap().jobs, [deploy2.id.as_str()]);
}

/// A job a person cancelled is not theirs to revive; one still waiting for the failed job waits
/// for its retry instead.
#[tokio::test]
async fn a_retry_leaves_cancelled_dependants_and_redirects_waiting_ones() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let parent = created(q.enqueue(spec(None)).await.unwrap());
    let build = workflow(&q, &parent, "build", &[]).await;
    let lint = workflow(&q, &parent, "lint", &[]).await;
    let deploy = workflow(&q, &parent, "deploy", &[&build]).await;
    let docs = workflow(&q, &parent, "docs", &[&build, &lint]).await;
    let ids = [
        build.id.clone(),
        lint.id.clone(),
        deploy.id.clone(),
        docs.id.clone(),
    ];
    q.set_children(&parent.id, &ids).await.unwrap();
    q.cancel_because(&deploy.id, "cancelled by a person")
        .await
        .unwrap();
    finish(&q, &parent.id, JobStatus::Success).await;
    finish(&q, &build.id, JobStatus::Failure).await;
    // lint still queued, so docs still waits.
    q.release_waiting(&parent.id).await.unwrap();
    assert_eq!(job(&q, &docs.id).await.status, JobStatus::Blocked);

    let retry = q.retry(&build.id).await.unwrap();
    let now = children(&q, &parent).await;
    assert_eq!(
        now[..3],
        [retry.id.clone(), lint.id.clone(), deploy.id.clone()]
    );
    assert_eq!(job(&q, &deploy.id).await.status, JobStatus::Cancelled);
    let old_docs = job(&q, &docs.id).await;
    assert_eq!(old_docs.status, JobStatus::Skipped);
    assert!(
        old_docs
            .reason
            .as_deref()
            .unwrap()
            .starts_with("not run: replaced by"),
        "{old_docs:?}"
    );
    let docs2 = job(&q, &now[3]).await;
    assert_eq!(docs2.status, JobStatus::Blocked);
    assert_eq!(
        docs2.spec.needs.unwrap().jobs,
        [retry.id.clone(), lint.id.clone()]
    );
    // lint, then the retry: docs is released only when both have ended.
    finish(&q, &lint.id, JobStatus::Success).await;
    q.release_waiting(&parent.id).await.unwrap();
    assert_eq!(job(&q, &docs2.id).await.status, JobStatus::Blocked);
    finish(&q, &retry.id, JobStatus::Success).await;
    q.release_waiting(&parent.id).await.unwrap();
    assert_eq!(job(&q, &docs2.id).await.status, JobStatus::Queued);
}

/// `runs_on: [failure]`: a workflow that reports failures runs after one, and is skipped (not
/// cancelled, which would mark the push) when everything succeeded.
#[tokio::test]
async fn a_workflow_for_failures_is_skipped_when_all_succeeded() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    for (build_ends, notify_ends) in [
        (JobStatus::Success, JobStatus::Skipped),
        (JobStatus::Failure, JobStatus::Queued),
    ] {
        let parent = created(q.enqueue(spec(None)).await.unwrap());
        let build = workflow(&q, &parent, "build", &[]).await;
        let mut s = spec(Some("notify"));
        s.matrix_parent = Some(parent.id.clone());
        s.needs = Some(Needs {
            workflows: vec!["build".into()],
            jobs: vec![build.id.clone()],
            on_failure: true,
            on_success: false,
        });
        let notify = created(q.enqueue_blocked(s).await.unwrap());
        q.set_children(&parent.id, &[build.id.clone(), notify.id.clone()])
            .await
            .unwrap();
        finish(&q, &parent.id, JobStatus::Success).await;
        finish(&q, &build.id, build_ends).await;
        let released = q.release_waiting(&parent.id).await.unwrap();
        assert_eq!(released.len(), 1);
        let notify = job(&q, &notify.id).await;
        assert_eq!(notify.status, notify_ends);
        if notify_ends == JobStatus::Skipped {
            assert_eq!(
                notify.reason.as_deref(),
                Some("not run: build succeeded, and it runs only after a failure")
            );
            assert!(notify.finished_at.is_some());
            let skipped = q
                .list(
                    &raibid_queue::JobFilter {
                        status: Some(JobStatus::Skipped),
                        ..Default::default()
                    },
                    None,
                    10,
                )
                .await
                .unwrap();
            assert_eq!(skipped.jobs.len(), 1, "listed by its status");
            assert_eq!(
                q.stats(&PoolName::default()).await.unwrap().lag,
                0,
                "nothing queued for it"
            );
        } else {
            finish(&q, &notify.id, JobStatus::Success).await;
        }
    }
}

/// GitHub's "Re-run failed jobs" for a whole push: every failed workflow at once, and a
/// workflow that waited for two of them recorded again once, waiting for both retries.
#[tokio::test]
async fn retrying_the_failed_jobs_of_a_push_revives_each_dependant_once() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let parent = created(q.enqueue(spec(None)).await.unwrap());
    let build = workflow(&q, &parent, "build", &[]).await;
    let lint = workflow(&q, &parent, "lint", &[]).await;
    let test = workflow(&q, &parent, "test", &[]).await;
    let deploy = workflow(&q, &parent, "deploy", &[&build, &test]).await;
    let ids = [
        build.id.clone(),
        lint.id.clone(),
        test.id.clone(),
        deploy.id.clone(),
    ];
    q.set_children(&parent.id, &ids).await.unwrap();
    let err = q.retry_failed(&parent.id).await.unwrap_err();
    assert!(err.to_string().contains("is queued"), "{err}");
    finish(&q, &parent.id, JobStatus::Success).await;
    finish(&q, &build.id, JobStatus::Failure).await;
    finish(&q, &lint.id, JobStatus::Success).await;
    finish(&q, &test.id, JobStatus::Error).await;
    q.release_waiting(&parent.id).await.unwrap();
    assert_eq!(job(&q, &deploy.id).await.status, JobStatus::Skipped);

    let retried = q.retry_failed(&parent.id).await.unwrap();
    let retried_of: Vec<_> = retried
        .iter()
        .map(|j| j.spec.retry_of.clone().unwrap())
        .collect();
    assert_eq!(retried_of, [build.id.clone(), test.id.clone()]);
    let now = children(&q, &parent).await;
    assert_eq!(
        now[..3],
        [
            retried[0].id.clone(),
            lint.id.clone(),
            retried[1].id.clone()
        ]
    );
    let deploy2 = job(&q, &now[3]).await;
    assert_eq!(deploy2.spec.retry_of.as_deref(), Some(deploy.id.as_str()));
    assert_eq!(
        deploy2.spec.needs.unwrap().jobs,
        [retried[0].id.clone(), retried[1].id.clone()]
    );
    // One copy of deploy, not one per retry.
    let skipped = q
        .list(
            &raibid_queue::JobFilter {
                status: Some(JobStatus::Skipped),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(skipped.jobs.len(), 1, "{:?}", skipped.jobs);

    // Nothing left that failed (the retries have not run), and a job with no children.
    let err = q.retry_failed(&parent.id).await.unwrap_err();
    assert!(err.to_string().contains("none of the jobs"), "{err}");
    let err = q.retry_failed(&lint.id).await.unwrap_err();
    assert!(err.to_string().contains("queued no jobs"), "{err}");
}
