//! Reading files of the checkout from the agent itself, outside any sandbox.
//!
//! The repository's author controls the checkout: a committed symbolic link can point at the
//! agent's private files (an SSH key, `raibid up`'s webhook secret) or at `/dev/zero`, and
//! whatever the agent reads may be quoted back in an error that lands in the job log and the
//! commit status. So the agent follows no symbolic link when it reads the pipeline file or what
//! autodetection looks at, reads only regular files, and reads at most a bounded amount; paths
//! it hands to another program on the host (an image's build context) must resolve inside the
//! workspace.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// The largest file of the checkout the agent reads into memory; a pipeline file is a few KiB.
pub(crate) const MAX_READ_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkspaceFileError {
    #[error(
        "{0} is a symbolic link or lies under one; the agent reads it only as a regular file of the repository"
    )]
    Symlink(String),
    #[error("{0} resolves to a path outside the workspace")]
    Outside(String),
    #[error("{0} is not a regular file")]
    NotRegular(String),
    #[error("{name} is larger than the limit of {limit} bytes")]
    TooLarge { name: String, limit: u64 },
    #[error("{name} must be a plain relative path inside the repository")]
    NotRelative { name: String },
    #[error("{name}: {source}")]
    Io { name: String, source: io::Error },
}

impl WorkspaceFileError {
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// The contents of `relative` in `workspace`, or `None` when there is no such file. Refuses a
/// symbolic link anywhere in the path, anything but a regular file, and files over `limit`.
pub(crate) fn read(
    workspace: &Path,
    relative: &str,
    limit: u64,
) -> Result<Option<Vec<u8>>, WorkspaceFileError> {
    match unlinked(workspace, relative)? {
        Some((path, _)) => read_regular(&path, relative, limit).map(Some),
        None => Ok(None),
    }
}

/// `relative` in `workspace` and what it is, or `None` when it does not exist; refused when
/// it, or a directory above it, is a symbolic link.
fn unlinked(
    workspace: &Path,
    relative: &str,
) -> Result<Option<(PathBuf, std::fs::Metadata)>, WorkspaceFileError> {
    let io = |source| WorkspaceFileError::Io {
        name: relative.to_owned(),
        source,
    };
    let root = std::fs::canonicalize(workspace).map_err(io)?;
    let expected = plain_join(&root, relative)?;
    let meta = match std::fs::symlink_metadata(&expected) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(WorkspaceFileError::Symlink(relative.to_owned()));
        }
        Ok(meta) => meta,
    };
    // A link in a parent directory makes the resolved path differ from the one asked for.
    if std::fs::canonicalize(&expected).map_err(io)? != expected {
        return Err(WorkspaceFileError::Symlink(relative.to_owned()));
    }
    Ok(Some((expected, meta)))
}

/// The contents of `relative` in `workspace`, or `None` when there is no such file (or it is
/// a link to nothing). Unlike [`read`], links are followed as long as every one of them stays
/// inside the workspace (a repository may link `.dockerignore` to `.gitignore`); what they lead
/// to must still be a regular file within `limit`.
pub(crate) fn read_inside(
    workspace: &Path,
    relative: &str,
    limit: u64,
) -> Result<Option<Vec<u8>>, WorkspaceFileError> {
    let resolved = match resolve_inside(workspace, relative) {
        Err(e) if e.is_not_found() => return Ok(None),
        other => other?,
    };
    read_regular(&resolved, relative, limit).map(Some)
}

