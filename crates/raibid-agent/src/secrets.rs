//! Which secrets a step may see.
//!
//! A step gets a secret only if it names it, the repository is allowed to use it, and the job
//! is not a pull request from a fork (whose author controls the pipeline file) unless the
//! operator opted in. Secrets are the repository's own (`raibid secret set`, limited to the
//! events they were given to) or the agent's (`agent.secrets`, limited by
//! `agent.secret_repos`); a repository's secret wins over an agent's of the same name, as
//! Woodpecker's repository secrets win over its global ones. Every agent secret is masked in
//! every job's log, and every secret of a repository in each of its jobs' logs.

use std::collections::BTreeMap;

use globset::{GlobSet, GlobSetBuilder};
use raibid_model::SecretScope;
use raibid_model::{Event, Job};
use raibid_queue::{JobSecrets, Unopenable};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error(
        "secret {name} is neither a secret of repository {repo} or its owner (raibid secret set) \
         nor configured on this agent (agent.secrets)"
    )]
    Unknown { name: String, repo: String },
    #[error("secret {name} of {scope} cannot be read: {why}")]
    Unopenable {
        name: String,
        scope: SecretScope,
        why: Unopenable,
    },
    #[error(
        "secret {name} of {scope} is given only to jobs of pushes to branches {allowed}, and \
         this job is {what}"
    )]
    Branch {
        name: String,
        scope: SecretScope,
        allowed: String,
        what: String,
    },
    #[error(
        "secret {name} of {scope} is not given to {event} jobs (only to {allowed}; raibid \
         secret set --event changes that)"
    )]
    Event {
        name: String,
        scope: SecretScope,
        event: Event,
        allowed: String,
    },
    #[error("secret {name} is not available to repository {repo} (agent.secret_repos)")]
    RepoNotAllowed { name: String, repo: String },
    #[error(
        "secret {0} is withheld from pull requests from forks (set agent.secrets_for_forks to allow)"
    )]
    Fork(String),
    #[error("agent.secret_repos.{name}: invalid glob {glob:?}: {message}")]
    BadGlob {
        name: String,
        glob: String,
        message: String,
    },
}

#[derive(Debug, Clone, Default)]
pub struct SecretStore {
    values: BTreeMap<String, String>,
    repos: BTreeMap<String, GlobSet>,
    for_forks: bool,
}

impl SecretStore {
    pub fn new(
        values: BTreeMap<String, String>,
        repos: &BTreeMap<String, Vec<String>>,
        for_forks: bool,
    ) -> Result<Self, SecretError> {
        let mut compiled = BTreeMap::new();
        for (name, globs) in repos {
            let mut builder = GlobSetBuilder::new();
            for g in globs {
                // Forges resolve `owner/name` ignoring case, and so do the server's rules: a
                // job for `ACME/site` is `acme/site`'s.
                let glob = raibid_config::repo_glob(g).map_err(|e| SecretError::BadGlob {
                    name: name.clone(),
                    glob: g.clone(),
                    message: e.to_string(),
                })?;
                builder.add(glob);
            }
            compiled.insert(
                name.clone(),
                builder.build().map_err(|e| SecretError::BadGlob {
                    name: name.clone(),
                    glob: globs.join(","),
                    message: e.to_string(),
                })?,
            );
        }
        Ok(Self {
            values,
            repos: compiled,
            for_forks,
        })
    }

