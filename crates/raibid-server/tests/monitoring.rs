//! What monitoring/ ships: the alerting rules, valid for Prometheus and firing when their test
//! says, and the Grafana dashboard's queries, valid PromQL (both checked by promtool, the real
//! one); `raibid_redis_up` follows Redis. (That both name only metrics the server serves is a
//! unit test of `metrics.rs`.)

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

/// Every query of the Grafana dashboard parses as PromQL: promtool checks them as recording
/// rules, with Grafana's variables given values as Grafana would. The panels fit the grid
/// without overlapping.
#[test]
fn the_dashboard_s_queries_are_promql_and_its_panels_fit() {
    let text = std::fs::read_to_string(monitoring().join("grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut areas: Vec<(String, [u64; 4])> = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        let at = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| at[k].as_u64().unwrap());
        assert!(x + w <= 24 && w > 0 && h > 0, "{title} leaves the grid");
        for (other, [ox, oy, ow, oh]) in &areas {
            let apart = x + w <= *ox || ox + ow <= x || y + h <= *oy || oy + oh <= y;
            assert!(apart, "{title} overlaps {other}");
        }
        areas.push((title.to_owned(), [x, y, w, h]));
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$pool", ".*");
            assert!(
                !expr.contains('$'),
                "{title}: a variable Grafana would not know: {expr}"
            );
            let record = format!(
                "dashboard:panel_{}_{}",
                panel["id"],
                target["refId"].as_str().unwrap()
            );
            rules.push_str(&format!(
                "      - record: {record}\n        expr: {}\n",
                serde_json::to_string(&expr).unwrap()
            ));
        }
    }
    assert!(areas.len() >= 10, "{areas:?}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboard.yaml"), &rules).unwrap();
    let path = dir.path().join("dashboard.yaml");
    let checked = promtool(&["check", "rules", path.to_str().unwrap()]);
    assert!(checked.contains("SUCCESS"), "{checked}\n{rules}");
}

/// A real Prometheus scrapes a real server: the exposition parses, the alerting rules load and
/// evaluate without error, and every query of the dashboard runs; those of its "Now" figures
/// have data.
#[tokio::test]
async fn prometheus_scrapes_the_server_runs_the_rules_and_the_dashboard() {
    let server = TestServer::start().await;
    let target = server.url("").trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::start(&target);

    let targets = prometheus
        .eventually("the server scraped", "/api/v1/targets", |data| {
            let target = &data["activeTargets"][0];
            (target["health"] == "up").then(|| target.clone())
        })
        .await;
    assert_eq!(targets["labels"]["job"], "raibid-server", "{targets}");
    let rules = prometheus
        .eventually("the rules evaluated", "/api/v1/rules", |data| {
            let rules = data["groups"][0]["rules"].as_array()?.clone();
            rules.iter().all(|r| r["health"] == "ok").then_some(rules)
        })
        .await;
    assert_eq!(rules.len(), 8, "{rules:?}");

    let text = std::fs::read_to_string(monitoring().join("grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$pool", ".*");
            let query = format!(
                "/api/v1/query?query={}",
                form_urlencoded::byte_serialize(expr.as_bytes()).collect::<String>()
            );
            let needs_data = panel["type"] == "stat";
            let result = prometheus
                .eventually(&expr, &query, |data| {
                    let result = data["result"].as_array()?;
                    (!needs_data || !result.is_empty()).then(|| result.clone())
                })
                .await;
            if needs_data {
                assert!(!result.is_empty(), "{expr}");
            }
        }
    }
}

/// A Prometheus of the test's own, scraping one target every second with the alerting rules
/// loaded.
struct Prometheus {
    child: std::process::Child,
    base: String,
    client: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        let binary = raibid_testkit::require_binary("prometheus", "prometheus");
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: raibid-server\n    static_configs:\n      \
             - targets: [\"{target}\"]\n",
            rules = monitoring().join("alerts.yaml").display(),
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = raibid_testkit::free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            dir,
        }
    }

    /// The `data` of the API's answer to `path` once `ready` takes it (it may also not be up
    /// yet); panics with Prometheus's log after 30 s.
    async fn eventually<T>(
        &self,
        what: &str,
        path: &str,
        ready: impl Fn(&serde_json::Value) -> Option<T>,
    ) -> T {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        loop {
            if let Ok(response) = self.client.get(format!("{}{path}", self.base)).send().await {
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                assert_ne!(body["status"], "error", "{what}: {body}");
                if let Some(found) = ready(&body["data"]) {
                    return found;
                }
                last = body.to_string();
            }
            if std::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.path().join("prometheus.log"));
                panic!("{what}: not within 30 s; last answer {last}\n{log:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
