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

/// The whole status read from a recorded k3s cluster: what `raibid status` and the dashboard's
/// Cluster tab show.
#[tokio::test]
async fn status_of_a_recorded_cluster() {
    let api = raibid_testkit::FakeKubeApi::start("k3s-arm64").await;
    let mut config = Config::default();
    config.cluster.kubeconfig = api.kubeconfig().display().to_string();
    let status = cluster_status(&config).await;
    assert!(status.reachable, "{:?}", status.error);
    assert_eq!(
        status.server.as_deref(),
        Some(format!("{}/", api.url()).as_str())
    );

    let nodes: Vec<(&str, bool, &str)> = status
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.ready, n.arch.as_str()))
        .collect();
    assert_eq!(
        nodes,
        [("spark-01", true, "arm64"), ("build-x86", false, "amd64")]
    );
    assert_eq!(status.nodes[0].kubelet_version, "v1.34.2+k3s1");

    let agents = status
        .components
        .iter()
        .find(|c| c.component == raibid_infra::Component::Agents)
        .expect("agent pods listed");
    let pods: Vec<(&str, &str, bool)> = agents
        .pods
        .iter()
        .map(|p| (p.name.as_str(), p.phase.as_str(), p.ready))
        .collect();
    assert_eq!(
        pods,
        [
            ("raibid-agent-arm64-4xk2m-8fz7q", "Running", true),
            ("raibid-agent-arm64-9tq5w-c6n2d", "Pending", false),
            ("raibid-agent-arm64-h7v3r-k2p9s", "Succeeded", false),
            ("raibid-agent-amd64-p3m8n-w5r4t", "Failed", false),
        ]
    );
    let server = status
        .components
        .iter()
        .find(|c| c.component == raibid_infra::Component::Server)
        .unwrap();
    assert_eq!(server.pods.len(), 1);
    assert_eq!(server.pods[0].restarts, 1);

    let jobs: Vec<String> = status
        .scaled_jobs
        .iter()
        .map(|j| {
            format!(
                "{} pool={:?} ready={} active={} max={:?}",
                j.name, j.pool, j.ready, j.active_jobs, j.max_replicas
            )
        })
        .collect();
    assert_eq!(
        jobs,
        [
            r#"raibid-agent-arm64 pool=Some("arm64") ready=true active=2 max=Some(20)"#,
            r#"raibid-agent-amd64 pool=Some("amd64") ready=false active=0 max=Some(20)"#,
        ]
    );
    assert!(
        status.scaled_jobs[1].message.contains("i/o timeout"),
        "{}",
        status.scaled_jobs[1].message
    );
    // What `raibid status` exits non-zero for: the NotReady node and the ScaledJob KEDA cannot
    // read; not the agent pods (one build each, failed ones kept for their logs).
    let problems = status.problems(&[]);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0], "node build-x86 is not Ready");
    assert!(
        problems[1].starts_with("ScaledJob raibid-agent-amd64 is not ready: "),
        "{problems:?}"
    );
    let only_server = status.clone().only(&[raibid_infra::Component::Server]);
    assert!(
        only_server
            .problems(&[raibid_infra::Component::Server])
            .is_empty()
    );
    let only_flux = status.clone().only(&[raibid_infra::Component::Flux]);
    assert_eq!(
        only_flux.problems(&[raibid_infra::Component::Flux]),
        ["flux: no pods"]
    );
    // `raibid status all`: every component is asked about, Flux's absence included.
    let all = status.clone().only(&raibid_infra::Component::ALL);
    let problems = all.problems(&raibid_infra::Component::ALL);
    assert!(
        problems.iter().any(|p| p == "flux: no pods"),
        "{problems:?}"
    );
    assert!(
        problems.contains(&"node build-x86 is not Ready".to_owned()),
        "{problems:?}"
    );

    // The recorded cluster has no Flux: a 404 for its API group is a note, not an error.
    assert!(status.flux.is_empty());
    assert_eq!(status.notes, ["Flux: not installed (`raibid setup flux`)"]);

    // Agent pods were asked for with the agents' selector, in the configured namespace.
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("/api/v1/namespaces/raibid-ci/pods?")
                && r.contains("app.kubernetes.io%2Fcomponent%3Dagent")),
        "{requests:#?}"
    );

    let text = status.to_string();
    assert!(
        text.contains("node spark-01: Ready, arm64, v1.34.2+k3s1"),
        "{text}"
    );
    assert!(text.contains("node build-x86: NotReady, amd64"), "{text}");
    // A finished agent pod is history, not a problem.
    assert!(
        text.contains("agents (raibid-ci): 1/3 pods ready, 1 completed"),
        "{text}"
    );
    assert!(!text.contains("h7v3r-k2p9s: Succeeded"), "{text}");
    assert!(
        text.contains("ScaledJob raibid-agent-arm64 (pool arm64): Ready=True: ScaledJob is defined correctly and is ready to scaling, 2 running agent job(s), max 20"),
        "{text}"
    );
}

