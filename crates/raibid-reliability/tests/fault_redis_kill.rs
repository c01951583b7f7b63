//! redis-server SIGKILLed under webhook load and restarted from its append-only file
//! (`appendfsync everysec`, what `raibid up` runs).
//!
//! While Redis is away the server must answer 503 with Retry-After, quickly; a forge redelivers
//! such webhooks with the same delivery id, which this test does too. Once Redis is back,
//! everything resumes by itself. Nothing accepted more than a second before the crash may be
//! lost (everysec's promise; a process crash, unlike a power cut, usually loses nothing), no
//! finished job may lose its verdict, and every job ends exactly once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raibid_client::ClientError;
use raibid_model::JobStatus;
use raibid_reliability::{
    Answer, Durability, EventTap, GitServer, Ledger, Settings, Target, Up, WebhookLoad, exclusive,
    report, size,
};
use raibid_testkit::GitRepo;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sigkilled_under_load_loses_nothing_accepted_and_recovers_alone() {
    let _machine = exclusive();
    let outage = Duration::from_secs(size(3, 10));
    let settings = Settings {
        durability: Durability::AofEverySec,
        command_timeout_ms: 1_000,
        ..Settings::default()
    };
    let mut up = Up::start(&settings, 4);
    let tap = EventTap::start(&up.redis.url());
    let git = GitServer::start().await;
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: work\n    run: sleep 0.3; echo built\n",
        )],
        "pipeline",
    );
    let clone_url = git.publish("acme/crash", &repo);
    let client = up.client();

    let load = WebhookLoad::start(
        Target {
            base: up.url(),
            repo: "acme/crash".into(),
            clone_url,
            sha,
        },
        Duration::from_millis(size(200, 100)),
    );

    tokio::time::sleep(Duration::from_secs(size(4, 20))).await;
    // Jobs already finished a second before the crash: their verdicts must survive it.
    let settled: BTreeMap<String, JobStatus> = tap
        .histories()
        .into_iter()
        .filter_map(|(id, h)| {
            h.iter()
                .find(|t| t.status.is_final())
                .map(|t| (id, t.status))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = Instant::now();
    up.redis.kill();
    tokio::time::sleep(outage).await;
    let restarted_at = Instant::now();
    tokio::task::block_in_place(|| up.redis.restart());
    let restart_took = restarted_at.elapsed();
    tokio::time::sleep(Duration::from_secs(size(4, 20))).await;
    let answers = load.finish(Duration::from_secs(180)).await;
    let accepted: Vec<&Answer> = answers.iter().filter(|a| a.accepted()).collect();
    let mut ledger = Ledger::default();
    let mut lost_old = Vec::new();
    let mut lost_recent = Vec::new();
    let mut by_delivery: BTreeMap<&str, &str> = BTreeMap::new();
    for answer in &accepted {
        let job = answer.job.as_deref().expect("a 2xx answer names its job");
        if let Some(other) = by_delivery.insert(&answer.delivery, job) {
            assert_eq!(other, job, "{} became two jobs", answer.delivery);
        }
        match client.job(job).await {
            Ok(_) => ledger.add(job),
            Err(ClientError::Api { status: 404, .. }) if answer.answered < killed_at => {
                if answer.answered + Duration::from_secs(1) < killed_at {
                    lost_old.push(answer.delivery.clone());
                } else {
                    lost_recent.push(answer.delivery.clone());
                }
            }
            Err(e) => panic!("job {job} of {}: {e}", answer.delivery),
        }
    }
    assert!(
        lost_old.is_empty(),
        "webhooks accepted more than 1 s before the crash were lost: {lost_old:?}"
    );

    let verdict = ledger
        .wait_finished(&tap, Duration::from_secs(size(180, 600)))
        .await;
    verdict.assert_each_once(JobStatus::Success, &up.logs());
    for (id, status) in &settled {
        let job = client.job(id).await.expect("a finished job survives");
        assert_eq!(job.status, *status, "{id} kept its verdict");
    }

    // While Redis was away: 503 with Retry-After, answered within the command timeout.
    let during: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.sent > killed_at && a.answered < restarted_at)
        .collect();
    assert!(
        !during.is_empty(),
        "deliveries were attempted during the outage"
    );
    for a in &during {
        assert_eq!(a.status, 503, "{a:?}");
        assert!(a.retry_after, "503 comes with Retry-After: {a:?}");
        assert!(
            a.answered - a.sent < Duration::from_millis(3_000),
            "answered within the command timeout: {a:?}"
        );
    }
    assert!(
        answers.iter().all(|a| a.status != 0 && a.status != 500),
        "no request failed without an answer or with 500"
    );
    let back = answers
        .iter()
        .filter(|a| a.sent >= restarted_at && a.accepted())
        .map(|a| a.answered - restarted_at)
        .min()
        .expect("webhooks accepted after the restart");

    report(
        "redis_sigkill",
        json!({
            "outage_s": outage.as_secs(),
            "deliveries": by_delivery.len(),
            "answers": answers.len(),
            "answers_503_during_outage": during.len(),
            "max_outage_answer_ms": during.iter().map(|a| (a.answered - a.sent).as_millis()).max(),
            "jobs": verdict.jobs,
            "finished_before_crash": settled.len(),
            "lost_accepted_over_1s_before_crash": lost_old.len(),
            "lost_accepted_within_1s_of_crash": lost_recent.len(),
            "finished_twice": verdict.finished_twice.len(),
            "deliveries_to_agents": verdict.total_deliveries(),
            "reruns": verdict.total_deliveries() - verdict.jobs as u64,
            "redis_restart_ms": restart_took.as_millis(),
            "first_accept_after_restart_ms": back.as_millis(),
        }),
    );
}
