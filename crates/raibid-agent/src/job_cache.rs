//! Directories kept between jobs of a repository (the pipeline's `cache:`), on the agent's disk.
//!
//! On one big machine, building `target/` from nothing or downloading every dependency again is
//! most of what a Rust or Node job costs; GitLab CI's `cache:` is what users know for it.
//!
//! Layout, under `<agent.cache_dir>/jobs` (0700: steps of a step user must not read other
//! repositories' caches):
//!
//! ```text
//! <sha256 of repo>/<sha256 of key>/meta.json    repo, key, saved_at, last_used, size, paths
//! <sha256 of repo>/<sha256 of key>/data/<path>  the saved paths, as in the workspace
//! <sha256 of repo>/<sha256 of key>.lock         shared while restoring, exclusive to replace
//! <sha256 of repo>/.tmp-* .old-*                a save being built, an entry being deleted
//! ```
//!
//! Hashing keeps repository names and keys out of paths, so neither can point anywhere else.
//! A save is built beside its entry and swapped in by rename under the entry's exclusive lock,
//! and a restore copies under the shared lock: a job sees a whole entry or none, never half of
//! one, and concurrent saves of one key leave the last writer's.
//!
//! The workspace is the pipeline's to shape, and a repository can commit `target -> /root/.ssh`.
//! Saving never reads outside the workspace and restoring never writes outside it: each
//! component of a path is looked at without following it, and a link on the way refuses the
//! path. Below that, `cp -a` copies links as links. Copies keep modification times: cargo
//! decides what to rebuild by comparing them with the sources', and a restored output newer
//! than freshly checked-out sources would pass for up to date.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::lock_file;
use crate::remove;

/// `agent.job_cache_max_bytes` when the configuration says nothing: room for a few Rust
/// `target/` directories.
pub const DEFAULT_JOB_CACHE_MAX_BYTES: u64 = 10 << 30;

/// A save left half-built by an agent that died is removed once it is this old; a live save
/// of a few gigabytes takes minutes.
const STALE_TEMP: Duration = Duration::from_secs(24 * 3600);

const META: &str = "meta.json";
const DATA: &str = "data";

#[derive(Debug, thiserror::Error)]
pub enum JobCacheError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> JobCacheError + 'a {
    move |source| JobCacheError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What an entry says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    pub repo: String,
    pub key: String,
    pub saved_at: DateTime<Utc>,
    /// Updated by every restore: eviction removes the entries unused the longest.
    pub last_used: DateTime<Utc>,
    /// Bytes of the saved tree, links not followed and hard links counted once.
    pub size: u64,
    pub paths: Vec<String>,
}

/// A cache path left out, and why (for the job log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: String,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// Nothing saved under this key yet (or the cache is off).
    Miss,
    Hit {
        /// The paths now in the workspace.
        paths: Vec<String>,
        skipped: Vec<Skipped>,
        /// The entry's size.
        size: u64,
        saved_at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub paths: Vec<String>,
    pub skipped: Vec<Skipped>,
    /// Files left out of the entry although their path was saved (not owned by the
    /// workspace's owner, not a file, directory or link), a few by name.
    pub dropped: Vec<String>,
    pub size: u64,
    /// Whether the entry is now in the cache: not when nothing was saved, nor when it alone is
    /// larger than the cap.
    pub kept: bool,
    /// Entries removed to stay under the cap.
    pub evicted: Vec<EntryMeta>,
    /// Files taken unchanged from the entry this one replaces (hard links, not copies), and
    /// the files saved in all.
    pub reused: u64,
    pub files: u64,
}

/// One agent's (or one machine's: agents sharing `agent.cache_dir` share it) job caches.
#[derive(Debug, Clone)]
pub struct JobCache {
    root: PathBuf,
    max_bytes: u64,
}

