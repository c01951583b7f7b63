//! Hostile input, table by table, against the real server and agent: every row must be refused
//! with a 4xx or be harmless, and the server must keep answering.
//!
//! Injection payloads only ever `touch` a marker file; the tests assert the marker never
//! appears. (`main;rm -rf /` has the same shape as `main;touch /tmp/x`, and is not something to
//! run as root on the off chance the test finds a hole.)

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use raibid_client::{ClientError, SubmitJob};
use raibid_model::JobStatus;
use raibid_reliability::{
    GitServer, SECRET, Settings, Stack, TOKEN, exclusive, log_of, procs, push_webhook, report,
    size, wait_final,
};
use raibid_testkit::GitRepo;
use serde_json::json;

/// A marker file an injection would create; removed when dropped.
struct Marker(PathBuf);

impl Marker {
    fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!("raibid-pwned-{}-{name}", std::process::id())))
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    fn exists(&self) -> bool {
        self.0.exists()
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Sends `request` as is and returns the status code, or `None` when the server closed the
/// connection without an answer (which is how hyper refuses some oversized requests).
fn raw_http(port: u16, request: &[u8]) -> Option<u16> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The server may answer and close before reading everything we send.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&answer);
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn post_webhook(stack: &Stack, headers: &[(&str, String)], body: Vec<u8>) -> u16 {
    stack
        .client()
        .post_webhook("gitea", headers, body)
        .await
        .unwrap()
        .0
}

/// Branch names with shell metacharacters, in webhooks and submissions: refused, or carried as
/// plain data all the way into the step's environment, and never executed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_metacharacters_in_refs_urls_and_env_are_refused_or_inert() {
    let _machine = exclusive();
    let settings = Settings {
        executor: "host",
        ..Settings::default()
    };
    let stack = Stack::start(&settings, 1, 2);
    let client = stack.client();
    let git = GitServer::start().await;
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: show\n    run: |\n      echo \"branch=[$RAIBID_BRANCH]\"\n      \
             echo \"value=[${VALUE:-}]\"\n",
        )],
        "pipeline",
    );
    let clone_url = git.publish("acme/hostile", &repo);

    let marker = Marker::new("refs");
    let m = marker.path();
    let branches = [
        format!("main;touch {m}"),
        format!("$(touch {m})"),
        format!("main;touch${{IFS}}{m}"),
        format!("$(touch${{IFS}}{m})"),
        format!("`touch${{IFS}}{m}`"),
        format!("main|touch${{IFS}}{m}"),
        format!("main&&touch${{IFS}}{m}"),
        format!("main\ntouch {m}"),
        format!("-uhttps://x;touch${{IFS}}{m}"),
        format!("x/-c/core.sshCommand=touch${{IFS}}{m}"),
        "main'\"$IFS".to_owned(),
    ];
    let mut accepted = Vec::new();
    let mut refused = 0;
    for (i, branch) in branches.iter().enumerate() {
        let git_ref = format!("refs/heads/{branch}");
        let (headers, body) = push_webhook(
            SECRET,
            "acme/hostile",
            &clone_url,
            &git_ref,
            &sha,
            &format!("hostile-{i}"),
        );
        let status = post_webhook(&stack, &headers, body).await;
        assert!(
            status == 202 || status == 400,
            "webhook with branch {branch:?}: {status}"
        );
        for with_sha in [true, false] {
            let submitted = client
                .submit(&SubmitJob {
                    repo: "acme/hostile".into(),
                    clone_url: clone_url.clone(),
                    git_ref: Some(branch.clone()),
                    sha: with_sha.then(|| sha.clone()),
                    ..Default::default()
                })
                .await;
            match submitted {
                Ok(job) => accepted.push((branch.clone(), job.id)),
                // 400: refused by the ref rules; 422: no such branch in the repository.
                Err(ClientError::Api { status, .. }) if status == 400 || status == 422 => {
                    refused += 1
                }
                Err(e) => panic!("submission with ref {branch:?}: {e}"),
            }
        }
        if status == 400 {
            refused += 1;
        }
    }

    let urls = [
        format!("ext::sh -c touch% {m}"),
        format!("--upload-pack=touch {m}"),
        format!("-uhttps://x;touch${{IFS}}{m}"),
        format!("file:///tmp/none;touch${{IFS}}{m}"),
        format!("file:///tmp/$(touch${{IFS}}{m})"),
        format!("http://127.0.0.1:9/x;touch${{IFS}}{m}"),
        format!("https://x/`touch${{IFS}}{m}`"),
    ];
    let mut broken_urls = Vec::new();
    for url in &urls {
        match client
            .submit(&SubmitJob {
                repo: "acme/hostile".into(),
                clone_url: url.clone(),
                sha: Some(sha.clone()),
                ..Default::default()
            })
            .await
        {
            Ok(job) => broken_urls.push(job.id),
            Err(ClientError::Api { status: 400, .. }) => refused += 1,
            Err(e) => panic!("submission with clone URL {url:?}: {e}"),
        }
    }

    let value = format!("$(touch {m}); `touch {m}`");
    let with_env = client
        .submit(&SubmitJob {
            repo: "acme/hostile".into(),
            clone_url: clone_url.clone(),
            sha: Some(sha.clone()),
            env: [("VALUE".to_owned(), value.clone())].into(),
            ..Default::default()
        })
        .await
        .unwrap();

    for (branch, id) in &accepted {
        let job = wait_final(&client, id, Duration::from_secs(60)).await;
        assert_eq!(job.status, JobStatus::Success, "{job:?}");
        let log = log_of(&client, id).await;
        assert!(
            log.contains(&format!("branch=[{branch}]")),
            "the branch reached the step as data:\n{log}"
        );
    }
    for id in &broken_urls {
        let job = wait_final(&client, id, Duration::from_secs(60)).await;
        assert_eq!(job.status, JobStatus::Error, "{job:?}");
    }
    let job = wait_final(&client, &with_env.id, Duration::from_secs(60)).await;
    assert_eq!(job.status, JobStatus::Success);
    assert!(
        log_of(&client, &with_env.id)
            .await
            .contains(&format!("value=[{value}]"))
    );
    assert!(!marker.exists(), "an injection ran: {}", marker.path());

    report(
        "hostile_refs_urls_env",
        json!({
            "inputs": branches.len() * 3 + urls.len() + 1,
            "refused_4xx": refused,
            "accepted_and_inert": accepted.len() + broken_urls.len() + 1,
            "marker_created": marker.exists(),
        }),
    );
}

