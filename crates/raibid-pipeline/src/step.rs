//! One entry of `steps:`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::de::{CheckedMap, OneOrMany, StepEnv, StrCheck, UniqueList, checked_str};
use crate::duration::Timeout;
use crate::image_build::{ImageBuild, ImageBuildDe, WorkspacePath};
use crate::names;
use crate::plugin::Settings;
use crate::when::{StepWhen, When};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub kind: StepKind,
    /// Container image for a `run` step; overrides the pipeline's `image`.
    pub image: Option<String>,
    /// Pull the image before the step even when the engine has it (`pull: true`, as in
    /// Woodpecker): a moving tag (`:latest`, `:nightly`) otherwise stays whatever the machine
    /// pulled first.
    pub pull: bool,
    pub env: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    pub when: When,
    /// Secrets to expose to this step: as environment variables of the same name to a `run`
    /// step, as build secrets (`RUN --mount=type=secret,id=NAME`, the file
    /// `/run/secrets/NAME`, in no layer of the image) to an `image-build` step.
    pub secrets: Vec<String>,
    /// Variables given a secret's value (`env: { VAR: { from_secret: NAME } }`, Woodpecker
    /// 2's spelling): variable name to secret name, under the rules of `secrets`.
    pub secret_env: BTreeMap<String, String>,
    pub failure: OnFailure,
    /// The steps this one waits for (`depends_on`, Woodpecker's key), written before or after;
    /// `None` when not given. Once any step of a pipeline has it, its steps run as a graph:
    /// each starts when those it depends on have ended, those without it at once (see
    /// [`crate::Pipeline::runs_as_graph`]).
    pub depends_on: Option<Vec<String>>,
    /// How many more times a failing step runs before its failure counts (`retry:`, GitLab's
    /// key, at most [`MAX_RETRIES`]): for tests that fail now and then. Only the step's own
    /// failure is retried: not a cancel, the job's time running out, or a step that could not
    /// start.
    pub retry: u32,
    /// Where in the workspace the step starts (`directory:`, Woodpecker's key; GitHub's
    /// `working-directory`): a directory of the repository for a monorepo's parts. Relative,
    /// never leaving the workspace; `None`: the workspace itself.
    pub directory: Option<String>,
}

/// The most retries a step may ask for: each one can take the step's whole timeout.
pub const MAX_RETRIES: u32 = 5;

fn retries(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n <= MAX_RETRIES => Ok(n),
        _ => Err(format!(
            "`retry` is {s:?}; give a number of retries from 0 to {MAX_RETRIES}"
        )),
    }
}

/// What a failed step does to the job (`failure:`, as in Woodpecker).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnFailure {
    /// The job fails, and later steps run only if their `when: status` has `failure`.
    #[default]
    Fail,
    /// The step is shown as failed and the job goes on as if it had passed. Only the step's
    /// own failure (exit code, signal, its time running out) is ignored: a step the agent could
    /// not run (a missing secret, a build the agent could not start) still ends the job.
    Ignore,
}

fn on_failure(s: &str) -> Result<OnFailure, String> {
    match s {
        "fail" => Ok(OnFailure::Fail),
        "ignore" => Ok(OnFailure::Ignore),
        other => Err(format!("unknown `failure` {other:?}; use fail or ignore")),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// Shell commands exactly as written; a `|` block keeps its newlines. Which shell runs
    /// them is the executor's choice.
    Run {
        script: String,
    },
    ImageBuild(ImageBuild),
    /// A Woodpecker plugin: the step's `image` run with its own entrypoint and command,
    /// configured by `settings` (see [`crate::plugin`]). Container executor only.
    Plugin {
        settings: Settings,
    },
}

fn script(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("`run` is empty; give the commands to run".to_owned());
    }
    if s.contains('\0') {
        return Err("`run` may not contain a NUL character".to_owned());
    }
    Ok(s.to_owned())
}

checked_str!(StepName: String, "a step name", names::step_name);
checked_str!(Failure: OnFailure, "fail or ignore", on_failure);
checked_str!(Retries: u32, "a number of retries from 0 to 5", retries);
checked_str!(Script: String, "a shell script (use `|` for several lines)", script);

