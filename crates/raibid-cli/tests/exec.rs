//! `raibid exec` as a user runs it: the real binary on a real git working tree, with its own
//! private redis-server and in-process agent (host executor), printing the job's log.

use std::path::Path;
use std::process::{Command, Output};

const RAIBID: &str = env!("CARGO_BIN_EXE_raibid");

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A repository on branch `feature` with one commit of `files`.
fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "feature"]);
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-q", "-m", "first"]);
    dir
}

/// Where a run keeps its data (`$XDG_DATA_HOME`), with an empty configuration file.
fn data_dir() -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("no-config.yaml"), "").unwrap();
    data
}

/// `raibid exec [extra] dir` with the host executor and `data` (see [`data_dir`]), its output
/// piped.
fn command(dir: &Path, data: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(RAIBID);
    cmd.arg("--config")
        .arg(data.join("no-config.yaml"))
        .args(["exec", "--executor", "host"])
        .args(extra)
        .arg(dir)
        .env("XDG_DATA_HOME", data)
        .env_remove("RAIBID_REDIS_URL")
        .env_remove("CLICOLOR_FORCE")
        // A server's address the run must not link to: it never sees these jobs.
        .env("RAIBID_SERVER_PUBLIC_URL", "https://ci.example")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// `raibid exec` on `dir`; a run that hangs (a job nobody releases) fails the test after two
/// minutes instead of holding it for ever.
fn exec(dir: &Path, data: &Path, extra: &[&str]) -> Output {
    let mut child = command(dir, data, extra).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "raibid exec hung:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn the_working_tree_runs_as_it_is_and_the_repository_is_left_as_it_was() {
    let pipeline = "\
steps:
  - name: show
    run: |
      echo \"on $CI_COMMIT_BRANCH for $CI_REPO page=${CI_PIPELINE_URL:-none}\"
      cat committed.txt staged.txt untracked.txt
      test -e ignored.log && echo 'ignored file came along' || echo 'no ignored file'
";
    let repo = repo(&[
        (".raibid.yaml", pipeline),
        ("committed.txt", "as committed\n"),
        (".gitignore", "*.log\n"),
    ]);
    let dir = repo.path();
    std::fs::write(dir.join("committed.txt"), "changed, not committed\n").unwrap();
    std::fs::write(dir.join("staged.txt"), "staged\n").unwrap();
    git(dir, &["add", "staged.txt"]);
    std::fs::write(dir.join("untracked.txt"), "untracked\n").unwrap();
    std::fs::write(dir.join("ignored.log"), "noise\n").unwrap();
    let status = git(dir, &["status", "--porcelain"]);
    let head = git(dir, &["rev-parse", "HEAD"]);

    let data = data_dir();
    let out = exec(dir, data.path(), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Named as forges allow: no leading dot.
    let name = dir.file_name().unwrap().to_string_lossy();
    let name = name.trim_start_matches('.');
    for line in [
        format!("on feature for local/{name} page=none\n"),
        "changed, not committed\nstaged\nuntracked\n".into(),
        "no ignored file\n".into(),
    ] {
        assert!(stdout.contains(&line), "{line:?} in\n{stdout}");
    }
    assert!(
        stderr.contains("the working tree, with its changes"),
        "{stderr}"
    );
    assert!(stderr.contains("raibid exec: succeeded"), "{stderr}");
    // Index, working tree, branch and refs as they were.
    assert_eq!(git(dir, &["status", "--porcelain"]), status);
    assert_eq!(git(dir, &["rev-parse", "HEAD"]), head);
    assert_eq!(git(dir, &["for-each-ref", "refs/raibid"]), "");
}

#[test]
fn every_variant_runs_and_a_failed_one_fails_the_command() {
    let pipeline = "\
matrix:
  V: [a, b]
steps:
  - name: check
    run: |
      echo \"variant $V\"
      test \"$V\" = a
";
    let repo = repo(&[(".raibid.yaml", pipeline)]);
    let data = data_dir();
    let out = exec(repo.path(), data.path(), &["--branch", "main"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("variant a\n") && stdout.contains("variant b\n"),
        "{stdout}"
    );
    // The agent's marks, without their colours in a pipe.
    assert!(stdout.contains("\u{25b6} step check "), "{stdout}");
    assert!(stdout.contains("\u{2718} check: exit code 1"), "{stdout}");
    assert!(!stdout.contains('\x1b'), "{stdout:?}");
    for line in [
        "── V=a ──",
        "── V=b ──",
        "raibid exec: V=a success",
        "raibid exec: V=b failure: step check exit code 1",
    ] {
        assert!(stderr.contains(line), "{line:?} in\n{stderr}");
    }
    // Clean: the commit itself, nothing changed.
    assert!(stderr.contains("as committed"), "{stderr}");
}

/// Workflows of `.raibid/` run as their jobs, one waiting for another (`depends_on`), as a
/// server would release them.
#[test]
fn workflows_run_in_their_order() {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    std::fs::create_dir_all(dir.join(".raibid")).unwrap();
    std::fs::write(
        dir.join(".raibid/build.yaml"),
        "steps:\n  - name: b\n    run: echo building > /dev/null; echo built\n",
    )
    .unwrap();
    std::fs::write(
        dir.join(".raibid/deploy.yaml"),
        "depends_on: [build]\nsteps:\n  - name: d\n    run: echo deployed\n",
    )
    .unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    let data = data_dir();
    let out = exec(dir, data.path(), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let built = stdout.find("built\n").expect("build ran");
    let deployed = stdout.find("deployed\n").expect("deploy ran");
    assert!(built < deployed, "{stdout}");
    assert!(stderr.contains("raibid exec: deploy success"), "{stderr}");
}

#[test]
fn a_broken_pipeline_says_where_and_outside_a_repository_nothing_runs() {
    let repo = repo(&[(".raibid.yaml", "steps:\n  - name: x\n    runn: true\n")]);
    let data = data_dir();
    let out = exec(repo.path(), data.path(), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(".raibid.yaml:3:5"), "{stdout}");

    let plain = tempfile::tempdir().unwrap();
    let out = exec(plain.path(), data.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("is not in a git repository"), "{stderr}");
}

/// Ctrl-C while a step runs: the job is cancelled (its step stopped), the command exits 130
/// within seconds, and the temporary ref is gone.
#[test]
fn an_interrupt_cancels_the_job_and_cleans_up() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};

    let pipeline = "steps:\n  - name: long\n    run: |\n      echo started\n      sleep 60\n";
    let repo = repo(&[(".raibid.yaml", pipeline)]);
    let data = data_dir();
    let mut child = command(repo.path(), data.path(), &[]).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "ended early: {seen}"
        );
        seen.push_str(&line);
        if line == "started\n" {
            break;
        }
    }
    let interrupted = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        interrupted.elapsed() < Duration::from_secs(20),
        "{:?}",
        interrupted.elapsed()
    );
    assert!(
        stderr.contains("interrupted; cancelling the job"),
        "{stderr}"
    );
    // What was printed before is not printed again.
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(!rest.contains("started"), "{rest}");
    assert_eq!(git(repo.path(), &["for-each-ref", "refs/raibid"]), "");
}