/// A KEDA teardown against the recorded cluster: every KEDA object in the cluster is listed
/// before anything changes (the recorded ScaledJobs are raibid-ci's, so it goes on), and the
/// agents' objects are waited for, not only deleted, before KEDA's HelmRelease goes.
#[tokio::test]
async fn a_keda_teardown_looks_for_keda_objects_first() {
    let api = raibid_testkit::FakeKubeApi::start("k3s-arm64").await;
    let mut config = Config::default();
    config.cluster.kubeconfig = api.kubeconfig().display().to_string();
    let args = raibid_infra::TeardownArgs {
        plan: SetupArgs {
            components: vec![ComponentArg::Agents, ComponentArg::Keda],
            dry_run: false,
            timeout: 10,
            overlay: "dev".into(),
            infra_dir: None,
        },
        delete_data: false,
        yes_destroy_cluster: false,
        yes_uninstall_keda: true,
        yes_uninstall_flux: false,
    };
    let tools = Tools {
        helm: false,
        flux: true,
    };
    let mut out = Vec::new();
    raibid_infra::teardown_to(args, &config, tools, &mut out)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&out)));
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("    none but raibid-ci's (2 objects)\n"),
        "{text}"
    );
    assert!(
        text.contains("    gone: ScaledJob/raibid-agent-arm64 (namespace raibid-ci) ("),
        "{text}"
    );
    let requests = api.requests();
    let position = |needle: &str| {
        requests
            .iter()
            .position(|r| r.starts_with(needle))
            .unwrap_or_else(|| panic!("no {needle}: {requests:#?}"))
    };
    let listed = position("/apis/keda.sh/v1alpha1/scaledjobs");
    assert!(
        listed < position("/apis/keda.sh/v1alpha1/namespaces/raibid-ci/scaledjobs/"),
        "{requests:#?}"
    );
    assert!(
        listed
            < position("/apis/helm.toolkit.fluxcd.io/v2/namespaces/flux-system/helmreleases/keda"),
        "{requests:#?}"
    );
}

/// The server no longer needs rights to RBAC objects, so a kubeconfig without them is enough
/// for it; the API server then answers the delete of the former Role and RoleBinding with 403,
/// whether or not they exist. That is a note, and the teardown goes on and succeeds.
#[tokio::test]
async fn no_rights_to_the_former_server_role_is_a_note() {
    let api = raibid_testkit::FakeKubeApi::start("k3s-arm64").await;
    for resource in ["roles", "rolebindings"] {
        api.forbid(&format!(
            "/apis/rbac.authorization.k8s.io/v1/namespaces/raibid-ci/{resource}/raibid-server"
        ));
    }
    let mut config = Config::default();
    config.cluster.kubeconfig = api.kubeconfig().display().to_string();
    let args = raibid_infra::TeardownArgs {
        plan: SetupArgs {
            components: vec![ComponentArg::Server],
            dry_run: false,
            timeout: 5,
            overlay: "dev".into(),
            infra_dir: None,
        },
        delete_data: false,
        yes_destroy_cluster: false,
        yes_uninstall_keda: false,
        yes_uninstall_flux: false,
    };
    let mut out = Vec::new();
    raibid_infra::teardown_to(args, &config, Tools::default(), &mut out)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&out)));
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(
            "    no right to delete: Role/raibid-server (namespace raibid-ci) \
             (roles.rbac.authorization.k8s.io \"raibid-server\" is forbidden: User \
             \"system:serviceaccount:raibid-ci:deployer\" cannot delete resource \"roles\" in \
             API group \"rbac.authorization.k8s.io\" in the namespace \"raibid-ci\")\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("    no right to delete: RoleBinding/raibid-server (namespace raibid-ci) ("),
        "{text}"
    );
    assert!(
        text.contains(
            "    note: could not check for the former Role/RoleBinding: no rights to RBAC \
             objects; delete them by hand if they exist: `kubectl -n raibid-ci delete \
             role/raibid-server rolebinding/raibid-server --ignore-not-found`\n"
        ),
        "{text}"
    );
    assert!(text.ends_with("done\n"), "{text}");
    let requests = api.requests();
    assert!(
        requests.iter().any(|r| r.starts_with(
            "/apis/rbac.authorization.k8s.io/v1/namespaces/raibid-ci/rolebindings/raibid-server"
        )),
        "{requests:#?}"
    );
}

