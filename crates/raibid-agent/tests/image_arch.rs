//! The image-architecture preflight of container steps against a real registry (Debian's
//! `docker-registry`): an image without this machine's architecture is refused with the
//! platforms it has, a multi-arch image with it passes, an unreachable registry only adds a
//! note.

#[allow(dead_code)] // each test binary uses part of the shared helpers
mod support;

use raibid_agent::executor::{ArchPreflight, ArchVerdict};
use raibid_testkit::free_port;
use serde_json::json;
use sha2::{Digest, Sha256};
use support::Registry;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// This machine's architecture and another one, as OCI spells them.
fn arches() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "aarch64" => ("arm64", "amd64"),
        _ => ("amd64", "arm64"),
    }
}

struct Pusher {
    http: reqwest::Client,
    host: String,
}

impl Pusher {
    async fn blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(data)));
        let started = self
            .http
            .post(format!("http://{}/v2/{repo}/blobs/uploads/", self.host))
            .send()
            .await
            .unwrap();
        assert_eq!(started.status(), 202);
        let location = started.headers()["location"].to_str().unwrap().to_owned();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("http://{}{location}", self.host)
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let done = self
            .http
            .put(format!("{location}{separator}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(done.status(), 201);
        digest
    }

    async fn manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
        let response = self
            .http
            .put(format!(
                "http://{}/v2/{repo}/manifests/{reference}",
                self.host
            ))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    }

    /// A one-layer image for `arch`, tagged `tag`; returns the manifest's digest and size.
    async fn image(&self, repo: &str, tag: &str, arch: &str) -> (String, usize) {
        let config = serde_json::to_vec(&json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []}, "config": {}
        }))
        .unwrap();
        let layer = format!("layer for {arch}").into_bytes();
        let config_digest = self.blob(repo, &config).await;
        let layer_digest = self.blob(repo, &layer).await;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest, "size": layer.len()}]
        }))
        .unwrap();
        self.manifest(repo, tag, OCI_MANIFEST, &manifest).await;
        (
            format!("sha256:{}", hex::encode(Sha256::digest(&manifest))),
            manifest.len(),
        )
    }
}

#[tokio::test]
async fn container_step_images_are_checked_for_this_machines_architecture() {
    let registry = Registry::start();
    let host = registry.host();
    let push = Pusher {
        http: reqwest::Client::new(),
        host: host.clone(),
    };
    let (ours, other) = arches();

    // Only the other architecture: refused, naming what the image has.
    push.image("ci/foreign", "latest", other).await;
    // An index with both: passes with our platform.
    let (d1, s1) = push.image("ci/multi", &format!("only-{ours}"), ours).await;
    let (d2, s2) = push
        .image("ci/multi", &format!("only-{other}"), other)
        .await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": d2, "size": s2,
             "platform": {"architecture": other, "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": d1, "size": s1,
             "platform": {"architecture": ours, "os": "linux"}}
        ]
    }))
    .unwrap();
    push.manifest("ci/multi", "latest", OCI_INDEX, &index).await;

    let preflight = ArchPreflight::for_this_machine(true, None);
    match preflight.check(&format!("{host}/ci/foreign:latest")).await {
        ArchVerdict::Refused(why) => {
            assert!(why.contains(&format!("linux/{ours}")), "{why}");
            assert!(why.contains(&format!("linux/{other}")), "{why}");
        }
        other => panic!("an image of another architecture passed: {other:?}"),
    }
    assert_eq!(
        preflight.check(&format!("{host}/ci/multi:latest")).await,
        ArchVerdict::Runs(format!("linux/{ours}"))
    );
    assert!(matches!(
        preflight
            .check(&format!("{host}/ci/multi:only-{ours}"))
            .await,
        ArchVerdict::Runs(_)
    ));

    // A registry nobody answers for: the engine may have the image locally, so no verdict.
    let nowhere = format!("127.0.0.1:{}/ci/local:latest", free_port());
    assert!(matches!(
        preflight.check(&nowhere).await,
        ArchVerdict::Unchecked(_)
    ));
    // An image that does not exist: also left to the engine (it may be local-only).
    assert!(matches!(
        preflight.check(&format!("{host}/ci/missing:latest")).await,
        ArchVerdict::Unchecked(_)
    ));
    // Not an image reference at all: refused.
    assert!(matches!(
        preflight.check(&format!("{host}/ci/multi@nodigest")).await,
        ArchVerdict::Refused(_)
    ));
}
