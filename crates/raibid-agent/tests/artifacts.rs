//! `artifacts:` end to end: a real agent loop on a real queue runs jobs whose steps write files,
//! and keeps them in a real registry (`docker-registry` with a login, as the forge's is).

use std::time::Duration;

use raibid_agent::SecretStore;
use raibid_agent::artifacts::{ArtifactStore, unpack};
use raibid_model::{JobStatus, NewJob};
use raibid_oci::{FetchOptions, pull_artifact};
use raibid_testkit::registry::{TEST_PASSWORD, TEST_PASSWORD_BCRYPT, TEST_USER};
use raibid_testkit::{GitRepo, Registry};

mod support;
use support::Harness;

fn store(registry: &Registry, password: &str, max_bytes: u64) -> ArtifactStore {
    ArtifactStore {
        registry: registry.host(),
        login: Some((TEST_USER.to_owned(), password.to_owned())),
        insecure: true,
        max_bytes,
        expire_after: None,
        max_expire: None,
    }
}

const BUILD: &str = "\
artifacts:
  paths: [dist, '*.txt', missing]
steps:
  - name: build
    run: |
      mkdir -p dist/doc
      printf 'binary' > dist/app
      chmod 755 dist/app
      printf 'docs' > dist/doc/README
      printf 'report' > report.txt
";

#[tokio::test]
async fn artifacts_are_pushed_to_the_registry_and_fetched_back() {
    let h = Harness::new();
    let registry = Registry::start_with_auth(TEST_USER, TEST_PASSWORD, TEST_PASSWORD_BCRYPT);
    let repo = GitRepo::new();
    let sha = repo.commit(&[(".raibid.yaml", BUILD)], "build");
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner_with_artifacts(
        SecretStore::default(),
        store(&registry, TEST_PASSWORD, 1 << 20),
    ))
    .await;
    let done = h.job(&job.id).await;
    let log = h.log(&job.id).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    let artifacts = done.artifacts.expect("recorded on the job");
    assert!(
        artifacts
            .reference
            .starts_with(&format!("{}/acme/app/artifacts@sha256:", registry.host())),
        "{artifacts:?}"
    );
    assert_eq!(artifacts.files, 3);
    assert!(
        log.contains("artifacts: missing not kept: not in the workspace"),
        "{log}"
    );
    assert!(
        log.contains("artifacts: kept dist, *.txt (3 files, 16 B;"),
        "{log}"
    );
    assert!(
        log.contains(&format!("`raibid job artifacts {}` fetches them", job.id)),
        "{log}"
    );
    assert_eq!(registry.tags("acme/app/artifacts"), [job.id.as_str()]);

    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.tar.gz");
    let options = FetchOptions {
        credentials: Some((TEST_USER.to_owned(), TEST_PASSWORD.to_owned())),
        timeout: Duration::from_secs(10),
        ..FetchOptions::default()
    };
    let size = pull_artifact(&artifacts.reference, &archive, &options)
        .await
        .unwrap();
    assert_eq!(size, artifacts.size);
    let out = dir.path().join("out");
    assert_eq!(unpack(&archive, &out).unwrap(), 3);
    assert_eq!(
        std::fs::read_to_string(out.join("dist/app")).unwrap(),
        "binary"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("dist/doc/README")).unwrap(),
        "docs"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("report.txt")).unwrap(),
        "report"
    );
}