/// `../` and friends in repository names: refused before anything is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_in_repository_names_is_refused() {
    let _machine = exclusive();
    let stack = Stack::start(&Settings::default(), 0, 1);
    let client = stack.client();
    let names = [
        "../etc",
        "acme/..",
        "acme/../../etc/passwd",
        "../../etc/passwd",
        "acme/.git",
        "./acme",
        ".acme/app",
        "acme/app/../../x",
        "acme\\..\\x",
        "acme/app\u{0}",
        "acme//app",
        "/acme/app",
    ];
    for (i, name) in names.iter().enumerate() {
        let (headers, body) = push_webhook(
            SECRET,
            name,
            "https://git.example/acme/app.git",
            "refs/heads/main",
            &"a".repeat(40),
            &format!("traversal-{i}"),
        );
        let status = post_webhook(&stack, &headers, body).await;
        assert_eq!(status, 400, "webhook for repository {name:?}");
        let submitted = client
            .submit(&SubmitJob {
                repo: (*name).to_owned(),
                clone_url: "https://git.example/acme/app.git".into(),
                sha: Some("a".repeat(40)),
                ..Default::default()
            })
            .await;
        assert!(
            matches!(submitted, Err(ClientError::Api { status: 400, .. })),
            "submission for repository {name:?}: {submitted:?}"
        );
        let encoded: String = name
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let listed = reqwest::get(format!("{}/api/v1/jobs?repo={encoded}", stack.url()))
            .await
            .unwrap()
            .status();
        assert_eq!(listed, 400, "listing repository {name:?}");
    }
    let all = client.list(&Default::default()).await.unwrap();
    assert!(all.jobs.is_empty(), "nothing was queued: {:?}", all.jobs);
    report(
        "hostile_repo_names",
        json!({ "names": names.len(), "refused": names.len() * 3 }),
    );
}