impl JobCache {
    /// `max_bytes` caps all entries together; 0 turns caching off.
    pub fn new(root: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Self {
            root: root.into(),
            max_bytes,
        }
    }

    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Case is ignored, as forges resolve repository names.
    fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root.join(hash(&repo.to_lowercase()))
    }

    /// Copies the paths saved under `key` into `workspace`, where they are not yet. Blocking;
    /// `stop` (the job cancelled, the agent shutting down) kills a copy under way, and the
    /// paths not restored yet are skipped.
    pub fn restore(
        &self,
        repo: &str,
        key: &str,
        paths: &[String],
        workspace: &Path,
        stop: &CancellationToken,
    ) -> Result<Restored, JobCacheError> {
        if !self.enabled() {
            return Ok(Restored::Miss);
        }
        let repo_dir = self.repo_dir(repo);
        let key_hash = hash(key);
        let entry = repo_dir.join(&key_hash);
        if !entry.is_dir() {
            return Ok(Restored::Miss);
        }
        let lock = lock(&repo_dir, &key_hash, FlockArg::LockShared)?;
        // Evicted or replaced while we waited: the lock is what makes the entry whole.
        let Some(mut meta) = read_meta(&entry) else {
            drop(lock);
            return Ok(Restored::Miss);
        };
        let mut restored = Vec::new();
        let mut skipped = Vec::new();
        for path in paths {
            let source = entry.join(DATA).join(path);
            if std::fs::symlink_metadata(&source).is_err() {
                skipped.push(Skipped {
                    path: path.clone(),
                    why: "not in the cache".to_owned(),
                });
                continue;
            }
            let dest = match restore_target(workspace, path) {
                Ok(dest) => dest,
                Err(why) => {
                    skipped.push(Skipped {
                        path: path.clone(),
                        why,
                    });
                    continue;
                }
            };
            match copy_tree(&source, &dest, stop) {
                Ok(()) => restored.push(path.clone()),
                Err(why) => {
                    let _ = remove::remove_tree(&dest);
                    skipped.push(Skipped {
                        path: path.clone(),
                        why,
                    });
                }
            }
        }
        meta.last_used = Utc::now();
        // Only eviction's order depends on it: a failure to record the use is not the job's.
        let _ = write_meta(&entry, &meta);
        drop(lock);
        Ok(Restored::Hit {
            paths: restored,
            skipped,
            size: meta.size,
            saved_at: meta.saved_at,
        })
    }

    /// Saves `paths` of `workspace` under `key`, replacing what was there, then evicts the
    /// entries unused the longest until all fit under the cap. Blocking; `stop` kills a copy
    /// under way, and a save stopped before its last path keeps nothing (the entry is whole
    /// or unchanged).
    pub fn save(
        &self,
        repo: &str,
        key: &str,
        paths: &[String],
        workspace: &Path,
        stop: &CancellationToken,
    ) -> Result<Saved, JobCacheError> {
        let mut saved = Saved {
            paths: Vec::new(),
            skipped: Vec::new(),
            dropped: Vec::new(),
            size: 0,
            kept: false,
            evicted: Vec::new(),
            reused: 0,
            files: 0,
        };
        if !self.enabled() {
            return Ok(saved);
        }
        std::fs::create_dir_all(&self.root).map_err(io_err("creating", &self.root))?;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err("securing", &self.root))?;
        let repo_dir = self.repo_dir(repo);
        std::fs::create_dir_all(&repo_dir).map_err(io_err("creating", &repo_dir))?;
        let key_hash = hash(key);
        let temp = repo_dir.join(format!(".tmp-{key_hash}-{}", unique()));
        let data = temp.join(DATA);
        std::fs::create_dir_all(&data).map_err(io_err("creating", &data))?;
        // What the entry being replaced holds: files unchanged since are linked from it.
        let previous = repo_dir.join(&key_hash).join(DATA);
        let result = self.fill(&mut saved, paths, workspace, &data, &previous, stop);
        let result = result.and_then(|()| {
            if saved.paths.is_empty() || saved.size > self.max_bytes || stop.is_cancelled() {
                return Ok(());
            }
            let now = Utc::now();
            let meta = EntryMeta {
                repo: repo.to_owned(),
                key: key.to_owned(),
                saved_at: now,
                last_used: now,
                size: saved.size,
                paths: saved.paths.clone(),
            };
            write_meta(&temp, &meta).map_err(io_err("writing the metadata of", &temp))?;
            let entry = repo_dir.join(&key_hash);
            let old = repo_dir.join(format!(".old-{key_hash}-{}", unique()));
            let lock = lock(&repo_dir, &key_hash, FlockArg::LockExclusive)?;
            if entry.exists() {
                std::fs::rename(&entry, &old).map_err(io_err("moving aside", &entry))?;
            }
            std::fs::rename(&temp, &entry).map_err(io_err("renaming", &temp))?;
            drop(lock);
            saved.kept = true;
            let _ = remove::remove_tree(&old);
            Ok(())
        });
        if !saved.kept {
            let _ = remove::remove_tree(&temp);
        }
        result?;
        if saved.kept {
            saved.evicted = self.evict()?;
        }
        Ok(saved)
    }

    /// Copies each path into `data` and measures what was copied.
    fn fill(
        &self,
        saved: &mut Saved,
        paths: &[String],
        workspace: &Path,
        data: &Path,
        previous: &Path,
        stop: &CancellationToken,
    ) -> Result<(), JobCacheError> {
        let owner = std::fs::symlink_metadata(workspace)
            .map_err(io_err("reading", workspace))?
            .uid();
        for path in paths {
            let source = match save_source(workspace, path) {
                Ok(source) => source,
                Err(why) => {
                    saved.skipped.push(Skipped {
                        path: path.clone(),
                        why,
                    });
                    continue;
                }
            };
            let dest = data.join(path);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
            }
            match save_tree(&source, &previous.join(path), &dest, stop) {
                Ok(reused) => saved.reused += reused,
                Err(why) => {
                    let _ = remove::remove_tree(&dest);
                    saved.skipped.push(Skipped {
                        path: path.clone(),
                        why,
                    });
                    continue;
                }
            }
            saved.paths.push(path.clone());
        }
        let (size, files, dropped) = sanitize(data, owner).map_err(io_err("measuring", data))?;
        saved.size = size;
        saved.files = files;
        saved.dropped = dropped;
        Ok(())
    }

    /// Removes entries, least recently used first, until all fit under the cap; also what
    /// dead agents left (`.old-*`, and `.tmp-*` a day old). Entries being restored are
    /// skipped: they are in use, so not the least recently used.
    pub fn evict(&self) -> Result<Vec<EntryMeta>, JobCacheError> {
        let mut entries = Vec::new();
        let repos = match std::fs::read_dir(&self.root) {
            Ok(repos) => repos,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing", &self.root)(e)),
        };
        for repo in repos.flatten() {
            let repo_dir = repo.path();
            let Ok(children) = std::fs::read_dir(&repo_dir) else {
                continue;
            };
            for child in children.flatten() {
                let name = child.file_name().to_string_lossy().into_owned();
                let path = child.path();
                if name.starts_with(".old-") {
                    let _ = remove::remove_tree(&path);
                } else if name.starts_with(".tmp-") {
                    let stale = child
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok())
                        .is_some_and(|age| age > STALE_TEMP);
                    if stale {
                        let _ = remove::remove_tree(&path);
                    }
                } else if child.file_type().is_ok_and(|t| t.is_dir()) {
                    let meta = read_meta(&path);
                    entries.push((repo_dir.clone(), name, meta));
                }
            }
        }
        let mut total: u64 = entries
            .iter()
            .filter_map(|(_, _, m)| m.as_ref().map(|m| m.size))
            .sum();
        // Entries without metadata are no one's (a save writes it before the rename): first.
        entries.sort_by_key(|(_, _, m)| m.as_ref().map(|m| m.last_used));
        let mut evicted = Vec::new();
        for (repo_dir, key_hash, meta) in entries {
            if meta.is_some() && total <= self.max_bytes {
                break;
            }
            let Ok(lock) = lock(&repo_dir, &key_hash, FlockArg::LockExclusiveNonblock) else {
                continue;
            };
            let entry = repo_dir.join(&key_hash);
            let old = repo_dir.join(format!(".old-{key_hash}-{}", unique()));
            let moved = std::fs::rename(&entry, &old);
            drop(lock);
            if moved.is_err() {
                continue;
            }
            let _ = remove::remove_tree(&old);
            if let Some(meta) = meta {
                total = total.saturating_sub(meta.size);
                evicted.push(meta);
            }
        }
        Ok(evicted)
    }
}

