//! Step filters, `when: { branch, event, tag, ref, repo, cron, matrix, platform, status, path }` or a
//! list of such blocks (any of which may match), and the pipeline's own `when` (the same
//! without `status` and `matrix`).

use std::collections::BTreeMap;
use std::fmt;

use globset::{Glob, GlobBuilder, GlobMatcher};
use raibid_model::Event;
use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

use crate::de::{IncludeExclude, OneOrMany, checked_str};
use crate::evaluate::Expression;
use crate::matrix::MatrixFilter;

/// What triggered a job, as far as step filters care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerContext {
    pub event: Event,
    /// Short branch name (`main`, `release/1.0`), not `refs/heads/...`: the pushed branch, or
    /// for a pull request the branch it targets (as in Woodpecker). `None` for tag builds.
    pub branch: Option<String>,
    /// Short tag name (`v1.0`), not `refs/tags/...`. `None` unless the job is for a tag.
    pub tag: Option<String>,
    /// The files the build's commit changes, repository-relative with `/` separators (a
    /// renamed file under both its old and its new path), for `when: path`. `None` when they
    /// are not known (a tag, a manual job, a new branch, a base commit that cannot be had):
    /// path filters then match, as in Woodpecker, so that no step is left out for want of
    /// knowing. Empty when known to be none: they match unless they say `on_empty: false`.
    pub changed_files: Option<Vec<String>>,
    /// The head commit's message, for `when: path: ignore_message`. `None` when not known.
    pub message: Option<String>,
    /// The full ref (`refs/heads/main`, `refs/tags/v1`, `refs/pull/7/head`), for `when: ref`.
    pub git_ref: Option<String>,
    /// `owner/name`, for `when: repo`.
    pub repo: Option<String>,
    /// The name of the schedule that queued the job (event `cron`), for `when: cron`.
    pub cron: Option<String>,
    /// The matrix variant's variables, for a step's `when: matrix`; empty without a matrix
    /// (and for the job that queues the variants).
    pub matrix: BTreeMap<String, String>,
    /// The platform of the agent running the job (`linux/arm64`, `linux/amd64`), as container
    /// images and Woodpecker name it, for a step's `when: platform`. `None`: not known, and
    /// no platform filter matches.
    pub platform: Option<String>,
    /// The variables `when: evaluate` reads: those the job's steps get (`CI_*`, the
    /// pipeline's `env`, the job's own). Empty: every variable is `nil`.
    pub env: BTreeMap<String, String>,
}

impl TriggerContext {
    /// A context with the trigger only: changed files and commit message unknown.
    pub fn new(event: Event, branch: Option<String>, tag: Option<String>) -> Self {
        Self {
            event,
            branch,
            tag,
            changed_files: None,
            message: None,
            git_ref: None,
            repo: None,
            cron: None,
            matrix: BTreeMap::new(),
            platform: None,
            env: BTreeMap::new(),
        }
    }
}

/// A glob over branch or tag names, or over file paths (`when: path`).
///
/// `*` stops at `/` so that `release/*` means the direct children of `release/` only; `**`
/// crosses `/` for the rare filter that needs it (and for paths, where `src/**` is the usual
/// way to say "anything under `src/`", as with Woodpecker's doublestar globs).
#[derive(Clone)]
pub struct Pattern {
    source: String,
    matcher: GlobMatcher,
}

impl Pattern {
    pub fn new(source: &str) -> Result<Self, globset::Error> {
        Self::build(source, false)
    }

    /// For repository names, which forges resolve ignoring case.
    pub fn ignoring_case(source: &str) -> Result<Self, globset::Error> {
        Self::build(source, true)
    }

    fn build(source: &str, ignore_case: bool) -> Result<Self, globset::Error> {
        let glob: Glob = GlobBuilder::new(source)
            .literal_separator(true)
            .case_insensitive(ignore_case)
            .build()?;
        Ok(Self {
            source: source.to_owned(),
            matcher: glob.compile_matcher(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, name: &str) -> bool {
        self.matcher.is_match(name)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pattern").field(&self.source).finish()
    }
}

/// Two patterns are equal when they were written the same; the compiled matcher follows.
impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

/// `when: path`: which changed files make a step run (Woodpecker's `constraint.Path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathFilter {
    /// The step runs only if some changed file matches one of these; empty means any file.
    pub include: Vec<Pattern>,
    /// The step does not run if every changed file matches one of these.
    pub exclude: Vec<Pattern>,
    /// A commit whose message contains this (case ignored) runs the step whatever it changes:
    /// a way to force a full build from a commit message.
    pub ignore_message: Option<String>,
    /// Whether a commit known to change no files (an empty commit, a merge that brings
    /// nothing new) matches: Woodpecker's `on_empty`, true unless written.
    pub on_empty: bool,
}

impl PathFilter {
    /// As Woodpecker's `Path.Match`: `files` is `None` when the changes are not known, and the
    /// step then runs; empty (known: no changes), it runs as `on_empty` says; it also runs for
    /// a message with `ignore_message` in it.
    pub fn matches(&self, files: Option<&[String]>, message: Option<&str>) -> bool {
        if let (Some(marker), Some(message)) = (&self.ignore_message, message)
            && message.to_lowercase().contains(&marker.to_lowercase())
        {
            return true;
        }
        let files = match files {
            None => return true,
            Some([]) => return self.on_empty,
            Some(files) => files,
        };
        let any = |patterns: &[Pattern], file: &str| patterns.iter().any(|p| p.is_match(file));
        if !self.exclude.is_empty() && files.iter().all(|f| any(&self.exclude, f)) {
            return false;
        }
        self.include.is_empty() || files.iter().any(|f| any(&self.include, f))
    }
}

/// How the job stands when a step's turn comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Every step so far passed (or was skipped, or failed with `failure: ignore`).
    Success,
    /// A step failed, or could not run.
    Failure,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

/// One mapping of a `when`: every non-empty list must match (AND); within a list any entry may
/// match (OR). An empty block runs the step as long as no step before it failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WhenBlock {
    pub branch: Vec<Pattern>,
    pub event: Vec<Event>,
    pub tag: Vec<Pattern>,
    /// Globs over the full ref (`refs/heads/main`, `refs/tags/v*`, `refs/pull/*/head`).
    pub git_ref: Vec<Pattern>,
    /// Globs over `owner/name`, case ignored: for a file shared by forks or mirrors.
    pub repo: Vec<Pattern>,
    /// Globs over the name of the schedule that queued the job (`server.schedules`); only jobs
    /// of schedules match.
    pub cron: Vec<Pattern>,
    /// Variables the matrix variant must have, with these values (steps only).
    pub matrix: BTreeMap<String, String>,
    /// Globs over the agent's platform, `linux/arm64` (steps only, as Woodpecker's).
    pub platform: Vec<Pattern>,
    /// A condition over the variables (Woodpecker's `evaluate`).
    pub evaluate: Option<Expression>,
    /// Empty means `[success]`, as in Woodpecker: `[failure]` is for clean-up and notification
    /// steps, `[success, failure]` for steps that always run.
    pub status: Vec<RunState>,
    /// `None`: the step runs whatever the commit changes.
    pub path: Option<PathFilter>,
    /// What the filters above leave out (Woodpecker's `exclude`).
    pub excluded: Excluded,
}

/// Names and events that a block's filters leave out, as Woodpecker's `{ include, exclude }`
/// form of a filter writes them (`branch: { exclude: main }`): a job that one of them matches
/// does not match the block, whatever the filter's own list (its `include`) says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Excluded {
    pub branch: Vec<Pattern>,
    pub event: Vec<Event>,
    pub tag: Vec<Pattern>,
    pub git_ref: Vec<Pattern>,
    pub repo: Vec<Pattern>,
    pub cron: Vec<Pattern>,
    pub platform: Vec<Pattern>,
}

