//! `pull_request` events: a pull request was opened, updated, or something else happened to it.

use raibid_model::{Event, Forge};
use serde::Deserialize;

use super::{ParseError, trigger};
use crate::payload::{BranchName, RepoName, Repository, Sha, User, decode, objects_only};
use crate::trigger::{Parsed, PullRequestClosed};

/// Read first, so that the many pull request events that do not build (labels, reviews,
/// closing) are acknowledged without requiring the rest of the payload to be complete.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
struct Action {
    action: String,
}

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
struct PullRequestEvent {
    pull_request: PullRequest,
    /// The target repository.
    repository: Repository,
    sender: Option<User>,
}

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
struct PullRequest {
    number: u64,
    #[serde(default)]
    title: Option<String>,
    head: Head,
    base: Base,
    /// `null` from some Gitea versions for a pull request without labels.
    #[serde(default)]
    labels: Option<Vec<Label>>,
}

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
struct Label {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
struct Head {
    sha: Sha,
    /// The head branch, or for a Gitea/Forgejo AGit pull request (pushed to `refs/for/<base>`)
    /// the pull request's own ref `refs/pull/<n>/head`.
    #[serde(rename = "ref", default)]
    git_ref: String,
    /// `null` once the fork has been deleted.
    repo: Option<HeadRepo>,
}

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
struct HeadRepo {
    full_name: String,
}

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
struct Base {
    #[serde(rename = "ref")]
    branch: BranchName,
    /// The head of the target branch when the pull request was last updated: compared with
    /// `head.sha` from their merge base, its changes are the pull request's. Gitea, Forgejo and
    /// GitHub all send it; read leniently (see [`super::diff_base`]).
    #[serde(default)]
    sha: Option<String>,
}

/// `closed`: only which pull request, of which repository.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
struct ClosedEvent {
    pull_request: ClosedPullRequest,
    repository: ClosedRepository,
}

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
struct ClosedPullRequest {
    number: u64,
}

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
struct ClosedRepository {
    full_name: RepoName,
}

objects_only!(
    Action,
    PullRequestEvent,
    PullRequest,
    Head,
    HeadRepo,
    Base,
    Label,
    ClosedEvent,
    ClosedPullRequest,
    ClosedRepository
);

pub(super) fn parse(
    forge: Forge,
    event_type: Option<&str>,
    body: &[u8],
) -> Result<Parsed, ParseError> {
    let Action { action } = decode(body)?;
    if action == "closed" {
        let event: ClosedEvent = decode(body)?;
        return Ok(Parsed::Closed(PullRequestClosed {
            forge,
            repo: event.repository.full_name.0,
            number: event.pull_request.number,
        }));
    }
    if !builds(forge, &action, event_type) {
        return Ok(Parsed::ignored(format!(
            "pull_request action {action:?} is not handled"
        )));
    }
    let event: PullRequestEvent = decode(body)?;
    let pr = event.pull_request;
    let from_fork = is_from_fork(forge, &pr.head, &event.repository.full_name.0);
    // A branch's name; an AGit pull request's head is its own `refs/pull/<n>/head`.
    let source_branch = Some(pr.head.git_ref)
        .filter(|b| !b.starts_with("refs/") && crate::validate::branch_name(b).is_ok());
    let diff_base = super::diff_base(pr.base.sha, &pr.head.sha.0);
    let mut trigger = trigger(
        forge,
        event.repository,
        event.sender,
        format!("refs/pull/{}/head", pr.number),
        pr.head.sha.0,
        Event::PullRequest,
    );
    trigger.diff_base = diff_base;
    trigger.branch = Some(pr.base.branch.0);
    trigger.pr_number = Some(pr.number);
    trigger.source_branch = source_branch;
    trigger.pr_labels = labels(pr.labels.unwrap_or_default());
    trigger.from_fork = from_fork;
    trigger.title = pr.title.as_deref().and_then(raibid_model::title_line);
    Ok(Parsed::Trigger(trigger))
}

/// The names a job keeps of a pull request's labels: trimmed, without empty ones, ones with
/// control characters (they reach a step's environment) or longer than
/// [`raibid_model::MAX_PR_LABEL_LEN`], at most [`raibid_model::MAX_PR_LABELS`] of them.
fn labels(labels: Vec<Label>) -> Vec<String> {
    labels
        .into_iter()
        .map(|label| label.name.trim().to_owned())
        .filter(|name| {
            !name.is_empty()
                && name.len() <= raibid_model::MAX_PR_LABEL_LEN
                && !name.chars().any(char::is_control)
        })
        .take(raibid_model::MAX_PR_LABELS)
        .collect()
}

/// Whether the pull request's code must be treated as untrusted (no secrets).
///
/// Forges treat owner and repository names case-insensitively; a head repository that is gone
/// can only have been a fork. Gitea and Forgejo AGit pull requests (`git push origin
/// HEAD:refs/for/main`, open to anyone with read access) report the base repository as their
/// head repository, but their head is `refs/pull/<n>/head` rather than a branch: only a head on
/// a plain branch of the base repository was pushed by someone with write access.
fn is_from_fork(forge: Forge, head: &Head, base_repo: &str) -> bool {
    let same_repo = head
        .repo
        .as_ref()
        .is_some_and(|repo| repo.full_name.eq_ignore_ascii_case(base_repo));
    let on_a_branch = match forge {
        Forge::Github => true,
        Forge::Gitea | Forge::Forgejo => {
            !head.git_ref.is_empty() && !head.git_ref.starts_with("refs/")
        }
    };
    !(same_repo && on_a_branch)
}

/// Whether the pull request's head may have new code. GitHub says `synchronize`, Gitea and
/// Forgejo say `synchronized` and also flag it with the `pull_request_sync` event type.
fn builds(forge: Forge, action: &str, event_type: Option<&str>) -> bool {
    match forge {
        Forge::Github => matches!(action, "opened" | "reopened" | "synchronize"),
        Forge::Gitea | Forge::Forgejo => {
            matches!(action, "opened" | "reopened" | "synchronized")
                || event_type == Some("pull_request_sync")
        }
    }
}
