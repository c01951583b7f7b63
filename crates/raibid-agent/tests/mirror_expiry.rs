//! Git mirrors no job used within `agent.mirror_expire_days` leave the cache directory: real
//! redis-server, real git repositories, a real agent.

use std::path::Path;
use std::time::{Duration, SystemTime};

use raibid_agent::GitCheckout;
use raibid_model::JobStatus;
use raibid_testkit::{GitRepo, set_modified_ago};

mod support;
use support::Harness;

const DAY: Duration = Duration::from_secs(24 * 3600);
const PIPELINE: &str = "steps:\n  - name: test\n    run: test -f README.md\n";

fn last_used(lock: &Path) -> SystemTime {
    std::fs::metadata(lock).unwrap().modified().unwrap()
}

/// A repository with a pipeline, and its mirror's path in the harness's cache.
fn repo(h: &Harness) -> (GitRepo, String, std::path::PathBuf) {
    let repo = GitRepo::new();
    let sha = repo.commit(&[(".raibid.yaml", PIPELINE), ("README.md", "hi\n")], "init");
    let mirror = GitCheckout::new(h.cache(), None).mirror_path("acme/app", &repo.url());
    (repo, sha, mirror)
}

#[tokio::test]
async fn a_mirror_unused_for_the_expiry_is_removed_by_the_next_agent() {
    let h = Harness::new();
    let (old, old_sha, old_mirror) = repo(&h);
    let (busy, busy_sha, busy_mirror) = repo(&h);
    for (repo, sha) in [(&old, &old_sha), (&busy, &busy_sha)] {
        let (job, log) = h.run(&repo.url(), sha).await;
        assert_eq!(job.status, JobStatus::Success, "{log}");
    }
    let old_lock = old_mirror.with_extension("lock");
    let busy_lock = busy_mirror.with_extension("lock");
    assert!(old_mirror.join("HEAD").exists() && busy_mirror.join("HEAD").exists());
    // The agents' first sweep of this cache marked the mirrors used; the checkouts did too.
    let stamp = h.cache().join(".mirrors-swept");
    assert!(stamp.is_file());
    assert!(
        SystemTime::now()
            .duration_since(last_used(&old_lock))
            .unwrap()
            < DAY
    );

    // A month on: `old` was last built 31 days ago, `busy` 29, the last sweep 2 days ago.
    set_modified_ago(&old_lock, 31 * DAY);
    set_modified_ago(&busy_lock, 29 * DAY);
    set_modified_ago(&stamp, 2 * DAY);
    let (job, log) = h.run(&busy.url(), &busy_sha).await;
    assert_eq!(job.status, JobStatus::Success, "{log}");
    assert!(!old_mirror.exists(), "the unused mirror is removed");
    assert!(busy_mirror.join("HEAD").exists());
    assert!(
        SystemTime::now()
            .duration_since(last_used(&busy_lock))
            .unwrap()
            < DAY,
        "the checkout marked its mirror used"
    );
    assert!(old_lock.is_file(), "lock files stay");

    // Building the old repository again clones it again.
    let (job, log) = h.run(&old.url(), &old_sha).await;
    assert_eq!(job.status, JobStatus::Success, "{log}");
    assert!(log.contains("new mirror"), "{log}");
    assert!(old_mirror.join("HEAD").exists());
}

#[tokio::test]
async fn a_mirror_is_kept_where_mirrors_never_expire() {
    let h = Harness::new();
    let (repo, sha, mirror) = repo(&h);
    let (job, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(job.status, JobStatus::Success, "{log}");
    // The agent started before its checkout made the cache directory: the first sweep is
    // this one, which only marks the mirrors used.
    let first = GitCheckout::new(h.cache(), None).expire_mirrors().await;
    assert_eq!(first.unwrap(), Some(Default::default()));
    set_modified_ago(&mirror.with_extension("lock"), 400 * DAY);
    set_modified_ago(&h.cache().join(".mirrors-swept"), 2 * DAY);

    let checkout = GitCheckout::new(h.cache(), None).with_mirror_expiry(None);
    assert_eq!(checkout.expire_mirrors().await.unwrap(), None);
    assert!(mirror.join("HEAD").exists());
    // With the default expiry the same sweep removes it.
    let sweep = GitCheckout::new(h.cache(), None)
        .expire_mirrors()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        sweep.expired,
        [mirror.file_name().unwrap().to_str().unwrap()]
    );
    assert!(!mirror.exists());
}
