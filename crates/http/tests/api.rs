//! The HTTP API driven through `router(...)` with `tower::ServiceExt::oneshot` (no socket), over
//! the real SQLite store and queue in a temporary directory, with a tiny `echo` processor.

// The harness's helpers are test code too; clippy's test exemption only sees `#[test]` functions.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;
use support::{get, Answer, TestApp};

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ackflow_core::report::Deltas;
use ackflow_core::{
    async_trait, Created, FieldError, Figures, IdempotencyRecord, Job, JobId, JobState, JobStore,
    ListQuery, Owner, Page, PortError, Settings, Timestamp, WriteError,
};
use ackflow_http::view::{JobList, JobView, ReportView};
use ackflow_http::{Anonymous, BearerTokens, OwnerResolver};
use axum::body::{Body, Bytes};
use axum::http::header::{
    ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, LINK, LOCATION, RETRY_AFTER,
};
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use tower::ServiceExt as _;

// ---- the harness -------------------------------------------------------------------------------

/// The app with `echo` and a small body limit (2 KiB), so that oversized bodies are cheap.
fn settings() -> Settings {
    Settings {
        body_limit: 2048,
        ..Settings::default()
    }
}

fn spawn_app() -> TestApp {
    spawn_app_with(Arc::new(Anonymous), settings())
}

fn spawn_app_with(owners: Arc<dyn OwnerResolver>, settings: Settings) -> TestApp {
    TestApp::builder().owners(owners).settings(settings).start()
}

impl Answer {
    fn job(&self) -> JobView {
        serde_json::from_slice(&self.body).expect("a job")
    }

    /// Asserts the answer is a problem with `status` and returns its body.
    #[track_caller]
    fn problem(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header(CONTENT_TYPE), Some("application/problem+json"));
        let p = self.json();
        for field in ["type", "title", "detail"] {
            assert!(
                p[field].as_str().is_some_and(|s| !s.is_empty()),
                "problem without {field}: {p}"
            );
        }
        assert_eq!(p["status"], status, "{p}");
        p
    }
}

impl TestApp {
    async fn submit(&self, body: Value) -> Answer {
        self.send(post_json(&body.to_string())).await
    }

    async fn list_ids(&self) -> Vec<String> {
        let answer = self.get("/v1/jobs?limit=100").await;
        assert_eq!(answer.status, StatusCode::OK);
        let list: JobList = serde_json::from_slice(&answer.body).expect("a list");
        list.jobs.into_iter().map(|j| j.id.to_string()).collect()
    }

    async fn waiting_messages(&self) -> u64 {
        self.queue().depth().await.expect("depth").waiting
    }

    /// Asserts that nothing was recorded or queued.
    async fn assert_nothing_changed(&self) {
        assert!(self.list_ids().await.is_empty(), "a job was recorded");
        assert_eq!(self.waiting_messages().await, 0, "a message was queued");
    }

    /// Receives the one waiting message and lets the worker's use case handle it.
    async fn work_one(&self) {
        let deliveries = self
            .queue()
            .receive(1, Duration::from_secs(60))
            .await
            .expect("receive");
        let delivery = deliveries.first().expect("a message is waiting");
        let disposition = self.app.handle(delivery).await;
        self.app
            .settle(delivery, disposition, ackflow_core::Deleter::Worker)
            .await
            .expect("settle");
    }
}

fn post_json(body: &str) -> Request<Body> {
    Request::post("/v1/jobs")
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .expect("request")
}

fn echo(text: &str) -> Value {
    json!({"kind": "echo", "input": {"text": text}})
}

