//! Rolling workloads when `raibid setup` changes a Secret they read. Pods read Secrets as
//! environment variables once, at start: a new `redis.url` password or `server.webhook_secret`
//! rewrote the Secret, new agent pods used the new value and the running Redis and server kept
//! the old one. A digest of the values each pod template reads, as an annotation on the
//! template, changes the template exactly when those values change, and the controller rolls
//! the pods.
//!
//! Only values from the configuration enter the digest: the others are kept as the cluster has
//! them (or generated once, before any pod reads them), so a setup never changes them. The
//! annotation is readable by whoever may read pod specs, who may not read Secrets, so the
//! digest is PBKDF2 (HMAC-SHA256, many iterations) rather than a plain hash, to make guessing
//! a weak configured password against it slow.
//!
//! The configuration file is a ConfigMap mounted as a file, which a running server reads once
//! too: a changed `redis.stream_name` reached the ConfigMap and KEDA's triggers while the
//! server kept pushing to the old streams. So the Deployments and StatefulSets also get a
//! digest of the ConfigMaps they read that are applied along with them
//! ([`CONFIG_ANNOTATION`]): a plain SHA-256, since a ConfigMap holds nothing secret.

use std::collections::{BTreeMap, BTreeSet};

use hmac::{Hmac, Mac};
use raibid_config::Config;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::InfraError;
use crate::manifest::Manifest;
use crate::secrets::{self, KeySource};

/// On the pod template of the StatefulSet, Deployment and ScaledJob setup applies.
pub const ANNOTATION: &str = "raibid.dev/secret-checksum";

/// On the pod template of a Deployment or StatefulSet that reads a ConfigMap applied with it.
pub const CONFIG_ANNOTATION: &str = "raibid.dev/config-checksum";

/// Per Secret and setup (a few of them), so the cost is a guesser's, not setup's.
const ITERATIONS: u32 = 20_000;

/// Adds [`ANNOTATION`] to every workload among `objects` whose pods read a Secret `raibid
/// setup` writes. ScaledJobs too, though each agent pod reads the Secrets afresh: the change
/// then shows in their spec, and KEDA reconciles them. Adds [`CONFIG_ANNOTATION`] to every
/// Deployment and StatefulSet whose pods read a ConfigMap among `objects` (not to ScaledJobs:
/// an agent pod runs one job and reads the file when it starts).
pub fn annotate(objects: &mut [Manifest], config: &Config) -> Result<(), InfraError> {
    let config_maps: BTreeMap<String, [u8; 32]> = objects
        .iter()
        .filter(|m| m.kind() == "ConfigMap")
        .map(|m| (m.name().to_owned(), config_map_digest(&m.object)))
        .collect();
    // Each Secret's digest once: several workloads read the Redis password.
    let mut digests: BTreeMap<String, [u8; 32]> = BTreeMap::new();
    for object in objects.iter_mut() {
        let template_path: &[&str] = match object.kind() {
            "StatefulSet" | "Deployment" => &["spec", "template"],
            "ScaledJob" => &["spec", "jobTargetRef", "template"],
            _ => continue,
        };
        if object.kind() != "ScaledJob" {
            let mut maps = BTreeSet::new();
            config_map_names(path(&object.object, template_path), &mut maps);
            let mut combined = Sha256::new();
            let mut any = false;
            for digest in maps.iter().filter_map(|name| config_maps.get(name)) {
                combined.update(digest);
                any = true;
            }
            if any {
                set_annotation(
                    &mut object.object,
                    template_path,
                    CONFIG_ANNOTATION,
                    hex16(&combined.finalize()),
                );
            }
        }
        let mut names = BTreeSet::new();
        secret_names(path(&object.object, template_path), &mut names);
        names.retain(|name| secrets::CATALOG.iter().any(|s| s.name == name));
        if names.is_empty() {
            continue;
        }
        let mut combined = Sha256::new();
        for name in &names {
            if !digests.contains_key(name) {
                digests.insert(name.clone(), secret_digest(name, config)?);
            }
            combined.update(digests[name]);
        }
        let checksum = hex16(&combined.finalize());
        set_annotation(&mut object.object, template_path, ANNOTATION, checksum);
    }
    Ok(())
}

