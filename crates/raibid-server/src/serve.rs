//! Running the server: the HTTP listener plus the background tasks, until shutdown.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::{AppState, ServerError, ServerOptions, reaper, reporter, router, sampler, scheduler};

/// After shutdown is asked for, in-flight requests get this long to finish before their
/// connections are dropped; with [`TASKS_GRACE`] it keeps the whole shutdown under 10 s.
const REQUESTS_GRACE: Duration = Duration::from_secs(8);
const TASKS_GRACE: Duration = Duration::from_secs(1);

/// Serves on `listener` until `shutdown` completes, then stops accepting connections, ends log
/// streams, lets in-flight requests finish (for at most a few seconds) and returns.
///
/// Also runs, for as long as it serves: the reaper (requeues jobs of silent agents, prunes old
/// jobs), the commit-status reporter, the metrics sampler and the scheduler (`server.schedules`).
pub async fn serve(
    listener: TcpListener,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let ServerOptions {
        config,
        queue,
        instance,
        clock,
    } = options;
    let client = reporter::client()?;
    let state = AppState::with_clock(config, queue, clock)?;
    let stop = state.shutdown().clone();

    let mut tasks = JoinSet::new();
    // Consumer groups exist before the first job, so KEDA's triggers are ready at once. Redis
    // may still be down: the first enqueue creates them then.
    let early = state.clone();
    tasks.spawn(async move {
        let queue = early.queue();
        for pool in crate::api::pools::known_pools(early.config(), queue)
            .await
            .unwrap_or_default()
        {
            if let Err(e) = queue.ensure_pool(&pool).await {
                tracing::debug!(%pool, error = %e, "consumer group not created yet");
            }
        }
    });
    tasks.spawn(reaper::run(state.clone()));
    tasks.spawn(reporter::run(state.clone(), instance, client));
    tasks.spawn(sampler::run(state.clone()));
    tasks.spawn(scheduler::run(state.clone()));
    let trigger = stop.clone();
    tasks.spawn(async move {
        tokio::select! {
            () = shutdown => trigger.cancel(),
            () = trigger.cancelled() => {}
        }
    });

    info!(address = %listener.local_addr()?, "raibid server listening");
    // The peer address identifies anonymous clients (per-client log follow limit).
    let server = axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(stop.clone().cancelled_owned())
    .into_future();
    let result = tokio::select! {
        result = server => result.map_err(ServerError::from),
        () = async {
            stop.cancelled().await;
            tokio::time::sleep(REQUESTS_GRACE).await;
        } => {
            warn!(grace = ?REQUESTS_GRACE, "requests still running at shutdown were cut off");
            Ok(())
        }
    };
    // Also when the listener failed: the background tasks must not outlive `serve`.
    stop.cancel();
    let drained = tokio::time::timeout(TASKS_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!("background tasks did not stop in time; aborting them");
        tasks.shutdown().await;
    }
    info!("raibid server stopped");
    result
}
