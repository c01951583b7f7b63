//! Failed authentications, counted per client, so that a token cannot be guessed at the speed
//! the server answers (Gitea's and GitLab's sign-in throttles do the same).
//!
//! A failure is a presented token that is not one of `server.tokens`: a bearer token or a
//! sign-in on the web pages. After `server.auth_failures_max` of them within a window of
//! `server.auth_failures_window_secs` (it starts with a client's first failure), the tokens the
//! client presents are refused without being compared until the window ends, the right one
//! too: otherwise the lockout would tell a guesser which guess was right.
//!
//! A client is the address [`crate::client_addr::client_ip`] reads (behind
//! `server.trusted_proxies`, the proxy's client); IPv6 addresses count by their /64, which one
//! host is commonly given whole. Each replica counts in its memory, where the check before a
//! comparison reads (no Redis round trip on any request), and adds every failure to a count in
//! Redis that all replicas share: a replica that sees the shared count at the limit locks the
//! client out too, so several replicas allow a guesser about `auth_failures_max` guesses a
//! window in all, not that many each (at most one more per replica, while the shared count
//! reaches them).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::AppState;
use crate::client_addr::client_ip;

/// Clients tracked at once: when every one has a live window, a new client is not counted.
/// Its memory is a few megabytes at most.
const MAX_CLIENTS: usize = 100_000;

pub(crate) struct AuthFailures {
    max: u32,
    window: Duration,
    clients: Mutex<Clients>,
}

#[derive(Default)]
struct Clients {
    windows: HashMap<IpAddr, Window>,
    last_sweep: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// What counting a failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    /// Below the limit still.
    Yes,
    /// This failure was the client's last allowed one: it is locked out from now on.
    LockedOut,
    /// The limit is off, or the table is full of live windows.
    No,
}

impl AuthFailures {
    /// `max` failures per `window`; `max` 0 counts nothing.
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            clients: Mutex::default(),
        }
    }

    /// How long `client` must still wait before a token it presents is compared, if it is
    /// locked out.
    pub(crate) fn locked(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        if self.max == 0 {
            return None;
        }
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let window = clients.windows.get(&key(client))?;
        let elapsed = now.saturating_duration_since(window.started);
        (window.failures >= self.max && elapsed < self.window).then(|| self.window - elapsed)
    }

    /// Locks `client` out for `left` (what remains of its window as the replicas' shared
    /// count has it); false when it already was.
    pub(crate) fn lock_out(&self, client: IpAddr, left: Duration, now: Instant) -> bool {
        if self.max == 0 || self.locked(client, now).is_some() {
            return false;
        }
        let gone = self.window.saturating_sub(left.min(self.window));
        let started = now.checked_sub(gone).unwrap_or(now);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.windows.len() >= MAX_CLIENTS && !clients.windows.contains_key(&key(client)) {
            return false;
        }
        clients.windows.insert(
            key(client),
            Window {
                started,
                failures: self.max,
            },
        );
        true
    }

    /// Counts one failure of `client`.
    pub(crate) fn failed(&self, client: IpAddr, now: Instant) -> Counted {
        if self.max == 0 {
            return Counted::No;
        }
        let key = key(client);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        // Ended windows are dropped once a window, so the table holds the clients of about
        // the last two; when it is full of live ones, at most once a second.
        let full = clients.windows.len() >= MAX_CLIENTS && !clients.windows.contains_key(&key);
        let since = clients
            .last_sweep
            .map(|at| now.saturating_duration_since(at));
        if since.is_none_or(|d| d >= self.window || (full && d >= Duration::from_secs(1))) {
            clients.last_sweep = Some(now);
            let window = self.window;
            clients
                .windows
                .retain(|_, w| now.saturating_duration_since(w.started) < window);
        }
        if clients.windows.len() >= MAX_CLIENTS && !clients.windows.contains_key(&key) {
            return Counted::No;
        }
        let window = clients.windows.entry(key).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.saturating_duration_since(window.started) >= self.window {
            *window = Window {
                started: now,
                failures: 0,
            };
        }
        window.failures = window.failures.saturating_add(1);
        if window.failures == self.max {
            Counted::LockedOut
        } else {
            Counted::Yes
        }
    }
}

