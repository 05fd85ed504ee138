//! The API behind API Gateway HTTP API: the fixture events of `infra/events/` read by
//! `lambda_http` exactly as the `api` and `status` functions read them, answered by the same
//! Router as `ackflow serve` (over the SQLite store here), with owners from [`JwtOwners`].

// The harness's helpers are test code too; clippy's test exemption only sees `#[test]` functions.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

use ackflow_core::{Clock, Owner, Registry, Settings, SystemClock};
use ackflow_http::{router, ApiState, OwnerResolver};
use ackflow_lambda::owner::ALLOW_ANONYMOUS;
use ackflow_lambda::JwtOwners;
use ackflow_processors::demo::Demo;
use ackflow_sqlite::{Durability, SqliteBackend};
use axum::http::StatusCode;
use http_body_util::BodyExt as _;
use lambda_http::http::HeaderMap;
use serde_json::{json, Value};
use tempfile::TempDir;
use tower::ServiceExt as _;

const FIXTURE_JOB: &str = "5f0c7a2e-8a54-4c1e-9d7a-2b1f3c4d5e6f";
const ALICE: &str = "2c4e6a8b-user-alice";

fn fixture(name: &str) -> Value {
    let path = format!("{}/../../infra/events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("fixture JSON")
}

/// The event as `lambda_http` turns it into a request.
fn request(event: &Value) -> lambda_http::Request {
    lambda_http::request::from_str(&event.to_string()).expect("an API Gateway v2 event")
}

fn resolve(owners: &JwtOwners, event: &Value) -> Result<Owner, u16> {
    let (parts, _) = request(event).into_parts();
    owners.resolve(&parts).map_err(|p| p.status)
}

/// Replaces the fixture's job id in path, route parameters and the request context.
fn for_job(mut event: Value, id: &str) -> Value {
    let path = event["rawPath"].as_str().unwrap().replace(FIXTURE_JOB, id);
    event["rawPath"] = json!(path);
    event["requestContext"]["http"]["path"] = json!(path);
    event["pathParameters"]["id"] = json!(id);
    event
}

// ---- the resolver ------------------------------------------------------------------------------

#[test]
fn the_jwt_sub_claim_is_the_owner() {
    let event = fixture("apigw-v2-post-job-jwt.json");
    for owners in [JwtOwners::new(), JwtOwners::allowing_anonymous()] {
        assert_eq!(
            resolve(&owners, &event).map(|o| o.to_string()),
            Ok(ALICE.to_owned())
        );
    }
}

#[test]
fn a_request_without_an_authorizer_is_anonymous_only_when_allowed() {
    let event = fixture("apigw-v2-post-job.json");
    assert_eq!(
        resolve(&JwtOwners::allowing_anonymous(), &event),
        Ok(Owner::anonymous())
    );
    assert_eq!(resolve(&JwtOwners::new(), &event), Err(401));
}

#[test]
fn claims_without_a_usable_sub_are_unauthorized_even_when_anonymous_is_allowed() {
    let owners = JwtOwners::allowing_anonymous();
    let mut no_sub = fixture("apigw-v2-post-job-jwt.json");
    no_sub["requestContext"]["authorizer"]["jwt"]["claims"]
        .as_object_mut()
        .unwrap()
        .remove("sub");
    assert_eq!(resolve(&owners, &no_sub), Err(401));

    let mut empty_sub = fixture("apigw-v2-post-job-jwt.json");
    empty_sub["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] = json!("");
    assert_eq!(resolve(&owners, &empty_sub), Err(401));

    let mut lambda_authorizer = fixture("apigw-v2-post-job.json");
    lambda_authorizer["requestContext"]["authorizer"] = json!({"lambda": {"user": "alice"}});
    assert_eq!(resolve(&owners, &lambda_authorizer), Err(401));
}

#[test]
fn anonymous_access_is_read_from_the_environment_and_off_unless_exactly_true() {
    for (value, allowed) in [
        (None, false),
        (Some("false"), false),
        (Some("1"), false),
        (Some("TRUE"), false),
        (Some("true"), true),
        (Some(" true "), true),
    ] {
        let owners = JwtOwners::from_lookup(|name| {
            assert_eq!(name, ALLOW_ANONYMOUS);
            value.map(str::to_owned)
        });
        assert_eq!(owners.allows_anonymous(), allowed, "{value:?}");
    }
}

// ---- the router behind API Gateway -----------------------------------------------------------

struct Api {
    router: axum::Router,
    _dir: TempDir,
}

fn api(owners: JwtOwners) -> Api {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let settings = Settings::default();
    let path = dir.path().join("ackflow.db");
    let backend =
        SqliteBackend::open(&path, Durability::Normal, &settings, clock.clone()).expect("db");
    let app = Arc::new(backend.ackflow(Registry::new().with(Demo::new()), clock, settings));
    Api {
        router: router(ApiState::new(app, Arc::new(owners))),
        _dir: dir,
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Api {
    async fn send(&self, event: &Value) -> Answer {
        let response = self
            .router
            .clone()
            .oneshot(request(event))
            .await
            .expect("infallible");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }
}

#[tokio::test]
async fn the_fixture_events_drive_submit_status_report_and_cancel() {
    let api = api(JwtOwners::allowing_anonymous());

    let accepted = api.send(&fixture("apigw-v2-post-job.json")).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    let id = accepted.body["id"].as_str().expect("an id").to_owned();
    assert_eq!(
        accepted
            .headers
            .get("location")
            .and_then(|v| v.to_str().ok()),
        Some(format!("/v1/jobs/{id}").as_str())
    );
    assert_eq!(accepted.body["kind"], "demo");

    // The fixture carries an Idempotency-Key: sending it again returns the same job.
    let replay = api.send(&fixture("apigw-v2-post-job.json")).await;
    assert_eq!(replay.status, StatusCode::ACCEPTED);
    assert_eq!(replay.body["id"], id.as_str());

    let status = api
        .send(&for_job(fixture("apigw-v2-get-job.json"), &id))
        .await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.body);
    assert_eq!(status.body["state"], "queued");

    let report = api.send(&fixture("apigw-v2-get-report.json")).await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.body);

    let cancelled = api
        .send(&for_job(fixture("apigw-v2-delete-job.json"), &id))
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
    assert_eq!(cancelled.body["state"], "cancelled");

    let again = api
        .send(&for_job(fixture("apigw-v2-delete-job.json"), &id))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert_eq!(
        again
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
}

#[tokio::test]
async fn an_unknown_job_of_the_fixture_is_a_404_problem() {
    let api = api(JwtOwners::allowing_anonymous());
    let answer = api.send(&fixture("apigw-v2-get-job.json")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.body["status"], 404);
}

#[tokio::test]
async fn a_jwt_owner_sees_only_their_own_jobs() {
    let api = api(JwtOwners::allowing_anonymous());
    let alices = api.send(&fixture("apigw-v2-post-job-jwt.json")).await;
    assert_eq!(alices.status, StatusCode::ACCEPTED, "{}", alices.body);
    let id = alices.body["id"].as_str().unwrap().to_owned();

    let mut alice_reads = for_job(fixture("apigw-v2-get-job.json"), &id);
    alice_reads["requestContext"]["authorizer"] =
        fixture("apigw-v2-post-job-jwt.json")["requestContext"]["authorizer"].clone();
    assert_eq!(api.send(&alice_reads).await.status, StatusCode::OK);

    let anonymous_reads = for_job(fixture("apigw-v2-get-job.json"), &id);
    assert_eq!(
        api.send(&anonymous_reads).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn without_anonymous_access_a_request_without_a_jwt_is_a_401_problem() {
    let api = api(JwtOwners::new());
    let answer = api.send(&fixture("apigw-v2-post-job.json")).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body["status"], 401);
    assert!(answer.body["type"].as_str().is_some_and(|t| !t.is_empty()));

    let report = api.send(&fixture("apigw-v2-get-report-jwt.json")).await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.body);
}
