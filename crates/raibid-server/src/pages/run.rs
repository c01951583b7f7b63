//! `GET /run` and `POST /run`: Woodpecker's "Run pipeline" — a job of event `manual` for a
//! repository's branch or tag, with variables, queued by a signed-in browser as `raibid job
//! submit` queues one with a token (`POST /api/v1/jobs`: the same checks and limits).

use std::collections::BTreeMap;

use askama::Template;
use axum::Form;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Redirect, Response};
use raibid_queue::JobFilter;
use serde::Deserialize;

use super::actions::caller;
use super::{Chrome, PageError, Viewer, page};
use crate::api::submit::{SubmitRequest, Submitted, checked_key, queue};
use crate::{ApiError, AppState};

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    root: String,
    title: String,
    chrome: Chrome,
    repo: String,
    clone_url: String,
    git_ref: String,
    /// The submission's `Idempotency-Key`, new with each form: a form sent twice (a second
    /// click, a reload that posts it again) queues one job.
    key: String,
}

#[derive(Deserialize)]
pub(super) struct RunQuery {
    #[serde(default)]
    repo: String,
    #[serde(default)]
    clone_url: String,
    #[serde(default, rename = "ref")]
    git_ref: String,
}

/// The form, filled in from the query, and the clone URL from the repository's newest job when
/// the query has none. Only for a browser whose token may run jobs (of the repository, when
/// one is named).
pub(super) async fn form(
    viewer: Viewer,
    State(state): State<AppState>,
    query: Result<Query<RunQuery>, QueryRejection>,
) -> Result<Response, PageError> {
    let token = viewer.token("run pipelines").map_err(|e| viewer.fail(e))?;
    let Query(query) = query.map_err(|e| viewer.fail(ApiError::InvalidRequest(e.body_text())))?;
    crate::auth::require(token, raibid_config::TokenScope::Jobs)
        .and_then(|caller| match query.repo.as_str() {
            "" => Ok(()),
            repo => caller.may_change(repo),
        })
        .map_err(|e| viewer.fail(e))?;
    let mut clone_url = query.clone_url;
    if clone_url.is_empty() && !query.repo.is_empty() {
        let filter = JobFilter {
            repo: Some(query.repo.clone()),
            ..JobFilter::default()
        };
        let newest = state
            .queue()
            .list(&filter, None, 1)
            .await
            .map_err(|e| viewer.fail(e))?;
        if let Some(job) = newest.jobs.first() {
            clone_url = job.spec.clone_url.clone();
        }
    }
    let git_ref = match query.git_ref.as_str() {
        "" => "main".to_owned(),
        other => other
            .strip_prefix("refs/heads/")
            .unwrap_or(other)
            .to_owned(),
    };
    let template = RunPage {
        root: viewer.root().to_owned(),
        title: "Run pipeline".into(),
        chrome: viewer.chrome(),
        repo: query.repo,
        clone_url,
        git_ref,
        key: ulid::Ulid::new().to_string(),
    };
    Ok(page(StatusCode::OK, &template))
}

#[derive(Deserialize)]
pub(super) struct Run {
    repo: String,
    clone_url: String,
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(default)]
    variables: String,
    /// Empty from a form of an older page.
    #[serde(default)]
    key: String,
}

/// Queues the job and leads to its page; a refusal is a page with the API's status and reason.
pub(super) async fn run(
    viewer: Viewer,
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(run): Form<Run>,
) -> Result<Redirect, PageError> {
    let caller = caller(&viewer, &state, &headers, "run pipelines")?;
    let env = variables(&run.variables).map_err(|e| viewer.fail(e))?;
    let key = match run.key.as_str() {
        "" => None,
        key => Some(checked_key(key).map_err(|e| viewer.fail(e))?),
    };
    let request = SubmitRequest::of_ref(
        run.repo.trim().to_owned(),
        run.clone_url.trim().to_owned(),
        full_ref(run.git_ref.trim()),
        env,
    );
    let job = match queue(&caller.0, &state, request, key).await {
        Ok(Submitted::Queued(job) | Submitted::Again(job)) => job,
        // A form sent, then changed (back in the browser) and sent again: its key is spent.
        Err(ApiError::IdempotencyKeyReused(_)) => {
            return Err(viewer.fail(ApiError::IdempotencyKeyReused(
                "this form has already run a pipeline, with other values: open Run pipeline \
                 again to run another"
                    .into(),
            )));
        }
        Err(e) => return Err(viewer.fail(e)),
    };
    Ok(Redirect::to(&format!("{}/jobs/{}", viewer.root(), job.id)))
}

/// The form's address, filled in with a repository, its clone URL and a ref.
pub(super) fn href(root: &str, repo: &str, clone_url: &str, git_ref: &str) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("repo", repo)
        .append_pair("clone_url", clone_url)
        .append_pair("ref", git_ref)
        .finish();
    format!("{root}/run?{query}")
}

/// A branch's name as a full ref; a full ref (`refs/tags/v1`) as it is.
fn full_ref(name: &str) -> String {
    if name.starts_with("refs/") {
        name.to_owned()
    } else {
        format!("refs/heads/{name}")
    }
}

/// `NAME=value` lines (blank lines and `#` comments passed over), as Woodpecker's form takes
/// variables; the API then checks names and values as it does a submission's `env`.
fn variables(text: &str) -> Result<BTreeMap<String, String>, ApiError> {
    let mut env = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(ApiError::InvalidField {
                field: "variables".into(),
                message: format!("line {}: expected NAME=value, got {line:?}", i + 1),
            });
        };
        env.insert(name.trim().to_owned(), value.to_owned());
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_name_value_lines() {
        let env = variables("# deploy\nTARGET=prod\n\nNOTE=a=b \r\n").unwrap();
        assert_eq!(env["TARGET"], "prod");
        assert_eq!(env["NOTE"], "a=b ");
        assert_eq!(env.len(), 2);
        let error = variables("TARGET=prod\nnonsense").unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
        assert!(variables("").unwrap().is_empty());
    }

    #[test]
    fn a_branch_name_becomes_its_ref() {
        assert_eq!(full_ref("main"), "refs/heads/main");
        assert_eq!(full_ref("refs/tags/v1"), "refs/tags/v1");
    }
}
