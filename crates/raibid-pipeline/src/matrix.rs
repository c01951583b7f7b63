//! `matrix:`: one job per combination of variable values.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::de::{StrCheck, UniqueList, check_env_value};
use crate::names;

/// Values name the variant's job and commit status (`RUST=1.80,TARGET=x86_64`), so they are
/// kept short and free of the separators that would make two variants' names the same.
const MAX_VALUE_LEN: usize = 64;

/// Variable names are part of the variant's name too.
const MAX_NAME_LEN: usize = 64;

/// Variables of one variant: the axes, or the keys of an `include` entry. [`MAX_VARIANTS`] alone
/// does not bound them, since an axis with one value multiplies nothing; real matrices have a
/// handful of variables (a constant belongs in `env`).
pub const MAX_AXES: usize = 16;

/// The longest variant name, in characters: [`MAX_AXES`] `NAME=value` pairs and the commas
/// between them (2079; at most 5151 bytes, as a value's characters may take up to 4 bytes each).
/// The name becomes the variant job's `RAIBID_MATRIX`, its delivery id and its commit-status
/// context.
pub const MAX_VARIANT_NAME_LEN: usize =
    MAX_AXES * (MAX_NAME_LEN + 1 + MAX_VALUE_LEN) + (MAX_AXES - 1);

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

/// A matrix variable's name, as an axis or in an `include`/`exclude` entry.
fn matrix_name(name: &str) -> Result<(), String> {
    names::check_matrix_name(name)?;
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "the matrix variable name {name:?} is longer than {MAX_NAME_LEN} characters; names \
             make up the variant's job name and commit status"
        ));
    }
    Ok(())
}

fn too_many_variables(what: &str) -> String {
    format!(
        "{what} has more than {MAX_AXES} variables; a variable with a single value is a \
         constant: put it in `env`"
    )
}

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
    /// `RUST=1.80,TARGET=x86_64`, variables sorted by name; empty without a matrix. At most
    /// [`MAX_VARIANT_NAME_LEN`] characters for a parsed pipeline.
    pub name: String,
    pub env: BTreeMap<String, String>,
}

