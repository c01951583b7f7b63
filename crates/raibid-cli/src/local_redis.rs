//! A private redis-server child process, for `raibid up` and the benchmarks.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tracing::info;

/// redis-server's log, in its directory.
pub const LOG_FILE: &str = "redis.log";

/// How long a starting redis-server may stay silent before we give up on it. Time it spends
/// answering `-LOADING` does not count: see [`next_step`].
const SILENCE_TIMEOUT: Duration = Duration::from_secs(15);

/// How often the progress of a long load is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

pub struct LocalRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
    password: Option<String>,
    maxmemory: Option<u64>,
    durability: Durability,
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
    ///
    /// With `maxmemory` (bytes), Redis refuses writes past it rather than evicting: an evicted
    /// key is a job record or a queue entry gone without a trace, while a refused write is an
    /// error the server answers 503 for; the reaper keeps it below by deleting old logs
    /// (`redis.prune_memory_percent`).
    pub async fn start(
        dir: &Path,
        port: Option<u16>,
        durability: Durability,
        password: Option<&str>,
        maxmemory: Option<u64>,
    ) -> anyhow::Result<Self> {
        let limit = maxmemory.map(|bytes| format!("maxmemory {bytes}"));
        let lines: Vec<&str> = match &limit {
            Some(limit) => vec![limit, "maxmemory-policy noeviction"],
            None => Vec::new(),
        };
        let mut redis =
            Self::start_with(dir, port, durability, password, SILENCE_TIMEOUT, &lines).await?;
        redis.maxmemory = maxmemory;
        Ok(redis)
    }

    /// Started again as it was, on the same port, from its data (its AOF): after it died.
    pub async fn start_again(&self) -> anyhow::Result<Self> {
        Self::start(
            &self.dir,
            Some(self.port),
            self.durability,
            self.password.as_deref(),
            self.maxmemory,
        )
        .await
    }

    /// Started without its AOF, from the RDB file `rdb` in `dir` (a backup), to write a new
    /// AOF from with [`LocalRedis::switch_to_aof`]; on a free loopback port.
    pub async fn start_from_rdb(dir: &Path, rdb: &str, password: &str) -> anyhow::Result<Self> {
        let dbfilename = format!("dbfilename {}", config_quote(rdb));
        Self::start_with(
            dir,
            None,
            Durability::Memory,
            Some(password),
            SILENCE_TIMEOUT,
            &[&dbfilename],
        )
        .await
    }

    /// Turns its AOF on (`CONFIG SET appendonly yes`, which writes the AOF from what it holds)
    /// and waits until that AOF is written: what `raibid up` then starts from.
    pub async fn switch_to_aof(&mut self) -> anyhow::Result<()> {
        let reply = self
            .command(&["CONFIG", "SET", "appendonly", "yes"])
            .await?;
        anyhow::ensure!(reply == "OK", "CONFIG SET appendonly yes answered {reply}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        loop {
            let info = self.command(&["INFO", "persistence"]).await?;
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                    .map(str::trim)
                    .unwrap_or_default()
                    .to_owned()
            };
            if field("aof_enabled") == "1"
                && field("aof_rewrite_in_progress") == "0"
                && field("aof_rewrite_scheduled") == "0"
            {
                let status = field("aof_last_bgrewrite_status");
                anyhow::ensure!(
                    status == "ok",
                    "writing the AOF failed ({status}): see {}",
                    self.dir.join(LOG_FILE).display()
                );
                self.durability = Durability::Aof;
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the AOF was not written within 10 minutes: see {}",
                self.dir.join(LOG_FILE).display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One command (after AUTH), its reply as text: a status, an error, or a bulk string.
    async fn command(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut conn = send_authed(self.port, self.password.as_deref(), args)
            .await?
            .map_err(anyhow::Error::msg)?;
        let header = read_line(&mut conn).await?;
        if let Some(len) = header
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
        {
            let mut body = vec![0; len + 2];
            conn.read_exact(&mut body).await?;
            body.truncate(len);
            return Ok(String::from_utf8_lossy(&body).into_owned());
        }
        match header.strip_prefix('+') {
            Some(status) => Ok(status.to_owned()),
            None => anyhow::bail!("{} answered {header}", args.join(" ")),
        }
    }

    /// How it ended, once it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The `maxmemory` it was started with, in bytes.
    pub fn maxmemory(&self) -> Option<u64> {
        self.maxmemory
    }

    /// [`LocalRedis::start`] with a chosen silence timeout and extra `redis.conf` lines (tests
    /// use Redis's own `key-load-delay` to make loading slow without gigabytes of data).
    async fn start_with(
        dir: &Path,
        port: Option<u16>,
        durability: Durability,
        password: Option<&str>,
        silence_timeout: Duration,
        extra_config: &[&str],
    ) -> anyhow::Result<Self> {
        let candidates = match port {
            Some(port) => vec![port],
            None => (0..PORT_TRIES)
                .map(|_| free_port())
                .collect::<anyhow::Result<Vec<u16>>>()?,
        };
        Self::start_on_first_free(
            dir,
            &candidates,
            durability,
            password,
            silence_timeout,
            extra_config,
        )
        .await
    }

    /// Started on the first of `candidates` that is still free when redis-server binds it. A
    /// port the kernel chose was free when chosen, and may be taken a moment later, by an
    /// outgoing connection's local port or another server's pick: then the next one is tried.
    async fn start_on_first_free(
        dir: &Path,
        candidates: &[u16],
        durability: Durability,
        password: Option<&str>,
        silence_timeout: Duration,
        extra_config: &[&str],
    ) -> anyhow::Result<Self> {
        let mut taken = None;
        for &port in candidates {
            match Self::start_on(
                dir,
                port,
                durability,
                password,
                silence_timeout,
                extra_config,
            )
            .await
            {
                Err(e) if e.to_string().contains("Address already in use") => {
                    info!(
                        port,
                        "the port chosen for redis-server was taken; another one"
                    );
                    taken = Some(e);
                }
                started => return started,
            }
        }
        Err(taken.unwrap_or_else(|| anyhow::anyhow!("no port to start redis-server on")))
    }

    async fn start_on(
        dir: &Path,
        port: u16,
        durability: Durability,
        password: Option<&str>,
        silence_timeout: Duration,
        extra_config: &[&str],
    ) -> anyhow::Result<Self> {
        let binary = which("redis-server").context(
            "redis-server is not installed: run `sudo apt-get install -y redis-server` \
             (or set redis.url / --redis-url to use an existing Redis 7+)",
        )?;
        crate::private_files::ensure_dir(dir)?;
        // Files from before redis-server ran with umask 077.
        crate::private_files::restrict_tree(dir)?;
        // redis-server appends to it itself, for as long as the machine runs.
        crate::log_files::rotate_if_larger(&dir.join(LOG_FILE), crate::log_files::MAX_BYTES)?;
        let mut cmd = Command::new(binary);
        let mut conf = String::new();
        if let Some(password) = password {
            conf.push_str(&format!("requirepass {}\n", config_quote(password)));
        }
        for line in extra_config {
            conf.push_str(line);
            conf.push('\n');
        }
        if !conf.is_empty() {
            let file = dir.join("redis.conf");
            crate::private_files::write(&file, &conf)?;
            // The file must come first: redis-server reads options after it as overrides.
            cmd.arg(&file);
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
            // `raibid backup` takes its copy as a replica does; Redis holds a diskless sync
            // back 5 s for more replicas to share it, and this one has no others.
            .arg("--repl-diskless-sync-delay")
            .arg("0")
            .arg("--logfile")
            .arg(dir.join(LOG_FILE));
        match durability {
            Durability::Aof => cmd.args(["--appendonly", "yes", "--appendfsync", "everysec"]),
            Durability::Memory => cmd.args(["--appendonly", "no"]),
        };
        // A group of its own: Ctrl-C signals the terminal's whole foreground group, and
        // redis-server would shut down at once on that SIGINT, under agents still acking.
        // `raibid up` stops it last, itself.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        crate::child_process::owned_private(&mut cmd);
        let child = cmd.spawn().context("starting redis-server")?;
        let mut redis = Self {
            child,
            port,
            dir: dir.to_path_buf(),
            password: password.map(str::to_owned),
            maxmemory: None,
            durability,
        };
        if let Err(e) = redis.wait_ready(silence_timeout).await {
            // SIGTERM rather than the SIGKILL of dropping the child: it may be alive but stuck.
            redis.stop().await;
            return Err(e);
        }
        Ok(redis)
    }

    /// The URL clients connect with, password included: a secret, not for printing.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// Waits until redis-server answers PING. While it reads a large AOF it answers `-LOADING`
    /// for as long as that takes (1.3 GB took 8 s; several GB is ordinary after a busy month),
    /// so that is waited out, with progress logged; only silence for `silence_timeout`, or the
    /// process exiting, is a failure.
    async fn wait_ready(&mut self, silence_timeout: Duration) -> anyhow::Result<()> {
        let mut last_answer = Instant::now();
        let mut last_progress: Option<Instant> = None;
        loop {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(self.dir.join(LOG_FILE)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!(
                    "redis-server exited ({status}) on port {}: {}",
                    self.port,
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                );
            }
            let progress = last_progress.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY);
            let probe = probe(self.port, self.password.as_deref(), progress).await;
            if let Probe::Loading(loaded) = &probe {
                last_answer = Instant::now();
                if progress {
                    last_progress = Some(Instant::now());
                    let loaded = loaded.map_or_else(|| "?".to_owned(), |p| format!("{p:.1}"));
                    info!(
                        port = self.port,
                        loaded_percent = %loaded,
                        "redis-server is loading its data; waiting for it"
                    );
                }
            }
            match next_step(&probe, last_answer.elapsed(), silence_timeout) {
                Next::Ready => return Ok(()),
                Next::Wait => tokio::time::sleep(Duration::from_millis(50)).await,
                Next::GiveUp => {
                    let Probe::NoAnswer(why) = probe else {
                        unreachable!("only silence gives up")
                    };
                    bail!(
                        "redis-server did not answer on port {} for {} s ({why})",
                        self.port,
                        silence_timeout.as_secs_f64()
                    )
                }
            }
        }
    }

    /// SIGTERM (redis flushes its AOF and exits), then SIGKILL after 10 s.
    pub async fn stop(mut self) {
        crate::child_process::terminate(&mut self.child, Duration::from_secs(10)).await;
    }
}

/// What one look at a starting redis-server found.
#[derive(Debug, Clone, PartialEq)]
enum Probe {
    /// It answered PING.
    Ready,
    /// It answered `-LOADING`: alive, reading its data; how far, when asked (`INFO persistence`).
    Loading(Option<f64>),
    /// No connection, no reply in time, or an unexpected reply.
    NoAnswer(String),
}

#[derive(Debug, PartialEq, Eq)]
enum Next {
    Ready,
    Wait,
    GiveUp,
}

/// Loading is progress, however long it takes: giving up on it would fail every restart once
/// the AOF takes longer to read than the timeout, and kill the server doing the reading. Only
/// `silent_for` (time since the last answer of any kind) counts against `timeout`.
fn next_step(probe: &Probe, silent_for: Duration, timeout: Duration) -> Next {
    match probe {
        Probe::Ready => Next::Ready,
        Probe::Loading(_) => Next::Wait,
        Probe::NoAnswer(_) if silent_for >= timeout => Next::GiveUp,
        Probe::NoAnswer(_) => Next::Wait,
    }
}

/// One PING on a fresh connection (after AUTH with `password`), and the load progress if
/// `progress` and it is loading. Plain RESP rather than the queue's client, whose errors do not
/// tell `-LOADING` from other failures.
async fn probe(port: u16, password: Option<&str>, progress: bool) -> Probe {
    let attempt = probe_once(port, password, progress);
    match tokio::time::timeout(Duration::from_secs(1), attempt).await {
        Ok(Ok(probe)) => probe,
        Ok(Err(e)) => Probe::NoAnswer(e.to_string()),
        Err(_) => Probe::NoAnswer("no reply within 1 s".into()),
    }
}

async fn probe_once(port: u16, password: Option<&str>, progress: bool) -> std::io::Result<Probe> {
    let mut conn = match send_authed(port, password, &["PING"]).await? {
        Ok(conn) => conn,
        Err(refused) => return Ok(Probe::NoAnswer(refused)),
    };
    let ping = read_line(&mut conn).await?;
    if ping == "+PONG" {
        return Ok(Probe::Ready);
    }
    if !ping.starts_with("-LOADING") {
        return Ok(Probe::NoAnswer(format!("PING answered {ping}")));
    }
    if !progress {
        return Ok(Probe::Loading(None));
    }
    conn.get_mut()
        .write_all(&resp(&["INFO", "persistence"]))
        .await?;
    let header = read_line(&mut conn).await?;
    let Some(len) = header
        .strip_prefix('$')
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return Ok(Probe::Loading(None));
    };
    let mut body = vec![0; len.min(1 << 16)];
    conn.read_exact(&mut body).await?;
    let loaded = String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("loading_loaded_perc:"))
        .and_then(|v| v.trim().parse().ok());
    Ok(Probe::Loading(loaded))
}

