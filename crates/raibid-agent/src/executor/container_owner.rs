//! Which agent process started a step container, written into the container's name, so that
//! any agent on the machine can tell the containers of dead agents from those of live ones.
//!
//! The engine, not the agent, runs a container: an agent killed by SIGKILL or the OOM killer
//! leaves its step running, with no time limit, in a workspace slot that its lock no longer
//! protects. A process is named by its pid and its start time (pids are reused); both mean
//! something only within one boot and one pid namespace, so the name also carries a digest of
//! those (the scope), and an agent judges only containers of its own scope. Agents elsewhere
//! sharing the engine (a remote `DOCKER_HOST`, an agent in a container of its own) keep theirs.

use std::io;

use sha2::{Digest, Sha256};

/// The start of every step container's name.
pub(crate) const PREFIX: &str = "raibid-";

/// An agent process, as its containers' names record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    /// Digest of the boot id and the pid namespace.
    scope: String,
    pid: u32,
    /// Clock ticks since boot at which the process started (`/proc/<pid>/stat`, field 22).
    start: u64,
}

impl Owner {
    /// This process.
    pub(crate) fn current() -> io::Result<Self> {
        let pid = std::process::id();
        let start = start_time(pid)?
            .ok_or_else(|| io::Error::other("cannot read this process's start time"))?;
        Ok(Self {
            scope: scope()?,
            pid,
            start,
        })
    }

    /// A container name for a step of this process: `raibid-<scope>-<pid>-<start>-<random>`.
    pub(crate) fn container_name(&self, random: &str) -> String {
        format!(
            "{PREFIX}{}-{}-{}-{random}",
            self.scope, self.pid, self.start
        )
    }

    /// The owner a container name records; `None` for names of any other shape.
    pub(crate) fn of_container(name: &str) -> Option<Self> {
        let mut parts = name.strip_prefix(PREFIX)?.split('-');
        let scope = parts.next()?;
        let pid = parts.next()?.parse().ok()?;
        let start = parts.next()?.parse().ok()?;
        let random = parts.next()?;
        let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
        if parts.next().is_some() || scope.len() != SCOPE_LEN || !hex(scope) || !hex(random) {
            return None;
        }
        Some(Self {
            scope: scope.to_owned(),
            pid,
            start,
        })
    }

    /// Whether `self`, an owner of the same scope as `judge`, has exited. Owners of another
    /// scope are never called dead: nothing here can tell.
    pub(crate) fn is_dead(&self, judge: &Owner) -> bool {
        if self.scope != judge.scope {
            return false;
        }
        // A process that cannot be read (permissions) counts as alive.
        match start_time(self.pid) {
            Ok(Some(start)) => start != self.start,
            Ok(None) => true,
            Err(_) => false,
        }
    }
}

const SCOPE_LEN: usize = 16;

fn scope() -> io::Result<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?;
    let pid_ns = std::fs::read_link("/proc/self/ns/pid")?;
    let digest = Sha256::new()
        .chain_update(boot.trim().as_bytes())
        .chain_update(b"\0")
        .chain_update(pid_ns.as_os_str().as_encoded_bytes())
        .finalize();
    Ok(hex::encode(&digest[..SCOPE_LEN / 2]))
}

/// The start time of `pid`, or `None` when no such process exists (or it is a zombie: it has
/// exited, and only its parent has yet to collect it).
fn start_time(pid: u32) -> io::Result<Option<u64>> {
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // The command name (field 2) is in parentheses and may hold anything, spaces included.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("unreadable /proc stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (the state).
    if fields.first() == Some(&"Z") {
        return Ok(None);
    }
    fields
        .get(22 - 3)
        .and_then(|f| f.parse().ok())
        .map(Some)
        .ok_or_else(|| io::Error::other("unreadable /proc stat"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_owner_and_nothing_else_parses() {
        let me = Owner::current().unwrap();
        let name = me.container_name("0123456789abcdef");
        assert_eq!(Owner::of_container(&name), Some(me.clone()));
        for other in [
            "raibid-0123456789abcdef",
            "raibid-x",
            "postgres",
            &format!("{name}-extra"),
            &name.replace(PREFIX, "other-"),
            &name.replace(&me.scope, "0123"),
        ] {
            assert_eq!(Owner::of_container(other), None, "{other}");
        }
    }

    #[test]
    fn only_an_exited_owner_of_the_same_scope_is_dead() {
        let me = Owner::current().unwrap();
        assert!(!me.is_dead(&me));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = start_time(pid).unwrap().unwrap_or(0);
        child.wait().unwrap();
        let gone = Owner {
            pid,
            start,
            ..me.clone()
        };
        assert!(gone.is_dead(&me));
        // Our pid, started at another time: a reused pid.
        let reused = Owner {
            start: me.start + 1,
            ..me.clone()
        };
        assert!(reused.is_dead(&me));
        let elsewhere = Owner {
            scope: "ffffffffffffffff".into(),
            ..gone
        };
        assert!(!elsewhere.is_dead(&me));
    }
}