/// The gpu pool requests nvidia.com/gpu, which nodes offer only with the NVIDIA device plugin;
/// the recorded nodes have none, and `setup agents` says so before it applies anything (the
/// fake API server then refuses the first write, which ends this setup).
#[tokio::test]
async fn setup_agents_warns_when_no_node_offers_gpus() {
    let api = raibid_testkit::FakeKubeApi::start("k3s-arm64").await;
    let mut config = Config::default();
    config.cluster.kubeconfig = api.kubeconfig().display().to_string();
    let args = SetupArgs {
        components: vec![ComponentArg::Agents],
        dry_run: false,
        timeout: 5,
        overlay: "dev".into(),
        infra_dir: None,
    };
    let mut out = Vec::new();
    let _ = setup_to(args, &config, Tools::default(), &mut out).await;
    let text = String::from_utf8(out).unwrap();
    let warning = text
        .find(
            "    warning: ScaledJob raibid-agent-gpu requests nvidia.com/gpu, which no node \
             offers: without the NVIDIA device plugin",
        )
        .unwrap_or_else(|| panic!("{text}"));
    assert!(warning < text.find("apply namespace").unwrap(), "{text}");
}

#[tokio::test]
async fn a_token_the_api_server_refuses_is_an_error_that_says_so() {
    let api = raibid_testkit::FakeKubeApi::start("k3s-arm64").await;
    let text = std::fs::read_to_string(api.kubeconfig()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(
        &path,
        text.replace(raibid_testkit::kube_api::TOKEN, "stolen"),
    )
    .unwrap();
    let err = connect_to(&path, Duration::from_secs(3))
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(matches!(err, InfraError::Unreachable { .. }), "{text}");
    assert!(text.contains("Unauthorized"), "{text}");
}

/// `raibid pool pause` sets KEDA's pause annotation on the pool's ScaledJob (found by its
/// `raibid.dev/pool` label) with a merge patch, and resuming removes it; a pool without a
/// ScaledJob is left alone, and a patch the API server forbids is an error that says so.
#[tokio::test]
async fn pausing_a_pool_annotates_its_scaled_job_for_keda() {
    use raibid_infra::cluster::{KEDA_PAUSED, connect, pause_scaled_jobs};

    let api = raibid_testkit::FakeKubeApi::start("k3s-arm64").await;
    let mut config = Config::default();
    config.cluster.kubeconfig = api.kubeconfig().display().to_string();
    let cluster = connect(&config, Duration::from_secs(5)).await.unwrap();
    let path = "/apis/keda.sh/v1alpha1/namespaces/raibid-ci/scaledjobs/raibid-agent-arm64";

    let names = pause_scaled_jobs(&cluster, "raibid-ci", "arm64", true)
        .await
        .unwrap();
    assert_eq!(names, ["raibid-agent-arm64"]);
    assert_eq!(
        api.patches(),
        [(
            path.to_owned(),
            serde_json::json!({"metadata": {"annotations": {KEDA_PAUSED: "true"}}})
        )]
    );
    assert!(
        api.requests()
            .iter()
            .any(|r| r.contains("labelSelector=raibid.dev%2Fpool%3Darm64")),
        "{:#?}",
        api.requests()
    );

    let names = pause_scaled_jobs(&cluster, "raibid-ci", "arm64", false)
        .await
        .unwrap();
    assert_eq!(names, ["raibid-agent-arm64"]);
    assert_eq!(
        api.patches()[1].1,
        serde_json::json!({"metadata": {"annotations": {KEDA_PAUSED: null}}})
    );

    let none = pause_scaled_jobs(&cluster, "raibid-ci", "gpu", true)
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(
        api.patches().len(),
        2,
        "nothing patched for a pool without one"
    );

    // `raibid status` says which ScaledJob KEDA holds.
    pause_scaled_jobs(&cluster, "raibid-ci", "arm64", true)
        .await
        .unwrap();
    let status = cluster_status(&config).await;
    assert!(status.scaled_jobs[0].paused && !status.scaled_jobs[1].paused);
    assert!(
        status
            .to_string()
            .contains("ScaledJob raibid-agent-arm64 (pool arm64): paused, Ready=True"),
        "{status}"
    );

    api.forbid(path);
    let err = pause_scaled_jobs(&cluster, "raibid-ci", "arm64", true)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("raibid-agent-arm64") && err.contains("cannot patch"),
        "{err}"
    );
}
