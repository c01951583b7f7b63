//! `raibid job logs --follow`, `raibid job artifacts` and `raibid job list` against a real
//! `raibid server` process and redis-server (and a real registry for the artifacts).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raibid_model::{Event, JobStatus, NewJob, Outcome, PoolName};
use raibid_queue::{Claimed, Queue, QueueOptions};
use raibid_testkit::RedisServer;
use tokio::io::AsyncReadExt;

const RAIBID: &str = env!("CARGO_BIN_EXE_raibid");
const WAIT: Duration = Duration::from_secs(30);

/// `raibid server` on `port`; returns once it accepts connections.
fn start_server(config: &Path, port: u16, redis_url: &str) -> Server {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut child = Command::new(RAIBID)
            .arg("--config")
            .arg(config)
            .args(["server", "--listen", &format!("127.0.0.1:{port}")])
            .env("RAIBID_REDIS_URL", redis_url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Server(child);
            }
            // The port may still be held by the previous process for a moment.
            if child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A `raibid server` process, killed when dropped: a test that fails half-way must not leave
/// it running.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stop(server: Server) {
    drop(server);
}

/// The job these tests queue (a submission of `acme/app` at main).
fn spec() -> NewJob {
    NewJob::new(
        "acme/app",
        "https://git.example/acme/app.git",
        "refs/heads/main",
        "0123456789abcdef0123456789abcdef01234567",
        Event::Manual,
    )
}

async fn running_job(queue: &Queue) -> Claimed {
    queue.enqueue(spec()).await.unwrap();
    queue
        .claimer("agent-1")
        .await
        .unwrap()
        .claim(&[PoolName::default()], Duration::ZERO)
        .await
        .unwrap()
        .expect("the job just queued")
}

