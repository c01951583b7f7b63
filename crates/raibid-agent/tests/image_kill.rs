//! buildah dies with the agent that started it, and only then: a SIGKILLed agent (which drops
//! nothing, so `kill_on_drop` does nothing) takes its buildah and the build's `RUN` processes
//! with it, while a build goes on when the thread that happened to start its buildah ends.
//!
//! Real buildah (`--isolation chroot`, vfs), real registry on loopback, as in image_build.rs.

mod image_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image_support::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use raibid_agent::image::{ImageBuildOptions, ImageBuilder, ImageError, StorageDriver};
use raibid_testkit::Registry;
use tokio_util::sync::CancellationToken;

/// Set (to the build's settings, as JSON) in the environment of the agent that
/// `a_sigkilled_agent_takes_its_buildah_with_it` starts and kills: this test binary again.
const KILLED_AGENT: &str = "RAIBID_TEST_KILLED_AGENT";

/// How long processes may take to go once their killer has acted.
const GONE_WITHIN: Duration = Duration::from_secs(10);

/// Whether `pid` is a live process (a zombie is dead, only not yet reaped).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // `pid (comm) state ...`; comm may hold spaces and parentheses.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}

/// The pids of the processes with the word `word` in their command line (`sleep <word>`, or
/// `sh -c "sleep <word>"`).
fn processes_with(word: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .split(|c: char| c == '\0' || c.is_whitespace())
                    .any(|w| w == word)
            })
        })
        .filter(|pid| alive(*pid))
        .collect()
}

/// The live children of `parent` whose program is buildah.
fn buildah_children(parent: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
            };
            field("Name:").as_deref() == Some("buildah")
                && field("PPid:") == Some(parent.to_string())
        })
        .filter(|pid| alive(*pid))
        .collect()
}

