//! Which address a request comes from, for limits kept per client.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use raibid_config::IpRange;
use tracing::warn;

use crate::AppState;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// How many peers [`UntrustedForwarders`] warns about: enough for a few proxies, few enough
/// that clients sending the header themselves cannot fill the log.
const MAX_WARNED: usize = 16;

/// The peers that sent `X-Forwarded-For` without being in `server.trusted_proxies`.
///
/// A reverse proxy left out of `trusted_proxies` makes every client behind it one client for
/// the per-client limits: one guesser's wrong tokens lock everyone out, and the log streams
/// per client are shared. Nothing else shows that until it bites, so the server says it in its
/// log, once per such peer.
#[derive(Debug, Default)]
pub(crate) struct UntrustedForwarders {
    warned: Mutex<HashSet<IpAddr>>,
}

impl UntrustedForwarders {
    /// True the first time `peer` is seen (only for the first [`MAX_WARNED`] peers).
    fn first_time(&self, peer: IpAddr) -> bool {
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        warned.len() < MAX_WARNED && warned.insert(peer)
    }
}

/// Middleware: warns (see [`UntrustedForwarders`]) when a peer that is not a trusted proxy
/// sends `X-Forwarded-For`, and lets the request through unchanged.
pub(crate) async fn warn_untrusted_forwarder(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if request.headers().contains_key(X_FORWARDED_FOR)
        && let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>()
    {
        let peer = peer.ip().to_canonical();
        let trusted = &state.config().server.trusted_proxies;
        if !is_trusted(&peer, trusted) && state.untrusted_forwarders().first_time(peer) {
            warn!(
                %peer,
                "{peer} sent X-Forwarded-For but is not in server.trusted_proxies: if it is a \
                 reverse proxy in front of this server, every client behind it counts as one \
                 client for the per-client limits (one client's wrong tokens lock all of them \
                 out, and they share the log streams per client); add it to \
                 server.trusted_proxies. (Said once per address.)"
            );
        }
    }
    next.run(request).await
}

/// The peer, or, when the peer is a trusted proxy, the last `X-Forwarded-For` hop that is not
/// one. Each proxy appends the address it was reached from, so the hops left of the first
/// untrusted one are whatever the client chose to send: reading from the right stops there.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpRange]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| is_trusted(ip, trusted);
    let mut client = peer.to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    let values: Vec<_> = headers.get_all(X_FORWARDED_FOR).iter().collect();
    for value in values.into_iter().rev() {
        // An unreadable hop ends the walk: the trusted proxy that wrote it is all we know.
        let Ok(value) = value.to_str() else {
            return client;
        };
        for hop in value.rsplit(',') {
            let Some(ip) = parse_hop(hop) else {
                return client;
            };
            client = ip;
            if !is_trusted(&client) {
                return client;
            }
        }
    }
    client
}

/// Whether `ip` is one of `server.trusted_proxies`.
fn is_trusted(ip: &IpAddr, trusted: &[IpRange]) -> bool {
    trusted.iter().any(|range| range.contains(ip))
}

/// `203.0.113.7`, `2001:db8::1`, and the forms some proxies add a port to (`203.0.113.7:41234`,
/// `[2001:db8::1]:41234`, `[2001:db8::1]`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .or_else(|_| {
            hop.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(hop)
                .parse::<IpAddr>()
        })
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn forwarded(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_bytes(v).unwrap());
        }
        headers
    }

    fn trusted(list: &[&str]) -> Vec<IpRange> {
        list.iter().map(|s| IpRange::parse(s).unwrap()).collect()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let headers = forwarded(&[b"198.51.100.1"]);
        assert_eq!(client_ip(ip("192.0.2.9"), &headers, &[]), ip("192.0.2.9"));
        let proxies = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("192.0.2.9"), &headers, &proxies),
            ip("192.0.2.9")
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_made_up_hops_are_ignored() {
        let proxies = trusted(&["10.0.0.0/8", "127.0.0.1"]);
        let peer = ip("127.0.0.1");
        // The client sent "1.1.1.1" itself; 198.51.100.1 is what the first proxy saw.
        let headers = forwarded(&[b"1.1.1.1, 198.51.100.1", b"10.0.0.5"]);
        assert_eq!(client_ip(peer, &headers, &proxies), ip("198.51.100.1"));
        let headers = forwarded(&[b"[2001:db8::7]:4711 , 10.1.1.1"]);
        assert_eq!(client_ip(peer, &headers, &proxies), ip("2001:db8::7"));
        let headers = forwarded(&[b"203.0.113.7:41234"]);
        assert_eq!(client_ip(peer, &headers, &proxies), ip("203.0.113.7"));
        // IPv4 peers of a dual-stack listener.
        let headers = forwarded(&[b"203.0.113.8"]);
        assert_eq!(
            client_ip(ip("::ffff:127.0.0.1"), &headers, &proxies),
            ip("203.0.113.8")
        );
    }

    #[test]
    fn without_a_readable_untrusted_hop_the_last_known_address_is_the_client() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.1");
        assert_eq!(client_ip(peer, &HeaderMap::new(), &proxies), peer);
        let headers = forwarded(&[b"garbage, 10.0.0.2"]);
        assert_eq!(client_ip(peer, &headers, &proxies), ip("10.0.0.2"));
        let headers = forwarded(&[b"198.51.100.1", b"\xff"]);
        assert_eq!(client_ip(peer, &headers, &proxies), peer);
        let headers = forwarded(&[b"10.0.0.3, 10.0.0.2"]);
        assert_eq!(client_ip(peer, &headers, &proxies), ip("10.0.0.3"));
    }
}
