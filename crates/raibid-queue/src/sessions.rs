//! Browsers signed in on the web pages: which API token each session is signed in as, until
//! it expires or signs out.
//!
//! A session is found by a key the server derives from the browser's cookie (a hash of it), and
//! names its token by the token's hash as `server.tokens` lists it: neither the cookie nor the
//! token can be read back from Redis.

use std::time::Duration;

use crate::{Queue, QueueError};

impl Queue {
    /// Records that session `key` is signed in as the token whose hash is `token_hash`, for
    /// `ttl`.
    pub async fn start_session(
        &self,
        key: &str,
        token_hash: &str,
        ttl: Duration,
    ) -> Result<(), QueueError> {
        self.conn
            .run::<()>(
                redis::cmd("SET")
                    .arg(self.keys.session(key))
                    .arg(token_hash)
                    .arg("EX")
                    .arg(ttl.as_secs().max(1)),
            )
            .await
    }

    /// The hash of the token session `key` is signed in as, while it lasts.
    pub async fn session(&self, key: &str) -> Result<Option<String>, QueueError> {
        self.conn
            .run(redis::cmd("GET").arg(self.keys.session(key)))
            .await
    }

    /// Signs session `key` out.
    pub async fn end_session(&self, key: &str) -> Result<(), QueueError> {
        self.conn
            .run::<()>(redis::cmd("DEL").arg(self.keys.session(key)))
            .await
    }
}
