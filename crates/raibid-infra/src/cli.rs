//! The command-line surface: clap types the `raibid` binary embeds, and the functions it calls.
//! Everything prints to stdout (or the writer given to the `*_to` variants, for tests); every
//! failure is an [`InfraError`].

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use raibid_config::Config;

use crate::InfraError;
use crate::cluster;
use crate::components::{self, Component, ComponentArg};
use crate::drift::drift;
use crate::image_checks::RegistryLogin;
use crate::manifest::to_yaml_stream;
use crate::ops::{self, Context, Executor};
use crate::plan::Plan;
use crate::preflight::{self, FetchOptions};
use crate::render::{render, render_as_is, resolve_target};
use crate::tools::Tools;
use crate::tree::Tree;
use crate::validate::{validate, validate_structure};

/// `raibid infra ...`
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum InfraCommand {
    /// Print the manifests of a target (`dev`, `prod`, `argocd`, `flux`, `keda`, `gitea`, or a
    /// directory below infra/) with your configuration applied: what `raibid setup` applies.
    Render {
        #[arg(default_value = "dev")]
        target: String,
        /// Print the manifests as written, without applying the configuration.
        #[arg(long)]
        as_is: bool,
        /// Read manifests from this infra/ directory instead of the built-in copy.
        #[arg(long, value_name = "DIR")]
        infra_dir: Option<PathBuf>,
    },
    /// Validate targets offline against the Kubernetes, KEDA and Flux schemas, the house rules
    /// and your configuration [default: every kustomization].
    Validate {
        targets: Vec<String>,
        #[arg(long, value_name = "DIR")]
        infra_dir: Option<PathBuf>,
    },
    /// Check that an image has a linux/<arch> manifest before a job uses it.
    CheckImage {
        /// e.g. `docker.io/library/rust:1.88` or `gitea.example.com/team/tool:1`.
        image: String,
        /// Pool architecture: arm64, amd64, arm/v7...
        #[arg(long)]
        arch: String,
        /// Use plain HTTP (loopback registries always do).
        #[arg(long)]
        insecure: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 10, value_name = "SECONDS")]
        timeout: u64,
    },
}

/// `raibid setup <component>...`, and what `raibid teardown` shares with it.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct SetupArgs {
    /// Components; they run in dependency order whatever the order given (teardown: in
    /// reverse).
    #[arg(value_enum, required = true)]
    pub components: Vec<ComponentArg>,
    /// Print exactly what would be run and applied, without touching anything.
    #[arg(long)]
    pub dry_run: bool,
    /// How long each component may take to become ready (or to be gone).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub timeout: u64,
    /// `dev` (single node, small limits) or `prod` (HA hints).
    #[arg(long, default_value = "dev")]
    pub overlay: String,
    /// Read manifests from this infra/ directory instead of the built-in copy.
    #[arg(long, value_name = "DIR")]
    pub infra_dir: Option<PathBuf>,
}

/// `raibid teardown <component>...`
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct TeardownArgs {
    #[command(flatten)]
    pub plan: SetupArgs,
    /// Also delete volumes (the queue, Gitea's repositories), generated Secrets and, with
    /// `all`, the namespace (only if raibid's manifests labelled it).
    #[arg(long)]
    pub delete_data: bool,
    /// Confirms `teardown k3s`: run k3s-uninstall.sh, which deletes the whole cluster and every
    /// volume on this node, whoever installed it. `all` never includes k3s.
    #[arg(long)]
    pub yes_destroy_cluster: bool,
    /// Confirms `teardown keda`: `helm uninstall keda` also deletes KEDA's CRDs, for the whole
    /// cluster. raibid-ci's ScaledJobs are deleted first, while KEDA can release them; anyone
    /// else's ScaledObjects or ScaledJobs stop the teardown. `all` never includes KEDA.
    #[arg(long)]
    pub yes_uninstall_keda: bool,
    /// With `flux` or `all`: also run `flux uninstall`, which removes the Flux controllers and
    /// every Flux object in the cluster (what they applied stays). Without it, only raibid's
    /// own Flux objects are removed.
    #[arg(long)]
    pub yes_uninstall_flux: bool,
}

impl TeardownArgs {
    /// What the plan needs to know besides the components.
    pub fn options(&self) -> ops::TeardownOptions {
        ops::TeardownOptions {
            delete_data: self.delete_data,
            destroy_cluster: self.yes_destroy_cluster,
            uninstall_keda: self.yes_uninstall_keda,
            uninstall_flux: self.yes_uninstall_flux,
        }
    }
}

/// The cluster part of `raibid status <component>|all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusArgs {
    /// The components asked about: only they are shown, and each must be deployed.
    pub components: Vec<Component>,
    /// Print JSON instead of text.
    pub json: bool,
}

fn tree(dir: Option<&PathBuf>) -> Result<Tree, InfraError> {
    match dir {
        Some(dir) => Tree::from_dir(dir),
        None => Ok(Tree::embedded()),
    }
}

fn write_err(e: std::io::Error) -> InfraError {
    InfraError::Io {
        path: PathBuf::from("(stdout)"),
        source: e,
    }
}

pub async fn run_infra(cmd: InfraCommand, config: &Config) -> Result<(), InfraError> {
    run_infra_to(cmd, config, &mut std::io::stdout().lock()).await
}

