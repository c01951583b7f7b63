//! raibid-ci's HTTP server.
//!
//! It receives forge webhooks and turns them into queued jobs, serves the jobs API (submit,
//! list, show, cancel, retry, logs read once or followed live) and web pages for people (the
//! job list, a job's page with its live log), reports job statuses back to
//! the forge as commit statuses, and exposes health and Prometheus metrics. This crate is the
//! only one that knows HTTP; everything it stores goes through `raibid-queue`, everything it
//! knows about forges comes from `raibid-forge`.
//!
//! The `raibid` binary builds [`ServerOptions`] and calls [`serve()`]; tests may use [`router()`]
//! with an [`AppState`] directly, and give the server a [`Clock`] of their own to move the
//! scheduler's time.

mod api;
mod auth;
mod auth_limit;
mod client_addr;
mod error;
pub mod git_http;
mod metrics;
mod openapi;
mod ops;
mod options;
mod pages;
mod reaper;
mod reporter;
mod repos;
mod routes;
mod sampler;
mod scheduler;
mod serve;
mod state;
mod waiting;
mod webhooks;

pub(crate) use error::ApiError;
pub use error::ServerError;
pub use options::ServerOptions;
pub use routes::router;
pub use scheduler::{Clock, SystemClock, system_clock};
pub use serve::serve;
pub use state::AppState;
