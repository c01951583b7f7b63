//! Checking out exactly the job's commit, through a per-repository bare mirror.
//!
//! The first job of a repository pays for `git clone --mirror`; later jobs fetch only when the
//! commit is not there yet. The workspace is then a new repository that borrows the mirror's
//! objects (`objects/info/alternates`, what `git clone --shared` writes; nothing is copied) with
//! the job's commit checked out: on the pushed branch for a branch push, as actions/checkout
//! does, detached otherwise. Two git processes on the warm path (`init`, `checkout`) instead of
//! the four a shared clone took (the clone alone started `git-upload-pack` through a shell to
//! copy refs the job does not need); tags come only when the pipeline asks (`clone: tags`).
//!
//! Every git invocation gets its arguments as argv, never through a shell, and credentials
//! travel in `GIT_CONFIG_*` environment variables: never in a URL, a config file or a log line.
//! They go only to git processes that talk to the job's remote, and there only to the clone
//! URL's own scheme, host and port (`http.<origin>/.extraHeader`): git hands its configuration
//! to every process it starts, so a global header would follow a submodule or LFS URL that the
//! repository's content picks to whatever host it names.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use nix::fcntl::{Flock, FlockArg};
use raibid_model::{Event, Job};
use sha2::{Digest, Sha256};
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("git {step} failed: {message}")]
    Git { step: &'static str, message: String },
    #[error("git {step} did not finish within {timeout:?}")]
    Timeout {
        step: &'static str,
        timeout: Duration,
    },
    #[error("commit {sha} is not in {url} (was the branch force-pushed?)")]
    MissingCommit { sha: String, url: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Whom a git invocation talks to, which decides the credentials and transports it gets.
#[derive(Clone, Copy)]
enum Reach<'a> {
    /// Local repositories only (init, checkout, cat-file, tags from the mirror): nothing to
    /// authenticate to.
    Local,
    /// The job's remote, at this clone URL: the token is scoped to its origin.
    Remote(&'a str),
    /// URLs the repository's content names (submodules, LFS) for a job with this clone URL:
    /// the token as for `Remote`, and local repositories only when the clone URL is local too.
    Named(&'a str),
}

impl Reach<'_> {
    /// `GIT_ALLOW_PROTOCOL`, which overrides every `protocol.*.allow`. A `.gitmodules` URL
    /// such as `/var/cache/raibid/git-mirrors/<other>.git` would copy another repository's
    /// mirror into the workspace, so content-named URLs may be local only when the job's own
    /// URL is (its submitter can read local repositories anyway).
    fn protocols(self) -> &'static str {
        const ALL: &str = "file:git:http:https:ssh";
        match self {
            Reach::Local => "file",
            Reach::Remote(_) => ALL,
            Reach::Named(url) if is_local(url) => ALL,
            Reach::Named(_) => "git:http:https:ssh",
        }
    }
}

/// What the checkout did, for the job log.
#[derive(Debug, Clone)]
pub struct CheckoutReport {
    /// The mirror's object directory, which the workspace borrows (`objects/info/alternates`):
    /// git in a step needs to read it, so sandboxes must show it (read-only) at this path.
    pub objects: PathBuf,
    pub mirror_created: bool,
    pub fetched: bool,
    pub duration: Duration,
}

/// What a job's commit changes, for `when: path` filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// Repository-relative paths with `/` separators, a renamed file under both its old and its
    /// new path. Empty for a commit that changes no file.
    Known(Vec<String>),
    /// Why they are not known, for the job log: path filters then match, so nothing is left
    /// out for want of knowing.
    Unknown(String),
}

/// How long fetching a base commit the mirror lacks may take. Path filters only save work, so
/// a slow remote must not hold the job up for the checkout's whole timeout.
const BASE_FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// `agent.mirror_expire_days`' default.
pub const DEFAULT_MIRROR_EXPIRY: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Clone)]
pub struct GitCheckout {
    cache_dir: PathBuf,
    token: Option<String>,
    timeout: Duration,
    /// The cap of the pipelines' `cache:` entries, kept under `<cache_dir>/jobs`: the cache
    /// directory is this type's, and it reaches the runner with it.
    job_cache_max_bytes: u64,
    /// Mirrors no checkout used for this long are removed (`agent.mirror_expire_days`).
    mirror_expiry: Option<Duration>,
}