/// Hex SHA-256: a fixed-length name no repository or key can steer.
fn hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A name no other save (of this agent or another process) is using at the same time.
fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn lock(repo_dir: &Path, key_hash: &str, how: FlockArg) -> Result<Flock<File>, JobCacheError> {
    let path = repo_dir.join(format!("{key_hash}.lock"));
    let file = lock_file::open(&path).map_err(io_err("opening", &path))?;
    Flock::lock(file, how).map_err(|(_, errno)| io_err("locking", &path)(io::Error::from(errno)))
}

fn read_meta(entry: &Path) -> Option<EntryMeta> {
    let bytes = std::fs::read(entry.join(META)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Written beside and renamed over, so a reader never finds half a file.
fn write_meta(entry: &Path, meta: &EntryMeta) -> io::Result<()> {
    let temp = entry.join(format!(".{META}.{}", unique()));
    std::fs::write(
        &temp,
        serde_json::to_vec_pretty(meta).map_err(io::Error::other)?,
    )?;
    std::fs::rename(&temp, entry.join(META)).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}

/// The workspace's `path` for saving (the cache's, and artifacts'): every component a real
/// directory (the last one may be a file), none a link. `Err` says why not, for the job log.
pub(crate) fn save_source(workspace: &Path, path: &str) -> Result<PathBuf, String> {
    let mut current = workspace.to_path_buf();
    let components: Vec<&str> = path.split('/').collect();
    for (i, component) in components.iter().enumerate() {
        current.push(component);
        let so_far = components[..=i].join("/");
        match std::fs::symlink_metadata(&current) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err("not in the workspace".to_owned());
            }
            Err(e) => return Err(format!("cannot read {so_far}: {e}")),
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!(
                    "{so_far} is a symbolic link; links are never followed out of the \
                     workspace"
                ));
            }
            Ok(meta) if i + 1 < components.len() && !meta.is_dir() => {
                return Err(format!("{so_far} is not a directory"));
            }
            Ok(meta) if !meta.is_dir() && !meta.is_file() => {
                return Err("neither a directory nor a file".to_owned());
            }
            Ok(_) => {}
        }
    }
    Ok(current)
}

/// Where `path` is restored to in the workspace: every existing component a real directory,
/// none a link, and nothing at the path itself (a restore never writes over the checkout).
/// Missing parents are created. `Err` says why not, for the job log.
fn restore_target(workspace: &Path, path: &str) -> Result<PathBuf, String> {
    let mut current = workspace.to_path_buf();
    let components: Vec<&str> = path.split('/').collect();
    for (i, component) in components.iter().enumerate() {
        current.push(component);
        let so_far = components[..=i].join("/");
        let last = i + 1 == components.len();
        match std::fs::symlink_metadata(&current) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !last {
                    // Its parent was just checked (or made): a real directory of ours.
                    std::fs::create_dir(&current)
                        .map_err(|e| format!("cannot create {so_far}: {e}"))?;
                }
            }
            Err(e) => return Err(format!("cannot read {so_far}: {e}")),
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!(
                    "{so_far} is a symbolic link in the workspace; the cache never writes \
                     through links"
                ));
            }
            Ok(_) if last => {
                return Err("already in the checkout; the cache does not write over it".to_owned());
            }
            Ok(meta) if !meta.is_dir() => return Err(format!("{so_far} is not a directory")),
            Ok(_) => {}
        }
    }
    Ok(current)
}

/// Saves the workspace's `source` as `dest` (which must not exist), as [`copy_tree`] would,
/// but takes every regular file that has not changed since the entry being replaced saved it
/// (`previous`: same size, modification time, mode and owner) as a hard link to that copy: a
/// warm Rust build rewrites a small part of `target/` and none of a cached `CARGO_HOME`, and
/// copying thousands of unchanged files again was most of a warm job's save. The same test
/// of change cargo itself and rsync rely on; entries are never written after their save, so
/// sharing their files is safe.
///
/// Nothing is followed: the walk reads entries without following links and copies links,
/// changed files and anything else with `cp -a`; directories are made here and given the
/// source's mode, owner and times once their contents are in. Files that are one in the
/// workspace (hard links) stay one. Returns how many names were taken from the last save.
fn save_tree(
    source: &Path,
    previous: &Path,
    dest: &Path,
    stop: &CancellationToken,
) -> Result<u64, String> {
    let is_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    if !is_dir(source) || !is_dir(previous) {
        return copy_tree(source, dest, stop).map(|()| 0);
    }
    let failed = |what: &str, path: &Path, e: io::Error| format!("{what} {}: {e}", path.display());
    let mut linked = 0;
    // Relative paths of the directories to walk, each with whether the previous entry has a
    // real directory there too (every component checked without following it: a link saved
    // in the entry must not lead the link-or-copy choice out of the entry), and of those made,
    // in the order made.
    let mut pending = vec![(PathBuf::new(), true)];
    let mut made: Vec<(PathBuf, std::fs::Metadata)> = Vec::new();
    // Changed files, links and the rest, by the directory they go to.
    let mut to_copy: Vec<(PathBuf, Vec<PathBuf>)> = Vec::new();
    // Files that are one in the workspace (cargo hard-links what it uplifts) must stay one:
    // the first name found is saved, the others become links to it at the end.
    let mut first_names: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut other_names: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut linked_names: HashSet<PathBuf> = HashSet::new();
    while let Some((dir, in_previous)) = pending.pop() {
        if stop.is_cancelled() {
            return Err("stopped".into());
        }
        let in_previous =
            in_previous && std::fs::symlink_metadata(previous.join(&dir)).is_ok_and(|m| m.is_dir());
        let from = source.join(&dir);
        let meta = std::fs::symlink_metadata(&from).map_err(|e| failed("reading", &from, e))?;
        let out = dest.join(&dir);
        {
            use std::os::unix::fs::DirBuilderExt;
            // Writable by us until its contents are in; its own mode comes last.
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&out)
                .map_err(|e| failed("creating", &out, e))?;
        }
        made.push((dir.clone(), meta));
        let mut copies = Vec::new();
        for entry in std::fs::read_dir(&from).map_err(|e| failed("listing", &from, e))? {
            let entry = entry.map_err(|e| failed("listing", &from, e))?;
            let rel = dir.join(entry.file_name());
            let meta = entry
                .metadata()
                .map_err(|e| failed("reading", &entry.path(), e))?;
            if meta.is_dir() {
                pending.push((rel, in_previous));
                continue;
            }
            if meta.is_file() && meta.nlink() > 1 {
                match first_names.entry((meta.dev(), meta.ino())) {
                    std::collections::hash_map::Entry::Occupied(first) => {
                        other_names.push((rel, first.get().clone()));
                        continue;
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(rel.clone());
                    }
                }
            }
            let old = previous.join(&rel);
            let unchanged = in_previous
                && meta.is_file()
                && std::fs::symlink_metadata(&old).is_ok_and(|o| same_file(&meta, &o));
            if unchanged && std::fs::hard_link(&old, dest.join(&rel)).is_ok() {
                linked += 1;
                if meta.nlink() > 1 {
                    linked_names.insert(rel);
                }
            } else {
                copies.push(entry.path());
            }
        }
        if !copies.is_empty() {
            to_copy.push((out, copies));
        }
    }
    for (into, files) in &to_copy {
        // A few hundred per `cp`, well under the argument limit.
        for chunk in files.chunks(256) {
            copy_into(chunk, into, stop)?;
        }
    }
    for (name, first) in &other_names {
        let (link, target) = (dest.join(name), dest.join(first));
        std::fs::hard_link(&target, &link).map_err(|e| failed("linking", &link, e))?;
        if linked_names.contains(first) {
            linked += 1;
        }
    }
    // Deepest first, so a directory's times are set after everything inside it changed.
    for (dir, meta) in made.iter().rev() {
        let out = dest.join(dir);
        set_attributes(&out, meta).map_err(|e| failed("setting the attributes of", &out, e))?;
    }
    Ok(linked)
}

