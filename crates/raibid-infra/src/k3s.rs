//! Installing k3s: the official installer, printed exactly as it will run. There is nothing
//! to fake here: without internet access the installer fails and the error says what to run
//! on a machine that has it.

use raibid_config::Config;

use crate::cluster::K3S_KUBECONFIG;

pub const INSTALLER_URL: &str = "https://get.k3s.io";

/// How k3s gets installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum K3sInstall {
    /// Download the official installer, then run it (as root, or it uses sudo). Not the usual
    /// `curl | sh`: there, a failed download runs an empty script and "succeeds".
    Installer { command: String },
    /// Rootless k3s runs as a systemd user service, which the installer does not set up.
    Rootless { instructions: String },
}

impl K3sInstall {
    pub fn for_config(config: &Config) -> Self {
        let mut exec = vec!["server".to_owned()];
        if config.k3s.disable_traefik {
            exec.push("--disable traefik".into());
        }
        exec.push(format!("--data-dir {}", config.k3s.data_dir));
        if config.k3s.rootless {
            return Self::Rootless {
                instructions: rootless_instructions(config, &exec[1..].join(" ")),
            };
        }
        // Readable by the user who runs raibid, who is not necessarily root.
        exec.push("--write-kubeconfig-mode 0644".into());
        let mut env = Vec::new();
        if !config.k3s.version.is_empty() {
            env.push(format!("INSTALL_K3S_VERSION={}", config.k3s.version));
        }
        env.push(format!("INSTALL_K3S_EXEC='{}'", exec.join(" ")));
        Self::Installer {
            command: format!(
                "installer=$(mktemp) && curl -sfL {INSTALLER_URL} -o \"$installer\" && {} sh \"$installer\"",
                env.join(" ")
            ),
        }
    }
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

    #[test]
    fn installer_command_follows_the_configuration() {
        let mut config = Config::default();
        assert_eq!(
            K3sInstall::for_config(&config),
            K3sInstall::Installer {
                command: "installer=$(mktemp) && curl -sfL https://get.k3s.io -o \"$installer\" \
                          && INSTALL_K3S_EXEC='server --disable traefik --data-dir \
                          /var/lib/rancher/k3s --write-kubeconfig-mode 0644' sh \"$installer\""
                    .into()
            }
        );
        config.k3s.version = "v1.33.4+k3s1".into();
        config.k3s.disable_traefik = false;
        let K3sInstall::Installer { command } = K3sInstall::for_config(&config) else {
            panic!("not rootless");
        };
        assert!(
            command.contains(
                "&& INSTALL_K3S_VERSION=v1.33.4+k3s1 INSTALL_K3S_EXEC='server --data-dir"
            )
        );
    }

    #[test]
    fn rootless_is_explained_not_run() {
        let mut config = Config::default();
        config.k3s.rootless = true;
        let K3sInstall::Rootless { instructions } = K3sInstall::for_config(&config) else {
            panic!("rootless");
        };
        assert!(instructions.contains("systemctl --user enable --now k3s-rootless"));
        assert!(instructions.contains("--disable traefik --data-dir /var/lib/rancher/k3s"));
    }
}
