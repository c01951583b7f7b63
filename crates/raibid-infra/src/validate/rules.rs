//! House rules that no schema expresses: recommended labels on everything, requests and limits
//! on every container, probes on long-running ones, no privileged containers, and the scaling
//! settings the agents rely on (see crates/raibid-model/src/scaling.rs).

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
    if container["securityContext"]["privileged"] == true {
        issues.push(Issue::new(
            manifest,
            path.clone().key("securityContext").key("privileged"),
            "privileged containers are not allowed (agents build images with buildah's chroot \
             isolation instead; see docs/kubernetes.md)",
        ));
    }
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