fn pointers(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["pointer"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

// ---- submit --------------------------------------------------------------------------------------

#[tokio::test]
async fn a_submission_is_accepted_with_location_retry_after_and_etag() {
    let t = spawn_app();
    let answer = t.submit(echo("hi")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let job = answer.job();
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.kind.as_str(), "echo");
    assert_eq!(
        answer.header(LOCATION),
        Some(format!("/v1/jobs/{}", job.id).as_str())
    );
    assert_eq!(job.links.self_, format!("/v1/jobs/{}", job.id));
    assert_eq!(job.links.cancel.as_deref(), Some(job.links.self_.as_str()));
    let retry_after: u64 = answer
        .header(RETRY_AFTER)
        .and_then(|v| v.parse().ok())
        .expect("a numeric Retry-After");
    assert!(retry_after >= 1);
    let etag = answer.header(ETAG).expect("an ETag");
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert_eq!(answer.header(ackflow_http::IDEMPOTENT_REPLAYED), None);
    assert_eq!(t.list_ids().await, [job.id.to_string()]);
    assert_eq!(t.waiting_messages().await, 1);
    // The owner never appears on the wire.
    assert!(answer.json().get("owner").is_none());
}

#[tokio::test]
async fn a_submission_without_input_means_an_empty_input() {
    let t = spawn_app();
    // `echo` requires `text`, so the empty input is validated — and refused under `/input`.
    let answer = t.submit(json!({"kind": "echo"})).await;
    let p = answer.problem(422);
    assert_eq!(pointers(&p), ["/input/text"]);
}

#[tokio::test]
async fn malformed_json_is_a_400_that_locates_the_error_and_changes_nothing() {
    let t = spawn_app();
    let answer = t
        .send(post_json(
            "{\"kind\": \"echo\",\n \"input\": {\"text\": secret}}",
        ))
        .await;
    let p = answer.problem(400);
    let detail = p["detail"].as_str().expect("detail");
    assert!(detail.contains("line 2"), "{detail}");
    assert!(!detail.contains("secret"), "the body was echoed: {detail}");
    t.assert_nothing_changed().await;
}

#[tokio::test]
async fn a_body_not_declared_as_json_is_a_415_and_changes_nothing() {
    let t = spawn_app();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = Request::post("/v1/jobs");
        if let Some(ct) = content_type {
            request = request.header(CONTENT_TYPE, ct);
        }
        let answer = t
            .send(
                request
                    .body(Body::from(echo("hi").to_string()))
                    .expect("request"),
            )
            .await;
        answer.problem(415);
    }
    t.assert_nothing_changed().await;
}

#[tokio::test]
async fn json_with_a_charset_or_a_json_suffix_is_accepted() {
    let t = spawn_app();
    for content_type in [
        "application/json; charset=utf-8",
        "application/vnd.ackflow+json",
    ] {
        let answer = t
            .send(
                Request::post("/v1/jobs")
                    .header(CONTENT_TYPE, content_type)
                    .body(Body::from(echo("hi").to_string()))
                    .expect("request"),
            )
            .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{content_type}");
    }
}

#[tokio::test]
async fn an_oversized_body_is_a_413_with_or_without_content_length_and_changes_nothing() {
    let t = spawn_app();
    let limit = t.app.settings().body_limit;
    let big = echo(&"x".repeat(limit)).to_string();

    // Announced: refused on the header alone, before reading (the body here is small, so only
    // the announcement can be the reason).
    let announced = Request::post("/v1/jobs")
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_LENGTH, limit + 1)
        .body(Body::from(echo("small").to_string()))
        .expect("request");
    let p = t.send(announced).await.problem(413);
    assert!(p["detail"]
        .as_str()
        .is_some_and(|d| d.contains(&limit.to_string())));

    // Not announced: a streamed body, cut off at the limit.
    let chunks: Vec<Result<Bytes, std::io::Error>> = big
        .as_bytes()
        .chunks(100)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let streamed = Request::post("/v1/jobs")
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .expect("request");
    assert!(!streamed.headers().contains_key(CONTENT_LENGTH));
    t.send(streamed).await.problem(413);

    // Not announced, in one piece.
    t.send(post_json(&big)).await.problem(413);
    t.assert_nothing_changed().await;
}

#[tokio::test]
async fn an_unknown_kind_is_a_422_at_kind_and_changes_nothing() {
    let t = spawn_app();
    for kind in [json!("nope"), json!("Not A Kind")] {
        let p = t
            .submit(json!({"kind": kind, "input": {}}))
            .await
            .problem(422);
        assert_eq!(pointers(&p), ["/kind"], "{p}");
        assert!(
            p["detail"].as_str().is_some_and(|d| d.contains("echo")),
            "{p}"
        );
    }
    t.assert_nothing_changed().await;
}

#[tokio::test]
async fn invalid_input_is_a_422_with_pointers_under_input_and_changes_nothing() {
    let t = spawn_app();
    let p = t
        .submit(json!({"kind": "echo", "input": {"text": 5, "times": 9}}))
        .await
        .problem(422);
    assert_eq!(pointers(&p), ["/input/text", "/input/times"]);
    t.assert_nothing_changed().await;
}

#[tokio::test]
async fn a_body_of_the_wrong_shape_is_a_422_naming_each_field() {
    let t = spawn_app();
    let cases = [
        (json!({"input": {"text": "x"}}), vec!["/kind"]),
        (json!({"kind": 3, "input": {"text": "x"}}), vec!["/kind"]),
        (json!({"kind": "echo", "input": "text"}), vec!["/input"]),
        (
            json!({"kind": "echo", "input": {"text": "x"}, "imput": {}}),
            vec!["/imput"],
        ),
        (json!(["echo"]), vec![""]),
    ];
    for (body, expected) in cases {
        let p = t.submit(body.clone()).await.problem(422);
        assert_eq!(pointers(&p), expected, "{body}");
    }
    t.assert_nothing_changed().await;
}

