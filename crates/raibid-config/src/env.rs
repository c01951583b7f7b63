//! `RAIBID_<SECTION>_<FIELD>` overrides.
//!
//! Field names contain underscores too (`RAIBID_REDIS_STREAM_NAME`), so a variable is resolved
//! against the shape of the default configuration: the longest known key wins at each level.

use serde::{Deserialize, de};
use serde_yaml::Value;

use crate::field::{Field, scrub};
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
    is_override_in(&default_shape(), var)
}

/// [`is_override_variable`] against the defaults' shape, which callers checking many variables
/// build once: a section is a top-level key, so a new section is covered without editing a list.
fn is_override_in(shape: &Value, var: &str) -> bool {
    let Some(rest) = var.strip_prefix("RAIBID_") else {
        return false;
    };
    if NOT_FIELDS.contains(&var) {
        return false;
    }
    let rest = rest.to_ascii_lowercase();
    let Value::Mapping(sections) = shape else {
        unreachable!("Config serializes as a mapping")
    };
    sections.keys().filter_map(Value::as_str).any(|section| {
        rest.strip_prefix(section)
            .is_some_and(|tail| tail.starts_with('_'))
    })
}

fn default_shape() -> Value {
    serde_yaml::to_value(Config::default()).expect("defaults serialize")
}

/// Applies the override variables among `vars` to `config`, in order.
///
/// Each variable is deserialized on its own into its field's type, from its text exactly as
/// that text would be read in the file (or taken literally for a string field), so an error
/// names the variable and nothing else of the configuration is re-read.
pub(crate) fn apply_env(config: &mut Config, vars: &[(String, String)]) -> Result<(), ConfigError> {
    let shape = default_shape();
    for (var, raw) in vars {
        if !is_override_in(&shape, var) {
            continue;
        }
        let Some(rest) = var.strip_prefix("RAIBID_") else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        let env_error = |message: String| ConfigError::Env {
            var: var.clone(),
            message,
        };
        let Some((path, leaf_shape)) = resolve(&shape, &lower) else {
            return Err(env_error(
                "does not name a configuration field (see `raibid config show` for the fields)"
                    .into(),
            ));
        };
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let one = Config::deserialize(Nested {
            path: &path,
            raw,
            literal: matches!(leaf_shape, Value::String(_)),
        })
        .map_err(|e| {
            let message = e.to_string();
            if Config::holds_secret(&path) {
                env_error(secret_safe(&message, raw))
            } else {
                env_error(message)
            }
        })?;
        let moved = config.overlay(one, &path);
        debug_assert!(moved, "resolve() found {path:?} in the defaults");
    }
    Ok(())
}

/// An error message about a secret-bearing variable: without the offending value, and as a
/// last resort without any message at all if the value still shows through.
fn secret_safe(message: &str, raw: &str) -> String {
    let message = scrub(message);
    let raw = raw.trim();
    if !raw.is_empty() && message.contains(raw) {
        "cannot be parsed (the message is withheld: it would show the secret)".into()
    } else {
        message
    }
}

/// Presents `{path[0]: {path[1]: ... raw}}` to a `Deserialize` impl, so a variable's text goes
/// straight into its field's own type: `serde_yaml` reads it as it would the same text in the
/// file (`1.28` for a string is the text `1.28`), or, `literal`, the text itself is the string.
struct Nested<'a> {
    /// Not empty: an empty path is the leaf, deserialized in [`OneEntry::next_value_seed`].
    path: &'a [&'a str],
    raw: &'a str,
    literal: bool,
}

impl<'de> de::Deserializer<'de> for Nested<'de> {
    type Error = serde_yaml::Error;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_map(OneEntry { nested: Some(self) })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

/// The single `path[0]: ...` entry of a [`Nested`] mapping.
struct OneEntry<'a> {
    nested: Option<Nested<'a>>,
}

impl<'de> de::MapAccess<'de> for OneEntry<'de> {
    type Error = serde_yaml::Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some(nested) = &self.nested else {
            return Ok(None);
        };
        seed.deserialize(de::value::StrDeserializer::new(nested.path[0]))
            .map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let nested = self.nested.take().expect("a value follows its key");
        match &nested.path[1..] {
            [] if nested.literal => seed.deserialize(de::value::StrDeserializer::new(nested.raw)),
            [] => seed.deserialize(serde_yaml::Deserializer::from_str(nested.raw)),
            rest => seed.deserialize(Nested {
                path: rest,
                ..nested
            }),
        }
    }
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
    fn pull_logins_come_from_env_as_yaml_and_empty_is_none() {
        let c = with_env(
            "agent:\n  pull_logins: [{host: a.example, username: u, password: p}]\n",
            &[(
                "RAIBID_AGENT_PULL_LOGINS",
                "[{host: ghcr.io, username: bot, password: tok}]",
            )],
        )
        .unwrap();
        assert_eq!(c.agent.pull_logins.len(), 1);
        assert_eq!(c.agent.pull_logins[0].host, "ghcr.io");
        assert_eq!(c.agent.pull_logins[0].password.expose(), "tok");
        let c = with_env(
            "agent:\n  pull_logins: [{host: a.example, username: u, password: p}]\n",
            &[("RAIBID_AGENT_PULL_LOGINS", "")],
        )
        .unwrap();
        assert!(c.agent.pull_logins.is_empty());
        // A number is still no list, and another list is not given empty by an empty value.
        assert!(with_env("", &[("RAIBID_AGENT_PULL_LOGINS", "3")]).is_err());
        assert!(with_env("", &[("RAIBID_AGENT_POOLS", "")]).is_err());
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
