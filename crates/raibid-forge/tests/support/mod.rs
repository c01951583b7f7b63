//! Loading the recorded webhooks under `tests/fixtures/webhooks/` at the repository root.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The secret every fixture signature was computed with (see the fixtures' README).
pub const SECRET: &[u8] = b"IsWishesWereHorsesWedAllBeEatingSteak!";

pub const WEBHOOKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/webhooks");

/// The body and headers of fixture `name` (e.g. `gitea/push`).
pub fn fixture(name: &str) -> (Vec<u8>, HeaderMap) {
    let body = std::fs::read(format!("{WEBHOOKS}/{name}.json")).unwrap();
    let sidecar = std::fs::read_to_string(format!("{WEBHOOKS}/{name}.headers")).unwrap();
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