/// Oversized and malformed headers: a 4xx or a closed connection, never a 5xx, and the server
/// keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn giant_and_malformed_headers_get_4xx_and_the_server_lives() {
    let _machine = exclusive();
    let stack = Stack::start(&Settings::default(), 0, 1);
    let port = stack.port;
    let big = "a".repeat(64 * 1024);
    let body = br#"{"ref": "refs/heads/main"}"#;
    let webhook = |extra: &str| {
        let mut r = format!(
            "POST /webhooks/gitea HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             X-Gitea-Event: push\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let get = |path: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n").into_bytes()
    };
    let many: String = (0..10_000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let huge = format!("X-Huge: {}\r\n", "a".repeat(1 << 20));
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        (
            "64 KiB signature",
            webhook(&format!("X-Gitea-Signature: {big}\r\n")),
            &[401],
        ),
        (
            "64 KiB delivery id",
            webhook(&format!("X-Gitea-Delivery: {big}\r\n")),
            &[401],
        ),
        (
            "64 KiB event name",
            webhook(&format!(
                "X-Gitea-Signature: {big}\r\nX-Gitea-Event: {big}\r\n"
            )),
            &[400, 401],
        ),
        (
            "64 KiB bearer token",
            get(
                "/api/v1/jobs?limit=1",
                &format!("Authorization: Bearer {big}\r\n"),
            ),
            &[200],
        ),
        (
            "64 KiB bearer token on a write",
            format!(
                "POST /api/v1/jobs/01JABCDEFGHJKMNPQRSTVWXYZ0/cancel HTTP/1.1\r\nHost: x\r\n\
                 Connection: close\r\nContent-Length: 0\r\nAuthorization: Bearer {big}\r\n\r\n"
            )
            .into_bytes(),
            &[401],
        ),
        (
            "64 KiB unknown header",
            get("/api/v1/queues", &format!("X-Junk: {big}\r\n")),
            &[200],
        ),
        (
            "64 KiB path",
            get(&format!("/api/v1/jobs/{big}"), ""),
            &[400, 404, 414],
        ),
        ("1 MiB header", get("/api/v1/queues", &huge), &[431]),
        ("10,000 headers", get("/api/v1/queues", &many), &[431]),
        (
            "non-ASCII event header",
            webhook("X-Gitea-Signature: 00\r\nX-Gitea-Event: \u{ff}\r\n"),
            &[400, 401],
        ),
        (
            "non-ASCII bearer token",
            format!(
                "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                 Content-Length: 2\r\nContent-Type: application/json\r\n\
                 Authorization: Bearer {TOKEN}\u{ff}\r\n\r\n{{}}"
            )
            .into_bytes(),
            &[401],
        ),
        (
            "header without a colon",
            get("/api/v1/queues", "this is not a header\r\n"),
            &[400],
        ),
        (
            "NUL in a header",
            get("/api/v1/queues", "X-Nul: a\u{0}b\r\n"),
            &[400],
        ),
    ];
    let mut answers = Vec::new();
    for (name, request, allowed) in &cases {
        let status = raw_http(port, request);
        assert!(
            status.is_none_or(|s| allowed.contains(&s)),
            "{name}: answered {status:?}, expected one of {allowed:?} or a closed connection"
        );
        assert!(
            stack.client().ready().await.unwrap(),
            "the server answers after {name}"
        );
        answers.push(json!({ "case": name, "status": status }));
    }
    report("hostile_headers", json!(answers));
}

/// Bodies that are not UTF-8, or not JSON: 400 for webhooks (after the signature check) and
/// for submissions, never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_bodies_are_400() {
    let _machine = exclusive();
    let stack = Stack::start(&Settings::default(), 0, 1);
    let bodies: [&[u8]; 5] = [
        b"\xff\xfe\xfd",
        b"{\"ref\": \"refs/heads/\xff\"}",
        b"{\"repository\": {\"full_name\": \"acme/\xc0\xaf\"}}",
        b"\xef\xbb\xbf{}",
        b"{\"ref\": \"refs/heads/main\", \"after\": \"\xed\xa0\x80\"}",
    ];
    for body in bodies {
        let (mut headers, _) = push_webhook(
            SECRET,
            "acme/app",
            "https://x/a.git",
            "refs/heads/main",
            &"a".repeat(40),
            "utf8",
        );
        let (_, signature) =
            raibid_forge::send::sign(raibid_model::Forge::Gitea, body, SECRET.as_bytes());
        headers.retain(|(name, _)| *name != "X-Gitea-Signature");
        headers.push(("X-Gitea-Signature", signature));
        let status = post_webhook(&stack, &headers, body.to_vec()).await;
        assert_eq!(status, 400, "webhook body {body:?}");
        let submitted = reqwest::Client::new()
            .post(format!("{}/api/v1/jobs", stack.url()))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(submitted, 400, "submission body {body:?}");
    }
    report(
        "hostile_bodies",
        json!({ "bodies": bodies.len(), "all_400": true }),
    );
}

