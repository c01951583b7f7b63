//! Ports for the servers `raibid up` and `raibid exec` start on loopback (redis-server,
//! docker-registry).
//!
//! A port the kernel hands out with `bind(0)` comes from its ephemeral range
//! (`net.ipv4.ip_local_port_range`), the range every outgoing connection's local port is taken
//! from too. A server's port is chosen before the server binds it, and kept: Redis is started
//! again on its port after it dies (the agents hold its URL) and the registry on every run
//! (image names and artifacts recorded on jobs name `127.0.0.1:<port>`). An outgoing
//! connection that happens to get that port meanwhile, any program's, takes it for as long as
//! the connection lasts. Ports picked below the ephemeral range are never given to outgoing
//! connections, so only another program's explicit pick can take them.

use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::TcpListener;

/// Where a pick starts: below it are the well-known and commonly configured ports.
const FLOOR: u16 = 10_000;

/// Picks tried below the ephemeral range before leaving the choice to the kernel.
const TRIES: u64 = 100;

/// A loopback port that was free a moment ago, below the ephemeral range where the range
/// leaves room (else one the kernel chooses).
pub fn pick() -> io::Result<u16> {
    if let Some(below) = ports_below_ephemeral() {
        let random = RandomState::new();
        let span = u64::from(below.end - below.start);
        for attempt in 0..TRIES {
            let port = below.start + (random.hash_one(attempt) % span) as u16;
            if is_free(port) {
                return Ok(port);
            }
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether a listener could bind `port` on 127.0.0.1 now.
pub fn is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// `FLOOR..<start of the ephemeral range>`, if that holds at least a thousand ports.
fn ports_below_ephemeral() -> Option<std::ops::Range<u16>> {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    (start > FLOOR + 1_000).then_some(FLOOR..start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_are_free_distinct_and_below_the_ephemeral_range() {
        let below = ports_below_ephemeral().expect("this machine's range leaves room");
        let ports: Vec<u16> = (0..20).map(|_| pick().unwrap()).collect();
        for port in &ports {
            assert!(below.contains(port), "{port} not in {below:?}");
            TcpListener::bind(("127.0.0.1", *port)).unwrap();
        }
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 15, "{ports:?}");
    }

    #[test]
    fn a_held_port_is_not_free() {
        let port = pick().unwrap();
        let holder = TcpListener::bind(("127.0.0.1", port)).unwrap();
        assert!(!is_free(port));
        drop(holder);
        assert!(is_free(port));
    }
}
