//! `matrix:`: one job per combination of variable values.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

use crate::de::{EnvMap, UniqueList, check_env_value, unique_name};

/// Values name the variant's job and commit status (`RUST=1.80,TARGET=x86_64`), so they are
/// kept short and free of the separators that would make two variants' names the same.
const MAX_VALUE_LEN: usize = 64;

fn matrix_value(v: &str) -> Result<(), String> {
    check_env_value(v)?;
    if v.chars().count() > MAX_VALUE_LEN {
        return Err(format!(
            "the matrix value {v:?} is longer than {MAX_VALUE_LEN} characters; values name the \
             variant's job and commit status"
        ));
    }
    if v.contains([',', '=']) || v.chars().any(char::is_control) {
        return Err(format!(
            "the matrix value {v:?} contains ',', '=' or a control character, which would blur \
             the variant's name (`NAME=value,NAME=value`)"
        ));
    }
    Ok(())
}
use crate::names;

/// Each variant is a whole job on an agent; a typo in a matrix (an extra axis) can multiply the
/// load on a small cluster, so expansion is capped and checked before anything is queued.
pub const MAX_VARIANTS: usize = 256;

/// The matrix as written. Axes combine as a cartesian product; `exclude` entries remove the
/// combinations they match (an entry matches when all of its variables are equal), and each
/// `include` entry adds one more variant with exactly the variables it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    pub axes: BTreeMap<String, Vec<String>>,
    pub include: Vec<BTreeMap<String, String>>,
    pub exclude: Vec<BTreeMap<String, String>>,
}

/// One job of a matrix: its variables, to be layered over the pipeline's `env` and under each
/// step's `env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// `RUST=1.80,TARGET=x86_64`, variables sorted by name; empty without a matrix.
    pub name: String,
    pub env: BTreeMap<String, String>,
}

impl Variant {
    fn new(env: BTreeMap<String, String>) -> Self {
        let name = env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        Self { name, env }
    }

    /// The single variant of a pipeline without a matrix.
    pub(crate) fn plain() -> Self {
        Self::new(BTreeMap::new())
    }
}

impl Matrix {
    /// Variables vary in name order, the first slowest; values keep their file order. Included
    /// variants follow, skipping any that the product already has.
    pub fn variants(&self) -> Vec<Variant> {
        let mut combos: Vec<BTreeMap<String, String>> = if self.axes.is_empty() {
            Vec::new()
        } else {
            vec![BTreeMap::new()]
        };
        for (key, values) in &self.axes {
            combos = combos
                .into_iter()
                .flat_map(|combo| {
                    values.iter().map(move |value| {
                        let mut next = combo.clone();
                        next.insert(key.clone(), value.clone());
                        next
                    })
                })
                .collect();
        }
        combos.retain(|combo| !self.exclude.iter().any(|ex| matches(ex, combo)));
        for extra in &self.include {
            if !combos.contains(extra) {
                combos.push(extra.clone());
            }
        }
        combos.into_iter().map(Variant::new).collect()
    }

    /// Checks the matrix as a whole; the caller reports the error at the matrix.
    fn check(&self) -> Result<(), String> {
        if self.axes.is_empty() && self.include.is_empty() {
            return Err(
                "the matrix is empty; give each variable a list of values, like `RUST: [\"1.80\", stable]`"
                    .to_owned(),
            );
        }
        if self.include.iter().any(BTreeMap::is_empty) {
            return Err(
                "an empty `include` entry adds a job with no variables; remove it".to_owned(),
            );
        }
        for value in self
            .include
            .iter()
            .chain(&self.exclude)
            .flat_map(BTreeMap::values)
        {
            matrix_value(value)?;
        }
        for entry in &self.exclude {
            self.check_exclude(entry)?;
        }
        let product = self
            .axes
            .values()
            .try_fold(1usize, |n, values| n.checked_mul(values.len()));
        match product {
            // Bounding `include` here keeps `variants()` (quadratic in it) cheap on hostile input.
            Some(n) if n <= MAX_VARIANTS && self.include.len() <= MAX_VARIANTS => {}
            Some(n) if n <= MAX_VARIANTS => {
                return Err(too_many(&format!("more than {MAX_VARIANTS}")));
            }
            Some(n) => return Err(too_many(&n.to_string())),
            None => return Err(too_many("more than 2^64")),
        }
        let count = self.variants().len();
        if count > MAX_VARIANTS {
            return Err(too_many(&count.to_string()));
        }
        Ok(())
    }

