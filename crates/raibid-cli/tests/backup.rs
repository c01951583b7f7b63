//! `raibid backup` and `raibid restore` with real redis-servers: a Redis given by URL, `raibid
//! up`'s data directory stopped and in use, and the AOF a restore writes read back by a
//! redis-server started as `raibid up` starts its own.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use raibid_model::{Event, NewJob};
use raibid_queue::{Enqueued, Queue, QueueOptions};
use raibid_testkit::{RedisOptions, RedisServer, free_port};

const RAIBID: &str = env!("CARGO_BIN_EXE_raibid");

fn raibid(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "").unwrap();
    Command::new(RAIBID)
        .arg("--config")
        .arg(&config)
        .args(args)
        .env_remove("RAIBID_REDIS_URL")
        .output()
        .unwrap()
}

/// `raibid backup <from...> -o <file>`, which must succeed and write an RDB file (0600);
/// what it printed.
fn back_up(from: &[&str], file: &Path) -> String {
    let mut args = vec!["backup"];
    args.extend(from);
    args.extend(["-o", file.to_str().unwrap()]);
    let said = ok(&raibid(&args));
    assert!(is_rdb(file), "{} is an RDB file", file.display());
    said
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn is_rdb(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let bytes = std::fs::read(path).unwrap();
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} is private", path.display());
    bytes.starts_with(b"REDIS")
}

async fn queued(queue: &Queue) -> String {
    let spec = NewJob::new(
        "acme/app",
        "https://git.example/acme/app.git",
        "refs/heads/main",
        "0123456789abcdef0123456789abcdef01234567",
        Event::Push,
    );
    match queue.enqueue(spec).await.unwrap() {
        Enqueued::Created(job) => job.id,
        other => panic!("{other:?}"),
    }
}

/// redis-server on `raibid up`'s data directory, started as `raibid up` starts it (AOF on,
/// its password), killed on drop.
struct UpRedis {
    child: Child,
    url: String,
}

impl UpRedis {
    fn start(data_dir: &Path) -> Self {
        let password = std::fs::read_to_string(data_dir.join("redis-password")).unwrap();
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
            .arg(data_dir.join("redis"))
            .args([
                "--appendonly",
                "yes",
                "--save",
                "",
                "--requirepass",
                password.trim(),
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            url: format!("redis://:{}@127.0.0.1:{port}/", password.trim()),
        }
    }

    /// Its queue, once Redis answers: it takes connections while it still loads the AOF,
    /// and answers those `LOADING` meanwhile.
    async fn queue(&self) -> Queue {
        let queue = Queue::open(QueueOptions::new(self.url.clone())).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Err(e) = queue.ping().await {
            assert!(
                Instant::now() < deadline,
                "redis-server did not load its data: {e}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        queue
    }
}

impl Drop for UpRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `up.lock` a running `raibid up` holds on its data directory.
fn hold_up_lock(data_dir: &Path) -> Flock<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data_dir.join("up.lock"))
        .unwrap();
    Flock::lock(file, FlockArg::LockExclusiveNonblock).unwrap()
}

#[tokio::test]
async fn a_backup_restored_into_raibid_up_s_data_holds_the_jobs() {
    let redis = RedisServer::start_with(RedisOptions {
        password: Some("s3cret".into()),
        ..Default::default()
    });
    let queue = Queue::open(QueueOptions::new(redis.url())).unwrap();
    let id = queued(&queue).await;
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("one.rdb");
    let said = back_up(&["--redis-url", &redis.url()], &backup);
    assert!(!said.contains("s3cret"), "{said}");

    // Into a data directory raibid up has not used yet.
    let up = dir.path().join("up");
    let said = ok(&raibid(&[
        "restore",
        backup.to_str().unwrap(),
        "--data-dir",
        up.to_str().unwrap(),
    ]));
    assert!(said.contains("secrets-key"), "{said}");
    {
        let restored = UpRedis::start(&up);
        let job = restored
            .queue()
            .await
            .get(&id)
            .await
            .unwrap()
            .expect("the job is back");
        assert_eq!(job.spec.repo, "acme/app");
    }

    // From raibid up's data while it is stopped (its AOF read by a redis-server of the
    // backup's own), then into another data directory that had data of its own.
    let second = dir.path().join("two.rdb");
    back_up(&["--data-dir", up.to_str().unwrap()], &second);
    let other = dir.path().join("other");
    ok(&raibid(&[
        "restore",
        backup.to_str().unwrap(),
        "--data-dir",
        other.to_str().unwrap(),
    ]));
    let later = {
        let redis = UpRedis::start(&other);
        queued(&redis.queue().await).await
    };
    let said = ok(&raibid(&[
        "restore",
        second.to_str().unwrap(),
        "--data-dir",
        other.to_str().unwrap(),
    ]));
    assert!(said.contains("appendonlydir.before-restore-"), "{said}");
    let restored = UpRedis::start(&other);
    assert!(restored.queue().await.get(&id).await.unwrap().is_some());
    assert!(
        restored.queue().await.get(&later).await.unwrap().is_none(),
        "the data the backup did not hold is gone (kept aside)"
    );
}

#[tokio::test]
async fn a_running_raibid_up_is_backed_up_but_not_restored_over() {
    let redis = RedisServer::start_with(RedisOptions {
        password: Some("pw".into()),
        ..Default::default()
    });
    let queue = Queue::open(QueueOptions::new(redis.url())).unwrap();
    queued(&queue).await;
    let dir = tempfile::tempdir().unwrap();
    let up = dir.path().join("up");
    std::fs::create_dir(&up).unwrap();
    // What raibid up leaves while it runs: its lock held, its Redis's address written.
    let _running = hold_up_lock(&up);
    std::fs::write(up.join("redis-url"), redis.url()).unwrap();
    let backup = dir.path().join("b.rdb");
    let said = back_up(&["--data-dir", up.to_str().unwrap()], &backup);
    assert!(said.contains("raibid up running"), "{said}");

    let out = raibid(&[
        "restore",
        backup.to_str().unwrap(),
        "--data-dir",
        up.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stop raibid up first"), "{err}");
    assert!(!up.join("redis").exists(), "nothing touched");
}

#[test]
fn a_refused_copy_says_why_and_leaves_no_file() {
    let redis = RedisServer::start_with(RedisOptions {
        password: Some("right".into()),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("b.rdb");
    let url = format!("redis://:wrong@127.0.0.1:{}/", redis.port());
    let out = raibid(&[
        "backup",
        "--redis-url",
        &url,
        "-o",
        backup.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no copy of redis://127.0.0.1:") && !err.contains("wrong"),
        "{err}"
    );
    assert!(!backup.exists() && !backup.with_extension("partial").exists());

    let out = raibid(&[
        "restore",
        "/etc/hostname",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a Redis RDB file"), "{err}");
}

/// A Redis reached over TLS (`rediss://`), its certificate self-signed (`#insecure`).
#[tokio::test]
async fn a_redis_behind_tls_is_backed_up() {
    let redis = RedisServer::start_with(RedisOptions {
        tls: true,
        ..Default::default()
    });
    let queue = Queue::open(QueueOptions::new(redis.url())).unwrap();
    queued(&queue).await;
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("tls.rdb");
    back_up(&["--redis-url", &redis.url()], &backup);
}
