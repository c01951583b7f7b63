//! `raibid exec`: runs the pipeline of a working tree here, once, as an agent would, and prints
//! its log (woodpecker-cli's `exec`, gitlab-runner's `exec`): for trying a `.raibid.yaml`
//! before pushing it.
//!
//! The working tree is taken as it is, uncommitted and untracked files included (ignored ones
//! not): it is written as a commit through a private index, so the user's index, branches and
//! stash stay as they were, and named by a temporary ref (`refs/raibid/exec/<id>`) for the
//! agent's clone, deleted afterwards. The job goes through the real parts: a private
//! redis-server, the queue, and an in-process agent with the configured executor, so matrix
//! variants and workflows run as jobs of their own, one after another, each log printed in
//! turn.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use raibid_config::{Config, PullLogin, Secret};
use raibid_model::{Event, Job, JobStatus, NewJob, PoolName};
use raibid_queue::{Enqueued, LogCursor, Queue};
use tokio_util::sync::CancellationToken;

use crate::cli::{AgentArgs, ExecArgs, ExecEvent};
use crate::commands::{agent, data_home, queue_options};
use crate::git;
use crate::local_redis::{Durability, LocalRedis};
use crate::local_registry::LocalRegistry;

pub async fn run(mut config: Config, args: ExecArgs) -> anyhow::Result<ExitCode> {
    let top = git::output(&args.dir, &["rev-parse", "--show-toplevel"], &[])
        .await
        .with_context(|| format!("{} is not in a git repository", args.dir.display()))?;
    let top = PathBuf::from(top);
    Snapshot::remove_abandoned(&top).await;
    let snapshot = Snapshot::take(&top).await?;
    let outcome = run_snapshot(&mut config, &args, &top, &snapshot).await;
    snapshot.remove().await;
    outcome
}

