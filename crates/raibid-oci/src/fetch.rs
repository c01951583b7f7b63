//! Fetching a manifest over the registry v2 API, with the anonymous bearer-token exchange that
//! Docker Hub, GHCR and most registries use for public pulls, and Basic credentials when given.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, WWW_AUTHENTICATE};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::PreflightError;
use super::index::{self, Manifest};
use super::reference::ImageReference;

#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Plain HTTP (always used for loopback registries).
    pub insecure: bool,
    /// For the whole check, token exchange included: the point is to fail in seconds.
    pub timeout: Duration,
    /// `(user, password)` for private images.
    pub credentials: Option<(String, String)>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            insecure: false,
            timeout: Duration::from_secs(10),
            credentials: None,
        }
    }
}

/// The outcome of a successful check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageCheck {
    /// The normalized reference (`docker.io/library/alpine:latest`).
    pub image: String,
    pub platform: String,
    /// Digest of the platform's image manifest (the index's entry), or of the config blob for a
    /// single-image manifest.
    pub digest: String,
    /// Whether the image is an index with several platforms.
    pub multi_arch: bool,
    /// Digest of the manifest the reference named (the index for a multi-platform image).
    pub manifest_digest: String,
    /// `<registry>/<repository>@<manifest digest>`: the image this check saw, whatever the tag
    /// names by the time an engine pulls it.
    pub pinned: String,
}

/// Checks that `image` can run on `linux/<arch>`, asking its registry.
pub async fn check_image(
    image: &str,
    arch: &str,
    options: &FetchOptions,
) -> Result<ImageCheck, PreflightError> {
    let reference = ImageReference::parse(image)?;
    tokio::time::timeout(options.timeout, check(&reference, arch, options))
        .await
        .map_err(|_| PreflightError::Timeout {
            image: reference.to_string(),
            seconds: options.timeout.as_secs_f64(),
        })?
}

async fn check(
    reference: &ImageReference,
    arch: &str,
    options: &FetchOptions,
) -> Result<ImageCheck, PreflightError> {
    let image = reference.to_string();
    let mut registry = Registry::new(reference, options)?;
    let body = registry
        .get(&format!("manifests/{}", reference.reference), index::ACCEPT)
        .await?;
    let manifest_digest = format!("sha256:{:x}", Sha256::digest(&body));
    let pinned = format!(
        "{}/{}@{manifest_digest}",
        reference.registry, reference.repository
    );
    match index::parse_manifest(&image, &body)? {
        Manifest::Index(entries) => {
            let entry = index::select_platform(&image, &entries, arch)?;
            Ok(ImageCheck {
                platform: entry
                    .platform
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                digest: entry.digest.clone(),
                multi_arch: entries.len() > 1,
                manifest_digest,
                pinned,
                image,
            })
        }
        Manifest::Single { config_digest } => {
            let config = registry
                .get(&format!("blobs/{config_digest}"), "application/json")
                .await?;
            let platform = index::check_config(&image, &config, arch)?;
            Ok(ImageCheck {
                platform: platform.to_string(),
                digest: config_digest,
                multi_arch: false,
                manifest_digest,
                pinned,
                image,
            })
        }
    }
}

/// One repository of a registry, over the v2 API, authenticating as challenged.
pub(crate) struct Registry<'a> {
    http: reqwest::Client,
    /// `<scheme>://<host>/v2/<repository>`.
    pub(crate) base: String,
    reference: &'a ImageReference,
    options: &'a FetchOptions,
    auth: Option<Auth>,
}

/// How requests authenticate once the registry has challenged.
enum Auth {
    Bearer(String),
    Basic { user: String, password: String },
}

