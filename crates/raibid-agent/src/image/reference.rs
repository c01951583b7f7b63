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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_option_like_and_blank_references() {
        assert!(check("tag", "--authfile=/x").is_err());
        assert!(check("tag", "a b").is_err());
        assert!(check("tag", "").is_err());
        assert!(check("tag", "r.io/a:b").is_ok());
    }
}
