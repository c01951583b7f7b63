//! A private redis-server child process, for `raibid up` and the benchmarks.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use raibid_queue::{Queue, QueueOptions};
use tokio::process::{Child, Command};

pub struct LocalRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// AOF with `appendfsync everysec`: at most a second of writes lost on a crash.
    Aof,
    /// Nothing on disk: benchmarks measure the queue, not the disk.
    Memory,
}

impl LocalRedis {
    /// Starts `redis-server` from PATH on a free loopback port (or `port`), data in `dir`.
    pub async fn start(
        dir: &Path,
        port: Option<u16>,
        durability: Durability,
    ) -> anyhow::Result<Self> {
        let binary = which("redis-server").context(
            "redis-server is not installed: run `sudo apt-get install -y redis-server` \
             (or set redis.url / --redis-url to use an existing Redis 7+)",
        )?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let port = match port {
            Some(p) => p,
            None => free_port()?,
        };
        let mut cmd = Command::new(binary);
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(dir)
            .arg("--daemonize")
            .arg("no")
            .arg("--save")
            .arg("")
            .arg("--logfile")
            .arg(dir.join("redis.log"));
        match durability {
            Durability::Aof => cmd.args(["--appendonly", "yes", "--appendfsync", "everysec"]),
            Durability::Memory => cmd.args(["--appendonly", "no"]),
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().context("starting redis-server")?;
        let mut redis = Self {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        redis.wait_ready().await?;
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let mut options = QueueOptions::new(self.url());
        options.command_timeout = Duration::from_millis(500);
        let queue = Queue::open(options)?;
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!(
                    "redis-server exited ({status}) on port {}: {}",
                    self.port,
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                );
            }
            if queue.ping().await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "redis-server did not answer on port {} within 15 s",
            self.port
        )
    }

    /// SIGTERM (redis flushes its AOF and exits), then SIGKILL after 10 s.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

/// Makes the kernel kill the child if we die without cleaning up (SIGKILL, panic=abort).
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; the closure touches no allocator or locks.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}

pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
