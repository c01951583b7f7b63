//! A setup or teardown as a list of steps, decided before anything runs. `--dry-run` prints the
//! plan with every object and command in full; a real run prints each step as it executes it.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::PathBuf;

use crate::cluster::{FIELD_MANAGER, Readiness};
use crate::helm::HelmInstall;
use crate::k3s::K3sInstall;
use crate::manifest::{Manifest, ObjectRef, to_yaml_stream};
use crate::secrets::{KeySource, SecretSpec};

#[derive(Debug, Clone)]
pub struct Plan {
    pub title: String,
    pub steps: Vec<Step>,
}

/// Deployments and StatefulSets outside a setup that read a Secret it writes. Their pods read the
/// Secret once, at start, and only applying them (with the new `raibid.dev/secret-checksum`)
/// rolls them: `raibid setup redis` with a new password rolled Redis while the server kept the
/// old password and failed to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherReaders {
    pub objects: Vec<ObjectRef>,
    /// The setup that applies them too, e.g. `raibid setup redis server`.
    pub command: String,
}

/// An external command with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    pub program: String,
    pub args: Vec<String>,
    /// Why it runs, for the missing-tool message.
    pub purpose: String,
    /// Passed as `--kubeconfig` (helm, flux): without it they would act on whatever cluster
    /// `~/.kube/config` names, not necessarily the one raibid applies to and waits on.
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub enum Step {
    /// Skipped when a cluster is already reachable.
    InstallK3s(K3sInstall),
    Run(CommandLine),
    Helm(HelmInstall),
    /// Create or complete a Secret, keeping the values it already has.
    EnsureSecret {
        spec: &'static SecretSpec,
        namespace: String,
        sources: Vec<(&'static str, KeySource)>,
        /// Workloads that read it and that this plan does not apply: a change of a value they
        /// read would never reach them, so the step then stops instead.
        other_readers: Option<OtherReaders>,
    },
    Apply {
        what: String,
        objects: Vec<Manifest>,
    },
    /// Apply the namespace, unless it already exists without `label`: a namespace raibid did
    /// not create is used as it is, never labelled as raibid's, so that teardown (which deletes
    /// only a labelled namespace) keeps it.
    ApplyNamespace {
        object: Manifest,
        label: (String, String),
    },
    Wait(Readiness),
    Delete {
        what: String,
        objects: Vec<ObjectRef>,
    },
    /// Delete what an earlier version created and nothing needs gone: already absent is fine,
    /// and so is a kubeconfig without the right to delete it (a 403 prints `forbidden`, a note
    /// saying what to do by hand).
    DeleteLeftovers {
        what: String,
        objects: Vec<ObjectRef>,
        forbidden: String,
    },
    /// JSON merge patch of objects that may not exist (absent objects, and kinds the cluster
    /// does not know, are skipped): changes a setting before a delete.
    Patch {
        what: String,
        objects: Vec<ObjectRef>,
        patch: serde_json::Value,
    },
    /// Wait until deleted objects are gone: KEDA's operator must release its finalizer while it
    /// still runs.
    WaitGone {
        what: String,
        objects: Vec<ObjectRef>,
    },
    /// Stop unless every KEDA object in the cluster (ScaledObject, ScaledJob,
    /// (Cluster)TriggerAuthentication) carries `label`: once KEDA is uninstalled, anyone else's
    /// would stay Terminating for ever.
    CheckKedaObjects {
        label: (String, String),
        /// raibid-ci's namespace: objects elsewhere are someone else's, labelled or not.
        namespace: String,
    },
    /// Delete the KEDA objects carrying `label` in `namespace` and wait until KEDA's operator
    /// has released them (stopping, as [`Step::CheckKedaObjects`], at anyone else's in any
    /// namespace).
    DeleteKedaObjects {
        label: (String, String),
        namespace: String,
    },
    /// Delete a namespace, but only if it carries `label` (`key`, `value`): one raibid's
    /// manifests created, not a namespace that was there before and that the configuration
    /// merely points at.
    DeleteNamespace {
        name: String,
        label: (String, String),
    },
    /// Something the user must know before the next step (printed, never fails).
    Note(String),
    /// Warn (never fail) when none of the nodes offers the GPUs these ScaledJobs request.
    CheckGpuNodes {
        scaled_jobs: Vec<String>,
    },
    /// Images that must have a manifest for the architecture their pods are pinned to.
    CheckImages(Vec<crate::image_checks::ImageArchCheck>),
}

impl CommandLine {
    pub fn new(program: &str, args: Vec<String>, purpose: impl Into<String>) -> Self {
        Self {
            program: program.to_owned(),
            args,
            purpose: purpose.into(),
            kubeconfig: None,
        }
    }

    pub fn with_kubeconfig(mut self, path: impl Into<PathBuf>) -> Self {
        self.kubeconfig = Some(path.into());
        self
    }
}

impl std::fmt::Display for CommandLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.program)?;
        for arg in &self.args {
            write!(f, " {}", shell_quote(arg))?;
        }
        if let Some(path) = &self.kubeconfig {
            write!(
                f,
                " --kubeconfig {}",
                shell_quote(&path.display().to_string())
            )?;
        }
        Ok(())
    }
}

