//! Repository and owner secrets (`raibid secret set`) in real jobs: a step that names one gets
//! its value (the repository's over its owner's) and the log shows `***` for it and for every
//! other secret of the repository and its owner; a secret is
//! refused to jobs of events it was not given to, to pull requests from forks, and by an
//! agent whose `redis.secrets_key` is not the one it was sealed with.

mod support;

use raibid_agent::SecretStore;
use raibid_model::{Event, JobStatus, SecretScope};
use raibid_testkit::GitRepo;
use support::Harness;

const KEY: &str = "the-repository-secrets-key-0123456789";

fn repo(name: &str) -> SecretScope {
    SecretScope::Repo(name.to_owned())
}

async fn harness_with_secrets() -> Harness {
    let h = Harness::with_secrets_key(Some(KEY));
    h.queue
        .set_secret(
            &repo("acme/app"),
            "DEPLOY_TOKEN",
            "dep-7Hq2x9Lw",
            &[Event::Push],
            &[],
        )
        .await
        .unwrap();
    h.queue
        .set_secret(
            &repo("acme/app"),
            "RELEASE_TOKEN",
            "rel-3Kd8s1Pz",
            &[Event::Tag],
            &[],
        )
        .await
        .unwrap();
    h.queue
        .set_secret(&repo("acme/app"), "UNUSED_TOKEN", "unu-5Rt6y7Uq", &[], &[])
        .await
        .unwrap();
    // The owner's: every repository of acme gets them, under its own of the same name.
    let acme = SecretScope::Owner("acme".into());
    h.queue
        .set_secret(&acme, "DEPLOY_TOKEN", "org-4Ff5g6Hh", &[], &[])
        .await
        .unwrap();
    h.queue
        .set_secret(&acme, "ORG_TOKEN", "org-9Jj8k7Ll", &[], &[])
        .await
        .unwrap();
    // Another repository's secret of the same name is not this one's.
    h.queue
        .set_secret(
            &repo("acme/other"),
            "DEPLOY_TOKEN",
            "oth-1Aa2Bb3C",
            &[],
            &[],
        )
        .await
        .unwrap();
    h
}

fn pipeline(secret: &str) -> String {
    format!(
        "steps:\n  - name: use\n    secrets: [{secret}]\n    run: |\n      \
         echo the token is ${secret}\n      \
         test \"${secret}\" = \"$(cat expected)\"\n      \
         cat unused\n"
    )
}

#[tokio::test]
async fn a_step_gets_its_repositorys_secret_and_the_log_masks_them_all() {
    let h = harness_with_secrets().await;
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[
            (".raibid.yaml", &pipeline("DEPLOY_TOKEN")),
            ("expected", "dep-7Hq2x9Lw"),
            // Printed without being named: masked all the same, the owner's too.
            ("unused", "unused is unu-5Rt6y7Uq, org is org-9Jj8k7Ll\n"),
        ],
        "init",
    );
    let (done, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert!(log.contains("the token is ***"), "{log}");
    assert!(log.contains("unused is ***, org is ***"), "{log}");
    for value in ["dep-7Hq2x9Lw", "unu-5Rt6y7Uq", "org-9Jj8k7Ll"] {
        assert!(!log.contains(value), "{value} in {log}");
    }
}

