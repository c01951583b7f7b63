//! Repository secrets: values a token holder sets for one repository, or for every repository
//! of an owner (`raibid secret set`), which those repositories' steps read by naming them in
//! `secrets:`, as on Woodpecker, Gitea Actions and GitHub.
//!
//! Each repository's secrets are one hash (`<prefix>:secrets:<owner/name>`), each owner's
//! another (`<prefix>:owner-secrets:<owner>`), lowercased as forges compare names: a field per
//! secret holding its value sealed with ChaCha20-Poly1305 under `redis.secrets_key`, which the
//! server (to seal) and the agents (to open) share. What that buys: a Redis dump, backup or
//! replica, or a client that may only read, holds no usable value. What it does not: anyone
//! who can write to the queue can make an agent run a job, and the agent holds the key
//! (SECURITY.md). The sealed bytes are bound to their repository or owner, name, events and
//! branches, so a value copied to another repository's hash, or given more events or
//! branches, no longer opens.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use raibid_model::{Event, RepoSecret, SecretScope};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::{Queue, QueueError, scripts};

/// As many as GitHub allows a repository; the hash is read whole at the start of every job.
pub const MAX_SECRETS_PER_REPO: usize = 100;

/// A value's bound (GitHub's is 48 KiB): keys, certificates and tokens fit, archives do not.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// The key repository secrets are sealed with, derived from `redis.secrets_key`.
#[derive(Clone)]
pub struct SecretsKey {
    key: Arc<LessSafeKey>,
    /// Names the key without revealing it, so a value sealed with another key is reported as
    /// such rather than as damaged.
    id: String,
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretsKey({})", self.id)
    }
}

impl SecretsKey {
    /// A shorter `redis.secrets_key` is refused: the key is derived from it, not stretched,
    /// so it must be random already (`raibid up` and `raibid setup` generate 32 characters
    /// drawn from 62, about 190 bits).
    pub const MIN_LEN: usize = 32;

    pub fn derive(secret: &str) -> Result<Self, QueueError> {
        if secret.chars().count() < Self::MIN_LEN {
            return Err(QueueError::InvalidSecret(format!(
                "redis.secrets_key has {} characters; it needs at least {} random ones \
                 (for example `head -c 24 /dev/urandom | base64`)",
                secret.chars().count(),
                Self::MIN_LEN
            )));
        }
        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"raibid-ci redis.secrets_key")
            .extract(secret.as_bytes());
        let okm = prk
            .expand(&[b"repository secrets v1"], &CHACHA20_POLY1305)
            .map_err(|_| QueueError::InvalidSecret("cannot derive the secrets key".into()))?;
        let key = LessSafeKey::new(UnboundKey::from(okm));
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            format!("raibid-ci secrets key id\n{secret}").as_bytes(),
        );
        Ok(Self {
            key: Arc::new(key),
            id: hex::encode(&digest.as_ref()[..6]),
        })
    }

    fn seal(&self, aad: &str, value: &str) -> Result<([u8; NONCE_LEN], Vec<u8>), QueueError> {
        // Random nonces: a repository's secrets are written by people, so even a long-lived
        // key seals far fewer than the 2^32 values after which 96-bit nonces might repeat.
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| {
            QueueError::InvalidSecret("the system's random generator failed".into())
        })?;
        let mut data = value.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut data,
            )
            .map_err(|_| QueueError::InvalidSecret("cannot seal the secret".into()))?;
        Ok((nonce, data))
    }

    fn open(&self, aad: &str, nonce: &[u8], mut data: Vec<u8>) -> Option<String> {
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut data)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

/// One secret as Redis holds it: what the API lists in the clear, the value sealed.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    events: Vec<Event>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    branches: Vec<String>,
    updated_at: DateTime<Utc>,
    /// Which key sealed it ([`SecretsKey`]'s id).
    key: String,
    nonce: String,
    sealed: String,
}

