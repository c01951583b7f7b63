//! One `raibid` process (`server`, `agent`, `up`) with its output in a log file, that a test can
//! stop politely, kill without warning and start again with the same arguments.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::{procs, raibid_binary};

pub struct Service {
    child: Option<Child>,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    log: PathBuf,
}

impl Service {
    /// Starts `raibid <args>`; stdout and stderr are appended to `log`. `RAIBID_*` variables of
    /// the test's own environment are removed so only `env` and the arguments configure it.
    pub fn spawn(args: &[&str], env: &[(&str, &str)], log: &Path) -> Self {
        let mut service = Self {
            child: None,
            args: args.iter().map(OsString::from).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            log: log.to_path_buf(),
        };
        service.start();
        service
    }

    /// Starts again with the same arguments (after [`Self::kill`] or [`Self::terminate`]).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the service log");
        let mut command = Command::new(raibid_binary());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("RAIBID_") {
                command.env_remove(name);
            }
        }
        let child = command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("start raibid");
        self.child = Some(child);
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `within`; whether it exited cleanly.
    pub fn terminate(&mut self, within: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        procs::signal(child.id() as i32, Signal::SIGTERM);
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}
