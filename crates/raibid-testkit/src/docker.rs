//! A docker of the test's own: a `dockerd` (with the containerd it manages) whose socket, image
//! store, runtime state and client configuration live in a temporary directory, reached through
//! a `docker` wrapper that the code under test finds on `PATH` like the real one. Nothing is
//! shared with the machine's docker (if it has one) or with other tests.
//!
//! The daemon has no bridge network (`--bridge none`, no iptables rules): daemons of tests
//! running side by side would fight over `docker0` and the `DOCKER` chains. Steps without the
//! network (`--network none`, the agent's default) and builds of COPY-only images need none.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::engine::{BUSYBOX_IMAGE, TestEngine, busybox_context};
use crate::process::{require_binary, write_script};

/// A slow machine's daemon takes a few seconds to start (it starts containerd first).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the daemon gets to stop its containers and containerd before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Docker {
    daemon: Child,
    dir: tempfile::TempDir,
}

impl Docker {
    /// A fresh daemon whose store holds [`BUSYBOX_IMAGE`]. Panics with the install command when
    /// dockerd, docker-init (`--init`) or a static busybox is missing, and with the daemon's
    /// log when it does not start.
    pub fn new() -> Self {
        let docker = require_binary("docker", "docker.io");
        let dockerd = require_binary("dockerd", "docker.io");
        require_binary("docker-init", "docker.io");
        let busybox = require_binary("busybox", "busybox-static");
        let dir = tempfile::Builder::new()
            .prefix("raibid-test-docker-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("bin")).unwrap();
        // The client's configuration (the engine's own logins): never the user's ~/.docker.
        std::fs::create_dir(d.join("config")).unwrap();
        // An empty daemon configuration, so that the machine's /etc/docker/daemon.json (a
        // registry mirror, another storage driver) does not apply.
        std::fs::write(d.join("daemon.json"), "{}\n").unwrap();
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let socket = d.join("docker.sock");
        let daemon = Command::new(&dockerd)
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("root"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .args([
                "--bridge",
                "none",
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--userland-proxy=false",
                "--containerd-namespace",
                "raibid-test",
                "--containerd-plugins-namespace",
                "raibid-test-plugins",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        write_script(
            &d.join("bin/docker"),
            &format!(
                "#!/bin/sh\n\
                 export DOCKER_HOST=unix://{socket}\n\
                 export DOCKER_CONFIG={dir}/config\n\
                 exec {docker} \"$@\"\n",
                socket = socket.display(),
                dir = d.display(),
                docker = docker.display(),
            ),
        );
        let mut this = Self { daemon, dir };
        this.wait_ready();
        this.build(BUSYBOX_IMAGE, &busybox_context(this.dir.path(), &busybox));
        this
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.daemon.try_wait().unwrap() {
                panic!("dockerd exited ({status}) while starting:\n{}", self.log());
            }
            if self.output(&["info"]).status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemon's log so far (its last 8 KiB).
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.dir.path().join("dockerd.log")) {
            let _ = file.read_to_string(&mut text);
        }
        let start = text.len().saturating_sub(8192);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }
}

impl TestEngine for Docker {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn bin_dir(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    /// docker speaks plain HTTP to registries on 127.0.0.0/8 without being told (its
    /// `--insecure-registry` default); the test registries all listen there.
    fn allow_plain_http(&self, host: &str) {
        assert!(
            host.starts_with("127."),
            "the test's dockerd would need --insecure-registry {host}"
        );
    }

    /// docker pushes only what its store names `to`, so the image is tagged for the push and
    /// the store's `to` is put back as it was afterwards (as podman's push leaves it): a test of
    /// pulls must not find the pushed image already in the store under the pulled name.
    fn push(&self, from: &str, to: &str, credentials: Option<&str>) {
        let before = self.output(&["image", "inspect", "--format", "{{.Id}}", to]);
        let before = before
            .status
            .success()
            .then(|| String::from_utf8_lossy(&before.stdout).trim().to_owned());
        self.run(&["tag", from, to]);
        match credentials {
            None => {
                self.run(&["push", "--quiet", to]);
            }
            Some(credentials) => {
                // A client configuration of this push's own: the engine's logins stay as
                // they are.
                let config = tempfile::tempdir_in(self.dir.path()).unwrap();
                let config = config.path().to_str().unwrap();
                let (user, password) = credentials.split_once(':').unwrap();
                let host = to.split('/').next().unwrap();
                self.run(&[
                    "--config",
                    config,
                    "login",
                    "--username",
                    user,
                    "--password",
                    password,
                    host,
                ]);
                self.run(&["--config", config, "push", "--quiet", to]);
            }
        }
        match before {
            Some(id) => self.run(&["tag", &id, to]),
            None => self.run(&["rmi", to]),
        };
    }

    fn build(&self, tag: &str, context: &Path) {
        let file = context.join("Containerfile");
        let out = Command::new(self.program())
            // The classic builder: this daemon has no BuildKit, and the client would only
            // warn that it falls back to it.
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "--quiet", "--tag", tag, "--file"])
            .arg(&file)
            .arg(context)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker build {tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Default for Docker {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        // Stopped by the daemon itself, which then unmounts their layers inside the store.
        if let Ok(ids) = Command::new(self.program())
            .args(["ps", "--all", "--quiet"])
            .output()
        {
            let ids = String::from_utf8_lossy(&ids.stdout).into_owned();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = Command::new(self.program())
                    .args(["rm", "--force"])
                    .args(&ids)
                    .output();
            }
        }
        let pid = Pid::from_raw(self.daemon.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.daemon.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}
