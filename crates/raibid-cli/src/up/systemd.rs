//! `raibid up --systemd-unit`: a systemd service unit that runs this `raibid up` at boot, as
//! GitLab Runner's `install` and act_runner's documented unit do for theirs.
//!
//! The unit is written out rather than hand-made because of what a hand-made one gets wrong:
//! - `KillMode=mixed`. systemd's default stop signals every process of the unit at once:
//!   redis-server would shut down and the registry stop under agents that, in their grace
//!   period, still have jobs to ack and images to push. `raibid up` stops them itself, in
//!   order, and mixed sends SIGTERM to it alone, then SIGKILL to whatever it left.
//! - `TimeoutStopSec` long enough for that order: the agents' grace period, then the server,
//!   the registry and Redis.
//! - What this shell had and the service would not: the absolute paths of the program, its
//!   data directory and configuration file (a service's working directory is `/`), and `PATH`,
//!   where host steps find their tools.
//!
//! Nothing secret goes into it: a unit file is readable by every user. Secrets stay where
//! `raibid up` keeps them (its data directory, the configuration file), and
//! `<data-dir>/service.env` is read for `RAIBID_*` variables this shell had.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::cli::{Global, UpArgs};

/// Added to the agents' grace period for the rest of the stop: the server (15 s at most),
/// the registry and Redis (10 s each at most), and the agents' acks after their grace.
const STOP_MARGIN_SECS: u64 = 90;

/// What the unit is made of, gathered from this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitInputs {
    pub program: PathBuf,
    pub config: Option<PathBuf>,
    pub log_level: Option<String>,
    pub data_dir: PathBuf,
    pub listen: Option<String>,
    pub max_agents: Option<u32>,
    pub cooldown: Option<u64>,
    pub webhook_secret_file: Option<PathBuf>,
    pub redis_url: Option<String>,
    /// None when this runs as root: the service then runs as root too.
    pub user: Option<String>,
    pub path: Option<String>,
    pub grace_period_secs: u64,
    /// `RAIBID_*` configuration variables of this process, which the unit leaves out.
    pub left_out: Vec<String>,
}

/// `RAIBID_*` variables that are no configuration of `raibid up`: the CLI's server and token,
/// and the configuration file's path, which the unit names.
const NOT_CONFIGURATION: [&str; 3] = ["RAIBID_CONFIG", "RAIBID_SERVER", "RAIBID_TOKEN"];

impl UnitInputs {
    /// From `raibid up`'s arguments and this process; refuses what must not go into a file
    /// every user can read, and what a service cannot do.
    pub fn gather(
        global: &Global,
        args: &UpArgs,
        config: &raibid_config::Config,
    ) -> anyhow::Result<Self> {
        if args.demo {
            bail!(
                "--demo does not go with --systemd-unit: the service runs the farm, not the \
                 demo (run `raibid up --demo` in a shell to try it)"
            );
        }
        if args.webhook_secret.is_some() {
            bail!(
                "--webhook-secret (or RAIBID_UP_WEBHOOK_SECRET) would be written into the \
                 unit file, which every user of the machine can read: give \
                 --webhook-secret-file FILE instead, or leave it out to use the one generated \
                 in the data directory"
            );
        }
        if let Some(url) = &args.redis_url
            && raibid_config::redact_url(url) != *url
        {
            bail!(
                "--redis-url holds credentials, which would be written into the unit file \
                 that every user of the machine can read: set redis.url in the configuration \
                 file (or RAIBID_REDIS_URL in <data-dir>/{SERVICE_ENV}) instead"
            );
        }
        let program = std::env::current_exe()
            .and_then(|p| p.canonicalize())
            .map_err(|e| anyhow::anyhow!("locating the raibid executable: {e}"))?;
        // The file `raibid up` would read here, named: the service's environment has none of
        // this shell's variables (`RAIBID_CONFIG`, `XDG_CONFIG_HOME`). None when there is no
        // file yet: then the service reads its user's default, which may be written later.
        let config_file = global
            .config
            .clone()
            .or_else(|| std::env::var_os("RAIBID_CONFIG").map(PathBuf::from))
            .or_else(|| Some(raibid_config::default_path()).filter(|p| p.is_file()));
        let data_dir = match &args.data_dir {
            Some(dir) => dir.clone(),
            None => crate::commands::data_home(config),
        };
        let uid = nix::unistd::Uid::current();
        let user = if uid.is_root() {
            None
        } else {
            match nix::unistd::User::from_uid(uid) {
                Ok(Some(user)) => Some(user.name),
                _ => {
                    bail!("user {uid} has no name in the user database: systemd's User= needs one")
                }
            }
        };
        Ok(Self {
            program,
            config: config_file.map(std::path::absolute).transpose()?,
            log_level: global.log_level.clone(),
            data_dir: std::path::absolute(data_dir)?,
            listen: args.listen.clone(),
            max_agents: args.max_agents,
            cooldown: args.cooldown,
            webhook_secret_file: args
                .webhook_secret_file
                .clone()
                .map(std::path::absolute)
                .transpose()?,
            redis_url: args.redis_url.clone(),
            user,
            path: std::env::var("PATH").ok(),
            grace_period_secs: config.agent.grace_period_secs,
            left_out: std::env::vars_os()
                .filter_map(|(name, _)| name.into_string().ok())
                .filter(|name| {
                    name.starts_with("RAIBID_") && !NOT_CONFIGURATION.contains(&name.as_str())
                })
                .collect(),
        })
    }

