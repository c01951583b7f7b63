use std::process::ExitCode;

use raibid_config::ConfigSource;

use crate::cli::{ConfigCommand, Global};

pub fn run(global: &Global, cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    let (config, source) = raibid_config::load(global.config.as_deref())?;
    match cmd {
        ConfigCommand::Show => {
            match &source {
                ConfigSource::File(p) => println!("# from {} and RAIBID_* variables", p.display()),
                ConfigSource::Defaults => println!(
                    "# no file at {}: defaults and RAIBID_* variables",
                    raibid_config::default_path().display()
                ),
            }
            print!("{}", serde_yaml::to_string(&ShowConfig(&config))?);
        }
        ConfigCommand::Path => match source {
            ConfigSource::File(p) => println!("{}", p.display()),
            ConfigSource::Defaults => {
                println!("{} (absent)", raibid_config::default_path().display())
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the Redis URL with its password replaced, unlike other secrets which vanish whole:
/// the host and port are what a user checks.
struct ShowConfig<'a>(&'a raibid_config::Config);

impl serde::Serialize for ShowConfig<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut value = serde_yaml::to_value(self.0).map_err(serde::ser::Error::custom)?;
        if let Some(redis) = value.get_mut("redis")
            && let Some(url) = redis.get_mut("url")
        {
            *url = serde_yaml::Value::String(redact_url(self.0.redis.url.expose()));
        }
        value.serialize(s)
    }
}

/// Also used by `raibid up` for an external Redis.
pub(crate) use raibid_config::redact_url;

#[cfg(test)]
mod tests {
    /// Every option's environment fallback must be one the configuration loader lets through:
    /// one under a section prefix (`RAIBID_UP_...`) would otherwise stop every command.
    #[test]
    fn option_environment_variables_are_not_mistaken_for_fields() {
        use clap::CommandFactory;

        fn walk(cmd: &clap::Command, names: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if let Some(env) = arg.get_env() {
                    names.push(env.to_string_lossy().into_owned());
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, names);
            }
        }
        let mut names = Vec::new();
        walk(&crate::cli::Cli::command(), &mut names);
        assert!(
            names.iter().any(|n| n == "RAIBID_UP_WEBHOOK_SECRET"),
            "{names:?}"
        );
        for name in names {
            assert!(
                !raibid_config::is_override_variable(&name),
                "{name} is read by a command-line option but the configuration loader takes \
                 it for a field: add it to raibid-config's NOT_FIELDS"
            );
        }
    }
}
