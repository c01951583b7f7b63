//! The Secrets raibid-ci needs, created by `raibid setup` instead of living in git.
//!
//! Values come from the raibid configuration when it has them (the Redis password inside
//! `redis.url`, `server.webhook_secret`, `gitea.token`); otherwise a value already in the
//! cluster is kept, and only a missing one is generated. Running setup twice therefore changes
//! nothing, and a generated password is never rotated behind the pods' backs.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use raibid_config::Config;
use rand::Rng;
use rand::distr::Alphanumeric;

use crate::InfraError;
use crate::manifest::Manifest;

/// A Secret the manifests reference, and the labels it gets.
#[derive(Debug)]
pub struct SecretSpec {
    pub name: &'static str,
    pub keys: &'static [&'static str],
    /// `app.kubernetes.io/name` and `component` labels.
    pub app: &'static str,
    pub component: &'static str,
}

/// Redis's password, and the key repository secrets are sealed with in Redis
/// (`redis.secrets_key`): what every Redis client of raibid-ci (server, agents) needs.
pub const REDIS: SecretSpec = SecretSpec {
    name: "raibid-redis",
    keys: &["password", "secrets-key"],
    app: "redis",
    component: "queue",
};

pub const SERVER: SecretSpec = SecretSpec {
    name: "raibid-server",
    keys: &["webhook-secret", "gitea-token"],
    app: "raibid",
    component: "server",
};

pub const GITEA_ADMIN: SecretSpec = SecretSpec {
    name: "gitea-admin",
    keys: &["username", "password"],
    app: "gitea",
    component: "forge",
};

/// What agents need to push images to the registry and clone private repositories. The
/// ScaledJobs reference it with `optional: true`, so a cluster without it still builds (and
/// fails only at a push or clone that needs a login).
pub const AGENT_CREDENTIALS: SecretSpec = SecretSpec {
    name: "raibid-agent-credentials",
    keys: &[
        "registry-username",
        "registry-password",
        "pull-logins",
        "git-token",
    ],
    app: "raibid",
    component: "agent",
};

/// Which agent setting each key of [`AGENT_CREDENTIALS`] becomes in the pod (`RAIBID_*`
/// override), checked on every ScaledJob by validation.
pub const AGENT_CREDENTIAL_ENV: [(&str, &str); 4] = [
    ("RAIBID_AGENT_REGISTRY_USERNAME", "registry-username"),
    ("RAIBID_AGENT_REGISTRY_PASSWORD", "registry-password"),
    ("RAIBID_AGENT_PULL_LOGINS", "pull-logins"),
    ("RAIBID_AGENT_GIT_TOKEN", "git-token"),
];

pub const CATALOG: &[&SecretSpec] = &[&REDIS, &SERVER, &GITEA_ADMIN, &AGENT_CREDENTIALS];

/// Whether `raibid setup` creates key `key` of Secret `name`.
pub fn provides(name: &str, key: &str) -> bool {
    CATALOG
        .iter()
        .any(|s| s.name == name && s.keys.contains(&key))
}

