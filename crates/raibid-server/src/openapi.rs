//! The OpenAPI 3.1 description of every route, served at `GET /api/v1/openapi.json`.
//!
//! Written by hand as JSON because the wire types live in `raibid-model`, which has no
//! schema derives to lean on. A test checks that the document and the router's route tables
//! name exactly the same operations, so neither can drift without failing the build.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::AppState;

pub(crate) async fn document(State(state): State<AppState>) -> Json<Value> {
    Json(spec(&state.config().server.public_url))
}

fn spec(public_url: &str) -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "raibid-ci server",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Forge webhooks in, the jobs API, live logs, operations endpoints. \
                Every error is JSON: {\"error\": {\"code\", \"message\"}}; 503 answers carry \
                Retry-After."
        },
        "servers": [{ "url": public_url }],
        "paths": with_lockout(with_forbidden(with_secrets(with_log_erasure(with_repos(with_badges(with_schedules(paths()))))))),
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token whose sha256 hash is listed in server.tokens. An entry there may name it and limit it to scopes (read, jobs: submit, cancel, retry, approve, run schedules; secrets) and to repositories (globs over owner/name); every token reads."
                },
                "signature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Gitea-Signature",
                    "description": "HMAC-SHA256 of the raw body with the webhook secret: \
                        X-Gitea-Signature (Gitea), X-Forgejo-Signature or X-Gitea-Signature \
                        (Forgejo), X-Hub-Signature-256 with a sha256= prefix (GitHub)."
                }
            },
            "schemas": schemas()
        }
    })
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_body(description: &str, schema: Value) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema } }
    })
}

/// Every call that needs a token may also meet a token that is not for it (`server.tokens`
/// scopes and repositories): 403, code `forbidden`.
fn with_forbidden(paths: Value) -> Value {
    with_response(
        paths,
        "403",
        "The token lacks the scope this call needs, or is not for the repository (or owner; a \
         pool: every repository) it changes (code forbidden); the message says which.",
        |security| security == &json!([{ "bearer": [] }]),
    )
}

/// Every call that compares a bearer token may meet a client locked out for presenting too
/// many wrong ones: 429, code `too_many_auth_failures`.
fn with_lockout(paths: Value) -> Value {
    with_response(
        paths,
        "429",
        "This client presented server.auth_failures_max wrong tokens within \
         server.auth_failures_window_secs, so its tokens are refused unchecked until that \
         window ends (code too_many_auth_failures); retry after Retry-After seconds.",
        |security| {
            security
                .as_array()
                .is_some_and(|ways| ways.contains(&json!({ "bearer": [] })))
        },
    )
}

/// Adds the response `status` to every operation whose `security` `applies`; where the
/// operation has one already, its description gains "Or: <description>".
fn with_response(
    mut paths: Value,
    status: &str,
    description: &str,
    applies: impl Fn(&Value) -> bool,
) -> Value {
    let Some(paths) = paths.as_object_mut() else {
        unreachable!("paths are an object");
    };
    for operation in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
    {
        let applies = applies(&operation["security"]);
        let Some(responses) = operation
            .get_mut("responses")
            .and_then(Value::as_object_mut)
            .filter(|_| applies)
        else {
            continue;
        };
        match responses.get_mut(status) {
            Some(existing) => {
                let before = existing["description"].as_str().unwrap_or_default();
                let mut also = description.chars();
                let also: String = also
                    .next()
                    .map(|first| first.to_lowercase().chain(also).collect())
                    .unwrap_or_default();
                existing["description"] = json!(format!("{before} Or: {also}"));
            }
            None => {
                responses.insert(status.into(), error(description));
            }
        }
    }
    Value::Object(std::mem::take(paths))
}

fn error(description: &str) -> Value {
    json_body(description, schema_ref("Error"))
}

fn job_id_parameter() -> Value {
    json!({
        "name": "id", "in": "path", "required": true,
        "description": "Job id (a ULID).",
        "schema": { "type": "string" }
    })
}

fn pool_parameter() -> Value {
    json!({
        "name": "pool", "in": "path", "required": true,
        "description": "Pool name, as GET /api/v1/queues lists it.",
        "schema": { "type": "string" }
    })
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema })
}

fn webhook(forge: &str) -> Value {
    json!({
        "post": {
            "operationId": format!("webhook_{forge}"),
            "tags": ["webhooks"],
            "summary": format!("Receive a {forge} webhook"),
            "description": "Checks, in order: body size, signature, content type, payload, \
                server.allowed_repos, server.events; then queues one job. A redelivery (same \
                delivery id header) returns the existing job.",
            "security": [{ "signature": [] }],
            "requestBody": {
                "required": true,
                "content": { "application/json": { "schema": { "type": "object" } } }
            },
            "responses": {
                "200": json_body("Redelivery of an already queued webhook.", schema_ref("WebhookDuplicate")),
                "202": json_body("Queued, acknowledged and ignored (with the reason), or a closed pull request's builds cancelled.",
                    json!({ "oneOf": [schema_ref("WebhookQueued"), schema_ref("WebhookIgnored"), schema_ref("WebhookClosed")] })),
                "400": error("Malformed JSON or a missing/invalid field (named by its JSON path)."),
                "401": error("Missing or wrong signature, or no webhook secret configured."),
                "403": error("The repository is not in server.allowed_repos."),
                "413": error("Body larger than server.body_limit_bytes."),
                "415": error("Content-Type is not application/json."),
                "503": error("Redis unavailable or the pool's queue is full; retry later. Also when \
                    the job was queued but the older builds it supersedes could not be cancelled: \
                    the message names the job, and a redelivery finishes the cancelling.")
            }
        }
    })
}

/// `GET /api/v1/repos/{owner}/{name}/badge.svg`, added beside `paths()` like the schedules.
fn with_badges(mut paths: Value) -> Value {
    let path = |name: &str, description: &str| {
        json!({ "name": name, "in": "path", "required": true, "description": description,
                "schema": { "type": "string" } })
    };
    paths["/api/v1/repos/{owner}/{name}/badge.svg"] = json!({
        "get": {
            "operationId": "repo_badge",
            "tags": ["jobs"],
            "summary": "A status badge (SVG) for a repository's README",
            "description": "The newest finished build of the branch: passing, failing, error, \
                cancelled, or unknown when none of the repository's 200 newest jobs is one. \
                Pull requests, tags and matrix variants are not counted; a matrix job shows \
                its variants combined. Without branch, the newest finished build of any \
                branch. Cache-Control: no-cache.",
            "security": [{}, { "bearer": [] }],
            "parameters": [
                path("owner", "The repository's owner, as the forge names it."),
                path("name", "The repository's name."),
                query("branch", "The branch, like main.", json!({ "type": "string" })),
                query(
                    "workflow",
                    "One workflow of .raibid/ (its file name without .yaml): the newest \
                     finished build of the branch that ran it, its jobs (every matrix \
                     variant) combined; the badge's label is the workflow's name.",
                    json!({ "type": "string" })
                )
            ],
            "responses": {
                "200": {
                    "description": "The badge.",
                    "content": { "image/svg+xml": { "schema": { "type": "string" } } }
                },
                "400": error("Not a repository name (owner/name), or not a workflow name."),
                "401": error(
                    "Missing or invalid bearer token (only with server.read_requires_token)."
                ),
                "403": error(
                    "Reads need a token and the token is not for this repository (its repos); \
                     code forbidden."
                ),
                "503": error("Redis is unavailable; retry after Retry-After seconds.")
            }
        }
    });
    paths
}

