//! `raibid`: one binary for every role. Each subcommand is thin glue over a library crate.

mod child_process;
mod cli;
mod commands;
mod git;
mod local_redis;
mod local_registry;
mod logging;
mod machine_memory;
mod output;
mod private_files;
mod up;

use clap::Parser;

fn main() -> std::process::ExitCode {
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
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if matches!(cli.command, cli::Command::Tui(_)) {
        // The dashboard waits on the network and the terminal; a second worker thread buys it
        // nothing but its own malloc arena (about 3 MiB of RSS with 10,000 jobs loaded).
        builder.worker_threads(1);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
