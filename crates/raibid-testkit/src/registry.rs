//! A real OCI registry: Debian's `docker-registry` (the CNCF distribution server) on a free
//! loopback port, storing into a temporary directory, killed on drop; and what tests need to put
//! images into it without a container engine (blobs, manifests, one-layer images per
//! architecture).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{free_port, require_binary};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A login for [`Registry::start_with_auth`], with the hash its htpasswd needs.
pub const TEST_USER: &str = "raibid";
pub const TEST_PASSWORD: &str = "raibid-test-secret-7f3a";
/// bcrypt (cost 4) of [`TEST_PASSWORD`]; the registry's htpasswd accepts nothing else.
pub const TEST_PASSWORD_BCRYPT: &str =
    "$2b$04$2Fuu2uzi/Wj56sfaVrYAKeNcdblPEZP6PUUgTfQiEZocCBP1Uu832";

pub struct Registry {
    child: Child,
    port: u16,
    /// `user:password` when the registry requires authentication.
    credentials: Option<String>,
    /// One client for every push, so its connections are reused.
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

pub struct Response {
    pub status: u16,
    /// Lowercase names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Registry {
    pub fn start() -> Self {
        Self::spawn(None)
    }

    /// Requires `user` / `password`; `bcrypt_hash` is the password's bcrypt hash (the only
    /// format the registry's htpasswd accepts).
    pub fn start_with_auth(user: &str, password: &str, bcrypt_hash: &str) -> Self {
        Self::spawn(Some((user, password, bcrypt_hash)))
    }

    fn spawn(auth: Option<(&str, &str, &str)>) -> Self {
        let binary = require_binary("docker-registry", "docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("raibid-test-registry-")
            .tempdir()
            .unwrap();
        let credentials = auth.map(|(u, p, _)| format!("{u}:{p}"));
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let config = dir.path().join("config.yml");
            std::fs::write(&config, config_yaml(dir.path(), port, auth)).unwrap();
            let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
            let mut child = Command::new(&binary)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn docker-registry");
            match wait_ready(&mut child, port, dir.path(), credentials.as_deref()) {
                Ok(()) => {
                    return Self {
                        child,
                        port,
                        credentials,
                        http: reqwest::Client::new(),
                        _dir: dir,
                    };
                }
                Err(e) => {
                    last_error = e;
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        panic!("could not start docker-registry: {last_error}");
    }

    /// `127.0.0.1:<port>`, as it appears in image names.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the registry keeps the blob `sha256:<hex>` on disk: a test that overwrites it
    /// makes the registry serve other bytes than the digest names, as a damaged disk or a
    /// tampered store would.
    pub fn blob_path(&self, digest: &str) -> std::path::PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self._dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// A plain GET, authenticated when the registry requires it.
    pub fn get(&self, path: &str, accept: Option<&str>) -> std::io::Result<Response> {
        http_get(self.port, path, accept, self.credentials.as_deref())
    }

    pub fn tags(&self, repository: &str) -> Vec<String> {
        let response = self
            .get(&format!("/v2/{repository}/tags/list"), None)
            .unwrap();
        if response.status == 404 {
            return Vec::new();
        }
        assert_eq!(
            response.status,
            200,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        let json: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        json["tags"]
            .as_array()
            .map(|tags| {
                tags.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Pushing through the registry's HTTP API (distribution spec: monolithic blob upload, manifest
/// PUT). Each call fails the test on an unexpected status.
impl Registry {
    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.credentials.as_deref().and_then(|c| c.split_once(':')) {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    /// Uploads `data` as a blob of `repo`; returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let http = &self.http;
        let digest = sha256_digest(data);
        let response = self
            .authorized(http.post(format!("http://{}/v2/{repo}/blobs/uploads/", self.host())))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("http://{}{location}", self.host())
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let response = self
            .authorized(http.put(format!("{location}{separator}digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        digest
    }

    /// Puts a manifest (or index) under `reference`; returns its digest.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let response = self
            .authorized(self.http.put(format!(
                "http://{}/v2/{repo}/manifests/{reference}",
                self.host()
            )))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        sha256_digest(body)
    }

    /// A one-layer image for `arch` (and `variant`), tagged `tag`; returns the manifest's
    /// digest and size, as an index entry names them.
    pub async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        arch: &str,
        variant: Option<&str>,
    ) -> (String, usize) {
        let mut config = json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []}, "config": {}
        });
        if let Some(v) = variant {
            config["variant"] = json!(v);
        }
        let config = serde_json::to_vec(&config).unwrap();
        let layer = format!("layer for {arch}{}", variant.unwrap_or("")).into_bytes();
        let config_digest = self.push_blob(repo, &config).await;
        let layer_digest = self.push_blob(repo, &layer).await;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest, "size": layer.len()}]
        }))
        .unwrap();
        let digest = self.push_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
        (digest, manifest.len())
    }
}

fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_yaml(dir: &Path, port: u16, auth: Option<(&str, &str, &str)>) -> String {
    let mut yaml = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
         delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: raibid-test-only\n",
        dir.join("data").display()
    );
    if let Some((user, _, hash)) = auth {
        let htpasswd = dir.join("htpasswd");
        std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
        yaml.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: raibid-test\n    path: {}\n",
            htpasswd.display()
        ));
    }
    yaml
}

/// A plain HTTP/1.0 GET (so no chunked encoding), authenticated when the registry is.
fn http_get(
    port: u16,
    path: &str,
    accept: Option<&str>,
    credentials: Option<&str>,
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    if let Some(accept) = accept {
        request.push_str(&format!("Accept: {accept}\r\n"));
    }
    if let Some(credentials) = credentials {
        request.push_str(&format!(
            "Authorization: Basic {}\r\n",
            STANDARD.encode(credentials)
        ));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

fn wait_ready(
    child: &mut Child,
    port: u16,
    dir: &Path,
    credentials: Option<&str>,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
            return Err(format!("exited early ({status}): {log}"));
        }
        if let Ok(response) = http_get(port, "/v2/", None, credentials)
            && response.status == 200
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("GET /v2/ did not answer 200".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
