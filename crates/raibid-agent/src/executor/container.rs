//! Steps in a container (podman or docker), for pipelines that name their image.
//!
//! The engine's client runs as the step's main process, with the workspace mounted at
//! `/workspace`. The container itself is not a child of the agent, so stopping a step goes
//! through the engine (`kill --signal TERM`, then `rm -f`) before the client's process group is
//! killed. The environment reaches the engine through a private env-file, never argv (which any
//! user on the machine can read). Values an env-file cannot carry (newlines, carriage returns,
//! very long lines) are files in a read-only mount that a prelude to the script exports. They
//! never go through the client's own environment: a pipeline choosing `LD_PRELOAD` there would
//! run code in the engine client, on the host.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use raibid_config::ContainerEngineKind;
use raibid_oci::ImageReference;
use tokio::process::Command;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::container_owner::{self, Owner};
use super::env_script::{SHELL_READONLY, is_shell_name};
use super::image_arch::{ArchPreflight, ArchVerdict};
use super::process::{self, DEFAULT_KILL_GRACE, Limits, SHELL, Stopper, signal_group};
use super::{ExecError, Executor, OutputSender, ServiceGroup, ServicesSpec, StepExit, StepSpec};
use crate::image::RegistryAuth;

/// The engines `kind` allows, in order of preference: podman needs no daemon.
fn engines(kind: ContainerEngineKind) -> &'static [&'static str] {
    match kind {
        ContainerEngineKind::Auto => &["podman", "docker"],
        ContainerEngineKind::Podman => &["podman"],
        ContainerEngineKind::Docker => &["docker"],
    }
}

/// `info`, `kill`, `rm`: answers from a healthy engine take a second or two.
pub(super) const ENGINE_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The first container run may pull the default image.
pub(super) const FIRST_RUN_TIMEOUT: Duration = Duration::from_secs(600);

const CONTAINER_WORKSPACE: &str = "/workspace";

/// What the engine's client exits with when the container's main process got SIGKILL.
const KILLED_EXIT_CODE: i32 = 137;

/// How long past a step's timeout and grace a step container may live before the engine
/// (podman) or the watchdog (docker) ends it (see [`ContainerExecutor::life_limit`]): more than
/// the agent's `kill` and `rm` take.
const ENGINE_TIMEOUT_MARGIN: Duration = Duration::from_secs(10);

/// A container engine that answered `info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEngine {
    program: PathBuf,
    name: &'static str,
}

impl ContainerEngine {
    /// Finds the engine `kind` names (`agent.container_engine`; `Auto`: podman, else docker)
    /// on the agent's `PATH` and checks that it can reach its engine.
    pub async fn detect(kind: ContainerEngineKind) -> Result<Self, ExecError> {
        Self::detect_on_path(kind, &std::env::var_os("PATH").unwrap_or_default()).await
    }

    /// Like [`Self::detect`], searching `search_path` (a `PATH`-style list) instead.
    pub async fn detect_on_path(
        kind: ContainerEngineKind,
        search_path: &OsStr,
    ) -> Result<Self, ExecError> {
        let mut reasons = Vec::new();
        for &name in engines(kind) {
            let Some(program) = process::find_program(name, search_path) else {
                reasons.push(format!("{name} is not on PATH"));
                continue;
            };
            match engine_command(&program, ["info"], ENGINE_COMMAND_TIMEOUT).await {
                Ok(_) => return Ok(Self { program, name }),
                Err(why) => reasons.push(format!("`{name} info` failed: {why}")),
            }
        }
        Err(ExecError::Unavailable {
            executor: "container",
            reason: reasons.join("; "),
        })
    }

    /// `podman` or `docker`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Removes a container, running or not, at once: the step had its grace period (or, an
    /// orphan, has nobody waiting for it). podman's `rm --force` would first wait ten seconds
    /// for the container to stop.
    pub(super) async fn remove(&self, name: &str) -> Result<(), String> {
        engine_command(
            &self.program,
            self.remove_args(name),
            ENGINE_COMMAND_TIMEOUT,
        )
        .await
        .map(drop)
    }

    /// Whether the engine's store has `image` (a failure to ask counts as no).
    async fn has_image(&self, image: &str) -> bool {
        let args = if self.name == "podman" {
            ["image", "exists", image]
        } else {
            ["image", "inspect", image]
        };
        engine_command(&self.program, args, ENGINE_COMMAND_TIMEOUT)
            .await
            .is_ok()
    }

    pub(super) fn remove_args<'a>(&self, name: &'a str) -> Vec<&'a str> {
        let mut args = vec!["rm", "--force"];
        if self.name == "podman" {
            args.extend(["--time", "0"]);
        }
        args.push(name);
        args
    }
}

#[derive(Debug, Clone)]
pub struct ContainerOptions {
    /// For steps that name no image. It must have `/bin/sh`.
    pub default_image: String,
    /// Whether steps may use the network; without it they get `--network none`.
    pub network: bool,
    /// How long a step may take to exit after SIGTERM before the container is removed.
    pub kill_grace: Duration,
    /// Asks the registry whether a step's image has this machine's architecture before the
    /// engine pulls it; `None` skips the check.
    pub arch_preflight: Option<Arc<ArchPreflight>>,
    /// Each step container's share of the machine (`agent.step_limits`).
    pub limits: ContainerLimits,
    /// The forge registry's login (`agent.registry`) and those of `agent.pull_logins`: trusted
    /// steps pull images on their hosts with them, so a pipeline can run what an earlier
    /// `image-build` pushed, or a private image elsewhere, without the operator logging the
    /// engine in as well. Never for untrusted steps. One login per host.
    pub registry_logins: Vec<RegistryAuth>,
    /// Devices every step container gets (`agent.devices`, `agent.gpus`).
    pub devices: super::StepDevices,
}

/// cgroup limits of one step container; `None`: unlimited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerLimits {
    /// Memory and swap together (`--memory` and `--memory-swap` alike): a step that could
    /// swap would only be slower to reach the same end, and slow every other job meanwhile.
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<u32>,
}

