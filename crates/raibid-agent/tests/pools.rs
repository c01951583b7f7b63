//! A pipeline that names its pool (`pool:`) runs on that pool's agents, and an agent runs only
//! the repositories of `agent.repos`: a real agent loop, redis-server and git repositories.

use std::sync::Arc;
use std::time::Duration;

use raibid_agent::{RepoFilter, Runner, SecretStore, run_agent};
use raibid_model::{Job, JobStatus, PoolName};
use raibid_testkit::GitRepo;
use tokio_util::sync::CancellationToken;

mod support;
use support::{Harness, options};

fn gpu() -> PoolName {
    PoolName::new("gpu").unwrap()
}

/// Runs one `--once` agent of `pool` (one job, if there is one).
async fn run_pool(runner: Arc<Runner>, pool: PoolName) {
    let mut options = options(true);
    options.pools = vec![pool];
    tokio::time::timeout(
        Duration::from_secs(60),
        run_agent(runner, options, CancellationToken::new()),
    )
    .await
    .expect("agent finished in time")
    .unwrap();
}

async fn children(h: &Harness, parent: &Job) -> Vec<Job> {
    let mut jobs = Vec::new();
    for id in &h.job(&parent.id).await.children {
        jobs.push(h.job(id).await);
    }
    jobs
}

#[tokio::test]
async fn a_pipeline_for_another_pool_is_queued_again_there() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "pool: gpu\nsteps:\n  - name: train\n    run: echo \"training in $RAIBID_POOL\"\n",
        )],
        "gpu",
    );
    let parent = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let done = h.job(&parent.id).await;
    assert_eq!(done.status, JobStatus::Success, "{:?}", done.reason);
    assert!(done.steps.is_empty(), "nothing ran in the default pool");
    let moved = children(&h, &done).await;
    assert_eq!(moved.len(), 1);
    assert_eq!(
        done.reason.as_deref(),
        Some(format!("runs in pool gpu as {}", moved[0].id).as_str())
    );
    assert!(
        h.log(&parent.id)
            .await
            .contains("the pipeline runs in pool gpu (`pool:`), not default"),
    );
    assert_eq!(moved[0].spec.pool, gpu());
    assert_eq!(moved[0].status, JobStatus::Queued);
    // An agent of the default pool has nothing left to do; one of the gpu pool runs it.
    assert!(
        h.run_once(h.runner(SecretStore::default()))
            .await
            .is_empty()
    );
    run_pool(h.runner(SecretStore::default()), gpu()).await;
    let ran = h.job(&moved[0].id).await;
    assert_eq!(ran.status, JobStatus::Success, "{:?}", ran.reason);
    assert!(h.log(&ran.id).await.contains("training in gpu"));
    assert!(ran.children.is_empty(), "in its pool, it runs");
}

#[tokio::test]
async fn matrix_variants_and_workflows_go_straight_to_their_pool() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "pool: gpu\nmatrix:\n  N: [\"1\", \"2\"]\nsteps:\n  - name: t\n    run: echo n=$N\n",
        )],
        "matrix",
    );
    let parent = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let variants = children(&h, &parent).await;
    assert_eq!(variants.len(), 2);
    assert!(
        variants.iter().all(|v| v.spec.pool == gpu()),
        "{variants:?}"
    );
    for _ in &variants {
        run_pool(h.runner(SecretStore::default()), gpu()).await;
    }
    for v in children(&h, &parent).await {
        assert_eq!(v.status, JobStatus::Success, "{:?}", v.reason);
        assert!(v.children.is_empty());
    }

    repo.git(&["rm", "-q", ".raibid.yaml"]);
    let sha = repo.commit(
        &[
            (
                ".raibid/train.yaml",
                "pool: gpu\nsteps:\n  - name: t\n    run: echo trained\n",
            ),
            (
                ".raibid/lint.yaml",
                "steps:\n  - name: l\n    run: echo linted\n",
            ),
        ],
        "workflows",
    );
    let parent = h.enqueue(&repo.url(), &sha).await;
    h.run_once(h.runner(SecretStore::default())).await;
    let jobs = children(&h, &parent).await;
    let pools: Vec<(String, String)> = jobs
        .iter()
        .map(|j| {
            (
                j.spec.env["RAIBID_WORKFLOW"].clone(),
                j.spec.pool.to_string(),
            )
        })
        .collect();
    assert_eq!(
        pools,
        [
            ("lint".to_owned(), "default".to_owned()),
            ("train".to_owned(), "gpu".to_owned())
        ]
    );
}

#[tokio::test]
async fn an_agent_runs_only_the_repositories_of_agent_repos() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(".raibid.yaml", "steps:\n  - name: s\n    run: echo ran\n")],
        "init",
    );
    let job = h.enqueue(&repo.url(), &sha).await;
    let mut runner = Arc::into_inner(h.runner(SecretStore::default())).unwrap();
    runner.settings.repos = RepoFilter::new(&["ops/*".into()]).unwrap();
    h.run_once(Arc::new(runner)).await;
    let refused = h.job(&job.id).await;
    assert_eq!(refused.status, JobStatus::Error);
    assert_eq!(
        refused.reason.as_deref(),
        Some(
            "repository acme/app may not run on agent test-agent: it is not in agent.repos (ops/*)"
        )
    );
    assert!(!h.log(&job.id).await.contains("ran"));

    let job = h.enqueue(&repo.url(), &sha).await;
    let mut runner = Arc::into_inner(h.runner(SecretStore::default())).unwrap();
    runner.settings.repos = RepoFilter::new(&["ACME/*".into()]).unwrap();
    h.run_once(Arc::new(runner)).await;
    assert_eq!(h.job(&job.id).await.status, JobStatus::Success);
}
