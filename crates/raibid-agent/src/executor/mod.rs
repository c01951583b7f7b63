//! Where a step's script runs. The whole isolation seam is this one trait (after Woodpecker's
//! backend interface): the job runner knows nothing about which implementation it drives, and
//! executors know nothing about Redis or the forge.

mod bwrap;
mod container;
mod container_owner;
mod container_services;
mod devices;
mod env_script;
mod host;
mod image_arch;
pub(crate) mod process;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use bwrap::{BwrapExecutor, BwrapOptions, SANDBOX_HOME, SANDBOX_WORKSPACE, SETUP_TRIES};
pub use container::{ContainerEngine, ContainerExecutor, ContainerLimits, ContainerOptions};
pub use container_services::{ServiceGroup, ServicesSpec};
pub use devices::{StepDevices, cdi_has_nvidia_gpus, nvidia_nodes};
pub use host::HostExecutor;
pub use image_arch::{ArchPreflight, ArchVerdict, RegistryLogin};

/// One step to run.
#[derive(Debug, Clone)]
pub struct StepSpec {
    pub name: String,
    /// A shell script, run with `sh -e`.
    pub script: String,
    /// Run the image's own entrypoint and command instead of `script`: a Woodpecker plugin,
    /// configured by `PLUGIN_*` variables in `env`. Only the container executor can.
    pub plugin: bool,
    /// The job's checkout; the step's working directory unless `directory` names one in it.
    pub workspace: PathBuf,
    /// Where in the workspace the step starts (the step's `directory:`), relative; the runner
    /// has checked that it is a directory there, reached through no symbolic link.
    pub directory: Option<PathBuf>,
    /// The job's `HOME` on the host, writable like the workspace. A sandbox binds exactly
    /// this: the `HOME` of `env` comes from the pipeline too, so it can name any path.
    pub home: Option<PathBuf>,
    /// Host paths outside the workspace that the step may read, at the same path: the git
    /// objects its checkout borrows from the agent's mirror (so `git log` works in a sandbox
    /// that hides the agent's data).
    pub read_only: Vec<PathBuf>,
    /// A directory of the agent's own (0700, never the step user's or visible to the step)
    /// for the executor's files about the step, such as its environment with the step's
    /// secrets: inside the job's directory, so that what an agent killed mid-step leaves
    /// there is removed with that directory. `None`: the system's temporary directory.
    pub private: Option<PathBuf>,
    /// The complete environment of the step: nothing is inherited from the agent.
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
    /// Container image (container executor only; others ignore it).
    pub image: Option<String>,
    /// Pull `image` even if the engine has it (the step's `pull: true`).
    pub pull: bool,
    /// The job may not use what the operator entrusted to the agent (a pull request from a
    /// fork, see `Secrets::trusts`). The container executor then runs only an image that its
    /// registry serves without a login, pinned to the digest of that answer; others ignore it.
    pub untrusted: bool,
    /// The network of the job's services (see [`Executor::start_services`]), which the step
    /// joins to reach them by name; container executor only.
    pub network: Option<String>,
}

/// The workspace and `HOME` as a step sees them (see [`Executor::step_paths`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepPaths {
    pub workspace: &'static Path,
    pub home: &'static Path,
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepExit {
    /// The script's exit code; `None` when it was killed by a signal.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub cancelled: bool,
    pub duration: Duration,
}

impl StepExit {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out && !self.cancelled
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot start the step: {0}")]
    Spawn(String),
    #[error("{executor} is not usable on this machine: {reason}")]
    Unavailable {
        executor: &'static str,
        reason: String,
    },
    /// The step's image has no manifest for this agent's architecture (or is no image), or is
    /// one an untrusted step may not run (see [`StepSpec::untrusted`]).
    #[error("{0}")]
    Image(String),
    #[error("i/o error while running the step: {0}")]
    Io(#[from] std::io::Error),
    /// The pipeline asks for what this executor cannot do (`services:` outside containers).
    #[error("{0}")]
    Unsupported(String),
    /// A job's services could not start (their network, a container the engine refused).
    #[error("{0}")]
    Service(String),
}

impl StepSpec {
    /// Where the step starts, for a workspace that the step sees at `root`.
    pub(crate) fn start_dir(&self, root: &Path) -> PathBuf {
        match &self.directory {
            Some(dir) => root.join(dir),
            None => root.to_path_buf(),
        }
    }
}

/// What an executor that runs no images answers a plugin step (see [`StepSpec::plugin`]).
pub(crate) fn plugin_unsupported(spec: &StepSpec, executor: &str) -> ExecError {
    ExecError::Unsupported(format!(
        "step {} is a plugin (an image run with its own entrypoint, configured by `settings`), \
         which runs only under the container executor (agent.executor: container); this \
         agent's is {executor}",
        spec.name
    ))
}

/// Output of a running step, stdout and stderr merged in the order they were written.
pub type OutputSender = mpsc::Sender<Vec<u8>>;

/// Runs steps. Implementations must:
/// - give the step exactly `spec.env` (no inherited variables),
/// - kill the step's whole process tree on timeout or cancel (SIGTERM, then SIGKILL after a
///   grace period) and leave no process behind when `run_step` returns,
/// - send output as it arrives, never buffering a whole step.
pub trait Executor: Send + Sync {
    fn name(&self) -> &'static str;

    /// Where the workspace appears to a step that runs in an image with an environment of its
    /// own (`PATH`, `HOME`, toolchains), or `None` when the step sees the host's filesystem:
    /// the runner then supplies those variables, and names the workspace by its host path.
    fn image_workspace(&self) -> Option<&Path> {
        None
    }

    /// Where a step that sees the host's filesystem finds its workspace and `HOME`, when the
    /// executor puts them at fixed paths rather than at the job's own directories (`None`:
    /// at the host paths of [`StepSpec`]). Tools that record absolute paths (cargo's
    /// fingerprints, ccache, Go's build cache) then find the same paths in every job, so what
    /// a `cache:` restores stays valid.
    fn step_paths(&self) -> Option<StepPaths> {
        None
    }

    /// The account steps run as when it is not the agent's own: the runner hands the job's
    /// workspace and `HOME` to it before the first step.
    fn step_user(&self) -> Option<crate::step_user::StepUser> {
        None
    }

    /// Removes what steps of agents that died on this machine left running (the container
    /// executor's containers: the engine, not the agent, runs them). The runner calls it before
    /// a job takes a workspace slot, as the slot may be such a step's. Returns how many.
    fn sweep_orphans(&self) -> BoxFuture<'_, usize> {
        Box::pin(async { 0 })
    }

    /// Starts the job's `services:` before its first step; the container executor's alone.
    fn start_services<'a>(
        &'a self,
        spec: &'a ServicesSpec,
        output: OutputSender,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Result<ServiceGroup, ExecError>> {
        let _ = (spec, output, cancel);
        let name = self.name();
        Box::pin(async move {
            Err(ExecError::Unsupported(format!(
                "`services:` run only under the container executor (agent.executor: container); \
                 this agent's is {name}"
            )))
        })
    }

    fn run_step<'a>(
        &'a self,
        spec: &'a StepSpec,
        output: OutputSender,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Result<StepExit, ExecError>>;
}
