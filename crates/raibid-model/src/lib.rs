//! The vocabulary of raibid-ci.
//!
//! Server, agent, CLI and TUI exchange these types over Redis and over the HTTP API, so they live
//! in one crate with no I/O. Changing a field here changes the wire format of both.

mod agent;
pub mod human;
mod job;
mod pool;
pub mod scaling;
mod secret;
mod stats;
pub mod step_log;
pub mod suggest;

pub use agent::AgentInfo;
pub use job::{
    BuildStatus, Event, Forge, Job, JobArtifacts, JobStatus, ListedJob, LogErased,
    MAX_PR_LABEL_LEN, MAX_PR_LABELS, MAX_TITLE_CHARS, Needs, NeedsVerdict, NewJob, Outcome,
    StepResult, StepStatus, TestFailure, TestReport, title_line,
};
pub use pool::{PoolName, PoolNameError};
pub use secret::{RepoSecret, SecretScope};
pub use stats::{ConsumerStats, PoolPause, PoolStats, ScalerStatus};
