//! What buildah takes from the agent's environment, with the real buildah and registry.
//!
//! The agent's own variables are process-wide, so this binary sets them (once, before any
//! runtime or thread of its tests starts) as an agent's user might have them: logged in to the
//! registry in every place containers/image looks besides `--authfile` (`~/.docker/config.json`,
//! `$DOCKER_CONFIG/config.json`, `$XDG_CONFIG_HOME/containers/auth.json`), and behind a proxy
//! whose URL carries a password. (`$REGISTRY_AUTH_FILE` is only buildah's default for
//! `--authfile`, which every build passes; it cannot be set here either: `docker-registry`
//! would read it as its own `auth.file` setting.)

mod image_support;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use image_support::*;
use raibid_agent::image::{ImageError, RegistryAuth, StorageDriver};
use raibid_testkit::Registry;

/// The proxy of the agent's environment. Nothing listens there: buildah's own pulls from
/// registries off loopback fail through it, which shows buildah uses it.
const PROXY: &str = "http://u:p@127.0.0.1:9/";

/// Where the agent user's login files go (`HOME` and the rest point below it).
fn agent_environment() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        // It must outlive every test of the process, so nothing drops it: it is named by the
        // process, and each test process removes those of processes that have ended (nextest
        // runs every test in a process of its own: a temporary directory per process piled up
        // in /tmp).
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image-env-agent-homes");
        std::fs::create_dir_all(&root).unwrap();
        for entry in std::fs::read_dir(&root).unwrap().flatten() {
            let pid = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok());
            if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        // A dead process's of the same pid, if any.
        let dir = root.join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let vars = [
            ("HOME", dir.join("home").into_os_string()),
            ("DOCKER_CONFIG", dir.join("docker").into_os_string()),
            ("XDG_CONFIG_HOME", dir.join("config").into_os_string()),
            ("https_proxy", PROXY.into()),
            ("HTTPS_PROXY", PROXY.into()),
        ];
        for (name, value) in vars {
            // SAFETY: the first thing every test here does, before it starts a runtime or any
            // other thread; the test harness's threads wait in this OnceLock meanwhile.
            unsafe { std::env::set_var(name, value) };
        }
        dir
    })
}

/// The agent's user is logged in to `host` wherever containers/image looks for logins.
fn log_the_agent_user_in(dir: &Path, host: &str) {
    let auth = STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let json = format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#);
    for file in [
        "home/.docker/config.json",
        "home/.config/containers/auth.json",
        "docker/config.json",
        "config/containers/auth.json",
    ] {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &json).unwrap();
    }
}

fn block_on<F: Future>(test: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test)
}

fn assert_unauthorized(result: Result<impl std::fmt::Debug, ImageError>, output: &str) {
    assert!(
        matches!(result, Err(ImageError::Failed { .. })),
        "{result:?}\n{output}"
    );
    assert!(
        output.contains("unauthorized") || output.contains("authentication required"),
        "{output}"
    );
}

#[test]
fn builds_never_use_the_agent_users_registry_logins() {
    let home = agent_environment();
    block_on(async {
        let registry = Registry::start_with_auth(USER, PASSWORD, PASSWORD_BCRYPT);
        let host = registry.host();
        let store = Store::new();
        let login = RegistryAuth {
            host: host.clone(),
            username: USER.into(),
            password: PASSWORD.into(),
        };
        // A private image, pushed with the login raibid was given.
        let with_login = store.builder_with(&registry, StorageDriver::Vfs, Some(login));
        let context = context("FROM scratch\nCOPY a.txt /a.txt\n", &[("a.txt", b"a\n")]);
        let private = format!("{host}/acme/private:1");
        let (result, output) =
            build(&with_login, &request(context.path(), vec![private.clone()])).await;
        result.unwrap_or_else(|e| panic!("{e}\n{output}"));

        log_the_agent_user_in(home, &host);

        // An untrusted build gets no login, not even the agent user's.
        let from_private = image_support::context(&format!("FROM {private}\n"), &[]);
        let mut untrusted = request(from_private.path(), vec![format!("{host}/acme/app:1")]);
        untrusted.credentials = false;
        untrusted.push = false;
        let (result, output) = build(&with_login, &untrusted).await;
        assert_unauthorized(result, &output);

        // Without `agent.registry` no build pushes, whatever the agent user could.
        let without_login = store.builder(&registry, StorageDriver::Vfs);
        let (result, output) = build(
            &without_login,
            &request(context.path(), vec![format!("{host}/other/name:1")]),
        )
        .await;
        assert_unauthorized(result, &output);
        assert!(registry.tags("other/name").is_empty());
    });
}

#[test]
fn proxy_settings_reach_buildah_but_not_run_steps() {
    agent_environment();
    block_on(async {
        let registry = Registry::start();
        let store = Store::new();
        let builder = store.builder(&registry, StorageDriver::Vfs);
        let base = push_busybox_base(&registry, &builder).await;
        let context = context(&format!("FROM {base}\nRUN env\n"), &[]);
        let mut run_env = request(
            context.path(),
            vec![format!("{}/acme/env:1", registry.host())],
        );
        run_env.push = false;
        let (result, output) = build(&builder, &run_env).await;
        result.unwrap_or_else(|e| panic!("{e}\n{output}"));
        assert!(
            output.contains("HOSTNAME="),
            "RUN env printed nothing: {output}"
        );
        assert!(!output.contains("u:p@"), "{output}");
        assert!(!output.to_lowercase().contains("_proxy="), "{output}");

        // buildah's own pulls do go through the proxy (loopback registries never do).
        let context = image_support::context("FROM registry.example.invalid/acme/base:1\n", &[]);
        let mut request = request(
            context.path(),
            vec![format!("{}/acme/env:2", registry.host())],
        );
        request.push = false;
        let (result, output) = build(&builder, &request).await;
        assert!(
            matches!(result, Err(ImageError::Failed { .. })),
            "{result:?}\n{output}"
        );
        assert!(output.contains("proxyconnect"), "{output}");
    });
}
