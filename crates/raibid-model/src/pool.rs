use std::fmt;

use serde::{Deserialize, Serialize};

/// A validated pool name.
///
/// Pool names become part of Redis keys (`<stream>:<pool>`) and of Kubernetes object names
/// (`raibid-agent-<pool>`), so they are restricted to what is safe in both: lowercase ASCII
/// letters, digits and `-`, starting with a letter, at most 40 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PoolName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid pool name {0:?}: use 1-40 lowercase letters, digits or '-', starting with a letter"
)]
pub struct PoolNameError(pub String);

impl PoolName {
    pub fn new(name: impl Into<String>) -> Result<Self, PoolNameError> {
        let name = name.into();
        let valid = !name.is_empty()
            && name.len() <= 40
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if valid {
            Ok(Self(name))
        } else {
            Err(PoolNameError(name))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for PoolName {
    fn default() -> Self {
        Self("default".to_owned())
    }
}

impl TryFrom<String> for PoolName {
    type Error = PoolNameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<PoolName> for String {
    fn from(value: PoolName) -> Self {
        value.0
    }
}

impl fmt::Display for PoolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for PoolName {
    type Err = PoolNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for ok in ["default", "arm64", "gpu", "amd64-large", "a"] {
            assert!(PoolName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_names_unsafe_for_keys_or_objects() {
        for bad in [
            "",
            "ARM",
            "a:b",
            "1abc",
            "a b",
            "../x",
            "a_b",
            &"a".repeat(41),
        ] {
            assert!(PoolName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<PoolName>("\"gpu\"").is_ok());
        assert!(serde_json::from_str::<PoolName>("\"g:pu\"").is_err());
    }
}
