//! Building OCI images from a Containerfile and pushing them, with buildah.
//!
//! buildah needs no daemon and, with `--isolation chroot`, no privileges beyond what the agent
//! already has: `RUN` steps run in a chroot with the build's filesystem rather than in a nested
//! container, which also works inside a Kubernetes pod. The cost is isolation: a chroot is no
//! sandbox, and a `RUN` step can leave it (a program that chroots twice does), on any machine,
//! with the agent user's rights (root's for a root agent). Building an image runs its
//! Containerfile's code on the agent's host; SECURITY.md lists what limits it.
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
//! A build fails as its `buildah bud` does, with one exception: buildah sometimes cannot start
//! a `RUN` step because the kernel is, for a moment, busy with its copy of itself
//! (`SELF_COPY_BUSY`); that is no fault of the build, so it runs again (at most
//! [`BUD_ATTEMPTS`] times in all).
//!
//! Without `platforms` the image is built for this machine and each tag pushed as a plain image.
//! With `platforms` (even a single one) the build produces a manifest list, pushed whole to each
//! tag, so consumers are told explicitly which platforms exist. Foreign platforms need qemu
//! emulation registered with binfmt_misc; that is checked before building.
//!
//! Registry credentials reach buildah only through a private auth file (never argv, which every
//! user can read, nor an error message), and are masked in buildah's output all the same.
//! buildah runs with a fixed environment ([`KEPT_VARIABLES`] aside): containers/image would
//! otherwise also log in with whatever the agent's user has in `~/.docker/config.json`,
//! `$DOCKER_CONFIG`, `$XDG_CONFIG_HOME/containers/auth.json` or `$REGISTRY_AUTH_FILE`. The proxy
//! variables it keeps are for its own pulls and pushes only: `RUN` steps never see them
//! (`--http-proxy=false`; a proxy URL may carry a password).
//!
//! The store is shared (by an agent's concurrent jobs, by the agents of `raibid up`, by the
//! pods of a node), so a build never gives its image a name anyone else could use or take: it
//! is built under a local name private to the build (`localhost/raibid-build-<random>`), pushed
//! by image ID (a manifest list by its private name) to each tag, and removed from the store
//! afterwards, whether or not the build succeeded. Otherwise a build could tag
//! `debian:bookworm` to plant a base image for later builds, or tag another job's destination
//! between that job's build and its push. Base images stay cached under the names they were
//! pulled by. "Afterwards" means once no build is in flight in the store: with the layer cache,
//! buildah hands one build the images another made, so removing a build's images as it ends
//! could delete what another has yet to push. The store's lock and its record of what to remove
//! (image/store.rs) see to that. Under constant load the removal waits for a quiet moment, but
//! not for ever: once [`ImageBuilder::with_cleanup_threshold`] builds (16 by default) wait for
//! removal, the build ending makes the quiet moment, holding back the builds starting until
//! those in flight are done (at most [`FORCED_WAIT`]) and it has cleaned up. That is a pause
//! for every build on the store, the price of a store that does not grow without bound.
//!
//! `RUN` steps reach the network unless the agent's `network` setting is off. buildah refuses
//! `--network none` with `--isolation chroot`, so then the agent pulls the images the build
//! uses first: the base images (each for the platform of its stage: `FROM
//! --platform=$BUILDPLATFORM` is this machine's), and those of `COPY --from=<image>` and of
//! `RUN --mount=type=bind,from=<image>` (for the build's platform, as buildah takes them), and
//! runs the build itself in a network namespace of its own, where only a loopback interface
//! exists and is up (which needs `CAP_SYS_ADMIN` and `CAP_NET_ADMIN`: a root agent with its
//! capabilities). The build reads a copy of the Containerfile that names those images by the
//! IDs their pulls gave (image/containerfile.rs): a name points to one image per store, and
//! another build on the store may pull the same name for another platform (or a newer image)
//! between this build's pull and its `bud`.
//!
//! buildah runs in a session of its own, and with SIGKILL as its parent-death signal, set by
//! one thread that lives as long as the agent's process, so a killed agent's buildah dies with
//! it (image/spawn.rs).

mod containerfile;
mod files;
pub(crate) use files::{auth_json, private_file};
mod platform;
pub(crate) use platform::Platform;
mod reference;
mod spawn;
mod store;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Masker;
use crate::executor::process::{self, DEFAULT_KILL_GRACE, Limits, SignalGroup};
use crate::executor::{ExecError, OutputSender, StepExit};
use files::BuildFiles;
use platform::BINFMT_DIR;
use store::{Garbage, PRIVATE_PREFIX, SharedStore, Wait};

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
    /// buildah's storage root (images, layers): raibid's alone, shared only by agents (see
    /// image/store.rs), since cleanups and prunes remove what no build of theirs holds.
    pub root: PathBuf,
    /// buildah's runtime state (locks, mounts).
    pub runroot: PathBuf,
    pub storage_driver: StorageDriver,
    /// The login of the registry images are pushed to (`agent.registry`).
    pub registry_auth: Option<RegistryAuth>,
    /// Logins of other registries, to pull the base images of trusted builds only
    /// (`agent.pull_logins`): a build may not push to their hosts, not even layer cache.
    pub pull_auths: Vec<RegistryAuth>,
    /// Registries reached over plain HTTP, e.g. `127.0.0.1:5000`.
    pub insecure_registries: Vec<String>,
    /// Whether `RUN` steps may reach the network (the agent's `network` setting). Without it
    /// they run in a network namespace holding only a loopback interface, the images the
    /// build uses (`FROM`, `COPY --from=`, `RUN --mount=type=bind,from=`) are pulled before
    /// it, and the registry's layer cache is not used; builds for several platforms are
    /// refused, and one that needs what it cannot have without the network (`ADD <url>`)
    /// fails.
    pub network: bool,
}

/// A build's secrets by name; `Debug` shows the names only, as a request may be logged.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct BuildSecrets(pub BTreeMap<String, String>);

impl std::fmt::Debug for BuildSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
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
    /// Build secrets (`buildah bud --secret`): a `RUN --mount=type=secret,id=NAME` reads one
    /// as `/run/secrets/NAME`, in no layer of the image, unlike a build argument, which the
    /// image's history keeps. Names are variable names (the step's `secrets:`).
    pub secrets: BuildSecrets,
    pub push: bool,
    /// Whether buildah gets the agent's registry login (to pull private base images, and to
    /// push). Off for untrusted jobs: their `RUN` instructions can leave buildah's chroot and
    /// read the login file while the build runs.
    pub credentials: bool,
    /// A repository (no tag) for layer cache shared between agents through the registry.
    pub cache_repo: Option<String>,
    /// How long the whole build may take, pushes included; each buildah command gets what is
    /// left. `None`: only cancellation stops it.
    pub timeout: Option<Duration>,
    /// Where the build's private files (the registry login among them) go, as
    /// [`StepSpec::private`](crate::executor::StepSpec::private); `None`: the system's
    /// temporary directory.
    pub private: Option<PathBuf>,
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
    Failed {
        action: String,
        status: String,
        /// buildah's exit code; `None` when a signal killed it.
        code: Option<i32>,
        signal: Option<i32>,
    },
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

impl ImageError {
    /// How `buildah bud` exited when it failed (its exit code, the signal that killed it):
    /// the build itself failing (a `RUN` of the Containerfile, a file it copies, its base
    /// image), the user's failure like a script's non-zero exit. `None` for anything else: a
    /// pull before an offline build, a push, an invalid request, an agent that cannot build.
    pub fn build_failure(&self) -> Option<(Option<i32>, Option<i32>)> {
        match self {
            Self::Failed {
                action,
                code,
                signal,
                ..
            } if action == "bud" => Some((*code, *signal)),
            _ => None,
        }
    }
}

