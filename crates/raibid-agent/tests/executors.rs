//! The executors against real processes: `/bin/sh` on the host, bubblewrap, and a container
//! engine where one works.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use raibid_agent::executor::{
    BwrapExecutor, BwrapOptions, ContainerEngine, ContainerExecutor, ContainerLimits,
    ContainerOptions, ExecError, Executor, HostExecutor, SANDBOX_HOME, SANDBOX_WORKSPACE,
    SETUP_TRIES, StepDevices, StepExit, StepSpec,
};
use raibid_agent::image::RegistryAuth;
use raibid_config::ContainerEngineKind;
use raibid_testkit::registry::{TEST_PASSWORD, TEST_PASSWORD_BCRYPT, TEST_USER};
use raibid_testkit::{BUSYBOX_IMAGE, Podman, Registry, TestEngine, require_binary};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const PATH: &str = "/usr/local/bin:/usr/bin:/bin";
const GRACE: Duration = Duration::from_secs(2);

fn host() -> HostExecutor {
    HostExecutor::with_kill_grace(GRACE)
}

fn bwrap_with(options: BwrapOptions) -> BwrapExecutor {
    require_binary("bwrap", "bubblewrap");
    BwrapExecutor::new(BwrapOptions {
        kill_grace: GRACE,
        ..options
    })
}

fn bwrap() -> BwrapExecutor {
    bwrap_with(BwrapOptions::default())
}

struct Step {
    spec: StepSpec,
    /// Keeps the workspace alive for the step's lifetime.
    _workspace: tempfile::TempDir,
}

fn step(script: &str) -> Step {
    let workspace = tempfile::Builder::new()
        .prefix("raibid-exec-test-")
        .tempdir()
        .unwrap();
    Step {
        spec: StepSpec {
            name: "test".into(),
            script: script.into(),
            plugin: false,
            workspace: workspace.path().to_path_buf(),
            directory: None,
            home: None,
            read_only: Vec::new(),
            private: None,
            env: BTreeMap::from([("PATH".to_string(), PATH.to_string())]),
            timeout: Duration::from_secs(60),
            image: None,
            pull: false,
            untrusted: false,
            network: None,
        },
        _workspace: workspace,
    }
}

struct Ran {
    exit: StepExit,
    output: String,
    elapsed: Duration,
}

async fn run(executor: &dyn Executor, spec: &StepSpec) -> Ran {
    run_cancellable(executor, spec, CancellationToken::new()).await
}

async fn run_cancellable(
    executor: &dyn Executor,
    spec: &StepSpec,
    cancel: CancellationToken,
) -> Ran {
    let started = Instant::now();
    let (exit, output) = try_run(executor, spec, cancel).await;
    let exit = exit.unwrap_or_else(|e| panic!("{} could not run the step: {e}", executor.name()));
    Ran {
        exit,
        output,
        elapsed: started.elapsed(),
    }
}

/// The step's result, error included, and its output.
async fn try_run(
    executor: &dyn Executor,
    spec: &StepSpec,
    cancel: CancellationToken,
) -> (Result<StepExit, ExecError>, String) {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
    let collect = async {
        let mut all = Vec::new();
        while let Some(chunk) = rx.recv().await {
            all.extend_from_slice(&chunk);
        }
        all
    };
    let (exit, output) = tokio::join!(executor.run_step(spec, tx, cancel), collect);
    (exit, String::from_utf8_lossy(&output).into_owned())
}

/// Runs the step and cancels it once its output contains `ready`.
async fn run_cancelled_when_ready(executor: &dyn Executor, spec: &StepSpec) -> Ran {
    let started = Instant::now();
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
    let collect = async {
        let mut all = Vec::new();
        while let Some(chunk) = rx.recv().await {
            all.extend_from_slice(&chunk);
            if String::from_utf8_lossy(&all).contains("ready") {
                cancel.cancel();
            }
        }
        all
    };
    let (exit, output) = tokio::join!(executor.run_step(spec, tx, cancel.clone()), collect);
    Ran {
        exit: exit.unwrap(),
        output: String::from_utf8_lossy(&output).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// A `sleep` argument no other process on the machine has: `1000.<unique digits>`.
fn marker() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "1000.{}{:04}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Live processes whose command line contains `marker` (zombies have an empty one).
fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
        .collect()
}

/// Killed processes may take a moment to be reaped by whoever inherits them.
fn assert_none_left(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            kill_all(marker);
            panic!("processes survived their step: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill_all(marker: &str) {
    for pid in processes_with(marker) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// What every executor must do, whatever its isolation.
macro_rules! contract_tests {
    ($module:ident, $executor:expr) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn reports_exit_codes() {
                let executor = $executor;
                let ok = run(&executor, &step("exit 0").spec).await;
                assert!(ok.exit.success(), "{:?}", ok.exit);
                let failed = run(&executor, &step("echo failing; exit 3").spec).await;
                assert_eq!(failed.exit.code, Some(3));
                assert!(!failed.exit.success());
                assert_eq!(failed.output, "failing\n");
            }

            #[tokio::test]
            async fn a_failing_command_stops_the_script() {
                let ran = run(&$executor, &step("echo before; false; echo after").spec).await;
                assert_eq!(ran.exit.code, Some(1));
                assert_eq!(ran.output, "before\n");
            }

            #[tokio::test]
            async fn stdout_and_stderr_arrive_in_the_order_written() {
                let ran = run(&$executor, &step("echo a; echo b >&2; echo c").spec).await;
                assert_eq!(ran.output, "a\nb\nc\n");
                let script = "for i in $(seq 200); do echo out$i; echo err$i >&2; done";
                let ran = run(&$executor, &step(script).spec).await;
                let expected: String = (1..=200).map(|i| format!("out{i}\nerr{i}\n")).collect();
                assert_eq!(ran.output, expected);
            }

            #[tokio::test]
            async fn the_environment_is_exactly_the_given_one() {
                let mut step = step("env");
                step.spec
                    .env
                    .insert("RAIBID_GREETING".into(), "hello world".into());
                let ran = run(&$executor, &step.spec).await;
                assert!(ran.exit.success(), "{}", ran.output);
                let mut seen: BTreeMap<String, String> = ran
                    .output
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                // The shell itself sets PWD.
                seen.remove("PWD");
                assert_eq!(seen, step.spec.env);
            }

            #[tokio::test]
            async fn runs_in_the_workspace() {
                let executor = $executor;
                let step = step("pwd; echo written > out.txt");
                let ran = run(&executor, &step.spec).await;
                assert!(ran.exit.success(), "{}", ran.output);
                let workspace = step.spec.workspace.canonicalize().unwrap();
                // Where the executor says the step finds it: the runner names that path in
                // CI_WORKSPACE.
                let seen = executor
                    .step_paths()
                    .map_or(workspace.clone(), |p| p.workspace.to_path_buf());
                assert_eq!(ran.output.trim_end(), seen.to_str().unwrap());
                let written = std::fs::read_to_string(workspace.join("out.txt")).unwrap();
                assert_eq!(written, "written\n");
            }

            #[tokio::test]
            async fn a_missing_workspace_is_an_error_not_a_failed_step() {
                let mut step = step("true");
                step.spec.workspace = PathBuf::from("/nonexistent/raibid/workspace");
                let (tx, _rx) = mpsc::channel::<Vec<u8>>(1);
                let result = $executor
                    .run_step(&step.spec, tx, CancellationToken::new())
                    .await;
                assert!(matches!(result, Err(ExecError::Spawn(_))), "{result:?}");
            }

            #[tokio::test]
            async fn timeout_kills_the_whole_process_tree() {
                let m = marker();
                let mut step = step(&format!(
                    "for i in $(seq 50); do sleep {m} & done; sleep {m}"
                ));
                step.spec.timeout = Duration::from_secs(1);
                let ran = run(&$executor, &step.spec).await;
                assert!(ran.exit.timed_out && !ran.exit.cancelled, "{:?}", ran.exit);
                assert!(!ran.exit.success());
                assert!(
                    ran.elapsed < Duration::from_secs(5),
                    "took {:?}",
                    ran.elapsed
                );
                assert_none_left(&m);
            }

            #[tokio::test]
            async fn background_children_do_not_outlive_the_step() {
                let m = marker();
                let script = format!("sleep {m} & sleep {m} & echo started");
                let ran = run(&$executor, &step(&script).spec).await;
                assert!(ran.exit.success(), "{:?}", ran.exit);
                assert_eq!(ran.output, "started\n");
                assert!(
                    ran.elapsed < Duration::from_secs(3),
                    "took {:?}",
                    ran.elapsed
                );
                assert_none_left(&m);
            }

            #[tokio::test]
            async fn cancel_stops_the_step() {
                let m = marker();
                let step = step(&format!("sleep {m} & echo ready; sleep {m}"));
                let ran = run_cancelled_when_ready(&$executor, &step.spec).await;
                assert!(ran.exit.cancelled && !ran.exit.timed_out, "{:?}", ran.exit);
                assert!(!ran.exit.success());
                assert!(
                    ran.elapsed < Duration::from_secs(5),
                    "took {:?}",
                    ran.elapsed
                );
                assert_none_left(&m);
            }

            #[tokio::test]
            async fn sigterm_lets_the_step_clean_up() {
                let m = marker();
                let script =
                    format!("trap 'echo cleaning up; exit 7' TERM; sleep {m} & echo ready; wait");
                let ran = run_cancelled_when_ready(&$executor, &step(&script).spec).await;
                assert!(ran.exit.cancelled);
                assert_eq!(ran.exit.code, Some(7), "{:?}", ran.exit);
                assert!(ran.output.ends_with("cleaning up\n"), "{}", ran.output);
                assert!(ran.elapsed < GRACE, "took {:?}", ran.elapsed);
                assert_none_left(&m);
            }

            #[tokio::test]
            async fn a_step_ignoring_sigterm_is_killed_after_the_grace_period() {
                let m = marker();
                // `sleep` inherits the ignored SIGTERM.
                let script = format!("trap '' TERM; echo ready; sleep {m}");
                let ran = run_cancelled_when_ready(&$executor, &step(&script).spec).await;
                assert!(ran.exit.cancelled);
                assert_eq!(ran.exit.code, None, "{:?}", ran.exit);
                assert!(ran.elapsed >= GRACE, "took {:?}", ran.elapsed);
                assert!(
                    ran.elapsed < GRACE + Duration::from_secs(3),
                    "took {:?}",
                    ran.elapsed
                );
                assert_none_left(&m);
            }

            #[tokio::test]
            async fn large_output_streams_through_in_chunks() {
                const SIZE: usize = 50_000_000;
                let step = step(&format!("yes | head -c {SIZE}"));
                let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
                let count = async {
                    let (mut bytes, mut chunks, mut largest) = (0, 0, 0);
                    while let Some(chunk) = rx.recv().await {
                        bytes += chunk.len();
                        chunks += 1;
                        largest = largest.max(chunk.len());
                    }
                    (bytes, chunks, largest)
                };
                let executor = $executor;
                let (exit, (bytes, chunks, largest)) = tokio::join!(
                    executor.run_step(&step.spec, tx, CancellationToken::new()),
                    count
                );
                assert!(exit.unwrap().success());
                assert_eq!(bytes, SIZE);
                assert!(largest <= 64 * 1024, "a chunk of {largest} bytes");
                assert!(chunks >= SIZE / (64 * 1024), "only {chunks} chunks");
            }

            #[tokio::test]
            async fn a_slow_reader_loses_nothing() {
                let step = step("yes raibid | head -c 1000000");
                let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1);
                let count = async {
                    let mut bytes = Vec::new();
                    while let Some(chunk) = rx.recv().await {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        bytes.extend_from_slice(&chunk);
                    }
                    bytes
                };
                let executor = $executor;
                let (exit, bytes) = tokio::join!(
                    executor.run_step(&step.spec, tx, CancellationToken::new()),
                    count
                );
                assert!(exit.unwrap().success());
                assert_eq!(
                    bytes,
                    "raibid\n".repeat(1_000_000 / 7 + 1)[..1_000_000].as_bytes()
                );
            }

            #[tokio::test]
            async fn a_dropped_receiver_does_not_block_the_step() {
                let step = step("yes | head -c 5000000; echo done");
                let (tx, rx) = mpsc::channel::<Vec<u8>>(1);
                drop(rx);
                let started = Instant::now();
                let exit = $executor
                    .run_step(&step.spec, tx, CancellationToken::new())
                    .await
                    .unwrap();
                assert!(exit.success(), "{exit:?}");
                assert!(started.elapsed() < Duration::from_secs(10));
            }
        }
    };
}