    /// An `exclude` entry that can never match is a typo that would silently run extra jobs.
    fn check_exclude(&self, entry: &BTreeMap<String, String>) -> Result<(), String> {
        if entry.is_empty() {
            return Err("an empty `exclude` entry would exclude every job; remove it".to_owned());
        }
        for (key, value) in entry {
            let Some(values) = self.axes.get(key) else {
                return Err(format!(
                    "`exclude` uses {key}, which is not a matrix variable"
                ));
            };
            if !values.contains(value) {
                return Err(format!(
                    "`exclude` entry {key}={value} never matches: {key} is one of {values:?}"
                ));
            }
        }
        Ok(())
    }
}

fn matches(entry: &BTreeMap<String, String>, combo: &BTreeMap<String, String>) -> bool {
    entry.iter().all(|(k, v)| combo.get(k) == Some(v))
}

fn too_many(count: &str) -> String {
    format!(
        "the matrix expands to {count} jobs; the limit is {MAX_VARIANTS}: remove values or add `exclude` entries"
    )
}

const INCLUDE: &str = "include";
const EXCLUDE: &str = "exclude";

fn matrix_key(key: &str) -> Result<(), String> {
    if key == INCLUDE || key == EXCLUDE {
        Ok(())
    } else {
        names::check_env_name(key)
    }
}

/// `matrix:` as written in YAML; checked as a whole once all keys are read.
pub(crate) struct MatrixDe(pub(crate) Matrix);

impl<'de> Deserialize<'de> for MatrixDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MatrixVisitor)
    }
}

struct MatrixVisitor;

impl<'de> Visitor<'de> for MatrixVisitor {
    type Value = MatrixDe;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping of variable names to lists of values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MatrixDe, A::Error> {
        let mut matrix = Matrix {
            axes: BTreeMap::new(),
            include: Vec::new(),
            exclude: Vec::new(),
        };
        let mut seen = Vec::new();
        while let Some(key) = map.next_key_seed(unique_name(
            "a matrix variable name, `include` or `exclude`",
            |k| seen.iter().any(|s| s == k),
            matrix_key,
        ))? {
            match key.as_str() {
                INCLUDE => matrix.include = entries(map.next_value()?),
                EXCLUDE => matrix.exclude = entries(map.next_value()?),
                _ => {
                    let values = map.next_value_seed(UniqueList::new(
                        "matrix values",
                        Some("an empty list of values would make no jobs at all; remove the variable"),
                        matrix_value,
                    ))?;
                    matrix.axes.insert(key.clone(), values);
                }
            }
            seen.push(key);
        }
        matrix.check().map_err(de::Error::custom)?;
        Ok(MatrixDe(matrix))
    }
}