/// Builds and pushes images with one agent's buildah storage and registry settings.
#[derive(Debug)]
pub struct ImageBuilder {
    buildah: PathBuf,
    options: ImageBuildOptions,
    kill_grace: Duration,
    /// The variables of [`KEPT_VARIABLES`] the agent had when this builder was made.
    kept_env: Vec<(&'static str, OsString)>,
    /// How many pending removals make a build ending wait to clean up (module docs).
    cleanup_threshold: usize,
    /// How often the store is pruned (`agent.buildah_prune_days`); `None`: never.
    prune_every: Option<Duration>,
}

/// What buildah prints when a `RUN` step could not start because the kernel refused, for the
/// moment, to seal the in-memory copy of itself that buildah runs the step through (runc's
/// guard against CVE-2019-5736): `fcntl(F_ADD_SEALS)` answers EBUSY while pages of the copy are
/// still pinned. Nothing of the step ran, and building again passes: seen on CI, where it failed
/// a build of the test suite once in some thirty runs. (A `RUN` step that prints the line and
/// fails is also tried again; that costs only its own build's time.)
const SELF_COPY_BUSY: &[u8] = b"sealing memfd copy: Device or resource busy";

/// How many times in all a build is tried when buildah fails as [`SELF_COPY_BUSY`] says.
pub const BUD_ATTEMPTS: u32 = 3;

/// The default of [`ImageBuilder::with_prune_interval`] (`agent.buildah_prune_days`): weekly, as
/// GitLab suggests running its `clear-docker-cache`.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The longest a prune holds the store (and the build that prunes ends that much later):
/// removing a week's images without a name deletes full copies of their file systems with
/// vfs, far more than a cleanup's one build.
const PRUNE_TIMEOUT: Duration = Duration::from_secs(300);

/// `buildah rmi --prune` removes the images without a name and without children; each round
/// makes their parents such images, so a chain of images without names (a killed `--layers`
/// build's) takes a round per layer.
const PRUNE_ROUNDS: usize = 64;

/// The default of [`ImageBuilder::with_cleanup_threshold`].
pub const CLEANUP_THRESHOLD: usize = 16;

/// The longest a build ending waits for the builds in flight, to clean up the store, once
/// [`CLEANUP_THRESHOLD`] removals are pending. A build stuck longer (a push through a very slow
/// link) holds up the store's cleanup again after that.
pub const FORCED_WAIT: Duration = Duration::from_secs(600);

/// What buildah keeps of the agent's environment: the runtime directory (rootless buildah
/// keeps its state there), the temporary directory, and the proxy settings for its own pulls
/// and pushes. Everything else is fixed by [`ImageBuilder::environment`].
pub const KEPT_VARIABLES: [&str; 8] = [
    "XDG_RUNTIME_DIR",
    "TMPDIR",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];

/// buildah's `PATH`: where it and its helpers (`newuidmap`, `fuse-overlayfs`) are installed.
const BUILDAH_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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
            kept_env: kept_environment(|name| std::env::var_os(name)),
            cleanup_threshold: CLEANUP_THRESHOLD,
            prune_every: Some(PRUNE_INTERVAL),
        })
    }

    /// Runs this `buildah` rather than the one on `PATH`: one installed elsewhere, or a
    /// wrapper around it.
    pub fn with_buildah(mut self, buildah: PathBuf) -> Self {
        self.buildah = buildah;
        self
    }

    /// Past how many pending removals (records of finished builds, image/store.rs) a build
    /// ending waits for the builds in flight to clean up, rather than leave it to a quiet
    /// moment; at least 1. The default, [`CLEANUP_THRESHOLD`], suits production; tests go lower.
    pub fn with_cleanup_threshold(mut self, threshold: usize) -> Self {
        self.cleanup_threshold = threshold.max(1);
        self
    }

    /// How often a build ending at a quiet moment prunes the store: the working containers of
    /// killed builds and the images nothing names (base images a newer pull replaced, layers
    /// of killed builds) go, the named base images stay. `None`: never. Default
    /// [`PRUNE_INTERVAL`]. The store must be raibid's alone (see `ImageBuildOptions::root`).
    pub fn with_prune_interval(mut self, every: Option<Duration>) -> Self {
        self.prune_every = every;
        self
    }

    /// The logins `request` may use: none for an untrusted one; the push login last, so that
    /// it wins over a pull login of the same host.
    fn auths(&self, request: &BuildRequest) -> Vec<&RegistryAuth> {
        if !request.credentials {
            return Vec::new();
        }
        self.options
            .pull_auths
            .iter()
            .chain(&self.options.registry_auth)
            .collect()
    }

    /// Refuses a push (of a tag, or of layer cache) to a registry the agent has a login of for
    /// pulls only: such a login is the operator's (Docker Hub's, an organisation's), not for
    /// pipelines to publish with.
    fn check_push_hosts(&self, request: &BuildRequest) -> Result<(), ImageError> {
        if !request.credentials {
            return Ok(());
        }
        let push_host = self.options.registry_auth.as_ref().map(|a| a.host.as_str());
        let pushed = request
            .tags
            .iter()
            .filter(|_| request.push)
            .chain(&request.cache_repo);
        for name in pushed {
            let Ok(reference) = raibid_oci::ImageReference::parse(name) else {
                continue;
            };
            let host = reference.registry.as_str();
            let pull_only = self
                .options
                .pull_auths
                .iter()
                .any(|a| a.host == host && Some(host) != push_host);
            if pull_only {
                return Err(ImageError::Invalid(format!(
                    "{name} would be pushed to {host}, whose login (agent.pull_logins) is \
                     for pulling base images only; push to {}",
                    push_host.unwrap_or("the agent's registry (agent.registry)")
                )));
            }
        }
        Ok(())
    }

    fn files(&self, request: &BuildRequest) -> io::Result<BuildFiles> {
        BuildFiles::write(
            &self.auths(request),
            &self.options.insecure_registries,
            &request.ignore,
            &request.secrets.0,
            request.private.as_deref(),
        )
    }

    /// Builds `request`, pushes it if asked, and streams buildah's output (credentials masked)
    /// to `output`. Cancelling stops buildah like a step. Whatever happens, the build leaves
    /// no image of its own in the store once no other build is in flight (see the module
    /// docs).
    pub async fn build_and_push(
        &self,
        request: &BuildRequest,
        output: OutputSender,
        cancel: CancellationToken,
    ) -> Result<BuiltImage, ImageError> {
        let deadline = request.timeout.map(|limit| Instant::now() + limit);
        let plan = Plan::new(request, !self.options.network)?;
        self.check_push_hosts(request)?;
        let files = self.files(request)?;
        let run = Run {
            builder: self,
            files: &files,
            output: &output,
            cancel: &cancel,
            deadline,
        };
        if plan.offline && request.cache_repo.is_some() {
            let _ = output
                .send(
                    b"[raibid] agent.network is off: the registry's layer cache is not used\n"
                        .to_vec(),
                )
                .await;
        }
        let manifest_list = !plan.platforms.is_empty();
        // Private to this build: nothing else may use or retarget it (see the module docs).
        let local = format!("{PRIVATE_PREFIX}{}", process::random_suffix()?);
        let garbage = if manifest_list {
            Garbage::List(local.clone())
        } else {
            Garbage::Image(local.clone())
        };
        // Held until the pushes are done: meanwhile no build removes anything (store.rs).
        let store = SharedStore::open(&self.options.root)?;
        let building = match store.share(&cancel, deadline, &output).await {
            Ok(lock) => lock,
            Err(Wait::Cancelled) => return Err(ImageError::Cancelled),
            Err(Wait::TimedOut) => return Err(ImageError::TimedOut),
            Err(Wait::Io(e)) => return Err(e.into()),
        };
        // Recorded before anything exists under the name, so that even a killed agent's
        // leftovers are removed.
        store.record(&garbage)?;
        let result = if manifest_list {
            run.manifest_list(request, &plan, &local).await
        } else {
            run.single(request, &plan, &local).await
        };
        drop(building);
        // Removed even after a failure or a cancel, and quietly: when the build failed early
        // there is nothing to remove. Only when no other build is in flight, though: buildah
        // may have given another build the very images this one made.
        if let Some(_cleaning) = self.cleanup_lock(&store, &cancel, &output).await {
            let (discard, _) = mpsc::channel(1);
            let cleanup = Run {
                output: &discard,
                cancel: &CancellationToken::new(),
                deadline: Some(Instant::now() + CLEANUP_TIMEOUT),
                ..run
            };
            cleanup.collect_garbage(&store).await;
            let due = self.prune_every.map(|every| store.prune_due(every));
            match due {
                Some(Ok(true)) => {
                    let prune = Run {
                        deadline: Some(Instant::now() + PRUNE_TIMEOUT),
                        ..cleanup
                    };
                    prune.prune().await;
                }
                Some(Err(e)) => debug!(error = %e, "cannot read when the image store was pruned"),
                Some(Ok(false)) | None => {}
            }
        }
        let digests = result?;
        info!(tags = ?request.tags, ?digests, "image built");
        Ok(BuiltImage {
            digests,
            manifest_list,
        })
    }

    /// The store's lock, exclusive, to clean up with: if no build holds it now or, once
    /// `cleanup_threshold` removals are pending, when the builds in flight are done (new ones
    /// wait meanwhile; at most [`FORCED_WAIT`], and not after a cancel). `None`: no cleanup.
    async fn cleanup_lock(
        &self,
        store: &SharedStore,
        cancel: &CancellationToken,
        output: &OutputSender,
    ) -> Option<nix::fcntl::Flock<std::fs::File>> {
        let pending = store.pending(self.cleanup_threshold).unwrap_or_else(|e| {
            debug!(error = %e, "cannot count the image store's garbage records");
            0
        });
        let lock = if pending >= self.cleanup_threshold && !cancel.is_cancelled() {
            let _ = output
                .send(
                    format!(
                        "[raibid] {pending} builds' images wait for removal: waiting for the builds \
                         in flight to clean up the image store\n"
                    )
                    .into_bytes(),
                )
                .await;
            match store.exclusive(cancel, Instant::now() + FORCED_WAIT).await {
                Ok(lock) => return Some(lock),
                Err(Wait::Io(e)) => Err(e),
                // Left to a later build.
                Err(Wait::Cancelled | Wait::TimedOut) => Ok(None),
            }
        } else {
            store.try_exclusive()
        };
        match lock {
            Ok(Some(lock)) => Some(lock),
            Ok(None) => {
                debug!("other builds are in flight: the store's cleanup is left to them");
                None
            }
            Err(e) => {
                debug!(error = %e, "cannot lock the image store for cleanup");
                None
            }
        }
    }

    /// buildah's whole environment: a fixed `PATH`; `HOME` and every variable that would point
    /// containers/image at a login, empty or private to this build; and [`KEPT_VARIABLES`].
    fn environment(&self, files: &BuildFiles) -> Vec<(OsString, OsString)> {
        let home = files.home();
        let mut env: Vec<(OsString, OsString)> = vec![
            ("PATH".into(), BUILDAH_PATH.into()),
            ("HOME".into(), home.clone().into()),
            ("XDG_CONFIG_HOME".into(), home.join(".config").into()),
            ("DOCKER_CONFIG".into(), home.join(".docker").into()),
            ("REGISTRY_AUTH_FILE".into(), files.authfile().into()),
        ];
        env.extend(
            self.kept_env
                .iter()
                .map(|(name, value)| ((*name).into(), value.clone())),
        );
        env
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
        for auth in self
            .options
            .pull_auths
            .iter()
            .chain(&self.options.registry_auth)
        {
            masker.add_secret(&auth.password);
            masker.add_secret(&files::encoded_credentials(auth));
        }
        masker
    }
}