impl ContainerLimits {
    pub(super) fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        if let Some(bytes) = self.memory_bytes {
            args.extend(["--memory".into(), format!("{bytes}b").into()]);
            args.extend(["--memory-swap".into(), format!("{bytes}b").into()]);
        }
        if let Some(cpus) = self.cpus {
            args.extend(["--cpus".into(), cpus.to_string().into()]);
        }
        if let Some(pids) = self.pids {
            args.extend(["--pids-limit".into(), pids.to_string().into()]);
        }
        args
    }
}

impl Default for ContainerOptions {
    fn default() -> Self {
        Self {
            default_image: "docker.io/library/debian:bookworm-slim".into(),
            network: false,
            kill_grace: DEFAULT_KILL_GRACE,
            arch_preflight: None,
            limits: ContainerLimits::default(),
            registry_logins: Vec::new(),
            devices: super::StepDevices::default(),
        }
    }
}

#[derive(Debug)]
pub struct ContainerExecutor {
    pub(super) engine: ContainerEngine,
    pub(super) options: ContainerOptions,
    /// Set once a container has run: an engine can answer `info` and still be unable to start
    /// one (no cgroup or rlimit permissions in a nested container).
    runs_containers: OnceCell<()>,
    /// This agent process, as its containers' names record it (`None`: `/proc` unreadable;
    /// its containers then have plain names and nobody sweeps them).
    owner: Option<Owner>,
    /// Resolves the images of untrusted steps (see [`StepSpec::untrusted`]): the arch
    /// preflight when there is one, else one without the forge's login, which
    /// [`ArchPreflight::pin_public`] never uses anyway.
    public_images: Arc<ArchPreflight>,
    /// Whether a sweep has looked at the engine's networks yet (see
    /// [`Self::sweep_orphaned_containers`]).
    networks_swept: std::sync::atomic::AtomicBool,
}

