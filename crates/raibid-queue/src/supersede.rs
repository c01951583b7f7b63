//! A newer build of a branch or pull request cancels the older ones still queued or running
//! (Woodpecker's "cancel previous pipelines", GitLab's auto-cancel of redundant pipelines):
//! their results would describe commits nobody looks at any more, and they hold agents the
//! newer build needs.
//!
//! "The same" means the same repository, event and ref (`refs/heads/<branch>`, or
//! `refs/pull/<n>/head` for every push to a pull request), and another commit: a second build
//! of the same commit (a retry, a manual job) is left alone. "Older" is by queue order, which
//! job ids follow; a matrix variant is as old as its matrix job, since it is queued only when
//! that job runs. A running job whose pipeline says `interruptible: false` is left to finish
//! (queued ones are cancelled regardless: nothing of them has run).
//!
//! The jobs are found among the repository's [`SUPERSEDE_WINDOW`] newest, where unfinished
//! builds of a ref are in practice, plus every variant of a matrix one of them belongs to.
//! Looking further on every webhook would cost a walk through the repository's history.

use std::collections::HashSet;

use raibid_model::{Event, Job, JobStatus, NewJob};
use tracing::warn;

use crate::queue::valid_id;
use crate::{CancelResult, Heartbeat, Queue, QueueError, scripts};

/// How many of a repository's newest jobs are looked through for builds a new one supersedes.
pub const SUPERSEDE_WINDOW: usize = 64;

/// An older build that a newer one cancelled, or asked to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superseded {
    pub id: String,
    /// [`CancelResult::Cancelled`] (was queued), [`CancelResult::Requested`] (its agent stops
    /// it), or [`CancelResult::Kept`] (running, `interruptible: false`).
    pub result: CancelResult,
}

