//! Every Redis key raibid-ci uses, in one place.

use raibid_model::{JobStatus, PoolName, SecretScope};

#[derive(Debug, Clone)]
pub(crate) struct Keys {
    stream_name: String,
    prefix: String,
}

impl Keys {
    pub fn new(stream_name: &str) -> Self {
        Self {
            stream_name: stream_name.to_owned(),
            prefix: format!("raibid:{stream_name}"),
        }
    }

    /// What every key but the streams starts with; scripts that derive keys from job ids
    /// (CLAIM, PRUNE) get it as an argument.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The pool's stream; KEDA's trigger names this key.
    pub fn stream(&self, pool: &PoolName) -> String {
        format!("{}:{}", self.stream_name, pool)
    }

    pub fn dlq(&self, pool: &PoolName) -> String {
        format!("{}:{}:dlq", self.stream_name, pool)
    }

    pub fn job(&self, id: &str) -> String {
        format!("{}:job:{id}", self.prefix)
    }

    pub fn log(&self, id: &str) -> String {
        format!("{}:log:{id}", self.prefix)
    }

    /// Where memory pruning of logs has got to: the last job id it looked at.
    pub fn log_prune_cursor(&self) -> String {
        format!("{}:logprune:cursor", self.prefix)
    }

    /// How many logs memory pruning has deleted since its scan last started from the oldest
    /// job: a scan that reaches the newest job having deleted nothing has nothing left.
    pub fn log_prune_cycle(&self) -> String {
        format!("{}:logprune:cycle", self.prefix)
    }

    pub fn all_jobs(&self) -> String {
        format!("{}:jobs", self.prefix)
    }

    pub fn by_status(&self, status: JobStatus) -> String {
        format!("{}:jobs:status:{status}", self.prefix)
    }