/// Removing what builds left in the store (usually one build's image or manifest list, at most
/// [`store::MAX_RECORDS`] builds' after a busy spell) after a build, even one that ran out of
/// time, is a local storage operation of seconds; this bounds it if the storage is stuck.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A request, checked.
struct Plan {
    context_dir: PathBuf,
    containerfile: PathBuf,
    platforms: Vec<Platform>,
    /// `RUN` steps get no network (the agent's `network` is off).
    offline: bool,
}

/// The largest Containerfile a build without network takes (buildah reads any size, but then
/// reads the copy the agent writes of it, naming the base images by ID).
const MAX_CONTAINERFILE: u64 = 1024 * 1024;

impl Plan {
    fn new(request: &BuildRequest, offline: bool) -> Result<Self, ImageError> {
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
        for name in request.secrets.0.keys() {
            // `--secret id=NAME,src=PATH` is split at commas and `=`, and NAME becomes a file
            // name under /run/secrets.
            let fine = |c: char| c.is_ascii_alphanumeric() || c == '_';
            if name.is_empty() || !name.chars().all(fine) {
                return Err(invalid(format!("invalid build secret name {name:?}")));
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
        if offline {
            // The base images of each platform would share their names in the store.
            if platforms.len() > 1 {
                return Err(invalid(
                    "agent.network is off, and a build for several platforms cannot have its \
                     base images pulled before it runs without the network; build one platform \
                     per step"
                        .into(),
                ));
            }
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let missing = missing_capabilities(&status, NETWORK_NAMESPACE_CAPABILITIES);
            if !missing.is_empty() {
                return Err(ImageError::Unavailable(format!(
                    "agent.network is off, and keeping an image build's RUN steps off the \
                     network takes a network namespace of its own with its loopback interface \
                     up, which needs CAP_SYS_ADMIN and CAP_NET_ADMIN (a root agent); this agent \
                     lacks {}, and buildah's chroot isolation cannot do it otherwise",
                    missing.join(" and ")
                )));
            }
        }
        Ok(Self {
            context_dir,
            containerfile,
            platforms,
            offline,
        })
    }

    /// `bud` arguments up to where single- and multi-platform builds differ.
    fn bud_args(&self, request: &BuildRequest, files: &BuildFiles) -> Vec<OsString> {
        // `--http-proxy=false`: buildah's own proxy settings (which may hold a password) are
        // not passed on to RUN steps.
        let mut args: Vec<OsString> = [
            "bud",
            "--isolation",
            "chroot",
            "--http-proxy=false",
            "--authfile",
        ]
        .map(OsString::from)
        .to_vec();
        args.push(files.authfile().into());
        args.push("--ignorefile".into());
        args.push(files.ignore_file().into());
        args.push("-f".into());
        if self.offline {
            // The copy naming the bases by ID (Offline::pinned), pulled just before; there is
            // no network to pull anything else.
            args.push(files.containerfile().into());
            args.push("--pull=never".into());
        } else {
            args.push(self.containerfile.clone().into());
            if let Some(cache) = &request.cache_repo {
                // With `--layers` a failed build would leave its working container in the
                // store unless `--force-rm` (which buildah takes only with `--layers`).
                args.extend(
                    [
                        "--layers",
                        "--force-rm",
                        "--cache-from",
                        cache,
                        "--cache-to",
                        cache,
                    ]
                    .map(OsString::from),
                );
            }
        }
        for (key, value) in &request.build_args {
            args.push("--build-arg".into());
            args.push(format!("{key}={value}").into());
        }
        for name in request.secrets.0.keys() {
            let mut secret = OsString::from(format!("id={name},src="));
            secret.push(files.secret(name));
            args.push("--secret".into());
            args.push(secret);
        }
        args
    }

    /// The Containerfile of a build without network, and the images it uses (those of its
    /// `FROM` lines, `COPY --from=` and bind mounts' `from=`), each with the platform to pull
    /// it for: its `FROM --platform` flag's, else the build's (`None`: this machine's,
    /// buildah's default). One name may be pulled for several platforms: the build uses each
    /// by the ID its pull gave ([`Offline::pinned`]).
    fn base_images(&self, request: &BuildRequest) -> Result<Offline, ImageError> {
        let mut text = String::new();
        std::fs::File::open(&self.containerfile)?
            .take(MAX_CONTAINERFILE + 1)
            .read_to_string(&mut text)?;
        // The build reads the copy written from this text: all of it or nothing.
        if text.len() as u64 > MAX_CONTAINERFILE {
            return Err(ImageError::Invalid(format!(
                "agent.network is off, and the Containerfile is larger than {MAX_CONTAINERFILE} \
                 bytes"
            )));
        }
        let native = Platform::native();
        let target = self.platforms.first().cloned();
        let mut automatic = Vec::new();
        if let Some(target) = target.as_ref().or(native.as_ref()) {
            automatic.extend(target.build_args("TARGET"));
        }
        if let Some(native) = &native {
            automatic.extend(native.build_args("BUILD"));
        }
        let file = containerfile::Containerfile::parse(&text, &request.build_args, &automatic);
        let mut offline = Offline {
            file,
            native,
            target,
            pulls: Vec::new(),
        };
        for base in offline.file.base_images() {
            let pull = offline.pull_for(&base)?;
            if !offline.pulls.iter().any(|p| offline.same_pull(p, &pull)) {
                offline.pulls.push(pull);
            }
        }
        Ok(offline)
    }
}

/// A build without network: its Containerfile and the images pulled before it.
struct Offline {
    file: containerfile::Containerfile,
    native: Option<Platform>,
    /// The build's platform, if it names one.
    target: Option<Platform>,
    /// Each image to pull with the platform to pull it for, without repeats.
    pulls: Vec<(String, Option<Platform>)>,
}

impl Offline {
    /// The image a `FROM` (or `COPY --from=`, or a bind mount's `from=`) names and the
    /// platform to pull it for.
    fn pull_for(
        &self,
        base: &containerfile::BaseImage,
    ) -> Result<(String, Option<Platform>), ImageError> {
        reference::check("image", &base.image).map_err(ImageError::Invalid)?;
        let platform = match &base.platform {
            Some(text) => Some(Platform::parse(text).map_err(|e| {
                ImageError::Invalid(format!("FROM --platform of {}: {e}", base.image))
            })?),
            None => self.target.clone(),
        };
        Ok((base.image.clone(), platform))
    }

    /// Whether two pulls get the same image: the same name for the same platform, `None`
    /// being this machine's.
    fn same_pull(&self, a: &(String, Option<Platform>), b: &(String, Option<Platform>)) -> bool {
        let effective = |p: &Option<Platform>| p.clone().or_else(|| self.native.clone());
        a.0 == b.0 && effective(&a.1) == effective(&b.1)
    }

    /// The Containerfile the build reads: each `FROM`, `COPY --from=` and bind mount's
    /// `from=` that pulls names the image its pull gave, by ID (`ids`, in the order of
    /// `pulls`). A name in the store points to one image
    /// at a time, and another build on the store can pull the same name for another platform
    /// (or a newer image) between this build's pull and its `bud`; by name, the build would
    /// then use that image.
    fn pinned(&self, ids: &[String]) -> Result<String, ImageError> {
        self.file
            .pinned(|base| {
                let pull = self.pull_for(base).map_err(|e| e.to_string())?;
                self.pulls
                    .iter()
                    .zip(ids)
                    .find(|(p, _)| self.same_pull(p, &pull))
                    .map(|(_, id)| id.clone())
                    .ok_or_else(|| format!("{} was not pulled", base.image))
            })
            .map_err(|e| {
                ImageError::Invalid(format!(
                    "agent.network is off, and the build cannot name its images by ID: {e}"
                ))
            })
    }
}

/// What [`enter_private_network`] needs: `unshare(CLONE_NEWNET)` takes CAP_SYS_ADMIN, and
/// bringing the new namespace's loopback interface up (`SIOCSIFFLAGS`) CAP_NET_ADMIN (the
/// namespace belongs to the agent's user namespace, where the agent must have both).
const NETWORK_NAMESPACE_CAPABILITIES: &[(&str, u32)] =
    &[("CAP_SYS_ADMIN", 21), ("CAP_NET_ADMIN", 12)];

/// The capabilities of `wanted` (name, bit) missing from the effective set in `status` (the
/// text of `/proc/self/status`); all of them if it has none.
fn missing_capabilities(status: &str, wanted: &[(&'static str, u32)]) -> Vec<&'static str> {
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    wanted
        .iter()
        .filter(|(_, bit)| effective & (1 << bit) == 0)
        .map(|(name, _)| *name)
        .collect()
}

/// Run in the child before buildah starts: a network namespace of its own, whose only
/// interface, the loopback, is brought up (as bwrap does for steps without network).
fn enter_private_network() -> io::Result<()> {
    // SAFETY: unshare, socket, ioctl and close are async-signal-safe system calls, and the
    // request structure lives on this stack frame.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo") {
            *slot = *byte as libc::c_char;
        }
        let mut result = libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut request);
        if result == 0 {
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            result = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &request);
        }
        let error = io::Error::last_os_error();
        libc::close(fd);
        if result != 0 {
            return Err(error);
        }
    }
    Ok(())
}

/// How [`Run::run_buildah`] starts buildah.
enum Spawn {
    /// Its standard output and error both to the log.
    Plain,
    /// In a network namespace of its own, where only the loopback interface is up.
    Offline,
    /// Its standard output to this file, its standard error to the log.
    StdoutTo(std::fs::File),
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
    /// Builds the image under the private name `local` and pushes it by ID to every tag.
    async fn single(
        &self,
        request: &BuildRequest,
        plan: &Plan,
        local: &str,
    ) -> Result<Vec<String>, ImageError> {
        let mut args = plan.bud_args(request, self.files);
        args.extend([
            "-t".into(),
            local.into(),
            "--iidfile".into(),
            self.files.iid_file().into(),
        ]);
        args.push(plan.context_dir.clone().into());
        self.bud(request, plan, args, None).await?;
        if !request.push {
            return Ok(Vec::new());
        }
        let id = built_image_id(&self.files.iid_file())?;
        self.push_tags(request, &id, false).await
    }

