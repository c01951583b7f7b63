//! Image builds with the real buildah, pushed to a real registry on loopback.
//!
//! Every test has its own buildah storage and registry; images are tiny (`FROM scratch`, or a
//! base holding only a static busybox) so that even vfs storage keeps them quick.

mod image_support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use image_support::*;
use raibid_agent::image::{
    BuildRequest, BuiltImage, ImageBuildOptions, ImageBuilder, ImageError, RegistryAuth,
    StorageDriver,
};
use raibid_testkit::Registry;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// The manifest the registry serves for `repository:tag`, checked against `digest_ref`
/// (`repository@sha256:...`, as build_and_push reports it). Returns the manifest.
fn assert_pushed(
    registry: &Registry,
    repository: &str,
    tag: &str,
    digest_ref: &str,
) -> serde_json::Value {
    assert!(
        registry.tags(repository).contains(&tag.to_owned()),
        "{tag} not in {repository}"
    );
    let (name, digest) = digest_ref.split_once('@').unwrap();
    assert_eq!(name, format!("{}/{repository}", registry.host()));
    let response = registry
        .get(
            &format!("/v2/{repository}/manifests/{tag}"),
            Some(MANIFEST_TYPES),
        )
        .unwrap();
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.headers["docker-content-digest"], digest);
    assert_eq!(
        format!("sha256:{}", hex::encode(Sha256::digest(&response.body))),
        digest
    );
    let mut manifest: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    manifest["contentType"] = response.headers["content-type"].clone().into();
    manifest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_a_scratch_image_and_reports_its_digests() {
    let registry = Registry::start();
    let store = Store::new();
    let builder = store.builder(&registry, StorageDriver::Vfs);
    let context = context(
        "FROM scratch\nCOPY hello.txt /hello.txt\n",
        &[("hello.txt", b"hello\n")],
    );
    let tags = ["abc123", "latest"].map(|t| format!("{}/acme/hello:{t}", registry.host()));
    let started = Instant::now();
    let (built, output) = build_ok(&builder, &request(context.path(), tags.to_vec())).await;
    eprintln!(
        "scratch build and push of two tags (vfs): {:?}",
        started.elapsed()
    );
    assert!(!built.manifest_list);
    assert_eq!(built.digests.len(), 2);
    assert!(output.contains("$ buildah "), "{output}");
    for (tag, digest) in ["abc123", "latest"].iter().zip(&built.digests) {
        let manifest = assert_pushed(&registry, "acme/hello", tag, digest);
        assert_eq!(
            manifest["layers"].as_array().unwrap().len(),
            1,
            "{manifest}"
        );
    }
    // Both tags name the same image.
    assert_eq!(built.digests[0], built.digests[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_given_ignore_patterns_apply() {
    let registry = Registry::start();
    let store = Store::new();
    let builder = store.builder(&registry, StorageDriver::Vfs);
    // The context's own ignore file would exclude what the build copies; buildah must not read
    // it (the agent hands it a checked copy instead).
    let context = context(
        "FROM scratch\nCOPY a.txt /a.txt\n",
        &[("a.txt", b"a\n"), (".dockerignore", b"a.txt\n")],
    );
    let mut request = request(
        context.path(),
        vec![format!("{}/acme/ignore:1", registry.host())],
    );
    request.push = false;
    let (result, output) = build(&builder, &request).await;
    result.unwrap_or_else(|e| panic!("the context's .dockerignore was read: {e}\n{output}"));
    // The given patterns do apply.
    request.ignore = b"a.txt\n".to_vec();
    let (result, output) = build(&builder, &request).await;
    assert!(
        matches!(result, Err(ImageError::Failed { .. })),
        "a.txt was not excluded: {result:?}\n{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_without_push_pushes_nothing() {
    let registry = Registry::start();
    let store = Store::new();
    let builder = store.builder(&registry, StorageDriver::Vfs);
    let context = context("FROM scratch\nCOPY a.txt /a.txt\n", &[("a.txt", b"a\n")]);
    let mut request = request(
        context.path(),
        vec![format!("{}/acme/local:1", registry.host())],
    );
    request.push = false;
    let (built, _) = build_ok(&builder, &request).await;
    assert!(built.digests.is_empty());
    assert!(registry.tags("acme/local").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_build_steps_on_a_base_pulled_from_the_registry() {
    let registry = Registry::start();
    let base_store = Store::new();
    let base = push_busybox_base(
        &registry,
        &base_store.builder(&registry, StorageDriver::Vfs),
    )
    .await;
    // A fresh store: the base must come from the (plain HTTP) registry.
    let store = Store::new();
    let driver = StorageDriver::detect();
    let builder = store.builder(&registry, driver.clone());
    let context = context(
        &format!(
            "FROM {base}\nARG GREETING\nRUN echo built > /built.txt\n\
             RUN echo \"greeting: $GREETING\" && test \"$(cat /built.txt)\" = built\n"
        ),
        &[],
    );
    let tag = format!("{}/acme/app:run", registry.host());
    let mut request = request(context.path(), vec![tag]);
    request
        .build_args
        .insert("GREETING".into(), "hello from a build arg".into());
    let started = Instant::now();
    let (built, output) = build_ok(&builder, &request).await;
    eprintln!("RUN build and push ({driver:?}): {:?}", started.elapsed());
    assert!(
        output.contains("greeting: hello from a build arg"),
        "{output}"
    );
    let manifest = assert_pushed(&registry, "acme/app", "run", &built.digests[0]);
    // The base's layer plus this build's (without --layers, buildah commits one for all steps).
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        2,
        "{manifest}"
    );
}

/// A build secret reaches the `RUN` step that mounts it, and no layer, config or history of
/// the pushed image holds it (unlike a build argument).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_secrets_reach_run_steps_and_no_layer() {
    const VALUE: &str = "npm-value-8Kx2Qz";
    let registry = Registry::start();
    let base_store = Store::new();
    let base = push_busybox_base(
        &registry,
        &base_store.builder(&registry, StorageDriver::Vfs),
    )
    .await;
    let store = Store::new();
    let builder = store.builder(&registry, StorageDriver::detect());
    let context = context(
        &format!(
            "FROM {base}\n\
             RUN --mount=type=secret,id=NPM_TOKEN echo \"secret of $(wc -c < /run/secrets/NPM_TOKEN) \
             bytes\" && cp /run/secrets/NPM_TOKEN /copied\n\
             RUN test ! -e /run/secrets/NPM_TOKEN && echo gone after its step\n"
        ),
        &[],
    );
    let tag = format!("{}/acme/app:secret", registry.host());
    let mut request = request(context.path(), vec![tag]);
    request.secrets.0.insert("NPM_TOKEN".into(), VALUE.into());
    let (built, output) = build_ok(&builder, &request).await;
    assert!(output.contains("secret of 16 bytes"), "{output}");
    assert!(output.contains("gone after its step"), "{output}");
    let manifest = assert_pushed(&registry, "acme/app", "secret", &built.digests[0]);
    // Every blob of the image: its config (with the history of its steps) and its layers,
    // unpacked. The step above copied the secret into a file of the image on purpose: the
    // copy is there (the build could read it, and it has the right value), which shows the
    // search finds a value where there is one. (The Containerfile itself must not hold the
    // value: its steps are in the image's history.)
    let mut blobs = vec![manifest["config"]["digest"].as_str().unwrap().to_owned()];
    for layer in manifest["layers"].as_array().unwrap() {
        blobs.push(layer["digest"].as_str().unwrap().to_owned());
    }
    let mut found = Vec::new();
    for digest in &blobs {
        let blob = registry
            .get(&format!("/v2/acme/app/blobs/{digest}"), None)
            .unwrap();
        assert_eq!(blob.status, 200, "{digest}");
        let mut bytes = Vec::new();
        let mut gz = flate2::read::GzDecoder::new(blob.body.as_slice());
        if std::io::Read::read_to_end(&mut gz, &mut bytes).is_err() {
            bytes = blob.body.clone();
        }
        if bytes.windows(VALUE.len()).any(|w| w == VALUE.as_bytes()) {
            found.push(digest.clone());
        }
    }
    assert_eq!(
        found.len(),
        1,
        "only the layer with the deliberate copy: {found:?}"
    );
    assert_ne!(
        found[0], blobs[0],
        "the config and its history do not hold it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platforms_make_a_manifest_list() {
    let registry = Registry::start();
    let store = Store::new();
    let builder = store.builder(&registry, StorageDriver::Vfs);
    let context = context(
        "FROM scratch\nCOPY hello.txt /hello.txt\n",
        &[("hello.txt", b"hi\n")],
    );
    let mut request = request(
        context.path(),
        vec![format!("{}/acme/multi:1", registry.host())],
    );
    request.platforms = vec![native_platform()];
    let (built, output) = build_ok(&builder, &request).await;
    assert!(built.manifest_list);
    let index = assert_pushed(&registry, "acme/multi", "1", &built.digests[0]);
    assert!(
        index["contentType"] == "application/vnd.oci.image.index.v1+json"
            || index["contentType"] == "application/vnd.docker.distribution.manifest.list.v2+json",
        "{index}"
    );
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{index}");
    let platform = &entries[0]["platform"];
    assert_eq!(
        format!(
            "{}/{}",
            platform["os"].as_str().unwrap(),
            platform["architecture"].as_str().unwrap()
        ),
        native_platform()
    );
    // The image the list points at was pushed too.
    let child = entries[0]["digest"].as_str().unwrap();
    let response = registry.get(
        &format!("/v2/acme/multi/manifests/{child}"),
        Some(MANIFEST_TYPES),
    );
    assert_eq!(response.unwrap().status, 200);
    // Neither the list nor the image in it stays in the store.
    assert_eq!(store.images(), vec![], "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_platform_needs_emulation() {
    let native = native_platform();
    let (platform, qemu) = [
        ("linux/arm64", "aarch64"),
        ("linux/s390x", "s390x"),
        ("linux/ppc64le", "ppc64le"),
        ("linux/riscv64", "riscv64"),
    ]
    .into_iter()
    .find(|(p, _)| *p != native)
    .unwrap();
    let registry = Registry::start();
    let store = Store::new();
    let builder = store.builder(&registry, StorageDriver::Vfs);
    let context = context("FROM scratch\nCOPY a.txt /a.txt\n", &[("a.txt", b"a\n")]);
    let mut request = request(
        context.path(),
        vec![format!("{}/acme/foreign:1", registry.host())],
    );
    request.platforms = vec![native.clone(), platform.to_owned()];
    let (result, output) = build(&builder, &request).await;
    if Path::new(&format!("/proc/sys/fs/binfmt_misc/qemu-{qemu}")).exists() {
        // This machine has emulation: the same request must then build.
        let built = result.unwrap_or_else(|e| panic!("{e}\n{output}"));
        assert!(built.manifest_list);
        return;
    }
    let err = result.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, ImageError::Emulation { .. }), "{err:?}");
    assert!(message.contains(platform), "{message}");
    assert!(message.contains("qemu-user-static"), "{message}");
    // Refused before anything ran.
    assert!(output.is_empty(), "{output}");
}

/// A base image on another registry that needs a login (`agent.pull_logins`): a trusted build
/// pulls it with that login, which never shows; an untrusted one gets no login; and nothing
/// may be pushed to that registry with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_login_pulls_a_private_base_image_and_never_pushes() {
    let private = Registry::start_with_auth(USER, PASSWORD, PASSWORD_BCRYPT);
    let login = RegistryAuth {
        host: private.host(),
        username: USER.into(),
        password: PASSWORD.into(),
    };
    let base_store = Store::new();
    let base = push_busybox_base(
        &private,
        &base_store.builder_with(&private, StorageDriver::Vfs, Some(login.clone())),
    )
    .await;
    // The images go to a registry of their own, whose login (none here) is agent.registry's.
    let target = Registry::start();
    // Each build a store of its own, which has to pull the base.
    let stores: Vec<Store> = (0..3).map(|_| Store::new()).collect();
    let built_with = std::sync::atomic::AtomicUsize::new(0);
    let builder = |pull_auths: Vec<RegistryAuth>| {
        let store = &stores[built_with.fetch_add(1, Ordering::Relaxed) % stores.len()];
        let mut options = store.options(&target, StorageDriver::Vfs, None);
        options.insecure_registries.push(private.host());
        options.pull_auths = pull_auths;
        ImageBuilder::new(options).unwrap()
    };
    let context = context(&format!("FROM {base}\nRUN echo on-the-base\n"), &[]);
    let tag = format!("{}/acme/app:1", target.host());

    let (built, output) = build_ok(
        &builder(vec![login.clone()]),
        &request(context.path(), vec![tag.clone()]),
    )
    .await;
    assert_pushed(&target, "acme/app", "1", &built.digests[0]);
    assert!(!output.contains(PASSWORD), "{output}");

    // Without the login, or untrusted (a fork's build), the base cannot be pulled.
    let (result, output) = build(
        &builder(Vec::new()),
        &request(context.path(), vec![tag.clone()]),
    )
    .await;
    assert!(
        matches!(result, Err(ImageError::Failed { .. })),
        "{result:?}"
    );
    assert!(
        output.contains("unauthorized") || output.contains("authentication required"),
        "{output}"
    );
    let mut untrusted = request(context.path(), vec![tag]);
    untrusted.credentials = false;
    let (result, _) = build(&builder(vec![login.clone()]), &untrusted).await;
    assert!(
        matches!(result, Err(ImageError::Failed { .. })),
        "{result:?}"
    );

    // A tag or cache on the pull login's registry is refused before anything runs.
    let pushes = request(
        context.path(),
        vec![format!("{}/acme/app:2", private.host())],
    );
    let mut cache = request(
        context.path(),
        vec![format!("{}/acme/app:3", target.host())],
    );
    cache.cache_repo = Some(format!("{}/acme/app/cache", private.host()));
    for refused in [pushes, cache] {
        let (result, output) = build(&builder(vec![login.clone()]), &refused).await;
        let err = result.unwrap_err().to_string();
        assert!(
            err.contains("agent.pull_logins") && err.contains(&private.host()),
            "{err}"
        );
        assert!(output.is_empty(), "{output}");
    }
    assert_eq!(private.tags("acme/app"), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_work_but_never_show() {
    let registry = Registry::start_with_auth(USER, PASSWORD, PASSWORD_BCRYPT);
    let store = Store::new();
    let auth = |password: &str| RegistryAuth {
        host: registry.host(),
        username: USER.into(),
        password: password.into(),
    };
    let context = context("FROM scratch\nCOPY a.txt /a.txt\n", &[("a.txt", b"a\n")]);
    let tag = format!("{}/acme/private:1", registry.host());

    // Watch every process's argv while builds run.
    let seen_in_argv = Arc::new(AtomicBool::new(false));
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (seen, watching) = (seen_in_argv.clone(), watching.clone());
        std::thread::spawn(move || {
            while watching.load(Ordering::Relaxed) {
                for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                    if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
                        && String::from_utf8_lossy(&cmdline).contains("secret-7f3a")
                    {
                        seen.store(true, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    let builder = store.builder_with(&registry, StorageDriver::Vfs, Some(auth(PASSWORD)));
    let (built, output) = build_ok(&builder, &request(context.path(), vec![tag.clone()])).await;
    assert_pushed(&registry, "acme/private", "1", &built.digests[0]);
    assert!(!output.contains(PASSWORD), "{output}");

    let wrong = "raibid-wrong-secret-7f3a";
    let builder = store.builder_with(&registry, StorageDriver::Vfs, Some(auth(wrong)));
    let mut request = request(
        context.path(),
        vec![format!("{}/acme/private:2", registry.host())],
    );
    request.tags.push(tag);
    let (result, output) = build(&builder, &request).await;
    let err = result.unwrap_err();
    assert!(matches!(err, ImageError::Failed { .. }), "{err:?}");
    assert!(!err.to_string().contains(wrong) && !format!("{err:?}").contains(wrong));
    assert!(!output.contains(wrong), "{output}");
    assert!(
        output.contains("unauthorized") || output.contains("authentication required"),
        "{output}"
    );

    watching.store(false, Ordering::Relaxed);
    watcher.join().unwrap();
    assert!(
        !seen_in_argv.load(Ordering::Relaxed),
        "a password appeared in some process's argv"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_cache_is_shared_through_the_registry() {
    let registry = Registry::start();
    let first = Store::new();
    let first_builder = first.builder(&registry, StorageDriver::Vfs);
    let base = push_busybox_base(&registry, &first_builder).await;
    let context = context(
        &format!("FROM {base}\nRUN echo expensive > /result.txt\n"),
        &[],
    );
    let mut request = request(
        context.path(),
        vec![format!("{}/acme/cached:1", registry.host())],
    );
    request.cache_repo = Some(format!("{}/acme/cache", registry.host()));
    let (result, output) = build(&first_builder, &request).await;
    result.unwrap_or_else(|e| panic!("{e}\n{output}"));
    assert!(!output.contains("Using cache"), "{output}");
    assert!(
        !registry.tags("acme/cache").is_empty(),
        "no cache was pushed"
    );

    // Another agent, with nothing local, reuses the RUN step's layer from the registry.
    let second = Store::new();
    let (result, output) = build(&second.builder(&registry, StorageDriver::Vfs), &request).await;
    result.unwrap_or_else(|e| panic!("{e}\n{output}"));
    assert!(output.contains("Using cache"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_build() {
    let registry = Registry::start();
    let store = Store::new();
    let builder = store.builder(&registry, StorageDriver::Vfs);
    let base = push_busybox_base(&registry, &builder).await;
    let marker = format!("1000.{}", std::process::id());
    let context = context(
        &format!("FROM {base}\nRUN echo raibid-$(echo ready) && sleep {marker}\n"),
        &[],
    );
    let request = request(
        context.path(),
        vec![format!("{}/acme/cancelled:1", registry.host())],
    );
    let started = Instant::now();
    let (result, output) = build_cancellable(&builder, &request, CancellationToken::new()).await;
    let elapsed = started.elapsed();
    assert!(
        matches!(result, Err(ImageError::Cancelled)),
        "{result:?}\n{output}"
    );
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<_> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
            })
            .map(|e| e.file_name())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "build processes survived: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(registry.tags("acme/cancelled").is_empty());
}

/// The store is shared by concurrent jobs (an agent's, a node's pods): a name a build gave its
/// image there could be taken by another build between this one's `bud` and its push (a fork's
/// image pushed with the trusted job's login), or be a base image (`debian:bookworm`) that later
/// builds would then use. So no build leaves its tags in the store, pushed or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_leaves_no_image_under_its_tags() {
    let registry = Registry::start();
    let store = Store::new();
    let builder = store.builder(&registry, StorageDriver::Vfs);
    let context = context(
        "FROM scratch\nCOPY a.txt /a.txt\n",
        &[("a.txt", b"planted\n")],
    );
    // An untrusted build (push off) naming a base image and another job's destination.
    let planted = [
        "docker.io/library/debian:bookworm".to_owned(),
        format!("{}/acme/app:latest", registry.host()),
    ];
    let mut untrusted = request(context.path(), planted.to_vec());
    untrusted.push = false;
    untrusted.credentials = false;
    let (result, output) = build(&builder, &untrusted).await;
    result.unwrap_or_else(|e| panic!("{e}\n{output}"));
    let images = store.images();
    for tag in &planted {
        assert!(
            !images.iter().any(|(_, names)| names.contains(tag)),
            "{tag} is in the store: {images:?}"
        );
    }
    // A pushed build is pushed by image ID, never by a name in the store.
    let tag = format!("{}/acme/app:1", registry.host());
    let (built, _) = build_ok(&builder, &request(context.path(), vec![tag.clone()])).await;
    assert_pushed(&registry, "acme/app", "1", &built.digests[0]);
    let images = store.images();
    assert!(
        !images.iter().any(|(_, names)| names.contains(&tag)),
        "{tag} is in the store: {images:?}"
    );
}

/// Every build's image used to stay tagged in the store, so `buildah rmi --prune` freed nothing
/// and the store grew with every build. Now only base images stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_leave_no_images_behind() {
    let registry = Registry::start();
    let base = push_busybox_base(
        &registry,
        &Store::new().builder(&registry, StorageDriver::Vfs),
    )
    .await;
    let store = Store::new();
    let builder = store.builder(&registry, StorageDriver::Vfs);
    for name in ["a", "b"] {
        let context = context(&format!("FROM {base}\nRUN echo {name} > /{name}\n"), &[]);
        let tag = format!("{}/acme/app:{name}", registry.host());
        let (built, _) = build_ok(&builder, &request(context.path(), vec![tag])).await;
        assert_pushed(&registry, "acme/app", name, &built.digests[0]);
    }
    // A failed build leaves neither an image nor its working container, also with the layer
    // cache (`--layers`, after which buildah would keep the container).
    let context = context(&format!("FROM {base}\nRUN echo c > /c && false\n"), &[]);
    let tag = format!("{}/acme/app:c", registry.host());
    let mut failing = request(context.path(), vec![tag]);
    failing.cache_repo = Some(format!("{}/acme/cache", registry.host()));
    let (result, output) = build(&builder, &failing).await;
    assert!(
        matches!(result, Err(ImageError::Failed { .. })),
        "{result:?}\n{output}"
    );
    let images = store.images();
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0].1, vec![base], "{images:?}");
    assert_eq!(store.containers(), Vec::<String>::new());
}

/// With the agent's network off, `RUN` steps get a network namespace holding only a loopback
/// interface; the base image is pulled before, and the push after, with the network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_network_run_steps_see_only_loopback() {
    require_root("a network namespace of its own for the build");
    let registry = Registry::start();
    let base = push_busybox_base(
        &registry,
        &Store::new().builder(&registry, StorageDriver::Vfs),
    )
    .await;
    let store = Store::new();
    let builder = ImageBuilder::new(ImageBuildOptions {
        network: false,
        ..store.options(&registry, StorageDriver::Vfs, None)
    })
    .unwrap();
    let context = context(
        &format!("ARG BASE={base}\nFROM $BASE\nRUN cat /proc/net/dev\n"),
        &[],
    );
    let mut request = request(
        context.path(),
        vec![format!("{}/acme/offline:1", registry.host())],
    );
    request.cache_repo = Some(format!("{}/acme/cache", registry.host()));
    let (built, output) = build_ok(&builder, &request).await;
    assert_pushed(&registry, "acme/offline", "1", &built.digests[0]);
    // `/proc/net/dev`: two header lines, then `<interface>: <counters>`.
    let interfaces: Vec<&str> = output
        .lines()
        .filter_map(|line| line.trim_start().split_once(':'))
        // Interface names only: buildah's warnings (`time="2026-...T06:34:40Z" level=...`)
        // have a colon and digits after it too.
        .filter(|(name, rest)| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
                && rest.trim_start().starts_with(|c: char| c.is_ascii_digit())
        })
        .map(|(name, _)| name)
        .collect();
    assert_eq!(interfaces, ["lo"], "{output}");
    assert!(output.contains("layer cache is not used"), "{output}");
    assert!(registry.tags("acme/cache").is_empty());

    // Several platforms cannot be pulled for before the build: refused before anything runs.
    request.platforms = vec![native_platform(), native_platform()];
    let (result, output) = build(&builder, &request).await;
    assert!(
        matches!(result, Err(ImageError::Invalid(_))),
        "{result:?}\n{output}"
    );
}

/// With `cache:` (`--layers`), buildah gives a build whose every instruction is a cache hit the
/// image an earlier build made, so two builds of one Containerfile share the images of their
/// manifest lists. A build that removed "its" images as it ended deleted them under the other
/// build, whose `manifest push --all` then failed ("image not known"). Now nothing is removed
/// while another build is in flight; the last build to end removes what both left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_never_removes_images_another_build_still_pushes() {
    let registry = Registry::start();
    let proxy = HeldProxy::start(&registry).await;
    let store = Store::new();
    let mut options = store.options(&registry, StorageDriver::Vfs, None);
    options.insecure_registries.push(proxy.host());
    // One agent running two jobs at once; a node's pods share the store the same way.
    let builder = ImageBuilder::new(options).unwrap();
    let context = context(
        "FROM scratch\nCOPY a.txt /a.txt\n",
        &[("a.txt", b"the same for both\n")],
    );
    let with = |tag: String| {
        let mut request = request(context.path(), vec![tag]);
        request.platforms = vec![native_platform()];
        request.cache_repo = Some(format!("{}/acme/cache", registry.host()));
        request
    };
    // Its push goes through the proxy, which holds it until the other build is over.
    let held = with(format!("{}/acme/held:1", proxy.host()));
    let other = with(format!("{}/acme/other:1", registry.host()));
    let other_build = async {
        proxy.wait_for_a_connection().await;
        let done = build(&builder, &other).await;
        proxy.release();
        done
    };
    let ((held_result, held_output), (result, output)) =
        tokio::join!(build(&builder, &held), other_build);
    let built = result.unwrap_or_else(|e| panic!("{e}\n{output}"));
    assert_pushed(&registry, "acme/other", "1", &built.digests[0]);
    assert!(output.contains("Using cache"), "{output}");
    held_result.unwrap_or_else(|e| {
        panic!("the other build removed this one's images before its push: {e}\n{held_output}")
    });
    assert_eq!(registry.tags("acme/held"), ["1"]);
    // The build that ended last removed both lists and their image.
    assert_eq!(store.images(), vec![], "{held_output}");
}

/// A build on its own task, its output readable as it comes.
fn spawn_build(
    builder: &Arc<ImageBuilder>,
    request: BuildRequest,
) -> (
    tokio::task::JoinHandle<Result<BuiltImage, ImageError>>,
    Arc<std::sync::Mutex<String>>,
) {
    let text = Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let (builder, seen) = (builder.clone(), text.clone());
    let handle = tokio::spawn(async move {
        let collect = async {
            while let Some(chunk) = rx.recv().await {
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk));
            }
        };
        let run = builder.build_and_push(&request, tx, CancellationToken::new());
        tokio::time::timeout(BUILD_LIMIT * 2, async { tokio::join!(run, collect).0 })
            .await
            .expect("the build took too long")
    });
    (handle, text)
}

/// A build stuck in its push no longer keeps every other build's images in the store: past
/// the cleanup threshold, a build ending waits for the builds in flight (new ones wait behind
/// it) and cleans up. Meanwhile the stuck build keeps its images, and in the end nothing is
/// left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_stays_bounded_while_a_build_is_held_in_its_push() {
    const THRESHOLD: usize = 2;
    const OTHERS: usize = 4;
    let registry = Registry::start();
    let proxy = HeldProxy::start(&registry).await;
    let store = Store::new();
    let mut options = store.options(&registry, StorageDriver::Vfs, None);
    options.insecure_registries.push(proxy.host());
    let garbage = options.root.join("raibid-builds").join("garbage");
    let builder = Arc::new(
        ImageBuilder::new(options)
            .unwrap()
            .with_cleanup_threshold(THRESHOLD),
    );
    let context = context(
        "FROM scratch\nCOPY a.txt /a.txt\n",
        &[("a.txt", b"bounded\n")],
    );
    let records = || std::fs::read_dir(&garbage).map_or(0, Iterator::count);
    let private = || {
        store
            .images()
            .into_iter()
            .flat_map(|(_, names)| names)
            .filter(|n| n.starts_with("localhost/raibid-build-"))
            .count()
    };
    let held = request(
        context.path(),
        vec![format!("{}/acme/held:1", proxy.host())],
    );
    let (held, held_output) = spawn_build(&builder, held);
    proxy.wait_for_a_connection().await;
    let mut others = Vec::new();
    for n in 0..OTHERS {
        let other = request(
            context.path(),
            vec![format!("{}/acme/other:{n}", registry.host())],
        );
        let (handle, output) = spawn_build(&builder, other);
        // Until it is over, or waits (for the builds in flight, or for that cleanup).
        let deadline = Instant::now() + BUILD_LIMIT;
        while !handle.is_finished() && !output.lock().unwrap().contains("waiting for") {
            assert!(Instant::now() < deadline, "{}", output.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        others.push((handle, output));
        assert!(
            records() <= THRESHOLD && private() <= THRESHOLD,
            "after {} builds: {} records, {:?}",
            n + 1,
            records(),
            store.images()
        );
    }
    proxy.release();
    let held_result = held.await.unwrap();
    let held_output = held_output.lock().unwrap().clone();
    held_result.unwrap_or_else(|e| {
        panic!("a cleanup removed this build's images before its push: {e}\n{held_output}")
    });
    assert_eq!(registry.tags("acme/held"), ["1"]);
    for (n, (handle, output)) in others.into_iter().enumerate() {
        let result = handle.await.unwrap();
        let built = result.unwrap_or_else(|e| panic!("{e}\n{}", output.lock().unwrap()));
        assert_pushed(&registry, "acme/other", &n.to_string(), &built.digests[0]);
    }
    assert_eq!(records(), 0);
    assert_eq!(private(), 0, "{:?}", store.images());
}

/// When no other build is in flight, a build ends with nothing of its own left in the store:
/// neither its private name nor, with the layer cache, the images without a name it made.
/// (Each has a cache of its own here: what a build pulls from the cache stays in the store
/// under the cache repository's name, as base images do.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_alone_leaves_nothing_of_its_own() {
    let registry = Registry::start();
    let store = Store::new();
    let builder = store.builder(&registry, StorageDriver::Vfs);
    let context = context(
        "FROM scratch\nCOPY a.txt /a.txt\n",
        &[("a.txt", b"alone\n")],
    );
    for (tag, platforms) in [("single", vec![]), ("list", vec![native_platform()])] {
        let mut request = request(
            context.path(),
            vec![format!("{}/acme/alone:{tag}", registry.host())],
        );
        request.platforms = platforms;
        request.cache_repo = Some(format!("{}/acme/cache-{tag}", registry.host()));
        let (result, output) = build(&builder, &request).await;
        result.unwrap_or_else(|e| panic!("{e}\n{output}"));
        assert_eq!(store.images(), vec![], "{tag}: {output}");
    }
}

/// Run by `without_the_network_a_build_needs_cap_net_admin` (below), as root without
/// CAP_NET_ADMIN: set in the environment of that run.
const WITHOUT_CAP_NET_ADMIN: &str = "RAIBID_TEST_WITHOUT_CAP_NET_ADMIN";

/// A build without the network brings up the loopback interface of its network namespace,
/// which takes CAP_NET_ADMIN besides the CAP_SYS_ADMIN the namespace takes. Root without it (a
/// container's default capabilities lack it) is told so before anything runs, rather than
/// each build failing as buildah starts with a bare "Operation not permitted".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_network_a_build_needs_cap_net_admin() {
    const NAME: &str = "without_the_network_a_build_needs_cap_net_admin";
    if std::env::var_os(WITHOUT_CAP_NET_ADMIN).is_none() {
        require_root("dropping a capability for a build without the network");
        let capsh = raibid_testkit::require_binary("capsh", "libcap2-bin");
        // This test again, as root without CAP_NET_ADMIN (dropped from the bounding set, so
        // from root's effective set after the exec).
        let mut command = std::process::Command::new(capsh);
        command
            .args(["--drop=cap_net_admin", "--", "-c", r#"exec "$0" "$@""#])
            .arg(std::env::current_exe().unwrap())
            .env(WITHOUT_CAP_NET_ADMIN, "1");
        run_again(command, NAME);
        return;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
        .unwrap();
    assert!(
        effective & (1 << 21) != 0 && effective & (1 << 12) == 0,
        "CAP_SYS_ADMIN without CAP_NET_ADMIN expected: {status}"
    );
    let registry = Registry::start();
    let store = Store::new();
    let builder = ImageBuilder::new(ImageBuildOptions {
        network: false,
        ..store.options(&registry, StorageDriver::Vfs, None)
    })
    .unwrap();
    let context = context("FROM scratch\nCOPY a.txt /a.txt\n", &[("a.txt", b"a\n")]);
    let request = request(
        context.path(),
        vec![format!("{}/acme/offline:1", registry.host())],
    );
    let (result, output) = build(&builder, &request).await;
    match result {
        Err(ImageError::Unavailable(message)) => {
            assert!(
                message.contains("lacks CAP_NET_ADMIN") && !message.contains("lacks CAP_SYS_ADMIN"),
                "{message}"
            );
        }
        other => panic!("{other:?}\n{output}"),
    }
    // Refused before anything ran.
    assert!(output.is_empty(), "{output}");
}

/// Without the network, the base images are pulled before the build, each for the platform
/// its stage runs on: its `FROM --platform=` flag's (`$BUILDPLATFORM` in a cross build's
/// compile stage, a literal platform, a global `ARG`), else the build's. All were pulled for
/// the target platform, so a stage for another platform found no image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_network_each_base_is_pulled_for_its_stages_platform() {
    require_root("a network namespace of its own for the build");
    let registry = Registry::start();
    let maker = Store::new();
    let base = push_busybox_base(&registry, &maker.builder(&registry, StorageDriver::Vfs)).await;
    // An image only for a platform this machine cannot run (files only: making it runs
    // nothing of that platform, and neither does copying from it).
    let foreign = if native_platform() == "linux/s390x" {
        "linux/arm64"
    } else {
        "linux/s390x"
    };
    let files = context(
        "FROM scratch\nCOPY tool.txt /tool.txt\n",
        &[("tool.txt", b"tool\n")],
    );
    let tool = format!("{}/acme/tool:1", registry.host());
    maker.buildah(&[
        "bud",
        "--isolation",
        "chroot",
        "--platform",
        foreign,
        "--manifest",
        "localhost/tool-list",
        files.path().to_str().unwrap(),
    ]);
    maker.buildah(&[
        "manifest",
        "push",
        "--all",
        "--tls-verify=false",
        "localhost/tool-list",
        &format!("docker://{tool}"),
    ]);

    let store = Store::new();
    let builder = ImageBuilder::new(ImageBuildOptions {
        network: false,
        ..store.options(&registry, StorageDriver::Vfs, None)
    })
    .unwrap();
    let context = context(
        &format!(
            "ARG TOOLS={foreign}\n\
             FROM --platform=$TOOLS {tool} AS tools\n\
             FROM --platform=$BUILDPLATFORM {base} AS build\n\
             RUN echo built > /built\n\
             FROM scratch\n\
             COPY --from=tools /tool.txt /tool.txt\n\
             COPY --from=build /built /built\n"
        ),
        &[],
    );
    let request = request(
        context.path(),
        vec![format!("{}/acme/offline-stages:1", registry.host())],
    );
    let (built, output) = build_ok(&builder, &request).await;
    // The foreign base was pulled for its platform (the output shows the pull's arguments).
    assert!(
        output.contains(&format!("--platform {foreign} -- {tool}")),
        "{output}"
    );
    assert_pushed(&registry, "acme/offline-stages", "1", &built.digests[0]);
}

/// Set, in the environment of the run that
/// `without_the_network_a_build_uses_exactly_the_images_it_pulled` makes of itself, to the
/// directory first on its `PATH`. It holds a `buildah` that runs the real one
/// (`real-buildah` there) and then, if it succeeded, the shell code in `repoint` there, if
/// any, with the same arguments.
const REPOINTING_BUILDAH: &str = "RAIBID_TEST_REPOINTING_BUILDAH";

/// Without the network, a build pulls its base images and then builds with `--pull=never`.
/// A name points to one image per store, and another build on the store may pull the same
/// name for another platform in between (or a newer image): the build used whatever the name
/// pointed to by then. Now it names each base by the ID its pull gave, and so each image of a
/// `COPY --from=` or a bind mount. Here `buildah` pulls the image for another platform just
/// before the `bud`: the build still uses the image it pulled for this machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_network_a_build_uses_exactly_the_images_it_pulled() {
    require_root("a network namespace of its own for the build");
    let Some(wrapper) = std::env::var_os(REPOINTING_BUILDAH) else {
        let real = raibid_testkit::require_binary("buildah", "buildah");
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("real-buildah")).unwrap();
        let script = format!(
            "#!/bin/sh\n\
             '{dir}/real-buildah' \"$@\" || exit\n\
             if [ -f '{dir}/repoint' ]; then . '{dir}/repoint'; fi\n",
            dir = dir.path().display()
        );
        let buildah = dir.path().join("buildah");
        raibid_testkit::write_script(&buildah, &script);
        let path = std::env::join_paths(
            std::iter::once(dir.path().to_path_buf())
                .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
        )
        .unwrap();
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command
            .env("PATH", path)
            .env(REPOINTING_BUILDAH, dir.path());
        run_again(
            command,
            "without_the_network_a_build_uses_exactly_the_images_it_pulled",
        );
        return;
    };
    let wrapper = std::path::PathBuf::from(wrapper);
    let registry = Registry::start();
    let (base, which, foreign) = push_which(&registry).await;
    let store = Store::new();
    let options = ImageBuildOptions {
        network: false,
        ..store.options(&registry, StorageDriver::Vfs, None)
    };
    // Between this build's pulls (which, then the base) and its bud (in a network namespace
    // of its own, where the registry cannot be reached), the name is pulled for the other
    // platform.
    let repointed = wrapper.join("repointed");
    std::fs::write(
        wrapper.join("repoint"),
        format!(
            "case \" $* \" in\n\
             *\" pull \"*\" -- {base} \"*)\n\
             '{real}' --root '{root}' --runroot '{runroot}' --storage-driver vfs \
             pull --tls-verify=false --policy always --platform {foreign} {which} \
             > '{log}' 2>&1 || exit 97 ;;\n\
             esac\n",
            real = wrapper.join("real-buildah").display(),
            root = options.root.display(),
            runroot = options.runroot.display(),
            log = repointed.display(),
        ),
    )
    .unwrap();
    let builder = ImageBuilder::new(options).unwrap();
    let context = context(
        &format!(
            "FROM {which} AS which\n\
             FROM {base}\n\
             COPY --from=which /which.txt /which.txt\n\
             RUN cat /which.txt\n\
             COPY --from={which} /which.txt /copied.txt\n\
             RUN --mount=type=bind,from={which},target=/mnt cat /copied.txt /mnt/which.txt\n"
        ),
        &[],
    );
    let request = request(
        context.path(),
        vec![format!("{}/acme/pinned:1", registry.host())],
    );
    let (built, output) = build_ok(&builder, &request).await;
    assert!(
        repointed.exists(),
        "the name was not pulled again\n{output}"
    );
    let arch = store.buildah(&[
        "inspect",
        "--type",
        "image",
        "--format",
        "{{.OCIv1.Architecture}}",
        &which,
    ]);
    assert_eq!(
        Some(arch.trim()),
        foreign.strip_prefix("linux/"),
        "the name points to the other platform's image"
    );
    assert!(
        output.matches("which-native").count() == 3 && !output.contains("which-foreign"),
        "{output}"
    );
    assert_pushed(&registry, "acme/pinned", "1", &built.digests[0]);
}

/// Without the network, the images of `COPY --from=<image>` and of bind mounts (`RUN
/// --mount=type=bind,from=<image>`) are pulled before the build, for the build's platform, and
/// the Containerfile the build reads names them by the IDs their pulls gave, as it does base
/// images. They were neither pulled nor named so: with no network to pull them, the build
/// found no such image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_network_copy_from_and_bind_mounts_use_pulled_images() {
    require_root("a network namespace of its own for the build");
    let registry = Registry::start();
    let (base, which, _) = push_which(&registry).await;
    let store = Store::new();
    let builder = ImageBuilder::new(ImageBuildOptions {
        network: false,
        ..store.options(&registry, StorageDriver::Vfs, None)
    })
    .unwrap();
    let context = context(
        &format!(
            "FROM {base}\n\
             COPY --from={which} /which.txt /copied.txt\n\
             RUN --mount=type=bind,from={which},target=/mnt cp /mnt/which.txt /mounted.txt\n"
        ),
        &[],
    );
    let request = request(
        context.path(),
        vec![format!("{}/acme/copied:1", registry.host())],
    );
    let (built, output) = build_ok(&builder, &request).await;
    // The Containerfile buildah read (its steps are in the output) names the image by the ID
    // its pull gave.
    let (id, _) = store
        .images()
        .into_iter()
        .find(|(_, names)| names.contains(&which))
        .unwrap_or_else(|| panic!("{which} is not in the store\n{output}"));
    let id = id.trim_start_matches("sha256:");
    for step in [
        format!("COPY --from=sha256:{id} /which.txt /copied.txt"),
        format!("RUN --mount=type=bind,from=sha256:{id},target=/mnt cp"),
    ] {
        assert!(output.contains(&step), "no {step:?} in\n{output}");
    }
    assert_pushed(&registry, "acme/copied", "1", &built.digests[0]);
    // Both files are in the image, from the image for this machine.
    let reader = Store::new();
    let container = reader.buildah(&["from", "--tls-verify=false", &built.digests[0]]);
    let root = reader.buildah(&["mount", container.trim()]);
    let read = |path: &str| std::fs::read_to_string(Path::new(root.trim()).join(path)).unwrap();
    assert_eq!(
        [read("copied.txt"), read("mounted.txt")],
        ["which-native\n", "which-native\n"]
    );
    reader.buildah(&["rm", container.trim()]);
}

/// Pushes the busybox base and `<registry>/acme/which:1`, whose `/which.txt` says
/// `which-native` in its image for this machine and `which-foreign` in its image for another
/// platform. Returns the base, `which` and that other platform.
async fn push_which(registry: &Registry) -> (String, String, &'static str) {
    let maker = Store::new();
    let base = push_busybox_base(registry, &maker.builder(registry, StorageDriver::Vfs)).await;
    let native = native_platform();
    let foreign = if native == "linux/s390x" {
        "linux/arm64"
    } else {
        "linux/s390x"
    };
    let which = format!("{}/acme/which:1", registry.host());
    for (platform, text) in [
        (native.as_str(), "which-native"),
        (foreign, "which-foreign"),
    ] {
        // Files only: making an image for another platform runs nothing of it.
        let files = context(
            "FROM scratch\nCOPY which.txt /which.txt\n",
            &[("which.txt", format!("{text}\n").as_bytes())],
        );
        maker.buildah(&[
            "bud",
            "--isolation",
            "chroot",
            "--platform",
            platform,
            "--manifest",
            "localhost/which-list",
            files.path().to_str().unwrap(),
        ]);
    }
    maker.buildah(&[
        "manifest",
        "push",
        "--all",
        "--tls-verify=false",
        "localhost/which-list",
        &format!("docker://{which}"),
    ]);
    (base, which, foreign)
}

/// Without the network, one image name may be the base of stages for two platforms (a cross
/// build's `FROM --platform=$BUILDPLATFORM`): it is pulled for each, and each stage uses the
/// image pulled for its platform, by ID. (Refused before: pulled under one name, the second
/// pull replaced the first.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_network_one_name_serves_two_platforms() {
    require_root("a network namespace of its own for the build");
    let registry = Registry::start();
    let (base, which, foreign) = push_which(&registry).await;
    let store = Store::new();
    let builder = ImageBuilder::new(ImageBuildOptions {
        network: false,
        ..store.options(&registry, StorageDriver::Vfs, None)
    })
    .unwrap();
    let context = context(
        &format!(
            "FROM {which} AS here\n\
             FROM --platform={foreign} {which} AS there\n\
             FROM {base}\n\
             COPY --from=here /which.txt /here.txt\n\
             COPY --from=there /which.txt /there.txt\n\
             RUN cat /here.txt /there.txt\n"
        ),
        &[],
    );
    let request = request(
        context.path(),
        vec![format!("{}/acme/two-platforms:1", registry.host())],
    );
    let (built, output) = build_ok(&builder, &request).await;
    assert!(output.contains("which-native\nwhich-foreign\n"), "{output}");
    assert_pushed(&registry, "acme/two-platforms", "1", &built.digests[0]);
}

/// Runs the test `name` of this binary again, alone, through `command` (which runs this test
/// binary, perhaps under a wrapper, in the setting the test needs), and checks that it passed.
fn run_again(mut command: std::process::Command, name: &str) {
    let out = command
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
}