    /// What to tell whoever installs the unit, on stderr beside it.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if !self.left_out.is_empty() {
            let mut names = self.left_out.clone();
            names.sort();
            notes.push(format!(
                "{} set here and not written into the unit (it may hold secrets); the service \
                 reads them from {} (KEY=value lines, private to its owner)",
                names.join(", "),
                self.data_dir.join(SERVICE_ENV).display()
            ));
        }
        notes
    }

    /// `raibid up` with the same options, each argument quoted for `ExecStart=`.
    fn exec_start(&self) -> anyhow::Result<String> {
        let mut argv: Vec<String> = Vec::new();
        if let Some(config) = &self.config {
            argv.extend(["--config".into(), path_text(config)?]);
        }
        if let Some(level) = &self.log_level {
            argv.extend(["--log-level".into(), level.clone()]);
        }
        argv.extend(["up".into(), "--data-dir".into(), path_text(&self.data_dir)?]);
        if let Some(listen) = &self.listen {
            argv.extend(["--listen".into(), listen.clone()]);
        }
        if let Some(n) = self.max_agents {
            argv.extend(["--max-agents".into(), n.to_string()]);
        }
        if let Some(secs) = self.cooldown {
            argv.extend(["--cooldown".into(), secs.to_string()]);
        }
        if let Some(file) = &self.webhook_secret_file {
            argv.extend(["--webhook-secret-file".into(), path_text(file)?]);
        }
        if let Some(url) = &self.redis_url {
            argv.extend(["--redis-url".into(), url.clone()]);
        }
        // systemd takes the program's path without `$` expansion, its arguments with it.
        let mut line = quote(&path_text(&self.program)?, Expand::Setting)?;
        for arg in &argv {
            line.push(' ');
            line.push_str(&quote(arg, Expand::Exec)?);
        }
        Ok(line)
    }

    /// The unit file's text.
    pub fn render(&self) -> anyhow::Result<String> {
        let mut unit = String::new();
        let generated = std::env::args()
            .map(|a| shell_word(&a))
            .collect::<Vec<_>>()
            .join(" ");
        writeln!(unit, "# Written by: {generated}")?;
        writeln!(
            unit,
            "# Install as /etc/systemd/system/raibid-up.service, then:\n\
             #   sudo systemctl daemon-reload && sudo systemctl enable --now raibid-up\n\
             #   journalctl -u raibid-up -f        # what it prints\n\
             # Write it again (same command) after moving the program or changing\n\
             # agent.grace_period_secs."
        )?;
        unit.push_str(
            "\n[Unit]\n\
             Description=raibid-ci: this machine's CI farm (raibid up)\n\
             Wants=network-online.target\n\
             After=network-online.target\n\
             \n[Service]\n\
             Type=exec\n",
        );
        if let Some(user) = &self.user {
            // Taken as written, quotes and all: a name systemd would read otherwise is refused.
            if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c == '"') {
                bail!("user name {user:?} cannot be written into a unit's User=");
            }
            writeln!(unit, "User={}", quote_bare(user)?)?;
        }
        writeln!(unit, "ExecStart={}", self.exec_start()?)?;
        if let Some(path) = &self.path {
            writeln!(
                unit,
                "# Where host steps find their tools, as in the shell that wrote this."
            )?;
            writeln!(
                unit,
                "Environment={}",
                quote(&format!("PATH={path}"), Expand::Setting)?
            )?;
        }
        writeln!(
            unit,
            "# RAIBID_* variables (KEY=value lines; keep it private to its owner)."
        )?;
        writeln!(
            unit,
            "EnvironmentFile=-{}",
            quote_bare(&path_text(&self.data_dir.join(SERVICE_ENV))?)?
        )?;
        writeln!(
            unit,
            "# raibid up stops its agents (their grace period for running jobs), then the\n\
             # server, the registry and Redis, in order: the signal goes to it alone."
        )?;
        unit.push_str("KillMode=mixed\nKillSignal=SIGTERM\n");
        writeln!(
            unit,
            "TimeoutStopSec={}",
            self.grace_period_secs.saturating_add(STOP_MARGIN_SECS)
        )?;
        unit.push_str(
            "Restart=on-failure\n\
             RestartSec=5\n\
             # Agents, sandboxes and Redis hold many files at once.\n\
             LimitNOFILE=65536\n\
             \n[Install]\n\
             WantedBy=multi-user.target\n",
        );
        Ok(unit)
    }
}

