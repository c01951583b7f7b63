//! Building OCI images from a Containerfile and pushing them, with buildah.
//!
//! buildah needs no daemon and, with `--isolation chroot`, no privileges beyond what the agent
//! already has: `RUN` steps run in a chroot with the build's filesystem rather than in a nested
//! container, which also works inside a Kubernetes pod. The cost is weaker isolation between a
//! `RUN` step and the agent than a real container would give; pipelines that build images are
//! trusted to that extent.
//!
//! Storage: each agent has its own storage root (`root`, `runroot`), so builds never touch the
//! machine's image store and layers stay cached between builds on the same agent. The storage
//! driver is a trade-off:
//! - `overlay` with `fuse-overlayfs` (what [`StorageDriver::detect`] picks when it is installed
//!   and `/dev/fuse` exists) is copy-on-write, fast, and works without privileges;
//! - kernel `overlay` is faster still, but needs a filesystem that can be an overlay's upper
//!   layer (not itself overlayfs, as a container's root usually is) and, unprivileged, a recent
//!   kernel;
//! - `vfs` works everywhere but copies every layer in full: fine for small images, slow and
//!   disk-hungry for big ones.
//!
//! A storage root keeps the driver it was created with: give each driver its own root.
//!
//! Without `platforms` the image is built for this machine and each tag pushed as a plain image.
//! With `platforms` (even a single one) the build produces a manifest list, pushed whole to each
//! tag, so consumers are told explicitly which platforms exist. Foreign platforms need qemu
//! emulation registered with binfmt_misc; that is checked before building.
//!
//! Registry credentials reach buildah only through a private auth file (never argv, which every
//! user can read, nor an error message), and are masked in buildah's output all the same.

mod files;
mod platform;
mod reference;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::Masker;
use crate::executor::process::{self, DEFAULT_KILL_GRACE, Limits, SignalGroup};
use crate::executor::{ExecError, OutputSender, StepExit};
use files::BuildFiles;
use platform::{BINFMT_DIR, Platform};

/// How buildah stores images; see the module docs for the trade-offs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageDriver {
    Vfs,
    /// Kernel overlayfs.
    Overlay,
    /// overlayfs in user space through `mount_program` (usually `/usr/bin/fuse-overlayfs`).
    FuseOverlay {
        mount_program: PathBuf,
    },
}

impl StorageDriver {
    /// fuse-overlayfs when it can work here, else vfs: the choices that need nothing from the
    /// kernel or the agent's privileges.
    pub fn detect() -> Self {
        match process::find_on_path("fuse-overlayfs") {
            Some(mount_program) if Path::new("/dev/fuse").exists() => {
                Self::FuseOverlay { mount_program }
            }
            _ => Self::Vfs,
        }
    }

    fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--storage-driver".into()];
        match self {
            Self::Vfs => args.push("vfs".into()),
            Self::Overlay => args.push("overlay".into()),
            Self::FuseOverlay { mount_program } => {
                let mut opt = OsString::from("overlay.mount_program=");
                opt.push(mount_program);
                args.extend(["overlay".into(), "--storage-opt".into(), opt]);
            }
        }
        args
    }
}

