//! Every recorded webhook verifies with the fixture secret and parses to what it describes.

use raibid_forge::{Parsed, SignatureError, Trigger, delivery_id, parse, verify};
use raibid_model::{Event, Forge, PoolName};
use raibid_testkit::fixtures::{WEBHOOK_SECRET as SECRET, webhook as fixture};

/// Every fixture, with the forge it came from. Kept in sync with the directory by
/// `every_fixture_has_a_test`.
const FIXTURES: &[(&str, Forge)] = &[
    ("forgejo/push-docs-example", Forge::Forgejo),
    ("forgejo/push-new-branch-codeberg", Forge::Forgejo),
    ("gitea/create-branch-signed", Forge::Gitea),
    ("gitea/create-tag", Forge::Gitea),
    ("gitea/pull_request-agit", Forge::Gitea),
    ("gitea/pull_request-opened", Forge::Gitea),
    ("gitea/pull_request-synchronized", Forge::Gitea),
    ("gitea/push", Forge::Gitea),
    ("gitea/push-docs-example", Forge::Gitea),
    ("gitea/push-new-branch-signed", Forge::Gitea),
    ("github/pull_request-opened", Forge::Github),
    ("github/pull_request-synchronize", Forge::Github),
    ("github/push", Forge::Github),
    ("github/push-new-branch", Forge::Github),
];

fn forge_of(name: &str) -> Forge {
    FIXTURES
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("{name} is not listed in FIXTURES"))
        .1
}

fn parsed(name: &str) -> Parsed {
    let (body, headers) = fixture(name);
    parse(forge_of(name), &headers, &body).unwrap()
}

fn trigger(name: &str) -> Trigger {
    match parsed(name) {
        Parsed::Trigger(trigger) => trigger,
        other => panic!("{name} is no trigger: {other:?}"),
    }
}

