//! The `infra/` tree: embedded in the binary, or read from a directory a user has edited.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::InfraError;

/// The files of `infra/` at build time, as `(path below infra/, contents)`.
const EMBEDDED: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/embedded_infra.rs"));

/// YAML files keyed by their `/`-separated path below the tree's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    files: BTreeMap<String, String>,
}

impl Tree {
    /// The manifests this version of raibid was built and tested with.
    pub fn embedded() -> Self {
        Self {
            files: EMBEDDED
                .iter()
                .map(|(path, text)| ((*path).to_owned(), (*text).to_owned()))
                .collect(),
        }
    }

    /// A checkout's (possibly edited) `infra/` directory; only `.yaml`/`.yml` files are read.
    pub fn from_dir(root: &Path) -> Result<Self, InfraError> {
        let mut files = BTreeMap::new();
        read_dir(root, root, &mut files)?;
        Ok(Self { files })
    }

    pub fn from_files(files: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            files: files.into_iter().collect(),
        }
    }

    pub fn read(&self, path: &str) -> Option<&str> {
        self.files.get(path).map(String::as_str)
    }

    pub fn files(&self) -> impl Iterator<Item = (&str, &str)> {
        self.files.iter().map(|(p, t)| (p.as_str(), t.as_str()))
    }

    /// Replaces or adds one file (tests break manifests on purpose this way).
    pub fn with_file(mut self, path: &str, text: impl Into<String>) -> Self {
        self.files.insert(path.to_owned(), text.into());
        self
    }

    pub fn is_dir(&self, path: &str) -> bool {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        self.files.keys().any(|p| p.starts_with(&prefix))
    }

    /// Every directory that holds a `kustomization.yaml`, sorted.
    pub fn kustomization_dirs(&self) -> Vec<String> {
        let mut dirs: Vec<String> = self
            .files
            .keys()
            .filter_map(|p| p.strip_suffix("/kustomization.yaml"))
            .map(str::to_owned)
            .collect();
        dirs.sort();
        dirs
    }
}

fn read_dir(
    root: &Path,
    dir: &Path,
    files: &mut BTreeMap<String, String>,
) -> Result<(), InfraError> {
    let io = |path: &Path, source| InfraError::Io {
        path: path.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path: PathBuf = entry.map_err(|e| io(dir, e))?.path();
        if path.is_dir() {
            read_dir(root, &path, files)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
            let relative = path
                .strip_prefix(root)
                .expect("walked from root")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            files.insert(relative, text);
        }
    }
    Ok(())
}

/// Joins and normalizes `base/../x` style paths inside the tree.
pub fn join(dir: &str, relative: &str) -> Result<String, String> {
    let mut parts: Vec<&str> = if dir.is_empty() {
        Vec::new()
    } else {
        dir.split('/').collect()
    };
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("{relative} leaves the infra tree"));
                }
            }
            other => parts.push(other),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_tree_is_the_checkout() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra");
        assert_eq!(
            Tree::embedded(),
            Tree::from_dir(&root).unwrap(),
            "infra/ changed since the build; cargo rebuilds the embedded copy on the next build"
        );
    }

    #[test]
    fn joins_relative_paths() {
        assert_eq!(
            join("overlays/dev/redis", "../../../base/redis").unwrap(),
            "base/redis"
        );
        assert_eq!(
            join("flux", "./kustomizations.yaml").unwrap(),
            "flux/kustomizations.yaml"
        );
        assert!(join("flux", "../../etc").is_err());
    }
}
