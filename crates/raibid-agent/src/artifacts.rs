//! The pipeline's `artifacts:` packed into one `.tar.gz` after the steps, for the runner to
//! push to the forge's registry (`raibid_oci::push_artifact`), and unpacked again by
//! `raibid job artifacts`.
//!
//! Packing reads the workspace as the agent, which may be root, after steps that ran anyone's
//! code: so it never follows a symbolic link (a path with a linked component is skipped; a link
//! inside a directory is archived as a link), opens files without following links and without
//! blocking (a FIFO would hang a plain open), archives only regular files, directories and
//! links, leaves out files owned by anyone but the workspace's owner (a hard link a step made
//! to a file it cannot read), and clears set-uid and set-gid bits. The same rules as the
//! job cache's, for the same reasons.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use raibid_pipeline::ArtifactsExpiry;
use tokio_util::sync::CancellationToken;

use crate::job_cache::save_source;

/// Where the agent keeps artifacts: the forge's registry (where image builds push), with the
/// agent's login there.
#[derive(Clone)]
pub struct ArtifactStore {
    /// `host[:port]`, as in image names.
    pub registry: String,
    /// `(user, password)`; `None`: anonymous.
    pub login: Option<(String, String)>,
    /// Plain HTTP (loopback registries always are).
    pub insecure: bool,
    /// See [`DEFAULT_ARTIFACTS_MAX_BYTES`].
    pub max_bytes: u64,
    /// How long kept artifacts stay in the registry (`agent.artifacts_expire_days`); `None`:
    /// for ever.
    pub expire_after: Option<std::time::Duration>,
    /// The longest any artifacts stay (`agent.artifacts_max_expire_days`), whatever the
    /// pipeline's `expire_in` or `expire_after` say; `None`: no limit.
    pub max_expire: Option<std::time::Duration>,
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactStore")
            .field("registry", &self.registry)
            .field("user", &self.login.as_ref().map(|(user, _)| user))
            .field("insecure", &self.insecure)
            .field("max_bytes", &self.max_bytes)
            .field("expire_after", &self.expire_after)
            .field("max_expire", &self.max_expire)
            .finish()
    }
}

impl ArtifactStore {
    /// `<registry>/<owner>/<name>/artifacts:<job id>`: below the repository's images, where
    /// the agent's login may push (docs/pipelines.md, image builds), one tag per job.
    pub fn tag(&self, repo: &str, job_id: &str) -> String {
        format!(
            "{}/{}/artifacts:{job_id}",
            self.registry,
            repo.to_ascii_lowercase()
        )
    }

    /// How long a job's artifacts stay when its pipeline asks for `asked` (`expire_in`), and
    /// what decided it, for the log; `None`: for ever.
    pub fn lifetime(
        &self,
        asked: Option<ArtifactsExpiry>,
    ) -> (Option<std::time::Duration>, &'static str) {
        let (lifetime, source) = match asked {
            None => (self.expire_after, "agent.artifacts_expire_days"),
            Some(ArtifactsExpiry::After(after)) => (Some(after), "expire_in"),
            Some(ArtifactsExpiry::Never) => (None, "expire_in: never"),
        };
        match (lifetime, self.max_expire) {
            (Some(lifetime), Some(max)) if lifetime <= max => (Some(lifetime), source),
            (_, Some(max)) => (Some(max), "agent.artifacts_max_expire_days"),
            (lifetime, None) => (lifetime, source),
        }
    }

    pub fn fetch_options(&self) -> raibid_oci::FetchOptions {
        raibid_oci::FetchOptions {
            insecure: self.insecure,
            // Per request (connect, and each read of an answer), not for the whole upload.
            timeout: std::time::Duration::from_secs(60),
            credentials: self.login.clone(),
        }
    }
}

/// Default of `agent.artifacts_max_bytes`: the files of one job's artifacts together, before
/// compression.
pub const DEFAULT_ARTIFACTS_MAX_BYTES: u64 = 1 << 30;

