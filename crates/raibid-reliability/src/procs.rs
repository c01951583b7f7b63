//! Looking at and signalling processes through `/proc`, the way an operator would check that
//! nothing was left behind.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A process and its command line (arguments joined by spaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: i32,
    pub cmdline: String,
}

/// Every live (non-zombie) process whose command line contains `needle`, except this one.
pub fn mentioning(needle: &str) -> Vec<Process> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let cmdline = cmdline(pid)?;
            (cmdline.contains(needle) && is_alive(pid)).then_some(Process { pid, cmdline })
        })
        .collect()
}

/// The parent of `pid`.
pub fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name (field 2) may hold spaces and parentheses; the fields after its last `)` do not.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The command line of `pid`, arguments joined by spaces.
pub fn cmdline(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).replace('\0', " "))
}

/// Whether agent `pid` is running a step: it has a `bwrap` child whose command line names a
/// job workspace (the `bwrap` outside one is the sandbox probe every agent runs at start).
pub fn in_step(pid: i32) -> bool {
    children(pid).into_iter().any(|kid| {
        comm(kid).as_deref() == Some("bwrap")
            && cmdline(kid).is_some_and(|c| c.contains("/workspaces/"))
    })
}

/// Direct children of `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// The executable name the kernel shows for `pid` (`/proc/<pid>/comm`).
pub fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_owned())
}

/// Whether `pid` exists and is not a zombie waiting to be reaped.
pub fn is_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the parenthesised name, which may itself hold spaces.
            let after = stat.rsplit_once(')')?.1;
            after
                .split_whitespace()
                .next()
                .map(|s| s != "Z" && s != "X")
        })
        .unwrap_or(false)
}

/// Resident set size in KiB.
pub fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Sends `signal`; a process that is already gone is not an error.
pub fn signal(pid: i32, signal: Signal) {
    let _ = kill(Pid::from_raw(pid), signal);
}