/// The file in the data directory the unit reads variables from.
pub const SERVICE_ENV: &str = "service.env";

/// Which expansions systemd applies to a setting's value.
#[derive(Clone, Copy)]
enum Expand {
    /// `ExecStart=`'s arguments: `%` specifiers and `$VAR`.
    Exec,
    /// Other settings, and `ExecStart=`'s program: `%` specifiers.
    Setting,
}

/// `text` as one argument or value systemd reads back as `text`: in double quotes, with C-style
/// escapes for `\` and `"`, `%%` for `%` and, in command lines, `$$` for `$`.
fn quote(text: &str, expand: Expand) -> anyhow::Result<String> {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            '%' => quoted.push_str("%%"),
            '$' if matches!(expand, Expand::Exec) => quoted.push_str("$$"),
            c if c.is_control() => bail!(
                "{text:?} holds a control character, which a unit file cannot carry: \
                 choose another"
            ),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    Ok(quoted)
}

/// For `EnvironmentFile=`, which takes a path unquoted (the rest of the line): `%%` for `%`.
fn quote_bare(text: &str) -> anyhow::Result<String> {
    if text.chars().any(char::is_control) {
        bail!("{text:?} holds a control character, which a unit file cannot carry");
    }
    Ok(text.replace('%', "%%"))
}

/// `arg` as a shell reads it back, for the command written into the unit's comment that
/// makes it again; on one line.
fn shell_word(arg: &str) -> String {
    raibid_infra::shell_quote(arg).replace('\n', "'$'\\n''")
}