// ---- idempotency -------------------------------------------------------------------------------

fn keyed(key: &str, body: &Value) -> Request<Body> {
    Request::post("/v1/jobs")
        .header(CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", key)
        .body(Body::from(body.to_string()))
        .expect("request")
}

#[tokio::test]
async fn an_idempotent_replay_returns_the_same_job_and_sends_one_message() {
    let t = spawn_app();
    let first = t.send(keyed("order-42", &echo("hi"))).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    // Same body, other key order and whitespace.
    let again = t
        .send(keyed(
            "order-42",
            &json!({"input": {"text": "hi"}, "kind": "echo"}),
        ))
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.job().id, first.job().id);
    assert_eq!(again.header(LOCATION), first.header(LOCATION));
    assert_eq!(
        again.header(ackflow_http::IDEMPOTENT_REPLAYED),
        Some("true")
    );
    assert_eq!(t.list_ids().await.len(), 1);
    assert_eq!(t.waiting_messages().await, 1);
}

#[tokio::test]
async fn an_idempotency_key_reused_with_another_body_is_a_422() {
    let t = spawn_app();
    assert_eq!(
        t.send(keyed("k1", &echo("hi"))).await.status,
        StatusCode::ACCEPTED
    );
    let p = t.send(keyed("k1", &echo("bye"))).await.problem(422);
    assert_eq!(p["type"], "urn:ackflow:problem:idempotency-key-reused");
    assert_eq!(t.list_ids().await.len(), 1);
    assert_eq!(t.waiting_messages().await, 1);
}

#[tokio::test]
async fn an_invalid_idempotency_key_is_a_400_and_changes_nothing() {
    let t = spawn_app();
    for key in ["k".repeat(256), "tab\there".to_owned()] {
        t.send(keyed(&key, &echo("hi"))).await.problem(400);
    }
    let mut request = keyed("x", &echo("hi"));
    request
        .headers_mut()
        .insert("Idempotency-Key", "é".parse().expect("header value"));
    t.send(request).await.problem(400);
    t.assert_nothing_changed().await;
}

// ---- read and long-poll ------------------------------------------------------------------------

#[tokio::test]
async fn a_job_is_answered_200_then_304_when_the_client_has_its_etag() {
    let t = spawn_app();
    let id = t.submit(echo("hi")).await.job().id;
    let answer = t.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.job().id, id);
    assert!(answer.header(RETRY_AFTER).is_some(), "queued: Retry-After");
    assert_eq!(answer.header("cache-control"), Some("private, no-cache"));
    let etag = answer.header(ETAG).expect("etag").to_owned();

    let revalidated = t
        .send(
            Request::get(format!("/v1/jobs/{id}"))
                .header(IF_NONE_MATCH, &etag)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    assert!(revalidated.body.is_empty());
    assert_eq!(revalidated.header(ETAG), Some(etag.as_str()));
    assert!(revalidated.header(RETRY_AFTER).is_some());

    // A stale tag gets the job.
    let stale = t
        .send(
            Request::get(format!("/v1/jobs/{id}"))
                .header(IF_NONE_MATCH, "\"something-else\"")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(stale.status, StatusCode::OK);
}

#[tokio::test]
async fn a_finished_job_has_its_result_and_no_retry_after() {
    let t = spawn_app();
    let id = t
        .submit(json!({"kind": "echo", "input": {"text": "ab", "times": 2}}))
        .await
        .job()
        .id;
    t.work_one().await;
    let answer = t.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let job = answer.job();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.result, Some(json!({"echo": "abab"})));
    assert!(job.finished_at.is_some());
    assert_eq!(job.links.cancel, None);
    assert_eq!(answer.header(RETRY_AFTER), None);
}

fn poll(id: JobId, etag: &str, wait: u64) -> Request<Body> {
    Request::get(format!("/v1/jobs/{id}?wait={wait}"))
        .header(IF_NONE_MATCH, etag)
        .body(Body::empty())
        .expect("request")
}

#[tokio::test]
async fn a_long_poll_returns_as_soon_as_the_job_changes() {
    let t = spawn_app();
    let accepted = t.submit(echo("hi")).await;
    let id = accepted.job().id;
    let etag = accepted.header(ETAG).expect("etag").to_owned();
    let wait = 20;

    let router = t.router.clone();
    let request = poll(id, &etag, wait);
    let started = Instant::now();
    let poller = tokio::spawn(async move { router.oneshot(request).await });
    t.work_one().await;
    let response = poller.await.expect("joined").expect("infallible");
    let elapsed = started.elapsed();

    assert_eq!(response.status(), StatusCode::OK);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let job: JobView = serde_json::from_slice(&body).expect("a job");
    // The first change wakes the poll: that may be `queued → running` or the finish, depending
    // on when the poller reads; either way the job is no longer the one the ETag named.
    assert_ne!(job.state, JobState::Queued, "answered without a change");
    assert!(
        elapsed < Duration::from_secs(wait / 2),
        "waited {elapsed:?} for a change that had happened"
    );
}

