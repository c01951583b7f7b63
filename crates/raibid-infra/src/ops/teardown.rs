//! The teardown plan of each component. Data (volumes, generated Secrets, the namespace) is
//! only deleted with `--delete-data`; what is shared beyond raibid-ci (k3s, KEDA, the Flux
//! controllers) only with a flag that names the consequence.

use serde_json::json;

use super::Context;
use crate::InfraError;
use crate::components::Component;
use crate::helm::HelmInstall;
use crate::manifest::{Manifest, ObjectRef};
use crate::plan::{CommandLine, Plan, Step};
use crate::secrets::{self, SecretSpec};

/// Where the k3s installer puts its uninstaller.
pub const K3S_UNINSTALL: &str = "/usr/local/bin/k3s-uninstall.sh";

/// The flags of `raibid teardown`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TeardownOptions {
    /// Volumes, generated Secrets and the namespace too.
    pub delete_data: bool,
    /// `--yes-destroy-cluster`: needed for k3s.
    pub destroy_cluster: bool,
    /// `--yes-uninstall-keda`: needed for KEDA.
    pub uninstall_keda: bool,
    /// `--yes-uninstall-flux`: also remove the Flux controllers.
    pub uninstall_flux: bool,
}

pub const DESTROY_CLUSTER_FLAG: &str = "--yes-destroy-cluster";
pub const UNINSTALL_KEDA_FLAG: &str = "--yes-uninstall-keda";

pub fn teardown_plan(
    ctx: &Context<'_>,
    components: &[Component],
    options: &TeardownOptions,
) -> Result<Plan, InfraError> {
    // Refuse before building anything: a half-printed plan for a refused teardown misleads.
    if components.contains(&Component::K3s) && !options.destroy_cluster {
        return Err(InfraError::NeedsConfirmation {
            component: "k3s",
            consequence: "run /usr/local/bin/k3s-uninstall.sh, which deletes the whole k3s \
                          cluster on this node (every workload, not only raibid-ci's, even a \
                          cluster raibid did not install) and every volume on the node",
            flag: DESTROY_CLUSTER_FLAG,
        });
    }
    if components.contains(&Component::Keda) && !options.uninstall_keda {
        return Err(InfraError::NeedsConfirmation {
            component: "keda",
            consequence: "uninstall KEDA, whose chart owns its CRDs, for every workload in the \
                          cluster, not only raibid-ci (raibid's ScaledJobs are deleted first, and \
                          the teardown stops if anyone else's ScaledObjects or ScaledJobs exist)",
            flag: UNINSTALL_KEDA_FLAG,
        });
    }
    let mut ordered = components.to_vec();
    ordered.reverse();
    let names: Vec<&str> = ordered.iter().map(|c| c.name()).collect();
    let everything = Component::OWN.iter().all(|c| ordered.contains(c));
    let mut steps = Vec::new();
    // Before anything changes: someone else's KEDA objects stop a KEDA teardown.
    if ordered.contains(&Component::Keda) {
        steps.push(Step::CheckKedaObjects {
            label: keda_label(),
            namespace: ctx.namespace().to_owned(),
        });
    }
    // Flux first: while its Kustomizations exist it re-applies whatever the steps below delete.
    if ordered.contains(&Component::Flux) {
        steps.extend(flux_sync_steps(ctx)?);
    } else {
        steps.extend(suspend_component_syncs(ctx, &ordered)?);
    }
    for component in ordered.iter().filter(|c| **c != Component::K3s) {
        steps.extend(component_steps(ctx, *component, options)?);
        // The namespace goes with the last component that lives in it.
        if *component == Component::Redis && everything && options.delete_data {
            steps.push(namespace_step(ctx)?);
        }
    }
    // The Flux controllers after gitea's HelmRelease, which helm-controller uninstalls.
    steps.extend(flux_uninstall_steps(ctx, &ordered, options));
    if ordered.contains(&Component::K3s) {
        steps.extend(component_steps(ctx, Component::K3s, options)?);
    }
    Ok(Plan {
        title: format!(
            "raibid teardown {} (overlay {}, namespace {}{}):",
            names.join(" "),
            ctx.overlay,
            ctx.namespace(),
            if options.delete_data {
                ", deleting data"
            } else {
                ", keeping data"
            }
        ),
        steps,
    })
}

