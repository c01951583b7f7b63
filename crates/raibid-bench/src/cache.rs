//! `raibid bench cache`: what the pipeline's `cache:` saves a real Rust build, and what it
//! costs.
//!
//! The workload is a small Rust crate (a library and a binary of a few modules) with the
//! dependencies of a small web service: axum, clap (`derive`), regex, serde (`derive`),
//! serde_json and tokio, about 70 crates in all. They are vendored once by the benchmark
//! (`cargo vendor`, with the host's cargo and its registry cache) into a directory outside the
//! repository, at a fixed path the sandbox can read, and the repository's `.cargo/config.toml`
//! points cargo at it: it stands for a machine-wide, read-only `CARGO_HOME` whose registry is
//! warm. So the step, `cargo build --offline --locked` in the agent's sandbox (no network there;
//! `HOME`, hence cargo's default `CARGO_HOME`, is the job's own empty directory), downloads
//! nothing: the benchmark measures compilation, checkout and the cache, never crates.io. The
//! profile is cargo's default `dev` one, incremental compilation included.
//!
//! Where the dependencies' sources are decides what a restored `target/` is worth (`deps`):
//! cargo fingerprints a non-path dependency by the absolute path of its sources
//! (`PathToSourceChanged` when it moves), and a build script's `rerun-if-changed` files by
//! their modification times. [`Deps::InRepository`] vendors them inside the repository: a
//! checkout gives them new modification times in every job (and, for host steps, a new path).
//! [`Deps::CachedInWorkspace`] has the first job copy them into `.cargo-home/vendor` in the
//! workspace (as a download into a `CARGO_HOME` there would put them), and `cache:` carries
//! that directory along with `target/`.
//!
//! One `raibid up` (release binary, its own data directory, private redis-server, the default
//! local pool with one agent at a time), its repository served over smart HTTP as in
//! `raibid bench e2e`, jobs sent as signed Gitea push webhooks on `main`. The repository holds
//! four commits, one after the other: a no-op pipeline (the warm-up job, which creates the
//! agents' mirror: no later job pays for the first fetch), the build without `cache:` (the
//! baseline), the same build with `cache: [target]`, and that one with one source file of the
//! crate changed. Jobs run one at a time:
//!
//! - baseline: the build without `cache:`, `baseline_jobs` times (each starts from nothing);
//! - cold: the first job with `cache: [target]` (nothing to restore: it builds, then saves);
//! - warm: `warm_jobs` more jobs of the same commit (restore, build, save again: the default
//!   policy is `pull-push`);
//! - incremental: one job of the commit that changes one source file.
//!
//! Each job's time is its record's `started_at` to `finished_at` (claimed by an agent to
//! recorded). The build is the step's own duration in the record; restore and save times and
//! the cached size are the agent's log lines (`cache: restored ... in 1.23s`, `cache: saved
//! ... (123.4 MiB) in 2.34s`); "compiled" counts the step's `Compiling` lines. The size of the
//! cache entry on disk (bytes and files) is read under `<data>/agent/git-mirrors/jobs` after
//! each save.

use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use raibid_model::JobStatus;
use serde::Serialize;
use tracing::info;

use crate::BenchError;
use crate::e2e::{Ctx, Finished, Up, log_marks, push_webhook};
use crate::procs::{check_raibid, default_raibid_exe, git, require_tool};
use crate::report::{Machine, median, table};
use crate::webhooks::random_secret;

const REPO: &str = "bench/cache-crate";
/// How long one job may take: a cold build of the crate on a busy two-core machine takes one
/// or two minutes.
const JOB_TIMEOUT: Duration = Duration::from_secs(1200);

#[derive(Debug, Clone)]
pub struct CacheBenchOptions {
    /// The `raibid` executable run as `raibid up`.
    pub raibid_exe: PathBuf,
    /// Jobs of the build without `cache:`.
    pub baseline_jobs: usize,
    /// Jobs with `cache: [target]` after the cold one, same commit.
    pub warm_jobs: usize,
    /// `agent.executor` (`auto`, `host`, `bwrap`); `None` keeps the default.
    pub executor: Option<String>,
    /// Where the repository, the vendored dependencies and `raibid up`'s data directory (hence
    /// the cache) go; the filesystem decides whether `cp --reflink=auto` copies or shares
    /// blocks. It must be visible inside the sandbox, so not under `/tmp` (bubblewrap gives
    /// steps a `/tmp` of their own). Default: `/var/tmp`.
    pub temp_root: Option<PathBuf>,
    /// Where the steps find the dependencies' sources (see the module documentation).
    pub deps: Deps,
}

