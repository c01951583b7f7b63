//! Webhooks against the real server and a real redis-server.

mod support;

use raibid_config::{PoolRule, Secret};
use raibid_model::{Event, Forge, Job, JobStatus, PoolName};
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use support::{SECRET, TestServer, config, fixture, gitea_headers, json, push_body};

/// What each fixture should lead to.
enum Expect {
    Job {
        repo: &'static str,
        git_ref: &'static str,
        sha: &'static str,
        event: Event,
        pr: Option<u64>,
        pool: &'static str,
    },
    Ignored(&'static str),
}

fn push(
    repo: &'static str,
    git_ref: &'static str,
    sha: &'static str,
    pool: &'static str,
) -> Expect {
    Expect::Job {
        repo,
        git_ref,
        sha,
        event: Event::Push,
        pr: None,
        pool,
    }
}

fn pr(repo: &'static str, n: u64, sha: &'static str, pool: &'static str) -> Expect {
    let git_ref: &'static str = match n {
        1 => "refs/pull/1/head",
        2 => "refs/pull/2/head",
        _ => unreachable!("no fixture has pull request {n}"),
    };
    Expect::Job {
        repo,
        git_ref,
        sha,
        event: Event::PullRequest,
        pr: Some(n),
        pool,
    }
}

fn expectations() -> Vec<(&'static str, Expect)> {
    vec![
        (
            "forgejo/push-docs-example",
            push(
                "forgejo/webhooks",
                "refs/heads/develop",
                "bffeb74224043ba2feb48d137756c8a9331c449a",
                "default",
            ),
        ),
        (
            "forgejo/push-new-branch-codeberg",
            push(
                "meisam/woodpecktester",
                "refs/heads/fdsafdsa",
                "28c3613ae62640216bea5e7dc71aa65356e4298b",
                "default",
            ),
        ),
        (
            "gitea/create-branch-signed",
            Expect::Ignored("create events"),
        ),
        ("gitea/create-tag", Expect::Ignored("create events")),
        (
            "gitea/pull_request-agit",
            pr(
                "jcitizen/my-repo",
                1,
                "2eba238e33607c1fa49253182e9fff42baafa1eb",
                "default",
            ),
        ),
        (
            "gitea/pull_request-opened",
            pr(
                "jcitizen/my-repo",
                1,
                "2eba238e33607c1fa49253182e9fff42baafa1eb",
                "default",
            ),
        ),
        (
            "gitea/pull_request-synchronized",
            pr(
                "jcitizen/my-repo",
                1,
                "2eba238e33607c1fa49253182e9fff42baafa1eb",
                "default",
            ),
        ),
        (
            "gitea/push",
            push(
                "Test-CI/multi-line-secrets",
                "refs/heads/main",
                "29be01c073851cf0db0c6a466e396b725a670453",
                "default",
            ),
        ),
        (
            "gitea/push-docs-example",
            push(
                "gitea/webhooks",
                "refs/heads/develop",
                "bffeb74224043ba2feb48d137756c8a9331c449a",
                "default",
            ),
        ),
        (
            "gitea/push-new-branch-signed",
            push(
                "example/example",
                "refs/heads/master",
                "67b56589a45103f891bdee7c0546e5d40bc02001",
                "default",
            ),
        ),
        (
            "github/pull_request-opened",
            pr(
                "Codertocat/Hello-World",
                2,
                "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
                "octo",
            ),
        ),
        (
            "github/pull_request-synchronize",
            pr(
                "Codertocat/Hello-World",
                2,
                "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
                "octo",
            ),
        ),
        (
            "github/push",
            push(
                "woodpecker-ci/woodpecker",
                "refs/heads/main",
                "366701fde727cb7a9e7f21eb88264f59f6f9b89c",
                "default",
            ),
        ),
        (
            "github/push-new-branch",
            push(
                "Codertocat/Hello-World",
                "refs/heads/master",
                "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
                "octo",
            ),
        ),
    ]
}

fn forge_of(name: &str) -> Forge {
    name.split('/').next().unwrap().parse().unwrap()
}

#[test]
fn every_fixture_has_an_expectation() {
    let found = raibid_testkit::fixtures::webhook_names();
    let listed: Vec<_> = expectations().iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(found, listed);
}

