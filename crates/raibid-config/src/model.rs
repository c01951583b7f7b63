//! The configuration tree. Section and field names follow the design documents that users of
//! raibid-ci already know (`cluster`, `k3s`, `gitea`, `redis`, `keda`, `flux`), plus the
//! sections of the programs themselves (`server`, `agent`, `up`).

use std::collections::BTreeMap;

use raibid_model::PoolName;
use serde::{Deserialize, Serialize};

use crate::{ApiToken, IpRange, MemoryLimit, Schedule, Secret};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub cluster: ClusterConfig,
    pub k3s: K3sConfig,
    pub gitea: GiteaConfig,
    pub redis: RedisConfig,
    pub keda: KedaConfig,
    pub flux: FluxConfig,
    pub server: ServerConfig,
    pub agent: AgentConfig,
    pub up: UpConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    pub name: String,
    pub namespace: String,
    pub kubeconfig: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            name: "dgx-spark-ci".into(),
            namespace: "raibid-ci".into(),
            kubeconfig: "~/.kube/config".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct K3sConfig {
    /// Empty: whatever the official installer picks (the stable channel).
    pub version: String,
    pub data_dir: String,
    pub rootless: bool,
    pub disable_traefik: bool,
}

impl Default for K3sConfig {
    fn default() -> Self {
        Self {
            version: String::new(),
            data_dir: "/var/lib/rancher/k3s".into(),
            rootless: false,
            disable_traefik: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GiteaConfig {
    /// Base URL of the forge, used for commit status and the container registry.
    pub url: String,
    pub admin_user: String,
    /// API token used to post commit statuses (and by `raibid setup gitea`).
    pub token: Secret,
    pub chart_version: String,
}

impl Default for GiteaConfig {
    fn default() -> Self {
        Self {
            url: "http://gitea.raibid-ci.svc.cluster.local:3000".into(),
            admin_user: "admin".into(),
            token: Secret::default(),
            chart_version: "12.4.0".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port/db` or `rediss://` for TLS.
    pub url: Secret,
    /// Prefix of the per-pool streams: `<stream_name>:<pool>`.
    pub stream_name: String,
    pub consumer_group: String,
    /// Bound of each pool stream: enqueue answers "queue full" once this many jobs wait or run,
    /// and a stream this long is trimmed (`XTRIM MINID`) of entries every agent is done with;
    /// an entry still waiting or running is never trimmed.
    pub maxlen: u64,
    /// Deliveries before a job goes to the dead-letter stream.
    pub max_attempts: u32,
    /// A claimed job whose agent has not heart-beaten for this long is requeued.
    pub stale_after_secs: u64,
    /// Per-job log cap; output beyond it is dropped and the truncation marked.
    pub log_max_bytes: u64,
    /// Bound on every non-blocking Redis call, so a dead Redis is an error, not a hang.
    pub command_timeout_ms: u64,
    /// Finished jobs kept (records and logs); older ones are pruned by the reaper.
    pub retain_jobs: u64,
    /// When Redis has a `maxmemory` and uses more than this share of it (percent), the reaper
    /// also prunes the oldest finished jobs, however few are kept: a full Redis under
    /// `noeviction` refuses every new job. 0 turns it off.
    pub prune_memory_percent: u32,
    /// Seals repository secrets (`raibid secret set`) in Redis: the server seals with it and
    /// the agents open with it, so both need the same value, at least 32 random characters.
    /// Empty: repository secrets are off. `raibid up` and `raibid setup` generate one.
    pub secrets_key: Secret,
    /// Keys secrets were sealed with before `secrets_key`, while rotating it: values sealed
    /// with one still open, and the server seals them again with `secrets_key`; once it has
    /// logged doing so, drop them.
    pub secrets_previous_keys: Vec<Secret>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("redis://127.0.0.1:6379"),
            stream_name: "ci-jobs".into(),
            consumer_group: "ci-workers".into(),
            maxlen: 100_000,
            max_attempts: 3,
            stale_after_secs: 60,
            log_max_bytes: 10 * 1024 * 1024,
            command_timeout_ms: 5_000,
            retain_jobs: 50_000,
            prune_memory_percent: 80,
            secrets_key: Secret::default(),
            secrets_previous_keys: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KedaConfig {
    pub version: String,
    /// Seconds between KEDA's looks at the stream lag. The local pool of `raibid up` does not
    /// use it: it looks every `up.polling_interval_ms`.
    pub polling_interval: u64,
    pub max_replicas: u32,
}

impl Default for KedaConfig {
    fn default() -> Self {
        Self {
            version: "2.20.2".into(),
            polling_interval: 10,
            max_replicas: 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FluxConfig {
    pub version: String,
    pub git_repo: String,
    pub branch: String,
    pub path: String,
}

impl Default for FluxConfig {
    fn default() -> Self {
        Self {
            version: "v2.7.0".into(),
            git_repo: "http://gitea.raibid-ci.svc.cluster.local:3000/raibid/cluster-config".into(),
            branch: "main".into(),
            path: "infra/overlays/dev".into(),
        }
    }
}

/// Sends jobs of matching repositories to a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolRule {
    /// Glob over `owner/name`, e.g. `ml/*`.
    pub repo: String,
    pub pool: PoolName,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: String,
    /// How forges and users reach the server; used for commit status links. Empty: where the
    /// server listens (`raibid server` and `raibid up` fill it in once bound), so an explicit
    /// value, even `http://127.0.0.1:8080`, is always kept.
    pub public_url: String,
    /// The bearer tokens accepted on mutating API calls (and on reads with
    /// `read_requires_token`): their hashes (`sha256:<hex>`), each alone or with a name,
    /// scopes and repositories that limit it ([`ApiToken`]).
    pub tokens: Vec<ApiToken>,
    /// Also require a token for read-only API calls.
    pub read_requires_token: bool,
    /// Secret for webhook signatures when a repository has none of its own.
    pub webhook_secret: Secret,
    /// Per-repository webhook secrets (`owner/name` -> secret); they win over the global one.
    /// Keys are lowercased at load (forges treat repository names case-insensitively), and
    /// looked up lowercased.
    pub repo_secrets: BTreeMap<String, Secret>,
    /// Globs over `owner/name`; a webhook from anything else gets 403.
    pub allowed_repos: Vec<String>,
    /// Events that create jobs: push, tag, pull_request, manual, cron (`schedules`).
    pub events: Vec<raibid_model::Event>,
    /// Which webhooks' jobs wait for a token holder's approval (`raibid job approve`) before
    /// they are queued, as in Woodpecker: `forks` (pull requests from forks, the default),
    /// `pull_requests`, `all_events`, or `none`.
    pub approval: ApprovalMode,
    /// A job left waiting for approval this many days is declined (cancelled, its commit
    /// status saying so), as GitHub deletes runs awaiting approval after 30 days: blocked jobs
    /// are not finished, so retention never prunes them, and nobody will approve a pull
    /// request's build of a month ago. 0: they wait for ever.
    pub approval_expiry_days: u32,
    /// For these events (push, pull_request), a new build of a branch or pull request cancels
    /// the older ones of it still queued or running, as Woodpecker's default does; empty: off.
    pub cancel_superseded: Vec<raibid_model::Event>,
    pub body_limit_bytes: u64,
    /// Log streams (`logs?follow=true`) open at once; each holds a Redis connection, so the
    /// bound keeps followers from exhausting file descriptors or Redis's `maxclients`. Past
    /// it, a follow is refused with 503.
    pub max_log_streams: u32,
    /// Of those, how many one client may hold: a client is a token holder (by its token) or,
    /// without a valid token, a peer address. Past it, that client's follows get 429 while
    /// others still get theirs.
    pub max_log_streams_per_client: u32,
    /// A log stream is closed after this long (without its `end` event) and the client
    /// resumes with `Last-Event-ID`, so no stream holds its connection forever.
    pub log_stream_max_secs: u64,
    /// Reverse proxies (addresses or networks) whose `X-Forwarded-For` is believed: a request
    /// through them is from the last address in that header that is not itself one of them.
    /// Without it, every anonymous client behind a proxy is the proxy, and they share one
    /// client's log stream slots. Anything else's `X-Forwarded-For` is ignored (anyone can
    /// send one).
    pub trusted_proxies: Vec<IpRange>,
    /// Tokens that are not one of `tokens` (a bearer token, a sign-in) a client may present
    /// within `auth_failures_window_secs`; past that, the tokens it presents are refused (429)
    /// unchecked until the window ends, so a token cannot be guessed at the speed the server
    /// answers. A client is its address (`trusted_proxies` apply), an IPv6 one by its /64.
    /// 0: no limit.
    pub auth_failures_max: u32,
    pub auth_failures_window_secs: u64,
    pub default_pool: PoolName,
    /// First matching rule wins; no match: `default_pool`.
    pub pool_rules: Vec<PoolRule>,
    /// Pools agents serve besides `default_pool` and those of `pool_rules` (jobs submitted with
    /// an explicit pool): the server creates their streams and consumer groups at start, so an
    /// autoscaler reading a pool's lag (KEDA) finds the stream before its first job.
    pub pools: Vec<PoolName>,
    /// Forge API base for commit status when it differs from `gitea.url` (GitHub: https://api.github.com).
    pub github_api_url: String,
    pub github_token: Secret,
    /// Jobs queued on a timetable (event `cron`); names are unique. Every replica runs the
    /// scheduler, and each occurrence still queues one job (see `raibid-server`'s scheduler).
    #[serde(deserialize_with = "crate::schedule::unique")]
    pub schedules: Vec<Schedule>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: String::new(),
            tokens: Vec::new(),
            read_requires_token: false,
            webhook_secret: Secret::default(),
            repo_secrets: BTreeMap::new(),
            allowed_repos: vec!["*".into()],
            events: vec![
                raibid_model::Event::Push,
                raibid_model::Event::Tag,
                raibid_model::Event::PullRequest,
                raibid_model::Event::Manual,
                raibid_model::Event::Cron,
            ],
            approval: ApprovalMode::Forks,
            approval_expiry_days: 30,
            cancel_superseded: vec![raibid_model::Event::Push, raibid_model::Event::PullRequest],
            body_limit_bytes: 5 * 1024 * 1024,
            max_log_streams: 256,
            max_log_streams_per_client: 32,
            log_stream_max_secs: 3600,
            trusted_proxies: Vec::new(),
            auth_failures_max: 20,
            auth_failures_window_secs: 300,
            default_pool: PoolName::default(),
            pool_rules: Vec::new(),
            pools: Vec::new(),
            github_api_url: "https://api.github.com".into(),
            github_token: Secret::default(),
            schedules: Vec::new(),
        }
    }
}

/// Which webhooks' jobs need a person's approval before they run (Woodpecker's approval
/// modes, by the same names). Jobs submitted through the API and schedules' jobs never do:
/// they come from token holders and the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalMode {
    None,
    /// Pull requests whose code comes from a fork (or an AGit push): code from people who
    /// cannot push to the repository.
    Forks,
    PullRequests,
    AllEvents,
}

impl ApprovalMode {
    /// Whether a webhook's job of `event` (from a fork or not) waits for approval.
    pub fn requires(self, event: raibid_model::Event, from_fork: bool) -> bool {
        use raibid_model::Event;
        match self {
            ApprovalMode::None => false,
            ApprovalMode::Forks => event == Event::PullRequest && from_fork,
            ApprovalMode::PullRequests => event == Event::PullRequest,
            ApprovalMode::AllEvents => true,
        }
    }
}

/// Which isolation runs pipeline steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    /// bubblewrap when it works on this machine, otherwise host.
    Auto,
    Host,
    Bwrap,
    Container,
}

/// Which container engine runs the container executor's steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerEngineKind {
    /// podman if it answers (it needs no daemon), otherwise docker.
    Auto,
    Podman,
    Docker,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Registry host (and optional port), e.g. `gitea.example.com`; empty: derived from `gitea.url`.
    pub host: String,
    pub username: String,
    pub password: Secret,
    /// Plain HTTP registry (a loopback test registry).
    pub insecure: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Empty: `<hostname>-<pid>`.
    pub name: String,
    pub pools: Vec<PoolName>,
    /// The repositories (globs over `owner/name`, case ignored) whose jobs this agent runs; a
    /// job of another ends in `error`. For the agents of a pool with secrets or hardware that
    /// not every repository may use, as a pipeline can name its pool (`pool:`), like GitLab
    /// Runner's runners locked to projects.
    pub repos: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub executor: ExecutorKind,
    /// The container executor's engine; a machine with both would otherwise always get podman.
    pub container_engine: ContainerEngineKind,
    /// Host and bwrap steps run as this account (`UID`, `UID:GID` or a name) instead of the
    /// agent's own; the agent must be root. Empty: as the agent for host steps, 65534 for
    /// bwrap steps of a root agent. Agent pods set it so that a step cannot write the node's
    /// shared mirror cache or inspect the agent's children. It must belong to this agent's
    /// steps alone: after each host step, every process of it is killed.
    pub step_user: String,
    /// Where per-job workspaces are created; empty: `<data dir>/workspaces`.
    pub workspace_dir: String,
    /// Where bare git mirrors are kept between jobs; empty: `<data dir>/git-mirrors`.
    pub cache_dir: String,
    /// A git mirror no job has used for this many days is removed from `cache_dir` by the
    /// next agent to sweep it (at most once a day); 0 keeps mirrors for ever. At least 2: a
    /// job reads its mirror's objects for as long as it runs, up to a day.
    pub mirror_expire_days: u32,
    /// All pipelines' `cache:` entries together (under `<cache_dir>/jobs`) stay under this many
    /// bytes, the least recently used removed first; 0 turns the pipelines' caches off.
    pub job_cache_max_bytes: u64,
    /// A job's `artifacts:` may hold this many bytes of files, before compression; 0 turns
    /// artifacts off on this agent.
    pub artifacts_max_bytes: u64,
    /// Jobs' artifacts are deleted from the registry this many days after they were kept (as
    /// GitHub's artifact retention, 90 days there), by whichever agent starts next; 0 keeps
    /// them for ever. A registry must allow deletes (docker-registry:
    /// `storage.delete.enabled`; `raibid up`'s does).
    pub artifacts_expire_days: u32,
    /// The longest a pipeline's `artifacts: expire_in` may keep artifacts, in days (`never`
    /// included); 0: no limit, as on GitLab. For registries whose space is counted.
    pub artifacts_max_expire_days: u32,
    /// buildah's image and layer store (`--root`); empty: `<data dir>/buildah/storage`. In a
    /// pod it must be a mounted volume: the container's writable layer counts against the
    /// pod's ephemeral-storage limit and dies with the pod, so nothing would be cached.
    pub buildah_root: String,
    /// buildah's per-run state (`--runroot`: locks, mount bookkeeping); empty:
    /// `<data dir>/buildah/run`. Small, and private to one agent.
    pub buildah_runroot: String,
    /// Every this many days, a build ending when no other is in flight prunes buildah's store:
    /// the working containers of killed builds and the images nothing names (base images a
    /// newer pull replaced, layers of killed builds) go; named base images stay. 0: never.
    pub buildah_prune_days: u32,
    pub concurrency: u32,
    /// `--once` exits quietly when nothing arrives for this long.
    pub idle_timeout_secs: u64,
    /// After SIGTERM, how long a running job may still take before it is handed back.
    pub grace_period_secs: u64,
    pub heartbeat_interval_secs: u64,
    /// Let bwrap steps reach the network.
    pub network: bool,
    /// HTTPS token for cloning private repositories; never written to a remote URL.
    pub git_token: Secret,
    pub registry: RegistryConfig,
    /// Logins of other registries (Docker Hub, ghcr.io, an organisation's), with which trusted
    /// jobs pull images: the base images of image builds, step, service and plugin images
    /// under the container executor. As GitLab Runner's `DOCKER_AUTH_CONFIG` and Woodpecker's
    /// registries; for private images, and for Docker Hub's limit on anonymous pulls. Never
    /// for pushes: an image build whose tags (or cache) name one of these hosts is refused.
    /// Nothing (`pull_logins:`, an empty `RAIBID_AGENT_PULL_LOGINS`, which is how a pod gets
    /// the Secret's key `raibid setup` left empty) is none.
    #[serde(deserialize_with = "nothing_is_none")]
    pub pull_logins: Vec<PullLogin>,
    /// Secrets a pipeline step can ask for by name.
    pub secrets: BTreeMap<String, Secret>,
    /// Which repositories may use which secret (secret name -> globs over `owner/name`).
    /// A secret without an entry is available to every repository.
    pub secret_repos: BTreeMap<String, Vec<String>>,
    /// Expose secrets to pull requests from forks.
    pub secrets_for_forks: bool,
    /// Resources each step container may use (container executor only).
    pub step_limits: StepLimits,
    /// Host device nodes every step gets (`/dev/kvm`), as GitLab Runner's `devices`: bound
    /// into the bwrap sandbox's `/dev`, `--device` for containers. Host steps see all anyway.
    pub devices: Vec<String>,
    /// The machine's NVIDIA GPUs for every step, as GitLab Runner's `gpus`: `none` or `all`
    /// (the GPU pool's agents): every `/dev/nvidia*` node under bwrap, podman's CDI device
    /// `nvidia.com/gpu=all`, docker's `--gpus all`.
    pub gpus: GpuMode,
}

/// A list, or nothing (YAML's null) for the empty list.
fn nothing_is_none<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// A registry login for pulls (`agent.pull_logins`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PullLogin {
    /// As it appears in image names: `docker.io` (Docker Hub, also for `FROM debian`),
    /// `ghcr.io`, `registry.example:5000`.
    pub host: String,
    pub username: String,
    /// A password or an access token; one that can only read is best (Docker Hub's read-only
    /// access tokens, a GitHub token with `read:packages`): a trusted build's `RUN` can read
    /// the login file while it runs, as it can `agent.registry`'s.
    pub password: Secret,
    /// Plain HTTP (a registry on loopback or a trusted network), for image builds' pulls.
    pub insecure: bool,
}

/// Which GPUs steps get (`agent.gpus`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuMode {
    #[default]
    None,
    All,
}

/// What one step may use, enforced by the container engine's cgroups (`--memory`, `--cpus`,
/// `--pids-limit`). Timeouts alone let one runaway test take a shared machine's memory from
/// every other job on it; host and bwrap steps have no such limits, so an agent of those
/// executors refuses to start with any of these set rather than ignore them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StepLimits {
    /// Memory, swap included (`8gb`, `25%` of the machine, `none`); past it the kernel kills
    /// the step's processes.
    pub memory: MemoryLimit,
    /// Cores' worth of CPU time (`1.5`); 0: no limit.
    pub cpus: f64,
    /// Processes and threads at once; 0: no limit. Bounds a fork bomb.
    pub pids: u32,
}

