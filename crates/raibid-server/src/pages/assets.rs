//! The pages' style sheet, script and icon, compiled into the binary so that a server is one file.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const CSS: &str = include_str!("../../assets/raibid.css");
const SCRIPT: &str = include_str!("../../assets/job.js");
const LIST_SCRIPT: &str = include_str!("../../assets/list.js");
const ICON: &str = include_str!("../../assets/favicon.svg");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // A new server version may change them: cached for an hour, not forever.
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

pub(super) async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub(super) async fn list_script() -> Response {
    asset("text/javascript; charset=utf-8", LIST_SCRIPT)
}

/// Browsers ask for an icon whatever the page says; without one every page view logs a 404.
pub(super) async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}
