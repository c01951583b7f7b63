//! Keeps `raibid up`'s private Redis and registry running. Either can die under it (the OOM
//! killer picks the biggest process, a person kills the wrong pid), and without it every job
//! would fail, and go on failing until someone restarts `raibid up`. They are started again as
//! they were: Redis on its port from its AOF, which the server's and agents' connections
//! reconnect to; the registry on its port from its storage. A start that fails is tried again,
//! less and less often.

use std::future::Future;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::local_redis::LocalRedis;
use crate::local_registry::LocalRegistry;

/// How often a child is looked at.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// The longest wait between two failed starts.
const MAX_WAIT: Duration = Duration::from_secs(30);

pub trait Restart: Sized + Send + 'static {
    const WHAT: &'static str;
    fn exited(&mut self) -> Option<ExitStatus>;
    fn restart(&self) -> impl Future<Output = anyhow::Result<Self>> + Send;
    /// Upkeep that must not run while the child is in use, done when the pool asks (see
    /// [`Upkeep`]).
    fn upkeep(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// A request for the child's upkeep, answered when it is done.
pub type Upkeep = oneshot::Sender<anyhow::Result<()>>;

impl Restart for LocalRedis {
    const WHAT: &'static str = "redis-server";
    fn exited(&mut self) -> Option<ExitStatus> {
        LocalRedis::exited(self)
    }
    fn restart(&self) -> impl Future<Output = anyhow::Result<Self>> + Send {
        self.start_again()
    }
    /// Redis keeps itself (its AOF is rewritten by Redis, old logs pruned by the reaper).
    async fn upkeep(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

impl Restart for LocalRegistry {
    const WHAT: &'static str = "docker-registry";
    fn exited(&mut self) -> Option<ExitStatus> {
        LocalRegistry::exited(self)
    }
    fn restart(&self) -> impl Future<Output = anyhow::Result<Self>> + Send {
        self.start_again()
    }
    fn upkeep(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.collect()
    }
}

/// Watches `child` until `stop`, starting it again whenever it exits and doing its upkeep
/// when `upkeep` asks; hands back the child of the moment, for `raibid up` to stop in order.
pub fn keep<T: Restart>(
    mut child: T,
    stop: CancellationToken,
    mut upkeep: Option<mpsc::Receiver<Upkeep>>,
) -> JoinHandle<T> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return child,
                () = tokio::time::sleep(LOOK_EVERY) => {}
                Some(done) = next_request(&mut upkeep) => {
                    let result = child.upkeep().await;
                    if let Err(e) = &result {
                        warn!(process = T::WHAT, error = %e, "upkeep failed");
                    }
                    let _ = done.send(result);
                }
            }
            let Some(status) = child.exited() else {
                continue;
            };
            warn!(process = T::WHAT, %status, "exited while raibid up runs; starting it again");
            let mut wait = LOOK_EVERY;
            loop {
                match child.restart().await {
                    Ok(again) => {
                        info!(process = T::WHAT, "started again");
                        child = again;
                        break;
                    }
                    Err(e) => {
                        warn!(process = T::WHAT, error = %e, retry_in = ?wait, "cannot start it again");
                        tokio::select! {
                            () = stop.cancelled() => return child,
                            () = tokio::time::sleep(wait) => {}
                        }
                        wait = (wait * 2).min(MAX_WAIT);
                    }
                }
            }
        }
    })
}

/// The next upkeep request; never, without a channel or once every sender is gone.
async fn next_request(upkeep: &mut Option<mpsc::Receiver<Upkeep>>) -> Option<Upkeep> {
    match upkeep {
        Some(requests) => match requests.recv().await {
            Some(request) => Some(request),
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}
