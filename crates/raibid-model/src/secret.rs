//! Repository secrets as the API shows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Event;

/// A repository secret, without its value: once set, a value is only ever given to the steps
/// that name it, never back through the API (as on GitHub, Gitea and Woodpecker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoSecret {
    pub name: String,
    /// The events whose jobs may read it (Woodpecker's secret events): a deploy key limited to
    /// `push` and `tag` is not given to a pull request's job, whatever its pipeline file says.
    /// Empty: every event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
    /// Globs over branch names (`main`, `release/*`): only jobs of a push to a matching branch
    /// may read it (GitLab's protected variables), never a pull request's, whatever branch it
    /// targets, nor a tag's. Empty: every branch, and jobs of no branch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<String>,
    pub updated_at: DateTime<Utc>,
}

/// Whose secrets: one repository's, or those of every repository of an owner (an
/// organization or a user), as Woodpecker's and Gitea's organization secrets. A job gets both
/// its repository's and its owner's; the repository's win.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretScope {
    /// `owner/name`.
    Repo(String),
    /// `owner`.
    Owner(String),
}

impl SecretScope {
    /// The owner's scope of repository `repo` (`owner/name`).
    pub fn owner_of(repo: &str) -> Option<SecretScope> {
        repo.split_once('/')
            .map(|(owner, _)| SecretScope::Owner(owner.to_owned()))
    }

    /// The repository's or owner's name, as given.
    pub fn name(&self) -> &str {
        match self {
            SecretScope::Repo(name) | SecretScope::Owner(name) => name,
        }
    }
}

impl std::fmt::Display for SecretScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretScope::Repo(repo) => write!(f, "repository {repo}"),
            SecretScope::Owner(owner) => write!(f, "owner {owner}"),
        }
    }
}

impl RepoSecret {
    /// Whether a job of `event` may read it.
    pub fn allows(&self, event: Event) -> bool {
        self.events.is_empty() || self.events.contains(&event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_events_means_every_event() {
        let mut s = RepoSecret {
            name: "DEPLOY_KEY".into(),
            events: vec![],
            branches: vec![],
            updated_at: Utc::now(),
        };
        assert!(Event::ALL.iter().all(|e| s.allows(*e)));
        s.events = vec![Event::Push, Event::Tag];
        assert!(s.allows(Event::Tag));
        assert!(!s.allows(Event::PullRequest));
    }
}
