//! Running git for the CLI's own repositories work (`raibid up --demo`, `raibid exec`): as an
//! argument list, never through a shell, its trimmed output or its error.

use std::ffi::OsStr;
use std::path::Path;

use anyhow::{Context, bail};

/// `git -C dir args...` with `env` added; its standard output, trimmed.
pub async fn output(dir: &Path, args: &[&str], env: &[(&str, &OsStr)]) -> anyhow::Result<String> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("-C").arg(dir).args(args);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("running git (apt-get install -y git)")?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
