use std::net::TcpListener;

/// A loopback port that was free a moment ago.
///
/// Binding to port 0 lets the kernel choose; the listener is dropped so the caller can bind it.
/// Another process may grab it in between, so callers that start servers retry on failure.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}
