/// What can go wrong talking to the queue.
///
/// `Unavailable` is the one callers branch on: the server answers 503 with Retry-After, agents
/// back off and retry. It includes a Redis that answers but refuses writes for now, at its
/// `maxmemory` (`OOM`) or unable to save its data (`MISCONF`: a full disk), as much an outage
/// for what must be written as a Redis that is down, and one that ends without raibid doing
/// anything different: the reaper deleting old logs, an operator freeing the disk; and one
/// busy with a script past `busy-reply-threshold` (`BUSY`), until it ends or is killed. (Not
/// `READONLY`: a URL naming a replica is a mistake that no wait mends.) Everything else is a
/// bug or bad input and is reported as such.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis is unavailable: {0}")]
    Unavailable(String),
    #[error("redis did not answer within {0} ms")]
    Timeout(u64),
    #[error("invalid redis url: {0}")]
    BadUrl(String),
    #[error("the {pool} queue is full ({depth} jobs waiting, limit {limit}); try again later")]
    Full {
        pool: String,
        depth: u64,
        limit: u64,
    },
    #[error("job {0} not found")]
    NotFound(String),
    /// Retrying a job that can still run would build the same commit twice at once, and the
    /// last of the two to finish would decide the commit status.
    #[error("job {id} is {status}; only a finished job can be retried (cancel it first)")]
    NotFinal {
        id: String,
        status: raibid_model::JobStatus,
    },
    /// Only a job waiting for approval can be approved.
    #[error("job {id} is {status}; only a blocked job (waiting for approval) can be approved")]
    NotBlocked {
        id: String,
        status: raibid_model::JobStatus,
    },
    /// Retrying the failed jobs of a job that queued none, or none of which failed.
    #[error("{0}")]
    NothingToRetry(String),
    /// Setting a repository secret on a queue without `redis.secrets_key`.
    #[error(
        "repository secrets are off: set redis.secrets_key (RAIBID_REDIS_SECRETS_KEY, at least \
         32 random characters) on the server and the agents"
    )]
    SecretsOff,
    /// A repository secret that cannot be set: a bad value, or the key cannot seal.
    #[error("{0}")]
    InvalidSecret(String),
    #[error("{scope} has {limit} secrets, the most it may have: delete one first")]
    TooManySecrets { scope: String, limit: usize },
    #[error("invalid job: {0}")]
    Invalid(String),
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
    #[error("redis error: {0}")]
    Redis(redis::RedisError),
}

impl QueueError {
    /// Worth retrying later: Redis was down, slow or restarting.
    pub fn is_transient(&self) -> bool {
        matches!(self, QueueError::Unavailable(_) | QueueError::Timeout(_))
    }
}

impl From<redis::RedisError> for QueueError {
    fn from(e: redis::RedisError) -> Self {
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
            || matches!(
                e.kind(),
                redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
                    | redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain)
                    | redis::ErrorKind::Server(redis::ServerErrorKind::MasterDown)
            )
            || matches!(e.code(), Some("OOM" | "MISCONF" | "BUSY"))
        {
            QueueError::Unavailable(e.to_string())
        } else {
            QueueError::Redis(e)
        }
    }
}
