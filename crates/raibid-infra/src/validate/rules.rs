//! House rules that no schema expresses: recommended labels on everything, requests and limits
//! on every container, probes on long-running ones, no privileged containers, Redis's
//! `maxmemory` well inside its container's memory limit, and the scaling settings the agents
//! rely on (see crates/raibid-model/src/scaling.rs).

use serde_json::Value;

use super::Issue;
use crate::kinds;
use crate::manifest::Manifest;
use crate::path::FieldPath;

/// Labels every object carries; `part-of` and `managed-by` have fixed values.
pub const REQUIRED_LABELS: [(&str, Option<&str>); 4] = [
    ("app.kubernetes.io/name", None),
    ("app.kubernetes.io/component", None),
    ("app.kubernetes.io/part-of", Some("raibid-ci")),
    ("app.kubernetes.io/managed-by", Some("raibid")),
];

pub fn check(objects: &[Manifest]) -> Vec<Issue> {
    let mut issues = Vec::new();
    for manifest in objects {
        labels(manifest, &mut issues);
        if let Some(info) = kinds::lookup(manifest.api_version(), manifest.kind())
            && let Some(pointer) = info.pod_spec
        {
            pod_spec(manifest, pointer, info.long_running, &mut issues);
        }
        if manifest.kind() == "ScaledJob" {
            scaled_job(manifest, &mut issues);
        }
    }
    issues
}

fn labels(manifest: &Manifest, issues: &mut Vec<Issue>) {
    let labels = FieldPath::root().key("metadata").key("labels");
    if manifest.name().is_empty() {
        issues.push(Issue::new(
            manifest,
            FieldPath::root().key("metadata").key("name"),
            "every object needs a name",
        ));
    }
    for (key, expected) in REQUIRED_LABELS {
        let path = labels.clone().key(key);
        match (manifest.label(key), expected) {
            (None, _) => issues.push(Issue::new(manifest, path, "missing label")),
            (Some(actual), Some(expected)) if actual != expected => issues.push(Issue::new(
                manifest,
                path,
                format!("is {actual:?}, must be {expected:?}"),
            )),
            _ => {}
        }
    }
}

fn pointer_path(pointer: &str) -> FieldPath {
    FieldPath::from_pointer(pointer)
}

fn pod_spec(manifest: &Manifest, pointer: &str, long_running: bool, issues: &mut Vec<Issue>) {
    let Some(spec) = manifest.object.pointer(pointer) else {
        issues.push(Issue::new(
            manifest,
            pointer_path(pointer),
            "missing pod spec",
        ));
        return;
    };
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec[list].as_array() else {
            continue;
        };
        for (i, container) in containers.iter().enumerate() {
            let path = pointer_path(pointer).key(list).index(i);
            container_rules(
                manifest,
                container,
                &path,
                long_running && list == "containers",
                issues,
            );
        }
    }
}

fn container_rules(
    manifest: &Manifest,
    container: &Value,
    path: &FieldPath,
    long_running: bool,
    issues: &mut Vec<Issue>,
) {
    for section in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            if container["resources"][section][resource].is_null() {
                issues.push(Issue::new(
                    manifest,
                    path.clone().key("resources").key(section).key(resource),
                    format!(
                        "every container needs a {resource} {}",
                        &section[..section.len() - 1]
                    ),
                ));
            }
        }
    }
    if long_running {
        for probe in ["livenessProbe", "readinessProbe"] {
            if container[probe].is_null() {
                issues.push(Issue::new(
                    manifest,
                    path.clone().key(probe),
                    "long-running containers need liveness and readiness probes",
                ));
            }
        }
    }
    redis_maxmemory(manifest, container, path, issues);
    if container["securityContext"]["privileged"] == true {
        issues.push(Issue::new(
            manifest,
            path.clone().key("securityContext").key("privileged"),
            "privileged containers are not allowed (agents build images with buildah's chroot \
             isolation instead; see docs/kubernetes.md)",
        ));
    }
}

/// Redis's `maxmemory` at most this share (percent) of the container's memory limit: the
/// rest is for the AOF rewrite's fork, client buffers and fragmentation. With more, the kernel
/// kills Redis before Redis refuses writes; and an overlay that raises the limit but not
/// `maxmemory` wastes what it gives.
const MAXMEMORY_SHARE: u64 = 80;

fn redis_maxmemory(
    manifest: &Manifest,
    container: &Value,
    path: &FieldPath,
    issues: &mut Vec<Issue>,
) {
    let Some(args) = container["args"].as_array() else {
        return;
    };
    let Some(i) = args.iter().position(|a| a == "--maxmemory") else {
        return;
    };
    let arg_path = path.clone().key("args").index(i + 1);
    let Some(maxmemory) = args
        .get(i + 1)
        .and_then(Value::as_str)
        .and_then(redis_bytes)
    else {
        issues.push(Issue::new(
            manifest,
            arg_path,
            "--maxmemory needs a size like 768mb",
        ));
        return;
    };
    let Some(limit) = container["resources"]["limits"]["memory"]
        .as_str()
        .and_then(quantity_bytes)
    else {
        return;
    };
    if maxmemory.saturating_mul(100) > limit.saturating_mul(MAXMEMORY_SHARE) {
        issues.push(Issue::new(
            manifest,
            arg_path,
            format!(
                "maxmemory ({maxmemory} bytes) must be at most {MAXMEMORY_SHARE}% of the \
                 container's memory limit ({limit} bytes), or the kernel kills Redis before \
                 it refuses writes"
            ),
        ));
    } else if maxmemory.saturating_mul(100) < limit.saturating_mul(MAXMEMORY_SHARE / 2) {
        issues.push(Issue::new(
            manifest,
            arg_path,
            format!(
                "maxmemory ({maxmemory} bytes) is less than half of what the container's \
                 memory limit ({limit} bytes) allows; raise it with the limit"
            ),
        ));
    }
}