/// Reads `path`, which must be a regular file of at most `limit` bytes; `name` is what errors
/// call it.
fn read_regular(path: &Path, name: &str, limit: u64) -> Result<Vec<u8>, WorkspaceFileError> {
    let io = |source| WorkspaceFileError::Io {
        name: name.to_owned(),
        source,
    };
    // O_NOFOLLOW: the last component is not followed even if it changed since the checks made
    // before; O_NONBLOCK: opening a FIFO does not wait for a writer (it is refused just below).
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => WorkspaceFileError::Symlink(name.to_owned()),
            _ => io(e),
        })?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(WorkspaceFileError::NotRegular(name.to_owned()));
    }
    let too_large = || WorkspaceFileError::TooLarge {
        name: name.to_owned(),
        limit,
    };
    if meta.len() > limit {
        return Err(too_large());
    }
    // The size can still grow between fstat and read; the cap holds regardless.
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// The names in directory `relative` of `workspace`, or `None` when there is no such
/// directory (or it is no directory at all). Refuses a directory that is a symbolic link, or
/// lies under one, as [`read`] does for files: listing it would show another place's names.
pub(crate) fn list_dir(
    workspace: &Path,
    relative: &str,
) -> Result<Option<Vec<String>>, WorkspaceFileError> {
    let Some((path, meta)) = unlinked(workspace, relative)? else {
        return Ok(None);
    };
    if !meta.is_dir() {
        return Ok(None);
    }
    let names = std::fs::read_dir(&path)
        .and_then(|dir| {
            dir.map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<io::Result<Vec<_>>>()
        })
        .map_err(|source| WorkspaceFileError::Io {
            name: relative.to_owned(),
            source,
        })?;
    Ok(Some(names))
}

/// `relative` in `workspace` with every symbolic link resolved, refused unless it stays inside
/// the workspace. For paths given to programs that follow links themselves (buildah reading a
/// build context), where a link inside the repository is legitimate but leaving it is not.
pub(crate) fn resolve_inside(
    workspace: &Path,
    relative: &str,
) -> Result<PathBuf, WorkspaceFileError> {
    let io = |source| WorkspaceFileError::Io {
        name: relative.to_owned(),
        source,
    };
    let root = std::fs::canonicalize(workspace).map_err(io)?;
    let resolved = std::fs::canonicalize(plain_join(&root, relative)?).map_err(io)?;
    if !resolved.starts_with(&root) {
        return Err(WorkspaceFileError::Outside(relative.to_owned()));
    }
    Ok(resolved)
}