impl<'a> Registry<'a> {
    pub(crate) fn new(
        reference: &'a ImageReference,
        options: &'a FetchOptions,
    ) -> Result<Self, PreflightError> {
        let scheme = if options.insecure || reference.is_loopback() {
            "http"
        } else {
            "https"
        };
        let http = reqwest::Client::builder()
            .connect_timeout(options.timeout)
            // A silent registry fails the call; a large upload that keeps moving does not.
            .read_timeout(options.timeout)
            .user_agent(concat!("raibid/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| unreachable(reference, &e))?;
        Ok(Self {
            http,
            base: format!(
                "{scheme}://{}/v2/{}",
                reference.api_host(),
                reference.repository
            ),
            reference,
            options,
            auth: None,
        })
    }

    /// GETs `<base>/<path>`, authenticating once if the registry asks for it.
    pub(crate) async fn get(
        &mut self,
        path: &str,
        accept: &str,
    ) -> Result<Vec<u8>, PreflightError> {
        let url = format!("{}/{path}", self.base);
        let response = self
            .send(|http| http.get(&url).header(ACCEPT, accept))
            .await?;
        response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| unreachable(self.reference, &e))
    }

    /// Sends the request `build` makes, with the credentials the registry asked for: on a
    /// 401 it answers the challenge and builds the request once more (a body is made anew,
    /// never replayed). A token for pulling is exchanged for one that may push when a push
    /// is challenged. Anything but a 2xx or 3xx is an error naming the registry's message.
    pub(crate) async fn send(
        &mut self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, PreflightError> {
        let mut retried = false;
        loop {
            let mut request = build(&self.http);
            request = match &self.auth {
                Some(Auth::Bearer(token)) => request.bearer_auth(token),
                Some(Auth::Basic { user, password }) => request.basic_auth(user, Some(password)),
                None => request,
            };
            let response = request
                .send()
                .await
                .map_err(|e| unreachable(self.reference, &e))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !retried {
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                self.auth = Some(self.authorize(&challenge).await?);
                retried = true;
                continue;
            }
            if !status.is_success() && !status.is_redirection() {
                let content_type = response
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let body = response.text().await.unwrap_or_default();
                return Err(refused(self.reference, status, &content_type, &body));
            }
            return Ok(response);
        }
    }

    /// How to answer a `WWW-Authenticate` challenge.
    async fn authorize(&self, challenge: &str) -> Result<Auth, PreflightError> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let params = parse_challenge(params);
        let credentials = self.options.credentials.as_ref();
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" => {
                let realm = params
                    .iter()
                    .find(|(k, _)| k == "realm")
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| self.auth_error("a Bearer challenge without realm"))?;
                let mut query: Vec<(String, String)> = params
                    .into_iter()
                    .filter(|(k, _)| k == "service" || k == "scope")
                    .collect();
                if !query.iter().any(|(k, _)| k == "scope") {
                    query.push((
                        "scope".into(),
                        format!("repository:{}:pull", self.reference.repository),
                    ));
                }
                let mut request = self.http.get(&realm).query(&query);
                if let Some((user, password)) = credentials {
                    request = request.basic_auth(user, Some(password));
                }
                let response = request
                    .send()
                    .await
                    .map_err(|e| unreachable(self.reference, &e))?;
                if !response.status().is_success() {
                    return Err(
                        self.auth_error(&format!("token service answered {}", response.status()))
                    );
                }
                let token: TokenResponse = response
                    .json()
                    .await
                    .map_err(|e| self.auth_error(&format!("token service answer: {e}")))?;
                let token = token
                    .token
                    .or(token.access_token)
                    .ok_or_else(|| self.auth_error("token service gave no token"))?;
                Ok(Auth::Bearer(token))
            }
            "basic" => {
                let (user, password) = credentials.ok_or_else(|| {
                    self.auth_error("the registry wants a user name and password (agent.registry)")
                })?;
                Ok(Auth::Basic {
                    user: user.clone(),
                    password: password.clone(),
                })
            }
            _ => Err(self.auth_error(&format!("unsupported challenge {challenge:?}"))),
        }
    }

    fn auth_error(&self, message: &str) -> PreflightError {
        PreflightError::Auth {
            registry: self.reference.registry.clone(),
            image: self.reference.to_string(),
            message: message.to_owned(),
        }
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// `realm="https://auth.docker.io/token",service="registry.docker.io",scope="..."`
fn parse_challenge(params: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = params.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.split_once('"') {
                Some((v, r)) => (v.to_owned(), r),
                None => (quoted.to_owned(), ""),
            }
        } else {
            match after.split_once(',') {
                Some((v, r)) => (v.trim().to_owned(), r),
                None => (after.trim().to_owned(), ""),
            }
        };
        out.push((key, value));
        rest = remaining.trim_start_matches(',').trim();
    }
    out
}

pub(crate) fn unreachable(reference: &ImageReference, error: &reqwest::Error) -> PreflightError {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        message.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    PreflightError::Unreachable {
        registry: reference.registry.clone(),
        image: reference.to_string(),
        message,
    }
}

fn refused(
    reference: &ImageReference,
    status: StatusCode,
    content_type: &str,
    body: &str,
) -> PreflightError {
    let detail = if content_type.contains("json") {
        serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_owned))
            .unwrap_or_default()
    } else {
        String::new()
    };
    let hint = match status {
        StatusCode::NOT_FOUND => "no such image or tag: check the name and that it was pushed",
        StatusCode::FORBIDDEN => "the credentials may not pull this image",
        _ => "the registry refused the request",
    };
    PreflightError::Refused {
        image: reference.to_string(),
        status: status.as_u16(),
        message: if detail.is_empty() {
            hint.to_owned()
        } else {
            format!("{detail}; {hint}")
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_challenges() {
        let params = parse_challenge(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(
            params,
            [
                (
                    "realm".to_owned(),
                    "https://auth.docker.io/token".to_owned()
                ),
                ("service".to_owned(), "registry.docker.io".to_owned()),
                (
                    "scope".to_owned(),
                    "repository:library/alpine:pull".to_owned()
                ),
            ]
        );
    }
}
