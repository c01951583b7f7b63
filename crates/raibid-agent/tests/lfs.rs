//! `clone: lfs` with the real git-lfs: a job's checkout goes through the agent's bare mirror,
//! its LFS objects come from the job's clone URL (local paths and `file://` URLs, which git-lfs
//! serves with its standalone file transfer agent), and steps run under bubblewrap.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use raibid_agent::GitCheckout;
use raibid_model::{Event, JobStatus, NewJob};
use raibid_testkit::{GitRepo, require_binary};
use sha2::{Digest, Sha256};

mod support;
use support::Harness;

/// The shared harness (bubblewrap steps, the mirror cache hidden from them), on a machine with
/// git-lfs.
fn harness() -> Harness {
    let h = Harness::new();
    require_binary("git-lfs", "git-lfs");
    h
}

/// A developer's repository with git-lfs set up in it alone (`git lfs install --local`) and
/// `*.bin` tracked by LFS: committed `.bin` files go to its `.git/lfs/objects`, the commit
/// holds pointers.
fn lfs_repo() -> GitRepo {
    require_binary("git-lfs", "git-lfs");
    let repo = GitRepo::new();
    repo.git(&["lfs", "install", "--local"]);
    repo.git(&["lfs", "track", "*.bin"]);
    repo.git(&["add", ".gitattributes"]);
    repo
}

/// Commits `data.bin` (an LFS file) with `content` and the pipeline; returns the commit and
/// the LFS object id (the content's sha256), having checked that git holds only a pointer.
fn commit_lfs_file(repo: &GitRepo, pipeline: &str, content: &str) -> (String, String) {
    commit_lfs_file_as(repo, ".raibid.yaml", pipeline, content)
}

/// [`commit_lfs_file`] with the pipeline in `file`.
fn commit_lfs_file_as(
    repo: &GitRepo,
    file: &str,
    pipeline: &str,
    content: &str,
) -> (String, String) {
    let sha = repo.commit(&[(file, pipeline), ("data.bin", content)], "an LFS file");
    let oid = hex::encode(Sha256::digest(content.as_bytes()));
    let blob = repo.git(&["cat-file", "-p", "HEAD:data.bin"]);
    assert!(
        blob.starts_with(POINTER) && blob.contains(&format!("oid sha256:{oid}")),
        "git lfs did not store data.bin as a pointer: {blob}"
    );
    (sha, oid)
}

/// Content big enough not to pass for a pointer, distinct per `tag`.
fn content(tag: &str) -> String {
    format!("LFS content {tag}\n").repeat(4096)
}

/// A bare repository at `base/acme/app.git`, as a forge keeps it, with `repo`'s `main` and no
/// LFS objects yet.
fn bare_clone(repo: &GitRepo, base: &Path) -> PathBuf {
    let bare = base.join("acme/app.git");
    std::fs::create_dir_all(bare.parent().unwrap()).unwrap();
    repo.git(&["clone", "--quiet", "--bare", ".", bare.to_str().unwrap()]);
    bare
}

/// Pushes `main` and every LFS object of `repo` to the bare repository, as `git push` with
/// git-lfs's pre-push hook would.
fn push(repo: &GitRepo, bare: &Path) {
    let url = format!("file://{}", bare.display());
    repo.git(&["push", "--quiet", &url, "main"]);
    repo.git(&["lfs", "push", "--all", &url]);
}

const POINTER: &str = "version https://git-lfs.github.com/spec/v1";

/// Reads the file, and checks that the step's own git sees the workspace unmodified (it did
/// not while the LFS filter was given to the agent's `git lfs pull` alone).
const LFS_PIPELINE: &str = "clone:\n  lfs: true\nsteps:\n  - name: read\n    run: |\n      \
     sha256sum data.bin\n      git status --porcelain\n      git diff --exit-code\n      \
     test -z \"$(git status --porcelain)\"\n";

/// The content a pipeline with `clone: lfs` sees is the file's, pulled from the clone URL's LFS
/// store: the agent's mirror carries git objects only, so this works whether the mirror is
/// new, fetched into or already had the commit.
#[tokio::test]
async fn lfs_files_have_their_content_when_the_pipeline_asks() {
    let h = harness();
    let repo = lfs_repo();
    let (first, first_oid) = commit_lfs_file(&repo, LFS_PIPELINE, &content("one"));
    let base = tempfile::tempdir().unwrap();
    let bare = bare_clone(&repo, base.path());
    push(&repo, &bare);
    // A plain path, as `raibid up` queues local repositories.
    let url = bare.to_str().unwrap().to_owned();

    let (job, log) = h.run(&url, &first).await;
    assert_eq!(job.status, JobStatus::Success, "{log}");
    assert!(log.contains("new mirror"), "{log}");
    assert!(log.contains(&format!("{first_oid}  data.bin")), "{log}");

    let (second, second_oid) = commit_lfs_file(&repo, LFS_PIPELINE, &content("two"));
    push(&repo, &bare);
    let (job, log) = h.run(&url, &second).await;
    assert_eq!(job.status, JobStatus::Success, "{log}");
    assert!(log.contains("mirror fetched"), "{log}");
    assert!(log.contains(&format!("{second_oid}  data.bin")), "{log}");

    let (job, log) = h.run(&url, &first).await;
    assert_eq!(job.status, JobStatus::Success, "{log}");
    assert!(log.contains("mirror already had the commit"), "{log}");
    assert!(log.contains(&format!("{first_oid}  data.bin")), "{log}");
}

