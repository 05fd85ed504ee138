//! The routes that are not the job API: the status page, the OpenAPI document, and the
//! problem+json answers for unknown addresses and methods.

use std::sync::{Arc, OnceLock};

use ackflow_core::Problem;
use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::HeaderName;
use axum::response::{IntoResponse, Response};

use crate::error::{problem_response, ApiError};
use crate::view::ProblemSchema;

/// The status page: markup only; its behaviour and look come from [`asset`] files.
const INDEX_HTML: &str = include_str!("index.html");
/// The page's script (vanilla, no build step): submits, lists and long-polls jobs, reads the report.
const APP_JS: &str = include_str!("page/app.js");
/// The page's style (responsive, no remote fonts).
const APP_CSS: &str = include_str!("page/app.css");
/// The page's icon, so browsers do not ask for a `/favicon.ico` that does not exist.
const ICON_SVG: &str = include_str!("page/icon.svg");

/// The page may load its own script, style and icon and call its own origin's API; nothing else
/// loads, runs inline, frames it or is submitted anywhere. User-supplied strings are written as
/// text by the script, and this policy is the second line of defence should one ever be parsed.
pub const INDEX_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Headers every page and asset answer carries: the policy, no sniffing, no framing, no
/// referrer, and revalidation (the files change with the binary, and are small).
fn page_headers(content_type: &'static str) -> [(HeaderName, &'static str); 6] {
    [
        (CONTENT_TYPE, content_type),
        (CONTENT_SECURITY_POLICY, INDEX_CSP),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (X_FRAME_OPTIONS, "DENY"),
        (REFERRER_POLICY, "no-referrer"),
        (CACHE_CONTROL, "no-cache"),
    ]
}

/// The status page.
///
/// Submit a `demo` job or an `order`, follow your jobs (progress, status message, the problem of a
/// failed job) by long-poll, cancel queued ones, and see the report. Needs no token itself; with
/// authentication on, the page asks for one and keeps it in the tab's session storage.
#[utoipa::path(
    get,
    path = "/",
    tag = "meta",
    operation_id = "statusPage",
    responses(
        (status = 200, description = "The status page.", body = String, content_type = "text/html",
            headers(("Content-Security-Policy" = String, description = "Scripts, styles and requests from this origin only; no inline script."))),
    )
)]
pub(crate) async fn index() -> Response {
    (page_headers("text/html; charset=utf-8"), INDEX_HTML).into_response()
}

/// A file of the status page.
///
/// `app.js`, `app.css` or `icon.svg`, embedded in the binary; anything else is a `404` problem.
#[utoipa::path(
    get,
    path = "/assets/{file}",
    tag = "meta",
    operation_id = "pageAsset",
    params(("file" = String, Path, example = "app.js", description = "`app.js`, `app.css` or `icon.svg`.")),
    responses(
        (status = 200, description = "The file.",
            content((String = "text/javascript"), (String = "text/css"), (String = "image/svg+xml")),
            headers(("Content-Security-Policy" = String, description = "The page's policy."))),
        (status = 404, description = "No such file.",
            body = ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn asset(file: Result<Path<String>, PathRejection>) -> Response {
    // A name that is not even UTF-8 (`%FF`) names no file either: the same 404 problem, not
    // axum's plain-text rejection.
    let file = file.map(|Path(file)| file).unwrap_or_default();
    let (content_type, body) = match file.as_str() {
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "app.css" => ("text/css; charset=utf-8", APP_CSS),
        "icon.svg" => ("image/svg+xml", ICON_SVG),
        _ => return problem_response(&Problem::route_not_found()),
    };
    (page_headers(content_type), body).into_response()
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
pub(crate) async fn openapi_json() -> Response {
    // Built and serialized on the first request for it, once per process, rather than with the
    // router: that took about 5 ms of every cold start of the api and status functions, which
    // are rarely asked for it. `None` only if serialization failed, which is answered as a 500
    // (and logged).
    static DOCUMENT: OnceLock<Option<Arc<str>>> = OnceLock::new();
    let document = DOCUMENT.get_or_init(|| match crate::openapi().to_json() {
        Ok(json) => Some(Arc::from(json)),
        Err(e) => {
            tracing::error!(error = %e, "the OpenAPI document could not be serialized");
            None
        }
    });
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
