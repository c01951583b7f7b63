//! Serde building blocks that keep error positions exact.
//!
//! serde_yaml stamps a custom error with the position of the value whose `deserialize_*` call was
//! running when the error was raised, and it keeps the innermost stamp. A check made *after*
//! `Deserialize::deserialize` returns would therefore be reported at the parent's position (for a
//! step, at the start of the whole `steps:` list). So every check here runs *inside* a visitor:
//! scalar checks inside `visit_str` (reported at the scalar), whole-mapping checks inside
//! `visit_map` (reported at the mapping's first key) and whole-list checks inside `visit_seq`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::merge::MergeKeys;
use crate::names;

/// Runs `check` on a string scalar.
///
/// Numbers and booleans reach `visit_str` as their source text (serde_yaml's `deserialize_str`
/// does that), so `RUST: 1.80` stays `"1.80"` rather than becoming the float `1.8`.
pub(crate) struct StrCheck<F> {
    expecting: &'static str,
    check: F,
}

impl<F> StrCheck<F> {
    pub(crate) fn new(expecting: &'static str, check: F) -> Self {
        Self { expecting, check }
    }
}

impl<'de, T, F> DeserializeSeed<'de> for StrCheck<F>
where
    F: FnOnce(&str) -> Result<T, String>,
{
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, T, F> Visitor<'de> for StrCheck<F>
where
    F: FnOnce(&str) -> Result<T, String>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.check)(v).map_err(E::custom)
    }
}

/// Deserializes `R` from a mapping, then turns it into `T` with `check` while the mapping is
/// still being visited, so a failed check points at the mapping's first key.
pub(crate) struct CheckedMap<R, F> {
    expecting: &'static str,
    check: F,
    raw: PhantomData<R>,
}

impl<R, F> CheckedMap<R, F> {
    pub(crate) fn new(expecting: &'static str, check: F) -> Self {
        Self {
            expecting,
            check,
            raw: PhantomData,
        }
    }
}

impl<'de, R, T, F> DeserializeSeed<'de> for CheckedMap<R, F>
where
    R: de::Deserialize<'de>,
    F: FnOnce(R) -> Result<T, String>,
{
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, R, T, F> Visitor<'de> for CheckedMap<R, F>
where
    R: de::Deserialize<'de>,
    F: FnOnce(R) -> Result<T, String>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        let raw = R::deserialize(MapAccessDeserializer::new(MergeKeys::new(map)))?;
        (self.check)(raw).map_err(de::Error::custom)
    }
}

/// A single string or a list of strings, each checked by `item`; an empty list is refused
/// because a filter that can never match is almost certainly a mistake.
#[derive(Clone, Copy)]
pub(crate) struct OneOrMany<F> {
    expecting: &'static str,
    empty: &'static str,
    item: F,
}

impl<F> OneOrMany<F> {
    pub(crate) fn new(expecting: &'static str, empty: &'static str, item: F) -> Self {
        Self {
            expecting,
            empty,
            item,
        }
    }
}

