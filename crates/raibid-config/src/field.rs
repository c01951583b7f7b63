//! Typed access to one field of the configuration tree by its path.
//!
//! `RAIBID_*` overrides replace single fields of the configuration read from the file. Merging
//! them as untyped `serde_yaml::Value`s and deserializing the result would re-type the file's
//! scalars: `version: 1.28` written for a string reads as the text `1.28` from the file but as
//! a float from a `Value` (and `0x1F` as 31). So the file is deserialized once from its text,
//! each override into a configuration of its own, and [`Field::overlay`] moves the one field
//! across. Secret-bearing paths are known here too, so errors about them can leave the value out.

use std::collections::BTreeMap;

use raibid_model::{Event, PoolName};

use crate::{
    AgentConfig, ApiToken, ApprovalMode, ClusterConfig, Config, ContainerEngineKind, CronExpr,
    ExecutorKind, FluxConfig, GiteaConfig, GpuMode, IpRange, K3sConfig, KedaConfig, MemoryLimit,
    PoolRule, PullLogin, RedisConfig, RegistryConfig, Schedule, ScheduleName, Secret, ServerConfig,
    StepLimits, UpConfig,
};

pub(crate) trait Field: Sized {
    /// Whether the value at `path` below this one is, or contains, a [`Secret`].
    fn holds_secret(path: &[&str]) -> bool;

    /// Replaces the field at `path` with the same field of `src`; false if `path` names none.
    fn overlay(&mut self, src: Self, path: &[&str]) -> bool;
}

/// Values an override replaces whole (the environment sets a list or map in one variable).
macro_rules! leaves {
    ($($ty:ty => $secret:expr),* $(,)?) => {$(
        impl Field for $ty {
            fn holds_secret(_: &[&str]) -> bool {
                $secret
            }

            fn overlay(&mut self, src: Self, path: &[&str]) -> bool {
                replace(self, src, path)
            }
        }
    )*};
}

leaves!(
    String => false,
    bool => false,
    u32 => false,
    u64 => false,
    f64 => false,
    Secret => true,
    PoolName => false,
    ExecutorKind => false,
    ApprovalMode => false,
    GpuMode => false,
    ContainerEngineKind => false,
    Event => false,
    ApiToken => false,
    IpRange => false,
    MemoryLimit => false,
    ScheduleName => false,
    CronExpr => false,
);

fn replace<T>(dst: &mut T, src: T, path: &[&str]) -> bool {
    if path.is_empty() {
        *dst = src;
    }
    path.is_empty()
}

impl<T: Field> Field for Vec<T> {
    /// Paths into a list carry an index (`pool_rules[0].repo`); the caller strips it.
    fn holds_secret(path: &[&str]) -> bool {
        T::holds_secret(path)
    }

    fn overlay(&mut self, src: Self, path: &[&str]) -> bool {
        replace(self, src, path)
    }
}

impl<T: Field> Field for Option<T> {
    fn holds_secret(path: &[&str]) -> bool {
        T::holds_secret(path)
    }

    fn overlay(&mut self, src: Self, path: &[&str]) -> bool {
        replace(self, src, path)
    }
}

impl<V: Field> Field for BTreeMap<String, V> {
    fn holds_secret(path: &[&str]) -> bool {
        V::holds_secret(path.get(1..).unwrap_or_default())
    }

    fn overlay(&mut self, src: Self, path: &[&str]) -> bool {
        replace(self, src, path)
    }
}

/// Structs: an override may name a field or (for nested structs) the whole struct. The
/// destructuring lists every field, so adding one without listing it here does not compile.
macro_rules! structs {
    ($($ty:ident { $($field:ident),* $(,)? })*) => {$(
        impl Field for $ty {
            fn holds_secret(path: &[&str]) -> bool {
                match path.split_first() {
                    None => false $(|| holds(|s: &$ty| &s.$field, &[]))*,
                    $(Some((&first, rest)) if first == stringify!($field) => {
                        holds(|s: &$ty| &s.$field, rest)
                    })*
                    Some(_) => false,
                }
            }

            fn overlay(&mut self, src: Self, path: &[&str]) -> bool {
                let Some((&first, rest)) = path.split_first() else {
                    *self = src;
                    return true;
                };
                let $ty { $($field),* } = src;
                $(if first == stringify!($field) {
                    return self.$field.overlay($field, rest);
                })*
                false
            }
        }
    )*};
}

/// `T::holds_secret` for the type of a field, named through an accessor.
fn holds<S, T: Field>(_field: fn(&S) -> &T, path: &[&str]) -> bool {
    T::holds_secret(path)
}

