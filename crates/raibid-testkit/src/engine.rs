//! What the container executor's tests do with an engine of their own, whichever it is
//! ([`crate::Podman`] or [`crate::Docker`]), so that each test runs against both.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix::fcntl::{Flock, FlockArg};

/// The busybox image every test engine builds into its store (no registry involved).
pub const BUSYBOX_IMAGE: &str = "localhost/raibid-test/busybox:1";

/// A container engine private to one test, reached through a wrapper named like the real
/// client (`podman`, `docker`) in [`TestEngine::bin_dir`], which the code under test finds on
/// `PATH` like the real one.
pub trait TestEngine {
    /// `podman` or `docker`.
    fn name(&self) -> &'static str;

    /// The directory holding the wrapper: put it first on `PATH`.
    fn bin_dir(&self) -> PathBuf;

    /// Lets the engine pull from and push to a plain-HTTP registry (`host:port`).
    fn allow_plain_http(&self, host: &str);

    /// Pushes the local image `from` to `to` (`host:port/repository:tag`) with the engine's
    /// own logins, or with `credentials` (`user:password`) for this push alone.
    fn push(&self, from: &str, to: &str, credentials: Option<&str>);

    /// Builds `context` (holding a `Containerfile`) into the store as `tag`.
    fn build(&self, tag: &str, context: &Path);

    /// The wrapper itself.
    fn program(&self) -> PathBuf {
        self.bin_dir().join(self.name())
    }

    /// `PATH` with [`TestEngine::bin_dir`] first.
    fn path_env(&self) -> std::ffi::OsString {
        let mut dirs = vec![self.bin_dir()];
        dirs.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        std::env::join_paths(dirs).unwrap()
    }

    fn output(&self, args: &[&str]) -> Output {
        Command::new(self.program()).args(args).output().unwrap()
    }

    /// Runs the engine's client; panics unless it succeeds. Returns its standard output.
    fn run(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "{} {args:?}: {}",
            self.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `login`: a login of the engine's own, which every pull and push of this engine then
    /// uses for `host`.
    fn login(&self, host: &str, user: &str, password: &str) {
        self.run(&["login", "--username", user, "--password", password, host]);
    }

    /// Pushes [`BUSYBOX_IMAGE`] to `image` with this engine's logins.
    fn push_busybox(&self, image: &str) {
        self.push(BUSYBOX_IMAGE, image, None);
    }

    /// Names of every container of the engine, running or not.
    fn containers(&self) -> Vec<String> {
        self.run(&["ps", "--all", "--format", "{{.Names}}"])
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Names of the engine's networks that raibid made (`raibid-...`).
    fn raibid_networks(&self) -> Vec<String> {
        self.run(&["network", "ls", "--format", "{{.Name}}"])
            .lines()
            .filter(|l| l.starts_with("raibid-"))
            .map(str::to_owned)
            .collect()
    }

    /// Starts a detached container named `name` that sleeps, with `labels`, as another user of
    /// the engine would.
    fn start_sleeper(&self, name: &str, labels: &[&str]) {
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
}

/// Held by a test while its engine creates networks: each test engine names its bridge
/// interfaces on its own (podman's `podman1`, ...) in the machine's one network namespace, so
/// two tests creating networks at once would take the same interface.
pub fn network_lock() -> Flock<File> {
    machine_lock("raibid-test-networks.lock")
}

/// An exclusive lock on `name` in the temporary directory, held until dropped: for what tests
/// may not do at the same time on one machine. A file lock, as nextest runs each test in a
/// process of its own.
pub fn machine_lock(name: &str) -> Flock<File> {
    let path = std::env::temp_dir().join(name);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()))
}

/// The context of [`BUSYBOX_IMAGE`] in `dir`: a static busybox with every applet linked by
/// its name (as `busybox --install` would do inside the image), on `PATH`.
pub(crate) fn busybox_context(dir: &Path, busybox: &Path) -> PathBuf {
    let context = dir.join("busybox");
    std::fs::create_dir_all(context.join("bin")).unwrap();
    std::fs::copy(busybox, context.join("bin/busybox")).unwrap();
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
    context
}
