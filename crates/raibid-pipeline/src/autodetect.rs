//! A pipeline for repositories without `.raibid.yaml`, guessed from the files at their root.

use std::collections::{BTreeMap, BTreeSet};

use crate::image_build::ImageBuild;
use crate::makefile;
use crate::pipeline::{CloneOptions, EXAMPLE, Pipeline};
use crate::step::{OnFailure, Step, StepKind};
use crate::when::When;

/// What autodetection needs to know about a repository: the caller reads it, this crate decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoListing {
    /// Names of the files at the repository root (`Cargo.toml`, not `./Cargo.toml`).
    pub files: BTreeSet<String>,
    /// Content of the root makefile, if any: the first of [`RepoListing::MAKEFILES`] present,
    /// which is the one `make` itself would read.
    pub makefile: Option<String>,
}

impl RepoListing {
    pub const MAKEFILES: [&str; 3] = ["GNUmakefile", "makefile", "Makefile"];

    pub fn new<S: Into<String>>(files: impl IntoIterator<Item = S>) -> Self {
        Self {
            files: files.into_iter().map(Into::into).collect(),
            makefile: None,
        }
    }

    pub fn with_makefile(mut self, content: impl Into<String>) -> Self {
        self.makefile = Some(content.into());
        self
    }

    fn has(&self, file: &str) -> bool {
        self.files.contains(file)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Autodetected {
    pub pipeline: Pipeline,
    /// One line for the job log: what was found and what it turned into, so a user who did not
    /// write a pipeline can see where the steps came from.
    pub explanation: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AutodetectError {
    #[error(
        "no .raibid.yaml, and nothing recognized to build: looked for Cargo.toml, Containerfile, Dockerfile, a Makefile with a `test` target and package.json. Add a .raibid.yaml at the repository root, for example:\n{}",
        EXAMPLE
    )]
    NothingDetected,
}

/// Build and test steps come first (in rule order: Cargo, make, npm), then the image build, so
/// an image is only pushed after the tests have passed.
pub fn autodetect(listing: &RepoListing) -> Result<Autodetected, AutodetectError> {
    let mut steps = Vec::new();
    let mut found = Vec::new();
    if listing.has("Cargo.toml") {
        found.push(cargo(listing, &mut steps));
    }
    if listing
        .makefile
        .as_deref()
        .is_some_and(|m| makefile::has_target(m, "test"))
    {
        steps.push(run_step("make-test", None, "make test"));
        found.push("a Makefile with a `test` target (make test)".to_owned());
    }
    if listing.has("package.json") {
        found.push(npm(listing, &mut steps));
    }
    if let Some(file) = ["Containerfile", "Dockerfile"]
        .into_iter()
        .find(|f| listing.has(f))
    {
        steps.push(image_step(file));
        found.push(format!("{file} (build the image and push {DEFAULT_TAG})"));
    }
    if steps.is_empty() {
        return Err(AutodetectError::NothingDetected);
    }
    Ok(Autodetected {
        pipeline: Pipeline {
            image: None,
            env: BTreeMap::new(),
            timeout: None,
            clone: CloneOptions::default(),
            skip_clone: false,
            matrix: None,
            cache: None,
            artifacts: None,
            when: When::default(),
            services: Vec::new(),
            steps,
            interruptible: true,
            depends_on: Vec::new(),
            runs_on_failure: false,
            runs_on_success: true,
            concurrency: None,
            pool: None,
        },
        explanation: format!(
            "no .raibid.yaml found, so the steps were autodetected from {}; add a .raibid.yaml to choose them yourself",
            found.join(", ")
        ),
    })
}

const DEFAULT_TAG: &str = "{registry}/{repo}:{sha}";

/// `--locked` needs a committed Cargo.lock; libraries often do not commit one, and failing their
/// build over it would make autodetection useless for them.
fn cargo(listing: &RepoListing, steps: &mut Vec<Step>) -> String {
    let (flag, note) = if listing.has("Cargo.lock") {
        (" --locked", "")
    } else {
        ("", ", without --locked as there is no Cargo.lock")
    };
    let build = format!("cargo build{flag}");
    let test = format!("cargo test{flag}");
    let found = format!("Cargo.toml ({build}, {test}{note})");
    steps.push(run_step("build", Some("rust:1"), &build));
    steps.push(run_step("test", Some("rust:1"), &test));
    found
}

/// `npm ci` refuses to run without a lockfile, so fall back to `npm install` then.
fn npm(listing: &RepoListing, steps: &mut Vec<Step>) -> String {
    let locked = listing.has("package-lock.json") || listing.has("npm-shrinkwrap.json");
    let install = if locked { "npm ci" } else { "npm install" };
    let script = format!("{install} && npm test");
    let found = format!("package.json ({script})");
    steps.push(run_step("npm-test", Some("node:lts"), &script));
    found
}

fn run_step(name: &str, image: Option<&str>, script: &str) -> Step {
    step(
        name,
        StepKind::Run {
            script: script.to_owned(),
        },
        image,
    )
}

fn image_step(file: &str) -> Step {
    step(
        "image",
        StepKind::ImageBuild(ImageBuild {
            context: ".".to_owned(),
            file: Some(file.to_owned()),
            tags: vec![DEFAULT_TAG.to_owned()],
            platforms: Vec::new(),
            push: true,
            build_args: BTreeMap::new(),
            cache: None,
        }),
        None,
    )
}

fn step(name: &str, kind: StepKind, image: Option<&str>) -> Step {
    Step {
        name: name.to_owned(),
        kind,
        image: image.map(str::to_owned),
        pull: false,
        env: BTreeMap::new(),
        timeout: None,
        when: When::default(),
        secrets: Vec::new(),
        secret_env: Default::default(),
        failure: OnFailure::Fail,
        depends_on: None,
        retry: 0,
        directory: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scripts(a: &Autodetected) -> Vec<String> {
        a.pipeline
            .steps
            .iter()
            .map(|s| match &s.kind {
                StepKind::Run { script } => script.clone(),
                StepKind::ImageBuild(b) => format!("image-build {}", b.file.as_deref().unwrap()),
                StepKind::Plugin { .. } => unreachable!("autodetection makes no plugin steps"),
            })
            .collect()
    }

    #[test]
    fn cargo_with_lockfile() {
        let a = autodetect(&RepoListing::new(["Cargo.toml", "Cargo.lock", "src"])).unwrap();
        assert_eq!(scripts(&a), ["cargo build --locked", "cargo test --locked"]);
        assert_eq!(a.pipeline.steps[0].name, "build");
        assert_eq!(a.pipeline.steps[1].name, "test");
        assert!(a.explanation.contains("Cargo.toml"), "{}", a.explanation);
        assert!(!a.explanation.contains('\n'));
    }

    #[test]
    fn cargo_without_lockfile_is_not_locked() {
        let a = autodetect(&RepoListing::new(["Cargo.toml"])).unwrap();
        assert_eq!(scripts(&a), ["cargo build", "cargo test"]);
        assert!(a.explanation.contains("no Cargo.lock"), "{}", a.explanation);
    }

    #[test]
    fn containerfile_wins_over_dockerfile() {
        let a = autodetect(&RepoListing::new(["Dockerfile", "Containerfile"])).unwrap();
        assert_eq!(scripts(&a), ["image-build Containerfile"]);
        let StepKind::ImageBuild(build) = &a.pipeline.steps[0].kind else {
            panic!("not an image build");
        };
        assert_eq!(build.tags, ["{registry}/{repo}:{sha}"]);
        assert!(build.push);
        assert_eq!(build.context, ".");
        let a = autodetect(&RepoListing::new(["Dockerfile"])).unwrap();
        assert_eq!(scripts(&a), ["image-build Dockerfile"]);
    }

    #[test]
    fn makefile_needs_a_test_target() {
        let with =
            RepoListing::new(["Makefile"]).with_makefile(".PHONY: test\ntest: build\n\t./t\n");
        assert_eq!(scripts(&autodetect(&with).unwrap()), ["make test"]);
        let without =
            RepoListing::new(["Makefile"]).with_makefile(".PHONY: test\nall:\n\tcc x.c\n");
        assert_eq!(autodetect(&without), Err(AutodetectError::NothingDetected));
    }

    #[test]
    fn npm_uses_ci_only_with_a_lockfile() {
        let a = autodetect(&RepoListing::new(["package.json", "package-lock.json"])).unwrap();
        assert_eq!(scripts(&a), ["npm ci && npm test"]);
        let a = autodetect(&RepoListing::new(["package.json"])).unwrap();
        assert_eq!(scripts(&a), ["npm install && npm test"]);
    }

    #[test]
    fn combinations_put_the_image_build_last() {
        let a = autodetect(
            &RepoListing::new([
                "Containerfile",
                "Cargo.toml",
                "Cargo.lock",
                "package.json",
                "Makefile",
            ])
            .with_makefile("test:\n\tcargo test\n"),
        )
        .unwrap();
        assert_eq!(
            scripts(&a),
            [
                "cargo build --locked",
                "cargo test --locked",
                "make test",
                "npm install && npm test",
                "image-build Containerfile",
            ]
        );
        let names: BTreeSet<_> = a.pipeline.steps.iter().map(|s| &s.name).collect();
        assert_eq!(names.len(), a.pipeline.steps.len(), "names are unique");
        for needle in ["Cargo.toml", "Makefile", "package.json", "Containerfile"] {
            assert!(a.explanation.contains(needle), "{}", a.explanation);
        }
        assert_eq!(a.pipeline.expand_matrix().len(), 1);
    }

    #[test]
    fn nothing_detected_explains_how_to_write_a_pipeline() {
        let err = autodetect(&RepoListing::new(["README.md", "main.go"])).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(".raibid.yaml"), "{message}");
        assert!(message.ends_with(EXAMPLE), "{message}");
        assert_eq!(EXAMPLE.lines().count(), 5);
        assert!(crate::parse(".raibid.yaml", EXAMPLE).is_ok());
        assert!(autodetect(&RepoListing::default()).is_err());
    }
}
