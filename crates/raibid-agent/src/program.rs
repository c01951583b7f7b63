//! Which program starts an agent process.
//!
//! `raibid-agent` is `raibid agent` without the server, dashboard, cluster and benchmark code:
//! the same agent with fewer of the binary's pages resident while it waits for a job, which
//! counts when a pool keeps an agent per job. Cargo builds and installs it beside `raibid`, and
//! the container image holds both; where it is missing (a `raibid` copied alone), `raibid
//! agent` does the same work.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The agent-only binary's file name.
pub const AGENT_BINARY: &str = "raibid-agent";

/// A program and the argument that makes it an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentProgram {
    pub program: PathBuf,
    /// Between the global options (`--config`) and the agent's own: `agent` for `raibid`,
    /// nothing for `raibid-agent`.
    pub subcommand: Option<&'static str>,
}

impl AgentProgram {
    /// `raibid-agent` in the directory of `raibid` (the running executable, say) if it is an
    /// executable file there, else `raibid agent`.
    pub fn beside(raibid: &Path) -> Self {
        let sibling = raibid.with_file_name(AGENT_BINARY);
        if is_executable_file(&sibling) {
            Self {
                program: sibling,
                subcommand: None,
            }
        } else {
            Self::subcommand_of(raibid)
        }
    }

    /// `raibid agent`, whatever is beside it.
    pub fn subcommand_of(raibid: &Path) -> Self {
        Self {
            program: raibid.to_path_buf(),
            subcommand: Some("agent"),
        }
    }
}

/// `raibid-agent` or `raibid agent`: the program's file name and its subcommand.
impl std::fmt::Display for AgentProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.program.file_name().unwrap_or(self.program.as_os_str());
        write!(f, "{}", name.to_string_lossy())?;
        match self.subcommand {
            Some(subcommand) => write!(f, " {subcommand}"),
            None => Ok(()),
        }
    }
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_binary_beside_raibid_is_used_when_it_can_run() {
        let dir = tempfile::tempdir().unwrap();
        let raibid = dir.path().join("raibid");
        std::fs::write(&raibid, "").unwrap();
        let sibling = dir.path().join(AGENT_BINARY);
        let fallback = AgentProgram {
            program: raibid.clone(),
            subcommand: Some("agent"),
        };
        assert_eq!(AgentProgram::beside(&raibid), fallback, "none there");
        assert_eq!(fallback.to_string(), "raibid agent");

        std::fs::create_dir(&sibling).unwrap();
        assert_eq!(AgentProgram::beside(&raibid), fallback, "a directory");
        std::fs::remove_dir(&sibling).unwrap();

        std::fs::write(&sibling, "").unwrap();
        std::fs::set_permissions(&sibling, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(AgentProgram::beside(&raibid), fallback, "not executable");

        std::fs::set_permissions(&sibling, std::fs::Permissions::from_mode(0o755)).unwrap();
        let slim = AgentProgram::beside(&raibid);
        assert_eq!(
            slim,
            AgentProgram {
                program: sibling,
                subcommand: None,
            }
        );
        assert_eq!(slim.to_string(), "raibid-agent");
    }
}