/// One command of `commands:`.
fn command(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("an empty command; remove it".to_owned());
    }
    if s.contains('\0') {
        return Err("a command may not contain a NUL character".to_owned());
    }
    Ok(s.to_owned())
}

/// `commands:` (Woodpecker's key; GitLab's `script:`): a list of commands, run as one script,
/// one after the other, the first that fails failing the step, as `run` runs its lines.
fn commands<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    OneOrMany::new(
        "a command or a list of commands",
        "an empty list of commands; give the commands to run",
        command,
    )
    .deserialize(d)
    .map(Some)
}
checked_str!(
    /// Shared with the pipeline-level `image`.
    ImageRef: String, "a container image like rust:1.85", names::image_ref);

pub(crate) fn secrets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    UniqueList::new("secret names", None, names::check_env_name).deserialize(d)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawStep {
    name: Option<StepName>,
    run: Option<Script>,
    #[serde(default, alias = "script", deserialize_with = "commands")]
    commands: Option<Vec<String>>,
    image_build: Option<ImageBuildDe>,
    image: Option<ImageRef>,
    pull: Option<bool>,
    /// A plugin step's settings (Woodpecker's key).
    settings: Option<Settings>,
    /// `environment` is Woodpecker's spelling.
    #[serde(alias = "environment")]
    env: Option<StepEnv>,
    timeout: Option<Timeout>,
    when: Option<StepWhen>,
    #[serde(default, deserialize_with = "secrets")]
    secrets: Vec<String>,
    failure: Option<Failure>,
    /// Woodpecker's spelling; `depends-on` matches the other keys of a step.
    #[serde(
        rename = "depends_on",
        alias = "depends-on",
        default,
        deserialize_with = "depends_on"
    )]
    depends_on: Option<Vec<String>>,
    retry: Option<Retries>,
    directory: Option<WorkspacePath>,
}

fn depends_on<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    UniqueList::new("names of other steps", None, |name| {
        names::step_name(name).map(|_| ())
    })
    .deserialize(d)
    .map(Some)
}