#[tokio::test]
async fn a_long_poll_without_a_change_answers_304_after_the_wait() {
    let t = spawn_app();
    let accepted = t.submit(echo("hi")).await;
    let id = accepted.job().id;
    let etag = accepted.header(ETAG).expect("etag").to_owned();

    let started = Instant::now();
    let answer = t.send(poll(id, &etag, 1)).await;
    let elapsed = started.elapsed();
    assert_eq!(answer.status, StatusCode::NOT_MODIFIED);
    assert!(answer.header(RETRY_AFTER).is_some());
    assert_eq!(answer.header(ETAG), Some(etag.as_str()));
    assert!(
        elapsed >= Duration::from_secs(1),
        "answered after {elapsed:?}"
    );
}

#[tokio::test]
async fn a_wait_beyond_the_cap_is_shortened_to_the_cap() {
    let t = spawn_app_with(
        Arc::new(Anonymous),
        Settings {
            long_poll_cap: Duration::from_secs(1),
            ..settings()
        },
    );
    let accepted = t.submit(echo("hi")).await;
    let etag = accepted.header(ETAG).expect("etag").to_owned();
    let started = Instant::now();
    let answer = t.send(poll(accepted.job().id, &etag, 3600)).await;
    assert_eq!(answer.status, StatusCode::NOT_MODIFIED);
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn a_wait_that_is_not_whole_seconds_is_a_400() {
    let t = spawn_app();
    let id = t.submit(echo("hi")).await.job().id;
    for wait in ["1.5", "-1", "soon"] {
        let p = t
            .get(&format!("/v1/jobs/{id}?wait={wait}"))
            .await
            .problem(400);
        assert!(
            p["detail"].as_str().is_some_and(|d| d.contains("wait")),
            "{p}"
        );
    }
}

#[tokio::test]
async fn a_malformed_id_is_answered_like_an_unknown_one() {
    let t = spawn_app();
    let unknown = t.get(&format!("/v1/jobs/{}", JobId::random())).await;
    let malformed = t.get("/v1/jobs/not-a-job-id").await;
    assert_eq!(unknown.problem(404), malformed.problem(404));
    let p = unknown.problem(404);
    assert_eq!(p["type"], "urn:ackflow:problem:job-not-found");
}

// ---- cancel ------------------------------------------------------------------------------------

fn delete(uri: &str) -> Request<Body> {
    Request::delete(uri).body(Body::empty()).expect("request")
}

#[tokio::test]
async fn a_queued_job_is_cancelled_once_and_then_conflicts() {
    let t = spawn_app();
    let id = t.submit(echo("hi")).await.job().id;
    let uri = format!("/v1/jobs/{id}");
    let cancelled = t.send(delete(&uri)).await;
    assert_eq!(cancelled.status, StatusCode::OK);
    let job = cancelled.job();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.links.cancel, None);
    assert!(cancelled.header(ETAG).is_some());

    let p = t.send(delete(&uri)).await.problem(409);
    assert_eq!(p["type"], "urn:ackflow:problem:not-cancellable");
    assert_eq!(p["instance"], uri.as_str());
    t.send(delete(&format!("/v1/jobs/{}", JobId::random())))
        .await
        .problem(404);
}

// ---- owners --------------------------------------------------------------------------------------

fn with_token(mut request: Request<Body>, token: &str) -> Request<Body> {
    request.headers_mut().insert(
        AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header value"),
    );
    request
}

fn tokens() -> Arc<dyn OwnerResolver> {
    Arc::new(BearerTokens::new(HashMap::from([
        (
            "alice-token".to_owned(),
            Owner::parse("alice").expect("owner"),
        ),
        ("bob-token".to_owned(), Owner::parse("bob").expect("owner")),
    ])))
}

#[tokio::test]
async fn another_owners_job_is_not_found() {
    let t = spawn_app_with(tokens(), settings());
    let accepted = t
        .send(with_token(
            post_json(&echo("hi").to_string()),
            "alice-token",
        ))
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    let uri = format!("/v1/jobs/{}", accepted.job().id);

    let mine = t.send(with_token(get(&uri), "alice-token")).await;
    assert_eq!(mine.status, StatusCode::OK);
    t.send(with_token(get(&uri), "bob-token"))
        .await
        .problem(404);
    t.send(with_token(delete(&uri), "bob-token"))
        .await
        .problem(404);
    let bobs: JobList =
        serde_json::from_slice(&t.send(with_token(get("/v1/jobs"), "bob-token")).await.body)
            .expect("a list");
    assert!(bobs.jobs.is_empty());
    // Still there, still queued, for its owner.
    let again = t.send(with_token(get(&uri), "alice-token")).await;
    assert_eq!(again.job().state, JobState::Queued);
}

