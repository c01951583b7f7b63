//! Artifacts pushed to and pulled from a real registry (Debian's `docker-registry`, the CNCF
//! distribution server) that requires a login, as the forge's registry does.

use std::collections::BTreeMap;
use std::time::Duration;

use raibid_oci::{
    ARTIFACT_TYPE, FetchOptions, LAYER_TITLE, PreflightError, pull_artifact, push_artifact,
};
use raibid_testkit::Registry;
use raibid_testkit::registry::{TEST_PASSWORD, TEST_PASSWORD_BCRYPT, TEST_USER};

fn options(credentials: Option<(&str, &str)>) -> FetchOptions {
    FetchOptions {
        timeout: Duration::from_secs(10),
        credentials: credentials.map(|(u, p)| (u.to_owned(), p.to_owned())),
        ..FetchOptions::default()
    }
}

#[tokio::test]
async fn artifacts_go_up_and_come_back_byte_for_byte() {
    let registry = Registry::start_with_auth(TEST_USER, TEST_PASSWORD, TEST_PASSWORD_BCRYPT);
    let login = options(Some((TEST_USER, TEST_PASSWORD)));
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.tar.gz");
    // Larger than one read buffer, so the upload is streamed in pieces.
    let content: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&archive, &content).unwrap();
    let annotations = BTreeMap::from([("dev.raibid.job".to_owned(), "01JOB".to_owned())]);
    let tag = format!("{}/acme/app/artifacts:01JOB", registry.host());

    let pushed = push_artifact(&tag, &archive, &annotations, &login)
        .await
        .unwrap();
    assert_eq!(pushed.size, content.len() as u64);
    let digest = pushed
        .reference
        .strip_prefix(&format!("{}/acme/app/artifacts@", registry.host()))
        .expect("pinned by digest");
    assert!(digest.starts_with("sha256:"), "{}", pushed.reference);
    assert_eq!(registry.tags("acme/app/artifacts"), ["01JOB"]);
    let manifest = registry
        .get(
            "/v2/acme/app/artifacts/manifests/01JOB",
            Some("application/vnd.oci.image.manifest.v1+json"),
        )
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.body).unwrap();
    assert_eq!(manifest["artifactType"], ARTIFACT_TYPE);
    assert_eq!(manifest["annotations"]["dev.raibid.job"], "01JOB");
    assert_eq!(
        manifest["layers"][0]["annotations"]["org.opencontainers.image.title"],
        LAYER_TITLE
    );

    // Pushed again (a rerun): the blobs are there already, the tag moves to the same digest.
    let again = push_artifact(&tag, &archive, &annotations, &login)
        .await
        .unwrap();
    assert_eq!(again, pushed);

    let back = dir.path().join("back.tar.gz");
    let size = pull_artifact(&pushed.reference, &back, &login)
        .await
        .unwrap();
    assert_eq!(size, content.len() as u64);
    assert_eq!(std::fs::read(&back).unwrap(), content);
    // By tag too.
    pull_artifact(&tag, &back, &login).await.unwrap();
    assert_eq!(std::fs::read(&back).unwrap(), content);

    // Without the login, or with a wrong one, the registry says no, and nothing is written.
    let refused = dir.path().join("refused.tar.gz");
    let err = pull_artifact(&pushed.reference, &refused, &options(None))
        .await
        .unwrap_err();
    assert!(matches!(err, PreflightError::Auth { .. }), "{err}");
    let err = push_artifact(
        &tag,
        &archive,
        &annotations,
        &options(Some((TEST_USER, "wrong"))),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, PreflightError::Refused { status: 401, .. }),
        "{err}"
    );
    assert!(!refused.exists());
}

#[tokio::test]
async fn an_image_is_not_taken_for_artifacts() {
    let registry = Registry::start();
    registry.push_image("acme/app", "1.0", "amd64", None).await;
    let dir = tempfile::tempdir().unwrap();
    let err = pull_artifact(
        &format!("{}/acme/app:1.0", registry.host()),
        &dir.path().join("x"),
        &options(None),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, PreflightError::BadManifest { message, .. } if message.contains("not raibid artifacts")),
        "{err}"
    );
    let err = pull_artifact(
        &format!("{}/acme/app/artifacts:nope", registry.host()),
        &dir.path().join("x"),
        &options(None),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, PreflightError::Refused { status: 404, .. }),
        "{err}"
    );
}

/// A registry that serves other bytes than the manifest names (a damaged or tampered store):
/// the download is refused at its end and nothing is left behind; streamed, the last piece is
/// an error instead of the end.
#[tokio::test]
async fn an_archive_that_is_not_the_manifest_s_is_refused() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.tar.gz");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(&archive, &content).unwrap();
    let tag = format!("{}/acme/app/artifacts:01JOB", registry.host());
    let pushed = push_artifact(&tag, &archive, &BTreeMap::new(), &options(None))
        .await
        .unwrap();
    let mut download = raibid_oci::open_artifact(&pushed.reference, &options(None))
        .await
        .unwrap();
    assert_eq!(download.size, content.len() as u64);
    let blob = registry.blob_path(&download.digest);
    let mut whole = Vec::new();
    while let Some(chunk) = download.chunk().await.unwrap() {
        whole.extend_from_slice(&chunk);
    }
    assert_eq!(whole, content);

    // The same length, one byte changed.
    let mut tampered = content.clone();
    tampered[100_000] ^= 0xff;
    std::fs::write(&blob, &tampered).unwrap();
    let back = dir.path().join("back.tar.gz");
    let err = pull_artifact(&pushed.reference, &back, &options(None))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PreflightError::BadManifest { message, .. } if message.contains("not the one the manifest names")),
        "{err}"
    );
    assert!(!back.exists(), "nothing is left behind");
    let mut download = raibid_oci::open_artifact(&pushed.reference, &options(None))
        .await
        .unwrap();
    let end = loop {
        match download.chunk().await {
            Ok(Some(_)) => continue,
            end => break end,
        }
    };
    assert!(end.is_err(), "{end:?}");
}
