//! The configuration of every raibid-ci component.
//!
//! One file (`~/.config/raibid/config.yaml`, or `--config`/`RAIBID_CONFIG`) configures the CLI,
//! server, agents and the local pool, so that stream and group names have a single source of
//! truth. Every field has a default; `RAIBID_<SECTION>_<FIELD>` environment variables override
//! the file (other `RAIBID_*` variables belong to the agent's steps or the CLI and are ignored). Unknown keys and wrong types are errors that name the file, line and key, because a
//! typo that is silently ignored is worse than a failure to start.

mod env;
mod field;
mod ip_range;
mod load;
mod memory_limit;
mod model;
mod schedule;
mod secret;
mod token;

pub use env::is_override_variable;
pub use ip_range::IpRange;
pub use load::{ConfigError, ConfigSource, SECRETS_KEY_MIN_LEN, default_path, load, load_from_str};
pub use memory_limit::MemoryLimit;
pub use model::*;
pub use schedule::{CronExpr, Schedule, ScheduleName};
pub use secret::{Secret, redact_url};
pub use token::{ApiToken, TokenHash, TokenScope, hash_token};
