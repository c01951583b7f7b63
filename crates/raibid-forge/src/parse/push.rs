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
    let sha = match (event, push.head_commit) {
        (Event::Tag, Some(commit)) => commit.id.0,
        _ => push.after.0,
    };
    Ok(Parsed::Trigger(trigger(
        forge,
        push.repository,
        push.sender,
        git_ref,
        sha,
        event,
    )))
}
