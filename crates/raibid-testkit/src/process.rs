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