/// The recorded `opened` deliveries with their action changed to `closed` (what the forges
/// send on closing and on merging, with the same payload): the pull request and repository.
#[test]
fn closed_pull_requests_of_recorded_payloads() {
    for name in ["gitea/pull_request-opened", "github/pull_request-opened"] {
        let (body, headers) = fixture(name);
        let mut payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
        payload["action"] = "closed".into();
        let body = serde_json::to_vec(&payload).unwrap();
        let opened = trigger(name);
        match parse(forge_of(name), &headers, &body).unwrap() {
            Parsed::Closed(closed) => {
                assert_eq!(closed.repo, opened.repo, "{name}");
                assert_eq!(closed.git_ref(), opened.git_ref, "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

fn some(s: &str) -> Option<String> {
    Some(s.to_owned())
}

#[test]
fn every_fixture_has_a_test() {
    let found = raibid_testkit::fixtures::webhook_names();
    let listed: Vec<_> = FIXTURES.iter().map(|(name, _)| name.to_string()).collect();
    assert_eq!(found, listed);
}

#[test]
fn every_fixture_signature_verifies() {
    for &(name, forge) in FIXTURES {
        let (body, headers) = fixture(name);
        assert_eq!(verify(forge, &headers, &body, SECRET), Ok(()), "{name}");
    }
}

#[test]
fn gitea_and_forgejo_fixtures_also_carry_valid_github_style_signatures() {
    for &(name, forge) in FIXTURES {
        if forge == Forge::Github {
            continue;
        }
        let (body, headers) = fixture(name);
        assert_eq!(
            verify(Forge::Github, &headers, &body, SECRET),
            Ok(()),
            "{name}"
        );
        assert_eq!(
            verify(Forge::Gitea, &headers, &body, SECRET),
            Ok(()),
            "{name}"
        );
    }
}

#[test]
fn tampering_with_any_fixture_body_breaks_its_signature() {
    for &(name, forge) in FIXTURES {
        let (mut body, headers) = fixture(name);
        let middle = body.len() / 2;
        body[middle] ^= 0x01;
        assert_eq!(
            verify(forge, &headers, &body, SECRET),
            Err(SignatureError::Mismatch),
            "{name}"
        );
        let (mut body, _) = fixture(name);
        body.push(b'\n');
        assert_eq!(
            verify(forge, &headers, &body, SECRET),
            Err(SignatureError::Mismatch),
            "{name}"
        );
        let (body, _) = fixture(name);
        assert_eq!(
            verify(forge, &headers, &body, b"wrong secret"),
            Err(SignatureError::Mismatch),
            "{name}"
        );
    }
}

#[test]
fn every_fixture_has_a_delivery_id() {
    for &(name, forge) in FIXTURES {
        let (_, headers) = fixture(name);
        let id = delivery_id(forge, &headers).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(id.len(), 36, "{name}: {id}");
    }
    let (_, headers) = fixture("gitea/push");
    assert_eq!(
        delivery_id(Forge::Gitea, &headers).as_deref(),
        Some("b25d886c-e540-5337-82f9-0d086a53883d")
    );
}

#[test]
fn gitea_push() {
    assert_eq!(
        trigger("gitea/push"),
        Trigger {
            forge: Forge::Gitea,
            repo: "Test-CI/multi-line-secrets".into(),
            clone_url: "http://127.0.0.1:3000/Test-CI/multi-line-secrets.git".into(),
            html_url: some("http://127.0.0.1:3000/Test-CI/multi-line-secrets"),
            git_ref: "refs/heads/main".into(),
            sha: "29be01c073851cf0db0c6a466e396b725a670453".into(),
            event: Event::Push,
            branch: some("main"),
            tag: None,
            pr_number: None,
            source_branch: None,
            pr_labels: Vec::new(),
            title: some("add some text"),
            from_fork: false,
            sender: some("test-user"),
            default_branch: some("main"),
            diff_base: some("6efcf5b7c98f3e7a491675164b7a2e7acac27941"),
        }
    );
}

#[test]
fn gitea_push_docs_example() {
    assert_eq!(
        trigger("gitea/push-docs-example"),
        Trigger {
            forge: Forge::Gitea,
            repo: "gitea/webhooks".into(),
            clone_url: "http://localhost:3000/gitea/webhooks.git".into(),
            html_url: some("http://localhost:3000/gitea/webhooks"),
            git_ref: "refs/heads/develop".into(),
            sha: "bffeb74224043ba2feb48d137756c8a9331c449a".into(),
            event: Event::Push,
            branch: some("develop"),
            tag: None,
            pr_number: None,
            source_branch: None,
            pr_labels: Vec::new(),
            title: None,
            from_fork: false,
            sender: some("gitea"),
            default_branch: some("master"),
            diff_base: some("28e1879d029cb852e4844d9c718537df08844e03"),
        }
    );
}

#[test]
fn gitea_push_new_branch() {
    assert_eq!(
        trigger("gitea/push-new-branch-signed"),
        Trigger {
            forge: Forge::Gitea,
            repo: "example/example".into(),
            clone_url: "http://localhost:3000/example/example.git".into(),
            html_url: some("http://localhost:3000/example/example"),
            git_ref: "refs/heads/master".into(),
            sha: "67b56589a45103f891bdee7c0546e5d40bc02001".into(),
            event: Event::Push,
            branch: some("master"),
            tag: None,
            pr_number: None,
            source_branch: None,
            pr_labels: Vec::new(),
            title: some("example"),
            from_fork: false,
            sender: some("example"),
            default_branch: some("master"),
            diff_base: None,
        }
    );
}

#[test]
fn gitea_create_branch_is_ignored() {
    assert_eq!(
        parsed("gitea/create-branch-signed"),
        Parsed::Ignored {
            reason: "create events are covered by the push event".into()
        }
    );
}

#[test]
fn gitea_create_tag_is_ignored() {
    assert_eq!(
        parsed("gitea/create-tag"),
        Parsed::Ignored {
            reason: "create events are covered by the push event".into()
        }
    );
}

fn gitea_pull_request_1() -> Trigger {
    Trigger {
        forge: Forge::Gitea,
        repo: "jcitizen/my-repo".into(),
        clone_url: "https://try.gitea.io/jcitizen/my-repo.git".into(),
        html_url: some("https://try.gitea.io/jcitizen/my-repo"),
        git_ref: "refs/pull/1/head".into(),
        sha: "2eba238e33607c1fa49253182e9fff42baafa1eb".into(),
        event: Event::PullRequest,
        branch: some("master"),
        tag: None,
        pr_number: Some(1),
        source_branch: some("feature"),
        pr_labels: Vec::new(),
        title: some("Add License File"),
        from_fork: false,
        sender: some("jcitizen"),
        default_branch: some("master"),
        diff_base: some("39af58f1eff02aa308e16913e887c8d50362b474"),
    }
}

#[test]
fn gitea_pull_request_opened() {
    assert_eq!(trigger("gitea/pull_request-opened"), gitea_pull_request_1());
}

/// The job of a pull request carries the branch it targets, which its ref does not name.
#[test]
fn pull_request_jobs_know_their_target_branch_and_pushes_need_none() {
    let pool = raibid_model::PoolName::default();
    let pr = trigger("gitea/pull_request-opened").into_new_job(pool.clone(), None);
    assert_eq!(pr.target_branch.as_deref(), Some("master"));
    let gh = trigger("github/pull_request-opened").into_new_job(pool.clone(), None);
    assert!(gh.target_branch.is_some(), "{gh:?}");
    let push = trigger("gitea/push").into_new_job(pool, None);
    assert_eq!(push.target_branch, None);
    // And the branch it comes from, and the repository's page, for links.
    assert_eq!(pr.source_branch.as_deref(), Some("feature"));
    assert_eq!(
        pr.repo_url.as_deref(),
        Some("https://try.gitea.io/jcitizen/my-repo")
    );
    assert_eq!(gh.source_branch.as_deref(), Some("changes"));
}

/// A pull request's head branch that is no valid branch name is left out, not refused: the
/// build still runs, its steps without `CI_COMMIT_SOURCE_BRANCH`.
#[test]
fn a_source_branch_that_is_no_branch_name_is_left_out() {
    let (body, headers) = fixture("gitea/pull_request-opened");
    let text = String::from_utf8(body).unwrap();
    for bad in ["a..b", "-x", "with space", "refs/heads/main"] {
        let body = text.replacen("\"ref\": \"feature\"", &format!("\"ref\": \"{bad}\""), 1);
        assert_ne!(body, text, "the fixture names its head branch");
        let Parsed::Trigger(t) = parse(Forge::Gitea, &headers, body.as_bytes()).unwrap() else {
            panic!("ignored");
        };
        assert_eq!(t.source_branch, None, "{bad}");
        assert_eq!(t.pr_number, Some(1), "{bad}: still a build");
    }
}

/// A pull request's labels, bounded: names with control characters, empty or too long ones
/// are dropped, at most 64 kept; `null` is none.
#[test]
fn a_pull_request_s_labels_are_kept_within_bounds() {
    let (body, headers) = fixture("gitea/pull_request-opened");
    let mut json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let labels = |json: &serde_json::Value| {
        let Parsed::Trigger(t) = parse(
            Forge::Gitea,
            &headers,
            serde_json::to_vec(json).unwrap().as_slice(),
        )
        .unwrap() else {
            panic!("ignored");
        };
        t.pr_labels
    };
    let label = |name: String| serde_json::json!({ "id": 1, "name": name, "color": "e11d21" });
    json["pull_request"]["labels"] = serde_json::json!([
        label("kind/bug".into()),
        label(" ui ".into()),
        label("".into()),
        label("line\nbreak".into()),
        label("x".repeat(256)),
        label("x".repeat(255)),
    ]);
    assert_eq!(
        labels(&json),
        vec!["kind/bug".to_owned(), "ui".to_owned(), "x".repeat(255)]
    );
    json["pull_request"]["labels"] =
        serde_json::Value::Array((0..100).map(|i| label(format!("l{i}"))).collect());
    assert_eq!(labels(&json).len(), 64);
    json["pull_request"]["labels"] = serde_json::Value::Null;
    assert_eq!(labels(&json), Vec::<String>::new());
    json["pull_request"]["labels"] = serde_json::json!("bug");
    assert!(
        parse(
            Forge::Gitea,
            &headers,
            serde_json::to_vec(&json).unwrap().as_slice()
        )
        .is_err(),
        "labels that are not a list are a malformed payload"
    );
}

/// A repository page that is not a plain `http(s)` address is not kept for links.
#[test]
fn a_repository_page_with_credentials_or_another_scheme_is_dropped() {
    let (body, headers) = fixture("gitea/push");
    let text = String::from_utf8(body).unwrap();
    for bad in [
        "javascript:alert(1)",
        "http://user:secret@127.0.0.1:3000/Test-CI/multi-line-secrets",
    ] {
        let body = text.replacen(
            "\"html_url\": \"http://127.0.0.1:3000/Test-CI/multi-line-secrets\"",
            &format!("\"html_url\": \"{bad}\""),
            1,
        );
        assert_ne!(body, text, "the fixture names its page");
        let Parsed::Trigger(t) = parse(Forge::Gitea, &headers, body.as_bytes()).unwrap() else {
            panic!("ignored");
        };
        assert_eq!(t.html_url, None, "{bad}");
    }
}

/// `when: path` compares with the branch's previous commit for a push, the base for a pull
/// request, and nothing for a push that created its branch (`before` all zeros) or a tag.
#[test]
fn jobs_carry_the_commit_their_changes_are_counted_from() {
    let pool = raibid_model::PoolName::default();
    let base = |name: &str| trigger(name).into_new_job(pool.clone(), None).diff_base;
    assert_eq!(
        base("gitea/push").as_deref(),
        Some("6efcf5b7c98f3e7a491675164b7a2e7acac27941")
    );
    assert_eq!(
        base("github/push").as_deref(),
        Some("2f780193b136b72bfea4eeb640786a8c4450c7a2")
    );
    assert_eq!(
        base("forgejo/push-docs-example").as_deref(),
        Some("28e1879d029cb852e4844d9c718537df08844e03")
    );
    for new_branch in [
        "gitea/push-new-branch-signed",
        "forgejo/push-new-branch-codeberg",
        "github/push-new-branch",
    ] {
        assert_eq!(base(new_branch), None, "{new_branch}");
    }
    assert_eq!(
        base("gitea/pull_request-opened").as_deref(),
        Some("39af58f1eff02aa308e16913e887c8d50362b474")
    );
    assert_eq!(
        base("github/pull_request-synchronize").as_deref(),
        Some("f95f852bd8fca8fcc58a9a2d6c842781e32a215e")
    );
    // The recorded push, as a tag push: same `before`, but a tag has no changes to filter.
    let (body, headers) = fixture("gitea/push");
    let mut body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    body["ref"] = "refs/tags/v1.0.0".into();
    let Parsed::Trigger(tag) = parse(Forge::Gitea, &headers, body.to_string().as_bytes()).unwrap()
    else {
        panic!("tag push ignored");
    };
    assert_eq!(tag.event, Event::Tag);
    assert_eq!(tag.diff_base, None);
}

#[test]
fn gitea_pull_request_synchronized() {
    assert_eq!(
        trigger("gitea/pull_request-synchronized"),
        gitea_pull_request_1()
    );
}

/// An AGit pull request (`git push origin HEAD:refs/for/master`, allowed with read access)
/// names the base repository as its head repository; only its head ref, `refs/pull/1/head`
/// instead of a branch, tells it apart from a branch pushed by a collaborator.
#[test]
fn gitea_agit_pull_request_is_untrusted() {
    let expected = Trigger {
        from_fork: true,
        // Its head is `refs/pull/1/head`, no branch.
        source_branch: None,
        pr_labels: Vec::new(),
        title: some("Add License File"),
        ..gitea_pull_request_1()
    };
    assert_eq!(trigger("gitea/pull_request-agit"), expected);
    let (body, headers) = fixture("gitea/pull_request-agit");
    let Parsed::Trigger(as_forgejo) = parse(Forge::Forgejo, &headers, &body).unwrap() else {
        panic!("ignored");
    };
    assert!(as_forgejo.from_fork);
}

#[test]
fn forgejo_push_docs_example() {
    assert_eq!(
        trigger("forgejo/push-docs-example"),
        Trigger {
            forge: Forge::Forgejo,
            repo: "forgejo/webhooks".into(),
            clone_url: "http://localhost:3000/forgejo/webhooks.git".into(),
            html_url: some("http://localhost:3000/forgejo/webhooks"),
            git_ref: "refs/heads/develop".into(),
            sha: "bffeb74224043ba2feb48d137756c8a9331c449a".into(),
            event: Event::Push,
            branch: some("develop"),
            tag: None,
            pr_number: None,
            source_branch: None,
            pr_labels: Vec::new(),
            title: None,
            from_fork: false,
            sender: some("forgejo"),
            default_branch: some("master"),
            diff_base: some("28e1879d029cb852e4844d9c718537df08844e03"),
        }
    );
}

#[test]
fn forgejo_push_new_branch() {
    assert_eq!(
        trigger("forgejo/push-new-branch-codeberg"),
        Trigger {
            forge: Forge::Forgejo,
            repo: "meisam/woodpecktester".into(),
            clone_url: "https://codeberg.org/meisam/woodpecktester.git".into(),
            html_url: some("https://codeberg.org/meisam/woodpecktester"),
            git_ref: "refs/heads/fdsafdsa".into(),
            sha: "28c3613ae62640216bea5e7dc71aa65356e4298b".into(),
            event: Event::Push,
            branch: some("fdsafdsa"),
            tag: None,
            pr_number: None,
            source_branch: None,
            pr_labels: Vec::new(),
            title: some("Delete '.woodpecker/.check.yml'"),
            from_fork: false,
            sender: some("6543"),
            default_branch: some("main"),
            diff_base: None,
        }
    );
}

#[test]
fn forgejo_fixtures_parse_the_same_through_the_gitea_headers() {
    for name in [
        "forgejo/push-docs-example",
        "forgejo/push-new-branch-codeberg",
    ] {
        let (body, headers) = fixture(name);
        let Parsed::Trigger(as_gitea) = parse(Forge::Gitea, &headers, &body).unwrap() else {
            panic!("{name} ignored");
        };
        assert_eq!(
            Trigger {
                forge: Forge::Forgejo,
                ..as_gitea
            },
            trigger(name)
        );
    }
}

#[test]
fn github_push() {
    assert_eq!(
        trigger("github/push"),
        Trigger {
            forge: Forge::Github,
            repo: "woodpecker-ci/woodpecker".into(),
            clone_url: "https://github.com/woodpecker-ci/woodpecker.git".into(),
            html_url: some("https://github.com/woodpecker-ci/woodpecker"),
            git_ref: "refs/heads/main".into(),
            sha: "366701fde727cb7a9e7f21eb88264f59f6f9b89c".into(),
            event: Event::Push,
            branch: some("main"),
            tag: None,
            pr_number: None,
            source_branch: None,
            pr_labels: Vec::new(),
            title: some("Fix multiline secrets replacer (#700)"),
            from_fork: false,
            sender: some("6543"),
            default_branch: some("main"),
            diff_base: some("2f780193b136b72bfea4eeb640786a8c4450c7a2"),
        }
    );
}

#[test]
fn github_push_new_branch() {
    assert_eq!(
        trigger("github/push-new-branch"),
        Trigger {
            forge: Forge::Github,
            repo: "Codertocat/Hello-World".into(),
            clone_url: "https://github.com/Codertocat/Hello-World.git".into(),
            html_url: some("https://github.com/Codertocat/Hello-World"),
            git_ref: "refs/heads/master".into(),
            sha: "6113728f27ae82c7b1a177c8d03f9e96e0adf246".into(),
            event: Event::Push,
            branch: some("master"),
            tag: None,
            pr_number: None,
            source_branch: None,
            pr_labels: Vec::new(),
            title: some("Initial commit"),
            from_fork: false,
            sender: some("Codertocat"),
            default_branch: some("master"),
            diff_base: None,
        }
    );
}

fn github_pull_request_2() -> Trigger {
    Trigger {
        forge: Forge::Github,
        repo: "Codertocat/Hello-World".into(),
        clone_url: "https://github.com/Codertocat/Hello-World.git".into(),
        html_url: some("https://github.com/Codertocat/Hello-World"),
        git_ref: "refs/pull/2/head".into(),
        sha: "ec26c3e57ca3a959ca5aad62de7213c562f8c821".into(),
        event: Event::PullRequest,
        branch: some("master"),
        tag: None,
        pr_number: Some(2),
        source_branch: some("changes"),
        pr_labels: vec!["bug".into()],
        title: some("Update the README with new information."),
        from_fork: false,
        sender: some("Codertocat"),
        default_branch: some("master"),
        diff_base: some("f95f852bd8fca8fcc58a9a2d6c842781e32a215e"),
    }
}

#[test]
fn github_pull_request_opened() {
    assert_eq!(
        trigger("github/pull_request-opened"),
        github_pull_request_2()
    );
}

#[test]
fn github_pull_request_synchronize() {
    assert_eq!(
        trigger("github/pull_request-synchronize"),
        github_pull_request_2()
    );
}

#[test]
fn a_trigger_becomes_the_job_it_describes() {
    let (_, headers) = fixture("gitea/pull_request-opened");
    let delivery = delivery_id(Forge::Gitea, &headers);
    let pool = PoolName::new("arm64").unwrap();
    let job = trigger("gitea/pull_request-opened").into_new_job(pool.clone(), delivery.clone());
    assert_eq!(job.repo, "jcitizen/my-repo");
    assert_eq!(job.clone_url, "https://try.gitea.io/jcitizen/my-repo.git");
    assert_eq!(job.git_ref, "refs/pull/1/head");
    assert_eq!(job.sha, "2eba238e33607c1fa49253182e9fff42baafa1eb");
    assert_eq!(job.event, Event::PullRequest);
    assert_eq!(job.pool, pool);
    assert_eq!(job.forge, Some(Forge::Gitea));
    assert_eq!(job.pr_number, Some(1));
    assert!(!job.from_fork);
    assert_eq!(job.sender.as_deref(), Some("jcitizen"));
    assert_eq!(job.delivery_id, delivery);
    assert!(job.env.is_empty());
    assert_eq!(job.retry_of, None);
}
