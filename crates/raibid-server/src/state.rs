//! What every handler and background task shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use raibid_config::Config;
use raibid_queue::Queue;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::auth_limit::AuthFailures;
use crate::client_addr::UntrustedForwarders;
use crate::metrics::Metrics;
use crate::repos::RepoRules;
use crate::{Clock, ServerError};

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
    /// Open log streams per client, `server.max_log_streams_per_client` each.
    log_clients: Arc<Mutex<HashMap<String, u32>>>,
    /// Tokens presented that were not ones of `server.tokens`, per client.
    auth_failures: AuthFailures,
    /// The scheduler's time, and the API's when it says when schedules next run.
    clock: Arc<dyn Clock>,
    /// Peers that sent `X-Forwarded-For` without being trusted proxies, warned about once.
    untrusted_forwarders: UntrustedForwarders,
}

impl AppState {
    /// Fails on configuration the server cannot work with (an invalid glob).
    pub fn new(config: Config, queue: Queue) -> Result<Self, ServerError> {
        Self::with_clock(config, queue, crate::system_clock())
    }

    /// [`AppState::new`] with the time taken from `clock`.
    pub fn with_clock(
        config: Config,
        queue: Queue,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServerError> {
        Ok(Self {
            inner: Arc::new(Inner {
                repos: RepoRules::new(&config)?,
                log_streams: Arc::new(Semaphore::new(config.server.max_log_streams as usize)),
                log_clients: Arc::default(),
                auth_failures: AuthFailures::new(
                    config.server.auth_failures_max,
                    std::time::Duration::from_secs(config.server.auth_failures_window_secs),
                ),
                config,
                queue,
                metrics: Metrics::new(),
                shutdown: CancellationToken::new(),
                clock,
                untrusted_forwarders: UntrustedForwarders::default(),
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    pub(crate) fn clock(&self) -> &dyn Clock {
        self.inner.clock.as_ref()
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

    /// One of `client`'s log stream slots, held until dropped; `None` when it holds them all.
    pub(crate) fn client_log_slot(&self, client: String) -> Option<ClientLogSlot> {
        let limit = self.inner.config.server.max_log_streams_per_client;
        let clients = Arc::clone(&self.inner.log_clients);
        {
            let mut open = clients.lock().unwrap_or_else(|e| e.into_inner());
            let count = open.entry(client.clone()).or_insert(0);
            if *count >= limit {
                return None;
            }
            *count += 1;
        }
        Some(ClientLogSlot { clients, client })
    }

    pub(crate) fn auth_failures(&self) -> &AuthFailures {
        &self.inner.auth_failures
    }

    pub(crate) fn untrusted_forwarders(&self) -> &UntrustedForwarders {
        &self.inner.untrusted_forwarders
    }

    /// Cancelled when the server shuts down; streams and background tasks end on it.
    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }
}

/// A client's claim on one of its log stream slots.
pub(crate) struct ClientLogSlot {
    clients: Arc<Mutex<HashMap<String, u32>>>,
    client: String,
}

impl Drop for ClientLogSlot {
    fn drop(&mut self) {
        let mut open = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // Clients come and go: the map holds only those with streams open.
                open.remove(&self.client);
            }
        }
    }
}
