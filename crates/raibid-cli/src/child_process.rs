//! How `raibid up` starts and stops the processes it owns (redis-server, docker-registry, the
//! local pool's agents): each in a process group of its own, so that the terminal's Ctrl-C
//! reaches `raibid up` alone and it stops them in order; killed if `raibid up` drops it or
//! dies, even by SIGKILL; stopped with SIGTERM and a grace period.

use std::time::Duration;

use tokio::process::{Child, Command};

/// A group of its own, killed with the `Child` handle and with `raibid up` itself.
pub fn owned(cmd: &mut Command) {
    cmd.process_group(0).kill_on_drop(true);
    die_with_parent(cmd);
}

/// As [`owned`], and what it creates is its owner's alone (umask 077): a server's data files.
pub fn owned_private(cmd: &mut Command) {
    owned(cmd);
    // SAFETY: umask is async-signal-safe and touches no allocator or locks.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
            Ok(())
        });
    }
}

/// Makes the kernel kill the child if we die without cleaning up (SIGKILL, panic=abort).
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; the closure touches no allocator or locks.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}

/// SIGTERM, then SIGKILL if it has not exited after `grace`.
pub async fn terminate(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}
