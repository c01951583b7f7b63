//! A job's artifacts as an OCI artifact: one gzipped tar layer under an image manifest, pushed
//! to the forge's registry next to the images the job builds, and pulled back by digest.
//!
//! The layout is what ORAS writes (`oras pull <reference>` gives `artifacts.tar.gz`), with the
//! empty config of the OCI image spec 1.1, which Gitea's registry and distribution accept.

use std::collections::BTreeMap;
use std::path::Path;

use futures::StreamExt;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::PreflightError;
use super::fetch::{FetchOptions, Registry, unreachable};
use super::reference::ImageReference;

/// The manifest's `artifactType`, by which tools tell raibid's artifacts from images.
pub const ARTIFACT_TYPE: &str = "application/vnd.raibid.artifacts.v1";
/// The single layer's media type: a gzipped tar, as an image layer is.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The layer's file name for ORAS (`org.opencontainers.image.title`).
pub const LAYER_TITLE: &str = "artifacts.tar.gz";

const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_CONFIG: &[u8] = b"{}";

/// What a push left in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushedArtifact {
    /// `<registry>/<repository>@<manifest digest>`: what to pull, whatever the tag names later.
    pub reference: String,
    /// The archive's size in bytes.
    pub size: u64,
}

/// Pushes the archive at `archive` (a `.tar.gz`) as the artifact `reference`
/// (`<registry>/<repository>:<tag>`), with `annotations` on its manifest.
pub async fn push_artifact(
    reference: &str,
    archive: &Path,
    annotations: &BTreeMap<String, String>,
    options: &FetchOptions,
) -> Result<PushedArtifact, PreflightError> {
    let reference = ImageReference::parse(reference)?;
    let mut registry = Registry::new(&reference, options)?;
    let io_error = |e: std::io::Error| PreflightError::Unreachable {
        registry: reference.registry.clone(),
        image: reference.to_string(),
        message: format!("reading {}: {e}", archive.display()),
    };
    let (layer_digest, size) = file_digest(archive).await.map_err(io_error)?;
    let config_digest = format!("sha256:{:x}", Sha256::digest(EMPTY_CONFIG));
    upload_blob(&mut registry, &config_digest, Blob::Bytes(EMPTY_CONFIG)).await?;
    upload_blob(&mut registry, &layer_digest, Blob::File(archive, size)).await?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": { "mediaType": EMPTY_MEDIA_TYPE, "digest": config_digest, "size": EMPTY_CONFIG.len() },
        "layers": [{
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": layer_digest,
            "size": size,
            "annotations": { "org.opencontainers.image.title": LAYER_TITLE }
        }],
        "annotations": annotations,
    });
    let body = serde_json::to_vec(&manifest).expect("a manifest serializes");
    let manifest_digest = format!("sha256:{:x}", Sha256::digest(&body));
    let url = format!("{}/manifests/{}", registry.base, reference.reference);
    registry
        .send(|http| {
            http.put(&url)
                .header(CONTENT_TYPE, MANIFEST_MEDIA_TYPE)
                .body(body.clone())
        })
        .await?;
    Ok(PushedArtifact {
        reference: format!(
            "{}/{}@{manifest_digest}",
            reference.registry, reference.repository
        ),
        size,
    })
}

