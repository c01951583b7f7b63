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
    password: Option<String>,
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
    ///
    /// With a `password`, clients must AUTH: loopback is open to every user of the machine,
    /// and whoever can write to the queue runs code as the agents' user. The password goes to
    /// redis-server in a 0600 configuration file in `dir`, never on its command line, which
    /// every user can read in `/proc`. `dir` is made private (0700) and redis-server runs with
    /// umask 077, so its AOF and log are the owner's alone.
    pub async fn start(
        dir: &Path,
        port: Option<u16>,
        durability: Durability,
        password: Option<&str>,
    ) -> anyhow::Result<Self> {
        let binary = which("redis-server").context(
            "redis-server is not installed: run `sudo apt-get install -y redis-server` \
             (or set redis.url / --redis-url to use an existing Redis 7+)",
        )?;
        crate::private_files::ensure_dir(dir)?;
        // Files from before redis-server ran with umask 077.
        crate::private_files::restrict_tree(dir)?;
        let port = match port {
            Some(p) => p,
            None => free_port()?,
        };
        let mut cmd = Command::new(binary);
        if let Some(password) = password {
            let conf = dir.join("redis.conf");
            crate::private_files::write(
                &conf,
                &format!("requirepass {}\n", config_quote(password)),
            )?;
            // The file must come first: redis-server reads options after it as overrides.
            cmd.arg(&conf);
        }
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
        // SAFETY: umask is async-signal-safe and touches no allocator or locks.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
                Ok(())
            });
        }
        let child = cmd.spawn().context("starting redis-server")?;
        let mut redis = Self {
            child,
            port,
            dir: dir.to_path_buf(),
            password: password.map(str::to_owned),
        };
        redis.wait_ready().await?;
        Ok(redis)
    }

    /// The URL clients connect with, password included: a secret, not for printing.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
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

/// A value as a double-quoted redis.conf argument.
fn config_quote(value: &str) -> String {
    let mut quoted = String::from("\"");
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
