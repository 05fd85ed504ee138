//! The routes that are not the job API: the status page, the OpenAPI document, and the
//! problem+json answers for unknown addresses and methods.

use ackflow_core::Problem;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::{IntoResponse, Response};

use crate::error::{problem_response, ApiError};
use crate::view::ProblemSchema;

/// The placeholder status page: static HTML, no script, no style, no remote content.
const INDEX_HTML: &str = include_str!("index.html");

/// Nothing may load, run, frame or submit: the page is plain text and one link.
pub const INDEX_CSP: &str =
    "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The status page.
///
/// A small HTML page that says what this server is and links to the API description.
#[utoipa::path(
    get,
    path = "/",
    tag = "meta",
    operation_id = "statusPage",
    responses(
        (status = 200, description = "The status page.", body = String, content_type = "text/html",
            headers(("Content-Security-Policy" = String, description = "A policy that allows nothing but the page itself."))),
    )
)]
pub(crate) async fn index() -> Response {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CONTENT_SECURITY_POLICY, INDEX_CSP),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (X_FRAME_OPTIONS, "DENY"),
            (REFERRER_POLICY, "no-referrer"),
            (CACHE_CONTROL, "no-cache"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

/// This document.
///
/// The OpenAPI 3.1 description of the whole API, generated from the handlers.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document.", body = Object, content_type = "application/json"),
        (status = 500, description = "The document could not be produced.",
            body = ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn openapi_json(document: Option<std::sync::Arc<str>>) -> Response {
    match document {
        Some(json) => (
            [
                (CONTENT_TYPE, "application/json"),
                (CACHE_CONTROL, "no-cache"),
                (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            json.to_string(),
        )
            .into_response(),
        None => ApiError::Internal {
            job: None,
            source: "the OpenAPI document could not be serialized".into(),
        }
        .into_response(),
    }
}

/// Any address the API does not have.
pub(crate) async fn not_found() -> Response {
    problem_response(&Problem::route_not_found())
}

/// A known address with a method it does not take (axum adds the `Allow` header).
pub(crate) async fn method_not_allowed() -> Response {
    problem_response(&Problem::method_not_allowed())
}
