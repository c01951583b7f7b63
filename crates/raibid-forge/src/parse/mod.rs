//! Turning a webhook request into a [`Parsed`] verdict.
//!
//! Only pushes, tag pushes, pull requests being opened or updated, and manual dispatches start
//! builds; every other well-formed webhook is acknowledged as ignored, so the forge does not
//! mark the hook as failing. Malformed ones are errors the server answers with 400.

mod manual;
mod pull_request;
mod push;

use http::HeaderMap;
use raibid_model::{Event, Forge};
use serde::Deserialize;

use crate::header::{self, Kind};
use crate::payload::{Repository, User, objects_only};
use crate::trigger::{Parsed, Trigger};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("header {0} is not printable ASCII")]
    InvalidHeader(&'static str),
    #[error("body is not JSON: {0}")]
    NotJson(String),
    /// A field is missing, has the wrong type or an unsafe value. `path` is the JSON path,
    /// e.g. `repository.full_name`, or `(root)` for the body as a whole.
    #[error("invalid payload field {path}: {message}")]
    Field { path: String, message: String },
}

/// Reads a webhook `forge` sent with `headers` and `body`.
///
/// This does not check the signature: call [`crate::verify`] first.
pub fn parse(forge: Forge, headers: &HeaderMap, body: &[u8]) -> Result<Parsed, ParseError> {
    let event = header_text(headers, forge, Kind::Event)?.ok_or(ParseError::MissingHeader(
        header::primary(forge, Kind::Event),
    ))?;
    match event {
        "push" => push::parse(forge, body),
        "pull_request" => {
            let event_type = header_text(headers, forge, Kind::EventType)?;
            pull_request::parse(forge, event_type, body)
        }
        "workflow_dispatch" => manual::parse(forge, body),
        // Every forge also sends a push event for a new branch or tag.
        "create" => Ok(Parsed::ignored(
            "create events are covered by the push event",
        )),
        "ping" => Ok(Parsed::ignored("ping")),
        other => Ok(Parsed::ignored(format!("event {other} is not handled"))),
    }
}

/// `repository.full_name` of a body that has one, read before its signature is checked, to
/// choose the secret it must be signed with.
///
/// It is read with the parser's own rules (objects only, see `objects_only!`): whatever
/// [`parse`] later builds must be the repository whose secret was chosen here. Anything else
/// about the body is ignored; a body this cannot read is checked against the global secret and
/// then refused by [`parse`] or built for a repository without a secret of its own.
pub fn repository_name(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(remote = "Self")]
    struct Probe {
        repository: Option<ProbeRepository>,
    }
    #[derive(Deserialize)]
    #[serde(remote = "Self")]
    struct ProbeRepository {
        full_name: Option<String>,
    }
    objects_only!(Probe, ProbeRepository);
    serde_json::from_slice::<Probe>(body)
        .ok()?
        .repository?
        .full_name
}

fn header_text(headers: &HeaderMap, forge: Forge, kind: Kind) -> Result<Option<&str>, ParseError> {
    header::find(headers, forge, kind)
        .map(|(name, value)| value.to_str().map_err(|_| ParseError::InvalidHeader(name)))
        .transpose()
}

/// A trigger for `git_ref` at `sha`, with branch and tag read off the ref.
fn trigger(
    forge: Forge,
    repository: Repository,
    sender: Option<User>,
    git_ref: String,
    sha: String,
    event: Event,
) -> Trigger {
    let branch = git_ref.strip_prefix("refs/heads/").map(str::to_owned);
    let tag = git_ref.strip_prefix("refs/tags/").map(str::to_owned);
    Trigger {
        forge,
        repo: repository.full_name.0,
        clone_url: repository.clone_url.0,
        html_url: non_empty(repository.html_url).filter(|url| crate::validate::web_url(url)),
        git_ref,
        sha,
        event,
        branch,
        tag,
        pr_number: None,
        source_branch: None,
        pr_labels: Vec::new(),
        title: None,
        from_fork: false,
        sender: non_empty(sender.and_then(|user| user.login)),
        default_branch: non_empty(repository.default_branch),
        diff_base: None,
    }
}

/// The commit to compare `sha` with for `when: path`, from a payload's `before` or
/// `pull_request.base.sha`.
///
/// Only an extra, so read leniently: a value that is missing, not a sha of `sha`'s length, all
/// zeros (a push that created the branch) or `sha` itself gives `None`, the job is built all
/// the same and its path filters match (every step runs), rather than the webhook being
/// refused.
fn diff_base(value: Option<String>, sha: &str) -> Option<String> {
    let base = value?.to_ascii_lowercase();
    let usable = crate::validate::sha(&base).is_ok()
        && base.len() == sha.len()
        && base.bytes().any(|b| b != b'0')
        && !base.eq_ignore_ascii_case(sha);
    usable.then_some(base)
}

/// Gitea sends `""` where GitHub sends `null` or nothing (e.g. an empty repository's default
/// branch); both mean absent.
fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|s| !s.is_empty())
}