/// A cursor names a position (a time and a job id), never an owner: one forged from another
/// owner's job, or taken from another owner's listing, pages through the caller's own jobs only.
#[tokio::test]
async fn a_cursor_forged_from_another_owners_job_shows_only_the_callers_jobs() {
    let t = spawn_app_with(tokens(), settings());
    let mut alices = Vec::new();
    for i in 0..3 {
        let accepted = t
            .send(with_token(
                post_json(&echo(&format!("a{i}")).to_string()),
                "alice-token",
            ))
            .await;
        alices.push(accepted.job());
    }
    let bobs = t
        .send(with_token(post_json(&echo("b").to_string()), "bob-token"))
        .await
        .job();
    let newest = alices.last().expect("a job");
    // Alice's own next-page cursor, and one forged from her newest job's position.
    let page: JobList = serde_json::from_slice(
        &t.send(with_token(get("/v1/jobs?limit=1"), "alice-token"))
            .await
            .body,
    )
    .expect("a list");
    let forged = ackflow_core::Cursor {
        submitted_at: newest.submitted_at,
        id: newest.id,
    }
    .encode();
    for cursor in [page.next.expect("a next page"), forged] {
        let seen: JobList = serde_json::from_slice(
            &t.send(with_token(
                get(&format!("/v1/jobs?cursor={cursor}")),
                "bob-token",
            ))
            .await
            .body,
        )
        .expect("a list");
        assert!(
            seen.jobs.iter().all(|j| j.id == bobs.id),
            "bob sees only his own jobs: {:?}",
            seen.jobs.iter().map(|j| j.id).collect::<Vec<_>>()
        );
    }
}

/// Fifty POSTs with one Idempotency-Key at once: one job, one message; the same body is
/// answered with that job every time, another body with a 422, and nothing else is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_posts_with_one_key_make_one_job() {
    let t = Arc::new(spawn_app());
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..50 {
        let t = Arc::clone(&t);
        let body = if i % 2 == 0 {
            echo("same")
        } else {
            echo(&format!("other {i}"))
        };
        posts.spawn(async move { (i % 2 == 0, t.send(keyed("fifty", &body)).await) });
    }
    let mut ids = BTreeSet::new();
    let (mut same_accepted, mut other_accepted, mut refused) = (0, 0, 0);
    while let Some(joined) = posts.join_next().await {
        let (same, answer) = joined.expect("task");
        match answer.status {
            StatusCode::ACCEPTED if same => same_accepted += 1,
            StatusCode::ACCEPTED => other_accepted += 1,
            StatusCode::UNPROCESSABLE_ENTITY => {
                assert_eq!(
                    answer.json()["type"],
                    "urn:ackflow:problem:idempotency-key-reused"
                );
                refused += 1;
            }
            other => panic!("{other}: {}", answer.text()),
        }
        if answer.status == StatusCode::ACCEPTED {
            ids.insert(answer.job().id);
        }
    }
    assert_eq!(ids.len(), 1, "one job");
    // The body the job was made with wins; which one, the race decides: every POST with it
    // gets the job, every other a 422.
    assert!(
        (same_accepted, other_accepted, refused) == (25, 0, 25)
            || (same_accepted, other_accepted, refused) == (0, 1, 49),
        "{same_accepted} + {other_accepted} accepted, {refused} refused"
    );
    let depth = t.queue().depth().await.expect("depth");
    assert_eq!(depth.waiting + depth.in_flight, 1, "one message");
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_a_401_on_every_api_route() {
    let t = spawn_app_with(tokens(), settings());
    let id = JobId::random();
    let requests = || {
        vec![
            post_json(&echo("hi").to_string()),
            get("/v1/jobs"),
            get(&format!("/v1/jobs/{id}")),
            delete(&format!("/v1/jobs/{id}")),
            get("/v1/report"),
        ]
    };
    for request in requests() {
        let answer = t.send(request).await;
        answer.problem(401);
        assert!(answer.header("www-authenticate").is_some());
    }
    for request in requests() {
        t.send(with_token(request, "mallory-token"))
            .await
            .problem(401);
    }
    // The page and the description need no token.
    assert_eq!(t.get("/").await.status, StatusCode::OK);
    assert_eq!(t.get("/openapi.json").await.status, StatusCode::OK);
    let alice = t.send(with_token(get("/v1/jobs"), "alice-token")).await;
    assert_eq!(alice.status, StatusCode::OK);
}