#[tokio::test]
async fn a_secret_is_refused_to_other_events_to_forks_and_to_other_keys() {
    let h = harness_with_secrets().await;
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[
            (".raibid.yaml", &pipeline("RELEASE_TOKEN")),
            ("expected", "rel-3Kd8s1Pz"),
            ("unused", ""),
        ],
        "release",
    );
    // Given to tags only: a push's job fails saying so, before the step runs.
    let (done, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(done.status, JobStatus::Error);
    let reason = done.reason.unwrap();
    assert!(
        reason.contains("not given to push jobs (only to tag"),
        "{reason}"
    );
    assert!(!log.contains("the token is"), "{log}");

    let sha = repo.commit(
        &[
            (".raibid.yaml", &pipeline("DEPLOY_TOKEN")),
            ("expected", "dep-7Hq2x9Lw"),
        ],
        "deploy",
    );
    // A pull request from a fork gets none, even one given to every event, whatever its
    // pipeline says.
    let fork_sha = repo.commit(
        &[
            (".raibid.yaml", &pipeline("UNUSED_TOKEN")),
            ("expected", "unu-5Rt6y7Uq"),
        ],
        "fork",
    );
    let (done, _) = h
        .run_spec(Harness::pull_request(&repo.url(), &fork_sha, 7, true))
        .await;
    assert_eq!(done.status, JobStatus::Error);
    assert!(
        done.reason
            .unwrap()
            .contains("withheld from pull requests from forks")
    );

    // An agent without the key, or with another, cannot open it and says so.
    for (key, says) in [
        (None, "no redis.secrets_key"),
        (
            Some("another-key-of-at-least-32-characters!"),
            "sealed with another redis.secrets_key",
        ),
    ] {
        let job = h.enqueue(&repo.url(), &sha).await;
        let mut runner = std::sync::Arc::into_inner(h.runner(SecretStore::default())).unwrap();
        runner.queue = h.queue_with_key(key);
        h.run_once(std::sync::Arc::new(runner)).await;
        let done = h.job(&job.id).await;
        assert_eq!(done.status, JobStatus::Error);
        let reason = done.reason.unwrap();
        assert!(reason.contains(says), "{reason}");
    }

    // With the key and a push, the same commit passes.
    let (done, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
}

#[tokio::test]
async fn an_owners_secret_reaches_its_repositories_only() {
    let h = harness_with_secrets().await;
    let repo_dir = GitRepo::new();
    let sha = repo_dir.commit(
        &[
            (".raibid.yaml", &pipeline("ORG_TOKEN")),
            ("expected", "org-9Jj8k7Ll"),
            ("unused", ""),
        ],
        "org",
    );
    let (done, log) = h.run(&repo_dir.url(), &sha).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert!(log.contains("the token is ***"), "{log}");

    // A repository of another owner does not get it.
    let spec = raibid_model::NewJob::new(
        "elsewhere/app",
        repo_dir.url(),
        "refs/heads/main",
        &sha,
        Event::Push,
    );
    let (done, _) = h.run_spec(spec).await;
    assert_eq!(done.status, JobStatus::Error);
    let reason = done.reason.unwrap();
    assert!(
        reason.contains("neither a secret of repository elsewhere/app"),
        "{reason}"
    );
}

/// An `image-build` step's `secrets:` are build secrets: a `RUN --mount=type=secret` step
/// reads the repository's secret, and the job's log masks it.
#[tokio::test]
async fn an_image_build_step_gets_its_secrets_as_build_secrets() {
    raibid_testkit::require_binary("buildah", "buildah");
    let busybox = raibid_testkit::require_binary("busybox", "busybox-static");
    let h = harness_with_secrets().await;
    let registry = raibid_testkit::Registry::start();
    let builder = h.image_builder(&registry);
    let repo_dir = GitRepo::new();
    // A static busybox is the build's shell: no base image to pull.
    std::fs::copy(&busybox, repo_dir.path().join("busybox")).unwrap();
    repo_dir.git(&["add", "busybox"]);
    let sha = repo_dir.commit(
        &[
            (
                ".raibid.yaml",
                "steps:\n  - name: image\n    secrets: [DEPLOY_TOKEN]\n    image-build:\n      \
                 tags: [\"{registry}/{repo}:{short_sha}\"]\n",
            ),
            (
                "Containerfile",
                "FROM scratch\nCOPY busybox /bin/busybox\n\
                 RUN --mount=type=secret,id=DEPLOY_TOKEN [\"/bin/busybox\", \"sh\", \"-c\", \
                 \"/bin/busybox echo token=$(/bin/busybox cat /run/secrets/DEPLOY_TOKEN) \
                 bytes=$(/bin/busybox wc -c < /run/secrets/DEPLOY_TOKEN)\"]\n",
            ),
        ],
        "image with a build secret",
    );
    let job = h.enqueue(&repo_dir.url(), &sha).await;
    h.run_once(h.runner_with_images(SecretStore::default(), Some(builder), &registry.host()))
        .await;
    let log = h.log(&job.id).await;
    assert_eq!(h.job(&job.id).await.status, JobStatus::Success, "{log}");
    assert!(log.contains("token=*** bytes=12"), "{log}");
    assert!(!log.contains("dep-7Hq2x9Lw"), "{log}");
}

/// Woodpecker 2's `environment: { VAR: { from_secret: name } }` gives a step a secret under a
/// variable name of its own, masked like any other.
#[tokio::test]
async fn from_secret_gives_a_secret_under_the_steps_own_name() {
    let h = harness_with_secrets().await;
    h.queue
        .set_secret(
            &repo("acme/app"),
            "docker_password",
            "dkr-3Vb7n9Mm",
            &[],
            &[],
        )
        .await
        .unwrap();
    let repo_dir = GitRepo::new();
    let sha = repo_dir.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  push:\n    environment:\n      DOCKER_PASSWORD:\n        \
             from_secret: docker_password\n      RUST: 1.80\n    commands:\n      \
             - echo password=$DOCKER_PASSWORD rust=$RUST\n      \
             - test \"$DOCKER_PASSWORD\" = dkr-3Vb7n9Mm\n      \
             - test -z \"${docker_password:-}\"\n",
        )],
        "woodpecker",
    );
    let (done, log) = h.run(&repo_dir.url(), &sha).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert!(log.contains("password=*** rust=1.80"), "{log}");
    assert!(!log.contains("dkr-3Vb7n9Mm"), "{log}");
}

