//! Sharing one buildah store between concurrent builds, and removing what builds leave in it.
//!
//! A build may not remove its image as soon as it is done: with `--layers`, buildah reuses an
//! image another build made when every instruction is a cache hit (two builds of one
//! Containerfile share the images of their manifest lists, or one image under both private
//! names), so removing "its own" images could delete one another build has yet to push.
//! Removals therefore only happen when no build is in flight:
//!
//! - every build holds the store's lock, shared, from before it pulls or builds anything until
//!   its pushes are done; before it makes anything, it records its private name in the store's
//!   garbage directory (so what a killed agent left is found too);
//! - when a build ends, it releases the lock and tries it exclusively, without waiting. Whoever
//!   gets it removes what is recorded (the private names, the manifest lists and the images
//!   without a name that they hold), deleting each record once its removal is done. A build
//!   that cannot get it leaves its records to the next build that can;
//! - unless [`ImageBuilder::with_cleanup_threshold`](super::ImageBuilder) records (16 by
//!   default) are pending: then the build ending waits for the lock (at most
//!   [`FORCED_WAIT`](super::FORCED_WAIT), or until it is cancelled). Meanwhile it holds the
//!   store's gate, a second lock every build takes briefly before its shared one, so builds
//!   starting wait behind it while those in flight drain; then it cleans up.
//!
//! So the store stays bounded even when builds overlap without a gap (the pods of a busy node)
//! or one build is stuck in a long push. The price is a pause for every build on the store,
//! once in a while: the builds starting wait for those in flight (at most the wait's bound)
//! and for the cleanup (seconds). A build starting while another cleans up waits too.
//! The lock is an `flock` on a file in the store itself, which is what the builds share (an
//! agent's concurrent jobs, the agents of `raibid up` under one data directory, the pods of a
//! node on a hostPath volume).

use std::fs::File;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use tokio_util::sync::CancellationToken;

use crate::executor::OutputSender;

/// What a build waiting for a cleanup says in its log.
const WAITING: &[u8] = b"[raibid] waiting for another build's cleanup of the image store\n";

/// What a build leaves in the store under its private name `localhost/raibid-build-<suffix>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Garbage {
    Image(String),
    /// A manifest list, and the images without a name it holds.
    List(String),
}

/// The prefix of every build's private name.
pub(crate) const PRIVATE_PREFIX: &str = "localhost/raibid-build-";

impl Garbage {
    pub(crate) fn name(&self) -> &str {
        match self {
            Self::Image(name) | Self::List(name) => name,
        }
    }

    /// The record of a private name: its suffix names the file, its kind is the content.
    fn record(&self) -> Option<(&str, &'static str)> {
        let suffix = self.name().strip_prefix(PRIVATE_PREFIX)?;
        let kind = match self {
            Self::Image(_) => "image",
            Self::List(_) => "list",
        };
        valid_suffix(suffix).then_some((suffix, kind))
    }

    /// Reads a record back. Only a private name can come of it, whatever the file holds: an
    /// unknown kind (a record cut short by a crash) is taken for an image, which `rmi` removes
    /// whatever it is.
    fn parse(file_name: &str, contents: &str) -> Option<Self> {
        if !valid_suffix(file_name) {
            return None;
        }
        let name = format!("{PRIVATE_PREFIX}{file_name}");
        Some(match contents.trim() {
            "list" => Self::List(name),
            _ => Self::Image(name),
        })
    }
}