impl Stored {
    /// `value` sealed with `key`, bound to `scope`, `name`, `events` and `branches` as
    /// [`bound_to`] says.
    fn seal(
        key: &SecretsKey,
        scope: &SecretScope,
        name: &str,
        value: &str,
        events: Vec<Event>,
        branches: Vec<String>,
        updated_at: DateTime<Utc>,
    ) -> Result<Self, QueueError> {
        let (nonce, sealed) = key.seal(&bound_to(scope, name, &events, &branches), value)?;
        Ok(Self {
            events,
            branches,
            updated_at,
            key: key.id.clone(),
            nonce: hex::encode(nonce),
            sealed: hex::encode(sealed),
        })
    }

    /// As the hash's field holds it.
    fn to_json(&self) -> Result<String, QueueError> {
        serde_json::to_string(self)
            .map_err(|e| QueueError::Protocol(format!("encoding a secret: {e}")))
    }
}

/// What the seal binds a value to: moved to another repository, owner or name, or given
/// other events or branches, it no longer opens.
fn bound_to(scope: &SecretScope, name: &str, events: &[Event], branches: &[String]) -> String {
    let events: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
    let kind = match scope {
        SecretScope::Repo(_) => "repository",
        SecretScope::Owner(_) => "owner",
    };
    let mut bound = format!(
        "raibid-ci {kind} secret v1\n{}\n{name}\n{}",
        scope.name().to_ascii_lowercase(),
        events.join(",")
    );
    if !branches.is_empty() {
        // NUL separates: a glob may hold anything else.
        bound.push('\n');
        bound.push_str(&branches.join("\0"));
    }
    bound
}

/// A secret opened for a job.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenedSecret {
    pub value: String,
    pub events: Vec<Event>,
    /// Globs over pushed branches; empty: any (see `RepoSecret::branches`).
    pub branches: Vec<String>,
}

impl fmt::Debug for OpenedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedSecret")
            .field("value", &"***")
            .field("events", &self.events)
            .field("branches", &self.branches)
            .finish()
    }
}

/// Why a repository secret could not be opened; the job that names it fails saying so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unopenable {
    #[error("this agent has no redis.secrets_key to open repository secrets with")]
    NoKey,
    #[error(
        "it was sealed with another redis.secrets_key (key {sealed_with}, this agent's is \
         {ours}): give the server and the agents the same key, and set the secret again"
    )]
    OtherKey { sealed_with: String, ours: String },
    #[error("its sealed value does not open (changed in Redis?): set the secret again")]
    Damaged,
}

/// What [`Queue::reseal_secrets`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Sealed again with the current key.
    pub resealed: usize,
    /// Sealed with a key that is neither the current one nor a previous one, or damaged.
    pub unopenable: usize,
}

/// One of a job's secrets: whose it is, and its value or why it cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSecret {
    pub scope: SecretScope,
    pub opened: Result<OpenedSecret, Unopenable>,
}

/// The secrets of a job's repository and of its owner, by name: the repository's where both
/// have one.
pub type JobSecrets = BTreeMap<String, JobSecret>;

impl Queue {
    /// Sets the secret `name` of a repository or owner (sealed), readable by jobs of `events`
    /// (all if empty). Returns it as listed, and whether it is new (false: it replaced a
    /// value). Refused without `redis.secrets_key` ([`QueueError::SecretsOff`]) and for a
    /// repository or owner that has [`MAX_SECRETS_PER_REPO`] others already.
    pub async fn set_secret(
        &self,
        scope: &SecretScope,
        name: &str,
        value: &str,
        events: &[Event],
        branches: &[String],
    ) -> Result<(RepoSecret, bool), QueueError> {
        let key = self
            .options()
            .secrets_key
            .as_ref()
            .ok_or(QueueError::SecretsOff)?;
        if value.is_empty() || value.len() > MAX_SECRET_BYTES {
            return Err(QueueError::InvalidSecret(format!(
                "a secret's value has 1 to {MAX_SECRET_BYTES} bytes"
            )));
        }
        let mut events = events.to_vec();
        events.sort_by_key(|e| e.as_str());
        events.dedup();
        let mut branches = branches.to_vec();
        branches.sort();
        branches.dedup();
        let stored = Stored::seal(key, scope, name, value, events, branches, Utc::now())?;
        let json = stored.to_json()?;
        let mut invocation = scripts::SET_SECRET.prepare_invoke();
        invocation
            .key(self.keys.secrets(scope))
            .arg(name)
            .arg(json)
            .arg(MAX_SECRETS_PER_REPO);
        let created: i64 = self.conn.script(&invocation).await?;
        if created < 0 {
            return Err(QueueError::TooManySecrets {
                scope: scope.to_string(),
                limit: MAX_SECRETS_PER_REPO,
            });
        }
        let secret = RepoSecret {
            name: name.to_owned(),
            events: stored.events,
            branches: stored.branches,
            updated_at: stored.updated_at,
        };
        Ok((secret, created == 1))
    }