impl GitCheckout {
    pub fn new(cache_dir: impl Into<PathBuf>, token: Option<String>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            token: token.filter(|t| !t.is_empty()),
            timeout: Duration::from_secs(600),
            job_cache_max_bytes: crate::job_cache::DEFAULT_JOB_CACHE_MAX_BYTES,
            mirror_expiry: Some(DEFAULT_MIRROR_EXPIRY),
        }
    }

    /// Removes mirrors no job used for `expiry` (at least [`crate::MIN_MIRROR_EXPIRY`]);
    /// `None` keeps them for ever.
    pub fn with_mirror_expiry(mut self, expiry: Option<Duration>) -> Self {
        self.mirror_expiry = expiry;
        self
    }

    /// Removes the mirrors no job has used within the expiry, and what killed clones left,
    /// if the cache directory's daily sweep is due and no other agent is at it: `None` when
    /// nothing was swept. Agents sharing the cache directory take turns.
    pub async fn expire_mirrors(&self) -> std::io::Result<Option<crate::MirrorSweep>> {
        let Some(expiry) = self.mirror_expiry else {
            return Ok(None);
        };
        let dir = self.cache_dir.clone();
        tokio::task::spawn_blocking(move || crate::mirror_expiry::sweep(&dir, expiry))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Caps the pipelines' job caches (`agent.job_cache_max_bytes`); 0 turns them off.
    pub fn with_job_cache_max_bytes(mut self, max_bytes: u64) -> Self {
        self.job_cache_max_bytes = max_bytes;
        self
    }

    /// The pipelines' job caches (`cache:`), beside the mirrors: agents that share the cache
    /// directory share them.
    pub fn job_cache(&self) -> crate::job_cache::JobCache {
        crate::job_cache::JobCache::new(self.cache_dir.join("jobs"), self.job_cache_max_bytes)
    }

    /// The bare mirror for a clone URL. Named from a hash of the URL (plus a readable, sanitized
    /// repo name), so no repository name can point outside the cache directory.
    pub fn mirror_path(&self, repo: &str, clone_url: &str) -> PathBuf {
        let digest = hex::encode(&Sha256::digest(clone_url.as_bytes())[..8]);
        let readable: String = repo
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        self.cache_dir.join(format!("{readable}-{digest}.git"))
    }

    /// Makes `dest` (which must not exist) a checkout of `job.spec.sha`.
    pub async fn checkout(&self, job: &Job, dest: &Path) -> Result<CheckoutReport, CheckoutError> {
        let started = Instant::now();
        let url = &job.spec.clone_url;
        let sha = &job.spec.sha;
        tokio::fs::create_dir_all(&self.cache_dir).await?;
        let mirror = self.mirror_path(&job.spec.repo, url);
        let lock = lock_mirror(&mirror).await?;

        let mut mirror_created = false;
        let mut fetched = false;
        if !mirror.join("HEAD").exists() {
            self.clone_mirror(url, &mirror).await?;
            mirror_created = true;
        }
        // A tag's job needs its tag in the mirror as well as its commit, for `git describe`
        // with `clone: tags` (see `fetch_tags`): a tag pushed onto a commit the mirror already
        // had (a release tag on a built `main`) is otherwise missing from it.
        let tag = job.spec.git_ref.starts_with("refs/tags/");
        if !self.has_commit(&mirror, sha).await?
            || (tag && !self.has_ref(&mirror, &job.spec.git_ref).await?)
        {
            remove_stale_locks(&mirror).await;
            let fetch = self
                .git(
                    Some(&mirror),
                    Reach::Remote(url),
                    "fetch",
                    &["fetch", "--prune", "--quiet", "origin"],
                )
                .await;
            match fetch {
                Ok(_) => {}
                Err(CheckoutError::Git { message, .. }) if is_lock_error(&message) => {
                    // A lock that was not a plain stale file (a directory, a file we may not
                    // remove): a new mirror is cheaper than a repository nobody can fetch into.
                    tracing::warn!(
                        mirror = %mirror.display(),
                        %message,
                        "fetch into the mirror failed on a lock; cloning the mirror again"
                    );
                    self.clone_mirror(url, &mirror).await?;
                    mirror_created = true;
                }
                Err(e) => return Err(e),
            }
            fetched = true;
            if !self.has_commit(&mirror, sha).await? {
                // Not under any ref (a force-pushed branch, a PR ref the mirror does not carry):
                // ask for the object itself, which servers allow for reachable commits.
                let by_sha = self
                    .git(
                        Some(&mirror),
                        Reach::Remote(url),
                        "fetch <sha>",
                        &["fetch", "--quiet", "origin", sha],
                    )
                    .await;
                if by_sha.is_err() || !self.has_commit(&mirror, sha).await? {
                    return Err(CheckoutError::MissingCommit {
                        sha: sha.clone(),
                        url: url.clone(),
                    });
                }
            }
        }
        drop(lock);

        let objects = self.new_workspace(dest, &mirror, url, sha).await?;
        let branch = job
            .spec
            .git_ref
            .strip_prefix("refs/heads/")
            .filter(|b| plain_branch_name(b));
        let mut checkout = vec!["checkout", "--quiet"];
        match branch {
            Some(branch) => checkout.extend(["-B", branch]),
            None => checkout.push("--detach"),
        }
        checkout.extend([sha.as_str(), "--"]);
        self.git(Some(dest), Reach::Local, "checkout", &checkout)
            .await?;
        Ok(CheckoutReport {
            objects,
            mirror_created,
            fetched,
            duration: started.elapsed(),
        })
    }

    /// `git clone --mirror` into a temporary directory renamed to `mirror` once complete, so an
    /// interrupted clone never looks like a mirror. An existing mirror is replaced and removed:
    /// a job still running with its objects borrowed from it may then miss objects that the new
    /// clone did not bring back (only on this rare path, a mirror broken by a lock).
    async fn clone_mirror(&self, url: &str, mirror: &Path) -> Result<(), CheckoutError> {
        let tmp = mirror.with_extension(format!("tmp-{}", std::process::id()));
        let _ = tokio::fs::remove_dir_all(&tmp).await;
        self.git(
            None,
            Reach::Remote(url),
            "clone --mirror",
            &["clone", "--mirror", "--quiet", "--", url, path_str(&tmp)?],
        )
        .await?;
        if tokio::fs::try_exists(mirror).await? {
            let old = mirror.with_extension(format!("old-{}", std::process::id()));
            let _ = tokio::fs::remove_dir_all(&old).await;
            tokio::fs::rename(mirror, &old).await?;
            tokio::fs::rename(&tmp, mirror).await?;
            if let Err(e) = tokio::fs::remove_dir_all(&old).await {
                tracing::warn!(old = %old.display(), error = %e, "cannot remove the replaced mirror");
            }
        } else {
            tokio::fs::rename(&tmp, mirror).await?;
        }
        Ok(())
    }

    /// `git init` of `dest`, borrowing the mirror's objects, with `origin` set to the public
    /// URL (no credentials), as a developer's clone would have it.
    async fn new_workspace(
        &self,
        dest: &Path,
        mirror: &Path,
        url: &str,
        sha: &str,
    ) -> Result<PathBuf, CheckoutError> {
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        // A leftover would be re-initialised, not replaced: refuse it.
        tokio::fs::create_dir(dest).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("workspace {}: {e}", dest.display()))
        })?;
        // No template: no hooks (nor sample hooks) in the workspace.
        let mut init = vec!["init", "--quiet", "--template="];
        if sha.len() == 64 {
            init.push("--object-format=sha256");
        }
        init.extend(["--", path_str(dest)?]);
        self.git(None, Reach::Local, "init", &init).await?;
        let git_dir = dest.join(".git");
        let objects = std::path::absolute(mirror.join("objects"))?;
        let mut alternates = path_str(&objects)?.to_owned();
        alternates.push('\n');
        tokio::fs::write(git_dir.join("objects/info/alternates"), alternates).await?;
        let mut config = tokio::fs::OpenOptions::new()
            .append(true)
            .open(git_dir.join("config"))
            .await?;
        tokio::io::AsyncWriteExt::write_all(&mut config, origin_section(url)?.as_bytes()).await?;
        Ok(objects)
    }

    /// The mirror's tags in the workspace (`clone: tags: true`), for `git describe`. Objects
    /// are already shared, so this moves refs only.
    pub async fn fetch_tags(&self, job: &Job, dest: &Path) -> Result<(), CheckoutError> {
        let mirror = std::path::absolute(self.mirror_path(&job.spec.repo, &job.spec.clone_url))?;
        self.git(
            Some(dest),
            Reach::Local,
            "fetch tags",
            &[
                "fetch",
                "--quiet",
                "--no-write-fetch-head",
                "--",
                path_str(&mirror)?,
                "+refs/tags/*:refs/tags/*",
            ],
        )
        .await
        .map(drop)
    }

    /// `job` is the superproject's: submodules on its forge get the token, others none.
    pub async fn update_submodules(&self, job: &Job, dest: &Path) -> Result<(), CheckoutError> {
        let url = &job.spec.clone_url;
        self.git(
            Some(dest),
            Reach::Named(url),
            "submodule update",
            &["submodule", "update", "--init", "--recursive", "--quiet"],
        )
        .await
        .map(drop)
        .map_err(|e| match e {
            CheckoutError::Git { step, message }
                if message.contains("transport 'file' not allowed") =>
            {
                CheckoutError::Git {
                    step,
                    message: format!(
                        "{message}\n(submodules given as local paths and file:// URLs are \
                         checked out only for repositories that are local themselves, not for \
                         {url})"
                    ),
                }
            }
            other => other,
        })
    }

    /// `job` is the repository's: its LFS server gets the token when it is on the same forge.
    ///
    /// The LFS server is the one for the workspace's `origin`, the job's clone URL (the mirror
    /// only lends git objects). git-lfs replaces pointer files only where its filter is
    /// configured (`filter.lfs.clean`), and our git reads no global or system configuration,
    /// where `git lfs install` puts it: `git lfs pull` used to download the objects, print
    /// "Skipping object checkout, Git LFS is not installed for this repository" and succeed,
    /// so steps got the pointers. The filter `git lfs install` writes is therefore given to
    /// this command alone (the `git update-index --refresh` it runs needs it too, to see the
    /// replaced files as unchanged); the checkout before it runs without, so it never
    /// downloads.
    ///
    /// Once the content is there, the filter goes into the workspace's own configuration, as
    /// `git lfs install --local` (and GitHub's checkout action with `lfs: true`) would put it,
    /// hooks left out: without it a step's own git saw every LFS file as modified, so
    /// `git diff --exit-code` and `git status --porcelain` checks failed, and `git add` staged
    /// the content in place of the pointer.
    pub async fn lfs_pull(&self, job: &Job, dest: &Path) -> Result<(), CheckoutError> {
        self.check_lfs_server(job, dest).await?;
        let mut args = Vec::with_capacity(2 * LFS_FILTER.len() + 2);
        for (key, value) in LFS_FILTER {
            args.push("-c".to_string());
            args.push(format!("{key}={value}"));
        }
        args.extend(["lfs".to_string(), "pull".to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.git(
            Some(dest),
            Reach::Named(&job.spec.clone_url),
            "lfs pull",
            &args,
        )
        .await
        .map_err(explain_missing_lfs)?;
        for (key, value) in LFS_FILTER {
            self.git(
                Some(dest),
                Reach::Local,
                "lfs filter",
                &["config", "--local", key, value],
            )
            .await?;
        }
        Ok(())
    }

    /// Whether the checked-out commit has files stored in Git LFS (marked `filter=lfs` by its
    /// `.gitattributes`), asked of git alone: git-lfs may not be installed, and a repository
    /// without such files does not need it.
    pub async fn uses_lfs(&self, dest: &Path) -> Result<bool, CheckoutError> {
        let listed = self
            .git(
                Some(dest),
                Reach::Local,
                "lfs files",
                &["ls-files", "-z", "--", ":(attr:filter=lfs)"],
            )
            .await?;
        Ok(!listed.is_empty())
    }

    /// The repository's `.lfsconfig` may name any LFS server (`lfs.url`,
    /// `remote.origin.lfsurl`), and git-lfs ignores `GIT_ALLOW_PROTOCOL`: a local path or
    /// `file://` URL there would copy LFS objects of another repository on the agent's disk
    /// into the workspace. As for submodules, only a job cloned from a local path may use a
    /// local store; others need an http(s) server. An ssh server is refused too: git-lfs shows
    /// it as an `https://` endpoint with an `SSH=` line below, then runs `ssh` with the agent
    /// user's keys (from its passwd home, whatever `HOME` says) to a host the repository picks.
    async fn check_lfs_server(&self, job: &Job, dest: &Path) -> Result<(), CheckoutError> {
        let url = &job.spec.clone_url;
        if is_local(url) {
            return Ok(());
        }
        let env = self
            .git(Some(dest), Reach::Named(url), "lfs env", &["lfs", "env"])
            .await
            .map_err(explain_missing_lfs)?;
        let endpoint = lfs_endpoint(&env);
        let over_ssh = env
            .lines()
            .any(|line| line.trim_start().starts_with("SSH="));
        match endpoint {
            Some(e) if over_ssh => Err(CheckoutError::Git {
                step: "lfs pull",
                message: format!(
                    "the repository's LFS server {e} is reached over ssh (set in .lfsconfig?), \
                     not an http(s) URL; only jobs cloned from a local path may use another"
                ),
            }),
            Some(e) if e.starts_with("https://") || e.starts_with("http://") => Ok(()),
            other => Err(CheckoutError::Git {
                step: "lfs pull",
                message: format!(
                    "the repository's LFS server is {}, not an http(s) URL (set in .lfsconfig?); \
                     only jobs cloned from a local path may use a local LFS store",
                    other.unwrap_or("unknown")
                ),
            }),
        }
    }

    /// The files `job`'s commit changes compared with its `diff_base`, read in its checkout
    /// `dest`: for a pull request those since the merge base of the two (`base...sha`, what the
    /// forge shows as the pull request's changes), for a push those between the two commits.
    ///
    /// The mirror has the base when some ref still reaches it; otherwise (a force push, a base
    /// branch that moved on) it is fetched by sha into the mirror, within
    /// [`BASE_FETCH_TIMEOUT`]. Anything that goes wrong makes the changes unknown, not the job
    /// fail. Paths git cannot show as UTF-8 are read lossily and so match no glob exactly.
    pub async fn changed_files(&self, job: &Job, dest: &Path) -> Changes {
        self.diff(job, dest, true).await
    }

    /// [`Self::changed_files`] without fetching a base the mirror lacks (then unknown): for
    /// `CI_PIPELINE_FILES`, which every job gets, and which must not hold a job up on a
    /// remote the way a path filter, which saves the work of steps, may.
    pub async fn changed_files_at_hand(&self, job: &Job, dest: &Path) -> Changes {
        self.diff(job, dest, false).await
    }

    async fn diff(&self, job: &Job, dest: &Path, fetch: bool) -> Changes {
        let sha = &job.spec.sha;
        let Some(base) = job.spec.diff_base.as_deref() else {
            return Changes::Unknown(no_base(job.spec.event));
        };
        // The queue validated it; it becomes a git argument, so checked again here.
        if !(is_full_sha(base) && base.len() == sha.len()) {
            return Changes::Unknown(format!("the base {base:?} is not a commit sha"));
        }
        // Without a fetch, a base that is not there makes `git diff` fail, which is as good an
        // answer as asking first and one process fewer.
        let present = if fetch {
            self.ensure_commit(job, base).await
        } else {
            Ok(true)
        };
        match present {
            Ok(true) => {}
            Ok(false) => {
                return Changes::Unknown(format!(
                    "the base commit {base} is not in {} (force-pushed away?)",
                    job.spec.clone_url
                ));
            }
            Err(e) => {
                return Changes::Unknown(format!("cannot fetch the base commit {base}: {e}"));
            }
        }
        let range;
        let mut args = vec!["diff", "--name-only", "-z", "--no-renames", "--no-ext-diff"];
        if job.spec.event == Event::PullRequest {
            range = format!("{base}...{sha}");
            args.push(&range);
        } else {
            args.extend([base, sha.as_str()]);
        }
        args.push("--");
        match self.git(Some(dest), Reach::Local, "diff", &args).await {
            Ok(out) => Changes::Known(
                out.split('\0')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            Err(e) => Changes::Unknown(format!("comparing with {base}: {e}")),
        }
    }

    /// The message and author of commit `sha` in `dest`, for `when: path`'s `ignore_message`
    /// and the steps' `CI_COMMIT_*` variables. Read from the commit object itself, so no
    /// configuration (`log.*`, encodings) shapes them.
    pub async fn commit_info(&self, dest: &Path, sha: &str) -> Result<CommitInfo, CheckoutError> {
        if !is_full_sha(sha) {
            return Err(CheckoutError::Git {
                step: "cat-file",
                message: format!("{sha:?} is not a commit sha"),
            });
        }
        let commit = self
            .git(
                Some(dest),
                Reach::Local,
                "cat-file",
                &["cat-file", "commit", sha],
            )
            .await?;
        Ok(CommitInfo::parse(&commit))
    }

    /// The branch the repository's `HEAD` names (Woodpecker's `CI_REPO_DEFAULT_BRANCH`), as
    /// the agent's mirror had it from the forge when it was cloned: forges serve the default
    /// branch there. `None` for a detached `HEAD`.
    pub async fn default_branch(&self, job: &Job) -> Option<String> {
        let mirror = self.mirror_path(&job.spec.repo, &job.spec.clone_url);
        let args = ["symbolic-ref", "--quiet", "HEAD"];
        let head = self
            .git(Some(&mirror), Reach::Local, "symbolic-ref", &args)
            .await
            .ok()?;
        head.trim()
            .strip_prefix("refs/heads/")
            .filter(|b| !b.is_empty())
            .map(str::to_owned)
    }

    /// Whether the mirror of `job`'s repository has commit `sha`, fetching it by sha (under the
    /// mirror's lock, within [`BASE_FETCH_TIMEOUT`]) when it has not.
    async fn ensure_commit(&self, job: &Job, sha: &str) -> Result<bool, CheckoutError> {
        let url = &job.spec.clone_url;
        let mirror = self.mirror_path(&job.spec.repo, url);
        if self.has_commit(&mirror, sha).await? {
            return Ok(true);
        }
        let lock = lock_mirror(&mirror).await?;
        if !self.has_commit(&mirror, sha).await? {
            remove_stale_locks(&mirror).await;
            let args = ["fetch", "--quiet", "origin", sha];
            let fetch = self.git(Some(&mirror), Reach::Remote(url), "fetch <base>", &args);
            // Dropping the fetch on time-out kills its process group (see `git`).
            match tokio::time::timeout(BASE_FETCH_TIMEOUT, fetch).await {
                Ok(result) => drop(result?),
                Err(_) => {
                    return Err(CheckoutError::Timeout {
                        step: "fetch <base>",
                        timeout: BASE_FETCH_TIMEOUT,
                    });
                }
            }
        }
        let found = self.has_commit(&mirror, sha).await;
        drop(lock);
        found
    }

    async fn has_ref(&self, repo: &Path, name: &str) -> Result<bool, CheckoutError> {
        let args = ["show-ref", "--verify", "--quiet", "--", name];
        match self.git(Some(repo), Reach::Local, "show-ref", &args).await {
            Ok(_) => Ok(true),
            Err(CheckoutError::Git { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn has_commit(&self, repo: &Path, sha: &str) -> Result<bool, CheckoutError> {
        let object = format!("{sha}^{{commit}}");
        match self
            .git(
                Some(repo),
                Reach::Local,
                "cat-file",
                &["cat-file", "-e", &object],
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(CheckoutError::Git { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn git(
        &self,
        dir: Option<&Path>,
        reach: Reach<'_>,
        step: &'static str,
        args: &[&str],
    ) -> Result<String, CheckoutError> {
        let mut cmd = Command::new("git");
        if let Some(d) = dir {
            cmd.arg("-C").arg(d);
        }
        // HOME is the cache directory, which every agent of the node shares and a step under
        // the host executor can write: no configuration or attributes from there (hence also
        // GIT_CONFIG_GLOBAL below), and no hooks or fsmonitor command from any configuration,
        // the repositories' own included, since `-c` wins over every file. Git passes these
        // on to the gits it starts (submodule clones).
        //
        // Auto maintenance after a fetch stays in the foreground, under the mirror's lock:
        // stale-lock removal relies on no git of ours running on a mirror without that lock.
        cmd.args([
            "-c",
            "gc.autoDetach=false",
            "-c",
            "maintenance.autoDetach=false",
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "core.attributesFile=/dev/null",
        ]);
        cmd.args(args)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("HOME", &self.cache_dir)
            .env("LC_ALL", "C")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "/bin/false")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_ALLOW_PROTOCOL", reach.protocols())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Ctrl-C on an agent started in a terminal signals its whole foreground group: git
            // would die of it and the job end in `error`, while the agent itself hands the job
            // back. A group of its own leaves git to the agent.
            .process_group(0)
            .kill_on_drop(true);
        // kill_on_drop covers a cancelled job; a SIGKILLed agent drops nothing, and its git
        // would go on writing into a workspace the next agent is about to remove.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        if let (Some(token), Reach::Remote(url) | Reach::Named(url)) = (&self.token, reach)
            && let Some(origin) = http_origin(url)
        {
            // Basic auth with the token as password works for Gitea, Forgejo and GitHub. Git
            // sends a `http.<url>.*` setting only to URLs with this scheme, host and port.
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("raibid:{token}"));
            cmd.env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", format!("http.{origin}/.extraHeader"))
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!("Authorization: Basic {basic}"),
                );
        }
        let mut child = cmd.spawn()?;
        // Declared after `child`, so dropped before it: the group is killed while git is not
        // yet reaped (its id cannot name a new group), and before kill_on_drop kills git.
        let group = KillGroup(child.id());
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let run = async {
            let (status, stdout, stderr) =
                tokio::join!(child.wait(), read_all(stdout), read_all(stderr));
            Ok::<_, std::io::Error>(std::process::Output {
                status: status?,
                stdout: stdout?,
                stderr: stderr?,
            })
        };
        let output = match tokio::time::timeout(self.timeout, run).await {
            Ok(out) => out?,
            Err(_) => {
                return Err(CheckoutError::Timeout {
                    step,
                    timeout: self.timeout,
                });
            }
        };
        group.disarm();
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let mut message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if let Some(token) = &self.token {
            message = message.replace(token.as_str(), "***");
        }
        if message.is_empty() {
            message = output.status.to_string();
        }
        Err(CheckoutError::Git { step, message })
    }
}

/// 40 (sha1) or 64 (sha256) hex digits: safe to hand git as an argument.
fn is_full_sha(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Why a job without a `diff_base` has no changes to filter on. Jobs no forge event started
/// (manual ones, and any kind added later) never have one.
fn no_base(event: Event) -> String {
    match event {
        Event::Push => {
            "the push created the branch, so there is no earlier commit to compare with".into()
        }
        Event::PullRequest => {
            "the forge did not say which commit the pull request is based on".into()
        }
        Event::Tag => "a tag build has no earlier commit to compare with".into(),
        other => format!("a {other} job has no earlier commit to compare with"),
    }
}

/// `scheme://host[:port]` of an `http(s)://` URL, without any user info; `None` for other
/// URLs, which get no token (the forge's token is for its HTTP API and smart HTTP only).
fn http_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    Some(format!("{scheme}://{host}"))
}

/// A clone URL naming a repository on this machine: a `file://` URL or an absolute path.
fn is_local(url: &str) -> bool {
    url.starts_with('/')
        || url
            .get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("file://"))
}

/// The filter `git lfs install` configures.
const LFS_FILTER: [(&str, &str); 4] = [
    ("filter.lfs.clean", "git-lfs clean -- %f"),
    ("filter.lfs.smudge", "git-lfs smudge -- %f"),
    ("filter.lfs.process", "git-lfs filter-process"),
    ("filter.lfs.required", "true"),
];

/// The origin's endpoint in `git lfs env`'s output (`Endpoint=https://host/r.git/info/lfs
/// (auth=none)`).
fn lfs_endpoint(env: &str) -> Option<&str> {
    env.lines()
        .find_map(|line| line.strip_prefix("Endpoint="))
        .map(|rest| rest.split(" (auth=").next().unwrap_or(rest).trim())
}

/// Says that git-lfs is missing when git could not find it, and only then: a failed pull of an
/// installed git-lfs (an object the server does not have) used to end with the question whether
/// git-lfs was installed, sending people to look in the wrong place.
fn explain_missing_lfs(error: CheckoutError) -> CheckoutError {
    match error {
        CheckoutError::Git { step, message } if message.contains("'lfs' is not a git command") => {
            CheckoutError::Git {
                step,
                message: format!(
                    "{message}\n(git-lfs is not installed on the agent; `clone: lfs` needs it)"
                ),
            }
        }
        other => other,
    }
}

/// A branch name `git checkout -B` takes as one: nothing that could read as an option.
fn plain_branch_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('-') && !name.chars().any(|c| c.is_control())
}

/// `[remote "origin"]` with `url` as a quoted git-config value (`\` and `"` escaped), and the
/// refspec a clone would have.
fn origin_section(url: &str) -> Result<String, CheckoutError> {
    if url.chars().any(|c| c.is_control()) {
        return Err(CheckoutError::Git {
            step: "config",
            message: "the clone URL contains control characters".into(),
        });
    }
    let quoted = url.replace('\\', "\\\\").replace('"', "\\\"");
    Ok(format!(
        "[remote \"origin\"]\n\turl = \"{quoted}\"\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n"
    ))
}

fn path_str(p: &Path) -> Result<&str, CheckoutError> {
    p.to_str().ok_or_else(|| {
        CheckoutError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("path is not UTF-8: {}", p.display()),
        ))
    })
}

/// Lock files that a git killed mid-write (a cancelled job's fetch, an agent that died) left
/// in the mirror: `refs/**/*.lock` (git refuses ref names ending in `.lock`, so these are
/// never refs) and top-level ones such as `packed-refs.lock`, `shallow.lock` and
/// `config.lock`. Each makes every later fetch fail ("cannot lock ref") until removed. Only
/// called while holding the mirror's flock, when no git of ours is running on the mirror.
async fn remove_stale_locks(mirror: &Path) {
    let mirror = mirror.to_owned();
    let found = tokio::task::spawn_blocking(move || {
        let mut found = Vec::new();
        lock_files(&mirror, false, &mut found);
        lock_files(&mirror.join("refs"), true, &mut found);
        found
    })
    .await
    .unwrap_or_default();
    for lock in found {
        match tokio::fs::remove_file(&lock).await {
            Ok(()) => tracing::warn!(lock = %lock.display(), "removed a stale git lock file"),
            Err(e) => {
                tracing::warn!(lock = %lock.display(), error = %e, "cannot remove a stale git lock file")
            }
        }
    }
}

/// Regular files named `*.lock` in `dir` (and below it with `recurse`; symlinks not followed).
fn lock_files(dir: &Path, recurse: bool, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() && recurse {
            lock_files(&path, true, found);
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "lock") {
            found.push(path);
        }
    }
}

/// Git's messages for a lock file that already exists.
fn is_lock_error(message: &str) -> bool {
    message.contains("cannot lock ref") || message.contains(".lock': File exists")
}

/// All of a child's output, or nothing when it has no such pipe.
async fn read_all<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if let Some(mut pipe) = pipe {
        tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut bytes).await?;
    }
    Ok(bytes)
}

