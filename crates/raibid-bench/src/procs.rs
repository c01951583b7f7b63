//! The processes a benchmark runs: `raibid` itself (as a separate process, so the load
//! generator never shares its runtime), redis-server and git, plus reading their memory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use raibid_testkit::RedisServer;
use tokio::process::{Child, Command};

use crate::BenchError;

/// The `raibid` executable benchmarks start: ourselves when running as `raibid bench ...`,
/// else the `raibid` next to (or above) this executable, as cargo lays out
/// `target/release/examples/<example>` and `target/release/raibid`, else `raibid` on PATH.
pub fn default_raibid_exe() -> PathBuf {
    let Ok(exe) = std::env::current_exe() else {
        return PathBuf::from("raibid");
    };
    if exe.file_name().is_some_and(|n| n == "raibid") {
        return exe;
    }
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("raibid"))
        .find(|p| p.is_file())
        .or_else(|| which("raibid"))
        .unwrap_or_else(|| PathBuf::from("raibid"))
}

pub(crate) fn check_raibid(exe: &Path) -> Result<(), BenchError> {
    if exe.is_file() {
        Ok(())
    } else {
        Err(BenchError::MissingRaibid(exe.to_path_buf()))
    }
}

pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

pub(crate) fn require_tool(tool: &'static str, package: &'static str) -> Result<(), BenchError> {
    match which(tool) {
        Some(_) => Ok(()),
        None => Err(BenchError::MissingTool { tool, package }),
    }
}

/// A private redis-server without persistence, like `raibid bench queue` uses: the figures
/// are about raibid, not the disk.
pub(crate) async fn start_redis() -> Result<RedisServer, BenchError> {
    require_tool("redis-server", "redis-server")?;
    tokio::task::spawn_blocking(RedisServer::start)
        .await
        .map_err(|e| BenchError::Process {
            what: "starting redis-server".into(),
            message: e.to_string(),
        })
}

/// Resident and peak memory of a process, from /proc/<pid>/status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub(crate) fn memory(pid: u32) -> Result<Memory, BenchError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(BenchError::io(format!("reading /proc/{pid}/status")))?;
    parse_status(&status).ok_or_else(|| BenchError::Process {
        what: format!("/proc/{pid}/status"),
        message: "no VmRSS/VmHWM lines".into(),
    })
}

fn parse_status(status: &str) -> Option<Memory> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// CPU time used by a process itself and by its children it has waited for, from
/// /proc/<pid>/stat. Unlike wall-clock rates, CPU per operation hardly changes when other work
/// shares the machine, so it says what each component costs even on a busy host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CpuTimes {
    pub own: Duration,
    pub children: Duration,
}

impl CpuTimes {
    pub fn since(self, earlier: Self) -> Self {
        Self {
            own: self.own.saturating_sub(earlier.own),
            children: self.children.saturating_sub(earlier.children),
        }
    }
}

pub(crate) fn cpu_times(pid: u32) -> Result<CpuTimes, BenchError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(BenchError::io(format!("reading /proc/{pid}/stat")))?;
    parse_stat(&stat).ok_or_else(|| BenchError::Process {
        what: format!("/proc/{pid}/stat"),
        message: "unexpected format".into(),
    })
}

/// Fields 14-17 (utime, stime, cutime, cstime), counted after the parenthesized command name
/// (which may contain spaces), in USER_HZ: 100 per second on Linux whatever the kernel's HZ.
fn parse_stat(stat: &str) -> Option<CpuTimes> {
    let fields: Vec<u64> = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let ticks = |t: u64| Duration::from_millis(t * 10);
    match fields[..] {
        [utime, stime, cutime, cstime] => Some(CpuTimes {
            own: ticks(utime + stime),
            children: ticks(cutime + cstime),
        }),
        _ => None,
    }
}

/// A child process whose output goes to a log file, killed with us.
pub(crate) struct Proc {
    child: Child,
    what: String,
    log: PathBuf,
}

impl Proc {
    /// Starts `program args` with a clean environment (PATH, HOME, TMPDIR and `env`): a
    /// developer's `RAIBID_*` variables must not change what is measured.
    pub fn spawn(
        what: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Result<Self, BenchError> {
        let file = std::fs::File::create(log)
            .map_err(BenchError::io(format!("creating {}", log.display())))?;
        let err = file
            .try_clone()
            .map_err(BenchError::io("duplicating a log file handle"))?;
        let mut cmd = Command::new(program);
        cmd.args(args).env_clear();
        for var in ["PATH", "HOME", "TMPDIR"] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        cmd.envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe and the closure allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().map_err(BenchError::io(format!(
            "starting {what} ({})",
            program.display()
        )))?;
        Ok(Self {
            child,
            what: what.to_owned(),
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> Result<u32, BenchError> {
        self.child.id().ok_or_else(|| self.died("has exited"))
    }

    pub fn memory(&self) -> Result<Memory, BenchError> {
        memory(self.pid()?)
    }

    pub fn cpu(&self) -> Result<CpuTimes, BenchError> {
        cpu_times(self.pid()?)
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// An error naming the process, with the end of its log: the likely explanation.
    pub fn died(&self, message: &str) -> BenchError {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        BenchError::Process {
            what: self.what.clone(),
            message: format!(
                "{message}; last lines of {}:\n{}",
                self.log.display(),
                tail.join("\n")
            ),
        }
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> Result<(), BenchError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.died(&format!("exited ({status})"))),
            Err(e) => Err(BenchError::io(format!("waiting for {}", self.what))(e)),
        }
    }

    /// Waits until `url` answers 2xx (the server's `/readyz`: listening and Redis reachable).
    pub async fn wait_http_ok(
        &mut self,
        http: &reqwest::Client,
        url: &str,
        timeout: Duration,
    ) -> Result<(), BenchError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.check_alive()?;
            let ok = http
                .get(url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(self.died(&format!("{url} did not answer within {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM (a clean shutdown: `raibid up` stops its agents and Redis), SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

/// Runs git with a clean environment (no system or user config) and returns stdout.
pub(crate) async fn git(
    dir: Option<&Path>,
    args: &[&str],
    home: &Path,
) -> Result<String, BenchError> {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    let output = cmd
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", home)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(BenchError::io("running git"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(BenchError::Git {
            args: args.join(" "),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_and_peak_from_proc_status() {
        let status =
            "Name:\traibid\nVmPeak:\t  900000 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   12288 kB\n";
        assert_eq!(
            parse_status(status),
            Some(Memory {
                rss_kib: 12288,
                hwm_kib: 20480
            })
        );
        assert_eq!(parse_status("Name:\tx\n"), None);
    }

    #[test]
    fn reads_cpu_times_after_the_command_name() {
        let stat = "4242 (tokio rt) worker) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 7 3 20 0 4 0 100 1000 200";
        assert_eq!(
            parse_stat(stat),
            Some(CpuTimes {
                own: Duration::from_millis(3000),
                children: Duration::from_millis(100),
            })
        );
        assert_eq!(parse_stat("4242 (x) S 1"), None);
    }

    #[test]
    fn our_own_memory_is_readable() {
        let m = memory(std::process::id()).unwrap();
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib);
    }
}