impl RawStep {
    /// Checks that need the whole step. `taken` holds the names of the steps before this one.
    fn into_step(self, taken: &BTreeSet<String>) -> Result<Step, String> {
        let Some(StepName(name)) = self.name else {
            return Err("this step has no `name`; every step needs a unique name".to_owned());
        };
        if taken.contains(&name) {
            return Err(format!(
                "step name {name:?} is used by an earlier step; step names must be unique"
            ));
        }
        let run_key = if self.commands.is_some() {
            "commands"
        } else {
            "run"
        };
        let run = match (self.run, self.commands) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "step {name:?} has both `run` and `commands`; keep one (`commands` is a list \
                     of the lines `run` would hold)"
                ));
            }
            (Some(Script(script)), None) => Some(script),
            // Each command on its own line: the shell runs them in turn and `-e` stops at the
            // first that fails, as Woodpecker does.
            (None, Some(commands)) => Some(commands.iter().map(|c| format!("{c}\n")).collect()),
            (None, None) => None,
        };
        if self.settings.is_some() && (run.is_some() || self.image_build.is_some()) {
            return Err(format!(
                "step {name:?}: `settings` are for a plugin, a step with an `image` and no \
                 `{run_key}` or `image-build` (the image's own entrypoint reads them as \
                 PLUGIN_* variables); give the commands the values through `env`"
            ));
        }
        let kind = match (run, self.image_build) {
            (Some(script), None) => StepKind::Run { script },
            (None, Some(ImageBuildDe(build))) => {
                if self.image.is_some() {
                    return Err(format!(
                        "step {name:?}: `image` chooses the container for `run`; an `image-build` step cannot have one"
                    ));
                }
                if self.pull.is_some() {
                    return Err(format!(
                        "step {name:?}: `pull` is for the image of a `run` step; an \
                         `image-build` step has none"
                    ));
                }
                if self.directory.is_some() {
                    return Err(format!(
                        "step {name:?}: an `image-build` step runs no commands for `directory` \
                         to apply to; give the build's directory as `context` under \
                         `image-build`"
                    ));
                }
                // The agent runs buildah with neither: accepted, they would silently do nothing.
                if self.env.as_ref().is_some_and(|env| !env.0.is_empty()) {
                    return Err(format!(
                        "step {name:?}: an `image-build` step gets no `env` (its variables would \
                         not reach the build); give build-time values as `build-args` under \
                         `image-build`"
                    ));
                }
                StepKind::ImageBuild(build)
            }
            (Some(_), Some(_)) => {
                return Err(format!(
                    "step {name:?} has both `{run_key}` and `image-build`; a step does one of them, so split it into two steps"
                ));
            }
            (None, None) if self.image.is_some() => StepKind::Plugin {
                settings: self.settings.unwrap_or_default(),
            },
            (None, None) => {
                return Err(format!(
                    "step {name:?} has nothing to do: give it `run` (or `commands`), \
                     `image-build`, or an `image` to run as a plugin"
                ));
            }
        };
        let deps = self.depends_on.iter().flatten();
        if deps.clone().any(|d| *d == name) {
            return Err(format!(
                "step {name:?} depends on itself; remove it from its `depends_on`"
            ));
        }
        // Known only once every step has been read: see `graph_problem`.
        if let Some(message) =
            GRAPH_PROBLEMS.with_borrow(|problems| problems.as_ref()?.get(&name).cloned())
        {
            return Err(message);
        }
        let when = self.when.map(|w| w.0).unwrap_or_default();
        if let Some(why) = when.impossible() {
            // Accepted, the step would be skipped on every run with nothing to say why.
            return Err(format!("step {name:?}: `when` can never match: {why}"));
        }
        let (env, secret_env) = self.env.map(StepEnv::split).unwrap_or_default();
        if let Some(var) = secret_env.keys().find(|var| self.secrets.contains(var)) {
            return Err(format!(
                "step {name:?}: {var} is both in `secrets` and given `from_secret` in `env`; \
                 keep one"
            ));
        }
        if let StepKind::Plugin { settings } = &kind
            && let Some(var) = settings.vars().find(|var| {
                env.contains_key(*var)
                    || secret_env.contains_key(*var)
                    || self.secrets.iter().any(|s| s == var)
            })
        {
            return Err(format!(
                "step {name:?}: {var} is both a setting and in `env` or `secrets`; keep one"
            ));
        }
        Ok(Step {
            name,
            kind,
            image: self.image.map(|i| i.0),
            pull: self.pull.unwrap_or(false),
            env,
            secret_env,
            timeout: self.timeout.map(|t| t.0),
            when,
            secrets: self.secrets,
            failure: self.failure.map(|f| f.0).unwrap_or_default(),
            depends_on: self.depends_on,
            retry: self.retry.map_or(0, |r| r.0),
            directory: self.directory.map(|d| d.0),
        })
    }
}

thread_local! {
    /// What is wrong with the steps' `depends_on`, by the step to report it at, while
    /// [`with_graph_problems`] reads the file again to report it there.
    static GRAPH_PROBLEMS: RefCell<Option<BTreeMap<String, String>>> = const { RefCell::new(None) };
}