impl Excluded {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl WhenBlock {
    pub fn is_empty(&self) -> bool {
        self.branch.is_empty()
            && self.event.is_empty()
            && self.tag.is_empty()
            && self.git_ref.is_empty()
            && self.repo.is_empty()
            && self.cron.is_empty()
            && self.matrix.is_empty()
            && self.platform.is_empty()
            && self.evaluate.is_none()
            && self.status.is_empty()
            && self.path.is_none()
            && self.excluded.is_empty()
    }

    /// Whether the block allows the job to be in `state` (the trigger is [`WhenBlock::matches`]'s).
    pub fn runs_in(&self, state: RunState) -> bool {
        if self.status.is_empty() {
            state == RunState::Success
        } else {
            self.status.contains(&state)
        }
    }

    /// Why no job can ever match, for filters that are only ever a mistake: a job has a branch
    /// or a tag, never both, and only tag pushes (and manual runs of a tag) have a tag.
    pub(crate) fn impossible(&self) -> Option<&'static str> {
        let may_have_tag = self.event.is_empty()
            || self
                .event
                .iter()
                .any(|e| matches!(e, Event::Tag | Event::Manual));
        let may_have_branch = self.event.is_empty() || self.event.iter().any(|e| *e != Event::Tag);
        if !self.branch.is_empty() && !self.tag.is_empty() {
            Some(
                "`branch` and `tag` together: a build has a branch or a tag, never both; use \
                 two steps, or `event` with one of them",
            )
        } else if !self.tag.is_empty() && !may_have_tag {
            Some("`tag` with events that have no tag; add `tag` to `event`")
        } else if !self.branch.is_empty() && !may_have_branch {
            Some("`branch` with only the `tag` event, which has no branch")
        } else if !self.cron.is_empty()
            && !self.event.is_empty()
            && !self.event.contains(&Event::Cron)
        {
            Some("`cron` with events that are not `cron`; only jobs of schedules have one")
        } else {
            None
        }
    }

    /// A branch (or tag) filter never matches a job that has no branch (or tag): a step limited
    /// to `branch: main` must not run for a tag push, which has no branch. A path filter is the
    /// other way round: without known changes it matches (see [`PathFilter::matches`]).
    pub fn matches(&self, ctx: &TriggerContext) -> bool {
        self.mismatch(ctx).is_none()
    }

    /// The first key (`event`, `branch`, `tag`, `ref`, `repo`, `cron`, `matrix`, `platform`,
    /// `path`) that
    /// does not match `ctx`, to say why a pipeline does not run; `None` when
    /// [`WhenBlock::matches`]. `status` is not looked at.
    pub fn mismatch(&self, ctx: &TriggerContext) -> Option<&'static str> {
        // Excluded wins; without a list of its own a filter that excludes takes the rest.
        let names_match = |patterns: &[Pattern], excluded: &[Pattern], name: Option<&str>| {
            let any = |list: &[Pattern], n: &str| list.iter().any(|p| p.is_match(n));
            !name.is_some_and(|n| any(excluded, n))
                && (patterns.is_empty() || name.is_some_and(|n| any(patterns, n)))
        };
        let ex = &self.excluded;
        if !(self.event.is_empty() || self.event.contains(&ctx.event))
            || ex.event.contains(&ctx.event)
        {
            Some("event")
        } else if !names_match(&self.branch, &ex.branch, ctx.branch.as_deref()) {
            Some("branch")
        } else if !names_match(&self.tag, &ex.tag, ctx.tag.as_deref()) {
            Some("tag")
        } else if !names_match(&self.git_ref, &ex.git_ref, ctx.git_ref.as_deref()) {
            Some("ref")
        } else if !names_match(&self.repo, &ex.repo, ctx.repo.as_deref()) {
            Some("repo")
        } else if !names_match(&self.cron, &ex.cron, ctx.cron.as_deref()) {
            Some("cron")
        } else if !self
            .matrix
            .iter()
            .all(|(name, value)| ctx.matrix.get(name) == Some(value))
        {
            Some("matrix")
        } else if !names_match(&self.platform, &ex.platform, ctx.platform.as_deref()) {
            Some("platform")
        } else if !self.evaluate.as_ref().is_none_or(|e| e.holds(&ctx.env)) {
            Some("evaluate")
        } else if !self
            .path
            .as_ref()
            .is_none_or(|p| p.matches(ctx.changed_files.as_deref(), ctx.message.as_deref()))
        {
            Some("path")
        } else {
            None
        }
    }
}

/// When a step (or the pipeline) runs: a list of blocks, any of which may match (Woodpecker's
/// list form of `when`); a `when` written as one mapping is one block. No block (no `when`)
/// matches every job.
///
/// `status` belongs to its block like the other keys: a step runs with the job in a state when
/// some block both matches the trigger and allows that state (a block without `status`
/// allows `success` only). See [`When::runs`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct When {
    /// Never empty when read from a file with `when`: an empty list is refused.
    pub blocks: Vec<WhenBlock>,
}

impl When {
    /// Whether no block has any key: the step runs on every job while every step passes.
    pub fn is_empty(&self) -> bool {
        self.blocks.iter().all(WhenBlock::is_empty)
    }

    /// Whether some block has a `path` filter, for which the agent must know the changes.
    pub fn has_path(&self) -> bool {
        self.blocks.iter().any(|b| b.path.is_some())
    }

    /// Whether some block allows the job to be in `state`, whatever the trigger: when none
    /// does, the step is not even considered (after a failure, most steps are not).
    pub fn runs_in(&self, state: RunState) -> bool {
        if self.blocks.is_empty() {
            state == RunState::Success
        } else {
            self.blocks.iter().any(|b| b.runs_in(state))
        }
    }

    /// Whether the step runs for `ctx` with the job in `state`: some block matches the trigger
    /// and allows `state` (not one block matching and another allowing the state).
    pub fn runs(&self, ctx: &TriggerContext, state: RunState) -> bool {
        if self.blocks.is_empty() {
            state == RunState::Success
        } else {
            self.blocks
                .iter()
                .any(|b| b.runs_in(state) && b.matches(ctx))
        }
    }

    /// Whether some block matches `ctx`, `status` aside (see [`When::runs`] for steps).
    pub fn matches(&self, ctx: &TriggerContext) -> bool {
        self.mismatch(ctx).is_none()
    }

    /// Why no block matches `ctx` (`status` aside), to say why a pipeline does not run: each
    /// block's first key that does not match ([`WhenBlock::mismatch`]), in the order of the
    /// blocks; `None` when some block matches.
    pub fn mismatch(&self, ctx: &TriggerContext) -> Option<Vec<&'static str>> {
        let mut keys = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            keys.push(block.mismatch(ctx)?);
        }
        if keys.is_empty() { None } else { Some(keys) }
    }

    /// Why a block can never match, if one cannot: a list's blocks are refused one by one
    /// where they are written, so this only finds the block of a `when` written as a mapping.
    pub(crate) fn impossible(&self) -> Option<&'static str> {
        self.blocks.iter().find_map(WhenBlock::impossible)
    }
}

fn pattern(source: &str) -> Result<Pattern, String> {
    if source.is_empty() {
        return Err("an empty pattern matches nothing; use \"*\" to match any name".to_owned());
    }
    Pattern::new(source).map_err(|e| format!("invalid glob {source:?}: {}", e.kind()))
}

