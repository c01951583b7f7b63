//! Installing k3s: the official installer, printed exactly as it will run. There is nothing
//! to fake here: without internet access the installer fails and the error says what to run
//! on a machine that has it.

use raibid_config::Config;

use crate::InfraError;
use crate::cluster::K3S_KUBECONFIG;

pub const INSTALLER_URL: &str = "https://get.k3s.io";

/// What `sh -c` runs: a constant. The settings reach the installer as environment variables
/// (`INSTALL_K3S_VERSION`, `INSTALL_K3S_EXEC`), never spliced into the script, so no
/// configuration value is ever parsed by a shell.
pub const INSTALLER_SCRIPT: &str = concat!(
    "installer=$(mktemp) && curl -sfL https://get.k3s.io -o \"$installer\" && ",
    "sh \"$installer\""
);

/// How k3s gets installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum K3sInstall {
    /// Download the official installer, then run it (as root, or it uses sudo) with `env`. Not
    /// the usual `curl | sh`: there, a failed download runs an empty script and "succeeds".
    Installer { env: Vec<(String, String)> },
    /// Rootless k3s runs as a systemd user service, which the installer does not set up.
    Rootless { instructions: String },
}

/// The kubeconfig mode: cluster-admin credentials are for root only. Other users copy the file
/// (see [`KUBECONFIG_FOR_USER`]) rather than everyone on the machine reading it.
pub const KUBECONFIG_MODE: &str = "0600";

/// How a non-root user gets the kubeconfig the installer writes.
pub const KUBECONFIG_FOR_USER: &str = "mkdir -p ~/.kube && sudo install -m 0600 -o \"$(id -u)\" \
     -g \"$(id -g)\" /etc/rancher/k3s/k3s.yaml ~/.kube/config";

impl K3sInstall {
    /// Refuses a `k3s.version` or `k3s.data_dir` the installer could not take safely: it splits
    /// `INSTALL_K3S_EXEC` on whitespace and writes it into a systemd unit, so a space or quote
    /// would change the flags k3s runs with.
    pub fn for_config(config: &Config) -> Result<Self, InfraError> {
        let data_dir = &config.k3s.data_dir;
        if !data_dir.starts_with('/') || !plain(data_dir) {
            return Err(InfraError::InvalidSetting {
                field: "k3s.data_dir",
                value: data_dir.clone(),
                expected: "an absolute path of letters, digits and / . _ + - only",
            });
        }
        let version = &config.k3s.version;
        if !plain(version) || version.contains('/') {
            return Err(InfraError::InvalidSetting {
                field: "k3s.version",
                value: version.clone(),
                expected: "a k3s release such as v1.33.4+k3s1 (letters, digits and . _ + - only)",
            });
        }
        let mut exec = vec!["server".to_owned()];
        if config.k3s.disable_traefik {
            exec.push("--disable traefik".into());
        }
        exec.push(format!("--data-dir {data_dir}"));
        if config.k3s.rootless {
            return Ok(Self::Rootless {
                instructions: rootless_instructions(config, &exec[1..].join(" ")),
            });
        }
        exec.push(format!("--write-kubeconfig-mode {KUBECONFIG_MODE}"));
        let mut env = Vec::new();
        if !version.is_empty() {
            env.push(("INSTALL_K3S_VERSION".to_owned(), version.clone()));
        }
        env.push(("INSTALL_K3S_EXEC".to_owned(), exec.join(" ")));
        Ok(Self::Installer { env })
    }

    /// The installer as a shell command line (to print, or to run by hand elsewhere): the
    /// environment quoted, then [`INSTALLER_SCRIPT`].
    pub fn command_line(env: &[(String, String)]) -> String {
        let assignments: Vec<String> = env
            .iter()
            .map(|(k, v)| format!("{k}={}", crate::plan::shell_quote(v)))
            .collect();
        format!(
            "{} sh -c {}",
            assignments.join(" "),
            crate::plan::shell_quote(INSTALLER_SCRIPT)
        )
    }
}