/// Whether `now` (in the workspace) is the file `saved` (in the previous entry) saw: same
/// size, modification time to the nanosecond, permissions and owner.
fn same_file(now: &std::fs::Metadata, saved: &std::fs::Metadata) -> bool {
    saved.is_file()
        && now.len() == saved.len()
        && now.mtime() == saved.mtime()
        && now.mtime_nsec() == saved.mtime_nsec()
        && now.mode() == saved.mode()
        && now.uid() == saved.uid()
        && now.gid() == saved.gid()
}

/// A directory's mode, owner (where we may: root keeps the steps' uid, as `cp -a` does) and
/// access and modification times, from `meta`.
fn set_attributes(dir: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    match std::os::unix::fs::lchown(dir, Some(meta.uid()), Some(meta.gid())) {
        Err(e) if e.kind() != io::ErrorKind::PermissionDenied => return Err(e),
        _ => {}
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    utimensat(
        None,
        dir,
        &TimeSpec::new(meta.atime(), meta.atime_nsec()),
        &TimeSpec::new(meta.mtime(), meta.mtime_nsec()),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// `cp -a` of `files` into the directory `into`, as [`copy_tree`] runs it.
fn copy_into(files: &[PathBuf], into: &Path, stop: &CancellationToken) -> Result<(), String> {
    let mut args = vec![
        OsStr::new("--target-directory"),
        into.as_os_str(),
        "--".as_ref(),
    ];
    args.extend(files.iter().map(|f| f.as_os_str()));
    cp(&args, stop)
}

/// `cp -a` (links copied as links, modes, times and, for root, owners kept; copy-on-write
/// where the filesystem can) of `source` to `dest`, which must not exist.
fn copy_tree(source: &Path, dest: &Path, stop: &CancellationToken) -> Result<(), String> {
    let args = [
        OsStr::new("--no-target-directory"),
        "--".as_ref(),
        source.as_os_str(),
        dest.as_os_str(),
    ];
    cp(&args, stop)
}

/// `cp -a --reflink=auto` with `args`: arguments, never a shell, and a clean environment, so
/// the agent's own variables reach no child that outlives it. `Err` is cp's first complaint.
fn cp(args: &[&OsStr], stop: &CancellationToken) -> Result<(), String> {
    let mut command = Command::new("cp");
    command
        .args(["-a", "--reflink=auto"])
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let (status, stderr) = run_until_stopped(command, stop)?;
    if status.success() {
        return Ok(());
    }
    let first = stderr.lines().next().unwrap_or("").trim();
    Err(format!("cp failed ({status}): {first}"))
}

/// Runs `command` to its end, or kills it when `stop` fires (a copy of gigabytes must not keep
/// a cancelled job, or an agent shutting down, waiting). Its stderr comes back, read by a
/// thread so that a chatty child never blocks on a full pipe.
fn run_until_stopped(
    mut command: Command,
    stop: &CancellationToken,
) -> Result<(std::process::ExitStatus, String), String> {
    const POLL: Duration = Duration::from_millis(20);
    if stop.is_cancelled() {
        return Err("stopped".into());
    }
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let stderr = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = io::Read::read_to_string(&mut pipe, &mut text);
            text
        })
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if stop.is_cancelled() => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("stopped".into());
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => return Err(format!("waiting for {program}: {e}")),
        }
    };
    let stderr = stderr
        .and_then(|reader| reader.join().ok())
        .unwrap_or_default();
    Ok((status, stderr))
}

