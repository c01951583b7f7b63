use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use raibid_agent::artifacts::ArtifactStore;
use raibid_agent::executor::{
    ArchPreflight, BwrapExecutor, BwrapOptions, ContainerEngine, ContainerExecutor,
    ContainerLimits, ContainerOptions, ExecError, Executor, HostExecutor, RegistryLogin,
    StepDevices, cdi_has_nvidia_gpus,
};
use raibid_agent::image::{ImageBuildOptions, ImageBuilder, RegistryAuth, StorageDriver};
use raibid_agent::{
    AgentOptions, GitCheckout, RepoFilter, Runner, RunnerSettings, SecretStore, StepUser,
    StepUserError, run_agent,
};
use raibid_config::{Config, ExecutorKind, GpuMode};
use raibid_queue::Queue;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cli::{AgentArgs, ExecutorArg};
use crate::commands::{data_home, queue_options};
use crate::local_redis::which;

pub async fn run(config: Config, args: AgentArgs) -> anyhow::Result<ExitCode> {
    if let Err(e) = raibid_agent::hardening::forbid_inspection() {
        warn!(error = %e, "steps of this user may read the agent's environment");
    }
    let (runner, options) = prepare(&config, &args).await?;
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            crate::commands::shutdown_signal().await;
            info!("shutdown requested: no new jobs; running ones get the grace period");
            shutdown.cancel();
        });
    }
    let summary = run_agent(runner, options, shutdown).await?;
    info!(jobs = summary.jobs.len(), "agent stopped");
    Ok(ExitCode::SUCCESS)
}

/// The runner and loop options an agent of `config` with `args` runs with: its executor
/// (probed), image builder, secrets, registry and queue. `raibid exec` runs the same.
pub(crate) async fn prepare(
    config: &Config,
    args: &AgentArgs,
) -> anyhow::Result<(Arc<Runner>, AgentOptions)> {
    let a = &config.agent;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| data_home(config).join("agent"));
    let workspace_root = non_empty(&a.workspace_dir).unwrap_or_else(|| data_dir.join("workspaces"));
    let cache_dir = non_empty(&a.cache_dir).unwrap_or_else(|| data_dir.join("git-mirrors"));
    let name = args
        .name
        .clone()
        .or_else(|| (!a.name.is_empty()).then(|| a.name.clone()))
        .unwrap_or_else(default_name);
    let pools = if args.pools.is_empty() {
        a.pools.clone()
    } else {
        args.pools.clone()
    };
    let mut labels = a.labels.clone();
    for label in &args.labels {
        let (k, v) = label
            .split_once('=')
            .with_context(|| format!("--label {label:?}: expected KEY=VALUE"))?;
        labels.insert(k.to_owned(), v.to_owned());
    }

    let toolchain = Toolchain::detect();
    let kind = match args.executor {
        Some(ExecutorArg::Auto) => ExecutorKind::Auto,
        Some(ExecutorArg::Host) => ExecutorKind::Host,
        Some(ExecutorArg::Bwrap) => ExecutorKind::Bwrap,
        Some(ExecutorArg::Container) => ExecutorKind::Container,
        None => a.executor,
    };
    let concurrency = args.concurrency.unwrap_or(a.concurrency).max(1) as usize;
    if nix::unistd::geteuid().is_root() {
        // A root agent's steps run as another user (below), who must read the mirror objects
        // its checkout borrows and get through the directories the agent makes. Private files
        // (credentials, step environments) are created with explicit modes.
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    }
    let users = StepUsers::new(
        &a.step_user,
        kind,
        concurrency,
        &[&workspace_root, &cache_dir],
    )?;
    let executor = executor(
        kind,
        &users,
        config,
        &data_dir,
        &toolchain,
        BwrapExecutor::probe,
    )
    .await?;
    info!(executor = executor.name(), %name, pools = ?pools, "agent starting");

    let images = if which("buildah").is_some() {
        let registry = config.registry_host();
        Some(Arc::new(
            ImageBuilder::new(ImageBuildOptions {
                // In a pod, agent.buildah_root is the node-local cache volume (infra/base/agents).
                root: non_empty(&a.buildah_root)
                    .unwrap_or_else(|| data_dir.join("buildah").join("storage")),
                runroot: non_empty(&a.buildah_runroot)
                    .unwrap_or_else(|| data_dir.join("buildah").join("run")),
                storage_driver: StorageDriver::detect(),
                registry_auth: (!a.registry.username.is_empty()).then(|| RegistryAuth {
                    host: registry.clone(),
                    username: a.registry.username.clone(),
                    password: a.registry.password.expose().to_owned(),
                }),
                pull_auths: pull_logins(config),
                insecure_registries: a
                    .pull_logins
                    .iter()
                    .filter(|l| l.insecure)
                    .map(|l| l.host.clone())
                    .chain(a.registry.insecure.then_some(registry))
                    .collect(),
                network: a.network,
            })?
            .with_prune_interval(days(a.buildah_prune_days)),
        ))
    } else {
        None
    };

    let secrets = SecretStore::new(
        a.secrets
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_owned()))
            .collect(),
        &a.secret_repos,
        a.secrets_for_forks,
    )?;
    let queue = Queue::open(queue_options(config))?;
    let runner = Arc::new(Runner {
        queue,
        executor,
        git: GitCheckout::new(cache_dir, Some(a.git_token.expose().to_owned()))
            .with_job_cache_max_bytes(a.job_cache_max_bytes)
            .with_mirror_expiry(days(a.mirror_expire_days)),
        images,
        artifacts: artifact_store(config),
        secrets,
        settings: RunnerSettings {
            agent_name: name.clone(),
            workspace_root,
            keep_workspace: args.keep_workspace,
            heartbeat_interval: Duration::from_secs(a.heartbeat_interval_secs.max(1)),
            step_path: toolchain.path(),
            step_env: toolchain.env(),
            registry: config.registry_host(),
            repos: RepoFilter::new(&a.repos).context("agent.repos")?,
            public_url: config.server.public_url.clone(),
            ephemeral: args.ephemeral,
        },
    });
    let options = AgentOptions {
        name,
        pools,
        labels,
        once: args.once,
        idle_timeout: Duration::from_secs(args.idle_timeout.unwrap_or(a.idle_timeout_secs)),
        concurrency,
        grace_period: Duration::from_secs(args.grace_period.unwrap_or(a.grace_period_secs)),
        heartbeat_interval: Duration::from_secs(a.heartbeat_interval_secs.max(1)),
    };
    Ok((runner, options))
}

