//! `GET /api/v1/jobs/{id}/artifacts` against the real server, a real redis-server and a real
//! registry (`docker-registry` with a login, as the forge's is): the server fetches the archive
//! with its own registry login and passes it on; what the registry no longer has, what expired
//! and what the registry serves damaged are refused or broken off, never passed on as good.

mod support;

use std::collections::BTreeMap;

use raibid_model::{JobArtifacts, JobStatus, NewJob, Outcome};
use raibid_testkit::Registry;
use raibid_testkit::registry::{TEST_PASSWORD, TEST_PASSWORD_BCRYPT, TEST_USER};
use reqwest::StatusCode;
use support::{SHA, TestServer, config, json};

/// A push of acme/app, claimed by `agent`.
async fn running_job(server: &TestServer, agent: &str) -> raibid_queue::Claimed {
    let push = NewJob::new(
        "acme/app",
        "https://git.example/acme/app.git",
        "refs/heads/main",
        SHA,
        raibid_model::Event::Push,
    );
    server.queue.enqueue(push).await.unwrap();
    server.claim_one(agent).await
}

/// A finished job of acme/app whose artifacts (`content`, as the archive) are in `registry`.
async fn job_with_artifacts(server: &TestServer, registry: &Registry, content: &[u8]) -> String {
    let claimed = running_job(server, "agent-1").await;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.tar.gz");
    std::fs::write(&archive, content).unwrap();
    let login = raibid_oci::FetchOptions {
        credentials: Some((TEST_USER.to_owned(), TEST_PASSWORD.to_owned())),
        ..raibid_oci::FetchOptions::default()
    };
    let tag = format!("{}/acme/app/artifacts:{}", registry.host(), claimed.job.id);
    let pushed = raibid_oci::push_artifact(&tag, &archive, &BTreeMap::new(), &login)
        .await
        .unwrap();
    let mut outcome = Outcome::new(JobStatus::Success);
    outcome.artifacts = Some(JobArtifacts {
        reference: pushed.reference,
        size: pushed.size,
        files: 1,
        expires_at: None,
        expired: false,
    });
    assert!(server.queue.ack(&claimed, &outcome).await.unwrap());
    claimed.job.id
}

async fn server_with_login(registry: &Registry) -> TestServer {
    let mut config = config();
    config.agent.registry.host = registry.host();
    config.agent.registry.username = TEST_USER.into();
    config.agent.registry.password = raibid_config::Secret::new(TEST_PASSWORD);
    config.agent.registry.insecure = true;
    TestServer::start_with(config).await
}

async fn error(response: reqwest::Response, status: StatusCode, code: &str, says: &str) {
    assert_eq!(response.status(), status);
    let body = json(response).await;
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "expected {says:?} in {body}");
}

#[tokio::test]
async fn the_server_passes_on_the_archive_with_its_own_login() {
    let registry = Registry::start_with_auth(TEST_USER, TEST_PASSWORD, TEST_PASSWORD_BCRYPT);
    let server = server_with_login(&registry).await;
    // Larger than one piece, so it is passed on in several.
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 239) as u8).collect();
    let id = job_with_artifacts(&server, &registry, &content).await;

    let path = format!("/api/v1/jobs/{id}/artifacts");
    let response = server.get(&path).await;
    assert_eq!(response.status(), StatusCode::OK);
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(header("content-type"), "application/gzip");
    assert_eq!(header("content-length"), content.len().to_string());
    assert_eq!(
        header("content-disposition"),
        format!("attachment; filename=\"{id}-artifacts.tar.gz\"")
    );
    let digest = header("x-raibid-artifacts-digest");
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert_eq!(response.bytes().await.unwrap(), content);

    // The client checks what it gets.
    let dir = tempfile::tempdir().unwrap();
    let client = raibid_client::Client::new(&server.base, None).unwrap();
    let dest = dir.path().join("a.tar.gz");
    let (size, got) = client.download_artifacts(&id, &dest).await.unwrap();
    assert_eq!(
        (size, got.as_str()),
        (content.len() as u64, digest.as_str())
    );
    assert_eq!(std::fs::read(&dest).unwrap(), content);

    // Other bytes served under the same digest: the download is broken off, and the client
    // keeps nothing.
    let mut tampered = content.clone();
    tampered[250_000] ^= 0xff;
    std::fs::write(registry.blob_path(&digest), &tampered).unwrap();
    let broken = server.get(&path).await;
    assert_eq!(
        broken.status(),
        StatusCode::OK,
        "the headers go before the bytes"
    );
    let body = broken.bytes().await;
    assert!(
        body.as_ref()
            .map_or(true, |b| b[..] != content[..] && b.len() < content.len()),
        "a damaged archive is never passed on whole"
    );
    let err = client.download_artifacts(&id, &dest).await.unwrap_err();
    assert!(!dest.exists(), "{err}");
}

#[tokio::test]
async fn missing_expired_and_deleted_artifacts_are_refused_saying_which() {
    let registry = Registry::start_with_auth(TEST_USER, TEST_PASSWORD, TEST_PASSWORD_BCRYPT);
    let server = server_with_login(&registry).await;
    error(
        server
            .get("/api/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV/artifacts")
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
        "not found",
    )
    .await;
    let id = job_with_artifacts(&server, &registry, b"archive").await;
    let job = server.queue.get(&id).await.unwrap().unwrap();
    let reference = job.artifacts.unwrap().reference;

    // Deleted from the registry by hand: the server says so.
    let digest = reference.split_once('@').unwrap().1;
    let login = raibid_oci::FetchOptions {
        credentials: Some((TEST_USER.to_owned(), TEST_PASSWORD.to_owned())),
        ..raibid_oci::FetchOptions::default()
    };
    assert!(
        raibid_oci::delete_artifact(&reference, &login)
            .await
            .unwrap()
    );
    error(
        server.get(&format!("/api/v1/jobs/{id}/artifacts")).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "the registry no longer has",
    )
    .await;
    assert!(digest.starts_with("sha256:"));

    // Expired (an agent deleted them): 410.
    assert!(
        server
            .queue
            .mark_artifacts_expired(&id, &reference)
            .await
            .unwrap()
    );
    error(
        server.get(&format!("/api/v1/jobs/{id}/artifacts")).await,
        StatusCode::GONE,
        "gone",
        "expired",
    )
    .await;

    // A job that kept none.
    let claimed = running_job(&server, "agent-2").await;
    server.end(&claimed, JobStatus::Success).await;
    error(
        server
            .get(&format!("/api/v1/jobs/{}/artifacts", claimed.job.id))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
        "has no artifacts",
    )
    .await;
}
