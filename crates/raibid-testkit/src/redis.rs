use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{free_port, require_binary};

/// How to run the test's redis-server.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// Append-only file with `appendfsync always`, so a restart after SIGKILL keeps everything
    /// the test wrote (tests must be deterministic; production uses `everysec`).
    pub aof: bool,
    /// `requirepass`, for testing authenticated URLs.
    pub password: Option<String>,
    /// TLS only (`--port 0 --tls-port`), with a self-signed certificate made by `openssl`;
    /// [`RedisServer::url`] is then `rediss://...#insecure`.
    pub tls: bool,
}

/// A private redis-server on a free loopback port, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    options: RedisOptions,
    binary: PathBuf,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(RedisOptions::default())
    }

    pub fn start_with(options: RedisOptions) -> Self {
        let binary = require_binary("redis-server", "redis-server");
        let dir = tempfile::Builder::new()
            .prefix("raibid-test-redis-")
            .tempdir()
            .expect("temp dir for redis");
        let mut server = Self {
            child: None,
            port: 0,
            dir,
            options,
            binary,
        };
        let mut last_error = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match spawn(
                &server.binary,
                server.port,
                server.dir.path(),
                &server.options,
            ) {
                Ok(child) => {
                    server.child = Some(child);
                    match server.wait_ready(Duration::from_secs(10)) {
                        Ok(()) => return server,
                        Err(e) => {
                            last_error = e;
                            server.kill();
                        }
                    }
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        if self.options.tls {
            return format!("rediss://127.0.0.1:{}/#insecure", self.port);
        }
        match &self.options.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILL: no chance to flush anything the AOF has not already written.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the port stays open but nothing answers, like a stalled network.
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            kill(Pid::from_raw(pid as i32), signal).expect("signal redis-server");
        }
    }

    /// Starts again on the same port and data directory (after [`Self::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match spawn(&self.binary, self.port, self.dir.path(), &self.options) {
                Ok(child) => {
                    self.child = Some(child);
                    if self.wait_ready(Duration::from_secs(10)).is_ok() {
                        return;
                    }
                    self.kill();
                }
                Err(e) if Instant::now() > deadline => panic!("restart redis-server: {e}"),
                Err(_) => {}
            }
            if Instant::now() > deadline {
                panic!("redis-server did not come back on port {}", self.port);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Makes Redis refuse every write with `MISCONF`, as it does once it cannot save its data
    /// (a full disk): with a `save` point configured, a background save is killed midway,
    /// which Redis counts as a failed save. Reads go on. [`Self::accept_writes`] ends it as
    /// recovery does, with a save that succeeds.
    pub fn refuse_writes(&self) {
        let pid = self.pid().expect("redis-server runs");
        for line in [
            "CONFIG SET save \"3600 1\"",
            // A second a key: the save is still under way when it is killed.
            "CONFIG SET rdb-key-save-delay 1000000",
            "SET raibid-testkit:saved 1",
        ] {
            self.expect_reply(line, "+OK");
        }
        self.expect_reply("BGSAVE", "+Background saving started");
        let children = format!("/proc/{pid}/task/{pid}/children");
        let saver = Self::wait_for("the background save's process", || {
            std::fs::read_to_string(&children)
                .ok()?
                .split_whitespace()
                .next()?
                .parse::<i32>()
                .ok()
        });
        kill(Pid::from_raw(saver), Signal::SIGKILL).expect("kill the background save");
        Self::wait_for("writes refused (MISCONF)", || {
            self.command("SET raibid-testkit:probe 1")
                .ok()
                .filter(|r| r.starts_with("-MISCONF"))
        });
    }

    /// Ends [`Self::refuse_writes`]: a background save succeeds, and the `save` point the test
    /// server runs without is taken away again.
    pub fn accept_writes(&self) {
        self.expect_reply("CONFIG SET rdb-key-save-delay 0", "+OK");
        self.expect_reply("BGSAVE", "+Background saving started");
        Self::wait_for("writes taken again", || {
            self.command("SET raibid-testkit:probe 1")
                .ok()
                .filter(|r| r == "+OK")
        });
        self.expect_reply("CONFIG SET save \"\"", "+OK");
        self.expect_reply("DEL raibid-testkit:saved raibid-testkit:probe", ":2");
    }

    fn expect_reply(&self, line: &str, reply: &str) {
        let got = self.command(line).expect("redis-server answers");
        assert_eq!(got, reply, "{line}");
    }

    /// `f`'s first `Some`, tried every 20 ms for at most 10 s.
    fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(found) = f() {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server: no {what} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends one inline command and returns the first reply line; enough for test set-up.
    pub fn command(&self, line: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        if let Some(p) = &self.options.password {
            writeln!(stream, "AUTH {p}\r")?;
            let mut reader = BufReader::new(stream.try_clone()?);
            let mut reply = String::new();
            reader.read_line(&mut reply)?;
        }
        write!(stream, "{line}\r\n")?;
        let mut reader = BufReader::new(stream);
        let mut reply = String::new();
        reader.read_line(&mut reply)?;
        Ok(reply.trim_end().to_owned())
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        if self.options.tls {
            return self.wait_ready_tls(deadline);
        }
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("redis-server exited early: {status}"));
            }
            if let Ok(reply) = self.command("PING")
                && (reply == "+PONG" || reply.starts_with("-NOAUTH"))
            {
                return Ok(());
            }
            if reply_is_loading(self) {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            if Instant::now() > deadline {
                return Err("redis-server did not answer PING".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl RedisServer {
    /// The plain-text PING helper cannot speak TLS; redis-cli can.
    fn wait_ready_tls(&mut self, deadline: Instant) -> Result<(), String> {
        let cli = require_binary("redis-cli", "redis-tools");
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("redis-server exited early: {status}"));
            }
            let out = Command::new(&cli)
                .args(["--tls", "--insecure", "-h", "127.0.0.1", "-p"])
                .arg(self.port.to_string())
                .arg("PING")
                .output();
            if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("redis-server (TLS) did not answer PING".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn reply_is_loading(server: &RedisServer) -> bool {
    server
        .command("PING")
        .map(|r| r.starts_with("-LOADING"))
        .unwrap_or(false)
}

fn spawn(binary: &Path, port: u16, dir: &Path, options: &RedisOptions) -> std::io::Result<Child> {
    let mut cmd = Command::new(binary);
    if options.tls {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        if !cert.exists() {
            let openssl = require_binary("openssl", "openssl");
            let status = Command::new(openssl)
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                ])
                .args(["-subj", "/CN=127.0.0.1", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            if !status.success() {
                return Err(std::io::Error::other(
                    "openssl could not make a certificate",
                ));
            }
        }
        cmd.args(["--port", "0", "--tls-auth-clients", "no", "--tls-port"])
            .arg(port.to_string())
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key);
    } else {
        cmd.arg("--port").arg(port.to_string());
    }
    cmd.arg("--bind")
        .arg("127.0.0.1")
        .arg("--dir")
        .arg(dir)
        .arg("--save")
        .arg("")
        .arg("--daemonize")
        .arg("no")
        .arg("--logfile")
        .arg(dir.join("redis.log"));
    if options.aof {
        cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
    } else {
        cmd.args(["--appendonly", "no"]);
    }
    if let Some(p) = &options.password {
        cmd.arg("--requirepass").arg(p);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