/// Where `artifacts:` go: the registry image builds push to, with the same login; none
/// without a registry or with `agent.artifacts_max_bytes: 0`.
fn artifact_store(config: &Config) -> Option<ArtifactStore> {
    let a = &config.agent;
    let registry = config.registry_host();
    (!registry.is_empty() && a.artifacts_max_bytes > 0).then(|| ArtifactStore {
        registry,
        login: (!a.registry.username.is_empty()).then(|| {
            (
                a.registry.username.clone(),
                a.registry.password.expose().to_owned(),
            )
        }),
        insecure: a.registry.insecure,
        max_bytes: a.artifacts_max_bytes,
        expire_after: days(a.artifacts_expire_days),
        max_expire: days(a.artifacts_max_expire_days),
    })
}

/// A lifetime in days from the configuration; 0: none.
fn days(days: u32) -> Option<std::time::Duration> {
    (days > 0).then(|| std::time::Duration::from_secs(u64::from(days) * 24 * 3600))
}

/// Who steps run as. `agent.step_user` for host and bwrap steps; for bwrap steps of an agent
/// running as root, `nobody` when none is configured (a root step without capabilities still
/// owns every root-only socket it can see: see the bwrap executor). Checked before the first
/// job: a step user the agent cannot switch to, or that cannot reach its workspace, would fail
/// every job instead.
struct StepUsers {
    configured: Option<StepUser>,
    concurrency: usize,
    /// Directories host steps must be able to enter (workspaces, mirror cache).
    dirs: Vec<PathBuf>,
}

/// uid and gid 65534, `nobody`/`nogroup` on Debian and Ubuntu.
const NOBODY: StepUser = StepUser {
    uid: 65534,
    gid: 65534,
};

