//! A job waiting for its concurrency group (the pipeline's `concurrency:`) is queued by the
//! server when the job holding the group ends, through the events stream of a real
//! redis-server, and cannot be approved by hand.

mod support;

use std::time::Duration;

use raibid_model::{Event, Job, JobStatus, NewJob, Outcome, PoolName};
use raibid_queue::{Claimed, Enqueued, GroupClaim, Queue};
use support::{TestServer, eventually, json};

async fn enqueue(queue: &Queue) -> Job {
    let spec = NewJob::new(
        "acme/app",
        "http://127.0.0.1/acme/app.git",
        "refs/heads/main",
        "a".repeat(40),
        Event::Push,
    );
    match queue.enqueue(spec).await.unwrap() {
        Enqueued::Created(job) => *job,
        other => panic!("not created: {other:?}"),
    }
}

async fn claim(queue: &Queue, id: &str) -> Claimed {
    let claimed = queue
        .claimer(format!("agent-{id}"))
        .await
        .unwrap()
        .claim(&[PoolName::default()], Duration::ZERO)
        .await
        .unwrap()
        .expect("a job is queued");
    assert_eq!(claimed.job.id, id);
    claimed
}

#[tokio::test]
async fn the_server_hands_the_group_on_when_its_holder_ends() {
    let server = TestServer::start().await;
    let queue = &server.queue;
    let holder = enqueue(queue).await;
    let waiting = enqueue(queue).await;
    let held = claim(queue, &holder.id).await;
    assert_eq!(
        queue.acquire_group(&held, "production").await.unwrap(),
        GroupClaim::Held
    );
    let parked = claim(queue, &waiting.id).await;
    assert!(matches!(
        queue.acquire_group(&parked, "production").await.unwrap(),
        GroupClaim::Parked { .. }
    ));

    // Waiting for the group, not for a person.
    server
        .post_conflict(
            &format!("/api/v1/jobs/{}/approve", waiting.id),
            "waits for its concurrency group production, not for approval",
        )
        .await;
    let shown = json(server.get(&format!("/api/v1/jobs/{}", waiting.id)).await).await;
    assert_eq!(shown["concurrency"], "production", "{shown}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        queue.get(&waiting.id).await.unwrap().unwrap().status,
        JobStatus::Blocked
    );

    assert!(
        queue
            .ack(&held, &Outcome::new(JobStatus::Failure))
            .await
            .unwrap()
    );
    eventually(
        Duration::from_secs(10),
        "the waiting job to be queued",
        || async {
            let job = queue.get(&waiting.id).await.unwrap().unwrap();
            (job.status == JobStatus::Queued).then_some(())
        },
    )
    .await;
    let next = claim(queue, &waiting.id).await;
    assert_eq!(
        queue.acquire_group(&next, "production").await.unwrap(),
        GroupClaim::Held
    );
}
