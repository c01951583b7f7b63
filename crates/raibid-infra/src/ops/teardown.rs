//! The teardown plan of each component, in reverse dependency order. Data (volumes, generated
//! Secrets, the namespace) is only deleted with `--delete-data`.

use super::Context;
use crate::InfraError;
use crate::components::Component;
use crate::helm::{self, HelmInstall};
use crate::manifest::{Manifest, ObjectRef};
use crate::plan::{CommandLine, Plan, Step};
use crate::secrets::{self, SecretSpec};

/// Where the k3s installer puts its uninstaller.
pub const K3S_UNINSTALL: &str = "/usr/local/bin/k3s-uninstall.sh";

pub fn teardown_plan(
    ctx: &Context<'_>,
    components: &[Component],
    delete_data: bool,
) -> Result<Plan, InfraError> {
    let mut ordered = components.to_vec();
    ordered.reverse();
    let names: Vec<&str> = ordered.iter().map(|c| c.name()).collect();
    let everything = Component::ALL.iter().all(|c| ordered.contains(c));
    let mut steps = Vec::new();
    for component in &ordered {
        steps.extend(component_steps(ctx, *component, delete_data)?);
        // The namespace goes with the last component that lives in it, before k3s itself.
        if *component == Component::Redis && everything && delete_data {
            steps.push(Step::Delete {
                what: "namespace (and anything left in it)".into(),
                objects: ctx
                    .namespace_object()?
                    .iter()
                    .map(Manifest::object_ref)
                    .collect(),
            });
        }
    }
    Ok(Plan {
        title: format!(
            "raibid teardown {} (overlay {}, namespace {}{}):",
            names.join(" "),
            ctx.overlay,
            ctx.namespace(),
            if delete_data {
                ", deleting data"
            } else {
                ", keeping data"
            }
        ),
        steps,
    })
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

fn helm_uninstall(install: &HelmInstall) -> Step {
    Step::Run(CommandLine::new(
        "helm",
        helm::uninstall_args(&install.release, &install.namespace),
        format!("uninstall the {} chart", install.chart),
    ))
}

fn component_steps(
    ctx: &Context<'_>,
    component: Component,
    delete_data: bool,
) -> Result<Vec<Step>, InfraError> {
    let mut steps = Vec::new();
    match component {
        Component::K3s => {
            steps.push(Step::Note(
                "uninstalling k3s removes the cluster and every volume on this node".into(),
            ));
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
                steps.push(Step::DeleteClaims {
                    namespace: ctx.namespace().to_owned(),
                    selector: "app.kubernetes.io/name=redis".into(),
                });
                steps.push(delete_secret(ctx, &secrets::REDIS));
            }
        }
        Component::Gitea => {
            let objects = ctx.shared("gitea")?;
            if ctx.tools.helm {
                steps.push(helm_uninstall(&HelmInstall::from_release(
                    &objects,
                    "gitea",
                    ctx.timeout,
                )?));
                let alias: Vec<Manifest> = objects
                    .into_iter()
                    .filter(|m| m.kind() == "Service")
                    .collect();
                steps.push(delete("gitea address", &alias));
            } else {
                steps.push(delete("gitea (Flux uninstalls the chart)", &objects));
            }
            if delete_data {
                steps.push(Step::DeleteClaims {
                    namespace: ctx.namespace().to_owned(),
                    selector: "app.kubernetes.io/instance=gitea".into(),
                });
                steps.push(delete_secret(ctx, &secrets::GITEA_ADMIN));
            }
        }
        Component::Keda => {
            let objects = ctx.shared("keda")?;
            if ctx.tools.helm {
                steps.push(helm_uninstall(&HelmInstall::from_release(
                    &objects,
                    "keda",
                    ctx.timeout,
                )?));
            } else {
                steps.push(delete("keda (Flux uninstalls the chart)", &objects));
            }
        }
        Component::Flux => {
            steps.push(Step::Note(
                "`flux uninstall` removes Flux and its objects but leaves what Flux applied running"
                    .into(),
            ));
            steps.push(Step::Run(CommandLine::new(
                "flux",
                vec![
                    "uninstall".into(),
                    "--silent".into(),
                    "--namespace".into(),
                    "flux-system".into(),
                ],
                "uninstall Flux",
            )));
        }
        Component::Server => {
            steps.push(delete("server", &ctx.overlay_component("server")?));
            if delete_data {
                steps.push(delete_secret(ctx, &secrets::SERVER));
            }
        }
        Component::Agents => {
            steps.push(delete("agents", &ctx.overlay_component("agents")?));
        }
    }
    Ok(steps)
}
