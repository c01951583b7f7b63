//! Property-based fuzzing of everything a forge (or an attacker posing as one) sends: payloads
//! of all three forges, fixtures mutated value by value, signature and delivery headers.
//! Nothing may panic, and whatever parses into a build trigger must already satisfy the rules
//! that make it safe to use as a git argument, a path or a Redis key.
//!
//! `PROPTEST_CASES` raises the case count (`scripts/fuzz.sh` runs them long).

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use raibid_forge::{Parsed, delivery_id, parse, validate, verify};
use raibid_model::Forge;
use raibid_testkit::fixtures::{
    FIXTURES as FIXTURE_DIR, WEBHOOK_SECRET as SECRET, webhook as fixture,
};
use serde_json::Value;

const FORGES: [Forge; 3] = [Forge::Gitea, Forge::Forgejo, Forge::Github];

/// Field names the parsers read, so generated JSON reaches past the first missing field.
const KEYS: [&str; 18] = [
    "ref",
    "after",
    "before",
    "deleted",
    "head_commit",
    "id",
    "repository",
    "full_name",
    "clone_url",
    "html_url",
    "default_branch",
    "sender",
    "login",
    "action",
    "pull_request",
    "number",
    "sha",
    "head",
];

/// Strings that sit on the edge of the validation rules.
const EDGY: [&str; 16] = [
    "refs/heads/main",
    "refs/tags/v1.0",
    "refs/heads/-x",
    "refs/heads/a..b",
    "refs/heads/x.lock",
    "../../etc/passwd",
    "acme/app",
    "acme/.git",
    "https://git.example/acme/app.git",
    "ext::sh -c touch% /tmp/pwned",
    "file:///etc",
    "0123456789abcdef0123456789abcdef01234567",
    "0000000000000000000000000000000000000000",
    "opened",
    "synchronized",
    "\u{0}\u{7f}é",
];

fn fixture_names() -> Vec<String> {
    let mut names = Vec::new();
    for forge in ["gitea", "forgejo", "github"] {
        for entry in std::fs::read_dir(format!("{FIXTURE_DIR}/webhooks/{forge}")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
                names.push(format!("{forge}/{stem}"));
            }
        }
    }
    names.sort();
    names
}

fn forge() -> impl Strategy<Value = Forge> {
    prop::sample::select(FORGES.to_vec())
}

fn event() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "push",
            "pull_request",
            "workflow_dispatch",
            "create",
            "ping",
            "issues",
        ])
        .prop_map(str::to_owned),
        "[ -~]{0,20}",
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(EDGY.to_vec()).prop_map(str::to_owned),
        any::<String>(),
        "[a-z0-9/._-]{0,64}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS.to_vec()), inner), 0..8).prop_map(
                |pairs| Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            ),
        ]
    })
}

/// Headers naming `event` for every forge at once.
fn event_headers(event: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(event) {
        for name in ["x-gitea-event", "x-forgejo-event", "x-github-event"] {
            headers.insert(name, value.clone());
        }
    }
    headers
}

/// What a trigger must satisfy to be handed to git, the filesystem and Redis.
fn assert_safe(parsed: &Parsed) {
    if let Parsed::Trigger(t) = parsed {
        assert!(validate::repo_full_name(&t.repo).is_ok(), "{t:?}");
        assert!(validate::sha(&t.sha).is_ok(), "{t:?}");
        assert!(validate::git_ref(&t.git_ref).is_ok(), "{t:?}");
        assert!(
            t.clone_url.starts_with("https://") || t.clone_url.starts_with("http://"),
            "{t:?}"
        );
        assert!(
            !t.clone_url
                .chars()
                .any(|c| c.is_whitespace() || c.is_control()),
            "{t:?}"
        );
    }
}