// ---- list ----------------------------------------------------------------------------------------

#[tokio::test]
async fn listing_pages_through_every_job_newest_first() {
    let t = spawn_app();
    let mut submitted = Vec::new();
    for i in 0..5 {
        submitted.push(t.submit(echo(&format!("job {i}"))).await.job());
    }
    let mut seen: Vec<JobView> = Vec::new();
    let mut uri = "/v1/jobs?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let answer = t.get(&uri).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}");
        let page: JobList = serde_json::from_slice(&answer.body).expect("a list");
        assert!(page.jobs.len() <= 2);
        pages += 1;
        seen.extend(page.jobs);
        match page.next {
            Some(next) => {
                let link = answer.header(LINK).expect("a Link header").to_owned();
                assert!(link.ends_with("; rel=\"next\""), "{link}");
                let target = link
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .expect("a target")
                    .to_owned();
                assert!(target.contains(&format!("cursor={next}")), "{target}");
                assert!(target.contains("limit=2"), "{target}");
                uri = target;
            }
            None => {
                assert_eq!(answer.header(LINK), None);
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    let ids: Vec<JobId> = seen.iter().map(|j| j.id).collect();
    let distinct: BTreeSet<JobId> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), 5);
    assert_eq!(
        distinct,
        submitted.iter().map(|j| j.id).collect::<BTreeSet<_>>()
    );
    // Newest first.
    let times: Vec<_> = seen.iter().map(|j| j.submitted_at).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    assert!(seen.iter().all(|j| j.result.is_none()));
}

#[tokio::test]
async fn listing_filters_by_state_and_kind() {
    let t = spawn_app();
    let first = t.submit(echo("a")).await.job().id;
    let second = t.submit(echo("b")).await.job().id;
    t.send(delete(&format!("/v1/jobs/{first}"))).await;

    let ids = |answer: Answer| -> Vec<JobId> {
        serde_json::from_slice::<JobList>(&answer.body)
            .expect("a list")
            .jobs
            .into_iter()
            .map(|j| j.id)
            .collect()
    };
    assert_eq!(ids(t.get("/v1/jobs?state=cancelled").await), [first]);
    assert_eq!(
        ids(t.get("/v1/jobs?state=queued&kind=echo").await),
        [second]
    );
    assert!(ids(t.get("/v1/jobs?kind=other").await).is_empty());
    // Blank parameters count as absent.
    assert_eq!(ids(t.get("/v1/jobs?state=&kind=").await).len(), 2);
}

#[tokio::test]
async fn bad_list_parameters_and_cursors_are_400s() {
    let t = spawn_app();
    for query in [
        "state=done",
        "kind=Not%20A%20Kind",
        "limit=0",
        "limit=101",
        "limit=ten",
        "state=queued&state=running",
    ] {
        t.get(&format!("/v1/jobs?{query}")).await.problem(400);
    }
    let p = t.get("/v1/jobs?cursor=bm90IGEgY3Vyc29y").await.problem(400);
    assert_eq!(p["type"], "urn:ackflow:problem:bad-cursor");
}

// ---- report --------------------------------------------------------------------------------------

#[tokio::test]
async fn the_report_counts_the_callers_jobs() {
    let t = spawn_app();
    let ids: Vec<JobId> = {
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(t.submit(echo(&i.to_string())).await.job().id);
        }
        ids
    };
    t.send(delete(&format!("/v1/jobs/{}", ids[0]))).await;
    let answer = t.get("/v1/report").await;
    assert_eq!(answer.status, StatusCode::OK);
    let report: ReportView = serde_json::from_slice(&answer.body).expect("a report");
    assert_eq!(report.accepted, 3);
    assert_eq!(report.counts.queued, 2);
    assert_eq!(report.counts.cancelled, 1);
    assert_eq!(report.counts.running, 0);
    // Two jobs submitted within one millisecond tie on submission time; either is then "oldest".
    let oldest = report.oldest_open.expect("an open job");
    let first_open = t.get(&format!("/v1/jobs/{}", ids[1])).await.job();
    let second_open = t.get(&format!("/v1/jobs/{}", ids[2])).await.job();
    if first_open.submitted_at == second_open.submitted_at {
        assert!(oldest.id == ids[1] || oldest.id == ids[2], "{oldest:?}");
    } else {
        assert_eq!(oldest.id, ids[1]);
    }
    assert_eq!(report.queue.map(|q| q.waiting), Some(3));
}

