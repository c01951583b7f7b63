//! Runs a plan against the cluster, one step at a time, stopping at the first failure with an
//! error that says what to do next. The cluster connection is opened on first need, so a
//! plan that only runs commands (k3s install) works before any cluster exists.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use raibid_config::Config;

use crate::InfraError;
use crate::cluster::{self, Cluster};
use crate::helm::HelmInstall;
use crate::k3s::{INSTALLER_SCRIPT, K3sInstall, KUBECONFIG_FOR_USER};
use crate::plan::{CommandLine, Plan, Step};
use crate::secrets;
use crate::tools;

/// How long connecting to the API server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Executor<'a> {
    config: &'a Config,
    timeout: Duration,
    out: &'a mut dyn Write,
    cluster: Option<Cluster>,
}

impl<'a> Executor<'a> {
    pub fn new(config: &'a Config, timeout: Duration, out: &'a mut dyn Write) -> Self {
        Self {
            config,
            timeout,
            out,
            cluster: None,
        }
    }

    pub async fn run(&mut self, plan: &Plan) -> Result<(), InfraError> {
        let _ = writeln!(self.out, "{}", plan.title);
        let total = plan.steps.len();
        for (i, step) in plan.steps.iter().enumerate() {
            let _ = writeln!(self.out, "==> [{}/{total}] {}", i + 1, step.headline());
            self.step(step).await?;
        }
        let _ = writeln!(self.out, "done");
        Ok(())
    }

    async fn cluster(&mut self) -> Result<Cluster, InfraError> {
        if let Some(cluster) = &self.cluster {
            return Ok(cluster.clone());
        }
        let cluster = cluster::connect(self.config, CONNECT_TIMEOUT).await?;
        self.cluster = Some(cluster.clone());
        Ok(cluster)
    }