impl StepUsers {
    fn new(
        text: &str,
        kind: ExecutorKind,
        concurrency: usize,
        dirs: &[&Path],
    ) -> anyhow::Result<Self> {
        let configured = match text.trim() {
            "" => None,
            text => Some(StepUser::parse(text)?),
        };
        if configured.is_some() && kind == ExecutorKind::Container {
            anyhow::bail!(
                "agent.step_user applies to the host and bwrap executors; container steps run as \
                 their image's user"
            );
        }
        Ok(Self {
            configured,
            concurrency,
            dirs: dirs.iter().map(|d| d.to_path_buf()).collect(),
        })
    }

    fn host(&self) -> anyhow::Result<Option<StepUser>> {
        let Some(user) = self.configured else {
            return Ok(None);
        };
        if self.concurrency > 1 {
            anyhow::bail!(
                "agent.step_user with host steps runs one job at a time (agent.concurrency or \
                 --concurrency is {}): steps of concurrent jobs would share the uid and could \
                 read each other's environment (secrets) and workspaces. Use the bwrap executor, \
                 or one agent per job",
                self.concurrency
            );
        }
        for dir in &self.dirs {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            if StepUser::secure_root(dir)? {
                info!(dir = %dir.display(), "took group and world write permission from the directory");
            }
        }
        let dirs: Vec<&Path> = self.dirs.iter().map(PathBuf::as_path).collect();
        user.check(&dirs)?;
        user.hold_for_process(Path::new(STEP_USER_LOCK_DIR))?;
        info!(%user, "host steps run as the step user");
        Ok(Some(user))
    }

    /// No directory check as for host steps: the sandbox makes the directories above each of
    /// its mount points (0755), and a root agent creates its files with umask 022 (above).
    fn bwrap(&self) -> anyhow::Result<Option<StepUser>> {
        let me = nix::unistd::geteuid();
        let user = match (self.configured, me.is_root()) {
            (Some(user), true) => user,
            (None, true) => NOBODY,
            (Some(_), false) => return Err(StepUserError::AgentNotRoot(me.as_raw()).into()),
            (None, false) => return Ok(None),
        };
        info!(%user, "bwrap steps run as the step user");
        Ok(Some(user))
    }
}

/// Root-only (step users need a root agent), so no step can take or remove the locks.
const STEP_USER_LOCK_DIR: &str = "/run";

/// The sandbox this agent builds for bwrap steps (also the one `auto` probes).
fn bwrap_executor(
    config: &Config,
    users: &StepUsers,
    data_dir: &Path,
    toolchain: &Toolchain,
) -> anyhow::Result<BwrapExecutor> {
    // The agent's data (mirror cache, other jobs' workspaces, image layers) is none of a
    // step's business; its own workspace is bound back in by the executor. Under `raibid up`
    // the agent's directory sits inside up's, next to the API token, the webhook secret and
    // Redis's files: hide all of it.
    let devices = step_devices(config);
    devices
        .check_nodes(Path::new("/dev"))
        .map_err(anyhow::Error::msg)?;
    Ok(BwrapExecutor::new(BwrapOptions {
        network: config.agent.network,
        hide: hidden_dirs(config, data_dir),
        ro_binds: toolchain.ro_paths.clone(),
        user: users.bwrap()?,
        devices,
        ..Default::default()
    }))
}

/// `agent.devices` and `agent.gpus` (the configuration checked their form).
fn step_devices(config: &Config) -> StepDevices {
    StepDevices {
        paths: config.agent.devices.iter().map(PathBuf::from).collect(),
        gpus: config.agent.gpus == GpuMode::All,
    }
}

/// What the container engine needs for the configured devices, checked before the first job
/// rather than failing each step.
fn check_container_devices(engine: &ContainerEngine, devices: &StepDevices) -> anyhow::Result<()> {
    if let Some(missing) = devices.paths.iter().find(|p| !p.exists()) {
        anyhow::bail!(
            "agent.devices: {} does not exist on this machine",
            missing.display()
        );
    }
    if devices.gpus
        && engine.name() == "podman"
        && !cdi_has_nvidia_gpus(&[Path::new("/etc/cdi"), Path::new("/var/run/cdi")])
    {
        anyhow::bail!(
            "agent.gpus: all gives podman's containers the CDI device nvidia.com/gpu=all, but \
             no CDI specification of NVIDIA GPUs is in /etc/cdi or /var/run/cdi: install the \
             NVIDIA Container Toolkit and run `sudo nvidia-ctk cdi generate --output \
             /etc/cdi/nvidia.yaml`"
        );
    }
    Ok(())
}