async fn run_snapshot(
    config: &mut Config,
    args: &ExecArgs,
    top: &Path,
    snapshot: &Snapshot,
) -> anyhow::Result<ExitCode> {
    for name in &args.secrets {
        let value = std::env::var(name).with_context(|| {
            format!("--secret {name}: set the environment variable {name} to its value")
        })?;
        config
            .agent
            .secrets
            .insert(name.clone(), Secret::new(value));
        // Given for this run: to whatever repository it is run as.
        config.agent.secret_repos.remove(name);
    }
    let data = data_home(config).join("exec");
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    // Each run its own Redis, so that runs side by side never see each other's jobs.
    let redis_dir = tempfile::Builder::new()
        .prefix("redis-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(&data)
        .context("creating a directory for redis-server")?;
    let password = crate::up::credentials::random_secret();
    let redis = LocalRedis::start(
        redis_dir.path(),
        None,
        Durability::Memory,
        Some(&password),
        None,
    )
    .await?;
    config.redis.url = Secret::new(redis.url());
    // No server shows this job: steps get no CI_PIPELINE_URL pointing at one that would not
    // know it.
    config.server.public_url.clear();
    let registry = match start_registry(config, &data).await {
        Ok(registry) => registry,
        Err(e) => {
            redis.stop().await;
            return Err(e);
        }
    };
    let result = run_job(config, args, top, snapshot).await;
    if let Some((registry, _dir)) = registry {
        registry.stop().await;
    }
    redis.stop().await;
    result
}

/// The configured registry's login, as a login to pull with (`agent.pull_logins`): a build
/// `FROM` an image CI pushed there (a base image), or a step running one, works as it will in
/// CI, while nothing of the run can be pushed there.
fn keep_for_pulls(config: &mut Config) {
    let registry = &config.agent.registry;
    let host = config.registry_host();
    if registry.username.is_empty()
        || host.is_empty()
        || config.agent.pull_logins.iter().any(|l| l.host == host)
    {
        return;
    }
    let login = PullLogin {
        host,
        username: registry.username.clone(),
        password: registry.password.clone(),
        insecure: registry.insecure,
    };
    config.agent.pull_logins.push(login);
}

/// A registry of this run's own, as `raibid up` brings one, in place of any configured: image
/// builds and `artifacts:` work as they will in CI (and `--artifacts` copies the latter out),
/// while a working tree's uncommitted build never lands in the real registry (over the
/// `:main` a deployment pulls) and nothing of a forgotten run is left there. It and what
/// was pushed to it go with the run. Without docker-registry there is no registry: the agent
/// notes that it keeps no artifacts, and image builds fail saying they need one.
async fn start_registry(
    config: &mut Config,
    data: &Path,
) -> anyhow::Result<Option<(LocalRegistry, tempfile::TempDir)>> {
    keep_for_pulls(config);
    if !LocalRegistry::available() {
        config.agent.registry = Default::default();
        config.gitea.url.clear();
        return Ok(None);
    }
    let dir = tempfile::Builder::new()
        .prefix("registry-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(data)
        .context("creating a directory for docker-registry")?;
    let password = crate::up::credentials::random_secret();
    let registry = LocalRegistry::start(dir.path(), &password).await?;
    registry.configure_agents(config);
    Ok(Some((registry, dir)))
}

async fn run_job(
    config: &Config,
    args: &ExecArgs,
    top: &Path,
    snapshot: &Snapshot,
) -> anyhow::Result<ExitCode> {
    let mut pools = vec![PoolName::default()];
    for pool in config.agent.pools.iter().chain(&args.pools) {
        if !pools.contains(pool) {
            pools.push(pool.clone());
        }
    }
    let agent_args = AgentArgs {
        once: false,
        idle_timeout: None,
        concurrency: Some(1),
        name: Some(format!("exec-{}", std::process::id())),
        pools: pools.clone(),
        labels: Vec::new(),
        executor: args.executor,
        keep_workspace: args.keep_workspace,
        data_dir: Some(data_home(config).join("exec").join("agent")),
        grace_period: Some(5),
        ephemeral: true,
    };
    let (runner, options) = agent::prepare(config, &agent_args).await?;
    let queue = Queue::open(queue_options(config))?;

    let repo = match &args.repo {
        Some(repo) => repo.clone(),
        None => format!("local/{}", repo_name(top)),
    };
    let branch = match &args.branch {
        Some(branch) => branch.clone(),
        None => git::output(top, &["symbolic-ref", "--quiet", "--short", "HEAD"], &[])
            .await
            .unwrap_or_else(|_| "main".into()),
    };
    let event = match args.event {
        ExecEvent::Push => Event::Push,
        ExecEvent::Manual => Event::Manual,
    };
    let mut spec = NewJob::new(
        &repo,
        format!("file://{}", top.display()),
        format!("refs/heads/{branch}"),
        &snapshot.sha,
        event,
    );
    spec.env = crate::commands::job::parse_env(&args.env)?;
    let root = match queue.enqueue(spec).await? {
        Enqueued::Created(job) => job.id,
        Enqueued::Duplicate { job_id } => job_id,
    };
    eprintln!(
        "raibid exec: {repo} {branch} at {} ({}), job {root}",
        &snapshot.sha[..12],
        if snapshot.changed {
            "the working tree, with its changes"
        } else {
            "the working tree, as committed"
        }
    );

    let shutdown = CancellationToken::new();
    let mut agent = tokio::spawn(raibid_agent::run_agent(runner, options, shutdown.clone()));
    // What the server does when a job ends (workflows that `depends_on` it, the next holder
    // of a concurrency group); without a server here, by sweeping this private queue.
    let settler = {
        let queue = queue.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let _ = queue.sweep_waiting(chrono::Utc::now()).await;
                let _ = queue.sweep_groups().await;
            }
        })
    };
    let shown = tokio::select! {
        shown = show(&queue, &root, &pools) => shown,
        ended = &mut agent => Err(match ended {
            Ok(Ok(_)) => anyhow::anyhow!("the agent stopped before the job ended"),
            Ok(Err(e)) => anyhow::Error::new(e).context("the agent stopped"),
            Err(e) => anyhow::anyhow!("the agent failed: {e}"),
        }),
        () = crate::commands::shutdown_signal() => {
            eprintln!("raibid exec: interrupted; cancelling the job");
            settler.abort();
            let jobs = cancel_all(&queue, &root).await;
            // A running step is stopped within a heartbeat; its agent then acks.
            let _ = tokio::time::timeout(Duration::from_secs(10), all_ended(&queue, &jobs)).await;
            shutdown.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), &mut agent).await;
            return Ok(ExitCode::from(130));
        }
    };
    settler.abort();
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), &mut agent).await;
    let ended = shown?;
    let kept: Vec<&Job> = ended.iter().filter(|job| job.artifacts.is_some()).collect();
    // Not copied out is a failed run, said after the jobs' own results rather than in place
    // of them. Kept at all, they are in the run's own registry (see `start_registry`).
    let not_copied = match &args.artifacts {
        Some(dir) => copy_artifacts(config, &kept, ended.len() > 1, dir)
            .await
            .err(),
        None => {
            if !kept.is_empty() {
                eprintln!(
                    "raibid exec: the artifacts were kept in this run's own registry, gone \
                     with it: `--artifacts DIR` unpacks them"
                );
            }
            None
        }
    };
    let failed: Vec<&Job> = ended
        .iter()
        .filter(|job| !matches!(job.status, JobStatus::Success | JobStatus::Skipped))
        .collect();
    if ended.len() > 1 {
        eprintln!();
        for job in &ended {
            eprintln!(
                "raibid exec: {} {}",
                job.label().unwrap_or_else(|| job.id.clone()),
                job.status
            );
        }
    }
    if let Some(e) = &not_copied {
        eprintln!("raibid exec: --artifacts: {e:#}");
    }
    Ok(if failed.is_empty() && not_copied.is_none() {
        eprintln!("raibid exec: succeeded");
        ExitCode::SUCCESS
    } else {
        for job in &failed {
            let reason = job.reason.as_deref().unwrap_or("");
            eprintln!(
                "raibid exec: {} {}{}{reason}",
                job.label().unwrap_or_else(|| job.id.clone()),
                job.status,
                if reason.is_empty() { "" } else { ": " }
            );
        }
        ExitCode::FAILURE
    })
}

