pub(crate) mod agent;
mod bench;
mod bench_queue;
pub(crate) mod config;
pub(crate) mod exec;
pub(crate) mod job;
mod pipeline;
mod pool;
mod repo;
mod schedule;
mod secret;
mod server;
mod status;
mod token;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use raibid_config::Config;
use raibid_queue::QueueOptions;

use crate::cli::{ApiArgs, Cli, Command};

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Config(cmd) => config::run(&cli.global, cmd),
        Command::Token(cmd) => token::run(cmd),
        Command::Pipeline(cmd) => pipeline::run(cmd),
        Command::Job(args) => {
            let config = load_config(&cli.global)?;
            job::run(&config, args).await
        }
        Command::Repo(args) => repo::run(&load_config(&cli.global)?, args).await,
        Command::Schedule(args) => schedule::run(&load_config(&cli.global)?, args).await,
        Command::Pool(args) => pool::run(&load_config(&cli.global)?, args).await,
        Command::Secret(args) => secret::run(&load_config(&cli.global)?, args).await,
        Command::Bench(crate::cli::BenchCommand::Queue(args)) => bench_queue::run(args).await,
        Command::Bench(other) => bench::run(other).await,
        Command::Backup(args) => {
            let config = load_config(&cli.global)?;
            crate::up::backup(&cli.global, &config, args).await
        }
        Command::Restore(args) => crate::up::restore(&load_config(&cli.global)?, args).await,
        Command::Up(args) => {
            let config = load_config(&cli.global)?;
            crate::up::run(&cli.global, config, args).await
        }
        Command::Tui(args) => {
            let config = load_config(&cli.global)?;
            let client = api_client(&config, &args.api)?;
            let refresh = std::time::Duration::from_secs_f64(args.refresh.clamp(0.1, 3600.0));
            raibid_tui::run(
                client,
                raibid_tui::TuiOptions {
                    refresh,
                    kubeconfig: Some(raibid_infra::cluster::kubeconfig_path(&config)),
                    namespace: config.cluster.namespace.clone(),
                },
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Setup(args) => {
            raibid_infra::setup(args, &load_config(&cli.global)?).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Teardown(args) => {
            raibid_infra::teardown(args, &load_config(&cli.global)?).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Infra(cmd) => {
            raibid_infra::run_infra(cmd, &load_config(&cli.global)?).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(args) => status::run(&load_config(&cli.global)?, args).await,
        Command::Server(args) => server::run(load_config(&cli.global)?, args).await,
        Command::Agent(args) => agent::run(load_config(&cli.global)?, args).await,
        Command::Exec(args) => exec::run(load_config(&cli.global)?, args).await,
    }
}

pub fn load_config(global: &crate::cli::Global) -> anyhow::Result<Config> {
    let (config, _) = raibid_config::load(global.config.as_deref())?;
    Ok(config)
}

/// The queue settings every component derives from the one configuration.
pub fn queue_options(config: &Config) -> QueueOptions {
    let r = &config.redis;
    let mut o = QueueOptions::new(r.url.expose());
    o.stream_name = r.stream_name.clone();
    o.consumer_group = r.consumer_group.clone();
    o.maxlen = r.maxlen;
    o.max_attempts = r.max_attempts;
    o.log_max_bytes = r.log_max_bytes;
    o.command_timeout = Duration::from_millis(r.command_timeout_ms);
    // Loading the configuration checked its length, the only way deriving can fail.
    o.secrets_key = (!r.secrets_key.is_empty())
        .then(|| raibid_queue::SecretsKey::derive(r.secrets_key.expose()).ok())
        .flatten();
    o.secrets_previous_keys = r
        .secrets_previous_keys
        .iter()
        .filter_map(|key| raibid_queue::SecretsKey::derive(key.expose()).ok())
        .collect();
    o
}

/// An API client for the configured (or given) server.
pub fn api_client(config: &Config, api: &ApiArgs) -> anyhow::Result<raibid_client::Client> {
    let url = api
        .server
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.server.listen));
    raibid_client::Client::new(&url, api.token.clone()).context("building the API client")
}

/// `up.data_dir`, else `$XDG_DATA_HOME/raibid` or `~/.local/share/raibid`.
pub fn data_home(config: &Config) -> std::path::PathBuf {
    if !config.up.data_dir.is_empty() {
        return config.up.data_dir.clone().into();
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/share"))
        })
        .unwrap_or_else(|| std::path::PathBuf::from("."))
        .join("raibid")
}

/// Links the server hands out (commit status targets, the API description's server) point
/// at where it listens unless `server.public_url` is configured. An unspecified address
/// (0.0.0.0) names no host a client could use, so loopback stands in for it.
pub fn default_public_url(config: &mut Config, listening: std::net::SocketAddr) {
    if !config.server.public_url.is_empty() {
        return;
    }
    let mut addr = listening;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    config.server.public_url = format!("http://{addr}");
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are in place once this returns, not
/// only when the future is first polled: a signal sent in between (right after a banner that
/// invites it) would otherwise meet the default action and kill the process alone.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}

#[cfg(test)]
mod public_url_tests {
    use super::*;

    #[test]
    fn an_unset_public_url_is_where_the_server_listens_and_a_set_one_is_kept() {
        let mut config = Config::default();
        default_public_url(&mut config, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.server.public_url, "http://127.0.0.1:9000");
        let mut config = Config::default();
        default_public_url(&mut config, "[::]:9000".parse().unwrap());
        assert_eq!(config.server.public_url, "http://[::1]:9000");

        // Even the value that used to be the default, set on purpose (a published port).
        let mut config = raibid_config::load_from_str(
            "server:\n  public_url: http://127.0.0.1:8080\n",
            std::path::Path::new("/etc/raibid.yaml"),
            &[],
        )
        .unwrap();
        default_public_url(&mut config, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.server.public_url, "http://127.0.0.1:8080");
    }
}
