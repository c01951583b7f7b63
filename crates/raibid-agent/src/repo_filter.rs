//! `agent.repos`: the repositories whose jobs an agent runs.
//!
//! A pipeline names its pool (`pool:`), so the pool alone no longer says which repositories
//! reach an agent; the agents of a pool with deployment secrets or scarce hardware check for
//! themselves, as GitLab Runner's runners locked to projects do.

use globset::{GlobSet, GlobSetBuilder};

#[derive(Debug, Clone)]
pub struct RepoFilter {
    set: GlobSet,
    globs: Vec<String>,
}

impl RepoFilter {
    /// Every repository (`["*"]`, the default).
    pub fn any() -> Self {
        Self::new(&["*".to_owned()]).expect("* is a glob")
    }

    /// Globs over `owner/name`, case ignored as forges resolve names.
    pub fn new(globs: &[String]) -> Result<Self, globset::Error> {
        let mut builder = GlobSetBuilder::new();
        for glob in globs {
            builder.add(raibid_config::repo_glob(glob)?);
        }
        Ok(Self {
            set: builder.build()?,
            globs: globs.to_vec(),
        })
    }

    pub fn allows(&self, repo: &str) -> bool {
        self.set.is_match(repo)
    }

    /// The globs as configured, for messages.
    pub fn globs(&self) -> &[String] {
        &self.globs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_owner_and_name_ignoring_case() {
        let only = RepoFilter::new(&["acme/*".into(), "ops/deploy".into()]).unwrap();
        assert!(only.allows("acme/app"));
        assert!(only.allows("ACME/App"));
        assert!(only.allows("ops/deploy"));
        assert!(!only.allows("ops/other"));
        assert!(!only.allows("mallory/acme"));
        assert!(RepoFilter::any().allows("anyone/anything"));
        assert!(!RepoFilter::new(&[]).unwrap().allows("acme/app"));
    }
}
