//! Image-architecture preflight: before a job's pod is created or a step's image is used,
//! check that the image has a `linux/<arch>` manifest for the pool's architecture, so that a
//! job fails in seconds with a list of what the image does have, instead of an `exec format
//! error` (or a pod that never schedules) minutes later.
//!
//! [`platform_in_index`] is the pure decision on an index the caller fetched; [`check_image`]
//! fetches the manifest itself over the registry v2 API.
//!
//! The same client pushes and pulls jobs' artifacts ([`push_artifact`], [`pull_artifact`]),
//! which live on the forge's registry beside the images the jobs build.

mod artifact;
mod fetch;
mod index;
mod reference;

pub use artifact::{
    ARTIFACT_TYPE, ArtifactDownload, LAYER_MEDIA_TYPE, LAYER_TITLE, PushedArtifact,
    delete_artifact, open_artifact, pull_artifact, push_artifact,
};
pub use fetch::{FetchOptions, ImageCheck, check_image};
pub use index::{
    ACCEPT, IndexEntry, Manifest, Platform, check_config, normalize_arch, parse_manifest,
    platform_in_index, select_platform,
};
pub use reference::ImageReference;

impl PreflightError {
    /// Whether the error is a verdict on the image itself (it lacks the architecture, or is
    /// no image reference at all), as opposed to a registry that could not be asked. Callers
    /// refuse the image on a verdict and let the engine or the nodes try otherwise.
    pub fn is_verdict(&self) -> bool {
        matches!(self, Self::MissingArch { .. } | Self::BadReference { .. })
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PreflightError {
    #[error("invalid image reference {image:?}: {reason}")]
    BadReference { image: String, reason: String },

    #[error(
        "{image} has no {wanted} image (it has: {}); build and push it for {wanted} \
         (e.g. `buildah build --platform {wanted}`), use a multi-arch image, or send the job to \
         a pool of an architecture it has",
        if available.is_empty() { "no platforms".to_owned() } else { available.join(", ") }
    )]
    MissingArch {
        image: String,
        wanted: String,
        available: Vec<String>,
    },

    #[error("{image}: unexpected manifest: {message}")]
    BadManifest { image: String, message: String },

    #[error("cannot reach the registry {registry} for {image}: {message}")]
    Unreachable {
        registry: String,
        image: String,
        message: String,
    },

    #[error("cannot authenticate to {registry} for {image}: {message}")]
    Auth {
        registry: String,
        image: String,
        message: String,
    },

    #[error("the registry refused {image} (HTTP {status}): {message}")]
    Refused {
        image: String,
        status: u16,
        message: String,
    },

    #[error("{image}: the registry did not answer within {seconds}s")]
    Timeout { image: String, seconds: f64 },
}
