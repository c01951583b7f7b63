//! Rendering a deployment target: Kustomize, then the raibid configuration, then apply order.

use raibid_config::Config;

use crate::InfraError;
use crate::configure::apply_config;
use crate::kinds;
use crate::kustomize;
use crate::manifest::Manifest;
use crate::tree::Tree;

/// Resolves a target name: `dev` means `overlays/dev`; anything else is a directory of the tree
/// with a kustomization (`base/redis`, `flux`, `gitea`).
pub fn resolve_target(tree: &Tree, name: &str) -> Result<String, InfraError> {
    let name = name.trim_matches('/');
    let name = name.strip_prefix("infra/").unwrap_or(name);
    let available = tree.kustomization_dirs();
    [format!("overlays/{name}"), name.to_owned()]
        .into_iter()
        .find(|candidate| available.contains(candidate))
        .ok_or_else(|| InfraError::UnknownTarget {
            name: name.to_owned(),
            available,
        })
}

/// The objects of `target` exactly as the tree describes them, in apply order.
pub fn render_as_is(tree: &Tree, target: &str) -> Result<Vec<Manifest>, InfraError> {
    let dir = resolve_target(tree, target)?;
    let mut objects = kustomize::build(tree, &dir)?;
    sort_for_apply(&mut objects);
    Ok(objects)
}

/// The objects of `target` with `config` applied: what `raibid setup` sends to the cluster.
pub fn render(tree: &Tree, target: &str, config: &Config) -> Result<Vec<Manifest>, InfraError> {
    let mut objects = render_as_is(tree, target)?;
    apply_config(&mut objects, config)?;
    Ok(objects)
}

/// Namespaces first, custom resources last; the order within a rank is the tree's.
pub fn sort_for_apply(objects: &mut [Manifest]) {
    objects.sort_by_key(|m| kinds::apply_rank(m.api_version(), m.kind()));
}