/// `root/relative` for a relative path without `..`; the pipeline checks this already, but a
/// path that escapes textually would make the link checks above meaningless.
fn plain_join(root: &Path, relative: &str) -> Result<PathBuf, WorkspaceFileError> {
    let mut path = root.to_path_buf();
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            _ => {
                return Err(WorkspaceFileError::NotRelative {
                    name: relative.to_owned(),
                });
            }
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn regular_files_are_read_and_missing_ones_are_none() {
        let ws = tempfile::tempdir().unwrap();
        std::fs::create_dir(ws.path().join("ci")).unwrap();
        std::fs::write(ws.path().join("ci/p.yaml"), "steps: []\n").unwrap();
        assert_eq!(
            read(ws.path(), "ci/p.yaml", 100).unwrap().unwrap(),
            b"steps: []\n"
        );
        assert!(read(ws.path(), "nope.yaml", 100).unwrap().is_none());
    }

    #[test]
    fn links_anywhere_in_the_path_are_refused() {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("key"), "private").unwrap();
        std::fs::write(ws.path().join("real.yaml"), "steps: []\n").unwrap();
        symlink(outside.path().join("key"), ws.path().join("abs.yaml")).unwrap();
        // Even a link that stays inside the workspace: the agent reads no links at all.
        symlink("real.yaml", ws.path().join("inside.yaml")).unwrap();
        symlink("/nonexistent/target", ws.path().join("dangling.yaml")).unwrap();
        symlink(outside.path(), ws.path().join("dir")).unwrap();
        for name in ["abs.yaml", "inside.yaml", "dangling.yaml", "dir/key"] {
            let err = read(ws.path(), name, 100).unwrap_err();
            assert!(
                matches!(err, WorkspaceFileError::Symlink(_)),
                "{name}: {err}"
            );
            assert!(!err.to_string().contains("private"), "{err}");
        }
    }

    #[test]
    fn directories_are_listed_unless_they_are_links() {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(ws.path().join("ci")).unwrap();
        std::fs::write(ws.path().join("ci/a.yaml"), "").unwrap();
        std::fs::write(ws.path().join("file"), "").unwrap();
        symlink(outside.path(), ws.path().join("out")).unwrap();
        symlink("ci", ws.path().join("alias")).unwrap();
        assert_eq!(list_dir(ws.path(), "ci").unwrap().unwrap(), ["a.yaml"]);
        assert!(list_dir(ws.path(), "none").unwrap().is_none());
        assert!(list_dir(ws.path(), "file").unwrap().is_none());
        for name in ["out", "alias", "alias/."] {
            assert!(
                matches!(
                    list_dir(ws.path(), name),
                    Err(WorkspaceFileError::Symlink(_))
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn devices_are_never_read() {
        let ws = tempfile::tempdir().unwrap();
        symlink("/dev/zero", ws.path().join("zero")).unwrap();
        assert!(matches!(
            read(ws.path(), "zero", MAX_READ_BYTES),
            Err(WorkspaceFileError::Symlink(_))
        ));
        // A directory (or a FIFO, which git cannot check out but a step could make) is not a
        // regular file, and opening it does not block.
        std::fs::create_dir(ws.path().join("d")).unwrap();
        nix::unistd::mkfifo(&ws.path().join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        for name in ["d", "fifo"] {
            assert!(
                matches!(
                    read(ws.path(), name, 100),
                    Err(WorkspaceFileError::NotRegular(_))
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn the_size_limit_is_named() {
        let ws = tempfile::tempdir().unwrap();
        std::fs::write(ws.path().join("big"), vec![b'a'; 101]).unwrap();
        std::fs::write(ws.path().join("fits"), vec![b'a'; 100]).unwrap();
        let err = read(ws.path(), "big", 100).unwrap_err();
        assert_eq!(err.to_string(), "big is larger than the limit of 100 bytes");
        assert_eq!(read(ws.path(), "fits", 100).unwrap().unwrap().len(), 100);
    }

    #[test]
    fn resolved_paths_must_stay_inside() {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(ws.path().join("ctx")).unwrap();
        symlink("ctx", ws.path().join("alias")).unwrap();
        symlink("/", ws.path().join("root")).unwrap();
        symlink(outside.path(), ws.path().join("out")).unwrap();
        let root = std::fs::canonicalize(ws.path()).unwrap();
        assert_eq!(resolve_inside(ws.path(), ".").unwrap(), root);
        assert_eq!(
            resolve_inside(ws.path(), "alias").unwrap(),
            root.join("ctx")
        );
        for name in ["root", "out", "root/etc"] {
            assert!(
                matches!(
                    resolve_inside(ws.path(), name),
                    Err(WorkspaceFileError::Outside(_))
                ),
                "{name}"
            );
        }
        assert!(resolve_inside(ws.path(), "../x").is_err());
    }

    #[test]
    fn read_inside_follows_only_links_that_stay_inside() {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("key"), "private").unwrap();
        std::fs::write(ws.path().join(".gitignore"), "target\n").unwrap();
        symlink(".gitignore", ws.path().join(".dockerignore")).unwrap();
        assert_eq!(
            read_inside(ws.path(), ".dockerignore", 100)
                .unwrap()
                .unwrap(),
            b"target\n"
        );
        assert!(read_inside(ws.path(), "missing", 100).unwrap().is_none());
        symlink("/nonexistent", ws.path().join("dangling")).unwrap();
        assert!(read_inside(ws.path(), "dangling", 100).unwrap().is_none());
        symlink(outside.path().join("key"), ws.path().join("out")).unwrap();
        symlink("/dev/zero", ws.path().join("zero")).unwrap();
        for name in ["out", "zero"] {
            let err = read_inside(ws.path(), name, 100).unwrap_err();
            assert!(
                matches!(err, WorkspaceFileError::Outside(_)),
                "{name}: {err}"
            );
            assert!(!err.to_string().contains("private"), "{err}");
        }
        nix::unistd::mkfifo(&ws.path().join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        symlink("fifo", ws.path().join("to-fifo")).unwrap();
        assert!(matches!(
            read_inside(ws.path(), "to-fifo", 100),
            Err(WorkspaceFileError::NotRegular(_))
        ));
        std::fs::write(ws.path().join("big"), vec![b'a'; 101]).unwrap();
        assert!(matches!(
            read_inside(ws.path(), "big", 100),
            Err(WorkspaceFileError::TooLarge { .. })
        ));
    }
}
