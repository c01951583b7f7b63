//! Parses every sample under `tests/pipelines/` and a set of hostile inputs through the public
//! API, the way the server and the agent use it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use raibid_model::Event;
use raibid_pipeline::{
    Fetch, MAX_FILE_SIZE, PIPELINE_FILE, Pipeline, PipelineError, StepKind, TagContext, TagError,
    TriggerContext, parse, parse_bytes,
};

fn samples(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/pipelines")
        .join(kind);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn parse_sample(path: &Path) -> Result<Pipeline, PipelineError> {
    let name = path.file_name().unwrap().to_str().unwrap();
    parse_bytes(name, &fs::read(path).unwrap())
}

fn sample(name: &str) -> Pipeline {
    parse_sample(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/pipelines/valid")
            .join(name),
    )
    .unwrap()
}

fn err(text: &str) -> PipelineError {
    parse(PIPELINE_FILE, text).expect_err("the pipeline should be rejected")
}

#[test]
fn every_valid_sample_parses() {
    let files = samples("valid");
    assert!(files.len() >= 10);
    for path in files {
        if let Err(e) = parse_sample(&path) {
            panic!("{}: {e}", path.display());
        }
    }
}

/// (file, line, column, part of the message) for each sample under `tests/pipelines/invalid`.
const INVALID: &[(&str, usize, usize, &str)] = &[
    ("absolute-file.yaml", 4, 13, "is absolute"),
    ("bad-env-name.yaml", 3, 3, "not a valid variable name"),
    ("bad-event.yaml", 5, 21, r#"unknown event "merge_request""#),
    (
        "bad-failure.yaml",
        4,
        14,
        r#"unknown `failure` "continue"; use fail or ignore"#,
    ),
    ("bad-glob.yaml", 7, 11, r#"invalid glob "release/[""#),
    (
        "bad-pipeline-timeout.yaml",
        1,
        10,
        "longer than the 24h limit",
    ),
    ("bad-platform.yaml", 5, 19, "not a platform"),
    ("bad-secret-name.yaml", 4, 21, "not a valid variable name"),
    ("bad-status.yaml", 5, 25, r#"unknown status "failed""#),
    ("bad-step-env-name.yaml", 4, 12, "not a valid variable name"),
    (
        "bad-timeout.yaml",
        4,
        14,
        r#"invalid duration "10 minutes""#,
    ),
    (
        "both-run-and-image-build.yaml",
        2,
        5,
        "both `run` and `image-build`",
    ),
    ("clone-not-bool.yaml", 2, 15, "expected a boolean"),
    ("woodpecker-labels.yaml", 2, 3, "write `pool: gpu`"),
    (
        "woodpecker-detach.yaml",
        4,
        5,
        "steps.database: `detach` (Woodpecker's background steps) is not run: a container \
         beside the steps, reachable by its name, is a `services:` entry",
    ),
    (
        "skip-clone-with-clone.yaml",
        1,
        1,
        "`skip_clone: true` leaves the workspace empty",
    ),
    (
        "clone-unknown-key.yaml",
        3,
        10,
        "`clone` has no key `depth`",
    ),
    ("context-escapes.yaml", 4, 16, "leaves the repository"),
    ("duplicate-env-key.yaml", 3, 3, "given twice"),
    ("duplicate-secret.yaml", 4, 22, "listed twice"),
    ("duplicate-step-name.yaml", 6, 5, "used by an earlier step"),
    ("empty-name.yaml", 2, 11, "may not be empty"),
    ("empty-steps.yaml", 1, 8, "needs at least one step"),
    ("empty-when-list.yaml", 5, 15, "never matches"),
    ("image-build-no-tags.yaml", 4, 7, "needs `tags`"),
    ("image-on-image-build.yaml", 2, 5, "cannot have one"),
    ("image-with-spaces.yaml", 1, 8, "not an image reference"),
    ("matrix-bad-exclude.yaml", 2, 3, "never matches"),
    ("matrix-too-big.yaml", 2, 3, "the limit is 256"),
    ("merge-of-a-decimal.yaml", 8, 7, "unquoted decimal 1.2"),
    ("merge-of-a-list.yaml", 5, 7, "`<<` merges a mapping"),
    (
        "merge-of-unknown-key.yaml",
        6,
        5,
        "unknown field `timout` (did you mean `timeout`?), expected one of",
    ),
    ("missing-name.yaml", 2, 5, "no `name`"),
    ("missing-run.yaml", 5, 5, "has nothing to do"),
    ("missing-tag-placeholder-close.yaml", 4, 14, "never closed"),
    ("no-steps.yaml", 1, 1, "`steps` is missing"),
    ("run-is-a-list.yaml", 3, 10, "expected a shell script"),
    ("snake-case-key.yaml", 3, 5, "unknown field `image_build`"),
    ("step-is-a-string.yaml", 2, 5, "expected a step"),
    ("steps-is-a-string.yaml", 1, 8, "expected a list of steps"),
    ("tab-indent.yaml", 3, 1, "tab"),
    ("top-level-list.yaml", 1, 1, "expected a pipeline"),
    ("two-documents.yaml", 2, 1, "more than one YAML document"),
    (
        "unknown-placeholder.yaml",
        4,
        41,
        "unknown placeholder {commit}",
    ),
    ("unknown-step-key.yaml", 4, 5, "unknown field `command`"),
    (
        "unknown-path-key.yaml",
        7,
        9,
        "unknown field `excludes` (did you mean `exclude`?), expected one of `include`, `exclude`, `ignore_message`",
    ),
    (
        "unknown-top-key.yaml",
        2,
        1,
        "`stages` (GitLab's) is not read: steps run in the order written",
    ),
    (
        "yaml-syntax.yaml",
        4,
        4,
        "did not find expected '-' indicator",
    ),
    (
        "unterminated-quote.yaml",
        4,
        1,
        "end of stream, while scanning a quoted scalar",
    ),
    (
        "colon-in-plain-scalar.yaml",
        3,
        14,
        "mapping values are not allowed",
    ),
    ("zero-timeout.yaml", 1, 10, "zero"),
    (
        "matrix-too-many-variables.yaml",
        18,
        3,
        "more than 16 variables",
    ),
    (
        "reserved-env-name.yaml",
        3,
        3,
        "RAIBID_* names are set by the agent",
    ),
    (
        "env-on-image-build.yaml",
        2,
        5,
        "an `image-build` step gets no `env`",
    ),
    ("bad-tag-text.yaml", 4, 14, "contains '+'"),
    ("option-image.yaml", 1, 8, "starts with '-'"),
];

#[test]
fn every_invalid_sample_fails_at_the_right_place() {
    let files = samples("invalid");
    assert_eq!(
        files.len(),
        INVALID.len(),
        "every sample has an expectation"
    );
    let mut wrong = Vec::new();
    for path in files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let &(_, line, column, needle) = INVALID
            .iter()
            .find(|(file, ..)| *file == name)
            .unwrap_or_else(|| panic!("no expectation for {name}"));
        let shown = match parse_sample(&path) {
            Ok(_) => format!("{name}: parsed"),
            Err(e) => e.to_string(),
        };
        let as_expected = shown.starts_with(&format!("{name}:{line}:{column}: "))
            && shown.contains(needle)
            && !shown.contains(" at line ");
        if !as_expected {
            wrong.push(format!("expected {line}:{column} {needle:?}, got {shown}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_documented_example_parses_to_the_expected_model() {
    let p = sample("full.yaml");
    assert_eq!(p.image.as_deref(), Some("rust:1.85"));
    assert_eq!(p.env["CARGO_TERM_COLOR"], "always");
    assert_eq!(p.timeout, Some(Duration::from_secs(30 * 60)));
    assert_eq!(p.clone, raibid_pipeline::CloneOptions::default());
    assert_eq!(p.steps.len(), 2);

    let build = &p.steps[0];
    assert_eq!(build.name, "build");
    assert_eq!(
        build.kind,
        StepKind::Run {
            script: "cargo build --locked\n".to_owned()
        }
    );
    assert_eq!(
        build.env,
        BTreeMap::from([("FOO".to_owned(), "bar".to_owned())])
    );
    assert_eq!(build.timeout, Some(Duration::from_secs(600)));
    assert_eq!(
        build.when.blocks[0].event,
        [Event::Push, Event::PullRequest]
    );
    assert_eq!(build.secrets, ["CARGO_TOKEN"]);

    let image = &p.steps[1];
    let StepKind::ImageBuild(b) = &image.kind else {
        panic!("second step is an image build");
    };
    assert_eq!(b.context, ".");
    assert_eq!(b.file.as_deref(), Some("Containerfile"));
    assert_eq!(b.platforms, ["linux/amd64", "linux/arm64"]);
    assert!(b.push);
    assert_eq!(b.build_args["A"], "b");
    assert!(image.secrets.is_empty() && image.env.is_empty());

    let variants: Vec<String> = p.expand_matrix().into_iter().map(|v| v.name).collect();
    assert_eq!(
        variants,
        [
            "RUST=1.80,TARGET=x86_64",
            "RUST=1.80,TARGET=aarch64",
            "RUST=stable,TARGET=x86_64",
            "RUST=stable,TARGET=aarch64",
        ]
    );
}

#[test]
fn step_filtering_on_the_documented_example() {
    let p = sample("full.yaml");
    let run = |event, branch: Option<&str>, tag: Option<&str>| -> Vec<&str> {
        let ctx = TriggerContext::new(event, branch.map(str::to_owned), tag.map(str::to_owned));
        p.steps
            .iter()
            .filter(|s| s.when.matches(&ctx))
            .map(|s| s.name.as_str())
            .collect()
    };
    assert_eq!(run(Event::Push, Some("main"), None), ["build", "image"]);
    assert_eq!(run(Event::Push, Some("dev"), None), ["image"]);
    assert_eq!(run(Event::Tag, None, Some("v1.0")), ["image"]);
    assert_eq!(run(Event::PullRequest, Some("main"), None), ["build"]);
    assert_eq!(run(Event::Manual, Some("main"), None), Vec::<&str>::new());

    let filters = sample("filters-single-strings.yaml");
    let names = |ctx: TriggerContext| -> Vec<String> {
        filters
            .steps
            .iter()
            .filter(|s| s.when.matches(&ctx))
            .map(|s| s.name.clone())
            .collect()
    };
    let tag = TriggerContext::new(Event::Tag, None, Some("v1.2.3".to_owned()));
    assert_eq!(names(tag), ["release"]);
    let manual = TriggerContext::new(Event::Manual, Some("feature/deep/branch".to_owned()), None);
    assert_eq!(names(manual), ["nightly"]);
}

/// `when: path` on the monorepo example: each step runs for its own part of the tree, a step
/// without a filter always, and every step when the changes are not known.
#[test]
fn path_filters_on_the_monorepo_example() {
    let p = sample("monorepo.yaml");
    let run = |files: Option<&[&str]>, message: &str| -> Vec<&str> {
        let ctx = TriggerContext {
            changed_files: files.map(|f| f.iter().map(|s| (*s).to_owned()).collect()),
            message: Some(message.to_owned()),
            ..TriggerContext::new(Event::Push, Some("main".to_owned()), None)
        };
        p.steps
            .iter()
            .filter(|s| s.when.matches(&ctx))
            .map(|s| s.name.as_str())
            .collect()
    };
    assert_eq!(
        run(Some(&["api/src/main.rs"]), "fix"),
        ["api", "everything"]
    );
    assert_eq!(run(Some(&["Cargo.lock"]), "bump"), ["api", "everything"]);
    assert_eq!(run(Some(&["web/README.md"]), "typo"), ["everything"]);
    assert_eq!(
        run(Some(&["web/README.md"]), "typo [all]"),
        ["web", "everything"]
    );
    assert_eq!(
        run(Some(&["web/app.ts", "docs/index.md"]), "x"),
        ["web", "docs", "everything"]
    );
    assert_eq!(run(None, "x"), ["api", "web", "docs", "everything"]);
}

/// Every variant of a matrix runs its image builds: tags without `{matrix}` would be pushed by
/// each variant in turn, the last one winning.
#[test]
fn image_builds_in_a_matrix_need_the_variant_in_every_tag() {
    let yaml = "matrix: { RUST: [stable, beta] }\nsteps:\n  - name: image\n    image-build:\n      tags: [\"{registry}/{repo}:{sha}-{matrix}\", \"{registry}/{repo}:latest\"]\n";
    let e = raibid_pipeline::parse(".raibid.yaml", yaml)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("step image: every matrix variant runs this image build")
            && e.contains("\"{registry}/{repo}:latest\" has none"),
        "{e}"
    );
    let colliding = "matrix: { TARGET: [linux/amd64, linux-amd64] }\nsteps:\n  - name: image\n    image-build:\n      tags: [\"{registry}/{repo}:{matrix}\"]\n";
    let e = raibid_pipeline::parse(".raibid.yaml", colliding)
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"TARGET-linux-amd64\""), "{e}");
    let without_matrix =
        "steps:\n  - name: image\n    image-build:\n      tags: [\"{registry}/{repo}:{matrix}\"]\n";
    let p = raibid_pipeline::parse(".raibid.yaml", without_matrix).unwrap();
    let StepKind::ImageBuild(b) = &p.steps[0].kind else {
        panic!("an image build");
    };
    let ctx = TagContext {
        registry: "r".to_owned(),
        repo: "a/b".to_owned(),
        sha: "abc".to_owned(),
        branch: None,
        tag: None,
        matrix: None,
    };
    let e = b.render_tags(&ctx).unwrap_err().to_string();
    assert!(e.contains("pipeline without `matrix:`"), "{e}");
}

#[test]
fn tags_render_for_branch_and_tag_builds() {
    let p = sample("full.yaml");
    let StepKind::ImageBuild(b) = &p.steps[1].kind else {
        panic!("second step is an image build");
    };
    let branch_build = TagContext {
        registry: "registry.local:5000".to_owned(),
        repo: "Acme/Widget".to_owned(),
        sha: "4b825dc642cb6eb9a060e54bf8d69288fbee4904".to_owned(),
        branch: Some("release/1.0".to_owned()),
        tag: None,
        matrix: Some("RUST=1.80,TARGET=x86_64".to_owned()),
    };
    assert_eq!(
        b.render_tags(&branch_build).unwrap(),
        [
            "registry.local:5000/acme/widget:4b825dc642cb6eb9a060e54bf8d69288fbee4904-RUST-1.80-TARGET-x86_64",
            "registry.local:5000/acme/widget:release-1.0-RUST-1.80-TARGET-x86_64",
        ]
    );
    let tag_build = TagContext {
        branch: None,
        tag: Some("v1.0".to_owned()),
        ..branch_build
    };
    let e = b.render_tags(&tag_build).unwrap_err();
    assert!(
        matches!(
            &e,
            TagError::Missing {
                placeholder: "branch",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("{branch}"), "{e}");
}

#[test]
fn matrix_include_and_exclude() {
    let p = sample("matrix-include-exclude.yaml");
    let names: Vec<String> = p.expand_matrix().into_iter().map(|v| v.name).collect();
    assert_eq!(
        names,
        [
            "OS=linux,RUST=1.80",
            "OS=linux,RUST=stable",
            "OS=linux,RUST=nightly",
            "OS=mac,RUST=1.80",
            "OS=mac,RUST=stable",
            "MSRV=true,OS=linux,RUST=1.70",
        ]
    );
    let last = p.expand_matrix().pop().unwrap();
    assert_eq!(last.env["MSRV"], "true");
}

#[test]
fn no_matrix_is_one_unnamed_variant() {
    let variants = sample("minimal.yaml").expand_matrix();
    assert_eq!(variants.len(), 1);
    assert_eq!(variants[0].name, "");
    assert!(variants[0].env.is_empty());
}

#[test]
fn yaml_features_users_rely_on() {
    let anchors = sample("anchors.yaml");
    assert_eq!(anchors.steps[0].env, anchors.steps[1].env);
    let values = sample("integer-timeouts-and-values.yaml");
    assert_eq!(values.timeout, Some(Duration::from_secs(3600)));
    assert_eq!(values.env["RETRIES"], "3");
    assert_eq!(values.env["VERBOSE"], "true");
    assert_eq!(
        values.env["VERSION"], "1.10",
        "kept as written, not as the float 1.1"
    );
    assert_eq!(values.steps[0].timeout, Some(Duration::from_secs(5400)));
    let empty = sample("empty-optional-sections.yaml");
    assert_eq!(empty.image, None);
    assert_eq!(empty.matrix, None);
    let crlf = sample("crlf.yaml");
    assert_eq!(
        crlf.steps[0].kind,
        StepKind::Run {
            script: "echo hi".to_owned()
        }
    );
    let bom = parse(PIPELINE_FILE, "\u{feff}steps: [{name: a, run: x}]\n").unwrap();
    assert_eq!(bom.steps[0].name, "a");
}

#[test]
fn empty_and_blank_files() {
    for text in ["", "\n\n", "   \n", "# only a comment\n# and another\n"] {
        let e = err(text);
        assert_eq!((e.line, e.column), (1, 1), "{text:?}");
        assert!(e.message.contains("empty"), "{e}");
    }
    let e = err("~\n");
    assert!(e.message.contains("expected a pipeline"), "{e}");
}

#[test]
fn non_mapping_documents() {
    for (text, line, column) in [
        ("- a\n- b\n", 1, 1),
        ("just a string\n", 1, 1),
        ("\n\n  42\n", 3, 3),
        ("[steps]\n", 1, 1),
    ] {
        let e = err(text);
        assert_eq!((e.line, e.column), (line, column), "{text:?}: {e}");
        assert!(e.message.contains("expected a pipeline"), "{e}");
    }
}

#[test]
fn invalid_utf8_is_reported_at_the_first_bad_byte() {
    let mut bytes = b"steps:\n  - name: a\n    run: caf".to_vec();
    bytes.extend_from_slice(&[0xC3, 0x28]);
    let e = parse_bytes("x.yaml", &bytes).unwrap_err();
    assert_eq!((e.line, e.column), (3, 13));
    assert!(e.message.contains("UTF-8"), "{e}");
    let e = parse_bytes("x.yaml", &[0xFF]).unwrap_err();
    assert_eq!((e.line, e.column), (1, 1));
    let mut multibyte = "é: x\n".as_bytes().to_vec();
    multibyte.extend_from_slice(&[b'a', 0x80]);
    let e = parse_bytes("x.yaml", &multibyte).unwrap_err();
    assert_eq!((e.line, e.column), (2, 2));
}

#[test]
fn huge_numbers() {
    let e = err("timeout: 99999999999999999999999999999999999999999\nsteps: [{name: a, run: x}]\n");
    assert_eq!((e.line, e.column), (1, 10));
    let e = err("timeout: -99999999999999999999999\nsteps: [{name: a, run: x}]\n");
    assert!(e.message.contains("negative"), "{e}");
    let e = err("timeout: 1e999\nsteps: [{name: a, run: x}]\n");
    assert_eq!((e.line, e.column), (1, 10));
    let big = "9".repeat(5000);
    let e = err(&format!("timeout: {big}\nsteps: [{{name: a, run: x}}]\n"));
    assert_eq!((e.line, e.column), (1, 10));
    // A huge number where a string is expected is just text.
    let p = parse(
        PIPELINE_FILE,
        &format!("env: {{ N: {big} }}\nsteps: [{{name: a, run: x}}]\n"),
    )
    .unwrap();
    assert_eq!(p.env["N"], big);
}

#[test]
fn tabs_are_explained() {
    let e = err("steps:\n\t- name: a\n\t  run: x\n");
    assert_eq!((e.line, e.column), (2, 1));
    assert!(e.message.contains("spaces"), "{e}");
}

#[test]
fn control_characters_are_refused() {
    let e = err("steps: [{name: a, run: x}]\nimage: \"a\\0b\"\n");
    assert_eq!(e.line, 2);
    let e = err("steps:\n  - name: \"a\\nb\"\n    run: x\n");
    assert_eq!((e.line, e.column), (2, 11));
    assert!(e.message.contains("control character"), "{e}");
    let e = err("steps: [{name: a, run: x}]\u{0}\n");
    assert_eq!(e.line, 1);
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    for depth in [200, 100_000] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        for text in [
            nested.clone(),
            format!("steps: {nested}\n"),
            format!("env: {{ A: {nested} }}\nsteps: [{{name: a, run: x}}]\n"),
            format!("steps:\n  - name: a\n    run: x\n    when: {{ branch: {nested} }}\n"),
            format!("steps:\n  - name: a\n    run: x\n    timeout: {nested}\n"),
        ] {
            let e = err(&text);
            assert!(e.line >= 1 && e.column >= 1, "{e}");
        }
        let maps = format!("{}{}", "{a: ".repeat(depth), "}".repeat(depth));
        let e = err(&format!("matrix: {maps}\nsteps: [{{name: a, run: x}}]\n"));
        assert!(e.line >= 1, "{e}");
    }
}

/// The classic "billion laughs": ten levels of nine aliases each.
fn laughs(key: &str) -> String {
    let mut text = format!("{key}: [&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]");
    for level in 1..10 {
        let prev = level - 1;
        let refs = vec![format!("*l{prev}"); 9].join(", ");
        text.push_str(&format!(", &l{level} [{refs}]"));
    }
    text.push_str("]\n");
    text
}

#[test]
fn alias_bombs_fail_fast() {
    let started = Instant::now();
    for text in [
        laughs("bomb") + "steps: [{name: a, run: x}]\n",
        laughs("env") + "steps: [{name: a, run: x}]\n",
        format!("matrix:\n  {}steps: [{{name: a, run: x}}]\n", laughs("A")),
        format!(
            "steps:\n  - name: a\n    run: x\n    when:\n      {}",
            laughs("branch")
        ),
        format!("steps:\n  - name: a\n    run: x\n    {}", laughs("secrets")),
        format!("steps: [{{name: a, run: x}}]\n{}", laughs("image")),
    ] {
        let e = err(&text);
        assert!(e.line >= 1 && e.column >= 1, "{e}");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Aliases of mappings full of aliases, where the schema really does expand them. serde_yaml's
/// repetition limit used to stop this; the caps on an `include` entry's variables and on the
/// number of entries now stop it first, at the first one too many.
#[test]
fn alias_expansion_is_stopped_by_the_matrix_caps() {
    for (keys, needle) in [
        (200, "an `include` entry has more than 16 variables"),
        (15, "more than 256 `include`/`exclude` entries"),
    ] {
        let keys: Vec<String> = (0..keys).map(|i| format!("K{i}: *v")).collect();
        let refs = vec!["*e"; 3000].join(", ");
        let text = format!(
            "matrix:\n  A: [x]\n  include: [&e {{K: &v v, {}}}, {refs}]\nsteps: [{{name: a, run: x}}]\n",
            keys.join(", ")
        );
        let e = err(&text);
        assert!(e.message.contains(needle), "{e}");
        assert_eq!(e.line, 3, "{e}");
    }
}

#[test]
fn oversized_files_are_refused_before_parsing() {
    let mut text = String::from("steps: [{name: a, run: x}]\n");
    text.push_str(&"#".repeat(MAX_FILE_SIZE));
    let e = err(&text);
    assert_eq!((e.line, e.column), (1, 1));
    assert!(e.message.contains("at most"), "{e}");
}

#[test]
fn many_steps_and_long_scripts_are_fine() {
    let steps: String = (0..500)
        .map(|i| format!("  - name: step-{i}\n    run: echo {i}\n"))
        .collect();
    let p = parse(PIPELINE_FILE, &format!("steps:\n{steps}")).unwrap();
    assert_eq!(p.steps.len(), 500);
    let script = "echo x\n".repeat(10_000);
    let indented: String = script.lines().map(|l| format!("      {l}\n")).collect();
    let p = parse(
        PIPELINE_FILE,
        &format!("steps:\n  - name: a\n    run: |\n{indented}"),
    )
    .unwrap();
    assert_eq!(p.steps[0].kind, StepKind::Run { script });
}

#[test]
fn errors_name_the_file_they_were_given() {
    let e = parse("ci/custom.yaml", "steps: []\n").unwrap_err();
    assert!(e.to_string().starts_with("ci/custom.yaml:1:8: "), "{e}");
}

/// A `when` no build can match is an error at the step, not a step skipped on every run.
#[test]
fn a_when_that_can_never_match_is_an_error() {
    let yaml = "steps:\n  - name: release\n    run: make release\n    when: { branch: main, tag: \"v*\" }\n";
    let e = raibid_pipeline::parse(".raibid.yaml", yaml)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(".raibid.yaml:") && e.contains("step \"release\": `when` can never match"),
        "{e}"
    );
}

/// Woodpecker's list form of `when`, for a step and for the pipeline: any block may match, and
/// a block's errors are reported in that block of the file.
#[test]
fn when_takes_a_list_of_blocks_at_both_levels() {
    let text = "when:\n  - { event: push, branch: main }\n  - event: tag\nsteps:\n  - name: test\n    run: make test\n    when:\n      - branch: main\n      - event: tag\n";
    let p = parse(PIPELINE_FILE, text).unwrap();
    let main = TriggerContext::new(Event::Push, Some("main".to_owned()), None);
    let dev = TriggerContext::new(Event::Push, Some("dev".to_owned()), None);
    let tag = TriggerContext::new(Event::Tag, None, Some("v1".to_owned()));
    for when in [&p.when, &p.steps[0].when] {
        assert_eq!(when.blocks.len(), 2);
        assert!(when.matches(&main) && when.matches(&tag) && !when.matches(&dev));
    }
    assert_eq!(p.when.mismatch(&dev), Some(vec!["branch", "event"]));

    const STEP: &str = "steps:\n  - name: test\n    run: make test\n    when:\n";
    for (text, line, column, needle) in [
        (
            format!("{STEP}      - branch: main\n      - event: tag\n        tag: \"[\"\n"),
            7,
            14,
            "invalid glob",
        ),
        (
            format!("{STEP}      - event: push\n      - branch: main\n        event: tag\n"),
            6,
            9,
            "block 2 of the step's `when` can never match",
        ),
        (
            format!("{STEP}      []\n"),
            5,
            7,
            "an empty list never matches",
        ),
        (
            format!(
                "when:\n  - branch: main\n  - {{ event: tag, status: failure }}\n{STEP}      event: push\n"
            ),
            3,
            19,
            "`status` is for steps",
        ),
        (
            format!("when: []\n{STEP}      event: push\n"),
            1,
            7,
            "an empty list never matches; remove `when` to always run",
        ),
    ] {
        let e = err(&text).to_string();
        assert!(
            e.starts_with(&format!(".raibid.yaml:{line}:{column}: ")) && e.contains(needle),
            "{text}: {e}"
        );
    }
}

/// A top-level `when` (Woodpecker's workflow filter) is a step's `when` without `status`, read
/// the same way and refused where it is wrong.
#[test]
fn a_top_level_when_filters_the_whole_pipeline() {
    const STEPS: &str = "steps:\n  - name: test\n    run: make test\n";
    let p = parse(
        PIPELINE_FILE,
        &format!("when: {{ event: [push, pull_request], branch: main }}\n{STEPS}"),
    )
    .unwrap();
    let on = |event, branch: &str| TriggerContext::new(event, Some(branch.to_owned()), None);
    assert!(p.when.matches(&on(Event::Push, "main")));
    assert!(p.when.matches(&on(Event::PullRequest, "main")));
    assert_eq!(
        p.when.mismatch(&on(Event::Push, "dev")),
        Some(vec!["branch"])
    );
    assert_eq!(
        p.when.mismatch(&on(Event::Cron, "main")),
        Some(vec!["event"])
    );
    assert!(
        p.steps[0].when.is_empty(),
        "the steps keep their own `when`"
    );
    assert!(parse(PIPELINE_FILE, STEPS).unwrap().when.is_empty());
    assert!(
        parse(PIPELINE_FILE, &format!("when:\n{STEPS}"))
            .unwrap()
            .when
            .is_empty()
    );

    for (text, line, column, needle) in [
        (
            format!("{STEPS}when:\n  branch: main\n  status: failure\n"),
            6,
            3,
            "`status` is for steps",
        ),
        (
            format!("when: {{ event: push, statuses: failure }}\n{STEPS}"),
            1,
            22,
            "unknown field `statuses`, expected one of `branch`, `event`, `tag`, `ref`, `repo`, `cron`, `path`",
        ),
        (
            format!("when:\n  branch: main\n  tag: \"v*\"\n{STEPS}"),
            2,
            3,
            "the pipeline's `when` can never match: `branch` and `tag` together",
        ),
        (
            format!("when: {{ path: /src }}\n{STEPS}"),
            1,
            15,
            "relative to the repository root",
        ),
    ] {
        let e = err(&text).to_string();
        assert!(
            e.starts_with(&format!(".raibid.yaml:{line}:{column}: ")) && e.contains(needle),
            "{text}: {e}"
        );
    }
}

/// Axes with a single value multiply nothing, so the job cap let a 14 KB file have 1008 of
/// them: expanding it took seconds per call, and each variant's name was kilobytes long.
#[test]
fn a_matrix_of_many_single_value_axes_is_refused_at_the_first_one_too_many() {
    let mut text = String::from("matrix:\n");
    text.extend((0..8).map(|i| format!("  PAIR_{i}: [a, b]\n")));
    text.extend((0..1000).map(|i| format!("  ONE_{i:04}: [x]\n")));
    text.push_str("steps:\n  - name: a\n    run: x\n");
    assert!(text.len() > 14_000);
    let e = err(&text);
    assert_eq!((e.line, e.column), (18, 3), "{e}");
    assert!(e.message.contains("more than 16 variables"), "{e}");
    let widest: String = (0..raibid_pipeline::MAX_AXES)
        .map(|i| format!("  V{i}: [a, b]\n"))
        .collect();
    let e = err(&format!("matrix:\n{widest}steps: [{{name: a, run: x}}]\n"));
    assert!(e.message.contains("65536 jobs"), "{e}");
}

/// Tag text that no build can render to a valid reference fails at parse, at the tag, instead
/// of in every run after the steps before it.
#[test]
fn invalid_tag_text_is_refused_at_the_tag() {
    for (tag, needle) in [
        ("{registry}/{repo}:v1+build", "contains '+'"),
        (
            "{registry}/{repo}/{matrix}:{sha}",
            "{matrix} is in the repository path",
        ),
        (
            "{registry}/{repo}/{branch}",
            "{branch} is in the repository path",
        ),
        ("{registry}/Acme/app:1", "repository names are lowercase"),
        ("{registry}/{repo}:-rc", "starts with '-'"),
    ] {
        let text = format!(
            "steps:\n  - name: image\n    image-build:\n      tags:\n        - x:1\n        - \"{tag}\"\n"
        );
        let e = err(&text);
        assert_eq!((e.line, e.column), (6, 11), "{e}");
        assert!(e.message.contains(needle), "{tag}: {e}");
    }
    let e = err(
        "steps:\n  - name: image\n    image-build:\n      tags: [x]\n      cache: \"{registry}/{repo}/{matrix}\"\n",
    );
    assert_eq!((e.line, e.column), (5, 14), "{e}");
    assert!(
        e.message.contains("{matrix} is in the repository path"),
        "{e}"
    );
}

/// `{sha}-{matrix}` is at most 64 + 1 + the longest variant's `{matrix}`: over 128, every run
/// would fail after its earlier steps. Found wherever the matrix is in the file.
#[test]
fn tags_too_long_for_the_matrix_are_refused_at_the_tag() {
    let matrix = |value: &str| format!("matrix:\n  TARGET: [a, \"{value}\"]\n");
    let steps = "steps:\n  - name: image\n    image-build:\n      tags:\n        - \"{registry}/{repo}:{short_sha}-{matrix}\"\n        - \"{registry}/{repo}:{sha}-{matrix}\"\n";
    // `TARGET-` and 56 characters: 64 + 1 + 63 = 128.
    let fits = "v".repeat(56);
    for text in [
        format!("{}{steps}", matrix(&fits)),
        format!("{steps}{}", matrix(&fits)),
    ] {
        parse(PIPELINE_FILE, &text).unwrap();
    }
    let long = "v".repeat(57);
    for (text, line) in [
        (format!("{}{steps}", matrix(&long)), 8),
        (format!("{steps}{}", matrix(&long)), 6),
    ] {
        let e = err(&text);
        assert_eq!((e.line, e.column), (line, 11), "{e}");
        assert!(
            e.message.contains("can render to 129 characters")
                && e.message.contains("{matrix} is up to 64 in this matrix"),
            "{e}"
        );
    }
}

#[test]
fn option_like_images_and_reserved_names_are_refused_where_written() {
    let e = err("steps:\n  - name: a\n    run: x\n    image: \"-v\"\n");
    assert_eq!((e.line, e.column), (4, 12), "{e}");
    assert!(e.message.contains("starts with '-'"), "{e}");
    let e = err("matrix:\n  RAIBID_REF: [a]\nsteps: [{name: a, run: x}]\n");
    assert_eq!((e.line, e.column), (2, 3), "{e}");
    assert!(
        e.message.contains("RAIBID_* names are set by the agent"),
        "{e}"
    );
    // CI and CI_* are the pipeline's to override, as the agent lets them be.
    let p = parse(
        PIPELINE_FILE,
        "env: { CI: x, CI_REPO: y, RAIBID_MATRIX: z }\nsteps: [{name: a, run: x}]\n",
    )
    .unwrap();
    assert_eq!(p.env.len(), 3);
    let e = err("steps:\n  - name: image\n    image-build: { tags: [x] }\n    env: { A: b }\n");
    assert_eq!((e.line, e.column), (2, 5), "{e}");
    assert!(e.message.contains("gets no `env`"), "{e}");
}

#[test]
fn interruptible_defaults_to_true_and_takes_a_boolean() {
    let steps = "steps:\n  - name: deploy\n    run: ./deploy.sh\n";
    let parsed = |text: &str| raibid_pipeline::parse(".raibid.yaml", text).unwrap();
    assert!(parsed(steps).interruptible);
    assert!(!parsed(&format!("interruptible: false\n{steps}")).interruptible);
    let e = err(&format!("interruptible: later\n{steps}")).to_string();
    assert!(
        e.starts_with(".raibid.yaml:1:16: ") && e.contains("expected a boolean"),
        "{e}"
    );
}

/// As in Woodpecker, a step may wait for steps written after it; names that are no step and
/// steps waiting for each other are errors at the step.
#[test]
fn steps_may_depend_on_steps_in_any_order_but_not_in_a_circle() {
    let p = parse(
        PIPELINE_FILE,
        "steps:\n  - name: test\n    run: t\n    depends_on: [build]\n  - name: build\n    run: b\n    depends_on: []\n",
    )
    .unwrap();
    assert_eq!(p.steps[0].depends_on, Some(vec!["build".to_owned()]));
    assert!(p.runs_as_graph());

    let e =
        err("steps:\n  - name: a\n    run: a\n  - name: b\n    run: b\n    depends_on: [a, bee]\n");
    assert_eq!((e.line, e.column), (4, 5), "{e}");
    assert!(
        e.message
            .contains("step \"b\" depends on \"bee\", which is not a step of this pipeline"),
        "{e}"
    );

    let e = err(
        "steps:\n  - name: a\n    run: a\n  - name: b\n    run: b\n    depends_on: [c]\n  - name: c\n    run: c\n    depends_on: [b]\n",
    );
    assert_eq!((e.line, e.column), (4, 5), "{e}");
    assert!(
        e.message
            .contains("steps b, c wait for each other through `depends_on`"),
        "{e}"
    );
}

/// A step's `when: matrix` must name the matrix's variables, which may be written after the
/// steps: the error is at the step all the same.
#[test]
fn a_matrix_filter_names_variables_of_the_matrix() {
    let steps = "steps:\n  - name: a\n    run: a\n  - name: publish\n    run: p\n    when: { matrix: { RUST: stable } }\n";
    let p = parse(
        PIPELINE_FILE,
        &format!("{steps}matrix:\n  include:\n    - {{ RUST: stable }}\n"),
    )
    .unwrap();
    assert_eq!(p.steps[1].when.blocks[0].matrix["RUST"], "stable");

    let e = err(&format!("{steps}matrix:\n  GO: [\"1.22\"]\n"));
    assert_eq!((e.line, e.column), (4, 5), "{e}");
    assert!(
        e.message.contains(
            "step \"publish\": `when: matrix` names \"RUST\", which is not a variable of the \
             pipeline's matrix (GO)"
        ),
        "{e}"
    );
    let e = err(steps);
    assert_eq!((e.line, e.column), (4, 5), "{e}");
    assert!(e.message.contains("the pipeline has no `matrix`"), "{e}");
}

/// A Woodpecker file without `clone:` is checked out as Woodpecker's clone step would: LFS files
/// and submodules when the commit has them, tags on tag events. The same text as raibid's own
/// file fetches the commit alone, and `skip_clone` nothing.
#[test]
fn a_woodpecker_file_gets_woodpecker_s_clone_defaults() {
    use raibid_pipeline::{CloneOptions, Variables, parse_woodpecker_bytes};
    const NONE: Variables<'static> = Variables::Job(&|_| None);
    let text = b"steps:\n  - name: a\n    image: alpine\n    commands: [ls]\n";
    for workflow in [false, true] {
        let p = parse_woodpecker_bytes(".woodpecker.yaml", text, workflow, &NONE).unwrap();
        assert_eq!(p.clone, CloneOptions::WOODPECKER);
    }
    assert_eq!(
        parse_bytes(".raibid.yaml", text).unwrap().clone,
        CloneOptions::default()
    );
    let skipped = b"skip_clone: true\nsteps:\n  - name: a\n    image: alpine\n    commands: [ls]\n";
    let p = parse_woodpecker_bytes(".woodpecker.yaml", skipped, false, &NONE).unwrap();
    assert_eq!(p.clone, CloneOptions::default());
    let told = b"clone:\n  git:\n    image: woodpeckerci/plugin-git\n    settings: { lfs: false, recursive: false, tags: false }\nsteps:\n  - name: a\n    image: alpine\n    commands: [ls]\n";
    let p = parse_woodpecker_bytes(".woodpecker.yaml", told, false, &NONE).unwrap();
    assert_eq!(p.clone, CloneOptions::default());
    // The flag does not outlive the parse.
    assert_eq!(
        parse_bytes(".raibid.yaml", text).unwrap().clone,
        CloneOptions::default()
    );
}

/// A Woodpecker file's `${NAME}` are substituted before it is read: from the job's variables
/// (a missing one an error at its line and column), or, without a job, with each variable's
/// own name; a bad substitution is refused where it starts.
#[test]
fn a_woodpecker_file_is_substituted_before_it_is_read() {
    use raibid_pipeline::{Variables, parse_woodpecker_bytes};
    let text = b"steps:\n  - name: build\n    image: golang:${GO_VERSION:-1.22}\n    commands:\n      - go build -o app-${CI_COMMIT_SHA:0:8}${CI_COMMIT_TAG}\n      - echo $${HOME}\n";
    let ci = |name: &str| (name == "CI_COMMIT_SHA").then(|| "0123456789abcdef".to_owned());
    let p = parse_woodpecker_bytes(".woodpecker.yaml", text, false, &Variables::Job(&ci)).unwrap();
    assert_eq!(p.steps[0].image.as_deref(), Some("golang:1.22"));
    let StepKind::Run { script } = &p.steps[0].kind else {
        panic!("{:?}", p.steps[0].kind);
    };
    assert_eq!(script, "go build -o app-01234567\necho ${HOME}\n");

    // A `CI_*` variable the job does not have is empty (no tag on a push); any other is an
    // error at its line and column.
    let none = |_: &str| None;
    let p =
        parse_woodpecker_bytes(".woodpecker.yaml", text, false, &Variables::Job(&none)).unwrap();
    let StepKind::Run { script } = &p.steps[0].kind else {
        panic!("{:?}", p.steps[0].kind);
    };
    assert_eq!(script, "go build -o app-\necho ${HOME}\n");
    let home = b"steps:\n  - name: build\n    commands:\n      - cd ${HOME}\n";
    let e = parse_woodpecker_bytes(".woodpecker.yaml", home, false, &Variables::Job(&none))
        .unwrap_err();
    assert_eq!((e.line, e.column), (4, 12), "{e}");
    assert!(e.message.starts_with("no variable HOME for"), "{e}");

    let p =
        parse_woodpecker_bytes(".woodpecker.yaml", text, false, &Variables::Known(&none)).unwrap();
    let StepKind::Run { script } = &p.steps[0].kind else {
        panic!("{:?}", p.steps[0].kind);
    };
    assert_eq!(
        script,
        "go build -o app-CI_COMMICI_COMMIT_TAG\necho ${HOME}\n"
    );

    let bad = b"steps:\n  - name: build\n    commands:\n      - echo ${CI_COMMIT_SHA\n";
    let e = parse_woodpecker_bytes(".woodpecker.yaml", bad, false, &Variables::Known(&none))
        .unwrap_err();
    assert_eq!((e.line, e.column), (4, 14), "{e}");
    assert!(e.message.contains("bad substitution"), "{e}");
    // raibid's own files are read as written.
    assert!(parse_bytes(".raibid.yaml", bad).is_ok());
}

/// A file written for Woodpecker 2 runs as it is.
#[test]
fn a_woodpecker_file_parses_as_written() {
    let p = sample("woodpecker-style.yaml");
    let names: Vec<&str> = p.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["lint", "test", "release", "notify"]);
    assert!(!p.skip_clone);
    assert_eq!(p.services[0].name, "database");
    assert_eq!(p.services[0].env["POSTGRES_PASSWORD"], "test");
    // What the clone step's settings leave out (`recursive`) is plugin-git's default.
    assert_eq!(
        p.clone,
        raibid_pipeline::CloneOptions {
            tags: Fetch::Yes,
            lfs: Fetch::No,
            submodules: Fetch::Auto,
        }
    );
    let notify = &p.steps[3];
    assert_eq!(notify.directory.as_deref(), Some("web"));
    let StepKind::Plugin { settings } = &notify.kind else {
        panic!("{:?}", notify.kind);
    };
    assert_eq!(
        settings.env(&|name| Some(format!("<{name}>"))).unwrap(),
        [
            ("PLUGIN_DEBUG".to_string(), "true".to_string()),
            ("PLUGIN_URL".to_string(), "<hook_url>".to_string())
        ]
        .into()
    );
    let mut with_message = TriggerContext::new(Event::Push, Some("main".into()), None);
    assert!(!notify.when.matches(&with_message));
    with_message.env = [("CI_COMMIT_MESSAGE".into(), "ship it [notify]".into())].into();
    assert!(notify.when.matches(&with_message));
    assert_eq!(
        p.steps[0].kind,
        StepKind::Run {
            script: "cargo fmt --check\ncargo clippy -- -D warnings\n".into()
        }
    );
    assert_eq!(p.steps[1].env["CARGO_TERM_COLOR"], "always");
    assert_eq!(p.steps[2].image.as_deref(), Some("rust:1.85"));
    assert_eq!(
        p.steps[2].secret_env["CARGO_REGISTRY_TOKEN"],
        "crates_token"
    );
    assert_eq!(p.steps[2].env["RUST_VERSION"], "1.80");
    assert!(p.runs_as_graph());
    let tag = TriggerContext {
        git_ref: Some("refs/tags/v1.2".into()),
        ..TriggerContext::new(Event::Tag, None, Some("v1.2".into()))
    };
    assert!(p.when.matches(&tag));
    assert!(p.steps[2].when.matches(&tag));
    let nightly = TriggerContext {
        cron: Some("nightly".into()),
        ..TriggerContext::new(Event::Cron, Some("main".into()), None)
    };
    assert!(p.when.matches(&nightly));
    assert!(!p.steps[2].when.matches(&nightly));
}

#[test]
fn a_pipeline_may_name_its_concurrency_group() {
    let steps = "steps:\n  - name: deploy\n    run: ./deploy.sh\n";
    assert_eq!(
        raibid_pipeline::parse(".raibid.yaml", steps)
            .unwrap()
            .concurrency,
        None
    );
    let p = raibid_pipeline::parse(".raibid.yaml", &format!("concurrency: prod-eu.1\n{steps}"))
        .unwrap();
    assert_eq!(p.concurrency.as_deref(), Some("prod-eu.1"));
    for (text, at) in [
        ("concurrency: \"a/b\"\n", (1, 14)),
        ("concurrency: \"\"\n", (1, 14)),
    ] {
        let e = err(&format!("{text}{steps}"));
        assert_eq!((e.line, e.column), at, "{e}");
        assert!(e.message.contains("invalid concurrency group"), "{e}");
    }
}

#[test]
fn a_pipeline_may_name_the_pool_that_runs_it() {
    let steps = "steps:\n  - name: train\n    run: ./train.sh\n";
    assert_eq!(
        raibid_pipeline::parse(".raibid.yaml", steps).unwrap().pool,
        None
    );
    let p = raibid_pipeline::parse(".raibid.yaml", &format!("pool: gpu\n{steps}")).unwrap();
    assert_eq!(p.pool.unwrap().as_str(), "gpu");
    let e = err(&format!("pool: GPU!\n{steps}"));
    assert_eq!((e.line, e.column), (1, 7), "{e}");
    assert!(e.message.contains("invalid pool name \"GPU!\""), "{e}");
}

#[test]
fn only_a_workflow_waits_for_others() {
    let e = err("depends_on: [build]\nsteps:\n  - name: a\n    run: a\n");
    assert_eq!((e.line, e.column), (1, 13), "{e}");
    assert!(e.message.contains("only a workflow of .raibid/ has"), "{e}");
}

/// A workflow of `.raibid/` may wait for others (`depends_on`) and say whether it runs after
/// they failed (`runs_on`), as Woodpecker's workflows do.
#[test]
fn a_workflow_names_the_workflows_it_waits_for() {
    let steps = "steps:\n  - name: deploy\n    run: ./deploy.sh\n";
    let parsed = |text: &str| {
        raibid_pipeline::parse_workflow_bytes(".raibid/deploy.yaml", text.as_bytes()).unwrap()
    };
    let plain = parsed(steps);
    assert!(plain.depends_on.is_empty() && !plain.runs_on_failure);
    let p = parsed(&format!("depends_on: [build, test.unit]\n{steps}"));
    assert_eq!(p.depends_on, ["build", "test.unit"]);
    assert!(!p.runs_on_failure);
    let p = parsed(&format!(
        "depends-on:\n  - build\nruns_on: [success, failure]\n{steps}"
    ));
    assert_eq!(p.depends_on, ["build"]);
    assert!(p.runs_on_failure);
    assert!(p.runs_on_success);
    assert!(!parsed(&format!("depends_on: [build]\nruns_on: [success]\n{steps}")).runs_on_failure);
    assert!(plain.runs_on_success);
    // A workflow for failures only (a notification, say).
    let p = parsed(&format!("depends_on: [build]\nruns_on: [failure]\n{steps}"));
    assert!(p.runs_on_failure && !p.runs_on_success);

    for (text, at, says) in [
        ("depends_on: [build, build]\n", (1, 21), "twice"),
        ("depends_on: [\"a/b\"]\n", (1, 14), "is not a workflow name"),
        ("depends_on: []\n", (1, 13), "the list is empty"),
        (
            "depends_on: [build]\nruns_on: []\n",
            (2, 10),
            "runs_on is empty",
        ),
        (
            "depends_on: [build]\nruns_on: [sometimes]\n",
            (2, 11),
            "unknown variant",
        ),
        ("runs_on: [success]\n", (1, 1), "without `depends_on`"),
    ] {
        let e = raibid_pipeline::parse_workflow_bytes(
            ".raibid/deploy.yaml",
            format!("{text}{steps}").as_bytes(),
        )
        .unwrap_err();
        assert_eq!((e.line, e.column), at, "{text}: {e}");
        assert!(e.message.contains(says), "{text}: {e}");
    }
}

/// Anchors under `variables:`, aliases and merge keys (`<<`), as Woodpecker and GitLab files
/// use them: a step's own keys win over merged ones, wherever they are written.
#[test]
fn anchors_and_merge_keys_reuse_parts_of_the_file() {
    let p = sample("anchors-and-merge-keys.yaml");
    let [test, lint, docs] = &p.steps[..] else {
        panic!("three steps: {:?}", p.steps);
    };
    let image = Some("docker.io/library/rust:1.80".to_owned());
    assert_eq!(
        (&test.image, &lint.image, &docs.image),
        (&image, &image, &image)
    );
    assert_eq!(test.timeout, Some(Duration::from_secs(20 * 60)));
    assert_eq!(lint.timeout, Some(Duration::from_secs(5 * 60)), "its own");
    assert_eq!(docs.timeout, None);
    let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        test.env,
        env(&[("CARGO_TERM_COLOR", "always"), ("RUST", "1.80")])
    );
    assert_eq!(
        lint.env,
        env(&[
            ("CARGO_TERM_COLOR", "always"),
            ("RUST", "1.80"),
            ("RUSTFLAGS", "-D warnings")
        ])
    );
    assert!(matches!(&test.kind, StepKind::Run { script } if script == "cargo test"));
    let push = TriggerContext::new(Event::Push, Some("main".into()), None);
    let tag = TriggerContext::new(Event::Tag, None, Some("v1".into()));
    for step in [test, lint] {
        assert!(step.when.runs(&push, raibid_pipeline::RunState::Success));
        assert!(!step.when.runs(&tag, raibid_pipeline::RunState::Success));
    }
    assert!(docs.when.runs(&tag, raibid_pipeline::RunState::Success));
}
