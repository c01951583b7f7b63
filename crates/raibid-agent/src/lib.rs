//! The raibid-ci agent.
//!
//! An agent claims a job from its pools' streams, checks out the exact commit through a mirror
//! cache, runs the pipeline's steps through an [`executor::Executor`], streams the output into
//! the job's log, builds and pushes images, and acks with the result. It knows the queue, but
//! not the forge or HTTP: commit status is the server's business.

mod agent;
pub mod artifacts;
mod checkout;
mod env;
pub mod executor;
pub mod hardening;
pub mod image;
mod job_cache;
mod keep_artifacts;
mod lock_file;
mod logsink;
mod mirror_expiry;
mod private_dir;
mod program;
mod remove;
mod repo_filter;
mod runner;
mod secrets;
mod step_user;
pub mod test_reports;
mod workspace_file;
mod workspace_lock;

pub use agent::{AgentOptions, AgentSummary, run_agent};
pub use checkout::{
    Changes, CheckoutError, CheckoutReport, CommitInfo, DEFAULT_MIRROR_EXPIRY, GitCheckout,
};
pub use job_cache::{
    DEFAULT_JOB_CACHE_MAX_BYTES, EntryMeta, JobCache, JobCacheError, Restored, Saved, Skipped,
};
pub use keep_artifacts::expire_artifacts;
pub use logsink::{JobLog, Masker};
pub use mirror_expiry::{MIN_EXPIRY as MIN_MIRROR_EXPIRY, MirrorSweep};
pub use program::{AGENT_BINARY, AgentProgram};
pub use repo_filter::RepoFilter;
pub use runner::{DEFAULT_TIMEOUT, JobEnd, Runner, RunnerSettings, repo_listing};
pub use secrets::{SecretError, SecretStore};
pub use step_user::{StepUser, StepUserError};