/// `raibid job logs --follow <id>` with its output collected as it comes.
struct Follower {
    child: tokio::process::Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Follower {
    fn start(config: &Path, url: &str, id: &str, extra: &[&str]) -> Self {
        let mut child = tokio::process::Command::new(RAIBID)
            .arg("--config")
            .arg(config)
            .args(["job", "logs", "--follow", id, "--server", url])
            .args(extra)
            .env_remove("RAIBID_REDIS_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let collect = |mut pipe: Box<dyn tokio::io::AsyncRead + Send + Unpin>| {
            let text = Arc::new(Mutex::new(String::new()));
            let sink = Arc::clone(&text);
            tokio::spawn(async move {
                let mut buf = [0; 4096];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
            text
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Self {
            child,
            stdout,
            stderr,
        }
    }

    async fn wait_for_output(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.stdout.lock().unwrap().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the output; stderr: {}",
                self.stderr.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Exit status, stdout, stderr once the command has ended.
    async fn finish(mut self) -> (std::process::ExitStatus, String, String) {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the command ended in time")
            .unwrap();
        // The pipes are closed: let the readers take the last bytes.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stdout = self.stdout.lock().unwrap().clone();
        let stderr = self.stderr.lock().unwrap().clone();
        (status, stdout, stderr)
    }
}

fn empty_config(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("config.yaml");
    std::fs::write(&file, "").unwrap();
    file
}

/// A configuration file in `dir` whose server takes `token` for changes.
fn config_with_token(dir: &Path, token: &str) -> std::path::PathBuf {
    use sha2::Digest;
    let file = dir.join("config.yaml");
    let hash = sha2::Sha256::digest(token.as_bytes());
    std::fs::write(&file, format!("server:\n  tokens: [\"sha256:{hash:x}\"]\n")).unwrap();
    file
}

/// A `raibid server` process on its own Redis, with one running job to follow.
struct Setup {
    redis: RedisServer,
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
    port: u16,
    url: String,
    server: Server,
    queue: Queue,
    claimed: Claimed,
    id: String,
}

impl Setup {
    async fn new() -> Self {
        let redis = RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let config = empty_config(dir.path());
        let port = raibid_testkit::free_port();
        let url = format!("http://127.0.0.1:{port}");
        let server = start_server(&config, port, &redis.url());
        let queue = Queue::open(QueueOptions::new(redis.url())).unwrap();
        let claimed = running_job(&queue).await;
        let id = claimed.job.id.clone();
        Self {
            redis,
            _dir: dir,
            config,
            port,
            url,
            server,
            queue,
            claimed,
            id,
        }
    }
}

#[tokio::test]
async fn follow_resumes_through_a_server_restart_printing_each_line_once() {
    let Setup {
        redis,
        _dir,
        config,
        port,
        url,
        server,
        queue,
        claimed,
        id,
    } = Setup::new().await;
    let line = |n: usize| format!("line {n}\n");

    for n in 1..=3 {
        queue.append_log(&id, line(n).as_bytes()).await.unwrap();
    }
    let follower = Follower::start(&config, &url, &id, &[]);
    follower.wait_for_output(&line(3)).await;

    stop(server);
    for n in 4..=6 {
        queue.append_log(&id, line(n).as_bytes()).await.unwrap();
    }
    // Long enough for the follower to fail at least one reconnect.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server = start_server(&config, port, &redis.url());
    for n in 7..=9 {
        queue.append_log(&id, line(n).as_bytes()).await.unwrap();
    }
    follower.wait_for_output(&line(9)).await;
    queue
        .ack(&claimed, &Outcome::new(JobStatus::Success))
        .await
        .unwrap();

    let (status, stdout, stderr) = follower.finish().await;
    stop(server);
    let expected: String = (1..=9).map(line).collect();
    assert_eq!(stdout, expected, "stderr: {stderr}");
    assert!(status.success(), "{status:?}; stderr: {stderr}");
    assert!(stderr.contains("reconnecting"), "{stderr}");
    assert!(
        stderr.contains(&format!("job {id} finished: success")),
        "{stderr}"
    );
}

#[tokio::test]
async fn follow_gives_up_when_the_job_stays_unreadable() {
    let Setup {
        redis: _redis,
        _dir,
        config,
        port: _port,
        url,
        server,
        queue,
        claimed: _claimed,
        id,
    } = Setup::new().await;
    queue.append_log(&id, b"only line\n").await.unwrap();

    // No such job: asking again will not help, so it fails at once.
    let missing = Follower::start(&config, &url, "01JABCDEFGHJKMNPQRSTVWXYZ0", &[]);
    let (status, _, stderr) = missing.finish().await;
    assert!(!status.success());
    assert!(stderr.contains("not found"), "{stderr}");
    assert!(!stderr.contains("reconnecting"), "{stderr}");

    let follower = Follower::start(&config, &url, &id, &["--retry-for", "2"]);
    follower.wait_for_output("only line\n").await;
    let stopped = Instant::now();
    stop(server);
    let (status, stdout, stderr) = follower.finish().await;
    assert!(!status.success());
    assert!(stopped.elapsed() < Duration::from_secs(15), "{stderr}");
    assert_eq!(stdout, "only line\n");
    assert!(
        stderr.contains(&format!("could not read job {id} for 2 s")),
        "{stderr}"
    );
}

/// `raibid job artifacts` downloads what an agent pushed (here: pushed as an agent does, with
/// the agent's packing) and unpacks it: through the server, with the server's registry login
/// (`agent.registry` in its configuration) and none of the user's; or with `--from-registry`
/// from the registry itself, with the user's.
#[tokio::test]
async fn job_artifacts_come_back_from_the_registry_into_a_directory() {
    use raibid_testkit::Registry;
    use raibid_testkit::registry::{TEST_PASSWORD, TEST_PASSWORD_BCRYPT, TEST_USER};

    let Setup {
        redis,
        _dir,
        config: server_config,
        port,
        url,
        server,
        queue,
        claimed,
        id,
    } = Setup::new().await;
    let registry = Registry::start_with_auth(TEST_USER, TEST_PASSWORD, TEST_PASSWORD_BCRYPT);
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(ws.join("dist")).unwrap();
    std::fs::write(ws.join("dist/app"), "binary").unwrap();
    let archive = dir.path().join("a.tar.gz");
    raibid_agent::artifacts::pack(
        &ws,
        &["dist".to_owned()],
        &archive,
        1 << 20,
        &tokio_util::sync::CancellationToken::new(),
    )
    .unwrap();
    let login = raibid_oci::FetchOptions {
        credentials: Some((TEST_USER.to_owned(), TEST_PASSWORD.to_owned())),
        ..raibid_oci::FetchOptions::default()
    };
    let pushed = raibid_oci::push_artifact(
        &format!("{}/acme/app/artifacts:{id}", registry.host()),
        &archive,
        &Default::default(),
        &login,
    )
    .await
    .unwrap();
    let mut outcome = Outcome::new(JobStatus::Success);
    outcome.artifacts = Some(raibid_model::JobArtifacts {
        reference: pushed.reference.clone(),
        size: pushed.size,
        files: 1,
        expires_at: None,
        expired: false,
    });
    assert!(queue.ack(&claimed, &outcome).await.unwrap());

    let with_login = dir.path().join("config.yaml");
    std::fs::write(
        &with_login,
        format!(
            "agent:\n  registry:\n    host: \"{}\"\n    username: {TEST_USER}\n    password: {TEST_PASSWORD}\n",
            registry.host()
        ),
    )
    .unwrap();
    let cli = |config: &Path, args: &[&str]| {
        Command::new(RAIBID)
            .arg("--config")
            .arg(config)
            .args(args)
            .args(["--server", &url])
            .env_remove("RAIBID_REDIS_URL")
            .output()
            .unwrap()
    };
    let download = |config: &Path, out_dir: &Path, extra: &[&str]| {
        let mut args = vec!["job", "artifacts", &id, "--dir", out_dir.to_str().unwrap()];
        args.extend(extra);
        cli(config, &args)
    };
    let downloaded = |out: std::process::Output, out_dir: &Path| {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            stdout,
            format!("1 file of {} in {}\n", pushed.reference, out_dir.display())
        );
        assert_eq!(
            std::fs::read_to_string(out_dir.join("dist/app")).unwrap(),
            "binary"
        );
    };
    let without = dir.path().join("empty.yaml");
    std::fs::write(&without, "").unwrap();

    // From the registry itself, with the user's login.
    let out_dir = dir.path().join("out");
    downloaded(
        download(&with_login, &out_dir, &["--from-registry"]),
        &out_dir,
    );

    // Through a server without a login there: the registry refuses it, and the command says
    // what the server said.
    let out = download(&with_login, &dir.path().join("y"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("through the server") && stderr.contains("bad_gateway"),
        "{stderr}"
    );
    assert!(!dir.path().join("y").exists());

    // Through a server with the login: the user needs none.
    stop(server);
    std::fs::copy(&with_login, &server_config).unwrap();
    let server = start_server(&server_config, port, &redis.url());
    let out_dir = dir.path().join("through-the-server");
    downloaded(download(&without, &out_dir, &[]), &out_dir);
    let shown = cli(&with_login, &["job", "show", &id]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains(&format!("artifacts  {} (1 files", pushed.reference)),
        "{shown}"
    );

    // From the registry without the login: refused, and the command says so.
    let out = download(&without, &dir.path().join("x"), &["--from-registry"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("downloading {}", pushed.reference))
            && stderr.contains("cannot authenticate"),
        "{stderr}"
    );
    assert!(!dir.path().join("x").exists());

    // Once an agent deleted them (agent.artifacts_expire_days), the command says so.
    assert!(
        queue
            .mark_artifacts_expired(&id, &pushed.reference)
            .await
            .unwrap()
    );
    let out = cli(&with_login, &["job", "artifacts", &id]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("the artifacts of job {id} expired")),
        "{stderr}"
    );
    let shown = cli(&with_login, &["job", "show", &id]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("artifacts  expired"), "{shown}");

    // A job without artifacts.
    let other = running_job(&queue).await;
    assert!(
        queue
            .ack(&other, &Outcome::new(JobStatus::Success))
            .await
            .unwrap()
    );
    let out = cli(&with_login, &["job", "artifacts", &other.job.id]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("has no artifacts"), "{stderr}");
    stop(server);
}

/// `raibid job list --branch` and `--event` ask the server for those jobs only.
#[tokio::test]
async fn job_list_filters_by_branch_and_event() {
    let setup = Setup::new().await;
    let spec = |git_ref: &str, event| {
        NewJob::new(
            "acme/app",
            "https://git.example/acme/app.git",
            git_ref,
            "0123456789abcdef0123456789abcdef01234567",
            event,
        )
    };
    let dev = setup
        .queue
        .enqueue(spec("refs/heads/dev", Event::Push))
        .await
        .unwrap();
    let tag = setup
        .queue
        .enqueue(spec("refs/tags/v1.0.0", Event::Tag))
        .await
        .unwrap();
    let id = |e: raibid_queue::Enqueued| match e {
        raibid_queue::Enqueued::Created(job) => job.id,
        other => panic!("{other:?}"),
    };
    let (dev, tag) = (id(dev), id(tag));
    let list = |filters: &[&str]| {
        let out = Command::new(RAIBID)
            .arg("--config")
            .arg(&setup.config)
            .args(["job", "list", "--server", &setup.url, "--output", "json"])
            .args(filters)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{filters:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let page: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(list(&["--branch", "dev"]), [dev]);
    assert_eq!(list(&["--event", "tag"]), [tag]);
    assert_eq!(
        list(&["--branch", "main", "--event", "manual"]),
        std::slice::from_ref(&setup.id)
    );
    assert_eq!(
        list(&["--branch", "dev", "--event", "manual"]),
        Vec::<String>::new()
    );
    assert_eq!(list(&[]).len(), 3);

    let out = Command::new(RAIBID)
        .arg("--config")
        .arg(&setup.config)
        .args(["job", "list", "--server", &setup.url, "--event", "deploy"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown event \"deploy\""), "{err}");
}

/// `raibid repo list` and `raibid repo show` against a real server: the repositories with
/// jobs, and a repository's refs with their newest builds, as tables and as JSON.
#[tokio::test]
async fn repo_list_and_show_read_the_repositories_api() {
    let setup = Setup::new().await;
    let tag = setup
        .queue
        .enqueue(NewJob::new(
            "acme/app",
            "https://git.example/acme/app.git",
            "refs/tags/v1.0.0",
            "0123456789abcdef0123456789abcdef01234567",
            Event::Tag,
        ))
        .await
        .unwrap();
    let raibid_queue::Enqueued::Created(tag) = tag else {
        panic!("{tag:?}")
    };
    let repo = |args: &[&str]| {
        let out = Command::new(RAIBID)
            .arg("--config")
            .arg(&setup.config)
            .args(["repo", "--server", &setup.url])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = repo(&["list", "--output", "json"]);
    assert!(ok, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["repo"], "acme/app", "{list}");
    assert_eq!(list[0]["latest"]["job"]["id"], tag.id.as_str(), "{list}");
    let (ok, out, err) = repo(&["list"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("REPO"), "{out}");
    assert!(
        out.contains("acme/app") && out.contains("tags/v1.0.0"),
        "{out}"
    );

    let (ok, out, err) = repo(&["show", "acme/app"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("BRANCH"), "{out}");
    assert!(
        lines[1].starts_with("main") && lines[1].contains(&setup.id),
        "the running job of main: {out}"
    );
    assert!(out.contains("TAG") && out.contains(&tag.id), "{out}");
    let (ok, out, err) = repo(&["show", "acme/app", "--output", "json"]);
    assert!(ok, "{err}");
    let overview: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(overview["branches"][0]["status"], "running", "{overview}");
    assert_eq!(overview["complete"], true);

    let (ok, _, err) = repo(&["show", "acme/none"]);
    assert!(!ok);
    assert!(err.contains("no jobs of acme/none"), "{err}");
    let (ok, _, err) = repo(&["show", "acme"]);
    assert!(!ok);
    assert!(
        err.contains("\"acme\" is not a repository (owner/name)"),
        "{err}"
    );
}

/// `raibid job erase-log` against a real server with a token: refused while the job runs,
/// then the log is gone and `raibid job logs` prints who erased it.
#[tokio::test]
async fn erase_log_erases_a_finished_job_s_log() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let token = "rbd_erase_test_token_31";
    let config = config_with_token(dir.path(), token);
    let port = raibid_testkit::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _server = start_server(&config, port, &redis.url());
    let queue = Queue::open(QueueOptions::new(redis.url())).unwrap();
    let claimed = running_job(&queue).await;
    let id = claimed.job.id.clone();
    queue.append_log(&id, b"password=hunter2\n").await.unwrap();
    let raibid = |args: &[&str]| {
        let out = Command::new(RAIBID)
            .arg("--config")
            .arg(&config)
            .args(args)
            .args(["--server", &url, "--token", token])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = raibid(&["job", "erase-log", &id]);
    assert!(!ok);
    assert!(
        err.contains("is running: a log is erased once its job has ended"),
        "{err}"
    );
    assert!(
        queue
            .ack(&claimed, &Outcome::new(JobStatus::Success))
            .await
            .unwrap()
    );
    let (ok, out, err) = raibid(&["job", "erase-log", &id]);
    assert!(ok, "{err}");
    assert!(out.starts_with("this job's log was erased by "), "{out}");
    let (ok, out, err) = raibid(&["job", "logs", &id]);
    assert!(ok, "{err}");
    assert!(!out.contains("hunter2"), "{out}");
    assert!(
        out.contains("[raibid] this job's log was erased by "),
        "{out}"
    );

    // `--build`: the job's and those of the jobs it queued.
    let child = running_job(&queue).await;
    queue
        .append_log(&child.job.id, b"password=hunter2\n")
        .await
        .unwrap();
    queue
        .set_children(&id, std::slice::from_ref(&child.job.id))
        .await
        .unwrap();
    let (ok, _, err) = raibid(&["job", "erase-log", "--build", &id]);
    assert!(!ok);
    assert!(
        err.contains(&format!("job {} of this build is running", child.job.id)),
        "{err}"
    );
    queue
        .ack(&child, &Outcome::new(JobStatus::Failure))
        .await
        .unwrap();
    let (ok, out, err) = raibid(&["job", "erase-log", "--build", &id]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        format!(
            "erased the logs of 2 job(s) of the build:\n  {id}\n  {}\n",
            child.job.id
        )
    );
    let (_, out, _) = raibid(&["job", "logs", &child.job.id]);
    assert!(!out.contains("hunter2"), "{out}");
}

/// Following a matrix job follows the build: its own log, then each variant's in turn, and
/// the exit status is the variants' (a matrix job succeeds as soon as it has queued them, so
/// a script that waited on it alone would take a failed build for a passed one).
#[tokio::test]
async fn follow_of_a_matrix_job_follows_its_variants_and_exits_as_they_ended() {
    let Setup {
        redis: _redis,
        _dir,
        config,
        port: _,
        url,
        server,
        queue,
        claimed,
        id,
    } = Setup::new().await;
    let mut variants = Vec::new();
    for name in ["OS=linux", "OS=mac"] {
        let mut spec = spec();
        spec.matrix_parent = Some(id.clone());
        spec.env.insert("RAIBID_MATRIX".into(), name.into());
        let job = match queue.enqueue(spec).await.unwrap() {
            raibid_queue::Enqueued::Created(job) => job,
            other => panic!("{other:?}"),
        };
        variants.push(job.id);
    }
    queue
        .append_log(&id, b"queued two variants\n")
        .await
        .unwrap();
    queue.set_children(&id, &variants).await.unwrap();
    let follower = Follower::start(&config, &url, &id, &[]);
    follower.wait_for_output("queued two variants\n").await;
    queue
        .ack(&claimed, &Outcome::new(JobStatus::Success))
        .await
        .unwrap();

    // The variants run side by side: the second ends first, failing.
    let mut claimer = queue.claimer("agent-2").await.unwrap();
    let mut running = Vec::new();
    for _ in 0..2 {
        let claimed = claimer
            .claim(&[PoolName::default()], Duration::ZERO)
            .await
            .unwrap()
            .expect("a variant");
        running.push(claimed);
    }
    running.sort_by_key(|c| variants.iter().position(|v| *v == c.job.id));
    queue
        .append_log(&variants[1], b"mac fails\n")
        .await
        .unwrap();
    let mut failure = Outcome::new(JobStatus::Failure);
    failure.reason = Some("step test exit code 1".into());
    queue.ack(&running[1], &failure).await.unwrap();
    queue
        .append_log(&variants[0], b"linux passes\n")
        .await
        .unwrap();
    follower.wait_for_output("linux passes\n").await;
    queue
        .ack(&running[0], &Outcome::new(JobStatus::Success))
        .await
        .unwrap();

    let (status, stdout, stderr) = follower.finish().await;
    stop(server);
    assert_eq!(
        stdout, "queued two variants\nlinux passes\nmac fails\n",
        "stderr: {stderr}"
    );
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    // The matrix job is not said to be finished: the build is not.
    assert!(!stderr.contains(&format!("job {id} finished")), "{stderr}");
    for line in [
        format!("job {id} queued 2 job(s); following them\n"),
        format!("── OS=linux ({}) ──\n", variants[0]),
        format!("job {} finished: success\n", variants[0]),
        format!("── OS=mac ({}) ──\n", variants[1]),
        format!("job {} finished: failure\n", variants[1]),
    ] {
        assert!(stderr.contains(&line), "{line:?} in\n{stderr}");
    }
}

/// A log carries the agent's escape codes (and the steps' own): `raibid job logs` writes them
/// to a terminal, and to a pipe or file only when asked (`--color always`, CLICOLOR_FORCE),
/// so that `raibid job logs <id> > build.log` or `| grep` reads plain text. An escape code
/// split between two appends (two reads, two events of a followed log) is removed whole.
#[tokio::test]
async fn logs_are_plain_text_in_a_pipe_unless_colours_are_asked_for() {
    let Setup {
        redis: _redis,
        _dir,
        config,
        port: _,
        url,
        server: _server,
        queue,
        claimed,
        id,
    } = Setup::new().await;
    let parts: [&[u8]; 2] = [
        b"\x1b[1;36m\xe2\x96\xb6 step build\x1b[0m \x1b[2m12:00\x1b[0m\n\x1b[3",
        b"1merror\x1b[0m: it broke\r\n",
    ];
    for part in parts {
        queue.append_log(&id, part).await.unwrap();
    }
    let coloured = parts.concat();
    let plain = "\u{25b6} step build 12:00\nerror: it broke\r\n";

    let logs = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(RAIBID)
            .arg("--config")
            .arg(&config)
            .args(["job", "logs", &id, "--server", &url])
            .args(args)
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR")
            .env_remove("CLICOLOR_FORCE")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        out.stdout
    };
    assert_eq!(String::from_utf8(logs(&[], &[])).unwrap(), plain);
    assert_eq!(
        String::from_utf8(logs(&["--color", "never"], &[("CLICOLOR_FORCE", "1")])).unwrap(),
        plain
    );
    assert_eq!(logs(&["--color", "always"], &[]), coloured);
    assert_eq!(logs(&[], &[("CLICOLOR_FORCE", "1")]), coloured);

    let follower = Follower::start(&config, &url, &id, &[]);
    follower.wait_for_output("it broke").await;
    queue
        .ack(&claimed, &Outcome::new(JobStatus::Success))
        .await
        .unwrap();
    let (status, stdout, stderr) = follower.finish().await;
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, plain);
}

/// A TCP proxy on a free loopback port to `to` that lets the first connection's request reach
/// the server and drops the server's answer, as a proxy that timed out or a broken network
/// does after the server has acted on it; later connections pass both ways.
async fn losing_the_first_answer(to: u16) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let mut server = tokio::net::TcpStream::connect(("127.0.0.1", to))
                .await
                .unwrap();
            if !std::mem::take(&mut first) {
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                continue;
            }
            tokio::spawn(async move {
                let (mut from_client, _to_client) = client.split();
                let (mut from_server, mut to_server) = server.split();
                let request = tokio::io::copy(&mut from_client, &mut to_server);
                let mut answer = [0u8; 1];
                // Until the server starts answering: the request has been acted on.
                tokio::select! {
                    _ = request => {}
                    _ = from_server.read(&mut answer) => {}
                }
                let _ = to_server.shutdown().await;
            });
        }
    });
    port
}

/// `raibid job submit` whose answer is lost on the way (the job was queued): the CLI sends the
/// submission again with the same `Idempotency-Key`, the server answers with the job the first
/// sending queued, and one job is queued, not one per sending.
#[tokio::test]
async fn submit_whose_answer_was_lost_queues_one_job() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let token = "rbd_submit_test_token_52";
    let config = config_with_token(dir.path(), token);
    let port = raibid_testkit::free_port();
    let _server = start_server(&config, port, &redis.url());
    let queue = Queue::open(QueueOptions::new(redis.url())).unwrap();
    let proxy = losing_the_first_answer(port).await;

    let out = tokio::process::Command::new(RAIBID)
        .arg("--config")
        .arg(&config)
        .args(["job", "submit", "acme/app", "--sha"])
        .arg("0123456789abcdef0123456789abcdef01234567")
        .args([
            "--clone-url",
            "https://git.example/acme/app.git",
            "-o",
            "json",
        ])
        .args([
            "--server",
            &format!("http://127.0.0.1:{proxy}"),
            "--token",
            token,
        ])
        .output();
    let out = tokio::time::timeout(WAIT, out)
        .await
        .expect("the submission ends")
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("cannot queue the job"), "{stderr}");
    let job: raibid_model::Job = serde_json::from_str(&stdout).unwrap();
    let listed = queue
        .list(&raibid_queue::JobFilter::default(), None, 100)
        .await
        .unwrap();
    let ids: Vec<&str> = listed.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, [job.id.as_str()], "one job however often it was sent");
}