/// A glob over repository-relative paths. A leading `/` or `./` would never match one, so it
/// is refused rather than left to skip the step on every run.
fn path_pattern(source: &str) -> Result<Pattern, String> {
    if source.is_empty() {
        return Err("an empty pattern matches no file; use \"**\" to match every file".to_owned());
    }
    if source.starts_with('/') || source.starts_with("./") {
        return Err(format!(
            "{source:?} can never match: changed files are named relative to the repository \
             root, without a leading `/` or `./`"
        ));
    }
    Pattern::new(source).map_err(|e| format!("invalid glob {source:?}: {}", e.kind()))
}

fn event(name: &str) -> Result<Event, String> {
    name.parse().map_err(|unknown: String| {
        // Events of Woodpecker and GitHub files that raibid has no job for, or names differently.
        let instead = match name {
            "pull_request_closed" => {
                "raibid runs no job when a pull request is closed (closing one cancels its builds)"
            }
            "release" => "raibid runs no job for a release; the tag it creates runs `event: tag`",
            "deployment" | "deploy" => "raibid runs no deployment events",
            "pull_request_metadata" => "raibid runs no job when a pull request's labels change",
            "workflow_dispatch" => "GitHub's `workflow_dispatch` is `manual` here",
            "schedule" => "GitHub's `schedule` is `cron` here",
            "pull_request_target" => "GitHub's `pull_request_target` is `pull_request` here",
            _ => return unknown,
        };
        format!("{unknown}: {instead}")
    })
}

fn state(name: &str) -> Result<RunState, String> {
    match name {
        "success" => Ok(RunState::Success),
        "failure" => Ok(RunState::Failure),
        other => Err(format!(
            "unknown status {other:?}; use success, failure or both"
        )),
    }
}

/// A filter's `(include, exclude)`: see [`IncludeExclude`].
type Filter<T> = (Vec<T>, Vec<T>);

fn patterns<'de, D: Deserializer<'de>>(d: D) -> Result<Filter<Pattern>, D::Error> {
    IncludeExclude(OneOrMany::new(
        "a glob or a list of globs",
        "an empty list never matches; remove the key to match every name",
        pattern,
    ))
    .deserialize(d)
}

fn repo_patterns<'de, D: Deserializer<'de>>(d: D) -> Result<Filter<Pattern>, D::Error> {
    IncludeExclude(OneOrMany::new(
        "a glob over owner/name or a list of them",
        "an empty list never matches; remove `repo` to match every repository",
        repo_pattern,
    ))
    .deserialize(d)
}

fn repo_pattern(source: &str) -> Result<Pattern, String> {
    if source.is_empty() {
        return Err(
            "an empty pattern matches nothing; use \"*/*\" to match any repository".to_owned(),
        );
    }
    if !source.contains('/') && !source.contains("**") {
        return Err(format!(
            "{source:?} can never match: repositories are named `owner/name`"
        ));
    }
    Pattern::ignoring_case(source).map_err(|e| format!("invalid glob {source:?}: {}", e.kind()))
}

checked_str!(
    Evaluate: Expression,
    "a condition in quotes, like 'CI_COMMIT_MESSAGE contains \"[deploy]\"'",
    Expression::parse
);

fn platform_patterns<'de, D: Deserializer<'de>>(d: D) -> Result<Filter<Pattern>, D::Error> {
    IncludeExclude(OneOrMany::new(
        "a glob over platforms (linux/arm64, linux/*) or a list of them",
        "an empty list never matches; remove `platform` to run on every agent",
        platform_pattern,
    ))
    .deserialize(d)
}

/// Agents are Linux machines: `linux/<arch>`, the architecture as Go and container images
/// name it (`amd64`, `arm64`), which a Rust name (`x86_64`, `aarch64`) never matches.
fn platform_pattern(source: &str) -> Result<Pattern, String> {
    let Some((os, arch)) = source.split_once('/') else {
        return Err(format!(
            "{source:?} can never match: a platform is `os/arch`, like `linux/arm64`"
        ));
    };
    if !matches!(os, "linux" | "*" | "**") {
        return Err(format!(
            "{source:?} can never match: agents run on linux (`linux/{arch}`)"
        ));
    }
    if matches!(arch, "x86_64" | "aarch64") {
        let go = if arch == "x86_64" { "amd64" } else { "arm64" };
        return Err(format!(
            "{source:?} can never match: the architecture is named as Go names it, `linux/{go}`"
        ));
    }
    Pattern::ignoring_case(source).map_err(|e| format!("invalid glob {source:?}: {}", e.kind()))
}

fn ref_pattern(source: &str) -> Result<Pattern, String> {
    if !source.starts_with("refs/") && !source.starts_with("**") {
        return Err(format!(
            "{source:?} can never match: `ref` is the full ref, like `refs/heads/main`, \
             `refs/tags/v*` or `refs/pull/*/head`; use `branch` or `tag` for short names"
        ));
    }
    pattern(source)
}

fn ref_patterns<'de, D: Deserializer<'de>>(d: D) -> Result<Filter<Pattern>, D::Error> {
    IncludeExclude(OneOrMany::new(
        "a glob over full refs (refs/heads/main) or a list of them",
        "an empty list never matches; remove `ref` to match every ref",
        ref_pattern,
    ))
    .deserialize(d)
}

fn events<'de, D: Deserializer<'de>>(d: D) -> Result<Filter<Event>, D::Error> {
    IncludeExclude(OneOrMany::new(
        "an event (push, tag, pull_request, manual, cron) or a list of them",
        "an empty list never matches; remove `event` to run on every event",
        event,
    ))
    .deserialize(d)
}

fn states<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RunState>, D::Error> {
    OneOrMany::new(
        "a status (success, failure) or a list of them",
        "an empty list never matches; remove `status` to run while every step passes",
        state,
    )
    .deserialize(d)
}

fn path_patterns<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Pattern>, D::Error> {
    path_list().deserialize(d)
}

/// How a single path glob is read; a `fn` pointer so that the list reader can be named.
type PathCheck = fn(&str) -> Result<Pattern, String>;

fn path_list() -> OneOrMany<PathCheck> {
    OneOrMany::new(
        "a glob over file paths or a list of them",
        "an empty list never matches; remove the key to match every file",
        path_pattern,
    )
}

/// `path: { include, exclude, ignore_message }` as written in YAML.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPathFilter {
    #[serde(default, deserialize_with = "path_patterns")]
    include: Vec<Pattern>,
    #[serde(default, deserialize_with = "path_patterns")]
    exclude: Vec<Pattern>,
    ignore_message: Option<IgnoreMessage>,
    on_empty: Option<bool>,
}

struct IgnoreMessage(String);

impl<'de> Deserialize<'de> for IgnoreMessage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::de::StrCheck::new("a text such as \"[ALL]\"", |v: &str| {
            if v.is_empty() {
                // Every message contains "", so the filter would never filter.
                Err("an empty `ignore_message` is in every commit message; remove it".to_owned())
            } else {
                Ok(IgnoreMessage(v.to_owned()))
            }
        })
        .deserialize(d)
    }
}

/// `path:` is a glob, a list of globs (both meaning `include`), or a mapping.
struct PathFilterDe(PathFilter);

impl<'de> Deserialize<'de> for PathFilterDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PathVisitor).map(PathFilterDe)
    }
}

struct PathVisitor;

impl PathVisitor {
    fn include(include: Vec<Pattern>) -> PathFilter {
        PathFilter {
            include,
            exclude: Vec::new(),
            ignore_message: None,
            on_empty: true,
        }
    }
}

