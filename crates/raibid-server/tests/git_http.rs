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

/// A negotiation over many refs can pass axum's default 2 MB body limit; the router's own
/// limit (64 MiB) applies instead.
#[tokio::test]
async fn an_upload_pack_request_over_two_megabytes_reaches_git() {
    let root = tempfile::tempdir().unwrap();
    let repo = GitRepo::new();
    repo.commit(&[("hello.txt", "hi\n")], "init");
    let bare = root.path().join("hello.git");
    repo.git(&["clone", "--quiet", "--bare", ".", bare.to_str().unwrap()]);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = raibid_server::git_http::router(root.path().to_path_buf());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // 3 MB of "have" lines for a commit the server does not have, then flush and "done".
    let have = format!("0032have {}\n", "1".repeat(40));
    let mut body = have.repeat(3 * 1024 * 1024 / have.len());
    body.push_str("00000009done\n");
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/hello.git/git-upload-pack"))
        .header("content-type", "application/x-git-upload-pack-request")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_ne!(resp.status(), 413, "{:?}", resp.text().await);
}
