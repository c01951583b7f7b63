//! The `raibid` binary's own commands that need no server.

use std::process::Command;

const RAIBID: &str = env!("CARGO_BIN_EXE_raibid");

fn raibid(config: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(RAIBID)
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RAIBID_REDIS_URL")
        .output()
        .unwrap()
}

#[test]
fn config_show_prints_the_effective_configuration_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        "gitea:\n  token: gitea-tok-123\nredis:\n  url: redis://:redis-pw-456@10.1.2.3:6379/2\n",
    )
    .unwrap();
    let out = raibid(
        &file,
        &["config", "show"],
        &[("RAIBID_KEDA_POLLING_INTERVAL", "7")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        !shown.contains("gitea-tok-123") && !shown.contains("redis-pw-456"),
        "{shown}"
    );
    assert!(shown.contains("redis://:***@10.1.2.3:6379/2"), "{shown}");
    assert!(shown.contains("polling_interval: 7"), "{shown}");
    assert!(shown.contains("stream_name: ci-jobs"), "{shown}");
}

#[test]
fn config_show_hides_the_password_of_a_unix_socket_url() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        "redis:\n  url: \"redis+unix:///tmp/r.sock?db=1&pass=hunter2\"\n",
    )
    .unwrap();
    let out = raibid(&file, &["config", "show"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains("redis+unix:///tmp/r.sock?db=1&pass=***"),
        "{shown}"
    );
}