contract_tests!(host_contract, host());
contract_tests!(bwrap_contract, bwrap());

#[tokio::test]
async fn host_a_process_escaping_the_group_cannot_hold_the_step_open() {
    let m = marker();
    // The pause lets `setsid` happen before the step ends and its group is killed.
    let script = format!("setsid sleep {m} & sleep 0.3; echo bye");
    let ran = run(&host(), &step(&script).spec).await;
    let escaped = processes_with(&m);
    kill_all(&m);
    assert!(ran.exit.success(), "{:?}", ran.exit);
    assert_eq!(ran.output, "bye\n");
    // The host executor cannot contain it (bwrap's PID namespace can: see below)...
    assert_eq!(escaped.len(), 1, "{escaped:?}");
    // ...and it holds the output pipe open, but reading stops 2 s after the shell exited.
    assert!(
        ran.elapsed >= Duration::from_secs(2) && ran.elapsed < Duration::from_secs(5),
        "took {:?}",
        ran.elapsed
    );
}

#[tokio::test]
async fn bwrap_contains_processes_that_escape_the_group() {
    let m = marker();
    let ran = run(
        &bwrap(),
        &step(&format!("setsid sleep {m} & echo bye")).spec,
    )
    .await;
    assert!(ran.exit.success(), "{:?}", ran.exit);
    assert_eq!(ran.output, "bye\n");
    assert!(
        ran.elapsed < Duration::from_secs(3),
        "took {:?}",
        ran.elapsed
    );
    assert_none_left(&m);
}

