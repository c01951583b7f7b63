//! The recorded inputs under `tests/fixtures/` at the repository root (sources and licenses in
//! its README): forge webhooks with their headers, and the published specs they are checked
//! against.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");

/// The secret every webhook fixture's signature was computed with (see the fixtures' README).
pub const WEBHOOK_SECRET: &[u8] = b"IsWishesWereHorsesWedAllBeEatingSteak!";

/// The body and headers of webhook fixture `name` (`gitea/push`): `<name>.json` and the
/// `<name>.headers` sidecar (`Name: value` lines, `#` comments).
pub fn webhook(name: &str) -> (Vec<u8>, HeaderMap) {
    let dir = format!("{FIXTURES}/webhooks");
    let body = std::fs::read(format!("{dir}/{name}.json")).unwrap();
    let sidecar = std::fs::read_to_string(format!("{dir}/{name}.headers")).unwrap();
    let headers = sidecar
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (
                HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
                HeaderValue::from_str(value.trim()).unwrap(),
            )
        })
        .collect();
    (body, headers)
}

/// Every webhook fixture's name (`forge/event`), sorted: tests that list their expectations
/// compare against it so that a new fixture cannot go untested.
pub fn webhook_names() -> Vec<String> {
    let mut found = Vec::new();
    for forge in std::fs::read_dir(format!("{FIXTURES}/webhooks")).unwrap() {
        let forge = forge.unwrap();
        if !forge.file_type().unwrap().is_dir() {
            continue;
        }
        for file in std::fs::read_dir(forge.path()).unwrap() {
            let file = file.unwrap().file_name().into_string().unwrap();
            if let Some(stem) = file.strip_suffix(".json") {
                found.push(format!("{}/{stem}", forge.file_name().to_str().unwrap()));
            }
        }
    }
    found.sort();
    found
}

/// Gitea's published OpenAPI (swagger 2.0) document.
pub fn gitea_swagger() -> Value {
    let path = format!("{FIXTURES}/gitea/swagger.v1.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The JSON-schema type name of `value`, to compare with a schema's `type`.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
