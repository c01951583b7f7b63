//! `raibid secret set|list|rm`: the secrets of a repository, or of an owner (`--org`),
//! through the API.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::Utc;
use raibid_config::Config;
use raibid_model::RepoSecret;

use crate::cli::{Output, SecretArgs, SecretCommand};
use crate::output::{ago, table};

pub async fn run(config: &Config, args: SecretArgs) -> anyhow::Result<ExitCode> {
    let client = super::api_client(config, &args.api)?;
    let json = args.api.output == Output::Json;
    match args.command {
        SecretCommand::Set {
            target,
            name,
            from_file,
            events,
            branches,
        } => {
            let scope = target.scope();
            let value = match from_file {
                Some(path) => std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?,
                None => read_value(&name)?,
            };
            if value.is_empty() {
                bail!("the value of {name} is empty: a secret needs one");
            }
            let (secret, created) = client
                .set_secret(&scope, &name, &value, &events, &branches)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&secret)?);
            } else {
                println!(
                    "{} secret {name} of {scope} ({})",
                    if created { "created" } else { "updated" },
                    events_of(&secret)
                );
            }
        }
        SecretCommand::List { target } => {
            let scope = target.scope();
            let secrets = client.secrets(&scope).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&secrets)?);
            } else if secrets.is_empty() {
                let org = if target.org { "--org " } else { "" };
                println!(
                    "{scope} has no secrets (raibid secret set {org}{} NAME)",
                    target.target
                );
            } else {
                print!("{}", secrets_table(&secrets, Utc::now()));
            }
        }
        SecretCommand::Rm { target, name } => {
            let scope = target.scope();
            client.delete_secret(&scope, &name).await?;
            if !json {
                println!("deleted secret {name} of {scope}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The value from standard input: at a terminal, one line typed without echo; from a pipe,
/// everything, less the one newline `echo` ends with.
fn read_value(name: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("value of {name} (not shown): ");
        std::io::stderr().flush()?;
        let _echo_off = EchoOff::new(&stdin)?;
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        eprintln!();
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    let mut value = String::new();
    stdin
        .lock()
        .read_to_string(&mut value)
        .context("reading the value from standard input")?;
    if let Some(v) = value.strip_suffix('\n') {
        value = v.strip_suffix('\r').unwrap_or(v).to_owned();
    }
    Ok(value)
}

/// The terminal without echo while it lives, restored however the read ends: on drop, and by
/// a SIGINT handler, since Ctrl-C at the prompt ends the process without dropping anything and
/// would leave the shell without echo.
struct EchoOff<'a> {
    fd: std::os::fd::BorrowedFd<'a>,
    saved: nix::sys::termios::Termios,
}

/// The settings [`EchoOff`] put aside, for [`restore_and_exit`], which may read nothing that
/// allocates or locks.
static SAVED: std::sync::OnceLock<nix::libc::termios> = std::sync::OnceLock::new();

extern "C" fn restore_and_exit(_: nix::libc::c_int) {
    // SAFETY: `tcsetattr`, `write` and `_exit` are async-signal-safe, and `SAVED` was set before
    // this handler was installed, so `get` only reads it.
    unsafe {
        if let Some(saved) = SAVED.get() {
            nix::libc::tcsetattr(0, nix::libc::TCSANOW, saved);
        }
        nix::libc::write(2, b"\n".as_ptr().cast(), 1);
        nix::libc::_exit(130);
    }
}

impl<'a> EchoOff<'a> {
    fn new(stdin: &'a std::io::Stdin) -> anyhow::Result<Self> {
        use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let fd = stdin.as_fd();
        let saved = tcgetattr(fd).context("reading the terminal's settings")?;
        let _ = SAVED.set(saved.clone().into());
        let handler = SigAction::new(
            SigHandler::Handler(restore_and_exit),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler only makes async-signal-safe calls (see `restore_and_exit`).
        unsafe { sigaction(Signal::SIGINT, &handler) }.context("handling Ctrl-C at the prompt")?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        tcsetattr(fd, SetArg::TCSAFLUSH, &quiet).context("turning the terminal's echo off")?;
        Ok(Self { fd, saved })
    }
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            self.fd,
            nix::sys::termios::SetArg::TCSAFLUSH,
            &self.saved,
        );
    }
}

fn events_of(secret: &RepoSecret) -> String {
    let mut what = if secret.events.is_empty() {
        "every event".to_owned()
    } else {
        let events: Vec<&str> = secret.events.iter().map(|e| e.as_str()).collect();
        format!("events {}", events.join(", "))
    };
    if !secret.branches.is_empty() {
        what.push_str(&format!("; pushes to {}", secret.branches.join(", ")));
    }
    what
}

fn secrets_table(secrets: &[RepoSecret], now: chrono::DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = secrets
        .iter()
        .map(|s| {
            let events: Vec<&str> = s.events.iter().map(|e| e.as_str()).collect();
            vec![
                s.name.clone(),
                if events.is_empty() {
                    "all".to_owned()
                } else {
                    events.join(",")
                },
                if s.branches.is_empty() {
                    "all".to_owned()
                } else {
                    s.branches.join(",")
                },
                ago(s.updated_at, now),
            ]
        })
        .collect();
    table(&["NAME", "EVENTS", "BRANCHES", "UPDATED"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raibid_model::Event;

    #[test]
    fn a_row_per_secret_without_values() {
        let now = Utc::now();
        let secret = |name: &str, events: Vec<Event>| RepoSecret {
            name: name.into(),
            events,
            branches: if name == "DEPLOY_KEY" {
                vec!["main".into()]
            } else {
                vec![]
            },
            updated_at: now - chrono::Duration::minutes(5),
        };
        let text = secrets_table(
            &[
                secret("DEPLOY_KEY", vec![Event::Push, Event::Tag]),
                secret("NPM_TOKEN", vec![]),
            ],
            now,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{text}");
        assert!(
            lines[1].contains("DEPLOY_KEY")
                && lines[1].contains("push,tag")
                && lines[1].contains("main"),
            "{text}"
        );
        assert!(
            lines[2].contains("NPM_TOKEN") && lines[2].contains("all"),
            "{text}"
        );
        assert!(lines[2].contains("5m00s ago"), "{text}");
    }
}