impl StepLimits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.memory != MemoryLimit::None || self.cpus > 0.0 || self.pids > 0
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            pools: vec![PoolName::default()],
            repos: vec!["*".into()],
            labels: BTreeMap::new(),
            executor: ExecutorKind::Auto,
            container_engine: ContainerEngineKind::Auto,
            step_user: String::new(),
            workspace_dir: String::new(),
            cache_dir: String::new(),
            mirror_expire_days: 30,
            job_cache_max_bytes: 10 << 30,
            artifacts_max_bytes: 1 << 30,
            artifacts_expire_days: 30,
            artifacts_max_expire_days: 0,
            buildah_root: String::new(),
            buildah_runroot: String::new(),
            buildah_prune_days: 7,
            concurrency: 1,
            idle_timeout_secs: 30,
            grace_period_secs: 30,
            heartbeat_interval_secs: 5,
            network: true,
            git_token: Secret::default(),
            registry: RegistryConfig::default(),
            pull_logins: Vec::new(),
            secrets: BTreeMap::new(),
            secret_repos: BTreeMap::new(),
            secrets_for_forks: false,
            step_limits: StepLimits::default(),
            devices: Vec::new(),
            gpus: GpuMode::None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpConfig {
    /// Empty: `~/.local/share/raibid`.
    pub data_dir: String,
    /// 0: the number of cores.
    pub max_agents: u32,
    /// Milliseconds between the local scaler's looks at the lag (KEDA's `pollingInterval`,
    /// which counts seconds; one machine can afford to look more often).
    pub polling_interval_ms: u64,
    /// Idle seconds before the pool gives up its last agents.
    pub cooldown_secs: u64,
    /// `maxmemory` of `raibid up`'s own redis-server (not of a Redis given with
    /// `--redis-url`). Without one, job logs kept up to `redis.retain_jobs` (megabytes each)
    /// grow Redis into the machine's memory, which the jobs themselves need; with one, the
    /// reaper deletes the oldest finished jobs' logs from `redis.prune_memory_percent` of it.
    pub redis_maxmemory: MemoryLimit,
    /// Start a private OCI registry (Debian's `docker-registry`, when installed) for image
    /// builds and artifacts, unless a registry or a forge is configured (`agent.registry.host`,
    /// `gitea.url`): without one, `{registry}` names the in-cluster Gitea, which one machine
    /// does not have.
    pub registry: bool,
    /// How often the private registry frees the layers of expired artifacts (distribution's
    /// garbage collection, which must not run beside uploads): at the first moment after this
    /// long with no agent running and no job queued, the registry is stopped, collected and
    /// started again; also at every start. 0: only at start.
    pub registry_gc_interval_secs: u64,
}

