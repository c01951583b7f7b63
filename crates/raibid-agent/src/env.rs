//! The environment a step sees: built from nothing, so the agent's own variables (tokens,
//! Redis URLs) never leak into a build.

use std::collections::BTreeMap;
use std::path::Path;

use raibid_model::Job;

/// Variables every step gets, named like Woodpecker's `CI_*` so existing scripts work, plus
/// `RAIBID_*` equivalents.
pub fn job_env(job: &Job, workspace: &Path, home: &Path, path: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        env.insert(k.to_owned(), v.to_owned());
    };
    set("PATH", path);
    set("HOME", &home.to_string_lossy());
    set("LANG", "C.UTF-8");
    set("CI", "true");
    set("RAIBID", "true");
    set("RAIBID_JOB_ID", &job.id);
    set("RAIBID_ATTEMPT", &job.attempt.to_string());
    set("RAIBID_REPO", &job.spec.repo);
    set("RAIBID_SHA", &job.spec.sha);
    set("RAIBID_REF", &job.spec.git_ref);
    set("RAIBID_EVENT", job.spec.event.as_str());
    set("RAIBID_POOL", job.spec.pool.as_str());
    set("RAIBID_WORKSPACE", &workspace.to_string_lossy());
    set("CI_REPO", &job.spec.repo);
    set("CI_COMMIT_SHA", &job.spec.sha);
    set("CI_COMMIT_REF", &job.spec.git_ref);
    set("CI_PIPELINE_EVENT", job.spec.event.as_str());
    set("CI_WORKSPACE", &workspace.to_string_lossy());
    if let Some(branch) = job.branch() {
        set("RAIBID_BRANCH", branch);
        set("CI_COMMIT_BRANCH", branch);
    }
    if let Some(tag) = job.tag() {
        set("RAIBID_TAG", tag);
        set("CI_COMMIT_TAG", tag);
    }
    if let Some(pr) = job.spec.pr_number {
        set("RAIBID_PULL_REQUEST", &pr.to_string());
        set("CI_COMMIT_PULL_REQUEST", &pr.to_string());
    }
    env
}

/// Env names that a pipeline or a manual submission may not override: they carry the agent's
/// own guarantees (where the checkout is, which commit it is).
pub fn is_reserved(name: &str) -> bool {
    name.starts_with("RAIBID_") && name != "RAIBID_MATRIX"
}
