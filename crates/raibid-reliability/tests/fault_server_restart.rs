//! The server restarted under webhook load, politely (SIGTERM) and not (SIGKILL), while agents
//! keep working. A forge redelivers what failed with the same delivery id; in the end every
//! delivery must be exactly one job, every accepted (2xx) delivery id must map to a job that
//! exists, and every job must run to the end exactly once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raibid_model::JobStatus;
use raibid_reliability::{
    EventTap, GitServer, Ledger, Settings, Stack, Target, WebhookLoad, exclusive, report, size,
};
use raibid_testkit::GitRepo;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restarts_under_webhook_load_lose_no_accepted_delivery() {
    let _machine = exclusive();
    let restarts: usize = size(4, 12);
    let mut stack = Stack::start(&Settings::default(), 2, 2);
    let tap = EventTap::start(&stack.redis.url());
    let git = GitServer::start().await;
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: work\n    run: echo built\n",
        )],
        "pipeline",
    );
    let load = WebhookLoad::start(
        Target {
            base: stack.url(),
            repo: "acme/restart".into(),
            clone_url: git.publish("acme/restart", &repo),
            sha,
        },
        Duration::from_millis(size(200, 50)),
    );

    let mut downtime = Vec::new();
    let mut clean_stops = 0;
    for i in 0..restarts {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let stopped = Instant::now();
        if i % 2 == 0 {
            clean_stops += usize::from(stack.server.terminate(Duration::from_secs(15)));
        } else {
            stack.server.kill();
        }
        stack.server.start();
        tokio::task::block_in_place(|| stack.wait_ready());
        downtime.push(stopped.elapsed().as_millis() as u64);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answers = load.finish(Duration::from_secs(180)).await;

    let mut jobs_of: BTreeMap<&str, &str> = BTreeMap::new();
    let mut ledger = Ledger::default();
    for answer in answers.iter().filter(|a| a.accepted()) {
        let job = answer.job.as_deref().expect("a 2xx answer names its job");
        if let Some(earlier) = jobs_of.insert(&answer.delivery, job) {
            assert_eq!(
                earlier, job,
                "delivery {} answered with two jobs",
                answer.delivery
            );
        }
        ledger.add(job);
    }
    let deliveries: std::collections::BTreeSet<&str> =
        answers.iter().map(|a| a.delivery.as_str()).collect();
    assert_eq!(
        jobs_of.len(),
        deliveries.len(),
        "every delivery was accepted"
    );
    assert_eq!(
        ledger.len(),
        deliveries.len(),
        "one job per delivery, no duplicates"
    );
    let client = stack.client();
    for id in &ledger.ids {
        client.job(id).await.expect("every accepted job exists");
    }
    let verdict = ledger
        .wait_finished(&tap, Duration::from_secs(size(120, 600)))
        .await;
    verdict.assert_each_once(JobStatus::Success, &stack.logs());
    assert_eq!(
        clean_stops,
        restarts.div_ceil(2),
        "SIGTERM stops the server cleanly"
    );
    let server_errors: Vec<_> = answers
        .iter()
        .filter(|a| a.status >= 500 && a.status != 503)
        .collect();
    assert!(
        server_errors.is_empty(),
        "no 5xx but 503: {server_errors:?}"
    );

    report(
        "server_restart",
        json!({
            "restarts": restarts,
            "sigkill": restarts / 2,
            "sigterm": restarts.div_ceil(2),
            "deliveries": deliveries.len(),
            "attempts": answers.len(),
            "attempts_without_answer": answers.iter().filter(|a| a.status == 0).count(),
            "answered_503": answers.iter().filter(|a| a.status == 503).count(),
            "duplicates_answered_200": answers.iter().filter(|a| a.status == 200).count(),
            "jobs": verdict.jobs,
            "lost": verdict.unfinished.len(),
            "finished_twice": verdict.finished_twice.len(),
            "downtime_ms_max": downtime.iter().max(),
            "downtime_ms_each": downtime,
        }),
    );
}