    /// Builds a manifest list under the private name `list` and pushes it whole to every tag.
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
        self.bud(request, plan, args, Some(list)).await?;
        if !request.push {
            return Ok(Vec::new());
        }
        self.push_tags(request, list, true).await
    }

    /// Runs `bud`; without network, after pulling the images it uses, in a network namespace
    /// of its own, and on exactly the images pulled: the Containerfile it reads names them by
    /// ID. A `bud` that failed as [`SELF_COPY_BUSY`] says runs again, up to [`BUD_ATTEMPTS`]
    /// times in all; the manifest list `list` it was adding to is removed first, so that the
    /// list pushed holds each platform's image once.
    async fn bud(
        &self,
        request: &BuildRequest,
        plan: &Plan,
        args: Vec<OsString>,
        list: Option<&str>,
    ) -> Result<(), ImageError> {
        if plan.offline {
            let bases = plan.base_images(request)?;
            let mut ids = Vec::new();
            for (n, (image, platform)) in bases.pulls.iter().enumerate() {
                ids.push(self.pull(n, image, platform.as_ref()).await?);
            }
            self.files.write_containerfile(&bases.pinned(&ids)?)?;
        }
        let mut attempt = 1;
        loop {
            let how = if plan.offline {
                Spawn::Offline
            } else {
                Spawn::Plain
            };
            let mut busy = false;
            let result = self
                .run_buildah_noting(args.clone(), "bud", how, &mut busy)
                .await;
            match result {
                Err(ImageError::Failed { .. }) if busy && attempt < BUD_ATTEMPTS => {
                    attempt += 1;
                    warn!(
                        attempt,
                        "buildah could not start a RUN step (EBUSY); building again"
                    );
                    let note = format!(
                        "[raibid] buildah could not start a RUN step: the kernel was still busy \
                         with buildah's copy of itself (EBUSY sealing a memfd), which is no fault \
                         of the build; building again (attempt {attempt} of {BUD_ATTEMPTS})\n"
                    );
                    let _ = self.output.send(note.into_bytes()).await;
                    if let Some(list) = list {
                        self.remove_list(list).await;
                    }
                }
                other => return other,
            }
        }
    }