    async fn step(&mut self, step: &Step) -> Result<(), InfraError> {
        match step {
            Step::InstallK3s(install) => self.install_k3s(install).await,
            Step::Run(command) => {
                let command = self.on_our_cluster(command).await?;
                run_command(&command).await
            }
            Step::Helm(install) => {
                let kubeconfig = self.cluster_kubeconfig(&install.kubeconfig).await?;
                helm(&HelmInstall {
                    kubeconfig,
                    ..install.clone()
                })
                .await
            }
            Step::EnsureSecret {
                spec,
                namespace,
                sources,
                other_readers,
            } => {
                let cluster = self.cluster().await?;
                let existing = cluster::secret_data(&cluster, namespace, spec.name).await?;
                let values = secrets::resolve(sources, existing.as_ref());
                let changed = secrets::changed_keys(existing.as_ref(), &values);
                if let Some(readers) = other_readers.as_ref().filter(|_| !changed.is_empty()) {
                    let mut running = Vec::new();
                    for object in &readers.objects {
                        if cluster::exists(&cluster, object).await? {
                            running.push(object.to_string());
                        }
                    }
                    if !running.is_empty() {
                        return Err(InfraError::StaleReaders {
                            secret: format!("{namespace}/{}", spec.name),
                            keys: changed.join(", "),
                            several: running.len() > 1,
                            readers: running.join(" and "),
                            command: readers.command.clone(),
                        });
                    }
                }
                for (key, source) in sources {
                    let kept = existing.as_ref().is_some_and(|d| d.contains_key(*key));
                    let origin = match source {
                        secrets::KeySource::Config { field, .. } => format!("from {field}"),
                        _ if kept => "kept".into(),
                        secrets::KeySource::KeepOrGenerate => "generated".into(),
                        secrets::KeySource::KeepOrEmpty => "empty".into(),
                    };
                    let _ = writeln!(self.out, "    {}/{key}: {origin}", spec.name);
                }
                cluster::apply(&cluster, &secrets::build(spec, namespace, values)).await
            }
            Step::Apply { objects, .. } => {
                let cluster = self.cluster().await?;
                for object in objects {
                    cluster::apply(&cluster, object).await?;
                    let _ = writeln!(self.out, "    applied {}", object.object_ref());
                }
                Ok(())
            }
            Step::ApplyNamespace { object, label } => {
                let cluster = self.cluster().await?;
                if cluster::namespace_terminating(&cluster, object.name()).await? {
                    // A teardown's: nothing can be created in it until it is gone.
                    let _ = writeln!(
                        self.out,
                        "    {} is being deleted: waiting for it to be gone (--timeout {}s)",
                        object.object_ref(),
                        self.timeout.as_secs()
                    );
                    let hint = format!(
                        "a namespace goes once everything in it is deleted: `kubectl get \
                         all,pvc -n {0}` shows what is left and `kubectl get namespace {0} -o \
                         yaml` its conditions; rerun once it is gone",
                        object.name()
                    );
                    cluster::wait_gone(
                        &cluster,
                        &[object.object_ref()],
                        self.timeout,
                        &hint,
                        self.out,
                    )
                    .await?;
                }
                let labels = cluster::namespace_labels(&cluster, object.name()).await?;
                if labels.is_some_and(|l| l.get(&label.0) != Some(&label.1)) {
                    let _ = writeln!(
                        self.out,
                        "    {} exists and raibid did not create it: used as it is (teardown \
                         keeps it)",
                        object.object_ref()
                    );
                    return Ok(());
                }
                cluster::apply(&cluster, object).await?;
                let _ = writeln!(self.out, "    applied {}", object.object_ref());
                Ok(())
            }
            Step::Wait(readiness) => {
                let cluster = self.cluster().await?;
                cluster::wait_ready(&cluster, readiness, self.timeout, self.out).await
            }
            Step::Delete { objects, .. } => {
                let cluster = self.cluster().await?;
                for object in objects {
                    let existed = cluster::delete(&cluster, object).await?;
                    let what = if existed { "deleted" } else { "already absent" };
                    let _ = writeln!(self.out, "    {what}: {object}");
                }
                Ok(())
            }
            Step::DeleteLeftovers {
                objects, forbidden, ..
            } => {
                let cluster = self.cluster().await?;
                let mut refused = false;
                for object in objects {
                    match cluster::delete_if_allowed(&cluster, object).await? {
                        cluster::Deletion::Deleted => {
                            let _ = writeln!(self.out, "    deleted: {object}");
                        }
                        cluster::Deletion::Absent => {
                            let _ = writeln!(self.out, "    already absent: {object}");
                        }
                        cluster::Deletion::Forbidden(message) => {
                            refused = true;
                            let _ =
                                writeln!(self.out, "    no right to delete: {object} ({message})");
                        }
                    }
                }
                if refused {
                    let _ = writeln!(self.out, "    note: {forbidden}");
                }
                Ok(())
            }
            Step::Patch { objects, patch, .. } => {
                let cluster = self.cluster().await?;
                for object in objects {
                    let present = cluster::patch_if_present(&cluster, object, patch).await?;
                    let what = if present { "patched" } else { "absent" };
                    let _ = writeln!(self.out, "    {what}: {object}");
                }
                Ok(())
            }
            Step::WaitGone { objects, .. } => {
                let cluster = self.cluster().await?;
                cluster::wait_gone(
                    &cluster,
                    objects,
                    self.timeout,
                    super::keda::RELEASE_HINT,
                    self.out,
                )
                .await
            }
            Step::CheckKedaObjects { label, namespace } => {
                let cluster = self.cluster().await?;
                let (ours, theirs) = super::keda::find(&cluster, label, namespace).await?;
                super::keda::refuse_foreign(&theirs)?;
                let _ = writeln!(
                    self.out,
                    "    none but raibid-ci's ({} object{})",
                    ours.len(),
                    if ours.len() == 1 { "" } else { "s" }
                );
                Ok(())
            }
            Step::DeleteKedaObjects { label, namespace } => {
                let cluster = self.cluster().await?;
                let (ours, theirs) = super::keda::find(&cluster, label, namespace).await?;
                super::keda::refuse_foreign(&theirs)?;
                for object in &ours {
                    let existed = cluster::delete(&cluster, object).await?;
                    let what = if existed { "deleted" } else { "already absent" };
                    let _ = writeln!(self.out, "    {what}: {object}");
                }
                cluster::wait_gone(
                    &cluster,
                    &ours,
                    self.timeout,
                    super::keda::RELEASE_HINT,
                    self.out,
                )
                .await
            }
            Step::DeleteNamespace { name, label } => {
                let cluster = self.cluster().await?;
                let outcome = cluster::delete_namespace_if_labelled(&cluster, name, label).await?;
                let _ = writeln!(self.out, "    {outcome}");
                Ok(())
            }
            Step::Note(_) => Ok(()),
            Step::CheckGpuNodes { scaled_jobs } => {
                let cluster = self.cluster().await?;
                let nodes =
                    kube::Api::<k8s_openapi::api::core::v1::Node>::all(cluster.client.clone())
                        .list(&Default::default())
                        .await;
                let line = match nodes {
                    Ok(list) => {
                        let offering = list.items.iter().filter(|n| cluster::offers_gpus(n));
                        let count = offering.count();
                        match cluster::gpu_note(scaled_jobs, count) {
                            Some(note) => format!("warning: {note}"),
                            None => format!("{count} node(s) offer nvidia.com/gpu"),
                        }
                    }
                    Err(e) => format!("cannot list the nodes: {}", cluster::error_chain(&e)),
                };
                let _ = writeln!(self.out, "    {line}");
                Ok(())
            }
            Step::CheckImages(checks) => {
                let login = crate::image_checks::RegistryLogin::from_config(self.config);
                crate::image_checks::run_checks(
                    checks,
                    &crate::preflight::FetchOptions::default(),
                    login.as_ref(),
                    self.out,
                )
                .await
            }
        }
    }

