//! Runs one benchmark until `raibid bench` offers them:
//!
//! ```text
//! cargo build --release -p raibid-cli -p raibid-bench --example bench
//! target/release/examples/bench webhooks|checkout|logs|e2e [--json] [--name=value ...]
//! ```
//!
//! Options are the fields of the benchmark's options struct (`--connections=64`,
//! `--duration-s=20`, `--server-log=warn`, `--polling-interval-ms=50`, `--executor=host`...);
//! unknown ones are an error. The webhooks and e2e benchmarks start `target/release/raibid`.

use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use raibid_bench::{
    BenchError, CheckoutBenchOptions, E2eBenchOptions, LogBenchOptions, WebhookBenchOptions,
};

#[tokio::main]
async fn main() -> ExitCode {
    // Progress on stderr (`RUST_LOG` to change), the report alone on stdout.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("raibid_bench=info")),
        )
        .init();
    let mut args = Args::parse(std::env::args().skip(1));
    let result = match args.which.clone().as_deref() {
        Some("webhooks") => webhooks(&mut args).await,
        Some("checkout") => checkout(&mut args).await,
        Some("logs") => logs(&mut args).await,
        Some("e2e") => e2e(&mut args).await,
        _ => Err("usage: bench webhooks|checkout|logs|e2e [--json] [--name=value ...]".into()),
    };
    match result {
        Ok((table, json)) => {
            if args.json {
                println!("{json:#}");
            } else {
                print!("{table}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

type Outcome = Result<(String, serde_json::Value), String>;

struct Args {
    which: Option<String>,
    json: bool,
    options: Vec<(String, String)>,
}

impl Args {
    fn parse(args: impl Iterator<Item = String>) -> Self {
        let mut parsed = Self {
            which: None,
            json: false,
            options: Vec::new(),
        };
        for arg in args {
            if arg == "--json" {
                parsed.json = true;
            } else if let Some((k, v)) = arg.strip_prefix("--").and_then(|a| a.split_once('=')) {
                parsed.options.push((k.to_owned(), v.to_owned()));
            } else {
                parsed.which = Some(arg);
            }
        }
        parsed
    }

    /// Takes `--name=value` if given, parsed as `T`.
    fn take<T: FromStr>(&mut self, name: &str, into: &mut T) -> Result<(), String> {
        if let Some(i) = self.options.iter().position(|(k, _)| k == name) {
            let (_, v) = self.options.remove(i);
            *into = v
                .parse()
                .map_err(|_| format!("--{name}={v}: not a valid value"))?;
        }
        Ok(())
    }

    fn take_secs(&mut self, name: &str, into: &mut Duration) -> Result<(), String> {
        let mut secs = into.as_secs_f64();
        self.take(name, &mut secs)?;
        *into = Duration::from_secs_f64(secs);
        Ok(())
    }

    fn take_opt<T: FromStr>(&mut self, name: &str, into: &mut Option<T>) -> Result<(), String> {
        if let Some(i) = self.options.iter().position(|(k, _)| k == name) {
            let (_, v) = self.options.remove(i);
            *into = Some(
                v.parse()
                    .map_err(|_| format!("--{name}={v}: not a valid value"))?,
            );
        }
        Ok(())
    }

    fn done(&self) -> Result<(), String> {
        match self.options.first() {
            Some((k, _)) => Err(format!("unknown option --{k}")),
            None => Ok(()),
        }
    }
}

fn rendered<R: serde::Serialize>(
    result: Result<R, BenchError>,
    table: impl Fn(&R) -> String,
) -> Outcome {
    let report = result.map_err(|e| e.to_string())?;
    let json = serde_json::to_value(&report).map_err(|e| e.to_string())?;
    Ok((table(&report), json))
}

async fn webhooks(a: &mut Args) -> Outcome {
    let mut o = WebhookBenchOptions::default();
    a.take("connections", &mut o.connections)?;
    a.take_secs("warmup-s", &mut o.warmup)?;
    a.take_secs("duration-s", &mut o.duration)?;
    a.take_secs("idle-settle-s", &mut o.idle_settle)?;
    a.take_opt("server-log", &mut o.server_log)?;
    a.done()?;
    rendered(raibid_bench::webhooks(o).await, |r| r.render_table())
}

async fn checkout(a: &mut Args) -> Outcome {
    let mut o = CheckoutBenchOptions::default();
    a.take("commits", &mut o.commits)?;
    a.take("files", &mut o.files)?;
    a.take("runs", &mut o.runs)?;
    a.take_opt("temp-root", &mut o.temp_root)?;
    a.done()?;
    rendered(raibid_bench::checkout(o).await, |r| r.render_table())
}

async fn logs(a: &mut Args) -> Outcome {
    let mut o = LogBenchOptions::default();
    a.take("bytes", &mut o.bytes)?;
    a.take("follow-lines", &mut o.follow_lines)?;
    a.done()?;
    rendered(raibid_bench::logs(o).await, |r| r.render_table())
}

async fn e2e(a: &mut Args) -> Outcome {
    let mut o = E2eBenchOptions::default();
    a.take("warm-jobs", &mut o.warm_jobs)?;
    a.take("idle-jobs", &mut o.idle_jobs)?;
    a.take("throughput-jobs", &mut o.throughput_jobs)?;
    a.take("throughput-max-agents", &mut o.throughput_max_agents)?;
    a.take_opt("polling-interval-ms", &mut o.polling_interval_ms)?;
    a.take_opt("executor", &mut o.executor)?;
    a.done()?;
    rendered(raibid_bench::e2e(o).await, |r| r.render_table())
}