impl<'de, T, F> DeserializeSeed<'de> for OneOrMany<F>
where
    F: Fn(&str) -> Result<T, String> + Copy,
{
    type Value = Vec<T>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<T>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, T, F> Visitor<'de> for OneOrMany<F>
where
    F: Fn(&str) -> Result<T, String> + Copy,
{
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<T>, E> {
        (self.item)(v).map(|one| vec![one]).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Vec<T>, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Vec<T>, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Vec<T>, E> {
        Err(E::custom(format!(
            "{v} was read as a number; put it in quotes to use it as text"
        )))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrCheck::new(self.expecting, self.item))? {
            items.push(item);
        }
        if items.is_empty() {
            return Err(de::Error::custom(self.empty));
        }
        Ok(items)
    }
}

/// A filter as Woodpecker writes one: a value or list of [`OneOrMany`], which it includes, or a
/// mapping of `include` and `exclude`, each such a value or list (`branch: { exclude: main }`).
/// Gives `(include, exclude)`.
pub(crate) struct IncludeExclude<F>(pub(crate) OneOrMany<F>);

impl<'de, T, F> DeserializeSeed<'de> for IncludeExclude<F>
where
    F: Fn(&str) -> Result<T, String> + Copy,
{
    type Value = (Vec<T>, Vec<T>);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, T, F> Visitor<'de> for IncludeExclude<F>
where
    F: Fn(&str) -> Result<T, String> + Copy,
{
    type Value = (Vec<T>, Vec<T>);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}, or `include` and `exclude` lists of them",
            self.0.expecting
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.0.visit_str(v).map(|v| (v, Vec::new()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.0.visit_u64(v).map(|v| (v, Vec::new()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.0.visit_i64(v).map(|v| (v, Vec::new()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.0.visit_f64(v).map(|v| (v, Vec::new()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.0.visit_seq(seq).map(|v| (v, Vec::new()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut include, mut exclude) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            let slot = match key.as_str() {
                "include" => &mut include,
                "exclude" => &mut exclude,
                other => return Err(de::Error::unknown_field(other, &["include", "exclude"])),
            };
            if slot.is_some() {
                return Err(de::Error::custom(format!("`{key}` is given twice")));
            }
            *slot = Some(map.next_value_seed(self.0)?);
        }
        if include.is_none() && exclude.is_none() {
            return Err(de::Error::custom(
                "an empty mapping; give `include`, `exclude` or both",
            ));
        }
        Ok((include.unwrap_or_default(), exclude.unwrap_or_default()))
    }
}

/// A mapping from environment-variable names to string values: `build-args:`. Duplicate keys
/// are refused (YAML libraries disagree on which one wins) and values may not hold NUL, which no
/// process environment can carry.
pub(crate) struct EnvMap(pub(crate) BTreeMap<String, String>);

impl<'de> de::Deserialize<'de> for EnvMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_map(EnvMapVisitor(names::check_env_name))
            .map(EnvMap)
    }
}

/// An [`EnvMap`] for the variables of steps, the pipeline's and a step's `env:`: names the agent
/// keeps for itself (`RAIBID_*`) are refused, since it would drop them.
pub(crate) struct StepEnvMap(pub(crate) BTreeMap<String, String>);

impl<'de> de::Deserialize<'de> for StepEnvMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_map(EnvMapVisitor(names::check_step_env_name))
            .map(StepEnvMap)
    }
}

/// A step's `env:` (`environment:`): a value is text, or `{ from_secret: NAME }`, Woodpecker
/// 2's way of giving a step a secret under a variable name of its own (see
/// [`with_from_secret_vars`]).
pub(crate) struct StepEnv(pub(crate) BTreeMap<String, EnvValue>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EnvValue {
    Text(String),
    FromSecret(String),
}

impl StepEnv {
    /// The variables with text values, and those given a secret (variable to secret name).
    pub(crate) fn split(self) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let mut text = BTreeMap::new();
        let mut secrets = BTreeMap::new();
        for (var, value) in self.0 {
            match value {
                EnvValue::Text(value) => text.insert(var, value),
                EnvValue::FromSecret(secret) => secrets.insert(var, secret),
            };
        }
        (text, secrets)
    }
}

impl<'de> de::Deserialize<'de> for StepEnv {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(StepEnvVisitor).map(StepEnv)
    }
}

struct StepEnvVisitor;

impl<'de> Visitor<'de> for StepEnvVisitor {
    type Value = BTreeMap<String, EnvValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a mapping of variable names to values or `{ from_secret: NAME }`, like \
             `{ FOO: bar, TOKEN: { from_secret: deploy_token } }`",
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let mut map = MergeKeys::new(map);
        let mut env = BTreeMap::new();
        while let Some(name) = map.next_key_seed(unique_name(
            "a variable name",
            |name| env.contains_key(name),
            names::check_step_env_name,
        ))? {
            let value = map.next_value_seed(EnvValueSeed { var: &name })?;
            env.insert(name, value);
        }
        Ok(env)
    }
}

const FROM_SECRET: &str = "from_secret";

thread_local! {
    /// The variables some mapping of the file being read gives `{ from_secret: ... }`; see
    /// [`with_from_secret_vars`].
    static FROM_SECRET_VARS: RefCell<BTreeSet<String>> = const { RefCell::new(BTreeSet::new()) };
}

/// Runs `read` (a parse of `text`) knowing which variables of `text` are given
/// `{ from_secret: ... }`.
///
/// serde_yaml hands a scalar's source text over only to `deserialize_str` (so that
/// `RUST: 1.80` stays `"1.80"`), which refuses a mapping; `deserialize_any` takes both but
/// turns `1.80` into the float 1.8. So the file is first read loosely for the names whose
/// value is such a mapping somewhere, and only those are read with `deserialize_any`: a
/// number given to one of them elsewhere loses its formatting, which nothing else does.
pub(crate) fn with_from_secret_vars<T>(text: &str, read: impl FnOnce() -> T) -> T {
    let mut vars = BTreeSet::new();
    if text.contains(FROM_SECRET)
        && let Ok(document) = serde_yaml::from_str::<serde_yaml::Value>(text)
    {
        collect_from_secret_vars(&document, &mut vars);
    }
    FROM_SECRET_VARS.set(vars);
    let result = read();
    FROM_SECRET_VARS.set(BTreeSet::new());
    result
}

fn collect_from_secret_vars(value: &serde_yaml::Value, vars: &mut BTreeSet<String>) {
    match value {
        serde_yaml::Value::Mapping(mapping) => {
            for (key, value) in mapping {
                if let (Some(key), serde_yaml::Value::Mapping(inner)) = (key.as_str(), value)
                    && inner.contains_key(FROM_SECRET)
                {
                    vars.insert(key.to_owned());
                }
                collect_from_secret_vars(value, vars);
            }
        }
        serde_yaml::Value::Sequence(items) => {
            for item in items {
                collect_from_secret_vars(item, vars);
            }
        }
        serde_yaml::Value::Tagged(tagged) => collect_from_secret_vars(&tagged.value, vars),
        _ => {}
    }
}

/// One value of a step's `env`: see [`with_from_secret_vars`].
struct EnvValueSeed<'a> {
    var: &'a str,
}

impl<'de> DeserializeSeed<'de> for EnvValueSeed<'_> {
    type Value = EnvValue;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<EnvValue, D::Error> {
        if FROM_SECRET_VARS.with_borrow(|vars| vars.contains(self.var)) {
            deserializer.deserialize_any(EnvValueVisitor)
        } else {
            StrCheck::new("a string value, or `{ from_secret: NAME }`", env_value)
                .deserialize(deserializer)
                .map(EnvValue::Text)
        }
    }
}

