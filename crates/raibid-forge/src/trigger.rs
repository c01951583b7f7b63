//! What a webhook asks of raibid-ci: build this commit, or nothing.

use std::collections::BTreeMap;

use raibid_model::{Event, Forge, NewJob, PoolName};

/// The outcome of reading a webhook that was well-formed.
#[derive(Debug, Clone, PartialEq, Eq)]
// Built once per request and moved straight into a job, so boxing the large variant would buy
// nothing but an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    Trigger(Trigger),
    /// A valid webhook that should not start a build. The reason is for the forge's delivery
    /// log, so a user can see why nothing ran.
    Ignored {
        reason: String,
    },
    /// A pull request was closed (or merged): its builds still queued or running describe
    /// code nobody will merge as it is.
    Closed(PullRequestClosed),
}

/// Which pull request was closed; `repo` is checked as a trigger's is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestClosed {
    pub forge: Forge,
    /// `owner/name` of the target repository.
    pub repo: String,
    pub number: u64,
}

impl PullRequestClosed {
    /// The ref its builds are of (`Trigger::git_ref` of its pull request events).
    pub fn git_ref(&self) -> String {
        format!("refs/pull/{}/head", self.number)
    }
}

impl Parsed {
    pub(crate) fn ignored(reason: impl Into<String>) -> Self {
        Self::Ignored {
            reason: reason.into(),
        }
    }
}

/// A webhook that should start a build: which commit, where to fetch it from, and why.
///
/// `repo`, `git_ref`, `sha` and `clone_url` have been checked to be safe to use in paths, git
/// arguments and Redis keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub forge: Forge,
    /// `owner/name` of the repository that receives the commit status (for a pull request, the
    /// target repository).
    pub repo: String,
    /// Always the target repository's URL: `refs/pull/<n>/head` lives there even for forks.
    pub clone_url: String,
    /// The repository's web page, for links (checked: `http(s)`, no credentials, query or
    /// fragment; dropped otherwise).
    pub html_url: Option<String>,
    /// Full ref: `refs/heads/<branch>`, `refs/tags/<tag>` or `refs/pull/<n>/head`.
    pub git_ref: String,
    pub sha: String,
    pub event: Event,
    /// The pushed branch; for a pull request, the branch it targets, which is what branch
    /// filters in pipelines are meant to match.
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub pr_number: Option<u64>,
    /// The branch a pull request comes from, checked as a branch name.
    pub source_branch: Option<String>,
    /// A pull request's labels, bounded and without control characters.
    pub pr_labels: Vec<String>,
    /// The pull request comes from another repository, whose author may not be trusted with
    /// secrets.
    pub from_fork: bool,
    /// Login of the user whose action sent the webhook.
    pub sender: Option<String>,
    pub default_branch: Option<String>,
    /// The commit `when: path` filters compare with (checked like `sha`): a branch push's
    /// `before`, unless the push created the branch; a pull request's base. `None` for tags.
    pub diff_base: Option<String>,
    /// What the build is about, in one line ([`raibid_model::title_line`]): the head commit's
    /// subject of a push, the title of a pull request.
    pub title: Option<String>,
}

impl Trigger {
    /// The job this trigger asks for. `delivery_id` lets the queue recognise a redelivery of
    /// the same webhook.
    pub fn into_new_job(self, pool: PoolName, delivery_id: Option<String>) -> NewJob {
        NewJob {
            repo: self.repo,
            clone_url: self.clone_url,
            git_ref: self.git_ref,
            sha: self.sha,
            event: self.event,
            pool,
            forge: Some(self.forge),
            pr_number: self.pr_number,
            from_fork: self.from_fork,
            sender: self.sender,
            delivery_id,
            env: BTreeMap::new(),
            retry_of: None,
            matrix_parent: None,
            target_branch: match self.event {
                Event::PullRequest => self.branch,
                _ => None,
            },
            diff_base: self.diff_base,
            schedule: None,
            needs: None,
            number: None,
            source_branch: self.source_branch,
            pr_labels: self.pr_labels,
            title: self.title,
            repo_url: self.html_url,
        }
    }
}
