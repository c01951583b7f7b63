//! A podman of the test's own: its image store, its runtime state and its configuration in a
//! temporary directory, reached through a `podman` wrapper that the code under test finds on
//! `PATH` like the real one. Nothing is shared with the machine's podman or with other tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::engine::{BUSYBOX_IMAGE, TestEngine, busybox_context};
use crate::process::{require_binary, write_script};

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
                 tmp_dir = \"{tmp}\"\n\
                 [network]\n\
                 network_config_dir = \"{networks}\"\n",
                events = d.join("events.log").display(),
                tmp = d.join("tmp").display(),
                networks = d.join("networks").display(),
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
        // The engine's own logins ([`TestEngine::login`]); podman wants the file to exist.
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
        this.build(BUSYBOX_IMAGE, &busybox_context(this.dir.path(), &busybox));
        this
    }
}

impl TestEngine for Podman {
    fn name(&self) -> &'static str {
        "podman"
    }

    fn bin_dir(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    /// As `insecure = true` in registries.conf does on a real machine.
    fn allow_plain_http(&self, host: &str) {
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

    fn push(&self, from: &str, to: &str, credentials: Option<&str>) {
        let to = format!("docker://{to}");
        let mut args = vec!["push", "--quiet"];
        if let Some(credentials) = credentials {
            args.extend(["--creds", credentials]);
        }
        args.extend([from, &to]);
        self.run(&args);
    }

    fn build(&self, tag: &str, context: &Path) {
        let context = context.display().to_string();
        self.run(&["build", "--quiet", "--tag", tag, &context]);
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
