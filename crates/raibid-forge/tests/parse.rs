//! Parsing cases the recorded fixtures do not cover: tags, deletions, ignored actions, forks,
//! manual dispatch, and every way a payload can be wrong.

use http::{HeaderMap, HeaderName, HeaderValue};
use raibid_forge::{ParseError, Parsed, Trigger, parse};
use raibid_model::{Event, Forge};
use serde_json::{Value, json};

const A: &str = "1111111111111111111111111111111111111111";
const B: &str = "2222222222222222222222222222222222222222";
const ZERO: &str = "0000000000000000000000000000000000000000";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(name, value)| {
            (
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            )
        })
        .collect()
}

fn event_headers(forge: Forge, event: &str) -> HeaderMap {
    match forge {
        Forge::Gitea => headers(&[("X-Gitea-Event", event)]),
        Forge::Forgejo => headers(&[("X-Forgejo-Event", event)]),
        Forge::Github => headers(&[("X-GitHub-Event", event)]),
    }
}

fn repository() -> Value {
    json!({
        "full_name": "owner/repo",
        "clone_url": "https://git.example/owner/repo.git",
        "html_url": "https://git.example/owner/repo",
        "default_branch": "main",
    })
}

fn push(git_ref: &str, after: &str) -> Value {
    json!({
        "ref": git_ref,
        "before": A,
        "after": after,
        "repository": repository(),
        "sender": {"login": "alice"},
    })
}

fn pull_request(action: &str, head_repo: Value) -> Value {
    json!({
        "action": action,
        "number": 7,
        "pull_request": {
            "number": 7,
            "head": {"ref": "feature", "sha": B, "repo": head_repo},
            "base": {"ref": "main", "sha": A, "repo": {"full_name": "owner/repo"}},
        },
        "repository": repository(),
        "sender": {"login": "bob"},
    })
}

fn run(forge: Forge, headers: &HeaderMap, body: &Value) -> Result<Parsed, ParseError> {
    parse(forge, headers, body.to_string().as_bytes())
}

fn trigger(forge: Forge, event: &str, body: &Value) -> Trigger {
    match run(forge, &event_headers(forge, event), body).unwrap() {
        Parsed::Trigger(trigger) => trigger,
        other => panic!("not a trigger: {other:?}"),
    }
}

fn ignored(forge: Forge, event: &str, body: &Value) -> String {
    match run(forge, &event_headers(forge, event), body).unwrap() {
        Parsed::Ignored { reason } => reason,
        other => panic!("not ignored: {other:?}"),
    }
}

