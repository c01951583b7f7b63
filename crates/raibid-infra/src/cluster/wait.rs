//! Waiting for what was applied to become ready, with a progress line and a deadline.

use std::fmt;
use std::io::Write;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DynamicObject};
use serde::Serialize;

use super::{Cluster, error_chain};
use crate::InfraError;
use crate::kinds;

/// Something that is either ready or not yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Readiness {
    /// Every node reports `Ready`.
    Nodes,
    /// A Deployment or StatefulSet has finished rolling out, as `kubectl rollout status`
    /// judges it: all replicas updated and ready, none of the old ones left.
    Rollout {
        kind: String,
        namespace: String,
        name: String,
    },
    /// A custom resource reports the condition `Ready=True` (Flux objects).
    Condition {
        api_version: String,
        kind: String,
        namespace: String,
        name: String,
    },
    /// Its controller has processed the object (a `Ready` condition exists, whatever its
    /// value). For ScaledJobs: KEDA reports a pool's trigger as not ready until the pool's stream
    /// and consumer group exist, which the server creates with the pool's first job, so
    /// `Ready=True` cannot be demanded of a fresh install.
    Reconciled {
        api_version: String,
        kind: String,
        namespace: String,
        name: String,
    },
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Nodes => f.write_str("every node Ready"),
            Self::Rollout {
                kind,
                namespace,
                name,
            } => write!(
                f,
                "{kind} {namespace}/{name}: rolled out (all replicas updated and ready)"
            ),
            Self::Condition {
                kind,
                namespace,
                name,
                ..
            } => write!(
                f,
                "{kind} {namespace}/{name}: condition Ready=True for its current spec"
            ),
            Self::Reconciled {
                kind,
                namespace,
                name,
                ..
            } => write!(f, "{kind} {namespace}/{name}: processed by its controller"),
        }
    }
}

impl Readiness {
    /// What to do when this never becomes ready.
    fn hint(&self) -> String {
        match self {
            Self::Nodes => "check `journalctl -u k3s` on the node".into(),
            Self::Rollout {
                namespace, name, ..
            } => format!(
                "see `kubectl -n {namespace} describe pods` and `kubectl -n {namespace} logs` \
                 for {name}"
            ),
            Self::Condition {
                kind,
                namespace,
                name,
                ..
            }
            | Self::Reconciled {
                kind,
                namespace,
                name,
                ..
            } => format!(
                "see `kubectl -n {namespace} describe {} {name}`",
                kind.to_lowercase()
            ),
        }
    }

    async fn probe(&self, cluster: &Cluster) -> Result<Progress, kube::Error> {
        let client = cluster.client.clone();
        match self {
            Self::Nodes => {
                let nodes = Api::<Node>::all(client).list(&Default::default()).await?;
                let total = nodes.items.len();
                let ready = nodes.items.iter().filter(|n| node_ready(n)).count();
                Ok(Progress::from((
                    total > 0 && ready == total,
                    format!("{ready}/{total} nodes ready"),
                )))
            }
            Self::Rollout {
                kind,
                namespace,
                name,
            } if kind == "StatefulSet" => {
                match Api::<StatefulSet>::namespaced(client, namespace)
                    .get_opt(name)
                    .await?
                {
                    Some(set) => Ok(statefulset_progress(&set)),
                    None => Ok(Progress::Waiting("not created yet".into())),
                }
            }
            Self::Rollout {
                namespace, name, ..
            } => {
                match Api::<Deployment>::namespaced(client, namespace)
                    .get_opt(name)
                    .await?
                {
                    Some(deployment) => Ok(deployment_progress(&deployment)),
                    None => Ok(Progress::Waiting("not created yet".into())),
                }
            }
            Self::Condition {
                api_version,
                kind,
                namespace,
                name,
            }
            | Self::Reconciled {
                api_version,
                kind,
                namespace,
                name,
            } => {
                let Some(info) = kinds::lookup(api_version, kind) else {
                    return Ok(Progress::Waiting(format!("unknown kind {kind}")));
                };
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client, namespace, &info.api_resource());
                let Some(object) = api.get_opt(name).await? else {
                    return Ok(Progress::Waiting("not created yet".into()));
                };
                let conditions = &object.data["status"]["conditions"];
                match self {
                    Self::Reconciled { .. } => {
                        let (_, state) = ready_condition(conditions);
                        let reported = conditions
                            .as_array()
                            .is_some_and(|list| list.iter().any(|c| c["type"] == "Ready"));
                        Ok(Progress::from((reported, state)))
                    }
                    _ => Ok(Progress::from(current_ready_condition(&object))),
                }
            }
        }
    }
}