/// `DELETE /api/v1/jobs/{id}/logs` and `/api/v1/jobs/{id}/build/logs`, beside `paths()`.
fn with_log_erasure(mut paths: Value) -> Value {
    paths["/api/v1/jobs/{id}/logs"]["delete"] = json!({
        "operationId": "erase_job_log",
        "tags": ["jobs"],
        "summary": "Erase a finished job's log",
        "description": "For a secret that reached the log unmasked, say (GitLab's \"Erase job \
            log\"). The log is deleted; the job's record and result stay, and say who erased \
            it and when (log_erased), which the log's reads then give in its place. Needs the \
            jobs scope for the job's repository; the server's log names the token.",
        "security": [{ "bearer": [] }],
        "parameters": [job_id_parameter()],
        "responses": {
            "200": json_body("The job, its log erased.", schema_ref("Job")),
            "401": error("Missing or invalid bearer token."),
            "404": error("No such job."),
            "409": error("The job has not ended (its agent may still write to its log); the \
                message names its status."),
            "503": error("Redis is unavailable; retry after Retry-After seconds.")
        }
    });
    paths["/api/v1/jobs/{id}/build/logs"]["delete"] = json!({
        "operationId": "erase_build_logs",
        "tags": ["jobs"],
        "summary": "Erase the logs of a build: the job and every job it queued",
        "description": "A secret a step printed is in the log of every matrix variant (as \
            Woodpecker's log purge of a pipeline and GitHub's \"Delete all logs\" of a run). \
            Each job's log is erased as DELETE /api/v1/jobs/{id}/logs erases it; jobs gone from \
            Redis are passed over. Needs the jobs scope for the job's repository.",
        "security": [{ "bearer": [] }],
        "parameters": [job_id_parameter()],
        "responses": {
            "200": json_body(
                "The jobs whose logs were erased.",
                json!({
                    "type": "object",
                    "required": ["erased"],
                    "properties": {
                        "erased": {
                            "type": "array",
                            "items": { "type": "string" },
                            "description": "Job ids: the job, then those it queued, then theirs."
                        }
                    }
                })
            ),
            "401": error("Missing or invalid bearer token."),
            "404": error("No such job."),
            "409": error("A job of the build has not ended; nothing was erased, and the \
                message names it."),
            "503": error("Redis is unavailable; retry after Retry-After seconds.")
        }
    });
    paths
}

/// The repositories with builds (`/api/v1/repos`) and one's refs
/// (`/api/v1/repos/{owner}/{name}`), beside `paths()`.
fn with_repos(mut paths: Value) -> Value {
    let path = |name: &str, description: &str| {
        json!({ "name": name, "in": "path", "required": true, "description": description,
                "schema": { "type": "string" } })
    };
    let unauthorized =
        error("Missing or invalid bearer token (only with server.read_requires_token).");
    paths["/api/v1/repos"] = json!({
        "get": {
            "operationId": "list_repos",
            "tags": ["jobs"],
            "summary": "The repositories with jobs, each with its newest build",
            "description": "The most recently active first (by when their newest job was \
                queued), at most 1000; with server.read_requires_token, only those the token \
                may read. A repository whose jobs were all pruned is not listed.",
            "security": [{}, { "bearer": [] }],
            "responses": {
                "200": json_body("The repositories.", json!({
                    "type": "object", "required": ["repos"],
                    "properties": { "repos": { "type": "array", "items": {
                        "type": "object", "required": ["repo", "last_queued_at"],
                        "properties": {
                            "repo": { "type": "string" },
                            "last_queued_at": { "type": "string", "format": "date-time" },
                            "latest": schema_ref("Build")
                        }
                    } } }
                })),
                "401": unauthorized.clone(),
                "503": error("Redis is unavailable; retry after Retry-After seconds.")
            }
        }
    });
    paths["/api/v1/repos/{owner}/{name}"] = json!({
        "get": {
            "operationId": "show_repo",
            "tags": ["jobs"],
            "summary": "A repository's branches, pull requests and tags, each with its newest build",
            "description": "Found among the repository's 1000 newest jobs (complete: false \
                when it has more, and refs built only before them are missing), at most 100 \
                of each kind, the most recently built first. A branch's builds are its pushes, \
                manual and cron jobs; a matrix variant, or another workflow's job of the same \
                push, is part of its build, not one of its own.",
            "security": [{}, { "bearer": [] }],
            "parameters": [
                path("owner", "The repository's owner, as the forge names it."),
                path("name", "The repository's name.")
            ],
            "responses": {
                "200": json_body("The repository's refs.", json!({
                    "type": "object",
                    "required": ["repo", "branches", "pull_requests", "tags", "scanned", "complete"],
                    "properties": {
                        "repo": { "type": "string" },
                        "branches": { "type": "array", "items": schema_ref("RefBuild") },
                        "pull_requests": { "type": "array", "items": schema_ref("RefBuild") },
                        "tags": { "type": "array", "items": schema_ref("RefBuild") },
                        "scanned": { "type": "integer", "minimum": 0, "description": "How many of its newest jobs were read." },
                        "complete": { "type": "boolean", "description": "Whether those were all its jobs." }
                    }
                })),
                "400": error("Not a repository name (owner/name)."),
                "401": unauthorized,
                "403": error(
                    "Reads need a token and the token is not for this repository (its repos); \
                     code forbidden."
                ),
                "404": error("The repository has no jobs."),
                "503": error("Redis is unavailable; retry after Retry-After seconds.")
            }
        }
    });
    paths
}

