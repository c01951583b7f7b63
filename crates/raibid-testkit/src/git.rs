use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, require_binary};

/// A real git repository in a temporary directory.
pub struct GitRepo {
    dir: tempfile::TempDir,
}

impl GitRepo {
    /// An empty repository on branch `main`.
    pub fn new() -> Self {
        require_binary("git", "git");
        let dir = tempfile::Builder::new()
            .prefix("raibid-test-repo-")
            .tempdir()
            .expect("temp dir");
        let repo = Self { dir };
        repo.git(&["init", "--quiet", "--initial-branch=main"]);
        repo.git(&["config", "user.email", "test@raibid.invalid"]);
        repo.git(&["config", "user.name", "raibid test"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }

    /// Writes `files` (path, content) and commits them; returns the commit sha.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        for (path, content) in files {
            let full = self.dir.path().join(path);
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(&full, content).expect("write file");
            self.git(&["add", "--", path]);
        }
        self.git(&["commit", "--quiet", "--allow-empty", "-m", message]);
        self.head()
    }

    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }

    pub fn checkout_new_branch(&self, name: &str) {
        self.git(&["checkout", "--quiet", "-b", name]);
    }

    pub fn checkout(&self, name: &str) {
        self.git(&["checkout", "--quiet", name]);
    }

    /// Runs git in the repository and returns stdout; panics with stderr on failure.
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(self.dir.path())
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Default for GitRepo {
    fn default() -> Self {
        Self::new()
    }
}

/// `git daemon` serving every repository under a directory on a free loopback port.
pub struct GitDaemon {
    child: Child,
    port: u16,
    base: PathBuf,
}

impl GitDaemon {
    pub fn serve(base: &Path) -> Self {
        require_binary("git", "git");
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new("git")
                .arg("daemon")
                .arg("--reuseaddr")
                .arg("--export-all")
                .arg("--listen=127.0.0.1")
                .arg(format!("--port={port}"))
                .arg(format!("--base-path={}", base.display()))
                .arg(base)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start git daemon");
            let mut daemon = Self {
                child,
                port,
                base: base.to_path_buf(),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return daemon;
                }
                if let Ok(Some(_)) = daemon.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = daemon.child.kill();
            let _ = daemon.child.wait();
        }
        panic!("git daemon did not start");
    }

    /// `git://127.0.0.1:<port>/<path relative to the base>`.
    pub fn url_for(&self, repo: &Path) -> String {
        let rel = repo
            .strip_prefix(&self.base)
            .expect("repo under the daemon's base");
        format!("git://127.0.0.1:{}/{}", self.port, rel.display())
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
