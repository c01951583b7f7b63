//! Which request header carries what, per forge.
//!
//! Forgejo sends every `X-Forgejo-*` header a second time as `X-Gitea-*`, and a Forgejo hook
//! set up with the "Gitea" type sends only the latter, so Forgejo lookups fall back to the
//! Gitea name. The first name in each list is the one error messages report.

use http::{HeaderMap, HeaderValue};
use raibid_model::Forge;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Event,
    /// Gitea/Forgejo's finer event name, e.g. `pull_request_sync` under event `pull_request`.
    EventType,
    Delivery,
    Signature,
}

fn names(forge: Forge, kind: Kind) -> &'static [&'static str] {
    match (forge, kind) {
        (Forge::Gitea, Kind::Event) => &["X-Gitea-Event"],
        (Forge::Gitea, Kind::EventType) => &["X-Gitea-Event-Type"],
        (Forge::Gitea, Kind::Delivery) => &["X-Gitea-Delivery"],
        (Forge::Gitea, Kind::Signature) => &["X-Gitea-Signature"],
        (Forge::Forgejo, Kind::Event) => &["X-Forgejo-Event", "X-Gitea-Event"],
        (Forge::Forgejo, Kind::EventType) => &["X-Forgejo-Event-Type", "X-Gitea-Event-Type"],
        (Forge::Forgejo, Kind::Delivery) => &["X-Forgejo-Delivery", "X-Gitea-Delivery"],
        (Forge::Forgejo, Kind::Signature) => &["X-Forgejo-Signature", "X-Gitea-Signature"],
        (Forge::Github, Kind::Event) => &["X-GitHub-Event"],
        (Forge::Github, Kind::EventType) => &[],
        (Forge::Github, Kind::Delivery) => &["X-GitHub-Delivery"],
        (Forge::Github, Kind::Signature) => &["X-Hub-Signature-256"],
    }
}

/// The name to report when no candidate header is present.
pub(crate) fn primary(forge: Forge, kind: Kind) -> &'static str {
    names(forge, kind).first().copied().unwrap_or("")
}

/// The first candidate header with a non-empty value, and its name.
///
/// Empty values count as absent because Gitea sends its signature headers empty when the hook
/// has no secret.
pub(crate) fn find(
    headers: &HeaderMap,
    forge: Forge,
    kind: Kind,
) -> Option<(&'static str, &HeaderValue)> {
    names(forge, kind).iter().find_map(|&name| {
        headers
            .get(name)
            .filter(|value| !value.is_empty())
            .map(|value| (name, value))
    })
}