/// What `auto` comes to, decided here for both that need it: an agent (`executor`) and
/// `raibid up` (`resolve_auto`). bwrap when the very sandbox the agent would build runs here:
/// `bwrap` gets it. Host steps otherwise: `host` makes what those need, and only once it has
/// (a step user unfit for host steps is an error of its own) comes the warning that steps run
/// outside the sandbox. `probe` is [`BwrapExecutor::probe`] but in tests.
async fn decide_auto<T>(
    config: &Config,
    users: &StepUsers,
    data_dir: &Path,
    toolchain: &Toolchain,
    probe: impl AsyncFnOnce(&BwrapExecutor) -> Result<(), ExecError>,
    bwrap: impl FnOnce(BwrapExecutor) -> T,
    host: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let sandbox = bwrap_executor(config, users, data_dir, toolchain)?;
    match probe(&sandbox).await {
        Ok(()) => Ok(bwrap(sandbox)),
        Err(e) => {
            let host = host()?;
            warn_host_fallback(&e, users.configured);
            Ok(host)
        }
    }
}

/// What `auto` comes to for an agent with this configuration and data directory
/// (`decide_auto`). `raibid up` decides once with this and starts its agents with the
/// outcome, so its own limits (one agent for host steps under a step user) cannot disagree
/// with what its agents do.
pub(crate) async fn resolve_auto(config: &Config, data_dir: &Path) -> anyhow::Result<ExecutorKind> {
    resolve_auto_with(config, data_dir, BwrapExecutor::probe).await
}

async fn resolve_auto_with(
    config: &Config,
    data_dir: &Path,
    probe: impl AsyncFnOnce(&BwrapExecutor) -> Result<(), ExecError>,
) -> anyhow::Result<ExecutorKind> {
    let users = StepUsers::new(&config.agent.step_user, ExecutorKind::Auto, 1, &[])?;
    let toolchain = Toolchain::detect();
    decide_auto(
        config,
        &users,
        data_dir,
        &toolchain,
        probe,
        |_| ExecutorKind::Bwrap,
        || Ok(ExecutorKind::Host),
    )
    .await
}

fn warn_host_fallback(error: &dyn std::fmt::Display, step_user: Option<StepUser>) {
    let who = match step_user {
        Some(user) => format!("as {user}"),
        None if nix::unistd::geteuid().is_root() => {
            "AS ROOT (set agent.step_user, or make bubblewrap work)".to_owned()
        }
        None => "as the agent's user".to_owned(),
    };
    warn!(
        error = %error,
        "bubblewrap is not usable; steps run as plain host processes {who}"
    );
}

