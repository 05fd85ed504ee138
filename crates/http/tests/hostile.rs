//! The hostile-input catalog: requests built to break the API — malformed and deeply nested
//! JSON, wrong types, huge strings, invalid UTF-8, oversized bodies and header values, unknown
//! kinds, bad ids, bad cursors, bad Idempotency-Keys, wrong content types and methods. Each must be answered with a 4xx `application/problem+json` whose `status` matches
//! the HTTP status; afterwards no job exists, nothing is queued, and a valid submission is still
//! accepted.
//!
//! Driven through `router(...)` with `tower::ServiceExt::oneshot` (no socket) over the real SQLite
//! store and queue, like `api.rs`. Oversized *header blocks* (many or huge headers that a client
//! sends on the wire) are refused by hyper in the `ackflow` binary before any router sees them,
//! so they are not tried here; single large header values that do reach the router are.

// The harness's helpers are test code too; clippy's test exemption only sees `#[test]` functions.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;
use support::{get, request, spawn_app, Answer, TestApp};

use std::collections::HashMap;
use std::sync::Arc;

use ackflow_core::{JobId, Owner};
use ackflow_http::view::{JobList, ReportView};
use ackflow_http::{BearerTokens, OwnerResolver};
use axum::body::{Body, Bytes};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, Method, Request, StatusCode};
use serde_json::{json, Value};

// ---- the harness -------------------------------------------------------------------------------

impl TestApp {
    /// Asserts that no job was recorded (list and report) and no message was queued.
    async fn assert_nothing_changed(&self) {
        let answer = self.send(get("/v1/jobs?limit=100")).await;
        assert_eq!(answer.status, StatusCode::OK);
        let list: JobList = serde_json::from_slice(&answer.body).expect("a list");
        assert!(list.jobs.is_empty(), "a job was recorded: {:?}", list.jobs);

        let answer = self.send(get("/v1/report")).await;
        assert_eq!(answer.status, StatusCode::OK);
        let report: ReportView = serde_json::from_slice(&answer.body).expect("a report");
        assert_eq!(report.accepted, 0, "the report counts an accepted job");

        let depth = self.queue().depth().await.expect("depth");
        assert_eq!(depth.waiting, 0, "a message was queued");
    }

    /// Asserts the server still accepts a valid submission.
    async fn assert_still_serving(&self) {
        let answer = self
            .send(post_json(
                json!({"kind": "echo", "input": {"text": "hi"}}).to_string(),
            ))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::ACCEPTED,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
    }
}

/// The most a problem may weigh: enough for a detail and ten located field errors, far less than
/// the hostile inputs, so that an error never mirrors (and amplifies) what a client sent.
const MAX_PROBLEM_BYTES: usize = 4 * 1024;

/// Checks that `answer` is a problem+json with `expected` status; returns what is wrong, if
/// anything (so that the whole catalog is tried before the test fails).
fn check(name: &str, expected: u16, answer: &Answer) -> Result<(), String> {
    let shown = || {
        String::from_utf8_lossy(&answer.body)
            .chars()
            .take(300)
            .collect::<String>()
    };
    if answer.status.as_u16() != expected {
        return Err(format!(
            "{name}: expected {expected}, got {}: {}",
            answer.status,
            shown()
        ));
    }
    // 501 is the one 5xx a request earns by itself: a transfer coding the server does not
    // implement (RFC 9112 §6.1).
    if !answer.status.is_client_error() && answer.status != StatusCode::NOT_IMPLEMENTED {
        return Err(format!("{name}: {} is not a 4xx", answer.status));
    }
    let content_type = answer.header(CONTENT_TYPE);
    if content_type != Some("application/problem+json") {
        return Err(format!(
            "{name}: content type {content_type:?}, not a problem: {}",
            shown()
        ));
    }
    let problem: Value = serde_json::from_slice(&answer.body)
        .map_err(|e| format!("{name}: the problem is not JSON ({e}): {}", shown()))?;
    for field in ["type", "title", "detail"] {
        if problem[field].as_str().is_none_or(str::is_empty) {
            return Err(format!("{name}: problem without {field}: {problem}"));
        }
    }
    if answer.body.len() > MAX_PROBLEM_BYTES {
        return Err(format!(
            "{name}: a problem of {} bytes echoes too much of the request: {}",
            answer.body.len(),
            shown()
        ));
    }
    if problem["status"] != expected {
        return Err(format!(
            "{name}: problem status {} differs from {expected}",
            problem["status"]
        ));
    }
    Ok(())
}

