//! What every handler and background task shares.

use std::sync::Arc;

use raibid_config::Config;
use raibid_queue::Queue;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::ServerError;
use crate::metrics::Metrics;
use crate::repos::RepoRules;

/// The server's shared state: configuration, queue, compiled rules, metrics, and the
/// shutdown signal that long-lived responses (log streams) watch. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    queue: Queue,
    repos: RepoRules,
    metrics: Metrics,
    shutdown: CancellationToken,
    /// One permit per open log stream, `server.max_log_streams` in all.
    log_streams: Arc<Semaphore>,
}

impl AppState {
    /// Fails on configuration the server cannot work with (an invalid glob).
    pub fn new(config: Config, queue: Queue) -> Result<Self, ServerError> {
        Ok(Self {
            inner: Arc::new(Inner {
                repos: RepoRules::new(&config)?,
                log_streams: Arc::new(Semaphore::new(config.server.max_log_streams as usize)),
                config,
                queue,
                metrics: Metrics::new(),
                shutdown: CancellationToken::new(),
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    pub(crate) fn repos(&self) -> &RepoRules {
        &self.inner.repos
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Slots for log streams: a stream holds its permit until it ends.
    pub(crate) fn log_streams(&self) -> &Arc<Semaphore> {
        &self.inner.log_streams
    }

    /// Cancelled when the server shuts down; streams and background tasks end on it.
    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }
}