/// With `agent.artifacts_expire_days`, kept artifacts are due for deletion; the next agent
/// to start deletes them from the registry and marks the job's artifacts expired. A registry
/// it cannot reach gets them again later: nothing taken is lost.
#[tokio::test]
async fn expired_artifacts_are_deleted_from_the_registry() {
    let h = Harness::new();
    let registry = Registry::start_with_auth(TEST_USER, TEST_PASSWORD, TEST_PASSWORD_BCRYPT);
    let repo = GitRepo::new();
    let sha = repo.commit(&[(".raibid.yaml", BUILD)], "build");
    let job = h.enqueue(&repo.url(), &sha).await;
    let mut expiring = store(&registry, TEST_PASSWORD, 1 << 20);
    expiring.expire_after = Some(Duration::from_millis(1));
    h.run_once(h.runner_with_artifacts(SecretStore::default(), expiring.clone()))
        .await;
    let done = h.job(&job.id).await;
    let log = h.log(&job.id).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    let artifacts = done.artifacts.expect("recorded on the job");
    assert!(
        artifacts.expires_at.is_some() && !artifacts.expired,
        "{artifacts:?}"
    );
    assert!(log.contains("artifacts: kept until "), "{log}");
    let (_, digest) = artifacts.reference.split_once('@').unwrap();
    let manifest = |digest: &str| {
        registry
            .get(
                &format!("/v2/acme/app/artifacts/manifests/{digest}"),
                Some("application/vnd.oci.image.manifest.v1+json"),
            )
            .unwrap()
            .status
    };
    // The agent that ran the job looked as it started, before they were kept.
    assert_eq!(manifest(digest), 200);

    // A registry that refuses (here: a wrong login): taken, then given back for an hour later.
    let mut refused = expiring.clone();
    refused.login = Some((TEST_USER.to_owned(), "not-the-password".to_owned()));
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(raibid_agent::expire_artifacts(&h.queue, &refused).await, 0);
    assert_eq!(manifest(digest), 200);
    assert!(
        h.queue
            .take_due_artifacts(chrono::Utc::now(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let later = chrono::Utc::now() + chrono::TimeDelta::hours(2);
    let due = h.queue.take_due_artifacts(later, 10).await.unwrap();
    assert_eq!(due.len(), 1, "not lost: {due:?}");
    h.queue
        .schedule_artifacts_expiry(&due[0].job_id, &due[0].reference, chrono::Utc::now())
        .await
        .unwrap();

    // The next agent to start deletes them, and the job says so.
    assert_eq!(raibid_agent::expire_artifacts(&h.queue, &expiring).await, 1);
    assert_eq!(manifest(digest), 404);
    let artifacts = h.job(&job.id).await.artifacts.unwrap();
    assert!(artifacts.expired, "{artifacts:?}");
    assert_eq!(raibid_agent::expire_artifacts(&h.queue, &expiring).await, 0);
}

/// A pipeline's `expire_in` sets its artifacts' lifetime instead of the agent's default, up to
/// the agent's `max_expire`; `never` keeps them out of the due set altogether.
#[tokio::test]
async fn expire_in_sets_the_lifetime_up_to_the_agent_s_limit() {
    let h = Harness::new();
    let registry = Registry::start_with_auth(TEST_USER, TEST_PASSWORD, TEST_PASSWORD_BCRYPT);
    let repo = GitRepo::new();
    const DAY: Duration = Duration::from_secs(86_400);
    let mut agent = store(&registry, TEST_PASSWORD, 1 << 20);
    agent.expire_after = Some(30 * DAY);
    let run = |expire_in: &str, store: ArtifactStore| {
        let (h, repo) = (&h, &repo);
        let pipeline = BUILD.replace(
            "artifacts:\n",
            &format!("artifacts:\n  expire_in: {expire_in}\n"),
        );
        async move {
            let sha = repo.commit(&[(".raibid.yaml", pipeline.as_str())], "build");
            let job = h.enqueue(&repo.url(), &sha).await;
            h.run_once(h.runner_with_artifacts(SecretStore::default(), store))
                .await;
            let (done, log) = (h.job(&job.id).await, h.log(&job.id).await);
            assert_eq!(done.status, JobStatus::Success, "{log}");
            let expires_at = done.artifacts.expect("kept").expires_at;
            let days = expires_at.map(|at| (at - chrono::Utc::now()).num_hours() as f64 / 24.0);
            (job.id, days, log)
        }
    };

    let (week, days, log) = run("1 week", agent.clone()).await;
    assert!(days.is_some_and(|d| (6.9..=7.0).contains(&d)), "{days:?}");
    assert!(log.contains("(expire_in)\n"), "{log}");

    let mut limited = agent.clone();
    limited.max_expire = Some(2 * DAY);
    let (capped, days, log) = run("never", limited).await;
    assert!(days.is_some_and(|d| (1.9..=2.0).contains(&d)), "{days:?}");
    assert!(log.contains("(agent.artifacts_max_expire_days)"), "{log}");

    let (never, days, log) = run("never", agent).await;
    assert_eq!(days, None);
    assert!(
        log.contains("artifacts: kept for ever (expire_in: never)"),
        "{log}"
    );

    let later = chrono::Utc::now() + chrono::TimeDelta::days(3650);
    let due: Vec<String> = h
        .queue
        .take_due_artifacts(later, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|due| due.job_id)
        .collect();
    assert_eq!(due, [capped, week], "never is never due: {never}");
}

/// `when:` decides by the verdict; a fork's job pushes nothing; artifacts that cannot be kept
/// (too large, the registry refuses) end a passing job in `error` and a failed one as failed.
#[tokio::test]
async fn artifacts_follow_when_forks_and_failures() {
    let h = Harness::new();
    let registry = Registry::start_with_auth(TEST_USER, TEST_PASSWORD, TEST_PASSWORD_BCRYPT);
    let repo = GitRepo::new();
    let run = |spec: NewJob, store: ArtifactStore| {
        let h = &h;
        async move {
            let job = h.enqueue_spec(spec).await;
            h.run_once(h.runner_with_artifacts(SecretStore::default(), store))
                .await;
            (h.job(&job.id).await, h.log(&job.id).await)
        }
    };
    let push = |sha: &str| {
        NewJob::new(
            "acme/app",
            repo.url(),
            "refs/heads/main",
            sha,
            raibid_model::Event::Push,
        )
    };

    let failing = "artifacts:\n  paths: [out.log]\n  when: on_failure\nsteps:\n  - name: t\n    run: |\n      echo 'what went wrong' > out.log\n      exit 1\n";
    let sha = repo.commit(&[(".raibid.yaml", failing)], "fails");
    let (job, log) = run(push(&sha), store(&registry, TEST_PASSWORD, 1 << 20)).await;
    assert_eq!(job.status, JobStatus::Failure, "{log}");
    assert!(job.artifacts.is_some(), "{log}");

    let passing = failing.replace("      exit 1\n", "");
    let sha = repo.commit(&[(".raibid.yaml", passing.as_str())], "passes");
    let (job, log) = run(push(&sha), store(&registry, TEST_PASSWORD, 1 << 20)).await;
    assert_eq!(job.status, JobStatus::Success, "{log}");
    assert!(job.artifacts.is_none());
    assert!(
        log.contains("artifacts: not kept: `when: on_failure` and the job succeeded"),
        "{log}"
    );

    let sha = repo.commit(&[(".raibid.yaml", BUILD)], "build");
    let (job, log) = run(
        Harness::pull_request(&repo.url(), &sha, 7, true),
        store(&registry, TEST_PASSWORD, 1 << 20),
    )
    .await;
    assert_eq!(job.status, JobStatus::Success, "{log}");
    assert!(job.artifacts.is_none());
    assert!(
        log.contains("pull requests from forks push nothing"),
        "{log}"
    );

    let (job, log) = run(push(&sha), store(&registry, TEST_PASSWORD, 10)).await;
    assert_eq!(job.status, JobStatus::Error, "{log}");
    assert!(
        job.reason
            .as_deref()
            .unwrap_or_default()
            .contains("larger than agent.artifacts_max_bytes (10 bytes)"),
        "{job:?}"
    );

    let (job, log) = run(push(&sha), store(&registry, "wrong", 1 << 20)).await;
    assert_eq!(job.status, JobStatus::Error, "{log}");
    let reason = job.reason.unwrap_or_default();
    assert!(reason.starts_with("artifacts: not kept: "), "{reason}");
    assert!(reason.contains("HTTP 401"), "{reason}");
    assert!(!reason.contains("wrong") && !log.contains("wrong"), "{log}");
    // Only the job that kept its artifacts is in the registry.
    assert_eq!(registry.tags("acme/app/artifacts").len(), 1);
}
