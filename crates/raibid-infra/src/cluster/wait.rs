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
    /// A Deployment or StatefulSet has all replicas updated and ready.
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
            } => write!(f, "{kind} {namespace}/{name}: all replicas ready"),
            Self::Condition {
                kind,
                namespace,
                name,
                ..
            } => write!(f, "{kind} {namespace}/{name}: condition Ready=True"),
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

    /// `Ok((ready, what we saw))`.
    async fn probe(&self, cluster: &Cluster) -> Result<(bool, String), kube::Error> {
        let client = cluster.client.clone();
        match self {
            Self::Nodes => {
                let nodes = Api::<Node>::all(client).list(&Default::default()).await?;
                let total = nodes.items.len();
                let ready = nodes.items.iter().filter(|n| node_ready(n)).count();
                Ok((
                    total > 0 && ready == total,
                    format!("{ready}/{total} nodes ready"),
                ))
            }
            Self::Rollout {
                kind,
                namespace,
                name,
            } if kind == "StatefulSet" => {
                let Some(set) = Api::<StatefulSet>::namespaced(client, namespace)
                    .get_opt(name)
                    .await?
                else {
                    return Ok((false, "not created yet".into()));
                };
                let want = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let status = set.status.unwrap_or_default();
                let ready = status.ready_replicas.unwrap_or(0);
                let current = status.observed_generation >= set.metadata.generation;
                Ok((
                    current && ready >= want,
                    format!("{ready}/{want} replicas ready"),
                ))
            }
            Self::Rollout {
                namespace, name, ..
            } => {
                let Some(deployment) = Api::<Deployment>::namespaced(client, namespace)
                    .get_opt(name)
                    .await?
                else {
                    return Ok((false, "not created yet".into()));
                };
                let want = deployment
                    .spec
                    .as_ref()
                    .and_then(|s| s.replicas)
                    .unwrap_or(1);
                let status = deployment.status.unwrap_or_default();
                let available = status.available_replicas.unwrap_or(0);
                let updated = status.updated_replicas.unwrap_or(0);
                let current = status.observed_generation >= deployment.metadata.generation;
                Ok((
                    current && available >= want && updated >= want,
                    format!("{available}/{want} replicas available, {updated} updated"),
                ))
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
                    return Ok((false, format!("unknown kind {kind}")));
                };
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client, namespace, &info.api_resource());
                let Some(object) = api.get_opt(name).await? else {
                    return Ok((false, "not created yet".into()));
                };
                let conditions = &object.data["status"]["conditions"];
                let (ready, state) = ready_condition(conditions);
                let reported = conditions
                    .as_array()
                    .is_some_and(|list| list.iter().any(|c| c["type"] == "Ready"));
                match self {
                    Self::Reconciled { .. } => Ok((reported, state)),
                    _ => Ok((ready, state)),
                }
            }
        }
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
        let (ready, state) = match what.probe(cluster).await {
            Ok(seen) => seen,
            Err(e) => (false, format!("cannot read it: {}", error_chain(&e))),
        };
        if state != last {
            let _ = writeln!(out, "    {what}: {state} ({}s)", start.elapsed().as_secs());
            last = state;
        }
        if ready {
            return Ok(());
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
}
