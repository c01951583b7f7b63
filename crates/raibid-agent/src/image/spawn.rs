//! Starting buildah so that it dies with the agent.
//!
//! buildah runs in a session of its own (`process::run`), so nothing the agent's death does to
//! its terminal or process group reaches it, and `kill_on_drop` needs an agent alive to drop
//! something: a SIGKILLed agent (the OOM killer, a node drain) left its buildah going on, a
//! build that held the store, pushed nothing and could commit an image nobody removes. So
//! buildah gets the parent-death signal, SIGKILL, as the agent's `git` does.
//!
//! The kernel sends that signal when the *thread* that forked the child ends, not the process,
//! and tokio forks on whichever thread calls `spawn`: a worker thread (which lives as long as
//! the runtime, unless a `block_in_place` hands its work to another thread and lets it end as
//! an idle blocking thread) or a `spawn_blocking` thread (which ends after ten idle seconds).
//! A buildah forked there would be killed in the middle of a build that has nothing wrong with
//! it. So every buildah is forked by one thread of its own, which does nothing else and lives
//! as long as the agent's process: its end is the process's.
//!
//! buildah's own children (`buildah-chroot-runtime`, `buildah-chroot-exec` and the `RUN`
//! command under `--isolation chroot`) die with it: buildah gives them a parent-death signal of
//! its own. A `RUN` process that leaves them (`setsid` and a double fork) outlives buildah, a
//! killed agent or not, as a daemon outlives any step.

use std::io;
use std::sync::OnceLock;
use std::sync::mpsc;

use tokio::process::{Child, Command};
use tokio::runtime::Handle;

/// What the spawning thread gets: the command, the runtime whose process driver reaps the
/// child, and where to send the child.
type Request = (Command, Handle, mpsc::SyncSender<io::Result<Child>>);

static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();

/// Starts `command` (a buildah command) from the spawning thread, with SIGKILL as its
/// parent-death signal. Call within a tokio runtime. Blocks for the fork and exec, as
/// `Command::spawn` does.
pub(crate) fn spawn(mut command: Command) -> io::Result<Child> {
    let agent = std::process::id();
    // SAFETY: prctl and getppid are async-signal-safe and touch no memory of the parent.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(io::Error::from)?;
            // An agent that died between the fork and the prctl sends no signal any more:
            // then buildah must not start.
            if nix::unistd::getppid().as_raw() as u32 != agent {
                return Err(io::Error::other("the agent is gone"));
            }
            Ok(())
        });
    }
    let runtime = Handle::try_current().map_err(io::Error::other)?;
    let (reply, child) = mpsc::sync_channel(1);
    spawner()?
        .send((command, runtime, reply))
        .map_err(|_| io::Error::other("the thread that starts buildah is gone"))?;
    child
        .recv()
        .map_err(|_| io::Error::other("the thread that starts buildah is gone"))?
}

fn spawner() -> io::Result<&'static mpsc::Sender<Request>> {
    if let Some(sender) = SPAWNER.get() {
        return Ok(sender);
    }
    let (sender, requests) = mpsc::channel::<Request>();
    std::thread::Builder::new()
        .name("raibid-buildah-spawner".into())
        .spawn(move || serve(requests))?;
    // Two callers may race here: the loser's thread ends at once (its channel is dropped),
    // having started nothing.
    Ok(SPAWNER.get_or_init(|| sender))
}

/// The spawning thread: never ends while the process lives (the static sender is never
/// dropped), and a panic while spawning (a runtime without its process driver) is answered
/// as an error rather than ending it, which would kill every buildah it started.
fn serve(requests: mpsc::Receiver<Request>) {
    for (mut command, runtime, reply) in requests {
        let spawned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _entered = runtime.enter();
            command.spawn()
        }))
        .unwrap_or_else(|_| Err(io::Error::other("starting buildah panicked")));
        // The command holds the parent's copies of the child's pipes: closed before the
        // caller reads them.
        drop(command);
        let _ = reply.send(spawned);
    }
}