/// `probe` tells whether bubblewrap works here: [`BwrapExecutor::probe`] but in tests.
async fn executor(
    kind: ExecutorKind,
    users: &StepUsers,
    config: &Config,
    data_dir: &Path,
    toolchain: &Toolchain,
    probe: impl AsyncFnOnce(&BwrapExecutor) -> Result<(), ExecError>,
) -> anyhow::Result<Arc<dyn Executor>> {
    let host = || -> anyhow::Result<HostExecutor> {
        Ok(match users.host()? {
            Some(user) => HostExecutor::new().as_user(user),
            None => HostExecutor::new(),
        })
    };
    let limits = &config.agent.step_limits;
    if limits.any() && kind != ExecutorKind::Container {
        anyhow::bail!(
            "agent.step_limits is set, but only the container executor can enforce it \
             (agent.executor is {}; host and bwrap steps are bounded by their timeouts \
             alone): set agent.executor: container, or remove agent.step_limits",
            format!("{kind:?}").to_lowercase()
        );
    }
    Ok(match kind {
        ExecutorKind::Host => Arc::new(host()?),
        ExecutorKind::Bwrap => {
            let b = bwrap_executor(config, users, data_dir, toolchain)?;
            probe(&b)
                .await
                .context("bubblewrap does not work here (apt-get install bubblewrap)")?;
            Arc::new(b)
        }
        ExecutorKind::Container => {
            let engine = ContainerEngine::detect(config.agent.container_engine).await?;
            let devices = step_devices(config);
            check_container_devices(&engine, &devices)?;
            let registry = &config.agent.registry;
            // The forge registry's login wins over a pull login of the same host.
            let mut registry_logins = pull_logins(config);
            if !registry.username.is_empty() {
                let host = config.registry_host();
                registry_logins.retain(|l| l.host != host);
                registry_logins.push(RegistryAuth {
                    host,
                    username: registry.username.clone(),
                    password: registry.password.expose().to_owned(),
                });
            }
            let logins = registry_logins
                .iter()
                .map(|l| RegistryLogin {
                    host: l.host.clone(),
                    username: l.username.clone(),
                    password: l.password.clone(),
                })
                .collect();
            Arc::new(ContainerExecutor::new(
                engine,
                ContainerOptions {
                    network: config.agent.network,
                    arch_preflight: Some(Arc::new(ArchPreflight::for_this_machine(
                        registry.insecure,
                        logins,
                    ))),
                    limits: ContainerLimits {
                        memory_bytes: crate::machine_memory::limit_bytes(
                            limits.memory,
                            "agent.step_limits.memory",
                        )?,
                        cpus: (limits.cpus > 0.0).then_some(limits.cpus),
                        pids: (limits.pids > 0).then_some(limits.pids),
                    },
                    registry_logins,
                    devices,
                    ..Default::default()
                },
            ))
        }
        // `users.host()` is the configured step user, the one `decide_auto`'s warning names.
        ExecutorKind::Auto => {
            decide_auto(
                config,
                users,
                data_dir,
                toolchain,
                probe,
                |b| Arc::new(b) as Arc<dyn Executor>,
                || Ok(Arc::new(host()?) as Arc<dyn Executor>),
            )
            .await?
        }
    })
}

/// Rust toolchains installed with rustup live in the home directory, which sandboxed steps
/// cannot see; expose them read-only and point the steps at them.
struct Toolchain {
    ro_paths: Vec<PathBuf>,
    rustup_home: Option<PathBuf>,
    cargo_bin: Option<PathBuf>,
}

impl Toolchain {
    fn detect() -> Self {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let from_env = |var: &str, default: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(default)))
                .filter(|p| p.is_dir())
        };
        let cargo_home = from_env("CARGO_HOME", ".cargo");
        let rustup_home = from_env("RUSTUP_HOME", ".rustup");
        let cargo_bin = cargo_home
            .as_ref()
            .map(|c| c.join("bin"))
            .filter(|b| b.is_dir());
        let ro_paths = cargo_bin
            .iter()
            .chain(rustup_home.iter())
            .cloned()
            .collect();
        Self {
            ro_paths,
            rustup_home,
            cargo_bin,
        }
    }

    fn path(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(bin) = &self.cargo_bin {
            parts.push(bin.display().to_string());
        }
        parts.push("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        parts.join(":")
    }

    fn env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        if let Some(r) = &self.rustup_home {
            env.insert("RUSTUP_HOME".into(), r.display().to_string());
        }
        env
    }
}

/// What bwrap covers with an empty tmpfs: the agent's data directory, `raibid up`'s around
/// it, and the agent's directories configured elsewhere, which would otherwise be visible
/// read-only (other repositories' mirrors, other jobs' workspaces, image layers).
fn hidden_dirs(config: &Config, data_dir: &Path) -> Vec<PathBuf> {
    let mut hide = vec![data_dir.to_path_buf()];
    if let Some(up_dir) = data_dir.parent().filter(|p| p.join("up.lock").exists()) {
        hide.push(up_dir.to_path_buf());
    }
    let a = &config.agent;
    hide.extend(
        [
            &a.workspace_dir,
            &a.cache_dir,
            &a.buildah_root,
            &a.buildah_runroot,
        ]
        .into_iter()
        .filter_map(|d| non_empty(d)),
    );
    hide
}