/// Secrets of a repository (`/api/v1/repos/{owner}/{name}/secrets`) and of an owner
/// (`/api/v1/orgs/{owner}/secrets`), beside `paths()`.
fn with_secrets(mut paths: Value) -> Value {
    let path = |name: &str, description: &str| {
        json!({ "name": name, "in": "path", "required": true, "description": description,
                "schema": { "type": "string" } })
    };
    let owner = path(
        "owner",
        "The owner (organization or user), as the forge names it.",
    );
    let repo = vec![owner.clone(), path("name", "The repository's name.")];
    let secret = path(
        "secret",
        "The secret's name: a variable name (letters, digits, '_', not starting with a \
         digit), at most 128 characters, not RAIBID_*.",
    );
    let scopes = [
        (
            "/api/v1/repos/{owner}/{name}/secrets",
            "repo",
            "a repository",
            "Not a repository name (owner/name)",
            repo,
        ),
        (
            "/api/v1/orgs/{owner}/secrets",
            "org",
            "every repository of an owner (an organization or a user; the repository's own \
             secret of the same name wins)",
            "Not an owner's name",
            vec![owner],
        ),
    ];
    for (base, id, whose, bad_scope, params) in scopes {
        let mut with_secret = params.clone();
        with_secret.push(secret.clone());
        let unauthorized = error("Missing or invalid bearer token.");
        let unavailable = error("Redis is unavailable; retry after Retry-After seconds.");
        paths[base] = json!({
            "get": {
                "operationId": format!("list_{id}_secrets"),
                "tags": ["secrets"],
                "summary": format!("The secrets of {whose}, without their values"),
                "description": "Names, events and when each was last set; values never leave \
                    the server. Names of repositories and owners are compared ignoring case.",
                "security": [{ "bearer": [] }],
                "parameters": params,
                "responses": {
                    "200": json_body("The secrets, by name.", json!({
                        "type": "object", "required": ["secrets"],
                        "properties": { "secrets": { "type": "array", "items": schema_ref("RepoSecret") } }
                    })),
                    "400": error(&format!("{bad_scope}.")),
                    "401": unauthorized,
                    "503": unavailable
                }
            }
        });
        paths[format!("{base}/{{secret}}")] = json!({
            "put": {
                "operationId": format!("set_{id}_secret"),
                "tags": ["secrets"],
                "summary": format!("Set a secret of {whose}"),
                "description": "Steps and services of the jobs read it by naming it in \
                    `secrets:`; it wins over an agent's secret of the same name. Jobs of pull \
                    requests from forks never get it (unless agent.secrets_for_forks), nor \
                    jobs of events it is not given to. The value is sealed in Redis with \
                    redis.secrets_key and masked in every log of the jobs that could read it.",
                "security": [{ "bearer": [] }],
                "parameters": with_secret.clone(),
                "requestBody": {
                    "required": true,
                    "content": { "application/json": { "schema": {
                        "type": "object", "required": ["value"], "additionalProperties": false,
                        "properties": {
                            "value": { "type": "string", "minLength": 1, "description": "At most 65536 bytes, no NUL." },
                            "events": { "type": "array", "items": { "enum": ["push", "tag", "pull_request", "manual", "cron"] }, "description": "The events whose jobs may read it; absent or empty: every event." },
                            "branches": { "type": "array", "maxItems": 20, "items": { "type": "string", "minLength": 1, "maxLength": 200 }, "description": "Globs over branch names (`*` within a path segment): only jobs of pushes to a matching branch may read it, never a pull request's or a tag's; absent or empty: any." }
                        }
                    } } }
                },
                "responses": {
                    "200": json_body("Replaced.", schema_ref("RepoSecret")),
                    "201": json_body("Created.", schema_ref("RepoSecret")),
                    "400": error(&format!("{bad_scope}, a bad secret name, an empty, oversized or NUL-holding value, an unknown event, or a bad branch glob.")),
                    "401": unauthorized,
                    "409": error("There are 100 secrets here already."),
                    "415": error("The body is not JSON (Content-Type application/json)."),
                    "501": error("Repository secrets are off: the server has no redis.secrets_key."),
                    "503": unavailable
                }
            },
            "delete": {
                "operationId": format!("delete_{id}_secret"),
                "tags": ["secrets"],
                "summary": format!("Delete a secret of {whose}"),
                "description": "Jobs that start afterwards no longer get it; a step that names \
                    it then fails, unless another secret of that name reaches it.",
                "security": [{ "bearer": [] }],
                "parameters": with_secret,
                "responses": {
                    "204": { "description": "Deleted." },
                    "400": error(&format!("{bad_scope}, or a bad secret name.")),
                    "401": unauthorized,
                    "404": error("No secret of that name here."),
                    "503": unavailable
                }
            }
        });
    }
    paths
}

/// `GET /api/v1/schedules` and `POST /api/v1/schedules/{name}/run`, added beside `paths()`'s
/// document, which is at `json!`'s recursion limit.
fn with_schedules(mut paths: Value) -> Value {
    paths["/api/v1/schedules"] = json!({
        "get": {
            "operationId": "list_schedules",
            "tags": ["schedules"],
            "summary": "Configured schedules (server.schedules)",
            "description": "Each schedule queues a job of event cron for the head of its branch \
                at every occurrence of its cron expression (UTC); occurrences missed while no \
                server ran are not caught up, except the latest while it is less than one \
                period old.",
            "security": [{}, { "bearer": [] }],
            "responses": {
                "200": json_body("The schedules, in configuration order.", json!({
                    "type": "object", "required": ["schedules"],
                    "properties": { "schedules": { "type": "array", "items": schema_ref("Schedule") } }
                })),
                "401": error(
                    "Missing or invalid bearer token (read calls: only with server.read_requires_token).",
                ),
                "503": error("Redis is unavailable; retry after Retry-After seconds.")
            }
        }
    });
    paths["/api/v1/schedules/{name}/run"] = json!({
        "post": {
            "operationId": "run_schedule",
            "tags": ["schedules"],
            "summary": "Queue a schedule's job now",
            "description": "Queues the job an occurrence would (event cron, the head of the \
                schedule's branch resolved now, its pool and env, schedule set to its name), \
                with the delivery id cron:<name>:manual:<ulid>. The scheduler's record of \
                occurrences is not touched: the next occurrence still runs, and last_job in \
                GET /api/v1/schedules stays the last occurrence's job.",
            "security": [{ "bearer": [] }],
            "parameters": [{
                "name": "name", "in": "path", "required": true,
                "description": "The schedule's name in server.schedules.",
                "schema": { "type": "string" }
            }],
            "responses": {
                "201": json_body("The queued job.", schema_ref("Job")),
                "401": error("Missing or invalid bearer token."),
                "404": error("No schedule of that name in server.schedules."),
                "409": error("The server runs no such job: cron is not in server.events, or \
                    the schedule is skipped (its repo is not in server.allowed_repos, or its \
                    repo, clone_url or branch is invalid); the message says which."),
                "422": error("The head of the schedule's branch could not be resolved \
                    (git ls-remote failed, or the branch does not exist)."),
                "503": error("Redis unavailable or the pool's queue is full; retry later.")
            }
        }
    });
    paths
}

