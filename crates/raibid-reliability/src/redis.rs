//! A private redis-server whose durability the test chooses.
//!
//! raibid-testkit's server fsyncs every write (`appendfsync always`) so that ordinary tests are
//! deterministic; the crash test needs what production runs, `appendfsync everysec`, to show
//! what that setting really costs. Restarts reuse the port and the data directory, so the
//! clients see the same Redis come back with whatever its append-only file kept.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use raibid_testkit::{free_port, require_binary};

use crate::procs;

/// What redis-server keeps on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Nothing: a restart starts empty.
    Memory,
    /// Append-only file, fsynced once a second: what `raibid up` and the Helm values run.
    AofEverySec,
}

pub struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    durability: Durability,
    password: Option<String>,
    binary: PathBuf,
}

impl Redis {
    pub fn start(durability: Durability) -> Self {
        Self::start_with(durability, None)
    }

    /// With `requirepass`, for checking that the password never reaches a log.
    pub fn start_with(durability: Durability, password: Option<&str>) -> Self {
        let binary = require_binary("redis-server", "redis-server");
        let dir = tempfile::Builder::new()
            .prefix("raibid-rel-redis-")
            .tempdir()
            .expect("a temporary directory for redis");
        let mut redis = Self {
            child: None,
            port: 0,
            dir,
            durability,
            password: password.map(str::to_owned),
            binary,
        };
        for _ in 0..5 {
            redis.port = free_port();
            if redis.spawn().is_ok() {
                return redis;
            }
        }
        panic!("redis-server did not start: {}", redis.log_tail());
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// SIGKILL: redis gets no chance to write anything more.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and data directory, waiting until the data is loaded.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.spawn().is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not come back on port {}: {}",
                self.port,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGSTOP: the port stays open and accepts connections, but nothing answers.
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            procs::signal(pid, signal);
        }
    }

    /// A synchronous connection for inspecting what raibid-ci wrote.
    pub fn connection(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("a valid redis URL");
        let conn = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect to redis");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set a read timeout");
        conn
    }

    /// `XLEN key`.
    pub fn xlen(&self, key: &str) -> u64 {
        redis::cmd("XLEN")
            .arg(key)
            .query(&mut self.connection())
            .expect("XLEN")
    }

    /// Resident memory of the redis-server process.
    pub fn rss_kib(&self) -> Option<u64> {
        self.pid().and_then(procs::rss_kib)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut command = Command::new(&self.binary);
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"));
        match self.durability {
            Durability::Memory => command.args(["--appendonly", "no"]),
            Durability::AofEverySec => {
                command.args(["--appendonly", "yes", "--appendfsync", "everysec"])
            }
        };
        if let Some(p) = &self.password {
            command.arg("--requirepass").arg(p);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!("exited with {status}"));
            }
            if self.answers() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err("no answer to PING".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// PING answered (not `-LOADING`): the append-only file has been replayed.
    fn answers(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
            return false;
        };
        redis::cmd("PING").query::<String>(&mut conn).is_ok()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // SIGKILL also ends a SIGSTOPped process.
        self.kill();
    }
}
