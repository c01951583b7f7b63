//! The `raibid` command: one binary for every role, each subcommand thin glue over a library
//! crate; and `raibid-agent`, the agent alone.
//!
//! `raibid-agent` is what the local pool of `raibid up` and the Kubernetes agent pods start,
//! one per job: it leaves out the server, dashboard, cluster and benchmark code, so an idle
//! agent keeps about 5 MiB fewer of the binary's pages resident than `raibid agent` does
//! (BENCHMARKS.md); the code it runs is the same.

mod child_process;
mod cli;
mod commands;
mod git;
mod local_redis;
mod local_registry;
mod log_files;
mod logging;
mod loopback_port;
mod machine_memory;
mod output;
mod private_files;
mod up;

use clap::Parser;

/// `raibid`: every role, by subcommand.
pub fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    if cli.command.is_filter() {
        // Rust ignores SIGPIPE, so writing to a closed pipe is an error that `println!` turns
        // into a panic. Services keep ignoring it: a child that exits early must not kill them.
        // SAFETY: no other thread exists yet, and SIG_DFL installs no handler code.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
        };
    }
    logging::init(&cli.global, cli.command.default_log_level());
    // The dashboard waits on the network and the terminal; a second worker thread buys it
    // nothing but its own malloc arena (about 3 MiB of RSS with 10,000 jobs loaded).
    let workers = matches!(cli.command, cli::Command::Tui(_)).then_some(1);
    block_on(workers, commands::run(cli))
}

/// `raibid-agent`: `raibid agent`, parsed and run without the other commands.
pub fn agent_main() -> std::process::ExitCode {
    let cli = cli::AgentCli::parse();
    logging::init(&cli.global, "info");
    block_on(None, async move {
        let config = commands::load_config(&cli.global)?;
        commands::agent::run(config, cli.args).await
    })
}

/// Runs a command on a multi-threaded runtime; its error is printed as the exit's reason.
fn block_on(
    workers: Option<usize>,
    command: impl std::future::Future<Output = anyhow::Result<std::process::ExitCode>>,
) -> std::process::ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
