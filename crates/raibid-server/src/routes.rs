//! The router: small per-area route tables composed with their layers.
//!
//! Routes are declared as tables of [`Route`] (method, path, handler) rather than straight onto
//! a `Router`, because the table can be inspected: the OpenAPI test checks that the document
//! describes exactly these routes, which a built `Router` cannot be asked for.

use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::{Method, Uri};
use axum::routing::{MethodRouter, delete, get, post, put};
use axum::{BoxError, Router};
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;

use crate::{ApiError, AppState, api, ops, pages, webhooks};

/// Bound on any request's handling, so a stuck dependency cannot pile up connections. Log
/// streams are not cut by it: it covers producing the response head, not the streamed body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Route {
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "only the OpenAPI consistency test reads it")
    )]
    pub method: Method,
    pub path: &'static str,
    pub handler: MethodRouter<AppState>,
}

impl Route {
    pub fn get<H, T>(path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        Self {
            method: Method::GET,
            path,
            handler: get(handler),
        }
    }

    pub fn post<H, T>(path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        Self {
            method: Method::POST,
            path,
            handler: post(handler),
        }
    }

    pub fn put<H, T>(path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        Self {
            method: Method::PUT,
            path,
            handler: put(handler),
        }
    }

    pub fn delete<H, T>(path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        Self {
            method: Method::DELETE,
            path,
            handler: delete(handler),
        }
    }
}

/// Every route the server has, for the OpenAPI consistency test.
#[cfg(test)]
pub(crate) fn all() -> Vec<Route> {
    let mut routes = webhooks::routes();
    routes.extend(api::routes());
    routes.extend(ops::routes());
    routes
}

fn table(routes: Vec<Route>) -> Router<AppState> {
    routes.into_iter().fold(Router::new(), |router, route| {
        router.route(route.path, route.handler)
    })
}

/// The whole HTTP interface of the server.
pub fn router(state: AppState) -> Router {
    let webhook_limit =
        usize::try_from(state.config().server.body_limit_bytes).unwrap_or(usize::MAX);
    Router::new()
        .merge(table(webhooks::routes()).layer(DefaultBodyLimit::max(webhook_limit)))
        .merge(table(api::routes()).layer(DefaultBodyLimit::max(api::BODY_LIMIT)))
        .merge(table(ops::routes()))
        .merge(table(pages::routes()))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::client_addr::warn_untrusted_forwarder,
        ))
        .layer(
            ServiceBuilder::new()
                .layer(TraceLayer::new_for_http())
                .layer(HandleErrorLayer::new(timed_out))
                .timeout(REQUEST_TIMEOUT),
        )
        .with_state(state)
}

async fn route_not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::RouteNotFound(format!("{method} {}", uri.path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn timed_out(error: BoxError) -> ApiError {
    if error.is::<tower::timeout::error::Elapsed>() {
        ApiError::Timeout
    } else {
        ApiError::Internal(error.to_string())
    }
}