/// Where something being waited for stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Ready(String),
    Waiting(String),
    /// It will not get there by itself: stop waiting and say why.
    Failed(String),
}

impl Progress {
    fn state(&self) -> &str {
        match self {
            Self::Ready(s) | Self::Waiting(s) | Self::Failed(s) => s,
        }
    }
}

impl From<(bool, String)> for Progress {
    fn from((ready, state): (bool, String)) -> Self {
        if ready {
            Self::Ready(state)
        } else {
            Self::Waiting(state)
        }
    }
}

/// `kubectl rollout status` for a Deployment. Enough available replicas is not enough: during
/// a rollout the old ReplicaSet's pods are available too, so the new spec must have been seen,
/// every replica updated, no old one left, and the updated ones available.
pub fn deployment_progress(deployment: &Deployment) -> Progress {
    let status = deployment.status.clone().unwrap_or_default();
    if status.observed_generation < deployment.metadata.generation {
        return Progress::Waiting("the controller has not seen the new spec yet".into());
    }
    let deadline_exceeded = status.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if let Some(condition) = deadline_exceeded {
        return Progress::Failed(format!(
            "ProgressDeadlineExceeded: {}",
            condition.message.as_deref().unwrap_or("no progress")
        ));
    }
    let want = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let replicas = status.replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < want {
        Progress::Waiting(format!("{updated}/{want} replicas updated"))
    } else if replicas > updated {
        Progress::Waiting(format!(
            "{} old replica(s) pending termination",
            replicas - updated
        ))
    } else if available < updated {
        Progress::Waiting(format!("{available}/{updated} updated replicas available"))
    } else {
        Progress::Ready(format!(
            "{available}/{want} replicas available, all updated"
        ))
    }
}

/// `kubectl rollout status` for a StatefulSet: ready pods may still run the old revision, so
/// every replica must be updated and the current revision be the update revision.
pub fn statefulset_progress(set: &StatefulSet) -> Progress {
    let status = set.status.clone().unwrap_or_default();
    if status.observed_generation < set.metadata.generation {
        return Progress::Waiting("the controller has not seen the new spec yet".into());
    }
    let want = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    if ready < want {
        Progress::Waiting(format!("{ready}/{want} replicas ready"))
    } else if updated < want {
        Progress::Waiting(format!("{updated}/{want} replicas updated"))
    } else if status.current_revision != status.update_revision {
        Progress::Waiting(format!(
            "rolling update to revision {} in progress",
            status.update_revision.as_deref().unwrap_or("?")
        ))
    } else {
        Progress::Ready(format!("{ready}/{want} replicas ready, all updated"))
    }
}