pub fn catalog_summary() -> String {
    CATALOG
        .iter()
        .map(|s| format!("{}: {}", s.name, s.keys.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Where one key's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// From the raibid configuration (the field named here).
    Config { field: &'static str, value: String },
    /// The cluster's current value, or a new random one.
    KeepOrGenerate,
    /// The cluster's current value, or empty (a token only a person can create).
    KeepOrEmpty,
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config { field, .. } => write!(f, "from {field} in the configuration"),
            Self::KeepOrGenerate => f.write_str("kept if present, else generated (32 characters)"),
            Self::KeepOrEmpty => f.write_str("kept if present, else empty"),
        }
    }
}

/// Where each key of `spec` comes from, given `config`.
pub fn sources(
    spec: &SecretSpec,
    config: &Config,
) -> Result<Vec<(&'static str, KeySource)>, InfraError> {
    let redis_password = if spec.name == REDIS.name {
        in_cluster_redis_password(config.redis.url.expose())?
    } else {
        None
    };
    let from = |field: &'static str, value: &str, otherwise: KeySource| {
        if value.is_empty() {
            otherwise
        } else {
            KeySource::Config {
                field,
                value: value.to_owned(),
            }
        }
    };
    Ok(spec
        .keys
        .iter()
        .map(|key| {
            let source = match (spec.name, *key) {
                ("raibid-redis", "password") => from(
                    "redis.url",
                    redis_password.as_deref().unwrap_or_default(),
                    KeySource::KeepOrGenerate,
                ),
                ("raibid-redis", "secrets-key") => from(
                    "redis.secrets_key",
                    config.redis.secrets_key.expose(),
                    KeySource::KeepOrGenerate,
                ),
                ("raibid-server", "webhook-secret") => from(
                    "server.webhook_secret",
                    config.server.webhook_secret.expose(),
                    KeySource::KeepOrGenerate,
                ),
                ("raibid-server", "gitea-token") => from(
                    "gitea.token",
                    config.gitea.token.expose(),
                    KeySource::KeepOrEmpty,
                ),
                ("raibid-agent-credentials", "registry-username") => from(
                    "agent.registry.username",
                    &config.agent.registry.username,
                    KeySource::KeepOrEmpty,
                ),
                ("raibid-agent-credentials", "registry-password") => from(
                    "agent.registry.password",
                    config.agent.registry.password.expose(),
                    KeySource::KeepOrEmpty,
                ),
                ("raibid-agent-credentials", "pull-logins") => from(
                    "agent.pull_logins",
                    &pull_logins_text(config),
                    KeySource::KeepOrEmpty,
                ),
                ("raibid-agent-credentials", "git-token") => from(
                    "agent.git_token",
                    config.agent.git_token.expose(),
                    KeySource::KeepOrEmpty,
                ),
                ("gitea-admin", "username") => from(
                    "gitea.admin_user",
                    &config.gitea.admin_user,
                    KeySource::KeepOrGenerate,
                ),
                _ => KeySource::KeepOrGenerate,
            };
            (*key, source)
        })
        .collect())
}

/// `agent.pull_logins` as the agents' `RAIBID_AGENT_PULL_LOGINS` reads it (JSON is YAML), its
/// passwords in the clear as every value of a Secret is; empty when there are none.
fn pull_logins_text(config: &Config) -> String {
    let logins = &config.agent.pull_logins;
    if logins.is_empty() {
        return String::new();
    }
    let list: Vec<serde_json::Value> = logins
        .iter()
        .map(|l| {
            serde_json::json!({
                "host": l.host,
                "username": l.username,
                "password": l.password.expose(),
                "insecure": l.insecure,
            })
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

/// The password in `redis://[user]:password@host...`, if any, percent-decoded: a URL carries
/// `p/ss` as `p%2Fss`, while `redis-server --requirepass` and KEDA take the Secret's value
/// literally and clients decode the URL, so the encoded form would be a wrong password.
pub fn redis_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    let password = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
    (!password.is_empty()).then(|| percent_decode(password))
}

/// [`redis_password`] for the cluster, where the manifests compose
/// `RAIBID_REDIS_URL=redis://:$(REDIS_PASSWORD)@raibid-redis:6379` from the Secret without any
/// encoding (Kubernetes cannot encode): a password with a character a URL reserves would break
/// that URL, so it is refused here, before anything is applied.
fn in_cluster_redis_password(url: &str) -> Result<Option<String>, InfraError> {
    let password = redis_password(url);
    match &password {
        Some(p)
            if !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c)) =>
        {
            Err(InfraError::InvalidSetting {
                field: "redis.url",
                value: "(password not shown)".into(),
                expected: "a password of letters, digits and - . _ ~ only: the cluster's \
                           RAIBID_REDIS_URL is composed from the raw password, so it cannot \
                           carry one that needs percent-encoding (or leave the password out of \
                           redis.url and setup generates one)",
            })
        }
        _ => Ok(password),
    }
}