    /// `command` with the kubeconfig raibid itself connected through, when it takes one:
    /// helm and flux must act on the cluster the other steps apply to and wait on.
    async fn on_our_cluster(&mut self, command: &CommandLine) -> Result<CommandLine, InfraError> {
        let mut command = command.clone();
        if let Some(planned) = &command.kubeconfig {
            command.kubeconfig = Some(self.cluster_kubeconfig(planned).await?);
        }
        Ok(command)
    }

    /// Connects (a missing cluster is then raibid's error, which says what to do, not helm's)
    /// and returns the kubeconfig used, saying so when it is not the one the plan printed.
    async fn cluster_kubeconfig(
        &mut self,
        planned: &std::path::Path,
    ) -> Result<std::path::PathBuf, InfraError> {
        let cluster = self.cluster().await?;
        if cluster.kubeconfig != planned {
            let _ = writeln!(
                self.out,
                "    with --kubeconfig {} (the cluster raibid is connected to), not {}",
                cluster.kubeconfig.display(),
                planned.display()
            );
        }
        Ok(cluster.kubeconfig)
    }

    async fn install_k3s(&mut self, install: &K3sInstall) -> Result<(), InfraError> {
        match cluster::connect(self.config, Duration::from_secs(5)).await {
            Ok(cluster) => {
                let _ = writeln!(
                    self.out,
                    "    a cluster is already reachable at {} (kubeconfig {}): not installing k3s",
                    cluster.server,
                    cluster.kubeconfig.display()
                );
                self.cluster = Some(cluster);
                return Ok(());
            }
            Err(e) => {
                let _ = writeln!(self.out, "    {e}");
            }
        }
        let env = match install {
            K3sInstall::Rootless { instructions } => {
                return Err(InfraError::ManualStep {
                    what: "rootless k3s".into(),
                    instructions: instructions.clone(),
                });
            }
            K3sInstall::Installer { env } => env,
        };
        let command = &K3sInstall::command_line(env);
        if tools::which("curl").is_none() {
            return Err(InfraError::ToolMissing {
                tool: "curl".into(),
                purpose: "download the k3s installer".into(),
                hint: tools::install_hint("curl"),
            });
        }
        // The script is a constant; the settings travel in the environment.
        let status = tokio::process::Command::new("sh")
            .args(["-c", INSTALLER_SCRIPT])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .status()
            .await
            .map_err(|e| installer_failed(command, &e.to_string()))?;
        if !status.success() {
            return Err(installer_failed(command, &status.to_string()));
        }
        let cluster = self.cluster().await.map_err(|e| match e {
            // Not root: the kubeconfig is root's alone (mode 0600).
            InfraError::Kubeconfig { .. } | InfraError::NoKubeconfig { .. } => {
                InfraError::ManualStep {
                    what: format!("using the new cluster as this user ({e})"),
                    instructions: format!("  {KUBECONFIG_FOR_USER}\nthen run the command again"),
                }
            }
            e => e,
        })?;
        let _ = writeln!(self.out, "    k3s is up at {}", cluster.server);
        Ok(())
    }
}

fn installer_failed(command: &str, message: &str) -> InfraError {
    InfraError::Command {
        command: command.to_owned(),
        message: message.to_owned(),
        hint: format!(
            "the installer needs internet access (it downloads k3s) and root or sudo; on a \
             machine without internet access, run it yourself where it has: {command}"
        ),
    }
}

async fn run_command(command: &CommandLine) -> Result<(), InfraError> {
    let Some(program) = tools::which(&command.program).or_else(|| {
        let path = std::path::PathBuf::from(&command.program);
        path.is_absolute().then_some(path).filter(|p| p.exists())
    }) else {
        return Err(InfraError::ToolMissing {
            tool: command.program.clone(),
            purpose: command.purpose.clone(),
            hint: tools::install_hint(&command.program),
        });
    };
    let mut process = tokio::process::Command::new(program);
    process.args(&command.args);
    if let Some(path) = &command.kubeconfig {
        process.arg("--kubeconfig").arg(path);
    }
    let status = process
        .stdin(Stdio::null())
        .status()
        .await
        .map_err(|e| InfraError::Command {
            command: command.to_string(),
            message: e.to_string(),
            hint: format!("needed to {}", command.purpose),
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(InfraError::Command {
            command: command.to_string(),
            message: status.to_string(),
            hint: format!(
                "its output above says why; it was run to {}",
                command.purpose
            ),
        })
    }
}

async fn helm(install: &HelmInstall) -> Result<(), InfraError> {
    let values = match &install.values {
        Some(text) => {
            let file = tempfile::Builder::new()
                .prefix("raibid-helm-values-")
                .suffix(".yaml")
                .tempfile()
                .map_err(|source| InfraError::Io {
                    path: std::env::temp_dir(),
                    source,
                })?;
            std::fs::write(file.path(), text).map_err(|source| InfraError::Io {
                path: file.path().to_path_buf(),
                source,
            })?;
            Some(file)
        }
        None => None,
    };
    let path = values.as_ref().map(|f| f.path().display().to_string());
    run_command(&install.command(path.as_deref())).await
}
