//! A podman of the test's own: its image store, its runtime state and its configuration in a
//! temporary directory, reached through a `podman` wrapper that the code under test finds on
//! `PATH` like the real one. Nothing is shared with the machine's podman or with other tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::process::{require_binary, write_script};

/// The busybox image [`Podman::new`] builds into the store (no registry involved).
pub const BUSYBOX_IMAGE: &str = "localhost/raibid-test/busybox:1";

pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    /// A fresh store holding [`BUSYBOX_IMAGE`]. Panics with the install command when podman,
    /// runc, catatonit (`--init`) or a static busybox is missing.
    ///
    /// The configuration is what a machine without `CAP_SYS_RESOURCE` and with hybrid cgroups
    /// (a CI sandbox; this one) needs: runc rather than crun, cgroupfs, and open-file and
    /// process limits no higher than the machine's own (podman's defaults for root would raise
    /// them, which takes that capability).
    pub fn new() -> Self {
        let podman = require_binary("podman", "podman");
        require_binary("runc", "runc");
        require_binary("catatonit", "catatonit");
        let busybox = require_binary("busybox", "busybox-static");
        let dir = tempfile::Builder::new()
            .prefix("raibid-test-podman-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("bin")).unwrap();
        std::fs::write(
            d.join("containers.conf"),
            format!(
                "[containers]\n\
                 default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
                 [engine]\n\
                 runtime = \"runc\"\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n\
                 events_logfile_path = \"{events}\"\n\
                 tmp_dir = \"{tmp}\"\n",
                events = d.join("events.log").display(),
                tmp = d.join("tmp").display(),
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                d.join("root").display(),
                d.join("run").display(),
            ),
        )
        .unwrap();
        // No search registries, so a short name never reaches a registry off this machine;
        // [`Podman::allow_plain_http`] adds to it.
        std::fs::write(
            d.join("registries.conf"),
            "unqualified-search-registries = []\n",
        )
        .unwrap();
        // The engine's own logins ([`Podman::login`]); podman wants the file to exist.
        std::fs::write(d.join("auth.json"), "{\"auths\": {}}\n").unwrap();
        write_script(
            &d.join("bin/podman"),
            &format!(
                "#!/bin/sh\n\
                 export CONTAINERS_CONF={dir}/containers.conf\n\
                 export CONTAINERS_STORAGE_CONF={dir}/storage.conf\n\
                 export CONTAINERS_REGISTRIES_CONF={dir}/registries.conf\n\
                 export REGISTRY_AUTH_FILE={dir}/auth.json\n\
                 exec {podman} \"$@\"\n",
                dir = d.display(),
                podman = podman.display(),
            ),
        );
        let this = Self { dir };
        this.build_busybox(&busybox);
        this
    }

    /// The directory holding the `podman` wrapper: put it first on `PATH`.
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    /// The wrapper itself.
    pub fn program(&self) -> PathBuf {
        self.bin_dir().join("podman")
    }

    /// `PATH` with [`Podman::bin_dir`] first.
    pub fn path_env(&self) -> std::ffi::OsString {
        let mut dirs = vec![self.bin_dir()];
        dirs.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        std::env::join_paths(dirs).unwrap()
    }

    /// Runs podman on this store; panics unless it succeeds. Returns its standard output.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn output(&self, args: &[&str]) -> Output {
        Command::new(self.program()).args(args).output().unwrap()
    }

    /// Lets this podman pull from and push to a plain-HTTP registry (`host:port`), as
    /// `insecure = true` in registries.conf does on a real machine.
    pub fn allow_plain_http(&self, host: &str) {
        use std::io::Write;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("registries.conf"))
            .unwrap();
        write!(
            conf,
            "[[registry]]\nlocation = \"{host}\"\ninsecure = true\n"
        )
        .unwrap();
    }

    /// `podman login`: a login of the engine's own (in this podman's `REGISTRY_AUTH_FILE`),
    /// which every pull and push of this engine then uses for `host`.
    pub fn login(&self, host: &str, user: &str, password: &str) {
        self.run(&["login", "--username", user, "--password", password, host]);
    }

    /// Pushes [`BUSYBOX_IMAGE`] to `image` (`host:port/repository:tag`), with this engine's
    /// logins.
    pub fn push_busybox(&self, image: &str) {
        self.run(&[
            "push",
            "--quiet",
            BUSYBOX_IMAGE,
            &format!("docker://{image}"),
        ]);
    }

    /// Names of every container in the store, running or not.
    pub fn containers(&self) -> Vec<String> {
        self.run(&["ps", "--all", "--format", "{{.Names}}"])
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Starts a detached container named `name` that sleeps, with `labels`, as another user of
    /// the engine would.
    pub fn start_sleeper(&self, name: &str, labels: &[&str]) {
        let mut args = vec![
            "run",
            "--detach",
            "--init",
            "--network",
            "none",
            "--name",
            name,
        ];
        for label in labels {
            args.extend(["--label", label]);
        }
        args.extend([BUSYBOX_IMAGE, "sleep", "1000"]);
        self.run(&args);
    }

    fn build_busybox(&self, busybox: &Path) {
        let context = self.dir.path().join("busybox");
        std::fs::create_dir_all(context.join("bin")).unwrap();
        std::fs::copy(busybox, context.join("bin/busybox")).unwrap();
        // Every applet by its name, as `busybox --install` would do inside the image.
        let list = Command::new(busybox).arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", context.join("bin").join(applet)).unwrap();
            }
        }
        std::fs::write(
            context.join("Containerfile"),
            "FROM scratch\nCOPY bin/ /bin/\nENV PATH=/bin\n",
        )
        .unwrap();
        let context = context.display().to_string();
        self.run(&["build", "--quiet", "--tag", BUSYBOX_IMAGE, &context]);
    }
}

impl Default for Podman {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers still running hold mounts inside the store.
        let _ = Command::new(self.program())
            .args(["rm", "--all", "--force", "--time", "0"])
            .output();
    }
}
