//! Which job directories a live agent is using, told by a lock beside each one.
//!
//! The orphan sweeper used to ask only the queue whether a directory's job could still be
//! running. A workspace root can be shared by agents of different queues (a standalone `raibid
//! agent` and `raibid up` default to the same one), and to a queue another queue's job is
//! unknown, so a sweeper removed live workspaces mid-step. An flock is held by the process
//! that runs the job and dies with it, whatever the queue: a directory whose lock can be taken
//! belongs to no live agent.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Held while a job directory is in use; [`InUse::release`] ends that.
pub(crate) struct InUse {
    _lock: Flock<File>,
    path: PathBuf,
}

/// The lock of `job_dir`: a sibling, because what is inside belongs to the job's steps.
fn lock_path(job_dir: &Path) -> PathBuf {
    job_dir.with_extension("lock")
}

impl InUse {
    /// Takes `job_dir`'s lock, or `None` when a live process holds it.
    pub(crate) fn try_take(job_dir: &Path) -> io::Result<Option<Self>> {
        let path = lock_path(job_dir);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(Self { _lock: lock, path })),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(errno.into()),
        }
    }

    /// Removes the lock file, then lets go: whoever opened it before sees a lock no one holds
    /// and a directory that is gone.
    pub(crate) fn release(self) {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a workspace lock");
            }
            _ => {}
        }
    }
}

/// The job directory a lock file stands for, if `name` is one.
pub(crate) fn locked_dir(name: &str) -> Option<&str> {
    name.strip_suffix(".lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_seen_and_a_released_one_is_gone() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("01JXK4Q3ZP8M5T7V2W9R000001-a1");
        let held = InUse::try_take(&dir).unwrap().expect("free");
        // flock is per open file: a second open, as another process would do, sees it held.
        assert!(InUse::try_take(&dir).unwrap().is_none());
        held.release();
        assert!(!lock_path(&dir).exists());
        let again = InUse::try_take(&dir).unwrap().expect("free again");
        again.release();
    }

    #[test]
    fn a_link_in_place_of_the_lock_is_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("x-a1");
        let target = root.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, lock_path(&dir)).unwrap();
        assert!(InUse::try_take(&dir).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }

    #[test]
    fn lock_files_name_their_directory() {
        assert_eq!(locked_dir("x-a1.lock"), Some("x-a1"));
        assert_eq!(locked_dir("x-a1"), None);
    }
}
