use std::path::PathBuf;

/// Why a benchmark could not produce a figure.
///
/// A benchmark that cannot run the real thing fails loudly rather than measuring something
/// else: a missing tool says how to install it, a broken invariant (a job lost, a duplicate)
/// makes the whole run invalid instead of a footnote.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("`{tool}` is not installed: install it with `sudo apt-get install -y {package}`")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error(
        "the raibid binary {0} does not exist: build it with `cargo build --release -p raibid-cli` \
         (benchmarks run it as a separate process)"
    )]
    MissingRaibid(PathBuf),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("git {args}: {message}")]
    Git { args: String, message: String },
    #[error("{what}: {message}")]
    Process { what: String, message: String },
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("queue: {0}")]
    Queue(#[from] raibid_queue::QueueError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("checkout: {0}")]
    Checkout(#[from] raibid_agent::CheckoutError),
    #[error("executor: {0}")]
    Exec(#[from] raibid_agent::executor::ExecError),
    /// The system did something the benchmark's figures would hide: a lost or duplicated job,
    /// a failed no-op job, a timeout.
    #[error("invalid run: {0}")]
    Invalid(String),
}

impl BenchError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}
