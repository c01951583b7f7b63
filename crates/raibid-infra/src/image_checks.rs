//! Before `raibid setup agents` applies the ScaledJobs: does each agent image have a manifest
//! for the architecture its pool's pods are pinned to? KEDA would otherwise create pods that
//! crash with `exec format error` (or never pull) on every queued job, long after setup said
//! "done".

use std::io::Write;

use raibid_config::Config;

use crate::InfraError;
use crate::manifest::Manifest;
use crate::preflight::{FetchOptions, ImageReference, check_image};

/// The agents' registry login (`agent.registry`) with the one registry it belongs to. The
/// preflight sends credentials as Basic auth to whatever token service a registry names, so
/// they go only to images on that registry, the agent's own rule: a Gitea token must not reach
/// Docker Hub's `auth.docker.io` because an image from there was checked.
pub struct RegistryLogin {
    /// `agent.registry.host`, else the host of `gitea.url` (Gitea serves its registry there).
    pub host: String,
    pub username: String,
    pub password: String,
}

impl RegistryLogin {
    /// None without `agent.registry.username`.
    pub fn from_config(config: &Config) -> Option<Self> {
        let registry = &config.agent.registry;
        if registry.username.is_empty() {
            return None;
        }
        let host = if registry.host.is_empty() {
            let url = &config.gitea.url;
            url.split_once("://")
                .map_or(url.as_str(), |(_, rest)| rest)
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned()
        } else {
            registry.host.clone()
        };
        Some(Self {
            host,
            username: registry.username.clone(),
            password: registry.password.expose().to_owned(),
        })
    }

    /// The credentials for `image`: only when it lives on this login's registry.
    pub fn credentials_for(&self, image: &str) -> Option<(String, String)> {
        let reference = ImageReference::parse(image).ok()?;
        (reference.registry == self.host).then(|| (self.username.clone(), self.password.clone()))
    }
}

/// One image to check: what runs it and the architecture it is pinned to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageArchCheck {
    pub image: String,
    pub arch: String,
    /// `ScaledJob/raibid-agent-arm64`, for messages.
    pub object: String,
}

/// The images of every ScaledJob whose pods select `kubernetes.io/arch`, in manifest order.
pub fn scaled_job_images(objects: &[Manifest]) -> Vec<ImageArchCheck> {
    let mut checks = Vec::new();
    for manifest in objects {
        let object = &manifest.object;
        if object["kind"] != "ScaledJob" {
            continue;
        }
        let pod = &object["spec"]["jobTargetRef"]["template"]["spec"];
        let Some(arch) = pod["nodeSelector"]["kubernetes.io/arch"].as_str() else {
            continue;
        };
        let name = object["metadata"]["name"].as_str().unwrap_or("?");
        for list in ["initContainers", "containers"] {
            for container in pod[list].as_array().into_iter().flatten() {
                if let Some(image) = container["image"].as_str() {
                    let check = ImageArchCheck {
                        image: image.to_owned(),
                        arch: arch.to_owned(),
                        object: format!("ScaledJob/{name}"),
                    };
                    if !checks.contains(&check) {
                        checks.push(check);
                    }
                }
            }
        }
    }
    checks
}

/// Runs the checks. An image without the architecture (or no image reference at all) fails
/// setup; a registry this machine cannot ask is reported and skipped, as the cluster's nodes
/// may well reach it.
pub async fn run_checks(
    checks: &[ImageArchCheck],
    options: &FetchOptions,
    login: Option<&RegistryLogin>,
    out: &mut dyn Write,
) -> Result<(), InfraError> {
    for check in checks {
        let options = FetchOptions {
            credentials: login.and_then(|l| l.credentials_for(&check.image)),
            ..options.clone()
        };
        match check_image(&check.image, &check.arch, &options).await {
            Ok(found) => {
                let _ = writeln!(
                    out,
                    "    {} ({}): {} has {}",
                    check.object, check.arch, found.image, found.platform
                );
            }
            Err(e) if e.is_verdict() => return Err(e.into()),
            Err(e) => {
                let _ = writeln!(
                    out,
                    "    {} ({}): not checked, {e}; the nodes may still reach it",
                    check.object, check.arch
                );
            }
        }
    }
    Ok(())
}

/// For tests: the JSON of a ScaledJob pinned to `arch` running `image`.
#[cfg(test)]
pub(crate) fn scaled_job(name: &str, arch: Option<&str>, image: &str) -> Manifest {
    let mut pod = serde_json::json!({"containers": [{"name": "agent", "image": image}]});
    if let Some(arch) = arch {
        pod["nodeSelector"] = serde_json::json!({ "kubernetes.io/arch": arch });
    }
    Manifest {
        source: "test".into(),
        object: serde_json::json!({
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledJob",
            "metadata": {"name": name},
            "spec": {"jobTargetRef": {"template": {"spec": pod}}}
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn pinned_scaled_jobs_give_one_check_per_image_and_arch() {
        let objects = vec![
            scaled_job("a-arm64", Some("arm64"), "r/raibid:1"),
            scaled_job("a-amd64", Some("amd64"), "r/raibid:1"),
            scaled_job("a-any", None, "r/raibid:1"),
            scaled_job("b-arm64", Some("arm64"), "r/raibid:1"),
        ];
        let checks = scaled_job_images(&objects);
        let pairs: Vec<(&str, &str)> = checks
            .iter()
            .map(|c| (c.arch.as_str(), c.object.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("arm64", "ScaledJob/a-arm64"),
                ("amd64", "ScaledJob/a-amd64"),
                ("arm64", "ScaledJob/b-arm64")
            ]
        );
    }

    #[test]
    fn other_kinds_are_not_checked() {
        let mut deployment = scaled_job("x", Some("arm64"), "r/raibid:1");
        deployment.object["kind"] = Value::from("Deployment");
        assert!(scaled_job_images(&[deployment]).is_empty());
    }
}
