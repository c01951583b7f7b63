//! Webhook delivery ids.
//!
//! Forges retry a delivery with the same id, so the server uses it to make job creation
//! idempotent. It ends up in Redis keys and logs, hence the strict character set: anything
//! else is treated as no id at all rather than trusted.

use http::HeaderMap;
use raibid_model::Forge;

use crate::header::{self, Kind};

/// The longest id [`is_safe_id`] takes.
pub const MAX_LEN: usize = 128;

/// The delivery id the forge sent, if it is present and [`is_safe_id`].
pub fn delivery_id(forge: Forge, headers: &HeaderMap) -> Option<String> {
    let (_, value) = header::find(headers, forge, Kind::Delivery)?;
    let id = value.to_str().ok()?;
    is_safe_id(id).then(|| id.to_owned())
}

/// Whether `id` may go into a Redis key and a log line as it is: 1 to [`MAX_LEN`] characters of
/// `[A-Za-z0-9._-]`. The server holds an API submission's `Idempotency-Key` to it too, since
/// that key becomes a delivery id.
pub fn is_safe_id(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn with(name: &'static str, value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_bytes(value).unwrap());
        headers
    }

    #[test]
    fn each_forge_reads_its_own_header() {
        let uuid = "f13e88f6-5cac-5e4b-b3c9-aaaf0b285c55";
        let gitea = with("x-gitea-delivery", uuid.as_bytes());
        let github = with("x-github-delivery", uuid.as_bytes());
        let forgejo = with("x-forgejo-delivery", uuid.as_bytes());
        assert_eq!(delivery_id(Forge::Gitea, &gitea).as_deref(), Some(uuid));
        assert_eq!(delivery_id(Forge::Forgejo, &forgejo).as_deref(), Some(uuid));
        assert_eq!(delivery_id(Forge::Forgejo, &gitea).as_deref(), Some(uuid));
        assert_eq!(delivery_id(Forge::Github, &github).as_deref(), Some(uuid));
        assert_eq!(delivery_id(Forge::Github, &gitea), None);
        assert_eq!(delivery_id(Forge::Gitea, &github), None);
        assert_eq!(delivery_id(Forge::Gitea, &forgejo), None);
    }

    #[test]
    fn unsafe_or_oversized_ids_are_dropped() {
        for bad in [
            &b""[..],
            b"a b",
            b"a/b",
            b"a:b",
            b"id\xff",
            "ü".as_bytes(),
            &[b'a'; MAX_LEN + 1],
        ] {
            assert_eq!(
                delivery_id(Forge::Gitea, &with("x-gitea-delivery", bad)),
                None,
                "{bad:?}"
            );
        }
        let longest = "a".repeat(MAX_LEN);
        assert_eq!(
            delivery_id(Forge::Gitea, &with("x-gitea-delivery", longest.as_bytes())),
            Some(longest)
        );
        assert_eq!(
            delivery_id(Forge::Gitea, &with("x-gitea-delivery", b"A-z_0.9")).as_deref(),
            Some("A-z_0.9")
        );
    }
}