/// A Woodpecker 1 file names secrets in lowercase (`secrets: [docker_password]`) and reads
/// them in uppercase; the secret itself may have been set in uppercase.
#[tokio::test]
async fn woodpecker_style_lowercase_secret_names_work() {
    let h = harness_with_secrets().await;
    h.queue
        .set_secret(
            &repo("acme/app"),
            "DOCKER_PASSWORD",
            "dkr-8Hh2j4Kk",
            &[],
            &[],
        )
        .await
        .unwrap();
    let repo_dir = GitRepo::new();
    let sha = repo_dir.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: push\n    secrets: [docker_password]\n    commands:\n      \
             - echo upper=$DOCKER_PASSWORD lower=$docker_password\n      \
             - test \"$DOCKER_PASSWORD\" = dkr-8Hh2j4Kk\n",
        )],
        "woodpecker 1",
    );
    let (done, log) = h.run(&repo_dir.url(), &sha).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert!(log.contains("upper=*** lower=***"), "{log}");
}

/// A secret given only to pushes to `main` reaches a push to main and no other branch.
#[tokio::test]
async fn a_branch_restricted_secret_reaches_only_pushes_to_its_branches() {
    let h = harness_with_secrets().await;
    h.queue
        .set_secret(
            &repo("acme/app"),
            "PROD_TOKEN",
            "prod-6Yy7u8Ii",
            &[],
            &["main".into()],
        )
        .await
        .unwrap();
    let repo_dir = GitRepo::new();
    let sha = repo_dir.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: deploy\n    secrets: [PROD_TOKEN]\n    run: echo prod=$PROD_TOKEN\n",
        )],
        "deploy",
    );
    let (done, log) = h.run(&repo_dir.url(), &sha).await;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert!(log.contains("prod=***"), "{log}");

    let (done, _) = h
        .run_spec(raibid_model::NewJob::new(
            "acme/app",
            repo_dir.url(),
            "refs/heads/feature",
            &sha,
            Event::Push,
        ))
        .await;
    assert_eq!(done.status, JobStatus::Error);
    let reason = done.reason.unwrap();
    assert!(
        reason.contains("only to jobs of pushes to branches main") && reason.contains("feature"),
        "{reason}"
    );
}
