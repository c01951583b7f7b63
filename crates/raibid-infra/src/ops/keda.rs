//! KEDA's objects before KEDA goes. KEDA's operator puts its finalizer (`finalizer.keda.sh`) on
//! every ScaledObject, ScaledJob and (Cluster)TriggerAuthentication and removes it only while it
//! runs: uninstalling KEDA (its chart owns the CRDs) with such objects left deletes the operator
//! first, and the objects and CRDs then stay Terminating for ever (`helm uninstall --wait`
//! times out). So raibid-ci's objects are deleted, and waited for, while the operator still
//! runs, and anyone else's make the teardown refuse. raibid-ci's are those in the configured
//! namespace carrying its label: another raibid-ci installation's, in a namespace of its own,
//! carry the same label and are not this one's to delete.

use std::collections::BTreeMap;

use crate::InfraError;
use crate::cluster::{self, Cluster};
use crate::manifest::ObjectRef;

/// The kinds KEDA's operator finalizes.
pub const FINALIZED_KINDS: [(&str, &str); 4] = [
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "ScaledJob"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("keda.sh/v1alpha1", "ClusterTriggerAuthentication"),
];

/// The label every object of raibid-ci's manifests carries.
pub const RAIBID_LABEL: (&str, &str) = ("app.kubernetes.io/part-of", "raibid-ci");

/// What to do when a KEDA object stays after its deletion.
pub const RELEASE_HINT: &str = "KEDA's operator removes its finalizer (finalizer.keda.sh), so \
    check that it runs (`kubectl -n keda get pods`); if KEDA is gone already, remove the \
    finalizer by hand: `kubectl -n <namespace> patch <kind> <name> --type merge -p \
    '{\"metadata\":{\"finalizers\":null}}'`";

/// Splits objects into raibid-ci's (in `namespace` and carrying `label`) and everyone else's,
/// which include another raibid-ci installation's in another namespace, and any cluster-scoped
/// object (raibid's manifests have none).
pub fn partition(
    objects: Vec<(ObjectRef, BTreeMap<String, String>)>,
    (key, value): &(String, String),
    namespace: &str,
) -> (Vec<ObjectRef>, Vec<ObjectRef>) {
    let (ours, theirs): (Vec<_>, Vec<_>) = objects.into_iter().partition(|(object, labels)| {
        object.namespace.as_deref() == Some(namespace) && labels.get(key) == Some(value)
    });
    (
        ours.into_iter().map(|(o, _)| o).collect(),
        theirs.into_iter().map(|(o, _)| o).collect(),
    )
}

/// Every object of [`FINALIZED_KINDS`] in the cluster (every namespace: anyone else's count
/// too), split as [`partition`] does; nothing
/// when KEDA's CRDs are not installed.
pub async fn find(
    cluster: &Cluster,
    label: &(String, String),
    namespace: &str,
) -> Result<(Vec<ObjectRef>, Vec<ObjectRef>), InfraError> {
    let mut found = Vec::new();
    for (api_version, kind) in FINALIZED_KINDS {
        let Some(objects) = cluster::list_everywhere(cluster, api_version, kind).await? else {
            continue;
        };
        for object in objects {
            found.push((
                ObjectRef {
                    api_version: api_version.to_owned(),
                    kind: kind.to_owned(),
                    namespace: object.metadata.namespace.clone(),
                    name: object.metadata.name.clone().unwrap_or_default(),
                },
                object.metadata.labels.unwrap_or_default(),
            ));
        }
    }
    Ok(partition(found, label, namespace))
}

