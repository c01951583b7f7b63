//! Target platforms, and whether this machine can build for them.
//!
//! A foreign platform's `RUN` steps execute its binaries, which needs qemu user-mode emulation
//! registered with the kernel's binfmt_misc. Without it buildah fails deep into the build with
//! `exec format error`; checking first gives an error that says what to install.

use std::fmt;
use std::path::Path;

/// Where the kernel lists its binfmt_misc handlers.
pub(crate) const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Platform {
    arch: String,
    variant: Option<String>,
}

impl Platform {
    /// `linux/<arch>[/<variant>]`, as in `--platform`.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.split('/');
        let (os, arch, variant) = (parts.next(), parts.next(), parts.next());
        if parts.next().is_some() || os != Some("linux") {
            return Err(format!(
                "platform {text:?} is not of the form linux/<arch>[/<variant>]"
            ));
        }
        let arch = arch.filter(|a| qemu_name(a).is_some()).ok_or_else(|| {
            format!(
                "platform {text:?}: unknown architecture (known: {})",
                known_arches()
            )
        })?;
        if variant.is_some_and(|v| v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric())) {
            return Err(format!("platform {text:?}: invalid variant"));
        }
        Ok(Self {
            arch: arch.to_owned(),
            variant: variant.map(str::to_owned),
        })
    }

    /// This machine's platform, as container images name it.
    pub(crate) fn native() -> Option<Self> {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "arm" => "arm",
            "x86" => "386",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            "mips64" if cfg!(target_endian = "little") => "mips64le",
            "loongarch64" => "loong64",
            _ => return None,
        };
        Some(Self {
            arch: arch.to_owned(),
            variant: None,
        })
    }

    /// The automatic build arguments a Containerfile may use in `FROM` without declaring them:
    /// `<prefix>PLATFORM`, `<prefix>OS`, `<prefix>ARCH`, `<prefix>VARIANT` (`TARGET`, `BUILD`).
    pub(crate) fn build_args(&self, prefix: &str) -> [(String, String); 4] {
        [
            (format!("{prefix}PLATFORM"), self.to_string()),
            (format!("{prefix}OS"), "linux".to_owned()),
            (format!("{prefix}ARCH"), self.arch.clone()),
            (
                format!("{prefix}VARIANT"),
                self.variant.clone().unwrap_or_default(),
            ),
        ]
    }

    /// Checks that `RUN` steps for this platform can execute here; the error says what to
    /// install.
    pub(crate) fn check_buildable(&self, binfmt_dir: &Path) -> Result<(), String> {
        let native = Self::native();
        if native.as_ref().is_some_and(|n| n.arch == self.arch) {
            return Ok(());
        }
        let here = native.map_or_else(|| std::env::consts::ARCH.to_owned(), |n| n.to_string());
        let qemu = qemu_name(&self.arch).unwrap_or(&self.arch);
        let handler = binfmt_dir.join(format!("qemu-{qemu}"));
        let install = "install qemu-user-static and binfmt-support on the agent's host \
                       (apt-get install qemu-user-static binfmt-support), or register the \
                       handlers once per node with a privileged `tonistiigi/binfmt --install all`";
        let Ok(entry) = std::fs::read_to_string(&handler) else {
            let mounted = binfmt_dir.join("status").exists();
            let why = if mounted {
                format!(
                    "no qemu-{qemu} handler is registered in {}",
                    binfmt_dir.display()
                )
            } else {
                format!("binfmt_misc is not mounted at {}", binfmt_dir.display())
            };
            return Err(format!(
                "this is a {here} machine and running {self} binaries needs qemu emulation, \
                 but {why}; {install}"
            ));
        };
        if entry.lines().next() != Some("enabled") {
            return Err(format!(
                "the binfmt handler {} is disabled",
                handler.display()
            ));
        }
        let fix_binary = entry
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .is_some_and(|flags| flags.contains('F'));
        if !fix_binary {
            return Err(format!(
                "the binfmt handler {} lacks the F (fix-binary) flag, so its emulator cannot be \
                 found inside a build's root filesystem; {install}",
                handler.display()
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "linux/{}", self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

const ARCHES: [(&str, &str); 9] = [
    ("amd64", "x86_64"),
    ("arm64", "aarch64"),
    ("arm", "arm"),
    ("386", "i386"),
    ("ppc64le", "ppc64le"),
    ("s390x", "s390x"),
    ("riscv64", "riscv64"),
    ("mips64le", "mips64el"),
    ("loong64", "loongarch64"),
];

/// The name qemu (and so its binfmt handler) gives an architecture.
fn qemu_name(arch: &str) -> Option<&'static str> {
    ARCHES.iter().find(|(a, _)| *a == arch).map(|(_, q)| *q)
}

fn known_arches() -> String {
    ARCHES.map(|(a, _)| a).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn foreign() -> Platform {
        let native = Platform::native().unwrap();
        let arch = if native.arch == "s390x" {
            "arm64"
        } else {
            "s390x"
        };
        Platform::parse(&format!("linux/{arch}")).unwrap()
    }

    #[test]
    fn parses_platforms() {
        assert_eq!(
            Platform::parse("linux/arm/v7").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            Platform::parse("linux/amd64").unwrap().to_string(),
            "linux/amd64"
        );
        assert!(Platform::parse("windows/amd64").is_err());
        assert!(Platform::parse("linux/vax").is_err());
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux/arm/v7/x").is_err());
        assert!(Platform::parse("linux/arm/").is_err());
    }

    #[test]
    fn native_platform_needs_no_emulation() {
        let native = Platform::native().unwrap();
        assert!(native.check_buildable(Path::new("/nonexistent")).is_ok());
    }

    #[test]
    fn foreign_platform_needs_an_enabled_fix_binary_handler() {
        let dir = tempfile::tempdir().unwrap();
        let platform = foreign();
        let err = platform.check_buildable(dir.path()).unwrap_err();
        assert!(err.contains("binfmt_misc is not mounted"), "{err}");
        assert!(err.contains("qemu-user-static"), "{err}");
        std::fs::write(dir.path().join("status"), "enabled\n").unwrap();
        let err = platform.check_buildable(dir.path()).unwrap_err();
        assert!(err.contains("no qemu-s390x handler") || err.contains("no qemu-aarch64 handler"));
        let handler = dir
            .path()
            .join(format!("qemu-{}", qemu_name(&platform.arch).unwrap()));
        std::fs::write(&handler, "enabled\ninterpreter /usr/bin/qemu\nflags: OC\n").unwrap();
        let err = platform.check_buildable(dir.path()).unwrap_err();
        assert!(err.contains("fix-binary"), "{err}");
        std::fs::write(
            &handler,
            "disabled\ninterpreter /usr/bin/qemu\nflags: OCF\n",
        )
        .unwrap();
        assert!(
            platform
                .check_buildable(dir.path())
                .unwrap_err()
                .contains("disabled")
        );
        std::fs::write(&handler, "enabled\ninterpreter /usr/bin/qemu\nflags: OCF\n").unwrap();
        assert!(platform.check_buildable(dir.path()).is_ok());
    }
}