/// Where the steps find the crate's dependencies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Deps {
    /// Vendored at a fixed path outside the repository, read-only: a machine-wide, warm
    /// `CARGO_HOME`.
    #[default]
    Outside,
    /// Vendored inside the repository, so checked out with every job.
    InRepository,
    /// Copied by a job that does not have them into `.cargo-home/vendor` of the workspace
    /// (`CARGO_HOME=.cargo-home`), which the cached pipeline's `cache:` lists next to
    /// `target`.
    CachedInWorkspace,
}

impl Deps {
    fn describe(self) -> &'static str {
        match self {
            Deps::Outside => "vendored at a fixed path outside the workspace",
            Deps::InRepository => "vendored inside the repository",
            Deps::CachedInWorkspace => {
                "copied into .cargo-home of the workspace by the first job, cached with target/"
            }
        }
    }
}

impl Default for CacheBenchOptions {
    fn default() -> Self {
        Self {
            raibid_exe: default_raibid_exe(),
            baseline_jobs: 2,
            warm_jobs: 3,
            executor: None,
            temp_root: None,
            deps: Deps::Outside,
        }
    }
}

/// One job of the run.
#[derive(Debug, Clone, Serialize)]
pub struct CacheJob {
    pub phase: String,
    pub job_id: String,
    /// Claimed -> recorded, from the job record.
    pub job_s: f64,
    /// The build step's own duration, from the job record.
    pub build_s: f64,
    /// From `cache: restored ... in X s`; `None` when nothing was restored.
    pub restore_s: Option<f64>,
    /// From `cache: saved ... in X s`; `None` when nothing was saved.
    pub save_s: Option<f64>,
    /// The size the agent logged when saving (`123.4 MiB`).
    pub saved_size: Option<String>,
    /// Crates cargo compiled (its `Compiling` lines).
    pub compiled: usize,
    /// The cache entry on disk after this job: bytes (regular files and links, hard links
    /// once) and files.
    pub entry_bytes: Option<u64>,
    pub entry_files: Option<u64>,
    /// The agent's other `cache:` lines (a miss, a warning).
    pub cache_notes: Vec<String>,
}

impl CacheJob {
    /// What is neither the build nor the cache: checkout, the agent's bookkeeping.
    pub fn other_s(&self) -> f64 {
        self.job_s - self.build_s - self.restore_s.unwrap_or(0.0) - self.save_s.unwrap_or(0.0)
    }
}

/// Medians of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct CachePhase {
    pub name: String,
    pub jobs: usize,
    pub job_s: f64,
    pub build_s: f64,
    pub restore_s: Option<f64>,
    pub save_s: Option<f64>,
    pub compiled: usize,
    /// The baseline's median job time over this phase's.
    pub speedup: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheReport {
    pub machine: Machine,
    /// The 1, 5 and 15 minute load averages when the last job ended.
    pub load_average_end: [f64; 3],
    pub executor: String,
    /// The dependencies as resolved in the crate's Cargo.lock (`name version`).
    pub crates: Vec<String>,
    /// Where the steps found them.
    pub deps: Deps,
    /// The directory holding `raibid up`'s data (and so the cache), its filesystem, and
    /// whether `cp --reflink=always` works there (if not, `cp -a --reflink=auto` copies).
    pub data_dir: String,
    pub filesystem: String,
    pub reflinks: bool,
    pub jobs: Vec<CacheJob>,
    pub phases: Vec<CachePhase>,
    /// The cache entry after the cold job's save: `target/` of a full build.
    pub target_bytes: u64,
    pub target_files: u64,
    /// Bytes per second of the warm jobs' restores and saves (medians of the phase).
    pub restore_mib_per_s: f64,
    pub save_mib_per_s: f64,
    /// Baseline median job minus warm median job.
    pub warm_saves_s: f64,
    /// The `target/` size at which a warm job's restore plus save, at this run's copy rates,
    /// would cost as much as a full build without cache (baseline median build time).
    pub break_even_mib: f64,
}