/// A bwrap that fails to set the sandbox up its first `fails` times, as one does when the
/// host's mounts change while it copies them (bubblewrap issue 650), then is the real one.
/// Returns it and the file counting its runs.
fn bwrap_failing_setup(dir: &Path, fails: u32) -> (BwrapExecutor, PathBuf) {
    let real = require_binary("bwrap", "bubblewrap");
    let program = dir.join("bwrap");
    let count = dir.join("runs");
    std::fs::write(
        &program,
        format!(
            "#!/bin/sh\n\
             n=$(cat '{count}' 2>/dev/null || echo 0)\n\
             echo $((n + 1)) > '{count}'\n\
             if [ \"$n\" -lt {fails} ]; then\n\
             echo \"bwrap: Can't bind mount /oldroot/ on /newroot/: Unable to apply mount flags: \
             remount \\\"/newroot/run/netns/gone\\\": No such file or directory\" >&2\n\
             exit 1\n\
             fi\n\
             exec '{real}' \"$@\"\n",
            count = count.display(),
            real = real.display(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let options = BwrapOptions {
        kill_grace: GRACE,
        ..BwrapOptions::default()
    };
    (BwrapExecutor::with_program(options, program), count)
}

fn runs(count: &Path) -> u32 {
    std::fs::read_to_string(count)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A sandbox bwrap could not set up says nothing about the step: it is set up again, and the
/// log says why the first lines are bwrap's.
#[tokio::test]
async fn a_sandbox_bwrap_could_not_set_up_is_set_up_again() {
    let dir = tempfile::tempdir().unwrap();
    let (bwrap, count) = bwrap_failing_setup(dir.path(), SETUP_TRIES - 1);
    let s = step("echo in the sandbox");
    let ran = run(&bwrap, &s.spec).await;
    assert!(ran.exit.success(), "{:?}\n{}", ran.exit, ran.output);
    assert_eq!(runs(&count), SETUP_TRIES);
    assert_eq!(
        ran.output.matches("Unable to apply mount flags").count() as u32,
        SETUP_TRIES - 1,
        "{}",
        ran.output
    );
    assert!(
        ran.output.contains(&format!(
            "[raibid] bwrap could not set the sandbox up (above), before the step started; \
             setting it up again ({SETUP_TRIES} of {SETUP_TRIES})\n"
        )),
        "{}",
        ran.output
    );
    assert!(ran.output.ends_with("in the sandbox\n"), "{}", ran.output);
}

/// A sandbox that never sets up fails the step after the last try, with bwrap's own words.
#[tokio::test]
async fn a_sandbox_that_never_sets_up_fails_after_the_last_try() {
    let dir = tempfile::tempdir().unwrap();
    let (bwrap, count) = bwrap_failing_setup(dir.path(), 100);
    let s = step("echo never");
    let ran = run(&bwrap, &s.spec).await;
    assert_eq!(ran.exit.code, Some(1), "{}", ran.output);
    assert_eq!(runs(&count), SETUP_TRIES);
    assert!(!ran.output.contains("never"), "{}", ran.output);
}

/// A step that fails on its own, with bwrap's exit code for a failed setup and its words, ran:
/// it is not run again.
#[tokio::test]
async fn a_step_that_fails_in_its_sandbox_runs_once() {
    let s = step(
        "echo ran >> ran; echo \"bwrap: Can't bind mount /oldroot/ on /newroot/\" >&2; exit 1",
    );
    let ran = run(&bwrap(), &s.spec).await;
    assert_eq!(ran.exit.code, Some(1), "{}", ran.output);
    assert_eq!(
        std::fs::read_to_string(s.spec.workspace.join("ran")).unwrap(),
        "ran\n",
        "{}",
        ran.output
    );
}

/// The descriptor that says the step started is closed before the step's script runs.
#[tokio::test]
async fn a_step_gets_no_descriptor_of_the_sandbox_s() {
    let s = step("ls /proc/$$/fd");
    let ran = run(&bwrap(), &s.spec).await;
    assert!(ran.exit.success(), "{}", ran.output);
    let fds: Vec<&str> = ran.output.lines().collect();
    assert!(!fds.contains(&"3"), "{fds:?}");
}

#[tokio::test]
async fn bwrap_probe_succeeds_here() {
    bwrap().probe().await.unwrap();
    bwrap_with(BwrapOptions {
        network: true,
        ..BwrapOptions::default()
    })
    .probe()
    .await
    .unwrap();
}

#[tokio::test]
async fn bwrap_workspace_is_writable_and_the_system_read_only() {
    let script = "echo hi > in-workspace.txt; echo hi > /tmp/scratch.txt; \
                  if touch /usr/raibid-probe 2>/dev/null; then echo usr-writable; \
                  else echo usr-read-only; fi";
    let step = step(script);
    let ran = run(&bwrap(), &step.spec).await;
    assert!(ran.exit.success(), "{}", ran.output);
    assert_eq!(ran.output, "usr-read-only\n");
    assert!(step.spec.workspace.join("in-workspace.txt").exists());
    assert!(!Path::new("/usr/raibid-probe").exists());
    assert!(
        !Path::new("/tmp/scratch.txt").exists(),
        "the sandbox's /tmp is its own"
    );
}

#[tokio::test]
async fn bwrap_hides_home_tmp_and_the_agents_data() {
    let data = tempfile::Builder::new()
        .prefix("raibid-agent-data-")
        .tempdir()
        .unwrap();
    std::fs::write(data.path().join("secret.txt"), "token").unwrap();
    let host_tmp = tempfile::NamedTempFile::new().unwrap();
    let root_entries = std::fs::read_dir("/root").map_or(0, |d| d.count());
    let script = format!(
        "ls -A {data}; ls -A /root; ls -A /home; test -e {tmp} && echo tmp-visible; echo end",
        // /home holds only the mount points of the job's own directories.
        data = data.path().display(),
        tmp = host_tmp.path().display(),
    );
    let executor = bwrap_with(BwrapOptions {
        hide: vec![data.path().to_path_buf()],
        ..BwrapOptions::default()
    });
    let ran = run(&executor, &step(&script).spec).await;
    assert!(ran.exit.success(), "{}", ran.output);
    assert_eq!(ran.output, "raibid\nend\n");
    // Otherwise the /root check proves nothing.
    assert!(root_entries > 0, "/root is empty on this machine");
}

#[tokio::test]
async fn bwrap_workspace_inside_a_hidden_directory_stays_usable() {
    let data = tempfile::Builder::new()
        .prefix("raibid-agent-data-")
        .tempdir()
        .unwrap();
    std::fs::write(data.path().join("secret.txt"), "token").unwrap();
    let workspace = data.path().join("work").join("job-1");
    std::fs::create_dir_all(&workspace).unwrap();
    std::fs::write(workspace.join("src.txt"), "source\n").unwrap();
    let mut step = step(&format!(
        "cat src.txt; echo out > out.txt; ls -A {}",
        data.path().display()
    ));
    step.spec.workspace = workspace.clone();
    let executor = bwrap_with(BwrapOptions {
        hide: vec![data.path().to_path_buf()],
        ..BwrapOptions::default()
    });
    let ran = run(&executor, &step.spec).await;
    assert!(ran.exit.success(), "{}", ran.output);
    // The workspace is bound elsewhere: nothing of the data directory shows, not even the
    // path down to the workspace.
    assert_eq!(ran.output, "source\n");
    assert_eq!(
        std::fs::read_to_string(workspace.join("out.txt")).unwrap(),
        "out\n"
    );
}

#[tokio::test]
async fn bwrap_ro_binds_expose_a_hidden_path_read_only() {
    let data = tempfile::Builder::new()
        .prefix("raibid-agent-data-")
        .tempdir()
        .unwrap();
    let tools = data.path().join("toolchain");
    std::fs::create_dir(&tools).unwrap();
    std::fs::write(tools.join("rustc"), "compiler\n").unwrap();
    std::fs::write(data.path().join("secret.txt"), "token").unwrap();
    let script = format!(
        "cat {tools}/rustc; if touch {tools}/new 2>/dev/null; then echo writable; \
         else echo read-only; fi; test -e {data}/secret.txt && echo secret-visible; echo end",
        tools = tools.display(),
        data = data.path().display(),
    );
    let executor = bwrap_with(BwrapOptions {
        hide: vec![data.path().to_path_buf()],
        ro_binds: vec![tools.clone()],
        ..BwrapOptions::default()
    });
    let ran = run(&executor, &step(&script).spec).await;
    assert!(ran.exit.success(), "{}", ran.output);
    assert_eq!(ran.output, "compiler\nread-only\nend\n");
    assert!(!tools.join("new").exists());
}

fn interfaces(proc_net_dev: &str) -> Vec<String> {
    proc_net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim().to_owned())
        .collect()
}

#[tokio::test]
async fn bwrap_network_is_loopback_only_unless_allowed() {
    let closed = run(&bwrap(), &step("cat /proc/net/dev").spec).await;
    assert!(closed.exit.success(), "{}", closed.output);
    assert_eq!(interfaces(&closed.output), ["lo"]);

    let open = bwrap_with(BwrapOptions {
        network: true,
        ..BwrapOptions::default()
    });
    let ran = run(&open, &step("cat /proc/net/dev").spec).await;
    let mut inside = interfaces(&ran.output);
    let mut outside = interfaces(&std::fs::read_to_string("/proc/net/dev").unwrap());
    inside.sort();
    outside.sort();
    assert_eq!(inside, outside);
}

#[tokio::test]
async fn bwrap_step_cannot_see_the_agents_processes() {
    let script = format!(
        "test -e /proc/{} && echo agent-visible; ls /proc | grep -c '^[0-9]'",
        std::process::id()
    );
    let ran = run(&bwrap(), &step(&script).spec).await;
    assert!(ran.exit.success(), "{}", ran.output);
    // bwrap's init, the shell, ls and grep.
    let count: u32 = ran.output.trim().parse().unwrap();
    assert!(count <= 5, "{} processes visible", count);
}

#[tokio::test]
async fn container_detect_without_an_engine_names_both() {
    let empty = tempfile::tempdir().unwrap();
    let err = ContainerEngine::detect_on_path(ContainerEngineKind::Auto, empty.path().as_os_str())
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(
        err,
        ExecError::Unavailable {
            executor: "container",
            ..
        }
    ));
    assert!(message.contains("podman is not on PATH"), "{message}");
    assert!(message.contains("docker is not on PATH"), "{message}");
}

#[tokio::test]
async fn container_detect_reports_why_an_engine_is_unusable() {
    let dir = tempfile::tempdir().unwrap();
    let docker = dir.path().join("docker");
    raibid_testkit::write_script(
        &docker,
        "#!/bin/sh\necho 'Client: Docker Engine'\n\
         echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock.' >&2\nexit 1\n",
    );
    let err = ContainerEngine::detect_on_path(ContainerEngineKind::Auto, dir.path().as_os_str())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("`docker info` failed"), "{err}");
    assert!(err.contains("Cannot connect to the Docker daemon"), "{err}");
}

/// `agent.container_engine` picks one engine where both answer (auto prefers podman), and an
/// engine it names must be the one that works: no falling back to the other.
#[tokio::test]
async fn container_detect_takes_the_engine_the_configuration_names() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["podman", "docker"] {
        raibid_testkit::write_script(
            &dir.path().join(name),
            "#!/bin/sh
exit 0
",
        );
    }
    let path = dir.path().as_os_str();
    for (kind, expected) in [
        (ContainerEngineKind::Auto, "podman"),
        (ContainerEngineKind::Podman, "podman"),
        (ContainerEngineKind::Docker, "docker"),
    ] {
        let engine = ContainerEngine::detect_on_path(kind, path).await.unwrap();
        assert_eq!(engine.name(), expected, "{kind:?}");
        assert_eq!(engine.program(), dir.path().join(expected));
    }
    std::fs::remove_file(dir.path().join("docker")).unwrap();
    let err = ContainerEngine::detect_on_path(ContainerEngineKind::Docker, path)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("docker is not on PATH"), "{err}");
    assert!(!err.contains("podman"), "{err}");
}

/// Runs each test of the container executor against a podman and a docker of the test's
/// own: the executor speaks to both, and they differ (logins, pulls, options, messages).
macro_rules! on_each_engine {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test]
            async fn podman() {
                super::$test(&raibid_testkit::Podman::new()).await
            }

            #[tokio::test]
            async fn docker() {
                super::$test(&raibid_testkit::Docker::new()).await
            }
        }
    )*};
}

on_each_engine!(
    container_steps_run_in_their_image_with_the_workspace_and_environment,
    container_steps_keep_their_image_s_path,
    container_steps_that_time_out_or_are_cancelled_leave_no_container,
    container_steps_end_with_their_timeout_when_the_agent_is_gone,
    container_sweep_leaves_live_steps_and_other_containers_alone,
    container_untrusted_steps_run_only_images_served_without_a_login,
    container_steps_pull_from_the_forge_registry_with_its_login,
    container_steps_that_pull_get_the_tag_s_newest_push,
    container_steps_get_their_limits,
    container_steps_without_the_network_see_only_loopback,
    container_services_are_reached_by_name_and_leave_nothing,
    container_services_are_waited_for_until_ready,
    container_services_take_an_entrypoint,
    container_steps_get_the_configured_devices,
    container_plugin_steps_run_their_entrypoint_with_their_settings,
    container_steps_start_in_their_directory,
);

