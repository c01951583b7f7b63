//! The cluster half of `raibid status`: nodes, pods per component, ScaledJobs and Flux sync
//! state. Serializable, so the CLI can print it next to the queue state or as JSON.

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DynamicObject, ListParams};
use raibid_config::Config;
use serde::Serialize;

use super::{Cluster, connect, error_chain, ready_condition};
use crate::components::Component;
use crate::kinds;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterStatus {
    pub reachable: bool,
    pub server: Option<String>,
    pub kubeconfig: String,
    /// Why the cluster could not be reached.
    pub error: Option<String>,
    pub nodes: Vec<NodeStatus>,
    pub components: Vec<ComponentPods>,
    pub scaled_jobs: Vec<ScaledJobStatus>,
    pub flux: Vec<FluxObject>,
    /// Parts that could not be read (KEDA or Flux not installed, missing rights).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub ready: bool,
    pub arch: String,
    pub kubelet_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentPods {
    pub component: Component,
    pub namespace: String,
    pub pods: Vec<PodStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodStatus {
    pub name: String,
    /// The node it was scheduled to; none while it waits for one.
    pub node: Option<String>,
    pub phase: String,
    pub ready: bool,
    pub restarts: i32,
}

impl PodStatus {
    /// Ran to success: an agent pod that finished its job, kept until its Job's TTL.
    pub fn completed(&self) -> bool {
        self.phase == "Succeeded"
    }

    /// Ended in failure (evicted, or its containers failed and will not restart): the pod
    /// object stays until someone deletes it, while its controller starts another.
    pub fn failed(&self) -> bool {
        self.phase == "Failed"
    }
}

impl ComponentPods {
    /// Failed pods that no longer count: the component has ready pods, so whatever replaced
    /// them runs (an evicted pod stays Failed until deleted, which the cluster's garbage
    /// collector does only past thousands of terminated pods). Each component is one controller
    /// (Redis, the server) or a few that always replace their pods (Gitea, KEDA, Flux), and a
    /// replacement that is not ready is reported on its own. Not agent pods: each ran one
    /// build, and a failed one is kept for its logs, not replaced.
    pub fn replaced(&self, pod: &PodStatus) -> bool {
        self.component != Component::Agents && pod.failed() && self.pods.iter().any(|p| p.ready)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScaledJobStatus {
    pub name: String,
    pub pool: Option<String>,
    pub ready: bool,
    pub message: String,
    pub max_replicas: Option<u64>,
    /// Agent Jobs that are still running.
    pub active_jobs: usize,
    /// KEDA's pause annotation is set (`raibid pool pause`): it starts no agent Jobs.
    pub paused: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FluxObject {
    pub kind: String,
    pub name: String,
    pub ready: bool,
    pub message: String,
    pub revision: Option<String>,
}

/// Reads the cluster named by the configuration; an unreachable cluster is a status, not an
/// error, so `raibid status` can still show the queue.
pub async fn cluster_status(config: &Config) -> ClusterStatus {
    match connect(config, Duration::from_secs(5)).await {
        Ok(cluster) => cluster_status_of(&cluster, &config.cluster.namespace).await,
        Err(e) => ClusterStatus {
            reachable: false,
            server: None,
            kubeconfig: super::kubeconfig_path(config).display().to_string(),
            error: Some(e.to_string()),
            nodes: Vec::new(),
            components: Vec::new(),
            scaled_jobs: Vec::new(),
            flux: Vec::new(),
            notes: Vec::new(),
        },
    }
}

/// The state of a connected cluster, raibid's objects looked up in `namespace`. Parts that
/// cannot be read become notes: one missing right must not blank the whole picture.
pub async fn cluster_status_of(cluster: &Cluster, namespace: &str) -> ClusterStatus {
    let mut notes = Vec::new();
    // Whether any node offers GPUs; unknown when the nodes cannot be read.
    let mut gpu_nodes = None;
    let nodes = match Api::<Node>::all(cluster.client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => {
            gpu_nodes = Some(list.items.iter().filter(|n| offers_gpus(n)).count());
            list.items.iter().map(node_status).collect()
        }
        Err(e) => {
            notes.push(format!("nodes: {}", error_chain(&e)));
            Vec::new()
        }
    };
    let mut components = Vec::new();
    for component in Component::ALL {
        let Some((ns, selector)) = component.pods(namespace) else {
            continue;
        };
        let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
        match api.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => components.push(ComponentPods {
                component,
                namespace: ns,
                pods: list.items.iter().map(pod_status).collect(),
            }),
            Err(e) => notes.push(format!("{component} pods: {}", error_chain(&e))),
        }
    }
    let scaled_jobs = scaled_jobs(cluster, namespace, gpu_nodes, &mut notes).await;
    let flux = flux_objects(cluster, &mut notes).await;
    ClusterStatus {
        reachable: true,
        server: Some(cluster.server.clone()),
        kubeconfig: cluster.kubeconfig.display().to_string(),
        error: None,
        nodes,
        components,
        scaled_jobs,
        flux,
        notes,
    }
}

fn node_status(node: &Node) -> NodeStatus {
    let status = node.status.clone().unwrap_or_default();
    let info = status.node_info.unwrap_or_default();
    NodeStatus {
        name: node.metadata.name.clone().unwrap_or_default(),
        ready: status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        arch: info.architecture,
        kubelet_version: info.kubelet_version,
    }
}

fn pod_status(pod: &Pod) -> PodStatus {
    let status = pod.status.clone().unwrap_or_default();
    let containers = status.container_statuses.unwrap_or_default();
    PodStatus {
        name: pod.metadata.name.clone().unwrap_or_default(),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        phase: status.phase.unwrap_or_else(|| "Unknown".into()),
        ready: !containers.is_empty() && containers.iter().all(|c| c.ready),
        restarts: containers.iter().map(|c| c.restart_count).sum(),
    }
}

async fn list_dynamic(
    cluster: &Cluster,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
) -> Result<Vec<DynamicObject>, kube::Error> {
    let info = kinds::lookup(api_version, kind).expect("raibid's own kinds");
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(cluster.client.clone(), ns, &info.api_resource()),
        None => Api::all_with(cluster.client.clone(), &info.api_resource()),
    };
    Ok(api.list(&ListParams::default()).await?.items)
}

fn not_installed(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The resource GPU pods request, which only the NVIDIA device plugin puts on nodes.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Whether a ScaledJob's agent pods request [`GPU_RESOURCE`].
pub fn requests_gpus(scaled_job: &serde_json::Value) -> bool {
    scaled_job["spec"]["jobTargetRef"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| {
            let resources = &c["resources"];
            !resources["requests"][GPU_RESOURCE].is_null()
                || !resources["limits"][GPU_RESOURCE].is_null()
        })
}

/// Whether a node has [`GPU_RESOURCE`] capacity (the NVIDIA device plugin advertises it).
pub fn offers_gpus(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get(GPU_RESOURCE))
        .is_some_and(|q| q.0.trim() != "0")
}

/// What to tell when ScaledJobs request GPUs that no node has: their pods would stay Pending.
pub fn gpu_note(requesting: &[String], gpu_nodes: usize) -> Option<String> {
    if requesting.is_empty() || gpu_nodes > 0 {
        return None;
    }
    Some(format!(
        "{} request{} {GPU_RESOURCE}, which no node offers: without the NVIDIA device plugin (see \
         docs/kubernetes.md, \"Pools and architectures\") {} agent pods stay Pending and {} jobs \
         wait",
        requesting.join(", "),
        if requesting.len() == 1 { "s" } else { "" },
        if requesting.len() == 1 {
            "its"
        } else {
            "their"
        },
        if requesting.len() == 1 {
            "its"
        } else {
            "their"
        },
    ))
}

async fn scaled_jobs(
    cluster: &Cluster,
    namespace: &str,
    gpu_nodes: Option<usize>,
    notes: &mut Vec<String>,
) -> Vec<ScaledJobStatus> {
    let objects =
        match list_dynamic(cluster, "keda.sh/v1alpha1", "ScaledJob", Some(namespace)).await {
            Ok(objects) => objects,
            Err(e) if not_installed(&e) => {
                notes.push("ScaledJobs: KEDA is not installed (`raibid setup keda`)".into());
                return Vec::new();
            }
            Err(e) => {
                notes.push(format!("ScaledJobs: {}", error_chain(&e)));
                return Vec::new();
            }
        };
    let requesting: Vec<String> = objects
        .iter()
        .filter(|o| requests_gpus(&o.data))
        .map(|o| {
            format!(
                "ScaledJob {}",
                o.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect();
    if let Some(note) = gpu_nodes.and_then(|n| gpu_note(&requesting, n)) {
        notes.push(note);
    }
    let jobs = Api::<Job>::namespaced(cluster.client.clone(), namespace)
        .list(&ListParams::default().labels("scaledjob.keda.sh/name"))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    objects
        .iter()
        .map(|object| {
            let name = object.metadata.name.clone().unwrap_or_default();
            let (ready, message) = ready_condition(&object.data["status"]["conditions"]);
            let active_jobs = jobs
                .iter()
                .filter(|j| {
                    j.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("scaledjob.keda.sh/name"))
                        .is_some_and(|n| *n == name)
                })
                .filter(|j| j.status.as_ref().and_then(|s| s.active).unwrap_or(0) > 0)
                .count();
            ScaledJobStatus {
                pool: object
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("raibid.dev/pool").cloned()),
                ready,
                message,
                max_replicas: object.data["spec"]["maxReplicaCount"].as_u64(),
                active_jobs,
                paused: object
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(super::KEDA_PAUSED))
                    .is_some_and(|v| v == "true"),
                name,
            }
        })
        .collect()
}

async fn flux_objects(cluster: &Cluster, notes: &mut Vec<String>) -> Vec<FluxObject> {
    let kinds = [
        ("source.toolkit.fluxcd.io/v1", "GitRepository"),
        ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"),
        ("helm.toolkit.fluxcd.io/v2", "HelmRelease"),
    ];
    let mut out = Vec::new();
    for (api_version, kind) in kinds {
        match list_dynamic(cluster, api_version, kind, None).await {
            Ok(objects) => out.extend(objects.iter().filter(|o| part_of_raibid(o)).map(|o| {
                let (ready, message) = ready_condition(&o.data["status"]["conditions"]);
                let status = &o.data["status"];
                let revision = status["artifact"]["revision"]
                    .as_str()
                    .or(status["lastAppliedRevision"].as_str())
                    .map(str::to_owned);
                FluxObject {
                    kind: kind.to_owned(),
                    name: o.metadata.name.clone().unwrap_or_default(),
                    ready,
                    message,
                    revision,
                }
            })),
            Err(e) if not_installed(&e) => {
                notes.push("Flux: not installed (`raibid setup flux`)".into());
                break;
            }
            Err(e) => notes.push(format!("{kind}: {}", error_chain(&e))),
        }
    }
    out
}

fn part_of_raibid(object: &DynamicObject) -> bool {
    object
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("app.kubernetes.io/part-of"))
        .is_some_and(|v| v == "raibid-ci")
}

impl ClusterStatus {
    /// What is not ready, one line each; empty when everything checked is. `asked` are the
    /// components asked about (`raibid status redis`, or all of them), which must then have
    /// pods, except agents, which scale to zero: they must have ScaledJobs instead, or no job
    /// would ever get an agent. Agent pods themselves are not judged: each lives for one
    /// build, and a failed build's pod is kept for its logs.
    pub fn problems(&self, asked: &[Component]) -> Vec<String> {
        if !self.reachable {
            return vec![format!(
                "cluster not reachable: {}",
                self.error.as_deref().unwrap_or("unknown error")
            )];
        }
        let mut problems = Vec::new();
        for node in self.nodes.iter().filter(|n| !n.ready) {
            problems.push(format!("node {} is not Ready", node.name));
        }
        for pods in &self.components {
            if pods.component == Component::Agents {
                continue;
            }
            if pods.pods.is_empty() && asked.contains(&pods.component) {
                problems.push(format!("{}: no pods", pods.component));
            }
            let current = pods
                .pods
                .iter()
                .filter(|p| !p.ready && !p.completed() && !pods.replaced(p));
            for pod in current {
                problems.push(format!(
                    "{}: pod {} is not ready ({})",
                    pods.component, pod.name, pod.phase
                ));
            }
        }
        if asked.contains(&Component::Agents) && self.scaled_jobs.is_empty() {
            problems.push(
                "agents: no ScaledJob, so no agent will start (`raibid setup agents`)".into(),
            );
        }
        for job in self.scaled_jobs.iter().filter(|j| !j.ready) {
            problems.push(format!(
                "ScaledJob {} is not ready: {}",
                job.name, job.message
            ));
        }
        for object in self.flux.iter().filter(|o| !o.ready) {
            problems.push(format!(
                "{} {} is not ready: {}",
                object.kind, object.name, object.message
            ));
        }
        problems
    }

    /// Keeps only what concerns `components`; all of it when none is named.
    pub fn only(mut self, components: &[Component]) -> Self {
        if components.is_empty() {
            return self;
        }
        self.components
            .retain(|c| components.contains(&c.component));
        if !components.contains(&Component::K3s) {
            self.nodes.clear();
        }
        if !components.contains(&Component::Agents) {
            self.scaled_jobs.clear();
        }
        if !components.contains(&Component::Flux) {
            self.flux.clear();
        }
        self
    }
}

impl fmt::Display for ClusterStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.reachable {
            return write!(
                f,
                "cluster: not reachable ({})",
                self.error.as_deref().unwrap_or("unknown error")
            );
        }
        writeln!(
            f,
            "cluster: {} (kubeconfig {})",
            self.server.as_deref().unwrap_or_default(),
            self.kubeconfig
        )?;
        for node in &self.nodes {
            let state = if node.ready { "Ready" } else { "NotReady" };
            writeln!(
                f,
                "  node {}: {state}, {}, {}",
                node.name, node.arch, node.kubelet_version
            )?;
        }
        for component in &self.components {
            if component.pods.is_empty() {
                writeln!(
                    f,
                    "  {} ({}): no pods",
                    component.component, component.namespace
                )?;
                continue;
            }
            let completed = component.pods.iter().filter(|p| p.completed()).count();
            let replaced = component
                .pods
                .iter()
                .filter(|p| component.replaced(p))
                .count();
            let ready = component.pods.iter().filter(|p| p.ready).count();
            write!(
                f,
                "  {} ({}): {ready}/{} pods ready",
                component.component,
                component.namespace,
                component.pods.len() - completed - replaced
            )?;
            if completed > 0 {
                write!(f, ", {completed} completed")?;
            }
            if replaced > 0 {
                write!(f, ", {replaced} failed and replaced")?;
            }
            writeln!(f)?;
            for pod in component
                .pods
                .iter()
                .filter(|p| !p.completed() && (!p.ready || p.restarts > 0))
            {
                if component.replaced(pod) {
                    writeln!(
                        f,
                        "    {}: Failed, replaced (note: `kubectl -n {} delete pod {}` removes \
                         it)",
                        pod.name, component.namespace, pod.name
                    )?;
                    continue;
                }
                writeln!(
                    f,
                    "    {}: {}, {} restarts",
                    pod.name, pod.phase, pod.restarts
                )?;
            }
        }
        for job in &self.scaled_jobs {
            writeln!(
                f,
                "  ScaledJob {} (pool {}): {}{}, {} running agent job(s), max {}",
                job.name,
                job.pool.as_deref().unwrap_or("?"),
                if job.paused { "paused, " } else { "" },
                job.message,
                job.active_jobs,
                job.max_replicas.map_or("?".to_owned(), |m| m.to_string())
            )?;
        }
        for object in &self.flux {
            writeln!(
                f,
                "  {} {}: {}{}",
                object.kind,
                object.name,
                object.message,
                object
                    .revision
                    .as_ref()
                    .map_or(String::new(), |r| format!(" (revision {r})"))
            )?;
        }
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reachable() -> ClusterStatus {
        ClusterStatus {
            reachable: true,
            server: Some("https://127.0.0.1:6443/".into()),
            kubeconfig: "/etc/rancher/k3s/k3s.yaml".into(),
            error: None,
            nodes: Vec::new(),
            components: vec![ComponentPods {
                component: Component::Agents,
                namespace: "raibid-ci".into(),
                pods: Vec::new(),
            }],
            scaled_jobs: Vec::new(),
            flux: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// The gpu pool requests nvidia.com/gpu, which only the NVIDIA device plugin offers: without
    /// it the pool's jobs waited for ever and nothing said why.
    #[test]
    fn gpu_requests_without_gpu_nodes_are_noted() {
        let gpu: serde_json::Value = serde_json::json!({"spec": {"jobTargetRef": {"template": {
            "spec": {"containers": [{"name": "agent", "resources": {
                "requests": {"cpu": "1"}, "limits": {"nvidia.com/gpu": 1}
            }}]}
        }}}});
        assert!(requests_gpus(&gpu));
        let cpu = serde_json::json!({"spec": {"jobTargetRef": {"template": {"spec": {
            "containers": [{"name": "agent", "resources": {"requests": {"cpu": "1"}}}]
        }}}}});
        assert!(!requests_gpus(&cpu));
        let node = |capacity: serde_json::Value| -> Node {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "spark-01"}, "status": {"capacity": capacity}
            }))
            .unwrap()
        };
        assert!(offers_gpus(&node(
            serde_json::json!({"cpu": "20", "nvidia.com/gpu": "1"})
        )));
        assert!(!offers_gpus(&node(
            serde_json::json!({"cpu": "20", "nvidia.com/gpu": "0"})
        )));
        assert!(!offers_gpus(&node(serde_json::json!({"cpu": "20"}))));

        let requesting = ["ScaledJob raibid-agent-gpu".to_owned()];
        assert_eq!(
            gpu_note(&requesting, 0).unwrap(),
            "ScaledJob raibid-agent-gpu requests nvidia.com/gpu, which no node offers: without \
             the NVIDIA device plugin (see docs/kubernetes.md, \"Pools and architectures\") its \
             agent pods stay Pending and its jobs wait"
        );
        assert_eq!(gpu_note(&requesting, 1), None);
        assert_eq!(gpu_note(&[], 0), None);
    }

    fn pod(name: &str, phase: &str, ready: bool) -> PodStatus {
        PodStatus {
            name: name.into(),
            node: Some("spark-01".into()),
            phase: phase.into(),
            ready,
            restarts: 0,
        }
    }

    /// One evicted server pod kept `raibid status` "not ready" for ever: the pod object stays
    /// Failed while the Deployment runs its replacement.
    #[test]
    fn a_failed_pod_whose_replacement_is_ready_is_a_note() {
        let mut status = reachable();
        status.components.push(ComponentPods {
            component: Component::Server,
            namespace: "raibid-ci".into(),
            pods: vec![
                pod("raibid-server-7d9f8-abcde", "Failed", false),
                pod("raibid-server-7d9f8-qwert", "Running", true),
            ],
        });
        assert!(status.problems(&[Component::Server]).is_empty());
        let text = status.to_string();
        assert!(
            text.contains("  server (raibid-ci): 1/1 pods ready, 1 failed and replaced\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "    raibid-server-7d9f8-abcde: Failed, replaced (note: `kubectl -n raibid-ci \
                 delete pod raibid-server-7d9f8-abcde` removes it)\n"
            ),
            "{text}"
        );

        // Nothing ready: the failure is the state of the component.
        status.components[1].pods[1] = pod("raibid-server-7d9f8-qwert", "Pending", false);
        assert_eq!(
            status.problems(&[Component::Server]),
            [
                "server: pod raibid-server-7d9f8-abcde is not ready (Failed)",
                "server: pod raibid-server-7d9f8-qwert is not ready (Pending)"
            ]
        );
        // Only failed pods: a problem.
        status.components[1].pods.truncate(1);
        assert_eq!(status.problems(&[Component::Server]).len(), 1);
    }

    /// `raibid status agents` said ready with nothing deployed (no ScaledJob, or no KEDA).
    #[test]
    fn agents_without_a_scaled_job_are_a_problem_when_asked_about() {
        let status = reachable().only(&[Component::Agents]);
        assert_eq!(
            status.problems(&[Component::Agents]),
            ["agents: no ScaledJob, so no agent will start (`raibid setup agents`)"]
        );
        // The whole status does not ask for agents (a cluster may have none yet).
        assert!(reachable().problems(&[]).is_empty());
        // `raibid status all` does.
        assert!(
            reachable()
                .problems(&Component::ALL)
                .iter()
                .any(|p| p.starts_with("agents: no ScaledJob"))
        );

        let mut deployed = reachable();
        deployed.scaled_jobs.push(ScaledJobStatus {
            name: "raibid-agent-arm64".into(),
            pool: Some("arm64".into()),
            ready: true,
            message: "Ready=True: ScaledJob is defined correctly".into(),
            max_replicas: Some(20),
            active_jobs: 0,
            paused: false,
        });
        // No agent pods is fine: they scale to zero.
        assert!(deployed.problems(&[Component::Agents]).is_empty());
    }
}
