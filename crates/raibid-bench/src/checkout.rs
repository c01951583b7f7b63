//! `raibid bench checkout`: what the agent's mirror cache saves on a repository with history.
//!
//! The repository (20,000 commits over 5,000 files by default) is generated with
//! `git fast-import`, repacked as a forge would keep it, and served by `git daemon`, so the
//! cold clone goes over a real git protocol with the server doing its real work (counting and
//! sending objects). Cold is what a CI without a cache does for every job: a full clone and a
//! checkout of the commit. Warm is `GitCheckout::checkout` with the mirror already holding the
//! commit. Cold and warm runs alternate so that a burst of load from elsewhere on the machine
//! hits both alike.
//!
//! Checkouts are kept until the end instead of being deleted after each run: on ext4, creating
//! thousands of files shortly after deleting thousands makes the kernel scan the recently
//! deleted inodes for every new file (`ext4_create` -> `recently_deleted`), which multiplied
//! both figures by up to ten on the reference machine and measured the file system's
//! bookkeeping rather than git's work. An agent that deletes a big workspace right before the
//! next job's checkout does pay that; see BENCHMARKS.md.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use raibid_agent::GitCheckout;
use raibid_model::{Event, Job, NewJob};
use serde::Serialize;
use tracing::info;

use crate::BenchError;
use crate::procs::{Proc, git, require_tool};
use crate::report::{Machine, TargetCheck, median, table, targets_table};

/// Target from the issue: a warm checkout at least this many times faster than a cold clone.
pub const TARGET_SPEEDUP: f64 = 5.0;

const REPO: &str = "bench/history";

#[derive(Debug, Clone)]
pub struct CheckoutBenchOptions {
    pub commits: usize,
    pub files: usize,
    /// Timed runs of each kind; the report gives their medians.
    pub runs: usize,
    /// Where the repository, clones and mirror go (a temporary directory inside it); `None`:
    /// the system's temporary directory. Cold and warm write the same files to the same disk.
    pub temp_root: Option<PathBuf>,
}

