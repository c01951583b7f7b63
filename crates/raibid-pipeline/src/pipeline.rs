//! The whole pipeline file and its entry points.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeSeed;

use crate::artifacts::{Artifacts, ArtifactsDe};
use crate::cache::{Cache, CacheDe};
use crate::de::{CheckedMap, StepEnvMap, StrCheck, UniqueList};
use crate::duration::Timeout;
use crate::error::PipelineError;
use crate::flow_guard;
use crate::matrix::{Matrix, MatrixDe, Variant};
use crate::service::{Service, Services};
use crate::step::{ImageRef, Step, StepKind, Steps};
use crate::tag;
use crate::when::{PipelineWhen, When};

/// Pipeline files are a few kilobytes; refusing anything beyond this bounds the work any file
/// can cause before YAML parsing even starts.
pub const MAX_FILE_SIZE: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    /// Default container image for `run` steps (the container executor's; the host executor
    /// ignores images).
    pub image: Option<String>,
    pub env: BTreeMap<String, String>,
    /// Limit for the whole job.
    pub timeout: Option<Duration>,
    pub clone: CloneOptions,
    /// Steps start in an empty workspace (`skip_clone: true`, Woodpecker's key), for a
    /// workflow that needs no source (a deployment from the registry, a notification). The
    /// agent still fetches the commit, to read this file, and empties the workspace after.
    pub skip_clone: bool,
    pub matrix: Option<Matrix>,
    /// Directories kept between jobs of the repository (`cache:`).
    pub cache: Option<Cache>,
    /// Files kept with the job once its steps are done (`artifacts:`).
    pub artifacts: Option<Artifacts>,
    /// Which jobs the pipeline runs for at all (`when:`, one block or a list of them); no
    /// block for every job. Never has `status`: it is decided before any step runs.
    pub when: When,
    /// Containers beside the steps, reachable by name (container executor only); names are
    /// unique.
    pub services: Vec<Service>,
    /// Never empty; names are unique.
    pub steps: Vec<Step>,
    /// Whether a newer build of the same branch or pull request may cancel this one once it
    /// runs (`interruptible:`, GitLab's word; true by default, as in Woodpecker). False for a
    /// pipeline that deploys, which must not stop halfway. A queued build is cancelled
    /// regardless: nothing of it has run.
    pub interruptible: bool,
    /// For a workflow of `.raibid/`: the other workflows whose jobs must have ended before its
    /// job is queued (`depends_on:`, Woodpecker's workflow key). Empty for every other file;
    /// the agent refuses it in a `.raibid.yaml`, which has no other workflows.
    pub depends_on: Vec<String>,
    /// Whether the workflow runs when a workflow it depends on failed (`runs_on: [success,
    /// failure]` or `[failure]`, Woodpecker's key); by default it runs only when they all
    /// succeeded.
    pub runs_on_failure: bool,
    /// Whether it runs when they all succeeded: false for `runs_on: [failure]` (a workflow
    /// that reports failures).
    pub runs_on_success: bool,
    /// The pool whose agents run it (`pool:`, as GitHub's `runs-on` and Woodpecker's
    /// `labels` pick runners): a job that comes to another pool's agent is queued again in
    /// this one, as a job of its own (see the agent's runner). `None`: the pool the server
    /// chose (`server.pool_rules`).
    pub pool: Option<raibid_model::PoolName>,
    /// A concurrency group of the repository (`concurrency: deploy`, GitLab's
    /// `resource_group`, GitHub's `concurrency` without cancelling): at most one job of the
    /// group runs its steps at a time; the others wait, `blocked`, oldest first, holding no
    /// agent. A template (`deploy-{branch}`), rendered for each job by
    /// [`crate::concurrency_group`]. `None`: no limit.
    pub concurrency: Option<String>,
}

