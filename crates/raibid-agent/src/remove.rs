//! Removing a job's directory, including what its steps made read-only.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Removes `path` and everything under it; a missing `path` is fine.
///
/// Steps leave directories without write permission (Go's module cache, under the job's
/// `HOME`, is 0555), and an agent that is not root cannot delete their entries: its disk would
/// fill job by job. On a permission error every directory of the tree gets u+rwx and removal is
/// tried once more. Links are not followed, so nothing outside the tree changes mode.
///
/// The removal itself is GNU `rm -rf --one-file-system`: a step can leave a tree nested 100,000
/// deep in seconds, and std's `remove_dir_all` keeps a directory open per level and recurses,
/// so it ran out of file descriptors (the tree stayed, the disk filled) or overflowed the
/// thread's stack (the agent died, and so did every agent that swept the tree after it).
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match rm_rf(path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_dirs_writable(path);
            rm_rf(path)
        }
        other => other,
    }
}

fn rm_rf(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    let out = std::process::Command::new("rm")
        .args(["-rf", "--one-file-system", "--"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .output()?;
    if out.status.success() {
        return Ok(());
    }
    let message = String::from_utf8_lossy(&out.stderr);
    let kind = if message.contains("Permission denied") {
        io::ErrorKind::PermissionDenied
    } else {
        io::ErrorKind::Other
    };
    Err(io::Error::new(
        kind,
        format!("rm -rf {}: {}", path.display(), message.trim()),
    ))
}

/// Adds u+rwx to every directory under `root` (itself included), without following links.
/// Best effort: whatever cannot be changed shows up as the removal's error.
fn make_dirs_writable(root: &Path) {
    // A stack, not recursion: a step can nest directories deeper than the agent's stack.
    let mut pending: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let mode = meta.permissions().mode();
        if mode & 0o700 != 0o700 {
            // `set_permissions` on a path follows a link, but `dir` is a real directory: its
            // type came from lstat, and the tree's own entries are only this job's.
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | 0o700));
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            // `DirEntry::file_type` does not follow links.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// Runs `f` on a thread of its own without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH in its
    /// effective set. Capabilities belong to threads, so this makes a root test process obey
    /// directory permissions like the unprivileged agent would, for that thread only.
    fn without_dac_override<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const VERSION_3: u32 = 0x2008_0522;
        const DAC: u32 = (1 << 1) | (1 << 2); // CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let mut header = Header {
                        version: VERSION_3,
                        pid: 0,
                    };
                    let mut data = [Data::default(); 2];
                    // SAFETY: header and a two-element data array, as version 3 expects.
                    let got =
                        unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
                    assert_eq!(got, 0, "capget: {}", io::Error::last_os_error());
                    data[0].effective &= !DAC;
                    // SAFETY: as above; lowering the effective set of this thread only.
                    let set = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
                    assert_eq!(set, 0, "capset: {}", io::Error::last_os_error());
                    f()
                })
                .join()
                .unwrap()
        })
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn read_only_directories_are_removed_without_privileges() {
        let base = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let kept = outside.path().join("kept");
        std::fs::create_dir(&kept).unwrap();
        std::fs::write(kept.join("file"), "not the job's").unwrap();
        chmod(&kept, 0o555);

        let job = base.path().join("job-a1");
        let module = job.join("home/go/pkg/mod/example.com/m@v1");
        let locked = job.join("src/dir/sub");
        for dir in [&module, &locked] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("file"), "x").unwrap();
        }
        symlink(&kept, job.join("src/link")).unwrap();
        let mut dir = module.as_path();
        while dir != job {
            chmod(dir, 0o555);
            dir = dir.parent().unwrap();
        }
        chmod(&locked, 0o555);
        chmod(locked.parent().unwrap(), 0o555);
        // `chmod a-rwx` too: the walk must make a directory listable before it descends.
        chmod(&job.join("home/go/pkg/mod/example.com"), 0o000);

        // What the agent did before: as an unprivileged user, this fails.
        let plain = without_dac_override(|| std::fs::remove_dir_all(&job));
        assert_eq!(
            plain.unwrap_err().kind(),
            io::ErrorKind::PermissionDenied,
            "the test needs directory permissions to be enforced"
        );

        without_dac_override(|| remove_tree(&job)).unwrap();
        assert!(!job.exists());
        // The link was removed, not followed.
        let mode = std::fs::metadata(&kept).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o555);
        assert!(kept.join("file").exists());
        chmod(&kept, 0o755);
    }

    /// A step can nest directories far deeper than a process has file descriptors (or a
    /// thread has stack for one frame per level).
    #[test]
    fn a_tree_nested_thirty_thousand_deep_is_removed() {
        use nix::fcntl::{OFlag, open, openat};
        use nix::sys::stat::{Mode, mkdirat};
        let base = tempfile::tempdir().unwrap();
        let job = base.path().join("job-a1");
        std::fs::create_dir(&job).unwrap();
        let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY;
        let mut dir = open(&job, flags, Mode::empty()).unwrap();
        for _ in 0..30_000 {
            mkdirat(Some(dir), "d", Mode::from_bits_truncate(0o755)).unwrap();
            let next = openat(Some(dir), "d", flags, Mode::empty()).unwrap();
            nix::unistd::close(dir).unwrap();
            dir = next;
        }
        nix::unistd::close(dir).unwrap();
        // The agent removes job directories on a blocking thread with the default stack.
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || remove_tree(&job).map(|()| job.exists()))
            .unwrap()
            .join()
            .unwrap()
            .map(|exists| assert!(!exists))
            .unwrap();
    }

    #[test]
    fn a_missing_tree_is_already_removed() {
        let base = tempfile::tempdir().unwrap();
        remove_tree(&base.path().join("gone")).unwrap();
    }
}
