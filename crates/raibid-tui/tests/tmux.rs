//! Drives the real `raibid` binary in tmux against a real server and Redis: the job appears,
//! Enter opens it and shows its log (live as it is written), cancel asks first and reaches the
//! server, the Cluster tab shows a cluster's nodes and agent pods (read from the recorded k3s
//! answers of raibid-testkit's API server stand-in), a job cancelled after more than a poll's
//! newest page of jobs was queued after it shows as cancelled, and `q` gives the terminal back
//! in a usable state.
//!
//! Needs `target/debug/raibid` (`cargo build -p raibid-cli`), `tmux` and `redis-server`; a
//! missing one fails the test with the command that provides it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use raibid_config::{Config, TokenHash, hash_token};
use raibid_model::{Event, NewJob, PoolName};
use raibid_queue::{Enqueued, Queue, QueueOptions};
use raibid_server::ServerOptions;
use raibid_testkit::{FakeKubeApi, RedisServer, require_binary};

const WAIT: Duration = Duration::from_secs(20);
const SESSION: &str = "raibid-tui-e2e";
/// The API token the server accepts; cancelling needs one.
const TOKEN: &str = "rbd_tui_e2e_token_3c9d0a";
const LOG_LINE: &str = "hello from the e2e build";
const LIVE_LINE: &str = "written while the dashboard watches";
/// The dashboard's newest page: more jobs than this queued after a job take it out of every
/// list the dashboard polls.
const NEWEST_PAGE: usize = 200;

/// `$CARGO_TARGET_DIR/debug/raibid`, else the workspace's `target/debug/raibid`.
fn raibid_binary() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    };
    let binary = target.join("debug").join("raibid");
    assert!(
        binary.is_file(),
        "{} does not exist: build it first with `cargo build -p raibid-cli`",
        binary.display()
    );
    binary
}