impl Variant {
    fn new(env: BTreeMap<String, String>) -> Self {
        let mut name = String::new();
        for (k, v) in &env {
            if !name.is_empty() {
                name.push(',');
            }
            name.push_str(k);
            name.push('=');
            name.push_str(v);
        }
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
    ///
    /// Each combination is built once, straight from its values, so the work is linear in the
    /// output (variants × variables), whatever the number of axes.
    pub fn variants(&self) -> Vec<Variant> {
        let axes: Vec<(&String, &Vec<String>)> = self.axes.iter().collect();
        let mut variants = Vec::new();
        if !axes.is_empty() && axes.iter().all(|(_, values)| !values.is_empty()) {
            // An odometer over the axes' values, the last axis turning fastest.
            let mut index = vec![0; axes.len()];
            'combinations: loop {
                let env: BTreeMap<String, String> = axes
                    .iter()
                    .zip(&index)
                    .map(|((key, values), &i)| ((*key).clone(), values[i].clone()))
                    .collect();
                if !self.exclude.iter().any(|ex| matches(ex, &env)) {
                    variants.push(Variant::new(env));
                }
                let mut axis = axes.len();
                loop {
                    if axis == 0 {
                        break 'combinations;
                    }
                    axis -= 1;
                    index[axis] += 1;
                    if index[axis] < axes[axis].1.len() {
                        break;
                    }
                    index[axis] = 0;
                }
            }
        }
        // Names stand for their variables: values hold no ',' or '=' and names are identifiers.
        let mut names: HashSet<String> = variants.iter().map(|v| v.name.clone()).collect();
        for extra in &self.include {
            let variant = Variant::new(extra.clone());
            if names.insert(variant.name.clone()) {
                variants.push(variant);
            }
        }
        variants
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
        for entry in &self.exclude {
            self.check_exclude(entry)?;
        }
        let product = self
            .axes
            .values()
            .try_fold(1usize, |n, values| n.checked_mul(values.len()));
        match product {
            // Bounding `include` here keeps `variants()` cheap on hostile input.
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
        let mut seen: Vec<String> = Vec::new();
        loop {
            let axes = matrix.axes.len();
            let key = map.next_key_seed(StrCheck::new(
                "a matrix variable name, `include` or `exclude`",
                |key: &str| {
                    if key != INCLUDE && key != EXCLUDE {
                        matrix_name(key)?;
                    }
                    if seen.iter().any(|s| s == key) {
                        return Err(format!("{key:?} is given twice; keep one"));
                    }
                    if key != INCLUDE && key != EXCLUDE && axes >= MAX_AXES {
                        return Err(too_many_variables("the matrix"));
                    }
                    Ok(key.to_owned())
                },
            ))?;
            let Some(key) = key else { break };
            match key.as_str() {
                INCLUDE | EXCLUDE => {
                    let entries = map.next_value_seed(Entries(if key == INCLUDE {
                        "an `include` entry"
                    } else {
                        "an `exclude` entry"
                    }))?;
                    if key == INCLUDE {
                        matrix.include = entries;
                    } else {
                        matrix.exclude = entries;
                    }
                }
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

/// The list of `include` or `exclude` entries; `.0` names an entry in errors.
struct Entries(&'static str);

impl<'de> DeserializeSeed<'de> for Entries {
    type Value = Vec<BTreeMap<String, String>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Entries {
    type Value = Vec<BTreeMap<String, String>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of mappings of matrix variables to values, like `- { RUST: nightly }`")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = seq.next_element_seed(Entry {
            what: self.0,
            index: entries.len(),
        })? {
            entries.push(entry);
        }
        Ok(entries)
    }
}

/// A step's `when: matrix` (Woodpecker's key): variables and the values the variant must have
/// for the step to run, read as an `include` entry is. Not empty.
pub(crate) struct MatrixFilter(pub(crate) BTreeMap<String, String>);

const FILTER: &str = "`when: matrix`";

impl<'de> Deserialize<'de> for MatrixFilter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(Entry {
            what: FILTER,
            index: 0,
        })
        .map(MatrixFilter)
    }
}

/// One `include`/`exclude` entry: at most [`MAX_AXES`] variables, like a variant, and no more
/// entries than a matrix has jobs.
struct Entry {
    what: &'static str,
    index: usize,
}

impl<'de> DeserializeSeed<'de> for Entry {
    type Value = BTreeMap<String, String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Entry {
    type Value = BTreeMap<String, String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping of matrix variables to values, like `{ RUST: nightly }`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        if self.index >= MAX_VARIANTS {
            return Err(de::Error::custom(format!(
                "more than {MAX_VARIANTS} `include`/`exclude` entries; the matrix has at most \
                 {MAX_VARIANTS} jobs"
            )));
        }
        let mut entry = BTreeMap::new();
        while let Some(name) =
            map.next_key_seed(StrCheck::new("a matrix variable name", |name: &str| {
                matrix_name(name)?;
                if entry.contains_key(name) {
                    return Err(format!("{name:?} is given twice; keep one"));
                }
                if entry.len() >= MAX_AXES {
                    return Err(too_many_variables(self.what));
                }
                Ok(name.to_owned())
            }))?
        {
            let value = map.next_value_seed(StrCheck::new("a matrix value", |v: &str| {
                matrix_value(v).map(|()| v.to_owned())
            }))?;
            entry.insert(name, value);
        }
        if entry.is_empty() && self.what == FILTER {
            return Err(de::Error::custom(
                "an empty `matrix` filter would match every variant; remove it, or name \
                 variables and values, like `{ RUST: nightly }`",
            ));
        }
        Ok(entry)
    }
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

    fn error_at(yaml: &str) -> (usize, usize, String) {
        let err = matrix(yaml).unwrap_err();
        let loc = err.location().expect("error has a location");
        (loc.line(), loc.column(), err.to_string())
    }

    /// Axes with one value multiply nothing, so `MAX_VARIANTS` alone let a matrix have any
    /// number of variables (and variant names of any length).
    #[test]
    fn variables_are_capped_at_the_first_one_too_many() {
        let mut yaml: String = (0..8).map(|i| format!("A{i}: [a, b]\n")).collect();
        yaml.extend((0..1000).map(|i| format!("B{i}: [x]\n")));
        let (line, col, msg) = error_at(&yaml);
        assert_eq!((line, col), (MAX_AXES + 1, 1), "{msg}");
        assert!(msg.contains("more than 16 variables"), "{msg}");

        let include = (0..=MAX_AXES)
            .map(|i| format!("    K{i}: v\n"))
            .collect::<String>();
        let (line, col, msg) = error_at(&format!("A: [x]\ninclude:\n  - A: y\n{include}"));
        assert_eq!((line, col), (3 + MAX_AXES, 5), "{msg}");
        assert!(
            msg.contains("an `include` entry has more than 16 variables"),
            "{msg}"
        );
        let (line, _, msg) = error_at(&format!("A: [x]\nexclude:\n  - A: x\n{include}"));
        assert_eq!(line, 3 + MAX_AXES, "{msg}");
        // `include` and `exclude` are not variables.
        let mut full: String = (0..MAX_AXES).map(|i| format!("A{i}: [x]\n")).collect();
        full.push_str("include: [{ A0: y }]\nexclude: [{ A0: x }]\n");
        assert_eq!(names(&matrix(&full).unwrap()).len(), 1);
    }

    #[test]
    fn long_variable_names_are_refused_at_the_name() {
        let (line, col, msg) = error_at(&format!("A: [x]\n{}: [y]", "N".repeat(65)));
        assert_eq!((line, col), (2, 1));
        assert!(msg.contains("longer than 64 characters"), "{msg}");
        let (line, col, msg) = error_at(&format!("A: [x]\ninclude:\n  - {}: y", "N".repeat(65)));
        assert_eq!((line, col), (3, 5));
        assert!(msg.contains("longer than 64 characters"), "{msg}");
    }

    /// The widest matrix allowed: every variable name and value at its longest.
    #[test]
    fn variant_names_are_bounded() {
        assert_eq!(MAX_VARIANT_NAME_LEN, 2079);
        let name = |i: usize| format!("V{i:02}{}", "N".repeat(61));
        let axes: String = (0..MAX_AXES)
            .map(|i| {
                format!(
                    "{}: [\"{}\", \"{}\"]\n",
                    name(i),
                    "v".repeat(64),
                    "é".repeat(64)
                )
            })
            .collect();
        // 2^16 combinations: drop all but the first two values of the first eight axes.
        let exclude: String = (8..MAX_AXES)
            .map(|i| format!("  - {{ {}: \"{}\" }}\n", name(i), "é".repeat(64)))
            .collect();
        let m = matrix(&format!("{axes}exclude:\n{exclude}")).unwrap_err();
        assert!(m.to_string().contains("65536 jobs"), "{m}");
        let axes: String = (0..MAX_AXES)
            .map(|i| {
                let values = if i < 8 {
                    format!("\"{}\", \"{}\"", "v".repeat(64), "é".repeat(64))
                } else {
                    format!("\"{}\"", "é".repeat(64))
                };
                format!("{}: [{values}]\n", name(i))
            })
            .collect();
        let m = matrix(&axes).unwrap();
        let variants = m.variants();
        assert_eq!(variants.len(), MAX_VARIANTS);
        let longest = variants.iter().map(|v| v.name.chars().count()).max();
        assert_eq!(longest, Some(MAX_VARIANT_NAME_LEN));
        let bytes = variants.iter().map(|v| v.name.len()).max().unwrap();
        assert_eq!(bytes, MAX_AXES * (64 + 1 + 128) + MAX_AXES - 1);
        assert!(variants.iter().all(|v| v.env.len() == MAX_AXES));
        // The eighth axis turns fastest among those with two values.
        let second: Vec<String> = (0..MAX_AXES)
            .map(|i| {
                let value = if i < 7 { "v" } else { "é" };
                format!("{}={}", name(i), value.repeat(64))
            })
            .collect();
        assert_eq!(variants[1].name, second.join(","));
    }

    /// The agent sets these itself and drops (or overrides) a pipeline's.
    #[test]
    fn reserved_variable_names_are_refused_at_the_name() {
        for (yaml, at) in [
            ("A: [x]\nRAIBID_SHA: [y]", (2, 1)),
            ("A: [x]\nRAIBID_MATRIX: [y]", (2, 1)),
            ("A: [x]\ninclude:\n  - RAIBID_POOL: y", (3, 5)),
        ] {
            let (line, col, msg) = error_at(yaml);
            assert_eq!((line, col), at, "{yaml}: {msg}");
            assert!(msg.contains("RAIBID_* names are set by the agent"), "{msg}");
        }
        assert!(matrix("CI: [x]\nRAIBID: [y]").is_ok());
    }

    #[test]
    fn include_values_are_checked_at_the_value() {
        let (line, col, msg) = error_at("A: [x]\ninclude:\n  - A: \"y,z\"");
        assert_eq!((line, col), (3, 8));
        assert!(msg.contains("blur the variant's name"), "{msg}");
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