/// A step's `directory:` is where it starts, under every executor; the workspace stays the
/// workspace.
#[tokio::test]
async fn host_and_bwrap_steps_start_in_their_directory() {
    for executor in [&host() as &dyn Executor, &bwrap()] {
        let mut step = step("pwd; ls");
        std::fs::create_dir_all(step.spec.workspace.join("apps/web")).unwrap();
        std::fs::write(step.spec.workspace.join("apps/web/here"), "").unwrap();
        step.spec.directory = Some("apps/web".into());
        let ran = run(executor, &step.spec).await;
        assert!(
            ran.exit.success() && ran.output.ends_with("/apps/web\nhere\n"),
            "{}: {:?} {}",
            executor.name(),
            ran.exit,
            ran.output
        );
    }
}

async fn container_steps_start_in_their_directory(engine: &impl TestEngine) {
    let executor = container(engine).await;
    let mut step = step("pwd; ls");
    std::fs::create_dir_all(step.spec.workspace.join("apps/web")).unwrap();
    std::fs::write(step.spec.workspace.join("apps/web/here"), "").unwrap();
    step.spec.directory = Some("apps/web".into());
    let ran = run(&executor, &step.spec).await;
    assert_eq!(ran.output, "/workspace/apps/web\nhere\n", "{:?}", ran.exit);
}

/// A device node no sandbox's `/dev` has by itself, to hand to steps as `agent.devices` does
/// (`/dev/kvm` is GitLab Runner's own example). One of these exists on any Linux machine that
/// runs containers; none is a failure, not a skip.
fn a_device_node() -> std::path::PathBuf {
    ["/dev/fuse", "/dev/kvm", "/dev/net/tun", "/dev/loop-control"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .expect("none of /dev/fuse, /dev/kvm, /dev/net/tun, /dev/loop-control exists here")
}

/// `agent.devices`: the node is in the sandbox's `/dev` when configured, and not otherwise.
#[tokio::test]
async fn bwrap_steps_get_the_configured_devices() {
    let node = a_device_node();
    let script = format!(
        "if test -c {0}; then echo present; else echo absent; fi",
        node.display()
    );
    let without = run(&bwrap(), &step(&script).spec).await;
    assert_eq!(without.output, "absent\n", "{:?}", without.exit);
    let with = bwrap_with(BwrapOptions {
        devices: StepDevices {
            paths: vec![node.clone()],
            gpus: false,
        },
        ..BwrapOptions::default()
    });
    let ran = run(&with, &step(&script).spec).await;
    assert_eq!(ran.output, "present\n", "{:?}", ran.exit);
}

async fn container_steps_get_the_configured_devices(engine: &impl TestEngine) {
    let node = a_device_node();
    let script = format!(
        "if test -c {0}; then echo present; else echo absent; fi",
        node.display()
    );
    let without = run(&container(engine).await, &step(&script).spec).await;
    assert_eq!(without.output, "absent\n", "{:?}", without.exit);
    let with = container_with(
        engine,
        ContainerOptions {
            default_image: BUSYBOX_IMAGE.into(),
            devices: StepDevices {
                paths: vec![node.clone()],
                gpus: false,
            },
            ..ContainerOptions::default()
        },
    )
    .await;
    let ran = run(&with, &step(&script).spec).await;
    assert_eq!(ran.output, "present\n", "{:?}", ran.exit);
}

/// `services:` run beside the steps on a network of the job's own (internal: the agent gives
/// steps no network here), reached by name; their output comes back when they are finished,
/// and then neither they nor their network is left. A fork's service image that its registry
/// does not serve anonymously is refused like a step's, and what started is removed.
async fn container_services_are_reached_by_name_and_leave_nothing(engine: &impl TestEngine) {
    use raibid_agent::executor::ServicesSpec;
    let _bridges = raibid_testkit::network_lock();
    let executor = container(engine).await;
    let service = raibid_pipeline::Service {
        name: "greeter".into(),
        image: BUSYBOX_IMAGE.into(),
        env: BTreeMap::from([("GREETING".into(), "hello from the service".into())]),
        secrets: Vec::new(),
        secret_env: Default::default(),
        ready: None,
        entrypoint: Vec::new(),
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo listening; while true; do echo \"$GREETING\" | nc -l -p 7000; done".into(),
        ],
    };
    // A chatty one: the log gets its last 1,000 lines.
    let chatty = raibid_pipeline::Service {
        name: "chatty".into(),
        image: BUSYBOX_IMAGE.into(),
        env: BTreeMap::new(),
        secrets: Vec::new(),
        secret_env: Default::default(),
        ready: None,
        entrypoint: Vec::new(),
        command: vec![
            "sh".into(),
            "-c".into(),
            "seq 1 2000; exec sleep 1000".into(),
        ],
    };
    let mut spec = ServicesSpec {
        services: vec![service, chatty],
        private: None,
        untrusted: false,
        timeout: Duration::from_secs(120),
    };
    let (tx, mut notes) = mpsc::channel(64);
    let group = executor
        .start_services(&spec, tx, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(notes.recv().await.unwrap()).unwrap(),
        format!("[raibid] service greeter started ({BUSYBOX_IMAGE})\n")
    );
    assert_eq!(engine.raibid_networks(), [group.network()]);

    let mut client = step(
        "for i in $(seq 1 50); do nc -w 2 greeter 7000 </dev/null && exit 0; sleep 0.2; done; exit 1",
    );
    client.spec.network = Some(group.network().to_owned());
    let ran = run(&executor, &client.spec).await;
    assert!(ran.exit.success(), "{:?}: {}", ran.exit, ran.output);
    assert_eq!(ran.output, "hello from the service\n");
    // A step of another job (no network of the services') cannot reach them.
    let stranger = step("nc -w 2 greeter 7000 </dev/null 2>/dev/null || echo unreachable");
    assert_eq!(run(&executor, &stranger.spec).await.output, "unreachable\n");

    let (tx, rx) = mpsc::channel(64);
    let ((), logs) = tokio::join!(group.finish(tx), collect(rx));
    assert!(
        logs.starts_with("\n\u{25b6} service greeter\nlistening\n"),
        "{logs}"
    );
    let chatty = (1001..=2000).map(|i| format!("{i}\n")).collect::<String>();
    assert!(
        logs.ends_with(&format!("\n\u{25b6} service chatty\n{chatty}")),
        "{logs}"
    );
    assert_eq!(engine.containers(), Vec::<String>::new(), "left behind");
    assert_eq!(
        engine.raibid_networks(),
        Vec::<String>::new(),
        "left behind"
    );

    let refused = |spec: ServicesSpec| {
        let executor = &executor;
        async move {
            let (tx, _notes) = mpsc::channel(64);
            executor
                .start_services(&spec, tx, CancellationToken::new())
                .await
                .unwrap_err()
        }
    };
    spec.untrusted = true;
    let err = refused(spec.clone()).await;
    assert!(
        matches!(&err, ExecError::Image(why) if why.contains("without a login")),
        "{err}"
    );
    nothing_left(engine).await;

    // A service that cannot start ends the start, naming it, and the one before it goes too.
    spec.untrusted = false;
    spec.services.push(raibid_pipeline::Service {
        name: "missing".into(),
        image: "localhost/raibid-test/no-such-image:1".into(),
        env: BTreeMap::new(),
        secrets: Vec::new(),
        secret_env: Default::default(),
        command: Vec::new(),
        ready: None,
        entrypoint: Vec::new(),
    });
    let err = refused(spec).await;
    assert!(
        matches!(&err, ExecError::Service(why) if why.starts_with("service missing: localhost/raibid-test/no-such-image:1 did not start")),
        "{err}"
    );
    nothing_left(engine).await;
}

