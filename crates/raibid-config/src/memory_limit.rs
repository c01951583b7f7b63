use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const KIB: u64 = 1024;
const UNITS: [(&str, u64); 4] = [
    ("tb", KIB * KIB * KIB * KIB),
    ("gb", KIB * KIB * KIB),
    ("mb", KIB * KIB),
    ("kb", KIB),
];

/// A memory limit as written in the configuration: a size (`512mb`, `2gb`, a plain number of
/// bytes), a share of the machine's memory (`10%`), or `none`.
///
/// Units are Redis's binary ones (`1mb` is 1,048,576 bytes), because the value first ended up
/// as redis-server's `maxmemory` (`up.redis_maxmemory`; `agent.step_limits.memory` reads the
/// same); Redis's decimal `1m` is refused rather than silently read either way.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryLimit {
    #[default]
    None,
    Bytes(u64),
    /// 1 to 100.
    PercentOfMachine(u8),
}

impl MemoryLimit {
    pub fn parse(s: &str) -> Result<Self, String> {
        let text = s.trim().to_ascii_lowercase();
        let explain = || {
            format!(
                "{s:?} is not a memory limit: write a size (\"512mb\", \"2gb\"), a share of the \
                 machine's memory (\"10%\") or \"none\""
            )
        };
        if text == "none" {
            return Ok(Self::None);
        }
        if let Some(number) = text.strip_suffix('%') {
            let percent: u8 = number.trim().parse().map_err(|_| explain())?;
            if !(1..=100).contains(&percent) {
                return Err(format!(
                    "{s:?}: a share of the machine's memory is 1% to 100% (\"none\" for no limit)"
                ));
            }
            return Ok(Self::PercentOfMachine(percent));
        }
        let (number, unit) = UNITS
            .iter()
            .find_map(|(suffix, unit)| Some((text.strip_suffix(suffix)?, *unit)))
            .unwrap_or((text.strip_suffix('b').unwrap_or(&text), 1));
        let count: u64 = number.trim().parse().map_err(|_| explain())?;
        match count.checked_mul(unit) {
            Some(0) => Err(format!(
                "{s:?}: a limit of 0 bytes; write \"none\" for no limit"
            )),
            Some(bytes) => Ok(Self::Bytes(bytes)),
            None => Err(format!("{s:?} is too large")),
        }
    }

    /// The limit in bytes on a machine with `machine` bytes of memory; `None` for no limit.
    pub fn bytes(self, machine: u64) -> Option<u64> {
        match self {
            Self::None => None,
            Self::Bytes(bytes) => Some(bytes),
            Self::PercentOfMachine(percent) => Some(machine / 100 * u64::from(percent)),
        }
    }
}

impl fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::None => f.write_str("none"),
            Self::PercentOfMachine(percent) => write!(f, "{percent}%"),
            Self::Bytes(bytes) => match UNITS.iter().find(|(_, unit)| bytes % unit == 0) {
                Some((suffix, unit)) => write!(f, "{}{suffix}", bytes / unit),
                None => write!(f, "{bytes}"),
            },
        }
    }
}

impl fmt::Debug for MemoryLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for MemoryLimit {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A string, or a plain number of bytes (YAML reads `1048576` as a number). A visitor rather
/// than an untagged enum, which would buffer the value and lose the error's line and key.
impl<'de> Deserialize<'de> for MemoryLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = MemoryLimit;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a memory limit (\"512mb\", \"2gb\", \"10%\" or \"none\")")
            }

            fn visit_u64<E: serde::de::Error>(self, bytes: u64) -> Result<MemoryLimit, E> {
                MemoryLimit::parse(&bytes.to_string()).map_err(E::custom)
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<MemoryLimit, E> {
                MemoryLimit::parse(text).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_shares_and_none() {
        assert_eq!(
            MemoryLimit::parse("512mb"),
            Ok(MemoryLimit::Bytes(512 << 20))
        );
        assert_eq!(MemoryLimit::parse(" 2GB "), Ok(MemoryLimit::Bytes(2 << 30)));
        assert_eq!(MemoryLimit::parse("64kb"), Ok(MemoryLimit::Bytes(64 << 10)));
        assert_eq!(MemoryLimit::parse("1tb"), Ok(MemoryLimit::Bytes(1 << 40)));
        assert_eq!(MemoryLimit::parse("4096"), Ok(MemoryLimit::Bytes(4096)));
        assert_eq!(MemoryLimit::parse("4096b"), Ok(MemoryLimit::Bytes(4096)));
        assert_eq!(
            MemoryLimit::parse("10%"),
            Ok(MemoryLimit::PercentOfMachine(10))
        );
        assert_eq!(MemoryLimit::parse("none"), Ok(MemoryLimit::None));
        for bad in [
            "", "0", "0mb", "0%", "101%", "-1", "1.5gb", "2m", "2 g", "lots", "%",
        ] {
            assert!(MemoryLimit::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(
            MemoryLimit::parse("99999999tb")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn written_back_as_read() {
        for text in ["512mb", "2gb", "1tb", "64kb", "1000", "10%", "none"] {
            let limit = MemoryLimit::parse(text).unwrap();
            assert_eq!(limit.to_string(), text);
            assert_eq!(MemoryLimit::parse(&limit.to_string()), Ok(limit));
        }
        assert_eq!(MemoryLimit::Bytes(3 << 20).to_string(), "3mb");
    }

    #[test]
    fn bytes_on_a_machine() {
        let machine = 24 << 30;
        assert_eq!(MemoryLimit::None.bytes(machine), None);
        assert_eq!(MemoryLimit::Bytes(1 << 30).bytes(machine), Some(1 << 30));
        let tenth = MemoryLimit::PercentOfMachine(10).bytes(machine).unwrap();
        assert!(tenth.abs_diff(machine / 10) < 100, "{tenth}");
        assert_eq!(MemoryLimit::PercentOfMachine(100).bytes(1000), Some(1000));
    }

    #[test]
    fn yaml_numbers_and_strings() {
        let read = |yaml: &str| serde_yaml::from_str::<MemoryLimit>(yaml);
        assert_eq!(read("1048576").unwrap(), MemoryLimit::Bytes(1 << 20));
        assert_eq!(read("\"10%\"").unwrap(), MemoryLimit::PercentOfMachine(10));
        assert_eq!(read("10%").unwrap(), MemoryLimit::PercentOfMachine(10));
        assert!(read("true").is_err());
        let err = read("lots").unwrap_err().to_string();
        assert!(err.contains("not a memory limit"), "{err}");
    }
}
