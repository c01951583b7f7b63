//! `raibid up`: the whole system in one foreground process.
//!
//! Start order: private redis-server (AOF, everysec) -> private registry (when there is none
//! and docker-registry is installed) -> server -> local pool (-> demo).
//! Stop order, on Ctrl-C or SIGTERM: pool (agents get their grace period) -> server ->
//! registry -> Redis.
//! Every child is started with a parent-death signal, so even `kill -9` of `raibid up` leaves
//! nothing behind.

mod backup;
pub(crate) mod credentials;
mod demo;
mod keeper;
mod pool;
mod systemd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::fcntl::{Flock, FlockArg};
use raibid_config::{Config, ExecutorKind, MemoryLimit, Secret, TokenHash};
use raibid_model::JobStatus;
use raibid_queue::Queue;
use raibid_server::ServerOptions;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cli::{Global, UpArgs};
use crate::commands::{data_home, queue_options, shutdown_signal};
use crate::local_redis::{Durability, LocalRedis, which};
use crate::local_registry::{self, LocalRegistry};

pub use backup::{backup, restore};

pub async fn run(global: &Global, mut config: Config, args: UpArgs) -> anyhow::Result<ExitCode> {
    if args.systemd_unit {
        let unit = systemd::UnitInputs::gather(global, &args, &config)?;
        print!("{}", unit.render()?);
        for note in unit.notes() {
            eprintln!("note: {note}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Err(e) = raibid_agent::hardening::forbid_inspection() {
        tracing::warn!(error = %e, "steps of this user may read raibid up's environment");
    }
    ensure_tools()?;
    // From the start: a signal while Redis loads its data or the registry collects its
    // garbage (minutes, for big ones) stops what has started, in order, rather than meeting the
    // default action that kills up alone; one after that finds the orderly stop below.
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => data_home(&config),
    };
    // Private to this user: it holds the credentials and every job record (see private_files).
    crate::private_files::ensure_dir(&data_dir)?;
    let data_dir = data_dir.canonicalize()?;
    let _lock = lock_data_dir(&data_dir)?;
    std::fs::create_dir_all(data_dir.join("logs"))?;

    // Secrets: flags and config win; otherwise generated once and kept in the data directory.
    // An empty one given by flag or file fails here, before anything starts: the server would
    // run, and refuse every webhook with "no webhook secret is configured", far from the cause.
    let secret = match (&args.webhook_secret, &args.webhook_secret_file) {
        (Some(s), _) if s.trim().is_empty() => bail!(
            "the webhook secret given by --webhook-secret (or RAIBID_UP_WEBHOOK_SECRET) is \
             empty, so every webhook would be refused: give the secret configured in the \
             forge, or leave the option out to use the one generated in {}",
            data_dir.join("webhook-secret").display()
        ),
        (Some(s), _) => s.clone(),
        (None, Some(file)) => {
            let secret = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?
                .trim()
                .to_owned();
            if secret.is_empty() {
                bail!(
                    "the webhook secret file {} is empty, so every webhook would be refused: \
                     put the secret configured in the forge in it, or leave \
                     --webhook-secret-file out to use the one generated in {}",
                    file.display(),
                    data_dir.join("webhook-secret").display()
                );
            }
            secret
        }
        (None, None) if !config.server.webhook_secret.is_empty() => {
            config.server.webhook_secret.expose().to_owned()
        }
        (None, None) => credentials::load_or_create(&data_dir.join("webhook-secret"))?,
    };

    // Redis: the one given, or our own with its AOF in the data directory.
    let explicit_redis = args
        .redis_url
        .clone()
        .or_else(|| explicit_redis_url(global));
    let redis = match &explicit_redis {
        Some(url) => {
            config.redis.url = Secret::new(url.clone());
            None
        }
        None => {
            // A password, because every local user can reach 127.0.0.1 and whoever writes to
            // the queue runs code as this user.
            let password = credentials::load_or_create(&data_dir.join("redis-password"))?;
            let maxmemory = redis_maxmemory(config.up.redis_maxmemory)?;
            let redis_dir = data_dir.join("redis");
            let start = LocalRedis::start(
                &redis_dir,
                None,
                Durability::Aof,
                Some(&password),
                maxmemory,
            );
            let Some(redis) = unless_signalled(shutdown.as_mut(), start).await else {
                return Ok(stopped_while_starting(None).await);
            };
            let redis = redis?;
            config.redis.url = Secret::new(redis.url());
            // For `raibid backup` while this runs.
            crate::private_files::write(&data_dir.join(backup::REDIS_URL_FILE), &redis.url())?;
            Some(redis)
        }
    };

    // A registry: the configured one (or the forge's), else our own when installed.
    let registry_dir = data_dir.join("registry");
    let registry = if wants_own_registry(&config, &registry_dir) && LocalRegistry::available() {
        let password = credentials::load_or_create(&data_dir.join("registry-password"))?;
        let start = LocalRegistry::start(&registry_dir, &password);
        let Some(registry) = unless_signalled(shutdown.as_mut(), start).await else {
            return Ok(stopped_while_starting(redis).await);
        };
        let registry = registry?;
        registry.configure_agents(&mut config);
        Some(registry)
    } else {
        None
    };

    config.server.webhook_secret = Secret::new(secret.clone());
    // Repository secrets are sealed with it: generated once, so the ones set stay readable
    // across restarts.
    let key_in_data_dir = config.redis.secrets_key.is_empty();
    if key_in_data_dir {
        let path = data_dir.join("secrets-key");
        let key = credentials::load_or_create(&path)?;
        if key.chars().count() < raibid_config::SECRETS_KEY_MIN_LEN {
            bail!(
                "{} holds {} characters; the key repository secrets are sealed with needs at \
                 least {} (delete the file to have one generated, which makes the secrets \
                 set so far unreadable)",
                path.display(),
                key.chars().count(),
                raibid_config::SECRETS_KEY_MIN_LEN
            );
        }
        config.redis.secrets_key = Secret::new(key);
    }
    let token = credentials::load_or_create(&data_dir.join("api-token"))?;
    // Named, so the server's log, approvals and the web pages' "signed in as" say whose it is
    // rather than the start of its hash.
    let mut up_token = raibid_config::ApiToken::from(TokenHash::of(&token));
    up_token.name = "raibid-up".into();
    config.server.tokens.push(up_token);
    if let Some(listen) = &args.listen {
        config.server.listen = listen.clone();
    }
    let max_agents = args
        .max_agents
        .or((config.up.max_agents > 0).then_some(config.up.max_agents))
        .map(u64::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as u64));
    let agent_data_dir = data_dir.join("agent");
    // `auto` is decided here, once, as an agent would decide it, and the agents are told the
    // outcome: the limit below must hold for what they actually run.
    let executor = match config.agent.executor {
        ExecutorKind::Auto => {
            crate::commands::agent::resolve_auto(&config, &agent_data_dir).await?
        }
        kind => kind,
    };
    // Host steps under a step user: one agent per step user per machine (each agent holds a
    // lock for it), so more would only start and fail.
    let host_steps_as_step_user =
        executor == ExecutorKind::Host && !config.agent.step_user.trim().is_empty();
    let max_agents = if host_steps_as_step_user && max_agents > 1 {
        info!("agent.step_user with host steps: one local agent at a time");
        1
    } else {
        max_agents
    };
    let cooldown = Duration::from_secs(args.cooldown.unwrap_or(config.up.cooldown_secs));

    let queue = Queue::open(queue_options(&config))?;
    queue.ping().await.context("cannot reach Redis")?;
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| {
            format!(
                "listening on {} (another raibid up? pick a port with --listen)",
                config.server.listen
            )
        })?;
    let server_url = format!("http://{}", listener.local_addr()?);
    crate::commands::default_public_url(&mut config, listener.local_addr()?);
    let mut env = format!("export RAIBID_SERVER={server_url}\nexport RAIBID_TOKEN={token}\n");
    // The agents push to the private registry with this login, and `raibid job artifacts`
    // downloads with it.
    let registry_env = registry.as_ref().map(|_| registry_env(&config));
    for (name, value) in registry_env.iter().flatten() {
        env.push_str(&format!("export {name}={value}\n"));
    }
    crate::private_files::write(&data_dir.join("env"), &env)?;

    let stop_server = CancellationToken::new();
    let server = tokio::spawn(raibid_server::serve(
        listener,
        ServerOptions::new(config.clone(), queue.clone()),
        {
            let t = stop_server.clone();
            async move { t.cancelled().await }
        },
    ));

    let stop_pool = CancellationToken::new();
    let mut agent_env = vec![(
        "RAIBID_REDIS_URL".to_owned(),
        config.redis.url.expose().to_owned(),
    )];
    // The agents open repository secrets with the key the server seals them with.
    agent_env.push((
        "RAIBID_REDIS_SECRETS_KEY".to_owned(),
        config.redis.secrets_key.expose().to_owned(),
    ));
    // Where the steps' CI_PIPELINE_URL points: the server's address as filled in above.
    agent_env.push((
        "RAIBID_SERVER_PUBLIC_URL".to_owned(),
        config.server.public_url.clone(),
    ));
    if let Ok(path) = std::env::var("PATH") {
        agent_env.push(("PATH".into(), path));
    }
    agent_env.extend(registry_env.into_iter().flatten());
    let mut global_args = Vec::new();
    if let Some(c) = &global.config {
        global_args.push("--config".to_owned());
        global_args.push(c.display().to_string());
    }
    // The private registry's garbage collection, asked for by the pool at quiet moments.
    let (upkeep_settings, upkeep_requests) = match (&registry, config.up.registry_gc_interval_secs)
    {
        (Some(_), secs) if secs > 0 => {
            let (requests, received) = tokio::sync::mpsc::channel(1);
            let every = Duration::from_secs(secs);
            (
                Some(pool::UpkeepSettings {
                    every,
                    // Overdue by as long again: a day without a quiet moment, by default.
                    drain_after: every,
                    requests,
                }),
                Some(received),
            )
        }
        _ => (None, None),
    };
    let agents_log = data_dir.join("logs").join("agents.log");
    let agent_program = raibid_agent::AgentProgram::beside(
        &std::env::current_exe().context("locating the raibid executable")?,
    );
    let pool = pool::LocalPool::new(
        queue.clone(),
        pool::PoolSettings {
            agent: agent_program.clone(),
            global_args,
            env: agent_env,
            agent_args: vec!["--executor".into(), executor_arg(executor).into()],
            agent_data_dir,
            log_file: agents_log.clone(),
            max_agents,
            polling_interval: Duration::from_millis(config.up.polling_interval_ms.max(10)),
            cooldown,
            pools: config.agent.pools.clone(),
            grace_period: Duration::from_secs(config.agent.grace_period_secs),
            upkeep: upkeep_settings,
        },
    );
    let pool_task = tokio::spawn(pool.run(stop_pool.clone()));

    println!("raibid up");
    println!("  data      {}", data_dir.display());
    match &redis {
        Some(r) => println!(
            "  redis     {} (private, AOF in {}/redis, maxmemory {})",
            crate::commands::config::redact_url(&r.url()),
            data_dir.display(),
            match r.maxmemory() {
                Some(bytes) => format!("{} MiB", bytes >> 20),
                None => "none".to_owned(),
            }
        ),
        None => println!(
            "  redis     {} (external)",
            crate::commands::config::redact_url(config.redis.url.expose())
        ),
    }
    match &registry {
        Some(r) => println!(
            "  registry  {} (private, for image builds and artifacts; user {}, password in \
             {}/registry-password)",
            r.host(),
            local_registry::USER,
            data_dir.display()
        ),
        None if wants_own_registry(&config, &registry_dir) => println!(
            "  registry  none: install docker-registry for image pushes and artifacts, or set \
             agent.registry"
        ),
        None => println!("  registry  {} (configured)", config.registry_host()),
    }
    println!("  server    {server_url}  (webhooks: {server_url}/webhooks/gitea|forgejo|github)");
    println!(
        "  web       {server_url}/jobs  (sign in with the API token to cancel, retry, approve, set secrets and pause pools)"
    );
    println!(
        "  agents    0..{max_agents} on demand ({agent_program}), {} steps (cooldown {}s, logs in \
         {}/logs/agents.log)",
        executor_arg(executor),
        cooldown.as_secs(),
        data_dir.display()
    );
    println!(
        "  secrets   webhook secret in {0}/webhook-secret, API token in {0}/api-token, \
         Redis password in {0}/redis-password{1}",
        data_dir.display(),
        if key_in_data_dir {
            format!(
                ", key of repository secrets (`raibid secret set`) in {}/secrets-key: keep it \
                 with the Redis data",
                data_dir.display()
            )
        } else {
            String::new()
        }
    );
    println!(
        "  use       . {}/env; raibid job list; raibid tui",
        data_dir.display()
    );

    // Watched from here on: the banner above names them as started.
    let stop_keepers = CancellationToken::new();
    let redis = redis.map(|r| keeper::keep(r, stop_keepers.clone(), None));
    let registry = registry.map(|r| keeper::keep(r, stop_keepers.clone(), upkeep_requests));
    // The agents' file is also moved aside at each agent's start; Redis and the registry are
    // started once and write for as long as this runs.
    let logs = tokio::spawn(crate::log_files::keep_bounded(
        vec![
            agents_log,
            registry_dir.join(local_registry::LOG_FILE),
            data_dir.join("redis").join(crate::local_redis::LOG_FILE),
        ],
        crate::log_files::MAX_BYTES,
        crate::log_files::LOOK_EVERY,
        stop_keepers.clone(),
    ));

    let stop_demo = CancellationToken::new();
    let mut exit = ExitCode::SUCCESS;
    if args.demo {
        let result = run_demo(&data_dir, &server_url, &token, &secret, stop_demo.clone());
        if args.exit_after_demo {
            tokio::select! {
                r = result => exit = demo_exit(r),
                () = &mut shutdown => {}
            }
        } else {
            tokio::select! {
                r = result => {
                    demo_exit(r);
                    println!("Ctrl-C stops everything.");
                    (&mut shutdown).await;
                }
                () = &mut shutdown => {}
            }
        }
    } else {
        println!("Ctrl-C stops everything.");
        shutdown.await;
    }

    info!("stopping: agents, then server, then registry and redis");
    stop_pool.cancel();
    let _ = pool_task.await;
    stop_demo.cancel();
    stop_server.cancel();
    match tokio::time::timeout(Duration::from_secs(15), server).await {
        Ok(Ok(Err(e))) => eprintln!("server: {e}"),
        Err(_) => eprintln!("server did not stop within 15 s"),
        _ => {}
    }
    // A keeper that panicked dropped its child, which kills it.
    stop_keepers.cancel();
    let _ = logs.await;
    if let Some(Ok(registry)) = join(registry).await {
        registry.stop().await;
    }
    if let Some(Ok(redis)) = join(redis).await {
        redis.stop().await;
    }
    println!("raibid up: stopped");
    Ok(exit)
}