/// A service with `ready` is waited for: the first step reaches it on its first try. One that
/// never gets ready, or whose container stops, ends the start with the reason and its own log,
/// and nothing is left behind.
async fn container_services_are_waited_for_until_ready(engine: &impl TestEngine) {
    use raibid_agent::executor::ServicesSpec;
    use raibid_pipeline::Ready;
    let _bridges = raibid_testkit::network_lock();
    let executor = container(engine).await;
    let service = |name: &str, script: &str, ready: &str, timeout: u64| raibid_pipeline::Service {
        name: name.into(),
        image: BUSYBOX_IMAGE.into(),
        env: BTreeMap::new(),
        secrets: Vec::new(),
        secret_env: Default::default(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        entrypoint: Vec::new(),
        ready: Some(Ready {
            run: raibid_pipeline::ReadyRun::Shell(ready.into()),
            timeout: Duration::from_secs(timeout),
        }),
    };
    // Starts one service, with what the start wrote to the job's log.
    let start = |service| {
        let executor = &executor;
        async move {
            let spec = ServicesSpec {
                services: vec![service],
                private: None,
                untrusted: false,
                timeout: Duration::from_secs(120),
            };
            let (tx, rx) = mpsc::channel(64);
            tokio::join!(
                executor.start_services(&spec, tx, CancellationToken::new()),
                collect(rx)
            )
        }
    };

    // Listens only after two seconds, as a database does after initialising its files.
    let slow = service(
        "slow",
        "sleep 2; while true; do echo hello | nc -l -p 7000; done",
        "nc -w 1 127.0.0.1 7000 </dev/null | grep -q hello",
        60,
    );
    let (group, notes) = start(slow).await;
    let group = group.unwrap();
    assert!(
        notes.contains("[raibid] service slow is ready (") && notes.contains(" tries)"),
        "{notes}"
    );
    // One try, no retries: without the wait it finds nothing listening.
    let mut client = step("nc -w 2 slow 7000 </dev/null");
    client.spec.network = Some(group.network().to_owned());
    let ran = run(&executor, &client.spec).await;
    assert!(ran.exit.success(), "{:?}: {}", ran.exit, ran.output);
    assert_eq!(ran.output, "hello\n");
    let (tx, rx) = mpsc::channel(64);
    tokio::join!(group.finish(tx), collect(rx));

    nothing_left(engine).await;

    let never = service(
        "never",
        "echo still initialising; exec sleep 1000",
        "echo not yet >&2; exit 3",
        3,
    );
    let (err, log) = start(never).await;
    let err = err.unwrap_err();
    assert!(
        matches!(&err, ExecError::Service(why) if why.starts_with("service never: not ready within 3 s (")
            && why.ends_with("tries); the last try of `echo not yet >&2; exit 3` exited 3 (the job's log has its output)")),
        "{err}"
    );
    assert!(
        log.contains("[raibid] what the last try printed:\nnot yet\n\n\u{25b6} service never\nstill initialising\n"),
        "{log}"
    );
    nothing_left(engine).await;

    let crashing = service("crashing", "echo bad configuration; exit 4", "false", 60);
    let (err, log) = start(crashing).await;
    let err = err.unwrap_err();
    assert_eq!(
        err.to_string(),
        ExecError::Service(
            "service crashing: its container stopped (exit code 4) before it was ready (the \
             job's log has its output)"
                .into()
        )
        .to_string()
    );
    assert!(log.contains("bad configuration\n"), "{log}");
    nothing_left(engine).await;

    // An image without a shell (distroless): a check given as a program and its arguments
    // runs as it is; the same check as shell commands cannot run there.
    let context = tempfile::tempdir().unwrap();
    let busybox = raibid_testkit::require_binary("busybox", "busybox-static");
    std::fs::copy(&busybox, context.path().join("busybox")).unwrap();
    std::fs::write(
        context.path().join("Containerfile"),
        "FROM scratch\nCOPY busybox /busybox\n",
    )
    .unwrap();
    const SHELLLESS: &str = "localhost/raibid-test/no-shell:1";
    engine.build(SHELLLESS, context.path());
    let shellless = |ready: raibid_pipeline::ReadyRun, timeout: u64| raibid_pipeline::Service {
        image: SHELLLESS.into(),
        command: vec![
            "/busybox".into(),
            "sh".into(),
            "-c".into(),
            "/busybox sleep 1; /busybox touch /up; exec /busybox sleep 1000".into(),
        ],
        ready: Some(Ready {
            run: ready,
            timeout: Duration::from_secs(timeout),
        }),
        ..service("plain", "", "", 1)
    };
    let exec = raibid_pipeline::ReadyRun::Exec(
        ["/busybox", "test", "-f", "/up"].map(String::from).to_vec(),
    );
    let (group, notes) = start(shellless(exec, 60)).await;
    let group = group.unwrap();
    assert!(
        notes.contains("[raibid] service plain is ready ("),
        "{notes}"
    );
    let (tx, rx) = mpsc::channel(64);
    tokio::join!(group.finish(tx), collect(rx));
    nothing_left(engine).await;
    let shell = raibid_pipeline::ReadyRun::Shell("/busybox test -f /up".into());
    let (err, _) = start(shellless(shell, 4)).await;
    let err = err.unwrap_err();
    assert!(
        matches!(&err, ExecError::Service(why) if why.starts_with("service plain: not ready within 4 s")),
        "{err}"
    );
    nothing_left(engine).await;
}

/// `entrypoint` replaces the image's, with `command` after it, on both engines.
async fn container_services_take_an_entrypoint(engine: &impl TestEngine) {
    use raibid_agent::executor::ServicesSpec;
    let _bridges = raibid_testkit::network_lock();
    let executor = container(engine).await;
    let spec = ServicesSpec {
        services: vec![raibid_pipeline::Service {
            name: "echo".into(),
            image: BUSYBOX_IMAGE.into(),
            env: BTreeMap::new(),
            secrets: Vec::new(),
            secret_env: Default::default(),
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            command: vec![
                "echo \"from the entrypoint: $0 $1\"; touch /said; exec sleep 1000".into(),
                "first".into(),
                "second".into(),
            ],
            // Its output is in the engine's log (written before the file) by the time the
            // services are handed over.
            ready: Some(raibid_pipeline::Ready {
                run: raibid_pipeline::ReadyRun::Shell("test -f /said".into()),
                timeout: Duration::from_secs(30),
            }),
        }],
        private: None,
        untrusted: false,
        timeout: Duration::from_secs(60),
    };
    let (tx, _notes) = mpsc::channel(64);
    let group = executor
        .start_services(&spec, tx, CancellationToken::new())
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(64);
    let ((), logs) = tokio::join!(group.finish(tx), collect(rx));
    assert_eq!(
        logs,
        "\n\u{25b6} service echo\nfrom the entrypoint: first second\n"
    );
    assert_eq!(engine.containers(), Vec::<String>::new(), "left behind");
}

/// Everything sent on `rx` until its senders are gone, as text.
async fn collect(mut rx: mpsc::Receiver<Vec<u8>>) -> String {
    let mut text = Vec::new();
    while let Some(chunk) = rx.recv().await {
        text.extend(chunk);
    }
    String::from_utf8(text).unwrap()
}

/// Waits until the engine has no raibid container or network left: a start that fails removes
/// what it started on a thread of its own.
async fn nothing_left(engine: &impl TestEngine) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !engine.raibid_networks().is_empty() || !engine.containers().is_empty() {
        assert!(
            Instant::now() < deadline,
            "left behind: {:?} {:?}",
            engine.raibid_networks(),
            engine.containers()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Under docker each step has a watchdog process (podman's `--timeout` stands in for it): once
/// the step has ended, none may be left.
async fn assert_no_watchdog_left(engine: &impl TestEngine) {
    let program = engine.program().display().to_string();
    let watchdogs = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains("raibid-container-watchdog") && c.contains(&program))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !watchdogs().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(watchdogs(), Vec::<String>::new(), "watchdogs left running");
}

/// A container executor on an engine of the test's own (see [`TestEngine`]).
async fn container(engine: &impl TestEngine) -> ContainerExecutor {
    container_with(
        engine,
        ContainerOptions {
            default_image: BUSYBOX_IMAGE.into(),
            ..ContainerOptions::default()
        },
    )
    .await
}

async fn container_with(
    test_engine: &impl TestEngine,
    options: ContainerOptions,
) -> ContainerExecutor {
    let engine = ContainerEngine::detect_on_path(
        ContainerEngineKind::Auto,
        test_engine.bin_dir().as_os_str(),
    )
    .await
    .unwrap_or_else(|e| panic!("the test's {} does not work: {e}", test_engine.name()));
    assert_eq!(engine.name(), test_engine.name(), "found the wrong engine");
    ContainerExecutor::new(
        engine,
        ContainerOptions {
            kill_grace: GRACE,
            ..options
        },
    )
}

async fn container_steps_run_in_their_image_with_the_workspace_and_environment(
    engine: &impl TestEngine,
) {
    let executor = container(engine).await;
    let long = "v".repeat(70_000);
    let mut step = step(
        "echo a; echo b >&2; pwd; echo x > out.txt; echo \"$RAIBID_GREETING\"; \
         test \"${#RAIBID_LONG}\" = 70000 && echo long-ok; echo \"$TOKEN\"; exit 3",
    );
    step.spec.env = BTreeMap::from([
        ("RAIBID_GREETING".into(), "line one\nline two".into()),
        ("RAIBID_LONG".into(), long),
        ("TOKEN".into(), "s3cret value with spaces".into()),
    ]);
    let ran = run(&executor, &step.spec).await;
    assert_eq!(ran.exit.code, Some(3), "{:?}: {}", ran.exit, ran.output);
    assert_eq!(
        ran.output,
        "a\nb\n/workspace\nline one\nline two\nlong-ok\ns3cret value with spaces\n"
    );
    assert_eq!(
        std::fs::read_to_string(step.spec.workspace.join("out.txt")).unwrap(),
        "x\n"
    );
    assert_eq!(engine.containers(), Vec::<String>::new(), "left behind");
}

/// The image's own environment stays (`PATH` from its `ENV`), and the step's `image` wins
/// over the executor's default.
async fn container_steps_keep_their_image_s_path(engine: &impl TestEngine) {
    let executor = container_with(
        engine,
        ContainerOptions {
            default_image: "localhost/raibid-test/no-such-image:1".into(),
            ..ContainerOptions::default()
        },
    )
    .await;
    let mut step = step("echo \"$PATH\"");
    step.spec.env.clear();
    step.spec.image = Some(BUSYBOX_IMAGE.into());
    let ran = run(&executor, &step.spec).await;
    assert!(ran.exit.success(), "{:?}: {}", ran.exit, ran.output);
    assert_eq!(ran.output, "/bin\n");
}

async fn container_steps_that_time_out_or_are_cancelled_leave_no_container(
    engine: &impl TestEngine,
) {
    let executor = container(engine).await;
    let mut slow = step("trap '' TERM; echo ready; sleep 1000");
    slow.spec.timeout = Duration::from_secs(3);
    let ran = run(&executor, &slow.spec).await;
    assert!(ran.exit.timed_out && !ran.exit.success(), "{:?}", ran.exit);
    assert!(
        ran.elapsed < Duration::from_secs(30),
        "took {:?}",
        ran.elapsed
    );
    assert_eq!(engine.containers(), Vec::<String>::new(), "left behind");
    assert_no_watchdog_left(engine).await;

    let slow = step("echo ready; sleep 1000");
    let ran = run_cancelled_when_ready(&executor, &slow.spec).await;
    assert!(ran.exit.cancelled, "{:?}", ran.exit);
    assert!(
        ran.elapsed < Duration::from_secs(30),
        "took {:?}",
        ran.elapsed
    );
    assert_eq!(engine.containers(), Vec::<String>::new(), "left behind");
    assert_no_watchdog_left(engine).await;
}

/// The sweep removes only containers of dead agents (crates/raibid-reliability's
/// `fault_agent_kill` kills one): a live agent's running step, other containers whose names
/// merely start like ours, and the engine's other containers stay.
async fn container_sweep_leaves_live_steps_and_other_containers_alone(engine: &impl TestEngine) {
    let running = container(engine).await;
    let sweeper = container(engine).await;
    // The executor's first-run check of the engine is a short-lived container named like a
    // step's: over before the slow step starts, so the third container below is the step.
    let warm = step("true");
    assert!(run(&running, &warm.spec).await.exit.success());
    engine.start_sleeper("postgres", &[]);
    engine.start_sleeper("raibid-0123456789abcdef", &[]);
    let slow = step("echo ready; sleep 1000");
    let cancel = CancellationToken::new();
    let step_run = run_cancellable(&running, &slow.spec, cancel.clone());
    let sweep = async {
        while engine.containers().len() < 3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let removed = sweeper.sweep_orphaned_containers().await;
        let left = engine.containers();
        cancel.cancel();
        (removed, left)
    };
    let (ran, (removed, mut left)) = tokio::join!(step_run, sweep);
    assert!(ran.exit.cancelled, "{:?}: {}", ran.exit, ran.output);
    assert_eq!(removed, 0);
    left.sort();
    assert_eq!(left.len(), 3, "{left:?}");
    assert_eq!(left[0], "postgres");
    assert_eq!(left[1], "raibid-0123456789abcdef");
    assert!(left[2].starts_with("raibid-"), "{left:?}");
}

/// A pull request from a fork (an untrusted step) runs only an image that its registry serves
/// without a login, pinned to the digest of that answer: not a private image that the engine's
/// own login pulls, not even once a trusted job has put it into the engine's store, and not an
/// image that is only in the store.
async fn container_untrusted_steps_run_only_images_served_without_a_login(
    engine: &impl TestEngine,
) {
    let private = Registry::start_with_auth(TEST_USER, TEST_PASSWORD, TEST_PASSWORD_BCRYPT);
    let public = Registry::start();
    engine.allow_plain_http(&private.host());
    engine.allow_plain_http(&public.host());
    engine.login(&private.host(), TEST_USER, TEST_PASSWORD);
    let private_image = format!("{}/team/tool:1", private.host());
    let public_image = format!("{}/library/tool:1", public.host());
    for image in [&private_image, &public_image] {
        engine.push_busybox(image);
    }
    let executor = container(engine).await;

    let mut trusted = step("echo trusted-ran");
    trusted.spec.image = Some(private_image.clone());
    let ran = run(&executor, &trusted.spec).await;
    assert!(ran.exit.success(), "{:?}: {}", ran.exit, ran.output);
    assert_eq!(ran.output, "trusted-ran\n");

    let mut fork = step("echo fork-ran");
    fork.spec.untrusted = true;
    for image in [private_image.as_str(), BUSYBOX_IMAGE] {
        fork.spec.image = Some(image.into());
        let (result, output) = try_run(&executor, &fork.spec, CancellationToken::new()).await;
        let Err(ExecError::Image(why)) = result else {
            panic!("{image}: expected a refusal, got {result:?}: {output}");
        };
        assert!(
            why.contains("without a login") && why.contains(image),
            "{why}"
        );
        assert!(!output.contains("fork-ran"), "{output}");
    }

    fork.spec.image = Some(public_image.clone());
    let ran = run(&executor, &fork.spec).await;
    assert!(ran.exit.success(), "{:?}: {}", ran.exit, ran.output);
    let served = public
        .get(
            "/v2/library/tool/manifests/1",
            Some("application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"),
        )
        .unwrap();
    let digest = &served.headers["docker-content-digest"];
    assert!(
        ran.output.contains(&format!(
            "running {}/library/tool@{digest}, which is {public_image}",
            public.host()
        )),
        "{}",
        ran.output
    );
    assert!(ran.output.ends_with("\nfork-ran\n"), "{}", ran.output);
}

/// A step container ends some seconds past the step's timeout and grace without the agent
/// (podman's `--timeout`; under docker the agent's watchdog process): the container of an
/// agent that stopped acting on it (killed, here a future that is never polled again and
/// never dropped) does not run on until another agent sweeps it.
async fn container_steps_end_with_their_timeout_when_the_agent_is_gone(engine: &impl TestEngine) {
    let executor = container(engine).await;
    let warm = step("true");
    assert!(run(&executor, &warm.spec).await.exit.success());
    let mut slow = step("echo ready; sleep 1000");
    slow.spec.timeout = Duration::from_secs(2);
    let (tx, _rx) = mpsc::channel::<Vec<u8>>(16);
    let mut abandoned = Box::pin(executor.run_step(&slow.spec, tx, CancellationToken::new()));
    let started = tokio::select! {
        exit = &mut abandoned => panic!("the step ended: {exit:?}"),
        () = async {
            while engine.containers().is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        } => Instant::now(),
    };
    std::mem::forget(abandoned);
    while !engine.containers().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still running: {:?}",
            engine.containers()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Not before the step's own limit, which the agent enforces while it lives.
    assert!(
        started.elapsed() >= Duration::from_secs(2) + GRACE,
        "gone after {:?}",
        started.elapsed()
    );
}

/// A Woodpecker plugin runs its image's entrypoint (no script, no shell of ours) in the
/// workspace, reading its `PLUGIN_*` variables, multi-line ones too (an SSH key given as a
/// setting); its exit code is the step's. Host and bwrap steps cannot run one.
async fn container_plugin_steps_run_their_entrypoint_with_their_settings(engine: &impl TestEngine) {
    let context = tempfile::tempdir().unwrap();
    std::fs::write(
        context.path().join("plugin.sh"),
        "#!/bin/sh\necho \"plugin in $(pwd) as $0\"\nprintf '%s\\n' \"$PLUGIN_REPO\" \"$PLUGIN_KEY\" \
         \"$PLUGIN_LONG\" | head -c 200\necho \"$PLUGIN_TOKEN\" >&2\nexit \"${PLUGIN_EXIT:-0}\"\n",
    )
    .unwrap();
    std::fs::write(
        context.path().join("Containerfile"),
        format!(
            "FROM {BUSYBOX_IMAGE}\nCOPY plugin.sh /bin/plugin.sh\nRUN chmod 755 /bin/plugin.sh\n\
             ENTRYPOINT [\"/bin/plugin.sh\"]\n"
        ),
    )
    .unwrap();
    let image = "localhost/raibid-test/plugin:1";
    engine.build(image, context.path());
    let executor = container(engine).await;
    let mut step = step("");
    step.spec.plugin = true;
    step.spec.image = Some(image.into());
    step.spec.env.extend([
        ("PLUGIN_REPO".to_string(), "acme/app".to_string()),
        (
            "PLUGIN_KEY".to_string(),
            "-----BEGIN KEY-----\nabc\n-----END KEY-----".to_string(),
        ),
        ("PLUGIN_LONG".to_string(), "l".repeat(40_000)),
        ("PLUGIN_TOKEN".to_string(), "t0k3n".to_string()),
        ("PLUGIN_EXIT".to_string(), "4".to_string()),
    ]);
    let ran = run(&executor, &step.spec).await;
    assert_eq!(ran.exit.code, Some(4), "{:?}: {}", ran.exit, ran.output);
    // The engine carries standard output and error apart: the error's line may come anywhere
    // between the output's writes, which stay in order.
    assert!(ran.output.contains("t0k3n\n"), "{}", ran.output);
    let stdout = ran.output.replacen("t0k3n\n", "", 1);
    assert!(
        stdout.starts_with(
            "plugin in /workspace as /bin/plugin.sh\nacme/app\n-----BEGIN KEY-----\nabc\n\
             -----END KEY-----\nllll"
        ),
        "{}",
        ran.output
    );
    assert_eq!(engine.containers(), Vec::<String>::new(), "left behind");

    // A multi-line value the plugin could only get from a file that its entrypoint never reads.
    step.spec.env.insert("NOTE".into(), "two\nlines".into());
    let (result, _) = try_run(&executor, &step.spec, CancellationToken::new()).await;
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("NOTE has a multi-line or very long value"),
        "{err}"
    );
    step.spec.env.remove("NOTE");

    for other in [&host() as &dyn Executor, &bwrap()] {
        let (result, _) = try_run(other, &step.spec, CancellationToken::new()).await;
        let err = result.unwrap_err().to_string();
        assert!(
            err.contains("runs only under the container executor"),
            "{}: {err}",
            other.name()
        );
    }
}

/// Builds, into `engine`'s store only, busybox with `/version` holding `version`; its local
/// name, which no registry has.
fn busybox_with_version(engine: &impl TestEngine, version: &str) -> String {
    let context = tempfile::tempdir().unwrap();
    std::fs::write(context.path().join("version"), format!("{version}\n")).unwrap();
    std::fs::write(
        context.path().join("Containerfile"),
        format!("FROM {BUSYBOX_IMAGE}\nCOPY version /version\n"),
    )
    .unwrap();
    let name = format!("localhost/raibid-test/{version}:1");
    engine.build(&name, context.path());
    name
}

/// Images on the forge's registry (`agent.registry`) are pulled with its login for trusted
/// steps, so a pipeline can run what an earlier build pushed there while the engine itself has
/// no login; `pull: true` goes through the same login. Untrusted steps never get it.
async fn container_steps_pull_from_the_forge_registry_with_its_login(engine: &impl TestEngine) {
    let forge = Registry::start_with_auth(TEST_USER, TEST_PASSWORD, TEST_PASSWORD_BCRYPT);
    engine.allow_plain_http(&forge.host());
    let image = format!("{}/acme/app:main", forge.host());
    let credentials = format!("{TEST_USER}:{TEST_PASSWORD}");
    let push = |from: &str| engine.push(from, &image, Some(&credentials));
    push(BUSYBOX_IMAGE);
    let mut version = step("cat /version 2>/dev/null || echo first");
    version.spec.image = Some(image.clone());

    // Without the login the engine cannot pull it.
    let without = container(engine).await;
    let (result, output) = try_run(&without, &version.spec, CancellationToken::new()).await;
    assert!(result.is_err(), "{result:?}: {output}");

    let with = container_with(
        engine,
        ContainerOptions {
            default_image: BUSYBOX_IMAGE.into(),
            // Another registry's login first (`agent.pull_logins`): each image's host picks.
            registry_logins: vec![
                RegistryAuth {
                    host: "registry.example:5000".into(),
                    username: "other".into(),
                    password: "not-this-one".into(),
                },
                RegistryAuth {
                    host: forge.host(),
                    username: TEST_USER.into(),
                    password: TEST_PASSWORD.into(),
                },
            ],
            ..ContainerOptions::default()
        },
    )
    .await;
    let ran = run(&with, &version.spec).await;
    assert!(ran.exit.success(), "{:?}: {}", ran.exit, ran.output);
    assert_eq!(ran.output, "first\n");

    let second = busybox_with_version(engine, "second");
    push(&second);
    version.spec.pull = true;
    let ran = run(&with, &version.spec).await;
    assert!(ran.exit.success(), "{:?}: {}", ran.exit, ran.output);
    assert_eq!(ran.output, "second\n");

    version.spec.untrusted = true;
    let (result, output) = try_run(&with, &version.spec, CancellationToken::new()).await;
    assert!(
        matches!(&result, Err(ExecError::Image(why)) if why.contains("without a login")),
        "{result:?}: {output}"
    );
    assert!(!output.contains("second"), "{output}");
}

/// A moving tag stays what the engine pulled first, unless the step says `pull: true`.
async fn container_steps_that_pull_get_the_tag_s_newest_push(engine: &impl TestEngine) {
    let registry = Registry::start();
    engine.allow_plain_http(&registry.host());
    let image = format!("{}/moving/tool:latest", registry.host());
    engine.push_busybox(&image);
    let executor = container(engine).await;
    let mut version = step("cat /version 2>/dev/null || echo first");
    version.spec.image = Some(image.clone());
    assert_eq!(run(&executor, &version.spec).await.output, "first\n");

    // A second image pushed under the same tag, built under another name so that the
    // engine's copy of the tag stays the first.
    let second = busybox_with_version(engine, "second");
    engine.push(&second, &image, None);

    assert_eq!(run(&executor, &version.spec).await.output, "first\n");
    version.spec.pull = true;
    let ran = run(&executor, &version.spec).await;
    assert!(ran.exit.success(), "{:?}: {}", ran.exit, ran.output);
    // The engine's account of the pull comes first, in the step's log.
    let pulling = match engine.name() {
        "podman" => "Trying to pull",
        _ => "latest: Pulling from moving/tool",
    };
    assert!(
        ran.output.starts_with(pulling) && ran.output.ends_with("\nsecond\n"),
        "{}",
        ran.output
    );
}

/// `agent.step_limits` reach the step's cgroup: past its memory the kernel kills the step (and
/// the log says what was the likeliest cause), past its process count a fork fails, and its
/// CPU quota is what was asked.
async fn container_steps_get_their_limits(engine: &impl TestEngine) {
    let executor = container_with(
        engine,
        ContainerOptions {
            default_image: BUSYBOX_IMAGE.into(),
            limits: ContainerLimits {
                memory_bytes: Some(32 << 20),
                cpus: Some(0.5),
                pids: Some(20),
            },
            ..ContainerOptions::default()
        },
    )
    .await;

    let hungry = step("x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo \"kept ${#x}\"");
    let ran = run(&executor, &hungry.spec).await;
    assert_eq!(ran.exit.code, Some(137), "{:?}: {}", ran.exit, ran.output);
    assert!(!ran.output.contains("kept"), "{}", ran.output);
    assert!(
        ran.output
            .contains("likeliest cause is its memory limit, agent.step_limits.memory = 32 MiB"),
        "{}",
        ran.output
    );
    // conmon's note of the kill stays in the step's private directory, not the agent's
    // working directory (this test's).
    assert!(
        !Path::new("oom").exists(),
        "an `oom` file in the working directory"
    );

    let forks = step("for i in $(seq 1 40); do sleep 2 & done; wait; echo all-forked");
    let ran = run(&executor, &forks.spec).await;
    assert!(
        ran.output.contains("can't fork") && !ran.output.contains("all-forked"),
        "{:?}: {}",
        ran.exit,
        ran.output
    );

    // cgroup v2's cpu.max, else v1's quota over period: half a core.
    let quota = step(
        "cat /sys/fs/cgroup/cpu.max 2>/dev/null || \
         echo \"$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)\"",
    );
    let ran = run(&executor, &quota.spec).await;
    assert!(ran.exit.success(), "{:?}: {}", ran.exit, ran.output);
    assert_eq!(ran.output, "50000 100000\n");
}

async fn container_steps_without_the_network_see_only_loopback(engine: &impl TestEngine) {
    let executor = container(engine).await;
    let step = step("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '");
    let ran = run(&executor, &step.spec).await;
    assert!(ran.exit.success(), "{:?}: {}", ran.exit, ran.output);
    assert_eq!(ran.output, "lo\n");
}

/// With `agent.network: true` a step gets the engine's own network: it reaches out (here a
/// listener of the host's, through the bridge's gateway), but its loopback is its own, so
/// services the host keeps on 127.0.0.1 (`raibid up`'s Redis) are out of its reach.
#[tokio::test]
async fn container_steps_with_the_network_reach_out_but_not_the_host_s_loopback() {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut conn, b"hello from the host\n");
        }
    });
    let podman = Podman::new();
    let executor = container_with(
        &podman,
        ContainerOptions {
            default_image: BUSYBOX_IMAGE.into(),
            network: true,
            ..ContainerOptions::default()
        },
    )
    .await;
    let step = step(&format!(
        "gateway=$(ip route | awk '/^default/ {{print $3}}')\n\
         nc -w 5 \"$gateway\" {port}\n\
         if nc -w 2 127.0.0.1 {port} </dev/null; then echo loopback-reached; fi\n\
         tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '"
    ));
    let ran = run(&executor, &step.spec).await;
    assert!(ran.exit.success(), "{:?}: {}", ran.exit, ran.output);
    assert!(
        ran.output.starts_with("hello from the host\n"),
        "{}",
        ran.output
    );
    assert!(!ran.output.contains("loopback-reached"), "{}", ran.output);
    assert!(ran.output.ends_with("eth0 lo "), "{}", ran.output);
}