/// Every path (as a list of keys and indexes) into a JSON document.
fn paths(value: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(prefix.clone());
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                prefix.push(k.clone());
                paths(v, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                prefix.push(i.to_string());
                paths(v, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn at_path<'a>(value: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(value, |v, key| match v {
        Value::Object(map) => map.get_mut(key).expect("path from the document"),
        Value::Array(items) => &mut items[key.parse::<usize>().expect("an index")],
        _ => unreachable!("paths only descend into containers"),
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(forge in forge(), event in event(), body in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(parsed) = parse(forge, &event_headers(&event), &body) {
            assert_safe(&parsed);
        }
    }

    #[test]
    fn generated_json_never_panics_and_triggers_are_safe(forge in forge(), event in event(), body in json_value()) {
        let body = body.to_string();
        if let Ok(parsed) = parse(forge, &event_headers(&event), body.as_bytes()) {
            assert_safe(&parsed);
        }
    }

    /// A recorded delivery with one value anywhere in it replaced by arbitrary JSON.
    #[test]
    fn fixtures_with_a_value_replaced_never_panic(which in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), replacement in json_value()) {
        let names = fixture_names();
        let (body, headers) = fixture(&names[which.index(names.len())]);
        let mut document: Value = serde_json::from_slice(&body).unwrap();
        let mut all = Vec::new();
        paths(&document, &mut Vec::new(), &mut all);
        let path = all[at.index(all.len())].clone();
        *at_path(&mut document, &path) = replacement;
        let mutated = serde_json::to_vec(&document).unwrap();
        for forge in FORGES {
            if let Ok(parsed) = parse(forge, &headers, &mutated) {
                assert_safe(&parsed);
            }
        }
    }

    /// A recorded delivery with bytes flipped, cut or inserted.
    #[test]
    fn fixtures_with_bytes_mutated_never_panic(which in any::<prop::sample::Index>(), edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8)) {
        let names = fixture_names();
        let (original, headers) = fixture(&names[which.index(names.len())]);
        let mut body = original.clone();
        for (at, byte, kind) in edits {
            let i = at.index(body.len().max(1));
            match kind {
                0 if !body.is_empty() => body[i] = byte,
                1 => body.truncate(i),
                _ => body.insert(i.min(body.len()), byte),
            }
        }
        for forge in FORGES {
            if let Ok(parsed) = parse(forge, &headers, &body) {
                assert_safe(&parsed);
            }
            if body != original {
                prop_assert!(verify(forge, &headers, &body, SECRET).is_err());
            }
        }
    }

    /// Any signature header value: never a panic, never accepted unless it is the real one.
    #[test]
    fn signature_headers_only_accept_the_real_signature(raw in prop::collection::vec(any::<u8>(), 0..160), body in prop::collection::vec(any::<u8>(), 0..256)) {
        let Ok(value) = HeaderValue::from_bytes(&raw) else { return Ok(()); };
        for forge in FORGES {
            let (name, real) = raibid_forge::send::sign(forge, &body, SECRET);
            let mut headers = HeaderMap::new();
            headers.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.clone());
            let accepted = verify(forge, &headers, &body, SECRET).is_ok();
            prop_assert_eq!(accepted, value.as_bytes() == real.as_bytes());
            prop_assert!(verify(forge, &headers, &body, b"").is_err());
        }
    }

    /// What we sign verifies, for any body and key; one changed byte does not.
    #[test]
    fn sign_then_verify(body in prop::collection::vec(any::<u8>(), 1..512), secret in prop::collection::vec(any::<u8>(), 1..64), flip in any::<prop::sample::Index>()) {
        for forge in FORGES {
            let (name, signature) = raibid_forge::send::sign(forge, &body, &secret);
            let mut headers = HeaderMap::new();
            headers.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(&signature).unwrap());
            prop_assert!(verify(forge, &headers, &body, &secret).is_ok());
            let mut tampered = body.clone();
            tampered[flip.index(body.len())] ^= 1;
            prop_assert!(verify(forge, &headers, &tampered, &secret).is_err());
        }
    }

    /// Delivery ids end up in Redis keys: short and from a small alphabet, or not used at all.
    #[test]
    fn delivery_ids_are_bounded_and_plain(raw in prop::collection::vec(any::<u8>(), 0..300)) {
        let Ok(value) = HeaderValue::from_bytes(&raw) else { return Ok(()); };
        for forge in FORGES {
            let mut headers = HeaderMap::new();
            for name in ["x-gitea-delivery", "x-forgejo-delivery", "x-github-delivery"] {
                headers.insert(name, value.clone());
            }
            if let Some(id) = delivery_id(forge, &headers) {
                prop_assert!(id.len() <= 128);
                prop_assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
            }
        }
    }
}