/// `work`, unless a stop is asked for first (then `None`, and `work` is dropped: what it had
/// started is killed with it).
async fn unless_signalled<T>(
    shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        done = work => Some(done),
        () = shutdown => None,
    }
}

/// A stop asked for while starting (the registry, the last of what may take long, was not
/// started): Redis, if it was, stops as at the end of a run.
async fn stopped_while_starting(redis: Option<LocalRedis>) -> ExitCode {
    info!("stopping while starting");
    if let Some(redis) = redis {
        redis.stop().await;
    }
    println!("raibid up: stopped");
    ExitCode::SUCCESS
}

async fn join<T>(
    keeper: Option<tokio::task::JoinHandle<T>>,
) -> Option<Result<T, tokio::task::JoinError>> {
    match keeper {
        Some(handle) => Some(handle.await),
        None => None,
    }
}

/// Whether `raibid up` should bring a registry of its own: asked to (`up.registry`), and
/// neither a registry nor a forge is configured, so that `{registry}` would otherwise name the
/// in-cluster Gitea of the default configuration.
///
/// A configured host that is the one this data directory's registry had is ours too: a shell
/// that sourced `<data>/env` has it in `RAIBID_AGENT_REGISTRY_HOST`, and `raibid up` started
/// again from there must bring its registry back rather than point the agents at nothing.
fn wants_own_registry(config: &Config, registry_dir: &Path) -> bool {
    let host = config.agent.registry.host.trim();
    config.up.registry
        && (host.is_empty() || local_registry::kept_host(registry_dir).as_deref() == Some(host))
        && config.gitea.url == raibid_config::GiteaConfig::default().url
}