/// A size as redis.conf reads it: `k` is 1000, `kb` 1024, and so on; no unit is bytes.
fn redis_bytes(text: &str) -> Option<u64> {
    let text = text.to_ascii_lowercase();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let factor: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(factor)
}

/// A Kubernetes memory quantity in bytes (`512Mi`, `1Gi`, `1G`, `1.5Gi`, `1000`).
fn quantity_bytes(text: &str) -> Option<u64> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let factor: f64 = match unit {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let value = number.parse::<f64>().ok()? * factor;
    (value.is_finite() && value >= 0.0).then_some(value as u64)
}

/// The settings `crates/raibid-model/src/scaling.rs` assumes for every pool.
fn scaled_job(manifest: &Manifest, issues: &mut Vec<Issue>) {
    let spec = &manifest.object["spec"];
    let root = FieldPath::root().key("spec");
    let expect =
        |issues: &mut Vec<Issue>, value: &Value, path: FieldPath, want: &str, why: &str| {
            if value != want {
                issues.push(Issue::new(
                    manifest,
                    path,
                    format!("is {value}, must be {want:?}: {why}"),
                ));
            }
        };
    expect(
        issues,
        &spec["scalingStrategy"]["strategy"],
        root.clone().key("scalingStrategy").key("strategy"),
        "accurate",
        "one agent per queued job, minus agents still starting",
    );
    expect(
        issues,
        &spec["rollout"]["strategy"],
        root.clone().key("rollout").key("strategy"),
        "gradual",
        "changing the ScaledJob must not kill running builds",
    );
    for field in [
        "pollingInterval",
        "maxReplicaCount",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        if spec[field].is_null() {
            issues.push(Issue::new(
                manifest,
                root.clone().key(field),
                "must be set explicitly",
            ));
        }
    }
    if spec["jobTargetRef"]["activeDeadlineSeconds"].is_null() {
        issues.push(Issue::new(
            manifest,
            root.clone()
                .key("jobTargetRef")
                .key("activeDeadlineSeconds"),
            "a hung build must not hold an agent forever",
        ));
    }
    let triggers = spec["triggers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, trigger) in triggers.iter().enumerate() {
        let path = root.clone().key("triggers").index(i);
        expect(
            issues,
            &trigger["type"],
            path.clone().key("type"),
            "redis-streams",
            "agents take jobs from Redis streams",
        );
        let metadata = path.clone().key("metadata");
        if !trigger["metadata"]["pendingEntriesCount"].is_null() {
            issues.push(Issue::new(
                manifest,
                metadata.clone().key("pendingEntriesCount"),
                "use lagCount: pending entries already have an agent and are 0 while jobs \
                 wait, so this cannot scale up from zero",
            ));
        }
        expect(
            issues,
            &trigger["metadata"]["lagCount"],
            metadata.key("lagCount"),
            "1",
            "one agent per job",
        );
        if trigger["authenticationRef"]["name"].is_null() {
            issues.push(Issue::new(
                manifest,
                path.key("authenticationRef"),
                "Redis requires a password: reference the TriggerAuthentication",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn redis(maxmemory: &str, limit: &str) -> Vec<String> {
        let manifest = Manifest::new(
            "redis/statefulset.yaml",
            json!({
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": {"name": "raibid-redis"},
                "spec": {"template": {"spec": {"containers": [{
                    "name": "redis",
                    "args": ["--appendonly", "yes", "--maxmemory", maxmemory],
                    "resources": {"limits": {"memory": limit}},
                }]}}},
            }),
        );
        let mut issues = Vec::new();
        let container = &manifest.object["spec"]["template"]["spec"]["containers"][0];
        let path = FieldPath::root().key("containers").index(0);
        redis_maxmemory(&manifest, container, &path, &mut issues);
        issues.iter().map(|i| i.to_string()).collect()
    }

    #[test]
    fn maxmemory_stays_well_inside_the_memory_limit() {
        assert!(redis("384mb", "512Mi").is_empty());
        assert!(redis("768mb", "1Gi").is_empty());
        let too_much = redis("1gb", "1Gi");
        assert!(too_much[0].contains("at most 80%"), "{too_much:?}");
        // An overlay that raised the limit and forgot maxmemory.
        let wasted = redis("384mb", "1Gi");
        assert!(wasted[0].contains("less than half"), "{wasted:?}");
        let bad = redis("lots", "1Gi");
        assert!(bad[0].contains("needs a size"), "{bad:?}");
    }

    #[test]
    fn sizes_parse_as_redis_and_kubernetes_read_them() {
        assert_eq!(redis_bytes("384mb"), Some(384 << 20));
        assert_eq!(redis_bytes("2G"), Some(2_000_000_000));
        assert_eq!(redis_bytes("1000"), Some(1000));
        assert_eq!(redis_bytes("12x"), None);
        assert_eq!(quantity_bytes("512Mi"), Some(512 << 20));
        assert_eq!(quantity_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(quantity_bytes("1G"), Some(1_000_000_000));
        assert_eq!(quantity_bytes("1Qi"), None);
    }
}
