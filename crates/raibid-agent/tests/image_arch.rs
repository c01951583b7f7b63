//! The image-architecture preflight of container steps against a real registry (Debian's
//! `docker-registry`): an image without this machine's architecture is refused with the
//! platforms it has, a multi-arch image with it passes, an unreachable registry only adds a
//! note.

use raibid_agent::executor::{ArchPreflight, ArchVerdict};
use raibid_testkit::registry::{OCI_INDEX, OCI_MANIFEST};
use raibid_testkit::{Registry, free_port};
use serde_json::json;

/// This machine's architecture and another one, as OCI spells them.
fn arches() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "aarch64" => ("arm64", "amd64"),
        _ => ("amd64", "arm64"),
    }
}

#[tokio::test]
async fn container_step_images_are_checked_for_this_machines_architecture() {
    let registry = Registry::start();
    let host = registry.host();
    let (ours, other) = arches();

    // Only the other architecture: refused, naming what the image has.
    registry
        .push_image("ci/foreign", "latest", other, None)
        .await;
    // An index with both: passes with our platform.
    let (d1, s1) = registry
        .push_image("ci/multi", &format!("only-{ours}"), ours, None)
        .await;
    let (d2, s2) = registry
        .push_image("ci/multi", &format!("only-{other}"), other, None)
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
    registry
        .push_manifest("ci/multi", "latest", OCI_INDEX, &index)
        .await;

    let preflight = ArchPreflight::for_this_machine(true, Vec::new());
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