/// What the checkout fetches besides the commit. All off for raibid's own files, as in
/// actions/checkout (most builds need only the commit); Woodpecker's clone defaults
/// ([`CloneOptions::WOODPECKER`]) for a Woodpecker file or clone step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloneOptions {
    pub submodules: Fetch,
    pub lfs: Fetch,
    /// The repository's tags in the workspace (for `git describe`).
    pub tags: Fetch,
}

impl CloneOptions {
    /// What Woodpecker's clone step (woodpeckerci/plugin-git) does unless told otherwise: LFS
    /// files and submodules, tags on tag events. A Woodpecker file without `clone:`, or the
    /// settings its clone step leaves out, mean these.
    pub const WOODPECKER: Self = Self {
        submodules: Fetch::Auto,
        lfs: Fetch::Auto,
        tags: Fetch::Auto,
    };
}

/// Whether the checkout fetches one kind of thing besides the commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fetch {
    #[default]
    No,
    Yes,
    /// Woodpecker's default: LFS files and submodules when the commit has any (files marked
    /// `filter=lfs`, a `.gitmodules`), so that a repository without them needs neither
    /// git-lfs nor its submodules' servers; tags on tag events.
    Auto,
}

impl Fetch {
    /// Whether to fetch, `auto` saying whether the commit calls for it (asked for
    /// [`Fetch::Auto`] only).
    pub fn wanted(self, auto: impl FnOnce() -> bool) -> bool {
        match self {
            Self::No => false,
            Self::Yes => true,
            Self::Auto => auto(),
        }
    }
}

impl From<bool> for Fetch {
    fn from(yes: bool) -> Self {
        if yes { Self::Yes } else { Self::No }
    }
}

impl Pipeline {
    /// Whether the steps run as a graph (some step has `depends_on`), as in Woodpecker: each
    /// step starts once the steps it depends on have ended, and those without `depends_on` at
    /// once, side by side. Otherwise they run one after the other, in the file's order.
    pub fn runs_as_graph(&self) -> bool {
        self.steps.iter().any(|s| s.depends_on.is_some())
    }

    /// The jobs this pipeline runs as: one per matrix combination, or a single unnamed variant.
    pub fn expand_matrix(&self) -> Vec<Variant> {
        match &self.matrix {
            Some(matrix) => matrix.variants(),
            None => vec![Variant::plain()],
        }
    }
}

/// A minimal pipeline file, shown wherever a user needs to write one.
pub(crate) const EXAMPLE: &str = "\
image: debian:stable
steps:
  - name: test
    run: |
      ./ci/test.sh
";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    image: Option<ImageRef>,
    env: Option<StepEnvMap>,
    timeout: Option<Timeout>,
    clone: Option<CloneOptions>,
    skip_clone: Option<bool>,
    /// Woodpecker's agent selection, read only to say what to write instead.
    #[serde(default, deserialize_with = "woodpecker_labels")]
    #[allow(dead_code)]
    labels: (),
    matrix: Option<MatrixDe>,
    cache: Option<CacheDe>,
    artifacts: Option<ArtifactsDe>,
    when: Option<PipelineWhen>,
    services: Option<Services>,
    steps: Option<Steps>,
    interruptible: Option<bool>,
    #[serde(
        rename = "depends_on",
        alias = "depends-on",
        default,
        deserialize_with = "workflow_deps"
    )]
    depends_on: Option<Vec<String>>,
    #[serde(rename = "runs_on", alias = "runs-on")]
    runs_on: Option<RunsOn>,
    #[serde(default, deserialize_with = "pool")]
    pool: Option<raibid_model::PoolName>,
    #[serde(default, deserialize_with = "concurrency")]
    concurrency: Option<String>,
    /// Woodpecker's place for YAML anchors (`- &image golang:1.22`) that steps then use
    /// (`image: *image`, `<<: *defaults`); not read otherwise.
    #[allow(dead_code)]
    variables: Option<serde::de::IgnoredAny>,
}