/// Deletes the artifact `reference` (pinned by digest, as [`PushedArtifact::reference`] is)
/// from its registry: its manifest, whose layer the registry's garbage collection then frees.
/// Returns false if the registry no longer had it. A registry that does not allow deletes
/// (docker-registry without `storage.delete.enabled`) answers 405, an error.
pub async fn delete_artifact(
    reference: &str,
    options: &FetchOptions,
) -> Result<bool, PreflightError> {
    let reference = ImageReference::parse(reference)?;
    if !reference.reference.starts_with("sha256:") {
        return Err(PreflightError::BadReference {
            image: reference.to_string(),
            reason: "only an artifact pinned by digest is deleted (a tag may have moved)".into(),
        });
    }
    let mut registry = Registry::new(&reference, options)?;
    let url = format!("{}/manifests/{}", registry.base, reference.reference);
    match registry.send(|http| http.delete(&url)).await {
        Ok(_) => Ok(true),
        Err(PreflightError::Refused { status: 404, .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// An artifact's archive on its way from the registry: its size and digest, known from the
/// manifest before the first byte, and its bytes, checked against both as they come, so that
/// it can be passed on (the server's `GET /api/v1/jobs/{id}/artifacts`) without a copy on disk.
pub struct ArtifactDownload {
    /// Of the archive, as the manifest names it.
    pub size: u64,
    /// `sha256:<hex>` of the archive, as the manifest names it.
    pub digest: String,
    reference: ImageReference,
    response: reqwest::Response,
    hasher: Sha256,
    received: u64,
    done: bool,
}

impl ArtifactDownload {
    /// The next piece of the archive; `None` at its end, once its size and digest were found
    /// right. An error means the bytes given so far must be thrown away: the registry served
    /// something else than the manifest names, or the connection broke.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, PreflightError> {
        if self.done {
            return Ok(None);
        }
        let chunk = self
            .response
            .chunk()
            .await
            .map_err(|e| unreachable(&self.reference, &e))?;
        match chunk {
            Some(chunk) => {
                self.received += chunk.len() as u64;
                if self.received > self.size {
                    self.done = true;
                    return Err(self.mismatch("more than"));
                }
                self.hasher.update(&chunk);
                // The last piece is checked before it is given, so that whoever passes the
                // pieces on (with the size announced) never completes a damaged archive.
                if self.received == self.size {
                    self.done = true;
                    self.verify()?;
                }
                Ok(Some(chunk))
            }
            None => {
                self.done = true;
                self.verify()?;
                Ok(None)
            }
        }
    }

    fn verify(&mut self) -> Result<(), PreflightError> {
        let got = format!("sha256:{:x}", self.hasher.finalize_reset());
        if self.received != self.size || got != self.digest {
            return Err(self.mismatch(&format!("{} bytes, {got}: not", self.received)));
        }
        Ok(())
    }

    fn mismatch(&self, what: &str) -> PreflightError {
        PreflightError::BadManifest {
            image: self.reference.to_string(),
            message: format!(
                "the archive the registry served ({what} the one the manifest names: {} bytes, \
                 {})",
                self.size, self.digest
            ),
        }
    }
}

/// Starts downloading the archive of the artifact `reference` (best pinned by digest, as
/// [`PushedArtifact::reference`] is): reads and checks its manifest, then asks for the layer.
pub async fn open_artifact(
    reference: &str,
    options: &FetchOptions,
) -> Result<ArtifactDownload, PreflightError> {
    let reference = ImageReference::parse(reference)?;
    let image = reference.to_string();
    let mut registry = Registry::new(&reference, options)?;
    let body = registry
        .get(
            &format!("manifests/{}", reference.reference),
            MANIFEST_MEDIA_TYPE,
        )
        .await?;
    if let Some(wanted) = reference.reference.strip_prefix("sha256:") {
        let got = format!("{:x}", Sha256::digest(&body));
        if got != wanted {
            return Err(PreflightError::BadManifest {
                image,
                message: format!("the registry served a manifest of digest sha256:{got}"),
            });
        }
    }
    let manifest: ArtifactManifest =
        serde_json::from_slice(&body).map_err(|e| PreflightError::BadManifest {
            image: image.clone(),
            message: format!("not an image manifest: {e}"),
        })?;
    let layer = match (
        manifest.artifact_type.as_deref(),
        manifest.layers.as_slice(),
    ) {
        (Some(ARTIFACT_TYPE), [layer]) if layer.media_type == LAYER_MEDIA_TYPE => layer,
        _ => {
            return Err(PreflightError::BadManifest {
                image,
                message: format!(
                    "not raibid artifacts (artifactType {ARTIFACT_TYPE} with one \
                     {LAYER_MEDIA_TYPE} layer)"
                ),
            });
        }
    };
    let url = format!("{}/blobs/{}", registry.base, layer.digest);
    let response = registry.send(|http| http.get(&url)).await?;
    Ok(ArtifactDownload {
        size: layer.size,
        digest: layer.digest.clone(),
        reference,
        response,
        hasher: Sha256::new(),
        received: 0,
        done: false,
    })
}

/// Writes the archive of the artifact `reference` (best pinned by digest, as
/// [`PushedArtifact::reference`] is) to `dest`, checking it against the digests the manifest
/// names. Returns its size.
pub async fn pull_artifact(
    reference: &str,
    dest: &Path,
    options: &FetchOptions,
) -> Result<u64, PreflightError> {
    let mut download = open_artifact(reference, options).await?;
    let (registry, image) = (
        download.reference.registry.clone(),
        download.reference.to_string(),
    );
    let io_error = |e: std::io::Error| PreflightError::Unreachable {
        registry: registry.clone(),
        image: image.clone(),
        message: format!("writing {}: {e}", dest.display()),
    };
    let mut file = tokio::fs::File::create(dest).await.map_err(io_error)?;
    let written = async {
        while let Some(chunk) = download.chunk().await? {
            file.write_all(&chunk).await.map_err(io_error)?;
        }
        file.flush().await.map_err(io_error)
    }
    .await;
    if let Err(e) = written {
        let _ = tokio::fs::remove_file(dest).await;
        return Err(e);
    }
    Ok(download.size)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactManifest {
    artifact_type: Option<String>,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
}

enum Blob<'a> {
    Bytes(&'static [u8]),
    /// A file and its size, streamed rather than read into memory.
    File(&'a Path, u64),
}

/// Uploads a blob unless the repository has it: `POST` an upload, then one `PUT` of the whole
/// blob (the monolithic upload every registry takes).
async fn upload_blob(
    registry: &mut Registry<'_>,
    digest: &str,
    blob: Blob<'_>,
) -> Result<(), PreflightError> {
    let head = format!("{}/blobs/{digest}", registry.base);
    match registry.send(|http| http.head(&head)).await {
        Ok(_) => return Ok(()),
        Err(PreflightError::Refused { status: 404, .. }) => {}
        Err(e) => return Err(e),
    }
    let start = format!("{}/blobs/uploads/", registry.base);
    let response = registry
        .send(|http| http.post(&start).header(CONTENT_LENGTH, 0))
        .await?;
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let url = upload_url(&registry.base, &location, digest);
    registry
        .send(|http| {
            let request = http
                .put(&url)
                .header(CONTENT_TYPE, "application/octet-stream");
            match &blob {
                Blob::Bytes(bytes) => request.body(*bytes),
                Blob::File(path, size) => request
                    .header(CONTENT_LENGTH, *size)
                    .body(file_body(path.to_path_buf())),
            }
        })
        .await?;
    Ok(())
}

/// The upload's `Location` made absolute, with the digest that completes it.
fn upload_url(base: &str, location: &str, digest: &str) -> String {
    let absolute = if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else {
        // `base` is `<scheme>://<host>/v2/<repository>`; a relative Location starts at `/v2/`.
        let origin_end = base
            .find("://")
            .and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j))
            .unwrap_or(base.len());
        format!("{}{location}", &base[..origin_end])
    };
    let separator = if absolute.contains('?') { '&' } else { '?' };
    format!("{absolute}{separator}digest={digest}")
}

/// The file as a request body read as it is sent. A file that cannot be opened sends an error,
/// which ends the request.
fn file_body(path: std::path::PathBuf) -> reqwest::Body {
    let stream = futures::stream::once(async move { tokio::fs::File::open(path).await })
        .map(|opened| match opened {
            Ok(file) => futures::future::Either::Left(tokio_util::io::ReaderStream::new(file)),
            Err(e) => futures::future::Either::Right(futures::stream::once(async move { Err(e) })),
        })
        .flatten();
    reqwest::Body::wrap_stream(stream)
}

async fn file_digest(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((format!("sha256:{:x}", hasher.finalize()), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_locations_become_absolute_with_the_digest() {
        let base = "http://127.0.0.1:5000/v2/acme/app/artifacts";
        assert_eq!(
            upload_url(
                base,
                "/v2/acme/app/artifacts/blobs/uploads/u1?_state=x",
                "sha256:ab"
            ),
            "http://127.0.0.1:5000/v2/acme/app/artifacts/blobs/uploads/u1?_state=x&digest=sha256:ab"
        );
        assert_eq!(
            upload_url(base, "https://r.example/upload/u2", "sha256:ab"),
            "https://r.example/upload/u2?digest=sha256:ab"
        );
    }
}
