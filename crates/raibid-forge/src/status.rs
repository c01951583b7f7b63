//! Commit statuses: the request that shows a build's state next to a commit on the forge.
//!
//! Gitea, Forgejo and GitHub accept the same body (`state`, `target_url`, `description`,
//! `context`) at the same path under different API roots, so one builder serves all three.
//! The server sends the request; this module only decides what it looks like.

use std::fmt::Write as _;

use http::{HeaderName, HeaderValue, Method, header::AUTHORIZATION};
use raibid_model::{Forge, JobStatus};
use serde_json::{Map, Value};

use crate::validate;

/// GitHub rejects longer descriptions; Gitea accepts them but truncates in its UI anyway.
const MAX_DESCRIPTION_CHARS: usize = 140;

/// The states all three forges understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusState {
    Pending,
    Success,
    Failure,
    Error,
}

impl StatusState {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusState::Pending => "pending",
            StatusState::Success => "success",
            StatusState::Failure => "failure",
            StatusState::Error => "error",
        }
    }

    /// The state to show for a job. `failure` is kept for the pipeline's own verdict, so a
    /// red cross always means the code failed; jobs that ended without a verdict (cancelled,
    /// could not run, given up) show `error`.
    pub fn from_job(status: JobStatus) -> Self {
        match status {
            JobStatus::Blocked | JobStatus::Queued | JobStatus::Running => StatusState::Pending,
            // As GitHub counts a skipped job for a required check: the forges have no
            // "skipped" state, and a red or grey mark would block a merge for a job that was
            // asked not to run.
            JobStatus::Success | JobStatus::Skipped => StatusState::Success,
            JobStatus::Failure => StatusState::Failure,
            JobStatus::Error | JobStatus::Cancelled | JobStatus::Dead => StatusState::Error,
        }
    }
}

/// What to report about one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStatus {
    pub state: StatusState,
    /// Where the status links to, usually the job's page; omitted when raibid-ci has no
    /// public URL.
    pub target_url: Option<String>,
    pub description: String,
    /// Distinguishes this status from other checks on the same commit, e.g. `raibid-ci/push`.
    pub context: String,
}

/// An HTTP request ready to send, apart from authentication (see [`auth_header`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRequest {
    pub method: Method,
    pub url: String,
    pub body: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    #[error("invalid repository {repo:?}: expected owner/name")]
    Repo { repo: String },
    #[error("invalid commit sha {sha:?}: {reason}")]
    Sha { sha: String, reason: &'static str },
    #[error("the forge token contains characters not allowed in an HTTP header")]
    Token,
}

/// The request that sets `status` on commit `sha` of `repo` (`owner/name`).
///
/// `api_base_url` is the forge's root URL for Gitea and Forgejo (their `ROOT_URL`, including
/// any sub-path; `/api/v1` is appended) and the REST API root for GitHub
/// (`https://api.github.com`, or `https://<host>/api/v3` for GitHub Enterprise Server).
pub fn status_request(
    forge: Forge,
    api_base_url: &str,
    repo: &str,
    sha: &str,
    status: &CommitStatus,
) -> Result<StatusRequest, StatusError> {
    let (owner, name) = split_repo(repo)?;
    validate::sha(sha).map_err(|reason| StatusError::Sha {
        sha: sha.to_owned(),
        reason,
    })?;
    let api_root = match forge {
        Forge::Gitea | Forge::Forgejo => "/api/v1",
        Forge::Github => "",
    };
    let url = format!(
        "{}{api_root}/repos/{}/{}/statuses/{sha}",
        api_base_url.trim_end_matches('/'),
        encode_segment(owner),
        encode_segment(name),
    );
    Ok(StatusRequest {
        method: Method::POST,
        url,
        body: body(status),
    })
}

/// The `Authorization` header for an API token, marked sensitive so it stays out of logs.
pub fn auth_header(forge: Forge, token: &str) -> Result<(HeaderName, HeaderValue), StatusError> {
    let scheme = match forge {
        Forge::Gitea | Forge::Forgejo => "token",
        Forge::Github => "Bearer",
    };
    let mut value =
        HeaderValue::from_str(&format!("{scheme} {token}")).map_err(|_| StatusError::Token)?;
    value.set_sensitive(true);
    Ok((AUTHORIZATION, value))
}

/// Splits `owner/name`. Segments are percent-encoded later, so any characters are safe except
/// the ones that change the path's shape: extra `/`, and `.`/`..` which URL normalisation
/// would resolve.
fn split_repo(repo: &str) -> Result<(&str, &str), StatusError> {
    let invalid = || StatusError::Repo {
        repo: repo.to_owned(),
    };
    let (owner, name) = repo.split_once('/').ok_or_else(invalid)?;
    for segment in [owner, name] {
        if segment.is_empty() || segment.contains('/') || matches!(segment, "." | "..") {
            return Err(invalid());
        }
    }
    Ok((owner, name))
}

