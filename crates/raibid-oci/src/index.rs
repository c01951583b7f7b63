//! The pure part of the preflight: does this manifest (an OCI image index, a Docker manifest
//! list, or a single-image manifest plus its config) provide `linux/<arch>`?

use std::fmt;

use serde::Deserialize;

use super::PreflightError;

/// What the registry is asked for, newest formats first.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// A manifest as the registry returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    /// Several images, one per platform.
    Index(Vec<IndexEntry>),
    /// One image; its platform is in the config blob with this digest.
    Single { config_digest: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IndexEntry {
    pub digest: String,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
    #[serde(default)]
    config: Option<Descriptor>,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
}

/// Kubernetes' and Go's names, which is what registries use; `uname -m` names are accepted.
pub fn normalize_arch(arch: &str) -> &str {
    match arch {
        "aarch64" | "arm64/v8" => "arm64",
        "x86_64" | "x86-64" => "amd64",
        other => other,
    }
}

pub fn parse_manifest(image: &str, body: &[u8]) -> Result<Manifest, PreflightError> {
    let bad = |message: String| PreflightError::BadManifest {
        image: image.to_owned(),
        message,
    };
    let raw: RawManifest =
        serde_json::from_slice(body).map_err(|e| bad(format!("not a manifest: {e}")))?;
    match (raw.manifests, raw.config) {
        (Some(entries), _) => Ok(Manifest::Index(entries)),
        (None, Some(config)) => Ok(Manifest::Single {
            config_digest: config.digest,
        }),
        (None, None) => Err(bad(format!(
            "neither an index nor an image manifest (mediaType {})",
            raw.media_type.as_deref().unwrap_or("unset")
        ))),
    }
}

/// The index entry for `linux/<arch>`, or an error listing the platforms the index has.
pub fn select_platform<'a>(
    image: &str,
    entries: &'a [IndexEntry],
    arch: &str,
) -> Result<&'a IndexEntry, PreflightError> {
    let (arch, variant) = split_arch(arch);
    let matches = |p: &Platform| {
        p.os == "linux"
            && normalize_arch(&p.architecture) == arch
            && variant.is_none_or(|v| p.variant.as_deref() == Some(v))
    };
    entries
        .iter()
        .find(|e| e.platform.as_ref().is_some_and(matches))
        .ok_or_else(|| {
            missing(
                image,
                arch,
                variant,
                entries.iter().filter_map(|e| e.platform.clone()),
            )
        })
}

/// Checks the platform recorded in a single image's config blob.
pub fn check_config(image: &str, config: &[u8], arch: &str) -> Result<Platform, PreflightError> {
    let platform: Platform =
        serde_json::from_slice(config).map_err(|e| PreflightError::BadManifest {
            image: image.to_owned(),
            message: format!("image config without os/architecture: {e}"),
        })?;
    let (arch, variant) = split_arch(arch);
    if platform.os == "linux"
        && normalize_arch(&platform.architecture) == arch
        && variant.is_none_or(|v| platform.variant.as_deref() == Some(v))
    {
        Ok(platform)
    } else {
        Err(missing(image, arch, variant, std::iter::once(platform)))
    }
}

/// The pure decision on an index body: the digest of the `linux/<arch>` image.
pub fn platform_in_index(image: &str, index: &[u8], arch: &str) -> Result<String, PreflightError> {
    match parse_manifest(image, index)? {
        Manifest::Index(entries) => Ok(select_platform(image, &entries, arch)?.digest.clone()),
        Manifest::Single { .. } => Err(PreflightError::BadManifest {
            image: image.to_owned(),
            message: "a single-image manifest, not an index: its platform is in the config blob"
                .into(),
        }),
    }
}

fn split_arch(arch: &str) -> (&str, Option<&str>) {
    let arch = normalize_arch(arch);
    match arch.split_once('/') {
        Some((a, v)) => (a, Some(v)),
        None => (arch, None),
    }
}

fn missing(
    image: &str,
    arch: &str,
    variant: Option<&str>,
    platforms: impl Iterator<Item = Platform>,
) -> PreflightError {
    // Attestation manifests (BuildKit provenance) claim unknown/unknown: not images anyone runs.
    let mut available: Vec<String> = platforms
        .filter(|p| p.os != "unknown")
        .map(|p| p.to_string())
        .collect();
    available.sort();
    available.dedup();
    PreflightError::MissingArch {
        image: image.to_owned(),
        wanted: match variant {
            Some(v) => format!("linux/{arch}/{v}"),
            None => format!("linux/{arch}"),
        },
        available,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = r#"{
      "schemaVersion": 2,
      "mediaType": "application/vnd.oci.image.index.v1+json",
      "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:aaa", "size": 1,
         "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:bbb", "size": 1,
         "platform": {"architecture": "arm", "os": "linux", "variant": "v7"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:ccc", "size": 1,
         "platform": {"architecture": "unknown", "os": "unknown"}}
      ]
    }"#;

    #[test]
    fn finds_the_arch_in_an_index() {
        assert_eq!(
            platform_in_index("x", INDEX.as_bytes(), "amd64").unwrap(),
            "sha256:aaa"
        );
        assert_eq!(
            platform_in_index("x", INDEX.as_bytes(), "x86_64").unwrap(),
            "sha256:aaa"
        );
        assert_eq!(
            platform_in_index("x", INDEX.as_bytes(), "arm/v7").unwrap(),
            "sha256:bbb"
        );
    }

    #[test]
    fn a_missing_arch_lists_what_is_there() {
        let err = platform_in_index("ci/tool:1", INDEX.as_bytes(), "arm64").unwrap_err();
        assert_eq!(
            err.to_string(),
            "ci/tool:1 has no linux/arm64 image (it has: linux/amd64, linux/arm/v7); build \
             and push it for linux/arm64 (e.g. `buildah build --platform linux/arm64`), use a \
             multi-arch image, or send the job to a pool of an architecture it has"
        );
    }

    #[test]
    fn docker_manifest_lists_work_too() {
        let list = r#"{"schemaVersion": 2,
          "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
          "manifests": [{"digest": "sha256:d", "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}]}"#;
        assert_eq!(
            platform_in_index("x", list.as_bytes(), "arm64").unwrap(),
            "sha256:d"
        );
    }

    #[test]
    fn single_images_are_checked_through_their_config() {
        let manifest = r#"{"schemaVersion": 2, "config": {"digest": "sha256:cfg"}, "layers": []}"#;
        assert_eq!(
            parse_manifest("x", manifest.as_bytes()).unwrap(),
            Manifest::Single {
                config_digest: "sha256:cfg".into()
            }
        );
        let config = r#"{"architecture": "amd64", "os": "linux", "rootfs": {}}"#;
        assert!(check_config("x", config.as_bytes(), "amd64").is_ok());
        let err = check_config("x", config.as_bytes(), "arm64")
            .unwrap_err()
            .to_string();
        assert!(err.contains("(it has: linux/amd64)"), "{err}");
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let err = parse_manifest("x", b"<html>").unwrap_err().to_string();
        assert!(
            err.starts_with("x: unexpected manifest: not a manifest"),
            "{err}"
        );
    }
}