    /// The secrets of a repository or owner, by name, without their values.
    pub async fn secrets(&self, scope: &SecretScope) -> Result<Vec<RepoSecret>, QueueError> {
        Ok(self
            .stored_secrets(scope)
            .await?
            .into_iter()
            .map(|(name, stored)| RepoSecret {
                name,
                events: stored.events,
                branches: stored.branches,
                updated_at: stored.updated_at,
            })
            .collect())
    }

    /// Deletes one secret of a repository or owner; false if it had none of that name.
    pub async fn delete_secret(&self, scope: &SecretScope, name: &str) -> Result<bool, QueueError> {
        let deleted: i64 = self
            .conn
            .run(redis::cmd("HDEL").arg(self.keys.secrets(scope)).arg(name))
            .await?;
        Ok(deleted == 1)
    }

    /// The secrets of repository `repo` and of its owner, opened with this queue's key, for a
    /// job: each one that cannot be opened says why, and fails only a job that names it.
    pub async fn open_secrets(&self, repo: &str) -> Result<JobSecrets, QueueError> {
        let mut secrets = JobSecrets::new();
        let scopes = SecretScope::owner_of(repo)
            .into_iter()
            .chain([SecretScope::Repo(repo.to_owned())]);
        // The repository's come last, so they replace its owner's of the same name.
        for scope in scopes {
            for (name, stored) in self.stored_secrets(&scope).await? {
                let opened = self.open_secret(&scope, &name, &stored);
                secrets.insert(
                    name,
                    JobSecret {
                        scope: scope.clone(),
                        opened,
                    },
                );
            }
        }
        Ok(secrets)
    }

    fn open_secret(
        &self,
        scope: &SecretScope,
        name: &str,
        stored: &Stored,
    ) -> Result<OpenedSecret, Unopenable> {
        let options = self.options();
        let current = options.secrets_key.as_ref().ok_or(Unopenable::NoKey)?;
        let key = std::iter::once(current)
            .chain(&options.secrets_previous_keys)
            .find(|key| key.id == stored.key)
            .ok_or_else(|| Unopenable::OtherKey {
                sealed_with: stored.key.clone(),
                ours: current.id.clone(),
            })?;
        let aad = bound_to(scope, name, &stored.events, &stored.branches);
        match (hex::decode(&stored.nonce), hex::decode(&stored.sealed)) {
            (Ok(nonce), Ok(sealed)) => key.open(&aad, &nonce, sealed),
            _ => None,
        }
        .map(|value| OpenedSecret {
            value,
            events: stored.events.clone(),
            branches: stored.branches.clone(),
        })
        .ok_or(Unopenable::Damaged)
    }

    /// Seals again with `secrets_key` every secret sealed with one of
    /// `secrets_previous_keys`, so that the previous key can be dropped: run by the server's
    /// reaper until it has succeeded once. A value changed meanwhile (set again) is left as it
    /// now is; one no key opens is counted and left alone.
    pub async fn reseal_secrets(&self) -> Result<Resealed, QueueError> {
        let options = self.options();
        let current = options.secrets_key.as_ref().ok_or(QueueError::SecretsOff)?;
        let mut report = Resealed::default();
        if options.secrets_previous_keys.is_empty() {
            return Ok(report);
        }
        for (hash, scope) in self.secret_hashes().await? {
            let fields: HashMap<String, String> =
                self.conn.run(redis::cmd("HGETALL").arg(&hash)).await?;
            for (name, json) in fields {
                let Ok(stored) = serde_json::from_str::<Stored>(&json) else {
                    report.unopenable += 1;
                    continue;
                };
                if stored.key == current.id {
                    continue;
                }
                let Ok(opened) = self.open_secret(&scope, &name, &stored) else {
                    report.unopenable += 1;
                    continue;
                };
                let new = Stored::seal(
                    current,
                    &scope,
                    &name,
                    &opened.value,
                    stored.events,
                    stored.branches,
                    stored.updated_at,
                )?
                .to_json()?;
                let mut invocation = scripts::RESEAL_SECRET.prepare_invoke();
                invocation.key(&hash).arg(&name).arg(&json).arg(new);
                let swapped: i64 = self.conn.script(&invocation).await?;
                if swapped == 1 {
                    report.resealed += 1;
                }
            }
        }
        Ok(report)
    }

