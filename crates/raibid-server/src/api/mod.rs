//! The jobs API under `/api/v1`: JSON in and out, bearer tokens for anything that changes jobs.

mod artifacts;
mod badges;
mod follow;
pub(crate) mod git;
pub(crate) mod jobs;
pub(crate) mod logs;
pub(crate) mod pools;
pub(crate) mod repos;
pub(crate) mod schedules;
pub(crate) mod secrets;
pub(crate) mod submit;
pub(crate) mod validate;

use crate::openapi;
use crate::routes::Route;

/// Jobs API bodies are small JSON documents.
pub(crate) const BODY_LIMIT: usize = 256 * 1024;

pub(crate) fn routes() -> Vec<Route> {
    vec![
        Route::post("/api/v1/jobs", submit::submit),
        Route::get("/api/v1/jobs", jobs::list),
        Route::get("/api/v1/jobs/{id}", jobs::show),
        Route::get("/api/v1/jobs/{id}/build", jobs::build),
        Route::post("/api/v1/jobs/{id}/cancel", jobs::cancel),
        Route::post("/api/v1/jobs/{id}/retry", jobs::retry),
        Route::post("/api/v1/jobs/{id}/retry-failed", jobs::retry_failed),
        Route::post("/api/v1/jobs/{id}/approve", jobs::approve),
        Route::get("/api/v1/jobs/{id}/logs", logs::logs),
        Route::delete("/api/v1/jobs/{id}/logs", logs::erase),
        Route::delete("/api/v1/jobs/{id}/build/logs", logs::erase_build),
        Route::get("/api/v1/jobs/{id}/artifacts", artifacts::download),
        Route::get("/api/v1/queues", pools::queues),
        Route::post("/api/v1/queues/{pool}/pause", pools::pause),
        Route::post("/api/v1/queues/{pool}/resume", pools::resume),
        Route::get("/api/v1/agents", pools::agents),
        Route::get("/api/v1/repos", repos::list),
        Route::get("/api/v1/repos/{owner}/{name}", repos::show),
        Route::get("/api/v1/repos/{owner}/{name}/badge.svg", badges::badge),
        Route::get("/api/v1/repos/{owner}/{name}/secrets", secrets::list),
        Route::put(
            "/api/v1/repos/{owner}/{name}/secrets/{secret}",
            secrets::set,
        ),
        Route::delete(
            "/api/v1/repos/{owner}/{name}/secrets/{secret}",
            secrets::delete,
        ),
        Route::get("/api/v1/orgs/{owner}/secrets", secrets::list_owner),
        Route::put("/api/v1/orgs/{owner}/secrets/{secret}", secrets::set_owner),
        Route::delete(
            "/api/v1/orgs/{owner}/secrets/{secret}",
            secrets::delete_owner,
        ),
        Route::get("/api/v1/schedules", schedules::list),
        Route::post("/api/v1/schedules/{name}/run", schedules::run),
        Route::get("/api/v1/openapi.json", openapi::document),
    ]
}