/// A run killed before it could delete its ref (`kill -9`, or Ctrl-C before the job was
/// queued) leaves it; the next run deletes it, and keeps the ref of a run still going.
#[test]
fn refs_left_by_stopped_runs_are_deleted_by_the_next() {
    let repo = repo(&[(".raibid.yaml", "steps:\n  - name: hi\n    run: echo hi\n")]);
    let data = data_dir();
    // 4194305 is past the largest process number Linux hands out; this test's own runs.
    let stopped = "refs/raibid/exec/4194305-0badc0de";
    let running = format!("refs/raibid/exec/{}-0c0ffee0", std::process::id());
    git(repo.path(), &["update-ref", stopped, "HEAD"]);
    git(repo.path(), &["update-ref", &running, "HEAD"]);
    let out = exec(repo.path(), data.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("deleted {stopped}")), "{stderr}");
    assert_eq!(
        git(
            repo.path(),
            &["for-each-ref", "--format=%(refname)", "refs/raibid"]
        ),
        format!("{running}\n")
    );
}

/// `--secret NAME` gives steps that name it the value of this command's `$NAME`, masked in the
/// log; a secret without its variable is refused before anything runs.
#[test]
fn secrets_come_from_the_environment_and_are_masked() {
    let pipeline = "\
steps:
  - name: deploy
    secrets: [DEPLOY_TOKEN]
    run: |
      echo \"token: $DEPLOY_TOKEN\"
      test \"$DEPLOY_TOKEN\" = tok-3141592653
";
    let repo = repo(&[(".raibid.yaml", pipeline)]);
    let data = data_dir();
    let run = |value: Option<&str>| {
        let mut cmd = command(repo.path(), data.path(), &["--secret", "DEPLOY_TOKEN"]);
        cmd.env_remove("DEPLOY_TOKEN");
        if let Some(value) = value {
            cmd.env("DEPLOY_TOKEN", value);
        }
        cmd.output().unwrap()
    };
    let out = run(Some("tok-3141592653"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("token: ***\n"), "{stdout}");
    assert!(!stdout.contains("3141592653"), "{stdout}");

    let out = run(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--secret DEPLOY_TOKEN: set the environment variable DEPLOY_TOKEN"),
        "{stderr}"
    );
    assert_eq!(git(repo.path(), &["for-each-ref", "refs/raibid"]), "");
}

/// Image builds and `artifacts:` go to a registry of the run's own, in place of the one
/// configured (a working tree's build must not land there), which goes with the run;
/// `--artifacts DIR` unpacks each variant's into a directory of its own first.
#[test]
fn artifacts_and_images_go_to_a_registry_of_the_run_and_artifacts_are_copied_out() {
    let pipeline = "\
matrix:
  GREETING: [hello, bonjour]
steps:
  - name: make
    run: mkdir -p out && echo \"$GREETING\" > out/greeting.txt
  - name: image
    image-build:
      tags: [\"{registry}/{repo}:{matrix}\"]
artifacts: [out/]
";
    let repo = repo(&[
        (".raibid.yaml", pipeline),
        ("Containerfile", "FROM scratch\nCOPY out/greeting.txt /\n"),
    ]);
    let data = data_dir();
    let copied = tempfile::tempdir().unwrap();
    let dest = copied.path().join("artifacts");
    let run = |extra: &[&str]| {
        let mut cmd = command(repo.path(), data.path(), extra);
        // Configured, and never to be pushed to by `raibid exec`.
        cmd.env("RAIBID_AGENT_REGISTRY_HOST", "registry.invalid:5000");
        cmd.output().unwrap()
    };
    let out = run(&["--artifacts", dest.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for greeting in ["hello", "bonjour"] {
        let file = dest.join(format!("GREETING={greeting}/out/greeting.txt"));
        assert_eq!(
            std::fs::read_to_string(&file).unwrap_or_default(),
            format!("{greeting}\n"),
            "{}\n{stdout}\n{stderr}",
            file.display()
        );
        assert!(
            stderr.contains(&format!(
                "raibid exec: artifacts of GREETING={greeting}: 1 file(s) in {}",
                dest.join(format!("GREETING={greeting}")).display()
            )),
            "{stderr}"
        );
    }
    assert!(!stdout.contains("registry.invalid"), "{stdout}");
    assert_eq!(stdout.matches("pushed 127.0.0.1:").count(), 2, "{stdout}");
    // Nobody fetches these by job id later, nor expires them: the log does not say so.
    assert!(stdout.contains("artifacts: kept out (1 files"), "{stdout}");
    assert!(!stdout.contains("raibid job artifacts"), "{stdout}");
    assert!(!stdout.contains("kept until"), "{stdout}");

    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "the artifacts were kept in this run's own registry, gone with it: `--artifacts \
             DIR` unpacks them"
        ),
        "{stderr}"
    );

    // Artifacts that cannot be copied out fail the run, after the jobs' results.
    let file = copied.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let out = run(&["--artifacts", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("raibid exec: GREETING=hello success\n"),
        "{stderr}"
    );
    assert!(stderr.contains("raibid exec: --artifacts: "), "{stderr}");
    assert!(!stderr.contains("raibid exec: succeeded"), "{stderr}");
    // The registry's storage went with each run.
    let left: Vec<_> = std::fs::read_dir(data.path().join("raibid/exec"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("registry-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Without docker-registry there is no registry for the run: the job still passes, its log
/// saying why its artifacts were not kept and what would keep them (not the configured
/// registry, which `raibid exec` never uses).
#[test]
fn without_docker_registry_artifacts_are_a_note() {
    let pipeline = "\
steps:
  - name: make
    run: mkdir -p out && echo made > out/file.txt
artifacts: [out/]
";
    let repo = repo(&[(".raibid.yaml", pipeline)]);
    let data = data_dir();
    // Everything on PATH but docker-registry.
    let bin = tempfile::tempdir().unwrap();
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap()) {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let link = bin.path().join(entry.file_name());
            if entry.file_name() != "docker-registry" && !link.exists() {
                let _ = std::os::unix::fs::symlink(entry.path(), link);
            }
        }
    }
    let mut cmd = command(repo.path(), data.path(), &[]);
    cmd.env("PATH", bin.path());
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "artifacts: not kept: raibid exec keeps them in a registry of its own, which needs \
             docker-registry installed"
        ),
        "{stdout}"
    );
    assert!(!stderr.contains("--artifacts DIR"), "{stderr}");
}

/// Pushes, with buildah through raibid's image builder, a base image (one file, `FROM
/// scratch`) to `registry`, which requires the test login; returns its name.
fn push_private_base(registry: &raibid_testkit::Registry) -> String {
    use raibid_agent::image::{
        BuildRequest, ImageBuildOptions, ImageBuilder, RegistryAuth, StorageDriver,
    };
    raibid_testkit::require_binary("buildah", "buildah");
    let store = tempfile::tempdir().unwrap();
    let context = tempfile::tempdir().unwrap();
    std::fs::write(context.path().join("base.txt"), "from the private base\n").unwrap();
    std::fs::write(
        context.path().join("Containerfile"),
        "FROM scratch\nCOPY base.txt /\n",
    )
    .unwrap();
    let name = format!("{}/acme/base:1", registry.host());
    let builder = ImageBuilder::new(ImageBuildOptions {
        root: store.path().join("root"),
        runroot: store.path().join("run"),
        storage_driver: StorageDriver::Vfs,
        registry_auth: Some(RegistryAuth {
            host: registry.host(),
            username: raibid_testkit::registry::TEST_USER.into(),
            password: raibid_testkit::registry::TEST_PASSWORD.into(),
        }),
        pull_auths: Vec::new(),
        insecure_registries: vec![registry.host()],
        network: true,
    })
    .unwrap();
    let request = BuildRequest {
        context_dir: context.path().to_path_buf(),
        containerfile: "Containerfile".into(),
        ignore: Vec::new(),
        tags: vec![name.clone()],
        platforms: Vec::new(),
        build_args: Default::default(),
        secrets: Default::default(),
        push: true,
        credentials: true,
        cache_repo: None,
        timeout: None,
        private: None,
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let built = runtime.block_on(async {
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let built = builder
            .build_and_push(&request, tx, Default::default())
            .await;
        drain.await.unwrap();
        built
    });
    built.unwrap_or_else(|e| panic!("pushing the base image: {e}"));
    name
}

/// The configured registry's login is kept to pull with: an image build `FROM` a base image
/// CI pushed there (a private one) works under `raibid exec`, while the build's own image goes
/// to the run's registry and nothing to the configured one.
#[test]
fn a_base_image_on_the_configured_registry_is_pulled_with_its_login() {
    let private = raibid_testkit::Registry::start_with_auth(
        raibid_testkit::registry::TEST_USER,
        raibid_testkit::registry::TEST_PASSWORD,
        raibid_testkit::registry::TEST_PASSWORD_BCRYPT,
    );
    let base = push_private_base(&private);
    let pipeline = "\
steps:
  - name: image
    image-build:
      tags: [\"{registry}/{repo}:exec\"]
";
    let repo = repo(&[
        (".raibid.yaml", pipeline),
        (
            "Containerfile",
            &format!("FROM {base}\nCOPY .raibid.yaml /\n"),
        ),
    ]);
    let run = |password: &str| {
        // Each run a buildah store of its own, which has to pull the base.
        let data = data_dir();
        let mut cmd = command(repo.path(), data.path(), &[]);
        cmd.env("RAIBID_AGENT_REGISTRY_HOST", private.host())
            .env("RAIBID_AGENT_REGISTRY_INSECURE", "true");
        cmd.env(
            "RAIBID_AGENT_REGISTRY_USERNAME",
            raibid_testkit::registry::TEST_USER,
        )
        .env("RAIBID_AGENT_REGISTRY_PASSWORD", password);
        let out = cmd.output().unwrap();
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (passed, output) = run(raibid_testkit::registry::TEST_PASSWORD);
    assert!(passed, "{output}");
    assert!(output.contains("pushed 127.0.0.1:"), "{output}");
    assert!(
        !output.contains(&format!("pushed {}", private.host())),
        "{output}"
    );
    assert!(
        !output.contains(raibid_testkit::registry::TEST_PASSWORD),
        "{output}"
    );
    assert_eq!(private.tags("acme/base"), ["1"]);
    // With a wrong password the base cannot be pulled: the login is what pulled it.
    let (passed, output) = run("not-the-password");
    assert!(!passed, "{output}");
    assert!(
        output.contains("unauthorized") || output.contains("authentication required"),
        "{output}"
    );
}
