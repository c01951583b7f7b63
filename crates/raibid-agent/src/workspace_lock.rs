//! Which job directories a live agent is using, told by a lock beside each one.
//!
//! The orphan sweeper used to ask only the queue whether a directory's job could still be
//! running. A workspace root can be shared by agents of different queues (a standalone `raibid
//! agent` and `raibid up` default to the same one), and to a queue another queue's job is
//! unknown, so a sweeper removed live workspaces mid-step. An flock is held by the process
//! that runs the job and dies with it, whatever the queue: a directory whose lock can be taken
//! belongs to no live agent.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
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
        // Between opening and locking, a sweeper may take and delete the file (its directory
        // does not exist yet); a lock on a deleted file guards nothing, so open it again.
        for _ in 0..5 {
            let file = crate::lock_file::open(&path)?;
            match lock_if_current(&path, file)? {
                Locked::Held(lock) => return Ok(Some(Self { _lock: lock, path })),
                Locked::Busy => return Ok(None),
                Locked::Replaced => {}
            }
        }
        Err(io::Error::other(format!(
            "{} keeps being replaced",
            path.display()
        )))
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

enum Locked {
    Held(Flock<File>),
    /// Another process holds it.
    Busy,
    /// `path` no longer names the file that was opened.
    Replaced,
}

/// Locks `file`, opened at `path`, and checks that `path` still names it.
fn lock_if_current(path: &Path, file: File) -> io::Result<Locked> {
    let opened = file.metadata()?;
    let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, Errno::EWOULDBLOCK)) => return Ok(Locked::Busy),
        Err((_, errno)) => return Err(errno.into()),
    };
    match std::fs::symlink_metadata(path) {
        Ok(now) if now.dev() == opened.dev() && now.ino() == opened.ino() => Ok(Locked::Held(lock)),
        Ok(_) => Ok(Locked::Replaced),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Locked::Replaced),
        Err(e) => Err(e),
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

    /// A sweeper may take and delete a lock file between a runner's open and its flock (the
    /// directory does not exist yet). The runner's lock on the deleted file guards nothing.
    #[test]
    fn a_lock_on_a_file_deleted_after_opening_is_not_held() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("x-a1");
        let path = lock_path(&dir);
        let opened = File::create(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            lock_if_current(&path, opened).unwrap(),
            Locked::Replaced
        ));
        let opened = File::create(&path).unwrap();
        let replaced = root.path().join("other");
        std::fs::write(&replaced, "").unwrap();
        std::fs::rename(&replaced, &path).unwrap();
        assert!(matches!(
            lock_if_current(&path, opened).unwrap(),
            Locked::Replaced
        ));
        InUse::try_take(&dir)
            .unwrap()
            .expect("a fresh file locks")
            .release();
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