thread_local! {
    /// Whether the file being parsed is a workflow of `.raibid/` ([`parse_workflow_bytes`]),
    /// which may wait for others.
    static WORKFLOW: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Whether it is a Woodpecker file ([`parse_woodpecker_bytes`]), whose clone has
    /// Woodpecker's defaults.
    static WOODPECKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

const NOT_A_WORKFLOW: &str = "`depends_on` at the top names other workflows, which only a \
                              workflow of .raibid/ has; for steps that wait for each other, \
                              give the steps `depends_on`";

fn workflow_deps<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    if !WORKFLOW.get() {
        // Refused from inside a visitor, so that the error carries the value's position.
        struct NotHere;
        impl<'de> serde::de::Visitor<'de> for NotHere {
            type Value = Option<Vec<String>>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(NOT_A_WORKFLOW)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                _: A,
            ) -> Result<Self::Value, A::Error> {
                Err(serde::de::Error::custom(NOT_A_WORKFLOW))
            }
        }
        return d.deserialize_seq(NotHere);
    }
    UniqueList::new(
        "names of other workflows of .raibid/",
        Some("the list is empty; name the workflows this one waits for, or remove `depends_on`"),
        |name| {
            if crate::workflows::valid_name(name) {
                Ok(())
            } else {
                Err(format!(
                    "{name:?} is not a workflow name: the name of a file of .raibid/ without \
                     .yaml or .yml"
                ))
            }
        },
    )
    .deserialize(d)
    .map(Some)
}

fn pool<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<raibid_model::PoolName>, D::Error> {
    StrCheck::new("a pool name", |name: &str| {
        raibid_model::PoolName::new(name).map_err(|e| e.to_string())
    })
    .deserialize(d)
    .map(Some)
}

/// Woodpecker's `labels:` pick agents by their labels; here agents serve pools, and a pipeline
/// names its `pool`. Refused where it is written, saying so, rather than as an unknown key.
fn woodpecker_labels<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    /// Fails inside the deserializer's own callback, so the error carries the position.
    struct Labels;
    impl<'de> serde::de::Visitor<'de> for Labels {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("nothing")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
            Err(serde::de::Error::custom(LABELS))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
            Err(serde::de::Error::custom(LABELS))
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
            Err(E::custom(LABELS))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
            Err(E::custom(LABELS))
        }
    }
    const LABELS: &str = "`labels` (Woodpecker's) choose agents by their labels; here agents \
        serve pools, and a pipeline names its pool: write `pool: gpu` and run agents with \
        `--pool gpu`";
    d.deserialize_any(Labels)
}

/// A concurrency group's name, or a template of one (`deploy-{branch}`): it names a Redis key
/// and shows in commit statuses.
fn concurrency<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    StrCheck::new("a concurrency group name", |name: &str| {
        crate::concurrency::check(name).map(|()| name.to_owned())
    })
    .deserialize(d)
    .map(Some)
}

/// `runs_on:` as written: when the workflow runs, given how the ones it depends on ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RunsOn {
    success: bool,
    failure: bool,
}

impl<'de> Deserialize<'de> for RunsOn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(RunsOnVisitor)
    }
}

struct RunsOnVisitor;

impl<'de> serde::de::Visitor<'de> for RunsOnVisitor {
    type Value = RunsOn;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of `success` and `failure`")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RunsOn, A::Error> {
        #[derive(Deserialize, PartialEq, Eq)]
        #[serde(rename_all = "lowercase")]
        enum Value {
            Success,
            Failure,
        }
        let mut values = Vec::new();
        while let Some(value) = seq.next_element::<Value>()? {
            values.push(value);
        }
        if values.is_empty() {
            // It would never run.
            return Err(serde::de::Error::custom(
                "runs_on is empty: use [success] (the default), [failure] or [success, failure]",
            ));
        }
        Ok(RunsOn {
            success: values.contains(&Value::Success),
            failure: values.contains(&Value::Failure),
        })
    }
}

