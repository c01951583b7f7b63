//! How much memory this process may use: the machine's, or less under a cgroup limit.
//!
//! `raibid up` sizes its Redis as a share of it (`up.redis_maxmemory: 10%`), an agent its step
//! containers (`agent.step_limits.memory: 25%`). In a container or
//! a systemd unit with `MemoryMax=`, the machine's total would overstate what is there: Redis
//! would be sized past the point where the kernel's OOM killer ends it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use raibid_config::MemoryLimit;

/// A configured limit in bytes (`None`: no limit); a share (`10%`) is of [`available`]. `key`
/// names the setting in the error.
pub fn limit_bytes(limit: MemoryLimit, key: &str) -> anyhow::Result<Option<u64>> {
    if let MemoryLimit::PercentOfMachine(_) = limit {
        let machine = available().with_context(|| {
            format!(
                "{key} is {limit}, but /proc/meminfo gives no MemTotal to take it of: write a \
                 size (\"2gb\") or \"none\""
            )
        })?;
        return Ok(limit.bytes(machine));
    }
    Ok(limit.bytes(0))
}

/// The smaller of the machine's memory and the memory limits of this process's cgroup and its
/// ancestors (cgroup v2, else v1); `None` if /proc/meminfo cannot be read.
pub fn available() -> Option<u64> {
    let total = mem_total(&std::fs::read_to_string("/proc/meminfo").ok()?)?;
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let limit = cgroup_limits(&own, Path::new("/sys/fs/cgroup"))
        .into_iter()
        .min();
    Some(limit.map_or(total, |l| l.min(total)))
}

/// `MemTotal` from /proc/meminfo, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// Every memory limit set on the cgroup named in `own` (the text of /proc/self/cgroup) and its
/// ancestors under `root`: a parent's limit binds its children too.
fn cgroup_limits(own: &str, root: &Path) -> Vec<u64> {
    let mut limits = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (base, file) = if controllers.is_empty() {
            (root.to_path_buf(), "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (root.join("memory"), "memory.limit_in_bytes")
        } else {
            continue;
        };
        for dir in ancestors(&base, path) {
            if let Some(limit) = std::fs::read_to_string(dir.join(file))
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
            {
                // cgroup v1 writes "no limit" as a page-rounded i64::MAX.
                if limit < 1 << 60 {
                    limits.push(limit);
                }
            }
        }
    }
    limits
}

/// `base/a/b/c`, `base/a/b`, `base/a` for the cgroup path `/a/b/c`; nothing that leaves `base`.
fn ancestors(base: &Path, cgroup: &str) -> Vec<PathBuf> {
    let parts: Vec<&str> = cgroup
        .split('/')
        .filter(|p| !p.is_empty() && *p != "." && *p != "..")
        .collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].iter().fold(base.to_path_buf(), |d, p| d.join(p)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_from_meminfo() {
        let text = "MemTotal:       24576000 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total(text), Some(24_576_000 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn the_tightest_limit_of_the_cgroup_and_its_parents_binds() {
        let root = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let path = root.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        // v2: the unit says "max", its slice a limit.
        write("system.slice/memory.max", "8589934592\n");
        write("system.slice/ci.service/memory.max", "max\n");
        let limits = cgroup_limits("0::/system.slice/ci.service\n", root.path());
        assert_eq!(limits, [8_589_934_592]);
        // v1: unlimited is a huge number; a limit on the container binds.
        write("memory/docker/abc/memory.limit_in_bytes", "2147483648\n");
        write(
            "memory/docker/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        let limits = cgroup_limits(
            "12:memory:/docker/abc\n5:cpu,cpuacct:/docker/abc\n",
            root.path(),
        );
        assert_eq!(limits, [2_147_483_648]);
        // No file to read (outside any limit, or an unmounted hierarchy): no limit.
        assert!(cgroup_limits("0::/user.slice\n", root.path()).is_empty());
        assert!(cgroup_limits("0::/../../etc\n", root.path()).is_empty());
    }

    #[test]
    fn this_machine_has_memory() {
        let bytes = available().expect("/proc/meminfo");
        assert!(bytes > 64 << 20, "{bytes}");
    }
}
