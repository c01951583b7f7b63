//! Files and directories that only their owner may open.
//!
//! `raibid up`'s data directory holds the API token, the webhook secret, the private Redis's
//! password and its AOF (every job record, `job submit --env` values). Anyone who can read
//! them can queue jobs that the agents run as the `raibid up` user with its secrets, so on a
//! shared machine they must be private, including when an earlier version (or the user) left
//! them readable: the modes are fixed on every start, not only at creation.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;
use tracing::warn;

/// Creates `dir` with mode 0700 (its parents as usual), or takes group and world access away
/// from an existing one, saying so.
pub fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    restrict(dir)?;
    Ok(())
}

/// Takes group and world access away from `path` if it has any, saying so; returns whether it
/// had to. (A mode given at creation is only a request that the umask can narrow, and it does
/// nothing for a file that already exists.)
pub fn restrict(path: &Path) -> anyhow::Result<bool> {
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading the mode of {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 == 0 {
        return Ok(false);
    }
    let private = mode & 0o7700;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(private))
        .with_context(|| format!("making {} private (chmod {private:o})", path.display()))?;
    warn!(
        path = %path.display(),
        was = format!("{:o}", mode & 0o7777),
        now = format!("{private:o}"),
        "other users of the machine could read this; made it private to its owner"
    );
    Ok(true)
}

/// [`restrict`] on `dir` and everything below it (symbolic links are left alone).
pub fn restrict_tree(dir: &Path) -> anyhow::Result<()> {
    restrict(dir)?;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            restrict_tree(&entry.path())?;
        } else if kind.is_file() {
            restrict(&entry.path())?;
        }
    }
    Ok(())
}

/// Writes `contents` to `path` with mode 0600, also when the file already exists with another
/// mode (its mode is fixed before the new contents go in).
pub fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn directories_and_files_end_up_private_whatever_they_were() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        ensure_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);

        let file = dir.join("env");
        std::fs::write(&file, "old").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        write(&file, "new").unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "new");

        let nested = dir.join("sub");
        std::fs::create_dir(&nested).unwrap();
        std::fs::set_permissions(&nested, std::fs::Permissions::from_mode(0o755)).unwrap();
        let inner = nested.join("f");
        std::fs::write(&inner, "x").unwrap();
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o664)).unwrap();
        restrict_tree(&dir).unwrap();
        assert_eq!((mode(&nested), mode(&inner)), (0o700, 0o600));
    }
}