impl Queue {
    /// Cancels the builds `newer` supersedes (see the module's notes) and says which. Only
    /// push and pull request builds supersede anything; the caller decides for which events
    /// this is wanted (`server.cancel_superseded`).
    pub async fn supersede(&self, newer: &Job) -> Result<Vec<Superseded>, QueueError> {
        if !matches!(newer.spec.event, Event::Push | Event::PullRequest) {
            return Ok(Vec::new());
        }
        let json = |s: &str| serde_json::to_string(s).expect("a string serializes");
        let mut find = scripts::FIND_SUPERSEDED.prepare_invoke();
        find.key(self.keys.by_repo(&newer.spec.repo))
            .key(self.keys.by_status(JobStatus::Queued))
            .key(self.keys.by_status(JobStatus::Running))
            .arg(self.keys.prefix())
            .arg(SUPERSEDE_WINDOW)
            .arg(format!("\"git_ref\":{}", json(&newer.spec.git_ref)))
            .arg(format!("\"sha\":{}", json(&newer.spec.sha)));
        let found: Vec<String> = self.conn.script(&find).await?;

        let mut victims: Vec<String> = Vec::new();
        let mut parents: Vec<String> = Vec::new();
        for pair in found.chunks(2) {
            let [id, spec] = pair else { continue };
            let older: NewJob = match serde_json::from_str(spec) {
                Ok(spec) => spec,
                Err(e) => {
                    warn!(job = %id, error = %e, "unreadable job spec; not superseded");
                    continue;
                }
            };
            if !supersedes(newer, id, &older) {
                continue;
            }
            if let Some(parent) = older.matrix_parent.filter(|p| valid_id(p))
                && !parents.contains(&parent)
            {
                parents.push(parent);
            }
            victims.push(id.clone());
        }
        // A matrix's variants are one build: those outside the window go with those in it.
        for parent in &parents {
            for child in self.children_of(parent).await? {
                if !victims.contains(&child) && child != newer.id {
                    victims.push(child);
                }
            }
        }

        let reason = format!(
            "superseded by job {} ({})",
            newer.id,
            short_sha(&newer.spec.sha)
        );
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for id in victims {
            if !seen.insert(id.clone()) {
                continue;
            }
            match self.cancel_job(&id, &reason, true).await {
                Ok(CancelResult::AlreadyFinished(_)) | Err(QueueError::NotFound(_)) => {}
                Ok(result) => out.push(Superseded { id, result }),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// A matrix job's variants (`Job::children`), without reading the rest of its record.
    pub(crate) async fn children_of(&self, parent: &str) -> Result<Vec<String>, QueueError> {
        let raw: Option<String> = self
            .conn
            .run(
                redis::cmd("HGET")
                    .arg(self.keys.job(parent))
                    .arg("children"),
            )
            .await?;
        Ok(raw
            .and_then(|r| serde_json::from_str::<Vec<String>>(&r).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|id| valid_id(id))
            .collect())
    }

    /// Records that a running job must not be interrupted by a newer build (its pipeline says
    /// `interruptible: false`). Answers as a heartbeat does: too late when a cancel was asked
    /// for first, or when the claim was lost; the caller then stops as it would on a heartbeat.
    pub async fn mark_uninterruptible(
        &self,
        claimed: &crate::Claimed,
    ) -> Result<Heartbeat, QueueError> {
        let mut invocation = scripts::MARK_UNINTERRUPTIBLE.prepare_invoke();
        invocation
            .key(self.keys.job(&claimed.job.id))
            .arg(&claimed.entry);
        let reply: String = self.conn.script(&invocation).await?;
        match reply.as_str() {
            "ok" => Ok(Heartbeat::Continue),
            "cancel" => Ok(Heartbeat::CancelRequested),
            "lost" => Ok(Heartbeat::Lost),
            other => Err(QueueError::Protocol(format!(
                "marking a job uninterruptible replied {other}"
            ))),
        }
    }
}

/// Whether `older` (job `id`) is a build `newer` supersedes: the same repository, event and
/// ref, another commit, queued before it.
fn supersedes(newer: &Job, id: &str, older: &NewJob) -> bool {
    let queued_as = older.matrix_parent.as_deref().unwrap_or(id);
    id != newer.id
        && older.repo == newer.spec.repo
        && older.event == newer.spec.event
        && older.git_ref == newer.spec.git_ref
        && older.sha != newer.spec.sha
        && queued_as < newer.id.as_str()
}

fn short_sha(sha: &str) -> &str {
    sha.get(..10).unwrap_or(sha)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    const NEW: &str = "01KBQ0000000000000000000NW";
    const OLD: &str = "01KBP0000000000000000000LD";
    const LATER: &str = "01KBR0000000000000000000LT";

    fn spec(git_ref: &str, sha: &str, event: Event) -> NewJob {
        NewJob::new("acme/app", "http://forge/acme/app.git", git_ref, sha, event)
    }

    fn newer() -> Job {
        Job::queued(
            NEW,
            spec("refs/heads/main", &"b".repeat(40), Event::Push),
            Utc::now(),
        )
    }

    #[test]
    fn an_older_build_of_the_same_ref_and_another_commit_is_superseded() {
        let older = spec("refs/heads/main", &"a".repeat(40), Event::Push);
        assert!(supersedes(&newer(), OLD, &older));
    }

    #[test]
    fn other_refs_events_commits_repositories_and_newer_jobs_are_not() {
        let n = newer();
        let a = "a".repeat(40);
        assert!(!supersedes(
            &n,
            OLD,
            &spec("refs/heads/dev", &a, Event::Push)
        ));
        assert!(!supersedes(
            &n,
            OLD,
            &spec("refs/heads/main", &a, Event::Manual)
        ));
        assert!(!supersedes(
            &n,
            OLD,
            &spec("refs/heads/main", &"b".repeat(40), Event::Push)
        ));
        let mut other_repo = spec("refs/heads/main", &a, Event::Push);
        other_repo.repo = "acme/other".into();
        assert!(!supersedes(&n, OLD, &other_repo));
        assert!(!supersedes(
            &n,
            LATER,
            &spec("refs/heads/main", &a, Event::Push)
        ));
        assert!(!supersedes(
            &n,
            NEW,
            &spec("refs/heads/main", &a, Event::Push)
        ));
    }

    #[test]
    fn a_matrix_variant_is_as_old_as_its_matrix_job() {
        let n = newer();
        let mut variant = spec("refs/heads/main", &"a".repeat(40), Event::Push);
        variant.matrix_parent = Some(OLD.into());
        assert!(
            supersedes(&n, LATER, &variant),
            "queued after the new job, for a matrix job queued before it"
        );
        variant.matrix_parent = Some(LATER.into());
        assert!(!supersedes(&n, LATER, &variant));
    }

    #[test]
    fn the_reason_names_a_short_commit() {
        assert_eq!(short_sha(&"c".repeat(40)), "cccccccccc");
        assert_eq!(short_sha("abc"), "abc");
    }
}