/// Quotes an argument for a POSIX shell when it needs it.
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

impl Step {
    /// One line saying what the step does.
    pub fn headline(&self) -> String {
        match self {
            Self::InstallK3s(K3sInstall::Installer { env }) => {
                format!(
                    "install k3s unless a cluster is already reachable: {}",
                    K3sInstall::command_line(env)
                )
            }
            Self::InstallK3s(K3sInstall::Rootless { .. }) => {
                "install rootless k3s unless a cluster is already reachable (by hand, see below)"
                    .into()
            }
            Self::Run(command) => format!("run: {command}"),
            Self::Helm(install) => format!("run: {install}"),
            Self::EnsureSecret {
                spec, namespace, ..
            } => format!("ensure Secret {namespace}/{}", spec.name),
            Self::Apply { what, objects } => format!(
                "apply {what} ({} object{}, server-side apply, field manager {FIELD_MANAGER})",
                objects.len(),
                if objects.len() == 1 { "" } else { "s" }
            ),
            Self::ApplyNamespace {
                object,
                label: (key, value),
            } => format!(
                "apply namespace {} unless it exists without {key}={value} (then it is used as \
                 it is)",
                object.name()
            ),
            Self::Wait(readiness) => format!("wait for {readiness}"),
            Self::Delete { what, objects } => format!(
                "delete {what} ({} object{}; already absent is fine)",
                objects.len(),
                if objects.len() == 1 { "" } else { "s" }
            ),
            Self::DeleteLeftovers { what, objects, .. } => format!(
                "delete {what} ({} object{}; already absent is fine; without the right to \
                 delete {}, a note)",
                objects.len(),
                if objects.len() == 1 { "" } else { "s" },
                if objects.len() == 1 { "it" } else { "them" }
            ),
            Self::Patch { what, objects, .. } => format!(
                "patch {what} ({} object{}; absent is fine)",
                objects.len(),
                if objects.len() == 1 { "" } else { "s" }
            ),
            Self::WaitGone { what, objects } => format!(
                "wait until {what} are gone ({} object{}; KEDA's operator releases them)",
                objects.len(),
                if objects.len() == 1 { "" } else { "s" }
            ),
            Self::CheckKedaObjects {
                label: (key, value),
                namespace,
            } => format!(
                "check that every ScaledObject, ScaledJob and (Cluster)TriggerAuthentication in \
                 the cluster is labelled {key}={value} and in namespace {namespace}: anyone \
                 else's would stay Terminating once KEDA is gone"
            ),
            Self::DeleteKedaObjects {
                label: (key, value),
                namespace,
            } => format!(
                "delete the KEDA objects labelled {key}={value} in namespace {namespace} and \
                 wait until KEDA's operator has released them, while it still runs"
            ),
            Self::DeleteNamespace {
                name,
                label: (key, value),
            } => format!(
                "delete namespace {name} (and anything left in it) if it is labelled {key}={value}"
            ),
            Self::Note(text) => format!("note: {text}"),
            Self::CheckGpuNodes { scaled_jobs } => format!(
                "check that a node offers nvidia.com/gpu for {} (a warning if none: the NVIDIA \
                 device plugin is missing)",
                scaled_jobs.join(", ")
            ),
            Self::CheckImages(checks) => format!(
                "check that {} agent image{} ha{} a manifest for {} pool's architecture",
                checks.len(),
                if checks.len() == 1 { "" } else { "s" },
                if checks.len() == 1 { "s" } else { "ve" },
                if checks.len() == 1 { "its" } else { "each" },
            ),
        }
    }

