//! KEDA's side of pausing a pool. The pause itself lives in Redis, where agents read it; but
//! KEDA scales on the stream's lag, which a paused pool keeps, so without this it would start
//! agent pods that find nothing to claim, wait out their idle timeout, exit, and be started
//! again, each holding its resource requests (a GPU pool's GPUs) the while. KEDA's own pause
//! annotation stops the ScaledJob's scale loop instead: no new Jobs, running ones go on.

use std::path::Path;
use std::time::Duration;

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};

use super::objects::api_error;
use super::{Cluster, connect_to, error_chain};
use crate::InfraError;
use crate::kinds;
use crate::manifest::ObjectRef;

/// KEDA's annotation (2.11+ for ScaledJobs) that stops a ScaledJob from creating Jobs.
pub const KEDA_PAUSED: &str = "autoscaling.keda.sh/paused";

/// The label raibid's ScaledJobs name their pool with (`infra/base/agents`).
pub const POOL_LABEL: &str = "raibid.dev/pool";

/// Its own field manager, not `raibid`'s server-side apply nor `kubectl-edit`: Flux and
/// `raibid setup agents` re-apply the ScaledJobs from Git, and take over or drop only fields
/// of the managers they own or override, so the pause outlives a reconciliation.
const FIELD_MANAGER: &str = "raibid-pool-pause";

/// Sets (`paused`) or clears KEDA's pause on every ScaledJob of `pool` in `namespace`; returns
/// their names, none when the pool has no ScaledJob or KEDA is not installed.
pub async fn pause_scaled_jobs(
    cluster: &Cluster,
    namespace: &str,
    pool: &str,
    paused: bool,
) -> Result<Vec<String>, InfraError> {
    let info = kinds::lookup("keda.sh/v1alpha1", "ScaledJob").expect("raibid's own kinds");
    let api: Api<DynamicObject> =
        Api::namespaced_with(cluster.client.clone(), namespace, &info.api_resource());
    let object = |name: &str| ObjectRef {
        api_version: "keda.sh/v1alpha1".into(),
        kind: "ScaledJob".into(),
        namespace: Some(namespace.into()),
        name: name.into(),
    };
    let found = match api
        .list(&ListParams::default().labels(&format!("{POOL_LABEL}={pool}")))
        .await
    {
        Ok(list) => list.items,
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(Vec::new()),
        Err(e) => return Err(api_error("list", &object("*"), e)),
    };
    let value = if paused {
        serde_json::Value::from("true")
    } else {
        serde_json::Value::Null
    };
    let patch = serde_json::json!({ "metadata": { "annotations": { KEDA_PAUSED: value } } });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let mut names = Vec::new();
    for scaled_job in found {
        let name = scaled_job.metadata.name.unwrap_or_default();
        api.patch(&name, &params, &Patch::Merge(&patch))
            .await
            .map_err(|e| api_error("patch", &object(&name), e))?;
        names.push(name);
    }
    Ok(names)
}

/// What became of a pool's ScaledJobs, in words for the person who paused or resumed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KedaPause {
    /// Done, or nothing to do: what was.
    Done(String),
    /// The cluster could not be reached or refused: why, and the command that does it by hand.
    Failed(String),
}

/// How long following a pause waits for the cluster's API server before leaving KEDA as it is.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(10);

/// [`pause_scaled_jobs`] on the cluster of `kubeconfig`, as `raibid pool pause|resume` and the
/// dashboard follow a pause with it. The pause itself is already in force: a failure here
/// leaves only KEDA starting agent pods that find nothing to take.
pub async fn pause_pool_scaled_jobs(
    kubeconfig: &Path,
    namespace: &str,
    pool: &str,
    paused: bool,
) -> KedaPause {
    let result = match connect_to(kubeconfig, CLUSTER_TIMEOUT).await {
        Ok(cluster) => pause_scaled_jobs(&cluster, namespace, pool, paused).await,
        Err(e) => Err(e),
    };
    let (verb, value) = if paused {
        ("paused", "=true")
    } else {
        ("resumed", "-")
    };
    match result {
        Ok(names) if names.is_empty() => KedaPause::Done(format!(
            "KEDA: no ScaledJob of pool {pool} in namespace {namespace}"
        )),
        Ok(names) => KedaPause::Done(format!(
            "KEDA: ScaledJob {} {verb}{}",
            names.join(", "),
            if paused {
                " (it starts no agent pods)"
            } else {
                ""
            }
        )),
        Err(e) => KedaPause::Failed(format!(
            "KEDA's ScaledJobs of pool {pool} were not {verb} ({}); by hand: kubectl -n \
             {namespace} annotate scaledjob -l {POOL_LABEL}={pool} {KEDA_PAUSED}{value}",
            error_chain(&e),
        )),
    }
}
