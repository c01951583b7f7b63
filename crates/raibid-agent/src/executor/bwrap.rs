//! Steps in a bubblewrap sandbox: the machine's own tools, without the agent's secrets.
//!
//! The step sees the host's filesystem read-only, with a writable workspace and an empty
//! `/tmp`; `/root`, `/home` and the configured `hide` directories (the agent's data: secrets,
//! caches, other jobs' workspaces) are covered by empty tmpfs mounts, and `ro_binds` put back
//! read-only what a step legitimately needs from there (a Rust toolchain under `/root/.cargo`).
//! Mounts apply in order and a later one wins, hence: system tmpfs, `hide`, `ro_binds`, and the
//! workspace last, so a workspace inside a hidden data directory stays visible and writable.
//!
//! PID, IPC and UTS namespaces are private, so the step cannot see or signal the agent, and the
//! network is unshared unless allowed. Everything else under `/` stays visible read-only; hide
//! sockets such as `/run/docker.sock` (writable through a read-only mount) when the agent's user
//! can reach them.
//!
//! The job's workspace and `HOME` appear at fixed paths, [`SANDBOX_WORKSPACE`] and
//! [`SANDBOX_HOME`], whatever job directory they are in on the host (as GitLab's build
//! directory is the same for every job of a project, and a container step's `/workspace`):
//! cargo records the absolute path of every dependency's sources in its fingerprints, so with a
//! new path each job a restored `target/` would be rebuilt whole. Each sandbox has its own mount
//! namespace, so concurrent jobs never share these paths. Both are under `/home`, which is an
//! empty tmpfs here: bwrap can create mount points there, not in the read-only `/`.
//!
//! An agent running as root must name a `user` for its steps. Without capabilities a root step
//! is still uid 0, the owner of every root-only file and socket visible read-only: it could ask
//! systemd or a container engine over their sockets to run anything outside the sandbox. The
//! sandbox keeps only `CAP_SETUID`/`CAP_SETGID`, and `setpriv` inside it switches to the user
//! (which drops those too) before the script starts.
//!
//! bwrap can fail to set the sandbox up when the host's mount table changes while it copies it
//! (a container engine's overlay or network namespace mounted or removed at that moment;
//! bubblewrap issue 650): `Can't bind mount /oldroot/ on /newroot/: Unable to apply mount
//! flags`. That says nothing about the step, so a sandbox in which the step never started is
//! set up again, up to [`SETUP_TRIES`] times. Whether it started is told by the step's shell,
//! which writes a byte to a pipe ([`STARTED_FD`]) before anything else, rather than by bwrap's
//! exit code (1 for a step's `exit 1` too) or its messages (a step may run bwrap itself).
//!
//! Because of the PID namespace, the step's processes are not in the process group the agent
//! spawned (that holds only bwrap). Killing bwrap kills them all: `--die-with-parent` SIGKILLs
//! the sandbox's init, and the kernel then kills the whole namespace. SIGTERM, which bwrap does
//! not forward, is sent to the processes inside directly.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::BoxFuture;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::env_script::{EnvScript, FIXED_PATH, sourced_first};
use super::process::{self, DEFAULT_KILL_GRACE, Limits, SHELL, Stopper, signal_group};
use super::{ExecError, Executor, OutputSender, StepExit, StepPaths, StepSpec};
use crate::step_user::StepUser;

/// Where the job's workspace is bound in every sandbox, and the steps' working directory.
pub const SANDBOX_WORKSPACE: &str = "/home/raibid/workspace";

/// Where the job's `HOME` is bound in every sandbox: beside the workspace, not above it, so
/// the workspace's mount point is not a directory bwrap creates in the job's `HOME`.
pub const SANDBOX_HOME: &str = "/home/raibid/home";

/// Where the step's environment script is bound, inside the sandbox's own `/tmp`.
const ENV_IN_SANDBOX: &str = "/tmp/.raibid-env";

/// util-linux's privilege switcher, present wherever bwrap is (util-linux is essential on
/// Debian and Ubuntu).
const SETPRIV: &str = "/usr/bin/setpriv";

const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Sandboxes set up for one step before its failure to start is the step's.
pub const SETUP_TRIES: u32 = 3;

/// Before the next try, times the number of tries so far.
const SETUP_PAUSE: Duration = Duration::from_millis(200);

/// The descriptor through which the step's shell says that the sandbox is set up: a byte
/// written, then closed before the step's own script runs.
const STARTED_FD: i32 = 3;

