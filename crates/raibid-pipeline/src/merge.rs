//! YAML merge keys (`<<: *defaults`), as Woodpecker and GitLab read them: serde_yaml 0.9 parses
//! anchors and aliases but hands `<<` over as an ordinary key, which every mapping of a
//! pipeline would refuse as unknown.
//!
//! [`MergeKeys`] wraps a mapping's `MapAccess`: the mapping's own keys pass through untouched
//! (so their errors keep their exact positions), each `<<` value is collected, and once the
//! mapping's own keys are done the merged keys it does not set itself follow, the earlier of
//! several merged mappings winning, as the YAML merge key specification says. Merged values are
//! read back from YAML text, so numbers stay text where the pipeline wants text, as they do in
//! the file itself; their errors are reported at the mapping that merges them.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde_yaml::Value;

/// The merge key, as YAML writes it.
const MERGE: &str = "<<";

pub(crate) struct MergeKeys<A> {
    inner: A,
    /// Keys the mapping sets itself: merged ones never override them.
    own: BTreeSet<String>,
    /// The `<<` values in the order written; their keys are taken at the end.
    merged: Vec<Value>,
    tail: Option<std::vec::IntoIter<(String, String)>>,
    /// The YAML text of the merged key just handed out.
    value: Option<String>,
}

impl<A> MergeKeys<A> {
    pub(crate) fn new(inner: A) -> Self {
        Self {
            inner,
            own: BTreeSet::new(),
            merged: Vec::new(),
            tail: None,
            value: None,
        }
    }

    /// The merged keys the mapping does not set, each with its value as YAML text.
    fn take_tail<E: de::Error>(&mut self) -> Result<Vec<(String, String)>, E> {
        let mut out: Vec<(String, String)> = Vec::new();
        for mut value in std::mem::take(&mut self.merged) {
            // Merges inside the merged mapping (an anchor that merges another) first.
            value.apply_merge().map_err(E::custom)?;
            if let Some(n) = decimal_in(&value) {
                return Err(E::custom(format!(
                    "a mapping merged with `<<` holds the unquoted decimal {n}, which would reach \
                     the pipeline as YAML's number ({n}) rather than as written (trailing zeros \
                     lost): quote it, like \"1.80\""
                )));
            }
            let mappings = match value {
                Value::Mapping(m) => vec![m],
                Value::Sequence(items) => items
                    .into_iter()
                    .map(|item| match item {
                        Value::Mapping(m) => Ok(m),
                        _ => Err(E::custom(NOT_A_MAPPING)),
                    })
                    .collect::<Result<_, E>>()?,
                _ => return Err(E::custom(NOT_A_MAPPING)),
            };
            for mapping in mappings {
                for (key, value) in mapping {
                    let Value::String(key) = key else {
                        return Err(E::custom(
                            "a mapping merged with `<<` has a key that is not text",
                        ));
                    };
                    if self.own.contains(&key) || out.iter().any(|(k, _)| *k == key) {
                        continue;
                    }
                    let text = serde_yaml::to_string(&value).map_err(E::custom)?;
                    out.push((key, text));
                }
            }
        }
        Ok(out)
    }
}

/// The first decimal number in `value`. The pipeline takes every scalar as text, and a file's
/// own `RUST: 1.80` is read as written; a merged value has been through YAML's reading of it.
fn decimal_in(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) if n.is_f64() => n.as_f64(),
        Value::Sequence(items) => items.iter().find_map(decimal_in),
        Value::Mapping(m) => m
            .iter()
            .find_map(|(k, v)| decimal_in(k).or_else(|| decimal_in(v))),
        Value::Tagged(t) => decimal_in(&t.value),
        _ => None,
    }
}

const NOT_A_MAPPING: &str =
    "`<<` merges a mapping or a list of mappings into this one, like `<<: *defaults`";

