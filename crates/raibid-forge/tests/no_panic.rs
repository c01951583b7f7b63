//! Whatever arrives over the network, `parse` and `verify` answer with a value, never a panic.
//!
//! The inputs come from a small deterministic generator so failures reproduce exactly.

use http::{HeaderMap, HeaderName, HeaderValue};
use raibid_forge::{Parsed, delivery_id, parse, verify};
use raibid_model::Forge;
use raibid_testkit::fixtures::{WEBHOOK_SECRET as SECRET, webhook as fixture};
use serde_json::{Value, json};

const FORGES: [Forge; 3] = [Forge::Gitea, Forge::Forgejo, Forge::Github];
const EVENTS: [&str; 6] = [
    "push",
    "pull_request",
    "workflow_dispatch",
    "create",
    "ping",
    "issues",
];
/// Field names the parser looks for, so random JSON reaches past the first missing field.
const KEYS: [&str; 16] = [
    "ref",
    "after",
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
];

/// xorshift64*: enough randomness to shake out panics, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }

    fn string(&mut self) -> String {
        const PIECES: [&str; 12] = [
            "refs/heads/",
            "refs/tags/",
            "..",
            "/",
            "-",
            "0",
            "a",
            "é",
            "\u{0}",
            " ",
            "~",
            "\u{7f}",
        ];
        (0..self.below(12))
            .map(|_| PIECES[self.below(PIECES.len())])
            .collect()
    }

    fn json(&mut self, depth: u32) -> Value {
        match self.below(if depth == 0 { 5 } else { 7 }) {
            0 => Value::Null,
            1 => json!(self.next() & 1 == 0),
            2 => json!(self.next() as i64),
            3 => json!(self.string()),
            4 => json!("1111111111111111111111111111111111111111"),
            5 => Value::Array((0..self.below(4)).map(|_| self.json(depth - 1)).collect()),
            _ => Value::Object(
                (0..self.below(8))
                    .map(|_| {
                        (
                            KEYS[self.below(KEYS.len())].to_owned(),
                            self.json(depth - 1),
                        )
                    })
                    .collect(),
            ),
        }
    }
}

/// Headers naming `event` for every forge at once.
fn event_headers(event: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in ["x-gitea-event", "x-forgejo-event", "x-github-event"] {
        headers.insert(name, HeaderValue::from_str(event).unwrap());
    }
    headers.insert(
        "x-gitea-event-type",
        HeaderValue::from_static("pull_request_sync"),
    );
    headers
}

fn parse_everywhere(body: &[u8]) {
    for forge in FORGES {
        for event in EVENTS {
            let _ = parse(forge, &event_headers(event), body);
        }
    }
}

#[test]
fn random_bytes() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..2_000 {
        let body = rng.bytes(256);
        for forge in FORGES {
            for event in ["push", "pull_request", "workflow_dispatch"] {
                let result = parse(forge, &event_headers(event), &body);
                assert!(result.is_err(), "{body:?} parsed as {result:?}");
            }
        }
    }
}

#[test]
fn random_json() {
    let mut rng = Rng(42);
    for _ in 0..3_000 {
        let body = rng.json(4).to_string();
        parse_everywhere(body.as_bytes());
    }
}

#[test]
fn mutated_fixtures() {
    let mut rng = Rng(7);
    for name in [
        "gitea/push",
        "gitea/pull_request-synchronized",
        "github/pull_request-opened",
    ] {
        let (original, headers) = fixture(name);
        for _ in 0..300 {
            let mut body = original.clone();
            match rng.below(3) {
                0 => {
                    let at = rng.below(body.len());
                    body[at] = rng.next() as u8;
                }
                1 => body.truncate(rng.below(body.len())),
                _ => {
                    let at = rng.below(body.len());
                    body.splice(at..at, rng.bytes(8));
                }
            }
            for forge in FORGES {
                let _ = parse(forge, &headers, &body);
                assert!(verify(forge, &headers, &body, SECRET).is_err() || body == original);
            }
        }
    }
}

#[test]
fn huge_and_deep_inputs() {
    let huge = "a".repeat(1 << 20);
    let deep = "[".repeat(100_000);
    let bodies = [
        json!({"ref": format!("refs/heads/{huge}")}).to_string(),
        json!({"ref": "refs/heads/main", "after": huge}).to_string(),
        json!({"action": huge}).to_string(),
        json!({"repository": {"full_name": format!("{huge}/{huge}")}}).to_string(),
        deep.clone(),
        format!("{{\"ref\": {deep}"),
        format!("{{\"action\": \"opened\", \"pull_request\": {deep}"),
    ];
    for body in &bodies {
        parse_everywhere(body.as_bytes());
    }
    let overflow = r#"{"action": "opened", "pull_request": {"number": 18446744073709551616}}"#;
    parse_everywhere(overflow.as_bytes());
    // A huge but well-formed payload is still answered, not refused by a panic.
    let answer = parse(
        Forge::Github,
        &event_headers("pull_request"),
        bodies[2].as_bytes(),
    );
    assert!(matches!(answer, Ok(Parsed::Ignored { .. })), "{answer:?}");
}

#[test]
fn random_signature_headers() {
    let mut rng = Rng(1234);
    let body = b"{}";
    for _ in 0..3_000 {
        let raw: Vec<u8> = rng
            .bytes(80)
            .into_iter()
            .filter(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
            .collect();
        let Ok(value) = HeaderValue::from_bytes(&raw) else {
            continue;
        };
        let mut headers = HeaderMap::new();
        for name in [
            "x-gitea-signature",
            "x-forgejo-signature",
            "x-hub-signature-256",
            "x-gitea-delivery",
            "x-forgejo-delivery",
            "x-github-delivery",
        ] {
            headers.insert(HeaderName::from_static(name), value.clone());
        }
        for forge in FORGES {
            assert!(verify(forge, &headers, body, SECRET).is_err());
            assert!(verify(forge, &headers, body, b"").is_err());
            if let Some(id) = delivery_id(forge, &headers) {
                assert!(id.len() <= 128);
            }
        }
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-hub-signature-256",
        HeaderValue::from_str(&format!("sha256={}", "f".repeat(1 << 16))).unwrap(),
    );
    assert!(verify(Forge::Github, &headers, &vec![0; 1 << 20], SECRET).is_err());
}
