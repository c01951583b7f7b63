//! A newer build of a branch or pull request cancels the older ones still queued, blocked
//! (waiting for approval) or running (Woodpecker's "cancel previous pipelines", GitLab's
//! auto-cancel of redundant pipelines): their results would describe commits nobody looks at
//! any more, and they hold agents the newer build needs.
//!
//! "The same" means the same repository and ref (`refs/heads/<branch>`, or
//! `refs/pull/<n>/head` for every push to a pull request), and another commit: a second build
//! of the same commit is left alone. Each ref has a lane, a Redis sorted set of its builds by
//! id (queue order): a build joins its lane when it supersedes (its webhook) or is a retry, and
//! what it supersedes are the lane's older members. A matrix job's variants go with it; they
//! are found through it, not the lane. A running job whose pipeline says `interruptible: false`
//! is left to finish (queued and blocked ones are cancelled regardless: nothing of them has
//! run).
//!
//! A lane keeps its [`LANE_MAX`] newest builds, and lives a week after its last one: builds
//! older than that are not found, and run to their end.

use raibid_model::{Event, Job, NewJob};

use crate::queue::{CancelScope, heartbeat_reply, valid_id};
use crate::{CancelResult, Heartbeat, Queue, QueueError, scripts};

/// How many builds of one branch or pull request its lane remembers.
pub const LANE_MAX: usize = 256;

/// How long a lane lives after its last build joined it.
const LANE_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// An older build that a newer one cancelled, or asked to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superseded {
    pub id: String,
    /// [`CancelResult::Cancelled`] (was queued), [`CancelResult::Requested`] (its agent stops
    /// it), or [`CancelResult::Kept`] (running, `interruptible: false`).
    pub result: CancelResult,
}

/// Whether builds of `spec` have a lane: only branch and pull request builds supersede.
fn has_lane(spec: &NewJob) -> bool {
    matches!(spec.event, Event::Push | Event::PullRequest)
}

impl Queue {
    /// Cancels the builds `newer` supersedes (see the module's notes) and says which, newest
    /// first. Only push and pull request builds supersede anything; the caller decides for
    /// which events this is wanted (`server.cancel_superseded`).
    pub async fn supersede(&self, newer: &Job) -> Result<Vec<Superseded>, QueueError> {
        if !has_lane(&newer.spec) {
            return Ok(Vec::new());
        }
        let mut find = scripts::FIND_SUPERSEDED.prepare_invoke();
        find.key(self.keys.lane(&newer.spec.repo, &newer.spec.git_ref))
            .arg(self.keys.prefix())
            .arg(&newer.id)
            .arg(&newer.spec.sha)
            .arg(LANE_MAX)
            .arg(LANE_TTL.as_secs());
        let found: Vec<String> = self.conn.script(&find).await?;

        let reason = format!(
            "superseded by job {} ({})",
            newer.id,
            short_sha(&newer.spec.sha)
        );
        let mut out = Vec::new();
        for pair in found.chunks(2) {
            let [id, variants] = pair else { continue };
            self.supersede_one(id, &reason, &mut out).await?;
            if variants == "1" {
                for child in self.children_of(id).await? {
                    self.supersede_one(&child, &reason, &mut out).await?;
                }
            }
        }
        Ok(out)
    }

    /// Cancels every build of `git_ref` of `repo` its lane remembers that is still queued,
    /// blocked or running (a closed pull request's), and their matrix variants, as superseding
    /// does (`interruptible: false` keeps a running one); says which, newest first.
    pub async fn cancel_lane(
        &self,
        repo: &str,
        git_ref: &str,
        reason: &str,
    ) -> Result<Vec<Superseded>, QueueError> {
        let members: Vec<String> = self
            .conn
            .run(
                redis::cmd("ZRANGE")
                    .arg(self.keys.lane(repo, git_ref))
                    .arg(0)
                    .arg(-1)
                    .arg("REV"),
            )
            .await?;
        let mut out = Vec::new();
        for member in &members {
            let Some(id) = member.split(':').next().filter(|id| valid_id(id)) else {
                continue;
            };
            self.supersede_one(id, reason, &mut out).await?;
            for child in self.children_of(id).await? {
                self.supersede_one(&child, reason, &mut out).await?;
            }
        }
        Ok(out)
    }

    async fn supersede_one(
        &self,
        id: &str,
        reason: &str,
        out: &mut Vec<Superseded>,
    ) -> Result<(), QueueError> {
        if out.iter().any(|s| s.id == id) {
            return Ok(());
        }
        match self
            .cancel_job(id, reason, CancelScope::Interruptible)
            .await
        {
            Ok(CancelResult::AlreadyFinished(_)) | Err(QueueError::NotFound(_)) => Ok(()),
            Ok(result) => {
                out.push(Superseded {
                    id: id.to_owned(),
                    result,
                });
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Puts a retry in its lane, so that a later push of the ref supersedes it too.
    pub(crate) async fn join_lane(&self, job: &Job) -> Result<(), QueueError> {
        if !has_lane(&job.spec) {
            return Ok(());
        }
        let mut invocation = scripts::JOIN_LANE.prepare_invoke();
        invocation
            .key(self.keys.lane(&job.spec.repo, &job.spec.git_ref))
            .arg(format!("{}:{}:retry", job.id, job.spec.sha))
            .arg(LANE_MAX)
            .arg(LANE_TTL.as_secs());
        let _: i64 = self.conn.script(&invocation).await?;
        Ok(())
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
        heartbeat_reply(&reply, "marking a job uninterruptible")
    }
}

fn short_sha(sha: &str) -> &str {
    sha.get(..10).unwrap_or(sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_names_a_short_commit() {
        assert_eq!(short_sha(&"c".repeat(40)), "cccccccccc");
        assert_eq!(short_sha("abc"), "abc");
    }
}