/// How many left-out files the log names; the rest are counted.
const SHOWN: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactsError {
    #[error(
        "the artifacts are larger than agent.artifacts_max_bytes ({max} bytes) allows; keep \
         fewer files, or raise the limit"
    )]
    TooLarge { max: u64 },
    #[error("stopped")]
    Stopped,
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("unsafe entry {0:?} in the archive: it would land outside the directory")]
    Unsafe(String),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ArtifactsError + 'a {
    move |source| ArtifactsError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What [`pack`] put in the archive.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Packed {
    /// The paths archived, as the pipeline wrote them.
    pub paths: Vec<String>,
    /// Paths not archived and why (missing, behind a link).
    pub skipped: Vec<(String, String)>,
    /// Files left out of archived directories, at most [`SHOWN`] named.
    pub left_out: Vec<String>,
    pub left_out_count: usize,
    /// Regular files archived and their bytes before compression.
    pub files: u64,
    pub bytes: u64,
}

/// Packs `paths` of `workspace` into the gzipped tar `dest`, each under its path. Blocking;
/// `stop` ends it between files.
pub fn pack(
    workspace: &Path,
    paths: &[String],
    dest: &Path,
    max_bytes: u64,
    stop: &CancellationToken,
) -> Result<Packed, ArtifactsError> {
    let owner = std::fs::symlink_metadata(workspace)
        .map_err(io_err("reading", workspace))?
        .uid();
    let file = File::create(dest).map_err(io_err("creating", dest))?;
    let mut archive = tar::Builder::new(GzEncoder::new(file, Compression::fast()));
    archive.follow_symlinks(false);
    let mut packed = Packed::default();
    for (name, source) in roots(workspace, paths, &mut packed, stop)? {
        let mut pending = vec![(source, name)];
        while let Some((on_disk, name)) = pending.pop() {
            if stop.is_cancelled() {
                return Err(ArtifactsError::Stopped);
            }
            let meta = std::fs::symlink_metadata(&on_disk).map_err(io_err("reading", &on_disk))?;
            let kind = meta.file_type();
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mode(meta.mode() & 0o1777);
            if kind.is_dir() {
                archive
                    .append_data(&mut header, &name, io::empty())
                    .map_err(io_err("archiving", &on_disk))?;
                let mut children = Vec::new();
                for entry in std::fs::read_dir(&on_disk).map_err(io_err("listing", &on_disk))? {
                    let entry = entry.map_err(io_err("listing", &on_disk))?;
                    children.push((entry.path(), name.join(entry.file_name())));
                }
                // Popped in name order: the same tree gives the same archive.
                children.sort_by(|a, b| b.1.cmp(&a.1));
                pending.extend(children);
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&on_disk).map_err(io_err("reading", &on_disk))?;
                archive
                    .append_link(&mut header, &name, &target)
                    .map_err(io_err("archiving", &on_disk))?;
            } else if kind.is_file() && meta.uid() == owner {
                let Some((file, opened)) =
                    open_as_seen(&on_disk, &meta).map_err(io_err("opening", &on_disk))?
                else {
                    leave_out(&mut packed, &name, CHANGED);
                    continue;
                };
                packed.bytes += opened.len();
                if packed.bytes > max_bytes {
                    return Err(ArtifactsError::TooLarge { max: max_bytes });
                }
                header.set_size(opened.len());
                archive
                    .append_data(&mut header, &name, file)
                    .map_err(io_err("archiving", &on_disk))?;
                packed.files += 1;
            } else if kind.is_file() {
                leave_out(&mut packed, &name, &not_the_owners(&meta));
            } else {
                leave_out(&mut packed, &name, "not a file, directory or link");
            }
        }
    }
    let mut gz = archive.into_inner().map_err(io_err("writing", dest))?;
    gz.flush().map_err(io_err("writing", dest))?;
    gz.finish()
        .and_then(|f| f.sync_all())
        .map_err(io_err("writing", dest))?;
    Ok(packed)
}

