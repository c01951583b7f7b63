//! raibid-ci's job queue on Redis Streams.
//!
//! This crate is the only code in raibid-ci that speaks Redis. Its model:
//!
//! - one stream per pool (`<stream_name>:<pool>`), consumed by one consumer group, because
//!   streams have no routing of their own;
//! - a hash per job (`raibid:<stream_name>:job:<id>`) holding the job record, plus sorted-set
//!   indexes for listing newest first by repository, pool and status;
//! - every state change that must agree with the stream (start, ack, requeue, dead-letter,
//!   cancel) is one Lua script, so a crash between two commands cannot leave a job acked but
//!   still `running`, or `queued` with nothing in the stream;
//! - a reaper (`requeue_stale`) re-adds entries whose agent stopped heart-beating as new
//!   entries, so that the consumer-group lag (what KEDA and the local pool scale on) counts
//!   them again; after `max_attempts` deliveries a job goes to `<stream>:dlq` instead.

mod agents;
mod artifacts;
pub mod bench;
mod concurrency;
mod conn;
mod error;
mod events;
mod keys;
mod logs;
mod needs;
mod pause;
mod queue;
mod record;
mod reply;
mod repos;
mod schedules;
mod scripts;
mod secrets;
mod sessions;
mod stats;
mod supersede;

pub use artifacts::DueArtifacts;
pub use concurrency::GroupClaim;
pub use conn::QueueOptions;
pub use error::QueueError;
pub use events::{JobEvent, JobEvents};
pub use logs::{LogBatch, LogChunk, LogCursor, LogEnd, LogFollower, LogWriter, line_breaks};
pub use needs::Released;
pub use queue::{
    CancelResult, Claimed, Claimer, Enqueued, EraseLog, Heartbeat, JobFilter, JobPage,
    LIST_SCAN_MAX, MemoryPrune, MemoryReading, MemoryUse, Queue, ReapReport, ReleaseResult,
};
pub use repos::RepoActivity;
pub use schedules::ScheduleMark;
pub use secrets::{
    JobSecret, JobSecrets, MAX_SECRET_BYTES, MAX_SECRETS_PER_REPO, OpenedSecret, Resealed,
    SecretsKey, Unopenable,
};
pub use sessions::{SessionClient, SessionInfo};
pub use supersede::{LANE_MAX, Superseded};