/// What is wrong with the `depends_on` of `steps` (a name that is no step, steps that wait
/// for each other), keyed by the step whose position the error should carry; empty when
/// nothing is. A step may name steps written after it, as in Woodpecker, so this needs all of
/// them and is checked once they have been read.
pub(crate) fn graph_problems(steps: &[Step]) -> BTreeMap<String, String> {
    let mut problems = BTreeMap::new();
    let names: BTreeSet<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    for step in steps {
        if let Some(missing) = step
            .depends_on
            .iter()
            .flatten()
            .find(|d| !names.contains(d.as_str()))
        {
            problems.insert(
                step.name.clone(),
                format!(
                    "step {:?} depends on {missing:?}, which is not a step of this pipeline",
                    step.name
                ),
            );
        }
    }
    if !problems.is_empty() {
        return problems;
    }
    // Take steps whose dependencies are all taken until none is left; what cannot be taken
    // waits, through others, for itself.
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    loop {
        let ready: Vec<&str> = steps
            .iter()
            .filter(|s| !placed.contains(s.name.as_str()))
            .filter(|s| {
                s.depends_on
                    .iter()
                    .flatten()
                    .all(|d| placed.contains(d.as_str()))
            })
            .map(|s| s.name.as_str())
            .collect();
        if ready.is_empty() {
            break;
        }
        placed.extend(ready);
    }
    let stuck: Vec<&Step> = steps
        .iter()
        .filter(|s| !placed.contains(s.name.as_str()))
        .collect();
    if let Some(first) = stuck.first() {
        let names: Vec<&str> = stuck.iter().map(|s| s.name.as_str()).collect();
        problems.insert(
            first.name.clone(),
            format!(
                "steps {} wait for each other through `depends_on`, so none of them could \
                 ever start",
                names.join(", ")
            ),
        );
    }
    problems
}

/// Runs `read` with `problems` reported at their steps (see [`graph_problems`]).
pub(crate) fn with_graph_problems<T>(
    problems: BTreeMap<String, String>,
    read: impl FnOnce() -> T,
) -> T {
    GRAPH_PROBLEMS.set(Some(problems));
    let result = read();
    GRAPH_PROBLEMS.set(None);
    result
}

/// `steps:` as written in YAML: a non-empty list of steps with unique names.
pub(crate) struct Steps(pub(crate) Vec<Step>);

impl<'de> Deserialize<'de> for Steps {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StepsVisitor)
    }
}

struct StepsVisitor;