// ---- the rest of the surface ---------------------------------------------------------------------

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let t = spawn_app();
    let p = t.get("/v2/nothing").await.problem(404);
    assert_eq!(p["type"], "urn:ackflow:problem:not-found");

    let answer = t
        .send(
            Request::builder()
                .method(Method::PUT)
                .uri("/v1/jobs")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    let p = answer.problem(405);
    assert_eq!(p["type"], "urn:ackflow:problem:method-not-allowed");
    let allow = answer.header(ALLOW).expect("an Allow header");
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    t.send(
        Request::post(format!("/v1/jobs/{}", JobId::random()))
            .body(Body::empty())
            .expect("request"),
    )
    .await
    .problem(405);
}

#[tokio::test]
async fn the_correlation_id_is_adopted_when_valid_and_made_up_otherwise() {
    let t = spawn_app();
    let with = |id: &str| {
        Request::get("/v1/jobs")
            .header("x-correlation-id", id)
            .body(Body::empty())
            .expect("request")
    };
    let adopted = t.send(with("req-123.abc")).await;
    assert_eq!(adopted.header("x-correlation-id"), Some("req-123.abc"));
    let replaced = t.send(with("no spaces allowed")).await;
    let made_up = replaced.header("x-correlation-id").expect("an id");
    assert_ne!(made_up, "no spaces allowed");
    assert!(!made_up.is_empty());
    // Also on problems, and recorded on the job.
    let problem = t.get("/nowhere").await;
    assert!(problem.header("x-correlation-id").is_some());
    let accepted = t
        .send(
            Request::post("/v1/jobs")
                .header(CONTENT_TYPE, "application/json")
                .header("x-correlation-id", "submit-1")
                .body(Body::from(echo("hi").to_string()))
                .expect("request"),
        )
        .await;
    assert_eq!(accepted.job().correlation_id.as_str(), "submit-1");
}

#[tokio::test]
async fn the_status_page_is_strict_html_linking_to_the_description() {
    let t = spawn_app();
    let answer = t.get("/").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer
        .header(CONTENT_TYPE)
        .is_some_and(|ct| ct.starts_with("text/html")));
    let csp = answer.header(CONTENT_SECURITY_POLICY).expect("a CSP");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = String::from_utf8(answer.body.to_vec()).expect("utf-8");
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("<title>ackflow</title>"));
    assert!(html.contains("href=\"openapi.json\""));
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let t = spawn_app();
    let answer = t.get("/openapi.json").await;
    assert_eq!(answer.status, StatusCode::OK);
    let doc = answer.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths: BTreeSet<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        paths,
        BTreeSet::from([
            "/",
            "/assets/{file}",
            "/openapi.json",
            "/v1/jobs",
            "/v1/jobs/{id}",
            "/v1/report"
        ])
    );
    for (path, method) in [
        ("/v1/jobs", "post"),
        ("/v1/jobs", "get"),
        ("/v1/jobs/{id}", "get"),
        ("/v1/jobs/{id}", "delete"),
        ("/v1/report", "get"),
    ] {
        let responses = &doc["paths"][path][method]["responses"];
        assert!(responses.is_object(), "{method} {path} is not described");
        assert!(
            responses["401"]["content"]["application/problem+json"].is_object(),
            "{method} {path} does not describe its 401 problem"
        );
    }
    assert!(doc["paths"]["/v1/jobs/{id}"]["get"]["responses"]["304"].is_object());
    let accepted_headers = &doc["paths"]["/v1/jobs"]["post"]["responses"]["202"]["headers"];
    for header in ["Location", "Retry-After", "ETag"] {
        assert!(accepted_headers[header].is_object(), "202 lacks {header}");
    }
    // The Problem schema names exactly the fields a Problem is written with.
    let mut written = BTreeSet::new();
    for problem in [
        ackflow_core::Problem::invalid_input(vec![FieldError::new("/a", "b")]).with_instance("/x"),
        ackflow_core::Problem::not_queued(JobId::random(), ackflow_core::Recorded::Yes, false),
    ] {
        let json = serde_json::to_value(problem).expect("json");
        written.extend(json.as_object().expect("object").keys().cloned());
    }
    let written: BTreeSet<&str> = written.iter().map(String::as_str).collect();
    let described: BTreeSet<&str> = doc["components"]["schemas"]["Problem"]["properties"]
        .as_object()
        .expect("Problem schema")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(written, described);
}

// ---- failures of the ports and of the code -------------------------------------------------------

/// A store that is down: every call fails as unavailable, with an internal-looking message that
/// must never reach a client.
#[derive(Debug)]
struct DownStore;

const INTERNAL: &str = "disk I/O error at /var/lib/ackflow/secret.db";

fn down() -> PortError {
    PortError::unavailable("store", INTERNAL)
}

