//! Image references as Docker and containerd read them (`alpine`, `ghcr.io/o/i:tag`,
//! `127.0.0.1:5000/x@sha256:...`).

use std::fmt;

use super::PreflightError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    /// As written (`docker.io` for Docker Hub).
    pub registry: String,
    /// `library/alpine` for official Docker Hub images.
    pub repository: String,
    /// A tag or a `sha256:` digest.
    pub reference: String,
}

impl ImageReference {
    pub fn parse(image: &str) -> Result<Self, PreflightError> {
        let bad = |reason: &str| PreflightError::BadReference {
            image: image.to_owned(),
            reason: reason.to_owned(),
        };
        if image.is_empty() || image.contains(char::is_whitespace) {
            return Err(bad("empty or contains whitespace"));
        }
        let (name, digest) = match image.split_once('@') {
            Some((name, digest)) if digest.contains(':') => (name, Some(digest)),
            Some(_) => return Err(bad("a digest looks like sha256:<hex>")),
            None => (image, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_owned(), rest.to_owned())
            }
            _ => ("docker.io".to_owned(), name.to_owned()),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo.to_owned(), Some(tag.to_owned())),
            _ => (path, None),
        };
        if repository.is_empty() || repository.split('/').any(str::is_empty) {
            return Err(bad("missing repository name"));
        }
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad("repository names are lowercase"));
        }
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let reference = match (digest, tag) {
            (Some(digest), _) => digest.to_owned(),
            (None, Some(tag)) if !tag.is_empty() => tag,
            (None, Some(_)) => return Err(bad("empty tag")),
            (None, None) => "latest".to_owned(),
        };
        Ok(Self {
            registry,
            repository,
            reference,
        })
    }

    /// Host that serves the v2 API (Docker Hub's differs from its name).
    pub fn api_host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// Loopback registries speak plain HTTP, as Docker and containerd assume.
    pub fn is_loopback(&self) -> bool {
        let host = self
            .registry
            .rsplit_once(':')
            .map_or(self.registry.as_str(), |(h, _)| h);
        matches!(host, "localhost" | "127.0.0.1" | "[::1]")
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let separator = if self.reference.contains(':') {
            '@'
        } else {
            ':'
        };
        write!(
            f,
            "{}/{}{separator}{}",
            self.registry, self.repository, self.reference
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(image: &str) -> (String, String, String) {
        let r = ImageReference::parse(image).unwrap();
        (r.registry, r.repository, r.reference)
    }

    #[test]
    fn docker_hub_shorthands() {
        assert_eq!(
            parse("alpine"),
            ("docker.io".into(), "library/alpine".into(), "latest".into())
        );
        assert_eq!(
            parse("bitnami/redis:7"),
            ("docker.io".into(), "bitnami/redis".into(), "7".into())
        );
        assert_eq!(
            ImageReference::parse("alpine").unwrap().api_host(),
            "registry-1.docker.io"
        );
    }

    #[test]
    fn registries_with_ports_and_digests() {
        assert_eq!(
            parse("127.0.0.1:5000/ci/tool:1.2"),
            ("127.0.0.1:5000".into(), "ci/tool".into(), "1.2".into())
        );
        assert_eq!(
            parse("ghcr.io/o/i@sha256:abc"),
            ("ghcr.io".into(), "o/i".into(), "sha256:abc".into())
        );
        assert!(
            ImageReference::parse("127.0.0.1:5000/x")
                .unwrap()
                .is_loopback()
        );
        assert!(!ImageReference::parse("ghcr.io/o/i").unwrap().is_loopback());
        assert_eq!(
            ImageReference::parse("ghcr.io/o/i@sha256:abc")
                .unwrap()
                .to_string(),
            "ghcr.io/o/i@sha256:abc"
        );
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["", "a b", "Upper/Case", "x:", "ghcr.io//x", "x@abc"] {
            assert!(ImageReference::parse(bad).is_err(), "{bad:?}");
        }
    }
}
