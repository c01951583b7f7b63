//! Applies the raibid configuration to rendered manifests, so that what `raibid setup` deploys
//! uses the same names as the server and agents: stream and group names, KEDA's polling
//! interval and replica limit, the namespace, chart versions, and Flux's repository and paths.
//!
//! The manifests in `infra/` are written for `Config::default()`; a test checks that applying
//! the default configuration changes nothing, so the YAML in git cannot drift from the code.

use raibid_config::Config;
use serde_json::Value;

use crate::InfraError;
use crate::manifest::Manifest;
use crate::validate::{CONFIG_MAP, pools};

/// The namespace the manifests in `infra/` are written for.
pub const DEFAULT_NAMESPACE: &str = "raibid-ci";

/// The Flux Kustomizations that sync one component directory of the overlay `flux.path`.
const FLUX_COMPONENTS: [(&str, &str); 3] = [
    ("raibid-redis", "redis"),
    ("raibid-server", "server"),
    ("raibid-agents", "agents"),
];

pub fn apply_config(objects: &mut [Manifest], config: &Config) -> Result<(), InfraError> {
    let pools: Vec<_> = pools(objects)
        .into_iter()
        .map(|(pool, m)| (pool, m.object_ref()))
        .collect();
    for object in objects.iter_mut() {
        let name = object.name().to_owned();
        match object.kind() {
            "ScaledJob" => {
                let Some((pool, _)) = pools.iter().find(|(_, r)| *r == object.object_ref()) else {
                    return Err(InfraError::Configure(format!(
                        "{}: {} has no `--pool <pool>` in its agent command",
                        object.source,
                        object.object_ref()
                    )));
                };
                scaled_job(&mut object.object, &config.stream_for(pool), config);
            }
            "ConfigMap" if name == CONFIG_MAP => config_file(object, config)?,
            "HelmRelease" if name == "keda" => {
                set(
                    &mut object.object,
                    "/spec/chart/spec/version",
                    &config.keda.version,
                );
            }
            "HelmRelease" if name == "gitea" => {
                set(
                    &mut object.object,
                    "/spec/chart/spec/version",
                    &config.gitea.chart_version,
                );
            }
            "GitRepository" => {
                set(&mut object.object, "/spec/url", &config.flux.git_repo);
                set(&mut object.object, "/spec/ref/branch", &config.flux.branch);
            }
            "Kustomization" => {
                if let Some((_, dir)) = FLUX_COMPONENTS.iter().find(|(n, _)| *n == name) {
                    let path = format!("./{}/{dir}", config.flux.path.trim_matches('/'));
                    set(&mut object.object, "/spec/path", &path);
                }
            }
            "Application" => {
                set(
                    &mut object.object,
                    "/spec/source/repoURL",
                    &config.flux.git_repo,
                );
                set(
                    &mut object.object,
                    "/spec/source/targetRevision",
                    &config.flux.branch,
                );
            }
            _ => {}
        }
    }
    // Last, so that values taken from the configuration (whose defaults name `raibid-ci`, like
    // gitea.url) move along with everything else.
    let namespace = &config.cluster.namespace;
    if namespace != DEFAULT_NAMESPACE {
        if !is_dns_label(namespace) {
            return Err(InfraError::Configure(format!(
                "cluster.namespace {namespace:?} is not a valid namespace (1-63 lowercase \
                 letters, digits and '-', starting and ending with a letter or digit)"
            )));
        }
        for object in objects.iter_mut() {
            rename_namespace(&mut object.object, namespace);
        }
    }
    Ok(())
}

fn is_dns_label(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| alnum(c) || c == '-')
        && name.starts_with(alnum)
        && name.ends_with(alnum)
}

fn set(object: &mut Value, pointer: &str, value: &str) {
    if let Some(slot) = object.pointer_mut(pointer) {
        *slot = Value::String(value.to_owned());
    }
}

fn scaled_job(object: &mut Value, stream: &str, config: &Config) {
    let spec = &mut object["spec"];
    spec["pollingInterval"] = config.keda.polling_interval.into();
    spec["maxReplicaCount"] = config.keda.max_replicas.into();
    if let Some(triggers) = spec["triggers"].as_array_mut() {
        for trigger in triggers.iter_mut().filter(|t| t["type"] == "redis-streams") {
            trigger["metadata"]["stream"] = stream.into();
            trigger["metadata"]["consumerGroup"] = config.redis.consumer_group.as_str().into();
        }
    }
}

/// Rewrites the fields of the in-cluster `config.yaml` that must agree with the manifests.
/// The text is only re-serialized (losing its comments) when a value actually changes.
fn config_file(object: &mut Manifest, config: &Config) -> Result<(), InfraError> {
    let Some(text) = object.object["data"]["config.yaml"].as_str() else {
        return Ok(());
    };
    let mut file: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
        InfraError::Configure(format!("{}: config.yaml is not YAML: {e}", object.source))
    })?;
    let wanted: [(&str, &str, serde_yaml::Value); 5] = [
        (
            "redis",
            "stream_name",
            config.redis.stream_name.clone().into(),
        ),
        (
            "redis",
            "consumer_group",
            config.redis.consumer_group.clone().into(),
        ),
        ("gitea", "url", config.gitea.url.clone().into()),
        (
            "keda",
            "polling_interval",
            config.keda.polling_interval.into(),
        ),
        ("keda", "max_replicas", config.keda.max_replicas.into()),
    ];
    let mut changed = false;
    for (section, key, value) in wanted {
        let section = &mut file[section];
        if section.is_null() {
            *section = serde_yaml::Value::Mapping(Default::default());
        }
        if section[key] != value {
            section[key] = value;
            changed = true;
        }
    }
    if changed {
        let rewritten = serde_yaml::to_string(&file).expect("YAML values serialize");
        object.object["data"]["config.yaml"] = Value::String(rewritten);
    }
    Ok(())
}

/// Moves objects written for `raibid-ci` into `namespace`: namespaces of objects and references,
/// the Namespace itself, and in-cluster DNS names (`*.raibid-ci.svc`) anywhere in the text.
fn rename_namespace(value: &mut Value, namespace: &str) {
    if value["kind"] == "Namespace" && value["metadata"]["name"] == DEFAULT_NAMESPACE {
        value["metadata"]["name"] = namespace.into();
    }
    rename_in(value, namespace);
}

fn rename_in(value: &mut Value, namespace: &str) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                let names_namespace = key == "namespace" || key == "targetNamespace";
                if names_namespace && *child == DEFAULT_NAMESPACE {
                    *child = namespace.into();
                } else {
                    rename_in(child, namespace);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rename_in(v, namespace)),
        Value::String(text) => {
            let old = format!(".{DEFAULT_NAMESPACE}.svc");
            if text.contains(&old) {
                *text = text.replace(&old, &format!(".{namespace}.svc"));
            }
        }
        _ => {}
    }
}
