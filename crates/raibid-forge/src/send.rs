//! Webhooks as a forge sends them, for `raibid up --demo`, `raibid bench webhooks` and tests
//! that need a delivery the fixtures do not have.

use hmac::{Hmac, Mac};
use raibid_model::Forge;
use serde_json::json;
use sha2::Sha256;

/// The signature header a forge would attach to `body`.
pub fn sign(forge: Forge, body: &[u8], secret: &[u8]) -> (&'static str, String) {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    let hex = hex::encode(mac.finalize().into_bytes());
    match forge {
        Forge::Gitea => ("X-Gitea-Signature", hex),
        Forge::Forgejo => ("X-Forgejo-Signature", hex),
        Forge::Github => ("X-Hub-Signature-256", format!("sha256={hex}")),
    }
}

/// A branch or tag push.
#[derive(Debug, Clone)]
pub struct Push {
    /// `owner/name`.
    pub repo: String,
    pub clone_url: String,
    /// Full ref: `refs/heads/main`.
    pub git_ref: String,
    pub before: String,
    pub after: String,
    pub sender: String,
    /// The head commit's message.
    pub message: String,
}

/// A Gitea `push` event body (the fields Gitea 1.2x sends that anyone reads).
pub fn gitea_push_body(push: &Push) -> Vec<u8> {
    let (owner, name) = push.repo.split_once('/').unwrap_or(("", &push.repo));
    let html_url = push.clone_url.trim_end_matches(".git").to_owned();
    let body = json!({
        "ref": push.git_ref,
        "before": push.before,
        "after": push.after,
        "compare_url": "",
        "commits": [{
            "id": push.after,
            "message": push.message,
            "url": format!("{html_url}/commit/{}", push.after),
        }],
        "head_commit": { "id": push.after, "message": push.message },
        "repository": {
            "id": 1,
            "name": name,
            "full_name": push.repo,
            "owner": { "id": 1, "login": owner, "username": owner },
            "html_url": html_url,
            "clone_url": push.clone_url,
            "default_branch": "main",
            "private": false,
        },
        "pusher": { "id": 1, "login": push.sender, "username": push.sender },
        "sender": { "id": 1, "login": push.sender, "username": push.sender },
    });
    serde_json::to_vec(&body).expect("json serializes")
}

/// The headers of a Gitea push delivery (content type, event, delivery id, signature).
pub fn gitea_push_headers(
    body: &[u8],
    secret: &[u8],
    delivery: &str,
) -> Vec<(&'static str, String)> {
    let (sig_name, sig) = sign(Forge::Gitea, body, secret);
    vec![
        ("Content-Type", "application/json".to_owned()),
        ("X-Gitea-Event", "push".to_owned()),
        ("X-Gitea-Event-Type", "push".to_owned()),
        ("X-Gitea-Delivery", delivery.to_owned()),
        (sig_name, sig),
    ]
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderName, HeaderValue};

    use super::*;
    use crate::{Parsed, parse, verify};

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn what_we_send_is_what_we_accept() {
        let push = Push {
            repo: "demo/hello".into(),
            clone_url: "http://127.0.0.1:9/demo/hello.git".into(),
            git_ref: "refs/heads/main".into(),
            before: "0".repeat(40),
            after: "a".repeat(40),
            sender: "demo".into(),
            message: "Greet\n\nin more words".into(),
        };
        let body = gitea_push_body(&push);
        let h = headers(&gitea_push_headers(&body, b"s3cret", "d-1"));
        verify(Forge::Gitea, &h, &body, b"s3cret").unwrap();
        match parse(Forge::Gitea, &h, &body).unwrap() {
            Parsed::Trigger(t) => {
                assert_eq!(t.repo, "demo/hello");
                assert_eq!(t.sha, "a".repeat(40));
                assert_eq!(t.git_ref, "refs/heads/main");
                assert_eq!(t.clone_url, push.clone_url);
                assert_eq!(t.title.as_deref(), Some("Greet"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn github_signatures_have_their_prefix() {
        let (name, value) = sign(
            Forge::Github,
            b"Hello, World!",
            b"It's a Secret to Everybody",
        );
        assert_eq!(name, "X-Hub-Signature-256");
        assert_eq!(
            value,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
