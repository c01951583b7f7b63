//! `RAIBID_<SECTION>_<FIELD>` overrides.
//!
//! Field names contain underscores too (`RAIBID_REDIS_STREAM_NAME`), so a variable is resolved
//! against the shape of the default configuration: the longest known key wins at each level.

use serde_yaml::{Mapping, Value};

use crate::{Config, ConfigError};

/// Variables under a section prefix that are not fields: the environment fallbacks of `raibid`
/// command-line options (clap `env = ...` in raibid-cli's `cli.rs`, which a test there keeps in
/// step with this list).
const NOT_FIELDS: &[&str] = &["RAIBID_UP_WEBHOOK_SECRET"];

/// Whether `var` is meant as a configuration override, and so must name a field.
///
/// Only `RAIBID_<SECTION>_*` is: raibid sets and reads other `RAIBID_*` variables itself (the
/// agent gives every CI step `RAIBID_JOB_ID`, `RAIBID_SHA`, ...; the CLI reads `RAIBID_CONFIG`,
/// `RAIBID_LOG`, `RAIBID_SERVER`, `RAIBID_TOKEN`), and a `raibid` command run inside a step must
/// not refuse to start because of them. A typo after a section prefix is still an error.
pub fn is_override_variable(var: &str) -> bool {
    let Some(rest) = var.strip_prefix("RAIBID_") else {
        return false;
    };
    if NOT_FIELDS.contains(&var) {
        return false;
    }
    let rest = rest.to_ascii_lowercase();
    section_names().any(|section| {
        rest.strip_prefix(section.as_str())
            .is_some_and(|tail| tail.starts_with('_'))
    })
}

/// The top-level keys of the configuration, taken from the defaults so a new section is
/// covered without editing a list.
fn section_names() -> impl Iterator<Item = String> {
    let shape = serde_yaml::to_value(Config::default()).expect("defaults serialize");
    let Value::Mapping(map) = shape else {
        unreachable!("Config serializes as a mapping")
    };
    map.into_iter()
        .filter_map(|(k, _)| k.as_str().map(str::to_owned))
}

pub(crate) fn apply_env(mut value: Value, vars: &[(String, String)]) -> Result<Value, ConfigError> {
    let shape = serde_yaml::to_value(Config::default()).expect("defaults serialize");
    for (var, raw) in vars {
        if !is_override_variable(var) {
            continue;
        }
        let Some(rest) = var.strip_prefix("RAIBID_") else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        let Some((path, leaf_shape)) = resolve(&shape, &lower) else {
            return Err(ConfigError::Env {
                var: var.clone(),
                message:
                    "does not name a configuration field (see `raibid config show` for the fields)"
                        .into(),
            });
        };
        let parsed = if matches!(leaf_shape, Value::String(_)) {
            Value::String(raw.clone())
        } else {
            serde_yaml::from_str(raw).map_err(|e| ConfigError::Env {
                var: var.clone(),
                message: format!("cannot parse {raw:?}: {e}"),
            })?
        };
        set(&mut value, &path, parsed);
        // Check the type right away so the error names this variable, not the whole tree.
        serde_yaml::from_value::<Config>(value.clone()).map_err(|e| ConfigError::Env {
            var: var.clone(),
            message: e.to_string(),
        })?;
    }
    Ok(value)
}

/// Splits `redis_stream_name` into `["redis", "stream_name"]` following the default tree.
fn resolve<'a>(shape: &'a Value, rest: &str) -> Option<(Vec<String>, &'a Value)> {
    let Value::Mapping(map) = shape else {
        return None;
    };
    let mut keys: Vec<&str> = map.keys().filter_map(Value::as_str).collect();
    keys.sort_by_key(|k| std::cmp::Reverse(k.len()));
    for key in keys {
        let child = &map[key];
        if rest == key {
            return Some((vec![key.to_owned()], child));
        }
        if let Some(tail) = rest.strip_prefix(key).and_then(|t| t.strip_prefix('_'))
            && let Some((mut path, leaf)) = resolve(child, tail)
        {
            path.insert(0, key.to_owned());
            return Some((path, leaf));
        }
    }
    None
}

