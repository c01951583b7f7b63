//! `raibid setup|teardown <component>`: plans built from the rendered manifests, then executed.

mod execute;
mod keda;
mod setup;
mod teardown;

use std::path::PathBuf;
use std::time::Duration;

use raibid_config::Config;

pub use execute::Executor;
pub use setup::setup_plan;
pub use teardown::{TeardownOptions, teardown_plan};

use crate::InfraError;
use crate::cluster::Readiness;
use crate::manifest::Manifest;
use crate::render::render;
use crate::tools::Tools;
use crate::tree::Tree;

/// Everything a plan depends on; nothing here needs a cluster.
pub struct Context<'a> {
    pub config: &'a Config,
    pub tree: &'a Tree,
    /// `dev`, `prod`, or a path below `infra/` whose `redis`, `server` and `agents`
    /// subdirectories are the components.
    pub overlay: &'a str,
    pub tools: Tools,
    /// How long each wait (and `helm --wait`) may take.
    pub timeout: Duration,
    /// Given to helm and flux, so that they act on the cluster raibid itself applies to
    /// ([`crate::cluster::planned_kubeconfig`]).
    pub kubeconfig: PathBuf,
}

impl Context<'_> {
    pub fn namespace(&self) -> &str {
        &self.config.cluster.namespace
    }

    /// A component directory of the overlay (`dev/redis`).
    fn overlay_component(&self, component: &str) -> Result<Vec<Manifest>, InfraError> {
        render(
            self.tree,
            &format!("{}/{component}", self.overlay.trim_end_matches('/')),
            self.config,
        )
    }

    /// A directory shared by every overlay (`keda`, `gitea`, `flux`).
    fn shared(&self, dir: &str) -> Result<Vec<Manifest>, InfraError> {
        render(self.tree, dir, self.config)
    }

    /// The namespace object (it lives with Redis, the first component applied).
    fn namespace_object(&self) -> Result<Vec<Manifest>, InfraError> {
        Ok(self
            .overlay_component("redis")?
            .into_iter()
            .filter(|m| m.kind() == "Namespace")
            .collect())
    }
}

const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// The namespace and the label that marks it as raibid's: setup applies it only when absent or
/// already raibid's, teardown deletes it only when raibid's.
/// raibid's Namespace object and the `managed-by` label that tells it from a namespace that
/// existed before: setup applies it, teardown deletes it only if it carries the label.
fn raibid_namespace(ctx: &Context<'_>) -> Result<(Manifest, (String, String)), InfraError> {
    let namespace = ctx.namespace_object()?;
    let [object] = namespace.as_slice() else {
        return Err(InfraError::Manifest {
            file: format!("{}/redis", ctx.overlay),
            message: format!("expected one Namespace, found {}", namespace.len()),
        });
    };
    let value = object
        .label(MANAGED_BY)
        .ok_or_else(|| InfraError::Manifest {
            file: object.source.clone(),
            message: format!(
                "{} has no {MANAGED_BY} label, which tells raibid's namespace from one that \
             existed before",
                object.object_ref()
            ),
        })?;
    Ok((object.clone(), (MANAGED_BY.to_owned(), value.to_owned())))
}

fn namespace_step(ctx: &Context<'_>) -> Result<crate::plan::Step, InfraError> {
    let (object, label) = raibid_namespace(ctx)?;
    Ok(crate::plan::Step::ApplyNamespace { object, label })
}

/// The Role and RoleBinding `raibid-server` that earlier versions gave the server, which never
/// used them: setup and teardown of the server delete them (already absent is fine), since
/// server-side apply does not remove what the manifests no longer have. A kubeconfig without
/// rights to RBAC objects, which the server no longer needs, gets a 403 whether or not they
/// exist: that is a note, not a failure.
fn delete_former_server_rbac(ctx: &Context<'_>) -> crate::plan::Step {
    let namespace = ctx.namespace();
    crate::plan::Step::DeleteLeftovers {
        what: "the server's former Role and RoleBinding (it never used the API)".into(),
        objects: ["Role", "RoleBinding"]
            .into_iter()
            .map(|kind| crate::manifest::ObjectRef {
                api_version: "rbac.authorization.k8s.io/v1".into(),
                kind: kind.into(),
                namespace: Some(namespace.to_owned()),
                name: "raibid-server".into(),
            })
            .collect(),
        forbidden: format!(
            "could not check for the former Role/RoleBinding: no rights to RBAC objects; delete \
             them by hand if they exist: `kubectl -n {namespace} delete role/raibid-server \
             rolebinding/raibid-server --ignore-not-found`"
        ),
    }
}

/// What to wait for after applying `objects`.
fn readiness_of(objects: &[Manifest]) -> Vec<Readiness> {
    objects
        .iter()
        .filter_map(|m| {
            let namespace = m.namespace().unwrap_or_default().to_owned();
            let name = m.name().to_owned();
            match m.kind() {
                "StatefulSet" | "Deployment" => Some(Readiness::Rollout {
                    kind: m.kind().to_owned(),
                    namespace,
                    name,
                }),
                "ScaledJob" => Some(Readiness::Reconciled {
                    api_version: m.api_version().to_owned(),
                    kind: m.kind().to_owned(),
                    namespace,
                    name,
                }),
                "HelmRelease" => Some(Readiness::Condition {
                    api_version: m.api_version().to_owned(),
                    kind: m.kind().to_owned(),
                    namespace,
                    name,
                }),
                _ => None,
            }
        })
        .collect()
}
