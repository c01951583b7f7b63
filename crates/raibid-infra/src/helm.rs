//! `helm upgrade --install` derived from the Flux HelmRelease and HelmRepository in `infra/`, so
//! the imperative route (`raibid setup keda`) and the GitOps route install the same chart,
//! version and values.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::InfraError;
use crate::manifest::Manifest;
use crate::plan::CommandLine;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelmInstall {
    pub release: String,
    pub chart: String,
    pub repo: String,
    pub version: String,
    pub namespace: String,
    pub create_namespace: bool,
    /// Contents of the values file, if the release has one.
    pub values: Option<String>,
    pub timeout: Duration,
    /// The cluster to install into: the one raibid's own API calls use.
    pub kubeconfig: PathBuf,
}

impl HelmInstall {
    /// Reads release `name` from rendered objects.
    pub fn from_release(
        objects: &[Manifest],
        name: &str,
        timeout: Duration,
        kubeconfig: &Path,
    ) -> Result<Self, InfraError> {
        let find = |kind: &str, name: &str| {
            objects
                .iter()
                .find(|m| m.kind() == kind && m.name() == name)
        };
        let missing = |what: String| InfraError::Manifest {
            file: "infra/".into(),
            message: what,
        };
        let release =
            find("HelmRelease", name).ok_or_else(|| missing(format!("no HelmRelease {name}")))?;
        let spec = &release.object["spec"];
        let chart = &spec["chart"]["spec"];
        let text = |value: &serde_json::Value, what: &str| {
            value
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| InfraError::Manifest {
                    file: release.source.clone(),
                    message: format!("HelmRelease {name} has no {what}"),
                })
        };
        let source = text(
            &chart["sourceRef"]["name"],
            "spec.chart.spec.sourceRef.name",
        )?;
        let repository = find("HelmRepository", &source)
            .ok_or_else(|| missing(format!("no HelmRepository {source} (HelmRelease {name})")))?;
        let values = match spec["valuesFrom"].as_array().map(Vec::as_slice) {
            None | Some([]) => None,
            Some([reference]) if reference["kind"] == "ConfigMap" => {
                let map_name = text(&reference["name"], "valuesFrom[0].name")?;
                let key = reference["valuesKey"].as_str().unwrap_or("values.yaml");
                let map = find("ConfigMap", &map_name).ok_or_else(|| {
                    missing(format!("no ConfigMap {map_name} (HelmRelease {name})"))
                })?;
                Some(text(
                    &map.object["data"][key],
                    &format!("values in ConfigMap {map_name}"),
                )?)
            }
            Some(_) => {
                return Err(InfraError::Manifest {
                    file: release.source.clone(),
                    message: "the helm route supports one valuesFrom ConfigMap".into(),
                });
            }
        };
        Ok(Self {
            release: spec["releaseName"].as_str().unwrap_or(name).to_owned(),
            chart: text(&chart["chart"], "spec.chart.spec.chart")?,
            repo: text(&repository.object["spec"]["url"], "repository url")?,
            version: text(&chart["version"], "spec.chart.spec.version")?,
            namespace: text(&spec["targetNamespace"], "spec.targetNamespace")?,
            create_namespace: spec["install"]["createNamespace"] == true,
            values,
            timeout,
            kubeconfig: kubeconfig.to_path_buf(),
        })
    }

    /// The `helm upgrade --install` command; `values_file` is where the values were written.
    pub fn command(&self, values_file: Option<&str>) -> CommandLine {
        CommandLine::new(
            "helm",
            self.args(values_file),
            format!("install the {} chart", self.chart),
        )
        .with_kubeconfig(&self.kubeconfig)
    }

    /// `helm uninstall` of this release, for teardown (a release that is already gone is not
    /// an error).
    pub fn uninstall_command(&self) -> CommandLine {
        CommandLine::new(
            "helm",
            uninstall_args(&self.release, &self.namespace),
            format!("uninstall the {} chart", self.chart),
        )
        .with_kubeconfig(&self.kubeconfig)
    }

    /// Arguments after `helm` but for `--kubeconfig` ([`Self::command`] adds it);
    /// `values_file` is where the values were written.
    pub fn args(&self, values_file: Option<&str>) -> Vec<String> {
        let mut args: Vec<String> = [
            "upgrade",
            "--install",
            &self.release,
            &self.chart,
            "--repo",
            &self.repo,
            "--version",
            &self.version,
            "--namespace",
            &self.namespace,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if self.create_namespace {
            args.push("--create-namespace".into());
        }
        if let Some(file) = values_file {
            args.extend(["--values".into(), file.to_owned()]);
        }
        args.extend([
            "--wait".into(),
            "--timeout".into(),
            format!("{}s", self.timeout.as_secs()),
        ]);
        args
    }
}

impl fmt::Display for HelmInstall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the command's own quoting: `<values below>` stands for a file, it is no argument.
        let values = self.values.as_ref().map(|_| "<values below>");
        write!(
            f,
            "helm {} --kubeconfig {}",
            self.args(values).join(" "),
            crate::plan::shell_quote(&self.kubeconfig.display().to_string())
        )
    }
}

fn uninstall_args(release: &str, namespace: &str) -> Vec<String> {
    [
        "uninstall",
        release,
        "--namespace",
        namespace,
        "--ignore-not-found",
        "--wait",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}
