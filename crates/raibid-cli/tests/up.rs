//! `raibid up` end to end, as real processes: the binary, its private redis-server, its
//! server, its agents and their sandboxes.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raibid_client::{Client, SubmitJob};
use raibid_model::{Job, JobStatus};
use raibid_testkit::{GitRepo, free_port, require_binary};

const RAIBID: &str = env!("CARGO_BIN_EXE_raibid");

struct Up {
    child: Option<Child>,
    data: PathBuf,
    config: PathBuf,
    port: u16,
    /// Where the current run's output starts in the log, which every run appends to.
    run_start: usize,
}

impl Up {
    fn start(dir: &Path, extra_config: &str, extra_args: &[&str], env: &[(&str, &str)]) -> Self {
        require_binary("redis-server", "redis-server");
        require_binary("bwrap", "bubblewrap");
        let data = dir.join("data");
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "redis:\n  stale_after_secs: 2\nup:\n  polling_interval_ms: 100\n  cooldown_secs: 2\nagent:\n  heartbeat_interval_secs: 1\n  grace_period_secs: 2\n{extra_config}"
            ),
        )
        .unwrap();
        let port = free_port();
        let mut up = Self {
            child: None,
            data,
            config,
            port,
            run_start: 0,
        };
        up.spawn(extra_args, env);
        up
    }

    fn spawn(&mut self, extra_args: &[&str], env: &[(&str, &str)]) {
        let mut command = Command::new(RAIBID);
        command
            .arg("--config")
            .arg(&self.config)
            .arg("up")
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(extra_args)
            .envs(env.iter().copied())
            .env_remove("RAIBID_REDIS_URL");
        self.spawn_command(command);
    }

    /// Starts `command`, a `raibid up` of this data directory and port, its output appended
    /// to the log, and waits until it serves.
    fn spawn_command(&mut self, mut command: Command) {
        self.run_start = self.log().len();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.with_extension("log"))
            .unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // As a shell starts a foreground job: its own group, which Ctrl-C signals whole.
            .process_group(0)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready();
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }

    /// The output of the current run only: an earlier run's banner names its own ports.
    fn run_log(&self) -> String {
        self.log()
            .get(self.run_start..)
            .unwrap_or_default()
            .to_owned()
    }

    /// The private Redis's port, from the current run's banner.
    async fn redis_port(&self) -> u16 {
        loop {
            let log = self.run_log();
            let line = log
                .lines()
                .rev()
                .find(|l| l.trim_start().starts_with("redis "));
            if let Some(port) = line.and_then(|l| l.split("127.0.0.1:").nth(1)) {
                return port
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap()
                    .parse::<u16>()
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One command to the private Redis, through `redis-cli` with its password.
    async fn redis_cli(&self, args: &[&str]) -> String {
        let port = self.redis_port().await;
        let password = read(&self.data.join("redis-password"));
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "--no-auth-warning"])
            .env("REDISCLI_AUTH", password.trim())
            .args(args)
            .output()
            .expect("redis-cli (apt-get install -y redis-tools)");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            // `env` is written after the listener is bound, naming this run's address: the
            // port alone answers a moment before it is there.
            let env = std::fs::read_to_string(self.data.join("env")).unwrap_or_default();
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && env.contains(&format!("RAIBID_SERVER=http://127.0.0.1:{}\n", self.port))
                && env.contains("RAIBID_TOKEN=")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("raibid up did not start:\n{}", self.log());
    }

    fn client(&self) -> Client {
        let token = std::fs::read_to_string(self.data.join("api-token")).unwrap();
        Client::new(&self.url(), Some(token.trim().to_owned())).unwrap()
    }

    /// SIGTERM, then wait; returns whether it exited cleanly within `within`.
    fn terminate(&mut self, within: Duration) -> bool {
        self.stop_with(within, |pid| {
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
        })
    }

    /// Ctrl-C in the terminal: SIGINT to the whole process group `raibid up` leads.
    fn interrupt_group(&mut self, within: Duration) -> bool {
        self.stop_with(within, |pid| {
            nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGINT)
        })
    }

    fn stop_with(
        &mut self,
        within: Duration,
        signal: impl FnOnce(nix::unistd::Pid) -> nix::Result<()>,
    ) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        signal(nix::unistd::Pid::from_raw(child.id() as i32)).unwrap();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Processes whose command line mentions `needle` (our data directory), other than us.
