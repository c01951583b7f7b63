//! helm and flux as real processes: stand-in scripts first on PATH record the arguments they
//! are run with, against a recorded cluster, to show which kubeconfig reaches them. One test
//! in this binary, because it changes PATH for the whole process.

use std::path::Path;

use raibid_config::Config;
use raibid_infra::{ComponentArg, SetupArgs, TeardownArgs, Tools, setup_to, teardown_to};

/// A script that appends its arguments, one a line, to `<dir>/<name>.args`.
fn recording_tool(dir: &Path, name: &str) {
    let script = dir.join(name);
    let log = dir.join(format!("{name}.args"));
    raibid_testkit::write_script(
        &script,
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{}'\necho --- >> '{}'\n",
            log.display(),
            log.display()
        ),
    );
}

fn args(components: &[ComponentArg]) -> SetupArgs {
    SetupArgs {
        components: components.to_vec(),
        dry_run: false,
        timeout: 30,
        overlay: "dev".into(),
        infra_dir: None,
    }
}

/// Each recorded run's arguments after `--kubeconfig`.
fn kubeconfig_args(dir: &Path, name: &str) -> Vec<Option<String>> {
    let text = std::fs::read_to_string(dir.join(format!("{name}.args"))).unwrap_or_default();
    text.split("---\n")
        .filter(|run| !run.is_empty())
        .map(|run| {
            let words: Vec<&str> = run.lines().collect();
            words
                .iter()
                .position(|w| *w == "--kubeconfig")
                .and_then(|i| words.get(i + 1))
                .map(|w| (*w).to_owned())
        })
        .collect()
}

/// Before the fix helm and flux got no `--kubeconfig` and acted on whatever `~/.kube/config`
/// named: here, nothing, and with a configured one, possibly another cluster.
#[tokio::test]
async fn helm_and_flux_act_on_the_cluster_raibid_connects_to() {
    let tools = tempfile::tempdir().unwrap();
    recording_tool(tools.path(), "helm");
    recording_tool(tools.path(), "flux");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![tools.path().to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    // SAFETY: the only test of this binary, and nothing else runs yet.
    unsafe { std::env::set_var("PATH", std::env::join_paths(dirs).unwrap()) };

    let api = raibid_testkit::FakeKubeApi::start("k3s-arm64").await;
    let mut config = Config::default();
    config.cluster.kubeconfig = api.kubeconfig().display().to_string();
    let expected = Some(api.kubeconfig().display().to_string());
    let all = Tools {
        helm: true,
        flux: true,
    };

    let mut out = Vec::new();
    setup_to(args(&[ComponentArg::Keda]), &config, all, &mut out)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&out)));

    let mut teardown = TeardownArgs {
        plan: args(&[ComponentArg::Keda, ComponentArg::Flux]),
        delete_data: false,
        yes_destroy_cluster: false,
        yes_uninstall_keda: true,
        yes_uninstall_flux: true,
    };
    teardown.plan.timeout = 30;
    let mut out = Vec::new();
    teardown_to(teardown, &config, all, &mut out)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&out)));

    // helm upgrade --install keda, helm uninstall keda; flux uninstall.
    assert_eq!(
        kubeconfig_args(tools.path(), "helm"),
        [expected.clone(), expected.clone()]
    );
    assert_eq!(kubeconfig_args(tools.path(), "flux"), [expected]);
}
