//! `GET /secrets?of=<owner/name or owner>`, `POST /secrets/set`, `POST /secrets/delete`: a
//! repository's or an owner's secrets on the web pages, as Woodpecker's and Gitea's settings
//! pages have them, for a signed-in token with the `secrets` scope. The page shows names,
//! events, branches and when each was set; a value goes in through the form and never comes
//! back, as through the API, whose functions do the work (same checks, same log lines).

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Redirect, Response};
use axum::{Form, Json};
use chrono::SecondsFormat;
use raibid_config::TokenScope;
use raibid_model::{Event, SecretScope};
use raibid_queue::JobFilter;
use serde::Deserialize;

use super::actions::form_caller;
use super::{Chrome, PageError, Viewer, page};
use crate::api::secrets::{self, SecretList, SetSecret};
use crate::auth::{Caller, require};
use crate::{ApiError, AppState};

#[derive(Template)]
#[template(path = "secrets.html")]
struct SecretsPage {
    root: String,
    title: String,
    chrome: Chrome,
    /// What the page is about, as typed: `owner/name` or `owner`; empty: nothing chosen yet.
    of: String,
    /// "repository" or "owner", for the page's sentences.
    kind: &'static str,
    rows: Vec<Row>,
    events: [&'static str; 5],
    /// Repositories of recent jobs, and their owners, whose secrets the token may set: what
    /// the chooser suggests.
    known: Vec<String>,
}

struct Row {
    name: String,
    events: String,
    branches: String,
    updated: String,
}

#[derive(Deserialize)]
pub(super) struct Of {
    of: Option<String>,
}

pub(super) async fn show(
    viewer: Viewer,
    State(state): State<AppState>,
    query: Result<Query<Of>, QueryRejection>,
) -> Result<Response, PageError> {
    let caller = viewer
        .token("see and set secrets")
        .and_then(|token| require(token, TokenScope::Secrets))
        .map_err(|e| viewer.fail(e))?;
    let Query(query) = query.map_err(|e| viewer.fail(ApiError::InvalidRequest(e.body_text())))?;
    let of = query.of.unwrap_or_default().trim().to_owned();
    let known = known(&state, &caller).await.map_err(|e| viewer.fail(e))?;
    let scope = (!of.is_empty())
        .then(|| secrets::scope_named(&caller, &of))
        .transpose()
        .map_err(|e| viewer.fail(e))?;
    let kind = match &scope {
        Some(SecretScope::Owner(_)) => "owner",
        _ => "repository",
    };
    let rows = match scope {
        None => Vec::new(),
        Some(scope) => {
            let Json(SecretList { secrets }) = secrets::list_of(&state, scope)
                .await
                .map_err(|e| viewer.fail(e))?;
            secrets
                .into_iter()
                .map(|s| Row {
                    events: if s.events.is_empty() {
                        "every event".into()
                    } else {
                        s.events
                            .iter()
                            .map(|e| e.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                    branches: if s.branches.is_empty() {
                        "any".into()
                    } else {
                        s.branches.join(", ")
                    },
                    updated: s.updated_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                    name: s.name,
                })
                .collect()
        }
    };
    let template = SecretsPage {
        root: viewer.root().to_owned(),
        title: if of.is_empty() {
            "Secrets".into()
        } else {
            format!("Secrets of {of}")
        },
        chrome: viewer.chrome(),
        kind,
        of,
        rows,
        events: Event::ALL.map(Event::as_str),
        known,
    };
    Ok(page(StatusCode::OK, &template))
}

/// Jobs read for the chooser's suggestions: the newest, which name the repositories in use.
const RECENT_JOBS: usize = 200;

/// The repositories of the newest jobs and their owners, those `caller` may set secrets of,
/// sorted.
async fn known(state: &AppState, caller: &Caller) -> Result<Vec<String>, ApiError> {
    let page = state
        .queue()
        .list(&JobFilter::default(), None, RECENT_JOBS)
        .await?;
    let mut known = std::collections::BTreeSet::new();
    for job in &page.jobs {
        let repo = &job.spec.repo;
        if caller.may_change(repo).is_ok() {
            known.insert(repo.clone());
        }
        if let Some((owner, _)) = repo.split_once('/')
            && caller.may_change_owner(owner).is_ok()
        {
            known.insert(owner.to_owned());
        }
    }
    Ok(known.into_iter().collect())
}

/// `POST /secrets/set`: `of`, `name`, `value`, `event` (repeated; none: every event) and
/// `branches` (a glob a line; none: any branch).
pub(super) async fn set(
    viewer: Viewer,
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Redirect, PageError> {
    let caller = form_caller(
        &viewer,
        &state,
        &headers,
        "set secrets",
        TokenScope::Secrets,
    )?;
    let field = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    let of = field("of").trim().to_owned();
    let name = field("name").trim().to_owned();
    let events = fields
        .iter()
        .filter(|(k, _)| k == "event")
        .map(|(_, v)| {
            v.parse::<Event>().map_err(|e| ApiError::InvalidField {
                field: "event".into(),
                message: e,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| viewer.fail(e))?;
    let branches = field("branches")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    // A browser's textarea ends lines with CRLF; a secret's value is what was typed.
    let request = Ok(Json(SetSecret::new(
        field("value").replace("\r\n", "\n"),
        events,
        branches,
    )));
    let scope = secrets::scope_named(&caller, &of).map_err(|e| viewer.fail(e))?;
    secrets::set_in(&state, &caller, scope, &name, request)
        .await
        .map(drop)
        .map_err(|e| viewer.fail(e))?;
    Ok(Redirect::to(&href(viewer.root(), &of)))
}

#[derive(Deserialize)]
pub(super) struct Delete {
    of: String,
    name: String,
}

/// `POST /secrets/delete`: `of` and `name`.
pub(super) async fn delete(
    viewer: Viewer,
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(delete): Form<Delete>,
) -> Result<Redirect, PageError> {
    let caller = form_caller(
        &viewer,
        &state,
        &headers,
        "delete secrets",
        TokenScope::Secrets,
    )?;
    let of = delete.of.trim().to_owned();
    let scope = secrets::scope_named(&caller, &of).map_err(|e| viewer.fail(e))?;
    secrets::delete_from(&state, &caller, scope, &delete.name)
        .await
        .map_err(|e| viewer.fail(e))?;
    Ok(Redirect::to(&href(viewer.root(), &of)))
}

/// The page of `of`'s secrets.
pub(super) fn href(root: &str, of: &str) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("of", of)
        .finish();
    format!("{root}/secrets?{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_of_a_repository_s_secrets() {
        assert_eq!(href("/ci", "acme/app"), "/ci/secrets?of=acme%2Fapp");
    }
}
