//! `--dry-run` plans: built and printed without any cluster (the kubeconfig points nowhere),
//! in dependency order, with every object and command in full. The printed plans are
//! snapshots in tests/snapshots/; run with UPDATE_SNAPSHOTS=1 to rewrite them after an
//! intended change, and review the diff.

use std::path::Path;

use raibid_config::Config;
use raibid_infra::{ComponentArg, SetupArgs, TeardownArgs, Tools, setup_to, teardown_to};

fn config() -> Config {
    let mut config = Config::default();
    config.cluster.kubeconfig = "/nonexistent/kubeconfig".into();
    config
}

const ALL_TOOLS: Tools = Tools {
    helm: true,
    flux: true,
};

fn setup_args(components: &[ComponentArg]) -> SetupArgs {
    SetupArgs {
        components: components.to_vec(),
        dry_run: true,
        timeout: 300,
        overlay: "dev".into(),
        infra_dir: None,
    }
}

fn teardown_args(components: &[ComponentArg], delete_data: bool) -> TeardownArgs {
    TeardownArgs {
        plan: setup_args(components),
        delete_data,
        yes_destroy_cluster: false,
        yes_uninstall_keda: false,
        yes_uninstall_flux: false,
    }
}

async fn setup_text(args: SetupArgs, tools: Tools) -> String {
    setup_text_with(args, &config(), tools).await
}