    /// Pulls `image` (the `n`th base image of a build without network) and returns the ID of
    /// the image pulled, as `buildah pull` prints it on its standard output (its progress goes
    /// to the log). Always pulled: another build may have pulled the name for another
    /// platform.
    async fn pull(
        &self,
        n: usize,
        image: &str,
        platform: Option<&Platform>,
    ) -> Result<String, ImageError> {
        let mut pull: Vec<OsString> = ["pull", "--policy", "always", "--authfile"]
            .map(OsString::from)
            .to_vec();
        pull.push(self.files.authfile().into());
        if let Some(platform) = platform {
            pull.extend(["--platform".into(), platform.to_string().into()]);
        }
        pull.extend(["--".into(), image.into()]);
        let action = format!("pull {image}");
        let (path, stdout) = self.files.pulled_id_file(n)?;
        self.run_buildah(pull, &action, Spawn::StdoutTo(stdout))
            .await?;
        let text = std::fs::read_to_string(&path)?;
        let id = text.trim();
        if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(id.to_ascii_lowercase())
        } else {
            Err(ImageError::Digest {
                action,
                detail: format!("{id:?} is not an image ID"),
            })
        }
    }

    /// Pushes `source` (an image ID, or with `list` a manifest list's name, with all its
    /// images) to every tag and returns the digests the registry gave.
    async fn push_tags(
        &self,
        request: &BuildRequest,
        source: &str,
        list: bool,
    ) -> Result<Vec<String>, ImageError> {
        let push: &[&str] = if list {
            &["manifest", "push", "--all"]
        } else {
            &["push"]
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
                source.into(),
                format!("docker://{tag}").into(),
            ]);
            let action = if list {
                format!("manifest push {tag}")
            } else {
                format!("push {tag}")
            };
            self.buildah(args, &action).await?;
            digests.push(pushed_digest(tag, &digest_file, &action)?);
        }
        Ok(digests)
    }

    /// With the store's lock held exclusively, removes what finished builds left in the store
    /// (store.rs): their private names, and their manifest lists with the images without a
    /// name in them. Base images and layers stay. One record at a time, each deleted once its
    /// removal ran (errors are ignored: a name already gone, an image a killed build's working
    /// container still uses), so that a cleanup out of time still leaves less to the next.
    async fn collect_garbage(&self, store: &SharedStore) {
        let records = match store.records() {
            Ok(records) => records,
            Err(e) => {
                debug!(error = %e, "cannot read the image store's garbage records");
                return;
            }
        };
        let Some(json) = self
            .capture(&["images", "--all", "--no-trunc", "--json"])
            .await
        else {
            return;
        };
        let present = image_names(&json);
        let exists = |name: &str| {
            present
                .iter()
                .any(|n| n == name || n.strip_suffix(":latest") == Some(name))
        };
        for (path, garbage) in records {
            if self.out_of_time() {
                debug!("the image store's cleanup ran out of time; it goes on after a later build");
                return;
            }
            let done = match &garbage {
                Some(Garbage::List(name)) if exists(name) => self.remove_list(name).await,
                Some(Garbage::Image(name)) if exists(name) => self.remove(&["rmi"], &[name]).await,
                _ => true,
            };
            if !done {
                debug!("the image store's cleanup ran out of time; it goes on after a later build");
                return;
            }
            if let Err(e) = std::fs::remove_file(&path) {
                debug!(error = %e, path = %path.display(), "cannot delete a garbage record");
            }
        }
    }

    /// With the store's lock held exclusively: removes every working container (no build is in
    /// flight, so they are killed builds') and the images without a name that nothing uses,
    /// round after round until none is left.
    async fn prune(&self) {
        let removed = |out: Option<Vec<u8>>| {
            out.map(|out| {
                String::from_utf8_lossy(&out)
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .count()
            })
        };
        let containers = removed(self.capture(&["rm", "--all"]).await).unwrap_or(0);
        let mut images = 0;
        for _ in 0..PRUNE_ROUNDS {
            match removed(self.capture(&["rmi", "--prune"]).await) {
                Some(0) | None => break,
                Some(n) => images += n,
            }
        }
        info!(
            containers,
            images, "pruned the image store (agent.buildah_prune_days)"
        );
    }

    fn out_of_time(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Removes a manifest list and the images without a name it holds. False if that was cut
    /// short by the cleanup's deadline.
    async fn remove_list(&self, list: &str) -> bool {
        let digests = match self.capture(&["manifest", "inspect", list]).await {
            Some(json) => list_instances(&json),
            None if self.out_of_time() => return false,
            None => Vec::new(),
        };
        if !self.remove(&["manifest", "rm"], &[list]).await {
            return false;
        }
        if digests.is_empty() {
            return true;
        }
        // Looked for once the list is gone: a list's image may have had a private name too
        // (removed with its own record).
        let Some(json) = self
            .capture(&["images", "--all", "--no-trunc", "--json"])
            .await
        else {
            return !self.out_of_time();
        };
        let unnamed = unnamed_images_with_digests(&json, &digests);
        let unnamed: Vec<&str> = unnamed.iter().map(String::as_str).collect();
        self.remove(&["rmi"], &unnamed).await
    }

    /// Runs `buildah <command> <names>` unless there are no names; failures are only logged.
    /// False if it did not run to its end for want of time.
    async fn remove(&self, command: &[&str], names: &[&str]) -> bool {
        if names.is_empty() {
            return true;
        }
        let action = command.join(" ");
        let args = command.iter().chain(names).map(OsString::from).collect();
        match self.buildah(args, &action).await {
            Ok(()) => true,
            Err(e) => {
                debug!(error = %e, ?names, "not everything was removed");
                !matches!(e, ImageError::TimedOut | ImageError::Cancelled)
            }
        }
    }

    /// The standard output of a buildah command that changes nothing (`inspect`, `images`);
    /// `None` if it failed, or did not end before the deadline (not run if that has passed).
    async fn capture(&self, args: &[&str]) -> Option<Vec<u8>> {
        let limit = match self.deadline {
            Some(deadline) => deadline
                .checked_duration_since(Instant::now())
                .filter(|left| !left.is_zero())?
                .min(CLEANUP_TIMEOUT),
            None => CLEANUP_TIMEOUT,
        };
        let mut command = Command::new(&self.builder.buildah);
        command
            .env_clear()
            .envs(self.builder.environment(self.files))
            .args(self.builder.global_args(self.files))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let output = async { spawn::spawn(command)?.wait_with_output().await };
        match tokio::time::timeout(limit, output).await {
            Ok(Ok(out)) if out.status.success() => Some(out.stdout),
            other => {
                debug!(?args, ?other, "buildah command failed");
                None
            }
        }
    }

    /// Runs one buildah command, its output masked on the way to the log.
    async fn buildah(&self, args: Vec<OsString>, action: &str) -> Result<(), ImageError> {
        self.run_buildah(args, action, Spawn::Plain).await
    }

    /// [`Run::buildah`], started as `how` says.
    async fn run_buildah(
        &self,
        args: Vec<OsString>,
        action: &str,
        how: Spawn,
    ) -> Result<(), ImageError> {
        self.run_buildah_noting(args, action, how, &mut false).await
    }

    /// [`Run::run_buildah`], setting `busy` if buildah's output said [`SELF_COPY_BUSY`].
    async fn run_buildah_noting(
        &self,
        args: Vec<OsString>,
        action: &str,
        how: Spawn,
        busy: &mut bool,
    ) -> Result<(), ImageError> {
        let offline = matches!(how, Spawn::Offline);
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
        let prefix = if offline { "(no network) " } else { "" };
        let _ = self
            .output
            .send(format!("{prefix}$ buildah {}\n", shown.join(" ")).into_bytes())
            .await;
        let mut command = Command::new(&self.builder.buildah);
        command
            .env_clear()
            .envs(self.builder.environment(self.files))
            .args(all);
        if offline {
            // SAFETY: enter_private_network only makes async-signal-safe system calls.
            unsafe {
                command.pre_exec(enter_private_network);
            }
        }
        let (raw_tx, raw_rx) = mpsc::channel(16);
        let limits = Limits {
            timeout,
            grace: self.builder.kill_grace,
        };
        let stdout = match how {
            Spawn::StdoutTo(file) => Some(file),
            Spawn::Plain | Spawn::Offline => None,
        };
        // Started by the thread that starts every buildah, so that it dies with the agent
        // (image/spawn.rs).
        let start = move |mut command: Command| {
            if let Some(file) = stdout {
                command.stdout(file);
            }
            spawn::spawn(command)
        };
        let run = process::run_spawned_by(
            command,
            raw_tx,
            self.cancel.clone(),
            limits,
            &SignalGroup,
            start,
        );
        let masked = forward_masked(raw_rx, self.builder.masker(), self.output);
        let (exit, seen) = tokio::join!(run, masked);
        *busy = seen;
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
                code: exit.code,
                signal: exit.signal,
            });
        }
        Ok(())
    }
}

