use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A configuration value that must never be printed.
///
/// `Debug` and `Serialize` both redact, so neither a stray `{:?}` in a log line nor
/// `raibid config show` can leak it; code that needs the value calls [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"***\"")
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// A URL with its credentials replaced by `***`, for printing: the password of `user:pass@`
/// (a lone `token@` whole) and `pass`/`password` query parameters (redis-rs takes the password
/// of a `redis+unix://` socket URL from `?pass=`). Host, port, path and other parameters stay,
/// as they are what a user checks.
///
/// Deliberately conservative rather than a URL parser: the userinfo ends at the last `@`
/// before the query, so an unencoded `@` or `/` in a password is still hidden (at worst a
/// socket path holding `@` is partly hidden too).
pub fn redact_url(url: &str) -> String {
    let query_at = url.find(['?', '#']).unwrap_or(url.len());
    let (head, tail) = url.split_at(query_at);
    let head = match head.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((creds, host)) => match creds.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => format!("{scheme}://***@{host}"),
            },
            None => head.to_owned(),
        },
        None => head.to_owned(),
    };
    let tail = match tail.strip_prefix('?') {
        Some(query) => {
            let (query, fragment) = query.split_at(query.find('#').unwrap_or(query.len()));
            let params: Vec<String> = query
                .split('&')
                .map(|param| {
                    let key = param.split_once('=').map_or(param, |(k, _)| k);
                    if is_password_key(key) {
                        format!("{key}=***")
                    } else {
                        param.to_owned()
                    }
                })
                .collect();
            format!("?{}{fragment}", params.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{head}{tail}")
}

/// `pass` or `password`, also percent-encoded: redis-rs decodes parameter names.
fn is_password_key(key: &str) -> bool {
    let mut decoded = Vec::new();
    let mut bytes = key.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex: Vec<u8> = bytes.by_ref().take(2).collect();
            match std::str::from_utf8(&hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(byte) => decoded.push(byte),
                None => return true, // Malformed: hide rather than guess.
            }
        } else {
            decoded.push(b);
        }
    }
    let key = String::from_utf8_lossy(&decoded).to_ascii_lowercase();
    matches!(key.as_str(), "pass" | "password")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "\"***\"");
        assert_eq!(serde_yaml::to_string(&s).unwrap().trim(), "'***'");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(redact_url("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redact_url("rediss://u:pw@h:1"), "rediss://u:***@h:1");
        assert_eq!(redact_url("redis://tok@h:1"), "redis://***@h:1");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(
            redact_url("redis+unix:///tmp/r.sock?pass=hunter2"),
            "redis+unix:///tmp/r.sock?pass=***"
        );
        assert_eq!(
            redact_url("unix:///tmp/r.sock?db=2&user=ci&Password=hunter2#x"),
            "unix:///tmp/r.sock?db=2&user=ci&Password=***#x"
        );
        assert_eq!(
            redact_url("redis+unix:///s?pa%73s=hunter2&user=a@b"),
            "redis+unix:///s?pa%73s=***&user=a@b"
        );
        assert_eq!(redact_url("unix:///s?%50ASS=x"), "unix:///s?%50ASS=***");
        // Unencoded `@` and `/` in a password.
        assert_eq!(redact_url("redis://u:p@ss/w@h:1/0"), "redis://u:***@h:1/0");
        for url in [
            "redis://:hunter2@h",
            "redis+unix:///tmp/r.sock?pass=hunter2",
            "redis://u:hun/ter@2@h?password=hunter2",
        ] {
            assert!(!redact_url(url).contains("hunter2"), "{url}");
            assert!(!redact_url(url).contains("hun/ter"), "{url}");
        }
    }
}