/// Scalars and lists go to [`OneOrMany`]'s visitor, which checks them where they are; a
/// mapping is checked inside `visit_map`, so its errors point into it (see `de.rs`).
impl<'de> Visitor<'de> for PathVisitor {
    type Value = PathFilter;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a glob over file paths, a list of them, or a mapping with `include`, `exclude`, \
             `ignore_message` and `on_empty`",
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<PathFilter, E> {
        path_list().visit_str(v).map(Self::include)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<PathFilter, E> {
        path_list().visit_u64(v).map(Self::include)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<PathFilter, E> {
        path_list().visit_i64(v).map(Self::include)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<PathFilter, E> {
        path_list().visit_f64(v).map(Self::include)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<PathFilter, A::Error> {
        path_list().visit_seq(seq).map(Self::include)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PathFilter, A::Error> {
        let raw = RawPathFilter::deserialize(MapAccessDeserializer::new(map))?;
        if raw.include.is_empty() && raw.exclude.is_empty() {
            return Err(de::Error::custom(
                "`path` needs `include` or `exclude` (or both): without them it filters nothing",
            ));
        }
        Ok(PathFilter {
            include: raw.include,
            exclude: raw.exclude,
            ignore_message: raw.ignore_message.map(|m| m.0),
            on_empty: raw.on_empty.unwrap_or(true),
        })
    }
}

/// `when:` as written in YAML.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWhen {
    #[serde(default, deserialize_with = "patterns")]
    branch: Filter<Pattern>,
    #[serde(default, deserialize_with = "events")]
    event: Filter<Event>,
    #[serde(default, deserialize_with = "patterns")]
    tag: Filter<Pattern>,
    #[serde(default, rename = "ref", deserialize_with = "ref_patterns")]
    git_ref: Filter<Pattern>,
    #[serde(default, deserialize_with = "repo_patterns")]
    repo: Filter<Pattern>,
    #[serde(default, deserialize_with = "patterns")]
    cron: Filter<Pattern>,
    matrix: Option<MatrixFilter>,
    #[serde(default, deserialize_with = "platform_patterns")]
    platform: Filter<Pattern>,
    evaluate: Option<Evaluate>,
    #[serde(default, deserialize_with = "states")]
    status: Vec<RunState>,
    path: Option<PathFilterDe>,
}

impl From<RawWhen> for WhenBlock {
    fn from(raw: RawWhen) -> Self {
        Self {
            branch: raw.branch.0,
            event: raw.event.0,
            tag: raw.tag.0,
            git_ref: raw.git_ref.0,
            repo: raw.repo.0,
            cron: raw.cron.0,
            matrix: raw.matrix.map(|m| m.0).unwrap_or_default(),
            platform: raw.platform.0,
            evaluate: raw.evaluate.map(|e| e.0),
            status: raw.status,
            path: raw.path.map(|p| p.0),
            excluded: Excluded {
                branch: raw.branch.1,
                event: raw.event.1,
                tag: raw.tag.1,
                git_ref: raw.git_ref.1,
                repo: raw.repo.1,
                cron: raw.cron.1,
                platform: raw.platform.1,
            },
        }
    }
}

/// A step's `when:`: one mapping of filters, or a list of them any of which may match. A list's
/// blocks are checked where they are written (one that can never match is refused there); a
/// single mapping's whole-`when` check is the step's, which names the step.
pub(crate) struct StepWhen(pub(crate) When);

impl<'de> Deserialize<'de> for StepWhen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(WhenVisitor { pipeline: false })
            .map(StepWhen)
    }
}

/// The pipeline's `when:`: a step's keys but `status` (nothing has run when it is decided), as
/// one mapping or a list of them (Woodpecker's alternatives), each read as a step's block is.
pub(crate) struct PipelineWhen(pub(crate) When);

/// The keys a pipeline's `when` takes, in the order unknown-key errors list them.
const PIPELINE_WHEN_KEYS: &[&str] = &[
    "branch", "event", "tag", "ref", "repo", "cron", "path", "evaluate",
];

impl<'de> Deserialize<'de> for PipelineWhen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(WhenVisitor { pipeline: true })
            .map(PipelineWhen)
    }
}

/// Reads one block through [`RawWhen`], a pipeline's keys through [`PipelineKeys`], with every
/// key checked first where it is written.
fn read_block<'de, A: MapAccess<'de>>(map: A, pipeline: bool) -> Result<WhenBlock, A::Error> {
    let raw = if pipeline {
        RawWhen::deserialize(MapAccessDeserializer::new(PipelineKeys(map)))?
    } else {
        RawWhen::deserialize(MapAccessDeserializer::new(map))?
    };
    Ok(raw.into())
}

/// A `when:` as a whole: a mapping is one block, a list holds blocks.
struct WhenVisitor {
    pipeline: bool,
}

impl<'de> Visitor<'de> for WhenVisitor {
    type Value = When;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.pipeline {
            f.write_str(
                "a mapping of filters: `branch`, `event`, `tag`, `ref`, `repo`, `cron`, `path`, `evaluate` \
                 (or a list of such mappings, any of which may match)",
            )
        } else {
            f.write_str(
                "a mapping of filters: `branch`, `event`, `tag`, `ref`, `repo`, `cron`, \
                 `matrix`, `platform`, `status`, `path`, `evaluate` (or a list of such mappings, any of which may match)",
            )
        }
    }

    /// Every block is checked inside its own mapping (see [`BlockSeed`]); only the empty
    /// list is reported at the list.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<When, A::Error> {
        let mut blocks = Vec::new();
        while let Some(block) = seq.next_element_seed(BlockSeed {
            pipeline: self.pipeline,
            number: blocks.len() + 1,
        })? {
            blocks.push(block);
        }
        if blocks.is_empty() {
            return Err(de::Error::custom(
                "an empty list never matches; remove `when` to always run",
            ));
        }
        Ok(When { blocks })
    }

    /// A step's single mapping is checked as a whole by the step, whose error names it; the
    /// pipeline's is checked here, reported at the mapping as a step's is.
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<When, A::Error> {
        let block = read_block(map, self.pipeline)?;
        if self.pipeline
            && let Some(why) = block.impossible()
        {
            return Err(de::Error::custom(format!(
                "the pipeline's `when` can never match: {why}"
            )));
        }
        Ok(When {
            blocks: vec![block],
        })
    }
}

/// One mapping of a `when` list, refused at its first key when it can never match: such a
/// block would never be the one that runs the step, which is always a mistake.
struct BlockSeed {
    pipeline: bool,
    /// From 1, to name the block in errors.
    number: usize,
}