    /// The full content a dry run shows under the headline.
    pub fn details(&self) -> String {
        let mut out = String::new();
        match self {
            Self::InstallK3s(K3sInstall::Rootless { instructions }) => out.push_str(instructions),
            Self::Helm(HelmInstall {
                values: Some(values),
                ..
            }) => {
                out.push_str("values:\n");
                out.push_str(values);
            }
            Self::EnsureSecret {
                sources,
                other_readers,
                ..
            } => {
                for (key, source) in sources {
                    let _ = writeln!(out, "{key}: {source}");
                }
                if let Some(readers) = other_readers {
                    for object in &readers.objects {
                        let _ = writeln!(
                            out,
                            "also read by {object}, which this setup does not apply: if a value \
                             changes and it exists, setup stops here (run `{}`)",
                            readers.command
                        );
                    }
                }
            }
            Self::Apply { objects, .. } => {
                out.push_str("---\n");
                out.push_str(&to_yaml_stream(objects));
            }
            Self::ApplyNamespace { object, .. } => {
                out.push_str("---\n");
                out.push_str(&to_yaml_stream(std::slice::from_ref(object)));
            }
            Self::Delete { objects, .. }
            | Self::DeleteLeftovers { objects, .. }
            | Self::WaitGone { objects, .. } => {
                for object in objects {
                    let _ = writeln!(out, "{object}");
                }
            }
            Self::Patch { objects, patch, .. } => {
                let _ = writeln!(out, "merge patch: {patch}");
                for object in objects {
                    let _ = writeln!(out, "{object}");
                }
            }
            Self::CheckImages(checks) => {
                for check in checks {
                    let _ = writeln!(
                        out,
                        "{}: {} for linux/{}",
                        check.object, check.image, check.arch
                    );
                }
            }
            _ => {}
        }
        out
    }
}

impl Plan {
    /// Writes the whole plan; `detailed` adds every object and value source (dry run).
    pub fn write(&self, out: &mut dyn Write, detailed: bool) -> io::Result<()> {
        writeln!(out, "{}", self.title)?;
        for (i, step) in self.steps.iter().enumerate() {
            writeln!(out, "{:>2}. {}", i + 1, step.headline())?;
            if !detailed {
                continue;
            }
            let details = step.details();
            if matches!(step, Step::Apply { .. } | Step::ApplyNamespace { .. }) {
                // Unindented, so the objects can be piped to `kubectl apply -f -` as they are.
                out.write_all(details.as_bytes())?;
                continue;
            }
            for line in details.lines() {
                writeln!(out, "      {line}")?;
            }
        }
        Ok(())
    }

    pub fn to_text(&self, detailed: bool) -> String {
        let mut buffer = Vec::new();
        self.write(&mut buffer, detailed)
            .expect("writing to memory");
        String::from_utf8(buffer).expect("plans are UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_quoting() {
        assert_eq!(shell_quote("--version"), "--version");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