/// Credentials for one registry.
#[derive(Clone)]
pub struct RegistryAuth {
    /// As it appears in image names: `ghcr.io`, `registry.example:5000`.
    pub host: String,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("host", &self.host)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct ImageBuildOptions {
    /// buildah's storage root (images, layers); private to this agent.
    pub root: PathBuf,
    /// buildah's runtime state (locks, mounts).
    pub runroot: PathBuf,
    pub storage_driver: StorageDriver,
    pub registry_auth: Option<RegistryAuth>,
    /// Registries reached over plain HTTP, e.g. `127.0.0.1:5000`.
    pub insecure_registries: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub context_dir: PathBuf,
    /// Relative paths are relative to `context_dir`.
    pub containerfile: PathBuf,
    /// The patterns of the context's `.containerignore` or `.dockerignore`, read by the caller
    /// (the runner reads them without leaving the workspace). buildah gets them as a private
    /// copy and never opens the context's own file, which as root it would follow anywhere;
    /// empty excludes nothing.
    pub ignore: Vec<u8>,
    /// Fully rendered, e.g. `127.0.0.1:5000/acme/app:abc123`. Never empty.
    pub tags: Vec<String>,
    /// `linux/arm64` and the like; empty means this machine's platform, as a plain image.
    pub platforms: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub push: bool,
    /// Whether buildah gets the agent's registry login (to pull private base images, and to
    /// push). Off for untrusted jobs: their `RUN` instructions run as root, and in an agent
    /// pod root can leave buildah's chroot and read the login file while the build runs.
    pub credentials: bool,
    /// A repository (no tag) for layer cache shared between agents through the registry.
    pub cache_repo: Option<String>,
    /// How long the whole build may take, pushes included; each buildah command gets what is
    /// left. `None`: only cancellation stops it.
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// `repository@sha256:...` for each pushed tag, in the order of the tags.
    pub digests: Vec<String>,
    pub manifest_list: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("buildah is not usable: {0}")]
    Unavailable(String),
    #[error("invalid image build: {0}")]
    Invalid(String),
    #[error("cannot build for {platform}: {reason}")]
    Emulation { platform: String, reason: String },
    #[error("buildah {action} failed ({status}); its output is in the log")]
    Failed { action: String, status: String },
    #[error("buildah {action} reported no usable digest: {detail}")]
    Digest { action: String, detail: String },
    #[error("the image build was cancelled")]
    Cancelled,
    /// The build's time limit passed; buildah was stopped like a timed-out step.
    #[error("the image build ran out of time")]
    TimedOut,
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("i/o error during the image build: {0}")]
    Io(#[from] std::io::Error),
}

/// Builds and pushes images with one agent's buildah storage and registry settings.
#[derive(Debug)]
pub struct ImageBuilder {
    buildah: PathBuf,
    options: ImageBuildOptions,
    kill_grace: Duration,
}

impl ImageBuilder {
    pub fn new(options: ImageBuildOptions) -> Result<Self, ImageError> {
        let buildah = process::find_on_path("buildah").ok_or_else(|| {
            ImageError::Unavailable(
                "buildah is not on PATH; install it with `apt-get install buildah`".into(),
            )
        })?;
        for host in options
            .insecure_registries
            .iter()
            .chain(options.registry_auth.as_ref().map(|a| &a.host))
        {
            files::check_registry_host(host).map_err(ImageError::Invalid)?;
        }
        Ok(Self {
            buildah,
            options,
            kill_grace: DEFAULT_KILL_GRACE,
        })
    }

    /// Builds `request`, pushes it if asked, and streams buildah's output (credentials masked)
    /// to `output`. Cancelling stops buildah like a step.
    fn files(&self, request: &BuildRequest) -> io::Result<BuildFiles> {
        BuildFiles::write(
            self.options
                .registry_auth
                .as_ref()
                .filter(|_| request.credentials),
            &self.options.insecure_registries,
            &request.ignore,
        )
    }

    pub async fn build_and_push(
        &self,
        request: &BuildRequest,
        output: OutputSender,
        cancel: CancellationToken,
    ) -> Result<BuiltImage, ImageError> {
        let deadline = request.timeout.map(|limit| Instant::now() + limit);
        let plan = Plan::new(request)?;
        let files = self.files(request)?;
        let run = Run {
            builder: self,
            files: &files,
            output: &output,
            cancel: &cancel,
            deadline,
        };
        let manifest_list = !plan.platforms.is_empty();
        let digests = if manifest_list {
            let list = format!("localhost/raibid-build-{}", process::random_suffix()?);
            let result = run.manifest_list(request, &plan, &list).await;
            // The list's name is private to this build: nothing can use it afterwards. Removed
            // even after a cancel, and quietly: when the build failed early there is no list.
            let (discard, _) = mpsc::channel(1);
            let cleanup = Run {
                output: &discard,
                cancel: &CancellationToken::new(),
                deadline: Some(Instant::now() + CLEANUP_TIMEOUT),
                ..run
            };
            let args = ["manifest", "rm", &list].map(OsString::from).to_vec();
            if let Err(e) = cleanup.buildah(args, "manifest rm").await {
                debug!(error = %e, "no manifest list to remove");
            }
            result?
        } else {
            run.single(request, &plan).await?
        };
        info!(tags = ?request.tags, ?digests, "image built");
        Ok(BuiltImage {
            digests,
            manifest_list,
        })
    }