/// What the step's shell runs first: the byte on [`STARTED_FD`]. Without that descriptor
/// (nothing to tell) it goes on quietly; `sh -e` does not stop on a failure left of `||`.
const SAY_STARTED: &str = "{ printf s >&3; exec 3>&-; } 2>/dev/null || :; ";

#[derive(Debug, Clone)]
pub struct BwrapOptions {
    /// Whether steps may use the network; without it they only have a loopback interface.
    pub network: bool,
    /// Directories replaced by an empty tmpfs (missing ones are skipped: nothing to hide).
    pub hide: Vec<PathBuf>,
    /// Paths exposed read-only at their own location even inside a hidden directory (missing
    /// ones are skipped).
    pub ro_binds: Vec<PathBuf>,
    /// How long a step may take to exit after SIGTERM before the sandbox is killed.
    pub kill_grace: Duration,
    /// The account steps run as inside the sandbox (the agent must be root); `None`: the
    /// agent's own uid, without capabilities.
    pub user: Option<StepUser>,
    /// Device nodes bound into the sandbox's `/dev` besides its basic ones.
    pub devices: super::StepDevices,
}

impl Default for BwrapOptions {
    /// No network: a step that needs it must be allowed explicitly.
    fn default() -> Self {
        Self {
            network: false,
            hide: Vec::new(),
            ro_binds: Vec::new(),
            kill_grace: DEFAULT_KILL_GRACE,
            user: None,
            devices: super::StepDevices::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BwrapExecutor {
    /// `None` when bwrap is not installed; reported on use rather than on construction so an
    /// agent can be configured before its machine is ready.
    program: Option<PathBuf>,
    options: BwrapOptions,
}

impl BwrapExecutor {
    pub fn new(options: BwrapOptions) -> Self {
        Self {
            program: process::find_on_path("bwrap"),
            options,
        }
    }

    /// Sandboxes through the bwrap at `program` rather than the one on `PATH` (a build of
    /// one's own; the tests' wrapper that fails as a raced mount does).
    pub fn with_program(options: BwrapOptions, program: PathBuf) -> Self {
        Self {
            program: Some(program),
            options,
        }
    }

    /// Runs a trivial step in a sandbox configured like the real ones. bwrap can be installed
    /// yet unusable (user namespaces disabled, seccomp in a container): better to learn that
    /// when the agent starts than from every job failing.
    pub async fn probe(&self) -> Result<(), ExecError> {
        if let Some(user) = self.options.user
            && !Path::new(SETPRIV).exists()
        {
            return Err(ExecError::Unavailable {
                executor: "bwrap",
                reason: format!(
                    "{SETPRIV} (util-linux) is missing; it switches the sandbox to the step user \
                     {user}"
                ),
            });
        }
        let workspace = tempfile::Builder::new()
            .prefix("raibid-bwrap-probe-")
            .tempdir()?;
        if let Some(user) = self.options.user {
            user.give(workspace.path())?;
        }
        let spec = StepSpec {
            name: "bwrap-probe".into(),
            script: "true".into(),
            plugin: false,
            workspace: workspace.path().to_path_buf(),
            directory: None,
            home: None,
            read_only: Vec::new(),
            private: None,
            env: Default::default(),
            timeout: PROBE_TIMEOUT,
            image: None,
            pull: false,
            untrusted: false,
            network: None,
        };
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
        let collect = async {
            let mut text = Vec::new();
            while let Some(chunk) = rx.recv().await {
                text.extend_from_slice(&chunk);
            }
            text
        };
        let (exit, text) = tokio::join!(self.run(&spec, tx, CancellationToken::new()), collect);
        let exit = exit?;
        if exit.success() {
            return Ok(());
        }
        Err(ExecError::Unavailable {
            executor: "bwrap",
            reason: format!(
                "a trivial sandbox failed ({exit:?}): {}",
                String::from_utf8_lossy(&text).trim()
            ),
        })
    }

    /// Runs the step, setting its sandbox up again (see the module's doc) while the step
    /// never started in it.
    async fn run(
        &self,
        spec: &StepSpec,
        output: OutputSender,
        cancel: CancellationToken,
    ) -> Result<StepExit, ExecError> {
        let mut tries = 1;
        loop {
            let (exit, started) = self.run_once(spec, output.clone(), cancel.clone()).await?;
            if started || exit.success() || exit.cancelled || exit.timed_out || tries >= SETUP_TRIES
            {
                return Ok(exit);
            }
            warn!(step = %spec.name, tries, "bwrap could not set the sandbox up; trying again");
            let note = format!(
                "[raibid] bwrap could not set the sandbox up (above), before the step started; \
                 setting it up again ({} of {SETUP_TRIES})\n",
                tries + 1
            );
            let _ = output.send(note.into_bytes()).await;
            tokio::select! {
                () = tokio::time::sleep(SETUP_PAUSE * tries) => {}
                () = cancel.cancelled() => return Ok(exit),
            }
            tries += 1;
        }
    }

    /// One sandbox for the step: how it ended, and whether the step started in it.
    async fn run_once(
        &self,
        spec: &StepSpec,
        output: OutputSender,
        cancel: CancellationToken,
    ) -> Result<(StepExit, bool), ExecError> {
        let Some(program) = &self.program else {
            return Err(ExecError::Unavailable {
                executor: "bwrap",
                reason: "bwrap is not on PATH; install it with `apt-get install bubblewrap`".into(),
            });
        };
        let workspace = process::workspace_dir(&spec.workspace)?;
        let mut command = Command::new(program);
        // The environment goes through a file the step's shell sources, not bwrap's own
        // environment (bwrap and setpriv run as root before the step: `LD_PRELOAD` would run
        // code there) and not `--setenv` (argv is readable by every user on the machine).
        let env = EnvScript::write(&spec.env, spec.private.as_deref())?;
        // The job's HOME (a per-job directory beside the checkout) is writable like the
        // workspace: tools such as cargo keep their state there.
        let home = spec
            .home
            .as_deref()
            .filter(|h| h.is_absolute() && h.is_dir());
        command
            .args(sandbox_args(
                &self.options,
                &workspace,
                &spec.start_dir(Path::new(SANDBOX_WORKSPACE)),
                home,
                &spec.read_only,
                &env.path(),
                &spec.script,
            ))
            .env_clear()
            .env("PATH", FIXED_PATH);
        let (mut started, said) = io::pipe()?;
        let said_fd = said.as_raw_fd();
        // SAFETY: dup2 and fcntl are async-signal-safe and touch no memory of the parent.
        unsafe {
            command.pre_exec(move || {
                // The pipe is close-on-exec; its copy at STARTED_FD is not. When it already
                // is STARTED_FD, dup2 would leave the flag.
                let done = if said_fd == STARTED_FD {
                    libc::fcntl(said_fd, libc::F_SETFD, 0)
                } else {
                    libc::dup2(said_fd, STARTED_FD)
                };
                if done < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let limits = Limits {
            timeout: Some(spec.timeout),
            grace: self.options.kill_grace,
        };
        let exit = process::run(command, output, cancel, limits, &SandboxStopper).await?;
        drop(said);
        // The byte was written before bwrap ended, if ever. Not read to the end: the
        // sandbox's init, a copy of bwrap holding the descriptor, may still be going away.
        nix::fcntl::fcntl(
            started.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(io::Error::from)?;
        let mut byte = [0u8; 1];
        let said_started = matches!(started.read(&mut byte), Ok(1));
        Ok((exit, said_started))
    }
}

impl Executor for BwrapExecutor {
    fn name(&self) -> &'static str {
        "bwrap"
    }

    fn step_user(&self) -> Option<StepUser> {
        self.options.user
    }

    fn step_paths(&self) -> Option<StepPaths> {
        Some(StepPaths {
            workspace: Path::new(SANDBOX_WORKSPACE),
            home: Path::new(SANDBOX_HOME),
        })
    }

    fn run_step<'a>(
        &'a self,
        spec: &'a StepSpec,
        output: OutputSender,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Result<StepExit, ExecError>> {
        if spec.plugin {
            return Box::pin(async move { Err(super::plugin_unsupported(spec, self.name())) });
        }
        Box::pin(self.run(spec, output, cancel))
    }
}

/// bwrap's arguments; `workspace` and `home` are the job's directories on the host (absolute),
/// bound at [`SANDBOX_WORKSPACE`] and [`SANDBOX_HOME`]. `env_file` is the step's environment as
/// a script, sourced before `script`.
fn sandbox_args(
    options: &BwrapOptions,
    workspace: &Path,
    start_dir: &Path,
    home: Option<&Path>,
    read_only: &[PathBuf],
    env_file: &Path,
    script: &str,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "--die-with-parent",
        // An agent running as root would otherwise hand the step every capability: enough to
        // remount `/` read-write or unmount the tmpfs that hides the agent's secrets.
        "--cap-drop",
        "ALL",
    ]
    .map(OsString::from)
    .to_vec();
    if options.user.is_some() {
        // Only to become the step user: setpriv's setresuid away from 0 clears them again.
        for cap in ["CAP_SETUID", "CAP_SETGID"] {
            args.extend(["--cap-add", cap].map(OsString::from));
        }
    }
    args.extend(
        [
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--new-session",
        ]
        .map(OsString::from),
    );
    if !options.network {
        args.push("--unshare-net".into());
    }
    // /tmp is the sticky, world-writable directory every tool expects, also for a step user
    // (bwrap makes a tmpfs 0755, root's).
    let system: [&[&str]; 6] = [
        &["--ro-bind", "/", "/"],
        &["--dev", "/dev"],
        &["--proc", "/proc"],
        &["--perms", "1777", "--tmpfs", "/tmp"],
        &["--tmpfs", "/root"],
        &["--tmpfs", "/home"],
    ];
    for mount in system {
        args.extend(mount.iter().map(OsString::from));
    }
    // Into the sandbox's own /dev, so after it. The agent checked at start that they exist; one
    // gone since (a driver unloaded) is left out, and the step fails as it would on the host.
    for node in options.devices.nodes(Path::new("/dev")) {
        if node.exists() {
            args.push("--dev-bind".into());
            args.push(node.clone().into());
            args.push(node.into());
        } else {
            debug!(device = %node.display(), "not binding a missing device");
        }
    }
    for dir in &options.hide {
        match std::fs::canonicalize(dir) {
            Ok(real) => {
                args.push("--tmpfs".into());
                args.push(real.into());
            }
            Err(e) => debug!(dir = %dir.display(), error = %e, "not hiding a missing directory"),
        }
    }
    for path in options.ro_binds.iter().chain(read_only) {
        // Bound at the path as given, not where its symlinks lead: the step's environment
        // (CARGO_HOME=/root/.cargo) names the given path, and the symlink itself may be hidden.
        match std::fs::canonicalize(path) {
            Ok(real) => {
                let dest = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                reachable(&mut args, options, &dest);
                args.push("--ro-bind".into());
                args.push(real.into());
                args.push(dest.into());
            }
            Err(e) => debug!(path = %path.display(), error = %e, "not exposing a missing path"),
        }
    }
    // After the hidden directories, which could cover /tmp.
    args.extend([
        OsString::from("--ro-bind"),
        env_file.into(),
        ENV_IN_SANDBOX.into(),
    ]);
    if let Some(home) = home {
        reachable(&mut args, options, Path::new(SANDBOX_HOME));
        args.extend([OsString::from("--bind"), home.into(), SANDBOX_HOME.into()]);
    }
    reachable(&mut args, options, Path::new(SANDBOX_WORKSPACE));
    args.extend([
        OsString::from("--bind"),
        workspace.into(),
        SANDBOX_WORKSPACE.into(),
        "--chdir".into(),
        start_dir.into(),
        "--".into(),
    ]);
    if let Some(user) = options.user {
        args.extend(
            [
                SETPRIV.to_owned(),
                format!("--reuid={}", user.uid),
                format!("--regid={}", user.gid),
                "--clear-groups".to_owned(),
                "--".to_owned(),
            ]
            .map(OsString::from),
        );
    }
    args.extend(
        SHELL
            .map(OsString::from)
            .into_iter()
            .chain([OsString::from(format!(
                "{SAY_STARTED}{}",
                sourced_first(ENV_IN_SANDBOX, script)
            ))]),
    );
    args
}

/// Lets a step user get to a mount point: bwrap creates the missing directories above one (in
/// a tmpfs that hides the agent's data, say) with mode 0700, which only root can pass. Existing
/// directories keep their mode.
fn reachable(args: &mut Vec<OsString>, options: &BwrapOptions, dest: &Path) {
    if options.user.is_none() {
        return;
    }
    let mut above: Vec<&Path> = dest.ancestors().skip(1).collect();
    above.pop(); // `/`
    for dir in above.into_iter().rev() {
        args.extend([
            OsString::from("--perms"),
            "0755".into(),
            "--dir".into(),
            dir.into(),
        ]);
    }
}

/// Sends SIGTERM to the processes inside the sandbox, which signalling bwrap would not reach.
struct SandboxStopper;

impl Stopper for SandboxStopper {
    fn terminate(&self, group: Pid) -> BoxFuture<'_, ()> {
        // bwrap (the group leader) -> the sandbox's init (also bwrap) -> the step's processes.
        let inside: Vec<Pid> = children(group)
            .first()
            .map(|&init| descendants(init))
            .unwrap_or_default();
        if inside.is_empty() {
            // The sandbox is not up yet: stopping bwrap itself is all there is to do.
            signal_group(group, Signal::SIGTERM);
        }
        for pid in inside {
            let _ = kill(pid, Signal::SIGTERM);
        }
        Box::pin(async {})
    }
}

fn children(pid: Pid) -> Vec<Pid> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .map(Pid::from_raw)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn descendants(root: Pid) -> Vec<Pid> {
    let mut found = Vec::new();
    let mut queue = VecDeque::from(children(root));
    while let Some(pid) = queue.pop_front() {
        queue.extend(children(pid));
        found.push(pid);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(args: &[OsString], wanted: &[&str]) -> usize {
        args.windows(wanted.len())
            .position(|w| w.iter().zip(wanted).all(|(a, b)| a == b))
            .unwrap_or_else(|| panic!("{wanted:?} not in {args:?}"))
    }

    #[test]
    fn later_mounts_are_the_more_specific_ones() {
        let data = tempfile::tempdir().unwrap();
        let tools = data.path().join("tools");
        std::fs::create_dir(&tools).unwrap();
        let work = data.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let data_dir = data.path().canonicalize().unwrap();
        let options = BwrapOptions {
            hide: vec![data_dir.clone(), data_dir.join("missing")],
            ro_binds: vec![data_dir.join("tools"), data_dir.join("missing")],
            ..BwrapOptions::default()
        };
        let work = work.canonicalize().unwrap();
        let args = sandbox_args(
            &options,
            &work,
            Path::new(SANDBOX_WORKSPACE),
            None,
            &[],
            Path::new("/e"),
            "make",
        );
        let (d, t, w) = (
            data_dir.to_str().unwrap(),
            tools.canonicalize().unwrap(),
            work.to_str().unwrap(),
        );
        let t = t.to_str().unwrap();
        let root = position(&args, &["--ro-bind", "/", "/"]);
        let home = position(&args, &["--tmpfs", "/root"]);
        let hide = position(&args, &["--tmpfs", d]);
        let expose = position(&args, &["--ro-bind", t, t]);
        let workspace = position(&args, &["--bind", w, SANDBOX_WORKSPACE]);
        assert!(root < home && home < hide && hide < expose && expose < workspace);
        assert!(!args.iter().any(|a| a.to_string_lossy().contains("missing")));
        assert!(args.contains(&"--unshare-net".into()));
        assert_eq!(
            args[args.len() - 5..],
            [
                "--",
                "/bin/sh",
                "-e",
                "-c",
                &format!("{SAY_STARTED}. /tmp/.raibid-env; make")
            ]
            .map(OsString::from)
        );
    }

    #[test]
    fn a_step_user_can_get_to_every_mount_point() {
        let options = BwrapOptions {
            user: Some(StepUser {
                uid: 65534,
                gid: 65534,
            }),
            ..BwrapOptions::default()
        };
        let args = sandbox_args(
            &options,
            Path::new("/data/work/j-a1/src"),
            Path::new(SANDBOX_WORKSPACE),
            Some(Path::new("/data/work/j-a1/home")),
            &[],
            Path::new("/e"),
            "true",
        );
        // The mount points are in the sandbox's /home; the host's directories above the job's
        // need no opening up (bwrap, still privileged, binds them).
        let parent = position(&args, &["--perms", "0755", "--dir", "/home/raibid"]);
        let home = position(&args, &["--bind", "/data/work/j-a1/home", SANDBOX_HOME]);
        let workspace = position(&args, &["--bind", "/data/work/j-a1/src", SANDBOX_WORKSPACE]);
        assert!(parent < home && home < workspace);
        assert!(!args.contains(&"/data/work/j-a1".into()));
        assert!(position(&args, &["--cap-add", "CAP_SETUID"]) < home);
        assert_eq!(
            args[args.len() - 10..],
            [
                "--",
                SETPRIV,
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                "/bin/sh",
                "-e",
                "-c",
                &format!("{SAY_STARTED}. /tmp/.raibid-env; true"),
            ]
            .map(OsString::from)[..]
        );
        // Without a step user nothing changes.
        let args = sandbox_args(
            &BwrapOptions::default(),
            Path::new("/w/x"),
            Path::new(SANDBOX_WORKSPACE),
            None,
            &[],
            Path::new("/e"),
            "true",
        );
        assert!(!args.contains(&"--dir".into()) && !args.contains(&SETPRIV.into()));
    }

    #[test]
    fn network_allowed_keeps_the_host_network() {
        let options = BwrapOptions {
            network: true,
            ..BwrapOptions::default()
        };
        assert!(
            !sandbox_args(
                &options,
                Path::new("/w"),
                Path::new(SANDBOX_WORKSPACE),
                None,
                &[],
                Path::new("/e"),
                "true"
            )
            .contains(&"--unshare-net".into())
        );
    }
}