impl ContainerExecutor {
    pub fn new(engine: ContainerEngine, options: ContainerOptions) -> Self {
        let owner = Owner::current()
            .inspect_err(|e| warn!(error = %e, "cannot name this agent in its containers' names; a killed agent's step containers will not be removed"))
            .ok();
        let public_images = options
            .arch_preflight
            .clone()
            .unwrap_or_else(|| Arc::new(ArchPreflight::for_this_machine(false, Vec::new())));
        Self {
            engine,
            options,
            runs_containers: OnceCell::new(),
            owner,
            public_images,
            networks_swept: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A step container's longest life, in seconds: past the step's timeout and the grace the
    /// agent gives it, with a margin for the agent's engine commands, so a live agent always
    /// stops its step first. It is what ends the step container of an agent that was killed
    /// when no other agent starts on the machine to sweep it: podman's own `--timeout`, or
    /// under docker, which has none, a [`Watchdog`].
    pub(super) fn life_limit(&self, step_timeout: Duration) -> u64 {
        let limit = step_timeout + self.options.kill_grace + ENGINE_TIMEOUT_MARGIN;
        limit.as_secs() + u64::from(limit.subsec_nanos() > 0)
    }

    /// `--timeout` for podman; docker has no such option.
    pub(super) fn engine_timeout(&self, step_timeout: Duration) -> Option<u64> {
        (self.engine.name == "podman").then(|| self.life_limit(step_timeout))
    }

    /// The [`Watchdog`] of the container `name` where the engine has no `--timeout` (see
    /// [`Self::engine_timeout`]); `None` under podman, or when it cannot start (logged: the
    /// container then runs on after a killed agent until the next agent's sweep).
    pub(super) fn watchdog(&self, name: &str, timeout: Duration) -> Option<Watchdog> {
        if self.engine_timeout(timeout).is_some() {
            return None;
        }
        Watchdog::start(&self.engine, name, self.life_limit(timeout))
            .inspect_err(|e| {
                warn!(container = name, error = %e, "cannot start the container's watchdog; if the agent is killed, its container runs until the next agent starts")
            })
            .ok()
    }

    /// A new container's name, naming this agent process (see [`Owner`]).
    pub(super) fn container_name(&self) -> Result<String, ExecError> {
        let random = process::random_suffix()?;
        Ok(match &self.owner {
            Some(owner) => owner.container_name(&random),
            None => format!("{}{random}", container_owner::PREFIX),
        })
    }

    /// Removes the step containers of agents that have died (SIGKILL, the OOM killer, a
    /// crash) on this machine: the engine would run them on, without a time limit, in
    /// workspace slots that later jobs take. Run before a job takes a slot. Returns how many
    /// were removed; failures are logged and left for the next sweep.
    pub async fn sweep_orphaned_containers(&self) -> usize {
        let Some(me) = &self.owner else {
            return 0;
        };
        let filter = format!("name={}", container_owner::PREFIX);
        let args = ["ps", "--all", "--filter", &filter, "--format", "{{.Names}}"];
        let names = match engine_command(&self.engine.program, args, ENGINE_COMMAND_TIMEOUT).await {
            Ok(names) => names,
            Err(why) => {
                warn!(%why, "cannot list step containers to remove those of dead agents");
                return 0;
            }
        };
        let mut removed = 0;
        for name in names.lines().map(str::trim) {
            if !Owner::of_container(name).is_some_and(|owner| owner.is_dead(me)) {
                continue;
            }
            match self.engine.remove(name).await {
                Ok(()) => {
                    warn!(
                        container = name,
                        "removed the step container of an agent that died"
                    );
                    Watchdog::kill_those_of(name);
                    removed += 1;
                }
                Err(why) => {
                    warn!(container = name, %why, "cannot remove the step container of a dead agent")
                }
            }
        }
        // The networks of dead agents' services, now that nothing is attached to them: on the
        // agent's first sweep, and whenever a dead agent's containers turned up, not before
        // every job (listing them costs another 20-30 ms of the engine's).
        let first = !self
            .networks_swept
            .swap(true, std::sync::atomic::Ordering::Relaxed);
        let args = ["network", "ls", "--format", "{{.Name}}"];
        if (first || removed > 0)
            && let Ok(networks) =
                engine_command(&self.engine.program, args, ENGINE_COMMAND_TIMEOUT).await
        {
            for network in networks.lines().map(str::trim) {
                if !Owner::of_container(network).is_some_and(|owner| owner.is_dead(me)) {
                    continue;
                }
                let args = ["network", "rm", network];
                match engine_command(&self.engine.program, args, ENGINE_COMMAND_TIMEOUT).await {
                    Ok(_) => warn!(
                        network,
                        "removed the services' network of an agent that died"
                    ),
                    Err(why) => {
                        warn!(network, %why, "cannot remove the services' network of a dead agent")
                    }
                }
            }
        }
        removed
    }

    /// For an image on the host of a registry the agent has a login of: pulls it with that
    /// login if the engine lacks it or the step asks (`pull: true`), through a private file the
    /// engine reads for this one pull. Returns whether it did (or had the image), so the engine
    /// is not asked to pull it again on its own, without the login.
    async fn pull_with_registry_login(
        &self,
        image: &str,
        pull: bool,
        private: Option<&Path>,
    ) -> Result<bool, ExecError> {
        let Ok(reference) = ImageReference::parse(image) else {
            return Ok(false);
        };
        let Some(login) = self
            .options
            .registry_logins
            .iter()
            .find(|l| l.host == reference.registry)
        else {
            return Ok(false);
        };
        if !pull && self.engine.has_image(image).await {
            return Ok(true);
        }
        let dir = crate::private_dir::private_tempdir("raibid-pull-", private)?;
        let auth = engine_auth_json(self.engine.name, login);
        for name in ["auth.json", "config.json"] {
            crate::image::private_file(dir.path().join(name), auth.as_bytes())?;
        }
        let mut args: Vec<OsString> = Vec::new();
        if self.engine.name == "podman" {
            args.extend(["pull".into(), "--quiet".into(), "--authfile".into()]);
            args.push(dir.path().join("auth.json").into());
        } else {
            // docker reads logins on the client side, from `<config dir>/config.json`.
            args.push("--config".into());
            args.push(dir.path().into());
            args.extend(["pull".into(), "--quiet".into()]);
        }
        args.push(image.into());
        engine_command(&self.engine.program, args, FIRST_RUN_TIMEOUT)
            .await
            .map_err(|why| {
                ExecError::Image(format!(
                    "cannot pull {image} with the agent's login of {}: {why}",
                    login.host
                ))
            })?;
        Ok(true)
    }

    /// Checks once that the engine really starts containers, with the first step's own image:
    /// the default image may be one this machine cannot pull (an offline machine whose
    /// pipelines all name images from a local registry). Only success is remembered: a failed
    /// pull may be a passing network problem.
    async fn ensure_runs_containers(&self, image: &str) -> Result<(), ExecError> {
        self.runs_containers
            .get_or_try_init(|| async {
                // Named like a step's, so that it is swept like one if the agent dies meanwhile.
                let name = self.container_name()?;
                let mut args: Vec<&str> = vec!["run", "--rm", "--init", "--network", "none"];
                args.extend(["--name", &name, image, SHELL[0], "-c", "true"]);
                engine_command(&self.engine.program, args, FIRST_RUN_TIMEOUT)
                    .await
                    .map(drop)
                    .map_err(|why| ExecError::Unavailable {
                        executor: "container",
                        reason: format!(
                            "{} cannot run a container from {image}: {why}",
                            self.engine.name
                        ),
                    })
            })
            .await
            .map(|_| ())
    }

    /// What a step or service runs `named` as: for an
    /// untrusted job the image pinned to its registry's anonymous answer, else `named` after the
    /// architecture check and, on the forge registry's host, a pull with its login. Returns the
    /// image and whether it was pulled with that login (the engine, pulling again without it,
    /// would be refused). Notes for the log go to `output`.
    pub(super) async fn prepare_image(
        &self,
        named: &str,
        untrusted: bool,
        pull: bool,
        private: Option<&Path>,
        output: &OutputSender,
    ) -> Result<(String, bool), ExecError> {
        check_image_name(named)?;
        if untrusted {
            let pinned = self
                .public_images
                .pin_public(named)
                .await
                .map_err(ExecError::Image)?;
            check_image_name(&pinned)?;
            let note = format!(
                "[raibid] a pull request from a fork: running {pinned}, which is {named} \
                 as its registry serves it without a login\n"
            );
            let _ = output.send(note.into_bytes()).await;
            return Ok((pinned, false));
        }
        if let Some(preflight) = &self.options.arch_preflight {
            match preflight.check(named).await {
                ArchVerdict::Runs(platform) => {
                    debug!(image = named, platform, "image preflight passed")
                }
                ArchVerdict::Refused(why) => return Err(ExecError::Image(why)),
                ArchVerdict::Unchecked(why) => {
                    let note = format!(
                        "[raibid] could not check which architectures {named} has ({why}); \
                         starting it anyway\n"
                    );
                    let _ = output.send(note.into_bytes()).await;
                }
            }
        }
        let pulled = self.pull_with_registry_login(named, pull, private).await?;
        Ok((named.to_owned(), pulled))
    }

    async fn run(
        &self,
        spec: &StepSpec,
        output: OutputSender,
        cancel: CancellationToken,
    ) -> Result<StepExit, ExecError> {
        let named = spec.image.as_deref().unwrap_or(&self.options.default_image);
        // The checks before the step can take minutes (the first run pulls the default image):
        // they count against the step's time and give way to a cancel like the step itself.
        let started = Instant::now();
        let prepare = async {
            let prepared = self
                .prepare_image(
                    named,
                    spec.untrusted,
                    spec.pull,
                    spec.private.as_deref(),
                    &output,
                )
                .await?;
            self.ensure_runs_containers(&prepared.0).await?;
            Ok::<_, ExecError>(prepared)
        };
        let stopped = |timed_out: bool| StepExit {
            code: None,
            signal: None,
            timed_out,
            cancelled: !timed_out,
            duration: started.elapsed(),
        };
        let (image, pulled_with_login) = tokio::select! {
            prepared = prepare => prepared?,
            () = cancel.cancelled() => return Ok(stopped(false)),
            () = tokio::time::sleep(spec.timeout) => return Ok(stopped(true)),
        };
        // What the preparation left of the step's time, for the agent's limit and podman's.
        let remaining = spec.timeout.saturating_sub(started.elapsed());
        let workspace = process::workspace_dir(&spec.workspace)?;
        let env = StepEnv::write(&spec.env, spec.private.as_deref(), spec.plugin)?;
        let name = self.container_name()?;
        // One stream, so that the log has stdout and stderr in the order they were written: the
        // engine carries them apart, and nothing can order them again afterwards. On the line
        // that the script's first line continues (see `StepEnv::prelude`). A plugin runs its
        // image's entrypoint instead, its two streams merged by the client as they arrive.
        let script = format!("exec 2>&1; {}{}", env.prelude(), spec.script);
        let client_names = env.client_names();
        let engine_timeout = self.engine_timeout(remaining);
        let devices = device_args(self.engine.name(), &self.options.devices);
        let args = run_args(&RunArgs {
            name: &name,
            workspace: &workspace,
            read_only: &spec.read_only,
            env_file: &env.env_file(),
            env_values: env.values().as_deref(),
            network: self.options.network,
            service_network: spec.network.as_deref(),
            image: &image,
            start_dir: &spec.start_dir(Path::new(CONTAINER_WORKSPACE)),
            script: (!spec.plugin).then_some(script.as_str()),
            client_env: &client_names,
            engine_timeout,
            limits: &self.options.limits,
            devices: &devices,
            // An image pulled with the registry's login was pulled just now if the step asked;
            // the engine, pulling again without that login, would be refused.
            pull_always: spec.pull && !pulled_with_login,
        })?;
        let _watchdog = self.watchdog(&name, remaining);
        let mut command = Command::new(&self.engine.program);
        // conmon, which podman starts, writes a file named `oom` into its working directory
        // when the container is killed for memory: the step's private directory, removed
        // with it, rather than wherever the agent was started.
        command
            .args(args)
            .current_dir(env.dir.path())
            .envs(env.through_client.iter().map(|(k, v)| (k, v)));
        let leftover = RemoveOnDrop {
            engine: self.engine.clone(),
            name: Some(name.clone()),
        };
        let stopper = EngineStopper {
            engine: &self.engine,
            name: &name,
            grace: self.options.kill_grace,
        };
        let limits = Limits {
            timeout: Some(remaining),
            grace: self.options.kill_grace,
        };
        let exit = process::run(command, output.clone(), cancel, limits, &stopper).await;
        // Ended normally (`--rm` removed it) or was removed by the stopper.
        leftover.disarm();
        if let (Ok(exit), Some(bytes)) = (&exit, self.options.limits.memory_bytes)
            && exit.code == Some(KILLED_EXIT_CODE)
            && !exit.timed_out
            && !exit.cancelled
        {
            // The engine does not say why (podman's `OOMKilled` stays false under cgroup v1),
            // and the step's own processes see only SIGKILL: this is the likeliest cause.
            let note = format!(
                "[raibid] the step was killed (exit {KILLED_EXIT_CODE}, SIGKILL): the likeliest \
                 cause is its memory limit, agent.step_limits.memory = {} MiB\n",
                bytes >> 20
            );
            let _ = output.send(note.into_bytes()).await;
        }
        exit
    }
}

impl Executor for ContainerExecutor {
    fn name(&self) -> &'static str {
        "container"
    }

    fn image_workspace(&self) -> Option<&Path> {
        Some(Path::new(CONTAINER_WORKSPACE))
    }

    fn sweep_orphans(&self) -> BoxFuture<'_, usize> {
        Box::pin(self.sweep_orphaned_containers())
    }

