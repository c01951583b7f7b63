//! What the agent tests that run whole jobs share: a real redis-server and queue, and agents
//! under bubblewrap whose mirror cache, workspaces and image storage live in one temporary
//! directory.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use raibid_agent::executor::{BwrapExecutor, BwrapOptions, Executor};
use raibid_agent::image::{ImageBuildOptions, ImageBuilder, StorageDriver};
use raibid_agent::{
    AgentOptions, GitCheckout, JobEnd, Runner, RunnerSettings, SecretStore, run_agent,
};
use raibid_model::{Event, Job, NewJob, PoolName};
use raibid_queue::{Enqueued, LogCursor, Queue, QueueOptions};
use raibid_testkit::{RedisServer, require_binary};
use tokio_util::sync::CancellationToken;

/// The name of the tests' agent, in its options and its runner's settings.
pub const AGENT_NAME: &str = "test-agent";
/// The server's address for people that the harness's agents know (`server.public_url`).
pub const PUBLIC_URL: &str = "https://ci.example/raibid";

/// A real redis-server and queue, and what an agent keeps on disk, under `dir`: its mirror
/// cache (`cache`, hidden from steps), its workspaces (`work`) and buildah's storage
/// (`buildah`).
pub struct Harness {
    pub redis: RedisServer,
    pub queue: Queue,
    pub dir: tempfile::TempDir,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_secrets_key(None)
    }

    /// A harness whose queue (the agents' too) seals and opens repository secrets with `key`
    /// (`redis.secrets_key`).
    pub fn with_secrets_key(key: Option<&str>) -> Self {
        let redis = RedisServer::start();
        let options = Self::queue_options(&redis, key);
        Self::on(redis, options)
    }

    /// A harness whose redis-server keeps everything in its append-only file, so that a test
    /// may kill it and start it again ([`RedisServer::restart`]) without losing the jobs, and
    /// whose calls to a Redis that is gone give up after `command_timeout`.
    pub fn with_aof(command_timeout: Duration) -> Self {
        let redis = RedisServer::start_with(raibid_testkit::RedisOptions {
            aof: true,
            ..Default::default()
        });
        let mut options = Self::queue_options(&redis, None);
        options.command_timeout = command_timeout;
        Self::on(redis, options)
    }

    fn on(redis: RedisServer, options: QueueOptions) -> Self {
        require_binary("bwrap", "bubblewrap");
        let queue = Queue::open(options).unwrap();
        Self {
            redis,
            queue,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn queue_options(redis: &RedisServer, key: Option<&str>) -> QueueOptions {
        let mut options = QueueOptions::new(redis.url());
        options.command_timeout = Duration::from_secs(3);
        options.secrets_key = key.map(|k| raibid_queue::SecretsKey::derive(k).unwrap());
        options
    }

    /// Another queue on the harness's Redis, with `key` for repository secrets: an agent
    /// configured unlike the one that set them.
    pub fn queue_with_key(&self, key: Option<&str>) -> Queue {
        Queue::open(Self::queue_options(&self.redis, key)).unwrap()
    }

    /// A harness for steps run as other users (`agent.step_user`), which only root can start:
    /// the step users have to get to their workspaces, and tempdir makes the harness's
    /// directory 0700.
    pub fn for_step_users() -> Self {
        use std::os::unix::fs::PermissionsExt;
        assert!(
            nix::unistd::geteuid().is_root(),
            "starting steps as another user needs root (CI runs as root); run this test as root"
        );
        let h = Self::new();
        std::fs::set_permissions(h.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        h
    }

    /// What is left in the runners' workspace root (job directories and their locks).
    pub fn work_left(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path().join("work"))
            .map(|dir| {
                dir.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The agent's mirror cache (its git's HOME too).
    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// A runner with bwrap steps (no network, the cache hidden) and no image builder.
    pub fn runner(&self, secrets: SecretStore) -> Arc<Runner> {
        self.runner_with_images(secrets, None, "registry.invalid")
    }

    pub fn runner_with_images(
        &self,
        secrets: SecretStore,
        images: Option<Arc<ImageBuilder>>,
        registry: &str,
    ) -> Arc<Runner> {
        let executor: Arc<dyn Executor> = Arc::new(BwrapExecutor::new(BwrapOptions {
            network: false,
            hide: vec![self.cache()],
            ..Default::default()
        }));
        self.runner_on(executor, secrets, images, registry)
    }

    pub fn runner_on(
        &self,
        executor: Arc<dyn Executor>,
        secrets: SecretStore,
        images: Option<Arc<ImageBuilder>>,
        registry: &str,
    ) -> Arc<Runner> {
        Arc::new(self.build_runner(executor, secrets, images, registry))
    }

    /// A bwrap runner that keeps `artifacts:` in `store`.
    pub fn runner_with_artifacts(
        &self,
        secrets: SecretStore,
        store: raibid_agent::artifacts::ArtifactStore,
    ) -> Arc<Runner> {
        let executor: Arc<dyn Executor> = Arc::new(BwrapExecutor::new(BwrapOptions {
            network: false,
            hide: vec![self.cache()],
            ..Default::default()
        }));
        let registry = store.registry.clone();
        let mut runner = self.build_runner(executor, secrets, None, &registry);
        runner.artifacts = Some(store);
        Arc::new(runner)
    }

    fn build_runner(
        &self,
        executor: Arc<dyn Executor>,
        secrets: SecretStore,
        images: Option<Arc<ImageBuilder>>,
        registry: &str,
    ) -> Runner {
        Runner {
            queue: self.queue.clone(),
            executor,
            git: GitCheckout::new(self.cache(), None),
            images,
            artifacts: None,
            secrets,
            settings: RunnerSettings {
                agent_name: AGENT_NAME.into(),
                workspace_root: self.dir.path().join("work"),
                keep_workspace: false,
                heartbeat_interval: Duration::from_millis(200),
                step_path: "/usr/local/bin:/usr/bin:/bin".into(),
                step_env: BTreeMap::new(),
                registry: registry.into(),
                repos: raibid_agent::RepoFilter::any(),
                public_url: PUBLIC_URL.into(),
                ephemeral: false,
            },
        }
    }

    /// An image builder with storage under the harness's directory, pushing to `registry`.
    pub fn image_builder(&self, registry: &raibid_testkit::Registry) -> Arc<ImageBuilder> {
        require_binary("buildah", "buildah");
        Arc::new(
            ImageBuilder::new(ImageBuildOptions {
                root: self.dir.path().join("buildah/root"),
                runroot: self.dir.path().join("buildah/run"),
                storage_driver: StorageDriver::Vfs,
                registry_auth: None,
                pull_auths: Vec::new(),
                insecure_registries: vec![registry.host()],
                network: true,
            })
            .unwrap(),
        )
    }

    /// Queues a push of `sha` to `url`'s `main`, of the repository `acme/app`.
    pub async fn enqueue(&self, url: &str, sha: &str) -> Job {
        self.enqueue_spec(NewJob::new(
            "acme/app",
            url,
            "refs/heads/main",
            sha,
            Event::Push,
        ))
        .await
    }

    /// A pull request (number `number`) of `url`'s `sha` into `acme/app`'s `main`, from a
    /// fork or from the repository itself.
    pub fn pull_request(url: &str, sha: &str, number: u64, from_fork: bool) -> NewJob {
        let mut spec = NewJob::new("acme/app", url, "refs/heads/main", sha, Event::PullRequest);
        spec.pr_number = Some(number);
        spec.from_fork = from_fork;
        spec
    }

    pub async fn enqueue_spec(&self, spec: NewJob) -> Job {
        match self.queue.enqueue(spec).await.unwrap() {
            Enqueued::Created(job) => *job,
            other => panic!("{other:?}"),
        }
    }

    /// Runs one agent with `--once` until it is done (within a minute); how its jobs ended.
    pub async fn run_once(&self, runner: Arc<Runner>) -> Vec<(String, JobEnd)> {
        let summary = tokio::time::timeout(
            Duration::from_secs(60),
            run_agent(runner, options(true), CancellationToken::new()),
        )
        .await
        .expect("agent finished in time")
        .unwrap();
        summary.jobs
    }

    /// Queues a push of `sha` to `url` and runs one agent (default runner, no secrets) until
    /// it has finished that job; the job as it ended and its log.
    pub async fn run(&self, url: &str, sha: &str) -> (Job, String) {
        let job = self.enqueue(url, sha).await;
        self.run_once(self.runner(SecretStore::default())).await;
        (self.job(&job.id).await, self.log(&job.id).await)
    }

    /// Queues `spec` and runs one agent (default runner, no secrets) until it has finished
    /// it; the job as it ended and its log.
    pub async fn run_spec(&self, spec: NewJob) -> (Job, String) {
        let job = self.enqueue_spec(spec).await;
        self.run_once(self.runner(SecretStore::default())).await;
        (self.job(&job.id).await, self.log(&job.id).await)
    }

    pub async fn log(&self, id: &str) -> String {
        let batch = self
            .queue
            .read_log(id, &LogCursor::start(), 10_000)
            .await
            .unwrap();
        let bytes: Vec<u8> = batch.chunks.into_iter().flat_map(|c| c.data).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub async fn job(&self, id: &str) -> Job {
        self.queue.get(id).await.unwrap().unwrap()
    }

    /// Cancels job `id` as soon as `ready` holds for it (looked at every 200 ms), from a task
    /// of its own, as a person would while the agent runs it.
    pub fn cancel_when(&self, id: &str, ready: impl Fn(&Job) -> bool + Send + Sync + 'static) {
        let queue = self.queue.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                if ready(&queue.get(&id).await.unwrap().unwrap()) {
                    queue.cancel(&id).await.unwrap();
                    return;
                }
            }
        });
    }
}

/// The tests' agent: the default pool, one job at a time, short timeouts; `once` stops it
/// when the queue has nothing left for it.
pub fn options(once: bool) -> AgentOptions {
    AgentOptions {
        name: AGENT_NAME.into(),
        pools: vec![PoolName::default()],
        labels: BTreeMap::new(),
        once,
        idle_timeout: Duration::from_secs(2),
        concurrency: 1,
        grace_period: Duration::from_millis(300),
        heartbeat_interval: Duration::from_millis(200),
    }
}
