//! Once every `agent.buildah_prune_days`, a build ending at a quiet moment prunes buildah's
//! store: real buildah (vfs) and a real registry.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use raibid_agent::image::{ImageBuilder, StorageDriver};
use raibid_testkit::{Registry, set_modified_ago};

mod image_support;
use image_support::{Store, build_ok, context, push_busybox_base, request};

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

fn stamp(store: &Store, registry: &Registry) -> PathBuf {
    store
        .options(registry, StorageDriver::Vfs, None)
        .root
        .join("raibid-builds/pruned")
}

/// The images of the store that nothing names.
fn unnamed(store: &Store) -> usize {
    store
        .images()
        .iter()
        .filter(|(_, names)| names.is_empty())
        .count()
}

/// What weeks of builds leave that no cleanup removes: a base image a newer pull of its tag
/// replaced (no name left, and no layer shared with the new one, which would make it the new
/// one's parent, kept) and a killed build's working container.
async fn leave_leftovers(store: &Store, builder: &ImageBuilder, registry: &Registry, base: &str) {
    build_plain(builder, registry, base, "first").await;
    let busybox = raibid_testkit::require_binary("busybox", "busybox-static");
    let newer = context(
        "FROM scratch\nCOPY newer /newer\nCOPY bin/ /bin/\n",
        &[("newer", b"newer\n")],
    );
    std::fs::create_dir(newer.path().join("bin")).unwrap();
    std::fs::copy(&busybox, newer.path().join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", newer.path().join("bin/sh")).unwrap();
    build_ok(builder, &request(newer.path(), vec![base.to_owned()])).await;
    build_plain(builder, registry, base, "second").await;
    store.buildah(&["from", "--tls-verify=false", "--name", "killed-build", base]);
    assert_eq!(unnamed(store), 1, "{:?}", store.images());
    assert_eq!(store.containers(), ["killed-build"]);
}

/// A plain build: its end is the quiet moment.
async fn build_plain(builder: &ImageBuilder, registry: &Registry, base: &str, name: &str) {
    let plain = context(&format!("FROM {base}\nRUN echo {name} > /{name}\n"), &[]);
    let tag = format!("{}/acme/plain:{name}", registry.host());
    build_ok(builder, &request(plain.path(), vec![tag])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_moment_a_week_after_the_last_prune_prunes_the_store() {
    let registry = Registry::start();
    let store = Store::new();
    let builder = store.builder(&registry, StorageDriver::Vfs);
    let base = push_busybox_base(&registry, &builder).await;
    // The store's first cleanup started the count; nothing was pruned.
    let stamp = stamp(&store, &registry);
    assert!(stamp.is_file());
    leave_leftovers(&store, &builder, &registry, &base).await;

    // Within the week, builds leave them.
    build_plain(&builder, &registry, &base, "a").await;
    assert_eq!(store.containers(), ["killed-build"]);
    assert_eq!(unnamed(&store), 1);

    // A week on, the next build ending alone prunes: the named base image stays.
    set_modified_ago(&stamp, WEEK + Duration::from_secs(60));
    build_plain(&builder, &registry, &base, "b").await;
    assert_eq!(store.containers(), Vec::<String>::new());
    let images = store.images();
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0].1, std::slice::from_ref(&base), "{images:?}");
    let pruned = std::fs::metadata(&stamp).unwrap().modified().unwrap();
    assert!(SystemTime::now().duration_since(pruned).unwrap() < WEEK);

    // The base is used from the store again, and the layer cache from the registry.
    build_plain(&builder, &registry, &base, "c").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_interval_the_store_is_never_pruned() {
    let registry = Registry::start();
    let store = Store::new();
    let builder = store
        .builder(&registry, StorageDriver::Vfs)
        .with_prune_interval(None);
    let base = push_busybox_base(&registry, &builder).await;
    leave_leftovers(&store, &builder, &registry, &base).await;
    let stamp = stamp(&store, &registry);
    assert!(!stamp.exists(), "no prune, no count");
    std::fs::write(&stamp, "").unwrap();
    set_modified_ago(&stamp, 10 * WEEK);
    build_plain(&builder, &registry, &base, "a").await;
    assert_eq!(store.containers(), ["killed-build"]);
    assert_eq!(unnamed(&store), 1);
}
