//! Evidence that raibid-ci keeps working and loses nothing, and that hostile input cannot make
//! it misbehave.
//!
//! This crate is a test harness: the tests in `tests/` kill, stall and overload real
//! processes (the `raibid` binary, redis-server, git, bubblewrap) and then check invariants
//! that a user relies on: every accepted job ends exactly once in a final state, nothing
//! accepted is lost, secrets stay out of logs. What lives here is the machinery they share.
//!
//! The CI runs small versions; `RAIBID_RELIABILITY_FULL=1` runs the full sizes whose figures
//! RELIABILITY.md records.

mod binary;
mod events;
mod git_server;
mod jobs;
mod latency;
pub mod procs;
mod redis;
mod service;
mod stack;
mod webhook_load;

use std::fs::File;
use std::path::Path;

use nix::fcntl::Flock;

pub use binary::{raibid_binary, workspace_root};
pub use events::{EVENTS_KEY, EventTap, Transition};
pub use git_server::GitServer;
pub use jobs::{
    Ledger, Verdict, job_of_agent, log_of, push_webhook, submit_until_accepted, wait_final,
};
pub use latency::{Latencies, LatencyProbe};
pub use redis::{Durability, Redis};
pub use service::Service;
pub use stack::{SECRET, Settings, Stack, TOKEN, Up};
pub use webhook_load::{Answer, Target, WebhookLoad};

/// Whether to run the full-size versions (`RAIBID_RELIABILITY_FULL=1`).
pub fn full() -> bool {
    std::env::var("RAIBID_RELIABILITY_FULL").is_ok_and(|v| v == "1")
}

/// `ci` normally, `full` with `RAIBID_RELIABILITY_FULL=1`.
pub fn size<T>(ci: T, full_size: T) -> T {
    if full() { full_size } else { ci }
}

/// Holds the machine for one heavy test at a time.
///
/// The fault tests measure timing-sensitive things (heartbeats, recovery times) on a small
/// machine; two of them at once would make a live agent look dead. nextest runs every test in
/// its own process, so an in-process mutex would not do: this is a file lock.
pub fn exclusive() -> Flock<File> {
    raibid_testkit::machine_lock("raibid-reliability.lock")
}

/// Whether `done` holds within `within`, asked every 100 ms. For what processes finish after
/// the moment a test can see: an agent acks before it removes the job's workspace and
/// releases its slot (a long removal must not hold the verdict back), and a stopped `raibid
/// up`'s children exit after it, so a test that looks at once may look too early, the sooner
/// the busier the machine.
pub async fn settled(within: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    true
}

/// Prints a test's figures as one line that RELIABILITY.md quotes
/// (`cargo test -p raibid-reliability -- --nocapture | grep '^FIGURES'`).
pub fn report(test: &str, figures: serde_json::Value) {
    println!("FIGURES {test} {figures}");
}

/// Paths in this harness are made by the tests themselves and always UTF-8.
pub(crate) fn utf8(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}
