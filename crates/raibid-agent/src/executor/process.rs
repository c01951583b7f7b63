//! Running one program as a step: what every executor (and the image builder) shares.
//!
//! The program gets its own session and process group so that everything it starts can be
//! signalled at once, and one pipe for both stdout and stderr so the log shows output in the order it was
//! written (two pipes read concurrently cannot recover that order). On timeout or cancel the
//! step is asked to stop (SIGTERM), then killed after a grace period; when the main process exits
//! the rest of its group is killed too, so `sleep 1000 &` cannot outlive its step.

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{ExecError, OutputSender, StepExit};

/// How long a step may take to exit after SIGTERM before it is killed.
pub(crate) const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

/// How long to keep reading output once the step's process group is dead. Only a process that
/// left the group (`setsid`, a daemon) can still hold the pipe open, and it must not be able to
/// keep the step running forever.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

const READ_CHUNK: usize = 64 * 1024;

/// At the drain deadline, what is already in the pipe is still taken, up to this much (a pipe
/// holds at most 1 MiB unless an administrator raised the limit).
const FINAL_DRAIN_BYTES: usize = 1024 * 1024;

/// The shell every step's script runs in; `-e` stops the script at the first failing command.
pub(crate) const SHELL: [&str; 3] = ["/bin/sh", "-e", "-c"];

/// How to stop a step early. The default signals the process group; executors whose step lives
/// elsewhere (a PID namespace, a container) know better how to reach it.
pub(crate) trait Stopper: Send + Sync {
    /// Asks the step to stop, giving it a chance to clean up.
    fn terminate(&self, group: Pid) -> BoxFuture<'_, ()>;

    /// Runs once the grace period is over, just before the process group is SIGKILLed.
    fn kill(&self, _group: Pid) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// SIGTERM to the whole process group.
pub(crate) struct SignalGroup;

impl Stopper for SignalGroup {
    fn terminate(&self, group: Pid) -> BoxFuture<'_, ()> {
        signal_group(group, Signal::SIGTERM);
        Box::pin(async {})
    }
}

/// Time limits of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// `None`: only the cancellation token stops it.
    pub timeout: Option<Duration>,
    pub grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Timeout,
    Cancel,
}

/// Spawns `command` (whose stdio is set here) and supervises it to the end; see the module docs.
pub(crate) async fn run(
    command: Command,
    output: OutputSender,
    cancel: CancellationToken,
    limits: Limits,
    stopper: &dyn Stopper,
) -> Result<StepExit, ExecError> {
    run_spawned_by(command, output, cancel, limits, stopper, |mut command| {
        command.spawn()
    })
    .await
}

/// [`run`], with `spawn` starting the command once it is set up (its output, its session).
/// `spawn` consumes the command, and must drop it once the child exists: it holds copies of
/// the output pipe's write end, and until they are closed the reader never sees end-of-file.
pub(crate) async fn run_spawned_by(
    mut command: Command,
    output: OutputSender,
    cancel: CancellationToken,
    limits: Limits,
    stopper: &dyn Stopper,
    spawn: impl FnOnce(Command) -> io::Result<Child>,
) -> Result<StepExit, ExecError> {
    let (reader, writer) = io::pipe()?;
    command
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    // A session of its own, not just a process group: it also leaves the agent's controlling
    // terminal behind, which a step could otherwise open and push input into (TIOCSTI) for
    // the shell that started the agent. The session leader leads its process group too, so
    // the group is still the step's pid.
    // SAFETY: setsid is async-signal-safe and touches no allocator or locks.
    unsafe {
        command.pre_exec(|| nix::unistd::setsid().map(drop).map_err(io::Error::from));
    }
    let program = command.as_std().get_program().to_owned();
    let started = Instant::now();
    // Dropped with the command, our copies of the write end.
    let spawned = spawn(command);
    let mut child =
        spawned.map_err(|e| ExecError::Spawn(format!("{}: {e}", Path::new(&program).display())))?;
    let Some(pid) = child.id() else {
        return Err(ExecError::Spawn(format!(
            "{}: exited before it could be supervised",
            Path::new(&program).display()
        )));
    };
    let group = Pid::from_raw(pid as i32);
    debug!(program = %Path::new(&program).display(), %group, "spawned");
    let receiver = pipe::Receiver::from_owned_fd(OwnedFd::from(reader))?;

    let (exited_tx, exited_rx) = oneshot::channel();
    let supervise = async {
        let guard = GroupGuard(Some(group));
        let (status, stop) = supervise(&mut child, group, &cancel, limits, stopper).await;
        // Background children of a step that ended on its own are killed here too.
        guard.kill_now();
        let _ = exited_tx.send(());
        (status, stop)
    };
    let ((status, stop), ()) = tokio::join!(supervise, forward(receiver, output, exited_rx));
    let status = status?;
    Ok(StepExit {
        code: status.code(),
        signal: status.signal(),
        timed_out: stop == Some(Stop::Timeout),
        cancelled: stop == Some(Stop::Cancel),
        duration: started.elapsed(),
    })
}

