use tracing_subscriber::EnvFilter;

use crate::cli::{ColorWhen, Global, LogFormat};

/// Logs go to stderr so that `--output json` on stdout stays machine-readable. Also settles
/// `--color` for everything the process prints: job logs carry the agent's escape codes (and
/// the steps' own), which `anstream`'s streams pass or strip by this choice.
pub fn init(global: &Global, default_level: &str) {
    anstream::ColorChoice::write_global(match global.color {
        ColorWhen::Auto => anstream::ColorChoice::Auto,
        ColorWhen::Always => anstream::ColorChoice::Always,
        ColorWhen::Never => anstream::ColorChoice::Never,
    });
    let filter = EnvFilter::try_from_env("RAIBID_LOG")
        .unwrap_or_else(|_| EnvFilter::new(global.log_level.as_deref().unwrap_or(default_level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours for a person at a terminal; a log file (`raibid up`'s agents.log), journald
        // or a pod's log would keep the escape codes around every field.
        .with_ansi(
            anstream::AutoStream::choice(&std::io::stderr()) != anstream::ColorChoice::Never,
        );
    match global.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