fn valid_suffix(suffix: &str) -> bool {
    !suffix.is_empty()
        && suffix.len() <= 64
        && suffix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The lock and the garbage records of one store, in `<root>/raibid-builds`.
#[derive(Debug)]
pub(crate) struct SharedStore {
    dir: PathBuf,
}

/// Why a build did not get the store.
#[derive(Debug)]
pub(crate) enum Wait {
    Cancelled,
    TimedOut,
    Io(io::Error),
}

/// `file` locked exclusively, polled until `deadline` or a cancel.
async fn poll_exclusive(
    mut file: File,
    cancel: &CancellationToken,
    deadline: Instant,
) -> Result<Flock<File>, Wait> {
    let mut pause = Duration::from_millis(10);
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((back, nix::errno::Errno::EWOULDBLOCK)) => file = back,
            Err((_, errno)) => return Err(Wait::Io(errno.into())),
        }
        if Instant::now() + pause >= deadline {
            return Err(Wait::TimedOut);
        }
        tokio::select! {
            () = cancel.cancelled() => return Err(Wait::Cancelled),
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// The most records one cleanup takes on; the rest wait for the next (each list costs a
/// `buildah manifest inspect`, and builds starting meanwhile wait).
pub(crate) const MAX_RECORDS: usize = 64;

impl SharedStore {
    /// Creates `<root>/raibid-builds/garbage` (0700) if needed.
    pub(crate) fn open(root: &Path) -> io::Result<Self> {
        let dir = root.join("raibid-builds");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join("garbage"))?;
        Ok(Self { dir })
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join("lock")
    }

    /// Taken shared, briefly, by every build before its shared lock; held exclusively by a
    /// cleanup that waits for the builds in flight, so that no build starts meanwhile.
    fn gate_path(&self) -> PathBuf {
        self.dir.join("gate")
    }

    fn garbage_dir(&self) -> PathBuf {
        self.dir.join("garbage")
    }

    /// Takes the store's lock shared, waiting (polled, so that a cancel or the deadline ends
    /// the wait) while a cleanup holds it, and then saying so once in `output`.
    pub(crate) async fn share(
        &self,
        cancel: &CancellationToken,
        deadline: Option<Instant>,
        output: &OutputSender,
    ) -> Result<Flock<File>, Wait> {
        let mut gate = crate::lock_file::open(&self.gate_path()).map_err(Wait::Io)?;
        let mut file = crate::lock_file::open(&self.lock_path()).map_err(Wait::Io)?;
        let mut pause = Duration::from_millis(10);
        let mut told = false;
        loop {
            // Through the gate (shut while a cleanup waits for the builds in flight), then the
            // lock itself; the gate is left at once.
            match Flock::lock(gate, FlockArg::LockSharedNonblock) {
                Ok(passing) => {
                    let locked = Flock::lock(file, FlockArg::LockSharedNonblock);
                    gate = passing.unlock().map_err(|(_, e)| Wait::Io(e.into()))?;
                    match locked {
                        Ok(lock) => return Ok(lock),
                        Err((back, nix::errno::Errno::EWOULDBLOCK)) => file = back,
                        Err((_, errno)) => return Err(Wait::Io(errno.into())),
                    }
                }
                Err((back, nix::errno::Errno::EWOULDBLOCK)) => gate = back,
                Err((_, errno)) => return Err(Wait::Io(errno.into())),
            }
            if !told {
                told = true;
                let _ = output.send(WAITING.to_vec()).await;
            }
            if deadline.is_some_and(|d| Instant::now() + pause >= d) {
                return Err(Wait::TimedOut);
            }
            tokio::select! {
                () = cancel.cancelled() => return Err(Wait::Cancelled),
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// The store's lock, exclusive, waiting for it (polled, until `deadline` or a cancel)
    /// with the gate shut, so that the builds in flight drain and no new one starts.
    pub(crate) async fn exclusive(
        &self,
        cancel: &CancellationToken,
        deadline: Instant,
    ) -> Result<Flock<File>, Wait> {
        let gate = crate::lock_file::open(&self.gate_path()).map_err(Wait::Io)?;
        let _shut = poll_exclusive(gate, cancel, deadline).await?;
        let file = crate::lock_file::open(&self.lock_path()).map_err(Wait::Io)?;
        // The gate opens again once the lock is held: builds starting wait on the lock then.
        poll_exclusive(file, cancel, deadline).await
    }

    /// The store's lock, exclusive, if no build holds it now.
    pub(crate) fn try_exclusive(&self) -> io::Result<Option<Flock<File>>> {
        let file = crate::lock_file::open(&self.lock_path())?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(lock)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(errno.into()),
        }
    }

    /// Records `garbage` for removal once no build is in flight. Call with the lock held
    /// (shared), before making anything under the name.
    pub(crate) fn record(&self, garbage: &Garbage) -> io::Result<()> {
        let (suffix, kind) = garbage
            .record()
            .ok_or_else(|| io::Error::other(format!("{garbage:?} is not a private name")))?;
        let path = self.garbage_dir().join(suffix);
        std::fs::write(path, format!("{kind}\n"))
    }

    /// Whether the store's prune is due, `every` after the last; if so, it counts as done from
    /// now. A store never pruned starts counting now: agents of a version without prunes have
    /// left no mark. Call with the lock held exclusively.
    pub(crate) fn prune_due(&self, every: Duration) -> io::Result<bool> {
        let path = self.dir.join("pruned");
        let new = match std::fs::symlink_metadata(&path) {
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(e),
        };
        let stamp = crate::lock_file::open(&path)?;
        let now = std::time::SystemTime::now();
        let last = stamp.metadata()?.modified()?;
        if new || now.duration_since(last).unwrap_or_default() < every {
            return Ok(false);
        }
        stamp.set_modified(now)?;
        Ok(true)
    }

    /// How many records are pending, counting up to `limit`.
    pub(crate) fn pending(&self, limit: usize) -> io::Result<usize> {
        let mut count = 0;
        for entry in std::fs::read_dir(self.garbage_dir())? {
            if count == limit {
                break;
            }
            if !entry?.file_type()?.is_dir() {
                count += 1;
            }
        }
        Ok(count)
    }

    /// The recorded garbage (at most [`MAX_RECORDS`]), each with its record's path. Call with
    /// the lock held exclusively. Files that are no record are returned as `None`, to delete;
    /// directories (which no build makes, and `remove_file` cannot delete) are skipped
    /// without counting.
    pub(crate) fn records(&self) -> io::Result<Vec<(PathBuf, Option<Garbage>)>> {
        let mut records = Vec::new();
        for entry in std::fs::read_dir(self.garbage_dir())? {
            if records.len() == MAX_RECORDS {
                break;
            }
            let entry = entry?;
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                continue;
            }
            let path = entry.path();
            let name = entry.file_name();
            let garbage = match (name.to_str(), file_type.is_file()) {
                (Some(name), true) => std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|contents| Garbage::parse(name, &contents)),
                _ => None,
            };
            records.push((path, garbage));
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_hold_only_private_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = SharedStore::open(dir.path()).unwrap();
        let list = Garbage::List(format!("{PRIVATE_PREFIX}0123abcd"));
        let image = Garbage::Image(format!("{PRIVATE_PREFIX}ffff0000"));
        store.record(&list).unwrap();
        store.record(&image).unwrap();
        assert!(
            store
                .record(&Garbage::Image("docker.io/library/debian:12".into()))
                .is_err()
        );
        assert!(
            store
                .record(&Garbage::Image(format!("{PRIVATE_PREFIX}../x")))
                .is_err()
        );
        let garbage = store.garbage_dir();
        std::fs::write(garbage.join("not-hex"), "image\n").unwrap();
        std::fs::write(garbage.join("abc"), "").unwrap();
        let mut found: Vec<_> = store
            .records()
            .unwrap()
            .into_iter()
            .map(|(path, g)| (path.file_name().unwrap().to_str().unwrap().to_owned(), g))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            found,
            [
                ("0123abcd".into(), Some(list)),
                (
                    "abc".into(),
                    Some(Garbage::Image(format!("{PRIVATE_PREFIX}abc")))
                ),
                ("ffff0000".into(), Some(image)),
                ("not-hex".into(), None),
            ]
        );
    }

    /// A directory in the garbage directory (no build makes one; `remove_file` cannot delete
    /// it) neither counts as pending nor takes one of a cleanup's [`MAX_RECORDS`] for ever.
    #[test]
    fn directories_among_the_records_do_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = SharedStore::open(dir.path()).unwrap();
        for n in 0..MAX_RECORDS {
            std::fs::create_dir(store.garbage_dir().join(format!("{n:x}0"))).unwrap();
        }
        let image = Garbage::Image(format!("{PRIVATE_PREFIX}ffff"));
        store.record(&image).unwrap();
        assert_eq!(store.pending(100).unwrap(), 1);
        let records = store.records().unwrap();
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0].1, Some(image));
    }

    #[test]
    fn a_prune_is_due_an_interval_after_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let store = SharedStore::open(dir.path()).unwrap();
        let week = Duration::from_secs(7 * 24 * 3600);
        let stamp = store.dir.join("pruned");
        assert!(
            !store.prune_due(week).unwrap(),
            "a new store starts counting"
        );
        assert!(stamp.is_file());
        assert!(!store.prune_due(week).unwrap());
        let ago = |d: Duration| {
            File::options()
                .write(true)
                .open(&stamp)
                .unwrap()
                .set_modified(std::time::SystemTime::now() - d)
                .unwrap();
        };
        ago(week - Duration::from_secs(60));
        assert!(!store.prune_due(week).unwrap());
        ago(week);
        assert!(store.prune_due(week).unwrap());
        assert!(!store.prune_due(week).unwrap(), "done from now");
    }

    /// A cleanup that waits shuts the gate: builds in flight go on, builds starting wait, and
    /// the cleanup gets the lock once the former are done.
    #[tokio::test]
    async fn a_waiting_cleanup_holds_back_new_builds() {
        let dir = tempfile::tempdir().unwrap();
        let store = SharedStore::open(dir.path()).unwrap();
        let cancel = CancellationToken::new();
        let (output, _log) = tokio::sync::mpsc::channel(16);
        let in_flight = store.share(&cancel, None, &output).await.unwrap();
        let far = Instant::now() + Duration::from_secs(60);
        let cleanup = store.exclusive(&cancel, far);
        tokio::pin!(cleanup);
        tokio::select! {
            _ = &mut cleanup => panic!("a build is in flight"),
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        // The gate is shut: a build starting now waits.
        let soon = Some(Instant::now() + Duration::from_millis(300));
        assert!(matches!(
            store.share(&cancel, soon, &output).await,
            Err(Wait::TimedOut)
        ));
        drop(in_flight);
        let cleaning = tokio::time::timeout(Duration::from_secs(5), cleanup)
            .await
            .expect("the cleanup got the lock")
            .unwrap();
        drop(cleaning);
        assert!(store.share(&cancel, None, &output).await.is_ok());
        // Its wait is bounded.
        let _in_flight = store.share(&cancel, None, &output).await.unwrap();
        let soon = Instant::now() + Duration::from_millis(300);
        assert!(matches!(
            store.exclusive(&cancel, soon).await,
            Err(Wait::TimedOut)
        ));
    }

    #[tokio::test]
    async fn cleanup_waits_for_no_build_and_builds_wait_for_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let store = SharedStore::open(dir.path()).unwrap();
        let cancel = CancellationToken::new();
        let (output, mut log) = tokio::sync::mpsc::channel(16);
        let first = store.share(&cancel, None, &output).await.unwrap();
        // Builds share the lock; no cleanup while one holds it.
        let second = store.share(&cancel, None, &output).await.unwrap();
        assert!(store.try_exclusive().unwrap().is_none());
        drop(first);
        assert!(store.try_exclusive().unwrap().is_none());
        drop(second);
        let cleaning = store.try_exclusive().unwrap().expect("no build holds it");
        // A build starting meanwhile waits, and says so; a cancel or its deadline ends the wait.
        assert!(log.try_recv().is_err());
        let deadline = Some(Instant::now() + Duration::from_millis(300));
        let waited = store.share(&cancel, deadline, &output).await;
        assert!(matches!(waited, Err(Wait::TimedOut)), "{waited:?}");
        assert_eq!(log.try_recv().unwrap(), WAITING);
        assert!(log.try_recv().is_err(), "said once");
        cancel.cancel();
        let waited = store.share(&cancel, None, &output).await;
        assert!(matches!(waited, Err(Wait::Cancelled)), "{waited:?}");
        drop(cleaning);
        let cancel = CancellationToken::new();
        assert!(store.share(&cancel, None, &output).await.is_ok());
    }
}