impl<'de, A: MapAccess<'de>> MapAccess<'de> for MergeKeys<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let mut seed = Some(seed);
        if self.tail.is_none() {
            loop {
                let mut name = None;
                let key = KeySeed {
                    seed: &mut seed,
                    name: &mut name,
                };
                match self.inner.next_key_seed(key)? {
                    Some(Some(key)) => {
                        self.own.extend(name);
                        return Ok(Some(key));
                    }
                    Some(None) => {
                        let value: Value = self.inner.next_value()?;
                        self.merged.push(value);
                    }
                    None => {
                        self.tail = Some(self.take_tail()?.into_iter());
                        break;
                    }
                }
            }
        }
        let Some((key, value)) = self.tail.as_mut().and_then(Iterator::next) else {
            return Ok(None);
        };
        self.value = Some(value);
        let seed = seed
            .take()
            .expect("the seed is used only for a key handed out");
        let de: de::value::StringDeserializer<A::Error> = key.into_deserializer();
        seed.deserialize(de)
            .map(Some)
            .map_err(|e| de::Error::custom(format!("{e} (merged with `<<`)")))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        match self.value.take() {
            Some(text) => {
                seed.deserialize(serde_yaml::Deserializer::from_reader(std::io::Cursor::new(
                    text.into_bytes(),
                )))
                .map_err(|e| de::Error::custom(format!("{} (merged with `<<`)", without_place(&e))))
            }
            None => self.inner.next_value_seed(seed),
        }
    }
}

/// serde_yaml's message without its "at line .. column .." of the merged value's own text,
/// which is not the file's.
fn without_place(e: &serde_yaml::Error) -> String {
    let text = e.to_string();
    match (e.location(), text.rfind(" at line ")) {
        (Some(_), Some(at)) => text[..at].to_owned(),
        _ => text,
    }
}

/// Reads a key as text: `<<` is a merge (`None`), anything else goes to the caller's seed,
/// inside the key's own deserialization so that its errors point at the key.
struct KeySeed<'a, K> {
    seed: &'a mut Option<K>,
    name: &'a mut Option<String>,
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<'_, K> {
    type Value = Option<K::Value>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, K: DeserializeSeed<'de>> Visitor<'de> for KeySeed<'_, K> {
    type Value = Option<K::Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if v == MERGE {
            return Ok(None);
        }
        let seed = self.seed.take().expect("one key per seed");
        *self.name = Some(v.to_owned());
        let de: de::value::StrDeserializer<'_, E> = v.into_deserializer();
        seed.deserialize(de).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde::de::value::MapAccessDeserializer;

    use super::*;

    /// A mapping of strings read through [`MergeKeys`].
    struct Merged(BTreeMap<String, String>);

    impl<'de> Deserialize<'de> for Merged {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = BTreeMap<String, String>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a mapping")
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                    BTreeMap::deserialize(MapAccessDeserializer::new(MergeKeys::new(map)))
                }
            }
            d.deserialize_map(V).map(Merged)
        }
    }

    fn merged(yaml: &str) -> Result<BTreeMap<String, String>, String> {
        // Other keys (where the anchors are) are ignored.
        #[derive(Deserialize)]
        struct Doc {
            it: Merged,
        }
        serde_yaml::from_str::<Doc>(yaml)
            .map(|d| d.it.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn own_keys_win_over_merged_ones_wherever_they_are_written() {
        let m = merged(
            "base: &b { A: from-base, B: from-base, N: 8, Q: \"1.80\" }\n\
             it:\n  A: own\n  <<: *b\n  C: own\n",
        )
        .unwrap();
        assert_eq!(m["A"], "own");
        assert_eq!(m["B"], "from-base");
        assert_eq!(m["C"], "own");
        assert_eq!((m["N"].as_str(), m["Q"].as_str()), ("8", "1.80"));
    }

    #[test]
    fn an_unquoted_decimal_in_a_merged_mapping_is_refused() {
        let err = merged("base: &b { RUST: 1.80 }\nit:\n  <<: *b\n").unwrap_err();
        assert!(err.contains("unquoted decimal 1.8"), "{err}");
    }

    #[test]
    fn of_a_list_of_mappings_the_first_wins_and_merges_nest() {
        let m = merged(
            "base: &b { A: b, B: b }\n\
             more: &m { <<: *b, A: m, C: m }\n\
             it:\n  <<: [*m, { A: x, D: x }]\n",
        )
        .unwrap();
        assert_eq!(
            m.into_iter().collect::<Vec<_>>(),
            [("A", "m"), ("B", "b"), ("C", "m"), ("D", "x")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn a_merge_of_anything_but_mappings_is_refused() {
        let err = merged("it:\n  <<: [a, b]\n").unwrap_err();
        assert!(err.contains("`<<` merges a mapping"), "{err}");
        let err = merged("it:\n  <<: 3\n").unwrap_err();
        assert!(err.contains("`<<` merges a mapping"), "{err}");
    }
}
