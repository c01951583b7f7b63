//! Which repositories may trigger builds, which secret signs their webhooks and which pool
//! their jobs go to, compiled once.
//!
//! `Config::pool_for_repo` compiles every rule's glob on each call; the webhook path runs
//! thousands of times a second, so the globs are compiled at start-up instead, with the same
//! first-match-wins semantics.
//!
//! Repository names are compared ignoring case everywhere: Gitea, Forgejo and GitHub resolve
//! `owner/name` case-insensitively, so a body naming `ACME/app` is about `acme/app`, and a
//! case-sensitive rule would let it fall back to the global secret or another pool.

use std::collections::HashMap;

use globset::{Glob, GlobMatcher, GlobSet, GlobSetBuilder};
use raibid_config::{Config, Secret};
use raibid_model::PoolName;

use crate::ServerError;

pub(crate) struct RepoRules {
    allowed: GlobSet,
    pools: Vec<(GlobMatcher, PoolName)>,
    default_pool: PoolName,
    /// `server.repo_secrets` keyed by lowercased name (the loader lowercases already; a config
    /// built in code may not have gone through it).
    secrets: HashMap<String, Secret>,
}

impl RepoRules {
    pub fn new(config: &Config) -> Result<Self, ServerError> {
        let mut allowed = GlobSetBuilder::new();
        for pattern in &config.server.allowed_repos {
            allowed.add(glob("server.allowed_repos", pattern)?);
        }
        let allowed = allowed.build().map_err(|source| ServerError::Glob {
            setting: "server.allowed_repos",
            glob: config.server.allowed_repos.join(", "),
            source,
        })?;
        let pools = config
            .server
            .pool_rules
            .iter()
            .map(|rule| {
                Ok((
                    glob("server.pool_rules", &rule.repo)?.compile_matcher(),
                    rule.pool.clone(),
                ))
            })
            .collect::<Result<_, ServerError>>()?;
        let secrets = config
            .server
            .repo_secrets
            .iter()
            .map(|(repo, secret)| (repo.to_ascii_lowercase(), secret.clone()))
            .collect();
        Ok(Self {
            allowed,
            pools,
            default_pool: config.server.default_pool.clone(),
            secrets,
        })
    }

    /// The repository's own webhook secret, if it has one.
    pub fn secret_for(&self, repo: &str) -> Option<&Secret> {
        if self.secrets.is_empty() {
            return None;
        }
        self.secrets.get(&repo.to_ascii_lowercase())
    }

    pub fn is_allowed(&self, repo: &str) -> bool {
        self.allowed.is_match(repo)
    }

    pub fn pool_for(&self, repo: &str) -> &PoolName {
        self.pools
            .iter()
            .find(|(matcher, _)| matcher.is_match(repo))
            .map_or(&self.default_pool, |(_, pool)| pool)
    }
}

fn glob(setting: &'static str, pattern: &str) -> Result<Glob, ServerError> {
    raibid_config::repo_glob(pattern).map_err(|source| ServerError::Glob {
        setting,
        glob: pattern.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use raibid_config::PoolRule;

    use super::*;

    fn pool(name: &str) -> PoolName {
        PoolName::new(name).unwrap()
    }

    #[test]
    fn pools_match_what_the_config_itself_decides() {
        let mut config = Config::default();
        config.server.default_pool = pool("small");
        config.server.pool_rules = vec![
            PoolRule {
                repo: "ml/*".into(),
                pool: pool("gpu"),
            },
            PoolRule {
                repo: "*/big-*".into(),
                pool: pool("large"),
            },
            PoolRule {
                repo: "ml/big-model".into(),
                pool: pool("never"),
            },
        ];
        let rules = RepoRules::new(&config).unwrap();
        for repo in [
            "ml/x",
            "ml/big-model",
            "acme/big-app",
            "acme/app",
            "a/b/c",
            "ML/x",
            "Acme/Big-App",
        ] {
            assert_eq!(rules.pool_for(repo), &config.pool_for_repo(repo), "{repo}");
        }
        assert_eq!(rules.pool_for("ML/x"), &pool("gpu"));
    }

    #[test]
    fn allow_list_is_a_set_of_globs() {
        let mut config = Config::default();
        config.server.allowed_repos = vec!["acme/*".into(), "friends/tool".into()];
        let rules = RepoRules::new(&config).unwrap();
        assert!(rules.is_allowed("acme/app"));
        assert!(rules.is_allowed("friends/tool"));
        assert!(!rules.is_allowed("friends/other"));
        assert!(!rules.is_allowed("evil/app"));
        assert!(rules.is_allowed("ACME/App"));
        assert!(rules.is_allowed("Friends/Tool"));

        config.server.allowed_repos = Vec::new();
        assert!(!RepoRules::new(&config).unwrap().is_allowed("acme/app"));
    }

    #[test]
    fn invalid_globs_are_refused_at_start() {
        let mut config = Config::default();
        config.server.allowed_repos = vec!["acme/[".into()];
        let err = RepoRules::new(&config).err().unwrap();
        assert!(err.to_string().contains("server.allowed_repos"), "{err}");
    }
}
