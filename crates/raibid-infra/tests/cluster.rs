//! The cluster-facing paths that can be exercised without a cluster: a missing or broken
//! kubeconfig, a closed port and a server that never answers must all be clear errors within a
//! bounded time, and `raibid status` must say so in one line.

use std::path::Path;
use std::time::{Duration, Instant};

use raibid_config::Config;
use raibid_infra::cluster::connect_to;
use raibid_infra::{ComponentArg, InfraError, SetupArgs, Tools, cluster_status, setup_to};

fn kubeconfig(dir: &Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    \
             insecure-skip-tls-verify: true\ncontexts:\n- name: test\n  context:\n    cluster: test\n    \
             user: test\ncurrent-context: test\nusers:\n- name: test\n  user:\n    token: not-a-real-token\n"
        ),
    )
    .unwrap();
    path
}

fn closed_port() -> u16 {
    raibid_testkit::free_port()
}

#[tokio::test]
async fn a_missing_kubeconfig_says_what_to_do() {
    let err = connect_to(
        Path::new("/nonexistent/raibid/kubeconfig"),
        Duration::from_secs(2),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(
        err.to_string(),
        "no kubeconfig at /nonexistent/raibid/kubeconfig: run `raibid setup k3s` or set \
         cluster.kubeconfig (k3s writes /etc/rancher/k3s/k3s.yaml)"
    );
}

#[tokio::test]
async fn a_broken_kubeconfig_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, "clusters: [").unwrap();
    let err = connect_to(&path, Duration::from_secs(2))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, InfraError::Kubeconfig { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot use the kubeconfig {}", path.display()))
    );
}

#[tokio::test]
async fn a_closed_port_is_unreachable_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let server = format!("https://127.0.0.1:{}", closed_port());
    let path = kubeconfig(dir.path(), &server);
    let start = Instant::now();
    let err = connect_to(&path, Duration::from_secs(3))
        .await
        .err()
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    let text = err.to_string();
    println!("{text}");
    assert!(
        text.starts_with(&format!(
            "no cluster reachable at {server}/ (kubeconfig {})",
            path.display()
        )),
        "{text}"
    );
    assert!(text.contains("onnection refused"), "{text}");
    assert!(
        text.ends_with("run `raibid setup k3s` or set cluster.kubeconfig"),
        "{text}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = kubeconfig(dir.path(), &format!("https://127.0.0.1:{port}"));
    let start = Instant::now();
    let err = connect_to(&path, Duration::from_secs(2))
        .await
        .err()
        .unwrap();
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(6),
        "took {elapsed:?}"
    );
    assert!(matches!(err, InfraError::Unreachable { .. }), "{err}");
    drop(listener);
}

#[tokio::test]
async fn status_without_a_cluster_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.cluster.kubeconfig =
        kubeconfig(dir.path(), &format!("https://127.0.0.1:{}", closed_port()))
            .display()
            .to_string();
    let status = cluster_status(&config).await;
    assert!(!status.reachable);
    let text = status.to_string();
    assert!(
        text.starts_with("cluster: not reachable (no cluster reachable at https://127.0.0.1:"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["reachable"], false);
}

#[tokio::test]
async fn setup_without_a_cluster_fails_before_changing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.cluster.kubeconfig =
        kubeconfig(dir.path(), &format!("https://127.0.0.1:{}", closed_port()))
            .display()
            .to_string();
    let args = SetupArgs {
        components: vec![ComponentArg::Redis],
        dry_run: false,
        timeout: 5,
        overlay: "dev".into(),
        infra_dir: None,
    };
    let mut out = Vec::new();
    let start = Instant::now();
    let err = setup_to(args, &config, Tools::default(), &mut out)
        .await
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(15));
    assert!(matches!(err, InfraError::Unreachable { .. }), "{err}");
    let printed = String::from_utf8(out).unwrap();
    assert!(printed.contains("==> [1/4] apply namespace"), "{printed}");
    assert!(!printed.contains("applied"), "{printed}");
}
