use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// An API token as stored in the configuration: `sha256:<hex>` of the token.
///
/// The server keeps only hashes, so a leaked config file does not leak working tokens.
/// Verification hashes the presented token and compares digests in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn parse(s: &str) -> Result<Self, String> {
        let hex_part = s.strip_prefix("sha256:").ok_or_else(|| {
            "token hash must look like sha256:<64 hex digits> (see `raibid token hash`)".to_owned()
        })?;
        let bytes = hex::decode(hex_part).map_err(|e| format!("token hash is not hex: {e}"))?;
        let digest: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "token hash must have 64 hex digits".to_owned())?;
        Ok(Self(digest))
    }

    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    pub fn matches(&self, presented: &str) -> bool {
        let candidate: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0.ct_eq(&candidate).into()
    }
}

/// The form to paste into `server.tokens`.
pub fn hash_token(token: &str) -> String {
    TokenHash::of(token).to_string()
}

impl fmt::Display for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for TokenHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        TokenHash::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_round_trips_and_matches_only_its_token() {
        let stored = TokenHash::parse(&hash_token("s3cret")).unwrap();
        assert!(stored.matches("s3cret"));
        assert!(!stored.matches("s3cret "));
        assert!(!stored.matches(""));
    }

    #[test]
    fn rejects_plain_tokens_in_config() {
        let err = TokenHash::parse("s3cret").unwrap_err();
        assert!(err.contains("sha256:"), "{err}");
        assert!(TokenHash::parse("sha256:abcd").is_err());
    }
}