/// Where git-lfs is set up for every repository (`git lfs install` writes the `filter.lfs.*`
/// smudge filter to the global gitconfig; Debian's package writes it to /etc/gitconfig), a
/// pipeline without `clone: lfs` still gets the pointer files: the agent's checkout does not
/// download (nor fail, nor wait on a server that has no LFS) because of the machine's setup.
/// With `clone: lfs`, the same agent gets the content, here from a `file://` clone URL naming a
/// developer's repository (objects in its `.git/lfs`).
#[tokio::test]
async fn without_lfs_the_pointer_is_checked_out_although_git_lfs_is_set_up_globally() {
    let h = harness();
    // The global configuration as the agent's git would find it without its own: its HOME is
    // the cache directory. `--skip-repo`: no hooks for whatever repository the test runs in.
    let cache = h.cache();
    std::fs::create_dir_all(&cache).unwrap();
    let in_cache = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(&cache)
            .env("HOME", &cache)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("GIT_CONFIG_GLOBAL")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    in_cache(&["lfs", "install", "--skip-repo"]);
    assert_eq!(
        in_cache(&["config", "--global", "filter.lfs.process"]),
        "git-lfs filter-process"
    );

    let repo = lfs_repo();
    let pointer_pipeline = "steps:\n  - name: read\n    run: |\n      cat data.bin\n      \
                            test -e .git/lfs && echo lfs-store-exists || echo no-lfs-store\n";
    let text = content("three");
    let (sha, oid) = commit_lfs_file(&repo, pointer_pipeline, &text);
    let (job, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(job.status, JobStatus::Success, "{log}");
    assert!(log.contains(POINTER), "{log}");
    assert!(log.contains(&format!("oid sha256:{oid}")), "{log}");
    assert!(!log.contains("LFS content three"), "{log}");
    // Nothing was downloaded: git-lfs keeps what it fetches in `.git/lfs`.
    assert!(log.contains("no-lfs-store"), "{log}");

    let (sha, _) = commit_lfs_file(&repo, LFS_PIPELINE, &text);
    let (job, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(job.status, JobStatus::Success, "{log}");
    assert!(log.contains(&format!("{oid}  data.bin")), "{log}");
}

/// A Woodpecker file without `clone:` gets the LFS files' content, as Woodpecker's clone step
/// fetches them by default; its clone step's `lfs: false` leaves the pointers.
#[tokio::test]
async fn a_woodpecker_file_gets_lfs_content_by_default() {
    let h = harness();
    let repo = lfs_repo();
    let read = "steps:\n  - name: read\n    commands: [sha256sum data.bin, cat data.bin]\n";
    let text = content("woodpecker");
    let (sha, oid) = commit_lfs_file_as(&repo, ".woodpecker.yaml", read, &text);
    let (job, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(job.status, JobStatus::Success, "{log}");
    assert!(log.contains(&format!("{oid}  data.bin")), "{log}");

    let off = format!(
        "clone:\n  git:\n    image: woodpeckerci/plugin-git\n    settings:\n      lfs: false\n{read}"
    );
    let (sha, oid) = commit_lfs_file_as(&repo, ".woodpecker.yaml", &off, &text);
    let (job, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(job.status, JobStatus::Success, "{log}");
    assert!(log.contains(POINTER), "{log}");
    assert!(!log.contains(&format!("{oid}  data.bin")), "{log}");
}

/// The agent asks git alone whether a commit has LFS files, so a repository without any needs
/// no git-lfs on the agent for a Woodpecker file's default clone.
#[tokio::test]
async fn lfs_files_are_found_without_git_lfs() {
    let plain = GitRepo::new();
    plain.commit(&[("a.txt", "1\n")], "plain");
    let checkout = GitCheckout::new(tempfile::tempdir().unwrap().path(), None);
    assert!(!checkout.uses_lfs(plain.path()).await.unwrap());
    // Marked by `.gitattributes`, as `git lfs track` writes it, and no git-lfs involved.
    let marked = GitRepo::new();
    marked.commit(
        &[
            (
                ".gitattributes",
                "*.bin filter=lfs diff=lfs merge=lfs -text\n",
            ),
            ("data.bin", "not even a pointer\n"),
        ],
        "marked",
    );
    assert!(checkout.uses_lfs(marked.path()).await.unwrap());
}

/// An LFS object the clone URL's store does not have (pushed without git-lfs's pre-push hook)
/// ends the job in `error` at once, with git-lfs's own message; no step runs.
#[tokio::test]
async fn a_failing_lfs_pull_is_a_job_error_that_names_git_lfs() {
    let h = harness();
    let repo = lfs_repo();
    let pipeline = "clone:\n  lfs: true\nsteps:\n  - name: never\n    run: echo reached-the-step\n";
    let (sha, oid) = commit_lfs_file(&repo, pipeline, &content("four"));
    let base = tempfile::tempdir().unwrap();
    let bare = bare_clone(&repo, base.path());
    let started = Instant::now();
    let (job, log) = h.run(bare.to_str().unwrap(), &sha).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(job.status, JobStatus::Error, "{log}");
    let reason = job.reason.unwrap_or_default();
    assert!(reason.contains("git lfs"), "{reason}");
    assert!(
        reason.contains("missing object") && reason.contains(&oid),
        "{reason}"
    );
    // git-lfs is installed: the reason must not send anyone looking for it.
    assert!(!reason.contains("installed"), "{reason}");
    assert!(log.contains(&oid), "{log}");
    assert!(!log.contains("reached-the-step"), "{log}");
}

/// A repository's `.lfsconfig` names its LFS server, and git-lfs does not heed
/// `GIT_ALLOW_PROTOCOL`: for a job cloned over http(s), a `file://` server there would copy
/// another repository's LFS objects off the agent's disk into the workspace. Refused, as local
/// submodule URLs are; an http(s) server is not.
#[tokio::test]
async fn a_remote_job_may_not_take_lfs_objects_from_the_agents_disk() {
    let h = harness();
    // Another repository on the agent's machine, its LFS objects in a bare store.
    let victim = lfs_repo();
    let secret = content("secret");
    let (_, oid) = commit_lfs_file(&victim, LFS_PIPELINE, &secret);
    let base = tempfile::tempdir().unwrap();
    let store = bare_clone(&victim, base.path());
    push(&victim, &store);

    // The remote job's workspace: that file's pointer (anyone may publish a pointer to a
    // known object), origin on a forge, and `.lfsconfig` pointing at the local store.
    let workspace = h.dir.path().join("workspace");
    let clone = Command::new("git")
        .args(["clone", "--quiet"])
        .arg(victim.path())
        .arg(&workspace)
        .env("GIT_LFS_SKIP_SMUDGE", "1")
        .output()
        .unwrap();
    assert!(clone.status.success(), "{clone:?}");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(&workspace)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    let forge_url = "https://git.invalid/acme/app.git";
    git(&["remote", "set-url", "origin", forge_url]);
    let data = workspace.join("data.bin");
    assert!(std::fs::read_to_string(&data).unwrap().starts_with(POINTER));
    let spec = NewJob::new(
        "acme/app",
        forge_url,
        "refs/heads/main",
        "a".repeat(40),
        Event::Push,
    );
    let job = h.enqueue_spec(spec).await;
    let checkout = GitCheckout::new(h.cache(), None);

    for lfs_url in [
        format!("file://{}", store.display()),
        store.display().to_string(),
    ] {
        std::fs::write(
            workspace.join(".lfsconfig"),
            format!("[lfs]\n\turl = {lfs_url}\n"),
        )
        .unwrap();
        let err = checkout
            .lfs_pull(&job, &workspace)
            .await
            .expect_err("a local LFS store for a remote job");
        let message = err.to_string();
        assert!(message.contains("not an http(s) URL"), "{message}");
        let now = std::fs::read_to_string(&data).unwrap();
        assert!(now.starts_with(POINTER), "the object {oid} was copied in");
    }

    // Nor an ssh server: git-lfs would run ssh with the agent user's keys. A stub `ssh` first
    // on PATH would leave a marker if it ran.
    let bin = h.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let marker = h.dir.path().join("ssh-ran");
    let stub = bin.join("ssh");
    raibid_testkit::write_script(
        &stub,
        &format!("#!/bin/sh\ntouch {}\nexit 1\n", marker.display()),
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    // SAFETY: the other tests of this binary read the environment only through std (to start
    // processes), which serialises that with this write; a stub `ssh` first on their PATH
    // changes nothing for them.
    unsafe { std::env::set_var("PATH", &path) };
    for lfs_url in ["ssh://git@127.0.0.1:1/x", "git@127.0.0.1:other/private"] {
        std::fs::write(
            workspace.join(".lfsconfig"),
            format!("[lfs]\n\turl = {lfs_url}\n"),
        )
        .unwrap();
        let message = checkout
            .lfs_pull(&job, &workspace)
            .await
            .expect_err("an ssh LFS server for a remote job")
            .to_string();
        assert!(message.contains("over ssh"), "{message}");
        assert!(!marker.exists(), "ssh ran for {lfs_url}");
    }

    // An http(s) server in `.lfsconfig` passes the check (and then fails to connect here).
    std::fs::write(
        workspace.join(".lfsconfig"),
        "[lfs]\n\turl = https://lfs.invalid/acme/app\n",
    )
    .unwrap();
    let message = checkout
        .lfs_pull(&job, &workspace)
        .await
        .expect_err("no such server")
        .to_string();
    assert!(!message.contains("not an http(s) URL"), "{message}");
}