/// `Ready=True` about the object's current generation: right after an upgrade is applied the
/// condition still reports the previous one (Flux records it in the condition's
/// `observedGeneration`).
pub fn current_ready_condition(object: &DynamicObject) -> (bool, String) {
    let conditions = &object.data["status"]["conditions"];
    let (ready, state) = ready_condition(conditions);
    let Some(generation) = object.metadata.generation else {
        return (ready, state);
    };
    let observed = conditions
        .as_array()
        .and_then(|list| list.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["observedGeneration"].as_i64());
    match observed {
        Some(observed) if observed == generation => (ready, state),
        Some(observed) => (
            false,
            format!("{state} (about generation {observed}, not yet {generation})"),
        ),
        None if ready => (false, format!("{state} (for no generation yet)")),
        None => (false, state),
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// `(Ready=True, "Ready=False: <message>")` from a `status.conditions` list.
pub fn ready_condition(conditions: &serde_json::Value) -> (bool, String) {
    let ready = conditions
        .as_array()
        .and_then(|list| list.iter().find(|c| c["type"] == "Ready"));
    match ready {
        None => (false, "no Ready condition yet".into()),
        Some(c) => {
            let status = c["status"].as_str().unwrap_or("Unknown");
            let message = c["message"].as_str().unwrap_or_default();
            (status == "True", format!("Ready={status}: {message}"))
        }
    }
}

/// Polls until ready or `timeout`, printing a line whenever the state changes.
pub async fn wait_ready(
    cluster: &Cluster,
    what: &Readiness,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<(), InfraError> {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        let progress = match what.probe(cluster).await {
            Ok(seen) => seen,
            Err(e) => Progress::Waiting(format!("cannot read it: {}", error_chain(&e))),
        };
        if progress.state() != last {
            let _ = writeln!(
                out,
                "    {what}: {} ({}s)",
                progress.state(),
                start.elapsed().as_secs()
            );
            last = progress.state().to_owned();
        }
        match progress {
            Progress::Ready(_) => return Ok(()),
            Progress::Failed(message) => {
                return Err(InfraError::RolloutFailed {
                    what: what.to_string(),
                    message,
                    hint: what.hint(),
                });
            }
            Progress::Waiting(_) => {}
        }
        if start.elapsed() >= timeout {
            return Err(InfraError::Timeout {
                what: what.to_string(),
                waited: timeout,
                last_state: last,
                hint: format!(
                    "{}; rerun with a longer --timeout if it is still starting",
                    what.hint()
                ),
            });
        }
        tokio::time::sleep(Duration::from_secs(2).min(timeout.saturating_sub(start.elapsed())))
            .await;
    }
}

/// Polls until every object in `objects` is gone (deleted and released by its finalizers' owners)
/// or `timeout`, printing each as it goes. `hint` says what to do when something stays.
pub async fn wait_gone(
    cluster: &Cluster,
    objects: &[crate::manifest::ObjectRef],
    timeout: Duration,
    hint: &str,
    out: &mut dyn Write,
) -> Result<(), InfraError> {
    let start = Instant::now();
    let mut left: Vec<&crate::manifest::ObjectRef> = objects.iter().collect();
    loop {
        let mut still = Vec::new();
        let mut last_state = String::new();
        for object in left {
            match super::get(cluster, object).await? {
                None => {
                    let _ = writeln!(out, "    gone: {object} ({}s)", start.elapsed().as_secs());
                }
                Some(found) => {
                    let finalizers = found.metadata.finalizers.unwrap_or_default();
                    last_state = if finalizers.is_empty() {
                        format!("{object} still exists")
                    } else {
                        format!(
                            "{object} still exists, held by the finalizer(s) {}",
                            finalizers.join(", ")
                        )
                    };
                    still.push(object);
                }
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(InfraError::NotGone {
                objects: still
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                waited: timeout,
                last_state,
                hint: hint.to_owned(),
            });
        }
        left = still;
        tokio::time::sleep(Duration::from_secs(2).min(timeout.saturating_sub(start.elapsed())))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_ready_conditions() {
        let conditions = json!([
            {"type": "Active", "status": "False"},
            {"type": "Ready", "status": "False", "message": "triggers not ready"}
        ]);
        assert_eq!(
            ready_condition(&conditions),
            (false, "Ready=False: triggers not ready".into())
        );
        assert!(ready_condition(&json!([{"type": "Ready", "status": "True"}])).0);
        assert_eq!(ready_condition(&json!(null)).1, "no Ready condition yet");
    }

    fn deployment(status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "raibid-server", "generation": 2},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "x"}},
                "template": {"metadata": {"labels": {"app": "x"}}}
            },
            "status": status
        }))
        .unwrap()
    }

    fn is_ready(progress: &Progress) -> bool {
        matches!(progress, Progress::Ready(_))
    }

    /// Mid-rollout the old pod is still available: replicas 2 (one old, one new), updated 1,
    /// available 1 satisfied the old check.
    #[test]
    fn a_deployment_is_rolled_out_once_no_old_replica_is_left() {
        let mid = deployment(json!({
            "observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1
        }));
        assert_eq!(
            deployment_progress(&mid),
            Progress::Waiting("1 old replica(s) pending termination".into())
        );
        let unseen = deployment(json!({
            "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1
        }));
        assert!(!is_ready(&deployment_progress(&unseen)));
        let unavailable = deployment(json!({
            "observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 0
        }));
        assert!(!is_ready(&deployment_progress(&unavailable)));
        let done = deployment(json!({
            "observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1
        }));
        assert!(is_ready(&deployment_progress(&done)));
    }

    #[test]
    fn a_deployment_past_its_progress_deadline_has_failed() {
        let stuck = deployment(json!({
            "observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1,
            "conditions": [{
                "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet \"raibid-server-7d9\" has timed out progressing."
            }]
        }));
        let Progress::Failed(message) = deployment_progress(&stuck) else {
            panic!("{:?}", deployment_progress(&stuck));
        };
        assert!(
            message.starts_with("ProgressDeadlineExceeded: ReplicaSet"),
            "{message}"
        );
    }

    fn statefulset(status: serde_json::Value) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "raibid-redis", "generation": 2},
            "spec": {
                "replicas": 1,
                "serviceName": "raibid-redis",
                "selector": {"matchLabels": {"app": "x"}},
                "template": {"metadata": {"labels": {"app": "x"}}}
            },
            "status": status
        }))
        .unwrap()
    }

    /// The old pod is ready until the controller replaces it: ready replicas alone said done.
    #[test]
    fn a_statefulset_is_rolled_out_at_its_update_revision() {
        let old_pod_ready = statefulset(json!({
            "observedGeneration": 2, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 0,
            "currentRevision": "raibid-redis-1", "updateRevision": "raibid-redis-2"
        }));
        assert!(!is_ready(&statefulset_progress(&old_pod_ready)));
        let revision_pending = statefulset(json!({
            "observedGeneration": 2, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1,
            "currentRevision": "raibid-redis-1", "updateRevision": "raibid-redis-2"
        }));
        assert!(!is_ready(&statefulset_progress(&revision_pending)));
        let unseen = statefulset(json!({
            "observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1,
            "currentRevision": "raibid-redis-1", "updateRevision": "raibid-redis-1"
        }));
        assert!(!is_ready(&statefulset_progress(&unseen)));
        let done = statefulset(json!({
            "observedGeneration": 2, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1,
            "currentRevision": "raibid-redis-2", "updateRevision": "raibid-redis-2"
        }));
        assert!(is_ready(&statefulset_progress(&done)));
    }

    /// A HelmRelease whose new version was just applied still says Ready=True about the old one.
    #[test]
    fn a_ready_condition_counts_only_for_the_current_generation() {
        let release = |observed: serde_json::Value| -> DynamicObject {
            serde_json::from_value(json!({
                "apiVersion": "helm.toolkit.fluxcd.io/v2",
                "kind": "HelmRelease",
                "metadata": {"name": "keda", "namespace": "flux-system", "generation": 3},
                "status": {"conditions": [{
                    "type": "Ready", "status": "True", "observedGeneration": observed,
                    "reason": "UpgradeSucceeded", "message": "Helm upgrade succeeded"
                }]}
            }))
            .unwrap()
        };
        let (ready, state) = current_ready_condition(&release(json!(2)));
        assert!(!ready, "{state}");
        assert!(
            state.ends_with("(about generation 2, not yet 3)"),
            "{state}"
        );
        assert!(!current_ready_condition(&release(json!(null))).0);
        assert!(current_ready_condition(&release(json!(3))).0);
    }
}
