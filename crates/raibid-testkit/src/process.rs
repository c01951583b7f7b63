use std::path::PathBuf;

/// Finds `name` on PATH or panics with the Debian package that provides it.
pub fn require_binary(name: &str, debian_package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{name}` is not installed but this test needs the real thing; install it with \
         `sudo apt-get install -y {debian_package}` (or run .ci/run, which does)"
    );
}

/// Writes an executable script (mode 0755) that the test will run, through a child process.
///
/// Written by the test process itself, the file could not always be run: a thread of the same
/// test binary that forks while the file is open for writing (plain `cargo test` runs tests on
/// threads) hands the child a copy of the descriptor until the child execs, and running a file
/// open for writing fails with ETXTBSY ("Text file busy"). Here only the short-lived `sh`
/// ever holds it open for writing.
pub fn write_script(path: &std::path::Path, text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("/bin/sh")
        .args(["-c", "cat > \"$0\" && chmod 755 \"$0\""])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("start /bin/sh to write a script");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .expect("write the script");
    let status = child.wait().expect("wait for /bin/sh");
    assert!(status.success(), "could not write {}", path.display());
}

/// Sets `path`'s modification time to `ago` before now: how tests make a file look as old as
/// what they test (a mirror unused for a month, a prune a week ago).
pub fn set_modified_ago(path: &std::path::Path, ago: std::time::Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .set_modified(std::time::SystemTime::now() - ago)
        .unwrap();
}