#[tokio::test]
async fn every_signed_fixture_queues_exactly_what_it_describes() {
    let mut cfg = config();
    // What approval blocks is tests/approval.rs's.
    cfg.server.approval = raibid_config::ApprovalMode::None;
    cfg.server.pool_rules = vec![PoolRule {
        repo: "Codertocat/*".into(),
        pool: PoolName::new("octo").unwrap(),
    }];
    let server = TestServer::start_with(cfg).await;
    let mut queued = Vec::new();
    // Each repository's jobs are numbered 1, 2, ... in the order they came.
    let mut numbers: std::collections::HashMap<String, u64> = Default::default();
    for (name, expect) in expectations() {
        let response = server.deliver(name).await;
        let status = response.status();
        let body = json(response).await;
        match expect {
            Expect::Ignored(why) => {
                assert_eq!(status, StatusCode::ACCEPTED, "{name}: {body}");
                let reason = body["ignored"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: {body}"));
                assert!(reason.contains(why), "{name}: {reason}");
            }
            Expect::Job {
                repo,
                git_ref,
                sha,
                event,
                pr,
                pool,
            } => {
                assert_eq!(status, StatusCode::ACCEPTED, "{name}: {body}");
                assert_eq!(body["status"], "queued", "{name}: {body}");
                let id = body["job_id"].as_str().unwrap();
                let job: Job = server.queue.get(id).await.unwrap().expect("job stored");
                assert_eq!(job.spec.repo, repo, "{name}");
                assert_eq!(job.spec.git_ref, git_ref, "{name}");
                assert_eq!(job.spec.sha, sha, "{name}");
                assert_eq!(job.spec.event, event, "{name}");
                assert_eq!(job.spec.pr_number, pr, "{name}");
                assert_eq!(job.spec.pool.as_str(), pool, "{name}");
                assert_eq!(job.spec.forge, Some(forge_of(name)), "{name}");
                assert_eq!(job.status, JobStatus::Queued, "{name}");
                assert!(job.spec.delivery_id.is_some(), "{name}");
                let last = numbers.entry(job.spec.repo.to_lowercase()).or_default();
                *last += 1;
                assert_eq!(job.spec.number, Some(*last), "{name}");
                queued.push(job.id);
            }
        }
    }
    assert_eq!(queued.len(), 12);
    assert_eq!(
        server.job_count().await,
        queued.len(),
        "nothing else was queued"
    );
    let octo = server
        .queue
        .stats(&PoolName::new("octo").unwrap())
        .await
        .unwrap();
    assert_eq!(octo.lag, 3);
}

async fn assert_nothing_queued(server: &TestServer) {
    assert_eq!(server.job_count().await, 0);
    let stats = server.queue.stats(&PoolName::default()).await.unwrap();
    assert_eq!((stats.length, stats.lag), (0, 0));
}

async fn error_code(response: reqwest::Response) -> (StatusCode, String, String) {
    let status = response.status();
    let body = json(response).await;
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn unsigned_wrongly_signed_and_tampered_webhooks_are_refused() {
    let server = TestServer::start().await;
    for (name, forge_header) in [
        ("gitea/push", "x-gitea-signature"),
        ("forgejo/push-docs-example", "x-forgejo-signature"),
        ("github/push", "x-hub-signature-256"),
    ] {
        // Unsigned: every signature header removed.
        let (body, mut headers) = fixture(name);
        for h in [
            "x-gitea-signature",
            "x-forgejo-signature",
            "x-hub-signature-256",
            "x-gogs-signature",
            "x-hub-signature",
        ] {
            headers.remove(h);
        }
        let forge = name.split('/').next().unwrap();
        let (status, code, _) = error_code(server.post_webhook(forge, headers, body).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "bad_signature"),
            "{name} unsigned"
        );

        // Signed with another secret.
        let (body, mut headers) = fixture(name);
        let wrong = support::hmac_hex("not the secret", &body);
        let value = if forge == "github" {
            format!("sha256={wrong}")
        } else {
            wrong
        };
        headers.insert(forge_header, HeaderValue::from_str(&value).unwrap());
        let (status, code, _) = error_code(server.post_webhook(forge, headers, body).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "bad_signature"),
            "{name} wrong secret"
        );

        // Body changed after signing.
        let (mut body, headers) = fixture(name);
        let at = body.len() / 2;
        body[at] ^= 1;
        let (status, code, _) = error_code(server.post_webhook(forge, headers, body).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "bad_signature"),
            "{name} tampered"
        );
    }
    assert_nothing_queued(&server).await;
}