    /// The indexes of the final statuses, where the pruning scripts find finished jobs.
    pub fn final_status_indexes(&self) -> impl Iterator<Item = String> + '_ {
        JobStatus::ALL
            .into_iter()
            .filter(|s| s.is_final())
            .map(|s| self.by_status(s))
    }

    pub fn by_repo(&self, repo: &str) -> String {
        format!("{}:jobs:repo:{repo}", self.prefix)
    }

    /// Every repository with a job kept (ZSET, scored by its newest job's `created_at` in ms),
    /// for the repositories page: listing them from the `by_repo` indexes would walk the
    /// keyspace.
    pub fn repos(&self) -> String {
        format!("{}:repos", self.prefix)
    }

    /// Set once [`Keys::repos`] holds the repositories of jobs queued before it existed.
    pub fn repos_indexed(&self) -> String {
        format!("{}:repos:indexed", self.prefix)
    }

    /// The jobs that queued others (a matrix's first job, a workflow that queued the rest of
    /// `.raibid/`): the first jobs of builds, whose status in the lists is their build's, so
    /// that the status filter finds them without reading every passed job. By id, as the
    /// other indexes.
    pub fn builds(&self) -> String {
        format!("{}:jobs:builds", self.prefix)
    }

    /// Set once [`Keys::builds`] holds the builds of jobs recorded before it existed.
    pub fn builds_indexed(&self) -> String {
        format!("{}:jobs:builds:indexed", self.prefix)
    }

    pub fn by_pool(&self, pool: &PoolName) -> String {
        format!("{}:jobs:pool:{pool}", self.prefix)
    }

    /// Jobs' artifacts by when they are due for deletion (`<job id> <reference>`).
    pub fn artifacts_expiry(&self) -> String {
        format!("{}:artifacts:expiry", self.prefix)
    }

    /// A repository's or an owner's secrets (a hash, a field per secret), lowercased as
    /// forges compare names.
    pub fn secrets(&self, scope: &SecretScope) -> String {
        match scope {
            SecretScope::Repo(repo) => {
                format!("{}:secrets:{}", self.prefix, repo.to_ascii_lowercase())
            }
            SecretScope::Owner(owner) => {
                format!(
                    "{}:owner-secrets:{}",
                    self.prefix,
                    owner.to_ascii_lowercase()
                )
            }
        }
    }

    /// A repository's concurrency group: the id of the job that holds it (runs its steps, or
    /// was handed it and is being queued). Repository names are compared ignoring case, as
    /// forges resolve them.
    pub fn group(&self, member: &str) -> String {
        format!("{}:group:{member}", self.prefix)
    }

    /// The jobs waiting for a concurrency group, `blocked`: a sorted set of ids, oldest first.
    pub fn group_waiting(&self, member: &str) -> String {
        format!("{}:group:{member}:waiting", self.prefix)
    }

    /// The concurrency groups that have waiting jobs (members `<repo>:<group>`), for the
    /// reaper's sweep.
    pub fn groups(&self) -> String {
        format!("{}:groups", self.prefix)
    }

    pub fn pools(&self) -> String {
        format!("{}:pools", self.prefix)
    }

    /// One hash of the paused pools: pool name to its [`raibid_model::PoolPause`] as JSON.
    pub fn paused(&self) -> String {
        format!("{}:paused", self.prefix)
    }

    /// One hash of every repository's last pipeline number, by lowercase `owner/name`.
    pub fn pipeline_numbers(&self) -> String {
        format!("{}:pipeline-numbers", self.prefix)
    }

    pub fn delivery(&self, delivery_id: &str) -> String {
        format!("{}:delivery:{delivery_id}", self.prefix)
    }

    /// Every status change, for the server's commit-status reporter and metrics.
    pub fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }

    /// What the commit-status reporter last sent for a job (see `Queue::last_report`).
    pub fn reported(&self, id: &str) -> String {
        format!("{}:reported:{id}", self.prefix)
    }

    /// The scheduler's mark for one schedule (`Queue::schedule_mark`).
    /// The builds of `git_ref` in `repo`, which a newer one supersedes (`supersede.rs`).
    /// Neither name holds a `:` (forges refuse it in repository names, git in refs), so lanes
    /// cannot collide.
    pub fn lane(&self, repo: &str, git_ref: &str) -> String {
        format!("{}:lane:{repo}:{git_ref}", self.prefix)
    }

    pub fn schedule(&self, name: &str) -> String {
        format!("{}:schedule:{name}", self.prefix)
    }

    pub fn scalers(&self) -> String {
        format!("{}:scalers", self.prefix)
    }

    pub fn agents(&self) -> String {
        format!("{}:agents", self.prefix)
    }

    /// A browser's session on the web pages, by a hash of its cookie.
    pub fn session(&self, key: &str) -> String {
        format!("{}:session:{key}", self.prefix)
    }

    /// What a session's list shows of it (when it started, the browser, its address), kept as
    /// long as the session.
    pub fn session_info(&self, key: &str) -> String {
        format!("{}:session-info:{key}", self.prefix)
    }

    /// The wrong tokens one client presented within its window, counted by every replica of
    /// the server (`client` is its address, an IPv6 one's /64).
    pub fn auth_failures(&self, client: &str) -> String {
        format!("{}:auth-failures:{client}", self.prefix)
    }

    /// The sessions signed in with one token (by the token's hash): a sorted set of session
    /// keys by expiry, so that signing out everywhere finds them.
    pub fn sessions_of(&self, token_hash: &str) -> String {
        format!("{}:sessions-of:{token_hash}", self.prefix)
    }
}

/// `text` as the literal part of a `SCAN MATCH` pattern: its `*`, `?`, `[`, `]` and `\`
/// escaped (a stream name, a repository's name may hold them).
pub(crate) fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_specials_are_escaped() {
        assert_eq!(
            glob_escape("raibid:ci-jobs:jobs:repo:"),
            "raibid:ci-jobs:jobs:repo:"
        );
        assert_eq!(glob_escape(r"a*b?[c]\"), r"a\*b\?\[c\]\\");
    }
}