async fn setup_text_with(args: SetupArgs, config: &Config, tools: Tools) -> String {
    let mut out = Vec::new();
    setup_to(args, config, tools, &mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

async fn teardown_text(args: TeardownArgs, tools: Tools) -> String {
    let mut out = Vec::new();
    teardown_to(args, &config(), tools, &mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

/// The numbered step lines only.
fn headlines(text: &str) -> String {
    text.lines()
        .map(str::trim_start)
        .filter(|l| {
            l.split_once(". ")
                .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

fn assert_snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_SNAPSHOTS=1 to create it)",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs from the printed plan (UPDATE_SNAPSHOTS=1 rewrites it):\n{actual}",
        path.display()
    );
}

#[tokio::test]
async fn setup_redis_dry_run_prints_every_object() {
    let text = setup_text(setup_args(&[ComponentArg::Redis]), ALL_TOOLS).await;
    assert_snapshot("setup-redis-dev.txt", &text);
    assert!(text.ends_with("dry run: nothing was changed\n"));
}

#[tokio::test]
async fn setup_all_runs_in_dependency_order() {
    let text = setup_text(setup_args(&[ComponentArg::All]), ALL_TOOLS).await;
    assert_snapshot("setup-all-dev.headlines.txt", &headlines(&text));
    let position = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in plan"))
    };
    assert!(position("install k3s") < position("apply redis"));
    assert!(position("apply redis") < position("helm upgrade --install keda"));
    assert!(position("helm upgrade --install gitea") < position("flux install"));
    assert!(position("flux install") < position("apply server"));
    assert_eq!(
        text.matches("apply namespace").count(),
        1,
        "the namespace is applied once"
    );
    assert_eq!(
        text.matches("ensure Secret raibid-ci/raibid-server")
            .count(),
        1
    );
    assert!(position("apply server") < position("apply agents"));
}

#[tokio::test]
async fn given_components_are_reordered_and_deduplicated() {
    let a = setup_text(
        setup_args(&[
            ComponentArg::Agents,
            ComponentArg::Redis,
            ComponentArg::Agents,
        ]),
        ALL_TOOLS,
    )
    .await;
    let b = setup_text(
        setup_args(&[ComponentArg::Redis, ComponentArg::Agents]),
        ALL_TOOLS,
    )
    .await;
    assert_eq!(a.replace("agents redis", "redis agents"), b);
    assert!(
        a.starts_with("raibid setup redis agents (overlay dev, namespace raibid-ci):"),
        "{a}"
    );
}

#[tokio::test]
async fn helm_charts_come_from_the_flux_releases() {
    let text = setup_text(
        setup_args(&[ComponentArg::Keda, ComponentArg::Gitea]),
        ALL_TOOLS,
    )
    .await;
    assert!(
        text.contains(
            "run: helm upgrade --install keda keda --repo https://kedacore.github.io/charts \
         --version 2.20.2 --namespace keda --create-namespace --wait --timeout 300s \
         --kubeconfig /nonexistent/kubeconfig"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "run: helm upgrade --install gitea gitea --repo https://dl.gitea.com/charts/ --version \
         12.4.0 --namespace raibid-ci --values <values below> --wait --timeout 300s \
         --kubeconfig /nonexistent/kubeconfig"
        ),
        "{text}"
    );
    assert!(
        text.contains("      ALLOWED_HOST_LIST: raibid-server.raibid-ci.svc.cluster.local"),
        "{text}"
    );
}

/// helm and flux once ran without `--kubeconfig`: they used `~/.kube/config`, so with
/// `cluster.kubeconfig` set they installed into (or uninstalled from) another cluster than the
/// one raibid applied to, and on a fresh k3s (only /etc/rancher/k3s/k3s.yaml) they failed.
#[tokio::test]
async fn helm_and_flux_are_given_raibid_s_kubeconfig() {
    let setup = setup_text(setup_args(&[ComponentArg::All]), ALL_TOOLS).await;
    let mut args = teardown_args(&[ComponentArg::All, ComponentArg::Keda], true);
    args.yes_uninstall_keda = true;
    args.yes_uninstall_flux = true;
    let teardown = teardown_text(args, ALL_TOOLS).await;
    let commands: Vec<&str> = setup
        .lines()
        .chain(teardown.lines())
        .filter(|l| l.contains(". run: helm ") || l.contains(". run: flux "))
        .collect();
    // helm gitea and keda, flux install; their uninstalls.
    assert_eq!(commands.len(), 6, "{commands:#?}");
    for command in commands {
        assert!(
            command.ends_with(" --kubeconfig /nonexistent/kubeconfig"),
            "{command}"
        );
    }
}

/// The pod-template checksums of a setup of redis, server and agents: the Redis StatefulSet,
/// the server Deployment, then each ScaledJob.
async fn secret_checksums(config: &Config) -> Vec<String> {
    let text = setup_text_with(
        setup_args(&[
            ComponentArg::Redis,
            ComponentArg::Server,
            ComponentArg::Agents,
        ]),
        config,
        ALL_TOOLS,
    )
    .await;
    assert!(!text.contains("first-password") && !text.contains("second-password"));
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("raibid.dev/secret-checksum: "))
        .map(str::to_owned)
        .collect()
}

/// Setup rewrote the Secrets pods read as environment variables at start and left the pods
/// alone: after a new Redis password the running Redis and server kept the old one while new
/// agents used the new one. A change now changes the pod templates that read it.
#[tokio::test]
async fn a_changed_secret_changes_the_pod_templates_that_read_it() {
    let mut config = config();
    config.redis.url = raibid_config::Secret::new("redis://:first-password@raibid-redis:6379");
    config.server.webhook_secret = raibid_config::Secret::new("first-hook");
    let first = secret_checksums(&config).await;
    assert_eq!(
        first.len(),
        5,
        "redis, server and three ScaledJobs: {first:?}"
    );
    assert_eq!(
        secret_checksums(&config).await,
        first,
        "same values, same pods"
    );

    config.redis.url = raibid_config::Secret::new("redis://:second-password@raibid-redis:6379");
    let new_password = secret_checksums(&config).await;
    // Everything reads the Redis password.
    for (before, after) in first.iter().zip(&new_password) {
        assert_ne!(before, after);
    }

    config.server.webhook_secret = raibid_config::Secret::new("second-hook");
    let new_hook = secret_checksums(&config).await;
    assert_eq!(
        new_hook[0], new_password[0],
        "Redis does not read the server's Secret"
    );
    assert_ne!(new_hook[1], new_password[1]);
    assert_eq!(new_hook[2..], new_password[2..]);

    // The agents push with the registry login, and the server fetches artifacts with it.
    config.agent.registry.password = raibid_config::Secret::new("pkg-token");
    let new_login = secret_checksums(&config).await;
    assert_eq!(
        new_login[0], new_hook[0],
        "Redis does not read the agents' Secret"
    );
    for (before, after) in new_hook[1..].iter().zip(&new_login[1..]) {
        assert_ne!(before, after);
    }
}

/// The `raibid.dev/config-checksum` annotations of `raibid setup server agents`.
async fn config_checksums(config: &Config) -> Vec<String> {
    setup_text_with(
        setup_args(&[ComponentArg::Server, ComponentArg::Agents]),
        config,
        ALL_TOOLS,
    )
    .await
    .lines()
    .filter_map(|l| l.trim().strip_prefix("raibid.dev/config-checksum: "))
    .map(str::to_owned)
    .collect()
}

/// A new `redis.stream_name` changed the ConfigMap and KEDA's triggers, not the server's pod
/// template: the server kept pushing jobs to the old streams while KEDA watched the new ones.
#[tokio::test]
async fn a_changed_configuration_rolls_the_server() {
    let mut config = config();
    let first = config_checksums(&config).await;
    assert_eq!(first.len(), 1, "the server Deployment only: {first:?}");
    assert_eq!(
        config_checksums(&config).await,
        first,
        "same file, same pods"
    );
    config.agent.registry.password = raibid_config::Secret::new("pkg-token");
    assert_eq!(
        config_checksums(&config).await,
        first,
        "a Secret is not the configuration file"
    );
    config.redis.stream_name = "other-jobs".into();
    let changed = config_checksums(&config).await;
    assert_eq!(changed.len(), 1);
    assert_ne!(changed, first);
}

/// `raibid setup redis` with a new password in `redis.url` rewrote the Secret and rolled Redis;
/// the server reads the same Secret but was not applied, kept the old password and failed to
/// authenticate. The Secret step now knows which workloads outside the setup read it (and
/// stops, naming the setup that rolls them, when it would change a value they run with).
#[tokio::test]
async fn a_secret_read_outside_the_setup_names_its_readers() {
    let mut config = config();
    config.redis.url = raibid_config::Secret::new("redis://:new-password@raibid-redis:6379");
    let text = setup_text_with(setup_args(&[ComponentArg::Redis]), &config, ALL_TOOLS).await;
    assert!(
        text.contains(
            "      also read by Deployment/raibid-server (namespace raibid-ci), which this setup \
             does not apply: if a value changes and it exists, setup stops here (run `raibid \
             setup redis server`)"
        ),
        "{text}"
    );
    // Applied together, the server rolls with the new checksum: nothing to stop for.
    let both = setup_text(
        setup_args(&[ComponentArg::Redis, ComponentArg::Server]),
        ALL_TOOLS,
    )
    .await;
    assert!(!both.contains("also read by"), "{both}");
    // The agents' Secret is also read by the server (the registry login, for artifacts).
    let agents = setup_text(setup_args(&[ComponentArg::Agents]), ALL_TOOLS).await;
    assert!(
        agents.contains("also read by Deployment/raibid-server (namespace raibid-ci)")
            && agents.contains("(run `raibid setup server agents`)"),
        "{agents}"
    );
    // `setup flux` writes every Secret, and the prod overlay is named in what to run.
    let mut args = setup_args(&[ComponentArg::Flux]);
    args.overlay = "prod".into();
    let flux = setup_text(args, ALL_TOOLS).await;
    assert!(
        flux.contains("also read by StatefulSet/raibid-redis (namespace raibid-ci)"),
        "{flux}"
    );
    assert!(
        flux.contains("(run `raibid setup redis flux server --overlay prod`)"),
        "{flux}"
    );
}

#[tokio::test]
async fn without_helm_flux_installs_the_charts() {
    let tools = Tools {
        helm: false,
        flux: true,
    };
    let text = setup_text(setup_args(&[ComponentArg::Keda]), tools).await;
    assert!(
        text.contains("note: helm is not installed: Flux's helm-controller installs the chart")
    );
    assert!(text.contains("kind: HelmRelease"));
    assert!(text.contains("wait for HelmRelease flux-system/keda: condition Ready=True"));
}

/// Without helm, Gitea and KEDA are Flux HelmReleases, which need Flux's CRDs: `setup all`
/// applied them before `flux install` and always failed.
#[tokio::test]
async fn without_helm_flux_comes_before_the_charts_it_installs() {
    let tools = Tools {
        helm: false,
        flux: true,
    };
    let text = setup_text(setup_args(&[ComponentArg::All]), tools).await;
    assert!(
        text.starts_with(
            "raibid setup k3s redis flux gitea keda server agents (overlay dev, namespace \
             raibid-ci):"
        ),
        "{text}"
    );
    let position = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in plan"))
    };
    assert!(position("apply redis") < position("run: flux install"));
    assert!(position("run: flux install") < position("apply gitea (Flux HelmRelease)"));
    assert!(position("run: flux install") < position("apply keda (Flux HelmRelease)"));
    assert!(position("apply keda (Flux HelmRelease)") < position("apply server"));
    assert_eq!(text.matches("run: flux install").count(), 1);
    // With helm, the charts need no Flux, and Flux syncs from Gitea: Gitea first.
    let with_helm = setup_text(setup_args(&[ComponentArg::All]), ALL_TOOLS).await;
    assert!(
        with_helm.find("helm upgrade --install gitea").unwrap()
            < with_helm.find("run: flux install").unwrap()
    );
}

#[tokio::test]
async fn a_missing_flux_cli_is_announced_in_the_plan() {
    let text = setup_text(
        setup_args(&[ComponentArg::Flux]),
        Tools {
            helm: true,
            flux: false,
        },
    )
    .await;
    assert!(
        text.contains("note: the flux CLI is not installed, so the next step will fail"),
        "{text}"
    );
    let with = setup_text(setup_args(&[ComponentArg::Flux]), ALL_TOOLS).await;
    assert!(!with.contains("flux CLI is not installed"));
}

#[tokio::test]
async fn k3s_setup_prints_the_exact_installer_command() {
    let text = setup_text(setup_args(&[ComponentArg::K3s]), ALL_TOOLS).await;
    assert_eq!(
        text,
        "raibid setup k3s (overlay dev, namespace raibid-ci):\n \
         1. note: the kubeconfig k3s writes (/etc/rancher/k3s/k3s.yaml) is readable by root only \
         (mode 0600, it holds cluster-admin credentials); to use the cluster as another user: \
         mkdir -p ~/.kube && sudo install -m 0600 -o \"$(id -u)\" -g \"$(id -g)\" \
         /etc/rancher/k3s/k3s.yaml ~/.kube/config\n \
         2. install k3s unless a cluster is already reachable: INSTALL_K3S_EXEC='server --disable \
         traefik --data-dir /var/lib/rancher/k3s --write-kubeconfig-mode 0600' sh -c \
         'installer=$(mktemp) && curl -sfL https://get.k3s.io -o \"$installer\" && sh \
         \"$installer\"'\n \
         3. wait for every node Ready\n\
         dry run: nothing was changed\n"
    );
}

/// `k3s.data_dir` and `k3s.version` were spliced into the `sh -c` string; a `'` in them ended
/// the quoting and the rest ran as commands.
#[tokio::test]
async fn k3s_settings_never_reach_a_shell() {
    let mut config = config();
    config.k3s.data_dir = "/var/lib/x'; touch /tmp/x; '".into();
    let mut out = Vec::new();
    let err = setup_to(
        setup_args(&[ComponentArg::K3s]),
        &config,
        ALL_TOOLS,
        &mut out,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(
            "k3s.data_dir = \"/var/lib/x'; touch /tmp/x; '\" in the configuration is not allowed"
        ),
        "{err}"
    );
    assert!(out.is_empty());
}

#[tokio::test]
async fn secrets_are_described_never_printed() {
    let mut config = config();
    config.server.webhook_secret = raibid_config::Secret::new("do-not-print-me");
    let text = setup_text_with(setup_args(&[ComponentArg::Server]), &config, ALL_TOOLS).await;
    assert!(!text.contains("do-not-print-me"));
    assert!(
        text.contains("webhook-secret: from server.webhook_secret in the configuration"),
        "{text}"
    );
    assert!(
        text.contains("gitea-token: kept if present, else empty"),
        "{text}"
    );
}

#[tokio::test]
async fn teardown_runs_backwards_and_keeps_data_unless_asked() {
    let keep = teardown_text(teardown_args(&[ComponentArg::All], false), ALL_TOOLS).await;
    assert!(!keep.contains("PersistentVolumeClaim"));
    assert!(!keep.contains("Namespace/raibid-ci"));
    let purge = teardown_text(teardown_args(&[ComponentArg::All], true), ALL_TOOLS).await;
    assert_snapshot("teardown-all-delete-data.headlines.txt", &headlines(&purge));
    let position = |needle: &str| {
        purge
            .find(needle)
            .unwrap_or_else(|| panic!("no {needle:?}"))
    };
    // Flux's sync goes first, or it re-applies what the later steps delete.
    assert!(position("patch flux sync") < position("delete flux sync"));
    assert!(position("delete flux sync") < position("delete agents"));
    assert!(position("delete agents") < position("delete server"));
    assert!(position("delete server") < position("helm uninstall gitea"));
    assert!(position("helm uninstall gitea") < position("delete redis"));
    assert!(position("delete redis") < position("delete namespace raibid-ci"));
}

/// Data is deleted by exact name: a label selector also matches other charts' claims in a shared
/// namespace, and misses Gitea's (the chart does not give it the release labels).
#[tokio::test]
async fn delete_data_names_each_claim_and_checks_the_namespace_label() {
    let purge = teardown_text(teardown_args(&[ComponentArg::All], true), ALL_TOOLS).await;
    assert!(!purge.contains("matching"), "no label selectors: {purge}");
    for claim in [
        "PersistentVolumeClaim/data-raibid-redis-0 (namespace raibid-ci)",
        "PersistentVolumeClaim/gitea-shared-storage (namespace raibid-ci)",
    ] {
        assert_eq!(purge.matches(claim).count(), 1, "{claim}: {purge}");
    }
    assert!(
        purge.contains(
            "delete namespace raibid-ci (and anything left in it) if it is labelled \
             app.kubernetes.io/managed-by=raibid"
        ),
        "{purge}"
    );
    // Setup never puts that label on a namespace that existed before, or teardown would take it.
    let setup = setup_text(setup_args(&[ComponentArg::Redis]), ALL_TOOLS).await;
    assert!(
        setup.contains(
            "1. apply namespace raibid-ci unless it exists without \
             app.kubernetes.io/managed-by=raibid (then it is used as it is)"
        ),
        "{setup}"
    );
    // Only the namespace-wide teardown deletes the namespace.
    let redis = teardown_text(teardown_args(&[ComponentArg::Redis], true), ALL_TOOLS).await;
    assert!(redis.contains("PersistentVolumeClaim/data-raibid-redis-0"));
    assert!(!redis.contains("delete namespace"), "{redis}");
}

/// `all` is raibid-ci's own objects: never the cluster, never a shared operator, with or without
/// `--delete-data`, with or without helm.
#[tokio::test]
async fn teardown_all_never_uninstalls_k3s_keda_or_flux() {
    for delete_data in [false, true] {
        for tools in [
            ALL_TOOLS,
            Tools {
                helm: false,
                flux: true,
            },
        ] {
            let text = teardown_text(teardown_args(&[ComponentArg::All], delete_data), tools).await;
            assert!(!text.contains("k3s-uninstall.sh"), "{text}");
            assert!(!text.contains("helm uninstall keda"), "{text}");
            assert!(!text.contains("HelmRelease/keda"), "{text}");
            assert!(!text.contains("flux uninstall"), "{text}");
            assert!(
                text.contains("merge patch: {\"spec\":{\"prune\":false,\"suspend\":true}}"),
                "{text}"
            );
            assert!(text.contains("Kustomization/raibid-keda"), "{text}");
        }
    }
}

async fn teardown_error(args: TeardownArgs) -> String {
    let mut out = Vec::new();
    let err = teardown_to(args, &config(), ALL_TOOLS, &mut out)
        .await
        .unwrap_err()
        .to_string();
    assert!(out.is_empty(), "a refused teardown prints no plan");
    err
}

#[tokio::test]
async fn k3s_and_keda_teardowns_need_their_confirmation_flag() {
    let err = teardown_error(teardown_args(&[ComponentArg::K3s], true)).await;
    assert!(err.contains("--yes-destroy-cluster"), "{err}");
    assert!(err.contains("deletes the whole k3s cluster"), "{err}");
    let err = teardown_error(teardown_args(
        &[ComponentArg::All, ComponentArg::Keda],
        false,
    ))
    .await;
    assert!(err.contains("--yes-uninstall-keda"), "{err}");
    assert!(err.contains("for every workload in the cluster"), "{err}");

    let mut args = teardown_args(&[ComponentArg::K3s, ComponentArg::Keda], false);
    args.yes_destroy_cluster = true;
    args.yes_uninstall_keda = true;
    let text = teardown_text(args, ALL_TOOLS).await;
    assert!(
        text.find("helm uninstall keda").unwrap() < text.find("k3s-uninstall.sh").unwrap(),
        "{text}"
    );
}

/// KEDA's operator puts a finalizer on every ScaledJob and removes it only while it runs:
/// `teardown keda` uninstalled KEDA with raibid's ScaledJobs still there (they and the CRDs then
/// stayed Terminating, and `helm uninstall --wait` timed out), and `teardown agents keda`
/// deleted them without waiting for the operator to release them.
#[tokio::test]
async fn keda_objects_are_gone_before_keda_is() {
    for tools in [
        ALL_TOOLS,
        Tools {
            helm: false,
            flux: true,
        },
    ] {
        let mut args = teardown_args(&[ComponentArg::Agents, ComponentArg::Keda], false);
        args.yes_uninstall_keda = true;
        let text = headlines(&teardown_text(args, tools).await);
        let position = |needle: &str| {
            text.find(needle)
                .unwrap_or_else(|| panic!("no {needle:?} in {text}"))
        };
        assert!(
            text.starts_with(
                "1. check that every ScaledObject, ScaledJob and (Cluster)TriggerAuthentication \
                 in the cluster is labelled app.kubernetes.io/part-of=raibid-ci"
            ),
            "{text}"
        );
        assert!(position("delete agents") < position("wait until the agents' KEDA objects"));
        assert!(
            position("wait until the agents' KEDA objects are gone (4 objects")
                < position("delete the KEDA objects labelled")
        );
        let uninstall = if tools.helm {
            "run: helm uninstall keda"
        } else {
            "delete keda (Flux uninstalls the chart)"
        };
        assert!(position("delete the KEDA objects labelled") < position(uninstall));
    }
    // Alone, KEDA's teardown deletes raibid's ScaledJobs itself, before the chart goes.
    let mut args = teardown_args(&[ComponentArg::Keda], false);
    args.yes_uninstall_keda = true;
    let text = headlines(&teardown_text(args, ALL_TOOLS).await);
    let check = text.find("1. check that every ScaledObject").unwrap();
    let delete = text.find("delete the KEDA objects labelled").unwrap();
    assert!(check < delete && delete < text.find("helm uninstall keda").unwrap());
}

/// `teardown server` while Flux synced raibid-ci: kustomize-controller re-applied the server
/// within its interval. The component's Kustomization is suspended first.
#[tokio::test]
async fn a_component_teardown_suspends_its_flux_sync_first() {
    let text =
        headlines(&teardown_text(teardown_args(&[ComponentArg::Server], false), ALL_TOOLS).await);
    assert!(
        text.starts_with(
            "1. patch Flux's sync of these components (if Flux syncs them): suspend it, or it \
             re-applies what is deleted (1 object; absent is fine)\n"
        ),
        "{text}"
    );
    assert!(text.contains("`flux resume kustomization -n flux-system raibid-server`"));
    let full = teardown_text(teardown_args(&[ComponentArg::Server], false), ALL_TOOLS).await;
    assert!(
        full.contains(
            "merge patch: {\"spec\":{\"suspend\":true}}\n      \
             Kustomization/raibid-server (namespace flux-system)\n"
        ),
        "{full}"
    );
    // KEDA's teardown deletes the agents' ScaledJobs too: both syncs stop.
    let mut args = teardown_args(&[ComponentArg::Keda], false);
    args.yes_uninstall_keda = true;
    let keda = teardown_text(args, ALL_TOOLS).await;
    for name in ["raibid-keda", "raibid-agents"] {
        assert!(
            keda.contains(&format!("Kustomization/{name} (namespace flux-system)")),
            "{keda}"
        );
    }
    let suspend = keda.find("patch Flux's sync").unwrap();
    assert!(suspend < keda.find("delete the KEDA objects labelled").unwrap());
    // With Flux torn down too, its own steps stop every Kustomization: no second patch.
    let both = teardown_text(
        teardown_args(&[ComponentArg::Server, ComponentArg::Flux], false),
        ALL_TOOLS,
    )
    .await;
    assert!(!both.contains("patch Flux's sync"), "{both}");
    assert!(both.contains("patch flux sync: stop it"), "{both}");
}

/// The server had a Role it never used; server-side apply leaves objects the manifests no
/// longer have, so setup and teardown of the server delete the old Role and RoleBinding.
#[tokio::test]
async fn the_server_s_former_role_is_deleted() {
    let setup = setup_text(setup_args(&[ComponentArg::Server]), ALL_TOOLS).await;
    assert!(!setup.contains("kind: Role"), "{setup}");
    let teardown = teardown_text(teardown_args(&[ComponentArg::Server], false), ALL_TOOLS).await;
    for text in [&setup, &teardown] {
        for kind in ["Role", "RoleBinding"] {
            assert!(
                text.contains(&format!(
                    "      {kind}/raibid-server (namespace raibid-ci)\n"
                )),
                "{text}"
            );
        }
    }
}

/// With helm, the chart is uninstalled by helm, but a Flux HelmRelease for it (when Flux synced
/// infra/gitea) must go too, or helm-controller installs it again.
#[tokio::test]
async fn a_helm_uninstall_also_removes_the_flux_release() {
    let text = teardown_text(teardown_args(&[ComponentArg::Gitea], false), ALL_TOOLS).await;
    let uninstall = text.find("helm uninstall gitea").unwrap();
    let release = text
        .find("HelmRelease/gitea (namespace flux-system)")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(uninstall < release, "{text}");
}

#[tokio::test]
async fn flux_controllers_go_only_when_asked() {
    let mut args = teardown_args(&[ComponentArg::All], false);
    args.yes_uninstall_flux = true;
    let text = teardown_text(args, ALL_TOOLS).await;
    // After gitea, whose HelmRelease helm-controller uninstalls when helm is missing.
    assert!(text.find("uninstall gitea").unwrap() < text.find("flux uninstall").unwrap());
    let text = teardown_text(teardown_args(&[ComponentArg::Flux], false), ALL_TOOLS).await;
    assert!(!text.contains("flux uninstall"), "{text}");
    assert!(text.contains("--yes-uninstall-flux removes them"), "{text}");
}

#[tokio::test]
async fn an_unknown_overlay_lists_the_available_ones() {
    let mut args = setup_args(&[ComponentArg::Redis]);
    args.overlay = "staging".into();
    let mut out = Vec::new();
    let err = setup_to(args, &config(), ALL_TOOLS, &mut out)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("no kustomization named \"staging/redis\"; available: "),
        "{err}"
    );
    assert!(err.contains("overlays/dev/redis"), "{err}");
}