    /// The values of `names` for this job, or the first reason one of them is refused. A
    /// name the job's repository or its owner has a secret of (`job_secrets`, from
    /// `Queue::open_secrets`) is that secret, limited to its events; otherwise it is this
    /// agent's, limited to the repositories of `agent.secret_repos`. None goes to a pull
    /// request from a fork.
    pub fn resolve(
        &self,
        job: &Job,
        names: &[String],
        job_secrets: &JobSecrets,
    ) -> Result<BTreeMap<String, String>, SecretError> {
        let mut out = BTreeMap::new();
        for name in names {
            // The name as written, else one that differs only in case (Woodpecker's and
            // GitHub's secret names ignore it), the repository's and owner's first.
            let found = match (
                job_secrets.get_key_value(name),
                self.values.get_key_value(name),
            ) {
                (None, None) => (
                    one_ignoring_case(job_secrets, name),
                    one_ignoring_case(&self.values, name),
                ),
                exact => exact,
            };
            let value = match found.0 {
                Some((_, secret)) => {
                    let opened = secret
                        .opened
                        .as_ref()
                        .map_err(|why| SecretError::Unopenable {
                            name: name.clone(),
                            scope: secret.scope.clone(),
                            why: why.clone(),
                        })?;
                    if !opened.events.is_empty() && !opened.events.contains(&job.spec.event) {
                        let allowed: Vec<&str> = opened.events.iter().map(|e| e.as_str()).collect();
                        return Err(SecretError::Event {
                            name: name.clone(),
                            scope: secret.scope.clone(),
                            event: job.spec.event,
                            allowed: allowed.join(", "),
                        });
                    }
                    if !opened.branches.is_empty() {
                        let pushed = match job.spec.event {
                            Event::PullRequest => None,
                            _ => job.branch(),
                        };
                        if !pushed.is_some_and(|b| branch_matches(&opened.branches, b)) {
                            return Err(SecretError::Branch {
                                name: name.clone(),
                                scope: secret.scope.clone(),
                                allowed: opened.branches.join(", "),
                                what: match (job.spec.event, pushed) {
                                    (Event::PullRequest, _) => "a pull request's".to_owned(),
                                    (_, Some(branch)) => format!("of branch {branch}"),
                                    (_, None) => format!("of {}", job.spec.git_ref),
                                },
                            });
                        }
                    }
                    &opened.value
                }
                None => {
                    let (configured, value) = found.1.ok_or_else(|| SecretError::Unknown {
                        name: name.clone(),
                        repo: job.spec.repo.clone(),
                    })?;
                    if let Some(globs) = self.repos.get(configured)
                        && !globs.is_match(&job.spec.repo)
                    {
                        return Err(SecretError::RepoNotAllowed {
                            name: name.clone(),
                            repo: job.spec.repo.clone(),
                        });
                    }
                    value
                }
            };
            if !self.trusts(job) {
                return Err(SecretError::Fork(name.clone()));
            }
            out.insert(name.clone(), value.clone());
        }
        Ok(out)
    }

    /// The variables a step or service gets for the secrets of its `secrets:` (resolved): each
    /// under its name as written and, if that has lowercase letters, under its uppercase
    /// form too, as Woodpecker gives `secrets: [docker_username]` as `$DOCKER_USERNAME`.
    pub fn variables(
        names: &[String],
        resolved: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for name in names {
            if let Some(value) = resolved.get(name) {
                let upper = name.to_ascii_uppercase();
                // Never one of the agent's own variables (`raibid_sha` is no `RAIBID_SHA`).
                if !crate::env::is_reserved(&upper) {
                    out.insert(upper, value.clone());
                }
                out.insert(name.clone(), value.clone());
            }
        }
        out
    }

    /// Whether the job may act with what the operator entrusted to the agent: secrets, and the
    /// registry credentials that push images. A pull request from a fork runs a pipeline
    /// written by someone outside the repository, so only if `agent.secrets_for_forks` says so.
    pub fn trusts(&self, job: &Job) -> bool {
        !(job.spec.event == Event::PullRequest && job.spec.from_fork) || self.for_forks
    }

    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.values.values().map(String::as_str)
    }
}

/// Whether `branch` matches one of `globs` ([`raibid_config::branch_glob`]). A glob that does
/// not parse matches nothing: the server checked them when they were set.
fn branch_matches(globs: &[String], branch: &str) -> bool {
    globs.iter().any(|glob| {
        raibid_config::branch_glob(glob).is_ok_and(|g| g.compile_matcher().is_match(branch))
    })
}