/// Waits (at most [`BUILD_LIMIT`]) until a process's command line has `marker`: the build's
/// `RUN sleep <marker>` is running.
async fn wait_for_run_step(marker: &str) -> Vec<i32> {
    let deadline = Instant::now() + BUILD_LIMIT;
    loop {
        let found = processes_with(marker);
        if !found.is_empty() {
            return found;
        }
        assert!(Instant::now() < deadline, "the RUN step never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The RUN step's processes once its shell has become `sleep <marker>`, found within
/// [`GONE_WITHIN`]; the last list seen (maybe empty) if that never happens. One look is not
/// enough: while the shell execs, its command line reads as empty, so it seems gone.
async fn sleeping_run_step(marker: &str) -> Vec<i32> {
    let deadline = Instant::now() + GONE_WITHIN;
    loop {
        let found = processes_with(marker);
        let sleeping = |pid: &i32| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|b| *b == 0)
                    .next()
                    .is_some_and(|program| program.ends_with(b"sleep"))
            })
        };
        if (!found.is_empty() && found.iter().all(sleeping)) || Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (at most [`GONE_WITHIN`]) for `pids` to die; those left are killed (they are this
/// test's own), and named.
fn survivors(pids: &[i32]) -> Vec<i32> {
    let deadline = Instant::now() + GONE_WITHIN;
    loop {
        let left: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            for pid in &left {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A build whose `RUN` step sleeps until it is stopped, with `sleep <marker>` as its command
/// line: its base image pushed to `registry`, its context kept by the caller.
async fn sleeping_build(
    registry: &Registry,
    builder: &ImageBuilder,
    marker: &str,
) -> tempfile::TempDir {
    let base = push_busybox_base(registry, builder).await;
    context(&format!("FROM {base}\nRUN sleep {marker}\n"), &[])
}

/// An agent SIGKILLed in the middle of an image build: its buildah, which runs in a session of
/// its own, and the build's `RUN` process go with it. (They went on: the build held the store
/// and could commit an image nobody would remove.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_agent_takes_its_buildah_with_it() {
    if let Some(settings) = std::env::var_os(KILLED_AGENT) {
        return agent_to_be_killed(&settings.into_string().unwrap()).await;
    }
    let registry = Registry::start();
    let store = Store::new();
    let builder = store.builder(&registry, StorageDriver::Vfs);
    let marker = format!("1000.{}1", std::process::id());
    let context = sleeping_build(&registry, &builder, &marker).await;
    let options = store.options(&registry, StorageDriver::Vfs, None);
    let settings = serde_json::json!({
        "root": options.root,
        "runroot": options.runroot,
        "registry": registry.host(),
        "context": context.path(),
    });
    // This test again, as the agent: it builds until it is killed.
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut agent = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_sigkilled_agent_takes_its_buildah_with_it",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(KILLED_AGENT, settings.to_string())
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let agent_pid = agent.id() as i32;
    wait_for_run_step(&marker).await;
    let run_step = sleeping_run_step(&marker).await;
    let buildah = buildah_children(agent_pid);
    assert!(
        !buildah.is_empty(),
        "no buildah under the agent: {}",
        std::fs::read_to_string(log.path()).unwrap()
    );
    kill(Pid::from_raw(agent_pid), Signal::SIGKILL).unwrap();
    agent.wait().unwrap();
    let left = survivors(&[buildah.clone(), run_step.clone()].concat());
    assert!(
        left.is_empty(),
        "alive after the agent was killed: {left:?} (buildah {buildah:?}, RUN step {run_step:?})"
    );
}

/// The agent of `a_sigkilled_agent_takes_its_buildah_with_it`.
async fn agent_to_be_killed(settings: &str) {
    let settings: serde_json::Value = serde_json::from_str(settings).unwrap();
    let text = |key: &str| settings[key].as_str().unwrap().to_owned();
    let builder = ImageBuilder::new(ImageBuildOptions {
        root: text("root").into(),
        runroot: text("runroot").into(),
        storage_driver: StorageDriver::Vfs,
        registry_auth: None,
        pull_auths: Vec::new(),
        insecure_registries: vec![text("registry")],
        network: true,
    })
    .unwrap();
    let mut request = request(
        std::path::Path::new(&text("context")),
        vec![format!("{}/acme/killed:1", text("registry"))],
    );
    request.push = false;
    // Beside the store, which the test removes: this process dies with the build's files.
    request.private = std::path::Path::new(&text("root"))
        .parent()
        .map(std::path::Path::to_path_buf);
    let (result, output) = build(&builder, &request).await;
    panic!("the build ended before the agent was killed: {result:?}\n{output}");
}

/// The parent-death signal comes when the *thread* that forked the child ends. A build whose
/// buildah was started from a thread that then ends (a blocking-pool thread going idle, a
/// worker thread retired after `block_in_place`) goes on, since buildah is started by a thread
/// that lives as long as the process; and it still stops when cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_outlives_the_thread_that_started_its_buildah() {
    let registry = Registry::start();
    let store = Store::new();
    let builder = Arc::new(store.builder(&registry, StorageDriver::Vfs));
    let marker = format!("1000.{}2", std::process::id());
    let context = sleeping_build(&registry, &builder, &marker).await;
    let request = request(
        context.path(),
        vec![format!("{}/acme/thread:1", registry.host())],
    );
    let output = Arc::new(Mutex::new(String::new()));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let seen = output.clone();
    tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            seen.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk));
        }
    });
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let mut build = Box::pin(async move { builder.build_and_push(&request, tx, stop).await });
    // Driven by a thread of its own until the RUN step runs; then that thread ends.
    let runtime = tokio::runtime::Handle::current();
    let (back, returned) = tokio::sync::oneshot::channel();
    let (marker_, output_) = (marker.clone(), output.clone());
    let thread = std::thread::spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                result = &mut build => panic!(
                    "the build ended: {result:?}\n{}",
                    output_.lock().unwrap()
                ),
                _ = wait_for_run_step(&marker_) => {}
            }
        });
        let _ = back.send(build);
    });
    let build = returned.await.unwrap();
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
    let run_step = sleeping_run_step(&marker).await;
    let buildah = buildah_children(std::process::id() as i32);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dead = |pids: &[i32]| -> Vec<i32> { pids.iter().copied().filter(|p| !alive(*p)).collect() };
    // Which died says whose doing it was: the buildah this process started (the spawning
    // thread's parent-death signal) or only what buildah itself started.
    assert!(
        !run_step.is_empty() && !buildah.is_empty(),
        "no RUN step ({run_step:?}) or no buildah ({buildah:?}) once the thread ended\n{}",
        output.lock().unwrap()
    );
    assert!(
        dead(&run_step).is_empty() && dead(&buildah).is_empty(),
        "the build was killed when the thread that started it ended: dead RUN step processes \
         {:?} of {run_step:?}, dead buildah {:?} of {buildah:?}\n{}",
        dead(&run_step),
        dead(&buildah),
        output.lock().unwrap()
    );
    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(60), build)
        .await
        .expect("the cancelled build ended");
    assert!(
        matches!(result, Err(ImageError::Cancelled)),
        "{result:?}\n{}",
        output.lock().unwrap()
    );
    assert_eq!(survivors(&run_step), Vec::<i32>::new());
}