    fn global_args(&self, files: &BuildFiles) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--root".into(),
            self.options.root.clone().into(),
            "--runroot".into(),
            self.options.runroot.clone().into(),
        ];
        args.extend(self.options.storage_driver.args());
        args.extend(["--registries-conf".into(), files.registries_conf().into()]);
        args
    }

    /// Secrets to mask in buildah's output.
    fn masker(&self) -> Masker {
        let mut masker = Masker::default();
        if let Some(auth) = &self.options.registry_auth {
            masker.add_secret(&auth.password);
            masker.add_secret(&files::encoded_credentials(auth));
        }
        masker
    }
}

/// Removing a build's manifest list after the build (even one that ran out of time) is a
/// local storage operation of a second or so; this bounds it if the storage is stuck.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A request, checked.
struct Plan {
    context_dir: PathBuf,
    containerfile: PathBuf,
    platforms: Vec<Platform>,
}

impl Plan {
    fn new(request: &BuildRequest) -> Result<Self, ImageError> {
        let invalid = ImageError::Invalid;
        if request.tags.is_empty() {
            return Err(invalid("no tags".into()));
        }
        for tag in &request.tags {
            reference::check("tag", tag).map_err(invalid)?;
        }
        if let Some(cache) = &request.cache_repo {
            reference::check("cache repository", cache).map_err(invalid)?;
        }
        for key in request.build_args.keys() {
            if key.is_empty() || key.contains('=') || key.starts_with('-') {
                return Err(invalid(format!("invalid build argument name {key:?}")));
            }
        }
        let context_dir = std::path::absolute(&request.context_dir)?;
        if !context_dir.is_dir() {
            return Err(invalid(format!(
                "build context {} is not a directory",
                context_dir.display()
            )));
        }
        let containerfile = context_dir.join(&request.containerfile);
        if !containerfile.is_file() {
            return Err(invalid(format!(
                "no Containerfile at {}",
                containerfile.display()
            )));
        }
        let mut platforms = Vec::new();
        for text in &request.platforms {
            let platform = Platform::parse(text).map_err(invalid)?;
            platform
                .check_buildable(Path::new(BINFMT_DIR))
                .map_err(|reason| ImageError::Emulation {
                    platform: platform.to_string(),
                    reason,
                })?;
            platforms.push(platform);
        }
        Ok(Self {
            context_dir,
            containerfile,
            platforms,
        })
    }

    /// `bud` arguments up to where single- and multi-platform builds differ.
    fn bud_args(&self, request: &BuildRequest, files: &BuildFiles) -> Vec<OsString> {
        let mut args: Vec<OsString> = ["bud", "--isolation", "chroot", "--authfile"]
            .map(OsString::from)
            .to_vec();
        args.push(files.authfile().into());
        args.push("--ignorefile".into());
        args.push(files.ignore_file().into());
        args.push("-f".into());
        args.push(self.containerfile.clone().into());
        if let Some(cache) = &request.cache_repo {
            args.extend(
                ["--layers", "--cache-from", cache, "--cache-to", cache].map(OsString::from),
            );
        }
        for (key, value) in &request.build_args {
            args.push("--build-arg".into());
            args.push(format!("{key}={value}").into());
        }
        args
    }
}

/// One build in progress.
struct Run<'a> {
    builder: &'a ImageBuilder,
    files: &'a BuildFiles,
    output: &'a OutputSender,
    cancel: &'a CancellationToken,
    /// When the build must be over: heartbeats keep a job's claim alive, so without a limit a
    /// `RUN sleep infinity` or a stalled push would hold the agent forever.
    deadline: Option<Instant>,
}