/// Unpacks the artifacts each job kept into `dir`, or with several jobs (matrix variants,
/// workflows) into a directory of `dir` named for each, as `raibid job artifacts` would.
async fn copy_artifacts(
    config: &Config,
    jobs: &[&Job],
    several: bool,
    dir: &Path,
) -> anyhow::Result<()> {
    if jobs.is_empty() {
        eprintln!("raibid exec: no artifacts to copy into {}", dir.display());
    }
    for job in jobs {
        let dest = if several {
            dir.join(artifacts_dir_name(job))
        } else {
            dir.to_path_buf()
        };
        let (_, files) = super::job::download_artifacts(
            super::job::ArtifactSource::Registry(config),
            job,
            &dest,
        )
        .await?;
        eprintln!(
            "raibid exec: artifacts{}: {files} file(s) in {}",
            job.label().map(|l| format!(" of {l}")).unwrap_or_default(),
            dest.display()
        );
    }
    Ok(())
}

/// A job's directory below `--artifacts`: its label, `workflow/variant` making two levels, or
/// its id where a part would not make a plain file name (a matrix value may hold `/`, and a
/// variant's name runs to 2,079 characters).
fn artifacts_dir_name(job: &Job) -> PathBuf {
    let plain = |part: &String| {
        !part.is_empty()
            && part.len() <= 128
            && part != "."
            && part != ".."
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._,=+@-".contains(c))
    };
    let (workflow, variant) = job.label_parts();
    let parts: Vec<&String> = workflow.into_iter().chain(variant).collect();
    if !parts.is_empty() && parts.iter().all(|part| plain(part)) {
        parts.iter().map(|part| part.as_str()).collect()
    } else {
        PathBuf::from(&job.id)
    }
}

/// Prints the log of job `root`, then those of the jobs it queued (matrix variants,
/// workflows), in order and each in turn; returns the jobs that ran the steps, ended.
async fn show(queue: &Queue, root: &str, pools: &[PoolName]) -> anyhow::Result<Vec<Job>> {
    let mut ended = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(id) = pending.pop() {
        let job = follow(queue, &id, pools, id != root).await?;
        if job.children.is_empty() {
            ended.push(job);
        } else {
            pending.extend(job.children.iter().rev().cloned());
        }
    }
    Ok(ended)
}