/// The address failures are counted under: an IPv6 address's /64.
fn key(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// The client a request's failures count against: none when the server does not know the
/// peer (a router driven without a listener, as some tests do).
pub(crate) fn client_of(parts: &Parts, state: &AppState) -> Option<IpAddr> {
    let ConnectInfo(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>()?;
    client(Some(*peer), &parts.headers, state)
}

/// [`client_of`] for a handler that took the peer and the headers apart.
pub(crate) fn client(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    state: &AppState,
) -> Option<IpAddr> {
    let trusted = &state.config().server.trusted_proxies;
    peer.map(|peer| client_ip(peer.ip(), headers, trusted))
}

/// Refuses, before a presented token is compared, a client that is locked out.
pub(crate) fn check(state: &AppState, client: Option<IpAddr>) -> Result<(), crate::ApiError> {
    let Some(client) = client else {
        return Ok(());
    };
    match state.auth_failures().locked(client, Instant::now()) {
        Some(wait) => {
            state
                .metrics()
                .auth_failure(crate::metrics::AuthOutcome::LockedOut);
            Err(crate::ApiError::TooManyAuthFailures {
                max: state.config().server.auth_failures_max,
                window_secs: state.config().server.auth_failures_window_secs,
                retry_after_secs: wait.as_secs().max(1),
            })
        }
        None => Ok(()),
    }
}

/// Counts a presented token that was not one of `server.tokens`, and says so in the log
/// when it locks the client out (a line for fail2ban and the like to act on).
pub(crate) fn record(state: &AppState, client: Option<IpAddr>) {
    state
        .metrics()
        .auth_failure(crate::metrics::AuthOutcome::Refused);
    let Some(client) = client else {
        return;
    };
    if state.auth_failures().failed(client, Instant::now()) == Counted::LockedOut {
        warn_locked_out(state, client, "");
    }
    // The other replicas' failures of the client count too: Redis keeps the shared count, and
    // a replica locks the client out once it reaches the limit, even if few failures came
    // here. Off the request's path; without Redis each replica counts alone.
    let server = &state.config().server;
    if server.auth_failures_max == 0 {
        return;
    }
    let window = Duration::from_secs(server.auth_failures_window_secs);
    let state = state.clone();
    tokio::spawn(async move {
        let shared = state
            .queue()
            .count_auth_failure(&key(client).to_string(), window)
            .await;
        match shared {
            Ok((count, left)) if count >= u64::from(state.config().server.auth_failures_max) => {
                if state.auth_failures().lock_out(client, left, Instant::now()) {
                    warn_locked_out(&state, client, " (counted across the server's replicas)");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "cannot count a failed authentication in Redis"),
        }
    });
}

/// The one log line of a lockout, for fail2ban and the like to act on.
fn warn_locked_out(state: &AppState, client: IpAddr, how: &str) {
    let server = &state.config().server;
    tracing::warn!(
        client = %key(client),
        failures = server.auth_failures_max,
        window_secs = server.auth_failures_window_secs,
        "too many failed authentications{how}: this client's tokens are refused unchecked \
         until its window ends"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_is_locked_out_after_its_last_allowed_failure_until_the_window_ends() {
        let limit = AuthFailures::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let client = ip("198.51.100.7");
        assert_eq!(limit.failed(client, t0), Counted::Yes);
        assert_eq!(limit.failed(client, t0), Counted::Yes);
        assert_eq!(limit.locked(client, t0), None);
        assert_eq!(
            limit.failed(client, t0 + Duration::from_secs(10)),
            Counted::LockedOut
        );
        assert_eq!(
            limit.locked(client, t0 + Duration::from_secs(20)),
            Some(Duration::from_secs(40))
        );
        // Others are not affected.
        assert_eq!(limit.locked(ip("198.51.100.8"), t0), None);
        // The window ends a minute after its first failure; a new one starts afresh.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(limit.locked(client, later), None);
        assert_eq!(limit.failed(client, later), Counted::Yes);
        assert_eq!(limit.locked(client, later), None);
    }

    /// What the replicas' shared count decides: locked out for what is left of the shared
    /// window, once; off, never.
    #[test]
    fn the_shared_count_locks_a_client_out_for_what_is_left_of_its_window() {
        let limit = AuthFailures::new(3, Duration::from_secs(60));
        let t0 = Instant::now() + Duration::from_secs(120);
        let client = ip("198.51.100.9");
        assert_eq!(limit.failed(client, t0), Counted::Yes);
        assert!(limit.lock_out(client, Duration::from_secs(45), t0));
        assert_eq!(limit.locked(client, t0), Some(Duration::from_secs(45)));
        assert!(
            !limit.lock_out(client, Duration::from_secs(45), t0),
            "already locked out"
        );
        assert_eq!(limit.locked(client, t0 + Duration::from_secs(45)), None);
        let off = AuthFailures::new(0, Duration::from_secs(60));
        assert!(!off.lock_out(client, Duration::from_secs(45), t0));
        assert_eq!(off.locked(client, t0), None);
    }

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let limit = AuthFailures::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        limit.failed(ip("2001:db8:1:2::1"), t0);
        limit.failed(ip("2001:db8:1:2:ffff::9"), t0);
        assert!(limit.locked(ip("2001:db8:1:2::77"), t0).is_some());
        assert_eq!(limit.locked(ip("2001:db8:1:3::1"), t0), None);
        limit.failed(ip("::ffff:192.0.2.1"), t0);
        limit.failed(ip("192.0.2.1"), t0);
        assert!(limit.locked(ip("192.0.2.1"), t0).is_some());
    }

    #[test]
    fn clients_whose_windows_ended_are_forgotten() {
        let limit = AuthFailures::new(5, Duration::from_secs(60));
        let t0 = Instant::now();
        limit.failed(ip("192.0.2.1"), t0);
        limit.failed(ip("192.0.2.2"), t0 + Duration::from_secs(30));
        assert_eq!(limit.clients.lock().unwrap().windows.len(), 2);
        // A window after the last sweep, the first client's window has ended; the second's
        // has not.
        limit.failed(ip("192.0.2.3"), t0 + Duration::from_secs(61));
        let clients = limit.clients.lock().unwrap();
        let mut kept: Vec<_> = clients.windows.keys().copied().collect();
        kept.sort();
        assert_eq!(kept, [ip("192.0.2.2"), ip("192.0.2.3")]);
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let limit = AuthFailures::new(0, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..100 {
            assert_eq!(limit.failed(ip("192.0.2.1"), t0), Counted::No);
        }
        assert_eq!(limit.locked(ip("192.0.2.1"), t0), None);
    }

    #[test]
    fn a_full_table_drops_ended_windows_and_otherwise_counts_no_new_client() {
        let limit = AuthFailures::new(5, Duration::from_secs(60));
        let t0 = Instant::now();
        {
            let mut clients = limit.clients.lock().unwrap();
            for i in 0..MAX_CLIENTS as u32 {
                clients.windows.insert(
                    IpAddr::V4(i.into()),
                    Window {
                        started: t0,
                        failures: 1,
                    },
                );
            }
        }
        let newcomer = ip("2001:db8::1");
        assert_eq!(limit.failed(newcomer, t0), Counted::No);
        // Known clients are still counted.
        assert_eq!(limit.failed(IpAddr::V4(7.into()), t0), Counted::Yes);
        // Once the windows have ended, the sweep makes room.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(limit.failed(newcomer, later), Counted::Yes);
        assert_eq!(limit.clients.lock().unwrap().windows.len(), 1);
    }
}
