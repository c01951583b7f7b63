//! Endpoints for whoever runs the server: liveness, readiness, metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::routes::Route;
use crate::{ApiError, AppState};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(crate) fn routes() -> Vec<Route> {
    vec![
        Route::get("/healthz", healthz),
        Route::get("/readyz", readyz),
        Route::get("/metrics", metrics),
    ]
}

/// The process answers; says nothing about Redis, so an orchestrator does not restart a
/// healthy server because Redis is down.
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when Redis answers: without it the server can only say 503.
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.queue().ping().await?;
    Ok(Json(json!({ "status": "ready" })))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut response = state.metrics().encode().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
    response
}
