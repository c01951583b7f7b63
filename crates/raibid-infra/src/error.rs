//! One error type for the crate. Every variant that a user can meet says what to do next,
//! because an operations command that fails without a next step just sends people to the docs.

use std::path::PathBuf;
use std::time::Duration;

use crate::preflight::PreflightError;
use crate::validate::ValidationReport;

#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{file}: {message}")]
    Manifest { file: String, message: String },

    #[error("{file}: {message}")]
    Kustomize { file: String, message: String },

    #[error("no kustomization named {name:?}; available: {}", available.join(", "))]
    UnknownTarget {
        name: String,
        available: Vec<String>,
    },

    #[error("{0}")]
    Invalid(ValidationReport),

    #[error("cannot apply the configuration to the manifests: {0}")]
    Configure(String),

    #[error(
        "no kubeconfig at {}: run `raibid setup k3s` or set cluster.kubeconfig \
         (k3s writes /etc/rancher/k3s/k3s.yaml)",
        path.display()
    )]
    NoKubeconfig { path: PathBuf },

    #[error("cannot use the kubeconfig {}: {message}", path.display())]
    Kubeconfig { path: PathBuf, message: String },

    #[error(
        "no cluster reachable at {server} (kubeconfig {}): {message}; run `raibid setup k3s` \
         or set cluster.kubeconfig",
        kubeconfig.display()
    )]
    Unreachable {
        server: String,
        kubeconfig: PathBuf,
        message: String,
    },

    #[error("the cluster does not know {kind} ({api_version}): {hint}")]
    UnknownKind {
        kind: String,
        api_version: String,
        hint: String,
    },

    #[error("{action} {object}: {message}")]
    Api {
        action: &'static str,
        object: String,
        message: String,
    },

    #[error(
        "{what} not ready after {}s (last seen: {last_state}); {hint}",
        waited.as_secs()
    )]
    Timeout {
        what: String,
        waited: Duration,
        last_state: String,
        hint: String,
    },

    /// Deleted objects that a finalizer keeps.
    #[error(
        "deleted, but still there after {}s: {objects} (last seen: {last_state}); {hint}",
        waited.as_secs()
    )]
    NotGone {
        objects: String,
        waited: Duration,
        last_state: String,
        hint: String,
    },

    /// KEDA objects outside raibid-ci: uninstalling KEDA would leave them stuck.
    #[error(
        "KEDA is in use beyond raibid-ci: {objects}. Uninstalling KEDA deletes its CRDs and \
         with them these objects, whose finalizer (finalizer.keda.sh) only KEDA's operator \
         removes, so they and the CRDs would stay Terminating; KEDA was left installed. Delete \
         them first, while KEDA runs, or keep KEDA"
    )]
    KedaInUse { objects: String },

    /// The controller gave up (a Deployment past its progress deadline): waiting longer is
    /// pointless.
    #[error("{what} failed: {message}; {hint}")]
    RolloutFailed {
        what: String,
        message: String,
        hint: String,
    },

    #[error("`{tool}` is not installed but is needed to {purpose}; {hint}")]
    ToolMissing {
        tool: String,
        purpose: String,
        hint: String,
    },

    #[error("`{command}` failed: {message}; {hint}")]
    Command {
        command: String,
        message: String,
        hint: String,
    },

    /// A teardown that reaches beyond raibid-ci (the whole cluster, a shared operator) runs only
    /// when the person typed a flag that says so.
    #[error(
        "`raibid teardown {component}` would {consequence}; nothing was changed. If that is what you want, add {flag}"
    )]
    NeedsConfirmation {
        component: &'static str,
        consequence: &'static str,
        flag: &'static str,
    },

    /// Setup would change a Secret that running workloads it does not apply read.
    #[error(
        "Secret {secret} would change (key {keys}), but {readers} read{s} it and this setup does \
         not apply {them}, so {they} would keep the old value; the Secret was left as it is. Run \
         `{command}` instead, which rolls {them} with the new value",
        s = if *several { "" } else { "s" },
        them = if *several { "them" } else { "it" },
        they = if *several { "they" } else { "it" }
    )]
    StaleReaders {
        secret: String,
        keys: String,
        readers: String,
        several: bool,
        command: String,
    },

    #[error("{field} = {value:?} in the configuration is not allowed: expected {expected}")]
    InvalidSetting {
        field: &'static str,
        value: String,
        expected: &'static str,
    },

    #[error("{what} needs a step raibid cannot do for you:\n{instructions}")]
    ManualStep { what: String, instructions: String },

    #[error("{0}")]
    Preflight(#[from] PreflightError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_readers_name_the_setup_that_rolls_them() {
        let err = InfraError::StaleReaders {
            secret: "raibid-ci/raibid-redis".into(),
            keys: "password".into(),
            readers: "Deployment/raibid-server (namespace raibid-ci)".into(),
            several: false,
            command: "raibid setup redis server".into(),
        };
        assert_eq!(
            err.to_string(),
            "Secret raibid-ci/raibid-redis would change (key password), but \
             Deployment/raibid-server (namespace raibid-ci) reads it and this setup does not \
             apply it, so it would keep the old value; the Secret was left as it is. Run \
             `raibid setup redis server` instead, which rolls it with the new value"
        );
    }
}
