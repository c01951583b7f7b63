//! A network stall: redis-server frozen with SIGSTOP (its port accepts connections, nothing
//! answers) while jobs run and requests arrive. Every request must still get an answer within
//! the command timeout (503 with Retry-After, never a hang), and everything must resume by
//! itself once Redis does.

use std::time::{Duration, Instant};

use raibid_client::{ClientError, SubmitJob};
use raibid_model::JobStatus;
use raibid_reliability::{
    EventTap, GitServer, LatencyProbe, Ledger, Settings, Stack, Target, WebhookLoad, exclusive,
    report, size,
};
use raibid_testkit::GitRepo;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_gets_quick_503s_and_everything_resumes() {
    let _machine = exclusive();
    let stall = Duration::from_secs(size(4, 10));
    let timeout_ms = 1_000;
    let settings = Settings {
        command_timeout_ms: timeout_ms,
        ..Settings::default()
    };
    let stack = Stack::start(&settings, 1, 2);
    let tap = EventTap::start(&stack.redis.url());
    let client = stack.client();
    let git = GitServer::start().await;
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            &format!(
                "steps:\n  - name: work\n    run: \"sleep ${{SLEEP:-0}}; echo done\"\n    \
                 timeout: {}s\n",
                stall.as_secs() * 4
            ),
        )],
        "pipeline",
    );
    let clone_url = git.publish("acme/stall", &repo);

    // A job that is running through the whole stall.
    let long = SubmitJob {
        repo: "acme/stall".into(),
        clone_url: clone_url.clone(),
        sha: Some(sha.clone()),
        env: [("SLEEP".to_owned(), (stall.as_secs() + 3).to_string())].into(),
        ..Default::default()
    };
    let long = client.submit(&long).await.unwrap();
    let mut ledger = Ledger::default();
    ledger.add(long.id.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.job(&long.id).await.unwrap().status != JobStatus::Running {
        assert!(Instant::now() < deadline, "the long job never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let probe = LatencyProbe::start(
        &stack.url(),
        &[
            "/api/v1/jobs?limit=5",
            "/api/v1/queues",
            &format!("/api/v1/jobs/{}", long.id),
            "/readyz",
        ],
        Duration::from_millis(100),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.redis.pause();
    let paused_at = Instant::now();
    let load = WebhookLoad::start(
        Target {
            base: stack.url(),
            repo: "acme/stall".into(),
            clone_url: clone_url.clone(),
            sha: sha.clone(),
        },
        Duration::from_millis(500),
    );
    // Submissions during the stall, answered 503: a client cannot know whether they were
    // queued (the command may sit in Redis's socket buffer and run when it wakes up).
    let mut refused = Vec::new();
    for _ in 0..3 {
        let submission = SubmitJob {
            repo: "acme/stall-submit".into(),
            clone_url: clone_url.clone(),
            sha: Some(sha.clone()),
            ..Default::default()
        };
        let sent = Instant::now();
        let result = client.submit(&submission).await;
        refused.push((sent.elapsed(), result));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let remaining = stall.saturating_sub(paused_at.elapsed());
    tokio::time::sleep(remaining).await;
    load.stop_new();
    stack.redis.resume();
    let resumed_at = Instant::now();
    while !client.ready().await.unwrap_or(false) {
        assert!(
            resumed_at.elapsed() < Duration::from_secs(30),
            "the server never became ready again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered = resumed_at.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let latencies = probe.stop().await;
    let answers = load.finish(Duration::from_secs(120)).await;

    for (took, result) in &refused {
        assert!(
            matches!(result, Err(ClientError::Api { status: 503, .. })),
            "a submission during the stall: {result:?}"
        );
        assert!(*took < Duration::from_millis(3 * timeout_ms), "{took:?}");
    }
    assert_eq!(latencies.failures, 0, "every probe request got an answer");
    assert_eq!(latencies.server_errors(), 0, "5xx other than 503");
    assert!(latencies.count(503) > 0, "the stall was noticed");
    assert!(
        latencies.max() < 3 * timeout_ms,
        "no request waited much longer than the command timeout: max {} ms",
        latencies.max()
    );
    for answer in answers.iter().filter(|a| a.sent < resumed_at) {
        assert!(
            answer.accepted() || (answer.status == 503 && answer.retry_after),
            "{answer:?}"
        );
    }
    for answer in answers.iter().filter(|a| a.accepted()) {
        ledger.add(
            answer
                .job
                .clone()
                .expect("accepted deliveries name their job"),
        );
    }
    // Submissions refused with 503 that ran anyway once Redis woke up.
    let phantoms: Vec<String> = tap
        .histories()
        .into_keys()
        .filter(|id| !ledger.ids.contains(id))
        .collect();
    for id in &phantoms {
        let job = client.job(id).await.unwrap();
        assert_eq!(job.spec.repo, "acme/stall-submit", "{job:?}");
        ledger.add(id.clone());
    }
    let verdict = ledger
        .wait_finished(&tap, Duration::from_secs(size(120, 300)))
        .await;
    verdict.assert_each_once(JobStatus::Success, &stack.logs());

    report(
        "redis_stall",
        json!({
            "stall_s": stall.as_secs(),
            "command_timeout_ms": timeout_ms,
            "probe_requests": latencies.millis.len(),
            "probe_503": latencies.count(503),
            "probe_max_ms": latencies.max(),
            "probe_p99_ms": latencies.quantile(0.99),
            "ready_again_after_resume_ms": recovered.as_millis(),
            "webhook_attempts": answers.len(),
            "webhook_503": answers.iter().filter(|a| a.status == 503).count(),
            "submissions_refused_503": refused.len(),
            "refused_submissions_queued_anyway": phantoms.len(),
            "jobs": verdict.jobs,
            "lost": verdict.unfinished.len(),
            "finished_twice": verdict.finished_twice.len(),
            "reruns": verdict.total_deliveries() - verdict.jobs as u64,
        }),
    );
}
