//! Writing to the cluster: server-side apply with the field manager `raibid` (idempotent: the
//! same objects applied twice change nothing), and deletes that treat "already gone" as done.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;

use super::Cluster;
use crate::InfraError;
use crate::kinds;
use crate::manifest::{Manifest, ObjectRef};

pub const FIELD_MANAGER: &str = "raibid";

/// Kinds raibid never applies but reads and deletes: the other KEDA objects that must be gone
/// before KEDA is ([`crate::ops`]'s KEDA teardown). `(group, version, kind, plural,
/// namespaced)`.
const OTHER_KINDS: [(&str, &str, &str, &str, bool); 2] = [
    ("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects", true),
    (
        "keda.sh",
        "v1alpha1",
        "ClusterTriggerAuthentication",
        "clustertriggerauthentications",
        false,
    ),
];

fn resource(api_version: &str, kind: &str) -> Result<(ApiResource, bool), InfraError> {
    let other = || {
        OTHER_KINDS
            .iter()
            .find(|(g, v, k, _, _)| *k == kind && format!("{g}/{v}") == api_version)
            .map(|(g, v, k, plural, namespaced)| {
                (
                    ApiResource::from_gvk_with_plural(
                        &kube::core::GroupVersionKind::gvk(g, v, k),
                        plural,
                    ),
                    *namespaced,
                )
            })
    };
    kinds::lookup(api_version, kind)
        .map(|k| (k.api_resource(), k.namespaced))
        .or_else(other)
        .ok_or_else(|| InfraError::UnknownKind {
            kind: kind.to_owned(),
            api_version: api_version.to_owned(),
            hint: "raibid does not manage this kind".into(),
        })
}

fn api(cluster: &Cluster, object: &ObjectRef) -> Result<Api<DynamicObject>, InfraError> {
    let (resource, namespaced) = resource(&object.api_version, &object.kind)?;
    Ok(match (&object.namespace, namespaced) {
        (Some(ns), true) => Api::namespaced_with(cluster.client.clone(), ns, &resource),
        _ => Api::all_with(cluster.client.clone(), &resource),
    })
}

/// The object as kube-rs sends it, with the API resource it is sent to.
pub fn to_dynamic(manifest: &Manifest) -> Result<(ApiResource, DynamicObject), InfraError> {
    let (resource, _) = resource(manifest.api_version(), manifest.kind())?;
    let dynamic =
        serde_json::from_value(manifest.object.clone()).map_err(|e| InfraError::Manifest {
            file: manifest.source.clone(),
            message: format!("{}: {e}", manifest.object_ref()),
        })?;
    Ok((resource, dynamic))
}

/// Server-side applies one object, taking ownership of the fields it sets (`force`): the
/// manifests are the desired state, whoever edited the object last.
pub async fn apply(cluster: &Cluster, manifest: &Manifest) -> Result<(), InfraError> {
    let object = manifest.object_ref();
    let api = api(cluster, &object)?;
    let (_, dynamic) = to_dynamic(manifest)?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&object.name, &params, &Patch::Apply(&dynamic))
        .await
        .map(|_| ())
        .map_err(|e| api_error("apply", &object, e))
}

/// Deletes one object; `Ok(false)` when it did not exist.
pub async fn delete(cluster: &Cluster, object: &ObjectRef) -> Result<bool, InfraError> {
    let api = api(cluster, object)?;
    match api.delete(&object.name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(api_error("delete", object, e)),
    }
}

/// What [`delete_if_allowed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    /// It did not exist.
    Absent,
    /// The kubeconfig has no right to delete it (403), with the API server's message; whether
    /// it exists is then unknown, since authorization comes before the lookup.
    Forbidden(String),
}

/// Deletes one object as [`delete`] does, but a 403 is [`Deletion::Forbidden`], not an error:
/// for clean-ups that nothing else depends on.
pub async fn delete_if_allowed(
    cluster: &Cluster,
    object: &ObjectRef,
) -> Result<Deletion, InfraError> {
    let api = api(cluster, object)?;
    match api.delete(&object.name, &DeleteParams::background()).await {
        Ok(_) => Ok(Deletion::Deleted),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Deletion::Absent),
        Err(kube::Error::Api(status)) if status.code == 403 => {
            Ok(Deletion::Forbidden(status.message))
        }
        Err(e) => Err(api_error("delete", object, e)),
    }
}