fn entries(maps: Vec<EnvMap>) -> Vec<BTreeMap<String, String>> {
    maps.into_iter().map(|m| m.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(yaml: &str) -> Result<Matrix, serde_yaml::Error> {
        serde_yaml::from_str::<MatrixDe>(yaml).map(|m| m.0)
    }

    fn names(m: &Matrix) -> Vec<String> {
        m.variants().into_iter().map(|v| v.name).collect()
    }

    #[test]
    fn values_that_would_blur_variant_names_are_refused() {
        for yaml in [
            "FEATURES: [a, \"a,OS=linux\"]",
            "A: [\"x\\ny\"]",
            "A: [x]\ninclude: [{ A: \"y=z\" }]",
            "A: [x]\nexclude: [{ A: \"x,y\" }]",
        ] {
            let e = matrix(yaml).unwrap_err().to_string();
            assert!(e.contains("blur the variant's name"), "{yaml}: {e}");
        }
        let long = format!("A: [{}]", "v".repeat(65));
        assert!(
            matrix(&long)
                .unwrap_err()
                .to_string()
                .contains("longer than 64")
        );
        assert!(matrix(&format!("A: [{}]", "v".repeat(64))).is_ok());
    }

    #[test]
    fn cartesian_product_in_stable_order() {
        let m = matrix("TARGET: [x86_64, aarch64]\nRUST: [1.80, stable]").unwrap();
        assert_eq!(
            names(&m),
            [
                "RUST=1.80,TARGET=x86_64",
                "RUST=1.80,TARGET=aarch64",
                "RUST=stable,TARGET=x86_64",
                "RUST=stable,TARGET=aarch64",
            ]
        );
        let first = &m.variants()[0];
        assert_eq!(first.env["RUST"], "1.80");
        assert_eq!(first.env["TARGET"], "x86_64");
    }

    #[test]
    fn exclude_and_include() {
        let m = matrix(
            "RUST: [\"1.80\", stable]\nTARGET: [x86_64, aarch64]\nexclude:\n  - { RUST: \"1.80\", TARGET: aarch64 }\ninclude:\n  - { RUST: nightly, TARGET: x86_64 }\n  - { RUST: stable, TARGET: x86_64 }\n",
        )
        .unwrap();
        assert_eq!(
            names(&m),
            [
                "RUST=1.80,TARGET=x86_64",
                "RUST=stable,TARGET=x86_64",
                "RUST=stable,TARGET=aarch64",
                "RUST=nightly,TARGET=x86_64",
            ]
        );
    }

    #[test]
    fn partial_exclude_removes_every_match() {
        let m = matrix("A: [1, 2]\nB: [x, y]\nexclude: [{ A: 1 }]").unwrap();
        assert_eq!(names(&m), ["A=2,B=x", "A=2,B=y"]);
    }

    #[test]
    fn include_only() {
        let m = matrix("include: [{ OS: linux }, { OS: mac, EXTRA: 1 }]").unwrap();
        assert_eq!(names(&m), ["OS=linux", "EXTRA=1,OS=mac"]);
    }

    #[test]
    fn limit_is_enforced() {
        assert!(matrix("A: [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]\nB: [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]").is_ok());
        let err = matrix("A: [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]\nB: [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]\nC: [1, 2]").unwrap_err();
        assert!(err.to_string().contains("512 jobs"), "{err}");
        let loc = err.location().unwrap();
        assert_eq!((loc.line(), loc.column()), (1, 1));
        let values = (0..100)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let huge = (0..12)
            .map(|i| format!("V{i}: [{values}]"))
            .collect::<Vec<_>>()
            .join("\n");
        let err = matrix(&huge).unwrap_err();
        assert!(err.to_string().contains("more than 2^64"), "{err}");
    }

    #[test]
    fn invalid_matrices() {
        for (yaml, needle) in [
            ("{}", "matrix is empty"),
            ("A: []", "empty list of values"),
            ("A: [1, 1]", "listed twice"),
            ("A: x", "a list of matrix values"),
            ("A: [[1]]", "matrix values"),
            ("1A: [x]", "not a valid variable name"),
            ("A: [x]\nA: [y]", "given twice"),
            ("A: [x]\nexclude: [{ B: x }]", "not a matrix variable"),
            ("A: [x]\nexclude: [{ A: y }]", "never matches"),
            ("A: [x]\nexclude: [{}]", "empty `exclude`"),
            ("A: [x]\ninclude: [{}]", "empty `include`"),
            ("A: [x]\ninclude: { A: y }", "invalid type"),
            ("[1, 2]", "mapping of variable names"),
        ] {
            let err = matrix(yaml).err().unwrap();
            assert!(err.to_string().contains(needle), "{yaml}: {err}");
        }
    }

    #[test]
    fn plain_variant_has_no_name() {
        let v = Variant::plain();
        assert_eq!(v.name, "");
        assert!(v.env.is_empty());
    }
}