// ---- request builders --------------------------------------------------------------------------

fn post_json(body: impl Into<Body>) -> Request<Body> {
    Request::post("/v1/jobs")
        .header(CONTENT_TYPE, "application/json")
        .body(body.into())
        .expect("request")
}

fn post_with_type(content_type: &[u8], body: &Value) -> Request<Body> {
    Request::post("/v1/jobs")
        .header(
            CONTENT_TYPE,
            HeaderValue::from_bytes(content_type).expect("header value"),
        )
        .body(Body::from(body.to_string()))
        .expect("request")
}

fn keyed(key: &[u8]) -> Request<Body> {
    Request::post("/v1/jobs")
        .header(CONTENT_TYPE, "application/json")
        .header(
            "idempotency-key",
            HeaderValue::from_bytes(key).expect("header value"),
        )
        .body(Body::from(echo("hi").to_string()))
        .expect("request")
}

fn echo(text: &str) -> Value {
    json!({"kind": "echo", "input": {"text": text}})
}

fn submit(body: &Value) -> Request<Body> {
    post_json(body.to_string())
}

/// `[[[ … ]]]` `depth` deep, as the value of an input field.
fn nested_input(depth: usize) -> String {
    format!(
        "{{\"kind\":\"echo\",\"input\":{{\"text\":\"x\",\"deep\":{}{}}}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

/// A body whose stream fails after a first chunk, like a client that disconnects mid-upload.
fn broken_stream() -> Request<Body> {
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(b"{\"kind\":\"echo\",")),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "the client went away",
        )),
    ];
    Request::post("/v1/jobs")
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .expect("request")
}

/// A hostile request and the 4xx it must get.
struct Case {
    name: &'static str,
    expected: u16,
    request: Request<Body>,
}

fn case(name: &'static str, expected: u16, request: Request<Body>) -> Case {
    Case {
        name,
        expected,
        request,
    }
}

