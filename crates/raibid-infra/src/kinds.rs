//! Every kind of object raibid-ci deploys, in one table: how to validate it, where its pod spec
//! is, when to apply it, and how the API server names it. Anything not in the table is refused
//! by validation, so a new kind cannot reach a cluster unchecked.

use k8s_openapi::api::{apps, core, networking, policy, rbac};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

use crate::path::FieldPath;
use crate::validate::schema::{CrdFile, OpenApiDocument};
use crate::validate::typed;

/// Problems one checker found in one object.
pub type Findings = Vec<(FieldPath, String)>;

pub struct KindInfo {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    /// Lower is applied first: namespaces, then identities and configuration, then workloads,
    /// then custom resources that point at all of those.
    pub apply_rank: u8,
    /// JSON pointer to the pod spec, for the house rules on containers.
    pub pod_spec: Option<&'static str>,
    /// Pods that are expected to run until replaced (they need liveness/readiness probes);
    /// run-to-completion agent pods are not.
    pub long_running: bool,
    pub schema: Schema,
    /// Strict conversion into the `k8s-openapi` type (core kinds only).
    pub typed: Option<fn(&Value) -> Findings>,
}

pub enum Schema {
    /// A schema from the Kubernetes OpenAPI v3 documents, by its component name.
    Core(OpenApiDocument, &'static str),
    /// The `openAPIV3Schema` of a CustomResourceDefinition.
    Crd(CrdFile),
    /// No published schema is shipped for ArgoCD: a structural subset.
    Structure(fn(&Value) -> Findings),
    /// The policy group's OpenAPI document is not among the fixtures: the strict typed
    /// conversion is the only check.
    TypedOnly,
}

impl KindInfo {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group, self.version, self.kind),
            self.plural,
        )
    }
}

/// The kind with this `apiVersion` and `kind`, if raibid knows it.
pub fn lookup(api_version: &str, kind: &str) -> Option<&'static KindInfo> {
    KINDS
        .iter()
        .find(|k| k.kind == kind && k.api_version() == api_version)
}

/// Apply rank of an object; unknown kinds go last (validation refuses them anyway).
pub fn apply_rank(api_version: &str, kind: &str) -> u8 {
    lookup(api_version, kind).map_or(u8::MAX, |k| k.apply_rank)
}

/// Whether objects of this kind live in a namespace (unknown kinds are assumed to, as
/// Kustomize assumes).
pub fn is_namespaced(api_version: &str, kind: &str) -> bool {
    lookup(api_version, kind).is_none_or(|k| k.namespaced)
}

const POD_TEMPLATE: Option<&str> = Some("/spec/template/spec");

