use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// raibid-ci: an autoscaling CI agent pool for self-hosted forges.
#[derive(Debug, Parser)]
#[command(name = "raibid", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// `raibid-agent`'s command line: `raibid agent`'s, global options included.
#[derive(Debug, Parser)]
#[command(
    name = "raibid-agent",
    version,
    about = "Run an agent that claims and runs jobs (`raibid agent` without the other commands)"
)]
pub struct AgentCli {
    #[command(flatten)]
    pub global: Global,
    #[command(flatten)]
    pub args: AgentArgs,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Configuration file [default: $RAIBID_CONFIG or ~/.config/raibid/config.yaml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log filter (`info`, `debug`, `raibid_queue=trace`); RAIBID_LOG wins.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// The program's own log lines (on stderr): `json` for a log collector, one object a line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Colours in job logs and the program's own log lines: `auto` at a terminal (unless
    /// NO_COLOR is set; CLICOLOR_FORCE forces them), so that a log saved to a file or piped
    /// to grep is plain text.
    #[arg(long, global = true, value_enum, default_value_t = ColorWhen::Auto, value_name = "WHEN")]
    pub color: ColorWhen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// The API's objects, for scripts (`jq`).
    Json,
}

/// Where the API is and how to authenticate, for commands that are API clients.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Server URL [default: http://<server.listen>]
    #[arg(long, global = true, env = "RAIBID_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Bearer token: needed for mutating calls (and reads with server.read_requires_token).
    #[arg(
        long,
        global = true,
        env = "RAIBID_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// How results are printed on stdout.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the effective configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Create and hash API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Submit, inspect and control jobs through the API.
    Job(JobArgs),
    /// The repositories with jobs, and a repository's branches, pull requests and tags with
    /// their newest builds.
    Repo(RepoArgs),
    /// The scheduled jobs the server runs (`server.schedules`).
    Schedule(ScheduleArgs),
    /// Pause a pool (its jobs wait, queued, and agents take none) and resume it.
    Pool(PoolArgs),
    /// The secrets of a repository or owner, which steps read by naming them in `secrets:`.
    Secret(SecretArgs),
    /// Check a pipeline file as an agent would read it.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// Run everything on this machine: a private redis-server, the server and a local agent
    /// pool that scales 0..N with the queue.
    Up(UpArgs),
    /// What is running: server, Redis, pools, agents, recent failures.
    Status(StatusArgs),
    /// Copy everything raibid keeps in Redis (jobs, logs, sealed secrets, schedules, sessions)
    /// to a file: Redis's RDB, taken as a replica takes it, without stopping anything.
    Backup(BackupArgs),
    /// Put a backup back as `raibid up`'s data (stopped): its current data is kept aside.
    Restore(RestoreArgs),
    /// The terminal dashboard: jobs, live logs, queues, agents, cluster.
    Tui(TuiArgs),
    /// Set up cluster components (k3s, redis, gitea, keda, flux, server, agents) in order.
    Setup(raibid_infra::SetupArgs),
    /// Remove cluster components, in reverse order.
    Teardown(raibid_infra::TeardownArgs),
    /// Render, validate and check the Kubernetes manifests in infra/.
    #[command(subcommand)]
    Infra(raibid_infra::InfraCommand),
    /// Run the HTTP server: webhooks, jobs API, live logs, commit status, metrics.
    Server(ServerArgs),
    /// Run an agent that claims and runs jobs.
    Agent(AgentArgs),
    /// Run the pipeline of a working tree here, once, as an agent would, and print its log:
    /// uncommitted and untracked files included (ignored ones not), on a private redis-server,
    /// with the configured executor. Exits 0 only if every job succeeded.
    Exec(ExecArgs),
    /// Measure raibid-ci against its targets (not part of the test suite).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// A directory of the repository.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// How steps are isolated [default: agent.executor].
    #[arg(long, value_enum)]
    pub executor: Option<ExecutorArg>,
    /// The branch the job is for (`when: branch`, `CI_COMMIT_BRANCH`) [default: the one
    /// checked out, else main].
    #[arg(long)]
    pub branch: Option<String>,
    /// The `owner/name` the job is for (`agent.secret_repos`, `agent.repos`) [default:
    /// local/<directory name>].
    #[arg(long)]
    pub repo: Option<String>,
    /// The event the job is for.
    #[arg(long, value_enum, default_value_t = ExecEvent::Push)]
    pub event: ExecEvent,
    /// Extra environment, repeatable: `--env KEY=VALUE`. `RAIBID_WORKFLOW=NAME` runs one
    /// workflow of `.raibid/`, `RAIBID_MATRIX=NAME` one variant of a matrix.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// More pools to take jobs from (a pipeline's `pool:`), repeatable [default: default and
    /// agent.pools].
    #[arg(long = "pool", value_name = "POOL")]
    pub pools: Vec<raibid_model::PoolName>,
    /// Keep each job's workspace after it ends.
    #[arg(long)]
    pub keep_workspace: bool,
    /// A secret steps may name in `secrets:`, its value taken from this command's environment
    /// variable of the same name (never from the command line, which other users can read);
    /// repeatable. Over `agent.secrets` of the same name.
    #[arg(long = "secret", value_name = "NAME")]
    pub secrets: Vec<String>,
    /// Unpack the `artifacts:` the jobs kept into DIR (one directory in it per matrix variant
    /// or workflow). Without a registry configured they are kept in one of the run's own,
    /// gone with it.
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecEvent {
    Push,
    Manual,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The file to write [default: raibid-backup-<UTC time>.rdb here].
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// `raibid up`'s data directory, running or not [default: up.data_dir or
    /// ~/.local/share/raibid, unless a Redis is configured].
    #[arg(long, value_name = "DIR", conflicts_with = "redis_url")]
    pub data_dir: Option<PathBuf>,
    /// The Redis to copy [default: redis.url when configured (RAIBID_REDIS_URL or the
    /// configuration file), else raibid up's].
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A file `raibid backup` wrote.
    pub file: PathBuf,
    /// `raibid up`'s data directory [default: up.data_dir or ~/.local/share/raibid].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where Redis data, workspaces, caches and generated secrets live [default: up.data_dir or
    /// ~/.local/share/raibid].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Server address [default: server.listen, 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// Most agents at once [default: up.max_agents or the number of cores].
    #[arg(long, value_name = "N")]
    pub max_agents: Option<u32>,
    /// Webhook secret [default: server.webhook_secret, else generated into <data-dir>/webhook-secret].
    #[arg(
        long,
        env = "RAIBID_UP_WEBHOOK_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub webhook_secret: Option<String>,
    /// Read the webhook secret from a file.
    #[arg(long, value_name = "FILE", conflicts_with = "webhook_secret")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Use this Redis (7+) instead of starting a private redis-server.
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Idle seconds before an agent with nothing to do exits [default: up.cooldown_secs].
    #[arg(long, value_name = "SECS")]
    pub cooldown: Option<u64>,
    /// Build a demo repository: one branch that passes, one that fails.
    #[arg(long)]
    pub demo: bool,
    /// With --demo: stop once the demo jobs have finished (exit 0 if they ended as expected).
    #[arg(long, requires = "demo")]
    pub exit_after_demo: bool,
    /// Start nothing: print a systemd service unit that runs `raibid up` with these options at
    /// boot (for /etc/systemd/system/raibid-up.service).
    #[arg(long, conflicts_with = "demo")]
    pub systemd_unit: bool,
}

#[derive(Debug, Args)]
pub struct TuiArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Seconds between refreshes of jobs, queues and agents.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub refresh: f64,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The cluster's view of this component (k3s, redis, gitea, keda, flux, server, agents),
    /// or of all of them; each must then be deployed.
    #[arg(value_enum)]
    pub component: Option<raibid_infra::ComponentArg>,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on [default: server.listen].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Claim at most one job, run it and exit; exit quietly after --idle-timeout without one.
    #[arg(long)]
    pub once: bool,
    /// Seconds to wait for a job with --once [default: agent.idle_timeout_secs].
    #[arg(long, value_name = "SECS")]
    pub idle_timeout: Option<u64>,
    /// Jobs run at the same time (long-running mode) [default: agent.concurrency].
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Agent name, unique among agents [default: agent.name or <hostname>-<pid>].
    #[arg(long)]
    pub name: Option<String>,
    /// Pools to take jobs from, repeatable [default: agent.pools].
    #[arg(long = "pool", value_name = "POOL")]
    pub pools: Vec<raibid_model::PoolName>,
    /// Labels shown in the agent list, repeatable: `--label gpu=a100`.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// How steps are isolated [default: agent.executor].
    #[arg(long, value_enum)]
    pub executor: Option<ExecutorArg>,
    /// Keep each job's workspace after it ends (for debugging).
    #[arg(long)]
    pub keep_workspace: bool,
    /// Where workspaces, git mirrors and image layers live [default: <up.data_dir>/agent if set,
    /// else $XDG_DATA_HOME/raibid/agent or ~/.local/share/raibid/agent].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Seconds a running job may still take after SIGTERM [default: agent.grace_period_secs].
    #[arg(long, value_name = "SECS")]
    pub grace_period: Option<u64>,
    /// The agent of `raibid exec`: its jobs are forgotten with the run, so their artifacts
    /// cannot be fetched by job id later, nor expire (see `RunnerSettings::ephemeral`).
    #[arg(skip)]
    pub ephemeral: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecutorArg {
    Auto,
    Host,
    Bwrap,
    Container,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the configuration after defaults, file and RAIBID_* variables (secrets redacted).
    Show,
    /// Print which file is read.
    Path,
}

#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Parse and validate a `.raibid.yaml`, or the workflows of a `.raibid/` directory; print
    /// what they run, or the errors with file, line and column (exit code 1).
    Check {
        #[arg(default_value = raibid_pipeline::PIPELINE_FILE)]
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenScopeArg {
    Read,
    Jobs,
    Secrets,
    Pools,
}

impl From<TokenScopeArg> for raibid_config::TokenScope {
    fn from(scope: TokenScopeArg) -> Self {
        match scope {
            TokenScopeArg::Read => raibid_config::TokenScope::Read,
            TokenScopeArg::Jobs => raibid_config::TokenScope::Jobs,
            TokenScopeArg::Secrets => raibid_config::TokenScope::Secrets,
            TokenScopeArg::Pools => raibid_config::TokenScope::Pools,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new random token and the hash to put into `server.tokens`; with `--name`, an
    /// entry that names it and may limit what it does (`--scope`) and to which repositories
    /// (`--repo`).
    New {
        /// The token's name in the server's log (letters, digits, '-', '_', '.').
        #[arg(long)]
        name: Option<String>,
        /// What it may do: read, jobs (submit, cancel, retry, approve), secrets; repeat for
        /// several [default: all]. Every token reads.
        #[arg(long = "scope", value_name = "SCOPE", requires = "name")]
        scopes: Vec<TokenScopeArg>,
        /// A glob over owner/name of the repositories whose jobs and secrets it may change
        /// (and, when reads need a token, the only ones it reads); repeat for several
        /// [default: every repository].
        #[arg(long = "repo", value_name = "GLOB", requires = "name")]
        repos: Vec<String>,
    },
    /// Print the `server.tokens` entry for a token read from standard input.
    Hash,
}

#[derive(Debug, Args)]
pub struct JobArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub command: JobCommand,
}

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub command: ScheduleCommand,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Each schedule: its cron expression, when it runs next, and its last job.
    List,
    /// Queue a schedule's job now, as an occurrence would (the head of its branch, event
    /// cron); the timetable goes on as before.
    Run {
        /// The schedule's name in `server.schedules`.
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct RepoArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub command: RepoCommand,
}

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// The repositories with jobs, the most recently active first, each with its newest
    /// build.
    List,
    /// A repository's branches, pull requests and tags, each with its newest build (found
    /// among its 1,000 newest jobs).
    Show {
        /// The repository, as `owner/name`.
        repo: String,
    },
}

#[derive(Debug, Args)]
pub struct PoolArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub command: PoolCommand,
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Hold a pool's jobs for maintenance or to free the machine: webhooks still queue them,
    /// no agent takes one (`raibid up` starts none), jobs already running go on.
    ///
    /// Needs a token of the `pools` scope for every repository. `raibid status`, the dashboard
    /// and the job list show the pause, its author and reason until the pool is resumed.
    Pause {
        /// The pool, as `raibid status` lists it.
        pool: String,
        /// Why, in one line (at most 200 characters): shown wherever the pool is.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Let agents take a paused pool's jobs again, oldest first.
    Resume {
        /// The pool, as `raibid status` lists it.
        pool: String,
    },
}

#[derive(Debug, Args)]
pub struct SecretArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub command: SecretCommand,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Set a secret: a new one, or a new value.
    ///
    /// The value is read from standard input, never from the command line, which other users
    /// of the machine can see: typed at a prompt that does not echo it, or piped in (`echo`'s
    /// trailing newline is dropped), or read from --from-file as the file is.
    Set {
        #[command(flatten)]
        target: SecretTarget,
        /// The secret's name: the variable steps read it as.
        name: String,
        /// Read the value from this file, byte for byte (keys, certificates).
        #[arg(long, value_name = "PATH")]
        from_file: Option<PathBuf>,
        /// Only jobs of these events get it (push, tag, pull_request, manual, cron); repeat
        /// or separate with commas. Default: every event.
        #[arg(long = "event", value_name = "EVENT", value_delimiter = ',')]
        events: Vec<raibid_model::Event>,
        /// Only jobs of pushes to branches matching these globs get it (`main`,
        /// `release/*`), never pull requests' or tags'; repeat for more. Default: any.
        #[arg(long = "branch", value_name = "GLOB")]
        branches: Vec<String>,
    },
    /// The secrets of a repository or owner: names, events and when they were set (never
    /// values).
    List {
        #[command(flatten)]
        target: SecretTarget,
    },
    /// Delete a secret; steps that name it then fail (unless another secret of that name
    /// reaches them).
    #[command(alias = "delete")]
    Rm {
        #[command(flatten)]
        target: SecretTarget,
        name: String,
    },
}

/// Whose secret: a repository's, or with `--org` every repository of an owner's.
#[derive(Debug, Args)]
pub struct SecretTarget {
    /// The repository, `owner/name` as the forge names it; with --org, the owner (an
    /// organization or a user) whose repositories all get the secret.
    #[arg(value_name = "REPO")]
    pub target: String,
    /// The target is an owner: the secret is every one of its repositories' (a repository's
    /// own secret of the same name wins).
    #[arg(long)]
    pub org: bool,
}

impl SecretTarget {
    pub fn scope(&self) -> raibid_model::SecretScope {
        if self.org {
            raibid_model::SecretScope::Owner(self.target.clone())
        } else {
            raibid_model::SecretScope::Repo(self.target.clone())
        }
    }
}

/// How long following a job's log keeps trying to read a job it cannot (a server restarting):
/// `job logs --retry-for`'s default, and `job submit --follow`'s.
pub const FOLLOW_RETRY_SECS: u64 = 60;

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Queue a build of a repository at a ref or commit.
    Submit {
        /// `owner/name`
        repo: String,
        /// Clone URL (http(s)://, git:// or file://).
        #[arg(long)]
        clone_url: String,
        /// Branch name or full ref (refs/tags/v1.0 for a tag) [default: main].
        #[arg(long = "ref", value_name = "REF")]
        git_ref: Option<String>,
        /// Exact commit; resolved from the ref by the server when omitted.
        #[arg(long)]
        sha: Option<String>,
        /// Pool to queue it in [default: the server's `pool_rules` for the repository, else
        /// `server.default_pool`].
        #[arg(long)]
        pool: Option<String>,
        /// Extra environment, repeatable: `--env KEY=VALUE`. `RAIBID_WORKFLOW=NAME` runs one
        /// workflow of `.raibid/`, `RAIBID_MATRIX=NAME` one variant of a matrix.
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Then follow the build's logs as `job logs --follow` does, exiting as it ended (0
        /// only if every job of it succeeded): for scripts that build, then deploy.
        #[arg(long)]
        follow: bool,
        /// Send the submission again for this many seconds while the server cannot take it (503:
        /// Redis away, the queue full) or does not answer; it is queued once however often it
        /// is sent (`Idempotency-Key`). With --follow, also how long the build may stay unreadable.
        #[arg(long, value_name = "SECONDS", default_value_t = FOLLOW_RETRY_SECS)]
        retry_for: u64,
    },
    /// List jobs, newest first.
    List {
        /// Only jobs with this status.
        #[arg(long)]
        status: Option<raibid_model::JobStatus>,
        /// Only jobs of this repository (`owner/name`).
        #[arg(long)]
        repo: Option<String>,
        /// Only jobs of this pool.
        #[arg(long)]
        pool: Option<String>,
        /// Only jobs building this branch: pushes to it and pull requests into it.
        #[arg(long)]
        branch: Option<String>,
        /// Only jobs of this event (push, tag, pull_request, manual, cron).
        #[arg(long)]
        event: Option<raibid_model::Event>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Continue after this job id (from a previous page).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one job with its steps.
    Show { id: String },
    /// Print a job's log; `--follow` streams it until the job ends, reconnecting where it
    /// left off when the stream breaks, and exits 0 only if the job succeeded.
    Logs {
        id: String,
        #[arg(long, short)]
        follow: bool,
        /// Only this step's lines (of steps running side by side, without their `[NAME] `).
        #[arg(long, value_name = "NAME")]
        step: Option<String>,
        /// With --follow: give up when the job could not be read for this many seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = FOLLOW_RETRY_SECS)]
        retry_for: u64,
    },
    /// Download a job's `artifacts:` through the server (which fetches them from the registry
    /// the agent pushed them to, with its login there) and unpack them into a directory.
    Artifacts {
        id: String,
        /// Where to unpack them [default: ./<id>-artifacts].
        #[arg(long, short)]
        dir: Option<std::path::PathBuf>,
        /// Fetch them from the registry directly instead, with `agent.registry`'s login (or
        /// RAIBID_AGENT_REGISTRY_USERNAME and RAIBID_AGENT_REGISTRY_PASSWORD) when they are on
        /// that host, else none.
        #[arg(long)]
        from_registry: bool,
    },
    /// Cancel a queued or running job; a blocked one is declined.
    Cancel { id: String },
    /// Queue a new run of a job.
    Retry {
        id: String,
        /// Of the jobs this one queued (its matrix variants or workflows), retry those that
        /// failed, could not run or were given up; the workflows skipped because of them wait
        /// for the retries (GitHub's "Re-run failed jobs").
        #[arg(long)]
        failed: bool,
    },
    /// Let a job that waits for approval (blocked, `server.approval`) run.
    Approve { id: String },
    /// Erase a finished job's log (a secret that reached it unmasked, say); the job's record
    /// and result stay, saying who erased it and when.
    EraseLog {
        id: String,
        /// Also the logs of every job it queued (a matrix's variants, the workflows of
        /// `.raibid/`): the whole build's, once all of it has ended.
        #[arg(long)]
        build: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Queue throughput and claim latency against a private redis-server, next to the raw
    /// Redis Streams ceiling measured in the same run.
    Queue(BenchQueueArgs),
    /// Webhook intake: deliveries per second, latency and the server's memory, next to the
    /// in-process enqueue ceiling (starts `raibid server` and a private redis-server).
    Webhooks(BenchWebhooksArgs),
    /// Checkout from the agent's mirror cache against a cold `git clone` of the same commit,
    /// on a generated repository with a long history.
    Checkout(BenchCheckoutArgs),
    /// Log streaming: bytes per second stored from a step's output, and how late a
    /// `logs --follow` reader sees each line.
    Logs(BenchLogsArgs),
    /// The whole path under `raibid up`: webhook to first step (warm agent and pool at zero),
    /// no-op job latency, a burst of jobs drained through the local pool, memory.
    E2e(BenchE2eArgs),
    /// The pipeline's `cache: [target]` on a real Rust build under `raibid up`: jobs without
    /// cache, then cold, warm and incremental jobs with it; restore and save times, the cached
    /// size and the speed-up.
    Cache(BenchCacheArgs),
    /// Reading a long history through the server: a job's page and a step's page of a long
    /// log, the raw log, the job list by status and a repository's page, next to the Redis
    /// reads each needs, timed in the same run.
    Pages(BenchPagesArgs),
}

#[derive(Debug, Args)]
pub struct BenchPagesArgs {
    /// Finished jobs written into the queue before timing.
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    /// How many of them failed, spread through the history.
    #[arg(long, default_value_t = 50)]
    pub failures: usize,
    /// Size of the long logs, in MiB (10: the default `redis.log_max_bytes`).
    #[arg(long, default_value_t = 10)]
    pub log_mib: usize,
    /// Times each request is sent.
    #[arg(long, default_value_t = 20)]
    pub requests: usize,
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct BenchWebhooksArgs {
    /// Concurrent keep-alive connections, each sending its next delivery when answered.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup_s: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 15.0)]
    pub duration_s: f64,
    /// `RAIBID_LOG` for the server under test.
    #[arg(long)]
    pub server_log: Option<String>,
    /// Distinct commits pushed in turn: 1 pushes one commit again and again; more is a storm
    /// of pushes to one branch, each superseding (cancelling) the build queued before it.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub commits: u32,
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct BenchCheckoutArgs {
    /// Commits in the generated repository.
    #[arg(long, default_value_t = 20_000)]
    pub commits: usize,
    /// Files in the generated repository.
    #[arg(long, default_value_t = 5_000)]
    pub files: usize,
    /// Timed runs of each kind (medians are reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Where to put the repository and clones (default: the system's temporary directory).
    #[arg(long)]
    pub temp_root: Option<std::path::PathBuf>,
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct BenchLogsArgs {
    /// Bytes printed by the throughput step.
    #[arg(long, default_value_t = 200_000_000)]
    pub bytes: u64,
    /// Timestamped lines printed by the follow step.
    #[arg(long, default_value_t = 1_000)]
    pub follow_lines: usize,
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct BenchE2eArgs {
    /// Sequential jobs with a warm agent.
    #[arg(long, default_value_t = 200)]
    pub warm_jobs: usize,
    /// Sequential jobs, each from a pool of zero agents.
    #[arg(long, default_value_t = 50)]
    pub idle_jobs: usize,
    /// Jobs sent at once for the drain rate.
    #[arg(long, default_value_t = 500)]
    pub throughput_jobs: usize,
    /// `max_agents` of the local pool during the drain.
    #[arg(long, default_value_t = 4)]
    pub throughput_max_agents: u32,
    /// The pool's polling interval (default: the product's).
    #[arg(long)]
    pub polling_interval_ms: Option<u64>,
    /// `agent.executor` (`auto`, `host`, `bwrap`).
    #[arg(long)]
    pub executor: Option<String>,
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchDeps {
    Outside,
    InRepository,
    CachedInWorkspace,
}

#[derive(Debug, Args)]
pub struct BenchCacheArgs {
    /// Jobs of the build without `cache:`.
    #[arg(long, default_value_t = 2)]
    pub baseline_jobs: usize,
    /// Jobs of the same commit after the cold one, each restoring the cache.
    #[arg(long, default_value_t = 3)]
    pub warm_jobs: usize,
    /// `agent.executor` (`auto`, `host`, `bwrap`).
    #[arg(long)]
    pub executor: Option<String>,
    /// Where the repository, the vendored dependencies and `raibid up`'s data (the cache) go
    /// (default: /var/tmp; not under /tmp, which sandboxed steps do not see); its filesystem
    /// decides whether reflinks apply.
    #[arg(long)]
    pub temp_root: Option<std::path::PathBuf>,
    /// Where the steps find the crate's dependencies: vendored at a fixed path outside the
    /// workspace (a machine-wide CARGO_HOME), vendored in the repository (checked out anew each
    /// job), or copied into the workspace's .cargo-home by the first job and cached with
    /// target/ (a CARGO_HOME in the workspace).
    #[arg(long, value_enum, default_value_t = BenchDeps::Outside)]
    pub deps: BenchDeps,
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct BenchQueueArgs {
    /// Jobs per throughput run.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// Consumer counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub consumers: Vec<usize>,
    /// Jobs for the latency run (one every 5 ms).
    #[arg(long, default_value_t = 1_000)]
    pub latency_jobs: usize,
    /// Throughput runs per consumer count, raw and queue alternating; the medians are
    /// compared, as a single run on a small machine swings by a factor of two.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Use this Redis instead of starting a private redis-server.
    #[arg(long)]
    pub redis_url: Option<String>,
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

impl Command {
    /// Long-running services log their progress; client commands only warn.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Command::Config(_)
            | Command::Token(_)
            | Command::Pipeline(_)
            | Command::Job(_)
            | Command::Schedule(_)
            | Command::Repo(_)
            | Command::Pool(_)
            | Command::Secret(_)
            | Command::Bench(_)
            | Command::Backup(_)
            | Command::Restore(_)
            | Command::Infra(_) => "warn",
            Command::Setup(_) | Command::Teardown(_) => "info",
            Command::Server(_) | Command::Agent(_) | Command::Up(_) => "info",
            // The job's log is the output; the agent's own lines only for trouble.
            Command::Exec(_) => "warn",
            Command::Status(_) => "warn",
            // Log lines would tear the dashboard's screen apart.
            Command::Tui(_) => "off",
        }
    }

    /// Commands whose output is read by a pipe (`raibid job list | head`), and which start no
    /// child processes they write to: for them a closed pipe ends the program quietly, as for
    /// any Unix filter, instead of a panic in `println!`.
    pub fn is_filter(&self) -> bool {
        matches!(
            self,
            Command::Config(_)
                | Command::Token(_)
                | Command::Pipeline(_)
                | Command::Job(_)
                | Command::Schedule(_)
                | Command::Repo(_)
                | Command::Pool(_)
                | Command::Secret(_)
                | Command::Status(_)
                | Command::Infra(_)
        )
    }
}