    fn start_services<'a>(
        &'a self,
        spec: &'a ServicesSpec,
        output: OutputSender,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Result<ServiceGroup, ExecError>> {
        Box::pin(async move { self.start_service_group(spec, &output, &cancel).await })
    }

    fn run_step<'a>(
        &'a self,
        spec: &'a StepSpec,
        output: OutputSender,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Result<StepExit, ExecError>> {
        Box::pin(self.run(spec, output, cancel))
    }
}

/// An image name that starts with `-` would be read as an option.
fn check_image_name(image: &str) -> Result<(), ExecError> {
    if image.is_empty() || image.starts_with('-') || image.chars().any(char::is_whitespace) {
        return Err(ExecError::Spawn(format!("invalid image name {image:?}")));
    }
    Ok(())
}

/// Where values that an env-file cannot carry are mounted in the container.
const ENV_DIR: &str = "/run/raibid-env";

/// Longer values go through a file: docker refuses env-file lines over 64 KiB.
const MAX_ENV_FILE_VALUE: usize = 32 * 1024;

/// The most a value given through the engine client's environment may hold: the kernel
/// refuses to start a program with one variable over 128 KiB.
const MAX_CLIENT_ENV_VALUE: usize = 120 * 1024;

/// The step's environment on disk, in a private directory (0700) deleted on drop: the
/// `--env-file`, and one file per value it cannot carry.
#[derive(Debug)]
pub(super) struct StepEnv {
    dir: tempfile::TempDir,
    /// Names of the values kept in files, exported by [`StepEnv::prelude`].
    in_files: Vec<String>,
    /// A plugin's `PLUGIN_*` values that an env-file cannot carry, which no prelude can
    /// export (the plugin's entrypoint runs, not a script): given to the engine client's
    /// own environment and passed on by name (`--env NAME`). Only `PLUGIN_*` names, which
    /// neither the engine client nor the dynamic loader read.
    through_client: Vec<(String, String)>,
}