impl Run<'_> {
    async fn single(&self, request: &BuildRequest, plan: &Plan) -> Result<Vec<String>, ImageError> {
        let mut args = plan.bud_args(request, self.files);
        for tag in &request.tags {
            args.extend(["-t".into(), tag.into()]);
        }
        args.push(plan.context_dir.clone().into());
        self.buildah(args, "bud").await?;
        if !request.push {
            return Ok(Vec::new());
        }
        self.push_tags(request, None).await
    }

    async fn manifest_list(
        &self,
        request: &BuildRequest,
        plan: &Plan,
        list: &str,
    ) -> Result<Vec<String>, ImageError> {
        let mut args = plan.bud_args(request, self.files);
        let platforms: Vec<String> = plan.platforms.iter().map(Platform::to_string).collect();
        args.extend(["--platform".into(), platforms.join(",").into()]);
        args.extend(["--manifest".into(), list.into()]);
        args.push(plan.context_dir.clone().into());
        self.buildah(args, "bud").await?;
        if !request.push {
            return Ok(Vec::new());
        }
        self.push_tags(request, Some(list)).await
    }

    /// Pushes every tag (the image built under that tag, or all images of the manifest list
    /// `list`) and returns the digests the registry gave.
    async fn push_tags(
        &self,
        request: &BuildRequest,
        list: Option<&str>,
    ) -> Result<Vec<String>, ImageError> {
        let push: &[&str] = match list {
            Some(_) => &["manifest", "push", "--all"],
            None => &["push"],
        };
        let mut digests = Vec::new();
        for (n, tag) in request.tags.iter().enumerate() {
            let digest_file = self.files.digest_file(n);
            let mut args: Vec<OsString> = push.iter().map(OsString::from).collect();
            args.extend([
                "--authfile".into(),
                self.files.authfile().into(),
                "--digestfile".into(),
                digest_file.clone().into(),
                list.unwrap_or(tag).into(),
                format!("docker://{tag}").into(),
            ]);
            let action = match list {
                Some(_) => format!("manifest push {tag}"),
                None => format!("push {tag}"),
            };
            self.buildah(args, &action).await?;
            digests.push(pushed_digest(tag, &digest_file, &action)?);
        }
        Ok(digests)
    }

    /// Runs one buildah command, its output masked on the way to the log.
    async fn buildah(&self, args: Vec<OsString>, action: &str) -> Result<(), ImageError> {
        if self.cancel.is_cancelled() {
            return Err(ImageError::Cancelled);
        }
        let timeout = match self.deadline {
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return Err(ImageError::TimedOut),
            },
            None => None,
        };
        let mut all = self.builder.global_args(self.files);
        all.extend(args);
        let shown: Vec<String> = all
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let _ = self
            .output
            .send(format!("$ buildah {}\n", shown.join(" ")).into_bytes())
            .await;
        let mut command = Command::new(&self.builder.buildah);
        command.args(all);
        let (raw_tx, raw_rx) = mpsc::channel(16);
        let limits = Limits {
            timeout,
            grace: self.builder.kill_grace,
        };
        let run = process::run(command, raw_tx, self.cancel.clone(), limits, &SignalGroup);
        let masked = forward_masked(raw_rx, self.builder.masker(), self.output);
        let (exit, ()) = tokio::join!(run, masked);
        let exit = exit?;
        if exit.cancelled {
            return Err(ImageError::Cancelled);
        }
        if exit.timed_out {
            return Err(ImageError::TimedOut);
        }
        if !exit.success() {
            return Err(ImageError::Failed {
                action: action.to_owned(),
                status: describe(&exit),
            });
        }
        Ok(())
    }
}

async fn forward_masked(
    mut raw: mpsc::Receiver<Vec<u8>>,
    mut masker: Masker,
    output: &OutputSender,
) {
    let mut listening = true;
    while let Some(chunk) = raw.recv().await {
        let masked = masker.push(&chunk);
        if listening && !masked.is_empty() {
            listening = output.send(masked).await.is_ok();
        }
    }
    let rest = masker.finish();
    if listening && !rest.is_empty() {
        let _ = output.send(rest).await;
    }
}

fn pushed_digest(tag: &str, digest_file: &Path, action: &str) -> Result<String, ImageError> {
    let bad = |detail: String| ImageError::Digest {
        action: action.to_owned(),
        detail,
    };
    let text = std::fs::read_to_string(digest_file).map_err(|e| bad(e.to_string()))?;
    let digest = text.trim();
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| bad(format!("{digest:?} is not a sha256 digest")))?;
    Ok(format!(
        "{}@sha256:{hex}",
        raibid_pipeline::image_repository(tag)
    ))
}