/// The variables of [`KEPT_VARIABLES`] that `get` has.
fn kept_environment(get: impl Fn(&str) -> Option<OsString>) -> Vec<(&'static str, OsString)> {
    KEPT_VARIABLES
        .iter()
        .filter_map(|name| get(name).map(|value| (*name, value)))
        .collect()
}

/// The image ID `bud --iidfile` wrote (`sha256:<hex>`), as the hex `push` takes.
fn built_image_id(iid_file: &Path) -> Result<String, ImageError> {
    let bad = |detail: String| ImageError::Digest {
        action: "bud".into(),
        detail,
    };
    let text = std::fs::read_to_string(iid_file).map_err(|e| bad(e.to_string()))?;
    let id = text.trim();
    id.strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
        .ok_or_else(|| bad(format!("{id:?} is not an image ID")))
}

/// The digests of the images in a manifest list, from `buildah manifest inspect`.
fn list_instances(json: &[u8]) -> Vec<String> {
    let list: serde_json::Value = serde_json::from_slice(json).unwrap_or_default();
    list["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["digest"].as_str().map(str::to_owned))
        .collect()
}

/// Every name of every image in `buildah images --json`.
fn image_names(json: &[u8]) -> Vec<String> {
    let images: serde_json::Value = serde_json::from_slice(json).unwrap_or_default();
    images
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["names"].as_array())
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect()
}

/// From `buildah images --json`, the IDs of images without a name whose digest is listed:
/// a named image is someone else's, whatever its digest.
fn unnamed_images_with_digests(json: &[u8], digests: &[String]) -> Vec<String> {
    let images: serde_json::Value = serde_json::from_slice(json).unwrap_or_default();
    images
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["names"].as_array().is_none_or(Vec::is_empty))
        .filter(|i| {
            i["digest"]
                .as_str()
                .is_some_and(|d| digests.iter().any(|x| x == d))
        })
        .filter_map(|i| i["id"].as_str())
        .map(|id| id.strip_prefix("sha256:").unwrap_or(id))
        .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
        .collect()
}

/// Forwards buildah's output to the log, masked; true if it said [`SELF_COPY_BUSY`].
async fn forward_masked(
    mut raw: mpsc::Receiver<Vec<u8>>,
    mut masker: Masker,
    output: &OutputSender,
) -> bool {
    let mut listening = true;
    let mut busy = Watch::new(SELF_COPY_BUSY);
    while let Some(chunk) = raw.recv().await {
        busy.push(&chunk);
        let masked = masker.push(&chunk);
        if listening && !masked.is_empty() {
            listening = output.send(masked).await.is_ok();
        }
    }
    let rest = masker.finish();
    if listening && !rest.is_empty() {
        let _ = output.send(rest).await;
    }
    busy.seen
}

/// Whether a stream of chunks held `needle`, wherever the chunks split it.
struct Watch {
    needle: &'static [u8],
    /// The last `needle.len() - 1` bytes seen, at most: the start of a match split by a chunk.
    tail: Vec<u8>,
    seen: bool,
}

