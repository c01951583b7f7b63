//! Step filters: `when: { branch, event, tag, status }`.

use std::fmt;

use globset::{Glob, GlobBuilder, GlobMatcher};
use raibid_model::Event;
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer};

use crate::de::OneOrMany;

/// What triggered a job, as far as step filters care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerContext {
    pub event: Event,
    /// Short branch name (`main`, `release/1.0`), not `refs/heads/...`: the pushed branch, or
    /// for a pull request the branch it targets (as in Woodpecker). `None` for tag builds.
    pub branch: Option<String>,
    /// Short tag name (`v1.0`), not `refs/tags/...`. `None` unless the job is for a tag.
    pub tag: Option<String>,
}

/// A glob over branch or tag names.
///
/// `*` stops at `/` so that `release/*` means the direct children of `release/` only; `**`
/// crosses `/` for the rare filter that needs it.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    matcher: GlobMatcher,
}

impl Pattern {
    pub fn new(source: &str) -> Result<Self, globset::Error> {
        let glob: Glob = GlobBuilder::new(source).literal_separator(true).build()?;
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

/// When a step runs. Every non-empty list must match (AND); within a list any entry may match
/// (OR). An empty `When` runs the step as long as no step before it failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct When {
    pub branch: Vec<Pattern>,
    pub event: Vec<Event>,
    pub tag: Vec<Pattern>,
    /// Empty means `[success]`, as in Woodpecker: `[failure]` is for clean-up and notification
    /// steps, `[success, failure]` for steps that always run.
    pub status: Vec<RunState>,
}

impl When {
    pub fn is_empty(&self) -> bool {
        self.branch.is_empty()
            && self.event.is_empty()
            && self.tag.is_empty()
            && self.status.is_empty()
    }

    /// Whether the step runs with the job in `state` (the trigger is [`When::matches`]'s).
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
        } else {
            None
        }
    }

    /// A branch (or tag) filter never matches a job that has no branch (or tag): a step limited
    /// to `branch: main` must not run for a tag push, which has no branch.
    pub fn matches(&self, ctx: &TriggerContext) -> bool {
        let names_match = |patterns: &[Pattern], name: Option<&str>| {
            patterns.is_empty() || name.is_some_and(|n| patterns.iter().any(|p| p.is_match(n)))
        };
        names_match(&self.branch, ctx.branch.as_deref())
            && names_match(&self.tag, ctx.tag.as_deref())
            && (self.event.is_empty() || self.event.contains(&ctx.event))
    }
}

fn pattern(source: &str) -> Result<Pattern, String> {
    if source.is_empty() {
        return Err("an empty pattern matches nothing; use \"*\" to match any name".to_owned());
    }
    Pattern::new(source).map_err(|e| format!("invalid glob {source:?}: {}", e.kind()))
}

fn event(name: &str) -> Result<Event, String> {
    name.parse()
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

fn patterns<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Pattern>, D::Error> {
    OneOrMany::new(
        "a glob or a list of globs",
        "an empty list never matches; remove the key to match every name",
        pattern,
    )
    .deserialize(d)
}

fn events<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Event>, D::Error> {
    OneOrMany::new(
        "an event (push, tag, pull_request, manual) or a list of them",
        "an empty list never matches; remove `event` to run on every event",
        event,
    )
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

/// `when:` as written in YAML.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWhen {
    #[serde(default, deserialize_with = "patterns")]
    branch: Vec<Pattern>,
    #[serde(default, deserialize_with = "events")]
    event: Vec<Event>,
    #[serde(default, deserialize_with = "patterns")]
    tag: Vec<Pattern>,
    #[serde(default, deserialize_with = "states")]
    status: Vec<RunState>,
}

impl From<RawWhen> for When {
    fn from(raw: RawWhen) -> Self {
        Self {
            branch: raw.branch,
            event: raw.event,
            tag: raw.tag,
            status: raw.status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn when(yaml: &str) -> When {
        serde_yaml::from_str::<RawWhen>(yaml).unwrap().into()
    }

    fn on_branch(event: Event, branch: &str) -> TriggerContext {
        TriggerContext {
            event,
            branch: Some(branch.to_owned()),
            tag: None,
        }
    }

    fn on_tag(tag: &str) -> TriggerContext {
        TriggerContext {
            event: Event::Tag,
            branch: None,
            tag: Some(tag.to_owned()),
        }
    }

    #[test]
    fn empty_when_matches_everything() {
        let w = When::default();
        assert!(w.is_empty());
        assert!(w.matches(&on_branch(Event::Push, "main")));
        assert!(w.matches(&on_tag("v1")));
        assert!(w.matches(&TriggerContext {
            event: Event::Manual,
            branch: None,
            tag: None
        }));
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
            ("branch: \"[\"", "invalid glob"),
            ("branch: []", "empty list"),
            ("tag: \"\"", "empty pattern"),
            ("branches: main", "unknown field"),
            ("branch: {a: b}", "expected a glob"),
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
}