fn output_text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A tmux server of the test's own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Self {
        require_binary("tmux", "tmux");
        Self {
            socket: format!("raibid-tui-e2e-{}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            output_text(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn capture(&self) -> String {
        self.ok(&["capture-pane", "-p", "-t", SESSION])
    }

    fn capture_with_escapes(&self) -> String {
        self.ok(&["capture-pane", "-p", "-e", "-t", SESSION])
    }

    fn pane_flag(&self, format: &str) -> String {
        self.ok(&["display-message", "-p", "-t", SESSION, format])
            .trim()
            .to_owned()
    }

    fn send_keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", SESSION];
        args.extend_from_slice(keys);
        self.ok(&args);
    }

    fn type_line(&self, text: &str) {
        self.ok(&["send-keys", "-t", SESSION, "-l", text]);
        self.send_keys(&["Enter"]);
    }

    /// Polls the pane until `done` holds, or fails showing the screen.
    fn wait_for(&self, what: &str, done: impl Fn(&Tmux, &str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.capture();
            if done(self, &screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the pane shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// A job of `repo` in `pool`; `n` makes its commit, so that no two are the same job.
fn new_job(repo: &str, pool: &str, n: usize) -> NewJob {
    let mut spec = NewJob::new(
        repo,
        format!("https://git.example/{repo}.git"),
        "refs/heads/main",
        format!("{n:040x}"),
        Event::Manual,
    );
    spec.pool = PoolName::new(pool).expect("pool name");
    spec
}

fn queue(redis: &RedisServer) -> Queue {
    let mut options = QueueOptions::new(redis.url());
    options.command_timeout = Duration::from_secs(2);
    Queue::open(options).expect("open queue")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_a_job_and_its_log_then_restores_the_terminal() {
    let raibid = raibid_binary();
    let help = Command::new(&raibid)
        .args(["tui", "--help"])
        .output()
        .expect("run raibid");
    assert!(
        help.status.success(),
        "`raibid tui --help` failed: the `tui` subcommand of raibid-cli is missing or broken.\n{}",
        output_text(&help)
    );
    let tmux = Tmux::new();

    let redis = RedisServer::start();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server_url = format!("http://{}", listener.local_addr().expect("address"));
    let mut config = Config::default();
    config.server.tokens = vec![
        TokenHash::parse(&hash_token(TOKEN))
            .expect("token hash")
            .into(),
    ];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(raibid_server::serve(
        listener,
        ServerOptions {
            config,
            queue: queue(&redis),
            instance: "tui-e2e".into(),
            clock: raibid_server::system_clock(),
        },
        async move {
            let _ = stopped.await;
        },
    ));

    let queue = queue(&redis);
    // The arm64 pool, whose ScaledJob the recorded cluster has: paused from the Queues tab.
    // Queued first, so that the job opened below stays the newest.
    queue
        .enqueue(new_job("e2e/arm-build", "arm64", 0))
        .await
        .expect("enqueue");
    // Queued in a pool no agent serves; cancelled later, once it is deep in history.
    let Enqueued::Created(old) = queue
        .enqueue(new_job("e2e/old-build", "other", 0))
        .await
        .expect("enqueue")
    else {
        panic!("a fresh job cannot be a duplicate");
    };
    let Enqueued::Created(job) = queue
        .enqueue(NewJob::new(
            "e2e/tui-demo",
            "https://git.example/e2e/tui-demo.git",
            "refs/heads/main",
            "0123456789abcdef0123456789abcdef01234567",
            Event::Manual,
        ))
        .await
        .expect("enqueue")
    else {
        panic!("a fresh job cannot be a duplicate");
    };
    let mut claimer = queue.claimer("e2e-agent").await.expect("claimer");
    let claimed = claimer
        .claim(&[PoolName::default()], Duration::ZERO)
        .await
        .expect("claim")
        .expect("the job is there to claim");
    assert_eq!(claimed.job.id, job.id);
    queue
        .append_log(&job.id, format!("\x1b[32m{LOG_LINE}\x1b[0m\n").as_bytes())
        .await
        .expect("append log");

    let cluster = FakeKubeApi::start("k3s-arm64").await;

    // A plain shell in a 160x48 pane; the dashboard runs in it and must hand it back.
    let home = tempfile::tempdir().expect("temp home");
    let shell = format!(
        "env HOME='{}' RAIBID_CLUSTER_KUBECONFIG='{}' PS1='e2e$ ' sh",
        home.path().display(),
        cluster.kubeconfig().display()
    );
    tmux.ok(&[
        "new-session",
        "-d",
        "-s",
        SESSION,
        "-x",
        "160",
        "-y",
        "48",
        &shell,
    ]);
    tmux.wait_for("the shell prompt", |_, s| s.contains("e2e$"));
    tmux.type_line(&format!(
        "{} tui --server {server_url} --token {TOKEN}; echo tui-exit=$?",
        raibid.display()
    ));

    let screen = tmux.wait_for("the job in the list", |_, s| s.contains(&job.id));
    assert!(screen.contains("e2e/tui-demo"), "{screen}");
    assert!(screen.contains("running"), "{screen}");
    tmux.wait_for("the old job, queued", |_, s| {
        s.lines()
            .any(|l| l.contains(&old.id) && l.contains("queued"))
    });
    assert_eq!(
        tmux.pane_flag("#{alternate_on}"),
        "1",
        "dashboard on the alternate screen"
    );

    tmux.send_keys(&["Enter"]);
    let screen = tmux.wait_for("the job's log", |_, s| s.contains(LOG_LINE));
    assert!(screen.contains("Log"), "{screen}");
    let coloured = tmux.capture_with_escapes();
    let line = coloured
        .lines()
        .find(|l| l.contains(LOG_LINE))
        .expect("log line on screen");
    // Palette green, as SGR 32 or as its 256-colour index (crossterm writes the latter).
    assert!(
        line.contains("\x1b[32m") || line.contains("\x1b[38;5;2m"),
        "the build's green reaches the terminal: {line:?}"
    );

    // Output written while the job is open streams in.
    queue
        .append_log(&job.id, format!("{LIVE_LINE}\n").as_bytes())
        .await
        .expect("append log");
    tmux.wait_for("live output", |_, s| s.contains(LIVE_LINE));

    // Cancel asks first, then the server's answer shows in the status line.
    tmux.send_keys(&["c"]);
    let screen = tmux.wait_for("the confirmation", |_, s| s.contains("Confirm"));
    assert!(
        screen.contains(&format!("Cancel job {}", job.id)),
        "{screen}"
    );
    tmux.send_keys(&["y"]);
    tmux.wait_for("the cancel answer", |_, s| {
        s.contains(&format!("cancel {}: requested", job.id))
    });

    // The Cluster tab reads the cluster only once shown.
    assert!(cluster.requests().is_empty(), "{:?}", cluster.requests());
    tmux.send_keys(&["5"]);
    let screen = tmux.wait_for("the cluster's nodes and agent pods", |_, s| {
        s.contains("raibid-agent-arm64-4xk2m-8fz7q")
    });
    for expected in [
        "spark-01",
        "arm64",
        "NotReady",
        "Running",
        "Pending",
        "raibid-agent-amd64",
    ] {
        assert!(screen.contains(expected), "{expected} missing:\n{screen}");
    }

    // The Queues tab pauses the selected pool (arm64, first by name), asking first, through
    // the API and on KEDA's ScaledJob, and shows it paused; pressed again, resumes it.
    tmux.send_keys(&["3"]);
    tmux.wait_for("the queues", |_, s| {
        s.contains("arm64") && s.contains("LAST 10 MIN")
    });
    tmux.send_keys(&["p"]);
    let screen = tmux.wait_for("the confirmation", |_, s| s.contains("Confirm"));
    assert!(screen.contains("Pause pool arm64?"), "{screen}");
    tmux.send_keys(&["y"]);
    tmux.wait_for("the pause's answer", |_, s| {
        s.contains("pool arm64 paused; KEDA: ScaledJob raibid-agent-arm64 paused")
    });
    tmux.wait_for("the pool marked paused", |_, s| {
        s.contains("arm64 paused by ")
    });
    let paused = queue.paused_pools().await.expect("paused pools");
    assert!(
        paused.contains_key(&PoolName::new("arm64").unwrap()),
        "{paused:?}"
    );
    assert_eq!(cluster.patches().len(), 1, "{:?}", cluster.patches());
    tmux.send_keys(&["p"]);
    let screen = tmux.wait_for("the confirmation", |_, s| s.contains("Confirm"));
    assert!(screen.contains("Resume pool arm64?"), "{screen}");
    tmux.send_keys(&["y"]);
    tmux.wait_for("the resume's answer", |_, s| {
        s.contains("pool arm64 resumed; KEDA: ScaledJob raibid-agent-arm64 resumed")
    });
    assert!(queue.paused_pools().await.expect("paused pools").is_empty());

    // A newest page of jobs queued after the old one, then it is cancelled: no list the
    // dashboard polls has it any more, yet its row must turn to cancelled.
    for n in 0..NEWEST_PAGE {
        queue
            .enqueue(new_job("e2e/filler", "default", n + 1))
            .await
            .expect("enqueue");
    }
    queue.cancel(&old.id).await.expect("cancel");
    tmux.send_keys(&["1", "/"]);
    tmux.type_line("e2e/old-build");
    tmux.wait_for("the old job, cancelled", |_, s| {
        s.lines()
            .any(|l| l.contains(&old.id) && l.contains("cancelled"))
    });

    tmux.send_keys(&["q"]);
    // The typed command holds `tui-exit=` too: wait for the line `echo` prints.
    let screen = tmux.wait_for("the dashboard to exit", |t, s| {
        s.lines().any(|l| l.starts_with("tui-exit=")) && t.pane_flag("#{alternate_on}") == "0"
    });
    assert!(
        screen.lines().any(|l| l == "tui-exit=0"),
        "raibid tui exited with an error:\n{screen}"
    );
    assert_eq!(
        tmux.pane_flag("#{mouse_any_flag}"),
        "0",
        "mouse capture released"
    );
    assert_eq!(tmux.pane_flag("#{cursor_flag}"), "1", "cursor visible");
    // Cooked mode again: the shell sees a line ending and runs the command.
    tmux.type_line("echo cooked-$((6*7))");
    tmux.wait_for("the shell to run a command", |_, s| s.contains("cooked-42"));

    drop(tmux);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("server stopped")
        .expect("server task")
        .expect("server result");
}