/// The case ro_binds exist for: a toolchain under the hidden `/root` (rustup's default).
#[tokio::test]
async fn bwrap_ro_binds_make_a_hidden_toolchain_usable() {
    // Cargo tells the tests where it runs from: `<toolchain>/bin/cargo`.
    let cargo = PathBuf::from(env!("CARGO"));
    let toolchain = cargo.parent().unwrap().parent().unwrap().to_path_buf();
    let executor = bwrap_with(BwrapOptions {
        ro_binds: vec![toolchain.clone()],
        ..BwrapOptions::default()
    });
    let mut step = step("rustc --version");
    step.spec.env.insert(
        "PATH".into(),
        format!("{}:{PATH}", toolchain.join("bin").display()),
    );
    let ran = run(&executor, &step.spec).await;
    assert!(
        ran.exit.success(),
        "{}: {}",
        toolchain.display(),
        ran.output
    );
    assert!(ran.output.starts_with("rustc "), "{}", ran.output);
}

/// A pipeline's `env` can set `HOME`; bwrap binds the job's home, never the path `HOME` names
/// (which used to undo the sandbox: `HOME: /` made the whole host writable).
#[tokio::test]
async fn bwrap_binds_the_jobs_home_not_the_home_a_pipeline_names() {
    let data = tempfile::Builder::new()
        .prefix("raibid-agent-data-")
        .tempdir()
        .unwrap();
    std::fs::write(data.path().join("secret.txt"), "token-in-hidden-dir").unwrap();
    let home = tempfile::Builder::new()
        .prefix("raibid-job-home-")
        .tempdir()
        .unwrap();
    let mut step = step(&format!(
        "cat \"$HOME/secret.txt\" 2>/dev/null || echo hidden; \
         touch \"$HOME/planted\" 2>/dev/null || true; \
         echo state > {SANDBOX_HOME}/state",
    ));
    step.spec
        .env
        .insert("HOME".into(), data.path().display().to_string());
    step.spec.home = Some(home.path().to_path_buf());
    let executor = bwrap_with(BwrapOptions {
        hide: vec![data.path().to_path_buf()],
        ..BwrapOptions::default()
    });
    let ran = run(&executor, &step.spec).await;
    assert!(ran.exit.success(), "{}", ran.output);
    assert_eq!(ran.output, "hidden\n");
    assert!(!data.path().join("planted").exists());
    assert_eq!(
        std::fs::read_to_string(home.path().join("state")).unwrap(),
        "state\n"
    );
}