/// Removes the GitRepository and Kustomizations raibid applied without letting Flux delete what
/// they applied: with `prune: true`, deleting a Kustomization garbage-collects its objects,
/// which would take the namespace (and every volume in it) and the KEDA HelmRelease (and with
/// it KEDA) along. A suspended Kustomization, or one without pruning, is deleted alone.
fn flux_sync_steps(ctx: &Context<'_>) -> Result<Vec<Step>, InfraError> {
    let sync = ctx.shared("flux")?;
    let kustomizations: Vec<ObjectRef> = sync
        .iter()
        .filter(|m| m.kind() == "Kustomization")
        .map(Manifest::object_ref)
        .collect();
    Ok(vec![
        Step::Patch {
            what: "flux sync: stop it and switch off its garbage collection".into(),
            objects: kustomizations,
            patch: json!({"spec": {"suspend": true, "prune": false}}),
        },
        delete(
            "flux sync (GitRepository and Kustomizations; what they applied stays)",
            &sync,
        ),
    ])
}

/// Suspends the Flux Kustomizations (`raibid-<component>`) of the components torn down when
/// Flux itself stays: kustomize-controller would re-apply what the teardown deletes within its
/// interval. A KEDA teardown deletes the agents' ScaledJobs too, so `raibid-agents` is
/// suspended with it. Suspension alone, without switching pruning off: nothing deletes these
/// Kustomizations (a suspended one is not garbage-collected anyway), and `flux resume` should
/// give the component back to Flux as it was.
fn suspend_component_syncs(
    ctx: &Context<'_>,
    ordered: &[Component],
) -> Result<Vec<Step>, InfraError> {
    let mut names: Vec<String> = Vec::new();
    for component in ordered {
        if matches!(component, Component::K3s | Component::Flux) {
            continue;
        }
        names.push(format!("raibid-{component}"));
        if *component == Component::Keda {
            names.push(format!("raibid-{}", Component::Agents));
        }
    }
    let kustomizations: Vec<ObjectRef> = ctx
        .shared("flux")?
        .iter()
        .filter(|m| m.kind() == "Kustomization" && names.iter().any(|n| n == m.name()))
        .map(Manifest::object_ref)
        .collect();
    if kustomizations.is_empty() {
        return Ok(Vec::new());
    }
    let listed: Vec<String> = kustomizations.iter().map(|k| k.name.clone()).collect();
    let namespace = kustomizations[0].namespace.clone().unwrap_or_default();
    Ok(vec![
        Step::Patch {
            what: "Flux's sync of these components (if Flux syncs them): suspend it, or it \
                   re-applies what is deleted"
                .into(),
            objects: kustomizations,
            patch: json!({"spec": {"suspend": true}}),
        },
        Step::Note(format!(
            "a suspended Kustomization stays suspended: `flux resume kustomization -n \
             {namespace} {}` gives the component back to Flux (which re-applies it)",
            listed.join(" ")
        )),
    ])
}

fn flux_uninstall_steps(
    ctx: &Context<'_>,
    ordered: &[Component],
    options: &TeardownOptions,
) -> Vec<Step> {
    if !ordered.contains(&Component::Flux) {
        return Vec::new();
    }
    if !options.uninstall_flux {
        return vec![Step::Note(
            "the Flux controllers stay (other Flux objects in the cluster may need them); \
             --yes-uninstall-flux removes them"
                .into(),
        )];
    }
    vec![
        Step::Note(
            "`flux uninstall` removes the Flux controllers, their CRDs and every Flux object in \
             the cluster, but leaves what Flux applied running"
                .into(),
        ),
        Step::Run(
            CommandLine::new(
                "flux",
                vec![
                    "uninstall".into(),
                    "--silent".into(),
                    "--namespace".into(),
                    "flux-system".into(),
                ],
                "uninstall Flux",
            )
            .with_kubeconfig(&ctx.kubeconfig),
        ),
    ]
}

