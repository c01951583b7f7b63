use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, FromRedisValue};

use crate::QueueError;

/// How to reach Redis and how the queue behaves; built from `raibid_config::RedisConfig` by
/// the binary, kept separate so this crate does not depend on the config file format.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    pub url: String,
    pub stream_name: String,
    pub consumer_group: String,
    pub maxlen: u64,
    /// About how many entries the events stream keeps once the status reporter has read them.
    pub events_maxlen: u64,
    pub max_attempts: u32,
    pub log_max_bytes: u64,
    pub command_timeout: Duration,
    /// How long a webhook's delivery id is remembered for idempotent redelivery.
    pub delivery_ttl: Duration,
    /// Seals and opens repository secrets (`redis.secrets_key`); without it they cannot be
    /// set, and jobs cannot read them.
    pub secrets_key: Option<crate::SecretsKey>,
    /// Keys secrets were sealed with before `secrets_key` (`redis.secrets_previous_keys`):
    /// values sealed with one still open, and `Queue::reseal_secrets` seals them again with
    /// `secrets_key`, after which the old key can go.
    pub secrets_previous_keys: Vec<crate::SecretsKey>,
}

impl QueueOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream_name: "ci-jobs".into(),
            consumer_group: "ci-workers".into(),
            maxlen: 100_000,
            events_maxlen: 10_000,
            max_attempts: 3,
            log_max_bytes: 10 * 1024 * 1024,
            command_timeout: Duration::from_secs(5),
            delivery_ttl: Duration::from_secs(24 * 3600),
            secrets_key: None,
            secrets_previous_keys: Vec::new(),
        }
    }
}

/// The shared, reconnecting connection plus a way to open dedicated ones.
///
/// Blocking commands (`XREADGROUP BLOCK`, `XREAD BLOCK`) stall every other command pipelined on
/// the same connection, so they get a dedicated connection each; everything else shares one
/// multiplexed, auto-reconnecting [`ConnectionManager`].
#[derive(Clone)]
pub(crate) struct Conn {
    client: Client,
    manager: ConnectionManager,
    timeout: Duration,
}

impl Conn {
    pub fn open(options: &QueueOptions) -> Result<Self, QueueError> {
        let client = Client::open(options.url.as_str())
            .map_err(|e| QueueError::BadUrl(redact_url(&options.url, &e.to_string())))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.command_timeout))
            .set_response_timeout(Some(options.command_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        // Lazy: a server must start (and answer 503) while Redis is still down.
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Self {
            client,
            manager,
            timeout: options.command_timeout,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one command or pipeline on the shared connection, bounded by the command timeout.
    pub async fn run<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, QueueError> {
        let mut conn = self.manager.clone();
        bounded(self.timeout, cmd.query_async(&mut conn)).await
    }

    pub async fn pipe<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, QueueError> {
        let mut conn = self.manager.clone();
        bounded(self.timeout, pipe.query_async(&mut conn)).await
    }

    pub async fn script<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, QueueError> {
        let mut conn = self.manager.clone();
        bounded(self.timeout, invocation.invoke_async(&mut conn)).await
    }

    /// The names after `prefix` of every key of Redis type `kind` whose name starts with it,
    /// walked with `SCAN` (a thousand keys a round trip, never one long command).
    pub async fn scan_prefixed(&self, prefix: &str, kind: &str) -> Result<Vec<String>, QueueError> {
        let pattern = format!("{}*", crate::keys::glob_escape(prefix));
        let mut names = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .run(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .arg("TYPE")
                        .arg(kind),
                )
                .await?;
            names.extend(
                keys.into_iter()
                    .filter_map(|key| key.strip_prefix(prefix).map(str::to_owned)),
            );
            if next == 0 {
                return Ok(names);
            }
            cursor = next;
        }
    }

    /// A connection of its own for one blocking reader.
    pub async fn dedicated(&self) -> Result<MultiplexedConnection, QueueError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(None);
        bounded(
            self.timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
    }
}

pub(crate) async fn bounded<T>(
    timeout: Duration,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, QueueError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result.map_err(QueueError::from),
        Err(_) => Err(QueueError::Timeout(timeout.as_millis() as u64)),
    }
}

/// Error messages from URL parsing may echo the URL, password included.
fn redact_url(url: &str, message: &str) -> String {
    match url.split_once('@') {
        Some((creds, _)) if creds.contains(':') => message.replace(creds, "redis://***"),
        _ => message.to_owned(),
    }
}
