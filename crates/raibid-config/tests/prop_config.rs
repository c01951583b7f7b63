//! Property-based fuzzing of the configuration loader: a broken file or a mistyped
//! `RAIBID_*` variable must be an error that names it, never a panic, and a well-typed override
//! must land in the field it names.
//!
//! `PROPTEST_CASES` raises the case count (`scripts/fuzz.sh` runs them long).

use std::path::Path;

use proptest::prelude::*;
use raibid_config::load_from_str;

/// Pieces of configuration files: section and field names, YAML syntax, odd values.
const TOKENS: [&str; 40] = [
    "redis:",
    "server:",
    "agent:",
    "up:",
    "gitea:",
    "keda:",
    "url:",
    "maxlen:",
    "tokens:",
    "secrets:",
    "secret_repos:",
    "pool_rules:",
    "repo:",
    "pool:",
    "allowed_repos:",
    "events:",
    "executor:",
    "webhook_secret:",
    "stale_after_secs:",
    "listen:",
    "\n",
    "  ",
    "- ",
    ": ",
    "[",
    "]",
    "{",
    "}",
    "&a ",
    "*a",
    "\"",
    "'",
    "#",
    "~",
    "-1",
    "18446744073709551616",
    "bwrap",
    "push",
    "[*",
    "**/x",
];

/// Override variables: real field names (some mistyped), arbitrary values.
const VARIABLES: [&str; 14] = [
    "RAIBID_REDIS_URL",
    "RAIBID_REDIS_MAXLEN",
    "RAIBID_REDIS_STREAM_NAME",
    "RAIBID_REDIS_STALE_AFTER_SECS",
    "RAIBID_SERVER_LISTEN",
    "RAIBID_SERVER_TOKENS",
    "RAIBID_SERVER_EVENTS",
    "RAIBID_SERVER_ALLOWED_REPOS",
    "RAIBID_AGENT_EXECUTOR",
    "RAIBID_AGENT_POOLS",
    "RAIBID_AGENT_SECRETS",
    "RAIBID_UP_MAX_AGENTS",
    "RAIBID_NOPE",
    "RAIBID_",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS.to_vec()), 0..80).prop_map(|t| t.concat())
}

proptest! {
    #[test]
    fn arbitrary_files_never_panic(text in any::<String>()) {
        let _ = load_from_str(&text, Path::new("config.yaml"), &[]);
    }

    #[test]
    fn token_soup_never_panics(text in soup()) {
        if let Err(e) = load_from_str(&text, Path::new("config.yaml"), &[]) {
            prop_assert!(e.to_string().contains("config.yaml"), "errors name the file: {e}");
        }
    }

    #[test]
    fn arbitrary_overrides_never_panic(vars in prop::collection::vec((prop::sample::select(VARIABLES.to_vec()), any::<String>()), 0..4)) {
        let vars: Vec<(String, String)> = vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        if let Err(e) = load_from_str("", Path::new("config.yaml"), &vars) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    /// A number given for a number field is the number the program sees.
    #[test]
    fn numeric_overrides_land_in_their_field(maxlen in any::<u64>(), stale in any::<u64>()) {
        let vars = vec![
            ("RAIBID_REDIS_MAXLEN".to_owned(), maxlen.to_string()),
            ("RAIBID_REDIS_STALE_AFTER_SECS".to_owned(), stale.to_string()),
        ];
        let config = load_from_str("redis:\n  maxlen: 5\n", Path::new("config.yaml"), &vars)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(config.redis.maxlen, maxlen);
        prop_assert_eq!(config.redis.stale_after_secs, stale);
    }
}