/// A connection to the redis-server on `port` with AUTH (when there is a `password`) and the
/// command `args` sent in one write, AUTH's reply read: the command's reply is next. `Err`
/// with what AUTH answered when it refused.
async fn send_authed(
    port: u16,
    password: Option<&str>,
    args: &[&str],
) -> std::io::Result<Result<BufReader<tokio::net::TcpStream>, String>> {
    let mut conn = BufReader::new(tokio::net::TcpStream::connect(("127.0.0.1", port)).await?);
    let mut request = Vec::new();
    if let Some(password) = password {
        request.extend(resp(&["AUTH", password]));
    }
    request.extend(resp(args));
    conn.get_mut().write_all(&request).await?;
    if password.is_some() {
        let auth = read_line(&mut conn).await?;
        if auth != "+OK" {
            return Ok(Err(format!("AUTH answered {auth}")));
        }
    }
    Ok(Ok(conn))
}

/// A command as a RESP array of bulk strings.
fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend(format!("${}\r\n", arg.len()).into_bytes());
        out.extend(arg.as_bytes());
        out.extend(b"\r\n");
    }
    out
}

/// One reply line without its CRLF; end of stream is an error.
async fn read_line(conn: &mut BufReader<tokio::net::TcpStream>) -> std::io::Result<String> {
    let mut line = String::new();
    if conn.read_line(&mut line).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line.trim_end().to_owned())
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