/// Kills the process group a git command leads unless it ended by itself. `kill_on_drop`
/// kills git alone: `git submodule` is a script whose `git clone` and remote helper would go
/// on (on a stalled server, until git's own time limit) writing into a workspace that is
/// being removed. Only while unfinished: git is not yet reaped then, so the group id cannot
/// name anyone else's group.
struct KillGroup(Option<u32>);

impl KillGroup {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Serializes agents sharing one cache directory (a node-local volume in Kubernetes) on the
/// same mirror: concurrent `git fetch` into one repository corrupts refs.
///
/// The lock file is the agent's alone (0600, also when an older agent made it 0644): `flock`
/// needs only read access, and a step user holding it would hang every checkout of that
/// repository on the node. Links and other non-files in its place are refused.
async fn lock_mirror(mirror: &Path) -> Result<Flock<std::fs::File>, CheckoutError> {
    let lock_path = mirror.with_extension("lock");
    let file = tokio::task::spawn_blocking(move || crate::lock_file::open(&lock_path))
        .await
        .map_err(|e| CheckoutError::Io(std::io::Error::other(e)))??;
    // Polled rather than a blocking flock on a thread: a job cancelled while it waits drops
    // this future, but a thread blocked in flock would wait on, and the runtime's shutdown
    // waits for its threads, so a `--once` agent would not exit until the other checkout of
    // the repository ended.
    let mut file = file;
    let mut pause = Duration::from_millis(10);
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                crate::mirror_expiry::mark_used(&lock);
                return Ok(lock);
            }
            Err((back, nix::errno::Errno::EWOULDBLOCK)) => {
                file = back;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Err((_, errno)) => return Err(CheckoutError::Io(std::io::Error::from(errno))),
        }
    }
}

