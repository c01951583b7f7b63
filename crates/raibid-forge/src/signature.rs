//! Webhook signature verification.
//!
//! All three forges sign the raw request body with HMAC-SHA256 keyed by the hook secret; they
//! differ only in the header name and GitHub's `sha256=` prefix. The comparison goes through
//! `hmac`'s constant-time `verify_slice` so response timing does not leak how many leading
//! bytes of a forged signature were right.

use hmac::{Hmac, Mac};
use http::HeaderMap;
use raibid_model::Forge;
use sha2::Sha256;

use crate::header::{self, Kind};

/// HMAC-SHA256 output length in bytes.
const DIGEST_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// An empty key would let anyone compute valid signatures, so it is refused outright.
    #[error("no webhook secret is configured")]
    EmptySecret,
    #[error("missing signature header {0}")]
    Missing(&'static str),
    #[error("malformed signature header {header}: {reason}")]
    Malformed {
        header: &'static str,
        reason: &'static str,
    },
    #[error("signature does not match the request body")]
    Mismatch,
}

/// Checks that `body` was signed with `secret` by the forge that sent `headers`.
///
/// `body` must be the exact bytes received: re-serialized JSON would not match.
pub fn verify(
    forge: Forge,
    headers: &HeaderMap,
    body: &[u8],
    secret: &[u8],
) -> Result<(), SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::EmptySecret);
    }
    let (header, value) = header::find(headers, forge, Kind::Signature).ok_or(
        SignatureError::Missing(header::primary(forge, Kind::Signature)),
    )?;
    let malformed = |reason| SignatureError::Malformed { header, reason };
    let text = value
        .to_str()
        .map_err(|_| malformed("not printable ASCII"))?;
    let hex_digest = match forge {
        Forge::Github => text
            .strip_prefix("sha256=")
            .ok_or(malformed("expected a sha256= prefix"))?,
        Forge::Gitea | Forge::Forgejo => text,
    };
    if hex_digest.len() != DIGEST_LEN * 2 {
        return Err(malformed("expected 64 hex digits"));
    }
    let claimed = hex::decode(hex_digest).map_err(|_| malformed("not hexadecimal"))?;

    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    mac.verify_slice(&claimed)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    /// The known-answer vector from GitHub's "Validating webhook deliveries" page.
    const KAT_SECRET: &[u8] = b"It's a Secret to Everybody";
    const KAT_BODY: &[u8] = b"Hello, World!";
    const KAT_HEX: &str = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|&(name, value)| {
                (
                    http::HeaderName::from_static(name),
                    HeaderValue::from_str(value).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn github_known_answer_vector() {
        let h = headers(&[("x-hub-signature-256", &format!("sha256={KAT_HEX}"))]);
        assert_eq!(verify(Forge::Github, &h, KAT_BODY, KAT_SECRET), Ok(()));
    }

    #[test]
    fn gitea_and_forgejo_use_the_same_digest_without_prefix() {
        let h = headers(&[("x-gitea-signature", KAT_HEX)]);
        assert_eq!(verify(Forge::Gitea, &h, KAT_BODY, KAT_SECRET), Ok(()));
        let h = headers(&[("x-forgejo-signature", KAT_HEX)]);
        assert_eq!(verify(Forge::Forgejo, &h, KAT_BODY, KAT_SECRET), Ok(()));
    }

    #[test]
    fn forgejo_falls_back_to_the_gitea_header() {
        let h = headers(&[("x-gitea-signature", KAT_HEX)]);
        assert_eq!(verify(Forge::Forgejo, &h, KAT_BODY, KAT_SECRET), Ok(()));
        let h = headers(&[("x-forgejo-signature", ""), ("x-gitea-signature", KAT_HEX)]);
        assert_eq!(verify(Forge::Forgejo, &h, KAT_BODY, KAT_SECRET), Ok(()));
    }

    #[test]
    fn uppercase_hex_is_accepted() {
        let h = headers(&[("x-gitea-signature", &KAT_HEX.to_ascii_uppercase())]);
        assert_eq!(verify(Forge::Gitea, &h, KAT_BODY, KAT_SECRET), Ok(()));
        let h = headers(&[(
            "x-hub-signature-256",
            &format!("sha256={}", KAT_HEX.to_ascii_uppercase()),
        )]);
        assert_eq!(verify(Forge::Github, &h, KAT_BODY, KAT_SECRET), Ok(()));
    }

    #[test]
    fn tampered_body_or_wrong_secret_is_a_mismatch() {
        let h = headers(&[("x-gitea-signature", KAT_HEX)]);
        assert_eq!(
            verify(Forge::Gitea, &h, b"Hello, World?", KAT_SECRET),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Forge::Gitea, &h, KAT_BODY, b"another secret"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn absent_or_empty_header_is_missing() {
        assert_eq!(
            verify(Forge::Github, &HeaderMap::new(), KAT_BODY, KAT_SECRET),
            Err(SignatureError::Missing("X-Hub-Signature-256"))
        );
        let h = headers(&[("x-gitea-signature", "")]);
        assert_eq!(
            verify(Forge::Gitea, &h, KAT_BODY, KAT_SECRET),
            Err(SignatureError::Missing("X-Gitea-Signature"))
        );
        assert_eq!(
            verify(Forge::Forgejo, &h, KAT_BODY, KAT_SECRET),
            Err(SignatureError::Missing("X-Forgejo-Signature"))
        );
    }

    #[test]
    fn a_signature_for_another_forge_does_not_count() {
        let h = headers(&[("x-hub-signature-256", &format!("sha256={KAT_HEX}"))]);
        assert_eq!(
            verify(Forge::Gitea, &h, KAT_BODY, KAT_SECRET),
            Err(SignatureError::Missing("X-Gitea-Signature"))
        );
    }

    #[test]
    fn malformed_values_are_told_apart_from_mismatches() {
        let cases: &[(Forge, &'static str, String)] = &[
            (Forge::Gitea, "x-gitea-signature", "zz".repeat(32)),
            (Forge::Gitea, "x-gitea-signature", KAT_HEX[..62].to_owned()),
            (Forge::Gitea, "x-gitea-signature", format!("{KAT_HEX}00")),
            (
                Forge::Gitea,
                "x-gitea-signature",
                format!("sha256={KAT_HEX}"),
            ),
            (Forge::Github, "x-hub-signature-256", KAT_HEX.to_owned()),
            (
                Forge::Github,
                "x-hub-signature-256",
                format!("sha1={KAT_HEX}"),
            ),
            (
                Forge::Github,
                "x-hub-signature-256",
                format!("SHA256={KAT_HEX}"),
            ),
            (
                Forge::Github,
                "x-hub-signature-256",
                format!("sha256= {KAT_HEX}"),
            ),
        ];
        for (forge, name, value) in cases {
            let h = headers(&[(name, value)]);
            assert!(
                matches!(
                    verify(*forge, &h, KAT_BODY, KAT_SECRET),
                    Err(SignatureError::Malformed { .. })
                ),
                "{forge} {name}: {value}"
            );
        }
    }

    #[test]
    fn non_ascii_header_is_malformed() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-gitea-signature",
            HeaderValue::from_bytes("é".repeat(32).as_bytes()).unwrap(),
        );
        assert_eq!(
            verify(Forge::Gitea, &h, KAT_BODY, KAT_SECRET),
            Err(SignatureError::Malformed {
                header: "X-Gitea-Signature",
                reason: "not printable ASCII"
            })
        );
    }

    #[test]
    fn empty_secret_is_refused_even_with_a_matching_signature() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"").unwrap();
        mac.update(KAT_BODY);
        let forged = hex::encode(mac.finalize().into_bytes());
        let h = headers(&[("x-gitea-signature", &forged)]);
        assert_eq!(
            verify(Forge::Gitea, &h, KAT_BODY, b""),
            Err(SignatureError::EmptySecret)
        );
    }
}