/// The agents' registry settings as the variables that override them.
fn registry_env(config: &Config) -> Vec<(String, String)> {
    let r = &config.agent.registry;
    vec![
        ("RAIBID_AGENT_REGISTRY_HOST".into(), r.host.clone()),
        ("RAIBID_AGENT_REGISTRY_USERNAME".into(), r.username.clone()),
        (
            "RAIBID_AGENT_REGISTRY_PASSWORD".into(),
            r.password.expose().to_owned(),
        ),
        (
            "RAIBID_AGENT_REGISTRY_INSECURE".into(),
            r.insecure.to_string(),
        ),
    ]
}

async fn run_demo(
    data_dir: &Path,
    server_url: &str,
    token: &str,
    secret: &str,
    stop: CancellationToken,
) -> anyhow::Result<bool> {
    let repo = demo::prepare(&data_dir.join("demo")).await?;
    let git_url = demo::serve_git(repo.git_root.clone(), stop).await?;
    let client = raibid_client::Client::new(server_url, Some(token.to_owned()))?;
    let jobs = demo::run(&client, secret, &git_url, &repo).await?;
    println!();
    let mut as_expected = true;
    for (branch, job) in &jobs {
        println!("{}", demo::describe(branch, job));
        let expected = if branch == "main" {
            JobStatus::Success
        } else {
            JobStatus::Failure
        };
        as_expected &= job.status == expected;
    }
    if let Some((_, job)) = jobs.first() {
        println!();
        println!(
            "watch a log:  raibid job logs {}   (add --follow while it runs)",
            job.id
        );
        println!("dashboard:    raibid tui");
        println!("(first: . {}/env)", data_dir.display());
        println!("in a browser: {server_url}/jobs/{}", job.id);
    }
    Ok(as_expected)
}

