//! A private OCI registry child process for `raibid up`: Debian's `docker-registry` (the CNCF
//! distribution server) on loopback, so that image builds push and artifacts are kept on a
//! machine without a forge's registry.
//!
//! It requires a login, as the private Redis does a password: every local user can reach
//! 127.0.0.1, and images and artifacts are a job's output. Its port is kept in its directory
//! and taken again on the next start when free, because image names and the artifacts'
//! references recorded on jobs name the registry by `127.0.0.1:<port>`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::local_redis::which;

/// The login the agents push with.
pub const USER: &str = "raibid";

/// docker-registry's output, in its directory.
pub const LOG_FILE: &str = "registry.log";

/// How long a starting registry may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the port of the last run is waited for while another program holds it.
const KEPT_PORT_WAIT: Duration = Duration::from_secs(5);
const KEPT_PORT_POLL: Duration = Duration::from_millis(100);

pub struct LocalRegistry {
    child: Child,
    port: u16,
    dir: PathBuf,
    password: String,
}

impl LocalRegistry {
    /// Whether `docker-registry` is installed (on PATH).
    pub fn available() -> bool {
        which("docker-registry").is_some()
    }

    /// Starts `docker-registry` with its storage, configuration and log in `dir` (made
    /// private), requiring [`USER`] and `password`.
    pub async fn start(dir: &Path, password: &str) -> anyhow::Result<Self> {
        let binary = which("docker-registry").context(
            "docker-registry is not installed: run `sudo apt-get install -y docker-registry`",
        )?;
        crate::private_files::ensure_dir(dir)?;
        crate::private_files::restrict_tree(dir)?;
        let port = port_for(dir, KEPT_PORT_WAIT).await?;
        // The registry's htpasswd takes bcrypt alone.
        let hash = bcrypt::hash(password, bcrypt_cost(password))
            .context("hashing the registry password")?;
        let htpasswd = dir.join("htpasswd");
        crate::private_files::write(&htpasswd, &format!("{USER}:{hash}\n"))?;
        let config = dir.join("config.yml");
        crate::private_files::write(&config, &config_yaml(dir, port, &htpasswd))?;
        let log = crate::log_files::open_append(&dir.join(LOG_FILE), crate::log_files::MAX_BYTES)?;
        garbage_collect(&binary, &config, dir, &log).await;
        let mut cmd = Command::new(binary);
        cmd.arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Stopped by `raibid up` after the agents, not by the terminal's Ctrl-C.
        crate::child_process::owned_private(&mut cmd);
        let child = cmd.spawn().context("starting docker-registry")?;
        let mut registry = Self {
            child,
            port,
            dir: dir.to_path_buf(),
            password: password.to_owned(),
        };
        if let Err(e) = registry.wait_ready().await {
            registry.stop().await;
            return Err(e);
        }
        crate::private_files::write(&dir.join("port"), &format!("{port}\n"))?;
        Ok(registry)
    }

    /// Started again as it was, on its port (free again), from its storage: after it died.
    pub async fn start_again(&self) -> anyhow::Result<Self> {
        Self::start(&self.dir, &self.password).await
    }

    /// Stops it, frees the layers nothing uses any more (see [`garbage_collect`]) and starts
    /// it again on its port. For `raibid up`'s pool, while no agent runs and no job is queued,
    /// so that no upload is under way. An error leaves it stopped, for the keeper to start again.
    pub async fn collect(&mut self) -> anyhow::Result<()> {
        crate::child_process::terminate(&mut self.child, Duration::from_secs(10)).await;
        *self = self.start_again().await?;
        Ok(())
    }

    /// How it ended, once it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// `127.0.0.1:<port>`, as it appears in image names.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Points `config`'s agents at this registry with its login, over plain HTTP (loopback).
    pub fn configure_agents(&self, config: &mut raibid_config::Config) {
        let r = &mut config.agent.registry;
        r.host = self.host();
        r.username = USER.to_owned();
        r.password = raibid_config::Secret::new(self.password.clone());
        r.insecure = true;
    }