/// The JSON path a `Field` error names.
fn error_path(forge: Forge, event: &str, body: &[u8]) -> String {
    match parse(forge, &event_headers(forge, event), body) {
        Err(ParseError::Field { path, .. }) => path,
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn tag_push_builds_the_tagged_commit() {
    let mut body = push("refs/tags/v1.2.0", A);
    body["head_commit"] = json!({"id": B});
    let trigger = trigger(Forge::Gitea, "push", &body);
    assert_eq!(trigger.event, Event::Tag);
    assert_eq!(trigger.git_ref, "refs/tags/v1.2.0");
    assert_eq!(trigger.tag.as_deref(), Some("v1.2.0"));
    assert_eq!(trigger.branch, None);
    assert_eq!(
        trigger.sha, B,
        "an annotated tag's `after` is the tag object"
    );
}

/// `before` and `pull_request.base.sha` are only for `when: path`: one that cannot be used
/// leaves the job without a base (its path filters then match) instead of refusing the build.
#[test]
fn an_unusable_diff_base_is_none_and_the_job_still_builds() {
    let branch = trigger(Forge::Gitea, "push", &push("refs/heads/main", B));
    assert_eq!(branch.diff_base.as_deref(), Some(A));
    let mut upper = push("refs/heads/main", B);
    upper["before"] = "ABCDEF0123456789ABCDEF0123456789ABCDEF01".into();
    assert_eq!(
        trigger(Forge::Github, "push", &upper).diff_base.as_deref(),
        Some("abcdef0123456789abcdef0123456789abcdef01")
    );
    for before in [
        json!(ZERO),
        json!(B),
        json!("--upload-pack=touch /tmp/x"),
        // As long as a sha, but not hex: it would reach git as an option.
        json!(format!("{:-<40}", "--output=/tmp/x")),
        json!("1111"),
        json!("1".repeat(64)),
        json!(null),
    ] {
        let mut body = push("refs/heads/main", B);
        body["before"] = before.clone();
        let t = trigger(Forge::Gitea, "push", &body);
        assert_eq!((t.sha.as_str(), t.diff_base), (B, None), "{before}");
    }
    let mut body = push("refs/heads/main", B);
    body.as_object_mut().unwrap().remove("before");
    assert_eq!(trigger(Forge::Gitea, "push", &body).diff_base, None);

    let pr = trigger(
        Forge::Github,
        "pull_request",
        &pull_request("opened", json!(null)),
    );
    assert_eq!(pr.diff_base.as_deref(), Some(A));
    let mut body = pull_request("opened", json!(null));
    body["pull_request"]["base"]
        .as_object_mut()
        .unwrap()
        .remove("sha");
    assert_eq!(trigger(Forge::Gitea, "pull_request", &body).diff_base, None);
}

#[test]
fn tag_push_without_head_commit_uses_after() {
    let mut body = push("refs/tags/v1", A);
    body["head_commit"] = Value::Null;
    assert_eq!(trigger(Forge::Github, "push", &body).sha, A);
}

#[test]
fn branch_push_uses_after() {
    let mut body = push("refs/heads/main", A);
    body["head_commit"] = json!({"id": B});
    let trigger = trigger(Forge::Forgejo, "push", &body);
    assert_eq!(trigger.event, Event::Push);
    assert_eq!(trigger.sha, A);
    assert_eq!(trigger.branch.as_deref(), Some("main"));
    assert_eq!(trigger.sender.as_deref(), Some("alice"));
}

/// `[skip ci]` and its kin in the head commit's message, in any case, skip a branch push on
/// every forge; a tag push of the same commit still builds, as does a message that only talks
/// about skipping.
#[test]
fn skip_ci_in_the_head_commit_skips_a_branch_push() {
    for (forge, message) in [
        (Forge::Gitea, "docs: typo [skip ci]\n"),
        (Forge::Forgejo, "[CI SKIP] bump version"),
        (Forge::Github, "Merge branch 'x'\n\n[no ci]"),
        (Forge::Github, "tidy [Skip Actions]"),
    ] {
        let mut body = push("refs/heads/main", A);
        body["head_commit"] = json!({"id": A, "message": message});
        let reason = ignored(forge, "push", &body);
        assert!(
            reason.starts_with("the head commit's message says ["),
            "{reason}"
        );
    }
    let mut tag = push("refs/tags/v1", A);
    tag["head_commit"] = json!({"id": B, "message": "release [skip ci]"});
    assert_eq!(trigger(Forge::Gitea, "push", &tag).sha, B);
    for message in ["skip ci for docs", "[skip-ci]", ""] {
        let mut body = push("refs/heads/main", A);
        body["head_commit"] = json!({"id": A, "message": message});
        assert_eq!(trigger(Forge::Gitea, "push", &body).sha, A, "{message:?}");
    }
}

#[test]
fn deletions_are_ignored() {
    let mut github = push("refs/heads/gone", ZERO);
    github["deleted"] = json!(true);
    github["head_commit"] = Value::Null;
    assert_eq!(ignored(Forge::Github, "push", &github), "branch deleted");
    assert_eq!(
        ignored(Forge::Gitea, "push", &push("refs/tags/v1", ZERO)),
        "tag deleted"
    );
    let mut flagged_only = push("refs/heads/gone", A);
    flagged_only["deleted"] = json!(true);
    assert_eq!(
        ignored(Forge::Github, "push", &flagged_only),
        "branch deleted"
    );
}

#[test]
fn pushes_to_other_refs_are_ignored() {
    let reason = ignored(Forge::Github, "push", &push("refs/notes/commits", A));
    assert!(reason.contains("refs/notes/commits"), "{reason}");
}

#[test]
fn empty_strings_count_as_absent() {
    let mut body = push("refs/heads/main", A);
    body["repository"]["default_branch"] = json!("");
    body["repository"]["html_url"] = json!("");
    body["sender"] = json!({"login": ""});
    let trigger = trigger(Forge::Gitea, "push", &body);
    assert_eq!(trigger.default_branch, None);
    assert_eq!(trigger.html_url, None);
    assert_eq!(trigger.sender, None);
}

#[test]
fn pull_request_from_the_same_repository() {
    let body = pull_request("opened", json!({"full_name": "owner/repo"}));
    let trigger = trigger(Forge::Github, "pull_request", &body);
    assert_eq!(trigger.event, Event::PullRequest);
    assert_eq!(trigger.git_ref, "refs/pull/7/head");
    assert_eq!(trigger.sha, B);
    assert_eq!(trigger.pr_number, Some(7));
    assert_eq!(trigger.branch.as_deref(), Some("main"));
    assert_eq!(trigger.repo, "owner/repo");
    assert_eq!(trigger.clone_url, "https://git.example/owner/repo.git");
    assert!(!trigger.from_fork);
    let same_but_cased = pull_request("opened", json!({"full_name": "Owner/Repo"}));
    assert!(!self::trigger(Forge::Github, "pull_request", &same_but_cased).from_fork);
}

#[test]
fn pull_request_from_a_fork_or_a_deleted_fork() {
    let fork = pull_request("reopened", json!({"full_name": "mallory/repo"}));
    let trigger = trigger(Forge::Gitea, "pull_request", &fork);
    assert!(trigger.from_fork);
    assert_eq!(trigger.clone_url, "https://git.example/owner/repo.git");
    let deleted = pull_request("opened", Value::Null);
    assert!(self::trigger(Forge::Gitea, "pull_request", &deleted).from_fork);
}

#[test]
fn sync_actions_are_spelled_per_forge() {
    let same = json!({"full_name": "owner/repo"});
    assert_eq!(
        trigger(
            Forge::Github,
            "pull_request",
            &pull_request("synchronize", same.clone())
        )
        .pr_number,
        Some(7)
    );
    assert_eq!(
        trigger(
            Forge::Forgejo,
            "pull_request",
            &pull_request("synchronized", same.clone())
        )
        .pr_number,
        Some(7)
    );
    assert!(
        ignored(
            Forge::Github,
            "pull_request",
            &pull_request("synchronized", same.clone())
        )
        .contains("synchronized")
    );
}

#[test]
fn gitea_pull_request_sync_event_type_builds() {
    let body = pull_request("synchronized", json!({"full_name": "owner/repo"}));
    let h = headers(&[
        ("X-Gitea-Event", "pull_request"),
        ("X-Gitea-Event-Type", "pull_request_sync"),
    ]);
    assert!(matches!(
        run(Forge::Gitea, &h, &body),
        Ok(Parsed::Trigger(_))
    ));
    let h = headers(&[
        ("X-Gitea-Event", "pull_request"),
        ("X-Gitea-Event-Type", "pull_request_sync"),
    ]);
    assert!(matches!(
        run(Forge::Forgejo, &h, &body),
        Ok(Parsed::Trigger(_))
    ));
}

#[test]
fn other_pull_request_actions_are_ignored_by_name() {
    for (forge, action) in [
        (Forge::Github, "labeled"),
        (Forge::Github, "edited"),
        (Forge::Gitea, "label_updated"),
        (Forge::Forgejo, "review_requested"),
    ] {
        let reason = ignored(forge, "pull_request", &pull_request(action, Value::Null));
        assert_eq!(
            reason,
            format!("pull_request action \"{action}\" is not handled")
        );
    }
}

/// Closed or merged (both `closed`): which pull request of which repository, nothing else.
#[test]
fn a_closed_pull_request_is_named_with_its_repository() {
    for forge in [Forge::Github, Forge::Gitea, Forge::Forgejo] {
        let closed = run(
            forge,
            &event_headers(forge, "pull_request"),
            &pull_request("closed", Value::Null),
        )
        .unwrap();
        assert_eq!(
            closed,
            Parsed::Closed(raibid_forge::PullRequestClosed {
                forge,
                repo: "owner/repo".into(),
                number: 7,
            })
        );
        let Parsed::Closed(closed) = closed else {
            unreachable!()
        };
        assert_eq!(closed.git_ref(), "refs/pull/7/head");
    }
    // The repository's name is checked as a trigger's is.
    let mut bad = pull_request("closed", Value::Null);
    bad["repository"]["full_name"] = json!("../etc");
    assert_eq!(
        error_path(Forge::Gitea, "pull_request", bad.to_string().as_bytes()),
        "repository.full_name"
    );
}

#[test]
fn ignored_pull_request_actions_need_nothing_but_the_action() {
    assert!(
        ignored(Forge::Github, "pull_request", &json!({"action": "labeled"})).contains("labeled")
    );
    assert_eq!(error_path(Forge::Github, "pull_request", b"{}"), "action");
}

#[test]
fn manual_dispatch_builds_the_given_sha() {
    let body = json!({
        "ref": "refs/heads/release",
        "inputs": {"sha": A},
        "repository": repository(),
        "sender": {"login": "carol"},
        "workflow": ".github/workflows/ci.yml",
    });
    let trigger = trigger(Forge::Github, "workflow_dispatch", &body);
    assert_eq!(trigger.event, Event::Manual);
    assert_eq!(trigger.sha, A);
    assert_eq!(trigger.git_ref, "refs/heads/release");
    assert_eq!(trigger.branch.as_deref(), Some("release"));
    assert_eq!(trigger.sender.as_deref(), Some("carol"));

    let mut no_inputs = body.clone();
    no_inputs.as_object_mut().unwrap().remove("inputs");
    let path = error_path(
        Forge::Github,
        "workflow_dispatch",
        no_inputs.to_string().as_bytes(),
    );
    assert_eq!(path, "inputs");
    let mut no_sha = body;
    no_sha["inputs"] = json!({"branch": "x"});
    let path = error_path(
        Forge::Github,
        "workflow_dispatch",
        no_sha.to_string().as_bytes(),
    );
    assert_eq!(path, "inputs.sha");
}

#[test]
fn other_events_are_ignored() {
    let body = json!({});
    assert_eq!(ignored(Forge::Github, "ping", &body), "ping");
    assert_eq!(
        ignored(Forge::Github, "create", &body),
        "create events are covered by the push event"
    );
    assert_eq!(
        ignored(Forge::Forgejo, "issues", &body),
        "event issues is not handled"
    );
    assert_eq!(
        ignored(Forge::Gitea, "delete", &body),
        "event delete is not handled"
    );
}

#[test]
fn missing_event_header_is_named() {
    let body = push("refs/heads/main", A);
    for (forge, name) in [
        (Forge::Gitea, "X-Gitea-Event"),
        (Forge::Forgejo, "X-Forgejo-Event"),
        (Forge::Github, "X-GitHub-Event"),
    ] {
        assert_eq!(
            run(forge, &HeaderMap::new(), &body),
            Err(ParseError::MissingHeader(name))
        );
        assert_eq!(
            run(forge, &headers(&[(name, "")]), &body),
            Err(ParseError::MissingHeader(name))
        );
    }
    // A GitHub-style header does not stand in for Gitea's own.
    assert_eq!(
        run(Forge::Gitea, &headers(&[("X-GitHub-Event", "push")]), &body),
        Err(ParseError::MissingHeader("X-Gitea-Event"))
    );
}

#[test]
fn forgejo_accepts_the_gitea_event_header() {
    let body = push("refs/heads/main", A);
    let h = headers(&[("X-Gitea-Event", "push")]);
    assert!(matches!(
        run(Forge::Forgejo, &h, &body),
        Ok(Parsed::Trigger(_))
    ));
}

#[test]
fn non_ascii_event_header_is_invalid() {
    let mut h = HeaderMap::new();
    h.insert(
        "x-gitea-event",
        HeaderValue::from_bytes(b"pu\xffsh").unwrap(),
    );
    assert_eq!(
        parse(Forge::Gitea, &h, b"{}"),
        Err(ParseError::InvalidHeader("X-Gitea-Event"))
    );
}

#[test]
fn bodies_that_are_not_json() {
    for body in [&b""[..], b"not json", b"{", b"{\"ref\": }", b"\xff\xfe"] {
        for (forge, event) in [
            (Forge::Gitea, "push"),
            (Forge::Github, "pull_request"),
            (Forge::Github, "workflow_dispatch"),
        ] {
            let result = parse(forge, &event_headers(forge, event), body);
            assert!(
                matches!(result, Err(ParseError::NotJson(_))),
                "{body:?}: {result:?}"
            );
        }
    }
}

#[test]
fn trailing_bytes_after_a_valid_payload_are_not_json() {
    let body = format!("{} x", push("refs/heads/main", A));
    let result = parse(
        Forge::Gitea,
        &event_headers(Forge::Gitea, "push"),
        body.as_bytes(),
    );
    assert!(matches!(result, Err(ParseError::NotJson(_))), "{result:?}");
}

#[test]
fn json_of_the_wrong_shape_names_the_root() {
    for body in ["[]", "1", "\"push\"", "null"] {
        assert_eq!(
            error_path(Forge::Gitea, "push", body.as_bytes()),
            "(root)",
            "{body}"
        );
    }
}

/// serde's derived structs would also take a JSON array as the fields in order. The server
/// chooses a webhook's secret by reading `repository.full_name` on its own
/// (`repository_name`), which finds no name in an array: if the parser still built from one,
/// a body signed with the global secret could build a repository that has its own secret.
#[test]
fn payloads_are_objects_never_arrays() {
    let repo_array = json!(["owner/repo", "https://evil.example/x.git", null, null]);
    let mut body = push("refs/heads/main", A);
    body["repository"] = repo_array.clone();
    assert_eq!(
        raibid_forge::repository_name(body.to_string().as_bytes()),
        None
    );
    for forge in [Forge::Gitea, Forge::Forgejo, Forge::Github] {
        assert_eq!(
            error_path(forge, "push", body.to_string().as_bytes()),
            "repository",
            "{forge}"
        );
    }

    // The whole push as an array, its fields in declaration order.
    let whole = json!(["refs/heads/main", A, false, null, repository(), null]);
    assert_eq!(
        error_path(Forge::Gitea, "push", whole.to_string().as_bytes()),
        "(root)"
    );

    let mut cases: Vec<(&str, Value, &str)> = Vec::new();
    let mut tag = push("refs/tags/v1", A);
    tag["head_commit"] = json!([B]);
    cases.push(("push", tag, "head_commit"));
    let mut sender = push("refs/heads/main", A);
    sender["sender"] = json!(["alice"]);
    cases.push(("push", sender, "sender"));
    cases.push(("pull_request", json!(["opened"]), "(root)"));
    let pr = pull_request("opened", json!({"full_name": "owner/repo"}));
    for (path, value) in [
        ("pull_request", json!([7, {"sha": B}, {"ref": "main"}])),
        ("pull_request.head", json!([B, "feature", null])),
        ("pull_request.head.repo", json!(["owner/repo"])),
        ("pull_request.base", json!(["main"])),
        ("repository", repo_array.clone()),
    ] {
        let mut pr = pr.clone();
        let (parents, field) = path.rsplit_once('.').unwrap_or(("", path));
        let parent = parents
            .split('.')
            .filter(|p| !p.is_empty())
            .fold(&mut pr, |value, key| &mut value[key]);
        parent[field] = value;
        cases.push(("pull_request", pr, path));
    }
    let dispatch = |inputs: Value, repository: Value| json!({"ref": "refs/heads/main", "inputs": inputs, "repository": repository});
    cases.push((
        "workflow_dispatch",
        dispatch(json!([A]), repository()),
        "inputs",
    ));
    cases.push((
        "workflow_dispatch",
        dispatch(json!({"sha": A}), repo_array),
        "repository",
    ));
    for (event, body, path) in cases {
        let err = parse(
            Forge::Github,
            &event_headers(Forge::Github, event),
            body.to_string().as_bytes(),
        )
        .unwrap_err();
        let ParseError::Field { path: at, message } = &err else {
            panic!("{event} {path}: {err:?}")
        };
        assert_eq!((at.as_str(), event), (path, event), "{message}");
        assert!(message.contains("a JSON object"), "{message}");
    }
}

#[test]
fn the_repository_name_is_read_from_objects_only() {
    let name = |body: Value| raibid_forge::repository_name(body.to_string().as_bytes());
    assert_eq!(name(push("refs/heads/main", A)), Some("owner/repo".into()));
    assert_eq!(name(json!({"repository": ["owner/repo"]})), None);
    assert_eq!(name(json!([{"full_name": "owner/repo"}])), None);
    assert_eq!(name(json!([["owner/repo"]])), None);
    assert_eq!(name(json!({"repository": null})), None);
    assert_eq!(name(json!({"repository": {"full_name": 5}})), None);
}

/// Removes the field at a dotted `path`.
fn remove(body: &mut Value, path: &str) {
    let (parents, field) = path.rsplit_once('.').unwrap_or(("", path));
    let parent = parents
        .split('.')
        .filter(|p| !p.is_empty())
        .fold(body, |value, key| &mut value[key]);
    parent.as_object_mut().unwrap().remove(field).unwrap();
}

#[test]
fn missing_fields_are_named_by_full_path() {
    for path in [
        "after",
        "ref",
        "repository",
        "repository.full_name",
        "repository.clone_url",
    ] {
        let mut body = push("refs/heads/main", A);
        remove(&mut body, path);
        let err = run(Forge::Github, &event_headers(Forge::Github, "push"), &body).unwrap_err();
        assert_eq!(
            err,
            ParseError::Field {
                path: path.to_owned(),
                message: "missing".into()
            }
        );
        assert!(err.to_string().contains(path), "{err}");
    }
    for path in [
        "pull_request.head.sha",
        "pull_request.number",
        "pull_request.base.ref",
    ] {
        let mut pr = pull_request("opened", Value::Null);
        remove(&mut pr, path);
        assert_eq!(
            error_path(Forge::Gitea, "pull_request", pr.to_string().as_bytes()),
            path
        );
    }
}

#[test]
fn wrong_types_are_named_by_path() {
    let mut body = push("refs/heads/main", A);
    body["after"] = json!(5);
    assert_eq!(
        error_path(Forge::Gitea, "push", body.to_string().as_bytes()),
        "after"
    );

    let mut body = push("refs/heads/main", A);
    body["repository"]["full_name"] = json!(["owner", "repo"]);
    assert_eq!(
        error_path(Forge::Gitea, "push", body.to_string().as_bytes()),
        "repository.full_name"
    );

    let mut pr = pull_request("opened", Value::Null);
    pr["pull_request"]["number"] = json!("7");
    assert_eq!(
        error_path(Forge::Github, "pull_request", pr.to_string().as_bytes()),
        "pull_request.number"
    );
    pr["pull_request"]["number"] = json!(-1);
    assert_eq!(
        error_path(Forge::Github, "pull_request", pr.to_string().as_bytes()),
        "pull_request.number"
    );
}

#[test]
fn bad_shas_are_rejected_at_their_field() {
    for sha in [
        "",
        "abc",
        "zz11111111111111111111111111111111111111",
        &format!("{A}0"),
    ] {
        let body = push("refs/heads/main", sha);
        let err = run(Forge::Gitea, &event_headers(Forge::Gitea, "push"), &body).unwrap_err();
        let ParseError::Field { path, message } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(path, "after");
        assert!(message.contains("40 or 64"), "{message}");
    }
    let sha256 = "a".repeat(64);
    assert_eq!(
        trigger(Forge::Gitea, "push", &push("refs/heads/main", &sha256)).sha,
        sha256
    );
    let mut pr = pull_request("opened", Value::Null);
    pr["pull_request"]["head"]["sha"] = json!("main");
    assert_eq!(
        error_path(Forge::Github, "pull_request", pr.to_string().as_bytes()),
        "pull_request.head.sha"
    );
}

#[test]
fn unsafe_repository_names_are_rejected() {
    for name in [
        "../etc",
        "owner/..",
        "owner/.git",
        ".owner/repo",
        "owner/repo/x",
        "owner",
        "o r/x",
        "o/r\n",
    ] {
        let mut body = push("refs/heads/main", A);
        body["repository"]["full_name"] = json!(name);
        assert_eq!(
            error_path(Forge::Gitea, "push", body.to_string().as_bytes()),
            "repository.full_name",
            "{name:?}"
        );
    }
}

#[test]
fn unsafe_refs_are_rejected() {
    for git_ref in [
        "refs/heads/a..b",
        "refs/heads/-rf",
        "-refs/heads/x",
        "refs/heads/a b",
        "refs/heads/a~1",
        "refs/heads/a^",
        "refs/heads/a:b",
        "refs/heads/a?",
        "refs/heads/a*",
        "refs/heads/a[b",
        "refs/heads/a\\b",
        "refs/heads/a\u{1}",
        "main",
    ] {
        let body = push(git_ref, A);
        assert_eq!(
            error_path(Forge::Github, "push", body.to_string().as_bytes()),
            "ref",
            "{git_ref:?}"
        );
    }
    let mut pr = pull_request("opened", Value::Null);
    pr["pull_request"]["base"]["ref"] = json!("--upload-pack=evil");
    assert_eq!(
        error_path(Forge::Github, "pull_request", pr.to_string().as_bytes()),
        "pull_request.base.ref"
    );
}

#[test]
fn unsafe_clone_urls_are_rejected() {
    for url in [
        "file:///etc/passwd",
        "ext::sh -c id",
        "--upload-pack=x",
        "git@host:o/r.git",
        "",
    ] {
        let mut body = push("refs/heads/main", A);
        body["repository"]["clone_url"] = json!(url);
        assert_eq!(
            error_path(Forge::Gitea, "push", body.to_string().as_bytes()),
            "repository.clone_url",
            "{url:?}"
        );
    }
}
