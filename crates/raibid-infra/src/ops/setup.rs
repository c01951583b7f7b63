//! The setup plan of each component.

use super::{Context, readiness_of};
use crate::InfraError;
use crate::cluster::K3S_KUBECONFIG;
use crate::cluster::Readiness;
use crate::components::Component;
use crate::helm::HelmInstall;
use crate::k3s::{K3sInstall, KUBECONFIG_FOR_USER, KUBECONFIG_MODE};
use crate::manifest::Manifest;
use crate::plan::{CommandLine, OtherReaders, Plan, Step};
use crate::secret_checksum;
use crate::secrets::{self, SecretSpec};

pub fn setup_plan(ctx: &Context<'_>, components: &[Component]) -> Result<Plan, InfraError> {
    let components = &crate::components::setup_order(components, ctx.tools)[..];
    let names: Vec<&str> = components.iter().map(|c| c.name()).collect();
    let mut steps: Vec<Step> = Vec::new();
    for component in components {
        for step in component_steps(ctx, *component)? {
            // Several components need the namespace and the same Secrets; once is enough.
            let repeated = match &step {
                Step::ApplyNamespace { .. } => steps
                    .iter()
                    .any(|s| matches!(s, Step::ApplyNamespace { .. })),
                Step::EnsureSecret { spec, .. } => steps.iter().any(
                    |s| matches!(s, Step::EnsureSecret { spec: earlier, .. } if earlier.name == spec.name),
                ),
                _ => false,
            };
            if !repeated {
                steps.push(step);
            }
        }
    }
    let readers = workloads_outside(ctx, components)?;
    for step in &mut steps {
        let Step::EnsureSecret {
            spec,
            other_readers,
            ..
        } = step
        else {
            continue;
        };
        let mut objects = Vec::new();
        let mut with_them = components.to_vec();
        for (component, object) in &readers {
            if secret_checksum::secrets_read(object).contains(spec.name) {
                objects.push(object.object_ref());
                with_them.push(*component);
            }
        }
        if objects.is_empty() {
            continue;
        }
        let with_them = crate::components::setup_order(&with_them, ctx.tools);
        let names: Vec<&str> = with_them.iter().map(|c| c.name()).collect();
        let overlay = match ctx.overlay {
            "dev" => String::new(),
            other => format!(" --overlay {}", crate::plan::shell_quote(other)),
        };
        *other_readers = Some(OtherReaders {
            objects,
            command: format!("raibid setup {}{overlay}", names.join(" ")),
        });
    }
    Ok(Plan {
        title: format!(
            "raibid setup {} (overlay {}, namespace {}):",
            names.join(" "),
            ctx.overlay,
            ctx.namespace()
        ),
        steps,
    })
}

fn ensure_secret(ctx: &Context<'_>, spec: &'static SecretSpec) -> Result<Step, InfraError> {
    Ok(Step::EnsureSecret {
        spec,
        namespace: ctx.namespace().to_owned(),
        sources: secrets::sources(spec, ctx.config)?,
        other_readers: None,
    })
}

/// The Deployments and StatefulSets of the overlay's components that are not in `components`,
/// with their component. (ScaledJobs are not among them: each agent pod reads the Secrets
/// afresh when it starts.)
fn workloads_outside(
    ctx: &Context<'_>,
    components: &[Component],
) -> Result<Vec<(Component, Manifest)>, InfraError> {
    let mut out = Vec::new();
    for component in [Component::Redis, Component::Server, Component::Agents] {
        if components.contains(&component) {
            continue;
        }
        let objects = match ctx.overlay_component(component.name()) {
            Ok(objects) => objects,
            // An overlay of one's own may lack a component it never deploys.
            Err(InfraError::UnknownTarget { .. }) => continue,
            Err(e) => return Err(e),
        };
        out.extend(
            objects
                .into_iter()
                .filter(|m| matches!(m.kind(), "StatefulSet" | "Deployment"))
                .map(|m| (component, m)),
        );
    }
    Ok(out)
}

fn apply_and_wait(what: &str, objects: Vec<Manifest>) -> Vec<Step> {
    let waits = readiness_of(&objects).into_iter().map(Step::Wait);
    std::iter::once(Step::Apply {
        what: what.to_owned(),
        objects,
    })
    .chain(waits)
    .collect()
}

