//! The log files `raibid up` keeps in its data directory (the agents', the registry's,
//! Redis's): appended to for as long as the machine runs CI, so each is bounded by moving it
//! aside when it is opened past [`MAX_BYTES`], as logrotate's `size` with `rotate 1` would.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// A log file larger than this when opened is moved to `<name>.1` (replacing the one there):
/// the newest lines are what someone reads, and two files bound the disk used to about twice
/// this.
pub const MAX_BYTES: u64 = 64 * 1024 * 1024;

/// `path` opened for appending, moved aside first when larger than `max_bytes`. Writers that
/// still hold the old file (an agent that started before) finish their lines in `<name>.1`.
pub fn open_append(path: &Path, max_bytes: u64) -> io::Result<File> {
    rotate_if_larger(path, max_bytes)?;
    OpenOptions::new().create(true).append(true).open(path)
}

/// Moves `path` to `<name>.1` when it is larger than `max_bytes`, for a log file another
/// program opens itself (redis-server's `--logfile`). Whether it moved it.
pub fn rotate_if_larger(path: &Path, max_bytes: u64) -> io::Result<bool> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() > max_bytes => {
            std::fs::rename(path, previous(path))?;
            Ok(true)
        }
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Where a log file's previous lines go: `agents.log.1`.
pub fn previous(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_log_past_its_size_is_moved_aside_once_and_the_older_one_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agents.log");
        let write = |text: &str| {
            open_append(&path, 10)
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap()
        };
        write("first\n");
        write("second\n");
        // 13 bytes: the next open moves them aside.
        assert!(!previous(&path).exists());
        write("third\n");
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(&previous(&path)), "first\nsecond\n");
        assert_eq!(read(&path), "third\n");
        write("fourth\n");
        write("fifth\n");
        assert_eq!(read(&path), "fifth\n", "13 bytes again: moved aside");
        assert_eq!(read(&previous(&path)), "third\nfourth\n");
    }

    #[test]
    fn a_missing_or_small_log_stays_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("redis.log");
        assert!(!rotate_if_larger(&path, 10).unwrap());
        std::fs::write(&path, "0123456789").unwrap();
        assert!(!rotate_if_larger(&path, 10).unwrap(), "not larger");
        assert!(path.exists() && !previous(&path).exists());
        std::fs::write(&path, "0123456789a").unwrap();
        assert!(rotate_if_larger(&path, 10).unwrap());
        assert!(!path.exists() && previous(&path).exists());
    }
}
