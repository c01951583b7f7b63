//! The private files buildah reads during one build: registry credentials, registry settings,
//! the build context's ignore patterns and the build's secrets.
//!
//! All are written for every build and always passed, so a build never falls back on
//! `/etc/containers/registries.conf` or on logins of the agent's user: a pipeline must not be
//! able to pull or push with credentials the operator did not give to raibid. `--authfile` alone
//! does not keep those away (containers/image also reads `$XDG_CONFIG_HOME/containers/auth.json`,
//! `$DOCKER_CONFIG/config.json`, `~/.docker/config.json` and `$REGISTRY_AUTH_FILE`), so buildah
//! also runs with [`BuildFiles::home`] as its `HOME` and every such variable pointing into it.
//! The ignore file is a copy because buildah, as root, follows a `.dockerignore` that is a link
//! (to `/dev/zero`, to a file of the agent's) and never opens the context's own when given one.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::RegistryAuth;

pub(crate) struct BuildFiles {
    /// Created 0700; removed with everything in it on drop.
    dir: tempfile::TempDir,
}

impl BuildFiles {
    pub(crate) fn write(
        auths: &[&RegistryAuth],
        insecure: &[String],
        ignore: &[u8],
        secrets: &BTreeMap<String, String>,
        private: Option<&Path>,
    ) -> io::Result<Self> {
        let dir = crate::private_dir::private_tempdir("raibid-build-", private)?;
        let files = Self { dir };
        private_file(
            files.authfile(),
            auth_json(auths.iter().copied()).as_bytes(),
        )?;
        private_file(
            files.registries_conf(),
            registries_conf(insecure).as_bytes(),
        )?;
        private_file(files.ignore_file(), ignore)?;
        if !secrets.is_empty() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(files.dir.path().join("secrets"))?;
            for (name, value) in secrets {
                private_file(files.secret(name), value.as_bytes())?;
            }
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(files.home())?;
        Ok(files)
    }

    pub(crate) fn authfile(&self) -> PathBuf {
        self.dir.path().join("auth.json")
    }

    pub(crate) fn registries_conf(&self) -> PathBuf {
        self.dir.path().join("registries.conf")
    }

    /// For `--ignorefile`: the patterns of the context's `.containerignore` or `.dockerignore`.
    pub(crate) fn ignore_file(&self) -> PathBuf {
        self.dir.path().join("ignore")
    }

    /// The file of build secret `name` (a variable name), for `--secret id=NAME,src=...`.
    pub(crate) fn secret(&self, name: &str) -> PathBuf {
        self.dir.path().join("secrets").join(name)
    }

    /// buildah's `HOME` (and the directory its configuration variables point into): empty, so
    /// none of the agent user's logins or container settings apply.
    pub(crate) fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// Where `buildah bud --iidfile` writes the ID of the image it built.
    pub(crate) fn iid_file(&self) -> PathBuf {
        self.dir.path().join("image-id")
    }

    /// Where `buildah push` writes the digest of the `n`th push.
    pub(crate) fn digest_file(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("digest-{n}"))
    }

    /// A new private file for the standard output of the `n`th base image pull of a build
    /// without network: the ID of the image pulled.
    pub(crate) fn pulled_id_file(&self, n: usize) -> io::Result<(PathBuf, File)> {
        let path = self.dir.path().join(format!("pulled-{n}"));
        let file = private(&path)?;
        Ok((path, file))
    }

    /// The Containerfile a build without network reads: its own, naming its base images by ID.
    pub(crate) fn containerfile(&self) -> PathBuf {
        self.dir.path().join("Containerfile")
    }

    /// Writes [`BuildFiles::containerfile`], once.
    pub(crate) fn write_containerfile(&self, text: &str) -> io::Result<()> {
        private_file(self.containerfile(), text.as_bytes())
    }
}

/// A registry name that can go into registries.conf unquoted by anything but `"`.
pub(crate) fn check_registry_host(host: &str) -> Result<(), String> {
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '/');
    if host.is_empty() || host.starts_with('-') || !host.chars().all(fine) {
        return Err(format!("invalid registry name {host:?}"));
    }
    Ok(())
}

/// The `auth` field is base64 of `user:password`, as `docker login` writes it.
pub(crate) fn encoded_credentials(auth: &RegistryAuth) -> String {
    STANDARD.encode(format!("{}:{}", auth.username, auth.password))
}

/// `{"auths": {...}}`: containers' `auth.json` and docker's `config.json` alike.
pub(crate) fn auth_json<'a>(logins: impl IntoIterator<Item = &'a RegistryAuth>) -> String {
    let mut auths = serde_json::Map::new();
    // A later login of the same host replaces an earlier one.
    for a in logins {
        auths.insert(
            a.host.clone(),
            serde_json::json!({ "auth": encoded_credentials(a) }),
        );
    }
    serde_json::json!({ "auths": auths }).to_string()
}

/// Only the listed registries may be reached over plain HTTP. Unqualified names (`FROM debian`)
/// resolve on Docker Hub, as Dockerfiles written for Docker expect.
fn registries_conf(insecure: &[String]) -> String {
    let mut conf = String::from("unqualified-search-registries = [\"docker.io\"]\n");
    for host in insecure {
        conf.push_str(&format!(
            "\n[[registry]]\nlocation = \"{host}\"\ninsecure = true\n"
        ));
    }
    conf
}

/// A new file (0600) holding `contents`; fails if it exists.
pub(crate) fn private_file(path: PathBuf, contents: &[u8]) -> io::Result<()> {
    private(&path)?.write_all(contents)
}

/// A new file, 0600.
fn private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn credentials_live_in_a_private_file() {
        let auth = RegistryAuth {
            host: "r.example:5000".into(),
            username: "bot".into(),
            password: "pa:ss".into(),
        };
        let secrets = BTreeMap::from([("NPM_TOKEN".to_owned(), "npm-123456".to_owned())]);
        let files = BuildFiles::write(
            &[&auth],
            &["127.0.0.1:5000".into()],
            b"target\n",
            &secrets,
            None,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(files.secret("NPM_TOKEN")).unwrap(),
            "npm-123456"
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(files.authfile()).unwrap()).unwrap();
        assert_eq!(
            json["auths"]["r.example:5000"]["auth"],
            STANDARD.encode("bot:pa:ss")
        );
        assert_eq!(std::fs::read(files.ignore_file()).unwrap(), b"target\n");
        for path in [
            files.authfile(),
            files.registries_conf(),
            files.ignore_file(),
            files.secret("NPM_TOKEN"),
        ] {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
        let conf = std::fs::read_to_string(files.registries_conf()).unwrap();
        assert!(conf.contains("location = \"127.0.0.1:5000\"\ninsecure = true"));
        let dir = files.authfile().parent().unwrap().to_path_buf();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(files);
        assert!(!dir.exists());
    }

    #[test]
    fn no_credentials_means_an_empty_auth_file() {
        let files = BuildFiles::write(&[], &[], b"", &BTreeMap::new(), None).unwrap();
        assert_eq!(
            std::fs::read_to_string(files.authfile()).unwrap(),
            r#"{"auths":{}}"#
        );
    }

    #[test]
    fn registry_names_cannot_inject_settings() {
        assert!(check_registry_host("127.0.0.1:5000").is_ok());
        assert!(check_registry_host("r.io\"\ninsecure = true").is_err());
        assert!(check_registry_host("").is_err());
    }
}
