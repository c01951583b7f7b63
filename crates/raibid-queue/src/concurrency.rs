//! Concurrency groups (a pipeline's `concurrency: deploy`, GitLab's `resource_group`): at most
//! one job of a repository's group runs its steps at a time.
//!
//! The agent asks for the group once it has read the pipeline ([`Queue::acquire_group`]). A
//! job that cannot have it is not kept waiting on an agent (a KEDA pod, a slot of `raibid up`):
//! its stream entry is acknowledged and it becomes `blocked`, in the group's waiting set. When
//! the holder ends, [`Queue::release_group`] hands the group to the oldest waiting job and
//! queues it; its agent then finds it holds the group. The server releases when it reads a
//! job's final event, the parking agent once more right after parking (the holder may have
//! ended meanwhile), and the reaper sweeps every group with waiting jobs now and then
//! ([`Queue::sweep_groups`]), for endings no server read. The holder is only ever compared
//! with job statuses, so a holder that died is replaced once its job is final (given up,
//! cancelled), and one that is requeued keeps the group.

use crate::{Claimed, Queue, QueueError, scripts};

/// What [`Queue::acquire_group`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupClaim {
    /// The job holds the group: run its steps.
    Held,
    /// The job waits for the group, `blocked`; its claim is over (nothing to acknowledge).
    /// The job that holds it, when one is running.
    Parked { holder: Option<String> },
    /// A cancel was asked for first: end the job as cancelled.
    CancelRequested,
    /// The claim is no longer the job's (presumed dead and requeued).
    Lost,
}

impl Queue {
    /// The group's member in the groups set (`<repo>:<group>`, the repository lowercased).
    fn group_member(repo: &str, group: &str) -> String {
        format!("{}:{group}", repo.to_lowercase())
    }

    /// Takes the repository's concurrency group `group` for the running job of `claimed`, or
    /// parks the job until the group is free (see the module's notes).
    pub async fn acquire_group(
        &self,
        claimed: &Claimed,
        group: &str,
    ) -> Result<GroupClaim, QueueError> {
        let job = &claimed.job;
        let member = Self::group_member(&job.spec.repo, group);
        let mut invocation = scripts::ACQUIRE_GROUP.prepare_invoke();
        invocation
            .key(self.keys.job(&job.id))
            .key(self.keys.group(&member))
            .key(self.keys.group_waiting(&member))
            .key(self.keys.groups())
            .key(self.keys.stream(&job.spec.pool))
            .key(self.keys.by_status(raibid_model::JobStatus::Running))
            .key(self.keys.by_status(raibid_model::JobStatus::Blocked))
            .key(self.keys.events())
            .arg(&job.id)
            .arg(&claimed.entry)
            .arg(group)
            .arg(self.keys.job(""))
            .arg(&self.options.consumer_group)
            .arg(&member);
        let reply: Vec<String> = self.conn.script(&invocation).await?;
        match reply.first().map(String::as_str) {
            Some("held") => Ok(GroupClaim::Held),
            Some("parked") => Ok(GroupClaim::Parked {
                holder: reply.get(1).filter(|h| !h.is_empty()).cloned(),
            }),
            Some("cancel") => Ok(GroupClaim::CancelRequested),
            Some("lost") => Ok(GroupClaim::Lost),
            _ => Err(QueueError::Protocol(format!(
                "acquire_group replied {reply:?}"
            ))),
        }
    }

    /// If the holder of `repo`'s group `group` has ended, hands the group to the oldest job
    /// waiting for it and queues that job; its id. `None` when the holder still runs or nobody
    /// waits.
    pub async fn release_group(
        &self,
        repo: &str,
        group: &str,
    ) -> Result<Option<String>, QueueError> {
        let member = Self::group_member(repo, group);
        self.release_member(&member).await
    }

    async fn release_member(&self, member: &str) -> Result<Option<String>, QueueError> {
        // Each turn either queues a job or finds the one it handed the group to ended (and
        // moves on to the next), so this ends with the waiting set.
        loop {
            let mut invocation = scripts::RELEASE_GROUP.prepare_invoke();
            invocation
                .key(self.keys.group(member))
                .key(self.keys.group_waiting(member))
                .key(self.keys.groups())
                .arg(self.keys.job(""))
                .arg(member);
            let reply: Vec<String> = self.conn.script(&invocation).await?;
            let next = match (reply.first().map(String::as_str), reply.get(1)) {
                (Some("held" | "free"), _) => return Ok(None),
                (Some("next"), Some(id)) => id.clone(),
                _ => {
                    return Err(QueueError::Protocol(format!(
                        "release_group replied {reply:?}"
                    )));
                }
            };
            match self.approve(&next).await {
                Ok(_) => {
                    tracing::info!(job = %next, group = %member, "handed a concurrency group");
                    return Ok(Some(next));
                }
                // Queued by another releaser (the script then says "held"), or ended (it
                // then hands the group on).
                Err(QueueError::NotBlocked { .. } | QueueError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Releases (see [`Queue::release_group`]) every group that has waiting jobs; the jobs it
    /// queued.
    pub async fn sweep_groups(&self) -> Result<Vec<String>, QueueError> {
        let members: Vec<String> = self
            .conn
            .run(redis::cmd("SMEMBERS").arg(self.keys.groups()))
            .await?;
        let mut queued = Vec::new();
        for member in members {
            queued.extend(self.release_member(&member).await?);
        }
        Ok(queued)
    }
}