impl CacheReport {
    pub fn render_table(&self) -> String {
        let mut out = format!(
            "cache: a Rust crate ({} crates: {}) built with `cargo build --offline --locked` \
             (dev profile, dependencies {}) under `raibid up`, executor {}\n\
             machine: {}; at end {:.2} {:.2} {:.2}\n\
             data: {} ({}, reflinks {})\n\n",
            self.crates.len(),
            self.crates.join(", "),
            self.deps.describe(),
            self.executor,
            self.machine,
            self.load_average_end[0],
            self.load_average_end[1],
            self.load_average_end[2],
            self.data_dir,
            self.filesystem,
            if self.reflinks {
                "apply"
            } else {
                "do not apply: cp -a copies"
            },
        );
        let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        let rows: Vec<Vec<String>> = self
            .jobs
            .iter()
            .map(|j| {
                vec![
                    j.phase.clone(),
                    format!("{:.1}", j.job_s),
                    format!("{:.1}", j.build_s),
                    opt(j.restore_s),
                    opt(j.save_s),
                    format!("{:.1}", j.other_s()),
                    j.compiled.to_string(),
                    j.entry_bytes
                        .map_or_else(|| "-".to_owned(), |b| format!("{:.1}", mib_of(b))),
                    j.entry_files
                        .map_or_else(|| "-".to_owned(), |f| f.to_string()),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "JOB",
                "JOB S",
                "BUILD S",
                "RESTORE S",
                "SAVE S",
                "OTHER S",
                "COMPILED",
                "ENTRY MIB",
                "FILES",
            ],
            &rows,
        ));
        out.push('\n');
        let rows: Vec<Vec<String>> = self
            .phases
            .iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    p.jobs.to_string(),
                    format!("{:.1}", p.job_s),
                    format!("{:.1}", p.build_s),
                    opt(p.restore_s),
                    opt(p.save_s),
                    p.compiled.to_string(),
                    format!("{:.2}x", p.speedup),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "PHASE (MEDIANS)",
                "JOBS",
                "JOB S",
                "BUILD S",
                "RESTORE S",
                "SAVE S",
                "COMPILED",
                "SPEED-UP",
            ],
            &rows,
        ));
        out.push_str(&format!(
            "\ncached target/ after the cold build: {:.1} MiB in {} files; warm copies: restore \
             {:.0} MiB/s, save {:.0} MiB/s\n\
             a warm job is {:.1} s faster than the baseline; restore + save would cost a full \
             build's time at a target/ of about {:.0} MiB\n",
            mib_of(self.target_bytes),
            self.target_files,
            self.restore_mib_per_s,
            self.save_mib_per_s,
            self.warm_saves_s,
            self.break_even_mib,
        ));
        out
    }
}

fn mib_of(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Runs the cache benchmark; see the module documentation.
pub async fn cache(opts: CacheBenchOptions) -> Result<CacheReport, BenchError> {
    let machine = Machine::detect();
    check_raibid(&opts.raibid_exe)?;
    require_tool("git", "git")?;
    require_tool("redis-server", "redis-server")?;
    if crate::procs::which("cargo").is_none() {
        return Err(BenchError::Invalid(
            "cargo is not on PATH: the benchmark vendors the crate's dependencies with it, and \
             its steps build with it"
                .into(),
        ));
    }
    let mut builder = tempfile::Builder::new();
    builder.prefix("raibid-bench-cache-");
    let temp_root = opts
        .temp_root
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let dir = builder
        .tempdir_in(&temp_root)
        .map_err(BenchError::io(format!(
            "creating a temporary directory in {}",
            temp_root.display()
        )))?;
    let root = dir.path();
    // The step user must reach the vendored dependencies (`raibid up` keeps its own data
    // directory private).
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))
        .map_err(BenchError::io("opening the temporary directory"))?;
    let (filesystem, reflinks) = filesystem_of(root).await;

    let git_root = root.join("git");
    let repo = crate_repository(root, &git_root, opts.deps).await?;
    let mut yaml = String::from("# raibid bench cache\n");
    if let Some(executor) = &opts.executor {
        yaml.push_str(&format!("agent:\n  executor: {executor}\n"));
    }
    let (ctx, stop_git) = Ctx::serving(
        &opts.raibid_exe,
        root,
        &yaml,
        git_root,
        REPO,
        repo.warm_up.clone(),
    )
    .await?;
    let result = run_phases(&ctx, &opts, &repo).await;
    stop_git.cancel();
    let (jobs, executor) = result?;
    let load_average_end = Machine::detect().load_average;
    summarize(SummaryInput {
        machine,
        load_average_end,
        executor,
        crates: repo.crates,
        deps: opts.deps,
        data_dir: root.display().to_string(),
        filesystem,
        reflinks,
        jobs,
    })
}

/// The commits of the benchmark's repository.
struct Repo {
    warm_up: String,
    baseline: String,
    cached: String,
    changed: String,
    crates: Vec<String>,
}