impl Watch {
    fn new(needle: &'static [u8]) -> Self {
        Self {
            needle,
            tail: Vec::new(),
            seen: false,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        if self.seen || self.needle.is_empty() {
            self.seen = true;
            return;
        }
        self.tail.extend_from_slice(chunk);
        self.seen = self
            .tail
            .windows(self.needle.len())
            .any(|w| w == self.needle);
        let keep = self.needle.len() - 1;
        if self.tail.len() > keep {
            self.tail.drain(..self.tail.len() - keep);
        }
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

    /// buildah's EBUSY line is noticed however its output is cut into chunks, and only it.
    #[test]
    fn the_busy_line_is_seen_across_chunks() {
        let line = b"Close_Fd sealing memfd copy: Device or resource busy\n";
        for cut in 0..line.len() {
            for second in cut..line.len() {
                let mut watch = Watch::new(SELF_COPY_BUSY);
                watch.push(&line[..cut]);
                watch.push(&line[cut..second]);
                watch.push(&line[second..]);
                assert!(watch.seen, "cut at {cut} and {second}");
            }
        }
        // Byte by byte, after a lot of other output.
        let mut watch = Watch::new(SELF_COPY_BUSY);
        watch.push(&[b'x'; 10_000]);
        for byte in line {
            watch.push(&[*byte]);
        }
        assert!(watch.seen);
        assert!(watch.tail.len() < SELF_COPY_BUSY.len());
        let mut watch = Watch::new(SELF_COPY_BUSY);
        watch.push(b"sealing memfd copy: Device or resource");
        watch.push(b" is fine\nbusy\n");
        assert!(!watch.seen);
    }

    /// Only `bud` failing is the build's (the user's) failure; pulls, pushes and the rest are
    /// the agent's errors.
    #[test]
    fn only_a_failed_bud_is_the_build_s_own_failure() {
        let failed = |action: &str, code, signal| ImageError::Failed {
            action: action.into(),
            status: "whatever".into(),
            code,
            signal,
        };
        assert_eq!(
            failed("bud", Some(1), None).build_failure(),
            Some((Some(1), None))
        );
        assert_eq!(
            failed("bud", None, Some(9)).build_failure(),
            Some((None, Some(9)))
        );
        for action in [
            "pull debian:12",
            "push r.example/a:1",
            "manifest push r.example/a:1",
        ] {
            assert_eq!(failed(action, Some(1), None).build_failure(), None);
        }
        assert_eq!(ImageError::Invalid("x".into()).build_failure(), None);
        assert_eq!(ImageError::TimedOut.build_failure(), None);
    }

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
                pull_auths: Vec::new(),
                insecure_registries: vec![],
                network: true,
            },
            kill_grace: DEFAULT_KILL_GRACE,
            kept_env: Vec::new(),
            cleanup_threshold: CLEANUP_THRESHOLD,
            prune_every: Some(PRUNE_INTERVAL),
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
            secrets: BuildSecrets(BTreeMap::from([(
                "NPM_TOKEN".into(),
                "npm-secret-1234".into(),
            )])),
            push: true,
            credentials: true,
            cache_repo: Some("r.example/acme/cache".into()),
            timeout: None,
            private: None,
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
        let plan = Plan::new(&request, false).unwrap();
        let files = BuildFiles::write(&[&auth], &[], b"", &BTreeMap::new(), None).unwrap();
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
            "--layers --force-rm --cache-from r.example/acme/cache --cache-to r.example/acme/cache"
        ));
        assert!(text.contains("--build-arg VERSION=1.2"));
        assert!(text.contains("--http-proxy=false"), "{text}");
        assert!(!format!("{auth:?}").contains("hunter2"));
        // A build secret goes by file, and a logged request names it only.
        assert!(
            text.contains(&format!(
                "--secret id=NPM_TOKEN,src={}",
                files.secret("NPM_TOKEN").display()
            )),
            "{text}"
        );
        assert!(!text.contains("npm-secret-1234"), "{text}");
        let logged = format!("{request:?}");
        assert!(logged.contains("NPM_TOKEN") && !logged.contains("npm-secret-1234"));
    }

    #[test]
    fn buildah_gets_a_fixed_environment_without_the_agents_logins() {
        let agent: BTreeMap<&str, &str> = BTreeMap::from([
            ("HOME", "/home/agent"),
            ("DOCKER_CONFIG", "/home/agent/.docker"),
            ("XDG_CONFIG_HOME", "/home/agent/.config"),
            ("REGISTRY_AUTH_FILE", "/home/agent/auth.json"),
            ("PATH", "/home/agent/bin:/usr/bin"),
            ("LD_PRELOAD", "/home/agent/evil.so"),
            ("RAIBID_REDIS_URL", "redis://:secret@127.0.0.1"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("https_proxy", "http://u:pw@proxy:3128"),
            ("NO_PROXY", "localhost"),
        ]);
        let mut builder = builder(None);
        builder.kept_env = kept_environment(|name| agent.get(name).map(OsString::from));
        let files = BuildFiles::write(&[], &[], b"", &BTreeMap::new(), None).unwrap();
        let env: BTreeMap<String, String> = builder
            .environment(&files)
            .into_iter()
            .map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap()))
            .collect();
        let home = files.home();
        let expected = BTreeMap::from([
            ("PATH".to_owned(), BUILDAH_PATH.to_owned()),
            ("HOME".to_owned(), home.display().to_string()),
            (
                "XDG_CONFIG_HOME".to_owned(),
                home.join(".config").display().to_string(),
            ),
            (
                "DOCKER_CONFIG".to_owned(),
                home.join(".docker").display().to_string(),
            ),
            (
                "REGISTRY_AUTH_FILE".to_owned(),
                files.authfile().display().to_string(),
            ),
            ("XDG_RUNTIME_DIR".to_owned(), "/run/user/1000".to_owned()),
            (
                "https_proxy".to_owned(),
                "http://u:pw@proxy:3128".to_owned(),
            ),
            ("NO_PROXY".to_owned(), "localhost".to_owned()),
        ]);
        assert_eq!(env, expected);
        assert!(home.is_dir() && std::fs::read_dir(&home).unwrap().next().is_none());
    }

    #[test]
    fn a_manifest_lists_images_are_found_by_digest_unless_named() {
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let list =
            format!(r#"{{"manifests":[{{"digest":"sha256:{a}"}},{{"digest":"sha256:{b}"}}]}}"#);
        let digests = list_instances(list.as_bytes());
        assert_eq!(digests, [format!("sha256:{a}"), format!("sha256:{b}")]);
        let images = format!(
            r#"[{{"id":"sha256:{a}","names":null,"digest":"sha256:{a}"}},
                {{"id":"sha256:{b}","names":["localhost/other:1"],"digest":"sha256:{b}"}},
                {{"id":"sha256:{c}","names":[],"digest":"sha256:{c}"}}]"#
        );
        assert_eq!(
            unnamed_images_with_digests(images.as_bytes(), &digests),
            [a]
        );
        assert!(list_instances(b"not json").is_empty());
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
        assert!(Plan::new(&good, false).is_ok());
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
            BuildRequest {
                secrets: BuildSecrets(BTreeMap::from([("A,src=/etc/shadow".into(), "x".into())])),
                ..good.clone()
            },
        ];
        for request in bad {
            assert!(
                matches!(Plan::new(&request, false), Err(ImageError::Invalid(_))),
                "{request:?}"
            );
        }
    }

    /// A cross build pulls each base for the platform its stage runs on: `$BUILDPLATFORM`
    /// stages for this machine's, the others for the target's.
    #[test]
    fn without_network_each_base_image_is_pulled_for_its_stages_platform() {
        let dir = tempfile::tempdir().unwrap();
        let request = request(dir.path());
        let native = Platform::native().unwrap();
        let foreign = if native.to_string() == "linux/s390x" {
            "linux/arm64"
        } else {
            "linux/s390x"
        };
        let plan = |containerfile: &str, platforms: &[&str]| {
            std::fs::write(dir.path().join("Containerfile"), containerfile).unwrap();
            Plan {
                context_dir: dir.path().to_path_buf(),
                containerfile: dir.path().join("Containerfile"),
                platforms: platforms
                    .iter()
                    .map(|p| Platform::parse(p).unwrap())
                    .collect(),
                offline: true,
            }
        };
        let shown = |bases: Offline| -> Vec<(String, Option<String>)> {
            bases
                .pulls
                .into_iter()
                .map(|(image, p)| (image, p.map(|p| p.to_string())))
                .collect()
        };
        let text = "FROM --platform=$BUILDPLATFORM golang:1.22 AS build\n\
                    FROM --platform=linux/ppc64le busybox:1 AS tools\n\
                    FROM debian:12\n\
                    FROM --platform=$TARGETPLATFORM alpine:3\n";
        let cross = plan(text, &[foreign]);
        assert_eq!(
            shown(cross.base_images(&request).unwrap()),
            [
                ("golang:1.22".into(), Some(native.to_string())),
                ("busybox:1".into(), Some("linux/ppc64le".into())),
                ("debian:12".into(), Some(foreign.into())),
                ("alpine:3".into(), Some(foreign.into())),
            ]
        );
        // A plain image for this machine: only flags name a platform.
        let here = plan(text, &[]);
        assert_eq!(
            shown(here.base_images(&request).unwrap())[2..],
            [
                ("debian:12".into(), None),
                ("alpine:3".into(), Some(native.to_string()))
            ]
        );
        // One name for two platforms is pulled for each (the build names each by its ID);
        // for one, it is pulled once.
        let both = "FROM --platform=$BUILDPLATFORM golang:1.22 AS build\nFROM golang:1.22\n";
        assert_eq!(
            shown(plan(both, &[foreign]).base_images(&request).unwrap()),
            [
                ("golang:1.22".into(), Some(native.to_string())),
                ("golang:1.22".into(), Some(foreign.into())),
            ]
        );
        assert_eq!(
            shown(plan(both, &[]).base_images(&request).unwrap()),
            [("golang:1.22".into(), Some(native.to_string()))]
        );
        // Each FROM names the image pulled for its platform.
        let ids = ["a".repeat(64), "b".repeat(64)];
        let pinned = plan(both, &[foreign])
            .base_images(&request)
            .unwrap()
            .pinned(&ids)
            .unwrap();
        assert_eq!(
            pinned,
            format!(
                "FROM --platform=$BUILDPLATFORM sha256:{} AS build\nFROM sha256:{}\n",
                ids[0], ids[1]
            )
        );
        // The image of a COPY --from= or a bind mount is pulled for the build's platform, even
        // in a $BUILDPLATFORM stage (as buildah takes it), and named by the ID of that pull.
        let copy = "FROM --platform=$BUILDPLATFORM golang:1.22 AS build\n\
                    COPY --from=golang:1.22 /usr/local/go /go\n\
                    RUN --mount=from=tools:1,target=/t make\n";
        let copied = plan(copy, &[foreign]).base_images(&request).unwrap();
        assert_eq!(
            shown(copied),
            [
                ("golang:1.22".into(), Some(native.to_string())),
                ("golang:1.22".into(), Some(foreign.into())),
                ("tools:1".into(), Some(foreign.into())),
            ]
        );
        let ids = ["a".repeat(64), "b".repeat(64), "c".repeat(64)];
        let pinned = plan(copy, &[foreign])
            .base_images(&request)
            .unwrap()
            .pinned(&ids)
            .unwrap();
        assert_eq!(
            pinned,
            format!(
                "FROM --platform=$BUILDPLATFORM sha256:{} AS build\n\
                 COPY --from=sha256:{} /usr/local/go /go\n\
                 RUN --mount=from=sha256:{},target=/t make\n",
                ids[0], ids[1], ids[2]
            )
        );
        // The build reads the agent's copy: a Containerfile too big to copy whole is refused.
        let mut big = "FROM debian:12\n".to_owned();
        big.push_str(&"#".repeat(MAX_CONTAINERFILE as usize));
        assert!(matches!(
            plan(&big, &[]).base_images(&request),
            Err(ImageError::Invalid(_))
        ));
        let bad = plan("FROM --platform=windows/amd64 nano:1\n", &[]);
        assert!(matches!(
            bad.base_images(&request),
            Err(ImageError::Invalid(_))
        ));
    }

    #[test]
    fn a_build_without_network_needs_both_capabilities() {
        let status =
            |eff: &str| format!("Name:\tagent\nCapInh:\t0000000000000000\nCapEff:\t{eff}\n");
        let wanted = NETWORK_NAMESPACE_CAPABILITIES;
        assert!(missing_capabilities(&status("000001ffffffffff"), wanted).is_empty());
        // root with CAP_NET_ADMIN dropped (capsh --drop=cap_net_admin)
        assert_eq!(
            missing_capabilities(&status("000001ffffffefff"), wanted),
            ["CAP_NET_ADMIN"]
        );
        assert_eq!(
            missing_capabilities(&status("000001ffffdfffff"), wanted),
            ["CAP_SYS_ADMIN"]
        );
        assert_eq!(
            missing_capabilities(&status("0000000000000000"), wanted),
            ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]
        );
        assert_eq!(missing_capabilities("", wanted).len(), 2);
    }

    /// A cleanup that runs out of time still gets somewhere: each record is deleted as soon as
    /// its removal ran, and no buildah command outlives the cleanup's deadline. (buildah here
    /// is a script whose `manifest inspect` takes two seconds.)
    #[tokio::test]
    async fn a_cleanup_out_of_time_removes_what_it_can_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let names: Vec<String> = ["a1", "a2", "a3", "a4"]
            .iter()
            .map(|s| format!("{PRIVATE_PREFIX}{s}"))
            .collect();
        let images = format!(
            "[{{\"id\":\"{}\",\"names\":{}}}]",
            "0".repeat(64),
            serde_json::to_string(&names).unwrap()
        );
        let script = format!(
            r#"#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    --root|--runroot|--storage-driver|--storage-opt|--registries-conf) shift 2 ;;
    *) break ;;
  esac