/// Every job finds its workspace and HOME at the same paths, each with its own content: what
/// keeps absolute paths recorded by one job's tools (cargo's fingerprints) valid in the next.
#[tokio::test]
async fn bwrap_jobs_see_their_own_directories_at_the_same_paths() {
    let executor = bwrap();
    let script = format!("pwd; cat mark; cat {SANDBOX_HOME}/mark; echo done > out");
    let mut seen = Vec::new();
    for job in ["one", "two"] {
        let home = tempfile::Builder::new()
            .prefix("raibid-job-home-")
            .tempdir()
            .unwrap();
        let mut step = step(&script);
        step.spec.home = Some(home.path().to_path_buf());
        std::fs::write(step.spec.workspace.join("mark"), format!("src of {job}\n")).unwrap();
        std::fs::write(home.path().join("mark"), format!("home of {job}\n")).unwrap();
        let ran = run(&executor, &step.spec).await;
        assert!(ran.exit.success(), "{}", ran.output);
        assert_eq!(
            ran.output,
            format!("{SANDBOX_WORKSPACE}\nsrc of {job}\nhome of {job}\n")
        );
        assert!(step.spec.workspace.join("out").exists());
        seen.push(step.spec.workspace.clone());
    }
    assert_ne!(seen[0], seen[1], "two jobs, two directories on the host");
}