/// A `raibid` command run inside a CI step sees the agent's `RAIBID_*` step variables and
/// must not take them for configuration fields.
#[test]
fn config_show_works_inside_a_ci_step() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, "").unwrap();
    let out = raibid(
        &file,
        &["config", "show"],
        &[
            ("RAIBID_JOB_ID", "j-1"),
            ("RAIBID_ATTEMPT", "1"),
            ("RAIBID_REPO", "acme/app"),
            ("RAIBID_SHA", "0123456789012345678901234567890123456789"),
            ("RAIBID_REF", "refs/heads/main"),
            ("RAIBID_EVENT", "push"),
            ("RAIBID_POOL", "default"),
            ("RAIBID_WORKSPACE", "/workspace"),
            ("RAIBID_BRANCH", "main"),
            ("RAIBID_TAG", "v1.0.0"),
            ("RAIBID_PULL_REQUEST", "7"),
            ("RAIBID_TARGET_BRANCH", "main"),
            ("RAIBID_MATRIX", "{\"os\": \"linux\"}"),
            ("RAIBID_UP_WEBHOOK_SECRET", "whsec"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("stream_name: ci-jobs"), "{shown}");
}

#[test]
fn a_typo_in_the_config_file_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, "redis:\n  stream_nmae: x\n").unwrap();
    let out = raibid(&file, &["config", "show"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:", file.display())), "{err}");
    assert!(err.contains("stream_nmae"), "{err}");
}

#[test]
fn token_hash_matches_what_the_server_verifies_and_warns_of_a_short_token() {
    let hash = |token: &str| {
        let mut child = Command::new(RAIBID)
            .args(["token", "hash"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(format!("{token}\n").as_bytes()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        (
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (short, warning) = hash("s3cret");
    assert_eq!(short, raibid_config::hash_token("s3cret"));
    assert!(
        warning.contains("a token of 6 characters can be guessed"),
        "{warning}"
    );
    let long_token = "rbd_9f8a7c6e5d4b3a2f1e0d9c8b7a6";
    let (long, quiet) = hash(long_token);
    assert_eq!(long, raibid_config::hash_token(long_token));
    assert_eq!(quiet, "");
}

#[test]
fn job_commands_explain_an_unreachable_server() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, "").unwrap();
    let port = raibid_testkit::free_port();
    let out = raibid(
        &file,
        &[
            "job",
            "list",
            "--server",
            &format!("http://127.0.0.1:{port}"),
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the raibid server"), "{err}");
}

/// A config whose cluster cannot be reached.
fn no_cluster_config(dir: &std::path::Path) -> std::path::PathBuf {
    let file = dir.join("config.yaml");
    std::fs::write(&file, "cluster:\n  kubeconfig: /nonexistent/kubeconfig\n").unwrap();
    file
}

#[test]
fn status_of_a_component_without_a_cluster_fails_in_both_output_modes() {
    let dir = tempfile::tempdir().unwrap();
    let file = no_cluster_config(dir.path());
    let out = raibid(&file, &["status", "redis"], &[]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cluster: not reachable"), "{text}");
    let out = raibid(&file, &["status", "redis", "--output", "json"], &[]);
    assert!(!out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["reachable"], false);
    assert_eq!(json["ready"], false);
    // `all`, as for setup and teardown: the cluster's view of every component.
    let out = raibid(&file, &["status", "all", "--output", "json"], &[]);
    assert!(!out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["reachable"], false);
}

/// The server answers, but its Redis does not: `raibid status` must not say all is well.
#[test]
fn status_fails_when_the_server_is_up_but_redis_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let file = no_cluster_config(dir.path());
    let port = raibid_testkit::free_port();
    let redis_url = format!("redis://127.0.0.1:{}", raibid_testkit::free_port());
    let mut server = Command::new(RAIBID)
        .arg("--config")
        .arg(&file)
        .args(["server", "--listen", &format!("127.0.0.1:{port}")])
        .env("RAIBID_REDIS_URL", &redis_url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "server did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let text = raibid(&file, &["status", "--server", &url], &[]);
    let json = raibid(
        &file,
        &["status", "--server", &url, "--output", "json"],
        &[],
    );
    server.kill().unwrap();
    server.wait().unwrap();

    assert!(!text.status.success());
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("up, but Redis is unreachable"), "{stdout}");
    assert!(!json.status.success());
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["redis_reachable"], false);
    assert_eq!(json["ready"], false);
}

/// A step under the host executor runs as the agent's user: it must not read the environment
/// (the Redis password, tokens) of raibid's long-running processes through `/proc`.
#[test]
fn long_running_processes_hide_their_environment_from_their_own_user() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = no_cluster_config(dir.path());
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Root may read any process's environment; the case that matters is one ordinary user (the
    // recommended unprivileged agent and its steps), so as root both sides run as nobody.
    let as_one_user = |program: &str| {
        if nix::unistd::geteuid().is_root() {
            let mut cmd = Command::new("setpriv");
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", program]);
            cmd
        } else {
            Command::new(program)
        }
    };
    let port = raibid_testkit::free_port();
    let marker = "hunter2-environ-marker";
    let mut server = as_one_user(RAIBID)
        .arg("--config")
        .arg(&file)
        .args(["server", "--listen", &format!("127.0.0.1:{port}")])
        .env("HOME", dir.path())
        .env(
            "RAIBID_REDIS_URL",
            format!(
                "redis://:{marker}@127.0.0.1:{}",
                raibid_testkit::free_port()
            ),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "server did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let read = as_one_user("cat")
        .arg(format!("/proc/{}/environ", server.id()))
        .output()
        .unwrap();
    server.kill().unwrap();
    server.wait().unwrap();

    let stdout = String::from_utf8_lossy(&read.stdout);
    assert!(!stdout.contains(marker), "the environment was readable");
    assert!(!read.status.success());
    let stderr = String::from_utf8_lossy(&read.stderr);
    assert!(stderr.contains("Permission denied"), "{stderr}");
}

/// A step user the agent cannot use fails `raibid agent` at start, naming the problem, instead
/// of failing every job it claims.
#[test]
fn an_unusable_step_user_stops_the_agent_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let open = dir.path().join("open");
    let agent = |step_user: &str, executor: &str, workspace: &std::path::Path| {
        let file = dir.path().join("config.yaml");
        std::fs::write(
            &file,
            format!(
                "agent:\n  step_user: \"{step_user}\"\n  executor: {executor}\n  \
                 workspace_dir: {}\n  cache_dir: {}\n",
                workspace.display(),
                open.join("mirrors").display()
            ),
        )
        .unwrap();
        let out = raibid(&file, &["agent", "--once"], &[]);
        assert!(!out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = agent("65534", "container", &open.join("work"));
    assert!(
        err.contains("applies to the host and bwrap executors"),
        "{err}"
    );
    let err = agent("root", "host", &open.join("work"));
    assert!(err.contains("uid 0 is root"), "{err}");
    let err = agent("65534\"\n  concurrency: 2 #", "host", &open.join("work"));
    assert!(err.contains("runs one job at a time"), "{err}");
    let err = agent("not-an-account-here", "host", &open.join("work"));
    assert!(err.contains("no such account"), "{err}");
    let err = agent("65534", "host", &private.join("work"));
    if nix::unistd::geteuid().is_root() {
        assert!(
            err.contains("cannot enter")
                && err.contains(&private.join("work").display().to_string()),
            "{err}"
        );
    } else {
        assert!(err.contains("needs the agent to run as root"), "{err}");
    }
}

/// Two agents running host steps as one step user would kill each other's step processes
/// (every process of the step user dies after each step) and could read each other's secrets.
#[test]
fn a_step_user_serves_one_agent_per_machine() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs root (step users need a root agent); CI runs as root");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Another agent holds uid 64997.
    let held = std::fs::File::create("/run/raibid-step-user-64997.lock").unwrap();
    let held = nix::fcntl::Flock::lock(held, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        format!(
            "agent:\n  step_user: \"64997\"\n  executor: host\n  workspace_dir: {}\n  \
             cache_dir: {}\n",
            dir.path().join("work").display(),
            dir.path().join("mirrors").display()
        ),
    )
    .unwrap();
    // Without the lock the agent would start and wait for Redis (none here): a bounded wait.
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let mut child = Command::new(RAIBID)
        .arg("--config")
        .arg(&file)
        .args(["agent", "--once"])
        .env("RAIBID_REDIS_URL", "redis://127.0.0.1:1/")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "the second agent did not stop at start:\n{}",
                std::fs::read_to_string(dir.path().join("agent.log")).unwrap()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    drop(held);
    assert!(!status.success(), "{status:?}");
    let err = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    assert!(
        err.contains("another raibid agent on this machine runs host steps as uid 64997")
            && !err.contains("  "),
        "{err}"
    );
}

/// `raibid infra render | head -1` and the like: a reader that goes away ends the command
/// quietly (SIGPIPE, as for any filter), not with a panic and a backtrace.
#[test]
fn a_closed_pipe_ends_a_printing_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let file = no_cluster_config(dir.path());
    let mut child = Command::new(RAIBID)
        .arg("--config")
        .arg(&file)
        .args(["infra", "render", "dev"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before the command writes anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(13), "{:?}: {stderr}", out.status);
}

/// `raibid pipeline check` reads a pipeline file as an agent does: a valid one is summarised,
/// a broken one gets the agent's own error with file, line and column, and exit code 1; a
/// missing `.raibid.yaml` shows what autodetection would run.
#[test]
fn pipeline_check_reports_errors_where_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "{}\n").unwrap();
    let file = dir.path().join(".raibid.yaml");
    let check = |file: &std::path::Path| {
        Command::new(RAIBID)
            .args(["--config", config.to_str().unwrap(), "pipeline", "check"])
            .arg(file)
            .output()
            .unwrap()
    };

    std::fs::write(
        &file,
        "services:\n  - name: db\n    image: postgres:16\nsteps:\n  - name: test\n    run: make test\n",
    )
    .unwrap();
    let out = check(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout,
        format!(
            "{}: valid\nservices:\n  db (postgres:16)\nsteps:\n  test (run)\n",
            file.display()
        )
    );

    std::fs::write(
        &file,
        "steps:\n  - name: test\n    run: make test\n    timeout: forever\n",
    )
    .unwrap();
    let out = check(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr.starts_with(&format!("{}:4:14: ", file.display())),
        "{stderr}"
    );

    // Without a pipeline file, what the agent's autodetection would run there.
    std::fs::remove_file(&file).unwrap();
    std::fs::write(dir.path().join("Makefile"), "test:\n\ttrue\n").unwrap();
    let out = check(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("autodetected from a Makefile")
            && stdout.ends_with("autodetected pipeline: valid\nsteps:\n  make-test (run)\n"),
        "{stdout}"
    );

    // Woodpecker's file, when there is none of raibid's, as an agent runs it: before
    // autodetection, with Woodpecker's clone defaults; its errors name it.
    let woodpecker = dir.path().join(".woodpecker.yml");
    std::fs::write(&woodpecker, "steps:\n  hello:\n    commands: [echo hi]\n").unwrap();
    let out = check(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout,
        format!(
            "{}: valid\nclone: the commit, tags on tag events, submodules if it has any, LFS \
             files if it has any\nsteps:\n  hello (run)\n",
            woodpecker.display()
        )
    );
    std::fs::write(&woodpecker, "steps:\n  hello:\n    comands: [echo hi]\n").unwrap();
    let out = check(&file);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{}:3:5: ", woodpecker.display())),
        "{stderr}"
    );
    std::fs::remove_file(&woodpecker).unwrap();

    // Workflows in `.raibid/`: each checked, every error reported.
    let workflows = dir.path().join(".raibid");
    std::fs::create_dir(&workflows).unwrap();
    std::fs::write(
        workflows.join("build.yaml"),
        "steps:\n  - name: b\n    run: make\n",
    )
    .unwrap();
    std::fs::write(workflows.join("notes.md"), "not a workflow\n").unwrap();
    for target in [&file, &workflows] {
        let out = check(target);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            stdout,
            format!(
                "1 workflow(s), one job each (one per variant of a matrix):\n{}: valid\nsteps:\n  b (run)\n",
                workflows.join("build.yaml").display()
            )
        );
    }
    std::fs::write(
        workflows.join("deploy.yaml"),
        "depends_on: [build, lint]\nsteps:\n  - name: d\n    run: make\n",
    )
    .unwrap();
    let out = check(&workflows);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("depends_on: starts after build, lint have succeeded"),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("workflow \"deploy\" depends on \"lint\", which is not one of the workflows"),
        "{out:?}"
    );
    std::fs::write(
        workflows.join("lint.yml"),
        "steps:\n  - name: l\n    rn: make\n",
    )
    .unwrap();
    let out = check(&workflows);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{}:3:", workflows.join("lint.yml").display())),
        "{stderr}"
    );
    std::fs::write(&file, "steps:\n  - name: t\n    run: make test\n").unwrap();
    let out = check(&file);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("hold pipelines; an agent refuses the commit"),
        "{out:?}"
    );

    let out = check(&dir.path().join("missing.yaml"));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing.yaml"),
        "{out:?}"
    );
}

/// `job submit --follow` prints the build's log, which `--output json` could not parse: the
/// two are refused together, before anything is queued (no server listens here).
#[test]
fn submit_follow_with_json_output_is_refused_before_anything_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "").unwrap();
    let out = raibid(
        &config,
        &[
            "job",
            "submit",
            "acme/app",
            "--clone-url",
            "https://git.example/acme/app.git",
            "--follow",
            "-o",
            "json",
            "--server",
            "http://127.0.0.1:9",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--follow prints the build's log, which is not JSON: drop --output json"),
        "{stderr}"
    );
}
