//! Cloning the demo repository through `git http-backend`, as agents do.

use std::process::Command;

use raibid_testkit::GitRepo;

#[tokio::test]
async fn a_repository_clones_over_smart_http_and_refuses_pushes() {
    let root = tempfile::tempdir().unwrap();
    let repo = GitRepo::new();
    let sha = repo.commit(&[("hello.txt", "hi\n")], "init");
    let bare = root.path().join("demo").join("hello.git");
    std::fs::create_dir_all(bare.parent().unwrap()).unwrap();
    repo.git(&["clone", "--quiet", "--bare", ".", bare.to_str().unwrap()]);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = raibid_server::git_http::router(root.path().to_path_buf());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let url = format!("http://{addr}/demo/hello.git");
    let dest = tempfile::tempdir().unwrap();
    let clone_dir = dest.path().join("c");
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        let clone_dir = clone_dir.clone();
        move || {
            Command::new("git")
                .args(["clone", "--quiet", &url])
                .arg(&clone_dir)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = Command::new("git")
        .arg("-C")
        .arg(&clone_dir)
        .args(["rev-parse", "HEAD"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&head.stdout).trim(), sha);

    let resp = reqwest::get(format!("{url}/info/refs?service=git-receive-pack"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = reqwest::get(format!("http://{addr}/../etc/passwd"))
        .await
        .unwrap();
    assert!(resp.status().is_client_error());
}
