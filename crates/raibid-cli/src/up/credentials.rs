//! Secrets `raibid up` makes up for itself and keeps in its data directory, so that a restart
//! keeps working with webhooks already configured in the forge and tokens already exported.

use std::path::Path;

use anyhow::Context;
use rand::RngCore;

/// Reads `path`, or creates it (mode 0600) with a new random value. An existing file that other
/// users could read (left by an older version, or copied in) is made private first: refusing
/// would only push the user to a manual chmod of a value that may already have leaked, while
/// fixing it at least closes the door from now on, and the log line says it happened.
pub fn load_or_create(path: &Path) -> anyhow::Result<String> {
    if path.exists() {
        crate::private_files::restrict(path)?;
    }
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let value = random_secret();
    crate::private_files::write(path, &format!("{value}\n"))?;
    Ok(value)
}

/// 24 random bytes in hex: a password nobody types.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn created_once_then_reused_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let first = load_or_create(&path).unwrap();
        assert_eq!(first.len(), 48);
        assert_eq!(load_or_create(&path).unwrap(), first);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_existing_file_others_can_read_is_made_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "kept\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load_or_create(&path).unwrap(), "kept");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
