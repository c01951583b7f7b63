//! Repository secrets (`raibid secret set`) in real jobs: a step that names one gets its value
//! and the log shows `***` for it and for every other secret of the repository; a secret is
//! refused to jobs of events it was not given to, to pull requests from forks, and by an
//! agent whose `redis.secrets_key` is not the one it was sealed with.

mod support;

use raibid_agent::SecretStore;
use raibid_model::{Event, JobStatus};
use raibid_testkit::GitRepo;
use support::Harness;

const KEY: &str = "the-repository-secrets-key-0123456789";

async fn harness_with_secrets() -> Harness {
    let h = Harness::with_secrets_key(Some(KEY));
    h.queue
        .set_secret("acme/app", "DEPLOY_TOKEN", "dep-7Hq2x9Lw", &[Event::Push])
        .await
        .unwrap();
    h.queue
        .set_secret("acme/app", "RELEASE_TOKEN", "rel-3Kd8s1Pz", &[Event::Tag])
        .await
        .unwrap();
    h.queue
        .set_secret("acme/app", "UNUSED_TOKEN", "unu-5Rt6y7Uq", &[])
        .await
        .unwrap();
    // Another repository's secret of the same name is not this one's.
    h.queue
        .set_secret("acme/other", "DEPLOY_TOKEN", "oth-1Aa2Bb3C", &[])
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
            // Printed without being named: masked all the same.
            ("unused", "unused is unu-5Rt6y7Uq\n"),
        ],
        "init",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let log = h.log(&job.id).await;
    assert_eq!(h.job(&job.id).await.status, JobStatus::Success, "{log}");
    assert!(log.contains("the token is ***"), "{log}");
    assert!(log.contains("unused is ***"), "{log}");
    for value in ["dep-7Hq2x9Lw", "unu-5Rt6y7Uq"] {
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
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let done = h.job(&job.id).await;
    assert_eq!(done.status, JobStatus::Error);
    let reason = done.reason.unwrap();
    assert!(
        reason.contains("not given to push jobs (only to tag"),
        "{reason}"
    );
    assert!(!h.log(&job.id).await.contains("the token is"));

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
    let job = h
        .enqueue_spec(Harness::pull_request(&repo.url(), &fork_sha, 7, true))
        .await;
    h.run_once(h.runner(SecretStore::default())).await;
    let done = h.job(&job.id).await;
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
    let job = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let log = h.log(&job.id).await;
    assert_eq!(h.job(&job.id).await.status, JobStatus::Success, "{log}");
}