impl StepEnv {
    /// In `private` (see [`StepSpec::private`]); `plugin`: for a step that runs no script.
    pub(super) fn write(
        env: &BTreeMap<String, String>,
        private: Option<&Path>,
        plugin: bool,
    ) -> Result<Self, ExecError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir = crate::private_dir::private_tempdir("raibid-env-", private)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.path().join("env"))?;
        let mut in_files = Vec::new();
        let mut through_client = Vec::new();
        for (key, value) in env {
            if key.is_empty() || key.contains(['=', '\n', '\0']) {
                return Err(ExecError::Spawn(format!(
                    "invalid environment variable name {key:?}"
                )));
            }
            if !value.contains(['\n', '\r']) && value.len() <= MAX_ENV_FILE_VALUE {
                writeln!(file, "{key}={value}")?;
                continue;
            }
            if plugin {
                if !key.starts_with("PLUGIN_") || !is_shell_name(key) {
                    return Err(ExecError::Spawn(format!(
                        "{key} has a multi-line or very long value, which a plugin step is \
                         given only as a setting (`settings:`, its PLUGIN_* variables): the \
                         image's entrypoint runs, with no shell to read it from a file"
                    )));
                }
                if value.len() > MAX_CLIENT_ENV_VALUE || value.contains('\0') {
                    return Err(ExecError::Spawn(format!(
                        "{key} is over {} KiB, more than a plugin step can be given",
                        MAX_CLIENT_ENV_VALUE / 1024
                    )));
                }
                through_client.push((key.clone(), value.clone()));
                continue;
            }
            if !is_shell_name(key) {
                return Err(ExecError::Spawn(format!(
                    "environment variable {key:?} has a multi-line or very long value, which \
                     only a name of letters, digits and _ can carry"
                )));
            }
            let values = dir.path().join("values");
            if in_files.is_empty() {
                // Readable by whichever user the image runs as; the 0700 parent keeps other
                // users of the host out.
                std::fs::DirBuilder::new().mode(0o755).create(&values)?;
            }
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(values.join(key))?
                .write_all(value.as_bytes())?;
            in_files.push(key.clone());
        }
        file.flush()?;
        Ok(Self {
            dir,
            in_files,
            through_client,
        })
    }

    /// Names given through the client's environment (see [`StepEnv::through_client`]).
    fn client_names(&self) -> Vec<&str> {
        self.through_client
            .iter()
            .map(|(k, _)| k.as_str())
            .collect()
    }

    pub(super) fn env_file(&self) -> PathBuf {
        self.dir.path().join("env")
    }

    /// The directory to mount at [`ENV_DIR`], if any value needs it.
    pub(super) fn values(&self) -> Option<PathBuf> {
        (!self.in_files.is_empty()).then(|| self.dir.path().join("values"))
    }

    /// Shell commands that export the values kept in files, exactly (`x` keeps trailing
    /// newlines from command substitution). One line that the script's first line continues,
    /// so the shell's line numbers in error messages stay those of the pipeline file's script.
    /// Names bash keeps read-only get `command export`, as in the bwrap executor's env
    /// script: where the image's /bin/sh is bash, assigning one would end the step.
    fn prelude(&self) -> String {
        self.in_files
            .iter()
            .map(|k| {
                if SHELL_READONLY.contains(&k.as_str()) {
                    format!(
                        "raibid_value=\"$(cat {ENV_DIR}/{k}; echo x)\"; \
                         command export {k}=\"${{raibid_value%x}}\" 2>/dev/null || :; \
                         unset raibid_value; "
                    )
                } else {
                    format!(
                        "{k}=\"$(cat {ENV_DIR}/{k}; echo x)\"; {k}=\"${{{k}%x}}\"; export {k}; "
                    )
                }
            })
            .collect()
    }
}

struct RunArgs<'a> {
    name: &'a str,
    workspace: &'a Path,
    /// Mounted read-only at the same path (the mirror objects the checkout borrows).
    read_only: &'a [PathBuf],
    env_file: &'a Path,
    /// Mounted read-only at [`ENV_DIR`].
    env_values: Option<&'a Path>,
    network: bool,
    /// The job's services' network (see [`StepSpec::network`]), over `network`.
    service_network: Option<&'a str>,
    image: &'a str,
    /// Where the step starts: the workspace's mount point or a directory in it.
    start_dir: &'a Path,
    /// `None`: the image's own entrypoint and command (a plugin).
    script: Option<&'a str>,
    /// Names the container takes from the client's environment (`--env NAME`).
    client_env: &'a [&'a str],
    /// Seconds for podman's `--timeout`.
    engine_timeout: Option<u64>,
    limits: &'a ContainerLimits,
    /// `--pull always` (podman and docker 20.10 and later).
    pull_always: bool,
    /// Arguments that give the step its devices (see [`device_args`]).
    devices: &'a [OsString],
}

/// `--device` for each configured node, and the GPUs as the engine takes them: podman through
/// NVIDIA's CDI specification, docker through NVIDIA's runtime.
pub(super) fn device_args(engine: &str, devices: &super::StepDevices) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    for path in &devices.paths {
        args.push("--device".into());
        args.push(path.into());
    }
    if devices.gpus {
        match engine {
            "docker" => args.extend(["--gpus", "all"].map(OsString::from)),
            _ => args.extend(["--device", "nvidia.com/gpu=all"].map(OsString::from)),
        }
    }
    args
}

fn run_args(a: &RunArgs<'_>) -> Result<Vec<OsString>, ExecError> {
    // `-v` separates fields with ':'.
    for path in std::iter::once(a.workspace)
        .chain(a.read_only.iter().map(PathBuf::as_path))
        .chain(a.env_values)
    {
        if path.as_os_str().to_string_lossy().contains(':') {
            return Err(ExecError::Spawn(format!(
                "{} contains ':', which a volume mount cannot express",
                path.display()
            )));
        }
    }
    let mut volume = a.workspace.as_os_str().to_owned();
    volume.push(":");
    volume.push(CONTAINER_WORKSPACE);
    let mut args: Vec<OsString> = ["run", "--rm", "--init", "--name", a.name, "-v"]
        .map(OsString::from)
        .to_vec();
    args.push(volume);
    for path in a.read_only {
        let mut volume = path.as_os_str().to_owned();
        volume.push(":");
        volume.push(path.as_os_str());
        volume.push(":ro");
        args.push("-v".into());
        args.push(volume);
    }
    if let Some(values) = a.env_values {
        let mut volume = values.as_os_str().to_owned();
        volume.push(format!(":{ENV_DIR}:ro"));
        args.push("-v".into());
        args.push(volume);
    }
    args.push("-w".into());
    args.push(a.start_dir.into());
    args.push("--env-file".into());
    args.push(a.env_file.into());
    for name in a.client_env {
        args.extend(["--env", name].map(OsString::from));
    }
    if let Some(network) = a.service_network {
        args.extend(["--network", network].map(OsString::from));
    } else if !a.network {
        args.extend(["--network", "none"].map(OsString::from));
    }
    if let Some(seconds) = a.engine_timeout {
        args.push("--timeout".into());
        args.push(seconds.to_string().into());
    }
    args.extend(a.limits.args());
    args.extend(a.devices.iter().cloned());
    if a.pull_always {
        args.extend(["--pull", "always"].map(OsString::from));
    }
    args.push(a.image.into());
    if let Some(script) = a.script {
        args.extend(SHELL.map(OsString::from));
        args.push(script.into());
    }
    Ok(args)
}