fn component_steps(ctx: &Context<'_>, component: Component) -> Result<Vec<Step>, InfraError> {
    let namespace = || super::namespace_step(ctx);
    let mut steps = Vec::new();
    match component {
        Component::K3s => {
            let install = K3sInstall::for_config(ctx.config)?;
            if matches!(install, K3sInstall::Installer { .. }) {
                steps.push(Step::Note(format!(
                    "the kubeconfig k3s writes ({K3S_KUBECONFIG}) is readable by root only (mode \
                     {KUBECONFIG_MODE}, it holds cluster-admin credentials); to use the cluster as \
                     another user: {KUBECONFIG_FOR_USER}"
                )));
            }
            steps.push(Step::InstallK3s(install));
            steps.push(Step::Wait(Readiness::Nodes));
        }
        Component::Redis => {
            let mut objects: Vec<Manifest> = ctx
                .overlay_component("redis")?
                .into_iter()
                .filter(|m| m.kind() != "Namespace")
                .collect();
            secret_checksum::annotate(&mut objects, ctx.config)?;
            steps.push(namespace()?);
            steps.push(ensure_secret(ctx, &secrets::REDIS)?);
            steps.extend(apply_and_wait("redis", objects));
        }
        Component::Gitea => {
            steps.push(namespace()?);
            steps.push(ensure_secret(ctx, &secrets::GITEA_ADMIN)?);
            let objects = ctx.shared("gitea")?;
            if ctx.tools.helm {
                steps.push(Step::Helm(HelmInstall::from_release(
                    &objects,
                    "gitea",
                    ctx.timeout,
                    &ctx.kubeconfig,
                )?));
                let alias = objects
                    .into_iter()
                    .filter(|m| m.kind() == "Service")
                    .collect();
                steps.push(Step::Apply {
                    what: "gitea address".into(),
                    objects: alias,
                });
            } else {
                steps.push(Step::Note(
                    "helm is not installed: Flux's helm-controller installs the chart, so Flux must \
                     be running (`raibid setup flux`)"
                        .into(),
                ));
                steps.extend(apply_and_wait("gitea (Flux HelmRelease)", objects));
            }
        }
        Component::Keda => {
            let objects = ctx.shared("keda")?;
            if ctx.tools.helm {
                steps.push(Step::Helm(HelmInstall::from_release(
                    &objects,
                    "keda",
                    ctx.timeout,
                    &ctx.kubeconfig,
                )?));
            } else {
                steps.push(Step::Note(
                    "helm is not installed: Flux's helm-controller installs the chart, so Flux must \
                     be running (`raibid setup flux`)"
                        .into(),
                ));
                steps.extend(apply_and_wait("keda (Flux HelmRelease)", objects));
            }
        }
        Component::Flux => {
            if !ctx.tools.flux {
                steps.push(Step::Note(format!(
                    "the flux CLI is not installed, so the next step will fail: {}",
                    crate::tools::install_hint("flux")
                )));
            }
            steps.push(Step::Run(
                CommandLine::new(
                    "flux",
                    vec!["install".into(), "--namespace".into(), "flux-system".into()],
                    format!(
                        "install the Flux controllers (raibid is tested with Flux {})",
                        ctx.config.flux.version
                    ),
                )
                .with_kubeconfig(&ctx.kubeconfig),
            ));
            // The workloads Flux will apply need these Secrets, which are not in git.
            steps.push(namespace()?);
            for spec in secrets::CATALOG {
                steps.push(ensure_secret(ctx, spec)?);
            }
            steps.push(Step::Apply {
                what: "flux sync (GitRepository and Kustomizations)".into(),
                objects: ctx.shared("flux")?,
            });
            steps.push(Step::Note(format!(
                "Flux now syncs {} (branch {}, overlay {}): push this repository's infra/ there; \
                 `raibid status flux` shows the sync",
                ctx.config.flux.git_repo, ctx.config.flux.branch, ctx.config.flux.path
            )));
        }
        Component::Server => {
            steps.push(namespace()?);
            steps.push(ensure_secret(ctx, &secrets::SERVER)?);
            let mut objects = ctx.overlay_component("server")?;
            secret_checksum::annotate(&mut objects, ctx.config)?;
            steps.extend(apply_and_wait("server", objects));
            steps.push(super::delete_former_server_rbac(ctx));
        }
        Component::Agents => {
            let mut objects = ctx.overlay_component("agents")?;
            secret_checksum::annotate(&mut objects, ctx.config)?;
            let checks = crate::image_checks::scaled_job_images(&objects);
            if !checks.is_empty() {
                steps.push(Step::CheckImages(checks));
            }
            let gpu_jobs: Vec<String> = objects
                .iter()
                .filter(|m| m.kind() == "ScaledJob" && crate::cluster::requests_gpus(&m.object))
                .map(|m| format!("ScaledJob {}", m.name()))
                .collect();
            if !gpu_jobs.is_empty() {
                steps.push(Step::CheckGpuNodes {
                    scaled_jobs: gpu_jobs,
                });
            }
            steps.push(namespace()?);
            steps.push(ensure_secret(ctx, &secrets::AGENT_CREDENTIALS)?);
            steps.extend(apply_and_wait("agents", objects));
        }
    }
    Ok(steps)
}