    /// Until `GET /v2/` answers (401 without a login: it is up and requires one).
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(self.dir.join(LOG_FILE)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!(
                    "docker-registry exited ({status}) on port {}: {}",
                    self.port,
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                );
            }
            let last = match status_of_v2(self.port).await {
                Ok(401) => return Ok(()),
                Ok(other) => format!("GET /v2/ answered {other}, not 401"),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                bail!(
                    "docker-registry did not answer on port {} within {} s ({last})",
                    self.port,
                    START_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub async fn stop(mut self) {
        crate::child_process::terminate(&mut self.child, Duration::from_secs(10)).await;
    }
}

/// Frees the layers no manifest uses any more (those of artifacts that expired: deleting a
/// manifest frees nothing by itself), before the registry serves: distribution's garbage
/// collection must not run beside uploads. A failure costs only space, so it is logged and
/// the registry starts anyway.
async fn garbage_collect(binary: &Path, config: &Path, dir: &Path, log: &std::fs::File) {
    /// A store so large that collecting takes longer is left for the next start.
    const LIMIT: Duration = Duration::from_secs(300);
    if !dir.join("data").exists() {
        return;
    }
    let (Ok(out), Ok(err)) = (log.try_clone(), log.try_clone()) else {
        return;
    };
    let mut cmd = Command::new(binary);
    cmd.arg("garbage-collect")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true);
    crate::child_process::owned_private(&mut cmd);
    let started = Instant::now();
    match tokio::time::timeout(LIMIT, cmd.status()).await {
        Ok(Ok(status)) if status.success() => {
            tracing::debug!(took = ?started.elapsed(), "registry: garbage collected");
        }
        Ok(Ok(status)) => tracing::warn!(
            %status,
            log = %dir.join(LOG_FILE).display(),
            "registry: garbage collection failed; unused layers keep their space"
        ),
        Ok(Err(e)) => tracing::warn!(error = %e, "registry: cannot run garbage collection"),
        Err(_) => tracing::warn!(
            "registry: garbage collection took over {} s and was stopped; it runs again at \
             the next start",
            LIMIT.as_secs()
        ),
    }
}

/// The bcrypt cost of the registry's password hash. The registry checks it on every request,
/// and a push or pull makes several (an artifact's push about eight): at bcrypt's default
/// cost of 10 (also htpasswd's) that took some 60 ms each. A password as long as the
/// generated ones (48 hex digits, 192 bits) cannot be guessed from its hash whatever the cost,
/// so it gets bcrypt's least, 4 (under a millisecond); a shorter one, written into the
/// password file by hand, keeps the default.
fn bcrypt_cost(password: &str) -> u32 {
    if password.len() >= 48 {
        4
    } else {
        bcrypt::DEFAULT_COST
    }
}

/// The port a registry started in `dir` listened on last.
fn kept_port(dir: &Path) -> Option<u16> {
    std::fs::read_to_string(dir.join("port"))
        .ok()
        .and_then(|p| p.trim().parse::<u16>().ok())
}

/// The host (`127.0.0.1:<port>`) of the registry started in `dir` on an earlier run, if any:
/// what `raibid up`'s `env` file exported as `RAIBID_AGENT_REGISTRY_HOST`.
pub fn kept_host(dir: &Path) -> Option<String> {
    kept_port(dir).map(|port| format!("127.0.0.1:{port}"))
}

/// The port of the last run, waited for up to `wait` while something else holds it (a
/// registry of the same directory still exiting, a short-lived connection), else a new one:
/// images and artifacts recorded as `127.0.0.1:<old port>` then no longer reach it, which the
/// log says.
async fn port_for(dir: &Path, wait: Duration) -> anyhow::Result<u16> {
    let Some(kept) = kept_port(dir) else {
        return Ok(crate::loopback_port::pick()?);
    };
    let deadline = Instant::now() + wait;
    loop {
        if crate::loopback_port::is_free(kept) {
            return Ok(kept);
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(KEPT_PORT_POLL).await;
    }
    let port = crate::loopback_port::pick()?;
    tracing::warn!(
        kept,
        port,
        "the registry's port of the last run is taken by another program: it listens on \
         another one, and the images and artifacts of earlier jobs, recorded as \
         127.0.0.1:{kept}, cannot be fetched under that name until it gets its port back \
         (free the port and start it again)"
    );
    Ok(port)
}

fn config_yaml(dir: &Path, port: u16, htpasswd: &Path) -> String {
    // Deletes are on so that agents can remove expired artifacts (agent.artifacts_expire_days).
    // The upload secret signs upload state between requests of one push; any value works for
    // a single instance, and a fresh one per start loses nothing but unfinished uploads.
    let secret: String = (0..32)
        .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
        .collect();
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: {secret}\n\
         auth:\n  htpasswd:\n    realm: raibid\n    path: {htpasswd}\n",
        data = dir.join("data").display(),
        htpasswd = htpasswd.display(),
    )
}

/// The status code of a plain `GET /v2/`.
async fn status_of_v2(port: u16) -> std::io::Result<u16> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut head = vec![0; 64];
        let n = stream.read(&mut head).await?;
        let line = String::from_utf8_lossy(&head[..n]);
        line.split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not HTTP: {line:?}")))
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(dir: &Path, port: u16) {
        std::fs::write(dir.join("port"), format!("{port}\n")).unwrap();
    }

    #[tokio::test]
    async fn the_port_of_the_last_run_is_waited_for_while_it_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = port_for(dir.path(), Duration::ZERO).await.unwrap();
        assert!(crate::loopback_port::is_free(fresh));