fn processes_mentioning(needle: &Path) -> Vec<(i32, String)> {
    let needle = needle.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(&needle) && pid != std::process::id() as i32 {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Agent processes of a `raibid up`: its direct children running `agent --once`. (A child of
/// an agent between fork and exec still shows the agent's command line; its parent tells it
/// apart.)
fn agent_processes(data: &Path) -> Vec<(i32, String)> {
    let ups: Vec<i32> = processes_mentioning(data)
        .into_iter()
        .filter(|(_, c)| c.contains(" up --data-dir"))
        .map(|(pid, _)| pid)
        .collect();
    processes_mentioning(&data.join("agent"))
        .into_iter()
        .filter(|(pid, c)| c.contains(" --once ") && parent(*pid).is_some_and(|p| ups.contains(&p)))
        .collect()
}

fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after its closing parenthesis don't.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn repo_with(pipeline: &str) -> (GitRepo, String) {
    let repo = GitRepo::new();
    let sha = repo.commit(&[(".raibid.yaml", pipeline)], "pipeline");
    (repo, sha)
}

async fn submit(client: &Client, repo: &GitRepo, sha: &str) -> Job {
    client
        .submit(&SubmitJob {
            repo: "acme/app".into(),
            clone_url: repo.url(),
            git_ref: Some("refs/heads/main".into()),
            sha: Some(sha.into()),
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn wait_final(client: &Client, id: &str, timeout: Duration) -> Job {
    let deadline = Instant::now() + timeout;
    loop {
        let job = client.job(id).await.unwrap();
        if job.status.is_final() {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} still {} after {timeout:?}",
            job.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_demo_passes_and_fails_as_designed_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "").unwrap();
    let out = Command::new(RAIBID)
        .args(["up", "--demo", "--exit-after-demo", "--data-dir"])
        .arg(&data)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .env("RAIBID_CONFIG", &config)
        .env_remove("RAIBID_REDIS_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("✔ main") && stdout.contains("success"),
        "{stdout}"
    );
    assert!(
        stdout.contains("✘ broken") && stdout.contains("failure"),
        "{stdout}"
    );
    assert!(stdout.contains("raibid up: stopped"), "{stdout}");
    assert!(
        processes_mentioning(&data).is_empty(),
        "{:?}",
        processes_mentioning(&data)
    );
    // The agents' log is a file: plain text, no terminal colours around its fields.
    let agents = std::fs::read_to_string(data.join("logs/agents.log")).unwrap();
    assert!(agents.contains(" claimed job="), "{agents}");
    assert!(!agents.contains('\x1b'), "{agents}");
}

#[tokio::test]
async fn an_agent_killed_mid_job_is_replaced_and_the_job_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = Up::start(dir.path(), "", &["--max-agents", "2"], &[]);
    let client = up.client();
    let (repo, sha) = repo_with("steps:\n  - name: slow\n    run: sleep 3; echo finished\n");
    let job = submit(&client, &repo, &sha).await;

    // Wait for the job to run, then kill its agent without warning.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (victim, command_line) = loop {
        let current = client.job(&job.id).await.unwrap();
        let agents = agent_processes(&up.data);
        if current.status == JobStatus::Running {
            let name = current.agent.clone().unwrap();
            if let Some((pid, c)) = agents.into_iter().find(|(_, c)| c.contains(&name)) {
                break (pid, c);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the job never started:\n{}",
            up.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // up decided what `auto` comes to and told its agents, so they cannot decide otherwise.
    let decided = up
        .log()
        .lines()
        .find_map(|l| {
            l.split("on demand (raibid-agent), ")
                .nth(1)?
                .split(" steps")
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no executor in the banner:\n{}", up.log()));
    assert!(
        command_line.contains(&format!("--executor {decided} ")),
        "{command_line}\n{}",
        up.log()
    );
    // The pool runs the agent-only binary that cargo built beside raibid.
    let program = command_line.split(' ').next().unwrap();
    assert_eq!(
        Path::new(program),
        Path::new(env!("CARGO_BIN_EXE_raibid-agent")),
        "{command_line}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    let done = wait_final(&client, &job.id, Duration::from_secs(60)).await;
    assert_eq!(done.status, JobStatus::Success, "{done:?}\n{}", up.log());
    assert_eq!(done.attempt, 2, "rerun once after the kill");
    assert!(
        up.terminate(Duration::from_secs(30)),
        "clean exit\n{}",
        up.log()
    );
    assert!(
        processes_mentioning(&up.data).is_empty(),
        "{:?}",
        processes_mentioning(&up.data)
    );
}

#[tokio::test]
async fn a_restart_resumes_queued_jobs() {
    let dir = tempfile::tempdir().unwrap();
    // First life: the pool looks at the queue only once a minute, so jobs stay queued.
    let mut up = Up::start(
        dir.path(),
        "",
        &[],
        &[("RAIBID_UP_POLLING_INTERVAL_MS", "600000")],
    );
    let client = up.client();
    let (repo, sha) = repo_with("steps:\n  - name: quick\n    run: echo resumed\n");
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(submit(&client, &repo, &sha).await.id);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in &ids {
        assert_eq!(client.job(id).await.unwrap().status, JobStatus::Queued);
    }
    assert!(up.terminate(Duration::from_secs(30)), "{}", up.log());
    assert!(processes_mentioning(&up.data).is_empty());

    up.spawn(&[], &[]);
    let client = up.client();
    for id in &ids {
        let job = wait_final(&client, id, Duration::from_secs(60)).await;
        assert_eq!(job.status, JobStatus::Success, "{job:?}");
    }
}

/// A job of a step that sleeps a second, once it runs, and its repository, which must outlive
/// the job's checkout.
async fn a_running_short_job(up: &Up) -> (GitRepo, Job) {
    let client = up.client();
    let (repo, sha) = repo_with("steps:\n  - name: short\n    run: sleep 1\n");
    let job = submit(&client, &repo, &sha).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.job(&job.id).await.unwrap().status != JobStatus::Running {
        assert!(Instant::now() < deadline, "never ran:\n{}", up.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (repo, job)
}

/// After a stop: `raibid up` started again finds `job` ended as `success`, run once.
async fn assert_it_ended_once_as_success(up: &mut Up, job: &Job) {
    up.spawn(&[], &[]);
    // Read at once: a restarted up's reaper would requeue a job left running.
    let done = up.client().job(&job.id).await.unwrap();
    assert_eq!(
        (done.status, done.attempt),
        (JobStatus::Success, 1),
        "{done:?}\n{}",
        up.log()
    );
}

/// Ctrl-C reaches every process of the terminal's foreground group. Only `raibid up` may act
/// on it: redis-server would shut down at once (SIGINT is its shutdown signal) while the
/// agents, in their grace period, still have a job to ack.
#[tokio::test]
async fn ctrl_c_stops_in_order_and_the_running_job_keeps_its_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = Up::start(dir.path(), "", &[], &[]);
    let (_repo, job) = a_running_short_job(&up).await;
    assert!(up.interrupt_group(Duration::from_secs(30)), "{}", up.log());
    let redis_logs: String = modes_under(&up.data)
        .into_iter()
        .filter(|(p, _)| p.file_name().is_some_and(|n| n == "redis.log"))
        .map(|(p, _)| read(&p))
        .collect();
    assert!(!redis_logs.contains("Received SIGINT"), "{redis_logs}");

    assert_it_ended_once_as_success(&mut up, &job).await;
}

/// A stop asked for while up starts (Redis loading its data, the registry collecting its
/// garbage: minutes, for big ones) stops what has started, in order, and up exits as after a
/// run; it used to meet the default action, which killed up alone.
#[tokio::test]
async fn a_sigterm_while_starting_stops_what_has_started() {
    require_binary("redis-server", "redis-server");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "").unwrap();
    let mut child = Command::new(RAIBID)
        .arg("--config")
        .arg(&config)
        .args(["up", "--data-dir"])
        .arg(&data)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .env_remove("RAIBID_REDIS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Signalled as soon as its redis-server runs: Redis still starting, or the registry.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !processes_mentioning(&data.join("redis"))
        .iter()
        .any(|(_, cmdline)| {
            cmdline.starts_with("redis-server") || cmdline.contains("/redis-server")
        })
    {
        assert!(Instant::now() < deadline, "no redis-server started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let started_env = data.join("env").exists();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "raibid up did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        status.success(),
        "{status:?} (env written before: {started_env})\n{said}"
    );
    assert!(said.contains("raibid up: stopped"), "{said}");
    // A redis-server stopped while it was still starting is killed, which takes it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_mentioning(&data).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            processes_mentioning(&data)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Agents running host steps as one step user exclude each other (one per machine), so up
/// starts one at a time instead of agents that would fail.
#[tokio::test]
async fn host_steps_under_a_step_user_get_one_local_agent() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = Up::start(
        dir.path(),
        "  executor: host\n  step_user: \"64996\"\n",
        &["--max-agents", "4"],
        &[],
    );
    assert!(up.terminate(Duration::from_secs(30)), "{}", up.log());
    assert!(
        up.log()
            .contains("0..1 on demand (raibid-agent), host steps"),
        "{}",
        up.log()
    );
}

#[tokio::test]
async fn twenty_jobs_with_four_agents_at_most_then_back_to_zero() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), "", &["--max-agents", "4"], &[]);
    let client = up.client();
    let (repo, sha) = repo_with("steps:\n  - name: work\n    run: sleep 1\n");
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(submit(&client, &repo, &sha).await.id);
    }
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        most = most.max(agent_processes(&up.data).len());
        let page = client
            .list(&raibid_client::ListJobs {
                limit: Some(50),
                ..Default::default()
            })
            .await
            .unwrap();
        if page.jobs.iter().all(|j| j.status().is_final()) {
            assert!(page.jobs.iter().all(|j| j.status() == JobStatus::Success));
            assert_eq!(page.jobs.len(), 20);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "jobs did not finish:\n{}",
            up.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(most <= 4, "saw {most} agents at once");
    assert!(most >= 2, "the pool scaled out (saw {most})");

    // Idle agents leave after the cooldown (2 s): back to zero.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !agent_processes(&up.data).is_empty() {
        assert!(
            Instant::now() < deadline,
            "agents stayed: {:?}",
            agent_processes(&up.data)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let queues = client.queues().await.unwrap();
    let scaler = queues
        .scalers
        .iter()
        .find(|s| s.pool.as_str() == "default")
        .unwrap();
    assert_eq!(scaler.agents, 0);
    assert_eq!(scaler.source, "local");
    let _ = ids;
}

#[tokio::test]
async fn two_instances_run_side_by_side_and_one_data_dir_is_exclusive() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let a = Up::start(a_dir.path(), "", &[], &[]);
    let b = Up::start(b_dir.path(), "", &[], &[]);
    assert!(a.client().ready().await.unwrap());
    assert!(b.client().ready().await.unwrap());
    let second = Command::new(RAIBID)
        .arg("--config")
        .arg(&a.config)
        .args(["up", "--data-dir"])
        .arg(&a.data)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("another raibid up is running"));
}

/// Runs the `raibid` CLI against `up` and returns stdout; panics with stderr on failure.
/// A plain HTTP/1.0 GET on loopback; the response, headers included.
fn http_get(port: u16, path: &str) -> String {
    http_request(
        port,
        &format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"),
    )
}

/// Sends `request` as it is; the whole response, head and body.
fn http_request(port: u16, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// Runs a client command against `up` with its token.
fn cli_run(up: &Up, args: &[&str]) -> std::process::Output {
    cli_run_with(up, args, &[])
}

fn cli_run_with(up: &Up, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let token = std::fs::read_to_string(up.data.join("api-token")).unwrap();
    Command::new(RAIBID)
        .arg("--config")
        .arg(&up.config)
        .args(args)
        .env("RAIBID_SERVER", up.url())
        .env("RAIBID_TOKEN", token.trim())
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// Runs a client command that must succeed; returns what it wrote to standard output.
fn cli(up: &Up, args: &[&str]) -> String {
    let out = cli_run(up, args);
    assert!(
        out.status.success(),
        "raibid {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_job_commands_drive_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), "", &[], &[]);
    // Links (commit statuses, the API description) point where this server listens, not at
    // the default port 8080.
    let description = http_get(up.port, "/api/v1/openapi.json");
    assert!(
        description.contains(&format!("\"url\":\"http://127.0.0.1:{}\"", up.port)),
        "{}",
        &description[..description.len().min(600)]
    );
    let (repo, sha) =
        repo_with("steps:\n  - name: hello\n    run: echo hello-from-cli page=$CI_PIPELINE_URL\n");
    let url = repo.url();

    let submitted = cli(
        &up,
        &[
            "job",
            "submit",
            "acme/app",
            "--clone-url",
            &url,
            "--ref",
            "main",
            "-o",
            "json",
        ],
    );
    let job: Job = serde_json::from_str(&submitted).unwrap();
    assert_eq!(
        job.spec.sha, sha,
        "the server resolved the branch to its commit"
    );

    let client = up.client();
    let done = wait_final(&client, &job.id, Duration::from_secs(60)).await;
    assert_eq!(done.status, JobStatus::Success);

    // A submission names no title: its agent took the commit's subject (`repo_with`'s).
    assert_eq!(job.spec.title, None);
    assert_eq!(done.spec.title.as_deref(), Some("pipeline"));
    let table = cli(&up, &["job", "list"]);
    assert!(
        table.starts_with("ID ") && table.contains(&job.id) && table.contains("success"),
        "{table}"
    );
    let row = table.lines().find(|l| l.starts_with(&job.id)).unwrap();
    assert!(row.ends_with(" pipeline"), "{table}");

    // `submit --follow` waits for the build, a matrix's variants included, and exits as it
    // ended: one variant failed.
    let (matrix, _) = repo_with(
        "matrix:\n  N: [\"1\", \"2\"]\nsteps:\n  - name: check\n    run: echo variant-$N; test $N = 1\n",
    );
    let out = cli_run(
        &up,
        &[
            "job",
            "submit",
            "acme/matrix",
            "--clone-url",
            &matrix.url(),
            "--follow",
        ],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    for line in ["variant-1\n", "variant-2\n"] {
        assert!(stdout.contains(line), "{line:?} in\n{stdout}\n{stderr}");
    }
    for header in ["── N=1 (", "── N=2 ("] {
        assert!(stderr.contains(header), "{header:?} in\n{stderr}");
    }
    // The list shows the build's status on the matrix job, which passed once it had queued
    // its variants.
    let first = stdout
        .lines()
        .chain(stderr.lines())
        .find_map(|l| l.strip_prefix("queued ")?.split(' ').next())
        .unwrap_or_else(|| panic!("no job queued in\n{stdout}\n{stderr}"));
    assert_eq!(
        wait_final(&client, first, Duration::from_secs(5))
            .await
            .status,
        JobStatus::Success
    );
    let table = cli(&up, &["job", "list", "--repo", "acme/matrix"]);
    let row = table.lines().find(|l| l.starts_with(first)).unwrap();
    assert!(row.contains(" failure "), "{table}");
    let shown = cli(&up, &["job", "show", &job.id]);
    assert!(shown.contains("hello") && shown.contains(&sha), "{shown}");
    let logs = cli(&up, &["job", "logs", &job.id]);
    // The agents know where the job's page is, and the server serves it.
    let page = format!("http://127.0.0.1:{}/jobs/{}", up.port, job.id);
    assert!(
        logs.contains(&format!("hello-from-cli page={page}\n")),
        "{logs}"
    );
    let html = http_get(up.port, &format!("/jobs/{}", job.id));
    assert!(
        html.contains("hello-from-cli") && html.contains("status-success"),
        "{html}"
    );
    assert!(shown.contains(&format!("page       {page}\n")), "{shown}");
    // A browser signs in with `raibid up`'s token, named, and may retry the job.
    let token = std::fs::read_to_string(up.data.join("api-token")).unwrap();
    let signed_in = http_request(
        up.port,
        &format!(
            "POST /login HTTP/1.0\r\nHost: 127.0.0.1\r\nSec-Fetch-Site: same-origin\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n\
             token={}",
            token.trim().len() + 6,
            token.trim()
        ),
    );
    let cookie = signed_in
        .lines()
        .find_map(|line| line.strip_prefix("set-cookie: "))
        .and_then(|value| value.split(';').next())
        .unwrap_or_else(|| panic!("no cookie: {signed_in}"));
    let html = http_request(
        up.port,
        &format!(
            "GET /jobs/{} HTTP/1.0\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\r\n",
            job.id
        ),
    );
    assert!(
        html.contains("<span class=\"user\">raibid-up</span>"),
        "{html}"
    );
    assert!(
        html.contains(&format!("action=\"/jobs/{}/retry\"", job.id)),
        "{html}"
    );
    assert!(logs.contains("checked out"), "{logs}");
    let step = cli(&up, &["job", "logs", &job.id, "--step", "hello"]);
    assert!(
        step.contains("hello-from-cli")
            && step.contains("▶ step hello")
            && !step.contains("checked out"),
        "only the step's section: {step}"
    );
    let other = cli(&up, &["job", "logs", &job.id, "--step", "nope"]);
    assert_eq!(other, "", "no such step, no lines");
    let followed = cli(&up, &["job", "logs", "--follow", &job.id]);
    assert!(followed.contains("hello-from-cli"), "{followed}");

    let retried = cli(&up, &["job", "retry", &job.id, "-o", "json"]);
    let retry: Job = serde_json::from_str(&retried).unwrap();
    assert_eq!(retry.spec.retry_of.as_deref(), Some(job.id.as_str()));
    let cancel = cli(&up, &["job", "cancel", &job.id]);
    assert!(cancel.contains("already finished"), "{cancel}");
    let approve = cli_run(&up, &["job", "approve", &job.id]);
    let said = String::from_utf8_lossy(&approve.stderr);
    assert!(
        !approve.status.success() && said.contains("only a blocked job"),
        "a finished job is not approved: {said}"
    );

    let status = cli(&up, &["status"]);
    assert!(
        status.contains("ready") && status.contains("default"),
        "{status}"
    );
}

/// Runs a client command against `up` with its token and `input` on standard input.
fn cli_with_input(up: &Up, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let token = std::fs::read_to_string(up.data.join("api-token")).unwrap();
    let mut child = Command::new(RAIBID)
        .arg("--config")
        .arg(&up.config)
        .args(args)
        .env("RAIBID_SERVER", up.url())
        .env("RAIBID_TOKEN", token.trim())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn repository_secrets_set_with_the_cli_reach_steps_masked_and_outlive_a_restart() {
    const VALUE: &str = "dep-value-5Gh7kQ";
    let dir = tempfile::tempdir().unwrap();
    let mut up = Up::start(dir.path(), "", &["--max-agents", "1"], &[]);
    let set = cli_with_input(
        &up,
        &[
            "secret",
            "set",
            "acme/app",
            "DEPLOY_TOKEN",
            "--branch",
            "main",
        ],
        &format!("{VALUE}\n"),
    );
    let said = String::from_utf8_lossy(&set.stdout);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert!(
        said.contains(
            "created secret DEPLOY_TOKEN of repository acme/app (every event; pushes to main)"
        ),
        "{said}"
    );
    // An owner's secret, from a file kept byte for byte (its newline too), for jobs
    // submitted by hand only (event manual).
    let file = dir.path().join("registry-token");
    std::fs::write(&file, "org-reg-8Lm2\n").unwrap();
    let org = cli(
        &up,
        &[
            "secret",
            "set",
            "--org",
            "acme",
            "REGISTRY_TOKEN",
            "--from-file",
            file.to_str().unwrap(),
            "--event",
            "manual",
        ],
    );
    assert!(
        org.contains("created secret REGISTRY_TOKEN of owner acme (events manual)"),
        "{org}"
    );
    let listed = cli(&up, &["secret", "list", "acme/app"]);
    assert!(
        listed.contains("DEPLOY_TOKEN") && !listed.contains(VALUE) && !listed.contains("REGISTRY"),
        "{listed}"
    );
    let listed = cli(&up, &["secret", "list", "--org", "acme"]);
    assert!(
        listed.contains("REGISTRY_TOKEN") && listed.contains("manual"),
        "{listed}"
    );

    // `echo`'s newline is not part of the value: the step compares it exactly.
    let (repo, sha) = repo_with(&format!(
        "steps:\n  - name: deploy\n    secrets: [DEPLOY_TOKEN, REGISTRY_TOKEN]\n    run: |\n      \
         echo token=$DEPLOY_TOKEN registry=$REGISTRY_TOKEN\n      \
         test \"$DEPLOY_TOKEN\" = {VALUE}\n      test ${{#REGISTRY_TOKEN}} -eq 13\n"
    ));
    let client = up.client();
    let job = submit(&client, &repo, &sha).await;
    let done = wait_final(&client, &job.id, Duration::from_secs(60)).await;
    let log = client.logs(&job.id, None).await.unwrap().text;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    assert!(
        log.contains("token=*** registry=***") && !log.contains(VALUE),
        "{log}"
    );

    // The key is kept in the data directory: after a restart the secret still opens.
    assert!(up.terminate(Duration::from_secs(30)), "{}", up.log());
    up.spawn(&["--max-agents", "1"], &[]);
    let client = up.client();
    let job = submit(&client, &repo, &sha).await;
    let done = wait_final(&client, &job.id, Duration::from_secs(60)).await;
    let log = client.logs(&job.id, None).await.unwrap().text;
    assert_eq!(done.status, JobStatus::Success, "after a restart: {log}");

    let removed = cli(&up, &["secret", "rm", "acme/app", "DEPLOY_TOKEN"]);
    assert!(removed.contains("deleted secret DEPLOY_TOKEN"), "{removed}");
    let again = cli_run(&up, &["secret", "rm", "acme/app", "DEPLOY_TOKEN"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no secret DEPLOY_TOKEN"));
    let job = submit(&client, &repo, &sha).await;
    let done = wait_final(&client, &job.id, Duration::from_secs(60)).await;
    assert_eq!(done.status, JobStatus::Error);
    assert!(
        done.reason
            .as_deref()
            .unwrap_or_default()
            .contains("neither a secret of repository acme/app"),
        "{done:?}"
    );
    assert!(!up.log().contains(VALUE), "the value is in raibid up's log");
}

/// Typed at a terminal, a secret's value is read without echo: it never shows on the screen,
/// and what was typed is what a job gets. Driven through tmux, a real terminal.
#[tokio::test]
async fn a_secret_typed_at_the_prompt_is_not_shown() {
    const TYPED: &str = "typed-secret-9Qw2Er";
    require_binary("tmux", "tmux");
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), "", &["--max-agents", "1"], &[]);
    let token = read(&up.data.join("api-token"));
    let socket = format!("raibid-secret-prompt-{}", std::process::id());
    let tmux = |args: &[&str]| {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&socket)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let screen = |session: &str| tmux(&["capture-pane", "-p", "-t", session]);
    let wait_for = |session: &str, text: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let shown = screen(session);
            if shown.contains(text) {
                return shown;
            }
            assert!(Instant::now() < deadline, "{text:?} never showed:\n{shown}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // `raibid secret set acme/app NAME` in a new terminal, between shell lines of its own. Each
    // prompt has a session of its own and the first is left running until the end: killing a
    // tmux server's last session stops the server, and a session started right after could
    // reach it while it stops ("server exited unexpectedly").
    let prompt = |session: &str, before: &str, name: &str, after: &str| {
        let command = format!(
            "{before} env RAIBID_SERVER={} RAIBID_TOKEN={token} {RAIBID} --config {} secret set \
             acme/app {name}; echo exit=$?; {after} sleep 30",
            up.url(),
            up.config.display()
        );
        tmux(&[
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "200",
            "-y",
            "20",
            &command,
        ]);
        wait_for(session, &format!("value of {name} (not shown):"));
    };
    prompt("typed", "", "PROMPTED", "");
    tmux(&["send-keys", "-t", "typed", "-l", TYPED]);
    tmux(&["send-keys", "-t", "typed", "Enter"]);
    let shown = wait_for("typed", "exit=");
    assert!(
        shown.contains("created secret PROMPTED") && shown.contains("exit=0"),
        "{shown}"
    );
    assert!(!shown.contains(TYPED), "the value was echoed:\n{shown}");

    // Ctrl-C at the prompt gives the terminal back with its echo on. (The shell outlives the
    // Ctrl-C to say so: its trap is its own, raibid gets the default.)
    prompt(
        "cancelled",
        "trap true INT;",
        "CANCELLED",
        "stty -a | tr ' ' '\\n' | grep -x -- '-\\?echo';",
    );
    tmux(&["send-keys", "-t", "cancelled", "C-c"]);
    wait_for("cancelled", "exit=130");
    // `stty` writes right after the exit line.
    std::thread::sleep(Duration::from_millis(500));
    let shown = screen("cancelled");
    let _ = Command::new("tmux")
        .args(["-L", &socket, "kill-server"])
        .output();
    assert!(
        shown.lines().any(|l| l.trim() == "echo"),
        "the terminal's echo is off after Ctrl-C:\n{shown}"
    );

    let (repo, sha) = repo_with(&format!(
        "steps:\n  - name: use\n    secrets: [PROMPTED]\n    run: test \"$PROMPTED\" = {TYPED}\n"
    ));
    let client = up.client();
    let job = submit(&client, &repo, &sha).await;
    let done = wait_final(&client, &job.id, Duration::from_secs(60)).await;
    let log = client.logs(&job.id, None).await.unwrap().text;
    assert_eq!(
        done.status,
        JobStatus::Success,
        "what was typed is the value: {log}"
    );
}

#[tokio::test]
async fn a_sandboxed_step_cannot_read_up_s_credentials() {
    // Outside /tmp, /root and /home, which the sandbox hides anyway.
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let up = Up::start(dir.path(), "", &[], &[]);
    let client = up.client();
    let token_file = up.data.join("api-token");
    let pipeline = format!(
        "steps:\n  - name: peek\n    run: |\n      if cat {} {} {} {}; then echo LEAKED; else echo hidden; fi\n",
        token_file.display(),
        up.data.join("webhook-secret").display(),
        up.data.join("registry-password").display(),
        up.data.join("secrets-key").display()
    );
    let (repo, sha) = repo_with(&pipeline);
    let job = submit(&client, &repo, &sha).await;
    let done = wait_final(&client, &job.id, Duration::from_secs(60)).await;
    let log = client.logs(&job.id, None).await.unwrap().text;
    assert_eq!(done.status, JobStatus::Success, "{log}");
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(
        !log.contains(token.trim()) && !log.contains("LEAKED"),
        "{log}"
    );
    if let Ok(password) = std::fs::read_to_string(up.data.join("registry-password")) {
        assert!(!log.contains(password.trim()), "{log}");
    }
    assert!(!log.contains(&read(&up.data.join("secrets-key"))), "{log}");
    assert!(log.contains("hidden"), "{log}");
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every file and directory under `dir` with its mode.
fn modes_under(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        found.push((path.clone(), mode(&path)));
        if entry.file_type().unwrap().is_dir() {
            found.extend(modes_under(&path));
        }
    }
    found
}

/// Checks what other users of the machine could get at: the data directory, the credential
/// files, Redis's files, and Redis itself on loopback.
async fn assert_private(up: &Up) {
    let data = &up.data;
    assert_eq!(mode(data), 0o700, "data directory");
    for file in [
        "env",
        "api-token",
        "webhook-secret",
        "redis-password",
        "secrets-key",
    ] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    let redis_dir = data.join("redis");
    assert_eq!(mode(&redis_dir), 0o700);
    let redis_files = modes_under(&redis_dir);
    assert!(
        redis_files
            .iter()
            .any(|(p, _)| p.to_string_lossy().ends_with(".aof")),
        "{redis_files:?}"
    );
    for (path, m) in &redis_files {
        assert_eq!(m & 0o077, 0, "{} is {m:o}", path.display());
    }

    // The private Redis refuses a client without the password.
    let port = up.redis_port().await;
    assert!(
        !up.log().contains(&read(&data.join("redis-password"))),
        "the Redis password is printed"
    );
    use std::io::{Read, Write};
    let mut redis = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    redis.write_all(b"PING\r\n").unwrap();
    let mut answer = [0u8; 7];
    redis.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"-NOAUTH", "unauthenticated PING");

    // Server and agents still get in: a job runs.
    let client = up.client();
    let (repo, sha) = repo_with("steps:\n  - name: hello\n    run: echo private\n");
    let job = submit(&client, &repo, &sha).await;
    let done = wait_final(&client, &job.id, Duration::from_secs(60)).await;
    assert_eq!(done.status, JobStatus::Success, "{done:?}\n{}", up.log());
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

#[tokio::test]
async fn up_s_files_are_private_and_its_redis_needs_a_password_never_on_a_command_line() {
    let dir = tempfile::tempdir().unwrap();
    // Command lines are readable by every user: watch all of them while `raibid up` runs.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let watching = watching.clone();
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            while watching.load(std::sync::atomic::Ordering::SeqCst) {
                for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                    if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
                        seen.insert(String::from_utf8_lossy(&raw).replace('\0', " "));
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            seen
        })
    };

    // First start: everything created private.
    let mut up = Up::start(dir.path(), "", &["--max-agents", "1"], &[]);
    assert_private(&up).await;
    let token = read(&up.data.join("api-token"));
    let password = read(&up.data.join("redis-password"));
    assert!(up.terminate(Duration::from_secs(30)), "{}", up.log());

    // As an older version (or a careless copy) left them: readable by everyone.
    set_mode(&up.data, 0o755);
    for file in [
        "env",
        "api-token",
        "webhook-secret",
        "redis-password",
        "secrets-key",
    ] {
        set_mode(&up.data.join(file), 0o644);
    }
    for (path, m) in modes_under(&up.data.join("redis")) {
        set_mode(&path, m | if path.is_dir() { 0o055 } else { 0o044 });
    }
    up.spawn(&["--max-agents", "1"], &[]);
    assert_private(&up).await;
    assert_eq!(
        read(&up.data.join("api-token")),
        token,
        "credentials are kept"
    );
    assert_eq!(read(&up.data.join("redis-password")), password);
    assert!(
        up.log().contains("made it private"),
        "the fix is logged:\n{}",
        up.log()
    );
    assert!(up.terminate(Duration::from_secs(30)), "{}", up.log());

    watching.store(false, std::sync::atomic::Ordering::SeqCst);
    let command_lines = watcher.join().unwrap();
    assert!(
        command_lines.iter().any(|c| c.contains("redis-server")),
        "redis-server was seen"
    );
    for cmdline in &command_lines {
        assert!(
            !cmdline.contains(&password),
            "the Redis password is on a command line: {cmdline}"
        );
    }
}

/// Runs `raibid up` with `args`, expecting it to give up by itself within 20 s; kills it and
/// panics if it is still running then.
fn up_that_should_fail(dir: &Path, args: &[&str]) -> String {
    let mut child = Command::new(RAIBID)
        .args(["up", "--data-dir"])
        .arg(dir.join("data"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(args)
        .env("RAIBID_CONFIG", dir.join("config.yaml"))
        .env_remove("RAIBID_REDIS_URL")
        .env_remove("RAIBID_UP_WEBHOOK_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "raibid up {args:?} kept running:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_empty_webhook_secret_stops_up_at_startup() {
    require_binary("redis-server", "redis-server");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), "").unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, " \n").unwrap();

    let err = up_that_should_fail(
        dir.path(),
        &["--webhook-secret-file", empty.to_str().unwrap()],
    );
    assert!(
        err.contains("webhook secret file") && err.contains("is empty"),
        "{err}"
    );
    let err = up_that_should_fail(dir.path(), &["--webhook-secret", ""]);
    assert!(
        err.contains("--webhook-secret") && err.contains("is empty"),
        "{err}"
    );
    assert!(
        !dir.path().join("data/redis").exists(),
        "nothing was started"
    );
}

/// Without a `maxmemory`, `raibid up`'s Redis keeps every retained job's log (megabytes each)
/// until the machine runs out: it gets one (`up.redis_maxmemory`, refusing writes rather than
/// evicting), and the reaper deletes the oldest finished jobs' logs to stay below
/// `redis.prune_memory_percent` of it.
#[tokio::test]
async fn up_s_redis_has_a_memory_limit_and_old_logs_make_room() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), "", &[], &[("RAIBID_UP_REDIS_MAXMEMORY", "8mb")]);
    assert_eq!(
        up.redis_cli(&["CONFIG", "GET", "maxmemory"]).await,
        "maxmemory\n8388608\n"
    );
    assert_eq!(
        up.redis_cli(&["CONFIG", "GET", "maxmemory-policy"]).await,
        "maxmemory-policy\nnoeviction\n"
    );
    // After redis_cli, which waited for the banner.
    assert!(up.run_log().contains("maxmemory 8 MiB"), "{}", up.run_log());

    // Three logs of 1.5 MB (1.8 MB each in Redis): about 7.2 MB with Redis's own 1.8 MB, past
    // 80% of 8 MiB (6.7 MB); two were not.
    let client = up.client();
    let (repo, sha) = repo_with(
        "steps:\n  - name: talk\n    run: head -c 1500000 /dev/zero | tr '\\0' x | fold -w 99\n",
    );
    let mut jobs = Vec::new();
    for _ in 0..3 {
        let job = submit(&client, &repo, &sha).await;
        let done = wait_final(&client, &job.id, Duration::from_secs(60)).await;
        assert_eq!(done.status, JobStatus::Success, "{done:?}\n{}", up.log());
        jobs.push(job.id);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client.job(&jobs[0]).await.unwrap().log_pruned {
        assert!(
            Instant::now() < deadline,
            "the oldest log was kept:\n{}\n{}",
            up.redis_cli(&["INFO", "memory"]).await,
            up.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!client.job(&jobs[2]).await.unwrap().log_pruned);
    let info = up.redis_cli(&["INFO", "memory"]).await;
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert!(
        field("used_memory") * 100 <= field("maxmemory") * 80,
        "{info}"
    );
}

/// `raibid schedule list` shows what the server schedules, from `server.schedules`.
#[tokio::test]
async fn schedule_list_shows_the_configured_schedules() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(
        dir.path(),
        "",
        &[],
        &[(
            "RAIBID_SERVER_SCHEDULES",
            "[{name: nightly, repo: acme/app, clone_url: \"file:///nowhere\", cron: \"0 3 * * *\"}]",
        )],
    );
    let text = cli(&up, &["schedule", "list"]);
    let row = text.lines().nth(1).unwrap_or_default();
    for cell in [
        "nightly",
        "acme/app",
        "main",
        "0 3 * * *",
        "default",
        "03:00 UTC (in ",
    ] {
        assert!(row.contains(cell), "{cell:?} missing:\n{text}");
    }
    let json: Vec<raibid_client::ScheduleEntry> =
        serde_json::from_str(&cli(&up, &["schedule", "list", "-o", "json"])).unwrap();
    assert_eq!(json.len(), 1);
    assert_eq!(json[0].name, "nightly");
    assert!(json[0].next.unwrap() > chrono::Utc::now());
}

/// `raibid schedule run` queues the schedule's job at once, as the API's answer says; an unknown
/// name fails with the server's message.
#[tokio::test]
async fn schedule_run_queues_the_schedule_s_job_now() {
    let (repo, sha) = repo_with("steps:\n  - name: hello\n    run: echo hello-from-cron\n");
    let dir = tempfile::tempdir().unwrap();
    let schedules = format!(
        "[{{name: nightly, repo: acme/app, clone_url: \"{}\", cron: \"0 3 * * *\", env: {{FULL: \"1\"}}}}]",
        repo.url()
    );
    let up = Up::start(
        dir.path(),
        "",
        &[],
        &[("RAIBID_SERVER_SCHEDULES", schedules.as_str())],
    );
    let text = cli(&up, &["schedule", "run", "nightly"]);
    let id = text
        .strip_prefix("queued ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no job id in {text:?}"));
    assert!(
        text.contains("schedule nightly: acme/app at ") && text.contains(&sha[..10]),
        "{text}"
    );
    let job = up.client().job(id).await.unwrap();
    assert_eq!(job.spec.event, raibid_model::Event::Cron);
    assert_eq!(job.spec.schedule.as_deref(), Some("nightly"));
    assert_eq!(job.spec.sha, sha);
    assert_eq!(job.spec.env["FULL"], "1");

    let json: Job =
        serde_json::from_str(&cli(&up, &["schedule", "run", "nightly", "-o", "json"])).unwrap();
    assert_ne!(json.id, job.id);
    assert_eq!(json.spec.schedule.as_deref(), Some("nightly"));
    assert!(up.client().find_job(&json.id).await.unwrap().is_some());

    let error = cli_that_fails(&up, &["schedule", "run", "weekly"]);
    assert!(
        error.contains("404") && error.contains("schedule weekly not found in server.schedules"),
        "{error}"
    );
}

/// Runs a client command that must fail; returns what it wrote to standard error.
fn cli_that_fails(up: &Up, args: &[&str]) -> String {
    let out = cli_run(up, args);
    assert!(
        !out.status.success(),
        "raibid {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The variables of `raibid up`'s `env` file, as `. <data>/env` would set them.
fn up_env(up: &Up) -> Vec<(String, String)> {
    read(&up.data.join("env"))
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The banner's registry host of the current run. `raibid up` is ready (its `env` written)
/// a moment before it prints the banner, so the line is waited for.
fn registry_host(up: &Up) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = up.run_log();
        if let Some(line) = log
            .lines()
            .find(|l| l.trim_start().starts_with("registry "))
        {
            return line.split_whitespace().nth(1).unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no registry line:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Without a registry or a forge configured, `raibid up` brings its own (docker-registry,
/// requiring a login): a job's artifacts are kept there and `raibid job artifacts` fetches
/// them with the login from `env`; a restart takes the same port, which recorded references
/// name.
#[tokio::test]
async fn up_brings_a_private_registry_that_keeps_artifacts() {
    require_binary("docker-registry", "docker-registry");
    let dir = tempfile::tempdir().unwrap();
    let mut up = Up::start(dir.path(), "", &["--max-agents", "1"], &[]);
    let host = registry_host(&up);
    assert!(host.starts_with("127.0.0.1:"), "{host}");
    let password = read(&up.data.join("registry-password"));
    assert_eq!(mode(&up.data.join("registry-password")), 0o600);
    assert_eq!(mode(&up.data.join("registry")), 0o700);
    assert!(!up.log().contains(&password), "the password is printed");

    // Anonymous clients are refused.
    let port: u16 = host.rsplit(':').next().unwrap().parse().unwrap();
    let anonymous = http_get(port, "/v2/");
    assert!(
        anonymous.starts_with("HTTP/1.0 401") || anonymous.starts_with("HTTP/1.1 401"),
        "{anonymous}"
    );

    let client = up.client();
    let (repo, sha) = repo_with(
        "artifacts: [out]\nsteps:\n  - name: make\n    run: mkdir -p out && echo built-here > out/result.txt\n",
    );
    let job = submit(&client, &repo, &sha).await;
    let done = wait_final(&client, &job.id, Duration::from_secs(90)).await;
    assert_eq!(done.status, JobStatus::Success, "{done:?}\n{}", up.log());

    // Started again from a shell that sourced `env` (the registry's login in its variables).
    let sourced = up_env(&up);
    assert!(up.terminate(Duration::from_secs(30)), "{}", up.log());
    let sourced: Vec<(&str, &str)> = sourced
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    up.spawn(&["--max-agents", "1"], &sourced);
    assert_eq!(registry_host(&up), host, "the same port again");
    assert!(
        up.run_log().contains("(private, for image builds"),
        "its own registry again, not a configured one:\n{}",
        up.run_log()
    );

    let into = dir.path().join("fetched");
    let out = Command::new(RAIBID)
        .arg("--config")
        .arg(&up.config)
        .args(["job", "artifacts", &job.id, "--dir"])
        .arg(&into)
        .envs(up_env(&up))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read(&into.join("out/result.txt")), "built-here");
}

/// The pid of `up`'s redis-server (which names itself by its address, not its data) or
/// docker-registry (whose command line names its configuration in the data directory).
async fn child_of_up(up: &Up, program: &str) -> Option<i32> {
    let needle = if program == "redis-server" {
        format!("127.0.0.1:{}", up.redis_port().await)
    } else {
        up.data.to_string_lossy().into_owned()
    };
    processes_mentioning(Path::new(&needle))
        .into_iter()
        .find(|(_, c)| c.contains(program))
        .map(|(pid, _)| pid)
}

/// The private Redis and registry are started again when they die under a running `raibid
/// up` (SIGKILL, as the OOM killer sends), on their ports and from their data: the jobs of
/// before are still there, and a new job runs and keeps its artifacts.
#[tokio::test]
async fn up_starts_its_redis_and_registry_again_when_they_die() {
    require_binary("docker-registry", "docker-registry");
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), "", &["--max-agents", "1"], &[]);
    let client = up.client();
    let (repo, sha) = repo_with(
        "artifacts: [out]\nsteps:\n  - name: make\n    run: mkdir -p out && echo kept > out/r.txt\n",
    );
    let before = submit(&client, &repo, &sha).await;
    let done = wait_final(&client, &before.id, Duration::from_secs(90)).await;
    assert_eq!(done.status, JobStatus::Success, "{}", up.log());
    // The AOF is written every second.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut killed = Vec::new();
    for program in ["redis-server", "docker-registry"] {
        let pid = child_of_up(&up, program)
            .await
            .unwrap_or_else(|| panic!("no {program}"));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        killed.push((program, pid));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for (program, old) in killed {
        loop {
            match child_of_up(&up, program).await {
                Some(pid) if pid != old => break,
                _ => {
                    assert!(
                        Instant::now() < deadline,
                        "{program} not started again:\n{}",
                        up.log()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    // Said once each is ready, which is after its process is there to be seen.
    for program in ["redis-server", "docker-registry"] {
        let said = format!("started again process=\"{program}\"");
        while !up.log().contains(&said) {
            assert!(Instant::now() < deadline, "{said:?} in\n{}", up.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let kept = client.job(&before.id).await.unwrap();
    assert_eq!(kept.status, JobStatus::Success, "the job of before is kept");
    let after = submit(&client, &repo, &sha).await;
    let done = wait_final(&client, &after.id, Duration::from_secs(90)).await;
    assert_eq!(done.status, JobStatus::Success, "{done:?}\n{}", up.log());
}

/// `raibid up` collects its registry's unused layers at a quiet moment once
/// `up.registry_gc_interval_secs` has passed, without being started again: a deleted
/// artifact's layer goes, and the registry goes on serving jobs.
#[tokio::test]
async fn up_collects_its_registry_s_unused_layers_while_the_farm_is_quiet() {
    require_binary("docker-registry", "docker-registry");
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(
        dir.path(),
        "",
        &["--max-agents", "1"],
        &[("RAIBID_UP_REGISTRY_GC_INTERVAL_SECS", "4")],
    );
    let host = registry_host(&up);
    let login = raibid_oci::FetchOptions {
        insecure: true,
        credentials: Some((
            "raibid".to_owned(),
            read(&up.data.join("registry-password")).trim().to_owned(),
        )),
        ..raibid_oci::FetchOptions::default()
    };
    let archive = dir.path().join("archive");
    std::fs::write(&archive, b"an expired job's archive").unwrap();
    // The test's own pushes are no agent's, so the pool does not wait for them: one that
    // meets the registry restarting is tried again.
    let mut attempts = 0;
    let pushed = loop {
        let tag = format!("{host}/acme/app/artifacts:old");
        match raibid_oci::push_artifact(&tag, &archive, &Default::default(), &login).await {
            Ok(pushed) => match raibid_oci::delete_artifact(&pushed.reference, &login).await {
                Ok(true) => break pushed,
                other => panic!("delete: {other:?}"),
            },
            Err(e) if attempts < 10 => {
                attempts += 1;
                eprintln!("push: {e}; again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("push: {e}"),
        }
    };
    use sha2::Digest;
    let hex = format!("{:x}", sha2::Sha256::digest(b"an expired job's archive"));
    let layer = up
        .data
        .join("registry/data/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(&hex);
    assert!(
        pushed.size > 0 && layer.exists(),
        "pushed to {}",
        layer.display()
    );
    // The layer goes during the collection; the pool says so once the registry serves again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while layer.exists() || !up.log().contains("registry collected") {
        assert!(Instant::now() < deadline, "not collected:\n{}", up.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let client = up.client();
    let (repo, sha) = repo_with(
        "artifacts: [out]\nsteps:\n  - name: make\n    run: mkdir -p out && echo after > out/r.txt\n",
    );
    let job = submit(&client, &repo, &sha).await;
    let done = wait_final(&client, &job.id, Duration::from_secs(90)).await;
    assert_eq!(done.status, JobStatus::Success, "{done:?}\n{}", up.log());
    assert_eq!(registry_host(&up), host, "on its port");
}

/// `raibid pool pause` holds a job queued with no agent started for it, `raibid status` says
/// who paused it and why, and `raibid pool resume` lets the pool run it.
#[tokio::test]
async fn a_paused_pool_runs_nothing_until_resumed() {
    let (repo, sha) = repo_with("steps:\n  - name: hello\n    run: echo held-then-run\n");
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), "", &[], &[]);
    let client = up.client();

    // No cluster here: nothing is said of KEDA.
    let no_cluster = [("RAIBID_CLUSTER_KUBECONFIG", "/nonexistent/kubeconfig")];
    let out = cli_run_with(
        &up,
        &["pool", "pause", "default", "--reason", "new disk"],
        &no_cluster,
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("pool default paused by raibid-up ") && text.contains(": new disk"),
        "{text}"
    );
    assert!(!text.contains("KEDA") && out.stderr.is_empty(), "{out:?}");
    let job = submit(&client, &repo, &sha).await;
    // Several of the pool's looks (every 200 ms by default) go by without an agent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(client.job(&job.id).await.unwrap().status, JobStatus::Queued);
    assert!(
        agent_processes(&up.data).is_empty(),
        "{:?}",
        agent_processes(&up.data)
    );
    let status = cli(&up, &["status"]);
    assert!(status.contains("default (paused)"), "{status}");
    assert!(
        status.contains("default paused by raibid-up")
            && status.contains("`raibid pool resume default`"),
        "{status}"
    );
    assert!(status.contains("local (held: paused)"), "{status}");
    let shown = cli(&up, &["job", "show", &job.id]);
    assert!(
        shown.contains("held       pool default paused by raibid-up ")
            && shown.contains(": new disk: the job waits (`raibid pool resume default`)"),
        "{shown}"
    );
    let error = cli_that_fails(&up, &["pool", "pause", "defualt"]);
    assert!(
        error.contains("404") && error.contains("no pool defualt"),
        "{error}"
    );

    let text = cli(&up, &["pool", "resume", "default"]);
    assert!(text.starts_with("pool default is not paused"), "{text}");
    let done = wait_final(&client, &job.id, Duration::from_secs(60)).await;
    assert_eq!(done.status, JobStatus::Success);
}

/// Where this machine has a cluster, pausing a pool also pauses its KEDA ScaledJob (and
/// resuming resumes it); a cluster that refuses is a warning with the command to run by hand,
/// the pool paused all the same.
// Multi-threaded: the fake API server answers while the test waits for the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_pool_pauses_its_scaled_job_where_there_is_a_cluster() {
    let api = raibid_testkit::FakeKubeApi::start("k3s-arm64").await;
    let kubeconfig = api.kubeconfig().display().to_string();
    let env = [("RAIBID_CLUSTER_KUBECONFIG", kubeconfig.as_str())];
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), "", &[], &[("RAIBID_SERVER_POOLS", "[arm64]")]);

    let out = cli_run_with(&up, &["pool", "pause", "arm64"], &env);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("KEDA: ScaledJob raibid-agent-arm64 paused (it starts no agent pods)"),
        "{text}"
    );
    let annotation = &api.patches()[0].1["metadata"]["annotations"]["autoscaling.keda.sh/paused"];
    assert_eq!(annotation, "true");

    let out = cli_run_with(&up, &["pool", "resume", "arm64"], &env);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("KEDA: ScaledJob raibid-agent-arm64 resumed"),
        "{text}"
    );
    assert!(api.patches()[1].1["metadata"]["annotations"]["autoscaling.keda.sh/paused"].is_null());

    api.forbid("/apis/keda.sh/v1alpha1/namespaces/raibid-ci/scaledjobs/raibid-agent-arm64");
    let out = cli_run_with(&up, &["pool", "pause", "arm64"], &env);
    assert!(out.status.success(), "the pool is paused: {out:?}");
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(
        warning.contains("cannot patch")
            && warning.contains(
                "kubectl -n raibid-ci annotate scaledjob -l raibid.dev/pool=arm64 \
                 autoscaling.keda.sh/paused=true"
            ),
        "{warning}"
    );
    let paused = up.client().queues().await.unwrap();
    assert!(
        paused
            .pools
            .iter()
            .any(|p| p.pool.as_str() == "arm64" && p.paused.is_some())
    );
    // `raibid status` reads both and says they disagree.
    let out = cli_run_with(&up, &["status"], &env);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "note: pool arm64 is paused but its ScaledJob raibid-agent-arm64 is not: KEDA may \
             start agent pods"
        ),
        "{text}"
    );
}

/// The words of a systemd command line, as systemd reads them for a service whose
/// environment has no variable but PATH: split at spaces outside double quotes, `\\` and `\"`
/// unescaped inside them; then `%%` read as `%` (another specifier is not expected here) and,
/// in the arguments after the program's path, `$$` as `$`, and `$NAME` or `${NAME}` as the
/// variable's value, nothing for any but PATH.
fn systemd_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars();
    let mut word: Option<String> = None;
    while let Some(c) = chars.next() {
        match c {
            ' ' => words.extend(word.take()),
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next().expect("closing quote") {
                        '"' => break,
                        '\\' => w.push(chars.next().expect("escaped character")),
                        c => w.push(c),
                    }
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
        .iter()
        .enumerate()
        .map(|(i, w)| systemd_expand(w, i > 0))
        .collect()
}

fn systemd_expand(word: &str, variables: bool) -> String {
    let mut out = String::new();
    let mut chars = word.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek().copied()) {
            ('%', Some('%')) => out.push(chars.next().unwrap()),
            ('%', next) => panic!("specifier %{next:?} in {word:?}"),
            ('$', Some('$')) if variables => out.push(chars.next().unwrap()),
            ('$', Some(_)) if variables => {
                let braced = chars.next_if_eq(&'{').is_some();
                let mut name = String::new();
                while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_') {
                    name.push(c);
                }
                if braced {
                    assert_eq!(chars.next(), Some('}'), "{word:?}");
                }
                if name == "PATH" {
                    out.push_str(&std::env::var("PATH").unwrap());
                }
            }
            (c, _) => out.push(c),
        }
    }
    out
}

/// The value of `key=` in a unit's text.
fn unit_setting<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in:\n{unit}"))
}

/// `raibid up --systemd-unit` writes a unit that systemd accepts and that runs this `raibid
/// up`: a data directory whose name has a space, `%` and `$` reaches it as it was, started as
/// systemd starts a service (from `/`, with the unit's environment alone). systemd stops it
/// as the unit says (KillMode=mixed: SIGTERM to `raibid up` alone), and the running job
/// still ends as it would have, within the unit's TimeoutStopSec, nothing left behind.
#[tokio::test]
async fn the_systemd_unit_starts_this_up_and_stops_it_in_order() {
    require_binary("systemd-analyze", "systemd");
    require_binary("redis-server", "redis-server");
    require_binary("bwrap", "bubblewrap");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ci data 100% $HOME");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "redis:\n  stale_after_secs: 2\nup:\n  polling_interval_ms: 100\n  cooldown_secs: 2\nagent:\n  heartbeat_interval_secs: 1\n  grace_period_secs: 2\n",
    )
    .unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let written = Command::new(RAIBID)
        .arg("--config")
        .arg(&config)
        .args(["up", "--systemd-unit", "--data-dir"])
        .arg(&data)
        .args(["--listen", &listen])
        .output()
        .unwrap();
    assert!(written.status.success(), "{written:?}");
    let unit = String::from_utf8(written.stdout).unwrap();
    assert!(!data.exists(), "it started nothing");

    let unit_file = dir.path().join("raibid-up.service");
    std::fs::write(&unit_file, &unit).unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_file)
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}\n{unit}",
        String::from_utf8_lossy(&verify.stderr)
    );

    let argv = systemd_words(unit_setting(&unit, "ExecStart"));
    let raibid = std::fs::canonicalize(RAIBID).unwrap();
    assert_eq!(
        argv,
        [
            raibid.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "up",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &listen
        ],
        "{unit}"
    );
    assert_eq!(unit_setting(&unit, "KillMode"), "mixed");
    let stop_timeout: u64 = unit_setting(&unit, "TimeoutStopSec").parse().unwrap();
    assert!(stop_timeout > 2 + 15 + 10 + 10, "{stop_timeout}");
    let environment = systemd_words(unit_setting(&unit, "Environment"));
    let path = environment[0].strip_prefix("PATH=").unwrap();

    // As systemd runs it.
    let mut up = Up {
        child: None,
        data: data.clone(),
        config,
        port,
        run_start: 0,
    };
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env_clear()
        .env("PATH", path)
        .current_dir("/");
    up.spawn_command(command);
    let (_repo, job) = a_running_short_job(&up).await;
    assert!(
        up.terminate(Duration::from_secs(stop_timeout)),
        "{}",
        up.log()
    );
    // KillMode=mixed would SIGKILL what is left now: there must be nothing.
    assert_eq!(processes_mentioning(&data), vec![], "{}", up.log());

    assert_it_ended_once_as_success(&mut up, &job).await;
}

/// What must not be written into a file every user can read, and what a service does not do,
/// is refused, naming what to do instead.
#[test]
fn the_systemd_unit_holds_no_secret_and_runs_no_demo() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(RAIBID)
            .args(["up", "--systemd-unit", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let said = refused(&["--webhook-secret", "hunter2"], &[]);
    assert!(said.contains("--webhook-secret-file"), "{said}");
    assert!(!said.contains("hunter2"), "{said}");
    let said = refused(&[], &[("RAIBID_UP_WEBHOOK_SECRET", "hunter2")]);
    assert!(said.contains("--webhook-secret-file"), "{said}");
    let said = refused(&["--redis-url", "redis://:hunter2@10.0.0.5:6379"], &[]);
    assert!(said.contains("redis.url in the configuration"), "{said}");
    assert!(!said.contains("hunter2"), "{said}");
    let said = refused(&["--demo"], &[]);
    assert!(said.contains("--demo"), "{said}");

    // Configuration from the environment is named, not written.
    let out = Command::new(RAIBID)
        .args(["up", "--systemd-unit", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RAIBID_GITEA_TOKEN", "hunter2")
        .env("RAIBID_SERVER", "http://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (unit, said) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    assert!(
        !unit.contains("hunter2") && !unit.contains("RAIBID_GITEA_TOKEN"),
        "{unit}"
    );
    assert!(
        said.contains("RAIBID_GITEA_TOKEN set here and not written into the unit")
            && said.contains("service.env")
            && !said.contains("RAIBID_SERVER")
            && !said.contains("hunter2"),
        "{said}"
    );
}