/// Stops the container through the engine; signals to the client alone would leave it running.
struct EngineStopper<'a> {
    engine: &'a ContainerEngine,
    name: &'a str,
    grace: Duration,
}

impl Stopper for EngineStopper<'_> {
    fn terminate(&self, group: Pid) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let args = ["kill", "--signal", "TERM", self.name];
            if let Err(why) = engine_command(&self.engine.program, args, self.grace).await {
                // Most likely the container does not exist yet (image still pulling).
                debug!(container = self.name, %why, "engine kill failed: signalling the client");
                signal_group(group, Signal::SIGTERM);
            }
        })
    }

    fn kill(&self, _group: Pid) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Err(why) = self.engine.remove(self.name).await {
                warn!(container = self.name, %why, "cannot remove the step's container");
            }
        })
    }
}

/// The watchdog shell's `$0`, by which [`Watchdog::kill_those_of`] knows it.
const WATCHDOG: &str = "raibid-container-watchdog";

/// docker's stand-in for podman's `--timeout`: a shell in a process group and session of its
/// own that removes the step container once its life limit has passed. The agent kills it when
/// the step ends; an agent that is killed (SIGKILL, the OOM killer) cannot, and then the
/// watchdog, which nothing kills with the agent's process group, ends the orphaned container.
/// The name and program reach the shell as arguments, never in its script.
#[derive(Debug)]
pub(super) struct Watchdog {
    child: tokio::process::Child,
}

impl Watchdog {
    pub(super) fn start(
        engine: &ContainerEngine,
        name: &str,
        seconds: u64,
    ) -> std::io::Result<Self> {
        let mut command = Command::new(SHELL[0]);
        command
            .args([
                "-c",
                "sleep \"$1\" && exec \"$2\" rm --force \"$3\"",
                WATCHDOG,
            ])
            .arg(seconds.to_string())
            .arg(&engine.program)
            .arg(name)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // A session (and so a process group) of its own: signals to the agent's group and a
        // terminal's hangup do not reach it.
        // SAFETY: setsid is async-signal-safe and touches no allocator or locks.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid()
                    .map(drop)
                    .map_err(std::io::Error::from)
            });
        }
        Ok(Self {
            child: command.spawn()?,
        })
    }
}

impl Watchdog {
    /// Ends the watchdogs of the container `name`: a dead agent's watchdogs outlive it, and
    /// once the sweep has removed its container they would only sleep on (for up to the step's
    /// whole timeout) to remove nothing. Known by their arguments (`sh -c SCRIPT WATCHDOG
    /// SECONDS PROGRAM NAME`); each leads its own process group, which takes its `sleep` too.
    fn kill_those_of(name: &str) {
        for pid in process::pids() {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            if args.get(3) == Some(&WATCHDOG.as_bytes()) && args.get(6) == Some(&name.as_bytes()) {
                let _ = nix::sys::signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // The shell and its `sleep`; tokio reaps the shell.
            let _ = nix::sys::signal::killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Removes the container if its run was abandoned (the future dropped): the engine, not the
/// agent, owns it, so it would otherwise run on.
struct RemoveOnDrop {
    engine: ContainerEngine,
    name: Option<String>,
}

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.name = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let Some(name) = self.name.take() else {
            return;
        };
        let engine = self.engine.clone();
        // A thread, not a task: drop may run outside a runtime or while it shuts down.
        std::thread::spawn(move || {
            let _ = std::process::Command::new(&engine.program)
                .args(engine.remove_args(&name))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        });
    }
}

/// Runs an engine subcommand to completion and returns its standard output; the error is the
/// engine's own explanation.
pub(super) async fn engine_command<I, S>(
    program: &Path,
    args: I,
    timeout: Duration,
) -> Result<String, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = engine_client(program, args);
    let output = match tokio::time::timeout(timeout, command.output()).await {
        Err(_) => return Err(format!("no answer within {timeout:?}")),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(output)) => output,
    };
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let detail = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    Err(format!(
        "{}: {}",
        output.status,
        last_lines(detail.trim(), 5)
    ))
}