impl RawPipeline {
    fn into_pipeline(self) -> Result<Pipeline, String> {
        let Some(Steps(steps)) = self.steps else {
            return Err("`steps` is missing or empty; a pipeline needs a list of steps".to_owned());
        };
        let skip_clone = self.skip_clone.unwrap_or(false);
        if skip_clone && self.clone.is_some_and(|c| c != CloneOptions::default()) {
            return Err(
                "`skip_clone: true` leaves the workspace empty, so `clone` has nothing to add; \
                 keep one"
                    .to_owned(),
            );
        }
        if self.runs_on.is_some() && self.depends_on.is_none() {
            return Err(
                "`runs_on` says whether to run after the workflows in `depends_on` failed; \
                 without `depends_on` it has nothing to refer to"
                    .to_owned(),
            );
        }
        if let Some(MatrixDe(matrix)) = &self.matrix
            && steps
                .iter()
                .any(|s| matches!(s.kind, StepKind::ImageBuild(_)))
        {
            let mut seen: BTreeMap<String, String> = BTreeMap::new();
            for variant in matrix.variants() {
                let tag = tag::matrix_tag(&variant.name).unwrap_or_default();
                if let Some(other) = seen.insert(tag.clone(), variant.name.clone()) {
                    return Err(format!(
                        "matrix variants {other:?} and {:?} both give the image tag part \
                         {{matrix}} = {tag:?} (characters a tag cannot hold become '-'), so \
                         their images would overwrite each other; make the values differ in \
                         letters, digits, '.', '_' or '-'",
                        variant.name
                    ));
                }
            }
            for step in &steps {
                let StepKind::ImageBuild(build) = &step.kind else {
                    continue;
                };
                if let Some(tag) = build.tags.iter().find(|t| !tag::names_the_variant(t)) {
                    return Err(format!(
                        "step {}: every matrix variant runs this image build, so each tag needs \
                         {{matrix}} (the variant, e.g. `{{registry}}/{{repo}}:{{sha}}-{{matrix}}`) \
                         or the variants push over each other; {tag:?} has none",
                        step.name
                    ));
                }
            }
        }
        Ok(Pipeline {
            image: self.image.map(|i| i.0),
            env: self.env.map(|e| e.0).unwrap_or_default(),
            timeout: self.timeout.map(|t| t.0),
            clone: match self.clone {
                _ if skip_clone => CloneOptions::default(),
                Some(clone) => clone,
                None if WOODPECKER.get() => CloneOptions::WOODPECKER,
                None => CloneOptions::default(),
            },
            skip_clone,
            matrix: self.matrix.map(|m| m.0),
            cache: self.cache.map(|c| c.0),
            artifacts: self.artifacts.map(|a| a.0),
            when: self.when.map(|w| w.0).unwrap_or_default(),
            services: self.services.map(|s| s.0).unwrap_or_default(),
            steps,
            interruptible: self.interruptible.unwrap_or(true),
            depends_on: self.depends_on.unwrap_or_default(),
            runs_on_failure: self.runs_on.is_some_and(|r| r.failure),
            runs_on_success: self.runs_on.is_none_or(|r| r.success),
            pool: self.pool,
            concurrency: self.concurrency,
        })
    }
}