/// The refusal when `foreign` is not empty.
pub fn refuse_foreign(foreign: &[ObjectRef]) -> Result<(), InfraError> {
    if foreign.is_empty() {
        return Ok(());
    }
    Err(InfraError::KedaInUse {
        objects: foreign
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: &str, namespace: Option<&str>, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: "keda.sh/v1alpha1".into(),
            kind: kind.into(),
            namespace: namespace.map(str::to_owned),
            name: name.into(),
        }
    }

    #[test]
    fn only_labelled_objects_are_raibid_s() {
        let label = (RAIBID_LABEL.0.to_owned(), RAIBID_LABEL.1.to_owned());
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        let (ours, theirs) = partition(
            vec![
                (
                    object("ScaledJob", Some("raibid-ci"), "raibid-agent-arm64"),
                    labels(&[("app.kubernetes.io/part-of", "raibid-ci")]),
                ),
                (
                    object("ScaledObject", Some("shop"), "web"),
                    labels(&[("app.kubernetes.io/part-of", "shop")]),
                ),
                // In raibid's namespace, but not from its manifests.
                (
                    object("ScaledJob", Some("raibid-ci"), "hand-made"),
                    BTreeMap::new(),
                ),
                (
                    object("ClusterTriggerAuthentication", None, "aws"),
                    BTreeMap::new(),
                ),
            ],
            &label,
            "raibid-ci",
        );
        assert_eq!(
            ours,
            [object("ScaledJob", Some("raibid-ci"), "raibid-agent-arm64")]
        );
        assert_eq!(theirs.len(), 3);
        let err = refuse_foreign(&theirs).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "KEDA is in use beyond raibid-ci: ScaledObject/web (namespace shop), \
                 ScaledJob/hand-made (namespace raibid-ci), ClusterTriggerAuthentication/aws."
            ),
            "{err}"
        );
        assert!(err.contains("KEDA was left installed"), "{err}");
        assert!(refuse_foreign(&ours[..0]).is_ok());
    }

    /// Every raibid-ci installation labels its objects alike: a second one, in a namespace of
    /// its own, is not this one's to delete, whichever of the two is torn down.
    #[test]
    fn another_installation_s_objects_are_someone_else_s() {
        let label = (RAIBID_LABEL.0.to_owned(), RAIBID_LABEL.1.to_owned());
        let ours_label = || BTreeMap::from([(label.0.clone(), label.1.clone())]);
        let found = || {
            vec![
                (
                    object("ScaledJob", Some("raibid-ci"), "raibid-agent-arm64"),
                    ours_label(),
                ),
                (
                    object("TriggerAuthentication", Some("raibid-ci"), "raibid-redis"),
                    ours_label(),
                ),
                (
                    object("ScaledJob", Some("raibid-staging"), "raibid-agent-arm64"),
                    ours_label(),
                ),
                (
                    object(
                        "TriggerAuthentication",
                        Some("raibid-staging"),
                        "raibid-redis",
                    ),
                    ours_label(),
                ),
                // Labelled, but raibid's manifests have no cluster-scoped object.
                (
                    object("ClusterTriggerAuthentication", None, "raibid-redis"),
                    ours_label(),
                ),
            ]
        };
        let (ours, theirs) = partition(found(), &label, "raibid-ci");
        assert_eq!(
            ours,
            [
                object("ScaledJob", Some("raibid-ci"), "raibid-agent-arm64"),
                object("TriggerAuthentication", Some("raibid-ci"), "raibid-redis"),
            ]
        );
        assert_eq!(
            theirs,
            [
                object("ScaledJob", Some("raibid-staging"), "raibid-agent-arm64"),
                object(
                    "TriggerAuthentication",
                    Some("raibid-staging"),
                    "raibid-redis"
                ),
                object("ClusterTriggerAuthentication", None, "raibid-redis"),
            ]
        );
        let err = refuse_foreign(&theirs).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "KEDA is in use beyond raibid-ci: ScaledJob/raibid-agent-arm64 (namespace \
                 raibid-staging), TriggerAuthentication/raibid-redis (namespace \
                 raibid-staging), ClusterTriggerAuthentication/raibid-redis."
            ),
            "{err}"
        );
        // Torn down from the other installation, the first one's are the foreign ones.
        let (ours, theirs) = partition(found(), &label, "raibid-staging");
        assert_eq!(
            ours,
            [
                object("ScaledJob", Some("raibid-staging"), "raibid-agent-arm64"),
                object(
                    "TriggerAuthentication",
                    Some("raibid-staging"),
                    "raibid-redis"
                ),
            ]
        );
        assert_eq!(theirs.len(), 3);
        assert!(
            theirs
                .iter()
                .all(|o| o.namespace.as_deref() != Some("raibid-staging"))
        );
    }
}