/// Waits for the main process, stopping it on timeout or cancel.
async fn supervise(
    child: &mut Child,
    group: Pid,
    cancel: &CancellationToken,
    limits: Limits,
    stopper: &dyn Stopper,
) -> (io::Result<ExitStatus>, Option<Stop>) {
    let timeout = async {
        match limits.timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let wait = child.wait();
    tokio::pin!(wait);
    let stop = tokio::select! {
        status = &mut wait => return (status, None),
        () = timeout => Stop::Timeout,
        () = cancel.cancelled() => Stop::Cancel,
    };
    info!(%group, reason = ?stop, grace = ?limits.grace, "stopping step");
    let terminate = async {
        stopper.terminate(group).await;
        tokio::time::sleep(limits.grace).await;
    };
    tokio::select! {
        status = &mut wait => return (status, Some(stop)),
        () = terminate => {}
    }
    warn!(%group, "step still running after the grace period: killing it");
    stopper.kill(group).await;
    signal_group(group, Signal::SIGKILL);
    (wait.await, Some(stop))
}

/// Copies the pipe to `output` until end-of-file, or until [`DRAIN_AFTER_EXIT`] after the main
/// process exited. A dropped receiver does not stop the reading: the step must not block on a
/// full pipe because nobody listens.
async fn forward(
    mut receiver: pipe::Receiver,
    output: OutputSender,
    exited: oneshot::Receiver<()>,
) {
    let mut output = Some(output);
    let mut buf = vec![0u8; READ_CHUNK];
    let deadline = async {
        let _ = exited.await;
        tokio::time::sleep(DRAIN_AFTER_EXIT).await;
    };
    tokio::pin!(deadline);
    loop {
        let read = tokio::select! {
            biased;
            () = &mut deadline => break,
            read = receiver.read(&mut buf) => read,
        };
        match read {
            Ok(0) => return,
            Ok(n) => deliver(&mut output, &buf[..n]).await,
            Err(e) => {
                warn!(error = %e, "reading step output failed");
                return;
            }
        }
    }
    let mut left = FINAL_DRAIN_BYTES;
    while left > 0 {
        let want = left.min(READ_CHUNK);
        match receiver.try_read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                left -= n;
                deliver(&mut output, &buf[..n]).await;
            }
        }
    }
    info!("stopped reading output: a process that left the step's process group keeps it open");
}

async fn deliver(output: &mut Option<OutputSender>, chunk: &[u8]) {
    if let Some(sender) = output.as_ref()
        && sender.send(chunk.to_vec()).await.is_err()
    {
        debug!("output receiver is gone: discarding the rest of the output");
        *output = None;
    }
}

/// SIGKILLs the process group when dropped, so that abandoning a run (its future dropped) does
/// not abandon the processes.
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn kill_now(mut self) {
        if let Some(group) = self.0.take() {
            signal_group(group, Signal::SIGKILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(group) = self.0.take() {
            signal_group(group, Signal::SIGKILL);
        }
    }
}

/// The pids of the processes `/proc` lists now (none when it cannot be read).
pub(crate) fn pids() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

pub(crate) fn signal_group(group: Pid, signal: Signal) {
    match killpg(group, signal) {
        // Nobody left in the group: exactly what the signal was meant to achieve.
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => warn!(%group, ?signal, error = %e, "cannot signal the step's process group"),
    }
}

/// The step's working directory, absolute and with symlinks resolved, or why it cannot be one.
pub(crate) fn workspace_dir(path: &Path) -> Result<PathBuf, ExecError> {
    let resolved = std::fs::canonicalize(path)
        .map_err(|e| ExecError::Spawn(format!("workspace {}: {e}", path.display())))?;
    if !resolved.is_dir() {
        return Err(ExecError::Spawn(format!(
            "workspace {} is not a directory",
            path.display()
        )));
    }
    Ok(resolved)
}

/// The first executable file called `name` in `search_path` (a `PATH`-style list).
pub(crate) fn find_program(name: &str, search_path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(search_path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Like [`find_program`] on the agent's own `PATH`.
pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    find_program(name, &std::env::var_os("PATH").unwrap_or_default())
}

/// A short random lowercase hex string, for names that must not collide between concurrent
/// steps (containers, manifest lists).
pub(crate) fn random_suffix() -> io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_program_needs_an_executable_file() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("tool");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        assert_eq!(find_program("tool", dir.path().as_os_str()), None);
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_program("tool", dir.path().as_os_str()), Some(plain));
        std::fs::create_dir(dir.path().join("adir")).unwrap();
        assert_eq!(find_program("adir", dir.path().as_os_str()), None);
    }

    #[test]
    fn random_suffixes_differ() {
        let a = random_suffix().unwrap();
        assert_eq!(a.len(), 16);
        assert_ne!(a, random_suffix().unwrap());
    }
}
