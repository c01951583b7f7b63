use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An address or a network (`10.0.0.0/8`, `fd00::/8`, `127.0.0.1`) in the configuration.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IpRange(IpNet);

impl IpRange {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            // `10.1.2.3/8` is almost certainly meant as the network; keep what was written
            // from being read as something narrower or wider than the prefix says.
            return Ok(Self(net.trunc()));
        }
        s.parse::<IpAddr>()
            .map(|ip| Self(IpNet::from(ip)))
            .map_err(|_| format!("{s:?} is neither an IP address nor a network (ADDRESS/PREFIX)"))
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        // An IPv4 peer on a dual-stack socket shows as `::ffff:a.b.c.d`.
        self.0.contains(&ip.to_canonical())
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            net if net.prefix_len() == net.max_prefix_len() => net.addr().fmt(f),
            net => net.fmt(f),
        }
    }
}

impl fmt::Debug for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for IpRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_and_networks() {
        let one = IpRange::parse("127.0.0.1").unwrap();
        assert!(one.contains(&ip("127.0.0.1")));
        assert!(!one.contains(&ip("127.0.0.2")));
        assert!(one.contains(&ip("::ffff:127.0.0.1")));
        assert_eq!(one.to_string(), "127.0.0.1");

        let net = IpRange::parse("10.1.2.3/8").unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.contains(&ip("10.200.0.1")));
        assert!(!net.contains(&ip("11.0.0.1")));

        let v6 = IpRange::parse("fd00::/8").unwrap();
        assert!(v6.contains(&ip("fd12::1")));
        assert!(!v6.contains(&ip("10.0.0.1")));

        for bad in ["", "10.0.0.0/33", "proxy.example", "10.0.0.1:80"] {
            let e = IpRange::parse(bad).unwrap_err();
            assert!(
                e.contains("neither an IP address nor a network"),
                "{bad}: {e}"
            );
        }
    }
}
