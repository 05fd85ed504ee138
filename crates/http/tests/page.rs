//! The status page and its files through `router(...)`: content types, the Content-Security-Policy,
//! no inline script or style, every file the page names is served, and the script never hands
//! data to an HTML parser. The page's behaviour in a real browser is infra/scripts/browser-test.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

use ackflow_core::{Ackflow, Clock, Registry, Settings, SystemClock};
use ackflow_http::{router, Anonymous, ApiState};
use ackflow_sqlite::{Db, Durability, SqliteQueue, SqliteStore};
use axum::body::Body;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt as _;
use tempfile::TempDir;
use tower::ServiceExt as _;

fn app() -> (Router, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(&dir.path().join("ackflow.db"), Durability::Normal).expect("db");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = Arc::new(SqliteStore::new(db.clone()));
    let queue = Arc::new(SqliteQueue::new(db, "jobs", 6, clock.clone()).expect("queue"));
    let app = Arc::new(Ackflow::new(
        store,
        queue,
        Registry::new(),
        clock,
        Settings::default(),
    ));
    (router(ApiState::new(app, Arc::new(Anonymous))), dir)
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: impl axum::http::header::AsHeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn send(router: &Router, method: Method, uri: &str) -> Answer {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(bytes.to_vec()).expect("utf-8"),
    }
}

async fn get(router: &Router, uri: &str) -> Answer {
    send(router, Method::GET, uri).await
}

/// The values of `attribute="..."` in `html`, in order.
fn attribute_values<'a>(html: &'a str, attribute: &str) -> Vec<&'a str> {
    let needle = format!(" {attribute}=\"");
    html.match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &html[at + needle.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

#[tokio::test]
async fn the_page_is_html_under_a_policy_that_allows_only_its_own_origin() {
    let (router, _dir) = app();
    let page = get(&router, "/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.header(CONTENT_TYPE), "text/html; charset=utf-8");
    assert_eq!(page.header(X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert_eq!(page.header(CACHE_CONTROL), "no-cache");
    let csp = page.header(CONTENT_SECURITY_POLICY);
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(
            csp.split(';').any(|d| d.trim() == directive),
            "{directive} missing from {csp}"
        );
    }
    for loosening in [
        "unsafe-inline",
        "unsafe-eval",
        "data:",
        "*",
        "http:",
        "https:",
    ] {
        assert!(!csp.contains(loosening), "{loosening} in {csp}");
    }
}

#[tokio::test]
async fn the_page_has_no_inline_script_style_or_handler() {
    let (router, _dir) = app();
    let html = get(&router, "/").await.body.to_ascii_lowercase();
    assert!(html.starts_with("<!doctype html>"));
    // Every <script> names a file; none carries code.
    let scripts: Vec<&str> = html
        .match_indices("<script")
        .map(|(at, _)| &html[at..])
        .collect();
    assert!(!scripts.is_empty(), "the page has a script");
    for script in scripts {
        let tag_end = script.find('>').expect("a closed tag");
        assert!(
            script[..tag_end].contains(" src=\""),
            "inline script: {script}"
        );
        assert!(
            script[tag_end + 1..].starts_with("</script>"),
            "script with a body"
        );
    }
    assert!(!html.contains("<style"), "inline style element");
    assert!(!html.contains(" style=\""), "style attribute");
    assert!(!html.contains("javascript:"), "javascript: address");
    for handler in [
        "onclick", "onload", "onerror", "onsubmit", "oninput", "onchange",
    ] {
        assert!(
            !html.contains(&format!(" {handler}=")),
            "{handler} attribute"
        );
    }
}

#[tokio::test]
async fn every_file_the_page_names_is_served_relative_to_it_with_its_type() {
    let (router, _dir) = app();
    let html = get(&router, "/").await.body;
    let mut files: Vec<&str> = attribute_values(&html, "src");
    files.extend(
        attribute_values(&html, "href")
            .into_iter()
            .filter(|href| href.starts_with("assets/")),
    );
    files.sort_unstable();
    // Relative, so that the page also works behind a path prefix (an API Gateway stage).
    assert_eq!(
        files,
        ["assets/app.css", "assets/app.js", "assets/icon.svg"]
    );
    for (file, content_type) in [
        ("assets/app.js", "text/javascript; charset=utf-8"),
        ("assets/app.css", "text/css; charset=utf-8"),
        ("assets/icon.svg", "image/svg+xml"),
    ] {
        let answer = get(&router, &format!("/{file}")).await;
        assert_eq!(answer.status, StatusCode::OK, "{file}");
        assert_eq!(answer.header(CONTENT_TYPE), content_type, "{file}");
        assert_eq!(answer.header(X_CONTENT_TYPE_OPTIONS), "nosniff", "{file}");
        assert!(
            answer
                .header(CONTENT_SECURITY_POLICY)
                .contains("default-src 'none'"),
            "{file}"
        );
        assert!(!answer.body.is_empty(), "{file}");
    }
}

#[tokio::test]
async fn an_unknown_file_or_method_is_a_problem() {
    let (router, _dir) = app();
    for uri in ["/assets/app.jsx", "/assets/..%2Fpage.rs", "/assets/"] {
        let answer = get(&router, uri).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(
            answer.header(CONTENT_TYPE),
            "application/problem+json",
            "{uri}"
        );
    }
    let post = send(&router, Method::POST, "/assets/app.js").await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.header(CONTENT_TYPE), "application/problem+json");
}

#[tokio::test]
async fn the_script_never_hands_text_to_an_html_parser() {
    let (router, _dir) = app();
    let script = get(&router, "/assets/app.js").await.body;
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "DOMParser",
        "createContextualFragment",
        "eval(",
        "new Function",
        "setAttribute(\"style\"",
    ] {
        assert!(!script.contains(sink), "the script uses {sink}");
    }
    // It calls the API relative to the page (an API Gateway stage prefix keeps working).
    assert!(script.contains("\"v1/jobs\""));
    assert!(!script.contains("\"/v1/"));
}