/// The engine's client run with `args` for its output: no input, both streams piped, killed
/// when the future waiting for it is dropped.
pub(super) fn engine_client<I, S>(program: &Path, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

/// The login file `engine` reads for one pull with `login`: docker's client files Docker Hub's
/// login under the index's old address, not under `docker.io` as podman and buildah do.
fn engine_auth_json(engine: &str, login: &RegistryAuth) -> String {
    if engine == "docker" && login.host == "docker.io" {
        let hub = RegistryAuth {
            host: "https://index.docker.io/v1/".to_owned(),
            ..login.clone()
        };
        crate::image::auth_json([&hub])
    } else {
        crate::image::auth_json([login])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn devices_and_gpus_as_each_engine_takes_them() {
        let devices = crate::executor::StepDevices {
            paths: vec!["/dev/kvm".into()],
            gpus: true,
        };
        let joined = |engine| {
            device_args(engine, &devices)
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            joined("podman"),
            "--device /dev/kvm --device nvidia.com/gpu=all"
        );
        assert_eq!(joined("docker"), "--device /dev/kvm --gpus all");
        assert!(device_args("podman", &Default::default()).is_empty());
    }
    use super::*;

    #[test]
    fn docker_hub_s_login_is_filed_where_each_engine_looks() {
        let login = |host: &str| RegistryAuth {
            host: host.into(),
            username: "u".into(),
            password: "p".into(),
        };
        let hosts = |json: String| -> Vec<String> {
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            value["auths"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        };
        let hub = login("docker.io");
        assert_eq!(
            hosts(engine_auth_json("docker", &hub)),
            ["https://index.docker.io/v1/"]
        );
        assert_eq!(hosts(engine_auth_json("podman", &hub)), ["docker.io"]);
        assert_eq!(
            hosts(engine_auth_json("docker", &login("ghcr.io"))),
            ["ghcr.io"]
        );
    }

    /// The preflight's verdict comes before anything touches the engine: a refused image
    /// fails the step at once, with the preflight's message, and pulls nothing.
    #[tokio::test]
    async fn a_refused_image_fails_the_step_before_the_engine_runs() {
        let executor = ContainerExecutor::new(
            ContainerEngine {
                // Any call to the engine would fail differently (`Unavailable`).
                program: PathBuf::from("/bin/false"),
                name: "podman",
            },
            ContainerOptions {
                arch_preflight: Some(Arc::new(ArchPreflight::for_this_machine(false, Vec::new()))),
                ..Default::default()
            },
        );
        let workspace = tempfile::tempdir().unwrap();
        let spec = StepSpec {
            name: "build".into(),
            script: "true".into(),
            plugin: false,
            workspace: workspace.path().to_path_buf(),
            directory: None,
            home: None,
            read_only: Vec::new(),
            private: None,
            env: BTreeMap::new(),
            timeout: Duration::from_secs(5),
            image: Some("127.0.0.1:1/ci/image@not-a-digest".into()),
            pull: false,
            untrusted: false,
            network: None,
        };
        let (tx, _rx) = tokio::sync::mpsc::channel(8);
        match executor.run(&spec, tx, CancellationToken::new()).await {
            Err(ExecError::Image(why)) => assert!(why.contains("digest"), "{why}"),
            other => panic!("expected the preflight to refuse the image, got {other:?}"),
        }
    }

    /// The first run of a fresh agent pulls the default image, which can take minutes: a cancel
    /// or the step's timeout ends the step meanwhile.
    #[tokio::test]
    async fn a_slow_first_pull_gives_way_to_cancel_and_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let engine = dir.path().join("slow-engine");
        raibid_testkit::write_script(&engine, "#!/bin/sh\nexec sleep 30\n");
        let executor = ContainerExecutor::new(
            ContainerEngine {
                program: engine,
                name: "podman",
            },
            ContainerOptions::default(),
        );
        let mut spec = StepSpec {
            name: "build".into(),
            script: "true".into(),
            plugin: false,
            workspace: dir.path().to_path_buf(),
            directory: None,
            home: None,
            read_only: Vec::new(),
            private: None,
            env: BTreeMap::new(),
            timeout: Duration::from_millis(300),
            image: None,
            pull: false,
            untrusted: false,
            network: None,
        };
        let (tx, _rx) = tokio::sync::mpsc::channel(8);
        let started = Instant::now();
        let exit = executor
            .run(&spec, tx.clone(), CancellationToken::new())
            .await
            .unwrap();
        assert!(exit.timed_out && !exit.success(), "{exit:?}");
        assert!(started.elapsed() < Duration::from_secs(10));

        spec.timeout = Duration::from_secs(60);
        let cancel = CancellationToken::new();
        let later = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            later.cancel();
        });
        let started = Instant::now();
        let exit = executor.run(&spec, tx, cancel).await.unwrap();
        assert!(exit.cancelled, "{exit:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn env_values_stay_out_of_argv_and_out_of_the_clients_environment() {
        use std::os::unix::fs::PermissionsExt;
        let long = "y".repeat(70_000);
        let env = BTreeMap::from([
            ("TOKEN".to_string(), "s3cret".to_string()),
            (
                "KEY".to_string(),
                "-----BEGIN-----\nabc\n-----END-----\n".to_string(),
            ),
            ("LONG".to_string(), long.clone()),
            ("CR".to_string(), "a\r".to_string()),
        ]);
        let file = StepEnv::write(&env, None, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(file.env_file()).unwrap(),
            "TOKEN=s3cret\n"
        );
        assert_eq!(file.in_files, ["CR", "KEY", "LONG"]);
        let values = file.values().unwrap();
        assert_eq!(std::fs::read_to_string(values.join("LONG")).unwrap(), long);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file.env_file()), 0o600);
        assert_eq!(mode(file.dir.path()), 0o700);
        let args = run_args(&RunArgs {
            name: "raibid-x",
            workspace: Path::new("/w/job"),
            read_only: &[PathBuf::from("/cache/app.git/objects")],
            env_file: &file.env_file(),
            env_values: Some(&values),
            network: false,
            service_network: None,
            image: "alpine:3",
            start_dir: Path::new(CONTAINER_WORKSPACE),
            script: Some(&(file.prelude() + "make test")),
            client_env: &[],
            engine_timeout: None,
            limits: &ContainerLimits::default(),
            pull_always: false,
            devices: &[],
        })
        .unwrap();
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(
            !args
                .iter()
                .any(|a| a.contains("s3cret") || a.contains("BEGIN") || a.contains("yyyy"))
        );
        let joined = args.join(" ");
        assert!(joined.starts_with(
            "run --rm --init --name raibid-x -v /w/job:/workspace \
             -v /cache/app.git/objects:/cache/app.git/objects:ro -v "
        ));
        assert!(joined.contains(&format!(
            "{}:/run/raibid-env:ro -w /workspace",
            values.display()
        )));
        assert!(
            !joined.contains(" -e KEY") && !joined.contains(" -e LONG"),
            "{joined}"
        );
        assert!(joined.ends_with(
            " --network none alpine:3 /bin/sh -e -c \
             CR=\"$(cat /run/raibid-env/CR; echo x)\"; CR=\"${CR%x}\"; export CR; \
             KEY=\"$(cat /run/raibid-env/KEY; echo x)\"; KEY=\"${KEY%x}\"; export KEY; \
             LONG=\"$(cat /run/raibid-env/LONG; echo x)\"; LONG=\"${LONG%x}\"; export LONG; \
             make test"
        ));
        let dir = file.dir.path().to_path_buf();
        drop(file);
        assert!(!dir.exists());
    }

    /// The prelude gives the script exactly the value, trailing newlines included.
    #[test]
    fn the_prelude_exports_values_exactly() {
        let value = "line one\n  two 'quoted' $(not run) `nor this`\n\n";
        let env = BTreeMap::from([("MULTI".to_string(), value.to_string())]);
        let file = StepEnv::write(&env, None, false).unwrap();
        let prelude = file
            .prelude()
            .replace(ENV_DIR, &file.values().unwrap().display().to_string());
        let out = std::process::Command::new("/bin/sh")
            .args([
                "-e",
                "-c",
                &(prelude.clone() + "printf %s \"$MULTI\"; sh -c 'printf %s \"$MULTI\"'"),
            ])
            .env_clear()
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8(out.stdout).unwrap(), value.repeat(2));

        // The shell's line numbers are the script's own.
        let out = std::process::Command::new("/bin/sh")
            .args(["-e", "-c", &(prelude + "true\nraibid-no-such-command")])
            .env_clear()
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(" 2: raibid-no-such-command"), "{stderr}");

        let env = BTreeMap::from([("NOT-A-NAME".to_string(), "a\nb".to_string())]);
        assert!(StepEnv::write(&env, None, false).is_err());
    }

    /// Where the image's /bin/sh is bash, a multi-line value named like one of bash's
    /// read-only variables ended the step in its prelude; dash still gets the value.
    #[test]
    fn read_only_names_in_the_prelude_do_not_end_the_step() {
        let mut env: BTreeMap<String, String> = SHELL_READONLY
            .iter()
            .map(|k| (k.to_string(), "5\n6".to_string()))
            .collect();
        env.insert("AFTER".into(), "still\nset".into());
        let file = StepEnv::write(&env, None, false).unwrap();
        let prelude = file
            .prelude()
            .replace(ENV_DIR, &file.values().unwrap().display().to_string());
        let run = |shell: &[&str], script: &str| {
            std::process::Command::new(shell[0])
                .args(&shell[1..])
                .args(["-e", "-c", &(prelude.clone() + script)])
                .env_clear()
                .output()
        };
        let out = run(&["bash", "--posix"], r#"printf '%s' "$AFTER""#).unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, b"still\nset", "{out:?}");
        assert!(out.stderr.is_empty(), "{out:?}");
        // Debian's /bin/sh; elsewhere it may not be installed.
        if let Ok(out) = run(
            &["dash"],
            r#"printf '%s %s' "$UID" "${raibid_value-unset}""#,
        ) {
            assert_eq!(out.stdout, b"5\n6 unset", "{out:?}");
        }
    }

    /// The runner names the workspace by this path in `CI_WORKSPACE`: it must be where the
    /// workspace is mounted and the step starts.
    #[test]
    fn the_workspace_named_to_steps_is_the_mount_point() {
        let executor = ContainerExecutor::new(
            ContainerEngine {
                program: PathBuf::from("/bin/false"),
                name: "podman",
            },
            ContainerOptions::default(),
        );
        let inside = executor.image_workspace().unwrap();
        let args = run_args(&RunArgs {
            name: "raibid-x",
            workspace: Path::new("/w/job"),
            read_only: &[],
            env_file: Path::new("/tmp/e"),
            env_values: None,
            network: false,
            service_network: None,
            image: "rust:1",
            start_dir: Path::new(CONTAINER_WORKSPACE),
            script: Some("cargo build"),
            client_env: &[],
            engine_timeout: executor.engine_timeout(Duration::from_millis(60_500)),
            limits: &ContainerLimits {
                memory_bytes: Some(3 << 30),
                cpus: Some(1.5),
                pids: Some(512),
            },
            pull_always: true,
            devices: &[],
        })
        .unwrap();
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(
            joined.contains(&format!("-v /w/job:{} ", inside.display())),
            "{joined}"
        );
        assert!(
            joined.contains(&format!("-w {} ", inside.display())),
            "{joined}"
        );
        assert!(
            joined.contains(
                " --memory 3221225472b --memory-swap 3221225472b --cpus 1.5 --pids-limit 512 \
                 --pull always rust:1 "
            ),
            "{joined}"
        );
        // 60.5 s, the default grace and the margin, rounded up.
        let engine_limit = 61 + DEFAULT_KILL_GRACE.as_secs() + ENGINE_TIMEOUT_MARGIN.as_secs();
        assert!(
            joined.contains(&format!("--timeout {engine_limit} --memory ")),
            "{joined}"
        );
    }

    #[test]
    fn rejects_what_would_be_misparsed() {
        assert!(check_image_name("--privileged").is_err());
        assert!(check_image_name("").is_err());
        assert!(check_image_name("debian:bookworm-slim").is_ok());
        let env = BTreeMap::from([("A=B".to_string(), "x".to_string())]);
        assert!(StepEnv::write(&env, None, false).is_err());
        let args = RunArgs {
            name: "n",
            workspace: Path::new("/w/a:b"),
            read_only: &[],
            env_file: Path::new("/tmp/e"),
            env_values: None,
            network: true,
            service_network: None,
            image: "i",
            start_dir: Path::new(CONTAINER_WORKSPACE),
            script: Some("s"),
            client_env: &[],
            engine_timeout: None,
            limits: &ContainerLimits::default(),
            pull_always: false,
            devices: &[],
        };
        assert!(run_args(&args).is_err());
    }

    /// A step of a job with services joins their network, whatever `agent.network` says (the
    /// services' network is internal when it is off).
    #[test]
    fn steps_of_jobs_with_services_join_their_network() {
        let mut a = RunArgs {
            name: "n",
            workspace: Path::new("/w/a"),
            read_only: &[],
            env_file: Path::new("/tmp/e"),
            env_values: None,
            network: false,
            service_network: Some("raibid-net"),
            image: "i",
            start_dir: Path::new(CONTAINER_WORKSPACE),
            script: Some("s"),
            client_env: &[],
            engine_timeout: None,
            limits: &ContainerLimits::default(),
            pull_always: false,
            devices: &[],
        };
        let joined = |a: &RunArgs<'_>| {
            run_args(a)
                .unwrap()
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        for network in [false, true] {
            a.network = network;
            let args = joined(&a);
            assert!(args.contains(" --network raibid-net "), "{args}");
            assert_eq!(args.matches("--network").count(), 1, "{args}");
        }
        a.service_network = None;
        a.network = false;
        assert!(joined(&a).contains(" --network none "));
    }
}