/// An agent running as root names a step user for bwrap: without capabilities a root step still
/// owns every root-only file and socket it can see read-only (systemd's and a container
/// engine's sockets among them: a way out of the sandbox).
#[tokio::test]
async fn bwrap_steps_of_a_root_agent_run_as_the_step_user() {
    use std::os::unix::fs::PermissionsExt;
    assert!(
        nix::unistd::geteuid().is_root(),
        "starting steps as another user needs root (CI runs as root); run this test as root"
    );
    // Visible in the sandbox (read-only), readable by root alone.
    let visible = tempfile::Builder::new()
        .prefix("raibid-root-only-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let private = visible.path().join("private");
    std::fs::write(&private, "root-only-content").unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    let nobody = raibid_agent::StepUser {
        uid: 65534,
        gid: 65534,
    };
    let executor = bwrap_with(BwrapOptions {
        user: Some(nobody),
        ..BwrapOptions::default()
    });
    assert_eq!(executor.step_user(), Some(nobody));
    executor.probe().await.unwrap();
    let step = step(&format!(
        "echo who=$(id -u):$(id -g):$(id -G); grep CapEff /proc/self/status; \
         cat {} 2>/dev/null || echo denied; echo made > in-workspace; echo t > /tmp/scratch",
        private.display()
    ));
    nobody.give(&step.spec.workspace).unwrap();
    let ran = run(&executor, &step.spec).await;
    assert!(ran.exit.success(), "{}", ran.output);
    assert_eq!(
        ran.output,
        "who=65534:65534:65534\nCapEff:\t0000000000000000\ndenied\n"
    );
    assert!(step.spec.workspace.join("in-workspace").exists());
}

/// A host step leads a session of its own: it has left the agent's controlling terminal, which
/// it could otherwise open and push keystrokes into for the shell that started the agent.
#[tokio::test]
async fn host_steps_lead_their_own_session() {
    let step = step("echo pid=$$ sid=$(cut -d' ' -f6 /proc/$$/stat)");
    let ran = run(&host(), &step.spec).await;
    assert!(ran.exit.success(), "{}", ran.output);
    let (pid, sid) = ran
        .output
        .trim()
        .strip_prefix("pid=")
        .and_then(|rest| rest.split_once(" sid="))
        .unwrap_or_else(|| panic!("{}", ran.output));
    assert_eq!(pid, sid, "{}", ran.output);
}

/// The pipeline chooses variable names, `LD_PRELOAD` included: nothing that runs before the step
/// (bwrap, and setpriv while it is still root) may load a library the pipeline names, or the
/// step would keep root and `CAP_SETUID`.
#[tokio::test]
async fn bwrap_programs_before_the_step_never_see_its_environment() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "starting steps as another user needs root (CI runs as root); run this test as root"
    );
    require_binary("cc", "gcc");
    let nobody = raibid_agent::StepUser {
        uid: 65534,
        gid: 65534,
    };
    let step = step("/bin/true; echo ran");
    let workspace = step.spec.workspace.clone();
    // The library sits where the host and the sandbox see it at the same path (/var/tmp is
    // visible read-only inside); its log is the workspace's, which the sandbox binds elsewhere,
    // so the library writes to whichever of the two paths exists where it runs.
    let library_dir = tempfile::Builder::new()
        .prefix("raibid-preload-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(
        library_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let library = library_dir.path().join("x.so");
    let log = workspace.join("preload.log");
    std::fs::write(
        library_dir.path().join("x.c"),
        format!(
            "#include <stdio.h>\n#include <unistd.h>\n__attribute__((constructor)) static void \
             init(void) {{ FILE *f = fopen(\"{}\", \"a\"); if (!f) f = fopen(\"{}\", \"a\"); \
             if (f) {{ fprintf(f, \"uid=%d\\n\", (int)getuid()); fclose(f); }} }}\n",
            log.display(),
            Path::new(SANDBOX_WORKSPACE).join("preload.log").display(),
        ),
    )
    .unwrap();
    let built = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(library_dir.path().join("x.c"))
        .status()
        .unwrap();
    assert!(built.success());
    std::fs::write(&log, "").unwrap();
    nobody.give(&workspace).unwrap();
    let mut spec = step.spec.clone();
    spec.env
        .insert("LD_PRELOAD".into(), library.display().to_string());
    let executor = bwrap_with(BwrapOptions {
        user: Some(nobody),
        ..BwrapOptions::default()
    });
    let ran = run(&executor, &spec).await;
    assert!(ran.exit.success(), "{}", ran.output);
    assert_eq!(ran.output, "ran\n");
    let loaded = std::fs::read_to_string(&log).unwrap();
    // The step's own programs load it, as the step user: that is the pipeline's business.
    assert!(loaded.contains("uid=65534"), "{loaded:?}");
    assert!(!loaded.contains("uid=0"), "{loaded:?}");
}

/// With a step user, nothing of a host step outlives it, not even what left its process group:
/// a `setsid` daemon would otherwise share the uid with later steps and jobs.
#[tokio::test]
async fn host_steps_of_a_step_user_leave_no_process_behind() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "starting steps as another user needs root (CI runs as root); run this test as root"
    );
    // A uid of this test's own: every process of it is killed after the step.
    let user = raibid_agent::StepUser {
        uid: 64_999,
        gid: 64_999,
    };
    let step = step("setsid sleep 300 >/dev/null 2>&1 </dev/null & sleep 0.5; echo started");
    user.give(&step.spec.workspace).unwrap();
    let executor = host().as_user(user);
    let ran = run(&executor, &step.spec).await;
    assert!(ran.exit.success(), "{}", ran.output);
    // Killed processes may linger as zombies until their new parent reaps them: only live
    // ones count.
    let live_of_user = |uid: &str| -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
            .filter(|status| {
                let field = |name: &str| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(str::trim)
                        .unwrap_or_default()
                        .to_owned()
                };
                !field("State:").starts_with('Z')
                    && field("Uid:").split_whitespace().next() == Some(uid)
            })
            .map(|status| status.lines().next().unwrap_or_default().to_owned())
            .collect()
    };
    let left = live_of_user("64999").join(", ");
    assert!(left.is_empty(), "still running: {left}");
}
