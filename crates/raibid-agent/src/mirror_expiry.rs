//! Removing the git mirrors no job has used for a while (`agent.mirror_expire_days`).
//!
//! Without it the mirror cache only grows: every repository ever built keeps its whole history
//! on the node, renamed and deleted repositories included, and a single machine (`raibid up`)
//! has nobody to run the clean-up by hand.
//!
//! A mirror's last use is the modification time of its lock file (`<name>.lock` beside
//! `<name>.git`), which every checkout sets once it holds the lock. A sweep runs at most once a
//! day per cache directory (a stamp file, `.mirrors-swept`, with its own lock so that agents
//! sharing the directory do not sweep together). It takes each expired mirror's lock without
//! waiting (a checkout holding it is a use), checks the time again under it, and moves the
//! mirror aside before deleting it, so a sweep cut short leaves a leftover rather than a half
//! mirror that fetches would fail on. Under the same lock it deletes what a killed clone left
//! (`<name>.tmp-<pid>`, `<name>.old-<pid>`): clones happen only under that lock.
//!
//! A job reads its mirror's objects without the lock for as long as it runs (its workspace
//! borrows them), so no expiry may be shorter than the longest job: [`MIN_EXPIRY`].
//!
//! Lock files are never deleted, even with their mirror gone: a checkout may have opened one
//! and be waiting for it, and a new file at the same path would let a third checkout in beside
//! it. They are empty.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};

/// How often a cache directory is swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(24 * 3600);

/// The shortest expiry: a day longer than a job may run (`raibid_pipeline::MAX_TIMEOUT`).
pub const MIN_EXPIRY: Duration = Duration::from_secs(2 * 24 * 3600);

/// The stamp file whose modification time is the last sweep.
const STAMP: &str = ".mirrors-swept";

/// What a sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MirrorSweep {
    /// The mirrors removed (their directory names, `<repo>-<hash>.git`).
    pub expired: Vec<String>,
    /// Leftovers of clones killed midway.
    pub leftovers: usize,
}

/// Marks a mirror used now: its lock file's time, set by the checkout holding it.
pub(crate) fn mark_used(lock: &File) {
    if let Err(e) = lock.set_modified(SystemTime::now()) {
        tracing::warn!(error = %e, "cannot mark the git mirror used; it may expire early");
    }
}

/// Sweeps `cache_dir` if a day has passed since its last sweep; `None` when it was not due,
/// another agent is sweeping, or the directory does not exist yet. The first sweep of a
/// directory only marks every mirror used: mirrors of agents from before this one have lock
/// files as old as the mirror, whatever their use.
pub(crate) fn sweep(cache_dir: &Path, expiry: Duration) -> io::Result<Option<MirrorSweep>> {
    let expiry = expiry.max(MIN_EXPIRY);
    let stamp_path = cache_dir.join(STAMP);
    let first = match std::fs::symlink_metadata(&stamp_path) {
        Ok(_) => false,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !cache_dir.is_dir() {
                return Ok(None);
            }
            true
        }
        Err(e) => return Err(e),
    };
    let Some(stamp) = try_lock(crate::lock_file::open(&stamp_path)?)? else {
        return Ok(None);
    };
    let now = SystemTime::now();
    let last = stamp.metadata()?.modified()?;
    if !first && now.duration_since(last).unwrap_or_default() < SWEEP_EVERY {
        return Ok(None);
    }
    stamp.set_modified(now)?;

    let mut sweep = MirrorSweep::default();
    for (base, found) in entries(cache_dir)? {
        if let Err(e) = sweep_one(cache_dir, &base, found, first, now, expiry, &mut sweep) {
            tracing::warn!(mirror = %base, error = %e, "cannot sweep the git mirror");
        }
    }
    Ok(Some(sweep))
}