/// Ports tried for a Redis of no given port (see [`LocalRedis::start_on_first_free`]).
const PORT_TRIES: usize = 3;

/// Below the ephemeral range (see [`crate::loopback_port`]): [`LocalRedis::start_again`]
/// needs the same port after redis-server died, and an outgoing connection could have taken
/// one the kernel chose.
fn free_port() -> anyhow::Result<u16> {
    Ok(crate::loopback_port::pick()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn loading_is_waited_out_and_only_silence_gives_up() {
        let timeout = Duration::from_secs(15);
        let long = Duration::from_secs(600);
        assert_eq!(
            next_step(&Probe::Loading(Some(3.5)), long, timeout),
            Next::Wait
        );
        assert_eq!(next_step(&Probe::Loading(None), long, timeout), Next::Wait);
        assert_eq!(
            next_step(&Probe::NoAnswer("refused".into()), timeout, timeout),
            Next::GiveUp
        );
        assert_eq!(
            next_step(
                &Probe::NoAnswer("refused".into()),
                Duration::from_secs(1),
                timeout
            ),
            Next::Wait
        );
        assert_eq!(next_step(&Probe::Ready, long, timeout), Next::Ready);
    }

    /// Sends `commands` (after AUTH) on one connection and waits for all the replies.
    async fn run(port: u16, password: &str, commands: &[Vec<&str>]) {
        let mut conn = BufReader::new(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
        let mut request = resp(&["AUTH", password]);
        for command in commands {
            request.extend(resp(command));
        }
        conn.get_mut().write_all(&request).await.unwrap();
        for _ in 0..=commands.len() {
            let reply = read_line(&mut conn).await.unwrap();
            assert!(reply.starts_with('+') || reply.starts_with(':'), "{reply}");
        }
    }

    #[tokio::test]
    async fn a_port_taken_before_redis_binds_it_is_given_up_for_the_next() {
        raibid_testkit::require_binary("redis-server", "redis-server");
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().join("redis");
        let holder = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = holder.local_addr().unwrap().port();
        let free = free_port().unwrap();
        let start = |candidates: Vec<u16>| {
            let dir = dir.clone();
            async move {
                LocalRedis::start_on_first_free(
                    &dir,
                    &candidates,
                    Durability::Memory,
                    Some("pw"),
                    SILENCE_TIMEOUT,
                    &[],
                )
                .await
            }
        };
        let redis = start(vec![taken, free]).await.unwrap();
        assert_eq!(redis.port, free);
        run(redis.port, "pw", &[vec!["PING"]]).await;
        // A backup (`redis-cli --rdb`) is not held back for replicas that never come.
        let mut conn = send_authed(
            free,
            Some("pw"),
            &["CONFIG", "GET", "repl-diskless-sync-delay"],
        )
        .await
        .unwrap()
        .unwrap();
        let mut reply = Vec::new();
        for _ in 0..5 {
            reply.push(read_line(&mut conn).await.unwrap());
        }
        assert_eq!(reply, ["*2", "$24", "repl-diskless-sync-delay", "$1", "0"]);
        redis.stop().await;

        let Err(err) = start(vec![taken]).await else {
            panic!("redis-server started on a port another socket listens on");
        };
        let err = err.to_string();
        assert!(err.contains(&format!("on port {taken}")), "{err}");
        assert!(err.contains("Address already in use"), "{err}");
        drop(holder);
    }

    /// A real redis-server made slow to load with its own `key-load-delay` (0.2 ms per key), as
    /// a multi-gigabyte AOF would be: it answers `-LOADING` (between batches of 1,024 commands)
    /// for about 2 s, four times the silence timeout, and starting it must wait that out
    /// instead of failing.
    #[tokio::test]
    async fn a_slow_aof_load_is_waited_out_and_a_silent_server_is_given_up_on() {
        raibid_testkit::require_binary("redis-server", "redis-server");
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().join("redis");
        let keys = 8000;
        let redis = LocalRedis::start(&dir, None, Durability::Aof, Some("pw"), None)
            .await
            .unwrap();
        let sets: Vec<String> = (0..keys).map(|i| format!("key{i}")).collect();
        let commands: Vec<Vec<&str>> = sets.iter().map(|k| vec!["SET", k, "v"]).collect();
        run(redis.port, "pw", &commands).await;
        redis.stop().await;

        let timeout = Duration::from_millis(500);
        let started = Instant::now();
        let mut redis = LocalRedis::start_with(
            &dir,
            None,
            Durability::Aof,
            Some("pw"),
            timeout,
            &[
                "key-load-delay 200",
                "loading-process-events-interval-bytes 1024",
            ],
        )
        .await
        .expect("a slow load is waited out");
        let took = started.elapsed();
        assert!(took > timeout * 2, "loading took only {took:?}");
        let log = std::fs::read_to_string(dir.join("redis.log")).unwrap();
        assert!(log.contains("DB loaded from"), "{log}");
        run(redis.port, "pw", &[vec!["EXISTS", "key0"]]).await;

        // Stopped (SIGSTOP), it accepts connections but never answers: that is silence.
        let pid = nix::unistd::Pid::from_raw(redis.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        let started = Instant::now();
        let err = redis.wait_ready(timeout).await.unwrap_err().to_string();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
        assert!(err.contains("did not answer"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        redis.stop().await;
    }
}
