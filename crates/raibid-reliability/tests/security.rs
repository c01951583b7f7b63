//! Secrets: never in logs or command lines, only in the steps that name them, only for the
//! repositories and events allowed, masked in job logs; and what a sandboxed step can reach.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use raibid_client::{Client, ClientError, SubmitJob};
use raibid_model::{Job, JobStatus};
use raibid_reliability::{
    Durability, GitServer, Redis, SECRET, Settings, Stack, TOKEN, Up, exclusive, log_of, procs,
    push_webhook, report, wait_final,
};
use raibid_testkit::GitRepo;
use serde_json::json;

/// How long a job of these tests may take to finish.
const FINAL_WITHIN: Duration = Duration::from_secs(90);

const SHARED: &str = "shared-secret-4f9a2c71";
const DEPLOY_KEY: &str = "deploy-key-8e3b5d90";
const REDIS_PASSWORD: &str = "redis-password-6d1e0f3a";
const REPO_SECRET: &str = "repo-secret-7c2d9e41";

/// Agent secrets: SHARED for every repository, DEPLOY_KEY for acme/site only.
const AGENT_SECRETS: &str = "  secrets:\n    SHARED: \"shared-secret-4f9a2c71\"\n    \
                             DEPLOY_KEY: \"deploy-key-8e3b5d90\"\n  secret_repos:\n    \
                             DEPLOY_KEY: [\"acme/site\"]\n";

/// Prints SHARED whole and in two writes 300 ms apart, shows what an unnamed step sees, and
/// prints DEPLOY_KEY.
const PIPELINE: &str = r#"steps:
  - name: named
    secrets: [SHARED]
    run: |
      echo "shared=$SHARED"
      printf 'split=%s' "${SHARED%????}"; sleep 0.3; printf '%s\n' "${SHARED#"${SHARED%????}"}"
  - name: unnamed
    run: echo "unnamed=[${SHARED:-unset}] [${DEPLOY_KEY:-unset}]"
  - name: deploy
    secrets: [DEPLOY_KEY]
    run: echo "deploy=$DEPLOY_KEY"
"#;

/// A Gitea `pull_request` (opened) delivery for PR #1 of `base` from `head_repo`.
fn pull_request(
    base: &str,
    head_repo: &str,
    clone_url: &str,
    sha: &str,
    delivery: &str,
) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let body = serde_json::to_vec(&json!({
        "action": "opened",
        "number": 1,
        "pull_request": {
            "number": 1,
            "head": { "sha": sha, "ref": "feature", "repo": { "full_name": head_repo } },
            "base": { "ref": "main" },
        },
        "repository": {
            "full_name": base,
            "clone_url": clone_url,
            "html_url": clone_url.trim_end_matches(".git"),
            "default_branch": "main",
        },
        "sender": { "login": "mallory" },
    }))
    .unwrap();
    let (name, signature) =
        raibid_forge::send::sign(raibid_model::Forge::Gitea, &body, SECRET.as_bytes());
    let headers = vec![
        ("Content-Type", "application/json".to_owned()),
        ("X-Gitea-Event", "pull_request".to_owned()),
        ("X-Gitea-Event-Type", "pull_request".to_owned()),
        ("X-Gitea-Delivery", delivery.to_owned()),
        (name, signature),
    ];
    (headers, body)
}