fn paths() -> Value {
    let unauthorized = error(
        "Missing or invalid bearer token (read calls: only with server.read_requires_token).",
    );
    let unavailable = error("Redis is unavailable; retry after Retry-After seconds.");
    let not_found = error(
        "No such job, or, when reads need a token, a job of a repository the token is not for.",
    );
    let not_readable = error(
        "Reads need a token (server.read_requires_token) and the token is not for the \
         repository named (its repos); code forbidden.",
    );
    let bad_request = error("Invalid parameter or body field, named in the message.");
    json!({
        "/webhooks/gitea": webhook("gitea"),
        "/webhooks/forgejo": webhook("forgejo"),
        "/webhooks/github": webhook("github"),
        "/api/v1/jobs": {
            "get": {
                "operationId": "list_jobs",
                "tags": ["jobs"],
                "summary": "List jobs, newest first",
                "description": "When reads need a token, a token limited to some repositories \
                    (server.tokens repos) lists only theirs. Such a listing, and one filtered by \
                    branch or event, holds the jobs found among 5,000 records at most, possibly \
                    fewer than limit (none, even), with a next_cursor to go on from.",
                "security": [{}, { "bearer": [] }],
                "parameters": [
                    query("status", "Only jobs with this status as the list shows it (ListedJob): a build's first job that passed is listed by its build's status. Such a page may hold fewer jobs than `limit` and still have a next_cursor.", schema_ref("JobStatus")),
                    query("repo", "Only jobs of this owner/name.", json!({ "type": "string" })),
                    query("pool", "Only jobs of this pool.", json!({ "type": "string" })),
                    query("branch", "Only jobs building this branch: pushes to it and pull requests into it (a name such as main, without refs/heads/).", json!({ "type": "string" })),
                    query("event", "Only jobs of this event.", schema_ref("Event")),
                    query("cursor", "next_cursor of the previous page.", json!({ "type": "string" })),
                    query("limit", "Page size, 1-1000 (default 50).", json!({ "type": "integer", "minimum": 1, "maximum": 1000 }))
                ],
                "responses": {
                    "200": json_body("One page of jobs.", schema_ref("JobList")),
                    "400": bad_request,
                    "401": unauthorized,
                    "403": not_readable,
                    "503": unavailable
                }
            },
            "post": {
                "operationId": "submit_job",
                "tags": ["jobs"],
                "summary": "Queue a job by hand",
                "description": "Without sha, the ref is resolved with git ls-remote on clone_url. A client that may send a submission again (after a 503, a timeout or a lost answer, which leave it unknown whether the job was queued) sends an Idempotency-Key: the same key with the same submission, from the same token, within 24 hours, returns the job the first queued (200) instead of queueing another.",
                "security": [{ "bearer": [] }],
                "parameters": [
                    { "name": "Idempotency-Key", "in": "header", "required": false,
                      "description": "Any key unique to this submission (a UUID or a ULID); send it again, unchanged, with the same body when retrying.",
                      "schema": { "type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$" } }
                ],
                "requestBody": { "required": true, "content": { "application/json": { "schema": schema_ref("SubmitRequest") } } },
                "responses": {
                    "201": json_body("The queued job.", schema_ref("Job")),
                    "200": {
                        "description": "The job an earlier submission with the same Idempotency-Key queued; nothing new was queued.",
                        "headers": { "Idempotent-Replayed": { "description": "true", "schema": { "type": "string", "enum": ["true"] } } },
                        "content": { "application/json": { "schema": schema_ref("Job") } }
                    },
                    "409": error("The Idempotency-Key queued a job that is no longer kept (redis.retain_jobs)."),
                    "400": bad_request,
                    "401": unauthorized,
                    "403": error("The repository is not in server.allowed_repos (code repo_not_allowed), or manual jobs are not in server.events (code event_not_enabled)."),
                    "415": error("Content-Type is not application/json."),
                    "422": error("The ref could not be resolved to a commit (code unresolvable_ref), or the Idempotency-Key was sent before with another submission (code idempotency_key_reused)."),
                    "503": error("Redis unavailable or the pool's queue is full; retry later, with the same Idempotency-Key.")
                }
            }
        },
        "/api/v1/jobs/{id}": {
            "get": {
                "operationId": "show_job",
                "tags": ["jobs"],
                "summary": "One job",
                "security": [{}, { "bearer": [] }],
                "parameters": [job_id_parameter()],
                "responses": {
                    "200": json_body("The job.", schema_ref("Job")),
                    "401": unauthorized,
                    "404": not_found,
                    "503": unavailable
                }
            }
        },
        "/api/v1/jobs/{id}/build": {
            "get": {
                "operationId": "show_build",
                "tags": ["jobs"],
                "summary": "One job with its build's status",
                "description": "The job and the status its commit status gives: for the first job of a matrix or of several workflows, which succeeds once it has queued them, its jobs' combined.",
                "security": [{}, { "bearer": [] }],
                "parameters": [job_id_parameter()],
                "responses": {
                    "200": json_body("The job and its build's status.", schema_ref("Build")),
                    "401": unauthorized,
                    "404": not_found,
                    "503": unavailable
                }
            }
        },
        "/api/v1/jobs/{id}/cancel": {
            "post": {
                "operationId": "cancel_job",
                "tags": ["jobs"],
                "summary": "Cancel a job",
                "description": "A queued job is cancelled at once; a running one is stopped by its agent within one heartbeat.",
                "security": [{ "bearer": [] }],
                "parameters": [job_id_parameter()],
                "responses": {
                    "200": json_body("What happened.", schema_ref("CancelResult")),
                    "401": unauthorized,
                    "404": not_found,
                    "503": unavailable
                }
            }
        },
        "/api/v1/jobs/{id}/retry": {
            "post": {
                "operationId": "retry_job",
                "tags": ["jobs"],
                "summary": "Queue a fresh copy of a job",
                "security": [{ "bearer": [] }],
                "parameters": [job_id_parameter()],
                "responses": {
                    "201": json_body("The new job (retry_of names the original).", schema_ref("Job")),
                    "401": unauthorized,
                    "404": not_found,
                    "409": error("The job is not finished (queued or running); the message names its status."),
                    "503": unavailable
                }
            }
        },
        "/api/v1/jobs/{id}/retry-failed": {
            "post": {
                "operationId": "retry_failed_jobs",
                "tags": ["jobs"],
                "summary": "Queue fresh copies of the failed jobs that a job queued",
                "description": "GitHub's Re-run failed jobs: of the jobs a matrix or workflow job queued (its children), those that failed, could not run or were given up are retried; the workflows skipped because of them are recorded again, waiting for the retries. The copies take the originals' places among the children.",
                "security": [{ "bearer": [] }],
                "parameters": [job_id_parameter()],
                "responses": {
                    "201": json_body("The retries, in the order of the children.", json!({
                        "type": "object", "required": ["retried"],
                        "properties": { "retried": { "type": "array", "items": schema_ref("Job") } }
                    })),
                    "401": unauthorized,
                    "404": not_found,
                    "409": error("The job is not finished, queued no jobs, or none of them failed; the message says which."),
                    "503": unavailable
                }
            }
        },
        "/api/v1/jobs/{id}/approve": {
            "post": {
                "operationId": "approve_job",
                "tags": ["jobs"],
                "summary": "Queue a job that waits for approval (blocked)",
                "description": "server.approval blocks webhooks' jobs (by default: pull requests from forks) until a token holder approves them. To decline one, cancel it.",
                "security": [{ "bearer": [] }],
                "parameters": [job_id_parameter()],
                "responses": {
                    "200": json_body("The job, now queued.", schema_ref("Job")),
                    "401": unauthorized,
                    "404": not_found,
                    "409": error("The job is not blocked; the message names its status."),
                    "503": unavailable
                }
            }
        },
        "/api/v1/jobs/{id}/logs": {
            "get": {
                "operationId": "job_logs",
                "tags": ["jobs"],
                "summary": "A job's output, read once or followed",
                "description": "Without follow: the output after cursor as text/plain (at most 8 MiB \
                    per response), with headers X-Raibid-Log-Cursor (pass it back as cursor to \
                    continue) and X-Raibid-Log-Finished (true once the job has ended and \
                    everything was returned).\n\nWith follow=true: text/event-stream. Each chunk \
                    of output is one `event: log` with `id: <cursor>` and \
                    `data: {\"text\": \"<chunk>\"}` (the chunk JSON-encoded, as SSE data lines \
                    cannot hold newlines; bytes that are not UTF-8 become U+FFFD). When the log \
                    ends, `event: end` with `data: {\"status\": \"<final job status>\"}` and the \
                    stream closes; if the job's record was deleted (pruned) before its final \
                    status could be read, `event: gone` with \
                    `data: {\"error\": {\"code\": \"gone\", \"message\": \"...\"}}` closes \
                    it instead (do not reconnect: the job no longer exists). Comment lines keep \
                    idle connections alive. A reconnect with \
                    Last-Event-ID continues after that event. A stream is closed without an end \
                    event after server.log_stream_max_secs (default 3600) or when the server \
                    shuts down: reconnect with Last-Event-ID. At most server.max_log_streams \
                    (default 256) streams are open at once; past that, 503 with code \
                    too_many_log_streams and Retry-After. One client (a token holder by its \
                    token, else a peer address, or behind a proxy in server.trusted_proxies the \
                    address it forwards) may hold server.max_log_streams_per_client \
                    (default 32) of them; past that, 429 with code \
                    too_many_log_streams_for_client and Retry-After.",
                "security": [{}, { "bearer": [] }],
                "parameters": [
                    job_id_parameter(),
                    query("cursor", "Continue after this cursor (from X-Raibid-Log-Cursor or an event id).", json!({ "type": "string" })),
                    query("follow", "Stream as Server-Sent Events until the job ends.", json!({ "type": "boolean", "default": false })),
                    { "name": "Last-Event-ID", "in": "header", "required": false,
                      "description": "With follow: continue after this event id (wins over cursor).",
                      "schema": { "type": "string" } }
                ],
                "responses": {
                    "200": {
                        "description": "The log.",
                        "headers": {
                            "X-Raibid-Log-Cursor": { "schema": { "type": "string" }, "description": "Cursor after the returned text (plain reads)." },
                            "X-Raibid-Log-Finished": { "schema": { "type": "boolean" }, "description": "The log is complete (plain reads)." }
                        },
                        "content": {
                            "text/plain": { "schema": { "type": "string" } },
                            "text/event-stream": { "schema": { "type": "string" } }
                        }
                    },
                    "400": bad_request,
                    "401": unauthorized,
                    "404": not_found,
                    "429": error("With follow: this client already holds \
                        server.max_log_streams_per_client streams (code \
                        too_many_log_streams_for_client); retry after Retry-After seconds."),
                    "503": error("Redis is unavailable (code unavailable), or, with follow, \
                        server.max_log_streams streams are already open (code \
                        too_many_log_streams); retry after Retry-After seconds.")
                }
            }
        },
        "/api/v1/jobs/{id}/artifacts": {
            "get": {
                "operationId": "job_artifacts",
                "tags": ["jobs"],
                "summary": "Download a job's artifacts",
                "description": "The gzipped tar of the job's artifacts: (the pipeline's \
                    artifacts:), fetched from the registry the agent pushed it to with the \
                    server's login there (agent.registry) and passed on as it comes. It is \
                    checked against the digest its manifest names while it passes; when the \
                    registry serves other bytes the response is broken off before its end, so \
                    a client must treat a short body as a failure (Content-Length says the \
                    size) and may check X-Raibid-Artifacts-Digest itself.",
                "security": [{}, { "bearer": [] }],
                "parameters": [job_id_parameter()],
                "responses": {
                    "200": {
                        "description": "The archive (ORAS's artifacts.tar.gz).",
                        "headers": {
                            "X-Raibid-Artifacts-Digest": { "schema": { "type": "string" }, "description": "sha256:<hex> of the archive." },
                            "Content-Length": { "schema": { "type": "integer" }, "description": "Its size in bytes." }
                        },
                        "content": { "application/gzip": { "schema": { "type": "string", "format": "binary" } } }
                    },
                    "401": unauthorized,
                    "404": error("No such job (or, when reads need a token, one of a repository the token is not for), the job has no artifacts, or the registry no longer has them."),
                    "410": error("The artifacts expired and were deleted (code gone)."),
                    "502": error("The registry failed or refused the server (code bad_gateway)."),
                    "503": unavailable
                }
            }
        },
        "/api/v1/queues": {
            "get": {
                "operationId": "list_queues",
                "tags": ["pools"],
                "summary": "Statistics of every known pool's queue",
                "security": [{}, { "bearer": [] }],
                "responses": {
                    "200": json_body("One entry per pool.", json!({
                        "type": "object", "required": ["pools", "scalers"],
                        "properties": {
                            "pools": { "type": "array", "items": schema_ref("PoolStats") },
                            "scalers": { "type": "array", "items": schema_ref("ScalerStatus") }
                        }
                    })),
                    "401": unauthorized,
                    "503": unavailable
                }
            }
        },
        "/api/v1/queues/{pool}/pause": {
            "post": {
                "operationId": "pause_pool",
                "tags": ["pools"],
                "summary": "Hold a pool's jobs, queued, until it is resumed",
                "description": "Agents claim none of the pool's jobs and raibid up starts no \
                    agent for them; webhooks still queue them and running jobs go on. Pausing \
                    a paused pool replaces its reason. Needs the pools scope and a token for \
                    every repository.",
                "security": [{ "bearer": [] }],
                "parameters": [pool_parameter()],
                "requestBody": { "required": false, "content": { "application/json": { "schema": {
                    "type": "object",
                    "properties": { "reason": { "type": "string", "maxLength": 200, "description": "One line, shown wherever the pool is." } }
                } } } },
                "responses": {
                    "200": json_body("The pool, paused.", schema_ref("PoolStats")),
                    "400": bad_request,
                    "401": unauthorized,
                    "404": error("No pool of that name is known; the message lists the pools."),
                    "503": unavailable
                }
            }
        },
        "/api/v1/queues/{pool}/resume": {
            "post": {
                "operationId": "resume_pool",
                "tags": ["pools"],
                "summary": "Let agents take a paused pool's jobs again",
                "description": "Resuming a pool that is not paused changes nothing.",
                "security": [{ "bearer": [] }],
                "parameters": [pool_parameter()],
                "responses": {
                    "200": json_body("The pool.", schema_ref("PoolStats")),
                    "400": bad_request,
                    "401": unauthorized,
                    "404": error("No pool of that name is known; the message lists the pools."),
                    "503": unavailable
                }
            }
        },
        "/api/v1/agents": {
            "get": {
                "operationId": "list_agents",
                "tags": ["pools"],
                "summary": "Registered agents",
                "security": [{}, { "bearer": [] }],
                "responses": {
                    "200": json_body("Agents, stale ones flagged.", json!({
                        "type": "object", "required": ["agents"],
                        "properties": { "agents": { "type": "array", "items": schema_ref("Agent") } }
                    })),
                    "401": unauthorized,
                    "503": unavailable
                }
            }
        },
        "/api/v1/openapi.json": {
            "get": {
                "operationId": "openapi",
                "tags": ["ops"],
                "summary": "This document",
                "responses": { "200": json_body("OpenAPI 3.1 document.", json!({ "type": "object" })) }
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "tags": ["ops"],
                "summary": "Liveness: the process answers",
                "responses": { "200": json_body("Alive.", schema_ref("Status")) }
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "tags": ["ops"],
                "summary": "Readiness: Redis answers",
                "responses": {
                    "200": json_body("Ready.", schema_ref("Status")),
                    "503": error("Redis is unavailable.")
                }
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "tags": ["ops"],
                "summary": "Prometheus metrics (OpenMetrics text)",
                "responses": {
                    "200": {
                        "description": "Metrics.",
                        "content": { "application/openmetrics-text": { "schema": { "type": "string" } } }
                    }
                }
            }
        }
    })
}