/// The first 16 bytes of a digest, in hex.
fn hex16(digest: &[u8]) -> String {
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn set_annotation(object: &mut Value, template_path: &[&str], key: &str, value: String) {
    let mut template = object;
    for step in template_path {
        template = &mut template[*step];
    }
    let metadata = &mut template["metadata"];
    if !metadata["annotations"].is_object() {
        metadata["annotations"] = Value::Object(serde_json::Map::new());
    }
    metadata["annotations"][key] = Value::String(value);
}

/// SHA-256 of a ConfigMap's `data` and `binaryData` (serde_json keeps keys sorted, so the
/// same content always serializes the same).
fn config_map_digest(object: &Value) -> [u8; 32] {
    let content = serde_json::json!([object["data"], object["binaryData"]]);
    Sha256::digest(content.to_string().as_bytes()).into()
}

/// Every ConfigMap named below `value`: `configMapKeyRef`, `envFrom[].configMapRef`,
/// configMap volumes and projected sources.
fn config_map_names(value: &Value, names: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if matches!(
                    key.as_str(),
                    "configMapKeyRef" | "configMapRef" | "configMap"
                ) && let Some(name) = inner["name"].as_str()
                {
                    names.insert(name.to_owned());
                }
                config_map_names(inner, names);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| config_map_names(v, names)),
        _ => {}
    }
}

/// The Secrets the pods of a StatefulSet or Deployment read (none for other kinds).
pub fn secrets_read(object: &Manifest) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    if matches!(object.kind(), "StatefulSet" | "Deployment") {
        secret_names(path(&object.object, &["spec", "template"]), &mut names);
    }
    names
}

fn path<'a>(value: &'a Value, keys: &[&str]) -> &'a Value {
    keys.iter().fold(value, |v, k| &v[*k])
}

/// Every Secret named below `value`: `secretKeyRef`, `envFrom[].secretRef` and secret
/// volumes.
fn secret_names(value: &Value, names: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let named = match key.as_str() {
                    "secretKeyRef" | "secretRef" => inner["name"].as_str(),
                    "secret" => inner["secretName"].as_str(),
                    _ => None,
                };
                if let Some(name) = named {
                    names.insert(name.to_owned());
                }
                secret_names(inner, names);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| secret_names(v, names)),
        _ => {}
    }
}

/// The digest of the configured values of Secret `name`.
fn secret_digest(name: &str, config: &Config) -> Result<[u8; 32], InfraError> {
    let mut material = Vec::new();
    for spec in secrets::CATALOG.iter().filter(|s| s.name == name) {
        for (key, source) in secrets::sources(spec, config)? {
            let value = match &source {
                KeySource::Config { value, .. } => format!("config:{value}"),
                KeySource::KeepOrGenerate | KeySource::KeepOrEmpty => "kept".to_owned(),
            };
            // Length-prefixed, so that no two different sets of values read the same.
            for part in [key, value.as_str()] {
                material.extend_from_slice(&(part.len() as u64).to_be_bytes());
                material.extend_from_slice(part.as_bytes());
            }
        }
    }
    let salt = format!("{ANNOTATION}/{name}");
    Ok(pbkdf2_sha256(&material, salt.as_bytes(), ITERATIONS))
}

/// The first block of PBKDF2-HMAC-SHA256 (RFC 8018): 32 bytes.
fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    // HMAC takes keys of any length; hashing a long one first is what it would do anyway.
    let key: Vec<u8> = if password.len() > 64 {
        Sha256::digest(password).to_vec()
    } else {
        password.to_vec()
    };
    let mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
    let mut first = mac.clone();
    first.update(salt);
    first.update(&1u32.to_be_bytes());
    let mut block: [u8; 32] = first.finalize().into_bytes().into();
    let mut out = block;
    for _ in 1..iterations {
        let mut next = mac.clone();
        next.update(&block);
        block = next.finalize().into_bytes().into();
        for (o, b) in out.iter_mut().zip(block) {
            *o ^= b;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7914, section 11: PBKDF2-HMAC-SHA256("passwd", "salt", 1).
    #[test]
    fn pbkdf2_matches_the_published_vector() {
        let out = pbkdf2_sha256(b"passwd", b"salt", 1);
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
    }
}