/// What a commit says of itself, and its repository's default branch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitInfo {
    pub message: String,
    pub author_name: String,
    pub author_email: String,
    /// See [`GitCheckout::default_branch`].
    pub default_branch: Option<String>,
}

impl CommitInfo {
    /// From `git cat-file commit`: headers, a blank line, the message. The author header is
    /// `author <name> <<email>> <seconds> <zone>`; a signature header's lines start with a
    /// space and are passed over.
    fn parse(commit: &str) -> Self {
        let (headers, message) = commit.split_once("\n\n").unwrap_or((commit, ""));
        let author = headers
            .lines()
            .find_map(|l| l.strip_prefix("author "))
            .unwrap_or_default();
        let (name, email) = match (author.find('<'), author.rfind('>')) {
            (Some(open), Some(close)) if open < close => {
                (author[..open].trim(), &author[open + 1..close])
            }
            _ => ("", ""),
        };
        CommitInfo {
            message: message.to_owned(),
            author_name: name.to_owned(),
            author_email: email.to_owned(),
            default_branch: None,
        }
    }
}

#[cfg(test)]
mod tests {

    /// A checkout waiting for another's mirror lock and then cancelled leaves nothing behind
    /// that keeps the runtime, and so a `--once` agent, from ending.
    #[test]
    fn commit_headers_give_the_author() {
        let commit = "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\
                      author Ada Lovelace <ada@example.org> 1700000000 +0100\n\
                      committer Bot <bot@example.org> 1700000001 +0000\n\
                      gpgsig -----BEGIN PGP SIGNATURE-----\n \n -----END PGP SIGNATURE-----\n\
                      \nFix: the thing\n\nWhy it was broken.\n";
        let info = CommitInfo::parse(commit);
        assert_eq!(info.author_name, "Ada Lovelace");
        assert_eq!(info.author_email, "ada@example.org");
        assert_eq!(info.message, "Fix: the thing\n\nWhy it was broken.\n");
        assert_eq!(CommitInfo::parse("tree x\n"), CommitInfo::default());
    }

