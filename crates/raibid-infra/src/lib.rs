//! raibid-ci on Kubernetes.
//!
//! * The manifests: the repository's `infra/` tree (Kustomize base, `dev`/`prod`/`argocd`
//!   overlays, Flux, KEDA and Gitea), embedded in the binary ([`Tree::embedded`]) and rendered
//!   by a Rust implementation of the Kustomize subset it uses ([`render`]), so no `kubectl` is
//!   needed.
//! * Offline validation ([`validate()`]): Kubernetes 1.35 OpenAPI schemas and the KEDA and Flux
//!   CRD schemas, strict conversion into `k8s-openapi` types, house rules, and agreement with
//!   the raibid configuration (stream and group names, pools). Errors name file, object and
//!   field.
//! * Operations: `raibid setup|teardown <component>` as plans ([`ops`]) built without a
//!   cluster and printed in full by `--dry-run`, executed with server-side apply (field manager
//!   `raibid`); `raibid status` reads the cluster ([`cluster_status`]).
//! * The image-architecture preflight ([`preflight`]).
//!
//! Invariant: only this crate knows Kubernetes. The `raibid` binary calls [`run_infra`],
//! [`setup`], [`teardown`], [`status`] and [`cluster_status`] and nothing else.

mod cli;
pub mod cluster;
mod components;
mod configure;
mod drift;
mod error;
mod helm;
mod k3s;
mod kinds;
mod kustomize;
mod manifest;
pub mod ops;
mod path;
mod plan;
/// The image-architecture preflight, its own crate so that agents use it without Kubernetes.
pub use raibid_oci as preflight;
pub mod image_checks;
mod render;
mod secret_checksum;
mod secrets;
mod tools;
mod tree;
pub mod validate;

pub use cli::{
    InfraCommand, SetupArgs, StatusArgs, TeardownArgs, run_infra, run_infra_to, setup, setup_to,
    status, teardown, teardown_to,
};
pub use cluster::{ClusterStatus, cluster_status};
pub use components::{Component, ComponentArg, expand as expand_components};
pub use configure::{DEFAULT_NAMESPACE, apply_config};
pub use drift::{Drift, drift};
pub use error::InfraError;
pub use helm::HelmInstall;
pub use k3s::K3sInstall;
pub use kinds::{KINDS, KindInfo, lookup as lookup_kind};
pub use manifest::{Manifest, ObjectRef, parse_documents, to_yaml_stream};
pub use path::{FieldPath, Segment};
/// How the plans print commands, for other commands that print one to be run again.
pub use plan::shell_quote;
pub use plan::{CommandLine, Plan, Step};
pub use render::{render, render_as_is, resolve_target, sort_for_apply};
pub use secrets::{CATALOG as SECRETS, KeySource, SecretSpec, build as secret_manifest};
pub use tools::Tools;
pub use tree::Tree;
pub use validate::{Issue, ValidationReport, validate, validate_structure};
