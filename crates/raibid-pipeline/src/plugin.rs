//! Woodpecker's plugin steps: a step with an `image` and no commands runs the image's own
//! entrypoint, configured by `settings:`, which the plugin reads as `PLUGIN_*` variables.
//!
//! The variables are made as Woodpecker makes them (its `ParamsToEnv`), so that a plugin's
//! documented settings work unchanged: `dry-run` and `dry.run` become `PLUGIN_DRY_RUN`; a
//! scalar becomes its text; a list of scalars its items joined with commas; anything else JSON
//! (keys sorted); `{ from_secret: NAME }` the secret's value, wherever it appears.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{self, Deserialize, Deserializer};
use serde_json::Value;

use crate::names;

const FROM_SECRET: &str = "from_secret";

/// The most `settings:` a step may have; the variables all go to one container.
pub const MAX_SETTINGS: usize = 100;

/// `settings:` of a plugin step, by the variable each becomes (`PLUGIN_<KEY>`); values as
/// written, with `{ from_secret: NAME }` kept for the agent, which alone knows secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings(BTreeMap<String, Value>);

impl Settings {
    /// The variables the settings give the plugin, with the values of secrets from `secret`
    /// (by name; `None`: not available to this job). An error names the setting and secret.
    pub fn env(
        &self,
        secret: &dyn Fn(&str) -> Option<String>,
    ) -> Result<BTreeMap<String, String>, String> {
        self.0
            .iter()
            .map(|(var, value)| {
                text(value, secret)
                    .map(|text| (var.clone(), text))
                    .map_err(|name| {
                        format!("setting {var}: secret {name} is not available to this job")
                    })
            })
            .collect()
    }

    /// Names of the secrets the settings use, for the agent to resolve (and mask).
    pub fn secrets(&self) -> BTreeSet<String> {
        self.secret_uses()
            .into_iter()
            .map(|(_, name)| name.to_owned())
            .collect()
    }

    /// Each secret the settings use, with the variable that holds it.
    pub fn secret_uses(&self) -> Vec<(&str, &str)> {
        let mut uses = Vec::new();
        for (var, value) in &self.0 {
            let mut names = BTreeSet::new();
            secrets_in(value, &mut names);
            uses.extend(names.into_iter().map(|name| (var.as_str(), name)));
        }
        uses
    }

    /// The variables the settings become.
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `PLUGIN_` and the key in capitals, `.` and `-` as `_`, as Woodpecker names it.
pub fn setting_var(key: &str) -> Result<String, String> {
    let var = format!(
        "PLUGIN_{}",
        key.replace(['.', '-'], "_").to_ascii_uppercase()
    );
    names::check_env_name(&var)
        .map(|()| var)
        .map_err(|_| format!("setting {key:?}: use letters, digits, '_', '-' and '.'"))
}

/// The secret named by a `{ from_secret: NAME }` mapping.
fn secret_name(value: &Value) -> Option<&str> {
    match value {
        Value::Object(map) => map.get(FROM_SECRET).and_then(Value::as_str),
        _ => None,
    }
}

fn secrets_in<'a>(value: &'a Value, names: &mut BTreeSet<&'a str>) {
    if let Some(name) = secret_name(value) {
        names.insert(name);
        return;
    }
    match value {
        Value::Array(items) => items.iter().for_each(|v| secrets_in(v, names)),
        Value::Object(map) => map.values().for_each(|v| secrets_in(v, names)),
        _ => {}
    }
}

/// A scalar's text: what Woodpecker gives a setting, or a list item, that is no structure.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null => Some(String::new()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

/// The variable's value; `Err` holds the name of a secret that `secret` does not have.
fn text(value: &Value, secret: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if let Some(name) = secret_name(value) {
        return secret(name).ok_or_else(|| name.to_owned());
    }
    if let Some(text) = scalar(value) {
        return Ok(text);
    }
    if let Value::Array(items) = value
        && let Some(texts) = items.iter().map(scalar).collect::<Option<Vec<_>>>()
    {
        return Ok(texts.join(","));
    }
    Ok(with_secrets(value, secret)?.to_string())
}

fn with_secrets(value: &Value, secret: &dyn Fn(&str) -> Option<String>) -> Result<Value, String> {
    if let Some(name) = secret_name(value) {
        return secret(name)
            .map(Value::String)
            .ok_or_else(|| name.to_owned());
    }
    Ok(match value {
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| with_secrets(v, secret))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), with_secrets(v, secret)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// A YAML value as JSON, `{ from_secret: NAME }` checked; `at` names it in errors.
fn json(value: serde_yaml::Value, at: &str) -> Result<Value, String> {
    use serde_yaml::Value as Y;
    Ok(match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into()
            } else if let Some(u) = n.as_u64() {
                u.into()
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| format!("{at}: {n} is no number JSON can hold; quote it"))?
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| json(v, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(mapping) => {
            let mut map = BTreeMap::new();
            for (key, value) in mapping {
                let Some(key) = key.as_str().map(str::to_owned) else {
                    return Err(format!("{at}: keys of a mapping must be text"));
                };
                let value = json(value, &format!("{at}.{key}"))?;
                map.insert(key, value);
            }
            if let Some(name) = map.get(FROM_SECRET) {
                let name = name
                    .as_str()
                    .ok_or_else(|| format!("{at}: `from_secret` takes the name of a secret"))?;
                names::check_env_name(name).map_err(|e| format!("{at}: {e}"))?;
                if map.len() > 1 {
                    return Err(format!(
                        "{at}: `{{ from_secret: NAME }}` stands alone; move the other keys out"
                    ));
                }
            }
            // Sorted, as Woodpecker's JSON has them, whatever order serde_json keeps.
            Value::Object(map.into_iter().collect())
        }
        Y::Tagged(tagged) => {
            return Err(format!(
                "{at}: YAML tags ({}) are not read; write the value plainly",
                tagged.tag
            ));
        }
    })
}