impl<'de> Visitor<'de> for StepsVisitor {
    type Value = Steps;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a list of steps, each starting with `- name:` (or a mapping of step names to \
             steps)",
        )
    }

    /// Woodpecker's other form, `steps: { build: { ... }, test: { ... } }`: each key is a
    /// step's name, in the order written.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Steps, A::Error> {
        let mut steps = Vec::new();
        let mut taken = BTreeSet::new();
        while let Some(name) = map.next_key_seed(StrCheck::new("a step name", |name: &str| {
            let name = names::step_name(name)?;
            if taken.contains(&name) {
                return Err(format!(
                    "step {name:?} is given twice; step names must be unique"
                ));
            }
            Ok(name)
        }))? {
            let step = map.next_value_seed(CheckedMap::new(
                "a step: a mapping with either `run` (or `commands`) or `image-build`, under \
                 its name (or a list of steps, each starting with `- name:`)",
                |mut raw: RawStep| {
                    if raw.name.is_some() {
                        return Err(format!(
                            "step {name:?}: its name is its key here; remove `name`"
                        ));
                    }
                    raw.name = Some(StepName(name.clone()));
                    raw.into_step(&taken)
                },
            ))?;
            taken.insert(step.name.clone());
            steps.push(step);
        }
        if steps.is_empty() {
            return Err(de::Error::custom(
                "the mapping is empty; a pipeline needs at least one step",
            ));
        }
        Ok(Steps(steps))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Steps, A::Error> {
        let mut steps = Vec::new();
        let mut taken = BTreeSet::new();
        while let Some(step) = seq.next_element_seed(CheckedMap::new(
            "a step: a mapping with `name` and either `run` or `image-build`",
            |raw: RawStep| raw.into_step(&taken),
        ))? {
            taken.insert(step.name.clone());
            steps.push(step);
        }
        if steps.is_empty() {
            return Err(de::Error::custom(
                "the list is empty; a pipeline needs at least one step",
            ));
        }
        Ok(Steps(steps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(yaml: &str) -> Result<Vec<Step>, serde_yaml::Error> {
        crate::de::with_from_secret_vars(yaml, || serde_yaml::from_str::<Steps>(yaml)).map(|s| s.0)
    }

    fn error_at(yaml: &str) -> (usize, usize, String) {
        let err = steps(yaml).unwrap_err();
        let loc = err.location().expect("error has a location");
        (loc.line(), loc.column(), err.to_string())
    }

    /// Woodpecker 2 gives a step a secret under a name of its own with `from_secret`.
    #[test]
    fn env_values_may_come_from_secrets() {
        let s = steps(
            "- name: push\n  commands: [docker push]\n  environment:\n    RUST: 1.80\n    \
             DOCKER_PASSWORD:\n      from_secret: docker_password\n    \
             USER: { from_secret: docker_user }\n    PLAIN: from_secret\n",
        )
        .unwrap();
        assert_eq!(s[0].env["RUST"], "1.80", "text keeps its source");
        assert_eq!(s[0].env["PLAIN"], "from_secret");
        assert_eq!(
            s[0].secret_env,
            BTreeMap::from([
                ("DOCKER_PASSWORD".to_owned(), "docker_password".to_owned()),
                ("USER".to_owned(), "docker_user".to_owned()),
            ])
        );
        assert!(!s[0].env.contains_key("DOCKER_PASSWORD"));

        let (line, col, msg) =
            error_at("- name: a\n  run: x\n  env:\n    A: { from_secret: 9bad }\n");
        assert_eq!(line, 4, "{msg}");
        assert!(
            msg.contains("9bad") && msg.contains("variable name"),
            "{col}: {msg}"
        );
        let (line, _, msg) = error_at("- name: a\n  run: x\n  env:\n    A: { secret: x }\n");
        assert_eq!(line, 4, "{msg}");
        assert!(msg.contains("`{ from_secret: NAME }`"), "{msg}");
        let (_, _, msg) = error_at(
            "- name: a\n  run: x\n  secrets: [TOKEN]\n  env: { TOKEN: { from_secret: other } }\n",
        );
        assert!(
            msg.contains("both in `secrets` and given `from_secret`"),
            "{msg}"
        );
        let (_, _, msg) = error_at(
            "- name: img\n  image-build: { tags: [t] }\n  env: { T: { from_secret: x } }\n",
        );
        assert!(msg.contains("gets no `env`"), "{msg}");
    }

    #[test]
    fn retry_is_a_small_number() {
        let s = steps("- name: flaky\n  run: t\n  retry: 2\n- name: once\n  run: o\n").unwrap();
        assert_eq!((s[0].retry, s[1].retry), (2, 0));
        for bad in ["6", "-1", "two", "1.5"] {
            let (line, column, message) =
                error_at(&format!("- name: flaky\n  run: t\n  retry: {bad}\n"));
            assert_eq!((line, column), (3, 10), "{bad}: {message}");
            assert!(message.contains("from 0 to 5"), "{message}");
        }
    }

    #[test]
    fn depends_on_names_other_steps() {
        let s = steps(
            "- name: build\n  run: make\n  depends_on: []\n\
             - name: lint\n  run: make lint\n\
             - name: test\n  run: make test\n  depends-on: [build, lint]\n",
        )
        .unwrap();
        assert_eq!(s[0].depends_on, Some(vec![]));
        assert_eq!(s[1].depends_on, None);
        assert_eq!(s[2].depends_on, Some(vec!["build".into(), "lint".into()]));

        // A step written later is fine here; names and cycles are checked over the whole
        // list (`graph_problems`, tests/parse.rs).
        let later = "- name: test\n  run: t\n  depends_on: [build]\n- name: build\n  run: b\n";
        assert!(steps(later).is_ok());
        let (_, _, message) = error_at("- name: a\n  run: a\n  depends_on: [a]\n");
        assert!(message.contains("depends on itself"), "{message}");
        let (line, column, message) =
            error_at("- name: a\n  run: a\n- name: b\n  run: b\n  depends_on: [a, a]\n");
        assert_eq!((line, column), (5, 19), "{message}");
        assert!(message.contains("twice"), "{message}");
    }

    /// Woodpecker's other form of `steps`, a mapping from names to steps, in the order written,
    /// with its `environment` spelling of `env`.
    #[test]
    fn steps_may_be_a_mapping_of_names_to_steps() {
        let s = steps(
            "build:\n  image: rust:1\n  commands:\n    - cargo build\n  environment:\n    CARGO_TERM_COLOR: always\n\
             test:\n  commands: [cargo test]\n  depends_on: [build]\n",
        )
        .unwrap();
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["build", "test"]);
        assert_eq!(s[0].env["CARGO_TERM_COLOR"], "always");
        assert_eq!(s[1].depends_on, Some(vec!["build".to_owned()]));
        for (yaml, line, column, says) in [
            (
                "a:\n  name: b\n  run: x\n",
                2,
                3,
                "its name is its key here",
            ),
            ("a:\n  run: x\na:\n  run: y\n", 3, 1, "is given twice"),
            ("{}\n", 1, 1, "the mapping is empty"),
            (
                "a:\n  run: x\n  env: {A: b}\n  environment: {C: d}\n",
                2,
                3,
                "duplicate field",
            ),
        ] {
            let (l, c, message) = error_at(yaml);
            assert_eq!((l, c), (line, column), "{yaml}: {message}");
            assert!(message.contains(says), "{yaml}: {message}");
        }
    }

    /// Woodpecker's `commands:` (and GitLab's `script:`): the lines of a `run`.
    #[test]
    fn commands_are_the_lines_of_a_run_script() {
        let s = steps(
            "- name: a\n  commands:\n    - cargo build\n    - cargo test --locked\n- name: b\n  script: make\n",
        )
        .unwrap();
        assert_eq!(
            s[0].kind,
            StepKind::Run {
                script: "cargo build\ncargo test --locked\n".to_owned()
            }
        );
        assert_eq!(
            s[1].kind,
            StepKind::Run {
                script: "make\n".to_owned()
            }
        );
        for (yaml, line, column, says) in [
            (
                "- name: a\n  commands: []\n",
                2,
                13,
                "an empty list of commands",
            ),
            (
                "- name: a\n  commands: [make, \"  \"]\n",
                2,
                20,
                "an empty command",
            ),
            (
                "- name: a\n  run: make\n  commands: [make]\n",
                1,
                3,
                "both `run` and `commands`",
            ),
        ] {
            let (l, c, message) = error_at(yaml);
            assert_eq!((l, c), (line, column), "{yaml}: {message}");
            assert!(message.contains(says), "{yaml}: {message}");
        }
    }

    #[test]
    fn run_step_with_everything() {
        let s = steps(
            "- name: build\n  run: |\n    cargo build\n  image: rust:1.85\n  pull: true\n  env: { FOO: bar }\n  timeout: 10m\n  when: { branch: main }\n  secrets: [CARGO_TOKEN]\n",
        )
        .unwrap();
        let step = &s[0];
        assert_eq!(step.name, "build");
        assert_eq!(
            step.kind,
            StepKind::Run {
                script: "cargo build\n".to_owned()
            }
        );
        assert_eq!(step.image.as_deref(), Some("rust:1.85"));
        assert!(step.pull);
        assert_eq!(step.env["FOO"], "bar");
        assert_eq!(step.timeout, Some(Duration::from_secs(600)));
        assert_eq!(step.when.blocks[0].branch[0].as_str(), "main");
        assert_eq!(step.secrets, ["CARGO_TOKEN"]);
    }

    #[test]
    fn minimal_step_defaults() {
        let s = steps("- { name: t, run: make }").unwrap();
        assert_eq!(s[0].image, None);
        assert!(!s[0].pull);
        assert!(s[0].env.is_empty());
        assert!(s[0].when.is_empty());
        assert!(s[0].secrets.is_empty());
        assert_eq!(s[0].timeout, None);
    }

    /// `directory:` (Woodpecker's key) is a path in the workspace for `run` and plugin steps.
    #[test]
    fn a_step_may_start_in_a_directory_of_the_workspace() {
        let s = steps("- name: web\n  directory: apps/web\n  commands: [npm test]\n").unwrap();
        assert_eq!(s[0].directory.as_deref(), Some("apps/web"));
        for (yaml, says) in [
            (
                "- name: a\n  directory: /etc\n  run: x\n",
                "is absolute; give a path relative to the repository root",
            ),
            (
                "- name: a\n  directory: ../x\n  run: x\n",
                "leaves the repository",
            ),
            (
                "- name: a\n  directory: web\n  image-build: { tags: [t] }\n",
                "give the build's directory as `context`",
            ),
        ] {
            let (_, _, msg) = error_at(yaml);
            assert!(msg.contains(says), "{yaml:?}: {msg}");
        }
    }

    /// Woodpecker's plugin steps: an `image` and no commands, configured by `settings`.
    #[test]
    fn a_step_with_only_an_image_is_a_plugin() {
        let s = steps(
            "- name: publish\n  image: woodpeckerci/plugin-docker-buildx\n  pull: true\n  \
             settings:\n    repo: acme/app\n    dry-run: true\n    password:\n      \
             from_secret: registry_password\n  environment:\n    EXTRA: x\n",
        )
        .unwrap();
        let StepKind::Plugin { settings } = &s[0].kind else {
            panic!("{:?}", s[0].kind);
        };
        assert_eq!(
            settings.vars().collect::<Vec<_>>(),
            ["PLUGIN_DRY_RUN", "PLUGIN_PASSWORD", "PLUGIN_REPO"]
        );
        assert!(settings.secrets().contains("registry_password"));
        assert_eq!(
            s[0].image.as_deref(),
            Some("woodpeckerci/plugin-docker-buildx")
        );
        assert!(s[0].pull);
        assert_eq!(s[0].env["EXTRA"], "x");
        // Without settings too.
        let s = steps("- name: notify\n  image: acme/notify:1\n").unwrap();
        assert!(matches!(&s[0].kind, StepKind::Plugin { settings } if settings.is_empty()));

        for (yaml, says) in [
            (
                "- name: a\n  image: i\n  commands: [x]\n  settings: { a: 1 }\n",
                "`settings` are for a plugin",
            ),
            (
                "- name: a\n  image-build: { tags: [t] }\n  settings: { a: 1 }\n",
                "`settings` are for a plugin",
            ),
            (
                "- name: a\n  image: i\n  settings: { a: 1 }\n  env: { PLUGIN_A: x }\n",
                "PLUGIN_A is both a setting and in `env` or `secrets`",
            ),
            (
                "- name: a\n  image: i\n  settings: { a: 1 }\n  secrets: [PLUGIN_A]\n",
                "PLUGIN_A is both a setting",
            ),
        ] {
            let (_, _, msg) = error_at(yaml);
            assert!(msg.contains(says), "{yaml:?}: {msg}");
        }
    }

    #[test]
    fn whole_step_errors_point_at_the_first_key_of_the_step() {
        let (line, col, msg) = error_at("- name: a\n  run: x\n- name: a\n  run: y\n");
        assert_eq!((line, col), (3, 3));
        assert!(msg.contains("used by an earlier step"), "{msg}");

        let (line, col, msg) = error_at("- name: a\n  run: x\n  image-build: { tags: [t] }\n");
        assert_eq!((line, col), (1, 3));
        assert!(msg.contains("both `run` and `image-build`"), "{msg}");

        let (line, col, msg) = error_at("- name: a\n  run: x\n-   name: b\n    pull: true\n");
        assert_eq!((line, col), (3, 5));
        assert!(msg.contains("nothing to do"), "{msg}");

        let (line, col, msg) = error_at("- run: x\n");
        assert_eq!((line, col), (1, 3));
        assert!(msg.contains("no `name`"), "{msg}");

        let (line, col, msg) = error_at(
            "- name: a\n  run: x\n- name: b\n  pull: true\n  image-build: { tags: [t] }\n",
        );
        assert_eq!((line, col), (3, 3));
        assert!(
            msg.contains("`pull` is for the image of a `run` step"),
            "{msg}"
        );

        let (line, col, msg) = error_at("- name: a\n  run: x\n  pull: sometimes\n");
        assert_eq!((line, col), (3, 9));
        assert!(msg.contains("pull"), "{msg}");
    }

    #[test]
    fn field_errors_point_at_the_field() {
        let (line, col, msg) = error_at("- name: a\n  run: x\n  timeout: 10x\n");
        assert_eq!((line, col), (3, 12));
        assert!(msg.contains("invalid duration"), "{msg}");

        let (line, col, msg) = error_at("- name: a\n  run: x\n  imagee: y\n");
        assert_eq!((line, col), (3, 3));
        assert!(msg.contains("unknown field `imagee`"), "{msg}");

        let (line, col, msg) = error_at("- name: a\n  run: x\n  secrets: [OK, not-ok]\n");
        assert_eq!((line, col), (3, 17));
        assert!(msg.contains("not a valid variable name"), "{msg}");

        let (line, col, _) = error_at("- name: \"\"\n  run: x\n");
        assert_eq!((line, col), (1, 9));
    }

    #[test]
    fn image_on_an_image_build_is_refused() {
        let (_, _, msg) = error_at("- name: a\n  image: x\n  image-build: { tags: [t] }\n");
        assert!(msg.contains("cannot have one"), "{msg}");
    }

    /// The agent passes neither to buildah; accepted, they would silently do nothing.
    #[test]
    fn env_and_secrets_on_an_image_build_are_refused() {
        let (line, col, msg) = error_at(
            "- name: a\n  run: x\n- name: img\n  image-build: { tags: [t] }\n  env: { A: b }\n",
        );
        assert_eq!((line, col), (3, 3));
        assert!(
            msg.contains("step \"img\": an `image-build` step gets no `env`")
                && msg.contains("`build-args`"),
            "{msg}"
        );
        // Secrets reach a build as build secrets; an empty `env` asks for nothing.
        let s = steps("- name: a\n  image-build: { tags: [t] }\n  secrets: [TOKEN]\n  env: {}\n")
            .unwrap();
        assert_eq!(s[0].secrets, ["TOKEN"]);
    }

    #[test]
    fn reserved_names_in_step_env_are_refused_at_the_name() {
        let (line, col, msg) =
            error_at("- name: a\n  run: x\n  env:\n    OK: 1\n    RAIBID_SHA: x\n");
        assert_eq!((line, col), (5, 5));
        assert!(msg.contains("RAIBID_* names are set by the agent"), "{msg}");
    }

    #[test]
    fn option_like_images_are_refused_at_the_value() {
        let (line, col, msg) = error_at("- name: a\n  run: x\n  image: --privileged\n");
        assert_eq!((line, col), (3, 10));
        assert!(msg.contains("starts with '-'"), "{msg}");
    }

    #[test]
    fn empty_or_wrong_steps() {
        let (line, col, msg) = error_at("[]");
        assert_eq!((line, col), (1, 1));
        assert!(msg.contains("at least one step"), "{msg}");
        let (_, _, msg) = error_at("- cargo build\n");
        assert!(msg.contains("expected a step"), "{msg}");
        let (_, _, msg) = error_at("name: a\n");
        assert!(msg.contains("a list of steps"), "{msg}");
        let (_, _, msg) = error_at("- name: a\n  run: \"  \"\n");
        assert!(msg.contains("`run` is empty"), "{msg}");
    }

    #[test]
    fn failure_is_fail_or_ignore() {
        let s = steps("- { name: a, run: x, failure: ignore }\n- { name: b, run: y, failure: fail }\n- { name: c, run: z }\n").unwrap();
        assert_eq!(s[0].failure, OnFailure::Ignore);
        assert_eq!(s[1].failure, OnFailure::Fail);
        assert_eq!(s[2].failure, OnFailure::Fail);
        let (line, col, msg) = error_at("- name: a\n  run: x\n  failure: ignored\n");
        assert_eq!((line, col), (3, 12));
        assert!(
            msg.contains("unknown `failure` \"ignored\"; use fail or ignore"),
            "{msg}"
        );
    }
}
