//! raibid-ci assembled from real processes: a redis-server the test controls, and either
//! `raibid server` plus long-running `raibid agent`s (so each can be killed or restarted on its
//! own) or one `raibid up` with its local pool of `agent --once` processes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use raibid_client::Client;
use raibid_testkit::{free_port, require_binary};

use crate::redis::{Durability, Redis};
use crate::service::Service;
use crate::{procs, raibid_binary, utf8 as path};

/// The API token [`Stack`] accepts.
pub const TOKEN: &str = "rel-token-7c1d0e55a9b24f3e";
/// The webhook secret [`Stack`] verifies signatures with.
pub const SECRET: &str = "rel-webhook-secret-0b9e6f2d41";

/// The knobs the fault and load tests turn; everything else is the product's default.
#[derive(Debug, Clone)]
pub struct Settings {
    pub durability: Durability,
    /// `redis.stale_after_secs`: how long a silent agent keeps its job.
    pub stale_after_secs: u64,
    pub max_attempts: u32,
    pub maxlen: u64,
    pub log_max_bytes: u64,
    pub command_timeout_ms: u64,
    pub retain_jobs: u64,
    /// `agent.executor`: `bwrap` or `host`.
    pub executor: &'static str,
    /// Extra lines of the `server:` section, indented by two spaces.
    pub server_yaml: String,
    /// Extra lines of the `agent:` section (such as `secrets:`), indented by two spaces.
    pub agent_yaml: String,
}

impl Default for Settings {
    /// Short timeouts so a fault is detected in seconds; the stale limit stays at several
    /// heartbeats so a busy machine does not make a live agent look dead.
    fn default() -> Self {
        Self {
            durability: Durability::Memory,
            stale_after_secs: 5,
            max_attempts: 5,
            maxlen: 100_000,
            log_max_bytes: 10 * 1024 * 1024,
            command_timeout_ms: 2_000,
            retain_jobs: 50_000,
            executor: "bwrap",
            server_yaml: String::new(),
            agent_yaml: String::new(),
        }
    }
}

impl Settings {
    fn yaml(&self, redis_url: &str) -> String {
        let token_hash = raibid_config::hash_token(TOKEN);
        format!(
            "redis:\n  url: \"{redis_url}\"\n  stale_after_secs: {}\n  max_attempts: {}\n  \
             maxlen: {}\n  log_max_bytes: {}\n  command_timeout_ms: {}\n  retain_jobs: {}\n\
             server:\n  webhook_secret: \"{SECRET}\"\n  tokens: [\"{token_hash}\"]\n{}\
             agent:\n  heartbeat_interval_secs: 1\n  grace_period_secs: 2\n  \
             executor: {}\n{}\
             up:\n  polling_interval_ms: 100\n  cooldown_secs: 2\n",
            self.stale_after_secs,
            self.max_attempts,
            self.maxlen,
            self.log_max_bytes,
            self.command_timeout_ms,
            self.retain_jobs,
            self.server_yaml,
            self.executor,
            self.agent_yaml,
        )
    }
}

fn check_tools() {
    require_binary("redis-server", "redis-server");
    require_binary("git", "git");
    require_binary("bwrap", "bubblewrap");
    raibid_binary();
}

/// `raibid server` and long-running agents.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub redis: Redis,
    pub config: PathBuf,
    pub server: Service,
    pub agents: Vec<Service>,
    pub port: u16,
}

