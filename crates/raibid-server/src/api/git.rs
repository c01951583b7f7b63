//! Resolving a ref to a commit with `git ls-remote`, for submissions that name no sha.
//!
//! Jobs always build an exact commit, so a branch named at submission is pinned here, once,
//! rather than by each agent at a slightly different moment.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::ApiError;

/// A remote that does not answer within this time is treated as unresolvable.
const LS_REMOTE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    #[error("could not run git: {0}")]
    Spawn(std::io::Error),
    #[error("git ls-remote {url} did not finish within {}s", LS_REMOTE_TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error("git ls-remote {url} failed: {message}")]
    Failed { url: String, message: String },
    #[error("{url} has no ref {git_ref}")]
    NoSuchRef { url: String, git_ref: String },
}

/// A ref that does not resolve is the request's problem (422, code `unresolvable_ref`, with git's
/// reason); only a git that cannot run at all is the server's.
impl From<ResolveError> for ApiError {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::Spawn(_) => ApiError::Internal(e.to_string()),
            _ => ApiError::UnresolvableRef(e.to_string()),
        }
    }
}

/// The commit `git_ref` points to in the repository at `url`.
///
/// `url` and `git_ref` must have been validated: they are passed as arguments (never through a
/// shell), after `--`, but git still interprets the URL's scheme.
pub(crate) async fn resolve(url: &str, git_ref: &str) -> Result<String, ResolveError> {
    let shown = redact(url);
    // An annotated tag's commit is only listed when its peeled name is asked for as well.
    let peeled = format!("{git_ref}^{{}}");
    let child = Command::new("git")
        .args(["ls-remote", "--", url, git_ref, &peeled])
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(ResolveError::Spawn)?;
    let output = tokio::time::timeout(LS_REMOTE_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| ResolveError::Timeout { url: shown.clone() })?
        .map_err(ResolveError::Spawn)?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message = stderr
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("no output")
            .replace(url, &shown);
        return Err(ResolveError::Failed {
            url: shown,
            message,
        });
    }
    pick(&String::from_utf8_lossy(&output.stdout), git_ref).ok_or(ResolveError::NoSuchRef {
        url: shown,
        git_ref: git_ref.to_owned(),
    })
}

/// The commit of `git_ref` in `ls-remote` output. An annotated tag is listed twice, as the tag
/// object and peeled (`<ref>^{}`); the peeled line names the commit.
fn pick(listing: &str, git_ref: &str) -> Option<String> {
    let peeled = format!("{git_ref}^{{}}");
    let mut direct = None;
    for line in listing.lines() {
        let Some((sha, name)) = line.split_once('\t') else {
            continue;
        };
        if name == peeled {
            return Some(sha.to_owned());
        }
        if name == git_ref {
            direct = Some(sha.to_owned());
        }
    }
    direct
}

/// The URL without any `user:password@`, for messages.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    #[test]
    fn picks_the_exact_ref_and_prefers_the_peeled_tag() {
        let listing = format!(
            "{A}\trefs/heads/main\n{B}\trefs/heads/other/main\n{A}\trefs/tags/v1\n{B}\trefs/tags/v1^{{}}\n"
        );
        assert_eq!(pick(&listing, "refs/heads/main").as_deref(), Some(A));
        assert_eq!(pick(&listing, "refs/tags/v1").as_deref(), Some(B));
        assert_eq!(pick(&listing, "refs/heads/nope"), None);
    }

    #[test]
    fn credentials_never_reach_messages() {
        assert_eq!(
            redact("https://user:s3cret@git.example/o/r.git"),
            "https://***@git.example/o/r.git"
        );
        assert_eq!(redact("https://git.example/a@b"), "https://git.example/a@b");
        assert_eq!(redact("file:///srv/r.git"), "file:///srv/r.git");
    }
}