/// Percent-encodes everything outside RFC 3986's unreserved set.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn body(status: &CommitStatus) -> Value {
    let mut body = Map::new();
    body.insert("state".to_owned(), status.state.as_str().into());
    if let Some(url) = &status.target_url {
        body.insert("target_url".to_owned(), url.as_str().into());
    }
    let description: String = status
        .description
        .chars()
        .take(MAX_DESCRIPTION_CHARS)
        .collect();
    body.insert("description".to_owned(), description.into());
    body.insert("context".to_owned(), status.context.as_str().into());
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SHA: &str = "29be01c073851cf0db0c6a466e396b725a670453";

    fn status(description: &str) -> CommitStatus {
        CommitStatus {
            state: StatusState::Success,
            target_url: Some("https://ci.example/jobs/01J".to_owned()),
            description: description.to_owned(),
            context: "raibid-ci/push".to_owned(),
        }
    }

    #[test]
    fn gitea_and_forgejo_post_under_api_v1() {
        for forge in [Forge::Gitea, Forge::Forgejo] {
            let req =
                status_request(forge, "https://git.example/", "o/r", SHA, &status("ok")).unwrap();
            assert_eq!(req.method, Method::POST);
            assert_eq!(
                req.url,
                format!("https://git.example/api/v1/repos/o/r/statuses/{SHA}")
            );
        }
        let sub = status_request(
            Forge::Gitea,
            "https://x.example/gitea",
            "o/r",
            SHA,
            &status(""),
        )
        .unwrap();
        assert_eq!(
            sub.url,
            format!("https://x.example/gitea/api/v1/repos/o/r/statuses/{SHA}")
        );
    }

    #[test]
    fn github_posts_at_the_api_root() {
        let req = status_request(
            Forge::Github,
            "https://api.github.com",
            "Codertocat/Hello-World",
            SHA,
            &status("ok"),
        )
        .unwrap();
        assert_eq!(
            req.url,
            format!("https://api.github.com/repos/Codertocat/Hello-World/statuses/{SHA}")
        );
        assert_eq!(
            req.body,
            json!({
                "state": "success",
                "target_url": "https://ci.example/jobs/01J",
                "description": "ok",
                "context": "raibid-ci/push",
            })
        );
    }

    #[test]
    fn target_url_is_omitted_when_absent() {
        let mut st = status("queued");
        st.target_url = None;
        st.state = StatusState::Pending;
        let req = status_request(Forge::Gitea, "https://g", "o/r", SHA, &st).unwrap();
        assert_eq!(
            req.body,
            json!({"state": "pending", "description": "queued", "context": "raibid-ci/push"})
        );
    }

    #[test]
    fn description_is_cut_at_140_characters_not_bytes() {
        let long = "é".repeat(200);
        let req = status_request(
            Forge::Github,
            "https://api.github.com",
            "o/r",
            SHA,
            &status(&long),
        )
        .unwrap();
        let sent = req.body["description"].as_str().unwrap();
        assert_eq!(sent.chars().count(), 140);
        assert_eq!(sent, "é".repeat(140));
        let exact = "x".repeat(140);
        let req = status_request(
            Forge::Github,
            "https://api.github.com",
            "o/r",
            SHA,
            &status(&exact),
        )
        .unwrap();
        assert_eq!(req.body["description"], json!(exact));
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        let req =
            status_request(Forge::Gitea, "https://g", "a b/c?d#e%", SHA, &status("")).unwrap();
        assert_eq!(
            req.url,
            format!("https://g/api/v1/repos/a%20b/c%3Fd%23e%25/statuses/{SHA}")
        );
    }

    #[test]
    fn repos_and_shas_that_would_change_the_path_are_refused() {
        for repo in ["", "o", "o/", "/r", "o/r/x", "../r", "o/..", "./r", "o/."] {
            assert_eq!(
                status_request(Forge::Gitea, "https://g", repo, SHA, &status("")),
                Err(StatusError::Repo {
                    repo: repo.to_owned()
                }),
                "{repo}"
            );
        }
        for sha in ["", "../../admin", "main", &SHA[..39]] {
            assert!(matches!(
                status_request(Forge::Gitea, "https://g", "o/r", sha, &status("")),
                Err(StatusError::Sha { .. })
            ));
        }
    }

    #[test]
    fn auth_schemes() {
        let (name, value) = auth_header(Forge::Gitea, "abc").unwrap();
        assert_eq!(name, AUTHORIZATION);
        assert_eq!(value, "token abc");
        assert!(value.is_sensitive());
        assert_eq!(auth_header(Forge::Forgejo, "abc").unwrap().1, "token abc");
        assert_eq!(
            auth_header(Forge::Github, "ghp_x").unwrap().1,
            "Bearer ghp_x"
        );
        assert_eq!(auth_header(Forge::Github, "a\nb"), Err(StatusError::Token));
    }

    #[test]
    fn job_states_map_to_forge_states() {
        assert_eq!(
            StatusState::from_job(JobStatus::Queued),
            StatusState::Pending
        );
        assert_eq!(
            StatusState::from_job(JobStatus::Running),
            StatusState::Pending
        );
        for st in [JobStatus::Success, JobStatus::Skipped] {
            assert_eq!(StatusState::from_job(st), StatusState::Success);
        }
        assert_eq!(
            StatusState::from_job(JobStatus::Failure),
            StatusState::Failure
        );
        for st in [JobStatus::Error, JobStatus::Cancelled, JobStatus::Dead] {
            assert_eq!(StatusState::from_job(st), StatusState::Error);
        }
    }
}
