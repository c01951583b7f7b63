//! Timeouts: `90s`, `10m`, `1h30m`, `2h`, or a plain number of seconds.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// A job that needs more than a day is almost certainly stuck; refusing longer timeouts keeps a
/// typo such as `300h` for `300m` from holding an agent for days.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error(
        "invalid duration {0:?}: use seconds (600) or a number with units h, m, s in that order (90s, 10m, 1h30m)"
    )]
    Syntax(String),
    #[error("a timeout of zero would stop the job before it starts; remove it to use the default")]
    Zero,
    #[error("{0:?} is longer than the 24h limit")]
    TooLong(String),
}

/// Parses a timeout. Units must appear at most once each, largest first, so `1h30m` is accepted
/// and the ambiguous `30m1h` or `1m1m` are not.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let syntax = || DurationError::Syntax(text.to_owned());
    let s = text.trim();
    let seconds = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<u64>()
            .map_err(|_| DurationError::TooLong(text.to_owned()))?
    } else {
        sum_of_units(s).ok_or_else(syntax)?
    };
    check(Duration::from_secs(seconds), text)
}

fn check(duration: Duration, text: &str) -> Result<Duration, DurationError> {
    if duration.is_zero() {
        Err(DurationError::Zero)
    } else if duration > MAX_TIMEOUT {
        Err(DurationError::TooLong(text.to_owned()))
    } else {
        Ok(duration)
    }
}

/// `None` for a syntax error; an overflowing sum saturates so that it is reported as too long.
fn sum_of_units(s: &str) -> Option<u64> {
    const UNITS: [(u8, u64); 3] = [(b'h', 3600), (b'm', 60), (b's', 1)];
    let bytes = s.as_bytes();
    let mut next_unit = 0;
    let mut total: u64 = 0;
    let mut i = 0;
    if bytes.is_empty() {
        return None;
    }
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i || i == bytes.len() {
            return None;
        }
        let number: u64 = s[start..i].parse().unwrap_or(u64::MAX);
        let offset = UNITS[next_unit..]
            .iter()
            .position(|&(u, _)| u == bytes[i])?;
        let (_, scale) = UNITS[next_unit + offset];
        next_unit += offset + 1;
        total = total.saturating_add(number.saturating_mul(scale));
        i += 1;
    }
    Some(total)
}

/// Deserializes a timeout from a YAML string or integer.
pub(crate) struct Timeout(pub(crate) Duration);

impl<'de> de::Deserialize<'de> for Timeout {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TimeoutVisitor)
    }
}

struct TimeoutVisitor;

impl<'de> Visitor<'de> for TimeoutVisitor {
    type Value = Timeout;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration like 90s, 10m or 1h30m, or a number of seconds")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Timeout, E> {
        parse_duration(v).map(Timeout).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timeout, E> {
        check(Duration::from_secs(v), &v.to_string())
            .map(Timeout)
            .map_err(E::custom)
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Timeout, E> {
        Err(E::custom(DurationError::TooLong(v.to_string())))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timeout, E> {
        Err(E::custom(format!(
            "{v} is negative; a timeout must be positive"
        )))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Timeout, E> {
        Err(E::custom(format!(
            "{v} is negative; a timeout must be positive"
        )))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Timeout, E> {
        Err(E::custom(format!(
            "{v} is not a whole number of seconds; use units like 90s or 10m"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> u64 {
        parse_duration(s).unwrap().as_secs()
    }

    #[test]
    fn accepted_forms() {
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("10m"), 600);
        assert_eq!(secs("1h30m"), 5400);
        assert_eq!(secs("2h"), 7200);
        assert_eq!(secs("1h2m3s"), 3723);
        assert_eq!(secs("1h5s"), 3605);
        assert_eq!(secs("600"), 600);
        assert_eq!(secs(" 45 "), 45);
        assert_eq!(secs("24h"), 86400);
        assert_eq!(secs("0h5m"), 300);
    }

    #[test]
    fn rejected_forms() {
        for bad in [
            "", "s", "10x", "1.5h", "30m1h", "1m1m", "1h 30m", "-5", "m10", "10ms", "1d",
        ] {
            assert!(
                matches!(parse_duration(bad), Err(DurationError::Syntax(_))),
                "{bad}"
            );
        }
        assert_eq!(parse_duration("0"), Err(DurationError::Zero));
        assert_eq!(parse_duration("0s"), Err(DurationError::Zero));
        assert!(matches!(
            parse_duration("24h1s"),
            Err(DurationError::TooLong(_))
        ));
        assert!(matches!(
            parse_duration("99999999999999999999999"),
            Err(DurationError::TooLong(_))
        ));
        assert!(matches!(
            parse_duration("99999999999999999999h"),
            Err(DurationError::TooLong(_))
        ));
    }

    #[test]
    fn yaml_numbers_and_strings() {
        let t: Timeout = serde_yaml::from_str("600").unwrap();
        assert_eq!(t.0.as_secs(), 600);
        let t: Timeout = serde_yaml::from_str("\"600\"").unwrap();
        assert_eq!(t.0.as_secs(), 600);
        for (bad, needle) in [
            ("-5", "negative"),
            ("-99999999999999999999999", "negative"),
            ("1.5", "whole number"),
            ("0", "zero"),
            ("[1]", "expected a duration"),
            ("99999999999999999999999", "24h limit"),
            ("true", "expected a duration"),
        ] {
            let err = serde_yaml::from_str::<Timeout>(bad).err().unwrap();
            assert!(err.to_string().contains(needle), "{bad}: {err}");
        }
    }
}