pub async fn run_infra_to(
    cmd: InfraCommand,
    config: &Config,
    out: &mut dyn Write,
) -> Result<(), InfraError> {
    match cmd {
        InfraCommand::Render {
            target,
            as_is,
            infra_dir,
        } => {
            let tree = tree(infra_dir.as_ref())?;
            let objects = if as_is {
                render_as_is(&tree, &target)?
            } else {
                render(&tree, &target, config)?
            };
            out.write_all(to_yaml_stream(&objects).as_bytes())
                .map_err(write_err)
        }
        InfraCommand::Validate { targets, infra_dir } => {
            let tree = tree(infra_dir.as_ref())?;
            validate_targets(&tree, &targets, config, out)
        }
        InfraCommand::CheckImage {
            image,
            arch,
            insecure,
            timeout,
        } => {
            let options = FetchOptions {
                insecure,
                timeout: Duration::from_secs(timeout),
                credentials: RegistryLogin::from_config(config)
                    .and_then(|login| login.credentials_for(&image)),
            };
            let check = preflight::check_image(&image, &arch, &options).await?;
            writeln!(
                out,
                "ok: {} has {} ({}{})",
                check.image,
                check.platform,
                check.digest,
                if check.multi_arch { ", multi-arch" } else { "" }
            )
            .map_err(write_err)
        }
    }
}

fn validate_targets(
    tree: &Tree,
    targets: &[String],
    config: &Config,
    out: &mut dyn Write,
) -> Result<(), InfraError> {
    let dirs = if targets.is_empty() {
        tree.kustomization_dirs()
    } else {
        targets
            .iter()
            .map(|t| resolve_target(tree, t))
            .collect::<Result<_, _>>()?
    };
    let mut problems = Vec::new();
    let mut objects = 0;
    for dir in &dirs {
        let written = render_as_is(tree, dir)?;
        let configured = render(tree, dir, config)?;
        // The configured objects must be right, and so must the files: the configuration
        // overwrites some fields, which must not hide a mistake written in them.
        let mut report = validate(&configured, config);
        report.issues.extend(validate_structure(&written).issues);
        report.issues.sort();
        report.issues.dedup();
        objects += report.objects;
        writeln!(out, "{dir}: {report}").map_err(write_err)?;
        let changes = drift(&written, &configured);
        if !changes.is_empty() {
            writeln!(
                out,
                "  note: your configuration changes {} value(s) of the files (`raibid setup` \
                 applies them; for GitOps, commit `raibid infra render` output or edit the files):",
                changes.len()
            )
            .map_err(write_err)?;
            for change in changes.iter().take(10) {
                writeln!(out, "    {change}").map_err(write_err)?;
            }
        }
        if !report.is_ok() {
            problems.extend(report.issues);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(InfraError::Invalid(crate::validate::ValidationReport {
            objects,
            issues: problems,
        }))
    }
}

pub async fn setup(args: SetupArgs, config: &Config) -> Result<(), InfraError> {
    setup_to(args, config, Tools::detect(), &mut std::io::stdout().lock()).await
}

/// [`setup`] with the tools to assume and the output given.
pub async fn setup_to(
    args: SetupArgs,
    config: &Config,
    tools: Tools,
    out: &mut dyn Write,
) -> Result<(), InfraError> {
    let components = components::expand(&args.components);
    let installs_k3s = components.contains(&Component::K3s);
    run_plan(
        &args,
        config,
        tools,
        out,
        components,
        installs_k3s,
        ops::setup_plan,
    )
    .await
}

pub async fn teardown(args: TeardownArgs, config: &Config) -> Result<(), InfraError> {
    teardown_to(args, config, Tools::detect(), &mut std::io::stdout().lock()).await
}

pub async fn teardown_to(
    args: TeardownArgs,
    config: &Config,
    tools: Tools,
    out: &mut dyn Write,
) -> Result<(), InfraError> {
    let options = args.options();
    let components = components::expand_teardown(&args.plan.components);
    run_plan(
        &args.plan,
        config,
        tools,
        out,
        components,
        false,
        |ctx, components| ops::teardown_plan(ctx, components, &options),
    )
    .await
}

/// Builds the plan for the components asked for, then prints it (`--dry-run`) or runs it.
async fn run_plan(
    args: &SetupArgs,
    config: &Config,
    tools: Tools,
    out: &mut dyn Write,
    components: Vec<Component>,
    installs_k3s: bool,
    make_plan: impl FnOnce(&Context, &[Component]) -> Result<Plan, InfraError>,
) -> Result<(), InfraError> {
    let tree = tree(args.infra_dir.as_ref())?;
    let ctx = Context {
        config,
        tree: &tree,
        overlay: &args.overlay,
        tools,
        timeout: Duration::from_secs(args.timeout),
        kubeconfig: cluster::planned_kubeconfig(config, installs_k3s),
    };
    let plan = make_plan(&ctx, &components)?;
    if args.dry_run {
        plan.write(out, true).map_err(write_err)?;
        return writeln!(out, "dry run: nothing was changed").map_err(write_err);
    }
    Executor::new(config, ctx.timeout, out).run(&plan).await
}

/// Prints the cluster status (one line when no cluster is reachable) and returns what is not
/// ready ([`ClusterStatus::problems`]), so the caller can exit non-zero; the JSON has them too.
pub async fn status(args: StatusArgs, config: &Config) -> Result<Vec<String>, InfraError> {
    let status = cluster::cluster_status(config).await.only(&args.components);
    let problems = status.problems(&args.components);
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut json = serde_json::to_value(&status).expect("status serializes");
        json["ready"] = problems.is_empty().into();
        json["problems"] = problems.clone().into();
        let json = serde_json::to_string_pretty(&json).expect("status serializes");
        writeln!(out, "{json}").map_err(write_err)?;
    } else {
        write!(out, "{status}").map_err(write_err)?;
        if !status.reachable {
            writeln!(out).map_err(write_err)?;
        }
    }
    Ok(problems)
}