/// Walks a saved tree without following links: removes what should not travel to a later job,
/// clears set-uid and set-gid bits, and measures the rest (hard links once). Returns the size,
/// the number of files and links kept, and a few of the removed paths.
///
/// A file not owned by `owner` (the workspace's owner: the uid the steps ran as) is removed:
/// copied by a root agent, a hard link a step made to a file it cannot read (another user's)
/// would come back to the next job as that job's own, readable file. Device files, FIFOs and
/// sockets are no build output.
fn sanitize(data: &Path, owner: u32) -> io::Result<(u64, u64, Vec<String>)> {
    const SHOWN: usize = 5;
    let mut size = 0;
    let mut files = 0;
    let mut seen = HashSet::new();
    let mut dropped = Vec::new();
    let mut pending = vec![data.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
            continue;
        }
        let foreign = kind.is_file() && meta.uid() != owner;
        if foreign || !(kind.is_file() || kind.is_symlink()) {
            std::fs::remove_file(&path)?;
            if dropped.len() < SHOWN {
                let shown = path.strip_prefix(data).unwrap_or(&path).display();
                dropped.push(if foreign {
                    format!(
                        "{shown} (owned by uid {}, not the workspace's owner)",
                        meta.uid()
                    )
                } else {
                    format!("{shown} (not a file, directory or link)")
                });
            }
            continue;
        }
        if kind.is_file() && meta.mode() & 0o6000 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(meta.mode() & 0o1777))?;
        }
        files += 1;
        if seen.insert((meta.dev(), meta.ino())) {
            size += meta.len();
        }
    }
    Ok((size, files, dropped))
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use std::os::unix::fs::symlink;

    use super::*;

    /// `target` of acme/app saved under the key `main`, never stopped.
    fn save_main(cache: &JobCache, workspace: &Path) -> Saved {
        cache
            .save(
                "acme/app",
                "main",
                &paths(&["target"]),
                workspace,
                &CancellationToken::new(),
            )
            .unwrap()
    }

    /// What [`save_main`] saved, restored into `workspace`.
    fn restore_main(cache: &JobCache, workspace: &Path) -> Restored {
        cache
            .restore(
                "acme/app",
                "main",
                &paths(&["target"]),
                workspace,
                &CancellationToken::new(),
            )
            .unwrap()
    }

    fn paths(list: &[&str]) -> Vec<String> {
        list.iter().map(|p| (*p).to_owned()).collect()
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A cache under `dir/cache/jobs` and an empty workspace `dir/<name>`.
    fn setup(dir: &Path, max_bytes: u64) -> JobCache {
        JobCache::new(dir.join("cache/jobs"), max_bytes)
    }

    fn workspace(dir: &Path, name: &str) -> PathBuf {
        let ws = dir.join(name);
        std::fs::create_dir_all(&ws).unwrap();
        ws
    }

    /// Modification time `secs` after the epoch, not following a link.
    fn set_mtime(path: &Path, secs: i64) {
        use nix::sys::stat::{UtimensatFlags, utimensat};
        use nix::sys::time::TimeSpec;
        let t = TimeSpec::new(secs, 123_456_789);
        utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink).unwrap();
    }

    /// Everything about a tree that a restore must give back: per path, its kind, content or
    /// link target, mode and modification time.
    fn snapshot(root: &Path) -> Vec<(String, String, u32, i64, i64)> {
        let mut out = Vec::new();
        let mut pending = vec![root.to_path_buf()];
        while let Some(path) = pending.pop() {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.is_dir() {
                for entry in std::fs::read_dir(&path).unwrap() {
                    pending.push(entry.unwrap().path());
                }
                "dir".to_owned()
            } else if meta.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&path).unwrap().display())
            } else {
                std::fs::read_to_string(&path).unwrap()
            };
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            out.push((rel, what, meta.mode(), meta.mtime(), meta.mtime_nsec()));
        }
        out.sort();
        out
    }

    /// A save takes the files unchanged since the last one as hard links to that save's copies
    /// and copies only what changed (content with the same size but a new time, mode, links,
    /// files become directories, new and removed files); what comes back is the workspace as
    /// it was, either way.
    #[test]
    fn a_save_links_what_did_not_change_and_copies_what_did() {
        let dir = tempfile::tempdir().unwrap();
        let cache = setup(dir.path(), 1 << 30);
        let one = workspace(dir.path(), "one");
        for (path, text) in [
            ("target/same", "same"),
            ("target/sub/deep", "deep"),
            ("target/edited", "aaaa"),
            ("target/mode", "m"),
            ("target/gone", "g"),
            ("target/becomes-dir", "f"),
        ] {
            write(&one.join(path), text);
            set_mtime(&one.join(path), 1_700_000_000);
        }
        symlink("same", one.join("target/link")).unwrap();
        let first = save_main(&cache, &one);
        assert_eq!((first.reused, first.files), (0, 7));
        let data = cache.repo_dir("acme/app").join(hash("main")).join(DATA);
        let inode = |p: &Path| std::fs::symlink_metadata(p).unwrap().ino();
        let (same, deep) = (
            inode(&data.join("target/same")),
            inode(&data.join("target/sub/deep")),
        );

        // The next job: restored, then built.
        let two = workspace(dir.path(), "two");
        restore_main(&cache, &two);
        let t = two.join("target");
        std::fs::write(t.join("edited"), "bbbb").unwrap();
        set_mtime(&t.join("edited"), 1_700_000_010);
        std::fs::set_permissions(t.join("mode"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::remove_file(t.join("gone")).unwrap();
        write(&t.join("new"), "new");
        std::fs::remove_file(t.join("link")).unwrap();
        symlink("sub/deep", t.join("link")).unwrap();
        std::fs::remove_file(t.join("becomes-dir")).unwrap();
        write(&t.join("becomes-dir/inside"), "in");
        std::fs::set_permissions(t.join("sub"), std::fs::Permissions::from_mode(0o750)).unwrap();
        set_mtime(&t.join("sub"), 1_600_000_000);
        let second = save_main(&cache, &two);
        assert!(second.kept);
        assert_eq!((second.reused, second.files), (2, 7), "{second:?}");
        assert_eq!(inode(&data.join("target/same")), same);
        assert_eq!(inode(&data.join("target/sub/deep")), deep);
        assert_eq!(
            std::fs::read_to_string(data.join("target/edited")).unwrap(),
            "bbbb"
        );

        let three = workspace(dir.path(), "three");
        restore_main(&cache, &three);
        assert_eq!(snapshot(&three.join("target")), snapshot(&t));
        // Without an entry to take from, a save copies everything.
        let other = JobCache::new(dir.path().join("other-cache"), 1 << 30);
        assert_eq!(save_main(&other, &two).reused, 0);
    }

    /// Files that are one in the workspace (cargo hard-links the outputs it uplifts) stay one
    /// in the entry, whether the save copies them or takes them from the last one.
    #[test]
    fn hard_linked_files_stay_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = setup(dir.path(), 1 << 30);
        let one = workspace(dir.path(), "one");
        write(&one.join("target/debug/deps/app-1234"), "binary");
        write(&one.join("target/debug/deps/old-1234"), "old");
        std::fs::hard_link(
            one.join("target/debug/deps/app-1234"),
            one.join("target/debug/app"),
        )
        .unwrap();
        std::fs::hard_link(
            one.join("target/debug/deps/old-1234"),
            one.join("target/debug/old"),
        )
        .unwrap();
        save_main(&cache, &one);
        let two = workspace(dir.path(), "two");
        restore_main(&cache, &two);
        // One pair rebuilt (new inode, both names), one left alone.
        std::fs::remove_file(two.join("target/debug/app")).unwrap();
        std::fs::remove_file(two.join("target/debug/deps/app-1234")).unwrap();
        write(&two.join("target/debug/deps/app-1234"), "binary, rebuilt");
        std::fs::hard_link(
            two.join("target/debug/deps/app-1234"),
            two.join("target/debug/app"),
        )
        .unwrap();
        let saved = save_main(&cache, &two);
        assert_eq!(saved.reused, 2, "{saved:?}");
        let data = cache.repo_dir("acme/app").join(hash("main")).join(DATA);
        let inode = |p: &str| std::fs::symlink_metadata(data.join(p)).unwrap().ino();
        assert_eq!(
            inode("target/debug/app"),
            inode("target/debug/deps/app-1234")
        );
        assert_eq!(
            inode("target/debug/old"),
            inode("target/debug/deps/old-1234")
        );
        let three = workspace(dir.path(), "three");
        restore_main(&cache, &three);
        let restored = |p: &str| std::fs::symlink_metadata(three.join(p)).unwrap().ino();
        assert_eq!(
            restored("target/debug/app"),
            restored("target/debug/deps/app-1234")
        );
    }

    /// A link saved in the last entry never leads the save outside the entry: a workspace
    /// file that looks like one the link points to (same size, time, mode and owner) is copied,
    /// not linked to the file outside.
    #[test]
    fn a_link_in_the_last_save_does_not_lead_out_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let cache = setup(dir.path(), 1 << 30);
        let outside = dir.path().join("outside");
        write(&outside.join("secret"), "the agent's");
        set_mtime(&outside.join("secret"), 1_700_000_000);
        let one = workspace(dir.path(), "one");
        std::fs::create_dir_all(one.join("target")).unwrap();
        symlink(&outside, one.join("target/link")).unwrap();
        save_main(&cache, &one);
        let two = workspace(dir.path(), "two");
        write(&two.join("target/link/secret"), "the job's!!");
        set_mtime(&two.join("target/link/secret"), 1_700_000_000);
        let saved = save_main(&cache, &two);
        assert_eq!(saved.reused, 0, "{saved:?}");
        let data = cache.repo_dir("acme/app").join(hash("main")).join(DATA);
        let secret = data.join("target/link/secret");
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "the job's!!");
        let inode = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_ne!(inode(&secret), inode(&outside.join("secret")));
    }

    #[test]
    fn saved_paths_come_back_with_links_times_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = setup(dir.path(), 1 << 30);
        let one = workspace(dir.path(), "one");
        write(&one.join("target/debug/app"), "binary");
        std::fs::set_permissions(
            one.join("target/debug/app"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        symlink("debug/app", one.join("target/latest")).unwrap();
        write(&one.join("deep/npm/x"), "x");
        let old = std::fs::metadata(one.join("target/debug/app"))
            .unwrap()
            .modified()
            .unwrap();
        let saved = cache
            .save(
                "acme/app",
                "main",
                &paths(&["target", "deep/npm", "missing"]),
                &one,
                &CancellationToken::new(),
            )
            .unwrap();
        assert!(saved.kept);
        assert_eq!(saved.paths, ["target", "deep/npm"]);
        assert_eq!(saved.skipped[0].path, "missing");
        assert_eq!(
            saved.size,
            "binary".len() as u64 + "debug/app".len() as u64 + 1
        );

        let two = workspace(dir.path(), "two");
        let restored = cache
            .restore(
                "ACME/app",
                "main",
                &paths(&["target", "deep/npm", "missing"]),
                &two,
                &CancellationToken::new(),
            )
            .unwrap();
        let Restored::Hit {
            paths: got,
            skipped,
            size,
            ..
        } = restored
        else {
            panic!("{restored:?}");
        };
        assert_eq!(got, ["target", "deep/npm"]);
        assert_eq!(skipped[0].path, "missing");
        assert_eq!(size, saved.size);
        let app = two.join("target/debug/app");
        assert_eq!(std::fs::read_to_string(&app).unwrap(), "binary");
        assert_eq!(std::fs::metadata(&app).unwrap().modified().unwrap(), old);
        assert_eq!(
            std::fs::metadata(&app).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(
            std::fs::read_link(two.join("target/latest")).unwrap(),
            Path::new("debug/app")
        );
        assert_eq!(
            std::fs::read_to_string(two.join("deep/npm/x")).unwrap(),
            "x"
        );
        // Another key, another repository: misses.
        assert_eq!(
            cache
                .restore(
                    "acme/app",
                    "dev",
                    &paths(&["target"]),
                    &two,
                    &CancellationToken::new()
                )
                .unwrap(),
            Restored::Miss
        );
        assert_eq!(
            cache
                .restore(
                    "acme/other",
                    "main",
                    &paths(&["target"]),
                    &two,
                    &CancellationToken::new()
                )
                .unwrap(),
            Restored::Miss
        );
        // The cache is private to the agent's user.
        let mode = std::fs::metadata(dir.path().join("cache/jobs"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn a_restore_never_writes_over_the_checkout() {
        let dir = tempfile::tempdir().unwrap();
        let cache = setup(dir.path(), 1 << 30);
        let one = workspace(dir.path(), "one");
        write(&one.join("target/new"), "cached");
        save_main(&cache, &one);
        let two = workspace(dir.path(), "two");
        write(&two.join("target/committed"), "mine");
        let Restored::Hit {
            paths: got,
            skipped,
            ..
        } = restore_main(&cache, &two)
        else {
            panic!("miss");
        };
        assert!(got.is_empty());
        assert!(
            skipped[0].why.contains("already in the checkout"),
            "{skipped:?}"
        );
        assert!(!two.join("target/new").exists());
    }

    /// A cancelled job, or an agent shutting down, does not wait for a copy: what is under way
    /// is killed, a restore leaves nothing half-copied, and a save leaves the entry as it was.
    #[test]
    fn a_stop_ends_copies_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = setup(dir.path(), 1 << 30);
        let one = workspace(dir.path(), "one");
        write(&one.join("target/a"), "first");
        let never = CancellationToken::new();
        cache
            .save("acme/app", "main", &paths(&["target"]), &one, &never)
            .unwrap();
        let stopped = CancellationToken::new();
        stopped.cancel();

        let two = workspace(dir.path(), "two");
        write(&two.join("target/a"), "second");
        let saved = cache
            .save("acme/app", "main", &paths(&["target"]), &two, &stopped)
            .unwrap();
        assert!(!saved.kept, "{saved:?}");
        assert_eq!(saved.skipped[0].why, "stopped");

        let three = workspace(dir.path(), "three");
        let Restored::Hit {
            paths: got,
            skipped,
            ..
        } = cache
            .restore("acme/app", "main", &paths(&["target"]), &three, &stopped)
            .unwrap()
        else {
            panic!("miss");
        };
        assert!(got.is_empty());
        assert_eq!(skipped[0].why, "stopped");
        assert!(!three.join("target").exists());
        // The first save stands.
        cache
            .restore("acme/app", "main", &paths(&["target"]), &three, &never)
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(three.join("target/a")).unwrap(),
            "first"
        );
        // No temporary save left behind.
        let repo_dir = cache.repo_dir("acme/app");
        let leftovers: Vec<_> = std::fs::read_dir(&repo_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    /// A copy under way is killed, not waited for.
    #[test]
    fn a_stop_kills_the_running_command() {
        let stop = CancellationToken::new();
        let stopper = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                stop.cancel();
            })
        };
        // A duration no other process here sleeps, to find this one by.
        let marker = format!("30.{}", std::process::id());
        let mut command = Command::new("sleep");
        command.arg(&marker).stderr(Stdio::piped());
        assert_eq!(run_until_stopped(command, &stop).unwrap_err(), "stopped");
        stopper.join().unwrap();
        let sleeping = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .any(|cmdline| cmdline == format!("sleep\0{marker}\0").as_bytes());
        assert!(!sleeping, "the command outlived the stop");
        let mut command = Command::new("sh");
        command
            .args(["-c", "echo complaint >&2; exit 3"])
            .stderr(Stdio::piped());
        let (status, stderr) = run_until_stopped(command, &CancellationToken::new()).unwrap();
        assert_eq!((status.code(), stderr.as_str()), (Some(3), "complaint\n"));
    }

    #[test]
    fn a_new_save_replaces_the_entry_whole() {
        let dir = tempfile::tempdir().unwrap();
        let cache = setup(dir.path(), 1 << 30);
        let one = workspace(dir.path(), "one");
        write(&one.join("target/a"), "first");
        write(&one.join("target/only-in-first"), "x");
        save_main(&cache, &one);
        let two = workspace(dir.path(), "two");
        write(&two.join("target/a"), "second");
        save_main(&cache, &two);

        let three = workspace(dir.path(), "three");
        restore_main(&cache, &three);
        assert_eq!(
            std::fs::read_to_string(three.join("target/a")).unwrap(),
            "second"
        );
        assert!(!three.join("target/only-in-first").exists());
        // One entry, and nothing half-built or old left beside it.
        let repo_dir = cache.repo_dir("acme/app");
        let mut names: Vec<String> = std::fs::read_dir(&repo_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [hash("main"), format!("{}.lock", hash("main"))]);
    }

    #[test]
    fn a_save_waits_for_a_restore_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let cache = setup(dir.path(), 1 << 30);
        let one = workspace(dir.path(), "one");
        write(&one.join("target/a"), "first");
        save_main(&cache, &one);
        // A restore holds the shared lock while it copies.
        let reading = lock(
            &cache.repo_dir("acme/app"),
            &hash("main"),
            FlockArg::LockShared,
        )
        .unwrap();
        let writer = {
            let cache = cache.clone();
            let one = one.clone();
            std::thread::spawn(move || {
                write(&one.join("target/a"), "second");
                save_main(&cache, &one)
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        let entry = cache.repo_dir("acme/app").join(hash("main"));
        assert_eq!(
            std::fs::read_to_string(entry.join("data/target/a")).unwrap(),
            "first",
            "the entry was replaced under a reader"
        );
        drop(reading);
        assert!(writer.join().unwrap().kept);
        assert_eq!(
            std::fs::read_to_string(entry.join("data/target/a")).unwrap(),
            "second"
        );
    }

    #[test]
    fn the_least_recently_used_entries_go_first() {
        let dir = tempfile::tempdir().unwrap();
        // Room for two entries of 100 bytes, not three.
        let cache = setup(dir.path(), 250);
        let ws = workspace(dir.path(), "ws");
        write(&ws.join("target/f"), &"x".repeat(100));
        for key in ["a", "b"] {
            let saved = cache
                .save(
                    "acme/app",
                    key,
                    &paths(&["target"]),
                    &ws,
                    &CancellationToken::new(),
                )
                .unwrap();
            assert!(saved.evicted.is_empty());
            std::thread::sleep(Duration::from_millis(20));
        }
        // Using `a` makes `b` the one unused the longest.
        let other = workspace(dir.path(), "other");
        assert!(matches!(
            cache
                .restore(
                    "acme/app",
                    "a",
                    &paths(&["target"]),
                    &other,
                    &CancellationToken::new()
                )
                .unwrap(),
            Restored::Hit { .. }
        ));
        std::thread::sleep(Duration::from_millis(20));
        let saved = cache
            .save(
                "acme/web",
                "c",
                &paths(&["target"]),
                &ws,
                &CancellationToken::new(),
            )
            .unwrap();
        assert!(saved.kept);
        let evicted: Vec<&str> = saved.evicted.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(evicted, ["b"]);
        let gone = workspace(dir.path(), "gone");
        assert_eq!(
            cache
                .restore(
                    "acme/app",
                    "b",
                    &paths(&["target"]),
                    &gone,
                    &CancellationToken::new()
                )
                .unwrap(),
            Restored::Miss
        );
        for (repo, key) in [("acme/app", "a"), ("acme/web", "c")] {
            let fresh = workspace(dir.path(), &format!("fresh-{key}"));
            assert!(matches!(
                cache
                    .restore(
                        repo,
                        key,
                        &paths(&["target"]),
                        &fresh,
                        &CancellationToken::new()
                    )
                    .unwrap(),
                Restored::Hit { .. }
            ));
        }
    }

    #[test]
    fn an_entry_larger_than_the_cap_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = setup(dir.path(), 50);
        let ws = workspace(dir.path(), "ws");
        write(&ws.join("target/f"), &"x".repeat(100));
        let saved = save_main(&cache, &ws);
        assert!(!saved.kept);
        assert_eq!(saved.size, 100);
        let repo_dir = cache.repo_dir("acme/app");
        assert!(!repo_dir.join(hash("main")).exists());
        // No temporary directory left behind.
        let left: Vec<_> = std::fs::read_dir(&repo_dir).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        // Off: nothing saved, nothing restored.
        let off = setup(dir.path(), 0);
        let saved = save_main(&off, &ws);
        assert!(!saved.kept && saved.paths.is_empty());
    }

    /// A repository can commit `target -> <anywhere>`: saving must not read through it, nor
    /// restoring write through it.
    #[test]
    fn a_symlinked_component_is_refused_on_save_and_on_restore() {
        let dir = tempfile::tempdir().unwrap();
        let cache = setup(dir.path(), 1 << 30);
        let outside = workspace(dir.path(), "outside");
        write(&outside.join("secret"), "private");
        write(&outside.join("deps/secret"), "private");

        let ws = workspace(dir.path(), "ws");
        symlink(&outside, ws.join("target")).unwrap();
        std::fs::create_dir(ws.join("vendor")).unwrap();
        symlink(&outside, ws.join("vendor/link")).unwrap();
        let saved = cache
            .save(
                "acme/app",
                "main",
                &paths(&["target", "vendor/link/deps"]),
                &ws,
                &CancellationToken::new(),
            )
            .unwrap();
        assert!(saved.paths.is_empty(), "{saved:?}");
        assert!(!saved.kept);
        assert_eq!(saved.skipped.len(), 2);
        assert!(
            saved
                .skipped
                .iter()
                .all(|s| s.why.contains("symbolic link")),
            "{saved:?}"
        );
        assert!(!cache.repo_dir("acme/app").join(hash("main")).exists());

        // A good save of the same paths, then a workspace that links them out.
        let good = workspace(dir.path(), "good");
        write(&good.join("target/planted"), "from the cache");
        write(&good.join("vendor/link/deps/planted"), "from the cache");
        let saved = cache
            .save(
                "acme/app",
                "main",
                &paths(&["target", "vendor/link/deps"]),
                &good,
                &CancellationToken::new(),
            )
            .unwrap();
        assert!(saved.kept);
        let restored = cache
            .restore(
                "acme/app",
                "main",
                &paths(&["target", "vendor/link/deps"]),
                &ws,
                &CancellationToken::new(),
            )
            .unwrap();
        let Restored::Hit {
            paths: got,
            skipped,
            ..
        } = restored
        else {
            panic!("{restored:?}");
        };
        assert!(got.is_empty());
        assert!(
            skipped.iter().all(|s| s.why.contains("symbolic link")),
            "{skipped:?}"
        );
        let mut outside_now: Vec<String> = walk(&outside);
        outside_now.sort();
        assert_eq!(outside_now, ["deps", "deps/secret", "secret"]);
    }

    fn walk(dir: &Path) -> Vec<String> {
        let mut found = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(path) = pending.pop() {
            for entry in std::fs::read_dir(&path).unwrap() {
                let entry = entry.unwrap();
                let p = entry.path();
                found.push(p.strip_prefix(dir).unwrap().display().to_string());
                if entry.file_type().unwrap().is_dir() {
                    pending.push(p);
                }
            }
        }
        found
    }

    /// Links inside a saved tree are copied as links, never followed: what they point at is
    /// not read into the cache.
    #[test]
    fn links_inside_a_saved_tree_stay_links() {
        let dir = tempfile::tempdir().unwrap();
        let cache = setup(dir.path(), 1 << 30);
        let outside = workspace(dir.path(), "outside");
        write(&outside.join("secret"), "private");
        let ws = workspace(dir.path(), "ws");
        write(&ws.join("target/ok"), "ok");
        symlink(&outside, ws.join("target/out")).unwrap();
        let saved = save_main(&cache, &ws);
        assert!(saved.kept);
        let entry = cache.repo_dir("acme/app").join(hash("main")).join(DATA);
        let link = std::fs::symlink_metadata(entry.join("target/out")).unwrap();
        assert!(link.file_type().is_symlink());
        assert!(!entry.join("target/out").is_dir() || link.file_type().is_symlink());
        assert_eq!(walk(&entry.join("target")).len(), 2);
    }

    #[test]
    fn set_id_bits_and_special_files_do_not_travel() {
        let dir = tempfile::tempdir().unwrap();
        let cache = setup(dir.path(), 1 << 30);
        let ws = workspace(dir.path(), "ws");
        write(&ws.join("target/tool"), "#!/bin/sh\n");
        std::fs::set_permissions(
            ws.join("target/tool"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        nix::unistd::mkfifo(&ws.join("target/fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let saved = save_main(&cache, &ws);
        assert!(saved.kept);
        assert_eq!(saved.dropped.len(), 1, "{saved:?}");
        assert!(saved.dropped[0].starts_with("target/fifo"), "{saved:?}");
        let entry = cache.repo_dir("acme/app").join(hash("main")).join(DATA);
        let mode = std::fs::metadata(entry.join("target/tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
        assert!(!entry.join("target/fifo").exists());
    }

    #[test]
    fn files_of_other_owners_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let data = workspace(dir.path(), "data");
        write(&data.join("mine"), "1234");
        let me = std::fs::metadata(&data).unwrap().uid();
        let (size, files, dropped) = sanitize(&data, me).unwrap();
        assert_eq!((size, files, dropped.len()), (4, 1, 0));
        // Seen from another owner, the file is foreign.
        let (size, files, dropped) = sanitize(&data, me + 1).unwrap();
        assert_eq!((size, files), (0, 0));
        assert!(
            dropped[0].contains("not the workspace's owner"),
            "{dropped:?}"
        );
        assert!(!data.join("mine").exists());
    }
}