impl Default for UpConfig {
    fn default() -> Self {
        Self {
            data_dir: String::new(),
            max_agents: 0,
            polling_interval_ms: 200,
            cooldown_secs: 30,
            redis_maxmemory: MemoryLimit::PercentOfMachine(10),
            registry: true,
            registry_gc_interval_secs: 86_400,
        }
    }
}

impl Config {
    /// How to reach the registry of `reference` (an image or artifact reference): whether
    /// over plain HTTP, and with which login: `agent.registry`'s on its host, nothing of it
    /// anywhere else (a login is no business of another registry's).
    pub fn registry_login_for(&self, reference: &str) -> (bool, Option<(String, String)>) {
        let host = reference.split('/').next().unwrap_or_default();
        let registry = &self.agent.registry;
        let ours = !host.is_empty() && host == self.registry_host();
        let login = (ours && !registry.username.is_empty()).then(|| {
            (
                registry.username.clone(),
                registry.password.expose().to_owned(),
            )
        });
        (ours && registry.insecure, login)
    }

    /// Where image builds and artifacts go: `agent.registry.host`, else the forge's, the host
    /// of `gitea.url` (Gitea's registry lives there); empty: none.
    pub fn registry_host(&self) -> String {
        if !self.agent.registry.host.is_empty() {
            return self.agent.registry.host.clone();
        }
        let url = &self.gitea.url;
        url.split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(url)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    /// The Redis stream of one pool.
    pub fn stream_for(&self, pool: &PoolName) -> String {
        format!("{}:{}", self.redis.stream_name, pool)
    }

    /// The pool a repository's jobs go to when the trigger does not name one.
    ///
    /// Matched case-insensitively, as forges resolve `owner/name` (see [`repo_glob`]).
    pub fn pool_for_repo(&self, repo: &str) -> PoolName {
        self.server
            .pool_rules
            .iter()
            .find(|rule| {
                repo_glob(&rule.repo)
                    .map(|g| g.compile_matcher().is_match(repo))
                    .unwrap_or(false)
            })
            .map(|rule| rule.pool.clone())
            .unwrap_or_else(|| self.server.default_pool.clone())
    }
}

/// A glob over `owner/name` that ignores case.
///
/// Gitea, Forgejo and GitHub resolve owner and repository names case-insensitively, so a
/// webhook may name `ACME/App` for the repository configured as `acme/app`; a case-sensitive
/// match would let it escape the allow-list, pool and secret rules written for that repository.
pub fn repo_glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    globset::GlobBuilder::new(pattern)
        .case_insensitive(true)
        .build()
}

/// A glob over branch names, as a secret's `--branch` limits it: `*` stays within one path
/// segment (`release/*` is `release/1.2`, not `release/1/x`), `**` crosses them. Names are
/// compared as written: git's branch names are case-sensitive. The server checks them when a
/// secret is set and the agent matches pushed branches with them, so both read them alike.
pub fn branch_glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
}