/// One mirror and its leftovers.
fn sweep_one(
    cache_dir: &Path,
    base: &str,
    found: Found,
    first: bool,
    now: SystemTime,
    expiry: Duration,
    sweep: &mut MirrorSweep,
) -> io::Result<()> {
    let lock_path = cache_dir.join(format!("{base}.lock"));
    let used = match std::fs::symlink_metadata(&lock_path) {
        Ok(meta) if meta.is_file() => Some(meta.modified()?),
        Ok(_) => return Ok(()), // not ours to take: the checkout refuses it too
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    // A mirror without a lock file (made by hand, or its file deleted) counts from now.
    if found.mirror && (first || used.is_none()) {
        mark_used(&crate::lock_file::open(&lock_path)?);
    }
    let expired = |used: SystemTime| {
        !first && found.mirror && now.duration_since(used).unwrap_or_default() >= expiry
    };
    if found.leftovers.is_empty() && !used.is_some_and(expired) {
        return Ok(());
    }
    let Some(lock) = try_lock(crate::lock_file::open(&lock_path)?)? else {
        return Ok(()); // in use
    };
    // Leftovers first: one may have the name the mirror is moved aside under (this agent's
    // own, from a removal that failed).
    for dir in found.leftovers {
        crate::remove::remove_tree(&dir)?;
        sweep.leftovers += 1;
    }
    if expired(lock.metadata()?.modified()?) {
        let aside = cache_dir.join(format!("{base}.old-{}", std::process::id()));
        std::fs::rename(cache_dir.join(format!("{base}.git")), &aside)?;
        sweep.expired.push(format!("{base}.git"));
        crate::remove::remove_tree(&aside)?;
    }
    drop(lock);
    Ok(())
}

/// What the cache directory holds of one mirror.
#[derive(Debug, Default)]
struct Found {
    mirror: bool,
    leftovers: Vec<PathBuf>,
}

/// The cache directory's mirrors and clone leftovers, by base name. Only directories named as
/// the checkout names them: the pipelines' caches (`jobs/`), lock files, links and anything
/// else are passed over.
fn entries(cache_dir: &Path) -> io::Result<BTreeMap<String, Found>> {
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    for entry in std::fs::read_dir(cache_dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name();
        let Some((base, kind)) = name.to_str().and_then(|n| n.split_once('.')) else {
            continue;
        };
        if base.is_empty() {
            continue;
        }
        let leftover = ["tmp-", "old-"].iter().any(|prefix| {
            kind.strip_prefix(prefix)
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        });
        if kind == "git" {
            found.entry(base.to_owned()).or_default().mirror = true;
        } else if leftover {
            found
                .entry(base.to_owned())
                .or_default()
                .leftovers
                .push(entry.path());
        }
    }
    Ok(found)
}

/// `file` locked exclusively, or `None` if someone holds it.
fn try_lock(file: File) -> io::Result<Option<Flock<File>>> {
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(errno.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn mirror(dir: &Path, base: &str, unused_for: Duration) {
        std::fs::create_dir_all(dir.join(format!("{base}.git/objects"))).unwrap();
        std::fs::write(
            dir.join(format!("{base}.git/HEAD")),
            "ref: refs/heads/main\n",
        )
        .unwrap();
        let lock = File::create(dir.join(format!("{base}.lock"))).unwrap();
        lock.set_modified(SystemTime::now() - unused_for).unwrap();
    }

    /// The stamp of a sweep `ago`, so that the next one is due or not.
    fn swept(dir: &Path, ago: Duration) {
        let stamp = File::create(dir.join(STAMP)).unwrap();
        stamp.set_modified(SystemTime::now() - ago).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn unused_mirrors_go_and_used_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        mirror(dir.path(), "old-repo-1a2b", 31 * DAY);
        mirror(dir.path(), "busy-repo-3c4d", DAY);
        std::fs::create_dir_all(dir.path().join("jobs/a.b")).unwrap();
        swept(dir.path(), 2 * DAY);
        let sweep = sweep(dir.path(), 30 * DAY).unwrap().unwrap();
        assert_eq!(sweep.expired, ["old-repo-1a2b.git"]);
        assert_eq!(sweep.leftovers, 0);
        assert_eq!(
            names(dir.path()),
            [
                STAMP,
                "busy-repo-3c4d.git",
                "busy-repo-3c4d.lock",
                "jobs",
                "old-repo-1a2b.lock"
            ]
        );
    }

    #[test]
    fn a_sweep_runs_once_a_day() {
        let dir = tempfile::tempdir().unwrap();
        mirror(dir.path(), "old-repo-1a2b", 31 * DAY);
        swept(dir.path(), DAY - Duration::from_secs(60));
        assert_eq!(sweep(dir.path(), 30 * DAY).unwrap(), None);
        assert!(dir.path().join("old-repo-1a2b.git").exists());
        swept(dir.path(), DAY);
        assert!(sweep(dir.path(), 30 * DAY).unwrap().is_some());
        assert!(!dir.path().join("old-repo-1a2b.git").exists());
        // The stamp now says today.
        assert_eq!(sweep(dir.path(), 30 * DAY).unwrap(), None);
    }

    #[test]
    fn the_first_sweep_only_marks_mirrors_used() {
        let dir = tempfile::tempdir().unwrap();
        mirror(dir.path(), "old-repo-1a2b", 300 * DAY);
        let first = sweep(dir.path(), 30 * DAY).unwrap().unwrap();
        assert_eq!(first, MirrorSweep::default());
        assert!(dir.path().join("old-repo-1a2b.git/HEAD").exists());
        let used = std::fs::metadata(dir.path().join("old-repo-1a2b.lock"))
            .unwrap()
            .modified()
            .unwrap();
        assert!(SystemTime::now().duration_since(used).unwrap() < DAY);
    }

    #[test]
    fn a_mirror_in_use_is_kept_however_old() {
        let dir = tempfile::tempdir().unwrap();
        mirror(dir.path(), "old-repo-1a2b", 31 * DAY);
        swept(dir.path(), 2 * DAY);
        let held = Flock::lock(
            File::open(dir.path().join("old-repo-1a2b.lock")).unwrap(),
            FlockArg::LockExclusiveNonblock,
        )
        .unwrap();
        assert_eq!(
            sweep(dir.path(), 30 * DAY).unwrap().unwrap(),
            MirrorSweep::default()
        );
        assert!(dir.path().join("old-repo-1a2b.git").exists());
        drop(held);
    }

    #[test]
    fn another_agent_sweeping_is_left_to_it() {
        let dir = tempfile::tempdir().unwrap();
        mirror(dir.path(), "old-repo-1a2b", 31 * DAY);
        swept(dir.path(), 2 * DAY);
        let held = Flock::lock(
            File::open(dir.path().join(STAMP)).unwrap(),
            FlockArg::LockExclusiveNonblock,
        )
        .unwrap();
        assert_eq!(sweep(dir.path(), 30 * DAY).unwrap(), None);
        drop(held);
        assert!(dir.path().join("old-repo-1a2b.git").exists());
    }

    #[test]
    fn no_expiry_is_shorter_than_a_job_may_run() {
        let dir = tempfile::tempdir().unwrap();
        mirror(
            dir.path(),
            "yesterday-1a2b",
            DAY + Duration::from_secs(3600),
        );
        swept(dir.path(), 2 * DAY);
        let sweep = sweep(dir.path(), Duration::from_secs(60)).unwrap().unwrap();
        assert!(sweep.expired.is_empty());
        assert!(dir.path().join("yesterday-1a2b.git").exists());
    }

    #[test]
    fn leftovers_of_killed_clones_go_unless_a_clone_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        mirror(dir.path(), "repo-1a2b", DAY);
        std::fs::create_dir_all(dir.path().join("repo-1a2b.tmp-4242/objects")).unwrap();
        std::fs::create_dir_all(dir.path().join("repo-1a2b.old-17")).unwrap();
        std::fs::create_dir_all(dir.path().join("busy-5e6f.tmp-99")).unwrap();
        std::fs::File::create(dir.path().join("busy-5e6f.lock")).unwrap();
        // Not the checkout's names: kept.
        std::fs::create_dir_all(dir.path().join("repo-1a2b.tmp-x")).unwrap();
        std::fs::create_dir_all(dir.path().join(".hidden.tmp-1")).unwrap();
        swept(dir.path(), 2 * DAY);
        let held = Flock::lock(
            File::open(dir.path().join("busy-5e6f.lock")).unwrap(),
            FlockArg::LockExclusiveNonblock,
        )
        .unwrap();
        let sweep = sweep(dir.path(), 30 * DAY).unwrap().unwrap();
        drop(held);
        assert_eq!(sweep.leftovers, 2);
        assert!(sweep.expired.is_empty());
        assert_eq!(
            names(dir.path()),
            [
                ".hidden.tmp-1",
                STAMP,
                "busy-5e6f.lock",
                "busy-5e6f.tmp-99",
                "repo-1a2b.git",
                "repo-1a2b.lock",
                "repo-1a2b.tmp-x"
            ]
        );
    }

    /// An earlier removal of this agent's that failed left the name the mirror is moved aside
    /// under: the sweep still removes the mirror.
    #[test]
    fn a_leftover_under_the_aside_name_does_not_block_the_removal() {
        let dir = tempfile::tempdir().unwrap();
        mirror(dir.path(), "old-repo-1a2b", 31 * DAY);
        let aside = dir
            .path()
            .join(format!("old-repo-1a2b.old-{}", std::process::id()));
        std::fs::create_dir_all(aside.join("objects")).unwrap();
        swept(dir.path(), 2 * DAY);
        let sweep = sweep(dir.path(), 30 * DAY).unwrap().unwrap();
        assert_eq!(sweep.expired, ["old-repo-1a2b.git"]);
        assert_eq!(sweep.leftovers, 1);
        assert!(!aside.exists() && !dir.path().join("old-repo-1a2b.git").exists());
    }

    #[test]
    fn a_mirror_without_a_lock_file_counts_from_now() {
        let dir = tempfile::tempdir().unwrap();
        mirror(dir.path(), "repo-1a2b", 31 * DAY);
        std::fs::remove_file(dir.path().join("repo-1a2b.lock")).unwrap();
        swept(dir.path(), 2 * DAY);
        assert_eq!(
            sweep(dir.path(), 30 * DAY).unwrap().unwrap(),
            MirrorSweep::default()
        );
        assert!(dir.path().join("repo-1a2b.git").exists());
        assert!(dir.path().join("repo-1a2b.lock").exists());
    }

    #[test]
    fn a_cache_directory_not_made_yet_is_not_swept() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(sweep(&dir.path().join("none"), 30 * DAY).unwrap(), None);
        assert!(!dir.path().join("none").exists());
    }
}