async fn run_phases(
    ctx: &Ctx,
    opts: &CacheBenchOptions,
    repo: &Repo,
) -> Result<(Vec<CacheJob>, String), BenchError> {
    let up = Up::start(ctx, "up", Some(1)).await?;
    let result = async {
        let mut finished = Finished::start_with_timeout(&up.queue, JOB_TIMEOUT).await?;
        let entry_dir = up.data.join("agent").join("git-mirrors").join("jobs");
        info!("warm-up job (creates the agents' mirror)");
        run_job(ctx, &up, &mut finished, "warm-up", &repo.warm_up, None).await?;
        let mut jobs = Vec::new();
        let plan = std::iter::repeat_n(("baseline", &repo.baseline), opts.baseline_jobs)
            .chain([("cold", &repo.cached)])
            .chain(std::iter::repeat_n(("warm", &repo.cached), opts.warm_jobs))
            .chain([("incremental", &repo.changed)]);
        for (i, (phase, sha)) in plan.enumerate() {
            info!(phase, job = i + 1, "cache benchmark job");
            let entry = (phase != "baseline").then_some(entry_dir.as_path());
            let job = run_job(ctx, &up, &mut finished, phase, sha, entry).await?;
            info!(
                phase,
                job_s = job.job_s,
                build_s = job.build_s,
                restore_s = job.restore_s,
                save_s = job.save_s,
                "done"
            );
            jobs.push(job);
        }
        Ok::<_, BenchError>(jobs)
    }
    .await;
    up.stop().await;
    let jobs = result?;
    let log = std::fs::read_to_string(ctx.root.join("up.log")).unwrap_or_default();
    Ok((jobs, executor_in_up_log(&log)))
}

/// Sends one job, waits for it and reads its figures; a failed build invalidates the run.
async fn run_job(
    ctx: &Ctx,
    up: &Up,
    finished: &mut Finished,
    phase: &str,
    sha: &str,
    entry_dir: Option<&Path>,
) -> Result<CacheJob, BenchError> {
    let delivery = format!("cache-{phase}-{}-{}", random_secret(), ctx.secret);
    let id = push_webhook(ctx, up, REPO, sha, &delivery).await?;
    let (status, _) = finished.wait(&id).await?;
    let record = up
        .queue
        .get(&id)
        .await?
        .ok_or_else(|| BenchError::Invalid(format!("job {id} disappeared")))?;
    let text: String = log_marks(&up.queue, &id)
        .await?
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    if status != JobStatus::Success {
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        return Err(BenchError::Invalid(format!(
            "{phase} job {id} ended {status}: {}; log tail:\n{}",
            record.reason.unwrap_or_default(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )));
    }
    let (Some(started), Some(finished_at)) = (record.started_at, record.finished_at) else {
        return Err(BenchError::Invalid(format!(
            "job {id} has no start or finish time"
        )));
    };
    let job_s = (finished_at - started).num_milliseconds() as f64 / 1000.0;
    let build_s = record
        .steps
        .iter()
        .filter_map(|s| s.duration_ms)
        .sum::<u64>() as f64
        / 1000.0;
    let lines = CacheLines::parse(&text);
    let (entry_bytes, entry_files) = match entry_dir {
        Some(dir) => {
            let dir = dir.to_path_buf();
            let (bytes, files) = tokio::task::spawn_blocking(move || tree_size(&dir))
                .await
                .map_err(|e| BenchError::Process {
                    what: "measuring the cache".into(),
                    message: e.to_string(),
                })?;
            (Some(bytes), Some(files))
        }
        None => (None, None),
    };
    let job = CacheJob {
        phase: phase.to_owned(),
        job_id: id.clone(),
        job_s,
        build_s,
        restore_s: lines.restore_s,
        save_s: lines.save_s,
        saved_size: lines.saved_size,
        compiled: lines.compiled,
        entry_bytes,
        entry_files,
        cache_notes: lines.notes,
    };
    let expect_restore = matches!(phase, "warm" | "incremental");
    let expect_save = matches!(phase, "cold" | "warm" | "incremental");
    if (expect_restore && job.restore_s.is_none()) || (expect_save && job.save_s.is_none()) {
        return Err(BenchError::Invalid(format!(
            "{phase} job {id} did not use the cache as expected: {:?}",
            job.cache_notes
        )));
    }
    Ok(job)
}

/// What the agent logged about the cache, and cargo's `Compiling` lines.
#[derive(Debug, Default, PartialEq)]
struct CacheLines {
    restore_s: Option<f64>,
    save_s: Option<f64>,
    saved_size: Option<String>,
    compiled: usize,
    notes: Vec<String>,
}

impl CacheLines {
    fn parse(log: &str) -> Self {
        let mut out = Self::default();
        for line in log.lines().map(strip_ansi) {
            let line = line.trim();
            if line.starts_with("Compiling ") {
                out.compiled += 1;
            } else if let Some(rest) = line.strip_prefix("cache: restored ") {
                out.restore_s = seconds_at_end(rest);
            } else if let Some(rest) = line.strip_prefix("cache: saved ") {
                out.save_s = seconds_at_end(rest);
                out.saved_size = rest
                    .rsplit_once(" in ")
                    .and_then(|(head, _)| head.rsplit_once('('))
                    .map(|(_, size)| size.trim_end_matches(')').to_owned());
            } else if line.starts_with("cache: ") {
                out.notes.push(line.to_owned());
            }
        }
        out
    }
}

/// `... in 1.23s` -> 1.23.
fn seconds_at_end(line: &str) -> Option<f64> {
    line.rsplit_once(" in ")?
        .1
        .trim()
        .strip_suffix('s')?
        .parse()
        .ok()
}

/// The line without its colour escapes (the agent colours warnings).
fn strip_ansi(line: &str) -> String {
    anstream::adapter::strip_str(line).to_string()
}

/// Bytes (regular files and links, hard links counted once) and files under `dir`, without
/// following links; 0 for a missing directory.
fn tree_size(dir: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut files = 0;
    let mut seen = HashSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(children) = std::fs::read_dir(&path) {
                pending.extend(children.flatten().map(|c| c.path()));
            }
        } else if meta.nlink() <= 1 || seen.insert((meta.dev(), meta.ino())) {
            bytes += meta.len();
            files += 1;
        }
    }
    (bytes, files)
}