/// Every object of a kind in every namespace, or `None` when the cluster does not know the kind
/// (its CRD is not installed).
pub async fn list_everywhere(
    cluster: &Cluster,
    api_version: &str,
    kind: &str,
) -> Result<Option<Vec<DynamicObject>>, InfraError> {
    let (resource, _) = resource(api_version, kind)?;
    let api: Api<DynamicObject> = Api::all_with(cluster.client.clone(), &resource);
    match api.list(&Default::default()).await {
        Ok(list) => Ok(Some(list.items)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(e) => Err(api_error(
            "list",
            &ObjectRef {
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
                namespace: None,
                name: "(all namespaces)".into(),
            },
            e,
        )),
    }
}

/// The object as the cluster has it, if it exists (a kind the cluster does not know: no).
pub async fn get(
    cluster: &Cluster,
    object: &ObjectRef,
) -> Result<Option<DynamicObject>, InfraError> {
    let api = api(cluster, object)?;
    match api.get_opt(&object.name).await {
        Ok(found) => Ok(found),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(e) => Err(api_error("read", object, e)),
    }
}

/// Whether the object exists.
pub async fn exists(cluster: &Cluster, object: &ObjectRef) -> Result<bool, InfraError> {
    let api = api(cluster, object)?;
    api.get_opt(&object.name)
        .await
        .map(|found| found.is_some())
        .map_err(|e| api_error("read", object, e))
}

/// JSON-merge-patches one object; `Ok(false)` when it (or its kind) does not exist.
pub async fn patch_if_present(
    cluster: &Cluster,
    object: &ObjectRef,
    patch: &serde_json::Value,
) -> Result<bool, InfraError> {
    let api = api(cluster, object)?;
    match api
        .patch(&object.name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(api_error("patch", object, e)),
    }
}

/// The data of a Secret, if it exists (to keep values a previous setup generated).
pub async fn secret_data(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, ByteString>>, InfraError> {
    let api: Api<Secret> = Api::namespaced(cluster.client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(secret) => Ok(secret.map(|s| s.data.unwrap_or_default())),
        Err(e) => Err(api_error(
            "read",
            &ObjectRef {
                api_version: "v1".into(),
                kind: "Secret".into(),
                namespace: Some(namespace.into()),
                name: name.into(),
            },
            e,
        )),
    }
}

/// Namespaces that exist in every cluster and are never raibid's, whatever their labels say.
const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// The labels of namespace `name`, or `None` when it does not exist.
pub async fn namespace_labels(
    cluster: &Cluster,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, InfraError> {
    Ok(namespace(cluster, name)
        .await?
        .map(|n| n.metadata.labels.unwrap_or_default()))
}

/// Whether namespace `name` exists but is being deleted (a teardown's, still removing what is
/// in it): nothing can be created in it until it is gone.
pub async fn namespace_terminating(cluster: &Cluster, name: &str) -> Result<bool, InfraError> {
    Ok(namespace(cluster, name)
        .await?
        .is_some_and(|n| terminating(&n)))
}

fn terminating(namespace: &Namespace) -> bool {
    namespace.metadata.deletion_timestamp.is_some()
        || namespace.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

async fn namespace(cluster: &Cluster, name: &str) -> Result<Option<Namespace>, InfraError> {
    let api: Api<Namespace> = Api::all(cluster.client.clone());
    let object = ObjectRef {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        namespace: None,
        name: name.to_owned(),
    };
    api.get_opt(name)
        .await
        .map_err(|e| api_error("read", &object, e))
}

/// Deletes namespace `name` only if it carries `label`; says what happened.
pub async fn delete_namespace_if_labelled(
    cluster: &Cluster,
    name: &str,
    (key, value): &(String, String),
) -> Result<String, InfraError> {
    let object = ObjectRef {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        namespace: None,
        name: name.to_owned(),
    };
    if SYSTEM_NAMESPACES.contains(&name) {
        return Ok(format!("kept: {object} is a system namespace"));
    }
    let Some(labels) = namespace_labels(cluster, name).await? else {
        return Ok(format!("already absent: {object}"));
    };
    let labelled = labels.get(key).is_some_and(|v| v == value);
    if !labelled {
        return Ok(format!(
            "kept: {object} is not labelled {key}={value}, so raibid did not create it"
        ));
    }
    Ok(if delete(cluster, &object).await? {
        format!("deleted: {object}")
    } else {
        format!("already absent: {object}")
    })
}

/// Maps API errors to what the user should do.
pub fn api_error(action: &'static str, object: &ObjectRef, error: kube::Error) -> InfraError {
    if let kube::Error::Api(status) = &error {
        let unknown_type = status.code == 404
            && (status
                .message
                .contains("could not find the requested resource")
                || status.reason == "NotFound" && status.message.is_empty());
        if unknown_type {
            return InfraError::UnknownKind {
                kind: object.kind.clone(),
                api_version: object.api_version.clone(),
                hint: install_hint(&object.api_version),
            };
        }
        let namespace_terminating = status.message.contains("because it is being terminated")
            || status
                .details
                .as_ref()
                .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"));
        if status.code == 403 && namespace_terminating {
            let namespace = object.namespace.as_deref().unwrap_or("its namespace");
            return InfraError::Api {
                action,
                object: object.to_string(),
                message: format!(
                    "namespace {namespace} is still being deleted (by a teardown); wait until \
                     `kubectl get namespace {namespace}` finds nothing and rerun"
                ),
            };
        }
        if status.code == 403 {
            return InfraError::Api {
                action,
                object: object.to_string(),
                message: format!(
                    "forbidden ({}); use a kubeconfig with rights to manage {} objects",
                    status.message, object.kind
                ),
            };
        }
    }
    InfraError::Api {
        action,
        object: object.to_string(),
        message: super::error_chain(&error),
    }
}

fn install_hint(api_version: &str) -> String {
    let group = api_version.split('/').next().unwrap_or_default();
    match group {
        "keda.sh" => "its CRDs come with KEDA: run `raibid setup keda` first".into(),
        g if g.ends_with("toolkit.fluxcd.io") => {
            "its CRDs come with Flux: run `raibid setup flux` first".into()
        }
        "argoproj.io" => "install ArgoCD first (https://argo-cd.readthedocs.io)".into(),
        _ => "the cluster's Kubernetes version may be too old (raibid targets 1.31+)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> ObjectRef {
        ObjectRef {
            api_version: "v1".into(),
            kind: "Secret".into(),
            namespace: Some("raibid-ci".into()),
            name: "raibid-redis".into(),
        }
    }

    /// Setup right after a teardown: the API server refuses new objects in a namespace being
    /// deleted with 403, which read "use a kubeconfig with rights to manage Secret objects".
    #[test]
    fn a_namespace_being_deleted_is_not_a_missing_right() {
        // As the API server sends it (Kubernetes 1.35).
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "secrets \"raibid-redis\" is forbidden: unable to create new content in \
                        namespace raibid-ci because it is being terminated",
            "reason": "Forbidden",
            "details": {
                "name": "raibid-redis",
                "kind": "secrets",
                "causes": [{
                    "reason": "NamespaceTerminating",
                    "message": "namespace raibid-ci is being terminated",
                    "field": "metadata.namespace"
                }]
            },
            "code": 403
        }))
        .unwrap();
        let err = api_error("apply", &secret(), kube::Error::Api(Box::new(status))).to_string();
        assert_eq!(
            err,
            "apply Secret/raibid-redis (namespace raibid-ci): namespace raibid-ci is still being \
             deleted (by a teardown); wait until `kubectl get namespace raibid-ci` finds nothing \
             and rerun"
        );
        let denied = kube::core::Status {
            code: 403,
            reason: "Forbidden".into(),
            message: "secrets is forbidden: User \"ci\" cannot create resource \"secrets\"".into(),
            ..Default::default()
        };
        let err = api_error("apply", &secret(), kube::Error::Api(Box::new(denied))).to_string();
        assert!(err.contains("use a kubeconfig with rights"), "{err}");
    }

    #[test]
    fn a_namespace_with_a_deletion_timestamp_is_terminating() {
        let namespace =
            |value: serde_json::Value| -> Namespace { serde_json::from_value(value).unwrap() };
        assert!(terminating(&namespace(serde_json::json!({
            "metadata": {"name": "raibid-ci", "deletionTimestamp": "2025-01-01T00:00:00Z"},
            "status": {"phase": "Terminating"}
        }))));
        assert!(terminating(&namespace(serde_json::json!({
            "metadata": {"name": "raibid-ci"}, "status": {"phase": "Terminating"}
        }))));
        assert!(!terminating(&namespace(serde_json::json!({
            "metadata": {"name": "raibid-ci"}, "status": {"phase": "Active"}
        }))));
    }
}