    #[test]
    fn a_cancelled_wait_for_the_mirror_lock_holds_up_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = dir.path().join("acme-app.git");
        let held = std::fs::File::create(mirror.with_extension("lock")).unwrap();
        let held = Flock::lock(held, FlockArg::LockExclusive).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let waited = runtime.block_on(async {
            tokio::time::timeout(Duration::from_millis(200), lock_mirror(&mirror)).await
        });
        assert!(
            waited.is_err(),
            "the lock is held: the wait must still be going"
        );
        let (done, ended) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(runtime);
            let _ = done.send(());
        });
        let result = ended.recv_timeout(Duration::from_secs(20));
        drop(held);
        assert!(
            result.is_ok(),
            "the runtime could not shut down while the lock was held"
        );
    }

    fn job_for(url: &str, sha: &str) -> Job {
        let spec = raibid_model::NewJob::new(
            "acme/app",
            url,
            "refs/heads/main",
            sha,
            raibid_model::Event::Push,
        );
        Job::queued("01JXK4Q3ZP8M5T7V2W9R000001", spec, chrono::Utc::now())
    }

    #[tokio::test]
    async fn checks_out_into_a_new_directory_and_refuses_a_leftover() {
        let repo = raibid_testkit::GitRepo::new();
        let sha = repo.commit(&[("a.txt", "x\n")], "one");
        let tmp = tempfile::tempdir().unwrap();
        let git = GitCheckout::new(tmp.path().join("cache"), None);
        let job = job_for(&repo.url(), &sha);
        // The parent directories do not exist yet: they are made.
        let dest = tmp.path().join("jobs/one/src");
        let report = git.checkout(&job, &dest).await.unwrap();
        assert!(report.mirror_created);
        assert_eq!(std::fs::read_to_string(dest.join("a.txt")).unwrap(), "x\n");
        assert!(report.objects.ends_with("objects") && report.objects.is_absolute());
        let err = git.checkout(&job, &dest).await.unwrap_err().to_string();
        assert!(err.contains("workspace") && err.contains("exists"), "{err}");
    }

    /// A rename counts under both names, names with spaces or newlines come through whole
    /// (`-z`), a base the mirror lacks is fetched by sha, and the message is the commit's.
    #[tokio::test]
    async fn changed_files_and_message_of_a_push() {
        let repo = raibid_testkit::GitRepo::new();
        let base = repo.commit(&[("src/old.rs", "x\n"), ("keep.txt", "k\n")], "one");
        let tmp = tempfile::tempdir().unwrap();
        let git = GitCheckout::new(tmp.path().join("cache"), None);
        // The mirror is cloned at `base`, and has the next commits only once a job needs them.
        git.checkout(&job_for(&repo.url(), &base), &tmp.path().join("a"))
            .await
            .unwrap();
        std::fs::create_dir(repo.path().join("lib")).unwrap();
        repo.git(&["mv", "src/old.rs", "lib/new.rs"]);
        let sha = repo.commit(&[("a b\nc.txt", "odd\n")], "Move [ALL]\n\nbody");
        let mut job = job_for(&repo.url(), &sha);
        job.spec.diff_base = Some(base.clone());
        let dest = tmp.path().join("b");
        git.checkout(&job, &dest).await.unwrap();
        let Changes::Known(mut files) = git.changed_files(&job, &dest).await else {
            panic!("unknown");
        };
        files.sort();
        assert_eq!(files, ["a b\nc.txt", "lib/new.rs", "src/old.rs"]);
        let info = git.commit_info(&dest, &sha).await.unwrap();
        assert_eq!(info.message, "Move [ALL]\n\nbody\n");
        assert!(
            !info.author_name.is_empty() && info.author_email.contains('@'),
            "{info:?}"
        );

        // A base newer than the mirror (a pull request whose target moved on), with the head
        // already there so the checkout fetched nothing: fetched for the comparison.
        repo.checkout_new_branch("feature");
        let head = repo.commit(&[("docs/a.md", "a\n")], "docs");
        let mut pr = job_for(&repo.url(), &head);
        pr.spec.event = raibid_model::Event::PullRequest;
        git.checkout(&pr, &tmp.path().join("c")).await.unwrap();
        repo.checkout("main");
        let moved = repo.commit(&[("src/main.rs", "m\n")], "main moves on");
        pr.spec.diff_base = Some(moved);
        let dest = tmp.path().join("d");
        assert!(!git.checkout(&pr, &dest).await.unwrap().fetched);
        // Since the merge base only: main's own change is not the pull request's.
        assert_eq!(
            git.changed_files(&pr, &dest).await,
            Changes::Known(vec!["docs/a.md".to_owned()])
        );

        let mut unknown = job.clone();
        unknown.spec.diff_base = Some("0123456789".repeat(4));
        let Changes::Unknown(why) = git.changed_files(&unknown, &tmp.path().join("b")).await else {
            panic!("a base nobody has is not known");
        };
        assert!(why.contains("0123456789"), "{why}");
        unknown.spec.diff_base = None;
        assert_eq!(
            git.changed_files(&unknown, &tmp.path().join("b")).await,
            Changes::Unknown(no_base(raibid_model::Event::Push))
        );
    }

    #[test]
    fn origin_urls_are_quoted_for_git_config() {
        assert_eq!(
            origin_section("https://git.example/acme/app.git").unwrap(),
            "[remote \"origin\"]\n\turl = \"https://git.example/acme/app.git\"\n\t\
             fetch = +refs/heads/*:refs/remotes/origin/*\n"
        );
        let odd = origin_section(r#"/srv/a "b" \c;#d"#).unwrap();
        assert!(odd.contains(r#"url = "/srv/a \"b\" \\c;#d""#), "{odd}");
        assert!(origin_section("https://x/\n[core]").is_err());
    }

    /// The hint that git-lfs is missing comes with git's own message for that (taken from a
    /// real git that finds no git-lfs on its PATH), not with other failures of `git lfs`.
    #[test]
    fn a_missing_git_lfs_is_named_and_other_lfs_errors_are_left_alone() {
        let bin = tempfile::tempdir().unwrap();
        let git = raibid_testkit::require_binary("git", "git");
        std::os::unix::fs::symlink(&git, bin.path().join("git")).unwrap();
        let out = std::process::Command::new(bin.path().join("git"))
            .args(["lfs", "pull"])
            .env_clear()
            .env("PATH", bin.path())
            .env("HOME", bin.path())
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let missing = CheckoutError::Git {
            step: "lfs pull",
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        };
        let said = explain_missing_lfs(missing).to_string();
        assert!(
            said.contains("git-lfs is not installed on the agent"),
            "{said}"
        );

        let failed = CheckoutError::Git {
            step: "lfs pull",
            message: "[0] remote missing object 4d7a\nFailed to fetch some objects".into(),
        };
        let said = explain_missing_lfs(failed).to_string();
        assert!(!said.contains("installed"), "{said}");
    }

    #[test]
    fn only_plain_branch_names_are_checked_out_as_branches() {
        assert!(plain_branch_name("main"));
        assert!(plain_branch_name("feature/login-2"));
        assert!(!plain_branch_name("-f"));
        assert!(!plain_branch_name(""));
        assert!(!plain_branch_name("a\tb"));
    }
    use super::*;

    #[test]
    fn tokens_are_scoped_to_the_origin_of_http_urls_only() {
        assert_eq!(
            http_origin("https://git.example/acme/app.git").as_deref(),
            Some("https://git.example")
        );
        assert_eq!(
            http_origin("HTTP://user:pw@127.0.0.1:3000/a/b.git?x#y").as_deref(),
            Some("http://127.0.0.1:3000")
        );
        for none in [
            "git://git.example/a.git",
            "file:///srv/a.git",
            "/srv/a.git",
            "ssh://git@git.example/a.git",
            "https:///a.git",
            "https://a b/c",
        ] {
            assert_eq!(http_origin(none), None, "{none}");
        }
    }

    #[test]
    fn mirror_paths_stay_inside_the_cache() {
        let g = GitCheckout::new("/cache", None);
        let p = g.mirror_path("../../etc", "http://x/../../etc.git");
        assert!(p.starts_with("/cache"));
        assert_eq!(p.parent(), Some(Path::new("/cache")));
        assert!(!p.file_name().unwrap().to_str().unwrap().starts_with('.'));
    }

    #[test]
    fn different_urls_get_different_mirrors() {
        let g = GitCheckout::new("/cache", None);
        assert_ne!(
            g.mirror_path("a/b", "http://one/a/b"),
            g.mirror_path("a/b", "http://two/a/b")
        );
    }

    const TOKEN: &str = "forge-token-4711";

    /// An HTTP server that writes down the head of every request and answers 404, so git
    /// gives up after its first request.
    struct Recorder {
        port: u16,
        requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl Recorder {
        fn start() -> Self {
            use std::io::{Read, Write};
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let requests: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
            let seen = std::sync::Arc::clone(&requests);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&head).into_owned());
                    let _ = stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            });
            Self { port, requests }
        }

        fn url(&self, path: &str) -> String {
            format!("http://127.0.0.1:{}{path}", self.port)
        }

        fn requests(&self) -> Vec<String> {
            self.requests.lock().unwrap().clone()
        }
    }

    /// The values of a request's `Authorization` headers.
    fn authorization(request: &str) -> Vec<String> {
        request
            .lines()
            .filter_map(|line| line.split_once(':'))
            .filter(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
            .map(|(_, value)| value.trim().to_owned())
            .collect()
    }

    /// Commits a `.gitmodules` naming each (path, url, commit) and its gitlink; nothing is
    /// cloned, so the URLs need not work.
    fn add_submodules(repo: &raibid_testkit::GitRepo, subs: &[(&str, &str, &str)]) -> String {
        let mut gitmodules = String::new();
        for (path, url, sha) in subs {
            gitmodules.push_str(&format!(
                "[submodule \"{path}\"]\n\tpath = {path}\n\turl = {url}\n"
            ));
            repo.git(&[
                "update-index",
                "--add",
                "--cacheinfo",
                &format!("160000,{sha},{path}"),
            ]);
        }
        repo.commit(&[(".gitmodules", &gitmodules)], "submodules")
    }

    #[tokio::test]
    async fn the_token_goes_to_the_clone_urls_host() {
        let forge = Recorder::start();
        let tmp = tempfile::tempdir().unwrap();
        let git = GitCheckout::new(tmp.path().join("cache"), Some(TOKEN.into()));
        let job = job_for(&forge.url("/acme/app.git"), &"a".repeat(40));
        let err = git
            .checkout(&job, &tmp.path().join("src"))
            .await
            .unwrap_err();
        let requests = forge.requests();
        assert!(!requests.is_empty(), "{err}");
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("raibid:{TOKEN}"));
        for request in &requests {
            assert_eq!(
                authorization(request),
                vec![format!("Basic {basic}")],
                "{request}"
            );
        }
        assert!(!err.to_string().contains(TOKEN), "{err}");
    }

    #[tokio::test]
    async fn submodules_on_other_hosts_get_no_token() {
        let forge = Recorder::start();
        let elsewhere = Recorder::start();
        let repo = raibid_testkit::GitRepo::new();
        repo.commit(&[("a.txt", "x\n")], "one");
        let sha = add_submodules(
            &repo,
            &[
                ("vendor/own", &forge.url("/acme/own.git"), &"2".repeat(40)),
                (
                    "vendor/lib",
                    &elsewhere.url("/someone/lib.git"),
                    &"1".repeat(40),
                ),
            ],
        );
        let tmp = tempfile::tempdir().unwrap();
        let git = GitCheckout::new(tmp.path().join("cache"), Some(TOKEN.into()));
        // The job's repository is on `forge`, and the mirror already has the commit, as after
        // an earlier job: only the submodules are asked for over HTTP.
        let url = &forge.url("/acme/app.git");
        std::fs::create_dir_all(tmp.path().join("cache")).unwrap();
        let mirror = git.mirror_path("acme/app", url);
        repo.git(&[
            "clone",
            "--mirror",
            "--quiet",
            ".",
            path_str(&mirror).unwrap(),
        ]);
        let job = job_for(url, &sha);
        let dest = tmp.path().join("src");
        git.checkout(&job, &dest).await.unwrap();
        let err = git.update_submodules(&job, &dest).await.unwrap_err();
        // A submodule on the same forge gets the token: private submodules keep working.
        let own = forge.requests();
        assert!(!own.is_empty(), "{err}");
        assert!(own.iter().all(|r| authorization(r).len() == 1), "{own:?}");
        let requests = elsewhere.requests();
        assert!(!requests.is_empty(), "{err}");
        for request in &requests {
            assert!(authorization(request).is_empty(), "{request}");
        }
    }

    #[tokio::test]
    async fn submodules_of_a_remote_repository_cannot_copy_local_repositories() {
        let other = raibid_testkit::GitRepo::new();
        let other_sha = other.commit(&[("secret.txt", "another repository\n")], "other");
        let repo = raibid_testkit::GitRepo::new();
        repo.commit(&[("a.txt", "x\n")], "one");
        let sha = add_submodules(
            &repo,
            &[("vendor/x", path_str(other.path()).unwrap(), &other_sha)],
        );
        let base = tempfile::tempdir().unwrap();
        let bare = base.path().join("acme/app.git");
        std::fs::create_dir_all(bare.parent().unwrap()).unwrap();
        repo.git(&["clone", "--quiet", "--bare", ".", path_str(&bare).unwrap()]);
        let daemon = raibid_testkit::GitDaemon::serve(base.path());
        let tmp = tempfile::tempdir().unwrap();
        let git = GitCheckout::new(tmp.path().join("cache"), None);
        let job = job_for(&daemon.url_for(&bare), &sha);
        let dest = tmp.path().join("src");
        git.checkout(&job, &dest).await.unwrap();
        let err = git
            .update_submodules(&job, &dest)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("local paths and file:// URLs"),
            "unclear error: {err}"
        );
        assert!(!dest.join("vendor/x/secret.txt").exists());
    }

    #[tokio::test]
    async fn a_git_config_in_the_cache_directory_is_not_used() {
        let repo = raibid_testkit::GitRepo::new();
        let sha = repo.commit(&[("a.txt", "$Id$\n")], "one");
        let tmp = tempfile::tempdir().unwrap();
        let marker = tmp.path().join("hook-ran");
        let hooks = tmp.path().join("hooks");
        std::fs::create_dir_all(&hooks).unwrap();
        let hook = hooks.join("post-checkout");
        raibid_testkit::write_script(&hook, &format!("#!/bin/sh\ntouch '{}'\n", marker.display()));
        let cache = tmp.path().join("cache");
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(
            cache.join(".gitconfig"),
            format!("[core]\n\thooksPath = {}\n", hooks.display()),
        )
        .unwrap();
        // Attributes that would rewrite what is checked out.
        std::fs::create_dir_all(cache.join(".config/git")).unwrap();
        std::fs::write(cache.join(".config/git/attributes"), "* ident\n").unwrap();
        let git = GitCheckout::new(&cache, None);
        let dest = tmp.path().join("src");
        git.checkout(&job_for(&repo.url(), &sha), &dest)
            .await
            .unwrap();
        assert!(!marker.exists(), "a hook from the cache directory ran");
        assert_eq!(
            std::fs::read_to_string(dest.join("a.txt")).unwrap(),
            "$Id$\n"
        );
        let workspace_hooks = std::fs::read_dir(dest.join(".git/hooks"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(workspace_hooks, 0);
    }

    /// A repository with one commit, checked out once so that its mirror exists.
    struct Mirrored {
        repo: raibid_testkit::GitRepo,
        tmp: tempfile::TempDir,
        git: GitCheckout,
        mirror: PathBuf,
    }

    impl Mirrored {
        async fn new() -> Self {
            let repo = raibid_testkit::GitRepo::new();
            let first = repo.commit(&[("a.txt", "1\n")], "one");
            let tmp = tempfile::tempdir().unwrap();
            let git = GitCheckout::new(tmp.path().join("cache"), None);
            git.checkout(&job_for(&repo.url(), &first), &tmp.path().join("one"))
                .await
                .unwrap();
            let mirror = git.mirror_path("acme/app", &repo.url());
            Self {
                repo,
                tmp,
                git,
                mirror,
            }
        }

        /// Commits `a.txt` = "2" and checks it out into `two`: the mirror has to fetch it.
        async fn check_out_a_new_commit(&self) -> CheckoutReport {
            let second = self.repo.commit(&[("a.txt", "2\n")], "two");
            self.git
                .checkout(
                    &job_for(&self.repo.url(), &second),
                    &self.tmp.path().join("two"),
                )
                .await
                .unwrap()
        }
    }

    #[tokio::test]
    async fn hooks_configured_in_the_mirror_do_not_run() {
        let m = Mirrored::new().await;
        // A step under the host executor can write the mirror's config; a fetch that updates
        // refs runs the reference-transaction hook.
        let marker = m.tmp.path().join("hook-ran");
        let hooks = m.tmp.path().join("hooks");
        std::fs::create_dir_all(&hooks).unwrap();
        let hook = hooks.join("reference-transaction");
        raibid_testkit::write_script(&hook, &format!("#!/bin/sh\ntouch '{}'\n", marker.display()));
        let mirror = &m.mirror;
        let mut config = std::fs::OpenOptions::new()
            .append(true)
            .open(mirror.join("config"))
            .unwrap();
        std::io::Write::write_all(
            &mut config,
            format!("[core]\n\thooksPath = {}\n", hooks.display()).as_bytes(),
        )
        .unwrap();
        let report = m.check_out_a_new_commit().await;
        assert!(report.fetched);
        assert!(!marker.exists(), "a hook configured in the mirror ran");
    }

    /// flock needs only read access: a lock file others can open lets a step user hang every
    /// checkout of the repository. It is made the agent's alone, and links are not followed.
    #[tokio::test]
    async fn the_mirror_lock_is_private_and_no_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mirror = dir.path().join("app.git");
        let lock = dir.path().join("app.lock");
        std::fs::write(&lock, "").unwrap();
        std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).unwrap();
        let held = super::lock_mirror(&mirror).await.unwrap();
        let mode = std::fs::metadata(&lock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(held);

        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "keep").unwrap();
        let other = dir.path().join("other.git");
        std::os::unix::fs::symlink(&target, dir.path().join("other.lock")).unwrap();
        assert!(super::lock_mirror(&other).await.is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_ne!(mode, 0o600, "the link's target was not touched");
    }

    #[tokio::test]
    async fn stale_lock_files_in_the_mirror_do_not_block_fetches() {
        let m = Mirrored::new().await;
        // What a fetch killed while updating refs leaves behind.
        let mirror = &m.mirror;
        std::fs::create_dir_all(mirror.join("refs/heads")).unwrap();
        std::fs::write(mirror.join("refs/heads/main.lock"), "").unwrap();
        std::fs::write(mirror.join("packed-refs.lock"), "").unwrap();
        let report = m.check_out_a_new_commit().await;
        assert!(report.fetched && !report.mirror_created);
        assert_eq!(
            std::fs::read_to_string(m.tmp.path().join("two/a.txt")).unwrap(),
            "2\n"
        );
        assert!(!mirror.join("refs/heads/main.lock").exists());
        assert!(!mirror.join("packed-refs.lock").exists());
    }

    #[tokio::test]
    async fn a_mirror_whose_locks_cannot_be_removed_is_cloned_again() {
        let m = Mirrored::new().await;
        // A directory where git wants to create its lock file: not a stale lock to remove, and
        // every fetch that updates `main` fails on it.
        let mirror = &m.mirror;
        std::fs::create_dir_all(mirror.join("refs/heads/main.lock/x")).unwrap();
        let report = m.check_out_a_new_commit().await;
        assert!(report.fetched && report.mirror_created);
        assert_eq!(
            std::fs::read_to_string(m.tmp.path().join("two/a.txt")).unwrap(),
            "2\n"
        );
        assert!(!mirror.join("refs/heads/main.lock").exists());
        // Only the mirror and its flock file are left in the cache.
        let mut left: Vec<_> = std::fs::read_dir(m.tmp.path().join("cache"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                mirror.file_name().unwrap().to_owned(),
                mirror
                    .with_extension("lock")
                    .file_name()
                    .unwrap()
                    .to_owned()
            ]
        );
    }
}