/// Prints one job's log as it is written, until the job ends.
async fn follow(queue: &Queue, id: &str, pools: &[PoolName], header: bool) -> anyhow::Result<Job> {
    let mut printed_header = !header;
    let mut follower = queue.log_follower(id).await?;
    let mut cursor = LogCursor::start();
    let mut stdout = anstream::stdout();
    loop {
        let batch = follower.next(&cursor, Duration::from_millis(500)).await?;
        let job = queue
            .get(id)
            .await?
            .with_context(|| format!("job {id} disappeared"))?;
        if !printed_header {
            printed_header = true;
            eprintln!("\n── {} ──", job.label().unwrap_or_else(|| job.id.clone()));
        }
        if job.status == JobStatus::Queued && !pools.contains(&job.spec.pool) {
            bail!(
                "job {id} waits in pool {}, which this run does not take jobs from: give \
                 `--pool {}`",
                job.spec.pool,
                job.spec.pool
            );
        }
        for chunk in &batch.chunks {
            stdout.write_all(&chunk.data)?;
        }
        stdout.flush()?;
        cursor = batch.next;
        if batch.finished {
            return Ok(job);
        }
    }
}

/// Cancels `root` and every job it queued; returns their ids.
async fn cancel_all(queue: &Queue, root: &str) -> Vec<String> {
    let mut jobs = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(id) = pending.pop() {
        let _ = queue.cancel_because(&id, "cancelled").await;
        if let Ok(Some(job)) = queue.get(&id).await {
            pending.extend(job.children);
        }
        jobs.push(id);
    }
    jobs
}