#[tokio::test]
async fn without_any_secret_configured_nothing_is_accepted() {
    let mut cfg = config();
    cfg.server.webhook_secret = Secret::default();
    let server = TestServer::start_with(cfg).await;
    let (status, code, message) = error_code(server.deliver("gitea/push").await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(code, "no_webhook_secret");
    assert!(message.contains("webhook_secret"), "{message}");
    assert_nothing_queued(&server).await;
}

/// Forges resolve `owner/name` ignoring case, so a body naming `ACME/app` is `acme/app`'s and
/// must be signed with its secret, not the global one.
#[tokio::test]
async fn a_repository_secret_replaces_the_global_one_whatever_the_case_of_the_name() {
    let mut cfg = config();
    cfg.server
        .repo_secrets
        .insert("acme/app".into(), Secret::new("acme-own-secret"));
    let server = TestServer::start_with(cfg).await;

    for (i, repo) in ["acme/app", "ACME/app"].into_iter().enumerate() {
        let body = push_body(repo, "main", support::SHA);
        let global = gitea_headers("push", &format!("g-{i}"), SECRET, &body);
        let (status, code, _) =
            error_code(server.post_webhook("gitea", global, body.clone()).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "bad_signature"),
            "{repo}"
        );
        assert_eq!(server.job_count().await, i, "{repo}");

        let own = gitea_headers("push", &format!("o-{i}"), "acme-own-secret", &body);
        assert_eq!(
            server.post_webhook("gitea", own, body).await.status(),
            StatusCode::ACCEPTED,
            "{repo}"
        );
    }

    let other = push_body("acme/other", "main", support::SHA);
    let headers = gitea_headers("push", "d-3", SECRET, &other);
    assert_eq!(
        server.post_webhook("gitea", headers, other).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(server.job_count().await, 3);
}

/// The server picks the secret by `repository.full_name` before parsing. serde would also read
/// a JSON array as a struct's fields in order, and in an array there is no `full_name` to pick
/// by: such a body, signed with the global secret that every other repository's webhook holds,
/// used to build `acme/app` from the attacker's clone URL although `acme/app` has its own
/// secret.
#[tokio::test]
async fn array_shaped_payloads_signed_with_the_global_secret_build_nothing() {
    let mut cfg = config();
    cfg.server
        .repo_secrets
        .insert("acme/app".into(), Secret::new("acme-own-secret"));
    let server = TestServer::start_with(cfg).await;

    let repository = serde_json::json!(["acme/app", "https://evil.example/x.git", null, null]);
    let nested = serde_json::json!({
        "ref": "refs/heads/main",
        "after": support::SHA,
        "repository": repository,
    });
    // The whole push as an array: ref, after, deleted, head_commit, repository, sender.
    let whole = serde_json::json!([
        "refs/heads/main",
        support::SHA,
        false,
        null,
        repository,
        null
    ]);
    for (i, body) in [nested, whole].into_iter().enumerate() {
        let body = serde_json::to_vec(&body).unwrap();
        let headers = gitea_headers("push", &format!("a-{i}"), SECRET, &body);
        let (status, code, message) =
            error_code(server.post_webhook("gitea", headers, body).await).await;
        // Refused as a payload that is not a forge's (400); were it ever read as acme/app's,
        // as not signed with acme/app's secret (401).
        assert!(
            matches!(
                (status, code.as_str()),
                (StatusCode::BAD_REQUEST, "invalid_payload")
                    | (StatusCode::UNAUTHORIZED, "bad_signature")
            ),
            "{i}: {status} {code}: {message}"
        );
    }
    assert_nothing_queued(&server).await;
}

#[tokio::test]
async fn a_redelivery_returns_the_first_job() {
    let server = TestServer::start().await;
    let first = json(server.deliver("gitea/push").await).await;
    let again = server.deliver("gitea/push").await;
    assert_eq!(again.status(), StatusCode::OK);
    let again = json(again).await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["job_id"], first["job_id"]);
    assert_eq!(server.job_count().await, 1);
}

#[tokio::test]
async fn malformed_payloads_are_400_naming_the_field() {
    let server = TestServer::start().await;

    let body = b"{\"ref\": \"refs/heads/main\", ".to_vec();
    let headers = gitea_headers("push", "m-1", SECRET, &body);
    let (status, code, message) =
        error_code(server.post_webhook("gitea", headers, body).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_payload"),
        "{message}"
    );

    let mut value: serde_json::Value =
        serde_json::from_slice(&push_body("acme/app", "main", support::SHA)).unwrap();
    value["repository"]
        .as_object_mut()
        .unwrap()
        .remove("clone_url");
    let body = serde_json::to_vec(&value).unwrap();
    let headers = gitea_headers("push", "m-2", SECRET, &body);
    let (status, _, message) = error_code(server.post_webhook("gitea", headers, body).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("repository.clone_url"), "{message}");

    value["repository"]["clone_url"] = "https://git.example/acme/app.git".into();
    value["after"] = "not-a-sha".into();
    let body = serde_json::to_vec(&value).unwrap();
    let headers = gitea_headers("push", "m-3", SECRET, &body);
    let (status, _, message) = error_code(server.post_webhook("gitea", headers, body).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("after"), "{message}");

    assert_nothing_queued(&server).await;
}

