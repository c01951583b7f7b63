//! The lock files the agent keeps beside what they guard (a mirror, a job directory, a step
//! user): private, and never a link or a FIFO that some step put in their place.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Opens (creating) the lock file at `path`: 0600, also when an older agent made it readable
/// by others (`flock` needs no more, and a step user holding it could hang the agent); the
/// last component is not followed (O_NOFOLLOW), opening does not wait on a FIFO
/// (O_NONBLOCK), and anything but a regular file is refused.
pub(crate) fn open(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}