/// Parses and validates a pipeline file. `file_name` only labels errors.
pub fn parse(file_name: &str, text: &str) -> Result<Pipeline, PipelineError> {
    if text.len() > MAX_FILE_SIZE {
        return Err(PipelineError::new(
            file_name,
            1,
            1,
            format!(
                "the file is {} bytes; a pipeline file may be at most {MAX_FILE_SIZE} bytes",
                text.len()
            ),
        ));
    }
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Err(PipelineError::new(
            file_name,
            1,
            1,
            format!(
                "the file is empty; a pipeline needs at least a `steps:` list, like:\n{EXAMPLE}"
            ),
        ));
    }
    flow_guard::check(text).map_err(|(line, column)| {
        PipelineError::new(
            file_name,
            line,
            column,
            "too many `[`/`{` for a file this size (they make YAML parsing slow): write lists \
             and mappings in block style (`- item`, `key: value`) and move long scripts into \
             files in the repository (`run: ./ci/build.sh`)",
        )
    })?;
    let read = || {
        crate::de::with_from_secret_vars(text, || {
            CheckedMap::new(
                "a pipeline: a mapping with a `steps:` list",
                RawPipeline::into_pipeline,
            )
            .deserialize(serde_yaml::Deserializer::from_str(text))
        })
        .map_err(|e| PipelineError::from_yaml(file_name, text, &e))
    };
    let pipeline = read()?;
    // A step may depend on steps written after it, so `depends_on` is checked once all are
    // read; read again with what is wrong known, the step that has it reports its position.
    let mut problems = crate::step::graph_problems(&pipeline.steps);
    for (step, message) in matrix_filter_problems(&pipeline) {
        problems.entry(step).or_insert(message);
    }
    if let Some(message) = problems.values().next().cloned() {
        return Err(crate::step::with_graph_problems(problems, read)
            .err()
            .unwrap_or_else(|| PipelineError::new(file_name, 1, 1, message)));
    }
    // A tag's length with `{matrix}` depends on the matrix, which may come after the steps in
    // the file. Read again with it known, the tag's own check reports the tag's position.
    if let Some((len, message)) = matrix_tag_too_long(&pipeline) {
        return Err(tag::with_matrix_tag_len(len, read)
            .err()
            .unwrap_or_else(|| PipelineError::new(file_name, 1, 1, message)));
    }
    Ok(pipeline)
}

/// Steps whose `when: matrix` can never match: it names a variable that no variant has, or
/// the pipeline has no matrix. Keyed by step, as [`crate::step::graph_problems`], since the
/// matrix may be written after the steps.
fn matrix_filter_problems(pipeline: &Pipeline) -> Vec<(String, String)> {
    let variables: BTreeSet<&str> = match &pipeline.matrix {
        Some(matrix) => matrix
            .axes
            .keys()
            .chain(matrix.include.iter().flat_map(|entry| entry.keys()))
            .map(String::as_str)
            .collect(),
        None => BTreeSet::new(),
    };
    let mut problems = Vec::new();
    for step in &pipeline.steps {
        let filtered = step.when.blocks.iter().flat_map(|b| b.matrix.keys());
        for name in filtered {
            if pipeline.matrix.is_none() {
                problems.push((
                    step.name.clone(),
                    format!(
                        "step {:?}: `when: matrix` can never match: the pipeline has no `matrix`",
                        step.name
                    ),
                ));
                break;
            }
            if !variables.contains(name.as_str()) {
                let known: Vec<&str> = variables.iter().copied().collect();
                problems.push((
                    step.name.clone(),
                    format!(
                        "step {:?}: `when: matrix` names {name:?}, which is not a variable of \
                         the pipeline's matrix ({})",
                        step.name,
                        known.join(", ")
                    ),
                ));
                break;
            }
        }
    }
    problems
}

/// The longest `{matrix}` of a matrix pipeline and the first of its image builds' tags that
/// could be too long with it.
fn matrix_tag_too_long(pipeline: &Pipeline) -> Option<(usize, String)> {
    let matrix = pipeline.matrix.as_ref()?;
    let len = matrix
        .variants()
        .iter()
        .filter_map(|v| tag::matrix_tag(&v.name))
        .map(|t| t.len())
        .max()?;
    pipeline.steps.iter().find_map(|step| {
        let StepKind::ImageBuild(build) = &step.kind else {
            return None;
        };
        build.tags.iter().find_map(|t| {
            tag::check_template_with(t, Some(len))
                .err()
                .map(|e| (len, format!("step {:?}: tag {t:?}: {e}", step.name)))
        })
    })
}

/// [`parse_bytes`] for a workflow of `.raibid/` (`crate::PIPELINE_DIR`), which may also name
/// the workflows it waits for (`depends_on`, `runs_on`).
pub fn parse_workflow_bytes(file_name: &str, bytes: &[u8]) -> Result<Pipeline, PipelineError> {
    WORKFLOW.set(true);
    let parsed = parse_bytes(file_name, bytes);
    WORKFLOW.set(false);
    parsed
}

