use std::process::ExitCode;

use anyhow::Context;
use raibid_config::Config;
use raibid_queue::Queue;
use raibid_server::ServerOptions;

use crate::cli::ServerArgs;
use crate::commands::{default_public_url, queue_options, shutdown_signal};

pub async fn run(mut config: Config, args: ServerArgs) -> anyhow::Result<ExitCode> {
    if let Err(e) = raibid_agent::hardening::forbid_inspection() {
        tracing::warn!(error = %e, "processes of this user may read the server's environment");
    }
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("listening on {}", config.server.listen))?;
    default_public_url(&mut config, listener.local_addr()?);
    let queue = Queue::open(queue_options(&config))?;
    if let Err(e) = queue.ping().await {
        // Not fatal: the server answers 503 until Redis is back, and forges retry.
        tracing::warn!(error = %e, "redis is not reachable yet");
    }
    tracing::info!(listen = %listener.local_addr()?, "raibid server listening");
    raibid_server::serve(
        listener,
        ServerOptions::new(config, queue),
        shutdown_signal(),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}
