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

/// Whether the agent keeps `name` for itself: it drops such names from the pipeline's and the
/// steps' `env` and from matrix variables. Mirrors `is_reserved` in raibid-agent's `env.rs`
/// (`RAIBID_*` except `RAIBID_MATRIX`); `CI` and `CI_*` may be overridden, as in Woodpecker.
fn reserved(name: &str) -> bool {
    name.starts_with("RAIBID_") && name != "RAIBID_MATRIX"
}

/// A variable a step will see: an `env:` name, which the agent would drop if reserved.
pub(crate) fn check_step_env_name(name: &str) -> Result<(), String> {
    check_env_name(name)?;
    if reserved(name) {
        return Err(format!(
            "{name:?}: RAIBID_* names are set by the agent (the job's commit, workspace, ...), \
             which ignores a pipeline's value for them; choose another name"
        ));
    }
    Ok(())
}

/// A matrix variable: besides the reserved names, `RAIBID_MATRIX`, which the agent sets to the
/// variant's name over any variable of that name.
pub(crate) fn check_matrix_name(name: &str) -> Result<(), String> {
    check_step_env_name(name)?;
    if name == "RAIBID_MATRIX" {
        return Err(
            "\"RAIBID_MATRIX\": RAIBID_* names are set by the agent (RAIBID_MATRIX is the \
             variant's name, like `RUST=1.80,TARGET=x86_64`); choose another name"
                .to_owned(),
        );
    }
    Ok(())
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
    if image.starts_with('-') {
        return Err(format!(
            "{image:?} is not an image reference (it starts with '-', like an option); give an \
             image name like rust:1.85"
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
        for option in ["--privileged", "-v", "-"] {
            let e = image_ref(option).unwrap_err();
            assert!(e.contains("starts with '-'"), "{option}: {e}");
        }
        assert!(image_ref("a-b:1").is_ok());
    }

    /// Exactly what the agent's `is_reserved` drops, plus `RAIBID_MATRIX` for matrix variables.
    #[test]
    fn reserved_names() {
        for ok in [
            "CI",
            "CI_COMMIT_SHA",
            "RAIBID",
            "RAIBIDX",
            "MY_RAIBID_X",
            "RAIBID_MATRIX",
        ] {
            assert!(check_step_env_name(ok).is_ok(), "{ok}");
        }
        for bad in ["RAIBID_", "RAIBID_SHA", "RAIBID_WORKSPACE", "RAIBID_X"] {
            let e = check_step_env_name(bad).unwrap_err();
            assert!(
                e.contains("RAIBID_* names are set by the agent"),
                "{bad}: {e}"
            );
            assert!(check_matrix_name(bad).is_err(), "{bad}");
        }
        assert!(check_matrix_name("RAIBID_MATRIX").is_err());
        assert!(check_matrix_name("CI").is_ok());
        assert!(check_step_env_name("1A").is_err());
    }
}