    /// Every secrets hash, with the scope its name says (lowercased, as the seal binds it).
    async fn secret_hashes(&self) -> Result<Vec<(String, SecretScope)>, QueueError> {
        let prefixes = [
            (self.keys.secrets(&SecretScope::Repo(String::new())), true),
            (self.keys.secrets(&SecretScope::Owner(String::new())), false),
        ];
        let mut hashes = Vec::new();
        for (prefix, repo) in prefixes {
            for name in self.conn.scan_prefixed(&prefix, "hash").await? {
                let scope = if repo {
                    SecretScope::Repo(name.clone())
                } else {
                    SecretScope::Owner(name.clone())
                };
                hashes.push((format!("{prefix}{name}"), scope));
            }
        }
        Ok(hashes)
    }

    async fn stored_secrets(
        &self,
        scope: &SecretScope,
    ) -> Result<BTreeMap<String, Stored>, QueueError> {
        let fields: HashMap<String, String> = self
            .conn
            .run(redis::cmd("HGETALL").arg(self.keys.secrets(scope)))
            .await?;
        fields
            .into_iter()
            .map(|(name, json)| {
                let stored = serde_json::from_str(&json)
                    .map_err(|e| QueueError::Protocol(format!("secret {name} of {scope}: {e}")))?;
                Ok((name, stored))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> SecretsKey {
        SecretsKey::derive(&s.repeat(32)).unwrap()
    }

    #[test]
    fn short_keys_are_refused() {
        let err = SecretsKey::derive("short").unwrap_err().to_string();
        assert!(err.contains("at least 32"), "{err}");
    }

    #[test]
    fn a_value_opens_only_where_it_was_sealed() {
        let k = key("a");
        let repo = |r: &str| SecretScope::Repo(r.to_owned());
        let aad = bound_to(&repo("acme/app"), "TOKEN", &[Event::Push], &[]);
        let (nonce, sealed) = k.seal(&aad, "s3cret-value").unwrap();
        assert!(!sealed.windows(12).any(|w| w == b"s3cret-value"));
        assert_eq!(
            k.open(&aad, &nonce, sealed.clone()).as_deref(),
            Some("s3cret-value")
        );
        // Case of the repository does not matter, as forges compare names ignoring it.
        assert!(
            k.open(
                &bound_to(&repo("ACME/App"), "TOKEN", &[Event::Push], &[]),
                &nonce,
                sealed.clone()
            )
            .is_some()
        );
        for other in [
            bound_to(&repo("acme/other"), "TOKEN", &[Event::Push], &[]),
            bound_to(&repo("acme/app"), "OTHER", &[Event::Push], &[]),
            bound_to(&repo("acme/app"), "TOKEN", &[], &[]),
            // An owner's secret is another kind, even of a same-named owner.
            bound_to(
                &SecretScope::Owner("acme/app".into()),
                "TOKEN",
                &[Event::Push],
                &[],
            ),
            // Nor does it open for any branch, once it was sealed for every one.
            bound_to(&repo("acme/app"), "TOKEN", &[Event::Push], &["*".into()]),
        ] {
            assert_eq!(k.open(&other, &nonce, sealed.clone()), None, "{other}");
        }
        assert_eq!(key("b").open(&aad, &nonce, sealed.clone()), None);
        let mut flipped = sealed;
        flipped[0] ^= 1;
        assert_eq!(k.open(&aad, &nonce, flipped), None);
    }

    #[test]
    fn keys_are_named_without_being_shown() {
        assert_eq!(key("a").id, key("a").id);
        assert_ne!(key("a").id, key("b").id);
        let shown = format!("{:?}", key("a"));
        assert!(!shown.contains("aaaa"), "{shown}");
    }
}
