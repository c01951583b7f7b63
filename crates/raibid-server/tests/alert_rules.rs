//! The alerting rules shipped in monitoring/: valid for Prometheus and firing when their test
//! says (promtool, the real one); `raibid_redis_up` follows Redis. (That the rules name only
//! metrics the server serves is a unit test of `metrics.rs`.)

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{TestServer, eventually};

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../monitoring")
}

fn promtool(args: &[&str]) -> String {
    let promtool = raibid_testkit::require_binary("promtool", "prometheus");
    let out = Command::new(promtool)
        .args(args)
        .current_dir(monitoring())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_rules_are_valid_and_fire_as_their_tests_say() {
    let checked = promtool(&["check", "rules", "alerts.yaml"]);
    assert!(checked.contains("SUCCESS: 8 rules found"), "{checked}");
    promtool(&["test", "rules", "alerts.test.yaml"]);
}

/// `raibid_redis_up` says whether the sampler reaches Redis: 0 once Redis is gone, 1 again
/// once it is back; the queue's gauges are served meanwhile (from memory).
#[tokio::test]
async fn redis_up_follows_redis() {
    let mut server = TestServer::start().await;
    let text = metrics_line(&server, "raibid_redis_up 1").await;
    assert!(
        text.contains(r#"raibid_queue_oldest_queued_seconds{pool="default"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"raibid_queue_dead_letters{pool="default"} 0"#),
        "{text}"
    );
    server.redis.kill();
    let text = metrics_line(&server, "raibid_redis_up 0").await;
    assert!(
        text.contains(r#"raibid_queue_lag{pool="default"}"#),
        "{text}"
    );
    server.redis.restart();
    metrics_line(&server, "raibid_redis_up 1").await;
}

/// The server's `/metrics` once it has the line `want`.
async fn metrics_line(server: &TestServer, want: &'static str) -> String {
    eventually(Duration::from_secs(30), want, || async {
        let text = server.get("/metrics").await.text().await.unwrap();
        text.lines().any(|l| l == want).then_some(text)
    })
    .await
}
