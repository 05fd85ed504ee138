//! The status page and its files through `router(...)`: content types, the Content-Security-Policy,
//! no inline script or style, every file the page names is served, and the script never hands
//! data to an HTML parser. The page's behaviour in a real browser is infra/scripts/browser-test.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;
use support::{request, spawn_app};

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{Method, StatusCode};

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
    let t = spawn_app();
    let page = t.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.header(CONTENT_TYPE), Some("text/html; charset=utf-8"));
    assert_eq!(page.header(X_CONTENT_TYPE_OPTIONS), Some("nosniff"));
    assert_eq!(page.header(CACHE_CONTROL), Some("no-cache"));
    let csp = page.header(CONTENT_SECURITY_POLICY).unwrap_or_default();
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
    let t = spawn_app();
    let html = t.get("/").await.text().to_ascii_lowercase();
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
    let t = spawn_app();
    let html = t.get("/").await.text();
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
        let answer = t.get(&format!("/{file}")).await;
        assert_eq!(answer.status, StatusCode::OK, "{file}");
        assert_eq!(answer.header(CONTENT_TYPE), Some(content_type), "{file}");
        assert_eq!(
            answer.header(X_CONTENT_TYPE_OPTIONS),
            Some("nosniff"),
            "{file}"
        );
        assert!(
            answer
                .header(CONTENT_SECURITY_POLICY)
                .unwrap_or_default()
                .contains("default-src 'none'"),
            "{file}"
        );
        assert!(!answer.body.is_empty(), "{file}");
    }
}

#[tokio::test]
async fn an_unknown_file_or_method_is_a_problem() {
    let t = spawn_app();
    for uri in ["/assets/app.jsx", "/assets/..%2Fpage.rs", "/assets/"] {
        let answer = t.get(uri).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(
            answer.header(CONTENT_TYPE),
            Some("application/problem+json"),
            "{uri}"
        );
    }
    let post = t.send(request(Method::POST, "/assets/app.js")).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.header(CONTENT_TYPE), Some("application/problem+json"));
}

#[tokio::test]
async fn the_script_never_hands_text_to_an_html_parser() {
    let t = spawn_app();
    let script = t.get("/assets/app.js").await.text();
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