async fn webhook(client: &Client, (headers, body): (Vec<(&'static str, String)>, Vec<u8>)) -> Job {
    let (status, answer) = client.post_webhook("gitea", &headers, body).await.unwrap();
    assert_eq!(status, 202, "{answer}");
    let id = answer["job_id"].as_str().unwrap();
    // A fork's pull request waits for a person (`server.approval: forks`, the default): the
    // test plays that person, so that what the agent then withholds can be checked.
    if answer["status"] == "blocked" {
        assert_eq!(client.job(id).await.unwrap().status, JobStatus::Blocked);
        assert_eq!(client.approve(id).await.unwrap().status, JobStatus::Queued);
    }
    wait_final(client, id, FINAL_WITHIN).await
}

/// A repository with the secrets pipeline, published as `names`, with PR #1's head ref.
fn publish(git: &GitServer, names: &[&str]) -> (Vec<String>, String) {
    let repo = GitRepo::new();
    let sha = repo.commit(&[(".raibid.yaml", PIPELINE)], "pipeline");
    repo.git(&["update-ref", "refs/pull/1/head", &sha]);
    let urls = names.iter().map(|n| git.publish(n, &repo)).collect();
    (urls, sha)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_only_named_steps_of_allowed_repos_and_events_and_are_masked() {
    let _machine = exclusive();
    let settings = Settings {
        agent_yaml: AGENT_SECRETS.to_owned(),
        ..Settings::default()
    };
    let stack = Stack::start(&settings, 1, 2);
    let client = stack.client();
    let git = GitServer::start().await;
    let (urls, sha) = publish(&git, &["acme/site", "evil/repo"]);

    let own = webhook(
        &client,
        push_webhook(
            SECRET,
            "acme/site",
            &urls[0],
            "refs/heads/main",
            &sha,
            "own",
        ),
    )
    .await;
    assert_eq!(own.status, JobStatus::Success, "{own:?}");
    let log = log_of(&client, &own.id).await;
    for shown in [
        "shared=***",
        "split=***",
        "unnamed=[unset] [unset]",
        "deploy=***",
    ] {
        assert!(log.contains(shown), "{shown:?} in\n{log}");
    }

    let other = webhook(
        &client,
        push_webhook(
            SECRET,
            "evil/repo",
            &urls[1],
            "refs/heads/main",
            &sha,
            "other",
        ),
    )
    .await;
    assert_eq!(other.status, JobStatus::Error, "{other:?}");
    let reason = other.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("DEPLOY_KEY is not available to repository evil/repo"),
        "{reason}"
    );

    let fork = webhook(
        &client,
        pull_request("acme/site", "mallory/site", &urls[0], &sha, "fork"),
    )
    .await;
    assert_eq!(fork.status, JobStatus::Error, "{fork:?}");
    let reason = fork.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("withheld from pull requests from forks"),
        "{reason}"
    );

    let same_repo_pr = webhook(
        &client,
        pull_request("acme/site", "acme/site", &urls[0], &sha, "same"),
    )
    .await;
    assert_eq!(same_repo_pr.status, JobStatus::Success, "{same_repo_pr:?}");

    let mut everything = stack.logs();
    for job in [&own, &other, &fork, &same_repo_pr] {
        everything.push_str(&log_of(&client, &job.id).await);
        everything.push_str(&serde_json::to_string(&client.job(&job.id).await.unwrap()).unwrap());
    }
    for secret in [SHARED, DEPLOY_KEY] {
        assert!(
            !everything.contains(secret),
            "{secret} appears in a job log, a job record or a process log"
        );
    }
    report(
        "secrets_policy",
        json!({
            "allowed_repo_push": own.status,
            "other_repo_asking_for_scoped_secret": other.status,
            "fork_pull_request": fork.status,
            "same_repo_pull_request": same_repo_pr.status,
            "raw_values_in_logs": 0,
        }),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_and_command_lines_never_show_tokens_or_secrets() {
    let _machine = exclusive();
    let settings = Settings {
        agent_yaml: AGENT_SECRETS.to_owned(),
        ..Settings::default()
    };
    let redis = Redis::start_with(Durability::Memory, Some(REDIS_PASSWORD));
    let mut up = Up::start_with_redis(&settings, redis, 2, None, &[("RAIBID_LOG", "trace")]);
    let generated = up.token();
    let client = up.client();
    // Command lines are readable by every user of the machine: watch them the whole time.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (watching, needle) = (watching.clone(), up.data.display().to_string());
        std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            while watching.load(Ordering::SeqCst) {
                seen.extend(procs::mentioning(&needle).into_iter().map(|p| p.cmdline));
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    };
    let with_config_token = Client::new(&up.url(), Some(TOKEN.to_owned())).unwrap();
    let git = GitServer::start().await;
    let (urls, sha) = publish(&git, &["acme/site"]);

    // A repository secret, set as a person would: the value on standard input, never on a
    // command line; a job then prints it.
    let mut set = std::process::Command::new(raibid_reliability::raibid_binary())
        .args([
            "secret",
            "set",
            "acme/secrets",
            "REPO_TOKEN",
            "--server",
            &up.url(),
        ])
        .env("RAIBID_TOKEN", TOKEN)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = set.stdin.take().unwrap();
        stdin.write_all(REPO_SECRET.as_bytes()).unwrap();
    }
    let set = set.wait_with_output().unwrap();
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let repo = GitRepo::new();
    let repo_sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: repo\n    secrets: [REPO_TOKEN]\n    run: echo \"repo=$REPO_TOKEN\"\n",
        )],
        "repository secret",
    );
    let with_repo_secret = with_config_token
        .submit(&SubmitJob {
            repo: "acme/secrets".into(),
            clone_url: git.publish("acme/secrets", &repo),
            sha: Some(repo_sha),
            ..Default::default()
        })
        .await
        .unwrap();
    let submitted = with_config_token
        .submit(&SubmitJob {
            repo: "acme/site".into(),
            clone_url: urls[0].clone(),
            sha: Some(sha.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let pushed = webhook(
        &client,
        push_webhook(
            SECRET,
            "acme/site",
            &urls[0],
            "refs/heads/main",
            &sha,
            "trace",
        ),
    )
    .await;
    assert_eq!(pushed.status, JobStatus::Success, "{pushed:?}");
    assert_eq!(
        wait_final(&client, &submitted.id, FINAL_WITHIN)
            .await
            .status,
        JobStatus::Success
    );
    let with_repo_secret = wait_final(&client, &with_repo_secret.id, FINAL_WITHIN).await;
    assert_eq!(
        with_repo_secret.status,
        JobStatus::Success,
        "{with_repo_secret:?}"
    );
    let log = log_of(&client, &with_repo_secret.id).await;
    assert!(log.contains("repo=***"), "{log}");
    client
        .list(&Default::default())
        .await
        .expect("an authenticated list");
    client.logs(&pushed.id, None).await.unwrap();
    client.retry(&pushed.id).await.unwrap();
    let wrong = Client::new(&up.url(), Some(format!("{generated}x"))).unwrap();
    assert!(matches!(
        wrong.cancel(&submitted.id).await,
        Err(ClientError::Api { status: 401, .. })
    ));
    let (mut headers, body) = push_webhook(
        SECRET,
        "acme/site",
        &urls[0],
        "refs/heads/main",
        &sha,
        "forged",
    );
    headers.retain(|(name, _)| *name != "X-Gitea-Signature");
    headers.push(("X-Gitea-Signature", "0".repeat(64)));
    assert_eq!(
        client
            .post_webhook("gitea", &headers, body)
            .await
            .unwrap()
            .0,
        401
    );

    let secrets_key = up.secrets_key();
    let secrets = [
        ("generated API token", generated.as_str()),
        ("configured API token", TOKEN),
        ("webhook secret", SECRET),
        ("redis password", REDIS_PASSWORD),
        ("agent secret", SHARED),
        ("scoped agent secret", DEPLOY_KEY),
        ("repository secret", REPO_SECRET),
        ("secrets key", secrets_key.as_str()),
    ];
    watching.store(false, Ordering::SeqCst);
    let command_lines = watcher.join().unwrap();
    assert!(
        command_lines.iter().any(|c| c.contains(" --once ")),
        "agents were seen: {command_lines:?}"
    );
    for cmdline in &command_lines {
        for (what, value) in secrets {
            assert!(
                !cmdline.contains(value),
                "the {what} is on a command line: {cmdline}"
            );
        }
    }
    assert!(
        up.service.terminate(Duration::from_secs(30)),
        "{}",
        up.logs()
    );
    let logs = up.logs();
    assert!(
        logs.contains("TRACE") && logs.contains("webhook queued a job") && logs.contains("acked"),
        "trace logs of server and agents were captured:\n{}",
        &logs[..logs.len().min(2000)]
    );
    for (what, value) in secrets {
        assert!(!logs.contains(value), "the {what} is in the logs");
    }
    report(
        "no_secrets_in_logs",
        json!({
            "log_bytes": logs.len(),
            "trace_lines": logs.matches("TRACE").count(),
            "distinct_command_lines_checked": command_lines.len(),
            "secrets_checked": secrets.len(),
            "found": 0,
        }),
    );
}

/// What a bubblewrap-sandboxed step of a `raibid up` machine can reach: `raibid up`'s own
/// credential files (API token, and `env`, which exports it), and the Redis on loopback.
struct Reach {
    readable: Vec<String>,
    redis: bool,
}

/// Runs a probing step under `raibid up` with `agent.network` set to `network`; the data
/// directory goes under `data_root` (default: a directory in /tmp).
async fn probe(network: bool, data_root: Option<&std::path::Path>) -> Reach {
    let settings = Settings {
        agent_yaml: format!("  network: {network}\n"),
        ..Settings::default()
    };
    let up = Up::start_in(&settings, 1, data_root, &[]);
    let client = up.client();
    let redis_port = up
        .redis
        .url()
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: probe\n    run: |\n      \
             for f in \"$DATA/api-token\" \"$DATA/env\"; do\n        \
             if cat \"$f\" >/dev/null 2>&1; then echo \"READABLE $f\"; fi\n      \
             done\n      \
             if bash -c \"exec 3<>/dev/tcp/127.0.0.1/$REDIS_PORT; printf 'PING\\r\\n' >&3; \
             head -c 5 <&3\" 2>/dev/null | grep -q PONG; then echo REDIS-REACHED; fi\n",
        )],
        "probe",
    );
    assert!(up.data.join("api-token").is_file() && up.data.join("env").is_file());
    let job = client
        .submit(&SubmitJob {
            repo: "acme/probe".into(),
            clone_url: repo.url(),
            sha: Some(sha),
            env: [
                ("DATA".to_owned(), up.data.display().to_string()),
                ("REDIS_PORT".to_owned(), redis_port),
            ]
            .into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let job = wait_final(&client, &job.id, FINAL_WITHIN).await;
    assert_eq!(job.status, JobStatus::Success, "{job:?}\n{}", up.logs());
    let log = log_of(&client, &job.id).await;
    Reach {
        readable: log
            .lines()
            .filter(|l| l.starts_with("READABLE"))
            .map(str::to_owned)
            .collect(),
        redis: log.contains("REDIS-REACHED"),
    }
}

/// `agent.network: false` cuts a sandboxed step off from the Redis on loopback; with the
/// default (`true`) it shares the host's network and reaches it (SECURITY.md says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_network_a_sandboxed_step_cannot_reach_redis() {
    let _machine = exclusive();
    let isolated = probe(false, None).await;
    let shared = probe(true, None).await;
    report(
        "sandbox_network",
        json!({
            "network_false_reaches_redis": isolated.redis,
            "network_true_reaches_redis": shared.redis,
            "credential_files_readable_in_tmp_data_dir": isolated.readable.len() + shared.readable.len(),
        }),
    );
    assert!(!isolated.redis, "without network the step reached Redis");
    assert!(isolated.readable.is_empty() && shared.readable.is_empty());
}