impl Default for CheckoutBenchOptions {
    fn default() -> Self {
        Self {
            commits: 20_000,
            files: 5_000,
            runs: 5,
            temp_root: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckoutReport {
    pub machine: Machine,
    /// Where the clones were written, with its file system (`/tmp (ext4)`).
    pub work_dir: String,
    pub commits: usize,
    pub files: usize,
    /// Size of the served repository's objects after repacking.
    pub repo_bytes: u64,
    /// fast-import plus repack, not part of any figure.
    pub generate_s: f64,
    /// The first job of the repository: `git clone --mirror` plus the checkout.
    pub mirror_create_ms: f64,
    /// `git clone` over git:// plus checkout of the commit, one per run.
    pub cold_ms: Vec<f64>,
    /// `GitCheckout::checkout`, the mirror already holding the commit.
    pub warm_ms: Vec<f64>,
    /// `GitCheckout::checkout` of a commit pushed since the mirror's last fetch.
    pub warm_fetch_ms: Vec<f64>,
    pub cold_median_ms: f64,
    pub warm_median_ms: f64,
    pub warm_fetch_median_ms: f64,
    /// cold median / warm median.
    pub speedup: f64,
    /// cold median / warm-with-fetch median.
    pub speedup_with_fetch: f64,
    pub targets: Vec<TargetCheck>,
}

impl CheckoutReport {
    pub fn render_table(&self) -> String {
        let mut out = format!(
            "checkout: {} commits, {} files, {:.1} MiB packed, served by git daemon on loopback \
             (generated in {:.0} s); {} runs each, medians; written to {}\nmachine: {}\n\n",
            self.commits,
            self.files,
            self.repo_bytes as f64 / (1024.0 * 1024.0),
            self.generate_s,
            self.cold_ms.len(),
            self.work_dir,
            self.machine
        );
        let runs = |v: &[f64]| {
            v.iter()
                .map(|ms| format!("{ms:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        out.push_str(&table(
            &["CHECKOUT", "MEDIAN MS", "VS COLD", "RUNS MS"],
            &[
                vec![
                    "cold: git clone + checkout (no cache)".into(),
                    format!("{:.0}", self.cold_median_ms),
                    "1.0x".into(),
                    runs(&self.cold_ms),
                ],
                vec![
                    "warm: mirror has the commit".into(),
                    format!("{:.0}", self.warm_median_ms),
                    format!("{:.1}x", self.speedup),
                    runs(&self.warm_ms),
                ],
                vec![
                    "warm: mirror fetches 1 new commit".into(),
                    format!("{:.0}", self.warm_fetch_median_ms),
                    format!("{:.1}x", self.speedup_with_fetch),
                    runs(&self.warm_fetch_ms),
                ],
                vec![
                    "first job: clone --mirror + checkout".into(),
                    format!("{:.0}", self.mirror_create_ms),
                    String::new(),
                    String::new(),
                ],
            ],
        ));
        out.push('\n');
        out.push_str(&targets_table(&self.targets));
        out
    }
}

/// Runs the checkout benchmark; see the module documentation.
pub async fn checkout(opts: CheckoutBenchOptions) -> Result<CheckoutReport, BenchError> {
    let machine = Machine::detect();
    require_tool("git", "git")?;
    let mut builder = tempfile::Builder::new();
    builder.prefix("raibid-bench-checkout-");
    let dir = match &opts.temp_root {
        Some(root) => builder.tempdir_in(root),
        None => builder.tempdir(),
    }
    .map_err(BenchError::io("creating a temporary directory"))?;
    let root = dir.path();
    let work_dir = describe_dir(root.parent().unwrap_or(root));
    let home = root.join("home");
    std::fs::create_dir_all(&home).map_err(BenchError::io("creating a home directory"))?;

    let served = root.join("served");
    let bare = served.join(format!("{REPO}.git"));
    info!(
        commits = opts.commits,
        files = opts.files,
        "generating the repository"
    );
    let started = Instant::now();
    generate(&bare, opts.commits, opts.files, &home).await?;
    let generate_s = started.elapsed().as_secs_f64();
    let repo_bytes = dir_size(&bare.join("objects"));
    let tip = git(Some(&bare), &["rev-parse", "refs/heads/main"], &home)
        .await?
        .trim()
        .to_owned();

    let (daemon, port) = git_daemon(&served, &home).await?;
    let url = format!("git://127.0.0.1:{port}/{REPO}.git");

    let mirrors = GitCheckout::new(root.join("mirrors"), None);
    let mut next_dest = {
        let mut n = 0;
        move || {
            n += 1;
            root.join("work").join(n.to_string())
        }
    };

    let dest = next_dest();
    let started = Instant::now();
    mirrors.checkout(&job(&url, &tip), &dest).await?;
    let mirror_create = started.elapsed();

    info!(
        runs = opts.runs,
        "cold clones and warm checkouts, alternating"
    );
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..opts.runs.max(1) {
        let dest = next_dest();
        let started = Instant::now();
        cold_clone(&url, &tip, &dest, &home).await?;
        cold.push(started.elapsed());

        let dest = next_dest();
        let started = Instant::now();
        let report = mirrors.checkout(&job(&url, &tip), &dest).await?;
        warm.push(started.elapsed());
        if report.fetched || report.mirror_created {
            return Err(BenchError::Invalid(
                "the warm checkout fetched although the mirror had the commit".into(),
            ));
        }
    }

    let mut warm_fetch = Vec::new();
    let mut head = tip.clone();
    for i in 0..opts.runs.max(1) {
        head = push_commit(&bare, &head, i, &home).await?;
        let dest = next_dest();
        let started = Instant::now();
        let report = mirrors.checkout(&job(&url, &head), &dest).await?;
        warm_fetch.push(started.elapsed());
        if !report.fetched {
            return Err(BenchError::Invalid(
                "the mirror did not fetch a commit pushed after it was last updated".into(),
            ));
        }
    }
    daemon.stop(Duration::from_secs(5)).await;

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let cold_median = ms(median(&cold));
    let warm_median = ms(median(&warm));
    let warm_fetch_median = ms(median(&warm_fetch));
    let speedup = cold_median / warm_median.max(f64::MIN_POSITIVE);
    let speedup_with_fetch = cold_median / warm_fetch_median.max(f64::MIN_POSITIVE);
    Ok(CheckoutReport {
        machine,
        work_dir,
        commits: opts.commits,
        files: opts.files,
        repo_bytes,
        generate_s,
        mirror_create_ms: ms(mirror_create),
        cold_ms: cold.iter().copied().map(ms).collect(),
        warm_ms: warm.iter().copied().map(ms).collect(),
        warm_fetch_ms: warm_fetch.iter().copied().map(ms).collect(),
        cold_median_ms: cold_median,
        warm_median_ms: warm_median,
        warm_fetch_median_ms: warm_fetch_median,
        speedup,
        speedup_with_fetch,
        targets: vec![TargetCheck::at_least(
            "warm checkout vs cold clone",
            "x faster",
            TARGET_SPEEDUP,
            speedup,
        )],
    })
}

/// `git-daemon` serving `base` on a free loopback port. Started as `git-daemon` itself rather
/// than through the `git daemon` wrapper, which runs it as a child: killing the wrapper would
/// leave the daemon running (as `raibid_testkit::GitDaemon` does).
async fn git_daemon(base: &Path, home: &Path) -> Result<(Proc, u16), BenchError> {
    let exec_path = git(None, &["--exec-path"], home).await?;
    let program = Path::new(exec_path.trim()).join("git-daemon");
    let port = raibid_testkit::free_port();
    let base_arg = base.display().to_string();
    let mut daemon = Proc::spawn(
        "git-daemon",
        &program,
        &[
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            &format!("--base-path={base_arg}"),
            &base_arg,
        ],
        &[("GIT_CONFIG_NOSYSTEM", "1")],
        &base.with_file_name("git-daemon.log"),
    )?;
    for _ in 0..200 {
        daemon.check_alive()?;
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok((daemon, port));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(daemon.died("did not listen within 5 s"))
}

/// What a CI without a cache does: clone everything, then check out the job's commit.
async fn cold_clone(url: &str, sha: &str, dest: &Path, home: &Path) -> Result<(), BenchError> {
    let dest_arg = dest.display().to_string();
    git(
        None,
        &["clone", "--no-checkout", "--quiet", "--", url, &dest_arg],
        home,
    )
    .await?;
    git(
        Some(dest),
        &["checkout", "--quiet", "--detach", sha, "--"],
        home,
    )
    .await?;
    Ok(())
}

/// A commit on top of `parent` in the served repository, as a push would add.
async fn push_commit(
    bare: &Path,
    parent: &str,
    i: usize,
    home: &Path,
) -> Result<String, BenchError> {
    let tree = format!("{parent}^{{tree}}");
    let message = format!("push {i}");
    let sha = git(
        Some(bare),
        &[
            "-c",
            "user.name=raibid bench",
            "-c",
            "user.email=bench@raibid.invalid",
            "commit-tree",
            &tree,
            "-p",
            parent,
            "-m",
            &message,
        ],
        home,
    )
    .await?
    .trim()
    .to_owned();
    git(Some(bare), &["update-ref", "refs/heads/main", &sha], home).await?;
    Ok(sha)
}

fn job(url: &str, sha: &str) -> Job {
    let spec = NewJob::new(REPO, url, "refs/heads/main", sha, Event::Push);
    Job::queued("01BENCHCHECKOUT00000000000", spec, chrono::Utc::now())
}

/// `/tmp (ext4)`: the directory and the type of the file system it is on (the longest mount
/// point that contains it), since file creation costs differ by an order of magnitude.
fn describe_dir(dir: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    match fs_type(&mounts, dir) {
        Some(fs) => format!("{} ({fs})", dir.display()),
        None => dir.display().to_string(),
    }
}

fn fs_type(mounts: &str, dir: &Path) -> Option<String> {
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, fs) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(point).then(|| (point.len(), fs.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A bare repository on `main` with `commits` commits: the first adds `files` files, each
/// later one changes one file, then repacked as a forge keeps its repositories.
async fn generate(
    bare: &Path,
    commits: usize,
    files: usize,
    home: &Path,
) -> Result<(), BenchError> {
    std::fs::create_dir_all(bare).map_err(BenchError::io("creating the served repository"))?;
    git(
        Some(bare),
        &["init", "--quiet", "--bare", "--initial-branch=main"],
        home,
    )
    .await?;
    let bare_owned = bare.to_path_buf();
    let home_owned = home.to_path_buf();
    tokio::task::spawn_blocking(move || fast_import(&bare_owned, commits, files, &home_owned))
        .await
        .map_err(|e| BenchError::Process {
            what: "git fast-import".into(),
            message: e.to_string(),
        })??;
    git(Some(bare), &["repack", "-a", "-d", "-q"], home).await?;
    git(Some(bare), &["prune-packed"], home).await?;
    Ok(())
}

fn fast_import(bare: &Path, commits: usize, files: usize, home: &Path) -> Result<(), BenchError> {
    let mut child = std::process::Command::new("git")
        .arg("-C")
        .arg(bare)
        .args(["fast-import", "--quiet"])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(BenchError::io("starting git fast-import"))?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdin);
    let write_result = write_history(&mut out, commits, files).and_then(|()| out.flush());
    drop(out);
    let output = child
        .wait_with_output()
        .map_err(BenchError::io("waiting for git fast-import"))?;
    if !output.status.success() {
        return Err(BenchError::Git {
            args: "fast-import".into(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    write_result.map_err(BenchError::io("feeding git fast-import"))
}

/// The fast-import stream: commit 0 adds every file, commit `c` rewrites file
/// `c * 7919 mod files` (a prime stride, so changes spread over the whole tree).
fn write_history(
    out: &mut impl std::io::Write,
    commits: usize,
    files: usize,
) -> std::io::Result<()> {
    let files = files.max(1);
    for c in 0..commits.max(1) {
        let when = 1_700_000_000 + c as u64 * 60;
        let message = format!("change {c}\n");
        write!(
            out,
            "commit refs/heads/main\nmark :{}\n\
             author raibid bench <bench@raibid.invalid> {when} +0000\n\
             committer raibid bench <bench@raibid.invalid> {when} +0000\n\
             data {}\n{message}",
            c + 1,
            message.len()
        )?;
        if c > 0 {
            writeln!(out, "from :{c}")?;
        }
        let changed: Box<dyn Iterator<Item = usize>> = if c == 0 {
            Box::new(0..files)
        } else {
            Box::new(std::iter::once(c * 7919 % files))
        };
        for f in changed {
            let content = file_content(f, c);
            write!(
                out,
                "M 100644 inline {}\ndata {}\n{content}\n",
                file_path(f),
                content.len()
            )?;
        }
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn file_path(f: usize) -> String {
    format!("src/m{:02}/f{f:05}.rs", f % 50)
}

/// About 1.5 KB of source-like text; version `c` differs from the base in line `c mod 32`.
fn file_content(f: usize, c: usize) -> String {
    let mut s = format!("// file {f}\n");
    for k in 0..32usize {
        let v = if c > 0 && k == c % 32 {
            mix((f as u64) << 32 | c as u64)
        } else {
            mix((f as u64) << 8 | k as u64)
        };
        let _ = writeln!(s, "pub fn item_{k}() -> u64 {{ 0x{v:016x} }}");
    }
    s
}

/// splitmix64: deterministic, incompressible-looking constants.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_stream_is_well_formed() {
        let mut out = Vec::new();
        write_history(&mut out, 3, 4).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("commit refs/heads/main").count(), 3);
        // Commit 0 adds every file, the others change one each.
        assert_eq!(text.matches("M 100644 inline").count(), 4 + 2);
        assert!(text.contains("from :1\n") && text.contains("from :2\n"));
        assert!(!text.contains("from :0"));
    }

    #[test]
    fn file_system_is_the_longest_matching_mount() {
        let mounts =
            "/dev/vda / ext4 rw 0 0\ntmpfs /dev/shm tmpfs rw 0 0\nproc /proc proc rw 0 0\n";
        assert_eq!(fs_type(mounts, Path::new("/tmp")).as_deref(), Some("ext4"));
        assert_eq!(
            fs_type(mounts, Path::new("/dev/shm/x")).as_deref(),
            Some("tmpfs")
        );
        assert_eq!(fs_type("", Path::new("/tmp")), None);
    }

    #[test]
    fn a_new_version_changes_one_line() {
        let base = file_content(7, 0);
        let next = file_content(7, 33);
        let differing = base
            .lines()
            .zip(next.lines())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differing, 1);
        assert_eq!(base.lines().count(), next.lines().count());
    }
}
