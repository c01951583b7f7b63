//! The command-line tools some steps drive (helm, flux, curl for the k3s installer), found on
//! PATH once so that a plan can say up front which route it takes.

use std::path::PathBuf;

/// Which optional tools are installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tools {
    pub helm: bool,
    pub flux: bool,
}

impl Tools {
    pub fn detect() -> Self {
        Self {
            helm: which("helm").is_some(),
            flux: which("flux").is_some(),
        }
    }
}

/// The first executable called `program` on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// How to install `tool`, for error messages.
pub fn install_hint(tool: &str) -> String {
    match tool {
        "helm" => "install Helm 3 (https://helm.sh/docs/intro/install/) or let Flux install the \
                   chart (`raibid setup flux` first)"
            .into(),
        "flux" => {
            "install the Flux CLI (https://fluxcd.io/flux/installation/#install-the-flux-cli)"
                .into()
        }
        "curl" => "install curl (`apt-get install curl`)".into(),
        path if path.ends_with("k3s-uninstall.sh") => {
            "k3s was not installed by the official installer here (its uninstall script is \
             missing): remove it the way it was installed"
                .into()
        }
        other => format!("install {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_but_not_nonsense() {
        assert!(which("sh").is_some());
        assert!(which("raibid-no-such-tool").is_none());
    }
}
