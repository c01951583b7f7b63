//! Where the `raibid` binary under test comes from.
//!
//! An integration test of another crate has no `CARGO_BIN_EXE_raibid`, and cargo does not build
//! the binaries of dependencies for tests. Testing a stale binary would prove nothing, and a
//! test that silently skips proves nothing either, so the order is:
//!
//! 1. `RAIBID_BIN`, when set (a release build for the full-size runs);
//! 2. the `raibid` in this test's own profile directory, when it and the `raibid-agent` beside
//!    it (which `raibid up` starts its agents with) are newer than every source file of the
//!    workspace (`cargo test --workspace` has just built them);
//! 3. otherwise `cargo build -p raibid-cli` is run here, into the same target directory, and a
//!    failure stops the test with the command to run by hand.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the crate lives in <workspace>/crates/")
        .to_path_buf()
}

/// Path of the `raibid` binary to test; built on first use when missing or stale.
pub fn raibid_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(locate).clone()
}

fn locate() -> PathBuf {
    if let Some(given) = std::env::var_os("RAIBID_BIN") {
        let given = PathBuf::from(given);
        assert!(
            given.is_file(),
            "RAIBID_BIN={} is not a file",
            given.display()
        );
        return given;
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    // <target>/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from <target>/<profile>/deps")
        .to_path_buf();
    let candidate = profile_dir.join("raibid");
    if is_fresh(&candidate) && is_fresh(&profile_dir.join("raibid-agent")) {
        return candidate;
    }
    build(&profile_dir);
    assert!(
        candidate.is_file(),
        "`cargo build -p raibid-cli` did not produce {}; build it by hand or set RAIBID_BIN",
        candidate.display()
    );
    candidate
}

fn build(profile_dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = profile_dir
        .parent()
        .expect("the profile directory has a parent");
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a UTF-8 profile directory name");
    let mut command = Command::new(cargo);
    command
        .arg("build")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(workspace_root().join("Cargo.toml"))
        .args(["-p", "raibid-cli", "--bins"])
        .arg("--target-dir")
        .arg(target_dir);
    if profile != "debug" {
        command.args(["--profile", profile]);
    }
    eprintln!("building the raibid binary under test: {command:?}");
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build raibid ({e}); run `cargo build -p raibid-cli` first or set RAIBID_BIN"));
    assert!(
        status.success(),
        "`cargo build -p raibid-cli` failed ({status}); fix the build or set RAIBID_BIN"
    );
}

/// Whether `binary` exists and is newer than every file that goes into it.
fn is_fresh(binary: &Path) -> bool {
    let Some(built) = modified(binary) else {
        return false;
    };
    let root = workspace_root();
    let mut newest = [root.join("Cargo.toml"), root.join("Cargo.lock")]
        .iter()
        .filter_map(|p| modified(p))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let Ok(crates) = std::fs::read_dir(root.join("crates")) else {
        return false;
    };
    for krate in crates.flatten() {
        let dir = krate.path();
        if dir.ends_with(env!("CARGO_PKG_NAME")) {
            continue;
        }
        for part in ["Cargo.toml", "build.rs", "src"] {
            newest = newest.max(newest_under(&dir.join(part)));
        }
    }
    built > newest
}

fn newest_under(path: &Path) -> SystemTime {
    let mut newest = modified(path).unwrap_or(SystemTime::UNIX_EPOCH);
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            newest = newest.max(newest_under(&entry.path()));
        }
    }
    newest
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