fn demo_exit(result: anyhow::Result<bool>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("demo: the jobs did not end as expected (main: success, broken: failure)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One `raibid up` per data directory: two would share (and corrupt) one Redis AOF.
fn lock_data_dir(dir: &Path) -> anyhow::Result<Flock<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("up.lock"))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| {
        anyhow::anyhow!(
            "another raibid up is running on {} (use --data-dir for a second instance)",
            dir.display()
        )
    })
}

/// `redis.url` counts as configured when the environment or the config file sets it.
/// `up.redis_maxmemory` in bytes; a share is of the memory this process may use (the
/// machine's, or its cgroup's limit).
fn redis_maxmemory(limit: MemoryLimit) -> anyhow::Result<Option<u64>> {
    crate::machine_memory::limit_bytes(limit, "up.redis_maxmemory")
}

fn explicit_redis_url(global: &Global) -> Option<String> {
    if let Ok(url) = std::env::var("RAIBID_REDIS_URL") {
        return Some(url);
    }
    let path: PathBuf = global
        .config
        .clone()
        .unwrap_or_else(raibid_config::default_path);
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
    value.get("redis")?.get("url")?.as_str().map(str::to_owned)
}

/// redis-server and git are needed; install them when we can (root), say how otherwise.
fn ensure_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = [("redis-server", "redis-server"), ("git", "git")]
        .into_iter()
        .filter(|(bin, _)| which(bin).is_none())
        .map(|(_, pkg)| pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if nix::unistd::geteuid().is_root() && which("apt-get").is_some() {
        eprintln!("installing {}", missing.join(" "));
        let ok = std::process::Command::new("apt-get")
            .arg("update")
            .arg("-qq")
            .status()?
            .success()
            && std::process::Command::new("apt-get")
                .args(["install", "-y", "-qq"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()?
                .success();
        if ok {
            return Ok(());
        }
    }
    bail!(
        "missing {}: install with `sudo apt-get install -y {}`",
        missing.join(", "),
        missing.join(" ")
    )
}

/// The `raibid agent --executor` value for a kind.
fn executor_arg(kind: ExecutorKind) -> &'static str {
    match kind {
        ExecutorKind::Auto => "auto",
        ExecutorKind::Host => "host",
        ExecutorKind::Bwrap => "bwrap",
        ExecutorKind::Container => "container",
    }
}
