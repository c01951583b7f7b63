//! Image references as they are handed to buildah.

/// Rejects what buildah would misread: an empty or blank name, or one starting with `-` (an
/// option). Everything else is buildah's to judge.
pub(crate) fn check(what: &str, reference: &str) -> Result<(), String> {
    if reference.is_empty()
        || reference.starts_with('-')
        || reference
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("invalid {what} {reference:?}"));
    }
    Ok(())
}

/// `registry/name:tag` -> `registry/name`: what a digest is appended to.
pub(crate) fn repository(reference: &str) -> &str {
    let name = reference.split('@').next().unwrap_or(reference);
    let last = name.rfind('/').map_or(0, |i| i + 1);
    match name[last..].rfind(':') {
        Some(colon) => &name[..last + colon],
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_drops_tag_and_digest_but_not_port() {
        assert_eq!(
            repository("127.0.0.1:5000/acme/app:abc"),
            "127.0.0.1:5000/acme/app"
        );
        assert_eq!(
            repository("127.0.0.1:5000/acme/app"),
            "127.0.0.1:5000/acme/app"
        );
        assert_eq!(repository("app:1"), "app");
        assert_eq!(repository("r.io/app@sha256:00"), "r.io/app");
    }

    #[test]
    fn rejects_option_like_and_blank_references() {
        assert!(check("tag", "--authfile=/x").is_err());
        assert!(check("tag", "a b").is_err());
        assert!(check("tag", "").is_err());
        assert!(check("tag", "r.io/a:b").is_ok());
    }
}