fn schemas() -> Value {
    let string = json!({ "type": "string" });
    let opt_string = json!({ "type": ["string", "null"] });
    let time = json!({ "type": "string", "format": "date-time" });
    // Added to `Job` afterwards: the document below is at `json!`'s recursion limit.
    let diff_base = json!({
        "type": "string",
        "pattern": "^([0-9a-fA-F]{40}|[0-9a-fA-F]{64})$",
        "description": "The commit `when: path` filters compare `sha` with: a branch push's \
                        previous commit, a pull request's base. Absent for tags, manual jobs \
                        and pushes that created their branch; path filters then match."
    });
    let mut schemas = json!({
        "Error": {
            "type": "object", "required": ["error"],
            "properties": { "error": {
                "type": "object", "required": ["code", "message"],
                "properties": {
                    "code": { "type": "string", "description": "Stable identifier, e.g. invalid_field, unauthorized, unavailable." },
                    "message": string
                }
            } }
        },
        "Status": { "type": "object", "properties": { "status": string } },
        "JobStatus": { "type": "string", "enum": ["blocked", "queued", "running", "success", "failure", "error", "cancelled", "dead", "skipped"], "description": "blocked: waiting for a person's approval (server.approval), for the workflows it depends on (needs), or for its concurrency group (concurrency), before it is queued. skipped: a workflow not run because those ended otherwise than its runs_on wants (reason says how)." },
        "Event": { "type": "string", "enum": ["push", "tag", "pull_request", "manual", "cron"] },
        "Forge": { "type": "string", "enum": ["gitea", "forgejo", "github"] },
        "StepResult": {
            "type": "object", "required": ["name", "status"],
            "properties": {
                "name": string,
                "status": { "type": "string", "enum": ["pending", "running", "success", "failure", "skipped", "cancelled"] },
                "exit_code": { "type": "integer" },
                "duration_ms": { "type": "integer", "minimum": 0 },
                "tail": string
            }
        },
        "Job": {
            "type": "object",
            "required": ["id", "repo", "clone_url", "git_ref", "sha", "event", "pool", "from_fork",
                         "status", "attempt", "created_at", "cancel_requested", "steps", "images"],
            "properties": {
                "id": string,
                "repo": string,
                "clone_url": string,
                "git_ref": { "type": "string", "description": "Full ref, e.g. refs/heads/main." },
                "sha": string,
                "event": schema_ref("Event"),
                "pool": string,
                "forge": schema_ref("Forge"),
                "pr_number": { "type": "integer", "minimum": 0 },
                "from_fork": { "type": "boolean" },
                "sender": string,
                "delivery_id": string,
                "env": { "type": "object", "additionalProperties": string },
                "retry_of": string,
                "matrix_parent": { "type": "string", "description": "The job that queued this one: a matrix job for its variant, or the first job of a push for one of its workflows (.raibid/)." },
                "target_branch": { "type": "string", "description": "For a pull request, the branch it targets." },
                "children": { "type": "array", "items": string, "description": "The variant jobs of a matrix job, or the workflow jobs of a push with workflows in .raibid/." },
                "log_pruned": { "type": "boolean", "description": "The job's log was deleted to keep Redis below its memory limit (`redis.prune_memory_percent`); present only when true." },
                "status": schema_ref("JobStatus"),
                "attempt": { "type": "integer", "minimum": 0 },
                "created_at": time,
                "started_at": time,
                "finished_at": time,
                "agent": string,
                "reason": string,
                "cancel_requested": { "type": "boolean" },
                "steps": { "type": "array", "items": schema_ref("StepResult") },
                "images": { "type": "array", "items": string },
                "artifacts": schema_ref("JobArtifacts")
            }
        },
        "SubmitRequest": {
            "type": "object", "required": ["repo", "clone_url"], "additionalProperties": false,
            "properties": {
                "repo": { "type": "string", "description": "owner/name." },
                "clone_url": { "type": "string", "description": "http(s)://, git:// or file:// URL." },
                "ref": { "type": "string", "default": "refs/heads/main", "description": "Full ref or branch name." },
                "sha": { "type": "string", "description": "40 or 64 hex digits; resolved from ref when absent." },
                "pool": { "type": "string", "description": "Defaults to the pool server.pool_rules pick for repo." },
                "env": {
                    "type": "object", "additionalProperties": string,
                    "description": "Variables the steps get. RAIBID_* names are refused except RAIBID_MATRIX (run one variant of a matrix) and RAIBID_WORKFLOW (run one workflow of .raibid/)."
                }
            }
        },
        "JobList": {
            "type": "object", "required": ["jobs", "next_cursor"],
            "properties": {
                "jobs": { "type": "array", "items": schema_ref("ListedJob") },
                "next_cursor": opt_string
            }
        },
        "CancelResult": {
            "type": "object", "required": ["result", "status"],
            "properties": {
                "result": { "type": "string", "enum": ["cancelled", "requested", "already_finished"] },
                "status": schema_ref("JobStatus"),
                "variants": {
                    "type": "array", "items": string,
                    "description": "A matrix job's variants cancelled with it, or asked to stop; absent when none."
                }
            }
        },
        "WebhookQueued": {
            "type": "object", "required": ["job_id", "status"],
            "properties": {
                "job_id": string,
                "status": {
                    "enum": ["queued", "blocked"],
                    "description": "blocked: waiting for a person's approval (server.approval)."
                },
                "superseded": {
                    "type": "array", "items": string,
                    "description": "Older builds of the same branch or pull request that this one cancelled, or asked to stop (server.cancel_superseded); absent when none."
                }
            }
        },
        "WebhookDuplicate": {
            "type": "object", "required": ["job_id", "duplicate"],
            "properties": {
                "job_id": string,
                "duplicate": { "const": true },
                "superseded": {
                    "type": "array", "items": string,
                    "description": "Older builds the first delivery failed to cancel (its answer was a 503) and this one cancelled; absent when none."
                }
            }
        },
        "WebhookIgnored": {
            "type": "object", "required": ["ignored"],
            "properties": { "ignored": { "type": "string", "description": "Why no job was queued." } }
        },
        "WebhookClosed": {
            "type": "object", "required": ["closed", "cancelled"],
            "description": "A pull request was closed or merged (action closed), with server.cancel_superseded listing pull_request: its builds still queued, waiting for approval or running were cancelled (or asked to stop).",
            "properties": {
                "closed": { "type": "integer", "description": "The pull request's number." },
                "cancelled": { "type": "array", "items": string }
            }
        },
        "ConsumerStats": {
            "type": "object", "required": ["name", "pending", "idle_ms"],
            "properties": {
                "name": string,
                "pending": { "type": "integer" },
                "idle_ms": { "type": "integer" }
            }
        },
        "PoolStats": {
            "type": "object",
            "required": ["pool", "stream", "length", "lag", "pending", "consumers", "dead_letters"],
            "properties": {
                "pool": string,
                "stream": string,
                "length": { "type": "integer" },
                "lag": { "type": "integer", "description": "Jobs not yet delivered to an agent." },
                "pending": { "type": "integer", "description": "Jobs delivered and not yet finished." },
                "consumers": { "type": "array", "items": schema_ref("ConsumerStats") },
                "oldest_queued_ms": { "type": "integer" },
                "dead_letters": { "type": "integer" },
                "paused": schema_ref("PoolPause")
            }
        },
        "PoolPause": {
            "type": "object",
            "description": "Present while the pool is paused: its jobs stay queued.",
            "required": ["by", "reason", "since"],
            "properties": {
                "by": { "type": "string", "description": "The name of the token that paused it." },
                "reason": string,
                "since": time
            }
        },
        "ScalerStatus": {
            "type": "object",
            "required": ["pool", "source", "agents", "starting", "started", "max_agents", "lag", "updated_at"],
            "properties": {
                "pool": string,
                "source": { "type": "string", "description": "local (raibid up) or keda" },
                "agents": { "type": "integer", "description": "Agents that exist now." },
                "starting": { "type": "integer", "description": "Agents that have not taken a job yet." },
                "started": { "type": "integer", "description": "Agents started at the last look." },
                "max_agents": { "type": "integer" },
                "lag": { "type": "integer" },
                "updated_at": time,
                "held": {
                    "type": "string",
                    "description": "Why the scaler starts no agents whatever the lag, while it \
                                    holds them back (raibid up: draining for the private \
                                    registry's garbage collection)."
                }
            }
        },
        "Agent": {
            "type": "object",
            "required": ["name", "arch", "pools", "started_at", "last_heartbeat", "stale"],
            "properties": {
                "name": string,
                "arch": string,
                "pools": { "type": "array", "items": string },
                "labels": { "type": "object", "additionalProperties": string },
                "current_jobs": { "type": "array", "items": string },
                "started_at": time,
                "last_heartbeat": time,
                "jobs_done": { "type": "integer" },
                "version": string,
                "stale": { "type": "boolean", "description": "No heartbeat for three heartbeat intervals." }
            }
        }
    });
    schemas["Build"] = json!({
        "type": "object", "required": ["status", "job"],
        "description": "A build: a job that is no matrix variant and no other workflow's job of its push.",
        "properties": {
            "status": {
                "allOf": [schema_ref("JobStatus")],
                "description": "As its commit status gives it: the job's own; for the first job of a matrix or of several workflows, once it passed, its jobs' combined (running until they all end, then failure if one failed, else cancelled if one was, else success)."
            },
            "description": { "type": "string", "description": "What the combined status says; absent for a single job." },
            "job": schema_ref("Job")
        }
    });
    schemas["ListedJob"] = json!({
        "description": "A job as the job list gives it: the job, and for one that queued others (a matrix's variants, the workflows of .raibid/) its build's status, which the web list and the dashboard show in its place. The status filter reads this status too.",
        "allOf": [
            schema_ref("Job"),
            {
                "type": "object",
                "properties": {
                    "build": {
                        "type": "object", "required": ["status"],
                        "properties": {
                            "status": {
                                "allOf": [schema_ref("JobStatus")],
                                "description": "The job's own until it passed; then its jobs' combined, as the commit status gives it (see Build)."
                            },
                            "description": { "type": "string", "description": "What the combined status says, once the job passed." }
                        }
                    }
                }
            }
        ]
    });
    schemas["RefBuild"] = json!({
        "description": "A ref and its newest build.",
        "allOf": [
            schema_ref("Build"),
            { "type": "object", "required": ["name"], "properties": { "name": { "type": "string", "description": "The branch, the tag, or the pull request's number." } } }
        ]
    });
    schemas["Job"]["properties"]["diff_base"] = diff_base;
    schemas["Job"]["properties"]["schedule"] = json!({
        "type": "string",
        "description": "Jobs of event cron: the name of the schedule (server.schedules) that \
                        queued it; steps get it as CI_PIPELINE_CRON and RAIBID_SCHEDULE."
    });
    schemas["Job"]["properties"]["number"] = json!({
        "type": "integer",
        "description": "The repository's pipeline number (CI_PIPELINE_NUMBER), given when a \
                        webhook, a submission or a schedule queued it; a push's workflows and a \
                        matrix's variants share their first job's, and a retry keeps it."
    });
    schemas["Job"]["properties"]["source_branch"] = json!({
        "type": "string",
        "description": "For a pull request from a branch, that branch (CI_COMMIT_SOURCE_BRANCH)."
    });
    schemas["Job"]["properties"]["pr_labels"] = json!({
        "type": "array",
        "items": { "type": "string" },
        "maxItems": raibid_model::MAX_PR_LABELS,
        "description": "For a pull request, its labels when the webhook was sent \
                        (CI_COMMIT_PULL_REQUEST_LABELS, comma-separated)."
    });
    schemas["Job"]["properties"]["log_erased"] = json!({
        "type": "object",
        "required": ["by", "at"],
        "description": "Who erased the job's log (DELETE /api/v1/jobs/{id}/logs) and when; \
                        present only then.",
        "properties": {
            "by": { "type": "string", "description": "The token's name, or the start of its hash." },
            "at": { "type": "string", "format": "date-time" }
        }
    });
    schemas["Job"]["properties"]["title"] = json!({
        "type": "string",
        "maxLength": raibid_model::MAX_TITLE_CHARS,
        "description": "What the build is about, in one line: a push's head commit's subject, \
                        a pull request's title, as the webhook gave them (control characters \
                        as spaces, cut to 200 characters). A job queued without one \
                        (submissions, schedules) gets its commit's subject once an agent has \
                        checked the commit out."
    });
    schemas["Job"]["properties"]["repo_url"] = json!({
        "type": "string",
        "format": "uri",
        "description": "Jobs of a webhook: the repository's web page on its forge (CI_REPO_URL), \
                        an http(s) URL without credentials."
    });
    schemas["Job"]["properties"]["needs"] = schema_ref("Needs");
    schemas["Job"]["properties"]["concurrency"] = json!({
        "type": "string",
        "description": "The repository's concurrency group (the pipeline's concurrency:) that \
                        the job holds, or waits for while blocked; set once an agent has read \
                        the pipeline."
    });
    schemas["Job"]["properties"]["tests"] = schema_ref("TestReport");
    schemas["TestReport"] = json!({
        "type": "object", "required": ["tests", "failed", "skipped", "seconds", "files"],
        "description": "What the job's JUnit XML reports (artifacts: reports: junit:) said, \
                        counted over their test cases; present once a job that has reports has \
                        ended and one could be read.",
        "properties": {
            "tests": { "type": "integer", "minimum": 0, "description": "Test cases, however they ended." },
            "failed": { "type": "integer", "minimum": 0, "description": "Test cases with <failure> or <error>." },
            "skipped": { "type": "integer", "minimum": 0 },
            "seconds": { "type": "number", "minimum": 0, "description": "Their time, summed." },
            "files": { "type": "integer", "minimum": 1, "description": "Reports read." },
            "failures": { "type": "array", "maxItems": 20, "items": schema_ref("TestFailure"), "description": "The first 20 failed test cases." }
        }
    });
    schemas["TestFailure"] = json!({
        "type": "object", "required": ["name"],
        "properties": {
            "suite": { "type": "string", "description": "Its classname, or its suite's name." },
            "name": { "type": "string" },
            "message": { "type": "string", "description": "The first line of the failure's message, shortened." }
        }
    });
    schemas["Job"]["properties"]["approved_by"] = json!({
        "type": "string",
        "description": "Who let a job that waited for approval (server.approval) run: the name \
                        of the API token that approved it (server.tokens), or the start of its \
                        hash for an unnamed one. Absent for jobs that never waited for a person."
    });
    schemas["Needs"] = json!({
        "type": "object", "required": ["workflows", "jobs"],
        "description": "For the job of a workflow with depends_on: what it waits for, blocked, before it is queued.",
        "properties": {
            "workflows": { "type": "array", "items": { "type": "string" } },
            "jobs": { "type": "array", "items": { "type": "string" } },
            "on_failure": { "type": "boolean", "description": "Runs when one of them failed (runs_on: [success, failure] or [failure])." },
            "on_success": { "type": "boolean", "default": true, "description": "Runs when they all succeeded; false for runs_on: [failure]. Left out when true." }
        }
    });
    schemas["JobArtifacts"] = json!({
        "type": "object",
        "required": ["reference", "size", "files"],
        "description": "The job's `artifacts:` as the agent pushed them: a gzipped tar in an OCI \
                        artifact on the forge's registry (`raibid job artifacts <id>`, or \
                        `oras pull <reference>`). Present once they were kept.",
        "properties": {
            "reference": { "type": "string", "description": "<registry>/<owner>/<name>/artifacts@sha256:..." },
            "size": { "type": "integer", "minimum": 0, "description": "Bytes of the archive." },
            "files": { "type": "integer", "minimum": 0 },
            "expires_at": { "type": "string", "format": "date-time", "description": "When an agent deletes them from the registry (the pipeline's expire_in, else agent.artifacts_expire_days); absent: kept." },
            "expired": { "type": "boolean", "description": "Deleted: the reference no longer resolves. Absent: false." }
        }
    });
    schemas["RepoSecret"] = json!({
        "type": "object",
        "required": ["name", "updated_at"],
        "properties": {
            "name": { "type": "string" },
            "events": {
                "type": "array",
                "items": { "enum": ["push", "tag", "pull_request", "manual", "cron"] },
                "description": "The events whose jobs may read it; absent: every event."
            },
            "branches": {
                "type": "array",
                "items": { "type": "string" },
                "description": "Globs over pushed branches whose jobs may read it; absent: any."
            },
            "updated_at": { "type": "string", "format": "date-time" }
        }
    });
    schemas["Schedule"] = json!({
        "type": "object",
        "required": ["name", "repo", "branch", "cron", "pool", "next"],
        "properties": {
            "name": { "type": "string" },
            "repo": { "type": "string" },
            "branch": { "type": "string", "description": "Built at its head (refs/heads/<branch>)." },
            "cron": { "type": "string", "description": "The cron expression as configured, in UTC." },
            "pool": { "type": "string" },
            "next": { "type": ["string", "null"], "format": "date-time", "description": "The next occurrence." },
            "last_occurrence": { "type": "string", "format": "date-time", "description": "The newest occurrence a scheduler has handled (queued, or passed over)." },
            "last_job": { "type": "string", "description": "The job the last queued occurrence made." }
        }
    });
    schemas
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use raibid_config::Config;
    use raibid_queue::{Queue, QueueOptions};
    use tower::ServiceExt;

    use super::*;
    use crate::routes;

    fn operations(doc: &Value) -> BTreeSet<(String, String)> {
        let mut ops = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                ops.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
        ops
    }

    #[test]
    fn document_and_routes_name_the_same_operations() {
        let documented = operations(&spec("http://ci.example"));
        let routed: BTreeSet<_> = routes::all()
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_owned()))
            .collect();
        assert_eq!(documented, routed);
    }

    #[test]
    fn every_schema_reference_resolves() {
        let doc = spec("");
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for piece in text.split("#/components/schemas/").skip(1) {
            let name = piece.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling $ref to {name}");
        }
    }

    #[test]
    fn calls_taking_a_token_document_the_lockout_and_the_scope_refusal() {
        let doc = spec("");
        let responses = |path: &str, method: &str| doc["paths"][path][method]["responses"].clone();
        let submit = responses("/api/v1/jobs", "post");
        assert!(
            submit["429"]["description"]
                .as_str()
                .unwrap()
                .starts_with("This client presented server.auth_failures_max wrong tokens")
        );
        assert!(
            submit["403"]["description"]
                .as_str()
                .unwrap()
                .contains("(code forbidden)")
        );
        // A read takes a token when reads need one; its own 429 gains the lockout.
        let logs = responses("/api/v1/jobs/{id}/logs", "get");
        let both = logs["429"]["description"].as_str().unwrap();
        assert!(
            both.contains("too_many_log_streams_for_client")
                && both.contains(" Or: this client presented"),
            "{both}"
        );
        // Scopes do not limit reads (a token of another repository's finds nothing: 404).
        assert!(logs["403"].is_null());
        // Webhooks are signed, not authenticated by token.
        assert!(responses("/webhooks/gitea", "post")["429"].is_null());
    }

    /// Every field a job can be served with is documented (a field added to the model, such as
    /// `diff_base`, must be added to the document too).
    #[test]
    fn the_job_schema_names_every_field_of_a_job() {
        let mut new = raibid_model::NewJob::new(
            "o/r",
            "https://g/o/r.git",
            "refs/pull/1/head",
            "a".repeat(40),
            raibid_model::Event::PullRequest,
        );
        new.forge = Some(raibid_model::Forge::Gitea);
        new.pr_number = Some(1);
        new.sender = Some("u".into());
        new.delivery_id = Some("d".into());
        new.env.insert("A".into(), "1".into());
        new.retry_of = Some("x".into());
        new.matrix_parent = Some("p".into());
        new.target_branch = Some("main".into());
        new.diff_base = Some("b".repeat(40));
        new.schedule = Some("nightly".into());
        new.needs = Some(raibid_model::Needs {
            workflows: vec!["build".into()],
            jobs: vec!["j".into()],
            on_failure: true,
            on_success: true,
        });
        let now = chrono::Utc::now();
        let mut job = raibid_model::Job::queued("01JABCDEFGHJKMNPQRSTVWXYZ0", new, now);
        job.started_at = Some(now);
        job.finished_at = Some(now);
        job.agent = Some("a".into());
        job.reason = Some("r".into());
        job.children = vec!["c".into()];
        job.log_pruned = true;
        job.artifacts = Some(raibid_model::JobArtifacts {
            reference: "r/o/r/artifacts@sha256:ab".into(),
            size: 1,
            files: 1,
            expires_at: Some(now),
            expired: true,
        });
        let served = serde_json::to_value(&job).unwrap();
        let doc = spec("");
        let documented = doc["components"]["schemas"]["Job"]["properties"]
            .as_object()
            .unwrap();
        let missing: Vec<_> = served
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| !documented.contains_key(*k))
            .collect();
        assert!(missing.is_empty(), "undocumented job fields: {missing:?}");
    }

    /// The router really serves every documented operation, and only those: each one is
    /// routed (whatever the handler then answers without Redis), an undocumented path is not.
    #[tokio::test]
    async fn the_router_serves_every_documented_operation() {
        let mut options = QueueOptions::new("redis://127.0.0.1:1/");
        options.command_timeout = Duration::from_millis(200);
        let state = AppState::new(Config::default(), Queue::open(options).unwrap()).unwrap();
        let router = crate::router(state);
        for (method, path) in operations(&spec("")) {
            let uri = path
                .replace("{id}", "01JABCDEFGHJKMNPQRSTVWXYZ0")
                .replace("{name}", "nightly");
            let request = Request::builder()
                .method(Method::from_bytes(method.as_bytes()).unwrap())
                .uri(&uri)
                .body(Body::empty())
                .unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            assert_ne!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {uri}"
            );
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            assert!(
                !String::from_utf8_lossy(&body).contains("route_not_found"),
                "{method} {uri} is documented but not routed"
            );
        }
        let response = router
            .oneshot(
                Request::get("/api/v1/undocumented")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}
