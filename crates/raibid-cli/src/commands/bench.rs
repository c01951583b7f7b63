//! `raibid bench webhooks|checkout|logs|e2e|cache|pages`: the benchmarks of raibid-bench, with
//! this very executable as the `raibid` they start, so that the figures are of the binary being
//! run.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use raibid_bench::{
    BenchError, CacheBenchOptions, CacheDeps, CheckoutBenchOptions, E2eBenchOptions,
    LogBenchOptions, PagesBenchOptions, WebhookBenchOptions,
};
use serde::Serialize;

use crate::cli::{BenchCommand, BenchDeps, Output};

pub async fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find the running raibid executable")?;
    match command {
        BenchCommand::Queue(_) => unreachable!("raibid bench queue has its own module"),
        BenchCommand::Webhooks(a) => {
            let options = WebhookBenchOptions {
                raibid_exe: exe,
                connections: a.connections,
                warmup: Duration::from_secs_f64(a.warmup_s),
                duration: Duration::from_secs_f64(a.duration_s),
                server_log: a.server_log,
                commits: a.commits as usize,
                ..Default::default()
            };
            show(raibid_bench::webhooks(options).await, a.output, |r| {
                r.render_table()
            })
        }
        BenchCommand::Checkout(a) => {
            let options = CheckoutBenchOptions {
                commits: a.commits,
                files: a.files,
                runs: a.runs,
                temp_root: a.temp_root,
            };
            show(raibid_bench::checkout(options).await, a.output, |r| {
                r.render_table()
            })
        }
        BenchCommand::Logs(a) => {
            let options = LogBenchOptions {
                bytes: a.bytes,
                follow_lines: a.follow_lines,
                ..Default::default()
            };
            show(raibid_bench::logs(options).await, a.output, |r| {
                r.render_table()
            })
        }
        BenchCommand::E2e(a) => {
            let options = E2eBenchOptions {
                raibid_exe: exe,
                warm_jobs: a.warm_jobs,
                idle_jobs: a.idle_jobs,
                throughput_jobs: a.throughput_jobs,
                throughput_max_agents: a.throughput_max_agents,
                polling_interval_ms: a.polling_interval_ms,
                executor: a.executor,
                ..Default::default()
            };
            show(raibid_bench::e2e(options).await, a.output, |r| {
                r.render_table()
            })
        }
        BenchCommand::Cache(a) => {
            let options = CacheBenchOptions {
                raibid_exe: exe,
                baseline_jobs: a.baseline_jobs,
                warm_jobs: a.warm_jobs,
                executor: a.executor,
                temp_root: a.temp_root,
                deps: match a.deps {
                    BenchDeps::Outside => CacheDeps::Outside,
                    BenchDeps::InRepository => CacheDeps::InRepository,
                    BenchDeps::CachedInWorkspace => CacheDeps::CachedInWorkspace,
                },
            };
            show(raibid_bench::cache(options).await, a.output, |r| {
                r.render_table()
            })
        }
        BenchCommand::Pages(a) => {
            let options = PagesBenchOptions {
                raibid_exe: exe,
                jobs: a.jobs,
                failures: a.failures,
                log_bytes: a.log_mib * 1024 * 1024,
                requests: a.requests,
            };
            show(raibid_bench::pages(options).await, a.output, |r| {
                r.render_table()
            })
        }
    }
}

fn show<R: Serialize>(
    report: Result<R, BenchError>,
    output: Output,
    table: impl Fn(&R) -> String,
) -> anyhow::Result<ExitCode> {
    let report = report?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => print!("{}", table(&report)),
    }
    Ok(ExitCode::SUCCESS)
}
