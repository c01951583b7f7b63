//! Steps run directly on the agent's machine, as the agent's user or, for an agent running as
//! root, as the configured step user.
//!
//! No isolation beyond a clean environment, a process group and (with a step user) a uid of
//! their own: for trusted repositories, for machines where neither bubblewrap nor a container
//! engine is available, and for agent pods. Without a step user a step can read everything the
//! agent can; either way a process that calls `setsid` escapes the step's kill.

use std::time::Duration;

use futures::future::BoxFuture;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::process::{self, DEFAULT_KILL_GRACE, Limits, SHELL, SignalGroup};
use super::{ExecError, Executor, OutputSender, StepExit, StepSpec};
use crate::step_user::StepUser;

#[derive(Debug, Clone)]
pub struct HostExecutor {
    grace: Duration,
    user: Option<StepUser>,
}

impl HostExecutor {
    pub fn new() -> Self {
        Self::with_kill_grace(DEFAULT_KILL_GRACE)
    }

    /// `grace`: how long a step may take to exit after SIGTERM before it is killed.
    pub fn with_kill_grace(grace: Duration) -> Self {
        Self { grace, user: None }
    }

    /// Steps run as `user` (the agent must be root); the runner gives it each job's workspace.
    pub fn as_user(mut self, user: StepUser) -> Self {
        self.user = Some(user);
        self
    }
}

impl Default for HostExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl Executor for HostExecutor {
    fn name(&self) -> &'static str {
        "host"
    }

    fn step_user(&self) -> Option<StepUser> {
        self.user
    }

    fn run_step<'a>(
        &'a self,
        spec: &'a StepSpec,
        output: OutputSender,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Result<StepExit, ExecError>> {
        Box::pin(async move {
            if spec.plugin {
                return Err(super::plugin_unsupported(spec, self.name()));
            }
            let workspace = process::workspace_dir(&spec.workspace)?;
            let mut command = Command::new(SHELL[0]);
            command
                .args(&SHELL[1..])
                .arg(&spec.script)
                .env_clear()
                .envs(&spec.env)
                .current_dir(spec.start_dir(&workspace));
            if let Some(user) = self.user {
                // std drops root's supplementary groups before setuid.
                command.uid(user.uid).gid(user.gid);
            }
            let limits = Limits {
                timeout: Some(spec.timeout),
                grace: self.grace,
            };
            let exit = process::run(command, output, cancel, limits, &SignalGroup).await;
            if let Some(user) = self.user {
                kill_leftovers(user).await;
            }
            exit
        })
    }
}

/// Kills every process of the step user: what escaped the step's process group (`setsid`, a
/// daemon) would otherwise live on into later steps and jobs of the same uid, reading their
/// environment and changing their workspaces. The step user belongs to this agent's steps
/// alone, and it runs one job at a time, so nothing else is hit. Each process is pinned with a
/// pidfd before its owner is checked again and it is signalled, so a recycled pid never hits
/// another process. Repeated while it finds some, for those forked meanwhile.
async fn kill_leftovers(user: StepUser) {
    for _ in 0..5 {
        let killed = tokio::task::spawn_blocking(move || kill_processes_of(user.uid))
            .await
            .unwrap_or(0);
        if killed == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGKILLs the processes whose real uid is `uid`; returns how many were found.
fn kill_processes_of(uid: u32) -> usize {
    let mut found = 0;
    for pid in process::pids() {
        if real_uid(pid) != Some(uid) {
            continue;
        }
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            continue;
        }
        let fd = fd as libc::c_int;
        if real_uid(pid) == Some(uid) {
            found += 1;
            // SAFETY: a pidfd we own, a valid signal, no siginfo.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd,
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            }
        }
        // SAFETY: closing the fd opened above, once.
        unsafe { libc::close(fd) };
    }
    found
}

/// The real uid of a live process; `None` for a zombie (dead, waiting for its parent) or a
/// process that is gone.
fn real_uid(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    if field("State:")?.starts_with('Z') {
        return None;
    }
    field("Uid:")?.split_whitespace().next()?.parse().ok()
}