#[tokio::test]
async fn a_content_type_other_than_json_is_415() {
    let server = TestServer::start().await;
    let (body, mut headers) = fixture("gitea/push");
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    let (status, code, _) = error_code(server.post_webhook("gitea", headers, body).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );

    let (body, mut headers) = fixture("gitea/push");
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    assert_eq!(
        server.post_webhook("gitea", headers, body).await.status(),
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let server = TestServer::start().await;
    assert_eq!(
        server_limit(),
        5 * 1024 * 1024,
        "the default limit is 5 MiB"
    );
    let mut body = push_body("acme/app", "main", support::SHA);
    body.truncate(body.len() - 1);
    body.extend_from_slice(b", \"padding\": \"");
    body.resize(6 * 1024 * 1024, b'x');
    body.extend_from_slice(b"\"}");
    let headers = gitea_headers("push", "big-1", SECRET, &body);
    let (status, code, _) = error_code(server.post_webhook("gitea", headers, body).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    assert_nothing_queued(&server).await;

    let mut cfg = config();
    cfg.server.body_limit_bytes = 1024;
    let small = TestServer::start_with(cfg).await;
    let (body, headers) = fixture("gitea/push");
    assert!(body.len() > 1024);
    let (status, _, message) = error_code(small.post_webhook("gitea", headers, body).await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(message.contains("1024"), "{message}");
}

fn server_limit() -> u64 {
    raibid_config::Config::default().server.body_limit_bytes
}

#[tokio::test]
async fn a_deleted_branch_is_acknowledged_and_ignored() {
    let server = TestServer::start().await;
    let body = push_body(
        "acme/app",
        "gone",
        "0000000000000000000000000000000000000000",
    );
    let headers = gitea_headers("push", "del-1", SECRET, &body);
    let response = server.post_webhook("gitea", headers, body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(json(response).await["ignored"], "branch deleted");
    assert_nothing_queued(&server).await;
}

/// A real Gitea push whose head commit says `[skip ci]` is acknowledged with the reason, and
/// nothing is queued.
#[tokio::test]
async fn a_push_whose_head_commit_says_skip_ci_queues_nothing() {
    let server = TestServer::start().await;
    let (fixture, _) = raibid_testkit::fixtures::webhook("gitea/push");
    let mut body: serde_json::Value = serde_json::from_slice(&fixture).unwrap();
    body["head_commit"]["message"] = "docs: fix a typo [skip ci]\n".into();
    let body = serde_json::to_vec(&body).unwrap();
    let headers = gitea_headers("push", "skip-1", SECRET, &body);
    let response = server.post_webhook("gitea", headers, body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(
        json(response).await["ignored"],
        "the head commit's message says [skip ci]"
    );
    assert_nothing_queued(&server).await;
}

#[tokio::test]
async fn repositories_outside_the_allow_list_are_403() {
    let mut cfg = config();
    cfg.server.allowed_repos = vec!["acme/*".into()];
    let server = TestServer::start_with(cfg).await;
    let (status, code, message) = error_code(server.deliver("gitea/push").await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "repo_not_allowed")
    );
    assert!(message.contains("Test-CI/multi-line-secrets"), "{message}");
    // Ignored events from such repositories are refused too.
    let (status, _, _) = error_code(server.deliver("gitea/create-tag").await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let body = push_body("acme/app", "main", support::SHA);
    let headers = gitea_headers("push", "allowed-1", SECRET, &body);
    assert_eq!(
        server.post_webhook("gitea", headers, body).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(server.job_count().await, 1);
}

#[tokio::test]
async fn events_not_configured_are_ignored_with_the_reason() {
    let mut cfg = config();
    cfg.server.events = vec![Event::Push];
    let server = TestServer::start_with(cfg).await;
    let response = server.deliver("github/pull_request-opened").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let reason = json(response).await["ignored"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("pull_request") && reason.contains("server.events"),
        "{reason}"
    );
    assert_nothing_queued(&server).await;
    assert_eq!(
        server.deliver("github/push").await.status(),
        StatusCode::ACCEPTED
    );
}