        keep(dir.path(), fresh);
        let holder = std::net::TcpListener::bind(("127.0.0.1", fresh)).unwrap();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            drop(holder);
        });
        let port = port_for(dir.path(), Duration::from_secs(30)).await.unwrap();
        assert_eq!(port, fresh, "got its port back once it was let go");
        release.await.unwrap();
    }

    #[tokio::test]
    async fn a_port_of_the_last_run_held_past_the_wait_is_given_up_for_another() {
        let dir = tempfile::tempdir().unwrap();
        let kept = crate::loopback_port::pick().unwrap();
        keep(dir.path(), kept);
        let _holder = std::net::TcpListener::bind(("127.0.0.1", kept)).unwrap();
        let port = port_for(dir.path(), Duration::from_millis(300))
            .await
            .unwrap();
        assert_ne!(port, kept);
        assert!(crate::loopback_port::is_free(port));
    }

    #[test]
    fn a_generated_password_is_hashed_at_the_least_cost_a_short_one_at_the_default() {
        let generated = crate::up::credentials::random_secret();
        assert_eq!(bcrypt_cost(&generated), 4);
        assert_eq!(bcrypt_cost("hunter2"), bcrypt::DEFAULT_COST);
        // The registry's check (bcrypt's verify) takes either.
        let hash = bcrypt::hash(&generated, bcrypt_cost(&generated)).unwrap();
        assert!(bcrypt::verify(&generated, &hash).unwrap());
    }

    /// `sha256:<hex>` of `bytes`, as the registry names the blob.
    fn digest(bytes: &[u8]) -> String {
        use sha2::Digest;
        format!("sha256:{:x}", sha2::Sha256::digest(bytes))
    }

    fn blob(dir: &Path, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        dir.join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// An expired artifact's manifest is deleted while the registry runs; its layer's space
    /// comes back when `raibid up` starts the registry again, and what is still tagged stays.
    #[tokio::test]
    async fn a_restart_frees_the_layers_of_deleted_artifacts() {
        raibid_testkit::require_binary("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("registry");
        let registry = LocalRegistry::start(&store, "pw").await.unwrap();
        let login = raibid_oci::FetchOptions {
            insecure: true,
            credentials: Some((USER.to_owned(), "pw".to_owned())),
            ..raibid_oci::FetchOptions::default()
        };
        let push = |name: &str, content: &[u8]| {
            let archive = dir.path().join(name);
            std::fs::write(&archive, content).unwrap();
            let tag = format!("{}/acme/app/artifacts:{name}", registry.host());
            let login = login.clone();
            async move {
                raibid_oci::push_artifact(&tag, &archive, &Default::default(), &login)
                    .await
                    .unwrap()
            }
        };
        let expired = push("expired", b"the expired job's archive").await;
        let kept = push("kept", b"the kept job's archive").await;
        let expired_blob = blob(&store, &digest(b"the expired job's archive"));
        let kept_blob = blob(&store, &digest(b"the kept job's archive"));
        assert!(expired_blob.exists() && kept_blob.exists());
        assert!(
            raibid_oci::delete_artifact(&expired.reference, &login)
                .await
                .unwrap()
        );
        registry.stop().await;
        assert!(expired_blob.exists(), "deleting a manifest frees nothing");

        let registry = LocalRegistry::start(&store, "pw").await.unwrap();
        assert!(!expired_blob.exists(), "collected at the start");
        assert!(kept_blob.exists());
        let back = dir.path().join("back");
        raibid_oci::pull_artifact(&kept.reference, &back, &login)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), b"the kept job's archive");
        registry.stop().await;
    }

    /// `raibid up`'s periodic collection: the same, without `raibid up` starting again, and
    /// the registry serves on its port afterwards.
    #[tokio::test]
    async fn collect_frees_the_layers_of_deleted_artifacts_and_serves_again() {
        raibid_testkit::require_binary("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("registry");
        let mut registry = LocalRegistry::start(&store, "pw").await.unwrap();
        let host = registry.host();
        let login = raibid_oci::FetchOptions {
            insecure: true,
            credentials: Some((USER.to_owned(), "pw".to_owned())),
            ..raibid_oci::FetchOptions::default()
        };
        let archive = dir.path().join("archive");
        std::fs::write(&archive, b"an expired job's archive").unwrap();
        let tag = format!("{host}/acme/app/artifacts:old");
        let pushed = raibid_oci::push_artifact(&tag, &archive, &Default::default(), &login)
            .await
            .unwrap();
        let layer = blob(&store, &digest(b"an expired job's archive"));
        assert!(
            raibid_oci::delete_artifact(&pushed.reference, &login)
                .await
                .unwrap()
        );
        assert!(layer.exists(), "deleting a manifest frees nothing");

        registry.collect().await.unwrap();
        assert!(!layer.exists(), "collected");
        assert_eq!(registry.host(), host, "on its port again");
        assert!(registry.exited().is_none());
        std::fs::write(&archive, b"a new job's archive").unwrap();
        let tag = format!("{host}/acme/app/artifacts:new");
        let pushed = raibid_oci::push_artifact(&tag, &archive, &Default::default(), &login)
            .await
            .unwrap();
        let back = dir.path().join("back");
        raibid_oci::pull_artifact(&pushed.reference, &back, &login)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), b"a new job's archive");
        registry.stop().await;
    }
}
