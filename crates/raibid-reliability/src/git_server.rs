//! Repositories served over smart HTTP, because the webhook parser accepts only http(s) clone
//! URLs, as a forge would send them. The server is raibid's own read-only `git http-backend`
//! front (the one `raibid up --demo` uses), on a free loopback port.

use std::path::Path;
use std::process::Command;

use raibid_testkit::GitRepo;
use tokio::sync::oneshot;

use crate::utf8;

pub struct GitServer {
    root: tempfile::TempDir,
    base: String,
    stop: Option<oneshot::Sender<()>>,
}

impl GitServer {
    pub async fn start() -> Self {
        let root = tempfile::Builder::new()
            .prefix("raibid-rel-git-")
            .tempdir()
            .expect("a temporary directory");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let base = format!("http://{}", listener.local_addr().expect("local address"));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(raibid_server::git_http::serve(
            listener,
            root.path().to_path_buf(),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            root,
            base,
            stop: Some(stop),
        }
    }

    /// Publishes every branch and ref of `repo` as `<name>.git`; returns its clone URL.
    pub fn publish(&self, name: &str, repo: &GitRepo) -> String {
        let bare = self.root.path().join(format!("{name}.git"));
        if !bare.exists() {
            std::fs::create_dir_all(&bare).expect("create the bare repository");
            git(&bare, &["init", "--quiet", "--bare"]);
        }
        repo.git(&["push", "--quiet", "--force", utf8(&bare), "refs/*:refs/*"]);
        format!("{}/{name}.git", self.base)
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .status()
        .expect("run git");
    assert!(status.success(), "git {args:?} failed");
}