impl<'de> DeserializeSeed<'de> for BlockSeed {
    type Value = WhenBlock;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<WhenBlock, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BlockSeed {
    type Value = WhenBlock;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.pipeline {
            f.write_str(
                "a mapping of filters: `branch`, `event`, `tag`, `ref`, `repo`, `cron`, `path`, `evaluate`",
            )
        } else {
            f.write_str(
                "a mapping of filters: `branch`, `event`, `tag`, `ref`, `repo`, `cron`, `matrix`, \
                 `platform`, `status`, `path`, `evaluate`",
            )
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<WhenBlock, A::Error> {
        let block = read_block(map, self.pipeline)?;
        if let Some(why) = block.impossible() {
            let whose = if self.pipeline {
                "the pipeline's"
            } else {
                "the step's"
            };
            return Err(de::Error::custom(format!(
                "block {} of {whose} `when` can never match: {why}; fix the block or remove it",
                self.number
            )));
        }
        Ok(block)
    }
}

/// The mapping of a pipeline's `when`, whose keys go through [`PipelineKey`].
struct PipelineKeys<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for PipelineKeys<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(PipelineKey(seed))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.0.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

/// Refuses `status` and unknown keys inside `visit_str`, so the error points at the key (see
/// `de.rs`), then hands the known ones to [`RawWhen`]'s own key reader.
struct PipelineKey<K>(K);

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for PipelineKey<K> {
    type Value = K::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<K::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, K: DeserializeSeed<'de>> Visitor<'de> for PipelineKey<K> {
    type Value = K::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a filter name: `branch`, `event`, `tag`, `ref`, `repo`, `cron`, `path` or `evaluate`",
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<K::Value, E> {
        match v {
            "status" => Err(E::custom(
                "`status` is for steps: the pipeline's `when` is decided before any step has \
                 run; give `when: { status: ... }` to the steps that need it",
            )),
            "matrix" => Err(E::custom(
                "`matrix` is for steps: the pipeline's `when` is decided for the whole matrix; \
                 give `when: { matrix: ... }` to the steps that need it",
            )),
            "platform" => Err(E::custom(
                "`platform` is for steps: the pipeline's `when` may be decided on another agent \
                 than the one that runs its steps (a matrix's variants); choose the agents with \
                 `pool`, or give `when: { platform: ... }` to the steps",
            )),
            key if PIPELINE_WHEN_KEYS.contains(&key) => self.0.deserialize(key.into_deserializer()),
            other => Err(E::unknown_field(other, PIPELINE_WHEN_KEYS)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One block, as a step's `when` written as a mapping holds.
    fn when(yaml: &str) -> WhenBlock {
        serde_yaml::from_str::<RawWhen>(yaml).unwrap().into()
    }

    fn on_branch(event: Event, branch: &str) -> TriggerContext {
        TriggerContext::new(event, Some(branch.to_owned()), None)
    }

    fn on_tag(tag: &str) -> TriggerContext {
        TriggerContext::new(Event::Tag, None, Some(tag.to_owned()))
    }

    #[test]
    fn empty_when_matches_everything() {
        assert!(When::default().matches(&on_tag("v1")));
        let w = WhenBlock::default();
        assert!(w.is_empty());
        assert!(w.matches(&on_branch(Event::Push, "main")));
        assert!(w.matches(&on_tag("v1")));
        assert!(w.matches(&TriggerContext::new(Event::Manual, None, None)));
    }

    #[test]
    fn branch_globs_stop_at_slashes() {
        let w = when("branch: [main, \"release/*\"]");
        assert!(w.matches(&on_branch(Event::Push, "main")));
        assert!(w.matches(&on_branch(Event::Push, "release/1.0")));
        assert!(!w.matches(&on_branch(Event::Push, "release/a/b")));
        assert!(!w.matches(&on_branch(Event::Push, "mainline")));
        assert!(!w.matches(&on_tag("main")));
        let deep = when("branch: \"feature/**\"");
        assert!(deep.matches(&on_branch(Event::Push, "feature/a/b/c")));
        assert!(!deep.matches(&on_branch(Event::Push, "features/a")));
    }

    #[test]
    fn filters_that_can_never_match_are_named() {
        for yaml in [
            "branch: main\ntag: \"v*\"",
            "tag: \"v*\"\nevent: [push, pull_request]",
            "branch: main\nevent: tag",
        ] {
            assert!(when(yaml).impossible().is_some(), "{yaml}");
        }
        for yaml in [
            "branch: main",
            "tag: \"v*\"",
            "tag: \"v*\"\nevent: [tag]",
            "tag: \"v*\"\nevent: manual",
            "branch: main\nevent: [tag, push]",
            "event: tag",
        ] {
            assert_eq!(when(yaml).impossible(), None, "{yaml}");
        }
    }

    #[test]
    fn all_keys_must_match() {
        let w = when("branch: main\nevent: [push, manual]");
        assert!(w.matches(&on_branch(Event::Push, "main")));
        assert!(w.matches(&on_branch(Event::Manual, "main")));
        assert!(!w.matches(&on_branch(Event::PullRequest, "main")));
        assert!(!w.matches(&on_branch(Event::Push, "dev")));
    }

    #[test]
    fn tag_filters() {
        let w = when("event: tag\ntag: \"v*\"");
        assert!(w.matches(&on_tag("v1.2.3")));
        assert!(!w.matches(&on_tag("release-1")));
        assert!(!w.matches(&on_branch(Event::Push, "v1")));
    }

    /// Woodpecker's `platform`: the agent's, as container images name it; steps only.
    #[test]
    fn platform_filters_match_the_agent_s_platform() {
        let arm = TriggerContext {
            platform: Some("linux/arm64".into()),
            ..on_branch(Event::Push, "main")
        };
        assert!(when("platform: linux/arm64").matches(&arm));
        assert!(when("platform: [linux/amd64, \"linux/arm*\"]").matches(&arm));
        assert!(when("platform: \"*/*\"").matches(&arm));
        assert_eq!(
            when("platform: linux/amd64").mismatch(&arm),
            Some("platform")
        );
        assert_eq!(
            when("platform: linux/arm64").mismatch(&on_branch(Event::Push, "main")),
            Some("platform"),
            "an unknown platform matches no filter"
        );
        for (yaml, needle) in [
            ("platform: arm64", "a platform is `os/arch`"),
            ("platform: windows/amd64", "agents run on linux"),
            ("platform: linux/aarch64", "`linux/arm64`"),
            ("platform: linux/x86_64", "`linux/amd64`"),
            ("platform: []", "empty list"),
        ] {
            let err = serde_yaml::from_str::<RawWhen>(yaml).err().expect(yaml);
            assert!(err.to_string().contains(needle), "{yaml}: {err}");
        }
        let err = pipeline_when("platform: linux/arm64\n").unwrap_err();
        assert!(err.to_string().contains("`platform` is for steps"), "{err}");
    }

    /// Woodpecker's `evaluate`, over the variables of the context, in a step's `when` and the
    /// pipeline's.
    #[test]
    fn evaluate_filters_read_the_variables() {
        let mut ctx = on_branch(Event::Push, "main");
        ctx.env = BTreeMap::from([("CI_COMMIT_MESSAGE".into(), "x [deploy]".into())]);
        let w = when("evaluate: 'CI_COMMIT_MESSAGE contains \"[deploy]\"'");
        assert!(w.matches(&ctx) && !w.is_empty());
        assert_eq!(
            when("evaluate: 'CI_COMMIT_MESSAGE == \"x\"'").mismatch(&ctx),
            Some("evaluate")
        );
        assert_eq!(
            when("{ branch: dev, evaluate: 'true' }").mismatch(&ctx),
            Some("branch")
        );
        let w = pipeline_when("evaluate: 'SKIP != \"true\"'\n").unwrap();
        assert!(w.matches(&ctx));
        refused_at(
            "evaluate: 'CI_A == '\n",
            pipeline_when("evaluate: 'CI_A == '\n"),
            1,
            11,
            "`evaluate`, column 9: the condition is cut short",
        );
        refused_at(
            "evaluate: CI_A\n",
            step_when("evaluate: CI_A\n"),
            1,
            11,
            "is not a condition",
        );
    }

    /// Woodpecker's `ref`, `repo`, `cron` and `matrix` filters.
    #[test]
    fn ref_repo_cron_and_matrix_filters() {
        let ctx = TriggerContext {
            git_ref: Some("refs/pull/7/head".into()),
            repo: Some("Acme/App".into()),
            cron: Some("nightly".into()),
            matrix: BTreeMap::from([
                ("RUST".into(), "1.80".into()),
                ("OS".into(), "linux".into()),
            ]),
            ..on_branch(Event::Cron, "main")
        };
        let plain = on_branch(Event::Push, "main");
        let w = when("ref: \"refs/pull/*/head\"");
        assert!(w.matches(&ctx));
        assert_eq!(
            w.mismatch(&plain),
            Some("ref"),
            "a ref not known never matches"
        );
        assert!(!when("ref: refs/heads/*").matches(&ctx));
        // Forges resolve names ignoring case, and so does `repo`.
        assert!(when("repo: acme/app").matches(&ctx));
        assert!(when("repo: [other/x, \"acme/*\"]").matches(&ctx));
        assert_eq!(when("repo: fork/app").mismatch(&ctx), Some("repo"));
        assert!(when("cron: \"night*\"").matches(&ctx));
        assert_eq!(when("cron: weekly").mismatch(&ctx), Some("cron"));
        assert_eq!(when("cron: nightly").mismatch(&plain), Some("cron"));
        assert!(when("matrix: { RUST: \"1.80\" }").matches(&ctx));
        assert!(when("matrix: { RUST: \"1.80\", OS: linux }").matches(&ctx));
        assert_eq!(
            when("matrix: { RUST: \"1.81\" }").mismatch(&ctx),
            Some("matrix")
        );
        assert_eq!(
            when("matrix: { RUST: \"1.80\" }").mismatch(&plain),
            Some("matrix")
        );
        assert!(!when("matrix: { RUST: nightly }").is_empty());
        // A cron filter for other events only is a mistake.
        assert!(when("cron: nightly\nevent: push").impossible().is_some());
        assert_eq!(
            when("cron: nightly\nevent: [push, cron]").impossible(),
            None
        );

        for (yaml, needle) in [
            ("ref: main", "the full ref"),
            ("ref: []", "empty list"),
            ("repo: app", "owner/name"),
            ("repo: \"\"", "empty pattern"),
            ("cron: []", "empty list"),
            ("matrix: {}", "empty `matrix` filter"),
            ("matrix: [RUST]", "a mapping of matrix variables"),
            ("matrix: { \"a b\": x }", "matrix"),
        ] {
            let err = serde_yaml::from_str::<RawWhen>(yaml).err().unwrap();
            assert!(err.to_string().contains(needle), "{yaml}: {err}");
        }
    }

    #[test]
    fn single_strings_and_lists_are_equivalent() {
        assert_eq!(when("event: push"), when("event: [push]"));
        assert_eq!(when("branch: main"), when("branch: [main]"));
    }

    #[test]
    fn invalid_filters() {
        for (yaml, needle) in [
            ("event: pushh", "unknown event"),
            ("event: [push, merge]", "unknown event"),
            (
                "event: [push, pull_request_closed]",
                "raibid runs no job when a pull request is closed",
            ),
            ("event: workflow_dispatch", "is `manual` here"),
            ("branch: \"[\"", "invalid glob"),
            ("branch: []", "empty list"),
            ("tag: \"\"", "empty pattern"),
            ("branches: main", "unknown field"),
            ("branch: {a: b}", "expected `include` or `exclude`"),
            ("branch: 1.5", "put it in quotes"),
            ("status: failed", "unknown status"),
            ("status: []", "empty list"),
        ] {
            let err = serde_yaml::from_str::<RawWhen>(yaml).err().unwrap();
            assert!(err.to_string().contains(needle), "{yaml}: {err}");
        }
    }

    #[test]
    fn status_says_whether_a_step_runs_after_a_failure() {
        let default = when("branch: main");
        assert!(default.runs_in(RunState::Success));
        assert!(!default.runs_in(RunState::Failure));
        let failure = when("status: failure");
        assert!(!failure.runs_in(RunState::Success));
        assert!(failure.runs_in(RunState::Failure));
        assert!(!failure.is_empty());
        let always = when("status: [success, failure]");
        assert!(always.runs_in(RunState::Success));
        assert!(always.runs_in(RunState::Failure));
        // `status` leaves the trigger filters alone.
        assert!(always.matches(&on_tag("v1")));
    }

    fn files(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    /// A push to main that changes `changed`, with `message` as its head commit's message.
    fn changing(changed: Option<&[&str]>, message: &str) -> TriggerContext {
        TriggerContext {
            changed_files: changed.map(files),
            message: Some(message.to_owned()),
            ..on_branch(Event::Push, "main")
        }
    }

    fn path(yaml: &str) -> PathFilter {
        when(yaml).path.expect("a path filter")
    }

    /// Woodpecker's `{ include, exclude }` form of a filter: what it excludes never matches,
    /// whatever it includes; with only `exclude`, everything else does.
    #[test]
    fn filters_take_woodpecker_s_include_and_exclude() {
        let not_main = when("branch: { exclude: main }");
        assert!(!not_main.is_empty());
        assert!(!not_main.matches(&on_branch(Event::Push, "main")));
        assert!(not_main.matches(&on_branch(Event::Push, "dev")));
        // A tag has no branch, so nothing of it is excluded either.
        assert!(not_main.matches(&on_tag("v1")));

        let release = when("branch:\n  include: [\"release/*\"]\n  exclude: release/old");
        assert!(release.matches(&on_branch(Event::Push, "release/1.0")));
        assert!(!release.matches(&on_branch(Event::Push, "release/old")));
        assert!(!release.matches(&on_branch(Event::Push, "main")));

        let no_tags = when("event: { exclude: [tag, cron] }");
        assert!(no_tags.matches(&on_branch(Event::Push, "main")));
        assert!(!no_tags.matches(&on_tag("v1")));
        assert_eq!(no_tags.mismatch(&on_tag("v1")), Some("event"));

        let refs = when("ref: { include: \"refs/heads/**\", exclude: refs/heads/wip/* }");
        let mut wip = on_branch(Event::Push, "wip/x");
        wip.git_ref = Some("refs/heads/wip/x".to_owned());
        assert_eq!(refs.mismatch(&wip), Some("ref"));
        let repo = when("repo: { exclude: \"fork/*\" }");
        assert!(repo.matches(&on_branch(Event::Push, "main")));
        // The same as a plain list when only `include` is given.
        assert_eq!(
            when("branch: { include: [main] }").branch,
            when("branch: main").branch
        );
    }

    #[test]
    fn include_and_exclude_are_checked_where_they_are_written() {
        for (yaml, says) in [
            ("branch: {}", "an empty mapping"),
            ("branch: { exclude: [] }", "empty list never matches"),
            ("branch: { exlude: main }", "unknown field `exlude`"),
            ("event: { exclude: merge }", "unknown event"),
            ("ref: { exclude: main }", "can never match"),
            ("branch: { include: a, include: b }", "given twice"),
        ] {
            let err = serde_yaml::from_str::<RawWhen>(yaml)
                .err()
                .unwrap_or_else(|| panic!("{yaml} was accepted"))
                .to_string();
            assert!(err.contains(says), "{yaml}: {err}");
        }
    }

    /// Woodpecker's `on_empty`: a commit known to change nothing matches a path filter unless
    /// it says `on_empty: false`; unknown changes match either way.
    #[test]
    fn a_path_filter_s_on_empty_decides_for_a_commit_that_changes_nothing() {
        let default = when("path: src/**");
        assert!(default.matches(&changing(Some(&[]), "empty")));
        let strict = when("path: { include: src/**, on_empty: false }");
        assert!(!strict.matches(&changing(Some(&[]), "empty")));
        assert!(strict.matches(&changing(None, "not known")));
        assert!(strict.matches(&changing(Some(&["src/a.rs"]), "some")));
        assert!(!strict.matches(&changing(Some(&["README.md"]), "some")));
    }

    #[test]
    fn path_takes_a_glob_a_list_or_a_mapping() {
        let one = path("path: \"src/**\"");
        assert_eq!(one.include, [Pattern::new("src/**").unwrap()]);
        assert!(one.exclude.is_empty() && one.ignore_message.is_none());
        assert_eq!(path("path: [\"src/**\"]"), one);
        assert_eq!(path("path: { include: \"src/**\" }"), one);
        let many = path("path: [\"src/**\", Cargo.lock]");
        assert_eq!(many.include.len(), 2);
        let full = path(
            "path:\n  include: [\"src/**\", \"*.toml\"]\n  exclude: [\"**/*.md\"]\n  \
             ignore_message: \"[ALL]\"",
        );
        assert_eq!(full.include.len(), 2);
        assert_eq!(full.exclude, [Pattern::new("**/*.md").unwrap()]);
        assert_eq!(full.ignore_message.as_deref(), Some("[ALL]"));
        let only_exclude = path("path: { exclude: docs/** }");
        assert!(only_exclude.include.is_empty());
        assert!(!when("path: x").is_empty());
        // A whole number is a file name like any other.
        assert_eq!(path("path: 2024").include, [Pattern::new("2024").unwrap()]);
    }

    #[test]
    fn invalid_path_filters_are_errors_where_they_are_written() {
        for (yaml, line, column, needle) in [
            (
                "event: push\npath:\n  include: src/**\n  exclud: docs/**\n",
                4,
                3,
                "unknown field `exclud`",
            ),
            ("path: [src/**, \"a/[\"]\n", 1, 16, "invalid glob \"a/[\""),
            ("path:\n  exclude: [\"{a\"]\n", 2, 13, "invalid glob"),
            ("path: []\n", 1, 7, "empty list never matches"),
            ("path: { include: [] }\n", 1, 18, "empty list never matches"),
            ("path: \"\"\n", 1, 7, "empty pattern"),
            ("path: /src/**\n", 1, 7, "relative to the repository root"),
            (
                "path: [./src/**]\n",
                1,
                8,
                "relative to the repository root",
            ),
            ("path: {}\n", 1, 7, "needs `include` or `exclude`"),
            (
                "path:\n  ignore_message: \"[ALL]\"\n",
                2,
                3,
                "needs `include` or `exclude`",
            ),
            (
                "path: { include: a, ignore_message: \"\" }\n",
                1,
                37,
                "empty `ignore_message`",
            ),
            ("path: 1.5\n", 1, 7, "quotes"),
            ("path: { include: { a: b } }\n", 1, 18, "expected a glob"),
        ] {
            refused_at(
                yaml,
                serde_yaml::from_str::<RawWhen>(yaml),
                line,
                column,
                needle,
            );
        }
    }

    #[test]
    fn path_globs_are_doublestar_globs() {
        let w = when("path: [\"src/*.rs\", \"docs/**\", \"**/*.md\"]");
        let runs = |file: &str| w.matches(&changing(Some(&[file]), "m"));
        assert!(runs("src/main.rs"));
        assert!(!runs("src/deep/main.rs"), "* stops at /");
        assert!(runs("docs/a/b/c.txt"), "** crosses /");
        assert!(
            runs("README.md") && runs("a/b/NOTES.md"),
            "**/ matches no directory too"
        );
        assert!(!runs("srcs/main.rs") && !runs("Cargo.toml"));
    }

    #[test]
    fn include_needs_one_changed_file_to_match() {
        let w = when("path: \"src/**\"");
        assert!(w.matches(&changing(Some(&["docs/a.md", "src/lib.rs"]), "m")));
        assert!(!w.matches(&changing(Some(&["docs/a.md", "README.md"]), "m")));
    }

    #[test]
    fn exclude_skips_only_when_every_changed_file_is_excluded() {
        let w = when("path: { exclude: [\"docs/**\", \"*.md\"] }");
        assert!(!w.matches(&changing(Some(&["docs/a.txt", "README.md"]), "m")));
        assert!(w.matches(&changing(Some(&["docs/a.txt", "src/lib.rs"]), "m")));
        // With both, exclude is asked first, then include.
        let both = when("path: { include: \"src/**\", exclude: \"src/generated/**\" }");
        assert!(!both.matches(&changing(Some(&["src/generated/x.rs"]), "m")));
        assert!(both.matches(&changing(Some(&["src/generated/x.rs", "src/a.rs"]), "m")));
        assert!(!both.matches(&changing(Some(&["README.md"]), "m")));
    }

    #[test]
    fn unknown_or_empty_changes_run_the_step() {
        let w = when("path: { include: \"src/**\", exclude: \"docs/**\" }");
        assert!(w.matches(&changing(None, "m")));
        assert!(w.matches(&changing(Some(&[]), "m")));
        assert!(w.matches(&on_tag("v1")), "no changes known for a tag");
    }

    #[test]
    fn ignore_message_runs_the_step_whatever_changed() {
        let w = when("path: { include: \"src/**\", ignore_message: \"[ALL]\" }");
        assert!(!w.matches(&changing(Some(&["docs/a.md"]), "docs: typo")));
        assert!(w.matches(&changing(Some(&["docs/a.md"]), "docs: typo [all]")));
        assert!(w.matches(&changing(Some(&["docs/a.md"]), "[All] rebuild\n\nbody")));
        let without = TriggerContext {
            message: None,
            ..changing(Some(&["docs/a.md"]), "")
        };
        assert!(!w.matches(&without), "no message, no marker");
        let exclude = when("path: { exclude: \"docs/**\", ignore_message: \"ci: all\" }");
        assert!(exclude.matches(&changing(Some(&["docs/a.md"]), "x\n\nCI: ALL")));
        assert!(!exclude.matches(&changing(Some(&["docs/a.md"]), "x")));
    }

    #[test]
    fn path_combines_with_the_other_keys() {
        let w = when("branch: main\npath: \"src/**\"");
        assert!(w.matches(&changing(Some(&["src/a.rs"]), "m")));
        assert!(!w.matches(&changing(Some(&["docs/a.md"]), "m")));
        let other_branch = TriggerContext {
            branch: Some("dev".into()),
            ..changing(Some(&["src/a.rs"]), "m")
        };
        assert!(!w.matches(&other_branch));
    }

    /// `parsed` (of `yaml`) is an error at `line`:`column` whose message has `needle`.
    fn refused_at<T>(
        yaml: &str,
        parsed: Result<T, serde_yaml::Error>,
        line: usize,
        column: usize,
        needle: &str,
    ) {
        let Err(err) = parsed else {
            panic!("{yaml} parsed")
        };
        let loc = err.location().unwrap();
        assert_eq!((loc.line(), loc.column()), (line, column), "{yaml}: {err}");
        assert!(err.to_string().contains(needle), "{yaml}: {err}");
    }

    fn pipeline_when(yaml: &str) -> Result<When, serde_yaml::Error> {
        serde_yaml::from_str::<PipelineWhen>(yaml).map(|w| w.0)
    }

    #[test]
    fn a_pipeline_when_takes_a_step_s_keys_but_status() {
        for yaml in [
            "branch: main",
            "event: [push, pull_request]\nbranch: main",
            "{ event: [push, pull_request], branch: main }",
            "event: tag\ntag: \"v*\"",
            "path: { include: \"src/**\", exclude: \"**/*.md\", ignore_message: \"[ALL]\" }",
            "{ ref: \"refs/tags/v*\", repo: \"acme/*\" }",
            "{ event: cron, cron: nightly }",
            "{}",
        ] {
            let read = pipeline_when(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
            assert_eq!(read.blocks, [when(yaml)], "{yaml}");
        }
        let w = pipeline_when("event: [push, pull_request]\nbranch: main").unwrap();
        assert!(w.matches(&on_branch(Event::Push, "main")));
        assert!(w.matches(&on_branch(Event::PullRequest, "main")));
        assert!(!w.matches(&on_branch(Event::Manual, "main")));
    }

    #[test]
    fn a_pipeline_when_refuses_status_and_unknown_keys_where_written() {
        for (yaml, line, column, needle) in [
            (
                "branch: main\nstatus: failure\n",
                2,
                1,
                "`status` is for steps",
            ),
            (
                "{ event: push, status: [success] }\n",
                1,
                16,
                "`status` is for steps",
            ),
            (
                "branch: main\nbranches: dev\n",
                2,
                1,
                "unknown field `branches`, expected one of `branch`, `event`, `tag`, `ref`, \
                 `repo`, `cron`, `path`",
            ),
            (
                "branch: main\nmatrix: { RUST: nightly }\n",
                2,
                1,
                "`matrix` is for steps",
            ),
            ("event: pushh\n", 1, 8, "unknown event"),
            ("path: { include: [] }\n", 1, 18, "empty list never matches"),
            ("main\n", 1, 1, "expected a mapping of filters"),
        ] {
            refused_at(yaml, pipeline_when(yaml), line, column, needle);
        }
    }

    #[test]
    fn a_pipeline_when_that_can_never_match_is_refused() {
        for yaml in [
            "branch: main\ntag: \"v*\"",
            "tag: \"v*\"\nevent: [push, pull_request]",
            "branch: main\nevent: tag",
        ] {
            let err = pipeline_when(yaml)
                .err()
                .unwrap_or_else(|| panic!("{yaml} parsed"));
            assert!(
                err.to_string()
                    .contains("the pipeline's `when` can never match"),
                "{yaml}: {err}"
            );
        }
    }

    #[test]
    fn mismatch_names_the_first_key_that_does_not_match() {
        let w = when("event: push\nbranch: main\npath: \"src/**\"");
        assert_eq!(w.mismatch(&changing(Some(&["src/a.rs"]), "m")), None);
        assert_eq!(
            w.mismatch(&changing(Some(&["docs/a.md"]), "m")),
            Some("path")
        );
        assert_eq!(
            w.mismatch(&changing(None, "m")),
            None,
            "unknown changes match"
        );
        assert_eq!(w.mismatch(&on_branch(Event::Push, "dev")), Some("branch"));
        assert_eq!(w.mismatch(&on_branch(Event::Manual, "dev")), Some("event"));
        assert_eq!(w.mismatch(&on_tag("v1")), Some("event"));
        assert_eq!(when("tag: \"v*\"").mismatch(&on_tag("x")), Some("tag"));
    }

    fn step_when(yaml: &str) -> Result<When, serde_yaml::Error> {
        serde_yaml::from_str::<StepWhen>(yaml).map(|w| w.0)
    }

    #[test]
    fn a_list_of_blocks_runs_when_any_block_matches() {
        let w = step_when("- { event: push, branch: main }\n- event: tag\n").unwrap();
        assert_eq!(w.blocks.len(), 2);
        assert!(w.matches(&on_branch(Event::Push, "main")));
        assert!(w.matches(&on_tag("v1")));
        assert!(!w.matches(&on_branch(Event::Push, "dev")));
        assert!(
            !w.matches(&on_branch(Event::PullRequest, "main")),
            "keys within a block still all match"
        );
        assert!(w.runs(&on_tag("v1"), RunState::Success));
        assert!(!w.runs(&on_branch(Event::Push, "dev"), RunState::Success));
        // A mapping is one block, and a list of one block is the same `when`.
        assert_eq!(
            step_when("branch: main").unwrap().blocks,
            [when("branch: main")]
        );
        assert_eq!(
            step_when("[{ branch: main }]").unwrap(),
            step_when("branch: main").unwrap()
        );
        assert!(step_when("[{}]").unwrap().is_empty());
        assert!(step_when("[{}, { path: a }]").unwrap().has_path());
        assert!(
            !step_when("[{ branch: a }, { event: tag }]")
                .unwrap()
                .has_path()
        );
    }

    #[test]
    fn a_pipeline_when_takes_a_list_of_blocks() {
        let w = pipeline_when("- { event: push, branch: main }\n- event: tag\n").unwrap();
        assert!(w.matches(&on_branch(Event::Push, "main")));
        assert!(w.matches(&on_tag("v1")));
        assert_eq!(
            w.mismatch(&on_branch(Event::Push, "dev")),
            Some(vec!["branch", "event"]),
            "each block's first key that does not match"
        );
        assert_eq!(
            w.mismatch(&on_branch(Event::Manual, "main")),
            Some(vec!["event", "event"])
        );
        assert_eq!(w.mismatch(&on_tag("v1")), None);
        assert_eq!(
            pipeline_when("branch: main")
                .unwrap()
                .mismatch(&on_branch(Event::Push, "dev")),
            Some(vec!["branch"])
        );
    }

    /// Each block is read where it is written: its errors point into it, not at the list.
    #[test]
    fn errors_in_a_list_are_located_in_their_block() {
        let step_cases = [
            ("- branch: main\n- event: pushh\n", 2, 10, "unknown event"),
            (
                "- branch: main\n- event: tag\n  branches: dev\n",
                3,
                3,
                "unknown field `branches`",
            ),
            (
                "- event: push\n- branch: main\n  tag: \"v*\"\n",
                2,
                3,
                "block 2 of the step's `when` can never match: `branch` and `tag` together",
            ),
            (
                "[{ event: push }, { event: tag, status: failed }]\n",
                1,
                41,
                "unknown status",
            ),
            (
                "[{ event: push }, main]\n",
                1,
                19,
                "expected a mapping of filters",
            ),
            (
                "- path: { include: src/** }\n- path: []\n",
                2,
                9,
                "empty list never matches",
            ),
            (
                "[]\n",
                1,
                1,
                "an empty list never matches; remove `when` to always run",
            ),
            ("main\n", 1, 1, "expected a mapping of filters"),
        ];
        for (yaml, line, column, needle) in step_cases {
            refused_at(yaml, step_when(yaml), line, column, needle);
        }
        let pipeline_cases = [
            (
                "- branch: main\n- event: tag\n  status: failure\n",
                3,
                3,
                "`status` is for steps",
            ),
            (
                "- branch: main\n- { event: push, tags: x }\n",
                2,
                18,
                "unknown field `tags`, expected one of `branch`, `event`, `tag`, `ref`, `repo`, `cron`, `path`",
            ),
            (
                "- branch: main\n- event: tag\n- { branch: dev, event: tag }\n",
                3,
                3,
                "block 3 of the pipeline's `when` can never match: `branch` with only the `tag` event",
            ),
            (
                "[]\n",
                1,
                1,
                "an empty list never matches; remove `when` to always run",
            ),
        ];
        for (yaml, line, column, needle) in pipeline_cases {
            refused_at(yaml, pipeline_when(yaml), line, column, needle);
        }
    }

    /// A step runs in a state when one block both matches the trigger and allows the state: a
    /// block's `status` goes with its other keys, not with the other blocks'.
    #[test]
    fn status_belongs_to_its_block() {
        let w = step_when("- branch: main\n- { event: tag, status: failure }\n").unwrap();
        let main = on_branch(Event::Push, "main");
        assert!(w.runs_in(RunState::Success) && w.runs_in(RunState::Failure));
        assert!(w.runs(&main, RunState::Success));
        assert!(
            !w.runs(&main, RunState::Failure),
            "the block that matches main does not allow failure"
        );
        assert!(w.runs(&on_tag("v1"), RunState::Failure));
        assert!(
            !w.runs(&on_tag("v1"), RunState::Success),
            "the block that matches tags allows failure only"
        );
        let always =
            step_when("- { branch: main, status: [success, failure] }\n- event: tag\n").unwrap();
        assert!(always.runs(&main, RunState::Failure));
        assert!(!always.runs(&on_tag("v1"), RunState::Failure));
        assert!(always.runs(&on_tag("v1"), RunState::Success));
        // No block allows failure: the step is not even considered after one.
        let never = step_when("- branch: main\n- event: tag\n").unwrap();
        assert!(!never.runs_in(RunState::Failure));
        // Without `when`, as with one empty block.
        assert!(When::default().runs(&main, RunState::Success));
        assert!(!When::default().runs(&main, RunState::Failure));
        assert!(!When::default().runs_in(RunState::Failure));
    }
}
