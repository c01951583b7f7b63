//! Before a container step starts: does its image have a manifest for this machine's
//! architecture? An arm64 agent given an amd64-only image would otherwise pull it and die
//! with `exec format error` (or, under QEMU emulation, run ten times slower without saying
//! so); the preflight fails the step in seconds with the platforms the image does have.
//!
//! Only a definite answer fails a step: an image that lacks the architecture, or a reference
//! that cannot be an image. A registry that cannot be asked (offline machine, local-only
//! image, private registry without credentials) lets the step go on to the engine, with a
//! note in the log, because the engine may well have the image locally.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use raibid_oci::{FetchOptions, ImageReference, check_image, normalize_arch};

/// What the preflight says about one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchVerdict {
    /// The image has a manifest for this architecture (the platform, e.g. `linux/arm64`).
    Runs(String),
    /// The registry could not tell; the reason goes to the step's log.
    Unchecked(String),
    /// The image cannot run here; the message says what it has instead.
    Refused(String),
}

/// Credentials for one registry host (the forge's, or one of `agent.pull_logins`), used only
/// for images on that host.
#[derive(Debug, Clone)]
pub struct RegistryLogin {
    pub host: String,
    pub username: String,
    pub password: String,
}

#[derive(Debug)]
pub struct ArchPreflight {
    arch: String,
    insecure: bool,
    timeout: Duration,
    logins: Vec<RegistryLogin>,
    /// Definite verdicts per image for `ttl`: a pipeline of ten steps on one image asks once,
    /// and a tag pushed again for more platforms is seen within minutes.
    cache: Mutex<HashMap<String, (Instant, ArchVerdict)>>,
    /// What [`Self::pin_public`] resolved, per image, for `ttl`.
    public: Mutex<HashMap<String, (Instant, String)>>,
    ttl: Duration,
}

impl ArchPreflight {
    /// `arch` as Rust or Go spells it (`aarch64` and `arm64` are the same).
    pub fn new(arch: &str, insecure: bool, logins: Vec<RegistryLogin>) -> Self {
        Self {
            arch: normalize_arch(arch).to_owned(),
            insecure,
            timeout: Duration::from_secs(10),
            logins,
            cache: Mutex::new(HashMap::new()),
            public: Mutex::new(HashMap::new()),
            ttl: Duration::from_secs(300),
        }
    }

    /// For this machine's architecture.
    pub fn for_this_machine(insecure: bool, logins: Vec<RegistryLogin>) -> Self {
        Self::new(std::env::consts::ARCH, insecure, logins)
    }

    pub async fn check(&self, image: &str) -> ArchVerdict {
        if let Some((at, verdict)) = self.cache.lock().expect("lock").get(image)
            && at.elapsed() < self.ttl
        {
            return verdict.clone();
        }
        let verdict = match check_image(image, &self.arch, &self.fetch_options(image)).await {
            Ok(check) => ArchVerdict::Runs(check.platform),
            Err(e) if e.is_verdict() => ArchVerdict::Refused(e.to_string()),
            Err(e) => ArchVerdict::Unchecked(e.to_string()),
        };
        if !matches!(verdict, ArchVerdict::Unchecked(_)) {
            self.cache
                .lock()
                .expect("lock")
                .insert(image.to_owned(), (Instant::now(), verdict.clone()));
        }
        verdict
    }

    /// For a step of an untrusted job (a pull request from a fork): `image` pinned to the
    /// manifest its registry serves without a login, checked for this machine's architecture.
    /// The engine then pulls that digest, which anyone may read, so neither the engine's own
    /// logins nor a private image they pulled into its store earlier reach the step. A registry
    /// that cannot be asked anonymously (a private image, an image only in the engine's store,
    /// an unreachable registry) is a refusal here, never a note: the engine would fall back on
    /// exactly what this keeps away. Successes are cached like verdicts.
    pub async fn pin_public(&self, image: &str) -> Result<String, String> {
        if let Some((at, pinned)) = self.public.lock().expect("lock").get(image)
            && at.elapsed() < self.ttl
        {
            return Ok(pinned.clone());
        }
        let options = FetchOptions {
            insecure: self.insecure,
            timeout: self.timeout,
            credentials: None,
        };
        match check_image(image, &self.arch, &options).await {
            Ok(check) => {
                self.public
                    .lock()
                    .expect("lock")
                    .insert(image.to_owned(), (Instant::now(), check.pinned.clone()));
                Ok(check.pinned)
            }
            Err(e) if e.is_verdict() => Err(e.to_string()),
            Err(e) => Err(format!(
                "pull requests from forks may run only images that their registry serves \
                 without a login, and {image} could not be read that way ({e}); \
                 agent.secrets_for_forks would trust forks with the engine's logins"
            )),
        }
    }

    fn fetch_options(&self, image: &str) -> FetchOptions {
        let credentials = ImageReference::parse(image).ok().and_then(|reference| {
            self.logins
                .iter()
                .find(|login| login.host == reference.registry)
                .map(|login| (login.username.clone(), login.password.clone()))
        });
        FetchOptions {
            insecure: self.insecure,
            timeout: self.timeout,
            credentials,
        }
    }
}
