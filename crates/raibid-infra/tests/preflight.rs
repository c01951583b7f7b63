//! The image-architecture preflight against a real registry (Debian's `docker-registry`, the
//! CNCF distribution server) on a loopback port, and against a stand-in for Docker Hub's
//! anonymous token exchange.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use raibid_config::Config;
use raibid_infra::preflight::{FetchOptions, PreflightError, check_image};
use raibid_infra::{InfraCommand, run_infra_to};
use raibid_testkit::registry::{OCI_INDEX, OCI_MANIFEST};
use raibid_testkit::{Registry, free_port};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn options() -> FetchOptions {
    FetchOptions {
        timeout: Duration::from_secs(10),
        ..FetchOptions::default()
    }
}

#[tokio::test]
async fn checks_multi_arch_and_single_arch_images_in_a_real_registry() {
    let registry = Registry::start();
    let (amd64, amd64_size) = registry.push_image("ci/tool", "amd64", "amd64", None).await;
    let (armv7, armv7_size) = registry
        .push_image("ci/tool", "armv7", "arm", Some("v7"))
        .await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd64, "size": amd64_size, "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": armv7, "size": armv7_size, "platform": {"architecture": "arm", "os": "linux", "variant": "v7"}}
        ]
    }))
    .unwrap();
    registry
        .push_manifest("ci/tool", "1.0", OCI_INDEX, &index)
        .await;
    let image = format!("{}/ci/tool:1.0", registry.host());

    let ok = check_image(&image, "amd64", &options()).await.unwrap();
    assert_eq!(ok.platform, "linux/amd64");
    assert_eq!(ok.digest, amd64);
    assert!(ok.multi_arch);
    // Pinned to the index the tag named, so the engine still picks the platform.
    let index_digest = format!("sha256:{:x}", Sha256::digest(&index));
    assert_eq!(ok.manifest_digest, index_digest);
    assert_eq!(
        ok.pinned,
        format!("{}/ci/tool@{index_digest}", registry.host())
    );

    let start = Instant::now();
    let err = check_image(&image, "arm64", &options()).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(
        err,
        PreflightError::MissingArch {
            image: image.clone(),
            wanted: "linux/arm64".into(),
            available: vec!["linux/amd64".into(), "linux/arm/v7".into()],
        }
    );

    // A single-platform image: the architecture comes from its config blob.
    let single = format!("{}/ci/tool:amd64", registry.host());
    let checked = check_image(&single, "x86_64", &options()).await.unwrap();
    assert_eq!(checked.platform, "linux/amd64");
    assert_eq!(checked.manifest_digest, amd64);
    assert_eq!(
        checked.pinned,
        format!("{}/ci/tool@{amd64}", registry.host())
    );
    let err = check_image(&single, "arm64", &options())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has no linux/arm64 image (it has: linux/amd64)"),
        "{err}"
    );

    let missing = format!("{}/ci/tool:nope", registry.host());
    let err = check_image(&missing, "amd64", &options())
        .await
        .unwrap_err();
    assert!(
        matches!(err, PreflightError::Refused { status: 404, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("no such image or tag"), "{err}");

    // The command-line entry point prints one line either way.
    let mut out = Vec::new();
    let command = InfraCommand::CheckImage {
        image: image.clone(),
        arch: "amd64".into(),
        insecure: false,
        timeout: 10,
    };
    run_infra_to(command, &Config::default(), &mut out)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("ok: {image} has linux/amd64 ({amd64}, multi-arch)\n")
    );
    let command = InfraCommand::CheckImage {
        image,
        arch: "arm64".into(),
        insecure: false,
        timeout: 10,
    };
    let err = run_infra_to(command, &Config::default(), &mut Vec::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("(it has: linux/amd64, linux/arm/v7)"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_registry_fails_fast() {
    let image = format!("127.0.0.1:{}/ci/tool:1", free_port());
    let start = Instant::now();
    let err = check_image(&image, "arm64", &options()).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, PreflightError::Unreachable { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("cannot reach the registry 127.0.0.1:"),
        "{err}"
    );
}

/// What the token registry saw.
#[derive(Default)]
struct TokenRequests {
    all: AtomicUsize,
    /// Those that carried an `Authorization` header (credentials).
    with_credentials: AtomicUsize,
}

/// A registry that wants a bearer token first, like Docker Hub and GHCR.
async fn token_registry(token_requests: Arc<TokenRequests>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let token_requests = token_requests.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                let target = text
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let (status, headers, body) = if target.starts_with("/token?") {
                    token_requests.all.fetch_add(1, Ordering::SeqCst);
                    if text.contains("\r\nauthorization:") {
                        token_requests
                            .with_credentials
                            .fetch_add(1, Ordering::SeqCst);
                    }
                    assert!(target.contains("service=fake"), "{target}");
                    assert!(
                        target.contains("scope=repository%3ateam%2ftool%3apull"),
                        "{target}"
                    );
                    (
                        "200 OK",
                        "content-type: application/json\r\n".to_owned(),
                        r#"{"token":"tok123"}"#.to_owned(),
                    )
                } else if !text.contains("authorization: bearer tok123") {
                    let challenge = format!(
                        "www-authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake\",scope=\"repository:team/tool:pull\"\r\n"
                    );
                    (
                        "401 Unauthorized",
                        challenge,
                        r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#.to_owned(),
                    )
                } else {
                    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
                        {"mediaType": OCI_MANIFEST, "digest": "sha256:aa", "size": 1, "platform": {"architecture": "arm64", "os": "linux"}}
                    ]});
                    (
                        "200 OK",
                        format!("content-type: {OCI_INDEX}\r\n"),
                        index.to_string(),
                    )
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn follows_the_anonymous_token_exchange() {
    let token_requests = Arc::new(TokenRequests::default());
    let port = token_registry(token_requests.clone()).await;
    let image = format!("127.0.0.1:{port}/team/tool:1");
    let ok = check_image(&image, "arm64", &options()).await.unwrap();
    assert_eq!(ok.platform, "linux/arm64");
    assert_eq!(token_requests.all.load(Ordering::SeqCst), 1);
    assert_eq!(token_requests.with_credentials.load(Ordering::SeqCst), 0);
}

/// `agent.registry`'s login was sent to every registry checked: `raibid infra check-image
/// docker.io/...` handed the Gitea token to Docker Hub's token service. It goes only to the
/// agents' registry (`agent.registry.host`, else `gitea.url`'s host), as the agent does.
#[tokio::test]
async fn registry_credentials_go_only_to_their_own_registry() {
    use raibid_infra::image_checks::{ImageArchCheck, RegistryLogin, run_checks};
    // Both entry points: `raibid infra check-image` and setup's check of the agent images.
    async fn check(config: &Config, image: &str) {
        let command = InfraCommand::CheckImage {
            image: image.to_owned(),
            arch: "arm64".into(),
            insecure: false,
            timeout: 10,
        };
        run_infra_to(command, config, &mut Vec::new())
            .await
            .unwrap();
        let check = ImageArchCheck {
            image: image.to_owned(),
            arch: "arm64".into(),
            object: "ScaledJob/raibid-agent-arm64".into(),
        };
        let login = RegistryLogin::from_config(config);
        let mut out = Vec::new();
        run_checks(&[check], &options(), login.as_ref(), &mut out)
            .await
            .unwrap();
        let shown = String::from_utf8(out).unwrap();
        assert!(shown.contains("has linux/arm64"), "{shown}");
    }
    let token_requests = Arc::new(TokenRequests::default());
    let port = token_registry(token_requests.clone()).await;
    let image = format!("127.0.0.1:{port}/team/tool:1");
    let mut config = Config::default();
    config.agent.registry.username = "ci".into();
    config.agent.registry.password = raibid_config::Secret::new("gitea-token");

    // Another registry's login: the default gitea.url's host, then a configured host.
    check(&config, &image).await;
    config.agent.registry.host = "gitea.example.com".into();
    check(&config, &image).await;
    assert_eq!(token_requests.all.load(Ordering::SeqCst), 4);
    assert_eq!(token_requests.with_credentials.load(Ordering::SeqCst), 0);

    // Its own, named by agent.registry.host, then by gitea.url.
    config.agent.registry.host = format!("127.0.0.1:{port}");
    check(&config, &image).await;
    config.agent.registry.host = String::new();
    config.gitea.url = format!("http://127.0.0.1:{port}/");
    check(&config, &image).await;
    assert_eq!(token_requests.all.load(Ordering::SeqCst), 8);
    assert_eq!(token_requests.with_credentials.load(Ordering::SeqCst), 4);
}

/// `raibid setup agents` checks every ScaledJob's image for its pinned architecture before it
/// applies anything: a foreign image stops setup with the platforms it has, a registry this
/// machine cannot ask is reported and skipped.
#[tokio::test]
async fn setup_checks_agent_images_for_their_pools_architecture() {
    use raibid_infra::image_checks::{ImageArchCheck, run_checks};
    let registry = Registry::start();
    let (ours, other) = match std::env::consts::ARCH {
        "aarch64" => ("arm64", "amd64"),
        _ => ("amd64", "arm64"),
    };
    registry.push_image("raibid/agent", ours, ours, None).await;
    let image = format!("{}/raibid/agent:{ours}", registry.host());
    let check = |arch: &str, image: &str| ImageArchCheck {
        image: image.to_owned(),
        arch: arch.to_owned(),
        object: format!("ScaledJob/raibid-agent-{arch}"),
    };
    let options = FetchOptions {
        insecure: true,
        ..FetchOptions::default()
    };

    let mut out = Vec::new();
    run_checks(&[check(ours, &image)], &options, None, &mut out)
        .await
        .unwrap();
    let shown = String::from_utf8(out).unwrap();
    assert!(shown.contains(&format!("has linux/{ours}")), "{shown}");

    let mut out = Vec::new();
    let err = run_checks(
        &[check(ours, &image), check(other, &image)],
        &options,
        None,
        &mut out,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains(&format!("no linux/{other} image")), "{err}");
    assert!(err.contains(&format!("linux/{ours}")), "{err}");

    let nowhere = format!("127.0.0.1:{}/raibid/agent:1", free_port());
    let mut out = Vec::new();
    run_checks(&[check(ours, &nowhere)], &options, None, &mut out)
        .await
        .unwrap();
    let shown = String::from_utf8(out).unwrap();
    assert!(shown.contains("not checked"), "{shown}");
}