fn non_empty(s: &str) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "agent".into());
    format!("{host}-{}", std::process::id())
}

/// `agent.pull_logins`, as the image builder and the container executor take logins.
fn pull_logins(config: &Config) -> Vec<RegistryAuth> {
    config
        .agent
        .pull_logins
        .iter()
        .map(|l| RegistryAuth {
            host: l.host.clone(),
            username: l.username.clone(),
            password: l.password.expose().to_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_configured_outside_the_data_dir_are_hidden_too() {
        let mut config = Config::default();
        config.agent.cache_dir = "/srv/mirrors".into();
        config.agent.workspace_dir = "/srv/work".into();
        let hide = hidden_dirs(&config, Path::new("/var/lib/raibid/agent"));
        for dir in ["/var/lib/raibid/agent", "/srv/mirrors", "/srv/work"] {
            assert!(hide.contains(&PathBuf::from(dir)), "{dir}: {hide:?}");
        }
        assert_eq!(hide.len(), 3, "{hide:?}");
    }

    /// An operator who sets limits expects them enforced: an agent whose executor cannot
    /// enforce them does not start.
    #[tokio::test]
    async fn step_limits_without_the_container_executor_are_refused() {
        let mut config = Config::default();
        config.agent.step_limits.pids = 512;
        let dir = tempfile::tempdir().unwrap();
        let users = StepUsers::new("", ExecutorKind::Auto, 1, &[]).unwrap();
        for kind in [ExecutorKind::Auto, ExecutorKind::Host, ExecutorKind::Bwrap] {
            let Err(e) = executor(
                kind,
                &users,
                &config,
                dir.path(),
                &Toolchain::detect(),
                probe(true),
            )
            .await
            else {
                panic!("{kind:?} started with step limits it cannot enforce");
            };
            let message = e.to_string();
            assert!(
                message.contains("agent.step_limits") && message.contains("container executor"),
                "{message}"
            );
        }
    }

    /// bubblewrap's probe, made to succeed or to fail as where user namespaces are disabled.
    fn probe(works: bool) -> impl AsyncFn(&BwrapExecutor) -> Result<(), ExecError> {
        async move |_: &BwrapExecutor| {
            if works {
                Ok(())
            } else {
                Err(ExecError::Unavailable {
                    executor: "bwrap",
                    reason: "user namespaces are disabled here".into(),
                })
            }
        }
    }

    const FALLBACK: &str = "bubblewrap is not usable; steps run as plain host processes";

    /// `raibid up` tells its agents what `auto` comes to (`resolve_auto`); an agent left to
    /// decide (`executor`) must come to the same, whether bubblewrap works here or not, and
    /// both warn when steps fall back to the host.
    #[tokio::test]
    async fn up_and_an_agent_decide_auto_alike() {
        let logs = raibid_testkit::LogBuffer::default();
        let writer = logs.clone();
        let _subscriber = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish(),
        );
        let config = Config::default();
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("agent");
        let toolchain = Toolchain::detect();
        for (works, expected) in [(true, ExecutorKind::Bwrap), (false, ExecutorKind::Host)] {
            let decided = resolve_auto_with(&config, &data_dir, probe(works))
                .await
                .unwrap();
            let up_logs = logs.take();
            let users = StepUsers::new("", ExecutorKind::Auto, 1, &[]).unwrap();
            let agent = executor(
                ExecutorKind::Auto,
                &users,
                &config,
                &data_dir,
                &toolchain,
                probe(works),
            )
            .await
            .unwrap();
            let agent_logs = logs.take();
            assert_eq!(decided, expected, "bwrap works: {works}");
            let name = match decided {
                ExecutorKind::Bwrap => "bwrap",
                ExecutorKind::Host => "host",
                other => panic!("auto came to {other:?}"),
            };
            assert_eq!(agent.name(), name, "bwrap works: {works}");
            for text in [&up_logs, &agent_logs] {
                assert_eq!(text.contains(FALLBACK), !works, "{text}");
                assert_eq!(
                    text.contains("user namespaces are disabled here"),
                    !works,
                    "{text}"
                );
            }
        }
    }
}