impl Stack {
    /// Redis, the server, and `agents` agents each running `concurrency` jobs at a time.
    pub fn start(settings: &Settings, agents: usize, concurrency: u32) -> Self {
        check_tools();
        let dir = tempfile::Builder::new()
            .prefix("raibid-rel-")
            .tempdir()
            .expect("a temporary directory");
        let redis = Redis::start(settings.durability);
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, settings.yaml(&redis.url())).expect("write the config");
        let port = free_port();
        let server = Service::spawn(
            &[
                "--config",
                path(&config),
                "server",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ],
            &[],
            &dir.path().join("server.log"),
        );
        let mut stack = Self {
            dir,
            redis,
            config,
            server,
            agents: Vec::new(),
            port,
        };
        stack.wait_ready();
        for i in 0..agents {
            stack.add_agent(&format!("agent-{i}"), concurrency, &[]);
        }
        stack
    }

    /// One more long-running agent named `name`, sharing the others' data directory.
    pub fn add_agent(&mut self, name: &str, concurrency: u32, env: &[(&str, &str)]) {
        let data = self.dir.path().join("agent");
        let concurrency = concurrency.to_string();
        let agent = Service::spawn(
            &[
                "--config",
                path(&self.config),
                "agent",
                "--name",
                name,
                "--data-dir",
                path(&data),
                "--concurrency",
                &concurrency,
            ],
            env,
            &self.dir.path().join(format!("{name}.log")),
        );
        self.agents.push(agent);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url(), Some(TOKEN.to_owned())).expect("an API client")
    }

    /// Waits until the server answers `/readyz` with 200.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if ready(self.port) {
                return;
            }
            assert!(
                self.server.running(),
                "raibid server exited:\n{}",
                self.server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("raibid server not ready:\n{}", self.server.log());
    }

    /// Every log of the stack, for failure messages.
    pub fn logs(&self) -> String {
        let mut all = format!("--- server\n{}", self.server.log());
        for agent in &self.agents {
            all.push_str(&format!(
                "\n--- {}\n{}",
                agent.log_path().display(),
                agent.log()
            ));
        }
        all
    }
}

/// `raibid up` with an external Redis the test controls, named in the configuration file
/// (`redis.url`), so no password ever appears on a command line.
pub struct Up {
    pub dir: tempfile::TempDir,
    pub redis: Redis,
    pub service: Service,
    pub data: PathBuf,
    pub port: u16,
}

impl Up {
    pub fn start(settings: &Settings, max_agents: u32) -> Self {
        Self::start_in(settings, max_agents, None, &[])
    }

    /// `data_root`: where the data directory goes (default: the temporary directory); `env`:
    /// extra environment for `raibid up` (such as `RAIBID_LOG`).
    pub fn start_in(
        settings: &Settings,
        max_agents: u32,
        data_root: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_with_redis(
            settings,
            Redis::start(settings.durability),
            max_agents,
            data_root,
            env,
        )
    }

    pub fn start_with_redis(
        settings: &Settings,
        redis: Redis,
        max_agents: u32,
        data_root: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Self {
        check_tools();
        let dir = tempfile::Builder::new()
            .prefix("raibid-rel-up-")
            .tempdir()
            .expect("a temporary directory");
        let data = data_root.unwrap_or(dir.path()).join("data");
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, settings.yaml(&redis.url())).expect("write the config");
        let port = free_port();
        let max = max_agents.to_string();
        let service = Service::spawn(
            &[
                "--config",
                path(&config),
                "up",
                "--data-dir",
                path(&data),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--max-agents",
                &max,
            ],
            env,
            &dir.path().join("up.log"),
        );
        let mut up = Self {
            dir,
            redis,
            service,
            data,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(ready(up.port) && up.data.join("api-token").exists()) {
            assert!(
                Instant::now() < deadline && up.service.running(),
                "raibid up did not start:\n{}",
                up.service.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        up
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn token(&self) -> String {
        read_trimmed(&self.data.join("api-token"))
    }

    /// The key `raibid up` generated for repository secrets (`redis.secrets_key`).
    pub fn secrets_key(&self) -> String {
        read_trimmed(&self.data.join("secrets-key"))
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url(), Some(self.token())).expect("an API client")
    }

    /// The local pool's agent processes: `(pid, agent name)`. Only `raibid up`'s own children
    /// count: a child an agent has forked but not yet exec'd shows the agent's command line.
    pub fn agents(&self) -> Vec<(i32, String)> {
        let up = self.service.pid();
        procs::mentioning(path(&self.data.join("agent")))
            .into_iter()
            .filter(|p| p.cmdline.contains(" --once ") && procs::parent(p.pid) == up)
            .filter_map(|p| {
                let name = p
                    .cmdline
                    .split_once(" --name ")?
                    .1
                    .split_whitespace()
                    .next()?
                    .to_owned();
                Some((p.pid, name))
            })
            .collect()
    }

    /// Every process still mentioning the data directory (agents, their git and bwrap).
    pub fn leftovers(&self) -> Vec<procs::Process> {
        procs::mentioning(path(&self.data))
    }

    /// `raibid up`'s output followed by its agents' log.
    pub fn logs(&self) -> String {
        format!(
            "--- up\n{}\n--- agents\n{}",
            self.service.log(),
            std::fs::read_to_string(self.data.join("logs/agents.log")).unwrap_or_default()
        )
    }
}

fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && &head[9..12] == b"200"
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}