/// The namespace, deleted only if it carries the `managed-by` label raibid's manifests give it
/// (and setup never puts on a namespace that existed before): `cluster.namespace` may name a
/// namespace that holds other things.
fn namespace_step(ctx: &Context<'_>) -> Result<Step, InfraError> {
    let (object, label) = super::raibid_namespace(ctx)?;
    Ok(Step::DeleteNamespace {
        name: object.name().to_owned(),
        label,
    })
}

/// The claims a StatefulSet's volumeClaimTemplates produce: `<template>-<statefulset>-<ordinal>`,
/// named exactly, because a label selector also matches other charts' claims in a shared
/// namespace.
fn statefulset_claims(objects: &[Manifest]) -> Vec<ObjectRef> {
    let mut claims = Vec::new();
    for set in objects.iter().filter(|m| m.kind() == "StatefulSet") {
        let spec = &set.object["spec"];
        let replicas = spec["replicas"].as_u64().unwrap_or(1);
        let templates = spec["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten();
        for template in templates {
            let Some(template) = template["metadata"]["name"].as_str() else {
                continue;
            };
            for ordinal in 0..replicas {
                claims.push(claim(
                    set.namespace(),
                    format!("{template}-{}-{ordinal}", set.name()),
                ));
            }
        }
    }
    claims
}

/// Gitea's claim, named by `persistence.claimName` in its Helm values: the chart labels it only
/// with `persistence.labels` (not its release labels), so no selector finds it reliably.
fn gitea_claims(release: &HelmInstall) -> Result<Vec<ObjectRef>, InfraError> {
    let values: serde_json::Value = match &release.values {
        Some(text) => serde_yaml::from_str(text).map_err(|e| InfraError::Manifest {
            file: "gitea/values.yaml".into(),
            message: e.to_string(),
        })?,
        None => serde_json::Value::Null,
    };
    let persistence = &values["persistence"];
    if persistence["enabled"] == false || persistence["create"] == false {
        return Ok(Vec::new());
    }
    let name = persistence["claimName"]
        .as_str()
        .ok_or_else(|| InfraError::Manifest {
            file: "gitea/values.yaml".into(),
            message: "persistence.claimName is not set; teardown deletes Gitea's data by that \
                      name"
                .into(),
        })?;
    Ok(vec![claim(Some(&release.namespace), name.to_owned())])
}

fn claim(namespace: Option<&str>, name: String) -> ObjectRef {
    ObjectRef {
        api_version: "v1".into(),
        kind: "PersistentVolumeClaim".into(),
        namespace: namespace.map(str::to_owned),
        name,
    }
}

fn delete(what: &str, objects: &[Manifest]) -> Step {
    Step::Delete {
        what: what.to_owned(),
        objects: objects.iter().rev().map(Manifest::object_ref).collect(),
    }
}

fn delete_secret(ctx: &Context<'_>, spec: &SecretSpec) -> Step {
    Step::Delete {
        what: format!("Secret {}", spec.name),
        objects: vec![ObjectRef {
            api_version: "v1".into(),
            kind: "Secret".into(),
            namespace: Some(ctx.namespace().to_owned()),
            name: spec.name.to_owned(),
        }],
    }
}

fn keda_label() -> (String, String) {
    let (key, value) = super::keda::RAIBID_LABEL;
    (key.to_owned(), value.to_owned())
}

fn helm_uninstall(install: &HelmInstall) -> Step {
    Step::Run(install.uninstall_command())
}

fn component_steps(
    ctx: &Context<'_>,
    component: Component,
    options: &TeardownOptions,
) -> Result<Vec<Step>, InfraError> {
    let delete_data = options.delete_data;
    let mut steps = Vec::new();
    match component {
        Component::K3s => {
            steps.push(Step::Note(format!(
                "{DESTROY_CLUSTER_FLAG}: uninstalling k3s removes the cluster and every volume on \
                 this node"
            )));
            steps.push(Step::Run(CommandLine::new(
                K3S_UNINSTALL,
                Vec::new(),
                "uninstall k3s (the script the official installer left)",
            )));
        }
        Component::Redis => {
            let objects: Vec<Manifest> = ctx
                .overlay_component("redis")?
                .into_iter()
                .filter(|m| m.kind() != "Namespace")
                .collect();
            steps.push(delete("redis", &objects));
            if delete_data {
                steps.push(Step::Delete {
                    what: "redis data (its StatefulSet's PersistentVolumeClaims)".into(),
                    objects: statefulset_claims(&objects),
                });
                steps.push(delete_secret(ctx, &secrets::REDIS));
            }
        }
        Component::Gitea => {
            let objects = ctx.shared("gitea")?;
            let release =
                HelmInstall::from_release(&objects, "gitea", ctx.timeout, &ctx.kubeconfig)?;
            if ctx.tools.helm {
                steps.push(helm_uninstall(&release));
                // The Flux HelmRelease too (if Flux synced it): left behind, helm-controller
                // would install the chart again at its next reconcile.
                steps.push(delete("gitea address and Flux objects", &objects));
            } else {
                steps.push(delete("gitea (Flux uninstalls the chart)", &objects));
            }
            if delete_data {
                // Only here: a teardown that keeps the data needs no claim name.
                steps.push(Step::Delete {
                    what: "gitea data (the chart's PersistentVolumeClaim)".into(),
                    objects: gitea_claims(&release)?,
                });
                steps.push(delete_secret(ctx, &secrets::GITEA_ADMIN));
            }
        }
        Component::Keda => {
            // While the operator runs: it must release their finalizers.
            steps.push(Step::DeleteKedaObjects {
                label: keda_label(),
                namespace: ctx.namespace().to_owned(),
            });
            steps.push(Step::Note(format!(
                "{UNINSTALL_KEDA_FLAG}: uninstalling KEDA deletes its CRDs (no ScaledObject or \
                 ScaledJob is left)"
            )));
            let objects = ctx.shared("keda")?;
            if ctx.tools.helm {
                steps.push(helm_uninstall(&HelmInstall::from_release(
                    &objects,
                    "keda",
                    ctx.timeout,
                    &ctx.kubeconfig,
                )?));
                // As for gitea: a HelmRelease left behind would install KEDA again.
                steps.push(delete("keda Flux objects", &objects));
            } else {
                steps.push(delete("keda (Flux uninstalls the chart)", &objects));
            }
        }
        // Its sync objects go first and the controllers last (teardown_plan).
        Component::Flux => {}
        Component::Server => {
            steps.push(delete("server", &ctx.overlay_component("server")?));
            steps.push(super::delete_former_server_rbac(ctx));
            if delete_data {
                steps.push(delete_secret(ctx, &secrets::SERVER));
            }
        }
        Component::Agents => {
            let objects = ctx.overlay_component("agents")?;
            steps.push(delete("agents", &objects));
            // KEDA's finalizer on them goes with its operator: a KEDA teardown that follows
            // must not start before the operator has released them.
            let finalized: Vec<ObjectRef> = objects
                .iter()
                .filter(|m| super::keda::FINALIZED_KINDS.contains(&(m.api_version(), m.kind())))
                .map(Manifest::object_ref)
                .collect();
            if !finalized.is_empty() {
                steps.push(Step::WaitGone {
                    what: "the agents' KEDA objects".into(),
                    objects: finalized,
                });
            }
            if delete_data {
                steps.push(delete_secret(ctx, &secrets::AGENT_CREDENTIALS));
            }
        }
    }
    Ok(steps)
}