/// A `raibid up` data directory outside /tmp, /root and /home (`--data-dir /srv/raibid`) is not
/// hidden by the sandbox's own tmpfs mounts; `raibid up` keeps the API token there, next to the
/// agent's directory, so the agent must hide it as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandboxed_step_cannot_read_raibid_ups_credentials() {
    let _machine = exclusive();
    let root = tempfile::Builder::new()
        .prefix("raibid-rel-data-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let reach = probe(false, Some(root.path())).await;
    assert!(
        reach.readable.is_empty(),
        "a sandboxed step read raibid up's credentials: {:?}",
        reach.readable
    );
}

/// The agent runs as root in CI and in many containers. bubblewrap keeps a root caller's
/// capabilities unless told otherwise, and with them a step could remount `/` read-write or
/// unmount the tmpfs that hides `/root` (where the agent's secrets live): the sandbox must
/// drop them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandboxed_step_cannot_undo_its_sandbox_even_under_a_root_agent() {
    let _machine = exclusive();
    let stack = Stack::start(&Settings::default(), 1, 1);
    let client = stack.client();
    let marker =
        std::path::Path::new("/var/tmp").join(format!("raibid-escape-{}", std::process::id()));
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            &format!(
                "steps:\n  - name: escape\n    run: |\n      \
                 grep CapEff /proc/self/status\n      \
                 mount -o remount,rw / 2>/dev/null && echo ESCAPED-REMOUNT || true\n      \
                 umount /root 2>/dev/null && echo ESCAPED-UNMOUNT || true\n      \
                 touch {} 2>/dev/null && echo ESCAPED-WRITE || true\n",
                marker.display()
            ),
        )],
        "escape attempts",
    );
    let job = client
        .submit(&SubmitJob {
            repo: "acme/escape".into(),
            clone_url: repo.url(),
            sha: Some(sha),
            ..Default::default()
        })
        .await
        .unwrap();
    let job = wait_final(&client, &job.id, FINAL_WITHIN).await;
    let log = log_of(&client, &job.id).await;
    let escaped = marker.exists();
    let _ = std::fs::remove_file(&marker);
    assert_eq!(job.status, JobStatus::Success, "{job:?}\n{log}");
    assert!(
        log.contains("CapEff:\t0000000000000000"),
        "no capabilities:\n{log}"
    );
    assert!(!log.contains("ESCAPED") && !escaped, "{log}");
    report(
        "sandbox_capabilities",
        json!({ "agent_uid": nix::unistd::geteuid().as_raw(), "escaped": false }),
    );
}