fn set(value: &mut Value, path: &[String], leaf: Value) {
    if !matches!(value, Value::Mapping(_)) {
        *value = Value::Mapping(Mapping::new());
    }
    let Value::Mapping(map) = value else {
        unreachable!("made a mapping above")
    };
    let key = Value::String(path[0].clone());
    if path.len() == 1 {
        map.insert(key, leaf);
    } else {
        let child = map.entry(key).or_insert(Value::Null);
        set(child, &path[1..], leaf);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::load_from_str;

    fn with_env(text: &str, vars: &[(&str, &str)]) -> Result<crate::Config, crate::ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        load_from_str(text, Path::new("c.yaml"), &vars)
    }

    #[test]
    fn env_overrides_file() {
        let c = with_env(
            "redis:\n  stream_name: from-file\n",
            &[
                ("RAIBID_REDIS_STREAM_NAME", "from-env"),
                ("RAIBID_KEDA_POLLING_INTERVAL", "3"),
                ("RAIBID_AGENT_REGISTRY_INSECURE", "true"),
                ("RAIBID_AGENT_BUILDAH_ROOT", "/var/lib/containers/storage"),
                ("RAIBID_AGENT_BUILDAH_RUNROOT", "/run/containers/storage"),
                ("RAIBID_SERVER_ALLOWED_REPOS", "[\"a/*\", \"b/c\"]"),
            ],
        )
        .unwrap();
        assert_eq!(c.redis.stream_name, "from-env");
        assert_eq!(c.keda.polling_interval, 3);
        assert!(c.agent.registry.insecure);
        assert_eq!(c.agent.buildah_root, "/var/lib/containers/storage");
        assert_eq!(c.agent.buildah_runroot, "/run/containers/storage");
        assert_eq!(c.server.allowed_repos, vec!["a/*", "b/c"]);
    }

    #[test]
    fn numeric_looking_strings_stay_strings() {
        let c = with_env("", &[("RAIBID_REDIS_CONSUMER_GROUP", "123")]).unwrap();
        assert_eq!(c.redis.consumer_group, "123");
    }

    #[test]
    fn secrets_come_from_env() {
        let c = with_env("", &[("RAIBID_GITEA_TOKEN", "tok")]).unwrap();
        assert_eq!(c.gitea.token.expose(), "tok");
    }

    #[test]
    fn bad_env_names_the_variable() {
        let msg = with_env("", &[("RAIBID_KEDA_POLLING_INTERVAL", "soon")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("RAIBID_KEDA_POLLING_INTERVAL"), "{msg}");
        let msg = with_env("", &[("RAIBID_REDIS_NOPE", "x")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("RAIBID_REDIS_NOPE"), "{msg}");
    }

    #[test]
    fn loader_variables_are_not_fields() {
        assert!(with_env("", &[("RAIBID_CONFIG", "/x"), ("RAIBID_LOG", "debug")]).is_ok());
        // The API client's variables: `RAIBID_SERVER` is not the `server` section.
        assert!(
            with_env(
                "",
                &[("RAIBID_SERVER", "http://h:1"), ("RAIBID_TOKEN", "t")]
            )
            .is_ok()
        );
    }

    /// The agent's step variables and the CLI's option fallbacks are not configuration fields:
    /// a `raibid` command run inside a CI step must start.
    #[test]
    fn raibid_variables_outside_the_sections_are_ignored() {
        let c = with_env(
            "",
            &[
                ("RAIBID_JOB_ID", "j-1"),
                ("RAIBID_REPO", "acme/app"),
                ("RAIBID_SHA", "0000"),
                ("RAIBID_REF", "refs/heads/main"),
                ("RAIBID_EVENT", "push"),
                ("RAIBID_POOL", "default"),
                ("RAIBID_WORKSPACE", "/w"),
                ("RAIBID_ATTEMPT", "1"),
                ("RAIBID_BRANCH", "main"),
                ("RAIBID_TAG", "v1"),
                ("RAIBID_PULL_REQUEST", "3"),
                ("RAIBID_MATRIX", "{}"),
                ("RAIBID_TARGET_BRANCH", "main"),
                ("RAIBID_UP_WEBHOOK_SECRET", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c, crate::Config::default());
    }

    #[test]
    fn a_typo_after_a_section_prefix_is_still_an_error() {
        let msg = with_env("", &[("RAIBID_REDIS_URLL", "x")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("RAIBID_REDIS_URLL"), "{msg}");
        assert!(msg.contains("does not name a configuration field"), "{msg}");
        assert!(super::is_override_variable("RAIBID_UP_MAX_AGENTS"));
        assert!(super::is_override_variable("RAIBID_AGENT_REGISTRY_HOST"));
        assert!(!super::is_override_variable("RAIBID_UPX"));
    }
}
