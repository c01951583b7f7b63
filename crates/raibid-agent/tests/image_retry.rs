//! A build that buildah could not start for a moment runs again; one that failed by itself
//! does not.
//!
//! buildah sometimes fails a `RUN` step before anything of it ran: the kernel refuses to seal
//! the in-memory copy of itself that buildah runs the step through ("sealing memfd copy: Device
//! or resource busy", EBUSY while pages of the copy are still pinned). Nothing here can make the
//! kernel do that on demand, so a wrapper in front of the real buildah prints buildah's line
//! and fails the way it does, for as many `bud`s as a test says; every other command, and the
//! `bud`s after those, run the real buildah against a real registry.

mod image_support;

use std::path::PathBuf;

use image_support::*;
use raibid_agent::image::{BUD_ATTEMPTS, ImageBuilder, ImageError, StorageDriver};
use raibid_testkit::Registry;

/// What buildah printed on CI when it happened.
const BUSY: &str = "Close_Fd sealing memfd copy: Device or resource busy";

/// A `buildah` that fails its first `failures` `bud`s as buildah does when the kernel is busy;
/// with `after_real`, only after running the real `bud` (which may have added to a manifest
/// list by then). It counts the `bud`s it was asked for.
struct BusyBuildah {
    dir: tempfile::TempDir,
}

impl BusyBuildah {
    fn new(failures: u32, after_real: bool) -> Self {
        let real = raibid_testkit::require_binary("buildah", "buildah");
        let dir = tempfile::tempdir().unwrap();
        let run_real = if after_real {
            format!("'{}' \"$@\" || exit\n", real.display())
        } else {
            String::new()
        };
        let script = format!(
            "#!/bin/sh\n\
             case \" $* \" in\n\
             *\" bud \"*)\n\
             n=$(cat '{count}' 2>/dev/null || echo 0)\n\
             n=$((n + 1))\n\
             echo $n > '{count}'\n\
             if [ $n -le {failures} ]; then\n\
             {run_real}\
             echo 'STEP 2/2: RUN true' >&2\n\
             echo '{BUSY}' >&2\n\
             echo 'Error: building at STEP \"RUN true\": exit status 1' >&2\n\
             exit 1\n\
             fi ;;\n\
             esac\n\
             exec '{real}' \"$@\"\n",
            count = dir.path().join("count").display(),
            real = real.display(),
        );
        raibid_testkit::write_script(&dir.path().join("buildah"), &script);
        Self { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("buildah")
    }

    /// How many `bud`s were run.
    fn buds(&self) -> u32 {
        std::fs::read_to_string(self.dir.path().join("count"))
            .map(|n| n.trim().parse().unwrap())
            .unwrap_or(0)
    }
}

fn builder(store: &Store, registry: &Registry, buildah: &BusyBuildah) -> ImageBuilder {
    store
        .builder(registry, StorageDriver::Vfs)
        .with_buildah(buildah.path())
}

fn scratch_context() -> tempfile::TempDir {
    context(
        "FROM scratch\nCOPY hello.txt /hello.txt\n",
        &[("hello.txt", b"hello\n")],
    )
}

fn note(attempt: u32) -> String {
    format!("building again (attempt {attempt} of {BUD_ATTEMPTS})")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_buildah_could_not_start_runs_again() {
    let registry = Registry::start();
    let store = Store::new();
    let buildah = BusyBuildah::new(1, false);
    let context = scratch_context();
    let tag = format!("{}/acme/again:1", registry.host());
    let (built, output) = build_ok(
        &builder(&store, &registry, &buildah),
        &request(context.path(), vec![tag]),
    )
    .await;
    assert_eq!(buildah.buds(), 2, "{output}");
    assert!(output.contains(BUSY), "{output}");
    assert!(output.contains(&note(2)), "{output}");
    assert_eq!(built.digests.len(), 1);
    assert!(registry.tags("acme/again").contains(&"1".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_that_stays_busy_fails_after_its_last_try() {
    let registry = Registry::start();
    let store = Store::new();
    let buildah = BusyBuildah::new(u32::MAX >> 1, false);
    let context = scratch_context();
    let tag = format!("{}/acme/busy:1", registry.host());
    let (result, output) = build(
        &builder(&store, &registry, &buildah),
        &request(context.path(), vec![tag]),
    )
    .await;
    assert!(
        matches!(&result, Err(ImageError::Failed { action, .. }) if action == "bud"),
        "{result:?}\n{output}"
    );
    assert_eq!(buildah.buds(), BUD_ATTEMPTS, "{output}");
    assert!(output.contains(&note(BUD_ATTEMPTS)), "{output}");
    assert!(!output.contains(&note(BUD_ATTEMPTS + 1)), "{output}");
    assert!(registry.tags("acme/busy").is_empty());
}

/// The build's own failure (here a file the Containerfile copies is missing) is not tried
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_s_own_failure_is_not_tried_again() {
    let registry = Registry::start();
    let store = Store::new();
    let buildah = BusyBuildah::new(0, false);
    let context = context("FROM scratch\nCOPY missing.txt /missing.txt\n", &[]);
    let tag = format!("{}/acme/own:1", registry.host());
    let (result, output) = build(
        &builder(&store, &registry, &buildah),
        &request(context.path(), vec![tag]),
    )
    .await;
    assert!(
        matches!(&result, Err(ImageError::Failed { .. })),
        "{result:?}\n{output}"
    );
    assert_eq!(buildah.buds(), 1, "{output}");
    assert!(!output.contains("building again"), "{output}");
}

/// A manifest list build that failed after buildah had added its image to the list starts
/// again from an empty list: the list pushed holds the platform once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_list_tried_again_holds_each_platform_once() {
    let registry = Registry::start();
    let store = Store::new();
    let buildah = BusyBuildah::new(1, true);
    let context = scratch_context();
    let mut request = request(
        context.path(),
        vec![format!("{}/acme/list:1", registry.host())],
    );
    let native = native_platform();
    request.platforms = vec![native.clone()];
    let (built, output) = build_ok(&builder(&store, &registry, &buildah), &request).await;
    assert_eq!(buildah.buds(), 2, "{output}");
    assert!(built.manifest_list);
    let list = manifest(&registry, "acme/list", "1");
    let platforms: Vec<String> = list["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(platforms, vec![native], "{list}\n{output}");
    // Nothing of the first try is left in the store.
    let leftover = store
        .images()
        .into_iter()
        .filter(|(_, names)| names.is_empty())
        .count();
    assert_eq!(leftover, 0, "{:?}\n{output}", store.images());
}

/// The manifest (list) the registry serves for `repository:tag`.
fn manifest(registry: &Registry, repository: &str, tag: &str) -> serde_json::Value {
    let response = registry
        .get(
            &format!("/v2/{repository}/manifests/{tag}"),
            Some(
                "application/vnd.oci.image.index.v1+json, \
                 application/vnd.docker.distribution.manifest.list.v2+json",
            ),
        )
        .unwrap();
    assert_eq!(response.status, 200);
    serde_json::from_slice(&response.body).unwrap()
}