fn describe(exit: &StepExit) -> String {
    match (exit.code, exit.signal) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "unknown exit status".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder(auth: Option<RegistryAuth>) -> ImageBuilder {
        ImageBuilder {
            buildah: PathBuf::from("/usr/bin/buildah"),
            options: ImageBuildOptions {
                root: "/var/lib/raibid/buildah".into(),
                runroot: "/run/raibid/buildah".into(),
                storage_driver: StorageDriver::FuseOverlay {
                    mount_program: "/usr/bin/fuse-overlayfs".into(),
                },
                registry_auth: auth,
                insecure_registries: vec![],
            },
            kill_grace: DEFAULT_KILL_GRACE,
        }
    }

    fn request(dir: &Path) -> BuildRequest {
        std::fs::write(dir.join("Containerfile"), "FROM scratch\n").unwrap();
        BuildRequest {
            context_dir: dir.to_path_buf(),
            containerfile: "Containerfile".into(),
            ignore: Vec::new(),
            tags: vec!["r.example/acme/app:1".into()],
            platforms: vec![],
            build_args: BTreeMap::from([("VERSION".into(), "1.2".into())]),
            push: true,
            credentials: true,
            cache_repo: Some("r.example/acme/cache".into()),
            timeout: None,
        }
    }

    #[test]
    fn an_untrusted_build_gets_no_registry_login() {
        let auth = RegistryAuth {
            host: "r.example".into(),
            username: "bot".into(),
            password: "hunter2-very-secret".into(),
        };
        let builder = builder(Some(auth));
        let dir = tempfile::tempdir().unwrap();
        let mut request = request(dir.path());
        let login = |request: &BuildRequest| {
            let files = builder.files(request).unwrap();
            std::fs::read_to_string(files.authfile()).unwrap()
        };
        assert!(login(&request).contains("r.example"));
        request.push = false;
        request.credentials = false;
        assert_eq!(login(&request), r#"{"auths":{}}"#);
    }

    #[test]
    fn credentials_are_not_in_argv() {
        let auth = RegistryAuth {
            host: "r.example".into(),
            username: "bot".into(),
            password: "hunter2-very-secret".into(),
        };
        let builder = builder(Some(auth.clone()));
        let dir = tempfile::tempdir().unwrap();
        let request = request(dir.path());
        let plan = Plan::new(&request).unwrap();
        let files = BuildFiles::write(Some(&auth), &[], b"").unwrap();
        let mut args = builder.global_args(&files);
        args.extend(plan.bud_args(&request, &files));
        let text: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let text = text.join(" ");
        assert!(!text.contains("hunter2") && !text.contains(&files::encoded_credentials(&auth)));
        assert!(text.contains(
            "--storage-driver overlay --storage-opt overlay.mount_program=/usr/bin/fuse-overlayfs"
        ));
        assert!(text.contains(
            "--layers --cache-from r.example/acme/cache --cache-to r.example/acme/cache"
        ));
        assert!(text.contains("--build-arg VERSION=1.2"));
        assert!(!format!("{auth:?}").contains("hunter2"));
    }

    #[test]
    fn masks_credentials_in_output() {
        let auth = RegistryAuth {
            host: "r.example".into(),
            username: "bot".into(),
            password: "hunter2-very-secret".into(),
        };
        let mut masker = builder(Some(auth)).masker();
        let mut out = masker.push(b"login with hunter2-ve");
        out.extend(masker.push(b"ry-secret ok\n"));
        out.extend(masker.finish());
        assert_eq!(String::from_utf8(out).unwrap(), "login with *** ok\n");
    }

    #[test]
    fn requests_are_checked_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let good = request(dir.path());
        assert!(Plan::new(&good).is_ok());
        let bad = [
            BuildRequest {
                tags: vec![],
                ..good.clone()
            },
            BuildRequest {
                tags: vec!["--all".into()],
                ..good.clone()
            },
            BuildRequest {
                containerfile: "Nope".into(),
                ..good.clone()
            },
            BuildRequest {
                platforms: vec!["linux/vax".into()],
                ..good.clone()
            },
            BuildRequest {
                build_args: BTreeMap::from([("A=B".into(), "x".into())]),
                ..good.clone()
            },
        ];
        for request in bad {
            assert!(
                matches!(Plan::new(&request), Err(ImageError::Invalid(_))),
                "{request:?}"
            );
        }
    }

    #[test]
    fn digests_name_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("d");
        let hex = "a".repeat(64);
        std::fs::write(&file, format!("sha256:{hex}\n")).unwrap();
        assert_eq!(
            pushed_digest("127.0.0.1:5000/acme/app:abc", &file, "push").unwrap(),
            format!("127.0.0.1:5000/acme/app@sha256:{hex}")
        );
        std::fs::write(&file, "garbage").unwrap();
        assert!(matches!(
            pushed_digest("a:b", &file, "push"),
            Err(ImageError::Digest { .. })
        ));
    }
}