/// What a Woodpecker file's `${NAME}` become before it is read ([`crate::substitute`]).
pub enum Variables<'a> {
    /// The job's variables. A `CI_*` one the job does not have is empty, as Woodpecker's
    /// pipeline variables are when they do not apply (`CI_COMMIT_TAG` on a push, for a step
    /// that runs on tags only); any other the file uses without a default is an error naming
    /// it, as in Woodpecker: most likely a shell variable (`${HOME}`) meant for the step.
    Job(&'a dyn Fn(&str) -> Option<String>),
    /// Those known, and a variable's own name for any other: for reading a file without the
    /// job it would run for (`raibid pipeline check`; a matrix's first job, which only
    /// queues its variants, each then read with its own values).
    Known(&'a dyn Fn(&str) -> Option<String>),
}

/// [`parse_bytes`] for a Woodpecker file, run as it is (`crate::WOODPECKER_FILES`, or with
/// `workflow` one of `crate::WOODPECKER_DIR`): its `${NAME}` substituted from `variables`
/// first, then the same keys, and Woodpecker's clone defaults where it has no `clone:`.
/// Positions in errors after substitution are in the substituted text (a line is a line).
pub fn parse_woodpecker_bytes(
    file_name: &str,
    bytes: &[u8],
    workflow: bool,
    variables: &Variables<'_>,
) -> Result<Pipeline, PipelineError> {
    let text = std::str::from_utf8(bytes).map_err(|e| not_utf8(file_name, bytes, &e))?;
    let (lookup, strict) = match variables {
        Variables::Job(lookup) => (*lookup, true),
        Variables::Known(lookup) => (*lookup, false),
    };
    let placeholder = |name: &str| Some(lookup(name).unwrap_or_else(|| name.to_owned()));
    let or_empty = |name: &str| lookup(name).or_else(|| name.starts_with("CI_").then(String::new));
    let substituted = if strict {
        crate::substitute::substitute(text, &or_empty)
    } else {
        crate::substitute::substitute(text, &placeholder)
    }
    .map_err(|e| at_offset(file_name, text, e.offset, e.message))?;
    if let Some((_, offset)) = substituted.missing.first() {
        let names: Vec<&str> = substituted
            .missing
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        return Err(at_offset(
            file_name,
            text,
            *offset,
            format!(
                "no variable {} for `${{...}}`, which Woodpecker files substitute before they are \
                 read (from CI_* and the job's own variables); give a default \
                 (`${{{}:-value}}`), or write `$${{{}}}` for the step's shell to expand it",
                names.join(", "),
                names[0],
                names[0]
            ),
        ));
    }
    WOODPECKER.set(true);
    let parsed = if workflow {
        parse_workflow_bytes(file_name, substituted.text.as_bytes())
    } else {
        parse_bytes(file_name, substituted.text.as_bytes())
    };
    WOODPECKER.set(false);
    parsed
}

/// An error at byte `offset` of `text`, by line and column.
fn at_offset(file_name: &str, text: &str, offset: usize, message: String) -> PipelineError {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    PipelineError::new(file_name, line, column, message)
}

fn not_utf8(file_name: &str, bytes: &[u8], e: &std::str::Utf8Error) -> PipelineError {
    let valid = String::from_utf8_lossy(&bytes[..e.valid_up_to()]);
    at_offset(
        file_name,
        &valid,
        valid.len(),
        "the file is not valid UTF-8; save it as UTF-8".to_owned(),
    )
}

/// Like [`parse`], for file contents straight from disk or git: invalid UTF-8 is reported at the
/// first bad byte.
pub fn parse_bytes(file_name: &str, bytes: &[u8]) -> Result<Pipeline, PipelineError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(file_name, text),
        Err(e) => Err(not_utf8(file_name, bytes, &e)),
    }
}