/// What `paths` name in the workspace, each once: `(name in the archive, path on disk)`, in
/// an order where a directory comes right before what is inside it, with anything inside a
/// path already taken dropped (two globs, or a glob and a plain path, may match the same
/// files). Plain paths must be reached without a link ([`save_source`]); a glob's matches are
/// found by walking its base directory without following links and never inside `.git`, and a
/// link a glob matches is kept as a link. Records in `packed` which paths gave something and
/// why the others did not.
pub(crate) fn roots(
    workspace: &Path,
    paths: &[String],
    packed: &mut Packed,
    stop: &CancellationToken,
) -> Result<Vec<(PathBuf, PathBuf)>, ArtifactsError> {
    let mut found: Vec<(PathBuf, PathBuf)> = Vec::new();
    for path in paths {
        let Some(glob) = raibid_pipeline::path_glob(path) else {
            match save_source(workspace, path) {
                Ok(source) => {
                    found.push((PathBuf::from(path), source));
                    packed.paths.push(path.clone());
                }
                Err(why) => packed.skipped.push((path.clone(), why)),
            }
            continue;
        };
        let base = raibid_pipeline::glob_base(path);
        let base_dir = if base.is_empty() {
            workspace.to_path_buf()
        } else {
            match save_source(workspace, base) {
                Ok(dir) if dir.is_dir() => dir,
                Ok(_) => {
                    packed
                        .skipped
                        .push((path.clone(), format!("{base} is not a directory")));
                    continue;
                }
                Err(why) => {
                    packed
                        .skipped
                        .push((path.clone(), format!("{base}: {why}")));
                    continue;
                }
            }
        };
        let before = found.len();
        let mut pending = vec![(base_dir, PathBuf::from(base))];
        while let Some((dir, rel)) = pending.pop() {
            if stop.is_cancelled() {
                return Err(ArtifactsError::Stopped);
            }
            for entry in std::fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
                let entry = entry.map_err(io_err("listing", &dir))?;
                let name = entry.file_name();
                if name.to_string_lossy().eq_ignore_ascii_case(".git") {
                    continue;
                }
                let (on_disk, rel) = (entry.path(), rel.join(&name));
                if glob.is_match(&rel.to_string_lossy()) {
                    found.push((rel, on_disk));
                } else if entry
                    .file_type()
                    .map_err(io_err("reading", &on_disk))?
                    .is_dir()
                {
                    pending.push((on_disk, rel));
                }
            }
        }
        if found.len() == before {
            packed
                .skipped
                .push((path.clone(), "matched nothing".to_owned()));
        } else {
            packed.paths.push(path.clone());
        }
    }
    // Component order puts `dist/a` right after `dist` (and before `dist-x`).
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let mut roots: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(found.len());
    for (name, source) in found {
        if roots.last().is_some_and(|(kept, _)| name.starts_with(kept)) {
            continue;
        }
        roots.push((name, source));
    }
    Ok(roots)
}

/// `O_NOFOLLOW | O_NONBLOCK`: the last component is not followed, and a FIFO a step left
/// does not block the open (it is then refused as not a regular file).
fn libc_flags() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_NONBLOCK.bits()
}

/// Why [`open_as_seen`] gave nothing.
pub(crate) const CHANGED: &str = "changed while it was read";

/// Opens `path`, which `seen` (its `symlink_metadata`) said is a regular file, without
/// following a link or blocking on a FIFO; `None` when it was swapped for something else
/// between the look and the open. Returns the file and what the open found.
pub(crate) fn open_as_seen(
    path: &Path,
    seen: &std::fs::Metadata,
) -> io::Result<Option<(File, std::fs::Metadata)>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags())
        .open(path)?;
    let opened = file.metadata()?;
    Ok((opened.is_file() && opened.ino() == seen.ino()).then_some((file, opened)))
}

/// Why a regular file of the workspace is left out: a step of a root agent's job may have
/// hard-linked a file it cannot read, which the agent must not publish.
pub(crate) fn not_the_owners(meta: &std::fs::Metadata) -> String {
    format!("owned by uid {}, not the workspace's owner", meta.uid())
}

fn leave_out(packed: &mut Packed, name: &Path, why: &str) {
    packed.left_out_count += 1;
    if packed.left_out.len() < SHOWN {
        packed.left_out.push(format!("{} ({why})", name.display()));
    }
}

