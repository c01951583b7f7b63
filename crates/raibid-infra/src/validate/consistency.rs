//! Agreement between the manifests and the programs they run.
//!
//! The server pushes jobs onto `<stream_name>:<pool>`, the agents read them as `consumer_group`,
//! and KEDA scales on the lag of that same stream and group. If a manifest and the configuration
//! disagree, jobs wait forever and nothing fails loudly, so this check ties them together: the
//! pool comes from the agent's own `--pool` argument, the names from the configuration.

use std::path::Path;

use raibid_config::Config;
use raibid_model::PoolName;
use serde_json::Value;

use super::Issue;
use crate::kinds;
use crate::manifest::Manifest;
use crate::path::FieldPath;
use crate::secrets;

/// Name of the ConfigMap that holds the in-cluster `config.yaml`.
pub const CONFIG_MAP: &str = "raibid-config";

/// The pool each ScaledJob serves, read from its agent's `--pool` argument.
pub fn pools(objects: &[Manifest]) -> Vec<(PoolName, &Manifest)> {
    objects
        .iter()
        .filter(|m| m.kind() == "ScaledJob")
        .filter_map(|m| Some((pool_argument(m)?.parse().ok()?, m)))
        .collect()
}

fn agent_command(manifest: &Manifest) -> Vec<&str> {
    let container = &manifest.object["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0];
    ["command", "args"]
        .iter()
        .filter_map(|k| container[*k].as_array())
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn pool_argument(manifest: &Manifest) -> Option<&str> {
    let command = agent_command(manifest);
    let at = command.iter().position(|a| *a == "--pool")?;
    command.get(at + 1).copied()
}

pub fn check(objects: &[Manifest], config: &Config) -> Vec<Issue> {
    let mut issues = Vec::new();
    let scaled_jobs: Vec<&Manifest> = objects.iter().filter(|m| m.kind() == "ScaledJob").collect();
    for manifest in &scaled_jobs {
        scaled_job(manifest, config, &mut issues);
    }
    let served: Vec<PoolName> = pools(objects).into_iter().map(|(p, _)| p).collect();
    let mut in_cluster = None;
    for manifest in objects {
        if manifest.kind() == "ConfigMap" && manifest.name() == CONFIG_MAP {
            in_cluster = config_map(
                manifest,
                config,
                (!scaled_jobs.is_empty()).then_some(&served),
                &mut issues,
            );
        }
        environment(manifest, &mut issues);
        secret_references(manifest, &mut issues);
    }
    if let Some(in_cluster) = &in_cluster {
        for manifest in &scaled_jobs {
            agent_mounts(manifest, in_cluster, &mut issues);
            agent_step_user(manifest, in_cluster, &mut issues);
        }
    }
    issues
}

fn scaled_job(manifest: &Manifest, config: &Config, issues: &mut Vec<Issue>) {
    let command_path =
        FieldPath::from_pointer("/spec/jobTargetRef/template/spec/containers/0/command");
    let command = agent_command(manifest);
    let runs_agent = match command.first() {
        Some(&"raibid-agent") => true,
        Some(&"raibid") => command.get(1) == Some(&"agent"),
        _ => false,
    };
    if !(runs_agent && command.contains(&"--once")) {
        issues.push(Issue::new(
            manifest,
            command_path.clone(),
            "the agent must run as `raibid-agent --once --pool <pool>` (or `raibid agent \
             --once --pool <pool>`): one job per pod",
        ));
    }
    let Some(raw_pool) = pool_argument(manifest) else {
        issues.push(Issue::new(
            manifest,
            command_path,
            "no `--pool <pool>` argument",
        ));
        return;
    };
    let pool = match PoolName::new(raw_pool) {
        Ok(pool) => pool,
        Err(e) => {
            issues.push(Issue::new(manifest, command_path, e.to_string()));
            return;
        }
    };
    let pool_label = FieldPath::root()
        .key("metadata")
        .key("labels")
        .key("raibid.dev/pool");
    if manifest
        .label("raibid.dev/pool")
        .is_some_and(|l| l != pool.as_str())
    {
        issues.push(Issue::new(
            manifest,
            pool_label,
            format!("must equal the agent's pool {pool}"),
        ));
    }
    agent_credentials(manifest, issues);
    let spec = &manifest.object["spec"];
    let expect_number = |issues: &mut Vec<Issue>, field: &str, want: u64, key: &str| {
        if spec[field].as_u64() != Some(want) {
            issues.push(Issue::new(
                manifest,
                FieldPath::root().key("spec").key(field),
                format!(
                    "is {}, but {key} in the configuration is {want}",
                    spec[field]
                ),
            ));
        }
    };
    expect_number(
        issues,
        "pollingInterval",
        config.keda.polling_interval,
        "keda.polling_interval",
    );
    expect_number(
        issues,
        "maxReplicaCount",
        u64::from(config.keda.max_replicas),
        "keda.max_replicas",
    );
    let stream = config.stream_for(&pool);
    let triggers = spec["triggers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, trigger) in triggers.iter().enumerate() {
        let metadata = FieldPath::root()
            .key("spec")
            .key("triggers")
            .index(i)
            .key("metadata");
        let pairs = [
            (
                "stream",
                stream.as_str(),
                "redis.stream_name and the agent's pool give",
            ),
            (
                "consumerGroup",
                config.redis.consumer_group.as_str(),
                "redis.consumer_group is",
            ),
        ];
        for (field, want, source) in pairs {
            let actual = &trigger["metadata"][field];
            if actual != want {
                issues.push(Issue::new(
                    manifest,
                    metadata.clone().key(field),
                    format!(
                        "is {actual}, but {source} {want:?}: KEDA would watch a queue nobody uses"
                    ),
                ));
            }
        }
    }
}

/// The directories the in-cluster configuration gives the agent for its caches must be volumes
/// in every agent pod: anywhere else they are the container's writable layer, which counts
/// against the pod's ephemeral-storage limit and is gone with the pod, so nothing is cached.
fn agent_mounts(manifest: &Manifest, in_cluster: &Config, issues: &mut Vec<Issue>) {
    let container = FieldPath::from_pointer("/spec/jobTargetRef/template/spec/containers/0");
    let mounts: Vec<&str> = manifest
        .object
        .pointer("/spec/jobTargetRef/template/spec/containers/0/volumeMounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m["mountPath"].as_str())
        .map(|p| p.trim_end_matches('/'))
        .collect();
    let agent = &in_cluster.agent;
    for (key, dir) in [
        ("agent.buildah_root", &agent.buildah_root),
        ("agent.cache_dir", &agent.cache_dir),
    ] {
        let dir = dir.trim_end_matches('/');
        if dir.is_empty() || !mounts.contains(&dir) {
            issues.push(Issue::new(
                manifest,
                container.clone().key("volumeMounts"),
                format!(
                    "no volume is mounted at {key} {dir:?} of config.yaml: the agent's cache \
                     would be the container's writable layer (counted against \
                     ephemeral-storage, lost with the pod)"
                ),
            ));
        }
    }
}

/// An agent pod runs as root (buildah needs it). Its host-executor steps must not: as root a
/// step writes the node's shared mirror volume and reads what the agent starts later. So the
/// in-cluster configuration must name a step user, and the container must keep the two
/// capabilities that switching to it takes.
fn agent_step_user(manifest: &Manifest, in_cluster: &Config, issues: &mut Vec<Issue>) {
    let pod = FieldPath::from_pointer("/spec/jobTargetRef/template/spec");
    let spec = &manifest.object["spec"]["jobTargetRef"]["template"]["spec"];
    let container = &spec["containers"][0];
    let run_as = container["securityContext"]["runAsUser"]
        .as_i64()
        .or_else(|| spec["securityContext"]["runAsUser"].as_i64());
    // `auto` falls back to host steps in a pod, where bubblewrap cannot work.
    let host_steps = matches!(
        in_cluster.agent.executor,
        raibid_config::ExecutorKind::Host | raibid_config::ExecutorKind::Auto
    );
    if run_as != Some(0) || !host_steps {
        return;
    }
    let security = pod.key("containers").index(0).key("securityContext");
    let step_user = in_cluster.agent.step_user.trim();
    if step_user.is_empty() {
        issues.push(Issue::new(
            manifest,
            security.key("runAsUser"),
            "the agent runs as root with host-executor steps, and config.yaml sets no \
             agent.step_user: every step would run as root in the pod (write the node's \
             shared mirror cache, read the agent's children)",
        ));
        return;
    }
    let capabilities = &container["securityContext"]["capabilities"];
    let dropped_all = capabilities["drop"]
        .as_array()
        .is_some_and(|d| d.iter().any(|c| c == "ALL"));
    let added: Vec<&str> = capabilities["add"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for needed in ["SETUID", "SETGID"] {
        if dropped_all && !added.contains(&needed) {
            issues.push(Issue::new(
                manifest,
                security.clone().key("capabilities").key("add"),
                format!(
                    "lacks {needed}: the agent could not start steps as agent.step_user \
                     {step_user:?}, and every job would fail"
                ),
            ));
        }
    }
}

/// The agent container must take its registry login and git token from the Secret setup writes:
/// without them a pod cannot push to the in-cluster registry or clone a private repository.
fn agent_credentials(manifest: &Manifest, issues: &mut Vec<Issue>) {
    let container = FieldPath::from_pointer("/spec/jobTargetRef/template/spec/containers/0");
    let env = manifest
        .object
        .pointer("/spec/jobTargetRef/template/spec/containers/0/env")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (name, key) in secrets::AGENT_CREDENTIAL_ENV {
        let found = env.iter().position(|v| v["name"] == name);
        let reference = found.map(|i| &env[i]["valueFrom"]["secretKeyRef"]);
        let right = reference
            .is_some_and(|r| r["name"] == secrets::AGENT_CREDENTIALS.name && r["key"] == key);
        if !right {
            let path = match found {
                Some(i) => container.clone().key("env").index(i),
                None => container.clone().key("env"),
            };
            issues.push(Issue::new(
                manifest,
                path,
                format!(
                    "{name} must come from Secret {} key {key} (which `raibid setup agents` \
                     writes), optional: true; without it the agent cannot log in to push images \
                     or clone",
                    secrets::AGENT_CREDENTIALS.name
                ),
            ));
        }
    }
}

fn config_map(
    manifest: &Manifest,
    config: &Config,
    served_pools: Option<&Vec<PoolName>>,
    issues: &mut Vec<Issue>,
) -> Option<Config> {
    let path = FieldPath::root().key("data").key("config.yaml");
    let Some(text) = manifest.object["data"]["config.yaml"].as_str() else {
        issues.push(Issue::new(
            manifest,
            path,
            "missing: the server and agents read it",
        ));
        return None;
    };
    let in_cluster = match raibid_config::load_from_str(text, Path::new(&manifest.source), &[]) {
        Ok(c) => c,
        Err(e) => {
            issues.push(Issue::new(
                manifest,
                path,
                format!("not a valid raibid configuration: {e}"),
            ));
            return None;
        }
    };
    let pairs = [
        (
            "redis.stream_name",
            &in_cluster.redis.stream_name,
            &config.redis.stream_name,
        ),
        (
            "redis.consumer_group",
            &in_cluster.redis.consumer_group,
            &config.redis.consumer_group,
        ),
    ];
    for (key, actual, want) in pairs {
        if actual != want {
            issues.push(Issue::new(
                manifest,
                path.clone(),
                format!("{key} is {actual:?} but the configuration says {want:?}"),
            ));
        }
    }
    // Gitea's in-cluster Service speaks plain HTTP; a registry taken from such a gitea.url must
    // be marked insecure or every push fails on TLS.
    if in_cluster.agent.registry.host.is_empty()
        && in_cluster.gitea.url.starts_with("http://")
        && !in_cluster.agent.registry.insecure
    {
        issues.push(Issue::new(
            manifest,
            path.clone(),
            format!(
                "agent.registry.insecure is false, but the registry is the host of gitea.url {:?} \
                 (plain HTTP): image pushes would fail",
                in_cluster.gitea.url
            ),
        ));
    }
    if let Some(served) = served_pools {
        let wanted: Vec<&PoolName> = std::iter::once(&in_cluster.server.default_pool)
            .chain(in_cluster.server.pool_rules.iter().map(|r| &r.pool))
            .chain(&in_cluster.server.pools)
            .collect();
        for pool in &wanted {
            if !served.contains(pool) {
                issues.push(Issue::new(
                    manifest,
                    path.clone(),
                    format!(
                        "jobs for pool {pool} would wait forever: no ScaledJob runs `--pool {pool}`"
                    ),
                ));
            }
        }
        for pool in served {
            if !wanted.contains(&pool) {
                issues.push(Issue::new(
                    manifest,
                    path.clone(),
                    format!(
                        "a ScaledJob serves pool {pool}, which server.pools does not list: its \
                         stream would not exist before its first job, and KEDA's trigger fails \
                         on a missing stream"
                    ),
                ));
            }
        }
    }
    Some(in_cluster)
}

/// `RAIBID_<SECTION>_*` variables must name configuration fields: the configuration loader
/// refuses unknown ones at start-up (a typo), which in a pod means a crash loop. Other
/// `RAIBID_*` variables are not configuration and pass.
fn environment(manifest: &Manifest, issues: &mut Vec<Issue>) {
    for_each_container(manifest, |container, path| {
        let env = container["env"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, var) in env.iter().enumerate() {
            let Some(name) = var["name"].as_str().filter(|n| n.starts_with("RAIBID_")) else {
                continue;
            };
            // A value from a Secret or field is not known here: stand-ins that pass the rules
            // on values, one of which must (a long text, as redis.secrets_key needs 32
            // characters; empty, which a list such as agent.pull_logins reads as none).
            let load = |value: &str| {
                let vars = [(name.to_owned(), value.to_owned())];
                raibid_config::load_from_str("", Path::new("(environment)"), &vars)
            };
            let loaded = match var["value"].as_str() {
                Some(value) => load(value),
                None => load("a-value-from-a-reference-unknown-here")
                    .or_else(|e| load("").map_err(|_| e)),
            };
            if let Err(e) = loaded {
                issues.push(Issue::new(
                    manifest,
                    path.clone().key("env").index(i),
                    e.to_string(),
                ));
            }
        }
    });
}

fn secret_references(manifest: &Manifest, issues: &mut Vec<Issue>) {
    let mut check = |name: &Value, key: &Value, path: FieldPath| {
        let (Some(name), Some(key)) = (name.as_str(), key.as_str()) else {
            return;
        };
        if !secrets::provides(name, key) {
            issues.push(Issue::new(
                manifest,
                path,
                format!(
                    "Secret {name} key {key} is not one `raibid setup` creates ({})",
                    secrets::catalog_summary()
                ),
            ));
        }
    };
    for_each_container(manifest, |container, path| {
        let env = container["env"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, var) in env.iter().enumerate() {
            let reference = &var["valueFrom"]["secretKeyRef"];
            check(
                &reference["name"],
                &reference["key"],
                path.clone()
                    .key("env")
                    .index(i)
                    .key("valueFrom")
                    .key("secretKeyRef"),
            );
        }
    });
    if manifest.kind() == "TriggerAuthentication" {
        let refs = manifest.object["spec"]["secretTargetRef"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (i, reference) in refs.iter().enumerate() {
            let path = FieldPath::root()
                .key("spec")
                .key("secretTargetRef")
                .index(i);
            check(&reference["name"], &reference["key"], path);
        }
    }
}

fn for_each_container(manifest: &Manifest, mut f: impl FnMut(&Value, FieldPath)) {
    let Some(pointer) =
        kinds::lookup(manifest.api_version(), manifest.kind()).and_then(|k| k.pod_spec)
    else {
        return;
    };
    let Some(spec) = manifest.object.pointer(pointer) else {
        return;
    };
    for list in ["initContainers", "containers"] {
        for (i, container) in spec[list].as_array().into_iter().flatten().enumerate() {
            f(
                container,
                FieldPath::from_pointer(pointer).key(list).index(i),
            );
        }
    }
}
