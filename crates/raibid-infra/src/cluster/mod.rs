//! Everything that talks to a Kubernetes API server, kept thin: connect, apply, delete, wait,
//! and read status. The decisions (what to apply, in which order) are made elsewhere and can be
//! tested without a cluster.

mod connect;
mod objects;
mod pause;
mod status;
mod wait;

pub use connect::{
    Cluster, K3S_KUBECONFIG, connect, connect_to, error_chain, kubeconfig_path, planned_kubeconfig,
};
pub use objects::{
    Deletion, FIELD_MANAGER, apply, delete, delete_if_allowed, delete_namespace_if_labelled,
    exists, get, list_everywhere, namespace_labels, namespace_terminating, patch_if_present,
    secret_data, to_dynamic,
};
pub use pause::{KEDA_PAUSED, KedaPause, POOL_LABEL, pause_pool_scaled_jobs, pause_scaled_jobs};
pub use status::{
    ClusterStatus, ComponentPods, FluxObject, NodeStatus, PodStatus, ScaledJobStatus,
    cluster_status, cluster_status_of, gpu_note, offers_gpus, requests_gpus,
};
pub use wait::{Readiness, ready_condition, wait_gone, wait_ready};
