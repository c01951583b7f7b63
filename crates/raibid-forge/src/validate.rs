//! Rules for the strings a webhook hands us that later become file paths, git arguments, URLs
//! and Redis keys. A payload is signed by the forge, but its content comes from whoever pushed:
//! branch names and repository names are user-chosen, so they are checked before anything
//! builds with them.

/// Longest ref accepted; git itself has no limit, but nothing legitimate comes close.
const MAX_REF_LEN: usize = 1024;
/// GitHub caps owners at 39 and names at 100 characters; Gitea allows a little more.
const MAX_REPO_LEN: usize = 256;
const MAX_URL_LEN: usize = 2048;

/// A commit id: SHA-1 (40) or SHA-256 (64) hex digits.
pub fn sha(s: &str) -> Result<(), &'static str> {
    if matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err("a commit sha is 40 or 64 hex digits")
    }
}

/// `owner/name`, each part made of `[A-Za-z0-9_.-]` and not starting with `.`, so that joining
/// it onto a directory can never climb out of it or hide a file.
pub fn repo_full_name(s: &str) -> Result<(), &'static str> {
    if s.len() > MAX_REPO_LEN {
        return Err("repository name is too long");
    }
    let Some((owner, name)) = s.split_once('/') else {
        return Err("expected owner/name");
    };
    for part in [owner, name] {
        if part.is_empty() {
            return Err("expected owner/name");
        }
        if part.starts_with('.') {
            return Err("owner and name must not start with '.'");
        }
        if !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err("owner and name may only use letters, digits, '_', '.' and '-'");
        }
    }
    Ok(())
}

/// A full ref (`refs/...`) that `git check-ref-format` would accept, minus a few things it
/// tolerates but we do not: components starting with `-` (they read as options when passed to
/// git) and non-`refs/` names.
pub fn git_ref(s: &str) -> Result<(), &'static str> {
    if s.len() > MAX_REF_LEN {
        return Err("ref is too long");
    }
    if !s.starts_with("refs/") {
        return Err("a ref starts with refs/");
    }
    if s.bytes().any(|b| {
        b.is_ascii_control() || matches!(b, b' ' | b'~' | b'^' | b':' | b'?' | b'*' | b'[' | b'\\')
    }) {
        return Err("a ref must not contain control characters, spaces or any of ~^:?*[\\");
    }
    if s.contains("..") || s.contains("@{") {
        return Err("a ref must not contain '..' or '@{'");
    }
    if s.ends_with('.') {
        return Err("a ref must not end with '.'");
    }
    for component in s.split('/') {
        if component.is_empty() {
            return Err("a ref must not have empty components");
        }
        if component.starts_with('.') || component.starts_with('-') {
            return Err("a ref component must not start with '.' or '-'");
        }
        if component.ends_with(".lock") {
            return Err("a ref component must not end with .lock");
        }
    }
    Ok(())
}

/// A branch's short name, as in `refs/heads/<name>`.
pub(crate) fn branch_name(s: &str) -> Result<(), &'static str> {
    git_ref(&format!("refs/heads/{s}"))
}

/// An `http(s)://` URL without whitespace or control characters. The agent hands it to
/// `git clone`; other schemes (`file://`, `ext::`) or a leading `-` could make git do
/// something else entirely.
pub(crate) fn clone_url(s: &str) -> Result<(), &'static str> {
    if s.len() > MAX_URL_LEN {
        return Err("clone URL is too long");
    }
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or("a clone URL must start with https:// or http://")?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("a clone URL must name a host");
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a clone URL must not contain whitespace or control characters");
    }
    Ok(())
}

/// A web page to link to: an `http(s)://` URL as [`clone_url`] accepts, without credentials
/// (a page must never show them), query or fragment, so nothing but a repository's address
/// reaches a job's page and its steps' `CI_REPO_URL`.
pub(crate) fn web_url(s: &str) -> bool {
    let Ok(()) = clone_url(s) else { return false };
    let rest = s.split_once("://").map_or("", |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    !authority.contains('@') && !s.contains(['?', '#', '"', '<', '>', '\\'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_urls() {
        for good in [
            "https://git.example/acme/app",
            "http://127.0.0.1:3000/acme/app",
        ] {
            assert!(web_url(good), "{good}");
        }
        for bad in [
            "",
            "ftp://git.example/acme/app",
            "javascript:alert(1)",
            "https://user:pw@git.example/acme/app",
            "https://token@git.example/acme/app",
            "https://git.example/acme/app?x=1",
            "https://git.example/acme/app#top",
            "https://git.example/acme/\"onmouseover=x",
            "https://git.example/a b",
            "https:///acme/app",
        ] {
            assert!(!web_url(bad), "{bad}");
        }
    }

    #[test]
    fn shas() {
        assert!(sha(&"a".repeat(40)).is_ok());
        assert!(sha(&"0123456789ABCDEFabcdef".repeat(3)[..64]).is_ok());
        for bad in ["", "abc", &"a".repeat(41), &"g".repeat(40), &"a".repeat(63)] {
            assert!(sha(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repo_names() {
        for good in [
            "owner/name",
            "Test-CI/multi-line-secrets",
            "a_b/c.d",
            "o/x.git",
        ] {
            assert!(repo_full_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "owner",
            "/name",
            "owner/",
            "a/b/c",
            "../etc",
            "owner/..",
            "owner/.git",
            ".hidden/name",
            "own er/name",
            "owner/na%2fme",
            "owner\\name/x",
            "ownér/name",
            &format!("o/{}", "n".repeat(MAX_REPO_LEN)),
        ] {
            assert!(repo_full_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refs() {
        for good in [
            "refs/heads/main",
            "refs/heads/feature/x-1",
            "refs/tags/v1.0.0",
            "refs/pull/3/head",
            "refs/heads/ünïcode",
            "refs/heads/a.b",
        ] {
            assert!(git_ref(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "main",
            "-refs/heads/x",
            "refs/heads/-x",
            "refs/heads/a..b",
            "refs/heads/a b",
            "refs/heads/a\tb",
            "refs/heads/a\u{7f}",
            "refs/heads/a~1",
            "refs/heads/a^",
            "refs/heads/a:b",
            "refs/heads/a?",
            "refs/heads/a*",
            "refs/heads/a[",
            "refs/heads/a\\b",
            "refs/heads/",
            "refs/heads//x",
            "refs/heads/.x",
            "refs/heads/x.lock",
            "refs/heads/x.",
            "refs/heads/a@{1}",
            &format!("refs/heads/{}", "x".repeat(MAX_REF_LEN)),
        ] {
            assert!(git_ref(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn branch_names() {
        assert!(branch_name("main").is_ok());
        assert!(branch_name("feature/x").is_ok());
        for bad in ["", "-main", "a..b", "a b", "/main", "main/"] {
            assert!(branch_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn clone_urls() {
        for good in [
            "https://codeberg.org/meisam/woodpecktester.git",
            "http://127.0.0.1:3000/Test-CI/multi-line-secrets.git",
        ] {
            assert!(clone_url(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "git@host:o/r.git",
            "file:///etc",
            "ext::sh -c touch% /tmp/pwned",
            "-uhttps://x",
            "https://",
            "https:///path",
            "https://host/a b",
            "https://host/a\nb",
        ] {
            assert!(clone_url(bad).is_err(), "{bad:?}");
        }
    }
}
