//! Checks for the short strings a pipeline names things with.

/// Step names show up in log lines, the UI and commit-status contexts; a newline or an
/// unbounded length would break each of those.
const MAX_STEP_NAME: usize = 100;

/// Environment variable and secret names. Shells cannot reference anything else as `$NAME`, so a
/// name outside `[A-Za-z_][A-Za-z0-9_]*` would be a variable the step could never read.
pub(crate) fn check_env_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid_start = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if valid_start && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid variable name: use letters, digits and '_', not starting with a digit"
        ))
    }
}

pub(crate) fn step_name(name: &str) -> Result<String, String> {
    if name.trim().is_empty() {
        return Err("a step name may not be empty".to_owned());
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "step name {name:?} contains a control character (a newline?); use a short one-line name"
        ));
    }
    if name.chars().count() > MAX_STEP_NAME {
        return Err(format!(
            "step name is longer than {MAX_STEP_NAME} characters; use a short name"
        ));
    }
    Ok(name.to_owned())
}

/// Container image references are passed to the runtime as one argument; whitespace means the
/// user put something else there (often a command).
pub(crate) fn image_ref(image: &str) -> Result<String, String> {
    if image.is_empty() {
        return Err("the image may not be empty; remove the key to use the default".to_owned());
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{image:?} is not an image reference (it contains spaces); commands belong in `run`"
        ));
    }
    Ok(image.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names() {
        for ok in ["A", "_", "foo_BAR_9", "_1"] {
            assert!(check_env_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "É", "A.B", "A=B"] {
            assert!(check_env_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn step_names() {
        assert_eq!(step_name("build & test").unwrap(), "build & test");
        assert!(step_name("").is_err());
        assert!(step_name("   ").is_err());
        assert!(step_name("a\nb").is_err());
        assert!(step_name(&"x".repeat(101)).is_err());
        assert!(step_name(&"é".repeat(100)).is_ok());
    }

    #[test]
    fn image_refs() {
        assert!(image_ref("rust:1.85").is_ok());
        assert!(image_ref("registry.local:5000/team/img@sha256:abc").is_ok());
        assert!(image_ref("").is_err());
        assert!(image_ref("cargo build").is_err());
    }
}