done
echo "$*" >> '{}'
case "$1 $2" in
  "images "*) echo '{images}' ;;
  "manifest inspect") sleep 2; echo '{{"manifests":[]}}' ;;
esac
"#,
            log.display()
        );
        let fake = dir.path().join("buildah");
        raibid_testkit::write_script(&fake, &script);
        let mut builder = builder(None);
        builder.buildah = fake;
        builder.options.root = dir.path().join("root");
        let store = SharedStore::open(&builder.options.root).unwrap();
        for name in &names {
            store.record(&Garbage::List(name.clone())).unwrap();
        }
        let files = BuildFiles::write(&[], &[], &[], &BTreeMap::new(), None).unwrap();
        let (output, _log) = mpsc::channel(64);
        let budget = Duration::from_millis(3000);
        let started = Instant::now();
        let run = Run {
            builder: &builder,
            files: &files,
            output: &output,
            cancel: &CancellationToken::new(),
            deadline: Some(started + budget),
        };
        run.collect_garbage(&store).await;
        assert!(
            started.elapsed() < budget + Duration::from_millis(700),
            "the cleanup outlived its deadline: {:?}",
            started.elapsed()
        );
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        let left: Vec<String> = store
            .records()
            .unwrap()
            .into_iter()
            .filter_map(|(_, g)| g.map(|g| g.name().to_owned()))
            .collect();
        let removed: Vec<&String> = names
            .iter()
            .filter(|n| log.lines().any(|l| l == format!("manifest rm {n}")))
            .collect();
        assert!(!removed.is_empty(), "nothing removed: {log}");
        assert!(
            left.len() < names.len() && !left.is_empty(),
            "{left:?}\n{log}"
        );
        for name in &names {
            assert_eq!(
                removed.contains(&name),
                !left.contains(name),
                "{name}: a record is deleted exactly when its removal ran\n{log}"
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
