//! The property checked by the `submit_request` fuzz target, shared with its stable-toolchain
//! replay (`crates/http/tests/fuzz_corpus.rs` includes this file with `#[path]`), so the target
//! cannot rot unnoticed: CI replays every committed corpus file through the same check.
//!
//! One input is one `POST /v1/jobs` through the real [`router`] (tower `oneshot`, no socket)
//! over SQLite in a temporary directory and the shipped processors (`demo`, `order`), so the
//! body meets everything a client's body meets: the JSON content-type check, the size limit,
//! the distinct-keys parser, the `kind`/`input` shape, the Idempotency-Key rules and each
//! processor's input validation. Properties (SPEC invariant 5, "bad input changes nothing,
//! gets a 4xx problem, and the server stays up"):
//!
//! - never a 5xx, never a panic (the router's panic layer would turn one into a 500);
//! - every 4xx is `application/problem+json` whose `status` is the answer's, with a `type`,
//!   `title` and `detail`, and no larger than [`MAX_PROBLEM_BYTES`] (a problem never echoes a
//!   huge body back);
//! - a 4xx changes nothing: the owner's figures (accepted, counts by state) and the queue's
//!   depth are the same before and after;
//! - a 202 is a job at its `Location`, recorded once: one more accepted job, or none when the
//!   answer says it is an idempotent replay.
//!
//! # Input format
//!
//! Leading lines of the form `@name:value\n` are request headers (a line that is not a valid
//! header name and value is dropped, as no HTTP client could send it); the rest is the body.
//! Without an `@content-type:` line the request says `application/json`. So a plain JSON file
//! is a valid corpus entry, and the fuzzer can still reach the header rules.

// Test and fuzzing code: a violated property is reported by panicking, which is what both the
// test harness and libFuzzer expect; clippy's test exemption only sees `#[test]` functions.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;

use ackflow_core::{Ackflow, Clock, JobState, Owner, Settings, SystemClock};
use ackflow_http::{router, Anonymous, ApiState, IDEMPOTENT_REPLAYED};
use ackflow_processors::order::SqliteOrderBook;
use ackflow_sqlite::{Durability, SqliteBackend};
use axum::body::Body;
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt as _;
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt as _;

/// The body limit of the harness: small, so that the fuzzer reaches the 413 path easily.
pub const BODY_LIMIT: usize = 4096;

/// The largest problem body a 4xx may have: enough for ten located field errors with short
/// names, far less than a body echoed back.
pub const MAX_PROBLEM_BYTES: usize = 4096;

/// What a 4xx must leave unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    accepted: u64,
    counts: BTreeMap<JobState, u64>,
    waiting: u64,
    in_flight: u64,
    dead: u64,
}

/// A router over SQLite in a temporary directory, and a runtime to drive it from a synchronous
/// caller (libFuzzer calls the target synchronously, once per input).
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    router: Router,
    app: Arc<Ackflow>,
    _dir: TempDir,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness").finish_non_exhaustive()
    }
}

impl Harness {
    /// A fresh store, queue and order book, with `demo` on (as on the single machine).
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (router, app) = runtime.block_on(async {
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let settings = Settings {
                body_limit: BODY_LIMIT,
                ..Settings::default()
            };
            let path = dir.path().join("fuzz.db");
            let backend = SqliteBackend::open(&path, Durability::Normal, &settings, clock.clone())
                .expect("db");
            let book = Arc::new(SqliteOrderBook::new(backend.db.clone()).expect("order book"));
            let registry = ackflow_processors::registry_with(book, clock.clone(), true);
            let app = Arc::new(backend.ackflow(registry, clock, settings));
            let router = router(ApiState::new(app.clone(), Arc::new(Anonymous)));
            (router, app)
        });
        Self {
            runtime,
            router,
            app,
            _dir: dir,
        }
    }

    /// Sends `data` (see the module's input format) as `POST /v1/jobs` and panics, saying which,
    /// when a property does not hold; returns the answer's status.
    pub fn check(&self, data: &[u8]) -> u16 {
        let (headers, body) = split(data);
        let has_content_type = headers.iter().any(|(name, _)| name == CONTENT_TYPE);
        let mut request = Request::builder().method(Method::POST).uri("/v1/jobs");
        if !has_content_type {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Body::from(body.to_vec()))
            .expect("a request from valid parts");

        self.runtime.block_on(async {
            let before = self.snapshot().await;
            let response = self
                .router
                .clone()
                .oneshot(request)
                .await
                .expect("the router is infallible");
            let (parts, body) = response.into_parts();
            let body = body.collect().await.expect("a readable answer").to_bytes();
            let after = self.snapshot().await;
            let status = parts.status;
            let text = String::from_utf8_lossy(&body);

            assert!(!status.is_server_error(), "a {status}: {text}");
            if status == StatusCode::ACCEPTED {
                let job: Value = serde_json::from_slice(&body).expect("a 202 carries the job");
                let id = job["id"].as_str().expect("the job has an id");
                assert_eq!(
                    parts.headers.get(LOCATION).and_then(|v| v.to_str().ok()),
                    Some(format!("/v1/jobs/{id}").as_str()),
                    "a 202's Location is its job"
                );
                let replayed = parts.headers.contains_key(IDEMPOTENT_REPLAYED);
                let expected = before.accepted + u64::from(!replayed);
                assert_eq!(
                    after.accepted, expected,
                    "a 202 (replayed: {replayed}) records exactly one job or none"
                );
            } else if status.is_client_error() {
                assert_eq!(
                    parts
                        .headers
                        .get(CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok()),
                    Some("application/problem+json"),
                    "a {status} is a problem: {text}"
                );
                assert!(
                    body.len() <= MAX_PROBLEM_BYTES,
                    "a {status} problem of {} bytes",
                    body.len()
                );
                let problem: Value = serde_json::from_slice(&body).expect("a problem is JSON");
                assert_eq!(
                    problem["status"].as_u64(),
                    Some(u64::from(status.as_u16())),
                    "{text}"
                );
                for field in ["type", "title", "detail"] {
                    assert!(
                        problem[field].as_str().is_some_and(|s| !s.is_empty()),
                        "a problem without '{field}': {text}"
                    );
                }
                assert_eq!(before, after, "a {status} changed something: {text}");
            } else {
                panic!("POST /v1/jobs answered {status}: {text}");
            }
            status.as_u16()
        })
    }

    async fn snapshot(&self) -> Snapshot {
        let report = self
            .app
            .report(&Owner::anonymous())
            .await
            .expect("the report");
        let depth = report.queue.expect("the SQLite queue tells its depth");
        Snapshot {
            accepted: report.accepted,
            counts: report.counts,
            waiting: depth.waiting,
            in_flight: depth.in_flight,
            dead: depth.dead,
        }
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

/// The headers and the body of one input (see the module's input format).
pub fn split(mut data: &[u8]) -> (Vec<(HeaderName, HeaderValue)>, &[u8]) {
    let mut headers = Vec::new();
    while let Some(rest) = data.strip_prefix(b"@") {
        let (line, after) = match rest.iter().position(|&b| b == b'\n') {
            Some(end) => (&rest[..end], &rest[end + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        data = after;
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(&line[colon + 1..]),
        ) {
            headers.push((name, value));
        }
    }
    (headers, data)
}
