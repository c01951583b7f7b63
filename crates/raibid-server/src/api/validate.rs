//! Rules for what the jobs API accepts. Submitted values end up in Redis keys, git command
//! lines and agents' environments, so they are held to the same rules as webhook payloads.
//! Each function returns the reason a value is refused, for the caller to attach to the field.

const MAX_URL_LEN: usize = 2048;
const MAX_ENV_VARS: usize = 100;
const MAX_ENV_BYTES: usize = 64 * 1024;

use raibid_forge::validate::git_ref;
pub(crate) use raibid_forge::validate::{repo_full_name as repo, sha};

/// An `http(s)://`, `git://` or `file://` URL that git can be handed as an argument.
///
/// Unlike webhooks (whose URLs come from a forge), submissions come from token holders, who
/// may point at a local mirror with `file://`. Schemes that run commands (`ext::`) or an
/// argument that reads as an option (`-u...`) are refused.
pub(crate) fn clone_url(s: &str) -> Result<(), &'static str> {
    if s.len() > MAX_URL_LEN {
        return Err("clone URL is too long");
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a clone URL must not contain whitespace or control characters");
    }
    let (scheme, rest) = s
        .split_once("://")
        .ok_or("a clone URL must start with https://, http://, git:// or file://")?;
    match scheme {
        "https" | "http" | "git" => {
            if rest.is_empty() || rest.starts_with('/') {
                return Err("a clone URL must name a host");
            }
        }
        "file" => {
            if !rest.starts_with('/') {
                return Err("a file:// URL must hold an absolute path");
            }
        }
        _ => return Err("a clone URL must start with https://, http://, git:// or file://"),
    }
    Ok(())
}

/// The full ref for `main` or `refs/heads/main`: short names are branches.
pub(crate) fn full_ref(s: &str) -> Result<String, &'static str> {
    let full = if s.starts_with("refs/") {
        s.to_owned()
    } else {
        format!("refs/heads/{s}")
    };
    git_ref(&full)?;
    Ok(full)
}

/// A branch name (`main`, `release/1.x`), as the job list filters on it: a name that could
/// follow `refs/heads/`.
pub(crate) fn branch(s: &str) -> Result<(), &'static str> {
    if s.starts_with("refs/") {
        return Err("a branch name, without refs/heads/");
    }
    git_ref(&format!("refs/heads/{s}"))
}

/// Letters, digits and '_', not starting with a digit: a name a shell reads as `$NAME`.
pub(crate) fn is_variable_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A POSIX-portable environment variable name.
pub(crate) fn env_name(s: &str) -> Result<(), &'static str> {
    if !is_variable_name(s) {
        Err("a variable name is letters, digits and '_', not starting with a digit")
    } else if s.starts_with("RAIBID_") && s != "RAIBID_MATRIX" && s != "RAIBID_WORKFLOW" {
        // The agent would drop it: it says what the job is, and a submission cannot change that.
        // The exceptions the agent keeps: RAIBID_MATRIX runs one variant of a matrix,
        // RAIBID_WORKFLOW one workflow of `.raibid/`.
        Err("RAIBID_* variables are set by the agent (RAIBID_MATRIX and RAIBID_WORKFLOW excepted)")
    } else {
        Ok(())
    }
}

/// Environment values cannot hold NUL; the size bounds keep a job record small. A workflow's
/// name ends up in commit-status contexts, so it must be one a `.raibid/` file can have.
pub(crate) fn env_value(name: &str, s: &str) -> Result<(), &'static str> {
    if name == "RAIBID_WORKFLOW" && !raibid_pipeline::valid_workflow_name(s) {
        Err(
            "not a workflow name: the name of a .raibid/*.yaml file without .yaml (letters, \
             digits, '.', '_' and '-', at most 64)",
        )
    } else if s.contains('\0') {
        Err("a value must not contain NUL")
    } else {
        Ok(())
    }
}

pub(crate) fn env_size(count: usize, bytes: usize) -> Result<(), &'static str> {
    if count > MAX_ENV_VARS {
        Err("at most 100 variables")
    } else if bytes > MAX_ENV_BYTES {
        Err("at most 64 KiB of names and values")
    } else {
        Ok(())
    }
}

/// Job ids are ULIDs.
pub(crate) fn job_id(s: &str) -> Result<(), &'static str> {
    if s.len() == 26 && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err("a job id is a 26-character ULID")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repos() {
        for good in ["owner/name", "Test-CI/multi-line-secrets", "a_b/c.d"] {
            assert!(repo(good).is_ok(), "{good}");
        }
        for bad in [
            "", "owner", "/name", "a/b/c", "../etc", "o/.git", "o/n me", "o/ü",
        ] {
            assert!(repo(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn clone_urls() {
        for good in [
            "https://git.example/o/r.git",
            "http://127.0.0.1:3000/o/r.git",
            "git://host/o/r",
            "file:///srv/git/r.git",
        ] {
            assert!(clone_url(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "git@host:o/r.git",
            "ext::sh -c touch% /tmp/pwned",
            "-uhttps://x",
            "https://",
            "https:///path",
            "file://relative",
            "ssh://host/r",
            "https://host/a b",
        ] {
            assert!(clone_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refs_are_normalised_then_checked() {
        assert_eq!(full_ref("main").unwrap(), "refs/heads/main");
        assert_eq!(full_ref("feature/x").unwrap(), "refs/heads/feature/x");
        assert_eq!(full_ref("refs/tags/v1.0").unwrap(), "refs/tags/v1.0");
        for bad in [
            "",
            "-x",
            "a..b",
            "a b",
            "refs/heads/",
            "x.lock",
            "a@{1}",
            "a~1",
        ] {
            assert!(full_ref(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_workflow_variable_must_name_a_workflow() {
        assert!(env_value("RAIBID_WORKFLOW", "build.linux-x86_64").is_ok());
        for bad in ["", "a/b", "../x", "a b", ".hidden"] {
            assert!(env_value("RAIBID_WORKFLOW", bad).is_err(), "{bad}");
        }
        assert!(env_value("OTHER", "a/b").is_ok());
    }

    #[test]
    fn env_names() {
        for good in [
            "A",
            "_x",
            "CI_TOKEN_2",
            "RAIBID",
            "RAIBID_MATRIX",
            "RAIBID_WORKFLOW",
        ] {
            assert!(env_name(good).is_ok(), "{good}");
        }
        for bad in ["", "1A", "A-B", "A B", "A=B", "É", "RAIBID_SHA", "RAIBID_"] {
            assert!(env_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shas_and_ids() {
        assert!(sha(&"a".repeat(40)).is_ok());
        assert!(sha(&"A".repeat(64)).is_ok());
        assert!(sha("main").is_err());
        assert!(job_id("01JABCDEFGHJKMNPQRSTVWXYZ0").is_ok());
        assert!(job_id("../../x").is_err());
    }
}
