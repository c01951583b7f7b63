//! What the `raibid` binary hands the server.

use std::sync::Arc;

use raibid_config::Config;
use raibid_queue::Queue;

use crate::Clock;

pub struct ServerOptions {
    pub config: Config,
    pub queue: Queue,
    /// This replica's name in the commit-status reporter's consumer group. It should survive
    /// restarts (a host or StatefulSet pod name): events a replica had taken but not finished
    /// when it stopped are redelivered only to a consumer of the same name.
    pub instance: String,
    /// What the scheduler takes the time from: [`crate::system_clock`], or a test's own.
    pub clock: Arc<dyn Clock>,
}

impl ServerOptions {
    /// Options with the host name as instance name.
    pub fn new(config: Config, queue: Queue) -> Self {
        Self {
            config,
            queue,
            instance: host_name(),
            clock: crate::system_clock(),
        }
    }
}

/// `$HOSTNAME` (set in containers to the pod name), else the kernel's host name.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "raibid-server".to_owned())
}