structs! {
    Config { cluster, k3s, gitea, redis, keda, flux, server, agent, up }
    ClusterConfig { name, namespace, kubeconfig }
    K3sConfig { version, data_dir, rootless, disable_traefik }
    GiteaConfig { url, admin_user, token, chart_version }
    RedisConfig {
        url, stream_name, consumer_group, maxlen, max_attempts, stale_after_secs, log_max_bytes,
        command_timeout_ms, retain_jobs, prune_memory_percent, secrets_key,
        secrets_previous_keys,
    }
    KedaConfig { version, polling_interval, max_replicas }
    FluxConfig { version, git_repo, branch, path }
    PoolRule { repo, pool }
    Schedule { name, repo, clone_url, branch, cron, pool, env }
    ServerConfig {
        listen, public_url, tokens, read_requires_token, webhook_secret, repo_secrets,
        allowed_repos, events, approval, approval_expiry_days, cancel_superseded, body_limit_bytes, max_log_streams,
        max_log_streams_per_client,
        log_stream_max_secs, trusted_proxies, auth_failures_max, auth_failures_window_secs,
        default_pool, pool_rules, pools, github_api_url, github_token, schedules,
    }
    RegistryConfig { host, username, password, insecure }
    AgentConfig {
        name, pools, repos, labels, executor, container_engine, step_user, workspace_dir, cache_dir, mirror_expire_days, job_cache_max_bytes,
        artifacts_max_bytes, artifacts_expire_days, artifacts_max_expire_days, buildah_root,
        buildah_runroot, buildah_prune_days, concurrency, idle_timeout_secs, grace_period_secs, heartbeat_interval_secs, network,
        git_token, registry, pull_logins, secrets, secret_repos, secrets_for_forks, step_limits,
        devices, gpus,
    }
    PullLogin { host, username, password, insecure }
    StepLimits { memory, cpus, pids }
    UpConfig {
        data_dir, max_agents, polling_interval_ms, cooldown_secs, redis_maxmemory, registry,
        registry_gc_interval_secs,
    }
}

/// Removes the offending value from a serde error message (`invalid type: string "hunter2",
/// expected a map` becomes `invalid type: string, expected a map`), for errors about
/// secret-bearing fields.
pub(crate) fn scrub(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    loop {
        let marker = ["invalid type: ", "invalid value: "]
            .iter()
            .filter_map(|m| rest.find(m).map(|i| (i, m.len())))
            .min();
        let Some((at, len)) = marker else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at + len]);
        rest = &rest[at + len..];
        // The value is quoted and may itself contain ", expected": the last one ends it.
        let end = rest.rfind(", expected").unwrap_or(rest.len());
        let kind = rest[..end]
            .split(['"', '`'])
            .next()
            .unwrap_or("")
            .trim_end();
        out.push_str(kind);
        rest = &rest[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_where_the_secrets_are() {
        assert!(Config::holds_secret(&[]));
        assert!(Config::holds_secret(&["redis", "url"]));
        assert!(Config::holds_secret(&["agent", "secrets"]));
        assert!(Config::holds_secret(&["agent", "secrets", "PIN"]));
        assert!(Config::holds_secret(&["server", "repo_secrets"]));
        assert!(Config::holds_secret(&["agent", "registry"]));
        assert!(Config::holds_secret(&["agent", "registry", "password"]));
        assert!(!Config::holds_secret(&["agent", "labels"]));
        assert!(!Config::holds_secret(&["server", "pool_rules", "repo"]));
        assert!(!Config::holds_secret(&["k3s"]));
        assert!(!Config::holds_secret(&["nope"]));
    }

    /// Every field of the defaults' shape can be set by path, so no override is lost.
    #[test]
    fn every_field_can_be_overlaid() {
        fn walk(value: &serde_yaml::Value, path: &mut Vec<String>) {
            if !path.is_empty() {
                let p: Vec<&str> = path.iter().map(String::as_str).collect();
                assert!(Config::default().overlay(Config::default(), &p), "{p:?}");
            }
            if let serde_yaml::Value::Mapping(map) = value {
                for (k, v) in map {
                    path.push(k.as_str().unwrap().to_owned());
                    walk(v, path);
                    path.pop();
                }
            }
        }
        walk(
            &serde_yaml::to_value(Config::default()).unwrap(),
            &mut Vec::new(),
        );
    }

    #[test]
    fn scrub_keeps_the_kind_but_not_the_value() {
        assert_eq!(
            scrub(r#"agent.secrets: invalid type: string "a, expected b", expected a map"#),
            "agent.secrets: invalid type: string, expected a map"
        );
        assert_eq!(
            scrub("invalid type: integer `5`, expected a string at line 1 column 1"),
            "invalid type: integer, expected a string at line 1 column 1"
        );
        assert_eq!(scrub("unknown field `x`"), "unknown field `x`");
    }
}