fn path_text(path: &Path) -> anyhow::Result<String> {
    match path.to_str() {
        Some(text) => Ok(text.to_owned()),
        None => bail!(
            "{} is not UTF-8, which a unit file cannot carry: choose another path",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> UnitInputs {
        UnitInputs {
            program: "/opt/raibid ci/bin/raibid".into(),
            config: Some("/etc/raibid/config.yaml".into()),
            log_level: None,
            data_dir: "/srv/ci data/100%".into(),
            listen: Some("0.0.0.0:8080".into()),
            max_agents: Some(4),
            cooldown: None,
            webhook_secret_file: None,
            redis_url: None,
            user: Some("ci".into()),
            path: Some("/home/ci/.cargo/bin:/usr/bin:/bin".into()),
            grace_period_secs: 30,
            left_out: Vec::new(),
        }
    }

    #[test]
    fn arguments_are_quoted_as_systemd_reads_them() {
        assert_eq!(quote("plain", Expand::Exec).unwrap(), "\"plain\"");
        assert_eq!(
            quote(r#"a "b" \c 5% $HOME"#, Expand::Exec).unwrap(),
            r#""a \"b\" \\c 5%% $$HOME""#
        );
        assert_eq!(
            quote("PATH=/a b:$x%", Expand::Setting).unwrap(),
            "\"PATH=/a b:$x%%\""
        );
        assert!(quote("a\nExecStartPre=/bin/evil", Expand::Exec).is_err());
        assert!(quote_bare("/data\n[Service]").is_err());
    }

    #[test]
    fn the_command_in_the_comment_is_quoted_for_a_shell() {
        assert_eq!(shell_word("--data-dir"), "--data-dir");
        assert_eq!(shell_word("/srv/ci data/100%"), "'/srv/ci data/100%'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("a\nb"), r"'a'$'\n''b'");
    }

    #[test]
    fn the_unit_runs_up_with_its_options_and_stops_it_alone_and_long_enough() {
        let unit = inputs().render().unwrap();
        assert!(
            unit.contains(
                "\nExecStart=\"/opt/raibid ci/bin/raibid\" \"--config\" \
                 \"/etc/raibid/config.yaml\" \"up\" \"--data-dir\" \"/srv/ci data/100%%\" \
                 \"--listen\" \"0.0.0.0:8080\" \"--max-agents\" \"4\"\n"
            ),
            "{unit}"
        );
        assert!(unit.contains("\nUser=ci\n"), "{unit}");
        assert!(
            unit.contains("\nEnvironment=\"PATH=/home/ci/.cargo/bin:/usr/bin:/bin\"\n"),
            "{unit}"
        );
        assert!(
            unit.contains("\nEnvironmentFile=-/srv/ci data/100%%/service.env\n"),
            "{unit}"
        );
        assert!(unit.contains("\nKillMode=mixed\n"), "{unit}");
        assert!(unit.contains("\nTimeoutStopSec=120\n"), "{unit}");
        assert!(unit.contains("\nWantedBy=multi-user.target\n"), "{unit}");
    }

    /// `systemd-analyze verify` reads it without a word: a unit for a user, with a program
    /// and a data directory whose paths need quoting.
    #[test]
    fn systemd_reads_the_unit_without_complaint() {
        let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("systemd-analyze is missing: apt-get install -y systemd");
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("raibid 100% $HOME");
        std::fs::copy(std::env::current_exe().unwrap(), &program).unwrap();
        let unit = UnitInputs {
            program,
            data_dir: dir.path().join("data \"100%\" $HOME"),
            user: Some("daemon".into()),
            ..inputs()
        }
        .render()
        .unwrap();
        let file = dir.path().join("raibid-up.service");
        std::fs::write(&file, &unit).unwrap();
        let out = std::process::Command::new(analyze)
            .arg("verify")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "{out:?}\n{unit}"
        );
        assert!(unit.contains("\nUser=daemon\n"), "{unit}");
    }

    #[test]
    fn a_user_name_systemd_would_read_otherwise_is_refused() {
        for name in ["", "a b", "\"ci\""] {
            let inputs = UnitInputs {
                user: Some(name.into()),
                ..inputs()
            };
            assert!(inputs.render().is_err(), "{name:?}");
        }
    }

    #[test]
    fn root_runs_it_as_root_and_options_left_out_stay_out() {
        let unit = UnitInputs {
            user: None,
            config: None,
            listen: None,
            max_agents: None,
            path: None,
            ..inputs()
        }
        .render()
        .unwrap();
        assert!(!unit.contains("User="), "{unit}");
        assert!(!unit.contains("Environment=\"PATH"), "{unit}");
        assert!(
            unit.contains(
                "\nExecStart=\"/opt/raibid ci/bin/raibid\" \"up\" \"--data-dir\" \
                 \"/srv/ci data/100%%\"\n"
            ),
            "{unit}"
        );
    }
}
