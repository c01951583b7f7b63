//! raibid-ci's benchmarks: the figures in BENCHMARKS.md, measured against the targets of the
//! issues.
//!
//! Each benchmark is one async function taking an options struct (defaults: the sizes the
//! targets are stated for) and returning a serializable report that also renders as plain
//! tables, so the `raibid` binary can offer them as `raibid bench
//! webhooks|checkout|logs|e2e|cache|pages` with `--output table|json`. They start real processes
//! (redis-server, git daemon, the release `raibid` binary, cargo), take tens of seconds to
//! minutes, and are run by hand: they are not tests, and nothing in the test suite depends on
//! a timing.
//!
//! Every report carries the machine it ran on (with its load average, as the benchmarks often
//! share a small machine with builds) and, where one applies, a baseline measured in the same
//! run, so that a figure says how much raibid costs rather than only how fast the machine is.

mod cache;
mod checkout;
mod e2e;
mod error;
mod logs;
mod pages;
mod procs;
mod report;
mod webhooks;

pub use cache::{CacheBenchOptions, CacheJob, CachePhase, CacheReport, Deps as CacheDeps, cache};
pub use checkout::{CheckoutBenchOptions, CheckoutReport, checkout};
pub use e2e::{E2eBenchOptions, E2eReport, PhaseReport, Stretch, ThroughputReport, e2e};
pub use error::BenchError;
pub use logs::{LogBenchOptions, LogReport, logs};
pub use pages::{PageRow, PagesBenchOptions, PagesReport, pages};
pub use procs::default_raibid_exe;
pub use report::{LatencySummary, Machine, TargetCheck};
pub use webhooks::{WebhookBenchOptions, WebhookReport, webhooks};