/// The catalog: each request and the 4xx it must get.
fn catalog(body_limit: usize) -> Vec<Case> {
    let id = JobId::random();
    let ten_mb = "x".repeat(10 * 1024 * 1024);
    vec![
        // -- malformed JSON
        case("empty body", 400, post_json("")),
        case("whitespace only", 400, post_json(" \n\t ")),
        case("truncated object", 400, post_json("{\"kind\":\"echo\",")),
        case("single quotes", 400, post_json("{'kind':'echo'}")),
        case(
            "trailing garbage",
            400,
            post_json(format!("{} x", echo("hi"))),
        ),
        case(
            "two objects back to back",
            400,
            post_json(format!("{}{}", echo("a"), echo("b"))),
        ),
        case(
            "trailing comma",
            400,
            post_json("{\"kind\":\"echo\",\"input\":{\"text\":\"x\"},}"),
        ),
        case(
            "a comment",
            400,
            post_json("{\"kind\":\"echo\" /* hi */,\"input\":{\"text\":\"x\"}}"),
        ),
        case(
            "NaN",
            400,
            post_json("{\"kind\":\"echo\",\"input\":{\"text\":\"x\",\"n\":NaN}}"),
        ),
        case(
            "number 1e999",
            400,
            post_json("{\"kind\":\"echo\",\"input\":{\"text\":\"x\",\"n\":1e999}}"),
        ),
        case(
            "lone surrogate escape",
            400,
            post_json("{\"kind\":\"echo\",\"input\":{\"text\":\"\\ud800\"}}"),
        ),
        case(
            "raw control character in a string",
            400,
            post_json("{\"kind\":\"ec\u{1}ho\",\"input\":{\"text\":\"x\"}}"),
        ),
        case("nesting 10,000 deep", 400, post_json(nested_input(10_000))),
        case(
            "nesting 10,000 deep, unclosed",
            400,
            post_json("[".repeat(10_000)),
        ),
        // -- invalid UTF-8
        case(
            "bytes ff fe",
            400,
            post_json(Bytes::from_static(b"\xff\xfe")),
        ),
        case(
            "invalid UTF-8 inside a string",
            400,
            post_json(Bytes::from_static(
                b"{\"kind\":\"ec\xffho\",\"input\":{\"text\":\"x\"}}",
            )),
        ),
        case(
            "UTF-16 body with a byte order mark",
            400,
            post_json(Bytes::from(
                "\u{feff}{\"kind\":\"echo\"}"
                    .encode_utf16()
                    .flat_map(u16::to_le_bytes)
                    .collect::<Vec<u8>>(),
            )),
        ),
        // -- wrong shapes and types
        case("body null", 422, post_json("null")),
        case("body an array", 422, submit(&json!(["echo"]))),
        case("body a string", 422, submit(&json!("echo"))),
        case("body a number", 422, post_json("42")),
        case("body true", 422, post_json("true")),
        case(
            "kind a number",
            422,
            submit(&json!({"kind": 3, "input": {}})),
        ),
        case(
            "kind null",
            422,
            submit(&json!({"kind": null, "input": {}})),
        ),
        case(
            "kind an object",
            422,
            submit(&json!({"kind": {"$ne": ""}, "input": {}})),
        ),
        case(
            "input an array",
            422,
            submit(&json!({"kind": "echo", "input": [1]})),
        ),
        case(
            "input null",
            422,
            submit(&json!({"kind": "echo", "input": null})),
        ),
        case(
            "input field of the wrong type",
            422,
            submit(&json!({"kind": "echo", "input": {"text": ["x"]}})),
        ),
        case(
            "a number too large for the field",
            422,
            post_json(
                "{\"kind\":\"echo\",\"input\":{\"text\":\"x\",\"times\":123456789012345678901234567890}}",
            ),
        ),
        case(
            "unknown top-level field (prototype pollution)",
            422,
            submit(&json!({"kind": "echo", "input": {"text": "x"}, "__proto__": {"admin": true}})),
        ),
        case("10,000 unknown top-level fields", 422, {
            let mut body = serde_json::Map::new();
            body.insert("kind".into(), json!("echo"));
            body.insert("input".into(), json!({"text": "x"}));
            for i in 0..10_000 {
                body.insert(format!("f{i}"), json!(i));
            }
            submit(&Value::Object(body))
        }),
        // -- huge strings and bodies
        case(
            "a 10 MB string field",
            413,
            submit(&echo(&ten_mb)),
        ),
        case(
            "a 10 MB string field, streamed without Content-Length",
            413,
            {
                let body = echo(&ten_mb).to_string().into_bytes();
                let chunks: Vec<Result<Bytes, std::io::Error>> = body
                    .chunks(64 * 1024)
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .collect();
                Request::post("/v1/jobs")
                    .header(CONTENT_TYPE, "application/json")
                    .body(Body::from_stream(futures_util::stream::iter(chunks)))
                    .expect("request")
            },
        ),
        case(
            "a Content-Length far beyond the limit",
            413,
            Request::post("/v1/jobs")
                .header(CONTENT_TYPE, "application/json")
                .header(CONTENT_LENGTH, u64::MAX)
                .body(Body::from(echo("hi").to_string()))
                .expect("request"),
        ),
        case(
            "a body one byte over the limit",
            413,
            post_json(" ".repeat(body_limit + 1)),
        ),
        case("a body that breaks off mid-stream", 400, broken_stream()),
        // -- unknown kinds
        case(
            "unknown kind",
            422,
            submit(&json!({"kind": "nope", "input": {}})),
        ),
        case("empty kind", 422, submit(&json!({"kind": "", "input": {}}))),
        case(
            "kind 1 KB long",
            422,
            submit(&json!({"kind": "e".repeat(1024), "input": {}})),
        ),
        case(
            "kind with a NUL",
            422,
            submit(&json!({"kind": "echo\u{0}", "input": {"text": "x"}})),
        ),
        case(
            "kind with a newline",
            422,
            submit(&json!({"kind": "echo\nX-Injected: 1", "input": {"text": "x"}})),
        ),
        case(
            "kind in capitals",
            422,
            submit(&json!({"kind": "ECHO", "input": {"text": "x"}})),
        ),
        case(
            "kind with a trailing space",
            422,
            submit(&json!({"kind": "echo ", "input": {"text": "x"}})),
        ),
        case(
            "kind with a Cyrillic look-alike",
            422,
            submit(&json!({"kind": "\u{0435}cho", "input": {"text": "x"}})),
        ),
        case(
            "kind as a path traversal",
            422,
            submit(&json!({"kind": "../echo", "input": {"text": "x"}})),
        ),
        // -- wrong content types
        case("no content type", 415, {
            Request::post("/v1/jobs")
                .body(Body::from(echo("hi").to_string()))
                .expect("request")
        }),
        case("text/plain", 415, post_with_type(b"text/plain", &echo("hi"))),
        case(
            "form-encoded",
            415,
            post_with_type(b"application/x-www-form-urlencoded", &echo("hi")),
        ),
        case(
            "multipart",
            415,
            post_with_type(b"multipart/form-data; boundary=x", &echo("hi")),
        ),
        case(
            "application/xml",
            415,
            post_with_type(b"application/xml", &echo("hi")),
        ),
        case(
            "a JSON look-alike type",
            415,
            post_with_type(b"application/jsonx", &echo("hi")),
        ),
        case(
            "a content type with non-ASCII bytes",
            415,
            post_with_type(b"application/json\xe9", &echo("hi")),
        ),
        // -- bad Idempotency-Keys
        case("Idempotency-Key empty", 400, keyed(b"")),
        case("Idempotency-Key 256 long", 400, keyed(&[b'k'; 256])),
        case(
            "Idempotency-Key 1 MB long",
            400,
            keyed(&vec![b'k'; 1024 * 1024]),
        ),
        case("Idempotency-Key non-ASCII", 400, keyed("clé".as_bytes())),
        case("Idempotency-Key with a tab", 400, keyed(b"a\tb")),
        case("Idempotency-Key with a raw byte", 400, keyed(b"key\xff")),
        // -- bad ids
        case("id not a UUID", 404, get("/v1/jobs/not-a-job-id")),
        case("id a SQL injection", 404, get("/v1/jobs/1%27%20OR%20%271%27=%271")),
        case(
            "id an encoded path traversal",
            404,
            get("/v1/jobs/..%2F..%2F..%2Fetc%2Fpasswd"),
        ),
        case("id a path traversal", 404, get("/v1/jobs/../../etc/passwd")),
        case("id 10 KB long", 404, get(&format!("/v1/jobs/{}", "a".repeat(10 * 1024)))),
        case("id with a NUL", 404, get("/v1/jobs/%00")),
        case(
            "id a UUID with trailing bytes",
            404,
            get(&format!("/v1/jobs/{id}x")),
        ),
        case(
            "cancel with an id not a UUID",
            404,
            request(Method::DELETE, "/v1/jobs/not-a-job-id"),
        ),
        case(
            "asset as an encoded path traversal",
            404,
            get("/assets/..%2F..%2FCargo.toml"),
        ),
        // -- bad cursors and query parameters
        case("cursor random", 400, get("/v1/jobs?cursor=qwertyuiop")),
        case(
            "cursor base64 garbage",
            400,
            get("/v1/jobs?cursor=bm90IGEgY3Vyc29y"),
        ),
        case(
            "cursor base64 of JSON",
            400,
            get("/v1/jobs?cursor=eyJhZG1pbiI6dHJ1ZX0"),
        ),
        // The `http` crate refuses to build a URI of 64 KiB or more, so this is as long as one gets.
        case(
            "cursor 60 KB long",
            400,
            get(&format!("/v1/jobs?cursor={}", "A".repeat(60 * 1024))),
        ),
        case("cursor given twice", 400, get("/v1/jobs?cursor=a&cursor=b")),
        case("limit negative", 400, get("/v1/jobs?limit=-1")),
        case(
            "limit beyond u64",
            400,
            get("/v1/jobs?limit=99999999999999999999999"),
        ),
        case("state unknown", 400, get("/v1/jobs?state=%00")),
        // -- wrong methods
        case("PUT on the jobs", 405, request(Method::PUT, "/v1/jobs")),
        case("DELETE on the jobs", 405, request(Method::DELETE, "/v1/jobs")),
        case(
            "PATCH on a job",
            405,
            request(Method::PATCH, &format!("/v1/jobs/{id}")),
        ),
        case(
            "POST on a job",
            405,
            request(Method::POST, &format!("/v1/jobs/{id}")),
        ),
        case("POST on the report", 405, request(Method::POST, "/v1/report")),
        case("PUT on the page", 405, request(Method::PUT, "/")),
        case("TRACE on the jobs", 405, request(Method::TRACE, "/v1/jobs")),
        case(
            "a made-up method",
            405,
            request(Method::from_bytes(b"BREW").expect("method"), "/v1/jobs"),
        ),
        case("an unknown route", 404, get("/v1/jobs/x/y/z")),
        case("id not UTF-8", 404, get("/v1/jobs/%FF%FE")),
        case("query not UTF-8", 400, get("/v1/jobs?cursor=%FF%FE")),
        case("query badly encoded", 400, get("/v1/jobs?cursor=%ZZ")),
        // -- found by this catalog and fixed: answers never echo a huge input, and a request
        // -- that says one thing twice is refused rather than read one way
        case(
            "a duplicate key",
            400,
            post_json(r#"{"kind":"nope","kind":"echo","input":{"text":"x"}}"#),
        ),
        case(
            "a duplicate input",
            400,
            post_json(r#"{"kind":"echo","input":{"text":"a"},"input":{"text":"b"}}"#),
        ),
        case("two Idempotency-Keys", 400, {
            let mut r = keyed(b"one");
            r.headers_mut()
                .append("idempotency-key", HeaderValue::from_static("two"));
            r
        }),
        case("asset name not UTF-8", 404, get("/assets/%FF")),
        case(
            "kind 10 KB long",
            422,
            submit(&json!({"kind": "e".repeat(10 * 1024), "input": {}})),
        ),
        case(
            "kind 200 KB long",
            422,
            submit(&json!({"kind": "k".repeat(200 * 1024), "input": {}})),
        ),
        case("a transfer coding besides chunked", 501, {
            let mut r = submit(&echo("hi"));
            r.headers_mut().insert(
                "transfer-encoding",
                HeaderValue::from_static("gzip, chunked"),
            );
            r
        }),
        case("a transfer coding alone that is not chunked", 501, {
            let mut r = submit(&echo("hi"));
            r.headers_mut()
                .insert("transfer-encoding", HeaderValue::from_static("gzip"));
            r
        }),
        case(
            "unknown top-level field with a 100 KB name",
            422,
            submit(&json!({"kind": "echo", "input": {"text": "x"}, "f".repeat(100 * 1024): 1})),
        ),
    ]
}

/// Owners by bearer token, with the one token `alice-token`.
fn alice_only() -> Arc<dyn OwnerResolver> {
    Arc::new(BearerTokens::new(HashMap::from([(
        "alice-token".to_owned(),
        Owner::parse("alice").expect("owner"),
    )])))
}

/// A submission with this `Authorization` value.
fn authorized(value: &[u8]) -> Request<Body> {
    let mut request = submit(&echo("hi"));
    request.headers_mut().insert(
        AUTHORIZATION,
        HeaderValue::from_bytes(value).expect("header value"),
    );
    request
}

// ---- the tests ---------------------------------------------------------------------------------

#[tokio::test]
async fn every_hostile_request_is_a_4xx_problem_that_changes_nothing() {
    let t = spawn_app();
    // `spawn_app` has the default settings, so that the body limit is the one a deployment gets
    // (256 KiB): large enough for a 10,000-deep nesting to reach the JSON parser.
    let cases = catalog(t.app.settings().body_limit);
    let count = cases.len();
    let mut failures = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for Case {
        name,
        expected,
        request,
    } in cases
    {
        assert!(names.insert(name), "the case name {name:?} is used twice");
        let answer = t.send(request).await;
        if let Err(failure) = check(name, expected, &answer) {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} hostile requests were mishandled:\n{}",
        failures.len(),
        failures.join("\n")
    );
    t.assert_nothing_changed().await;
    t.assert_still_serving().await;
    eprintln!(
        "hostile-input catalog: {count} requests, each a 4xx problem, nothing recorded or queued"
    );
}

#[tokio::test]
async fn hostile_requests_about_an_existing_job_leave_it_as_it_was() {
    let t = spawn_app();
    let first = t
        .send(
            Request::post("/v1/jobs")
                .header(CONTENT_TYPE, "application/json")
                .header("idempotency-key", "the-one")
                .body(Body::from(echo("hi").to_string()))
                .expect("request"),
        )
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let job: Value = serde_json::from_slice(&first.body).expect("a job");
    let id = job["id"].as_str().expect("an id").to_owned();
    let uri = format!("/v1/jobs/{id}");

    let cases = vec![
        case("wait a fraction", 400, get(&format!("{uri}?wait=1.5"))),
        case("wait negative", 400, get(&format!("{uri}?wait=-1"))),
        case("wait a word", 400, get(&format!("{uri}?wait=soon"))),
        case(
            "wait in exponent form",
            400,
            get(&format!("{uri}?wait=1e3")),
        ),
        // (A wait of more digits than a u64 holds is not here: by design it means "longer than
        // the cap" and is shortened to it, see `extract::wait`.)
        case(
            "wait with a plus sign",
            400,
            get(&format!("{uri}?wait=%2B1")),
        ),
        case("wait with a space", 400, get(&format!("{uri}?wait=%201"))),
        case(
            "wait given twice",
            400,
            get(&format!("{uri}?wait=1&wait=2")),
        ),
        case("PUT on the job", 405, request(Method::PUT, &uri)),
        case("PATCH on the job", 405, request(Method::PATCH, &uri)),
        case("POST on the job", 405, request(Method::POST, &uri)),
        case(
            "the same Idempotency-Key with another body",
            422,
            Request::post("/v1/jobs")
                .header(CONTENT_TYPE, "application/json")
                .header("idempotency-key", "the-one")
                .body(Body::from(echo("bye").to_string()))
                .expect("request"),
        ),
        case(
            "the same Idempotency-Key with another kind",
            422,
            Request::post("/v1/jobs")
                .header(CONTENT_TYPE, "application/json")
                .header("idempotency-key", "the-one")
                .body(Body::from(
                    json!({"kind": "nope", "input": {"text": "hi"}}).to_string(),
                ))
                .expect("request"),
        ),
    ];
    let count = cases.len();
    let mut failures = Vec::new();
    for Case {
        name,
        expected,
        request,
    } in cases
    {
        let answer = t.send(request).await;
        if let Err(failure) = check(name, expected, &answer) {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} hostile requests were mishandled:\n{}",
        failures.len(),
        failures.join("\n")
    );

    let now = t.send(get(&uri)).await;
    assert_eq!(now.status, StatusCode::OK);
    let now: Value = serde_json::from_slice(&now.body).expect("a job");
    assert_eq!(now, job, "the job changed");
    let list = t.send(get("/v1/jobs?limit=100")).await;
    let list: JobList = serde_json::from_slice(&list.body).expect("a list");
    assert_eq!(list.jobs.len(), 1, "another job was recorded");
    assert_eq!(
        t.queue().depth().await.expect("depth").waiting,
        1,
        "another message was queued"
    );
    t.assert_still_serving().await;
    eprintln!("hostile requests about an existing job: {count}");
}

/// With bearer tokens configured, hostile `Authorization` headers on a submission are 401s and
/// change nothing; the right token still gets a 202.
#[tokio::test]
async fn hostile_credentials_are_401s_that_change_nothing() {
    let t = TestApp::builder().owners(alice_only()).start();
    let mut huge = b"Bearer ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    let cases = vec![
        case("no Authorization", 401, submit(&echo("hi"))),
        case("an empty Authorization", 401, authorized(b"")),
        case("Bearer without a token", 401, authorized(b"Bearer")),
        case("Bearer and a space", 401, authorized(b"Bearer ")),
        case("a wrong token", 401, authorized(b"Bearer mallory-token")),
        case(
            "the token as a prefix",
            401,
            authorized(b"Bearer alice-token-x"),
        ),
        case(
            "a prefix of the token",
            401,
            authorized(b"Bearer alice-toke"),
        ),
        case(
            "the token and more",
            401,
            authorized(b"Bearer alice-token extra"),
        ),
        case("the token in Basic", 401, authorized(b"Basic alice-token")),
        case(
            "the token without a scheme",
            401,
            authorized(b"alice-token"),
        ),
        case(
            "a token with raw bytes",
            401,
            authorized(b"Bearer alice-token\xff"),
        ),
        case("a 1 MB token", 401, authorized(&huge)),
        case("two tokens, the right one first", 401, {
            let mut r = authorized(b"Bearer alice-token");
            r.headers_mut().append(
                AUTHORIZATION,
                HeaderValue::from_static("Bearer mallory-token"),
            );
            r
        }),
        case("two tokens, the right one last", 401, {
            let mut r = authorized(b"Bearer mallory-token");
            r.headers_mut().append(
                AUTHORIZATION,
                HeaderValue::from_static("Bearer alice-token"),
            );
            r
        }),
    ];
    let count = cases.len();
    let mut failures = Vec::new();
    for Case {
        name,
        expected,
        request,
    } in cases
    {
        let answer = t.send(request).await;
        if let Err(failure) = check(name, expected, &answer) {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} hostile credentials were mishandled:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        t.queue().depth().await.expect("depth").waiting,
        0,
        "a message was queued"
    );
    let accepted = t.send(authorized(b"Bearer alice-token")).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    eprintln!("hostile credentials: {count}");
}
