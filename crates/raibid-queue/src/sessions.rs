//! Browsers signed in on the web pages: which API token each session is signed in as, until
//! it expires or signs out; and the wrong tokens each client presented, which every replica
//! of the server counts together.
//!
//! A session is found by a key the server derives from the browser's cookie (a hash of it), and
//! names its token by the token's hash as `server.tokens` lists it: neither the cookie nor the
//! token can be read back from Redis. Beside it, for the list of a token's sessions, when it
//! started and the browser that signed in (its `User-Agent` and address), which expire with
//! it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::{Queue, QueueError, scripts};

/// The browser that signed a session in, as the list of a token's sessions shows it (GitHub's
/// "sessions" page), so that a session nobody recognises can be told apart and ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionClient {
    /// Its `User-Agent`, as the server trimmed it.
    pub user_agent: String,
    /// The address it signed in from, as the server reads it (`server.trusted_proxies`).
    pub address: String,
}

/// One live session of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's key (a hash of its cookie, which it cannot be turned back into).
    pub key: String,
    /// `None` for a session started before sessions kept their details.
    pub started: Option<DateTime<Utc>>,
    pub expires: DateTime<Utc>,
    pub client: SessionClient,
}

impl Queue {
    /// Records that session `key` is signed in as the token whose hash is `token_hash`, for
    /// `ttl`, from `client`.
    pub async fn start_session(
        &self,
        key: &str,
        token_hash: &str,
        ttl: Duration,
        client: &SessionClient,
    ) -> Result<(), QueueError> {
        let mut invocation = scripts::START_SESSION.prepare_invoke();
        invocation
            .key(self.keys.session(key))
            .key(self.keys.sessions_of(token_hash))
            .key(self.keys.session_info(key))
            .arg(token_hash)
            .arg(ttl.as_secs().max(1))
            .arg(Utc::now().timestamp_millis())
            .arg(key)
            .arg(&client.user_agent)
            .arg(&client.address);
        let _: i64 = self.conn.script(&invocation).await?;
        Ok(())
    }

    /// The live sessions signed in with the token whose hash is `token_hash`, soonest to
    /// expire first.
    pub async fn sessions_of(&self, token_hash: &str) -> Result<Vec<SessionInfo>, QueueError> {
        let mut invocation = scripts::LIST_SESSIONS.prepare_invoke();
        invocation
            .key(self.keys.sessions_of(token_hash))
            .arg(self.keys.session(""))
            .arg(self.keys.session_info(""))
            .arg(token_hash);
        let rows: Vec<(String, String, String, String, String)> =
            self.conn.script(&invocation).await?;
        let at = |ms: &str| {
            ms.parse::<f64>()
                .ok()
                .and_then(|ms| DateTime::from_timestamp_millis(ms as i64))
        };
        Ok(rows
            .into_iter()
            .map(|(key, expires, started, user_agent, address)| SessionInfo {
                expires: at(&expires).unwrap_or_default(),
                started: at(&started),
                client: SessionClient {
                    user_agent,
                    address,
                },
                key,
            })
            .collect())
    }

    /// Ends session `key` if it is signed in with the token whose hash is `token_hash`;
    /// false if it is not (another token's, or ended already).
    pub async fn end_session_of(&self, token_hash: &str, key: &str) -> Result<bool, QueueError> {
        let mut invocation = scripts::END_SESSION_OF.prepare_invoke();
        invocation
            .key(self.keys.session(key))
            .key(self.keys.session_info(key))
            .key(self.keys.sessions_of(token_hash))
            .arg(token_hash)
            .arg(key);
        let ended: i64 = self.conn.script(&invocation).await?;
        Ok(ended == 1)
    }

    /// Signs out every session signed in with the token whose hash is `token_hash`, in every
    /// browser (GitHub's "sign out of all sessions"); returns how many were still alive.
    pub async fn end_sessions_of(&self, token_hash: &str) -> Result<u64, QueueError> {
        let mut invocation = scripts::END_SESSIONS_OF.prepare_invoke();
        invocation
            .key(self.keys.sessions_of(token_hash))
            .arg(self.keys.session(""))
            .arg(self.keys.session_info(""));
        self.conn.script(&invocation).await
    }

    /// The hash of the token session `key` is signed in as, while it lasts.
    pub async fn session(&self, key: &str) -> Result<Option<String>, QueueError> {
        self.conn
            .run(redis::cmd("GET").arg(self.keys.session(key)))
            .await
    }

    /// Counts a wrong token `client` presented, for every replica of the server to see:
    /// the client's failures within its window (which starts with its first), and how long
    /// that window has left.
    pub async fn count_auth_failure(
        &self,
        client: &str,
        window: Duration,
    ) -> Result<(u64, Duration), QueueError> {
        let mut invocation = scripts::COUNT_AUTH_FAILURE.prepare_invoke();
        invocation
            .key(self.keys.auth_failures(client))
            .arg(window.as_millis().max(1) as u64);
        let (count, left_ms): (u64, i64) = self.conn.script(&invocation).await?;
        Ok((count, Duration::from_millis(left_ms.max(0) as u64)))
    }

    /// Signs session `key` out.
    pub async fn end_session(&self, key: &str) -> Result<(), QueueError> {
        self.conn
            .run::<()>(
                redis::cmd("DEL")
                    .arg(self.keys.session(key))
                    .arg(self.keys.session_info(key)),
            )
            .await
    }
}
