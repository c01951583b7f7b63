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

/// What a token may do. Reads need `read` only where `server.read_requires_token` is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenScope {
    /// Read jobs, logs, queues and schedules when reads need a token. Every token reads; this
    /// scope is for a token that does nothing else.
    Read,
    /// Submit, cancel, retry and approve jobs; run schedules.
    Jobs,
    /// Set, list and delete repositories' and owners' secrets.
    Secrets,
    /// Pause and resume pools (`raibid pool pause`): a hold on every repository's jobs in the
    /// pool, so it also takes a token for every repository (`repos: ["*"]`).
    Pools,
}

impl TokenScope {
    pub const ALL: [TokenScope; 4] = [
        TokenScope::Read,
        TokenScope::Jobs,
        TokenScope::Secrets,
        TokenScope::Pools,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Read => "read",
            TokenScope::Jobs => "jobs",
            TokenScope::Secrets => "secrets",
            TokenScope::Pools => "pools",
        }
    }
}

/// One entry of `server.tokens`: a bare hash (every scope, every repository), or a mapping
/// that names the token, for the server's log, and limits it, as Woodpecker's and Gitea's
/// tokens are limited to what their user may do:
///
/// ```yaml
/// tokens:
///   - sha256:...
///   - name: release-bot
///     hash: sha256:...
///     scopes: [jobs]        # read, jobs, secrets, pools; default: all
///     repos: ["acme/*"]     # globs over owner/name; default: every repository
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Empty for a bare hash: see [`ApiToken::name`].
    pub name: String,
    pub hash: TokenHash,
    pub scopes: Vec<TokenScope>,
    /// Globs over `owner/name` (case-insensitive) of the repositories whose jobs and secrets it
    /// may change, and, when reads need a token, whose jobs, logs and artifacts it may read.
    pub repos: Vec<String>,
}

impl ApiToken {
    /// A token that may do everything, as a bare hash in `server.tokens` may.
    pub fn unlimited(hash: TokenHash) -> Self {
        Self {
            name: String::new(),
            hash,
            scopes: TokenScope::ALL.to_vec(),
            repos: vec!["*".into()],
        }
    }

    /// What the server's log calls the token: its name, else the start of its hash, which is
    /// no secret (the configuration holds it) and stays the same wherever the entry moves.
    pub fn name(&self) -> String {
        if self.name.is_empty() {
            self.hash.to_string()[..15].to_owned()
        } else {
            self.name.clone()
        }
    }

    pub fn has_scope(&self, scope: TokenScope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Whether `repo` (`owner/name`) is one of the token's repositories.
    pub fn covers(&self, repo: &str) -> bool {
        self.covers_all()
            || self.repos.iter().any(|glob| {
                crate::repo_glob(glob).is_ok_and(|g| g.compile_matcher().is_match(repo))
            })
    }

    /// Whether the token is for every repository: its `repos` hold `*`.
    pub fn covers_all(&self) -> bool {
        self.repos
            .iter()
            .any(|glob| matches!(glob.as_str(), "*" | "**" | "*/*" | "**/*"))
    }

    /// Whether the token is for every repository of `owner`: `*` or `<owner>/*`.
    pub fn covers_owner(&self, owner: &str) -> bool {
        self.covers_all()
            || self.repos.iter().any(|glob| {
                glob.strip_suffix("/*")
                    .is_some_and(|o| o.eq_ignore_ascii_case(owner))
            })
    }

    fn is_unlimited(&self) -> bool {
        self.name.is_empty()
            && TokenScope::ALL.iter().all(|s| self.has_scope(*s))
            && self.repos.iter().any(|r| r == "*")
    }
}

impl From<TokenHash> for ApiToken {
    fn from(hash: TokenHash) -> Self {
        Self::unlimited(hash)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    hash: TokenHash,
    #[serde(default = "all_scopes")]
    scopes: Vec<TokenScope>,
    #[serde(default = "all_repos")]
    repos: Vec<String>,
}

fn all_scopes() -> Vec<TokenScope> {
    TokenScope::ALL.to_vec()
}

fn all_repos() -> Vec<String> {
    vec!["*".into()]
}

impl Serialize for ApiToken {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.is_unlimited() {
            return self.hash.serialize(serializer);
        }
        TokenEntry {
            name: self.name.clone(),
            hash: self.hash.clone(),
            scopes: self.scopes.clone(),
            repos: self.repos.clone(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ApiToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ApiTokenVisitor)
    }
}

struct ApiTokenVisitor;

impl<'de> serde::de::Visitor<'de> for ApiTokenVisitor {
    type Value = ApiToken;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a token's hash (sha256:<hex>, from `raibid token hash`), or a mapping with name, \
             hash, and optionally scopes and repos",
        )
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ApiToken, E> {
        TokenHash::parse(v)
            .map(ApiToken::unlimited)
            .map_err(E::custom)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<ApiToken, A::Error> {
        let entry = TokenEntry::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        Ok(ApiToken {
            name: entry.name,
            hash: entry.hash,
            scopes: entry.scopes,
            repos: entry.repos,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bare_hashes_or_limited_entries() {
        let hash = hash_token("s3cret");
        let yaml = format!(
            "- {hash}\n- name: bot\n  hash: {hash}\n  scopes: [jobs]\n  repos: [\"acme/*\"]\n\
             - name: all\n  hash: {hash}\n"
        );
        let tokens: Vec<ApiToken> = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(
            tokens[0],
            ApiToken::unlimited(TokenHash::parse(&hash).unwrap())
        );
        assert_eq!(tokens[0].name(), hash[..15]);
        assert_eq!(tokens[1].name(), "bot");
        assert_eq!(tokens[1].scopes, [TokenScope::Jobs]);
        assert_eq!(tokens[1].repos, ["acme/*"]);
        assert!(tokens[2].has_scope(TokenScope::Secrets) && tokens[2].repos == ["*"]);
        // What `config show` prints reads back the same.
        let shown = serde_yaml::to_string(&tokens).unwrap();
        assert!(shown.starts_with(&format!("- {hash}\n")), "{shown}");
        assert_eq!(
            serde_yaml::from_str::<Vec<ApiToken>>(&shown).unwrap(),
            tokens
        );
        for (bad, message) in [
            ("- s3cret\n", "sha256:"),
            ("- name: x\n", "missing field `hash`"),
            (&format!("- hash: {hash}\n") as &str, "missing field `name`"),
            (
                &format!("- name: x\n  hash: {hash}\n  scopes: [admin]\n"),
                "unknown variant `admin`",
            ),
            (
                &format!("- name: x\n  hash: {hash}\n  repo: [a/b]\n"),
                "unknown field `repo`",
            ),
        ] {
            let err = serde_yaml::from_str::<Vec<ApiToken>>(bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains(message), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_token_covers_its_repositories_in_any_case() {
        let mut token = ApiToken::unlimited(TokenHash::of("t"));
        assert!(token.covers("any/repo") && token.covers_owner("any"));
        token.repos = vec!["acme/*".into(), "other/app".into()];
        assert!(!token.covers_all());
        assert!(token.covers("acme/app") && token.covers("ACME/App"));
        assert!(token.covers("other/app") && !token.covers("other/lib"));
        assert!(!token.covers("acmex/app") && !token.covers("evil/acme/app"));
        assert!(token.covers_owner("ACME") && !token.covers_owner("other"));
        token.repos.clear();
        assert!(!token.covers("acme/app") && !token.covers_owner("acme"));
    }

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
