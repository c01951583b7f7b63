//! The manifests in infra/: every kustomization renders, validates against the published
//! schemas and the house rules, and agrees with the configuration the programs use.

use raibid_config::Config;
use raibid_infra::{Tree, drift, render, render_as_is, validate};

fn all_targets(tree: &Tree) -> Vec<String> {
    tree.kustomization_dirs()
}

#[test]
fn every_kustomization_renders_and_validates() {
    let tree = Tree::embedded();
    let config = Config::default();
    let targets = all_targets(&tree);
    assert!(targets.len() >= 14, "{targets:?}");
    let mut failures = Vec::new();
    for target in &targets {
        let objects = render(&tree, target, &config).unwrap();
        assert!(!objects.is_empty(), "{target} renders nothing");
        let report = validate(&objects, &config);
        if !report.is_ok() {
            failures.push(format!("{target}: {report}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_default_configuration_changes_nothing() {
    let tree = Tree::embedded();
    let config = Config::default();
    for target in all_targets(&tree) {
        let written = render_as_is(&tree, &target).unwrap();
        let configured = render(&tree, &target, &config).unwrap();
        let changes = drift(&written, &configured);
        assert!(
            changes.is_empty(),
            "infra/{target} drifted from Config::default():\n{}",
            changes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Renders `target` as written after replacing `from` with `to` in `file`, and returns the
/// issues found against the default configuration.
/// The one issue validation finds after the edit (there must be exactly one).
fn one_issue_after_edit(file: &str, from: &str, to: &str, target: &str) -> String {
    let mut issues = issues_after_edit(file, from, to, target);
    assert_eq!(issues.len(), 1, "{issues:#?}");
    issues.remove(0)
}

fn issues_after_edit(file: &str, from: &str, to: &str, target: &str) -> Vec<String> {
    let tree = Tree::embedded();
    let text = tree.read(file).unwrap();
    assert!(text.contains(from), "{file} does not contain {from:?}");
    let tree = tree.clone().with_file(file, text.replacen(from, to, 1));
    let config = Config::default();
    let objects = render_as_is(&tree, target).unwrap();
    validate(&objects, &config)
        .issues
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_removed_limit_names_file_object_and_path() {
    let issues = issues_after_edit(
        "base/server/deployment.yaml",
        "            limits:\n              cpu: \"1\"\n",
        "            limits:\n",
        "base/server",
    );
    assert_eq!(
        issues,
        [
            "base/server/deployment.yaml: Deployment/raibid-server (namespace raibid-ci): \
          spec.template.spec.containers[0].resources.limits.cpu: every container needs a cpu limit"
        ]
    );
}

#[test]
fn a_misspelled_core_field_is_an_unknown_field() {
    let issues = issues_after_edit(
        "base/redis/statefulset.yaml",
        "  serviceName: raibid-redis",
        "  serviceNme: raibid-redis",
        "base/redis",
    );
    assert_eq!(
        issues,
        [
            "base/redis/statefulset.yaml: StatefulSet/raibid-redis (namespace raibid-ci): \
          spec.serviceNme: unknown field `serviceNme`"
        ]
    );
}

#[test]
fn a_wrong_type_in_a_scaled_job_fails_its_crd_schema() {
    let issue = one_issue_after_edit(
        "base/agents/scaledjob-amd64.yaml",
        "    backoffLimit: 0",
        "    backoffLimit: none",
        "base/agents",
    );
    assert!(
        issue.starts_with(
            "base/agents/scaledjob-amd64.yaml: ScaledJob/raibid-agent-amd64 (namespace raibid-ci): \
             spec.jobTargetRef.backoffLimit: "
        ),
        "{}",
        issue
    );
    assert!(
        issue.ends_with("spec.jobTargetRef.backoffLimit: \"none\" is not of type \"integer\""),
        "{}",
        issue
    );
}

#[test]
fn a_misspelled_field_deep_in_a_scaled_job_pod_spec_is_found() {
    let issues = issues_after_edit(
        "base/agents/scaledjob-gpu.yaml",
        "        nodeSelector:",
        "        nodeSelectr:",
        "base/agents",
    );
    assert_eq!(
        issues,
        [
            "base/agents/scaledjob-gpu.yaml: ScaledJob/raibid-agent-gpu (namespace raibid-ci): \
          spec.jobTargetRef.template.spec.nodeSelectr: unknown field `nodeSelectr`"
        ]
    );
}

#[test]
fn pending_entries_instead_of_lag_is_refused() {
    let issues = issues_after_edit(
        "base/agents/scaledjob-arm64.yaml",
        "        lagCount: \"1\"",
        "        pendingEntriesCount: \"1\"",
        "base/agents",
    );
    assert!(
        issues.iter().any(|i| i.ends_with(
            "spec.triggers[0].metadata.pendingEntriesCount: use lagCount: pending entries \
             already have an agent and are 0 while jobs wait, so this cannot scale up from zero"
        )),
        "{issues:#?}"
    );
    assert!(
        issues
            .iter()
            .any(|i| i.contains("spec.triggers[0].metadata.lagCount: is null"))
    );
}

#[test]
fn an_agent_pod_runs_one_job_with_either_agent_program() {
    let command = "command: [\"raibid-agent\", \"--once\", \"--pool\", \"arm64\"]";
    let file = "base/agents/scaledjob-arm64.yaml";
    // `raibid agent` does the same work as the agent-only binary.
    let subcommand = "command: [\"raibid\", \"agent\", \"--once\", \"--pool\", \"arm64\"]";
    assert_eq!(
        issues_after_edit(file, command, subcommand, "base/agents"),
        Vec::<String>::new()
    );
    for wrong in [
        "command: [\"raibid-agent\", \"--pool\", \"arm64\"]",
        "command: [\"raibid\", \"server\", \"--once\", \"--pool\", \"arm64\"]",
        "command: [\"sh\", \"-c\", \"agent\", \"--once\", \"--pool\", \"arm64\"]",
    ] {
        let issue = one_issue_after_edit(file, command, wrong, "base/agents");
        assert!(
            issue.ends_with(
                "the agent must run as `raibid-agent --once --pool <pool>` (or `raibid agent \
                 --once --pool <pool>`): one job per pod"
            ),
            "{wrong}: {issue}"
        );
    }
}

#[test]
fn a_stream_the_agents_do_not_read_is_refused() {
    let issues = issues_after_edit(
        "base/agents/scaledjob-arm64.yaml",
        "        stream: ci-jobs:arm64",
        "        stream: ci-jobs:amd64",
        "base/agents",
    );
    assert_eq!(
        issues,
        [
            "base/agents/scaledjob-arm64.yaml: ScaledJob/raibid-agent-arm64 (namespace raibid-ci): \
          spec.triggers[0].metadata.stream: is \"ci-jobs:amd64\", but redis.stream_name and the \
          agent's pool give \"ci-jobs:arm64\": KEDA would watch a queue nobody uses"
        ]
    );
}

#[test]
fn configuration_typos_and_unknown_variables_are_caught_before_a_crash_loop() {
    let issues = issues_after_edit(
        "base/server/config.yaml",
        "  default_pool: arm64",
        "  default_pol: arm64",
        "base/server",
    );
    assert_eq!(issues.len(), 1, "{issues:#?}");
    assert!(
        issues[0].contains("data[\"config.yaml\"]: not a valid raibid configuration"),
        "{}",
        issues[0]
    );
    assert!(
        issues[0].contains("unknown field `default_pol`"),
        "{}",
        issues[0]
    );

    let issues = issues_after_edit(
        "base/server/deployment.yaml",
        "- name: RAIBID_SERVER_WEBHOOK_SECRET",
        "- name: RAIBID_SERVER_WEBHOOK_SECRT",
        "base/server",
    );
    assert_eq!(issues.len(), 1, "{issues:#?}");
    assert!(
        issues[0].contains("spec.template.spec.containers[0].env[4]"),
        "{}",
        issues[0]
    );
    assert!(
        issues[0].contains("RAIBID_SERVER_WEBHOOK_SECRT"),
        "{}",
        issues[0]
    );
}

/// KEDA's trigger reads a pool's stream from the moment the ScaledJob exists; the server
/// creates the streams of the pools its configuration names, so every served pool is named.
#[test]
fn every_served_pool_is_named_so_its_stream_exists_before_its_first_job() {
    let issue = one_issue_after_edit(
        "base/server/config.yaml",
        "  pools: [arm64, amd64, gpu]",
        "  pools: [arm64, amd64]",
        "overlays/dev",
    );
    assert!(
        issue.contains("a ScaledJob serves pool gpu, which server.pools does not list"),
        "{issue}"
    );
}

#[test]
fn a_default_pool_without_agents_is_refused() {
    let issue = one_issue_after_edit(
        "base/server/config.yaml",
        "  default_pool: arm64",
        "  default_pool: riscv",
        "overlays/dev",
    );
    assert!(
        issue.ends_with("jobs for pool riscv would wait forever: no ScaledJob runs `--pool riscv`"),
        "{}",
        issue
    );
}

#[test]
fn secrets_must_be_ones_setup_creates() {
    let issue = one_issue_after_edit(
        "base/agents/triggerauthentication.yaml",
        "      key: password",
        "      key: passwd",
        "base/agents",
    );
    assert!(
        issue.contains("spec.secretTargetRef[0]: Secret raibid-redis key passwd is not one"),
        "{}",
        issue
    );
}

#[test]
fn missing_labels_and_probes_are_house_rule_violations() {
    let issues = issues_after_edit(
        "base/redis/statefulset.yaml",
        "          readinessProbe:",
        "          startupProbe:",
        "base/redis",
    );
    assert_eq!(
        issues,
        [
            "base/redis/statefulset.yaml: StatefulSet/raibid-redis (namespace raibid-ci): \
          spec.template.spec.containers[0].readinessProbe: long-running containers need \
          liveness and readiness probes"
        ]
    );
    let issues = issues_after_edit(
        "base/redis/service.yaml",
        "    app.kubernetes.io/component: queue\nspec:",
        "spec:",
        "base/redis",
    );
    assert_eq!(
        issues,
        [
            "base/redis/service.yaml: Service/raibid-redis (namespace raibid-ci): \
          metadata.labels[\"app.kubernetes.io/component\"]: missing label"
        ]
    );
}

#[test]
fn a_flux_kustomization_with_a_wrong_enum_fails_its_crd_schema() {
    let issue = one_issue_after_edit(
        "flux/kustomizations.yaml",
        "    kind: GitRepository",
        "    kind: GitRepo",
        "flux",
    );
    assert!(
        issue.starts_with(
            "flux/kustomizations.yaml: Kustomization/raibid-keda (namespace flux-system): spec.sourceRef.kind: "
        ),
        "{}",
        issue
    );
}

#[test]
fn every_scaled_job_scales_on_the_lag_of_the_stream_its_agents_read() {
    let tree = Tree::embedded();
    let config = Config::default();
    let objects = render_as_is(&tree, "dev").unwrap();
    let mut pools = Vec::new();
    for job in objects.iter().filter(|m| m.kind() == "ScaledJob") {
        let spec = &job.object["spec"];
        let pod = &spec["jobTargetRef"]["template"]["spec"];
        let command: Vec<&str> = pod["containers"][0]["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            &command[..3],
            ["raibid-agent", "--once", "--pool"],
            "{}",
            job.name()
        );
        let pool: raibid_model::PoolName = command[3].parse().unwrap();
        let trigger = &spec["triggers"][0];
        assert_eq!(trigger["type"], "redis-streams");
        assert_eq!(trigger["metadata"]["lagCount"], "1");
        assert!(trigger["metadata"]["pendingEntriesCount"].is_null());
        assert_eq!(
            trigger["metadata"]["stream"],
            config.stream_for(&pool).as_str()
        );
        assert_eq!(
            trigger["metadata"]["consumerGroup"],
            config.redis.consumer_group.as_str()
        );
        assert_eq!(spec["scalingStrategy"]["strategy"], "accurate");
        assert_eq!(spec["rollout"]["strategy"], "gradual");
        assert_eq!(spec["pollingInterval"], config.keda.polling_interval);
        assert_eq!(spec["maxReplicaCount"], config.keda.max_replicas);
        // Caches keyed by the architecture the pool's nodes have.
        let arch = pod["nodeSelector"]["kubernetes.io/arch"].as_str().unwrap();
        for volume in pod["volumes"].as_array().unwrap() {
            if let Some(path) = volume["hostPath"]["path"].as_str() {
                assert!(
                    path.starts_with(&format!("/var/lib/raibid/cache/{arch}/")),
                    "{path}"
                );
            }
        }
        let resources = &pod["containers"][0]["resources"];
        let gpu = &resources["limits"]["nvidia.com/gpu"];
        assert_eq!(
            pool.as_str() == "gpu",
            !gpu.is_null(),
            "{}: nvidia.com/gpu",
            job.name()
        );
        assert_ne!(pod["containers"][0]["securityContext"]["privileged"], true);
        pools.push(pool.to_string());
    }
    assert_eq!(pools, ["arm64", "amd64", "gpu"]);
    assert_eq!(
        config.stream_for(&"arm64".parse().unwrap()),
        "ci-jobs:arm64"
    );
    assert_eq!(config.redis.consumer_group, "ci-workers");
}

#[test]
fn the_configuration_decides_names_namespace_and_scaling() {
    let mut config = Config::default();
    config.redis.stream_name = "jobs".into();
    config.redis.consumer_group = "builders".into();
    config.cluster.namespace = "ci".into();
    config.keda.max_replicas = 4;
    config.keda.polling_interval = 5;
    config.keda.version = "2.99.0".into();
    config.flux.path = "clusters/lab".into();
    config.flux.branch = "stable".into();
    let tree = Tree::embedded();
    let objects = render(&tree, "dev", &config).unwrap();
    let report = validate(&objects, &config);
    assert!(report.is_ok(), "{report}");
    let job = objects
        .iter()
        .find(|m| m.name() == "raibid-agent-amd64")
        .unwrap();
    let trigger = &job.object["spec"]["triggers"][0]["metadata"];
    assert_eq!(trigger["stream"], "jobs:amd64");
    assert_eq!(trigger["consumerGroup"], "builders");
    assert_eq!(trigger["address"], "raibid-redis.ci.svc.cluster.local:6379");
    assert_eq!(job.object["spec"]["maxReplicaCount"], 4);
    assert_eq!(job.namespace(), Some("ci"));
    let config_map = objects
        .iter()
        .find(|m| m.name() == "raibid-config")
        .unwrap();
    let file: Config =
        serde_yaml::from_str(config_map.object["data"]["config.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(file.redis.stream_name, "jobs");
    assert_eq!(file.redis.consumer_group, "builders");
    assert!(
        objects
            .iter()
            .any(|m| m.kind() == "Namespace" && m.name() == "ci")
    );
    for object in &objects {
        let text = serde_json::to_string(&object.object).unwrap();
        assert!(
            !text.contains(".raibid-ci.svc"),
            "{} still points at raibid-ci",
            object.object_ref()
        );
        assert_ne!(object.namespace(), Some("raibid-ci"));
    }
    let argocd = render(&tree, "argocd", &config).unwrap();
    assert_eq!(argocd[0].object["spec"]["destination"]["namespace"], "ci");

    let flux = render(&tree, "flux", &config).unwrap();
    let agents = flux.iter().find(|m| m.name() == "raibid-agents").unwrap();
    assert_eq!(agents.object["spec"]["path"], "./clusters/lab/agents");
    let source = flux.iter().find(|m| m.kind() == "GitRepository").unwrap();
    assert_eq!(source.object["spec"]["ref"]["branch"], "stable");
    let keda = render(&tree, "keda", &config).unwrap();
    let release = keda.iter().find(|m| m.kind() == "HelmRelease").unwrap();
    assert_eq!(release.object["spec"]["chart"]["spec"]["version"], "2.99.0");
    assert_eq!(
        release.object["spec"]["targetNamespace"], "keda",
        "KEDA stays in its own namespace"
    );
}

#[test]
fn an_invalid_namespace_is_refused_before_anything_renders() {
    let mut config = Config::default();
    config.cluster.namespace = "CI_Cluster".into();
    let err = render(&Tree::embedded(), "dev", &config)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cluster.namespace \"CI_Cluster\" is not a valid namespace"),
        "{err}"
    );
}

#[test]
fn overlays_change_what_they_say() {
    let tree = Tree::embedded();
    let dev = render_as_is(&tree, "dev").unwrap();
    let prod = render_as_is(&tree, "prod").unwrap();
    let find = |objects: &[raibid_infra::Manifest], kind: &str, name: &str| {
        objects
            .iter()
            .find(|m| m.kind() == kind && m.name() == name)
            .unwrap()
            .object
            .clone()
    };
    let server_dev = find(&dev, "Deployment", "raibid-server");
    let server_prod = find(&prod, "Deployment", "raibid-server");
    assert_eq!(server_dev["spec"]["replicas"], 1);
    assert_eq!(server_prod["spec"]["replicas"], 2);
    let container = &server_dev["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["resources"]["limits"]["memory"], "256Mi");
    assert_eq!(
        container["image"], "localhost/raibid:0.1.0",
        "the merge kept the rest of the container"
    );
    assert!(server_prod["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"].is_object());
    assert!(prod.iter().any(|m| m.kind() == "PodDisruptionBudget"));
    assert!(!dev.iter().any(|m| m.kind() == "PodDisruptionBudget"));
    let gpu = find(&dev, "ScaledJob", "raibid-agent-gpu");
    let resources = &gpu["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(resources["requests"]["cpu"], "250m");
    assert_eq!(
        resources["limits"]["nvidia.com/gpu"], "1",
        "the JSON patch keeps the GPU request"
    );
    let redis = find(&prod, "StatefulSet", "raibid-redis");
    assert_eq!(
        redis["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "20Gi"
    );
}

#[test]
fn flux_orders_the_components_and_points_at_paths_that_exist() {
    let tree = Tree::embedded();
    let dirs = tree.kustomization_dirs();
    let flux = render_as_is(&tree, "flux").unwrap();
    let kustomizations: Vec<_> = flux
        .iter()
        .filter(|m| m.kind() == "Kustomization")
        .collect();
    let depends_on = |name: &str| -> Vec<String> {
        let object = kustomizations.iter().find(|m| m.name() == name).unwrap();
        object.object["spec"]["dependsOn"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|d| d["name"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(depends_on("raibid-redis"), Vec::<String>::new());
    assert_eq!(depends_on("raibid-server"), ["raibid-redis"]);
    assert_eq!(
        depends_on("raibid-agents"),
        ["raibid-server", "raibid-keda"]
    );
    for kustomization in &kustomizations {
        let spec = &kustomization.object["spec"];
        let path = spec["path"].as_str().unwrap();
        let dir = path.trim_start_matches("./").trim_start_matches("infra/");
        assert!(
            dirs.iter().any(|d| d == dir),
            "{}: no kustomization at {path}",
            kustomization.name()
        );
        assert_eq!(spec["sourceRef"]["name"], "raibid-cluster-config");
        assert_eq!(
            spec["wait"], true,
            "dependsOn must mean healthy, not just applied"
        );
    }
    let source = flux.iter().find(|m| m.kind() == "GitRepository").unwrap();
    assert_eq!(
        source.object["spec"]["url"],
        Config::default().flux.git_repo.as_str()
    );

    let argocd = render_as_is(&tree, "argocd").unwrap();
    let app = &argocd[0].object["spec"]["source"];
    let dir = app["path"].as_str().unwrap().trim_start_matches("infra/");
    assert!(
        dirs.iter().any(|d| d == dir),
        "ArgoCD syncs {dir}, which is not a kustomization"
    );
}

#[test]
fn gitea_serves_packages_and_may_call_the_in_cluster_server() {
    let tree = Tree::embedded();
    let gitea = render_as_is(&tree, "gitea").unwrap();
    let values_map = gitea.iter().find(|m| m.kind() == "ConfigMap").unwrap();
    let values: serde_yaml::Value =
        serde_yaml::from_str(values_map.object["data"]["values.yaml"].as_str().unwrap()).unwrap();
    let config = &values["gitea"]["config"];
    assert_eq!(config["packages"]["ENABLED"], serde_yaml::Value::Bool(true));
    let allowed = config["webhook"]["ALLOWED_HOST_LIST"].as_str().unwrap();
    let server = render_as_is(&tree, "base/server").unwrap();
    let service = server.iter().find(|m| m.kind() == "Service").unwrap();
    let fqdn = format!(
        "{}.{}.svc.cluster.local",
        service.name(),
        service.namespace().unwrap()
    );
    assert!(
        allowed.split(',').any(|h| h == fqdn),
        "{allowed} lacks {fqdn}"
    );
    // The alias Service gives Gitea the address the configuration uses by default.
    let alias = gitea.iter().find(|m| m.kind() == "Service").unwrap();
    let default_url = Config::default().gitea.url;
    assert!(default_url.starts_with(&format!(
        "http://{}.{}.svc",
        alias.name(),
        alias.namespace().unwrap()
    )));
}

#[test]
fn an_unknown_kind_is_refused_by_name() {
    let tree = Tree::embedded();
    let kustomization = tree
        .read("base/server/kustomization.yaml")
        .unwrap()
        .replace(
            "  - networkpolicy.yaml\n",
            "  - networkpolicy.yaml\n  - cronjob.yaml\n",
        );
    let cronjob = "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: cleanup\n";
    let tree = tree
        .with_file("base/server/kustomization.yaml", kustomization)
        .with_file("base/server/cronjob.yaml", cronjob);
    let objects = render_as_is(&tree, "base/server").unwrap();
    let report = validate(&objects, &Config::default());
    let first = report
        .issues
        .iter()
        .find(|i| i.object.kind == "CronJob")
        .unwrap()
        .to_string();
    assert!(
        first.starts_with(
            "base/server/cronjob.yaml: CronJob/cleanup (namespace raibid-ci): kind: batch/v1 \
             CronJob is not a kind raibid can validate"
        ),
        "{first}"
    );
}

#[test]
fn every_object_converts_to_what_kube_rs_sends() {
    let tree = Tree::embedded();
    let config = Config::default();
    for target in all_targets(&tree) {
        for object in render(&tree, &target, &config).unwrap() {
            let (resource, dynamic) = raibid_infra::cluster::to_dynamic(&object)
                .unwrap_or_else(|e| panic!("{target}: {e}"));
            assert_eq!(resource.api_version, object.api_version());
            assert_eq!(resource.kind, object.kind());
            assert_eq!(dynamic.metadata.name.as_deref(), Some(object.name()));
            assert_eq!(dynamic.metadata.namespace.as_deref(), object.namespace());
        }
    }
}

#[test]
fn generated_secrets_pass_the_same_validation() {
    let config = Config::default();
    let secrets: Vec<_> = raibid_infra::SECRETS
        .iter()
        .map(|spec| {
            let values = spec
                .keys
                .iter()
                .map(|k| ((*k).to_owned(), "x".to_owned()))
                .collect();
            raibid_infra::secret_manifest(spec, &config.cluster.namespace, values)
        })
        .collect();
    let report = validate(&secrets, &config);
    assert!(report.is_ok(), "{report}");
    assert_eq!(secrets.len(), 4);
}

/// Agents push to Gitea's registry inside the cluster: plain HTTP, with the login setup writes.
#[test]
fn agents_get_the_registry_login_setup_writes_and_an_insecure_in_cluster_registry() {
    let tree = Tree::embedded();
    let objects = render(&tree, "dev", &Config::default()).unwrap();
    let mut scaled_jobs = 0;
    for job in objects.iter().filter(|m| m.kind() == "ScaledJob") {
        scaled_jobs += 1;
        let env = job.object["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap();
        for (name, key) in [
            ("RAIBID_AGENT_REGISTRY_USERNAME", "registry-username"),
            ("RAIBID_AGENT_REGISTRY_PASSWORD", "registry-password"),
            ("RAIBID_AGENT_GIT_TOKEN", "git-token"),
        ] {
            let var = env.iter().find(|v| v["name"] == name).unwrap();
            let reference = &var["valueFrom"]["secretKeyRef"];
            assert_eq!(reference["name"], "raibid-agent-credentials", "{name}");
            assert_eq!(reference["key"], key, "{name}");
            assert_eq!(reference["optional"], true, "{name}");
        }
    }
    assert_eq!(scaled_jobs, 3);
    let map = objects
        .iter()
        .find(|m| m.kind() == "ConfigMap" && m.name() == "raibid-config")
        .unwrap();
    let text = map.object["data"]["config.yaml"].as_str().unwrap();
    let in_cluster =
        raibid_config::load_from_str(text, std::path::Path::new("config.yaml"), &[]).unwrap();
    assert!(in_cluster.agent.registry.insecure);
    assert!(in_cluster.gitea.url.starts_with("http://"));

    // Validation catches a pool that lost the login, a wrong key, and a TLS registry over HTTP.
    let file = "base/agents/scaledjob-amd64.yaml";
    for (file, from, to, target, expected) in [
        (
            file,
            "key: registry-password",
            "key: password",
            "base/agents",
            "RAIBID_AGENT_REGISTRY_PASSWORD must come from Secret raibid-agent-credentials key \
             registry-password",
        ),
        (
            file,
            "- name: RAIBID_AGENT_GIT_TOKEN",
            "- name: RAIBID_AGENT_NETWORK",
            "base/agents",
            "RAIBID_AGENT_GIT_TOKEN must come from",
        ),
        (
            "base/server/config.yaml",
            "insecure: true",
            "insecure: false",
            "base/server",
            "agent.registry.insecure is false",
        ),
    ] {
        let issues = issues_after_edit(file, from, to, target);
        assert!(
            issues.iter().any(|i| i.contains(expected)),
            "{expected}: {issues:?}"
        );
    }
}

/// The configuration the cluster's server and agents read, from the rendered ConfigMap.
fn in_cluster_config(objects: &[raibid_infra::Manifest]) -> Config {
    let map = objects
        .iter()
        .find(|m| m.kind() == "ConfigMap" && m.name() == "raibid-config")
        .unwrap();
    let text = map.object["data"]["config.yaml"].as_str().unwrap();
    raibid_config::load_from_str(text, std::path::Path::new("config.yaml"), &[]).unwrap()
}

/// buildah's store once defaulted to the data directory inside the container, not the
/// node-local cache the ScaledJobs mount: layers counted against ephemeral-storage and were
/// never reused.
#[test]
fn buildah_stores_its_layers_on_the_mounted_node_cache() {
    let tree = Tree::embedded();
    let objects = render(&tree, "dev", &Config::default()).unwrap();
    let in_cluster = in_cluster_config(&objects);
    assert_eq!(in_cluster.agent.buildah_root, "/var/lib/containers/storage");
    for job in objects.iter().filter(|m| m.kind() == "ScaledJob") {
        let spec = &job.object["spec"]["jobTargetRef"]["template"]["spec"];
        let mount = spec["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == "/var/lib/containers/storage")
            .unwrap_or_else(|| panic!("{}: no mount at buildah_root", job.name()));
        let volume = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        assert!(
            volume["hostPath"]["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/containers")),
            "{}: {volume}",
            job.name()
        );
    }

    // A configuration pointing buildah elsewhere is caught, for the overlays too.
    for target in ["overlays/dev", "overlays/prod"] {
        let issues = issues_after_edit(
            "base/server/config.yaml",
            "buildah_root: /var/lib/containers/storage",
            "buildah_root: /var/lib/raibid/buildah",
            target,
        );
        assert_eq!(
            issues
                .iter()
                .filter(|i| i.contains(
                    "no volume is mounted at agent.buildah_root \"/var/lib/raibid/buildah\""
                ))
                .count(),
            3,
            "{target}: {issues:?}"
        );
    }
}

/// Agent pods run as root; their steps run as `agent.step_user`. Validation catches a
/// configuration without one, and a pod that could not switch to it.
#[test]
fn agent_pods_run_their_steps_as_the_step_user() {
    let tree = Tree::embedded();
    let objects = render(&tree, "dev", &Config::default()).unwrap();
    let in_cluster = in_cluster_config(&objects);
    assert_eq!(in_cluster.agent.step_user, "10002:10002");

    for target in ["overlays/dev", "overlays/prod"] {
        let issues = issues_after_edit(
            "base/server/config.yaml",
            "  step_user: \"10002:10002\"\n",
            "",
            target,
        );
        assert_eq!(
            issues
                .iter()
                .filter(|i| i.contains("sets no agent.step_user"))
                .count(),
            3,
            "{target}: {issues:?}"
        );
    }
    // `auto` is host steps in a pod (bubblewrap cannot work there): the same rule.
    let issues = issues_after_edit(
        "base/server/config.yaml",
        "  executor: host\n  # The pod runs as root (buildah needs it); steps run as this unprivileged user, who owns the\n  # job's workspace but can write neither the node's shared mirror cache nor anything of root's.\n  step_user: \"10002:10002\"\n",
        "",
        "overlays/dev",
    );
    assert_eq!(
        issues
            .iter()
            .filter(|i| i.contains("sets no agent.step_user"))
            .count(),
        3,
        "{issues:?}"
    );
    let issue = one_issue_after_edit(
        "base/agents/scaledjob-arm64.yaml",
        "\"SETUID\", ",
        "",
        "overlays/dev",
    );
    assert!(
        issue.contains("lacks SETUID") && issue.contains("raibid-agent-arm64"),
        "{issue}"
    );
}

/// The server had a Role to read pods, Jobs and ScaledJobs and a mounted token, though it never
/// talks to the Kubernetes API: a stolen server pod could read the cluster for nothing. No raibid
/// pod gets a token, and nothing gets a Role.
#[test]
fn no_raibid_pod_can_talk_to_the_kubernetes_api() {
    let tree = Tree::embedded();
    let config = Config::default();
    for overlay in ["dev", "prod"] {
        let objects = render(&tree, overlay, &config).unwrap();
        for object in &objects {
            assert!(
                !matches!(
                    object.kind(),
                    "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding"
                ),
                "{overlay}: {}",
                object.object_ref()
            );
            if object.kind() == "ServiceAccount" {
                assert_eq!(
                    object.object["automountServiceAccountToken"],
                    false,
                    "{overlay}: {}",
                    object.object_ref()
                );
            }
            let pod_spec = match object.kind() {
                "Deployment" | "StatefulSet" => &object.object["spec"]["template"]["spec"],
                "ScaledJob" => &object.object["spec"]["jobTargetRef"]["template"]["spec"],
                _ => continue,
            };
            assert_eq!(
                pod_spec["automountServiceAccountToken"],
                false,
                "{overlay}: {}",
                object.object_ref()
            );
        }
    }
}
