//! Property-based fuzzing of `.raibid.yaml`: the file is written by whoever can push, so
//! parsing and matrix expansion must answer anything with a pipeline or an error, never a
//! panic, and every pipeline they accept must keep the promises the agent relies on.
//!
//! `PROPTEST_CASES` raises the case count (`scripts/fuzz.sh` runs them long).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use raibid_pipeline::{MAX_VARIANTS, PIPELINE_FILE, Pipeline, parse, parse_bytes};

/// Pieces of pipeline files, so generated text is often close to valid YAML of the schema.
const TOKENS: [&str; 48] = [
    "steps:",
    "matrix:",
    "include:",
    "exclude:",
    "env:",
    "image:",
    "timeout:",
    "clone:",
    "submodules:",
    "lfs:",
    "when:",
    "branch:",
    "event:",
    "tag:",
    "secrets:",
    "name:",
    "run:",
    "image-build:",
    "context:",
    "tags:",
    "platforms:",
    "push:",
    "- ",
    "  ",
    "\n",
    ": ",
    ", ",
    "[",
    "]",
    "{",
    "}",
    "&a ",
    "*a",
    "'",
    "\"",
    "|",
    ">",
    "#",
    "---",
    "~",
    "null",
    "true",
    "10s",
    "1h30m",
    "RUST",
    "1.80",
    "main",
    "x",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS.to_vec()), 0..120).prop_map(|t| t.concat())
}

/// The guarantees documented on [`Pipeline`] and [`raibid_pipeline::Matrix`].
fn assert_sound(pipeline: &Pipeline) {
    assert!(!pipeline.steps.is_empty(), "steps are never empty");
    let names: BTreeSet<&str> = pipeline.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), pipeline.steps.len(), "step names are unique");
    let variants = pipeline.expand_matrix();
    assert!(!variants.is_empty());
    assert!(
        variants.len() <= MAX_VARIANTS,
        "{} variants",
        variants.len()
    );
    let unique: BTreeSet<&str> = variants.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(unique.len(), variants.len(), "variant names are unique");
}

fn name() -> impl Strategy<Value = String> {
    "[A-Z][A-Z0-9_]{0,6}"
}

fn value() -> impl Strategy<Value = String> {
    "[a-z0-9.]{1,6}"
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        if let Ok(p) = parse_bytes(PIPELINE_FILE, &bytes) {
            assert_sound(&p);
        }
    }

    /// Woodpecker's substitution, over text full of its operators and multi-byte characters.
    #[test]
    fn substitution_never_panics(text in "([$]{1,2}[{]?[A-Za-zé_]{0,3}[:#%/^,=}-]{0,3}[0-9é*.?]{0,2}[}]?| |x|\n|é){0,40}") {
        let values = |name: &str| name.len().is_multiple_of(2).then(|| format!("{name}é/.x"));
        let _ = raibid_pipeline::substitute::substitute(&text, &values);
        let _ = raibid_pipeline::parse_woodpecker_bytes(
            ".woodpecker.yaml",
            text.as_bytes(),
            false,
            &raibid_pipeline::Variables::Job(&values),
        );
    }

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        if let Ok(p) = parse(PIPELINE_FILE, &text) {
            assert_sound(&p);
        }
    }

    #[test]
    fn token_soup_never_panics(text in soup()) {
        match parse(PIPELINE_FILE, &text) {
            Ok(p) => assert_sound(&p),
            Err(e) => prop_assert!(e.line >= 1 && e.column >= 1, "{e}"),
        }
    }

    /// A well-formed matrix expands to the cartesian product of its axes, each variant carrying
    /// one value of every axis, or is refused for being over the cap.
    #[test]
    fn matrices_expand_to_the_product_of_their_axes(axes in prop::collection::btree_map(name(), prop::collection::btree_set(value(), 1..5), 1..5)) {
        let mut text = String::from("matrix:\n");
        for (axis, values) in &axes {
            let list: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
            text.push_str(&format!("  {axis}: [{}]\n", list.join(", ")));
        }
        text.push_str("steps:\n  - name: build\n    run: echo $RUST\n");
        let product: usize = axes.values().map(BTreeSet::len).product();
        match parse(PIPELINE_FILE, &text) {
            Ok(p) => {
                let variants = p.expand_matrix();
                prop_assert_eq!(variants.len(), product);
                for v in &variants {
                    let keys: BTreeSet<&String> = v.env.keys().collect();
                    prop_assert_eq!(keys, axes.keys().collect::<BTreeSet<_>>());
                    for (k, val) in &v.env {
                        prop_assert!(axes[k].contains(val));
                    }
                }
            }
            Err(e) => prop_assert!(product > MAX_VARIANTS, "refused {}: {}", text, e),
        }
    }

    /// `exclude` removes exactly the matching combinations; `include` adds the listed ones.
    #[test]
    fn exclude_and_include_do_what_they_say(a in prop::collection::btree_set(value(), 1..4), b in prop::collection::btree_set(value(), 1..4), drop in any::<prop::sample::Index>(), extra in value()) {
        let a: Vec<String> = a.into_iter().collect();
        let b: Vec<String> = b.into_iter().collect();
        let dropped = a[drop.index(a.len())].clone();
        let text = format!(
            "matrix:\n  A: [{}]\n  B: [{}]\n  exclude:\n    - A: \"{dropped}\"\n  include:\n    - A: \"{extra}-x\"\n      B: \"{extra}\"\nsteps:\n  - name: s\n    run: \"true\"\n",
            a.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(", "),
            b.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(", "),
        );
        let p = parse(PIPELINE_FILE, &text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let variants = p.expand_matrix();
        prop_assert_eq!(variants.len(), (a.len() - 1) * b.len() + 1);
        prop_assert!(variants.iter().all(|v| v.env.get("A") != Some(&dropped)));
        let included = BTreeMap::from([("A".to_owned(), format!("{extra}-x")), ("B".to_owned(), extra.clone())]);
        prop_assert!(variants.iter().any(|v| v.env == included));
    }
}