/// Until every one of `jobs` has ended (or cannot be read).
async fn all_ended(queue: &Queue, jobs: &[String]) {
    for id in jobs {
        while let Ok(Some(job)) = queue.get(id).await {
            if job.status.is_final() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `owner/name`'s name part for a directory: what forges allow in repository names.
fn repo_name(top: &Path) -> String {
    let name: String = top
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches('.');
    if name.is_empty() {
        "repo".into()
    } else {
        name.to_owned()
    }
}

/// Where the temporary refs live: `<EXEC_REFS><pid>-<random>`.
const EXEC_REFS: &str = "refs/raibid/exec/";

/// A ref under [`EXEC_REFS`] whose process no longer runs on this machine. A name not of that
/// form is not one of ours to delete.
fn abandoned(reference: &str) -> bool {
    let Some(pid) = reference
        .strip_prefix(EXEC_REFS)
        .and_then(|rest| rest.split_once('-'))
        .and_then(|(pid, _)| pid.parse::<i32>().ok())
        .filter(|pid| *pid > 0)
    else {
        return false;
    };
    // Signal 0 only asks whether the process exists; EPERM means it does (another user's).
    matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// The working tree as a commit, named by a temporary ref.
struct Snapshot {
    top: PathBuf,
    sha: String,
    reference: String,
    /// It differs from HEAD (changes, untracked files, or no HEAD yet).
    changed: bool,
}

impl Snapshot {
    async fn take(top: &Path) -> anyhow::Result<Self> {
        // A private index, starting from the real one so that what is staged counts, and
        // nothing the user has staged or not is touched.
        let index_dir = tempfile::tempdir().context("creating a temporary index")?;
        let index = index_dir.path().join("index");
        let real = git::output(top, &["rev-parse", "--git-path", "index"], &[]).await?;
        let real = top.join(real);
        if real.exists() {
            std::fs::copy(&real, &index).context("copying the index")?;
        }
        let env = [("GIT_INDEX_FILE", index.as_os_str())];
        git::output(top, &["add", "--all", "--", "."], &env)
            .await
            .context("reading the working tree")?;
        let tree = git::output(top, &["write-tree"], &env).await?;
        let head = git::output(
            top,
            &["rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
            &[],
        )
        .await
        .ok();
        let head_tree = match &head {
            Some(_) => git::output(top, &["rev-parse", "HEAD^{tree}"], &[])
                .await
                .ok(),
            None => None,
        };
        let (sha, changed) = match (&head, head_tree) {
            (Some(head), Some(head_tree)) if head_tree == tree => (head.clone(), false),
            _ => {
                let mut commit = vec![
                    "commit-tree",
                    tree.as_str(),
                    "-m",
                    "raibid exec: the working tree",
                ];
                if let Some(head) = &head {
                    commit.extend(["-p", head.as_str()]);
                }
                // An identity of its own when the user has none configured.
                let id = [
                    ("GIT_AUTHOR_NAME", "raibid exec".as_ref()),
                    ("GIT_AUTHOR_EMAIL", "exec@raibid.invalid".as_ref()),
                    ("GIT_COMMITTER_NAME", "raibid exec".as_ref()),
                    ("GIT_COMMITTER_EMAIL", "exec@raibid.invalid".as_ref()),
                ];
                (git::output(top, &commit, &id).await?, true)
            }
        };
        let reference = format!(
            "{EXEC_REFS}{}-{}",
            std::process::id(),
            crate::up::credentials::random_secret()
                .get(..8)
                .unwrap_or_default()
        );
        git::output(top, &["update-ref", &reference, &sha], &[]).await?;
        Ok(Self {
            top: top.to_path_buf(),
            sha,
            reference,
            changed,
        })
    }

    /// Deletes the refs of earlier runs that died before deleting theirs (killed, or
    /// interrupted before the job was queued, when Ctrl-C still ends the process at once):
    /// those whose process (the number the ref's name starts with) no longer runs here. A run
    /// going on beside this one keeps its ref.
    async fn remove_abandoned(top: &Path) {
        let Ok(refs) = git::output(
            top,
            &["for-each-ref", "--format=%(refname)", EXEC_REFS],
            &[],
        )
        .await
        else {
            return;
        };
        for reference in refs.lines().filter(|r| abandoned(r)) {
            if git::output(top, &["update-ref", "-d", reference], &[])
                .await
                .is_ok()
            {
                eprintln!("raibid exec: deleted {reference}, left by a run that was stopped");
            }
        }
    }

    async fn remove(&self) {
        if let Err(e) = git::output(&self.top, &["update-ref", "-d", &self.reference], &[]).await {
            eprintln!(
                "raibid exec: could not delete {} (`git update-ref -d {}`): {e:#}",
                self.reference, self.reference
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_from_directories() {
        assert_eq!(repo_name(Path::new("/src/my app")), "my-app");
        assert_eq!(repo_name(Path::new("/src/raibid-ci")), "raibid-ci");
        assert_eq!(repo_name(Path::new("/")), "repo");
    }

    #[test]
    fn artifacts_go_to_a_directory_named_for_the_job_when_its_name_is_a_plain_one() {
        let job = |workflow: Option<&str>, variant: Option<&str>| {
            let mut spec = NewJob::new("o/r", "u", "refs/heads/main", "a".repeat(40), Event::Push);
            if let Some(workflow) = workflow {
                spec.env.insert("RAIBID_WORKFLOW".into(), workflow.into());
            }
            if let Some(variant) = variant {
                spec.matrix_parent = Some("parent".into());
                spec.env.insert("RAIBID_MATRIX".into(), variant.into());
            }
            Job::queued("01JOB", spec, chrono::Utc::now())
        };
        let name = |workflow, variant| artifacts_dir_name(&job(workflow, variant));
        assert_eq!(name(None, None), Path::new("01JOB"));
        assert_eq!(
            name(None, Some("RUST=1.80,TARGET=x86_64")),
            Path::new("RUST=1.80,TARGET=x86_64")
        );
        assert_eq!(name(Some("build"), None), Path::new("build"));
        assert_eq!(
            name(Some("build"), Some("OS=linux")),
            Path::new("build/OS=linux")
        );
        // A value with `/`, `..`, a space, or a name no file system takes: the job's id.
        assert_eq!(name(None, Some("PLATFORM=linux/arm64")), Path::new("01JOB"));
        assert_eq!(name(Some(".."), None), Path::new("01JOB"));
        assert_eq!(name(None, Some("NAME=a b")), Path::new("01JOB"));
        assert_eq!(
            name(None, Some(&format!("V={}", "x".repeat(200)))),
            Path::new("01JOB")
        );
    }

    #[test]
    fn only_refs_of_processes_that_are_gone_are_abandoned() {
        let me = std::process::id();
        assert!(!abandoned(&format!("{EXEC_REFS}{me}-abcdef12")));
        // Past the largest process number Linux hands out (2^22).
        assert!(abandoned(&format!("{EXEC_REFS}4194305-abcdef12")));
        assert!(!abandoned(&format!("{EXEC_REFS}mine")));
        assert!(!abandoned(&format!("{EXEC_REFS}0-abcdef12")));
        assert!(!abandoned("refs/heads/4194305-x"));
    }
}
