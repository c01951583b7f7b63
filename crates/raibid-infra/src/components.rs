//! The parts of a raibid-ci cluster and the order they depend on each other in.

use std::fmt;

use serde::Serialize;

use crate::tools::Tools;

/// A deployable part. The declaration order is the dependency order: setup walks it forwards,
/// teardown backwards; without helm, setup moves Flux before Gitea and KEDA ([`setup_order`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    /// The Kubernetes distribution itself (single node).
    K3s,
    /// The job queue; also creates the namespace.
    Redis,
    /// Forge, container registry and home of the cluster-config repository.
    Gitea,
    /// The autoscaler that turns queue lag into agent Jobs.
    Keda,
    /// GitOps: keeps the cluster in sync with the cluster-config repository.
    Flux,
    /// Webhooks in, jobs out, statuses back.
    Server,
    /// One ScaledJob per pool.
    Agents,
}

impl Component {
    pub const ALL: [Component; 7] = [
        Self::K3s,
        Self::Redis,
        Self::Gitea,
        Self::Keda,
        Self::Flux,
        Self::Server,
        Self::Agents,
    ];

    /// What `raibid teardown all` removes: what raibid deploys into its own namespace, and the
    /// Flux objects it applied. Not k3s (it may be a cluster raibid never installed, and
    /// uninstalling it deletes every workload and volume on the node) and not KEDA (its chart
    /// owns the CRDs, so uninstalling it deletes every ScaledObject and ScaledJob in the
    /// cluster): those two go only when named, with a confirmation flag.
    pub const OWN: [Component; 5] = [
        Self::Redis,
        Self::Gitea,
        Self::Flux,
        Self::Server,
        Self::Agents,
    ];

    /// What must be running first, given the tools setup can use.
    pub fn needs(self, tools: Tools) -> &'static [Component] {
        match self {
            Self::K3s => &[],
            Self::Redis => &[Self::K3s],
            // Without helm, their charts are Flux HelmReleases: Flux's CRDs and helm-controller
            // must be there.
            Self::Gitea if !tools.helm => &[Self::K3s, Self::Flux],
            Self::Gitea => &[Self::K3s],
            // KEDA's operator reads the stream lag from Redis.
            Self::Keda if !tools.helm => &[Self::Redis, Self::Flux],
            Self::Keda => &[Self::Redis],
            // Flux syncs from a repository in Gitea; without helm it must come first anyway, and
            // its sync waits until the repository is there.
            Self::Flux if !tools.helm => &[Self::K3s],
            Self::Flux => &[Self::Gitea],
            Self::Server => &[Self::Redis],
            Self::Agents => &[Self::Keda, Self::Server],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::K3s => "k3s",
            Self::Redis => "redis",
            Self::Gitea => "gitea",
            Self::Keda => "keda",
            Self::Flux => "flux",
            Self::Server => "server",
            Self::Agents => "agents",
        }
    }

    /// Namespace and label selector of this component's pods.
    pub fn pods(self, namespace: &str) -> Option<(String, String)> {
        let (ns, selector) = match self {
            Self::K3s => return None,
            Self::Redis => (
                namespace,
                "app.kubernetes.io/name=redis,app.kubernetes.io/part-of=raibid-ci",
            ),
            Self::Server => (
                namespace,
                "app.kubernetes.io/name=raibid,app.kubernetes.io/component=server",
            ),
            Self::Agents => (
                namespace,
                "app.kubernetes.io/name=raibid,app.kubernetes.io/component=agent",
            ),
            Self::Gitea => (namespace, "app.kubernetes.io/name=gitea"),
            Self::Keda => ("keda", ""),
            Self::Flux => ("flux-system", ""),
        };
        Some((ns.to_owned(), selector.to_owned()))
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The order setup runs `components` in: the declaration order, except that without helm Flux
/// comes before Gitea and KEDA, whose charts its helm-controller then installs (their
/// HelmReleases need Flux's CRDs).
pub fn setup_order(components: &[Component], tools: Tools) -> Vec<Component> {
    let rank = |c: &Component| match c {
        Component::Flux if !tools.helm => Component::Gitea as u8 * 2 - 1,
        other => *other as u8 * 2,
    };
    let mut ordered = components.to_vec();
    ordered.sort_by_key(rank);
    ordered.dedup();
    ordered
}

/// A component on the command line, or `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ComponentArg {
    K3s,
    Redis,
    Gitea,
    Keda,
    Flux,
    Server,
    Agents,
    All,
}

/// The components named, without duplicates, in dependency order (`all` is everything).
pub fn expand(args: &[ComponentArg]) -> Vec<Component> {
    expand_with(args, &Component::ALL)
}

/// [`expand`] for teardown, where `all` means [`Component::OWN`]: k3s and KEDA are shared with
/// whatever else runs on the cluster, so they are only torn down when named.
pub fn expand_teardown(args: &[ComponentArg]) -> Vec<Component> {
    expand_with(args, &Component::OWN)
}

fn expand_with(args: &[ComponentArg], all: &[Component]) -> Vec<Component> {
    let mut out: Vec<Component> = args
        .iter()
        .flat_map(|arg| match arg {
            ComponentArg::All => all.to_vec(),
            ComponentArg::K3s => vec![Component::K3s],
            ComponentArg::Redis => vec![Component::Redis],
            ComponentArg::Gitea => vec![Component::Gitea],
            ComponentArg::Keda => vec![Component::Keda],
            ComponentArg::Flux => vec![Component::Flux],
            ComponentArg::Server => vec![Component::Server],
            ComponentArg::Agents => vec![Component::Agents],
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dependency_comes_first() {
        for helm in [true, false] {
            let tools = Tools { helm, flux: true };
            let order = setup_order(&Component::ALL, tools);
            assert_eq!(order.len(), Component::ALL.len());
            for (i, component) in order.iter().enumerate() {
                for need in component.needs(tools) {
                    let at = order.iter().position(|c| c == need).unwrap();
                    assert!(
                        at < i,
                        "helm {helm}: {component} needs {need}, which comes later"
                    );
                }
            }
        }
        // With helm, the declaration order.
        assert_eq!(
            setup_order(
                &Component::ALL,
                Tools {
                    helm: true,
                    flux: true
                }
            ),
            Component::ALL
        );
    }

    #[test]
    fn expands_in_dependency_order() {
        assert_eq!(
            expand(&[
                ComponentArg::Agents,
                ComponentArg::Redis,
                ComponentArg::Agents
            ]),
            [Component::Redis, Component::Agents]
        );
        assert_eq!(expand(&[ComponentArg::All]), Component::ALL);
    }

    #[test]
    fn teardown_all_leaves_k3s_and_keda_unless_named() {
        let all = expand_teardown(&[ComponentArg::All]);
        assert!(!all.contains(&Component::K3s) && !all.contains(&Component::Keda));
        assert_eq!(
            expand_teardown(&[ComponentArg::All, ComponentArg::K3s]).first(),
            Some(&Component::K3s)
        );
    }
}
