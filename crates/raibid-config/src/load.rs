use std::path::{Path, PathBuf};

use crate::Config;
use crate::env::apply_env;
use crate::field::{Field, scrub};

/// Where the configuration came from, for error messages and `raibid config show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    /// No file at the default path: defaults plus environment.
    Defaults,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// `serde_yaml` already names the key (`unknown field `x``, `invalid type ... for key`).
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    InvalidNoLocation { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{path}: {key}: {message}")]
    Semantic {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// `$RAIBID_CONFIG`, else `~/.config/raibid/config.yaml` (XDG_CONFIG_HOME respected).
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("RAIBID_CONFIG") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("raibid").join("config.yaml")
}

/// Loads `explicit` (must exist) or the default path (may be absent), then applies the
/// process environment.
pub fn load(explicit: Option<&Path>) -> Result<(Config, ConfigSource), ConfigError> {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let (path, must_exist) = match explicit {
        Some(p) => (p.to_path_buf(), true),
        None => (default_path(), std::env::var_os("RAIBID_CONFIG").is_some()),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let config = load_from_str(&text, &path, &vars)?;
            Ok((config, ConfigSource::File(path)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
            let config = load_from_str("", &path, &vars)?;
            Ok((config, ConfigSource::Defaults))
        }
        Err(error) => Err(ConfigError::Read { path, error }),
    }
}

/// Parses `text` as the file at `path`, then applies `vars` (`RAIBID_*` overrides).
pub fn load_from_str(
    text: &str,
    path: &Path,
    vars: &[(String, String)],
) -> Result<Config, ConfigError> {
    // Straight from the text, as `serde_yaml` reads a scalar for a string field as its literal
    // text (`version: 1.28`, `PIN: 0x1F`); going through a `serde_yaml::Value` would not.
    let mut config: Config = if text.trim().is_empty() {
        Config::default()
    } else {
        serde_yaml::from_str(text).map_err(|e| yaml_error(path, e))?
    };
    apply_env(&mut config, vars)?;
    lowercase_repo_secrets(&mut config, path)?;
    validate(&config, path)?;
    Ok(config)
}

/// Forges resolve `owner/name` case-insensitively, so a webhook may name `ACME/app` for the
/// repository configured as `acme/app`; keys are lowercased here and looked up lowercased.
/// Two keys that differ only in case would be one repository with two secrets: refused.
fn lowercase_repo_secrets(config: &mut Config, path: &Path) -> Result<(), ConfigError> {
    let secrets = std::mem::take(&mut config.server.repo_secrets);
    for (repo, secret) in secrets {
        let key = repo.to_ascii_lowercase();
        if config.server.repo_secrets.contains_key(&key) {
            return Err(ConfigError::Semantic {
                path: path.to_path_buf(),
                key: "server.repo_secrets".into(),
                message: format!(
                    "{repo:?} is listed twice (repository names are compared ignoring case)"
                ),
            });
        }
        config.server.repo_secrets.insert(key, secret);
    }
    Ok(())
}

fn yaml_error(path: &Path, e: serde_yaml::Error) -> ConfigError {
    let message = e.to_string();
    let message = if names_secret_key(&message) {
        scrub(&message)
    } else {
        message
    };
    let message = raibid_model::suggest::misspelt(&message).unwrap_or(message);
    match e.location() {
        Some(loc) => ConfigError::Invalid {
            path: path.to_path_buf(),
            line: loc.line(),
            column: loc.column(),
            message: strip_location(&message),
        },
        None => ConfigError::InvalidNoLocation {
            path: path.to_path_buf(),
            message,
        },
    }
}

/// Whether a `serde_yaml` message is about a secret-bearing key: it starts with the key's path
/// (`agent.secrets.PIN: invalid type ...`). Without a recognisable path, assume it is.
fn names_secret_key(message: &str) -> bool {
    let Some((key, _)) = message.split_once(": ") else {
        return true;
    };
    if key.contains(' ') {
        // Not a path but the message itself (`invalid type: ...` about the whole document).
        return Config::holds_secret(&[]);
    }
    let parts: Vec<&str> = key
        .split('.')
        .map(|part| part.split_once('[').map_or(part, |(name, _)| name))
        .collect();
    Config::holds_secret(&parts)
}

/// serde_yaml appends " at line L column C"; we print the location up front instead.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// The shortest `redis.secrets_key`: repository secrets' key is derived from it without
/// stretching, so it must be random already (raibid-queue's `SecretsKey` holds the same bound).
pub const SECRETS_KEY_MIN_LEN: usize = 32;

/// Artifact lifetimes in days stay under 100 years, as a pipeline's `expire_in` does: a date
/// further out overflows the clocks it passes through.
const MAX_ARTIFACTS_DAYS: u32 = 36_500;

fn validate(config: &Config, path: &Path) -> Result<(), ConfigError> {
    let semantic = |key: &str, message: String| ConfigError::Semantic {
        path: path.to_path_buf(),
        key: key.to_owned(),
        message,
    };
    for (i, rule) in config.server.pool_rules.iter().enumerate() {
        crate::repo_glob(&rule.repo)
            .map_err(|e| semantic(&format!("server.pool_rules[{i}].repo"), e.to_string()))?;
    }
    for (i, glob) in config.server.allowed_repos.iter().enumerate() {
        crate::repo_glob(glob)
            .map_err(|e| semantic(&format!("server.allowed_repos[{i}]"), e.to_string()))?;
    }
    for (i, glob) in config.agent.repos.iter().enumerate() {
        crate::repo_glob(glob)
            .map_err(|e| semantic(&format!("agent.repos[{i}]"), e.to_string()))?;
    }
    let names_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let mut token_names = std::collections::BTreeSet::new();
    for (i, token) in config.server.tokens.iter().enumerate() {
        let key = |field: &str| format!("server.tokens[{i}].{field}");
        // A bare hash has no name (the log names it by the hash).
        let named = !token.name.is_empty();
        if named && (!names_ok(&token.name) || token.name.len() > 64) {
            return Err(semantic(
                &key("name"),
                "use up to 64 letters, digits, '-', '_' or '.' (the server's log names the \
                 token by it)"
                    .into(),
            ));
        } else if named && !token_names.insert(token.name.to_ascii_lowercase()) {
            return Err(semantic(
                &key("name"),
                format!("{:?} names another token too", token.name),
            ));
        }
        if let Some(first) = config.server.tokens[..i]
            .iter()
            .position(|other| other.hash == token.hash)
        {
            return Err(semantic(
                &key("hash"),
                format!(
                    "the same token as server.tokens[{first}]: a token has one entry, or the \
                     first would decide what it may do"
                ),
            ));
        }
        if token.scopes.is_empty() {
            return Err(semantic(
                &key("scopes"),
                "list what it may do: read, jobs, secrets (leave scopes out for all)".into(),
            ));
        }
        if token.repos.is_empty() {
            return Err(semantic(
                &key("repos"),
                "list the repositories it may change, like [\"acme/*\"] (leave repos out for \
                 all)"
                    .into(),
            ));
        }
        for (j, glob) in token.repos.iter().enumerate() {
            crate::repo_glob(glob)
                .map_err(|e| semantic(&format!("server.tokens[{i}].repos[{j}]"), e.to_string()))?;
        }
    }
    if !names_ok(&config.redis.stream_name) {
        return Err(semantic(
            "redis.stream_name",
            "use letters, digits, '-', '_' or '.' (it prefixes Redis keys)".into(),
        ));
    }
    if !names_ok(&config.redis.consumer_group) {
        return Err(semantic(
            "redis.consumer_group",
            "use letters, digits, '-', '_' or '.'".into(),
        ));
    }
    let mut pull_hosts = std::collections::BTreeSet::new();
    for (i, login) in config.agent.pull_logins.iter().enumerate() {
        let key = |field: &str| format!("agent.pull_logins[{i}].{field}");
        let host_ok = !login.host.is_empty()
            && login
                .host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
        if !host_ok {
            return Err(semantic(
                &key("host"),
                format!(
                    "{:?} is not a registry host: give it as image names do, without a scheme \
                     or path (docker.io, ghcr.io, registry.example:5000)",
                    login.host
                ),
            ));
        }
        if !pull_hosts.insert(login.host.as_str()) {
            return Err(semantic(
                &key("host"),
                format!("{} has a login already: one per registry", login.host),
            ));
        }
        if login.username.is_empty() || login.password.expose().is_empty() {
            return Err(semantic(
                &key(if login.username.is_empty() {
                    "username"
                } else {
                    "password"
                }),
                "a login needs a username and a password (or access token)".into(),
            ));
        }
    }
    for (i, device) in config.agent.devices.iter().enumerate() {
        let path = std::path::Path::new(device);
        let plain = path.components().all(|c| {
            matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )
        });
        if !device.starts_with("/dev/") || !plain || device.contains(':') {
            return Err(semantic(
                &format!("agent.devices[{i}]"),
                format!(
                    "{device:?} is not a device node's path: give a path under /dev, such as \
                     /dev/kvm (the step gets it at the same path)"
                ),
            ));
        }
    }
    for (i, event) in config.server.cancel_superseded.iter().enumerate() {
        if !matches!(
            event,
            raibid_model::Event::Push | raibid_model::Event::PullRequest
        ) {
            return Err(semantic(
                &format!("server.cancel_superseded[{i}]"),
                format!(
                    "{event} builds are never superseded: only push and pull_request builds \
                     have a branch or pull request that a newer build replaces"
                ),
            ));
        }
    }
    if config.server.max_log_streams == 0 {
        return Err(semantic(
            "server.max_log_streams",
            "must be at least 1".into(),
        ));
    }
    if config.server.log_stream_max_secs == 0 {
        return Err(semantic(
            "server.log_stream_max_secs",
            "must be at least 1".into(),
        ));
    }
    let window = config.server.auth_failures_window_secs;
    if config.server.auth_failures_max > 0 && !(1..=86_400).contains(&window) {
        return Err(semantic(
            "server.auth_failures_window_secs",
            "1 to 86400 seconds (a day); to turn the limit off, set auth_failures_max to 0".into(),
        ));
    }
    if config.redis.max_attempts == 0 {
        return Err(semantic("redis.max_attempts", "must be at least 1".into()));
    }
    if config.redis.prune_memory_percent > 100 {
        return Err(semantic(
            "redis.prune_memory_percent",
            "a share of Redis's maxmemory: 1 to 100, or 0 to turn it off".into(),
        ));
    }
    let secrets_key = config.redis.secrets_key.expose();
    if !secrets_key.is_empty() && secrets_key.chars().count() < SECRETS_KEY_MIN_LEN {
        return Err(semantic(
            "redis.secrets_key",
            format!(
                "has {} characters; give at least {SECRETS_KEY_MIN_LEN} random ones (for \
                 example `head -c 24 /dev/urandom | base64`), or none to turn repository \
                 secrets off",
                secrets_key.chars().count()
            ),
        ));
    }
    for (i, previous) in config.redis.secrets_previous_keys.iter().enumerate() {
        let key = format!("redis.secrets_previous_keys[{i}]");
        if previous.expose().chars().count() < SECRETS_KEY_MIN_LEN {
            return Err(semantic(
                &key,
                format!(
                    "has {} characters; a key repository secrets were sealed with has at least \
                     {SECRETS_KEY_MIN_LEN}",
                    previous.expose().chars().count()
                ),
            ));
        }
        if secrets_key.is_empty() {
            return Err(semantic(
                &key,
                "previous keys are for rotating redis.secrets_key, which is empty: set the new \
                 key there"
                    .into(),
            ));
        }
    }
    validate_schedules(config, &semantic)?;
    for (key, days) in [
        (
            "agent.artifacts_expire_days",
            config.agent.artifacts_expire_days,
        ),
        (
            "agent.artifacts_max_expire_days",
            config.agent.artifacts_max_expire_days,
        ),
    ] {
        if days > MAX_ARTIFACTS_DAYS {
            return Err(semantic(
                key,
                format!(
                    "{days} days is over 100 years: use 0 to keep artifacts for ever (or, for \
                     the limit, to set none)"
                ),
            ));
        }
    }
    if config.agent.mirror_expire_days == 1 {
        return Err(semantic(
            "agent.mirror_expire_days",
            "1 day is shorter than a job may use its mirror (a day, and its clean-up): use 2 or \
             more, or 0 to keep mirrors for ever"
                .into(),
        ));
    }
    let cpus = config.agent.step_limits.cpus;
    if !cpus.is_finite() || cpus < 0.0 {
        return Err(semantic(
            "agent.step_limits.cpus",
            format!(
                "{cpus} is not a number of cores: write one such as 2 or 0.5, or 0 for no limit"
            ),
        ));
    }
    if config.agent.pools.is_empty() {
        return Err(semantic(
            "agent.pools",
            "an agent needs at least one pool".into(),
        ));
    }
    Ok(())
}

/// What serde cannot check field by field (names and expressions it does, with their line).
/// A schedule's variables follow a submission's rules, since the agent treats them alike.
fn validate_schedules(
    config: &Config,
    semantic: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    for (i, schedule) in config.server.schedules.iter().enumerate() {
        let key = |field: &str| format!("server.schedules[{i}].{field}");
        for (field, value) in [
            ("repo", &schedule.repo),
            ("clone_url", &schedule.clone_url),
            ("branch", &schedule.branch),
        ] {
            if value.trim().is_empty() || value.chars().any(|c| c.is_control()) {
                return Err(semantic(
                    &key(field),
                    "must not be empty or contain control characters".into(),
                ));
            }
        }
        if schedule.branch.starts_with("refs/") || schedule.branch.starts_with('-') {
            return Err(semantic(
                &key("branch"),
                format!(
                    "{:?}: the branch's short name (`main`, `release/1.x`), built as                      refs/heads/<branch>",
                    schedule.branch
                ),
            ));
        }
        for name in schedule.env.keys() {
            let word = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && name.bytes().next().is_some_and(|b| !b.is_ascii_digit());
            if !word {
                return Err(semantic(
                    &key(&format!("env.{name}")),
                    "variable names are letters, digits and '_', not starting with a digit".into(),
                ));
            }
            if name.starts_with("RAIBID_") {
                return Err(semantic(
                    &key(&format!("env.{name}")),
                    "names starting with RAIBID_ belong to the agent".into(),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        load_from_str(text, Path::new("/etc/raibid.yaml"), &[])
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.redis.stream_name, "ci-jobs");
        assert_eq!(c.redis.consumer_group, "ci-workers");
        assert_eq!(c.redis.maxlen, 100_000);
        assert_eq!(c.redis.max_attempts, 3);
    }

    #[test]
    fn repository_secrets_are_keyed_by_lowercased_name() {
        let c = parse("server:\n  repo_secrets:\n    ACME/App: s1\n    other/x: s2\n").unwrap();
        let keys: Vec<_> = c.server.repo_secrets.keys().map(String::as_str).collect();
        assert_eq!(keys, ["acme/app", "other/x"]);
        assert_eq!(c.server.repo_secrets["acme/app"].expose(), "s1");

        let err = parse("server:\n  repo_secrets:\n    acme/app: s1\n    ACME/app: s2\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.repo_secrets"), "{err}");
    }

    #[test]
    fn prune_memory_percent_is_a_share() {
        assert_eq!(parse("").unwrap().redis.prune_memory_percent, 80);
        assert_eq!(
            parse("redis:\n  prune_memory_percent: 0\n")
                .unwrap()
                .redis
                .prune_memory_percent,
            0
        );
        let err = parse("redis:\n  prune_memory_percent: 150\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("redis.prune_memory_percent"), "{err}");
    }

    #[test]
    fn pool_rules_ignore_case() {
        let c = parse("server:\n  pool_rules:\n    - repo: \"ml/*\"\n      pool: gpu\n").unwrap();
        assert_eq!(c.pool_for_repo("ML/Model").as_str(), "gpu");
        assert_eq!(c.pool_for_repo("other/x"), c.server.default_pool);
    }

    #[test]
    fn the_design_documents_example_loads() {
        let text = r#"
cluster:
  name: "dgx-spark-ci"
  namespace: "raibid-ci"
  kubeconfig: "~/.kube/config"
k3s:
  version: "v1.28.5+k3s1"
  data_dir: "/var/lib/rancher/k3s"
  rootless: false
gitea:
  url: "http://gitea.raibid-ci.svc.cluster.local:3000"
  admin_user: "admin"
  chart_version: "9.5.0"
redis:
  url: "redis://redis.raibid-ci.svc.cluster.local:6379"
  stream_name: "ci-jobs"
  consumer_group: "ci-workers"
keda:
  version: "2.12.0"
  polling_interval: 10
flux:
  version: "v2.2.0"
  git_repo: "http://gitea.raibid-ci.svc.cluster.local:3000/raibid/cluster-config"
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.k3s.version, "v1.28.5+k3s1");
        assert_eq!(c.keda.polling_interval, 10);
        assert_eq!(
            c.redis.url.expose(),
            "redis://redis.raibid-ci.svc.cluster.local:6379"
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = parse("redis:\n  stream_name: x\n  stream_nmae: y\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("/etc/raibid.yaml:3:"), "{msg}");
        assert!(
            msg.contains("unknown field `stream_nmae` (did you mean `stream_name`?), expected"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_section_is_an_error() {
        let msg = parse("redsi:\n  url: x\n").unwrap_err().to_string();
        assert!(msg.contains("/etc/raibid.yaml:1:"), "{msg}");
        assert!(
            msg.contains("unknown field `redsi` (did you mean `redis`?)"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_type_names_file_line_and_key() {
        let msg = parse("keda:\n  polling_interval: often\n")
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("/etc/raibid.yaml:2:"), "{msg}");
        assert!(msg.contains("polling_interval"), "{msg}");
    }

    #[test]
    fn up_s_redis_memory_limit_from_file_and_environment() {
        assert_eq!(
            parse("").unwrap().up.redis_maxmemory,
            crate::MemoryLimit::PercentOfMachine(10)
        );
        let c = parse("up:\n  redis_maxmemory: 2gb\n").unwrap();
        assert_eq!(c.up.redis_maxmemory, crate::MemoryLimit::Bytes(2 << 30));
        let c = with_env("", &[("RAIBID_UP_REDIS_MAXMEMORY", "none")]).unwrap();
        assert_eq!(c.up.redis_maxmemory, crate::MemoryLimit::None);
        let msg = parse("up:\n  cooldown_secs: 5\n  redis_maxmemory: 2 gigs\n")
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("/etc/raibid.yaml:3:"), "{msg}");
        assert!(
            msg.contains("redis_maxmemory") && msg.contains("not a memory limit"),
            "{msg}"
        );
    }

    #[test]
    fn trusted_proxies_take_addresses_and_networks() {
        let c = parse("server:\n  trusted_proxies: [10.0.0.0/8, \"::1\"]\n").unwrap();
        let shown: Vec<String> = c
            .server
            .trusted_proxies
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(shown, ["10.0.0.0/8", "::1"]);
        let msg = parse("server:\n  trusted_proxies:\n    - 10.0.0.1\n    - traefik\n")
            .unwrap_err()
            .to_string();
        // serde_yaml places errors of a list's values at the list.
        assert!(msg.starts_with("/etc/raibid.yaml:3:"), "{msg}");
        assert!(
            msg.contains("trusted_proxies") && msg.contains("\"traefik\""),
            "{msg}"
        );
    }

    #[test]
    fn syntax_error_has_location() {
        let msg = parse("redis: [unclosed\n").unwrap_err().to_string();
        assert!(msg.starts_with("/etc/raibid.yaml:"), "{msg}");
    }

    const SCHEDULES: &str = "server:\n  schedules:\n    - name: nightly\n      repo: acme/app\n      clone_url: https://git.example/acme/app.git\n      cron: \"0 3 * * *\"\n    - name: weekly\n      repo: acme/app\n      clone_url: https://git.example/acme/app.git\n      branch: release/1.x\n      cron: \"@weekly\"\n      pool: arm64\n      env: {FULL: \"1\"}\n";

    #[test]
    fn schedules_load_with_their_defaults() {
        let c = parse(SCHEDULES).unwrap();
        let [nightly, weekly] = &c.server.schedules[..] else {
            panic!("{:?}", c.server.schedules)
        };
        assert_eq!(nightly.name.as_str(), "nightly");
        assert_eq!(nightly.branch, "main");
        assert_eq!(nightly.cron.as_str(), "0 3 * * *");
        assert_eq!(nightly.pool, None);
        assert!(nightly.env.is_empty());
        assert_eq!(weekly.branch, "release/1.x");
        assert_eq!(weekly.pool.as_ref().map(|p| p.as_str()), Some("arm64"));
        assert_eq!(weekly.env["FULL"], "1");
        assert!(c.server.events.contains(&raibid_model::Event::Cron));
    }

    #[test]
    fn a_bad_cron_expression_names_file_line_and_key() {
        let text = SCHEDULES.replace("@weekly", "0 3 * *");
        let msg = parse(&text).unwrap_err().to_string();
        assert!(msg.starts_with("/etc/raibid.yaml:11:"), "{msg}");
        assert!(
            msg.contains("server.schedules[1].cron") && msg.contains("5"),
            "{msg}"
        );
        for bad in [
            "61 * * * *",
            "0 3 L * *",
            "@sometimes",
            "0 0 30 2 *",
            "0 3 * * xyz",
        ] {
            let text = SCHEDULES.replace("@weekly", bad);
            let msg = parse(&text).unwrap_err().to_string();
            assert!(
                msg.starts_with("/etc/raibid.yaml:11:") && msg.contains("schedules[1].cron"),
                "{bad}: {msg}"
            );
        }
    }

    #[test]
    fn a_duplicate_or_invalid_schedule_name_names_file_line_and_key() {
        let text = SCHEDULES.replace("name: weekly", "name: nightly");
        let msg = parse(&text).unwrap_err().to_string();
        assert!(msg.starts_with("/etc/raibid.yaml:7:"), "{msg}");
        assert!(
            msg.contains("server.schedules[1]") && msg.contains("\"nightly\" is used twice"),
            "{msg}"
        );
        let text = SCHEDULES.replace("name: weekly", "name: Weekly");
        let msg = parse(&text).unwrap_err().to_string();
        assert!(msg.starts_with("/etc/raibid.yaml:7:"), "{msg}");
        assert!(msg.contains("server.schedules[1].name"), "{msg}");
    }

    #[test]
    fn schedule_fields_are_checked() {
        let msg = parse(&SCHEDULES.replace("FULL", "RAIBID_SHA"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("server.schedules[1].env.RAIBID_SHA"), "{msg}");
        let msg = parse(&SCHEDULES.replace("release/1.x", "refs/heads/x"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("server.schedules[1].branch"), "{msg}");
        let msg = parse(&SCHEDULES.replace(
            "      repo: acme/app\n      clone_url: https://git.example/acme/app.git\n      branch",
            "      branch",
        ))
        .unwrap_err()
        .to_string();
        assert!(msg.contains("missing field `repo`"), "{msg}");
    }

    #[test]
    fn schedules_come_from_the_environment_like_other_lists() {
        let list = "[{name: nightly, repo: a/b, clone_url: \"http://g/a/b\", cron: \"@daily\"}]";
        let c = with_env(SCHEDULES, &[("RAIBID_SERVER_SCHEDULES", list)]).unwrap();
        assert_eq!(c.server.schedules.len(), 1);
        assert_eq!(c.server.schedules[0].cron.as_str(), "@daily");
        assert_eq!(c.server.schedules[0].branch, "main");
        let twice = "[{name: n, repo: a/b, clone_url: u, cron: \"@daily\"}, {name: n, repo: a/b, clone_url: u, cron: \"@hourly\"}]";
        let msg = with_env("", &[("RAIBID_SERVER_SCHEDULES", twice)])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("RAIBID_SERVER_SCHEDULES") && msg.contains("used twice"),
            "{msg}"
        );
        let msg = with_env(
            "",
            &[(
                "RAIBID_SERVER_SCHEDULES",
                "[{name: n, repo: a/b, clone_url: u, cron: \"0 3\"}]",
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("RAIBID_SERVER_SCHEDULES") && msg.contains("cron"),
            "{msg}"
        );
    }

    #[test]
    fn limited_tokens_are_named_once_and_limited_sensibly() {
        let hash = crate::hash_token("t");
        let entry = |extra: &str| {
            format!("server:\n  tokens:\n    - name: bot\n      hash: {hash}\n{extra}")
        };
        let config = parse(&entry("      repos: [\"acme/*\"]\n")).unwrap();
        assert_eq!(config.server.tokens[0].repos, ["acme/*"]);
        for (extra, key, message) in [
            (
                "      scopes: []\n",
                "server.tokens[0].scopes",
                "leave scopes out",
            ),
            (
                "      repos: []\n",
                "server.tokens[0].repos",
                "leave repos out",
            ),
            ("      repos: [\"a/[\"]\n", "server.tokens[0].repos[0]", ""),
            (
                &format!("    - name: BOT\n      hash: {hash}\n") as &str,
                "server.tokens[1].name",
                "names another token",
            ),
        ] {
            let err = parse(&entry(extra)).unwrap_err().to_string();
            assert!(
                err.contains(key) && err.contains(message),
                "{extra:?}: {err}"
            );
        }
        let err = parse(&format!(
            "server:\n  tokens:\n    - {hash}\n    - name: bot\n      hash: {hash}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("server.tokens[1].hash") && err.contains("server.tokens[0]"),
            "{err}"
        );
        let err = parse(&format!(
            "server:\n  tokens:\n    - name: a b\n      hash: {hash}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("server.tokens[0].name"), "{err}");
    }

    #[test]
    fn artifact_lifetimes_stay_under_a_century() {
        let config = parse("agent:\n  artifacts_max_expire_days: 365\n").unwrap();
        assert_eq!(config.agent.artifacts_max_expire_days, 365);
        assert_eq!(config.agent.artifacts_expire_days, 30);
        for key in ["artifacts_expire_days", "artifacts_max_expire_days"] {
            let err = parse(&format!("agent:\n  {key}: 4294967295\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("agent.{key}")) && err.contains("over 100 years"),
                "{err}"
            );
        }
    }

    #[test]
    fn mirrors_expire_after_two_days_or_more() {
        assert_eq!(parse("").unwrap().agent.mirror_expire_days, 30);
        for days in [0, 2, 4_000_000_000] {
            let config = parse(&format!("agent:\n  mirror_expire_days: {days}\n")).unwrap();
            assert_eq!(config.agent.mirror_expire_days, days);
        }
        let err = parse("agent:\n  mirror_expire_days: 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("agent.mirror_expire_days") && err.contains("use 2 or more"),
            "{err}"
        );
    }

    #[test]
    fn a_secrets_key_is_long_or_absent() {
        assert!(parse("").unwrap().redis.secrets_key.is_empty());
        let key = "k".repeat(SECRETS_KEY_MIN_LEN);
        let config = parse(&format!("redis:\n  secrets_key: {key}\n")).unwrap();
        assert_eq!(config.redis.secrets_key.expose(), key);
        let err = parse("redis:\n  secrets_key: hunter2\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("redis.secrets_key") && err.contains("7 characters"),
            "{err}"
        );
        assert!(
            !err.contains("hunter2"),
            "the error must not show the key: {err}"
        );
        let rotating = parse(&format!(
            "redis:\n  secrets_key: {key}\n  secrets_previous_keys: [{}]\n",
            "p".repeat(40)
        ))
        .unwrap();
        assert_eq!(rotating.redis.secrets_previous_keys.len(), 1);
        let err = parse(&format!(
            "redis:\n  secrets_key: {key}\n  secrets_previous_keys: [short-one]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("redis.secrets_previous_keys[0]"), "{err}");
        assert!(!err.contains("short-one"), "{err}");
        let err = parse(&format!(
            "redis:\n  secrets_previous_keys: [{}]\n",
            "p".repeat(40)
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("set the new key there"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let msg = parse("server:\n  pool_rules:\n    - repo: \"a/[\"\n      pool: gpu\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("server.pool_rules[0].repo"), "{msg}");
        let msg = parse("redis:\n  stream_name: \"a b\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("redis.stream_name"), "{msg}");
        let msg = parse("server:\n  default_pool: GPU\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("invalid pool name"), "{msg}");
    }

    #[test]
    fn container_engine_read_from_the_file_and_the_environment() {
        use crate::ContainerEngineKind;
        assert_eq!(
            parse("{}").unwrap().agent.container_engine,
            ContainerEngineKind::Auto
        );
        let c = parse("agent:\n  container_engine: docker\n").unwrap();
        assert_eq!(c.agent.container_engine, ContainerEngineKind::Docker);
        let c = with_env(
            "agent:\n  container_engine: docker\n",
            &[("RAIBID_AGENT_CONTAINER_ENGINE", "podman")],
        )
        .unwrap();
        assert_eq!(c.agent.container_engine, ContainerEngineKind::Podman);
        let msg = parse("agent:\n  container_engine: containerd\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(":2:") && msg.contains("agent.container_engine"),
            "{msg}"
        );
    }

    #[test]
    fn step_limits_read_from_the_file_and_the_environment() {
        let c = parse("agent:\n  step_limits: {memory: 2gb, cpus: 1.5, pids: 512}\n").unwrap();
        assert_eq!(
            c.agent.step_limits.memory,
            crate::MemoryLimit::Bytes(2 << 30)
        );
        assert_eq!(c.agent.step_limits.cpus, 1.5);
        assert_eq!(c.agent.step_limits.pids, 512);
        assert!(c.agent.step_limits.any());
        assert!(!parse("{}").unwrap().agent.step_limits.any());
        let c = with_env(
            "agent:\n  step_limits: {pids: 512}\n",
            &[("RAIBID_AGENT_STEP_LIMITS_MEMORY", "25%")],
        )
        .unwrap();
        assert_eq!(
            c.agent.step_limits.memory,
            crate::MemoryLimit::PercentOfMachine(25)
        );
        assert_eq!(c.agent.step_limits.pids, 512);

        let msg = parse("agent:\n  step_limits:\n    cpus: -1\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("agent.step_limits.cpus"), "{msg}");
        let msg = parse("agent:\n  step_limits:\n    memory: lots\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(":3:") && msg.contains("agent.step_limits.memory"),
            "{msg}"
        );
    }

    #[test]
    fn pool_rules_first_match_wins() {
        let c = parse(
            "server:\n  default_pool: amd64\n  pool_rules:\n    - {repo: \"ml/*\", pool: gpu}\n    - {repo: \"*\", pool: arm64}\n",
        )
        .unwrap();
        assert_eq!(c.pool_for_repo("ml/model").as_str(), "gpu");
        assert_eq!(c.pool_for_repo("web/site").as_str(), "arm64");
    }

    fn with_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        load_from_str(text, Path::new("/etc/raibid.yaml"), &vars)
    }

    /// Unquoted scalars for string fields are their literal text, as in the file, also when
    /// overrides are applied on top.
    #[test]
    fn unquoted_scalars_for_strings_keep_their_text() {
        let text = "k3s: {version: 1.28}\nagent:\n  labels: {gpu: 1}\n  secrets: {PIN: 1234, HEX: 0x1F, T: true}\nserver: {webhook_secret: 123456789}\n";
        for vars in [&[][..], &[("RAIBID_KEDA_POLLING_INTERVAL", "3")][..]] {
            let c = with_env(text, vars).unwrap();
            assert_eq!(c.k3s.version, "1.28");
            assert_eq!(c.agent.labels["gpu"], "1");
            assert_eq!(c.agent.secrets["PIN"].expose(), "1234");
            assert_eq!(c.agent.secrets["HEX"].expose(), "0x1F");
            assert_eq!(c.agent.secrets["T"].expose(), "true");
            assert_eq!(c.server.webhook_secret.expose(), "123456789");
        }
        let c = with_env(
            "",
            &[
                ("RAIBID_AGENT_LABELS", "{gpu: 1, ver: 1.10}"),
                ("RAIBID_AGENT_SECRETS", "{PIN: 0x1F}"),
                ("RAIBID_K3S_VERSION", "1.28"),
            ],
        )
        .unwrap();
        assert_eq!(c.agent.labels["gpu"], "1");
        assert_eq!(c.agent.labels["ver"], "1.10");
        assert_eq!(c.agent.secrets["PIN"].expose(), "0x1F");
        assert_eq!(c.k3s.version, "1.28");
    }

    /// An override replaces one field and leaves the rest of the file as read.
    #[test]
    fn overrides_replace_single_fields() {
        let c = with_env(
            "agent:\n  registry: {host: r.example, password: pw}\n  labels: {a: b}\n",
            &[
                ("RAIBID_AGENT_REGISTRY_USERNAME", "ci"),
                ("RAIBID_AGENT_CONCURRENCY", "4"),
            ],
        )
        .unwrap();
        assert_eq!(c.agent.registry.host, "r.example");
        assert_eq!(c.agent.registry.username, "ci");
        assert_eq!(c.agent.registry.password.expose(), "pw");
        assert_eq!(c.agent.concurrency, 4);
        assert_eq!(c.agent.labels["a"], "b");
    }

    #[test]
    fn file_errors_name_the_file_even_with_overrides() {
        let msg = with_env(
            "keda:\n  polling_interval: often\n",
            &[("RAIBID_REDIS_STREAM_NAME", "s")],
        )
        .unwrap_err()
        .to_string();
        assert!(msg.starts_with("/etc/raibid.yaml:2:"), "{msg}");
        assert!(msg.contains("keda.polling_interval"), "{msg}");
    }

    #[test]
    fn file_errors_about_secrets_do_not_quote_them() {
        for text in [
            "agent:\n  secrets: hunter2\n",
            "server:\n  repo_secrets: hunter2\n",
            "server:\n  webhook_secret: {hunter2: 1}\n",
            "hunter2\n",
        ] {
            let msg = parse(text).unwrap_err().to_string();
            assert!(msg.starts_with("/etc/raibid.yaml:"), "{msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
        let msg = parse("agent:\n  secrets: hunter2\n")
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("/etc/raibid.yaml:2:"), "{msg}");
        assert!(msg.contains("agent.secrets"), "{msg}");
    }

    #[test]
    fn env_errors_about_secrets_do_not_quote_them() {
        for (var, raw) in [
            ("RAIBID_AGENT_SECRETS", "{A: hunter2"),
            ("RAIBID_AGENT_SECRETS", "hunter2"),
            ("RAIBID_AGENT_SECRETS", "{A: [hunter2]}"),
            ("RAIBID_SERVER_REPO_SECRETS", "{a/b: hunter2"),
            ("RAIBID_SERVER_REPO_SECRETS", "hunter2"),
            (
                "RAIBID_AGENT_REGISTRY",
                "{password: hunter2, insecure: maybe}",
            ),
            ("RAIBID_AGENT_REGISTRY", "hunter2"),
        ] {
            let msg = with_env("", &[(var, raw)]).unwrap_err().to_string();
            assert!(msg.contains(var), "{msg}");
            assert!(!msg.contains("hunter2"), "{var}={raw}: {msg}");
        }
        // Other variables keep the value in the message: it helps and is no secret.
        let msg = with_env("", &[("RAIBID_AGENT_LABELS", "gpu")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("\"gpu\""), "{msg}");
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let err = load(Some(Path::new("/nonexistent/raibid.yaml"))).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
    }

    #[test]
    fn reads_a_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "up:\n  max_agents: 7\n").unwrap();
        let (c, src) = load(Some(&path)).unwrap();
        assert_eq!(c.up.max_agents, 7);
        assert_eq!(src, ConfigSource::File(path));
    }

    #[test]
    fn log_stream_limits_must_allow_a_stream() {
        let c = parse("server:\n  max_log_streams: 2\n  log_stream_max_secs: 60\n").unwrap();
        assert_eq!(
            (c.server.max_log_streams, c.server.log_stream_max_secs),
            (2, 60)
        );
        for (text, key) in [
            ("server:\n  max_log_streams: 0\n", "server.max_log_streams"),
            (
                "server:\n  log_stream_max_secs: 0\n",
                "server.log_stream_max_secs",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn the_failed_authentication_window_is_bounded_while_it_is_on() {
        let c = parse("").unwrap();
        assert_eq!(
            (
                c.server.auth_failures_max,
                c.server.auth_failures_window_secs
            ),
            (20, 300)
        );
        let c = parse("server:\n  auth_failures_max: 0\n  auth_failures_window_secs: 0\n");
        assert_eq!(c.unwrap().server.auth_failures_max, 0);
        for text in [
            "server:\n  auth_failures_window_secs: 0\n",
            "server:\n  auth_failures_window_secs: 86401\n",
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains("server.auth_failures_window_secs"), "{err}");
        }
    }

    #[test]
    fn only_branch_and_pull_request_builds_can_be_superseded() {
        use raibid_model::Event;
        assert_eq!(
            parse("").unwrap().server.cancel_superseded,
            [Event::Push, Event::PullRequest],
            "Woodpecker's default"
        );
        assert!(
            parse("server:\n  cancel_superseded: []\n")
                .unwrap()
                .server
                .cancel_superseded
                .is_empty()
        );
        let err = parse("server:\n  cancel_superseded: [push, tag]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server.cancel_superseded[1]") && err.contains("tag builds"),
            "{err}"
        );
    }

    #[test]
    fn pull_logins_name_a_host_once_with_a_username_and_password() {
        let c = parse(
            "agent:\n  pull_logins:\n    - {host: docker.io, username: u, password: p}\n    \
             - {host: 'registry.example:5000', username: v, password: q}\n",
        )
        .unwrap();
        let hosts: Vec<_> = c
            .agent
            .pull_logins
            .iter()
            .map(|l| l.host.as_str())
            .collect();
        assert_eq!(hosts, ["docker.io", "registry.example:5000"]);
        assert_eq!(c.agent.pull_logins[0].password.expose(), "p");
        for (bad, key) in [
            (
                "{host: 'https://ghcr.io', username: u, password: p}",
                "[0].host",
            ),
            ("{host: ghcr.io/acme, username: u, password: p}", "[0].host"),
            ("{host: '', username: u, password: p}", "[0].host"),
            ("{host: ghcr.io, password: p}", "[0].username"),
            ("{host: ghcr.io, username: u}", "[0].password"),
            (
                "{host: ghcr.io, username: u, password: p, token: t}",
                "token",
            ),
        ] {
            let err = parse(&format!("agent:\n  pull_logins: [{bad}]\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
        let twice = "agent:\n  pull_logins:\n    - {host: ghcr.io, username: u, password: p}\n    \
                     - {host: ghcr.io, username: v, password: q}\n";
        let err = parse(twice).unwrap_err().to_string();
        assert!(
            err.contains("agent.pull_logins[1].host") && err.contains("one per"),
            "{err}"
        );
    }

    #[test]
    fn devices_are_paths_under_dev_and_gpus_none_or_all() {
        use crate::GpuMode;
        let c = parse("").unwrap();
        assert!(c.agent.devices.is_empty());
        assert_eq!(c.agent.gpus, GpuMode::None);
        let c = parse("agent:\n  devices: [/dev/kvm]\n  gpus: all\n").unwrap();
        assert_eq!(c.agent.devices, ["/dev/kvm"]);
        assert_eq!(c.agent.gpus, GpuMode::All);
        for bad in [
            "kvm",
            "/etc/shadow",
            "/dev/../etc/shadow",
            "/dev/kvm:/dev/kvm",
        ] {
            let err = parse(&format!("agent:\n  devices: [\"{bad}\"]\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("agent.devices[0]"), "{bad}: {err}");
        }
        let err = parse("agent:\n  gpus: some\n").unwrap_err().to_string();
        assert!(err.contains("gpus") && err.contains("all"), "{err}");
    }

    #[test]
    fn approvals_expire_after_thirty_days_unless_configured() {
        assert_eq!(parse("").unwrap().server.approval_expiry_days, 30);
        let c = parse("server:\n  approval_expiry_days: 0\n").unwrap();
        assert_eq!(c.server.approval_expiry_days, 0);
        let err = parse("server:\n  approval_expiry_days: -1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("approval_expiry_days"), "{err}");
    }

    #[test]
    fn approval_defaults_to_forks_and_names_bad_modes() {
        use crate::ApprovalMode;
        use raibid_model::Event;
        assert_eq!(parse("").unwrap().server.approval, ApprovalMode::Forks);
        for (text, mode) in [
            ("none", ApprovalMode::None),
            ("forks", ApprovalMode::Forks),
            ("pull_requests", ApprovalMode::PullRequests),
            ("all_events", ApprovalMode::AllEvents),
        ] {
            let c = parse(&format!("server:\n  approval: {text}\n")).unwrap();
            assert_eq!(c.server.approval, mode);
        }
        let err = parse("server:\n  approval: strangers\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server.approval") || err.contains("approval"),
            "{err}"
        );
        assert!(err.contains("all_events"), "lists the modes: {err}");

        let forks = ApprovalMode::Forks;
        assert!(forks.requires(Event::PullRequest, true));
        assert!(!forks.requires(Event::PullRequest, false));
        assert!(!forks.requires(Event::Push, true));
        assert!(ApprovalMode::PullRequests.requires(Event::PullRequest, false));
        assert!(!ApprovalMode::PullRequests.requires(Event::Tag, false));
        assert!(ApprovalMode::AllEvents.requires(Event::Push, false));
        assert!(!ApprovalMode::None.requires(Event::PullRequest, true));
    }
}