pub static KINDS: &[KindInfo] = &[
    KindInfo {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        namespaced: false,
        apply_rank: 0,
        pod_spec: None,
        long_running: false,
        schema: Schema::Core(OpenApiDocument::CoreV1, "io.k8s.api.core.v1.Namespace"),
        typed: Some(typed::check::<core::v1::Namespace>),
    },
    KindInfo {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        namespaced: true,
        apply_rank: 1,
        pod_spec: None,
        long_running: false,
        schema: Schema::Core(OpenApiDocument::CoreV1, "io.k8s.api.core.v1.ServiceAccount"),
        typed: Some(typed::check::<core::v1::ServiceAccount>),
    },
    KindInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "Role",
        plural: "roles",
        namespaced: true,
        apply_rank: 2,
        pod_spec: None,
        long_running: false,
        schema: Schema::Core(OpenApiDocument::RbacV1, "io.k8s.api.rbac.v1.Role"),
        typed: Some(typed::check::<rbac::v1::Role>),
    },
    KindInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "RoleBinding",
        plural: "rolebindings",
        namespaced: true,
        apply_rank: 3,
        pod_spec: None,
        long_running: false,
        schema: Schema::Core(OpenApiDocument::RbacV1, "io.k8s.api.rbac.v1.RoleBinding"),
        typed: Some(typed::check::<rbac::v1::RoleBinding>),
    },
    KindInfo {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        namespaced: true,
        apply_rank: 4,
        pod_spec: None,
        long_running: false,
        schema: Schema::Core(OpenApiDocument::CoreV1, "io.k8s.api.core.v1.Secret"),
        typed: Some(typed::check::<core::v1::Secret>),
    },
    KindInfo {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        namespaced: true,
        apply_rank: 4,
        pod_spec: None,
        long_running: false,
        schema: Schema::Core(OpenApiDocument::CoreV1, "io.k8s.api.core.v1.ConfigMap"),
        typed: Some(typed::check::<core::v1::ConfigMap>),
    },
    KindInfo {
        group: "",
        version: "v1",
        kind: "PersistentVolumeClaim",
        plural: "persistentvolumeclaims",
        namespaced: true,
        apply_rank: 5,
        pod_spec: None,
        long_running: false,
        schema: Schema::Core(
            OpenApiDocument::CoreV1,
            "io.k8s.api.core.v1.PersistentVolumeClaim",
        ),
        typed: Some(typed::check::<core::v1::PersistentVolumeClaim>),
    },
    KindInfo {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        namespaced: true,
        apply_rank: 6,
        pod_spec: None,
        long_running: false,
        schema: Schema::Core(OpenApiDocument::CoreV1, "io.k8s.api.core.v1.Service"),
        typed: Some(typed::check::<core::v1::Service>),
    },
    KindInfo {
        group: "networking.k8s.io",
        version: "v1",
        kind: "NetworkPolicy",
        plural: "networkpolicies",
        namespaced: true,
        apply_rank: 7,
        pod_spec: None,
        long_running: false,
        schema: Schema::Core(
            OpenApiDocument::NetworkingV1,
            "io.k8s.api.networking.v1.NetworkPolicy",
        ),
        typed: Some(typed::check::<networking::v1::NetworkPolicy>),
    },
    KindInfo {
        group: "apps",
        version: "v1",
        kind: "StatefulSet",
        plural: "statefulsets",
        namespaced: true,
        apply_rank: 8,
        pod_spec: POD_TEMPLATE,
        long_running: true,
        schema: Schema::Core(OpenApiDocument::AppsV1, "io.k8s.api.apps.v1.StatefulSet"),
        typed: Some(typed::check::<apps::v1::StatefulSet>),
    },
    KindInfo {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        namespaced: true,
        apply_rank: 8,
        pod_spec: POD_TEMPLATE,
        long_running: true,
        schema: Schema::Core(OpenApiDocument::AppsV1, "io.k8s.api.apps.v1.Deployment"),
        typed: Some(typed::check::<apps::v1::Deployment>),
    },
    KindInfo {
        group: "policy",
        version: "v1",
        kind: "PodDisruptionBudget",
        plural: "poddisruptionbudgets",
        namespaced: true,
        apply_rank: 9,
        pod_spec: None,
        long_running: false,
        schema: Schema::TypedOnly,
        typed: Some(typed::check::<policy::v1::PodDisruptionBudget>),
    },
    KindInfo {
        group: "keda.sh",
        version: "v1alpha1",
        kind: "TriggerAuthentication",
        plural: "triggerauthentications",
        namespaced: true,
        apply_rank: 10,
        pod_spec: None,
        long_running: false,
        schema: Schema::Crd(CrdFile::TriggerAuthentications),
        typed: None,
    },
    KindInfo {
        group: "keda.sh",
        version: "v1alpha1",
        kind: "ScaledJob",
        plural: "scaledjobs",
        namespaced: true,
        apply_rank: 11,
        pod_spec: Some("/spec/jobTargetRef/template/spec"),
        long_running: false,
        schema: Schema::Crd(CrdFile::ScaledJobs),
        typed: None,
    },
    KindInfo {
        group: "source.toolkit.fluxcd.io",
        version: "v1",
        kind: "GitRepository",
        plural: "gitrepositories",
        namespaced: true,
        apply_rank: 10,
        pod_spec: None,
        long_running: false,
        schema: Schema::Crd(CrdFile::GitRepositories),
        typed: None,
    },
    KindInfo {
        group: "source.toolkit.fluxcd.io",
        version: "v1",
        kind: "HelmRepository",
        plural: "helmrepositories",
        namespaced: true,
        apply_rank: 10,
        pod_spec: None,
        long_running: false,
        schema: Schema::Crd(CrdFile::HelmRepositories),
        typed: None,
    },
    KindInfo {
        group: "kustomize.toolkit.fluxcd.io",
        version: "v1",
        kind: "Kustomization",
        plural: "kustomizations",
        namespaced: true,
        apply_rank: 11,
        pod_spec: None,
        long_running: false,
        schema: Schema::Crd(CrdFile::Kustomizations),
        typed: None,
    },
    KindInfo {
        group: "helm.toolkit.fluxcd.io",
        version: "v2",
        kind: "HelmRelease",
        plural: "helmreleases",
        namespaced: true,
        apply_rank: 11,
        pod_spec: None,
        long_running: false,
        schema: Schema::Crd(CrdFile::HelmReleases),
        typed: None,
    },
    KindInfo {
        group: "argoproj.io",
        version: "v1alpha1",
        kind: "Application",
        plural: "applications",
        namespaced: true,
        apply_rank: 12,
        pod_spec: None,
        long_running: false,
        schema: Schema::Structure(crate::validate::argo::check_application),
        typed: None,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_kinds_by_api_version() {
        assert_eq!(
            lookup("apps/v1", "Deployment").unwrap().plural,
            "deployments"
        );
        assert!(lookup("apps/v1beta1", "Deployment").is_none());
        assert!(!is_namespaced("v1", "Namespace"));
        assert!(is_namespaced("example.com/v1", "Widget"));
    }

    #[test]
    fn namespaces_come_first_and_scaled_jobs_after_their_trigger_auth() {
        assert!(apply_rank("v1", "Namespace") < apply_rank("apps/v1", "Deployment"));
        assert!(
            apply_rank("keda.sh/v1alpha1", "TriggerAuthentication")
                < apply_rank("keda.sh/v1alpha1", "ScaledJob")
        );
        assert_eq!(apply_rank("example.com/v1", "Widget"), u8::MAX);
    }
}