/// The one entry whose key is `name` ignoring case; none if several are.
fn one_ignoring_case<'a, V>(
    map: &'a BTreeMap<String, V>,
    name: &str,
) -> Option<(&'a String, &'a V)> {
    let mut matching = map.iter().filter(|(key, _)| key.eq_ignore_ascii_case(name));
    match (matching.next(), matching.next()) {
        (Some(entry), None) => Some(entry),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raibid_model::{JobStatus, NewJob, PoolName};

    fn job(repo: &str, event: Event, from_fork: bool) -> Job {
        Job {
            id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
            spec: NewJob {
                repo: repo.into(),
                clone_url: "http://x".into(),
                git_ref: "refs/heads/main".into(),
                sha: "0".repeat(40),
                event,
                pool: PoolName::default(),
                forge: None,
                pr_number: None,
                from_fork,
                sender: None,
                delivery_id: None,
                env: Default::default(),
                retry_of: None,
                matrix_parent: None,
                target_branch: None,
                diff_base: None,
                schedule: None,
                needs: None,
                number: None,
                source_branch: None,
                pr_labels: Vec::new(),
                title: None,
                repo_url: None,
            },
            status: JobStatus::Running,
            attempt: 1,
            created_at: Default::default(),
            started_at: None,
            finished_at: None,
            agent: None,
            reason: None,
            cancel_requested: false,
            steps: vec![],
            images: vec![],
            children: Vec::new(),
            artifacts: None,
            tests: None,
            log_pruned: false,
            log_erased: None,
            concurrency: None,
            approved_by: None,
        }
    }

    fn store() -> SecretStore {
        let values = BTreeMap::from([
            ("DEPLOY_KEY".to_owned(), "k-123456".to_owned()),
            ("SHARED".to_owned(), "s-123456".to_owned()),
        ]);
        let repos = BTreeMap::from([("DEPLOY_KEY".to_owned(), vec!["acme/site".to_owned()])]);
        SecretStore::new(values, &repos, false).unwrap()
    }

    #[test]
    fn allowed_repo_gets_its_secret() {
        let got = store()
            .resolve(
                &job("acme/site", Event::Push, false),
                &["DEPLOY_KEY".into()],
                &JobSecrets::new(),
            )
            .unwrap();
        assert_eq!(got["DEPLOY_KEY"], "k-123456");
    }

    #[test]
    fn repository_globs_ignore_case() {
        let got = store()
            .resolve(
                &job("ACME/Site", Event::Push, false),
                &["DEPLOY_KEY".into()],
                &JobSecrets::new(),
            )
            .unwrap();
        assert_eq!(got["DEPLOY_KEY"], "k-123456");
    }

    #[test]
    fn another_repo_is_denied() {
        let err = store()
            .resolve(
                &job("evil/repo", Event::Push, false),
                &["DEPLOY_KEY".into()],
                &JobSecrets::new(),
            )
            .unwrap_err();
        assert!(matches!(err, SecretError::RepoNotAllowed { .. }));
    }

    #[test]
    fn forks_get_nothing_by_default() {
        let err = store()
            .resolve(
                &job("acme/site", Event::PullRequest, true),
                &["SHARED".into()],
                &JobSecrets::new(),
            )
            .unwrap_err();
        assert_eq!(err, SecretError::Fork("SHARED".into()));
        assert!(
            store()
                .resolve(
                    &job("acme/site", Event::PullRequest, false),
                    &["SHARED".into()],
                    &JobSecrets::new(),
                )
                .is_ok()
        );
    }

    #[test]
    fn forks_are_trusted_only_when_the_operator_opts_in() {
        let fork = job("acme/site", Event::PullRequest, true);
        assert!(!store().trusts(&fork));
        assert!(store().trusts(&job("acme/site", Event::PullRequest, false)));
        assert!(store().trusts(&job("acme/site", Event::Push, false)));
        let opted_in = SecretStore::new(BTreeMap::new(), &BTreeMap::new(), true).unwrap();
        assert!(opted_in.trusts(&fork));
    }

    #[test]
    fn unknown_secrets_are_named() {
        let err = store()
            .resolve(
                &job("a/b", Event::Push, false),
                &["NOPE".into()],
                &JobSecrets::new(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("NOPE"));
    }

    fn repo_secrets() -> JobSecrets {
        use raibid_queue::{JobSecret, OpenedSecret};
        let repo = SecretScope::Repo("acme/site".into());
        let secret = |value: &str, events: Vec<Event>| JobSecret {
            scope: repo.clone(),
            opened: Ok(OpenedSecret {
                value: value.into(),
                events,
                branches: vec![],
            }),
        };
        JobSecrets::from([
            ("SHARED".to_owned(), secret("repo-123456", vec![])),
            (
                "RELEASE_KEY".to_owned(),
                secret("rel-123456", vec![Event::Tag]),
            ),
            (
                "BROKEN".to_owned(),
                JobSecret {
                    scope: SecretScope::Owner("acme".into()),
                    opened: Err(Unopenable::Damaged),
                },
            ),
        ])
    }

    #[test]
    fn a_repository_secret_wins_over_the_agents_within_its_events() {
        let push = job("acme/site", Event::Push, false);
        let got = store()
            .resolve(
                &push,
                &["SHARED".into(), "DEPLOY_KEY".into()],
                &repo_secrets(),
            )
            .unwrap();
        assert_eq!(got["SHARED"], "repo-123456");
        assert_eq!(got["DEPLOY_KEY"], "k-123456");
        let err = store()
            .resolve(&push, &["RELEASE_KEY".into()], &repo_secrets())
            .unwrap_err();
        assert!(matches!(err, SecretError::Event { .. }), "{err}");
        assert!(err.to_string().contains("push jobs (only to tag"), "{err}");
        let tag = job("acme/site", Event::Tag, false);
        let got = store()
            .resolve(&tag, &["RELEASE_KEY".into()], &repo_secrets())
            .unwrap();
        assert_eq!(got["RELEASE_KEY"], "rel-123456");
    }

    #[test]
    fn repository_secrets_are_withheld_from_forks_and_unreadable_ones_say_why() {
        let fork = job("acme/site", Event::PullRequest, true);
        let err = store()
            .resolve(&fork, &["SHARED".into()], &repo_secrets())
            .unwrap_err();
        assert_eq!(err, SecretError::Fork("SHARED".into()));
        let push = job("acme/site", Event::Push, false);
        let err = store()
            .resolve(&push, &["BROKEN".into()], &repo_secrets())
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("secret BROKEN of owner acme cannot be read")
                && err.to_string().contains("set the secret again"),
            "{err}"
        );
        let err = store()
            .resolve(&push, &["NOPE".into()], &repo_secrets())
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("neither a secret of repository acme/site or its owner"),
            "{err}"
        );
    }

    #[test]
    fn a_name_may_differ_in_case_when_only_one_secret_matches() {
        let push = job("acme/site", Event::Push, false);
        // `shared` finds the repository's SHARED; `deploy_key` the agent's DEPLOY_KEY, whose
        // repository rule still applies.
        let got = store()
            .resolve(
                &push,
                &["shared".into(), "deploy_key".into()],
                &repo_secrets(),
            )
            .unwrap();
        assert_eq!(got["shared"], "repo-123456");
        assert_eq!(got["deploy_key"], "k-123456");
        let err = store()
            .resolve(
                &job("evil/repo", Event::Push, false),
                &["deploy_key".into()],
                &JobSecrets::new(),
            )
            .unwrap_err();
        assert!(matches!(err, SecretError::RepoNotAllowed { .. }), "{err}");
        // Two that differ only in case: neither is guessed.
        let values = BTreeMap::from([
            ("Token".to_owned(), "t-123456".to_owned()),
            ("TOKEN".to_owned(), "u-123456".to_owned()),
        ]);
        let ambiguous = SecretStore::new(values, &BTreeMap::new(), false).unwrap();
        assert!(matches!(
            ambiguous.resolve(&push, &["token".into()], &JobSecrets::new()),
            Err(SecretError::Unknown { .. })
        ));
        assert_eq!(
            ambiguous
                .resolve(&push, &["TOKEN".into()], &JobSecrets::new())
                .unwrap()["TOKEN"],
            "u-123456",
            "the exact name wins"
        );
    }

    #[test]
    fn lowercase_names_are_also_given_in_uppercase() {
        let resolved = BTreeMap::from([
            ("docker_password".to_owned(), "d-123456".to_owned()),
            ("raibid_sha".to_owned(), "r-123456".to_owned()),
            ("TOKEN".to_owned(), "t-123456".to_owned()),
        ]);
        let names: Vec<String> = resolved.keys().cloned().collect();
        let vars = SecretStore::variables(&names, &resolved);
        assert_eq!(vars["docker_password"], "d-123456");
        assert_eq!(vars["DOCKER_PASSWORD"], "d-123456");
        assert_eq!(vars["TOKEN"], "t-123456");
        assert!(vars.contains_key("raibid_sha"));
        assert!(
            !vars.contains_key("RAIBID_SHA"),
            "the agent's own variables stay its own"
        );
        assert_eq!(vars.len(), 4);
    }

    #[test]
    fn a_secret_for_some_branches_goes_only_to_pushes_to_them() {
        use raibid_queue::{JobSecret, OpenedSecret};
        let secrets = JobSecrets::from([(
            "DEPLOY".to_owned(),
            JobSecret {
                scope: SecretScope::Repo("acme/site".into()),
                opened: Ok(OpenedSecret {
                    value: "d-123456".into(),
                    events: vec![],
                    branches: vec!["main".into(), "release/*".into()],
                }),
            },
        )]);
        let on = |git_ref: &str, event: Event| {
            let mut j = job("acme/site", event, false);
            j.spec.git_ref = git_ref.into();
            j.spec.target_branch = Some("main".into());
            store().resolve(&j, &["DEPLOY".into()], &secrets)
        };
        assert!(on("refs/heads/main", Event::Push).is_ok());
        assert!(on("refs/heads/release/1.2", Event::Push).is_ok());
        assert!(on("refs/heads/main", Event::Manual).is_ok());
        for (git_ref, event, says) in [
            (
                "refs/heads/feature",
                Event::Push,
                "this job is of branch feature",
            ),
            (
                "refs/heads/release/1/x",
                Event::Push,
                "of branch release/1/x",
            ),
            ("refs/pull/3/head", Event::PullRequest, "a pull request's"),
            ("refs/tags/v1", Event::Tag, "of refs/tags/v1"),
        ] {
            let err = on(git_ref, event).unwrap_err();
            assert!(
                matches!(err, SecretError::Branch { .. }),
                "{git_ref}: {err}"
            );
            assert!(err.to_string().contains(says), "{err}");
            assert!(err.to_string().contains("main, release/*"), "{err}");
        }
    }
}
