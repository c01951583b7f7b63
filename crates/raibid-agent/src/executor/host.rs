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
            let workspace = process::workspace_dir(&spec.workspace)?;
            let mut command = Command::new(SHELL[0]);
            command
                .args(&SHELL[1..])
                .arg(&spec.script)
                .env_clear()
                .envs(&spec.env)
                .current_dir(workspace);
            if let Some(user) = self.user {
                // std drops root's supplementary groups before setuid.
                command.uid(user.uid).gid(user.gid);
            }
            let limits = Limits {
                timeout: Some(spec.timeout),
                grace: self.grace,
            };
            process::run(command, output, cancel, limits, &SignalGroup).await
        })
    }
}