/// Pipeline files built to exhaust the parser: each job ends in `error` quickly, with a message,
/// and the agent's memory stays small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pipeline_files_error_quickly_with_a_message() {
    let _machine = exclusive();
    let stack = Stack::start(&Settings::default(), 1, 1);
    let client = stack.client();
    let agent = stack.agents[0].pid().unwrap();
    // The classic "billion laughs": ten levels of nine aliases each, where `env` reads them.
    let mut laughs = String::from("env: [&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]");
    for level in 1..10 {
        let refs = vec![format!("*l{}", level - 1); 9].join(", ");
        laughs.push_str(&format!(", &l{level} [{refs}]"));
    }
    laughs.push_str("]\nsteps: [{name: a, run: x}]\n");
    // Aliases of mappings full of aliases, in a place the schema really expands.
    let keys: Vec<String> = (0..200).map(|i| format!("K{i}: *v")).collect();
    let expansion = format!(
        "matrix:\n  A: [x]\n  include: [&e {{K: &v v, {}}}, {}]\nsteps: [{{name: a, run: x}}]\n",
        keys.join(", "),
        vec!["*e"; 3000].join(", ")
    );
    let block: String = (0..500)
        .map(|depth| format!("{}a:\n", "  ".repeat(depth)))
        .collect();
    let cases: [(&str, Vec<u8>); 8] = [
        (
            "flow sequences 200k deep",
            format!("steps: {}", "[".repeat(200_000)).into_bytes(),
        ),
        (
            "flow mappings 50k deep",
            format!("{}x{}", "{a: ".repeat(50_000), "}".repeat(50_000)).into_bytes(),
        ),
        (
            "block sequences 100k deep",
            format!("steps:\n{}x\n", "- ".repeat(100_000)).into_bytes(),
        ),
        ("block mappings 500 deep", block.into_bytes()),
        ("billion laughs", laughs.into_bytes()),
        ("alias expansion", expansion.into_bytes()),
        (
            "300 KB file",
            format!(
                "steps:\n  - name: x\n    run: echo {}\n",
                "x".repeat(300_000)
            )
            .into_bytes(),
        ),
        (
            "not UTF-8",
            b"steps:\n  - name: \xff\xfe\n    run: echo\n".to_vec(),
        ),
    ];
    let mut figures = Vec::new();
    let mut peak_rss = 0;
    for (name, text) in &cases {
        let repo = GitRepo::new();
        std::fs::write(repo.path().join(".raibid.yaml"), text).unwrap();
        repo.git(&["add", ".raibid.yaml"]);
        let sha = repo.commit(&[], name);
        let job = client
            .submit(&SubmitJob {
                repo: "acme/yaml".into(),
                clone_url: repo.url(),
                sha: Some(sha),
                ..Default::default()
            })
            .await
            .unwrap();
        let started = Instant::now();
        let job = loop {
            peak_rss = peak_rss.max(procs::rss_kib(agent).unwrap_or(0));
            let job = client.job(&job.id).await.unwrap();
            if job.status.is_final() {
                break job;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{name}: still {}",
                job.status
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let took = started.elapsed();
        assert_eq!(job.status, JobStatus::Error, "{name}: {job:?}");
        let reason = job.reason.unwrap_or_default();
        assert!(
            reason.starts_with(".raibid.yaml:"),
            "{name}: the reason points into the file: {reason}"
        );
        figures.push(json!({ "case": name, "error_after_ms": took.as_millis(), "reason": reason }));
    }
    assert!(peak_rss < 200 * 1024, "agent RSS peaked at {peak_rss} KiB");
    report(
        "hostile_pipelines",
        json!({ "cases": figures, "agent_rss_peak_mib": peak_rss / 1024 }),
    );
}

/// A step that prints far more than `redis.log_max_bytes`: the log stops at the cap with a
/// marker, the agent's memory stays flat, the job still finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_printing_a_gigabyte_is_capped_and_finishes() {
    let _machine = exclusive();
    let bytes: u64 = size(50_000_000, 1_000_000_000);
    let cap: u64 = 1 << 20;
    let settings = Settings {
        log_max_bytes: cap,
        ..Settings::default()
    };
    let stack = Stack::start(&settings, 1, 1);
    let client = stack.client();
    let agent = stack.agents[0].pid().unwrap();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            &format!("steps:\n  - name: chatty\n    run: yes | head -c {bytes}\n"),
        )],
        "pipeline",
    );
    let job = client
        .submit(&SubmitJob {
            repo: "acme/chatty".into(),
            clone_url: repo.url(),
            sha: Some(sha),
            ..Default::default()
        })
        .await
        .unwrap();
    let started = Instant::now();
    let base_rss = procs::rss_kib(agent).unwrap_or(0);
    let mut peak_rss = base_rss;
    let job = loop {
        peak_rss = peak_rss.max(procs::rss_kib(agent).unwrap_or(0));
        let job = client.job(&job.id).await.unwrap();
        if job.status.is_final() {
            break job;
        }
        assert!(
            started.elapsed() < Duration::from_secs(size(120, 600)),
            "still {}",
            job.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = started.elapsed();
    assert_eq!(job.status, JobStatus::Success, "{job:?}");
    let log = log_of(&client, &job.id).await;
    assert!(log.contains("[raibid] log truncated"), "the cap is marked");
    assert!(
        (log.len() as u64) < cap + 4096,
        "the stored log is {} bytes, cap {cap}",
        log.len()
    );
    assert!(
        peak_rss < base_rss + 64 * 1024,
        "agent RSS went from {base_rss} KiB to {peak_rss} KiB"
    );
    report(
        "huge_output",
        json!({
            "printed_bytes": bytes,
            "log_max_bytes": cap,
            "stored_log_bytes": log.len(),
            "took_s": took.as_secs_f64(),
            "agent_rss_mib_before": base_rss / 1024,
            "agent_rss_mib_peak": peak_rss / 1024,
        }),
    );
}

/// A step that keeps forking, with a short timeout: killed at the timeout, and nothing it
/// started survives, under bubblewrap and on the host. A process that leaves the step's process
/// group with `setsid` is only caught by bubblewrap's PID namespace; on the host it escapes (a
/// documented limit of the host executor), which this test records and cleans up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_loop_is_killed_at_the_step_timeout_and_leaves_nothing() {
    let _machine = exclusive();
    let mut figures = Vec::new();
    for executor in ["bwrap", "host"] {
        let settings = Settings {
            executor,
            ..Settings::default()
        };
        let stack = Stack::start(&settings, 1, 1);
        let client = stack.client();
        let tag = format!("{}{}", std::process::id(), executor.len());
        let repo = GitRepo::new();
        let sha = repo.commit(
            &[(
                ".raibid.yaml",
                &format!(
                    "steps:\n  - name: forks\n    timeout: 3s\n    run: |\n      \
                     setsid sleep 7{tag}1 &\n      i=0\n      \
                     while [ $i -lt 2000 ]; do sleep 7{tag}0 & i=$((i+1)); sleep 0.002; done\n      \
                     wait\n"
                ),
            )],
            "a fork loop",
        );
        let job = client
            .submit(&SubmitJob {
                repo: "acme/forks".into(),
                clone_url: repo.url(),
                sha: Some(sha),
                ..Default::default()
            })
            .await
            .unwrap();
        let job = wait_final(&client, &job.id, Duration::from_secs(60)).await;
        assert_eq!(job.status, JobStatus::Failure, "{job:?}");
        let step = &job.steps[0];
        let took = step.duration_ms.unwrap_or(0);
        assert!(
            (3_000..12_000).contains(&took),
            "{executor}: stopped at the timeout (3 s + at most the 5 s grace): {took} ms"
        );
        let log = log_of(&client, &job.id).await;
        assert!(
            log.contains("timed out") || log.contains("timeout"),
            "{executor}: the log says why:\n{log}"
        );
        let grouped = procs::mentioning(&format!("sleep 7{tag}0"));
        assert!(
            grouped.is_empty(),
            "{executor}: forked processes survived: {grouped:?}"
        );
        let escaped = procs::mentioning(&format!("sleep 7{tag}1"));
        if executor == "bwrap" {
            assert!(
                escaped.is_empty(),
                "bwrap: a setsid process survived: {escaped:?}"
            );
        }
        for p in &escaped {
            procs::signal(p.pid, nix::sys::signal::Signal::SIGKILL);
        }
        figures.push(json!({
            "executor": executor,
            "stopped_after_ms": took,
            "survivors_in_group": grouped.len(),
            "setsid_escaped": escaped.len(),
        }));
    }
    report("fork_loop", json!(figures));
}
