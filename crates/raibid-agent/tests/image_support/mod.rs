//! What the image-build tests share: a buildah store of their own, build contexts, requests,
//! a small base image to `RUN` in, and the registry login the tests use.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use raibid_agent::image::{
    BuildRequest, BuiltImage, ImageBuildOptions, ImageBuilder, ImageError, RegistryAuth,
    StorageDriver,
};
use raibid_testkit::Registry;
use raibid_testkit::require_binary;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// No single build here should come near this, even with vfs on a slow machine.
pub const BUILD_LIMIT: Duration = Duration::from_secs(180);

#[allow(unused_imports)] // Not every test binary that includes this module logs in.
pub use raibid_testkit::registry::{
    TEST_PASSWORD as PASSWORD, TEST_PASSWORD_BCRYPT as PASSWORD_BCRYPT, TEST_USER as USER,
};

/// A buildah storage of its own, removed afterwards.
pub struct Store {
    dir: tempfile::TempDir,
}

impl Store {
    pub fn new() -> Self {
        require_binary("buildah", "buildah");
        Self {
            dir: tempfile::Builder::new()
                .prefix("raibid-test-buildah-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn builder(&self, registry: &Registry, driver: StorageDriver) -> ImageBuilder {
        self.builder_with(registry, driver, None)
    }

    pub fn builder_with(
        &self,
        registry: &Registry,
        driver: StorageDriver,
        auth: Option<RegistryAuth>,
    ) -> ImageBuilder {
        ImageBuilder::new(self.options(registry, driver, auth)).unwrap()
    }

    /// The options [`Store::builder_with`] builds with.
    pub fn options(
        &self,
        registry: &Registry,
        driver: StorageDriver,
        auth: Option<RegistryAuth>,
    ) -> ImageBuildOptions {
        ImageBuildOptions {
            root: self.dir.path().join("root"),
            runroot: self.dir.path().join("runroot"),
            storage_driver: driver,
            registry_auth: auth,
            pull_auths: Vec::new(),
            insecure_registries: vec![registry.host()],
            network: true,
        }
    }

    /// `buildah images --all` of this store (vfs): each image's ID and names.
    pub fn images(&self) -> Vec<(String, Vec<String>)> {
        let json = self.buildah_json(&["images", "--all", "--no-trunc", "--json"]);
        json.as_array()
            .into_iter()
            .flatten()
            .map(|image| {
                let names = image["names"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect();
                (image["id"].as_str().unwrap().to_owned(), names)
            })
            .collect()
    }

    /// The names of this store's working containers (vfs).
    pub fn containers(&self) -> Vec<String> {
        let json = self.buildah_json(&["containers", "--all", "--json"]);
        json.as_array()
            .into_iter()
            .flatten()
            .map(|c| c["containername"].as_str().unwrap_or("?").to_owned())
            .collect()
    }

    fn buildah_json(&self, args: &[&str]) -> serde_json::Value {
        // An empty store lists `null` or nothing rather than `[]`.
        serde_json::from_str(&self.buildah(args)).unwrap_or_default()
    }

    /// Runs buildah on this store (vfs), as another user of the store would; panics unless
    /// it succeeds. Returns its standard output.
    pub fn buildah(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("buildah")
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("runroot"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "buildah {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A build context with the given Containerfile and files.
pub fn context(containerfile: &str, files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("raibid-test-context-")
        .tempdir()
        .unwrap();
    std::fs::write(dir.path().join("Containerfile"), containerfile).unwrap();
    for (name, contents) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
    dir
}

pub fn request(context: &Path, tags: Vec<String>) -> BuildRequest {
    BuildRequest {
        context_dir: context.to_path_buf(),
        containerfile: PathBuf::from("Containerfile"),
        ignore: Vec::new(),
        tags,
        platforms: Vec::new(),
        build_args: BTreeMap::new(),
        secrets: Default::default(),
        push: true,
        credentials: true,
        cache_repo: None,
        timeout: None,
        private: None,
    }
}

pub async fn build(
    builder: &ImageBuilder,
    request: &BuildRequest,
) -> (Result<BuiltImage, ImageError>, String) {
    build_cancellable(builder, request, CancellationToken::new()).await
}

/// [`build`] that must succeed: panics with the build's output otherwise.
pub async fn build_ok(builder: &ImageBuilder, request: &BuildRequest) -> (BuiltImage, String) {
    let (result, output) = build(builder, request).await;
    let built = result.unwrap_or_else(|e| panic!("{e}\n{output}"));
    (built, output)
}

pub async fn build_cancellable(
    builder: &ImageBuilder,
    request: &BuildRequest,
    cancel: CancellationToken,
) -> (Result<BuiltImage, ImageError>, String) {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
    let collect = async {
        let mut all = Vec::new();
        while let Some(chunk) = rx.recv().await {
            all.extend_from_slice(&chunk);
            // Printed by the cancel test's RUN step (its header line has `$(echo ready)`).
            if String::from_utf8_lossy(&all).contains("raibid-ready") {
                cancel.cancel();
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    };
    let run = builder.build_and_push(request, tx, cancel.clone());
    let (result, output) = tokio::time::timeout(BUILD_LIMIT, async { tokio::join!(run, collect) })
        .await
        .expect("the build took too long");
    (result, output)
}

/// Panics unless `path` is a statically linked ELF (no PT_INTERP program header): a dynamic
/// busybox cannot run in an image that holds nothing else.
pub fn assert_static_elf(path: &Path) {
    let elf = std::fs::read(path).unwrap();
    assert!(
        elf.starts_with(b"\x7fELF") && elf[4] == 2,
        "{} is not a 64-bit ELF",
        path.display()
    );
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    let dynamic = (0..count).any(|i| {
        let at = phoff + i * size;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3
    });
    assert!(
        !dynamic,
        "{} is dynamically linked; this test needs the static one: \
         `sudo apt-get install -y busybox-static`",
        path.display()
    );
}

/// Builds and pushes `<registry>/acme/busybox:1`: scratch plus a static busybox as `/bin/sh`,
/// the smallest base in which `RUN` works.
pub async fn push_busybox_base(registry: &Registry, builder: &ImageBuilder) -> String {
    let busybox = require_binary("busybox", "busybox-static");
    assert_static_elf(&busybox);
    let base = context("FROM scratch\nCOPY bin/ /bin/\n", &[]);
    std::fs::create_dir(base.path().join("bin")).unwrap();
    std::fs::copy(&busybox, base.path().join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", base.path().join("bin/sh")).unwrap();
    let tag = format!("{}/acme/busybox:1", registry.host());
    let (result, output) = build(builder, &request(base.path(), vec![tag.clone()])).await;
    result.unwrap_or_else(|e| panic!("base image: {e}\n{output}"));
    tag
}

/// This machine's platform as buildah names it (`linux/amd64`).
pub fn native_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no test platform name for {other}"),
    };
    format!("linux/{arch}")
}

/// Fails the test unless it runs as root (CI does).
pub fn require_root(why: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{why} needs root (CI runs as root); run this test as root"
    );
}

/// A TCP proxy in front of a registry that holds every connection until [`HeldProxy::release`]:
/// a push through it waits, as one to a slow registry does, with its build still in flight.
pub struct HeldProxy {
    port: u16,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    released: tokio::sync::watch::Sender<bool>,
}

impl HeldProxy {
    pub async fn start(registry: &Registry) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = registry.host();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (released, watch) = tokio::sync::watch::channel(false);
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let (mut watch, upstream) = (watch.clone(), upstream.clone());
                tokio::spawn(async move {
                    if watch.wait_for(|released| *released).await.is_err() {
                        return;
                    }
                    let mut server = tokio::net::TcpStream::connect(upstream).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        Self {
            port,
            connections,
            released,
        }
    }

    /// `127.0.0.1:<port>`, to name images by (and to list as an insecure registry).
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Waits until something connected (and is being held).
    pub async fn wait_for_a_connection(&self) {
        let deadline = std::time::Instant::now() + BUILD_LIMIT;
        while self.connections.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "nothing connected to the proxy"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Lets every connection, held or to come, through.
    pub fn release(&self) {
        self.released.send_replace(true);
    }
}