/// `%XX` sequences to bytes; anything else (a lone `%`, invalid hex) stays as it is, as URL
/// parsers leave it. Bytes that are not UTF-8 after decoding become U+FFFD: such a password is
/// refused for the cluster anyway (see [`in_cluster_redis_password`]).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The values to write, keeping what `existing` (the cluster's Secret data) already has.
pub fn resolve(
    sources: &[(&'static str, KeySource)],
    existing: Option<&BTreeMap<String, ByteString>>,
) -> BTreeMap<String, String> {
    let current = |key: &str| {
        existing
            .and_then(|data| data.get(key))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    sources
        .iter()
        .map(|(key, source)| {
            let value = match source {
                KeySource::Config { value, .. } => value.clone(),
                KeySource::KeepOrGenerate => current(key).unwrap_or_else(generate),
                KeySource::KeepOrEmpty => current(key).unwrap_or_default(),
            };
            ((*key).to_owned(), value)
        })
        .collect()
}

/// The keys whose value in `existing` (the cluster's Secret) `values` would change. None when
/// the Secret or the key does not exist yet: no pod can have started with a value of it.
pub fn changed_keys(
    existing: Option<&BTreeMap<String, ByteString>>,
    values: &BTreeMap<String, String>,
) -> Vec<String> {
    let Some(existing) = existing else {
        return Vec::new();
    };
    values
        .iter()
        .filter(|(key, value)| {
            existing
                .get(*key)
                .is_some_and(|old| old.0 != value.as_bytes())
        })
        .map(|(key, _)| key.clone())
        .collect()
}

/// A random URL-safe value (the Redis password ends up inside a `redis://` URL).
fn generate() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// The typed Secret object, labelled like everything else raibid deploys.
pub fn build(spec: &SecretSpec, namespace: &str, values: BTreeMap<String, String>) -> Manifest {
    let labels = [
        ("app.kubernetes.io/name", spec.app),
        ("app.kubernetes.io/component", spec.component),
        ("app.kubernetes.io/part-of", "raibid-ci"),
        ("app.kubernetes.io/managed-by", "raibid"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(spec.name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            values
                .into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    };
    Manifest::new(
        format!("(generated by raibid setup: {})", spec.name),
        serde_json::to_value(secret).expect("Secret serializes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_password_in_redis_urls() {
        assert_eq!(
            redis_password("redis://:pw@host:6379").as_deref(),
            Some("pw")
        );
        assert_eq!(
            redis_password("rediss://user:pw@host:6379/0").as_deref(),
            Some("pw")
        );
        assert_eq!(redis_password("redis://127.0.0.1:6379"), None);
        assert_eq!(redis_password("redis://:@host"), None);
    }

    #[test]
    fn the_password_is_stored_decoded() {
        // What redis-server --requirepass and KEDA compare with, and what a client sends after
        // decoding the URL: one string.
        assert_eq!(
            redis_password("redis://:p%2Fss%40x@host:6379").as_deref(),
            Some("p/ss@x")
        );
        assert_eq!(redis_password("redis://:a%41%zz%").as_deref(), None);
        assert_eq!(
            redis_password("redis://:a%41%zz%@h").as_deref(),
            Some("aA%zz%")
        );
        let mut config = Config::default();
        config.redis.url = raibid_config::Secret::new("redis://:p%41ss@x:6379");
        assert_eq!(
            resolve(&sources(&REDIS, &config).unwrap(), None)["password"],
            "pAss"
        );
        // The cluster composes its URL from the raw password, which must stay a valid URL.
        config.redis.url = raibid_config::Secret::new("redis://:p%2Fss@x:6379");
        let err = sources(&REDIS, &config).unwrap_err().to_string();
        assert!(
            err.starts_with("redis.url = \"(password not shown)\""),
            "{err}"
        );
        assert!(!err.contains("p%2Fss") && !err.contains("p/ss"), "{err}");
    }

    #[test]
    fn keeps_existing_values_and_generates_missing_ones() {
        let config = Config::default();
        let sources = sources(&REDIS, &config).unwrap();
        assert_eq!(
            sources,
            [
                ("password", KeySource::KeepOrGenerate),
                ("secrets-key", KeySource::KeepOrGenerate)
            ]
        );
        // A cluster set up before the secrets key existed keeps its password and gets a key.
        let existing = BTreeMap::from([("password".to_owned(), ByteString(b"old".to_vec()))]);
        let upgraded = resolve(&sources, Some(&existing));
        assert_eq!(upgraded["password"], "old");
        assert!(upgraded["secrets-key"].len() >= raibid_config::SECRETS_KEY_MIN_LEN);
        let fresh = resolve(&sources, None);
        assert_eq!(fresh["password"].len(), 32);
        assert_ne!(fresh, resolve(&sources, None), "two generations differ");
    }

    #[test]
    fn only_a_value_that_exists_and_differs_is_a_change() {
        let existing = BTreeMap::from([
            ("password".to_owned(), ByteString(b"old".to_vec())),
            ("other".to_owned(), ByteString(b"same".to_vec())),
        ]);
        let values = BTreeMap::from([
            ("password".to_owned(), "new".to_owned()),
            ("other".to_owned(), "same".to_owned()),
            ("added".to_owned(), "x".to_owned()),
        ]);
        assert_eq!(changed_keys(Some(&existing), &values), ["password"]);
        assert!(changed_keys(None, &values).is_empty());
        let kept = BTreeMap::from([("password".to_owned(), "old".to_owned())]);
        assert!(changed_keys(Some(&existing), &kept).is_empty());
    }

    #[test]
    fn configuration_wins_over_the_cluster() {
        let mut config = Config::default();
        config.redis.url = raibid_config::Secret::new("redis://:fromconfig@x:6379");
        config.server.webhook_secret = raibid_config::Secret::new("hook");
        config.redis.secrets_key = raibid_config::Secret::new("k".repeat(40));
        let existing = BTreeMap::from([
            ("password".to_owned(), ByteString(b"old".to_vec())),
            ("secrets-key".to_owned(), ByteString(b"old-key".to_vec())),
        ]);
        let redis = resolve(&sources(&REDIS, &config).unwrap(), Some(&existing));
        assert_eq!(redis["password"], "fromconfig");
        assert_eq!(redis["secrets-key"], "k".repeat(40));
        let server = resolve(&sources(&SERVER, &config).unwrap(), None);
        assert_eq!(server["webhook-secret"], "hook");
        assert_eq!(server["gitea-token"], "", "a token is never invented");
    }

    #[test]
    fn agent_credentials_come_from_the_agent_settings_and_are_never_invented() {
        let mut config = Config::default();
        let empty = resolve(&sources(&AGENT_CREDENTIALS, &config).unwrap(), None);
        assert!(empty.values().all(String::is_empty), "{empty:?}");
        config.agent.registry.username = "ci-bot".into();
        config.agent.registry.password = raibid_config::Secret::new("pkg-token");
        config.agent.git_token = raibid_config::Secret::new("git-token");
        let values = resolve(&sources(&AGENT_CREDENTIALS, &config).unwrap(), None);
        assert_eq!(values["registry-username"], "ci-bot");
        assert_eq!(values["registry-password"], "pkg-token");
        assert_eq!(values["git-token"], "git-token");
        assert_eq!(values["pull-logins"], "", "none configured");
        // The pull logins reach the pods' agents as the variable the manifests set.
        config.agent.pull_logins = vec![raibid_config::PullLogin {
            host: "docker.io".into(),
            username: "hub-bot".into(),
            password: raibid_config::Secret::new("dckr_pat_x"),
            insecure: false,
        }];
        let values = resolve(&sources(&AGENT_CREDENTIALS, &config).unwrap(), None);
        let vars = [(
            "RAIBID_AGENT_PULL_LOGINS".to_owned(),
            values["pull-logins"].clone(),
        )];
        let pod = raibid_config::load_from_str("", std::path::Path::new("c.yaml"), &vars).unwrap();
        assert_eq!(pod.agent.pull_logins, config.agent.pull_logins);
        for (_, key) in AGENT_CREDENTIAL_ENV {
            assert!(provides(AGENT_CREDENTIALS.name, key));
        }
    }

    #[test]
    fn secrets_are_typed_and_labelled() {
        let secret = build(
            &SERVER,
            "ci",
            BTreeMap::from([("gitea-token".into(), "t".into())]),
        );
        assert_eq!(secret.kind(), "Secret");
        assert_eq!(secret.namespace(), Some("ci"));
        assert_eq!(secret.object["data"]["gitea-token"], "dA==");
        assert_eq!(secret.label("app.kubernetes.io/part-of"), Some("raibid-ci"));
    }
}