/// Unpacks the archive `archive` into `dest` (created if missing). Every entry must stay
/// inside `dest`: an absolute name or one with `..` is refused before anything of it is
/// written, and the tar crate refuses to write through a link. Only files, directories and
/// symbolic links are taken (what [`pack`] writes): a hard link could name a file outside.
/// Neither ownership nor set-id bits are restored.
pub fn unpack(archive: &Path, dest: &Path) -> Result<u64, ArtifactsError> {
    std::fs::create_dir_all(dest).map_err(io_err("creating", dest))?;
    let file = File::open(archive).map_err(io_err("opening", archive))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    // Read, write and execute bits only.
    tar.set_preserve_permissions(false);
    tar.set_overwrite(true);
    let mut files = 0;
    for entry in tar.entries().map_err(io_err("reading", archive))? {
        let mut entry = entry.map_err(io_err("reading", archive))?;
        let name = entry
            .path()
            .map_err(io_err("reading", archive))?
            .into_owned();
        let kind = entry.header().entry_type();
        let allowed = kind.is_file() || kind.is_dir() || kind.is_symlink();
        if !allowed
            || name.is_absolute()
            || name
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(ArtifactsError::Unsafe(name.display().to_string()));
        }
        if !entry
            .unpack_in(dest)
            .map_err(io_err("unpacking into", dest))?
        {
            return Err(ArtifactsError::Unsafe(name.display().to_string()));
        }
        if entry.header().entry_type().is_file() {
            files += 1;
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    #[test]
    fn lifetime_is_the_pipeline_s_up_to_the_agent_s_limit() {
        use std::time::Duration;
        const DAY: Duration = Duration::from_secs(86_400);
        let mut store = ArtifactStore {
            registry: "r".into(),
            login: None,
            insecure: true,
            max_bytes: 1,
            expire_after: Some(30 * DAY),
            max_expire: None,
        };
        let after = |d| Some(ArtifactsExpiry::After(d));
        assert_eq!(
            store.lifetime(None),
            (Some(30 * DAY), "agent.artifacts_expire_days")
        );
        assert_eq!(store.lifetime(after(DAY)), (Some(DAY), "expire_in"));
        assert_eq!(
            store.lifetime(Some(ArtifactsExpiry::Never)),
            (None, "expire_in: never")
        );
        store.max_expire = Some(7 * DAY);
        let limit = "agent.artifacts_max_expire_days";
        assert_eq!(store.lifetime(after(7 * DAY)), (Some(7 * DAY), "expire_in"));
        assert_eq!(store.lifetime(after(8 * DAY)), (Some(7 * DAY), limit));
        assert_eq!(
            store.lifetime(Some(ArtifactsExpiry::Never)),
            (Some(7 * DAY), limit)
        );
        assert_eq!(store.lifetime(None), (Some(7 * DAY), limit));
        store.expire_after = None;
        assert_eq!(store.lifetime(None), (Some(7 * DAY), limit));
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn listing(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut pending = vec![root.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                if meta.is_dir() {
                    out.push(format!("{rel}/"));
                    pending.push(path);
                } else if meta.file_type().is_symlink() {
                    out.push(format!(
                        "{rel} -> {}",
                        std::fs::read_link(&path).unwrap().display()
                    ));
                } else {
                    let text = std::fs::read_to_string(&path).unwrap();
                    out.push(format!("{rel} {:o} {text}", meta.mode() & 0o7777));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn paths_go_round_trip_with_modes_and_links_as_links() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        write(&ws.join("dist/app"), "binary");
        std::fs::set_permissions(ws.join("dist/app"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        write(&ws.join("dist/doc/README"), "read me");
        symlink("app", ws.join("dist/current")).unwrap();
        symlink("/etc/passwd", ws.join("dist/escape")).unwrap();
        write(&ws.join("report.xml"), "<ok/>");
        write(&ws.join("src/main.rs"), "not kept");
        let archive = dir.path().join("a.tar.gz");
        let paths = [
            "dist".to_owned(),
            "report.xml".to_owned(),
            "gone".to_owned(),
        ];
        let packed = pack(&ws, &paths, &archive, 1 << 20, &CancellationToken::new()).unwrap();
        assert_eq!(packed.paths, ["dist", "report.xml"]);
        assert_eq!(
            packed.skipped,
            [("gone".to_owned(), "not in the workspace".to_owned())]
        );
        assert_eq!((packed.files, packed.bytes), (3, 6 + 7 + 5));

        let out = dir.path().join("out");
        assert_eq!(unpack(&archive, &out).unwrap(), 3);
        assert_eq!(
            listing(&out),
            [
                "dist/",
                "dist/app 755 binary",
                "dist/current -> app",
                "dist/doc/",
                "dist/doc/README 644 read me",
                "dist/escape -> /etc/passwd",
                "report.xml 644 <ok/>",
            ]
        );
    }

    #[test]
    fn links_fifos_and_set_id_bits_do_not_travel() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        write(&ws.join("outside/secret"), "secret");
        std::fs::create_dir_all(ws.join("out")).unwrap();
        symlink(ws.join("outside"), ws.join("linked")).unwrap();
        nix::unistd::mkfifo(&ws.join("out/pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        write(&ws.join("out/tool"), "tool");
        std::fs::set_permissions(ws.join("out/tool"), std::fs::Permissions::from_mode(0o4755))
            .unwrap();
        let archive = dir.path().join("a.tar.gz");
        let paths = ["linked".to_owned(), "out".to_owned()];
        let packed = pack(&ws, &paths, &archive, 1 << 20, &CancellationToken::new()).unwrap();
        assert_eq!(packed.paths, ["out"]);
        assert!(packed.skipped[0].1.contains("symbolic link"), "{packed:?}");
        assert_eq!(
            packed.left_out,
            ["out/pipe (not a file, directory or link)"]
        );
        let out = dir.path().join("x");
        unpack(&archive, &out).unwrap();
        assert_eq!(listing(&out), ["out/", "out/tool 755 tool"]);
    }

    #[test]
    fn globs_take_what_they_match_once_and_never_git() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        write(&ws.join("dist/a.tar.gz"), "a");
        write(&ws.join("dist/b.tar.gz"), "b");
        write(&ws.join("dist/notes.txt"), "n");
        write(&ws.join("dist/sub/c.tar.gz"), "c");
        write(&ws.join("x/junit.xml"), "x");
        write(&ws.join("y/z/junit.xml"), "yz");
        write(&ws.join(".git/junit.xml"), "never");
        write(&ws.join(".git/config"), "never");
        write(&ws.join("top.log"), "t");
        symlink("/etc", ws.join("dist/etc.tar.gz")).unwrap();
        let paths: Vec<String> = [
            "dist/*.tar.gz",
            "**/junit.xml",
            "dist",
            "*",
            "none/*.x",
            "*.nope",
        ]
        .map(String::from)
        .to_vec();
        let archive = dir.path().join("a.tar.gz");
        let packed = pack(&ws, &paths, &archive, 1 << 20, &CancellationToken::new()).unwrap();
        assert_eq!(packed.paths, ["dist/*.tar.gz", "**/junit.xml", "dist", "*"]);
        assert_eq!(
            packed.skipped,
            [
                (
                    "none/*.x".to_owned(),
                    "none: not in the workspace".to_owned()
                ),
                ("*.nope".to_owned(), "matched nothing".to_owned())
            ]
        );
        let out = dir.path().join("out");
        unpack(&archive, &out).unwrap();
        // `*` takes every top-level entry but .git; what the other paths matched is in them,
        // and each file is in the archive once.
        assert_eq!(
            listing(&out),
            [
                "dist/",
                "dist/a.tar.gz 644 a",
                "dist/b.tar.gz 644 b",
                "dist/etc.tar.gz -> /etc",
                "dist/notes.txt 644 n",
                "dist/sub/",
                "dist/sub/c.tar.gz 644 c",
                "top.log 644 t",
                "x/",
                "x/junit.xml 644 x",
                "y/",
                "y/z/",
                "y/z/junit.xml 644 yz",
            ]
        );
        assert_eq!(packed.files, 7);

        // Without the catch-all: only what the globs match, the link as a link.
        let paths: Vec<String> = ["dist/*.tar.gz", "**/junit.xml"].map(String::from).to_vec();
        pack(&ws, &paths, &archive, 1 << 20, &CancellationToken::new()).unwrap();
        let out = dir.path().join("out2");
        unpack(&archive, &out).unwrap();
        assert_eq!(
            listing(&out),
            [
                "dist/",
                "dist/a.tar.gz 644 a",
                "dist/b.tar.gz 644 b",
                "dist/etc.tar.gz -> /etc",
                "x/",
                "x/junit.xml 644 x",
                "y/",
                "y/z/",
                "y/z/junit.xml 644 yz",
            ]
        );
    }

    #[test]
    fn too_much_or_a_stop_ends_the_packing() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        write(&ws.join("big"), &"x".repeat(2000));
        let archive = dir.path().join("a.tar.gz");
        let err = pack(
            &ws,
            &["big".into()],
            &archive,
            1000,
            &CancellationToken::new(),
        )
        .unwrap_err();
        assert!(
            matches!(err, ArtifactsError::TooLarge { max: 1000 }),
            "{err}"
        );
        let stop = CancellationToken::new();
        stop.cancel();
        let err = pack(&ws, &["big".into()], &archive, 1 << 20, &stop).unwrap_err();
        assert!(matches!(err, ArtifactsError::Stopped), "{err}");
    }

    /// A gzipped tar at `path` holding what `entries` appends.
    fn archive_of(path: &Path, entries: impl FnOnce(&mut tar::Builder<GzEncoder<File>>)) {
        let file = File::create(path).unwrap();
        let mut builder = tar::Builder::new(GzEncoder::new(file, Compression::fast()));
        entries(&mut builder);
        builder.into_inner().unwrap().finish().unwrap();
    }

    #[test]
    fn hard_links_are_refused_and_set_id_bits_dropped_on_unpacking() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar.gz");
        archive_of(&archive, |b| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Link);
            header.set_size(0);
            b.append_link(&mut header, "passwd", "/etc/passwd").unwrap();
        });
        let err = unpack(&archive, &dir.path().join("out")).unwrap_err();
        assert!(
            matches!(err, ArtifactsError::Unsafe(ref n) if n == "passwd"),
            "{err}"
        );

        archive_of(&archive, |b| {
            let mut header = tar::Header::new_gnu();
            header.set_size(4);
            header.set_mode(0o6755);
            b.append_data(&mut header, "tool", &b"tool"[..]).unwrap();
        });
        let out = dir.path().join("out2");
        unpack(&archive, &out).unwrap();
        let mode = std::fs::metadata(out.join("tool")).unwrap().mode();
        assert_eq!(mode & 0o7777, 0o755);
    }

    #[test]
    fn archives_that_would_write_outside_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (name, link) in [("../evil", None), ("a/../../evil", None), ("ok", Some("x"))] {
            let archive = dir.path().join("evil.tar.gz");
            archive_of(&archive, |builder| {
                let mut header = tar::Header::new_gnu();
                header.set_mode(0o644);
                // Written raw: the tar crate's own setters refuse such names.
                let bytes = name.as_bytes();
                header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
                match link {
                    None => {
                        header.set_size(4);
                        header.set_entry_type(tar::EntryType::Regular);
                        header.set_cksum();
                        builder.append(&header, &b"evil"[..]).unwrap();
                    }
                    Some(_) => {
                        // A link out, then a file written through it.
                        let mut link_header = tar::Header::new_gnu();
                        link_header.set_entry_type(tar::EntryType::Symlink);
                        link_header.set_size(0);
                        builder
                            .append_link(&mut link_header, "ok", dir.path())
                            .unwrap();
                        let mut file = tar::Header::new_gnu();
                        file.set_size(4);
                        file.set_mode(0o644);
                        builder
                            .append_data(&mut file, "ok/planted", &b"evil"[..])
                            .unwrap();
                    }
                }
            });
            let out = dir.path().join("out");
            let err = unpack(&archive, &out).unwrap_err();
            assert!(
                matches!(err, ArtifactsError::Unsafe(_) | ArtifactsError::Io { .. }),
                "{name}: {err}"
            );
            assert!(!dir.path().join("evil").exists() && !dir.path().join("planted").exists());
        }
    }
}