#[async_trait]
impl JobStore for DownStore {
    async fn create(
        &self,
        _job: &Job,
        _input: &Value,
        _key: Option<&IdempotencyRecord>,
    ) -> Result<Created, PortError> {
        Err(down())
    }
    async fn get(&self, _owner: &Owner, _id: JobId) -> Result<Option<Job>, PortError> {
        Err(down())
    }
    async fn input(&self, _owner: &Owner, _id: JobId) -> Result<Option<Value>, PortError> {
        Err(down())
    }
    async fn result(&self, _owner: &Owner, _id: JobId) -> Result<Option<Value>, PortError> {
        Err(down())
    }
    async fn update(
        &self,
        _before: &Job,
        _after: &Job,
        _result: Option<&Value>,
        _deltas: &Deltas,
    ) -> Result<(), WriteError> {
        Err(WriteError::Port(down()))
    }
    async fn list(&self, _owner: &Owner, _query: &ListQuery) -> Result<Page, PortError> {
        Err(down())
    }
    async fn figures(&self, _owner: &Owner, _since: Timestamp) -> Result<Figures, PortError> {
        Err(down())
    }
    async fn due_for_sweep(&self, _now: Timestamp, _limit: usize) -> Result<Vec<Job>, PortError> {
        Err(down())
    }
    async fn purge_expired(&self, _now: Timestamp, _limit: usize) -> Result<u64, PortError> {
        Err(down())
    }
}

#[tokio::test]
async fn a_store_that_is_down_is_a_503_with_retry_after_and_no_internals() {
    let t = TestApp::builder()
        .settings(settings())
        .store(|_| Arc::new(DownStore))
        .start();
    let id = JobId::random();
    for request in [
        post_json(&echo("hi").to_string()),
        get(&format!("/v1/jobs/{id}")),
        delete(&format!("/v1/jobs/{id}")),
        get("/v1/jobs"),
        get("/v1/report"),
    ] {
        let answer = t.send(request).await;
        let p = answer.problem(503);
        assert_eq!(p["type"], "urn:ackflow:problem:service-unavailable");
        assert!(answer.header(RETRY_AFTER).is_some());
        let text = String::from_utf8_lossy(&answer.body);
        assert!(
            !text.contains("secret.db") && !text.contains("disk"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_job_recorded_but_not_known_to_be_queued_is_a_503_naming_it() {
    // Every send times out: the job is recorded, its message may or may not be on the queue.
    let faults = ackflow_testkit::faults::FaultPlan::new();
    faults.inject_every(
        ackflow_testkit::faults::Op::QueueSend,
        ackflow_testkit::faults::Fault::Lost,
    );
    let t = TestApp::builder()
        .settings(settings())
        .queue(move |queue| Arc::new(ackflow_testkit::faults::FaultyQueue::new(queue, faults)))
        .start();
    let answer = t.send(post_json(&echo("hi").to_string())).await;
    let p = answer.problem(503);
    assert_eq!(p["type"], "urn:ackflow:problem:service-unavailable");
    assert!(answer.header(RETRY_AFTER).is_some());
    let id = p["job_id"].as_str().expect("the job's id").to_owned();
    let path = format!("/v1/jobs/{id}");
    assert_eq!(answer.header(LOCATION), Some(path.as_str()));
    assert_eq!(p["instance"], path.as_str());
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("Do not submit it again"),
        "{p}"
    );
    // And the job is there to follow.
    let followed = t.get(&path).await;
    assert_eq!(followed.status, StatusCode::OK);
    assert_eq!(followed.json()["state"], "queued");
}

/// A resolver with a bug.
#[derive(Debug)]
struct Panicking;

impl OwnerResolver for Panicking {
    #[allow(clippy::result_large_err)]
    fn resolve(&self, _parts: &axum::http::request::Parts) -> Result<Owner, ackflow_core::Problem> {
        panic!("a bug with internal details")
    }
}

#[tokio::test]
async fn a_panic_in_a_handler_is_a_500_problem_without_details() {
    let t = spawn_app_with(Arc::new(Panicking), settings());
    let answer = t.get("/v1/jobs").await;
    let p = answer.problem(500);
    assert_eq!(p["type"], "urn:ackflow:problem:internal");
    assert!(!String::from_utf8_lossy(&answer.body).contains("internal details"));
    assert!(answer.header("x-correlation-id").is_some());
    // And the server goes on.
    assert_eq!(t.get("/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_report_of_an_owner_without_jobs_is_empty() {
    let t = spawn_app();
    let answer = t.get("/v1/report").await;
    assert_eq!(answer.status, StatusCode::OK);
    let report: ReportView = serde_json::from_slice(&answer.body).expect("a report");
    assert_eq!(report.accepted, 0);
    assert_eq!(report.oldest_open, None);
}