/// The filesystem type of `dir` (`stat -f`), and whether `cp --reflink=always` works there.
async fn filesystem_of(dir: &Path) -> (String, bool) {
    let fs = tokio::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .await
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let probe = dir.join("reflink-probe");
    let copy = dir.join("reflink-probe.copy");
    let reflinks = std::fs::write(&probe, vec![7u8; 64 * 1024]).is_ok()
        && tokio::process::Command::new("cp")
            .arg("--reflink=always")
            .arg(&probe)
            .arg(&copy)
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
    let _ = std::fs::remove_file(&probe);
    let _ = std::fs::remove_file(&copy);
    (fs, reflinks)
}

/// How the pool's agents run steps, from `raibid up`'s `agents` line (`agents    0..1 on
/// demand, bwrap steps (...)`).
fn executor_in_up_log(log: &str) -> String {
    log.lines()
        .map(strip_ansi)
        .find_map(|l| {
            let rest = l.trim_start().strip_prefix("agents ")?;
            let (before, _) = rest.split_once(" steps")?;
            before.rsplit([' ', ',']).next().map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown (not in raibid up's output)".into())
}

const CARGO_TOML: &str = r#"[package]
name = "cache-bench"
version = "0.1.0"
edition = "2021"

[dependencies]
axum = "0.8"
clap = { version = "4", features = ["derive"] }
regex = "1"
serde = { version = "1", features = ["derive"] }
serde_json = "1"
tokio = { version = "1", features = ["rt-multi-thread", "macros", "io-util", "io-std", "net"] }
"#;

const LIB_RS: &str = r#"//! Reads `key=value` records, validates them and renders a JSON summary.

pub mod record;
pub mod report;
pub mod rules;
pub mod serve;
"#;

const RECORD_RS: &str = r#"use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub key: String,
    pub value: i64,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Added { record: Record },
    Removed { key: String },
    Renamed { from: String, to: String },
}

pub fn parse(line: &str) -> Option<Record> {
    let re = regex::Regex::new(r"^(?P<key>[a-z_]+)=(?P<value>-?\d+)(?:\s+#(?P<tags>[\w,]+))?$").ok()?;
    let caps = re.captures(line.trim())?;
    Some(Record {
        key: caps["key"].to_owned(),
        value: caps["value"].parse().ok()?,
        tags: caps
            .name("tags")
            .map(|t| t.as_str().split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}
"#;

const RULES_RS: &str = r#"use crate::record::Record;

pub fn check(record: &Record) -> Result<(), String> {
    if record.key.len() > 32 {
        return Err(format!("{}: key too long", record.key));
    }
    if record.value < -1_000_000 || record.value > 1_000_000 {
        return Err(format!("{}: value out of range", record.key));
    }
    Ok(())
}
"#;

const REPORT_RS: &str = r#"use std::collections::BTreeMap;

use serde::Serialize;

use crate::record::{Event, Record};

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub records: usize,
    pub total: i64,
    pub by_tag: BTreeMap<String, i64>,
    pub events: Vec<Event>,
}

pub const TITLE: &str = "summary";

pub fn summarize(records: &[Record]) -> Summary {
    let mut s = Summary::default();
    for r in records {
        s.records += 1;
        s.total += r.value;
        for t in &r.tags {
            *s.by_tag.entry(t.clone()).or_default() += r.value;
        }
        s.events.push(Event::Added { record: r.clone() });
    }
    s
}

pub fn render(summary: &Summary) -> String {
    serde_json::json!({ "title": TITLE, "summary": summary }).to_string()
}
"#;

const SERVE_RS: &str = r#"use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::record::Record;
use crate::report::{Summary, summarize};

pub fn router(records: Arc<Vec<Record>>) -> Router {
    Router::new()
        .route("/summary", get(summary))
        .route("/health", get(|| async { "ok" }))
        .with_state(records)
}

async fn summary(State(records): State<Arc<Vec<Record>>>) -> Json<Summary> {
    Json(summarize(&records))
}
"#;

const MAIN_RS: &str = r#"use std::sync::Arc;

use clap::Parser;
use tokio::io::AsyncBufReadExt;

/// Reads records from stdin, prints their summary, and serves it with --listen.
#[derive(Parser, Debug)]
struct Args {
    #[arg(long)]
    listen: Option<String>,
    #[arg(long, default_value_t = 10_000)]
    limit: usize,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut records = Vec::new();
    while let Some(line) = lines.next_line().await? {
        if let Some(r) = cache_bench::record::parse(&line) {
            if cache_bench::rules::check(&r).is_ok() {
                records.push(r);
            }
        }
        if records.len() >= args.limit {
            break;
        }
    }
    println!("{}", cache_bench::report::render(&cache_bench::report::summarize(&records)));
    if let Some(listen) = args.listen {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        axum::serve(listener, cache_bench::serve::router(Arc::new(records))).await?;
    }
    Ok(())
}
"#;

/// [`Deps::CachedInWorkspace`]'s `CARGO_HOME`, relative to the workspace.
const CARGO_HOME: &str = ".cargo-home";

fn pipeline(cache: bool, deps: Deps, outside: &Path) -> String {
    let mut yaml = String::from("# raibid bench cache\nenv:\n  CARGO_TERM_COLOR: never\n");
    let mut paths = vec!["target"];
    let mut script = String::new();
    if deps == Deps::CachedInWorkspace {
        yaml.push_str(&format!("  CARGO_HOME: {CARGO_HOME}\n"));
        paths.push(CARGO_HOME);
        // What a first download would do: files with new modification times, kept by the cache.
        script.push_str(&format!(
            "      test -d {CARGO_HOME}/vendor || {{ mkdir -p {CARGO_HOME} && cp -R {} \
             {CARGO_HOME}/vendor; }}\n",
            outside.display()
        ));
    }
    if cache {
        yaml.push_str(&format!("cache: [{}]\n", paths.join(", ")));
    }
    script.push_str("      cargo build --offline --locked\n");
    yaml.push_str(&format!("steps:\n  - name: build\n    run: |\n{script}"));
    yaml
}

/// The crate as a bare repository `<git_root>/bench/cache-crate.git` with its four commits.
async fn crate_repository(root: &Path, git_root: &Path, deps: Deps) -> Result<Repo, BenchError> {
    let work = root.join("work");
    let src = work.join("src");
    std::fs::create_dir_all(&src).map_err(BenchError::io("creating the crate"))?;
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(BenchError::io(format!("writing {}", path.display())))
    };
    write(&work.join("Cargo.toml"), CARGO_TOML)?;
    write(&work.join(".gitignore"), "/target\n")?;
    write(&src.join("lib.rs"), LIB_RS)?;
    write(&src.join("record.rs"), RECORD_RS)?;
    write(&src.join("rules.rs"), RULES_RS)?;
    write(&src.join("report.rs"), REPORT_RS)?;
    write(&src.join("serve.rs"), SERVE_RS)?;
    write(&src.join("main.rs"), MAIN_RS)?;
    info!("vendoring the crate's dependencies with the host's cargo");
    cargo(&work, &["generate-lockfile"]).await?;
    let outside = root.join("vendor");
    let vendor = match deps {
        Deps::InRepository => "vendor".to_owned(),
        Deps::Outside | Deps::CachedInWorkspace => outside.display().to_string(),
    };
    let mut config = cargo(&work, &["vendor", "--locked", &vendor]).await?;
    if deps == Deps::CachedInWorkspace {
        // Relative to the workspace: where the step copies them.
        config = config.replace(
            &format!("\"{vendor}\""),
            &format!("\"{CARGO_HOME}/vendor\""),
        );
    }
    std::fs::create_dir_all(work.join(".cargo")).map_err(BenchError::io("creating .cargo"))?;
    write(&work.join(".cargo").join("config.toml"), &config)?;
    let lock = std::fs::read_to_string(work.join("Cargo.lock"))
        .map_err(BenchError::io("reading Cargo.lock"))?;
    let crates = locked_crates(&lock);

    let home = root;
    git(
        Some(&work),
        &["init", "--quiet", "--initial-branch=main"],
        home,
    )
    .await?;
    let raibid_yaml = work.join(".raibid.yaml");
    write(&raibid_yaml, "steps:\n  - name: noop\n    run: \"true\"\n")?;
    // Forced: a vendored crate's own .gitignore must not leave out files its checksums list.
    let warm_up = commit(&work, home, "--force", ".", "The crate, no-op pipeline").await?;
    write(&raibid_yaml, &pipeline(false, deps, &outside))?;
    let baseline = commit(&work, home, "--", ".raibid.yaml", "Build it").await?;
    write(&raibid_yaml, &pipeline(true, deps, &outside))?;
    let cached = commit(&work, home, "--", ".raibid.yaml", "With cache: [target]").await?;
    write(
        &src.join("report.rs"),
        &REPORT_RS.replace(
            "pub const TITLE: &str = \"summary\";",
            "pub const TITLE: &str = \"records summary\";",
        ),
    )?;
    let changed = commit(&work, home, "--", "src/report.rs", "Rename the summary").await?;

    let bare = git_root.join(format!("{REPO}.git"));
    let bare_arg = bare.display().to_string();
    git(
        Some(&work),
        &["clone", "--quiet", "--bare", ".", &bare_arg],
        home,
    )
    .await?;
    Ok(Repo {
        warm_up,
        baseline,
        cached,
        changed,
        crates,
    })
}

/// `git add <flag> <path>`, then a commit; returns its id.
async fn commit(
    work: &Path,
    home: &Path,
    flag: &str,
    path: &str,
    message: &str,
) -> Result<String, BenchError> {
    git(Some(work), &["add", flag, path], home).await?;
    git(
        Some(work),
        &[
            "-c",
            "user.name=raibid bench",
            "-c",
            "user.email=bench@raibid.invalid",
            "-c",
            "commit.gpgsign=false",
            "commit",
            "--quiet",
            "-m",
            message,
        ],
        home,
    )
    .await?;
    Ok(git(Some(work), &["rev-parse", "HEAD"], home)
        .await?
        .trim()
        .to_owned())
}

/// The host's cargo, with its own environment (registry cache, network): only to vendor.
async fn cargo(dir: &Path, args: &[&str]) -> Result<String, BenchError> {
    let output = tokio::process::Command::new("cargo")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(BenchError::io("running cargo"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(BenchError::Process {
            what: format!("cargo {}", args.join(" ")),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// `name version` of every package of a Cargo.lock but the crate itself.
fn locked_crates(lock: &str) -> Vec<String> {
    let mut crates = Vec::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_owned());
        } else if let Some(v) = line.strip_prefix("version = ")
            && let Some(n) = name.take()
            && n != "cache-bench"
        {
            crates.push(format!("{n} {}", v.trim_matches('"')));
        }
    }
    crates
}

struct SummaryInput {
    machine: Machine,
    load_average_end: [f64; 3],
    executor: String,
    crates: Vec<String>,
    deps: Deps,
    data_dir: String,
    filesystem: String,
    reflinks: bool,
    jobs: Vec<CacheJob>,
}

fn median_s(values: impl Iterator<Item = f64>) -> Option<f64> {
    let samples: Vec<Duration> = values.map(Duration::from_secs_f64).collect();
    (!samples.is_empty()).then(|| median(&samples).as_secs_f64())
}

fn summarize(input: SummaryInput) -> Result<CacheReport, BenchError> {
    let jobs = input.jobs;
    let of = |phase: &'static str| jobs.iter().filter(move |j| j.phase == phase);
    let baseline_job = median_s(of("baseline").map(|j| j.job_s))
        .ok_or_else(|| BenchError::Invalid("no baseline job".into()))?;
    let phases: Vec<CachePhase> = ["baseline", "cold", "warm", "incremental"]
        .into_iter()
        .filter(|p| of(p).next().is_some())
        .map(|p| {
            let job_s = median_s(of(p).map(|j| j.job_s)).unwrap_or_default();
            let mut compiled: Vec<usize> = of(p).map(|j| j.compiled).collect();
            compiled.sort_unstable();
            CachePhase {
                name: p.to_owned(),
                jobs: of(p).count(),
                job_s,
                build_s: median_s(of(p).map(|j| j.build_s)).unwrap_or_default(),
                restore_s: median_s(of(p).filter_map(|j| j.restore_s)),
                save_s: median_s(of(p).filter_map(|j| j.save_s)),
                compiled: compiled[(compiled.len() - 1) / 2],
                speedup: baseline_job / job_s.max(f64::MIN_POSITIVE),
            }
        })
        .collect();
    let cold = of("cold")
        .next()
        .ok_or_else(|| BenchError::Invalid("no cold job".into()))?;
    let (target_bytes, target_files) = (
        cold.entry_bytes.unwrap_or_default(),
        cold.entry_files.unwrap_or_default(),
    );
    let warm = phases.iter().find(|p| p.name == "warm");
    let rate = |seconds: Option<f64>| {
        seconds
            .filter(|s| *s > 0.0)
            .map_or(0.0, |s| mib_of(target_bytes) / s)
    };
    let restore_mib_per_s = rate(warm.and_then(|w| w.restore_s));
    let save_mib_per_s = rate(warm.and_then(|w| w.save_s));
    let warm_saves_s = warm.map_or(0.0, |w| baseline_job - w.job_s);
    let baseline_build = median_s(of("baseline").map(|j| j.build_s)).unwrap_or_default();
    let break_even_mib = break_even(baseline_build, restore_mib_per_s, save_mib_per_s);
    Ok(CacheReport {
        machine: input.machine,
        load_average_end: input.load_average_end,
        executor: input.executor,
        crates: input.crates,
        deps: input.deps,
        data_dir: input.data_dir,
        filesystem: input.filesystem,
        reflinks: input.reflinks,
        jobs,
        phases,
        target_bytes,
        target_files,
        restore_mib_per_s,
        save_mib_per_s,
        warm_saves_s,
        break_even_mib,
    })
}

/// The size whose restore plus save, at these rates, takes `build_s`.
fn break_even(build_s: f64, restore_mib_per_s: f64, save_mib_per_s: f64) -> f64 {
    if restore_mib_per_s <= 0.0 || save_mib_per_s <= 0.0 {
        return 0.0;
    }
    build_s / (1.0 / restore_mib_per_s + 1.0 / save_mib_per_s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_agents_cache_lines_and_cargos() {
        let log = "\u{1b}[1m\u{25b6} step build\u{1b}[0m\n\
                   cache: restored target from key \"main\" (312.4 MiB, saved \
                   2026-12-04T10:00:00Z) in 3.21s\n\
                   \u{20}  Compiling cache-bench v0.1.0 (/w)\n\
                   \u{20}   Finished `dev` profile\n\
                   \u{1b}[33mcache: left out target/x\u{1b}[0m\n\
                   cache: saved target as key \"main\" (313.0 MiB) in 4.5s\n";
        let lines = CacheLines::parse(log);
        assert_eq!(lines.restore_s, Some(3.21));
        assert_eq!(lines.save_s, Some(4.5));
        assert_eq!(lines.saved_size.as_deref(), Some("313.0 MiB"));
        assert_eq!(lines.compiled, 1);
        assert_eq!(lines.notes, vec!["cache: left out target/x".to_owned()]);
        let miss = CacheLines::parse("cache: nothing saved under key \"main\" yet\n");
        assert_eq!(miss.restore_s, None);
        assert_eq!(miss.notes.len(), 1);
    }

    #[test]
    fn finds_the_executor_in_up_output() {
        let out = "raibid up\n  agents    0..1 on demand, bwrap steps (cooldown 30s, logs in /x)\n";
        assert_eq!(executor_in_up_log(out), "bwrap");
        assert!(executor_in_up_log("raibid up\n").starts_with("unknown"));
    }

    #[test]
    fn break_even_is_where_copying_costs_a_build() {
        // 100 MiB/s each way: 50 MiB/s for both, so 60 s of build is 3000 MiB.
        assert!((break_even(60.0, 100.0, 100.0) - 3000.0).abs() < 1e-9);
        assert_eq!(break_even(60.0, 0.0, 100.0), 0.0);
    }

    #[test]
    fn lists_the_locked_crates_but_the_crate_itself() {
        let lock = "version = 4\n\n[[package]]\nname = \"cache-bench\"\nversion = \"0.1.0\"\n\n\
                    [[package]]\nname = \"serde\"\nversion = \"1.0.228\"\n";
        assert_eq!(locked_crates(lock), vec!["serde 1.0.228".to_owned()]);
    }

    /// The agent's own parser reads them as meant: the same steps with and without the cache,
    /// which holds `.cargo-home` exactly when the dependencies are copied there.
    #[test]
    fn the_pipelines_differ_only_by_the_cache() {
        let outside = Path::new("/var/tmp/bench/vendor");
        for (deps, paths) in [
            (Deps::Outside, vec!["target"]),
            (Deps::InRepository, vec!["target"]),
            (Deps::CachedInWorkspace, vec!["target", CARGO_HOME]),
        ] {
            let parse = |cache| {
                raibid_pipeline::parse(".raibid.yaml", &pipeline(cache, deps, outside))
                    .unwrap_or_else(|e| panic!("{deps:?}: {e}"))
            };
            let (without, with) = (parse(false), parse(true));
            assert!(without.cache.is_none());
            assert_eq!(with.cache.as_ref().unwrap().paths, paths, "{deps:?}");
            assert_eq!(with.steps.len(), 1);
            assert_eq!(format!("{:?}", with.steps), format!("{:?}", without.steps));
            assert_eq!(with.env, without.env);
            assert_eq!(
                with.env.get("CARGO_HOME").map(String::as_str),
                (deps == Deps::CachedInWorkspace).then_some(CARGO_HOME),
            );
        }
        let copies = pipeline(true, Deps::CachedInWorkspace, outside);
        assert!(
            copies.contains("cp -R /var/tmp/bench/vendor .cargo-home/vendor"),
            "{copies}"
        );
    }
}
