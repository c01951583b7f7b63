//! What the background tasks tell the dashboard.

use chrono::{DateTime, Utc};
use raibid_client::AgentEntry;
use raibid_infra::ClusterStatus;
use raibid_model::{Job, JobStatus, PoolStats, ScalerStatus};

/// One piece of news from the server, applied to the state with [`crate::App::apply`].
#[derive(Debug, Clone, PartialEq)]
pub enum DataEvent {
    Jobs(JobsUpdate),
    /// The open job's record, refreshed (steps and status change while it runs).
    Job(Box<Job>),
    /// Pool statistics as sampled at `at` (the samples make the queue-depth history), and
    /// what the autoscalers last decided.
    Pools {
        pools: Vec<PoolStats>,
        scalers: Vec<ScalerStatus>,
        at: DateTime<Utc>,
    },
    Agents(Vec<AgentEntry>),
    /// Output of the job `job_id`, in the order it was printed.
    Log {
        job_id: String,
        text: String,
    },
    /// The job's log is complete.
    LogEnd {
        job_id: String,
        status: JobStatus,
    },
    /// The log stream broke; it is being reopened where it stopped unless `retrying` is false.
    LogInterrupted {
        job_id: String,
        error: String,
        retrying: bool,
    },
    /// A poll of the server succeeded at `at`.
    Connected {
        at: DateTime<Utc>,
    },
    /// A poll failed; the next attempt is at `retry_at`.
    Disconnected {
        error: String,
        retry_at: DateTime<Utc>,
    },
    /// A reading of the Kubernetes cluster (only made while the Cluster tab is shown).
    Cluster(ClusterUpdate),
    /// The outcome of something the user asked for (cancel, retry).
    Notice {
        text: String,
        error: bool,
    },
}

/// Jobs from one poll.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobsUpdate {
    /// The newest jobs, newest first, as one complete page: a known job at least as new as
    /// the oldest of these that is missing from the update has been deleted on the server.
    pub newest: Vec<Job>,
    /// Queued and running jobs, wherever they are in history, since those change.
    pub active: Vec<Job>,
    /// Older history, loaded a page at a time in the background.
    pub older: Vec<Job>,
    /// Jobs last seen queued or running that none of the lists above covered this time,
    /// re-read one by one: they finished, were cancelled or sit deeper in a queue than its
    /// newest page, and no list would ever show the dashboard their new status.
    pub refreshed: Vec<Job>,
    /// Ids of such jobs that the server no longer has (pruned): they leave the list.
    pub gone: Vec<String>,
    /// When the poll was made: the reference for running jobs' durations when sorting.
    pub at: DateTime<Utc>,
}

/// What the cluster poller found.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterUpdate {
    Status {
        status: Box<ClusterStatus>,
        at: DateTime<Utc>,
    },
    /// The API server did not answer (or refused); the next attempt is at `retry_at`.
    Unreachable {
        error: String,
        retry_at: DateTime<Utc>,
    },
}
