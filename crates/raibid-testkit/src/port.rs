use std::hash::{BuildHasher, RandomState};
use std::net::TcpListener;

/// Where a pick starts: below it are the well-known and commonly configured ports.
const FLOOR: u16 = 10_000;

/// A loopback port that was free a moment ago.
///
/// The listener it was checked with is dropped so that the caller can bind it; another process
/// may take it in between. So it is picked at random from below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`), which the ports of outgoing connections and of every
/// `bind(0)` come from: a server started a second later on a port the kernel chose had it
/// taken by one of the many connections the other tests open meanwhile. Only another explicit
/// pick can collide with it now, one in some 20,000.
pub fn free_port() -> u16 {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_start > FLOOR + 1_000 {
        let span = u64::from(ephemeral_start - FLOOR);
        let random = RandomState::new();
        for attempt in 0u64..100 {
            let port = FLOOR + (random.hash_one(attempt) % span) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_is_bindable_and_below_the_ephemeral_range() {
        let start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
        for port in &ports {
            assert!(
                start <= FLOOR + 1_000 || (FLOOR..start).contains(port),
                "{port}"
            );
            TcpListener::bind(("127.0.0.1", *port)).unwrap();
        }
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 15, "{ports:?}");
    }
}