struct EnvValueVisitor;

impl EnvValueVisitor {
    fn text<E: de::Error>(v: &str) -> Result<EnvValue, E> {
        env_value(v).map(EnvValue::Text).map_err(E::custom)
    }
}

impl<'de> Visitor<'de> for EnvValueVisitor {
    type Value = EnvValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string value, or `{ from_secret: NAME }`")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<EnvValue, E> {
        Self::text(v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<EnvValue, E> {
        Self::text(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<EnvValue, E> {
        Self::text(&v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<EnvValue, E> {
        Self::text(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<EnvValue, E> {
        Self::text(&v.to_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<EnvValue, E> {
        Self::text("")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EnvValue, A::Error> {
        let mut secret = None;
        while let Some(key) = map.next_key_seed(StrCheck::new("`from_secret`", |k: &str| {
            if k == FROM_SECRET {
                Ok(())
            } else {
                Err(format!(
                    "`{k}`: a variable's value is text, or `{{ from_secret: NAME }}` to give it \
                     a secret's value"
                ))
            }
        }))? {
            let () = key;
            if secret.is_some() {
                return Err(de::Error::custom("`from_secret` is given twice; keep one"));
            }
            secret = Some(
                map.next_value_seed(StrCheck::new("the name of a secret", |v: &str| {
                    names::check_env_name(v).map(|()| v.to_owned())
                }))?,
            );
        }
        secret
            .map(EnvValue::FromSecret)
            .ok_or_else(|| de::Error::custom("`{ from_secret: NAME }` needs a name"))
    }
}

struct EnvMapVisitor(fn(&str) -> Result<(), String>);

impl<'de> Visitor<'de> for EnvMapVisitor {
    type Value = BTreeMap<String, String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping of variable names to values, like `{ FOO: bar }`")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let mut map = MergeKeys::new(map);
        let mut env = BTreeMap::new();
        while let Some(name) = map.next_key_seed(unique_name(
            "a variable name",
            |name| env.contains_key(name),
            self.0,
        ))? {
            let value = map.next_value_seed(StrCheck::new("a string value", env_value))?;
            env.insert(name, value);
        }
        Ok(env)
    }
}

/// A string that will end up in a process environment.
pub(crate) fn check_env_value(v: &str) -> Result<(), String> {
    if v.contains('\0') {
        return Err("a value may not contain a NUL character".to_owned());
    }
    Ok(())
}

fn env_value(v: &str) -> Result<String, String> {
    check_env_value(v).map(|()| v.to_owned())
}

/// A name checked by `check` for which `seen` is false.
pub(crate) fn unique_name(
    expecting: &'static str,
    seen: impl FnOnce(&str) -> bool,
    check: fn(&str) -> Result<(), String>,
) -> StrCheck<impl FnOnce(&str) -> Result<String, String>> {
    StrCheck::new(expecting, move |name: &str| {
        check(name)?;
        if seen(name) {
            return Err(format!("{name:?} is given twice; keep one"));
        }
        Ok(name.to_owned())
    })
}

/// A list of distinct names, each checked by `check`: `secrets:`, matrix axis values.
pub(crate) struct UniqueList {
    expecting: &'static str,
    empty: Option<&'static str>,
    check: fn(&str) -> Result<(), String>,
}

impl UniqueList {
    /// `empty` is the message for an empty list, or `None` when an empty list is fine.
    pub(crate) fn new(
        expecting: &'static str,
        empty: Option<&'static str>,
        check: fn(&str) -> Result<(), String>,
    ) -> Self {
        Self {
            expecting,
            empty,
            check,
        }
    }
}

impl<'de> DeserializeSeed<'de> for UniqueList {
    type Value = Vec<String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<String>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for UniqueList {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a list of {}", self.expecting)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut items = Vec::new();
        let mut seen = BTreeSet::new();
        let check = self.check;
        while let Some(item) = seq.next_element_seed(StrCheck::new(self.expecting, |v: &str| {
            check(v)?;
            if seen.contains(v) {
                return Err(format!("{v:?} is listed twice; keep one"));
            }
            Ok(v.to_owned())
        }))? {
            seen.insert(item.clone());
            items.push(item);
        }
        match self.empty {
            Some(message) if items.is_empty() => Err(de::Error::custom(message)),
            _ => Ok(items),
        }
    }
}

/// Declares a newtype whose `Deserialize` runs a [`StrCheck`], for use as a field of a derived
/// raw struct.
macro_rules! checked_str {
    ($(#[$doc:meta])* $name:ident: $ty:ty, $expecting:literal, $check:path) => {
        $(#[$doc])*
        pub(crate) struct $name(pub(crate) $ty);

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                serde::de::DeserializeSeed::deserialize(
                    $crate::de::StrCheck::new($expecting, |v: &str| $check(v).map($name)),
                    d,
                )
            }
        }
    };
}

pub(crate) use checked_str;

#[cfg(test)]
mod tests {
    use super::*;

    fn env(yaml: &str) -> Result<BTreeMap<String, String>, serde_yaml::Error> {
        serde_yaml::from_str::<EnvMap>(yaml).map(|m| m.0)
    }

    #[test]
    fn env_values_keep_their_source_text() {
        let map = env("A: 1.80\nB: true\nC: 007\nD: plain").unwrap();
        assert_eq!(map["A"], "1.80");
        assert_eq!(map["B"], "true");
        assert_eq!(map["C"], "007");
        assert_eq!(map["D"], "plain");
    }

    #[test]
    fn env_duplicate_key_points_at_the_second_key() {
        let err = env("A: 1\nB: 2\nA: 3").unwrap_err();
        let loc = err.location().unwrap();
        assert_eq!((loc.line(), loc.column()), (3, 1));
        assert!(err.to_string().contains("given twice"), "{err}");
    }

    #[test]
    fn env_bad_name_points_at_the_key() {
        let err = env("A: 1\n  \nB-C: 2").unwrap_err();
        let loc = err.location().unwrap();
        assert_eq!((loc.line(), loc.column()), (3, 1));
    }

    #[test]
    fn reserved_names_are_refused_in_step_env_only() {
        let err = serde_yaml::from_str::<StepEnvMap>("A: 1\nRAIBID_SHA: x")
            .err()
            .unwrap();
        let loc = err.location().unwrap();
        assert_eq!((loc.line(), loc.column()), (2, 1));
        assert!(
            err.to_string()
                .contains("RAIBID_* names are set by the agent"),
            "{err}"
        );
        let ok = serde_yaml::from_str::<StepEnvMap>("CI: x\nRAIBID_MATRIX: y").unwrap();
        assert_eq!(ok.0.len(), 2);
        // Build arguments go to buildah as they are.
        assert!(env("RAIBID_SHA: x").is_ok());
    }

    #[test]
    fn env_value_with_nul_is_refused() {
        let err = env("A: \"x\\0y\"").unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
    }

    #[test]
    fn one_or_many_accepts_a_single_value_or_a_list() {
        let seed = || OneOrMany::new("a word", "empty!", |v: &str| Ok::<_, String>(v.to_owned()));
        let one = seed()
            .deserialize(serde_yaml::Deserializer::from_str("main"))
            .unwrap();
        assert_eq!(one, ["main"]);
        let many = seed()
            .deserialize(serde_yaml::Deserializer::from_str("[a, 12, 1.5]"))
            .unwrap();
        assert_eq!(many, ["a", "12", "1.5"]);
        let int = seed()
            .deserialize(serde_yaml::Deserializer::from_str("2024"))
            .unwrap();
        assert_eq!(int, ["2024"]);
        let float = seed()
            .deserialize(serde_yaml::Deserializer::from_str("1.5"))
            .unwrap_err();
        assert!(float.to_string().contains("quotes"), "{float}");
        let empty = seed()
            .deserialize(serde_yaml::Deserializer::from_str("[]"))
            .unwrap_err();
        assert!(empty.to_string().contains("empty!"), "{empty}");
    }

    #[test]
    fn unique_list_refuses_repeats_at_the_repeat() {
        let err = UniqueList::new("names", None, names::check_env_name)
            .deserialize(serde_yaml::Deserializer::from_str("- A\n- B\n- A\n"))
            .unwrap_err();
        let loc = err.location().unwrap();
        assert_eq!((loc.line(), loc.column()), (3, 3));
    }
}