/// Letters, digits and `/ . _ + -`: nothing a shell or the installer's word splitting treats
/// specially.
fn plain(value: &str) -> bool {
    value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._+-".contains(c))
}

fn rootless_instructions(config: &Config, flags: &str) -> String {
    let version = if config.k3s.version.is_empty() {
        "master".to_owned()
    } else {
        config.k3s.version.clone()
    };
    format!(
        "Rootless k3s runs as a systemd user service (https://docs.k3s.io/advanced#running-rootless-servers-experimental).\n\
         As root, install the binary without starting it:\n\
         \x20 curl -sfL {INSTALLER_URL} | INSTALL_K3S_SKIP_ENABLE=true INSTALL_K3S_SKIP_START=true sh -\n\
         As the user that will run k3s:\n\
         \x20 mkdir -p ~/.config/systemd/user\n\
         \x20 curl -fsSL -o ~/.config/systemd/user/k3s-rootless.service \\\n\
         \x20   https://raw.githubusercontent.com/k3s-io/k3s/{version}/k3s-rootless.service\n\
         \x20 # add these flags to ExecStart in that file: {flags}\n\
         \x20 systemctl --user daemon-reload && systemctl --user enable --now k3s-rootless\n\
         Then set cluster.kubeconfig to ~/.kube/k3s.yaml (the rootless kubeconfig; a root \
         install writes {K3S_KUBECONFIG})."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn installer_command_follows_the_configuration() {
        let mut config = Config::default();
        assert_eq!(
            K3sInstall::for_config(&config).unwrap(),
            K3sInstall::Installer {
                env: env(&[(
                    "INSTALL_K3S_EXEC",
                    "server --disable traefik --data-dir /var/lib/rancher/k3s \
                     --write-kubeconfig-mode 0600"
                )])
            }
        );
        config.k3s.version = "v1.33.4+k3s1".into();
        config.k3s.disable_traefik = false;
        assert_eq!(
            K3sInstall::for_config(&config).unwrap(),
            K3sInstall::Installer {
                env: env(&[
                    ("INSTALL_K3S_VERSION", "v1.33.4+k3s1"),
                    (
                        "INSTALL_K3S_EXEC",
                        "server --data-dir /var/lib/rancher/k3s --write-kubeconfig-mode 0600"
                    )
                ])
            }
        );
    }

    /// The values once went into the `sh -c` string between single quotes, so a `'` ended the
    /// quoting and the rest ran as shell commands.
    #[test]
    fn settings_that_could_reach_a_shell_are_refused() {
        for (field, value) in [
            ("k3s.data_dir", "/var/lib/x'; touch /tmp/x; '"),
            ("k3s.data_dir", "/var/lib/with space"),
            ("k3s.data_dir", "relative/dir"),
            ("k3s.version", "v1.33.4+k3s1 INSTALL_K3S_SKIP_DOWNLOAD=true"),
            ("k3s.version", "$(touch /tmp/x)"),
        ] {
            let mut config = Config::default();
            if field == "k3s.data_dir" {
                config.k3s.data_dir = value.into();
            } else {
                config.k3s.version = value.into();
            }
            let err = K3sInstall::for_config(&config).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{field} = {value:?}")), "{err}");
        }
        // Rootless prints the flags for a person to paste: same rule.
        let mut config = Config::default();
        config.k3s.rootless = true;
        config.k3s.data_dir = "/x'; touch /tmp/x; '".into();
        assert!(K3sInstall::for_config(&config).is_err());
    }

    #[test]
    fn rootless_is_explained_not_run() {
        let mut config = Config::default();
        config.k3s.rootless = true;
        let K3sInstall::Rootless { instructions } = K3sInstall::for_config(&config).unwrap() else {
            panic!("rootless");
        };
        assert!(instructions.contains("systemctl --user enable --now k3s-rootless"));
        assert!(instructions.contains("--disable traefik --data-dir /var/lib/rancher/k3s"));
    }
}
