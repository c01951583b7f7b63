//! Directories for the agent's own files about a step or a build: a step's environment (its
//! secrets among the values), a build's registry login.
//!
//! They used to go to the system's temporary directory and live exactly as long as the step:
//! an agent killed mid-step (SIGKILL, OOM, a lost node) left them there, secrets and all, for
//! good. They now go to the job's own directory when there is one (`<job dir>/agent`, 0700, the
//! agent's), which the next job in that slot, or the orphan sweeper, removes with the rest.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A new 0700 directory named `<prefix><random>` in `parent`, or in the system's temporary
/// directory when there is none (probes, tests); removed with its contents on drop.
pub(crate) fn private_tempdir(
    prefix: &str,
    parent: Option<&Path>,
) -> std::io::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder
        .prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(0o700));
    match parent {
        Some(parent) => builder.tempdir_in(parent),
        None => builder.tempdir(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn made_private_where_asked() {
        let parent = tempfile::tempdir().unwrap();
        let dir = private_tempdir("raibid-x-", Some(parent.path())).unwrap();
        assert_eq!(dir.path().parent(), Some(parent.path()));
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let elsewhere = private_tempdir("raibid-x-", None).unwrap();
        assert_eq!(
            elsewhere.path().parent(),
            Some(std::env::temp_dir().as_path())
        );
    }
}
