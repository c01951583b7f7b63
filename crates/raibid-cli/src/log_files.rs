//! The log files `raibid up` keeps in its data directory (the agents', the registry's,
//! Redis's): appended to for as long as the machine runs CI, so each is bounded by moving it
//! aside when it is opened past [`MAX_BYTES`], as logrotate's `size` with `rotate 1` would,
//! and, while `raibid up` runs, by [`keep_bounded`]: a registry started once writes to the
//! file it was given for weeks.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

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
    if !is_larger(path, max_bytes)? {
        return Ok(false);
    }
    std::fs::rename(path, previous(path))?;
    Ok(true)
}

/// Whether `path` exists and holds more than `max_bytes`.
fn is_larger(path: &Path, max_bytes: u64) -> io::Result<bool> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(meta.len() > max_bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// How often [`keep_bounded`] looks at the files' sizes: a busy registry logs a few MiB an
/// hour, so a file passes [`MAX_BYTES`] by little before it is looked at.
pub const LOOK_EVERY: Duration = Duration::from_secs(60);

/// Copies `path` to `<name>.1` (replacing the one there) and empties it, when it is larger
/// than `max_bytes`: logrotate's `copytruncate`, for a file that running programs hold open.
/// Moving such a file aside would not bound it: they would go on writing to the moved file.
/// They opened it for appending (each `open_append` does; redis-server opens it anew for
/// each line), so their next write lands at the start of the emptied file, not past a hole.
/// Lines written between the copy and the truncation are lost, as with logrotate. Whether it
/// did.
pub fn copy_truncate_if_larger(path: &Path, max_bytes: u64) -> io::Result<bool> {
    if !is_larger(path, max_bytes)? {
        return Ok(false);
    }
    std::fs::copy(path, previous(path))?;
    OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(true)
}

/// Until `stop`, every `every`, [`copy_truncate_if_larger`] on each of `paths`. A file that
/// cannot be tended is warned about and looked at again next time.
pub async fn keep_bounded(
    paths: Vec<PathBuf>,
    max_bytes: u64,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for path in &paths {
            let tended = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || copy_truncate_if_larger(&path, max_bytes))
                    .await
                    .unwrap_or_else(|e| Err(io::Error::other(e)))
            };
            match tended {
                Ok(true) => tracing::info!(
                    path = %path.display(),
                    previous = %previous(path).display(),
                    "log file past its size: its lines moved to the previous file"
                ),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot bound log file")
                }
            }
        }
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
    fn a_log_a_running_program_writes_is_emptied_and_its_next_lines_start_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.log");
        // As the registry: started once with the file, writing for as long as it runs.
        let mut writer = std::process::Command::new("sh")
            .args(["-c", "echo before; read _; echo after"])
            .stdin(std::process::Stdio::piped())
            .stdout(open_append(&path, MAX_BYTES).unwrap())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&path).unwrap() != "before\n" {
            assert!(std::time::Instant::now() < deadline, "sh never wrote");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !copy_truncate_if_larger(&path, 7).unwrap(),
            "7 bytes: not larger"
        );
        assert!(copy_truncate_if_larger(&path, 6).unwrap());
        drop(writer.stdin.take());
        assert!(writer.wait().unwrap().success());
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(&previous(&path)), "before\n");
        // At the start: no hole of zeros where "before" was.
        assert_eq!(read(&path), "after\n");
    }

    #[tokio::test]
    async fn logs_are_kept_bounded_until_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("redis.log");
        let small = dir.path().join("agents.log");
        let missing = dir.path().join("registry.log");
        std::fs::write(&big, "0123456789a").unwrap();
        std::fs::write(&small, "0123").unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(keep_bounded(
            vec![missing.clone(), big.clone(), small.clone()],
            10,
            Duration::from_millis(20),
            stop.clone(),
        ));
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !read(&big).is_empty() {
            assert!(std::time::Instant::now() < deadline, "never emptied");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(read(&previous(&big)), "0123456789a");
        // Looked at again: a file that grew since is emptied too.
        std::fs::write(&small, "0123456789ab").unwrap();
        while !read(&small).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "never looked at again"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!missing.exists() && !previous(&missing).exists());
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops when told")
            .unwrap();
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
