//! Connecting to the cluster named by `cluster.kubeconfig`, with a bounded wait: a missing
//! cluster must be a one-line error within seconds, not a hang.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use raibid_config::Config;

use crate::InfraError;

/// Where the k3s installer writes the cluster's kubeconfig.
pub const K3S_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";

/// The configuration's default, which means "wherever kubectl would look".
const DEFAULT_KUBECONFIG: &str = "~/.kube/config";

/// A reachable cluster.
#[derive(Clone)]
pub struct Cluster {
    pub client: kube::Client,
    /// The API server URL, for messages.
    pub server: String,
    pub kubeconfig: PathBuf,
}

/// `cluster.kubeconfig` with `~` expanded. Left at its default, it means what kubectl would
/// use: the first path of `$KUBECONFIG`, else `~/.kube/config`, else (a fresh k3s install has
/// only that one) the k3s kubeconfig.
pub fn kubeconfig_path(config: &Config) -> PathBuf {
    planned_kubeconfig(config, false)
}

/// The kubeconfig the commands of a plan (helm, flux) will be given: [`kubeconfig_path`] once
/// the plan's steps before them have run. A plan that installs k3s on a machine with no
/// kubeconfig yet connects afterwards through the one k3s writes, so its dry run must
/// already name that file.
pub fn planned_kubeconfig(config: &Config, installs_k3s: bool) -> PathBuf {
    let k3s = Path::new(K3S_KUBECONFIG);
    resolve_kubeconfig(
        &config.cluster.kubeconfig,
        std::env::var_os("KUBECONFIG"),
        std::env::var_os("HOME"),
        k3s,
        installs_k3s || k3s.exists(),
    )
}

fn resolve_kubeconfig(
    configured: &str,
    kubeconfig_env: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
    k3s: &Path,
    k3s_exists: bool,
) -> PathBuf {
    if configured == DEFAULT_KUBECONFIG
        && let Some(first) = kubeconfig_env
            .as_deref()
            .and_then(|v| std::env::split_paths(v).find(|p| !p.as_os_str().is_empty()))
    {
        return first;
    }
    let expanded = match (configured.strip_prefix("~/"), home) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(configured),
    };
    if configured == DEFAULT_KUBECONFIG && !expanded.exists() && k3s_exists {
        k3s.to_path_buf()
    } else {
        expanded
    }
}

/// Connects and asks the API server for its version, all within `timeout`.
pub async fn connect(config: &Config, timeout: Duration) -> Result<Cluster, InfraError> {
    connect_to(&kubeconfig_path(config), timeout).await
}

pub async fn connect_to(path: &Path, timeout: Duration) -> Result<Cluster, InfraError> {
    if !path.exists() {
        return Err(InfraError::NoKubeconfig {
            path: path.to_path_buf(),
        });
    }
    let invalid = |message: String| InfraError::Kubeconfig {
        path: path.to_path_buf(),
        message,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| invalid(e.to_string()))?;
    let mut client_config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| invalid(e.to_string()))?;
    client_config.connect_timeout = Some(timeout);
    client_config.read_timeout = Some(timeout);
    let server = client_config.cluster_url.to_string();
    let client = kube::Client::try_from(client_config).map_err(|e| invalid(e.to_string()))?;
    let unreachable = |message: String| InfraError::Unreachable {
        server: server.clone(),
        kubeconfig: path.to_path_buf(),
        message,
    };
    match tokio::time::timeout(timeout, client.apiserver_version()).await {
        Ok(Ok(version)) => {
            tracing::debug!(%server, version = %version.git_version, "cluster reachable");
            Ok(Cluster {
                client,
                server,
                kubeconfig: path.to_path_buf(),
            })
        }
        Ok(Err(e)) => Err(unreachable(error_chain(&e))),
        Err(_) => Err(unreachable(format!(
            "no answer within {}s",
            timeout.as_secs_f64()
        ))),
    }
}

/// An error and its causes on one line ("connection refused" is usually three levels down).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = inner.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_setting_looks_where_kubectl_looks() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let k3s = dir.path().join("k3s.yaml");
        let resolve = |configured: &str, env: Option<&str>| {
            resolve_kubeconfig(
                configured,
                env.map(Into::into),
                Some(home.clone().into_os_string()),
                &k3s,
                k3s.exists(),
            )
        };
        let default_path = home.join(".kube/config");
        assert_eq!(resolve(DEFAULT_KUBECONFIG, None), default_path);
        assert_eq!(
            resolve(DEFAULT_KUBECONFIG, Some("/a/first:/b/second")),
            PathBuf::from("/a/first")
        );
        assert_eq!(resolve(DEFAULT_KUBECONFIG, Some("")), default_path);
        std::fs::write(&k3s, "").unwrap();
        assert_eq!(resolve(DEFAULT_KUBECONFIG, None), k3s);
        std::fs::create_dir_all(home.join(".kube")).unwrap();
        std::fs::write(&default_path, "").unwrap();
        assert_eq!(resolve(DEFAULT_KUBECONFIG, None), default_path);
        // A configured path wins over everything, `~` expanded.
        assert_eq!(
            resolve("~/clusters/spark.yaml", Some("/a/first")),
            home.join("clusters/spark.yaml")
        );
        assert_eq!(resolve("/etc/x.yaml", None), PathBuf::from("/etc/x.yaml"));
    }

    /// A plan that installs k3s prints the commands after it with the kubeconfig k3s will have
    /// written, since that is the one raibid connects through once it exists.
    #[test]
    fn a_plan_that_installs_k3s_expects_its_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let k3s = dir.path().join("not-yet/k3s.yaml");
        let resolve = |configured: &str, installs_k3s: bool| {
            resolve_kubeconfig(
                configured,
                None,
                Some(home.clone().into_os_string()),
                &k3s,
                installs_k3s,
            )
        };
        assert_eq!(resolve(DEFAULT_KUBECONFIG, true), k3s);
        assert_eq!(
            resolve(DEFAULT_KUBECONFIG, false),
            home.join(".kube/config")
        );
        assert_eq!(resolve("/etc/x.yaml", true), PathBuf::from("/etc/x.yaml"));
    }
}