impl<'de> Deserialize<'de> for Settings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut value = serde_yaml::Value::deserialize(deserializer)?;
        value.apply_merge().map_err(de::Error::custom)?;
        let serde_yaml::Value::Mapping(mapping) = value else {
            return Err(de::Error::custom(
                "`settings` is a mapping of the plugin's settings, like `{ repo: acme/app }`",
            ));
        };
        if mapping.len() > MAX_SETTINGS {
            return Err(de::Error::custom(format!(
                "{} settings; at most {MAX_SETTINGS}",
                mapping.len()
            )));
        }
        let mut settings = BTreeMap::new();
        let mut keys: BTreeMap<String, String> = BTreeMap::new();
        for (key, value) in mapping {
            let Some(key) = key.as_str().map(str::to_owned) else {
                return Err(de::Error::custom("setting names must be text"));
            };
            let var = setting_var(&key).map_err(de::Error::custom)?;
            if let Some(earlier) = keys.insert(var.clone(), key.clone()) {
                return Err(de::Error::custom(format!(
                    "settings {earlier:?} and {key:?} are both {var}; keep one"
                )));
            }
            // Woodpecker leaves out a setting without a value.
            if value.is_null() {
                continue;
            }
            let value = json(value, &format!("setting {key:?}")).map_err(de::Error::custom)?;
            settings.insert(var, value);
        }
        Ok(Settings(settings))
    }
}

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vars: Vec<&str> = self.vars().collect();
        f.write_str(&vars.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(yaml: &str) -> Result<Settings, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    fn secrets(name: &str) -> Option<String> {
        match name {
            "secret_token" => Some("FooBar".into()),
            "cb_password" => Some("geheim".into()),
            _ => None,
        }
    }

    /// Woodpecker's own cases (its params_test.go), for the same variables.
    #[test]
    fn settings_become_the_variables_woodpecker_gives() {
        let s = settings(
            "skip: ~\nstring: stringz\nint: 1\nfloat: 1.2\nbool: true\nslice: [1, 2, 3]\n\
             my_secret:\n  from_secret: secret_token\n\
             map:\n  key: \"value\"\n  entry2:\n    - \"a\"\n    - \"b\"\n    - 3\n  \
             secret:\n    from_secret: secret_token\n\
             list.map:\n  - registry: https://codeberg.org\n    username: \"6543\"\n    \
             password:\n      from_secret: cb_password\n\
             from.address: noreply@example.com\ndry-run: false\ntags: [next, latest]\n\
             holes: [a, ~]\nnested: [copy a b, {foo: ~}]\n",
        )
        .unwrap();
        let env = s.env(&secrets).unwrap();
        let want = BTreeMap::from([
            ("PLUGIN_STRING", "stringz"),
            ("PLUGIN_INT", "1"),
            ("PLUGIN_FLOAT", "1.2"),
            ("PLUGIN_BOOL", "true"),
            ("PLUGIN_SLICE", "1,2,3"),
            ("PLUGIN_MY_SECRET", "FooBar"),
            (
                "PLUGIN_MAP",
                r#"{"entry2":["a","b",3],"key":"value","secret":"FooBar"}"#,
            ),
            (
                "PLUGIN_LIST_MAP",
                r#"[{"password":"geheim","registry":"https://codeberg.org","username":"6543"}]"#,
            ),
            ("PLUGIN_FROM_ADDRESS", "noreply@example.com"),
            ("PLUGIN_DRY_RUN", "false"),
            ("PLUGIN_TAGS", "next,latest"),
            ("PLUGIN_HOLES", "a,"),
            ("PLUGIN_NESTED", r#"["copy a b",{"foo":null}]"#),
        ]);
        let got: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(got, want);
        assert_eq!(
            s.secrets().into_iter().collect::<Vec<_>>(),
            ["cb_password", "secret_token"]
        );
    }

    #[test]
    fn a_missing_secret_is_named_with_its_setting() {
        let s = settings("map:\n  secret:\n    from_secret: nope\n").unwrap();
        assert_eq!(
            s.env(&secrets).unwrap_err(),
            "setting PLUGIN_MAP: secret nope is not available to this job"
        );
    }

    #[test]
    fn what_cannot_become_a_variable_is_refused() {
        for (yaml, says) in [
            ("[a, b]\n", "`settings` is a mapping"),
            ("\"a b\": 1\n", "setting \"a b\": use letters"),
            ("dry-run: 1\ndry_run: 2\n", "both PLUGIN_DRY_RUN"),
            ("t:\n  from_secret: [x]\n", "takes the name of a secret"),
            ("t:\n  from_secret: \"a b\"\n", "not a valid variable name"),
            ("t:\n  from_secret: x\n  other: 1\n", "stands alone"),
            ("t: !custom 1\n", "YAML tags"),
            ("t: .nan\n", "no number JSON can hold"),
            ("t:\n  1: x\n", "keys of a mapping must be text"),
        ] {
            let err = settings(yaml).unwrap_err();
            assert!(err.contains(says), "{yaml:?}: {err}");
        }
    }

    #[test]
    fn merge_keys_are_applied() {
        let s = settings("base: &b {a: 1}\nt:\n  <<: *b\n  c: 2\n").unwrap();
        assert_eq!(s.env(&secrets).unwrap()["PLUGIN_T"], r#"{"a":1,"c":2}"#);
    }
}
