//! Browsers signed in on the web pages: which API token each session is signed in as, until
//! it expires or signs out; and the wrong tokens each client presented, which every replica
//! of the server counts together.
//!
//! A session is found by a key the server derives from the browser's cookie (a hash of it), and
//! names its token by the token's hash as `server.tokens` lists it: neither the cookie nor the
//! token can be read back from Redis.

use std::time::Duration;

use chrono::Utc;

use crate::{Queue, QueueError, scripts};

impl Queue {
    /// Records that session `key` is signed in as the token whose hash is `token_hash`, for
    /// `ttl`.
    pub async fn start_session(
        &self,
        key: &str,
        token_hash: &str,
        ttl: Duration,
    ) -> Result<(), QueueError> {
        let mut invocation = scripts::START_SESSION.prepare_invoke();
        invocation
            .key(self.keys.session(key))
            .key(self.keys.sessions_of(token_hash))
            .arg(token_hash)
            .arg(ttl.as_secs().max(1))
            .arg(Utc::now().timestamp_millis())
            .arg(key);
        let _: i64 = self.conn.script(&invocation).await?;
        Ok(())
    }

    /// Signs out every session signed in with the token whose hash is `token_hash`, in every
    /// browser (GitHub's "sign out of all sessions"); returns how many were still alive.
    pub async fn end_sessions_of(&self, token_hash: &str) -> Result<u64, QueueError> {
        let mut invocation = scripts::END_SESSIONS_OF.prepare_invoke();
        invocation
            .key(self.keys.sessions_of(token_hash))
            .arg(self.keys.session(""));
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
            .run::<()>(redis::cmd("DEL").arg(self.keys.session(key)))
            .await
    }
}
