//! `push` events: a branch or tag moved.

use raibid_model::{Event, Forge};
use serde::Deserialize;

use super::{ParseError, trigger};
use crate::payload::{GitRef, Repository, Sha, User, decode, objects_only};
use crate::trigger::Parsed;

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
struct Push {
    #[serde(rename = "ref")]
    git_ref: GitRef,
    after: Sha,
    /// Where the branch was before the push: all zeros when the push created it. Read leniently
    /// (see [`super::diff_base`]).
    #[serde(default)]
    before: Option<String>,
    /// GitHub only; Gitea signals a deletion by `after` alone.
    #[serde(default)]
    deleted: bool,
    head_commit: Option<Commit>,
    repository: Repository,
    sender: Option<User>,
}

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
struct Commit {
    id: Sha,
    #[serde(default)]
    message: Option<String>,
}

/// What a commit message says to skip its build, in any case: GitHub's, GitLab's and
/// Woodpecker's markers. Only branch pushes honour them, as on GitHub: a tag is a release,
/// and a pull request's payload carries no commit message.
const SKIP_MARKERS: [&str; 5] = [
    "[skip ci]",
    "[ci skip]",
    "[no ci]",
    "[skip actions]",
    "[actions skip]",
];

/// The marker in `message`, if any.
fn skip_marker(message: &str) -> Option<&'static str> {
    let message = message.to_ascii_lowercase();
    SKIP_MARKERS.into_iter().find(|m| message.contains(m))
}

objects_only!(Push, Commit);

pub(super) fn parse(forge: Forge, body: &[u8]) -> Result<Parsed, ParseError> {
    let push: Push = decode(body)?;
    let git_ref = push.git_ref.0;
    let (event, kind) = if git_ref.starts_with("refs/heads/") {
        (Event::Push, "branch")
    } else if git_ref.starts_with("refs/tags/") {
        (Event::Tag, "tag")
    } else {
        return Ok(Parsed::ignored(format!(
            "push to {git_ref} is neither a branch nor a tag"
        )));
    };
    if push.deleted || push.after.0.bytes().all(|b| b == b'0') {
        return Ok(Parsed::ignored(format!("{kind} deleted")));
    }
    // For an annotated tag `after` names the tag object, which cannot be checked out as a
    // detached commit nor receive a commit status; `head_commit` is the commit it points to.
    if event == Event::Push
        && let Some(marker) = push
            .head_commit
            .as_ref()
            .and_then(|c| c.message.as_deref())
            .and_then(skip_marker)
    {
        return Ok(Parsed::ignored(format!(
            "the head commit's message says {marker}"
        )));
    }
    let title = push
        .head_commit
        .as_ref()
        .and_then(|c| c.message.as_deref())
        .and_then(raibid_model::title_line);
    let sha = match (event, push.head_commit) {
        (Event::Tag, Some(commit)) => commit.id.0,
        _ => push.after.0,
    };
    // A tag's `before` is another tag object or nothing: tags have no changes to filter on.
    let diff_base = match event {
        Event::Push => super::diff_base(push.before, &sha),
        _ => None,
    };
    let mut trigger = trigger(forge, push.repository, push.sender, git_ref, sha, event);
    trigger.diff_base = diff_base;
    trigger.title = title;
    Ok(Parsed::Trigger(trigger))
}
