//! One job's whole path as the Lambda functions run it, in one process: the `api` function's
//! Router (as [`ackflow_lambda::instrument_router`] makes it) with a Lambda invocation context on
//! each request, the job's message taken from the queue and handed to the worker's batch lifter
//! as an SQS event record — with `AWSTraceHeader` among its system attributes, as SQS delivers
//! it. SQLite stands in for DynamoDB and SQS (the same use cases run on both).

// The harness's helpers are test code too; clippy's test exemption only sees `#[test]` functions.
#![allow(clippy::expect_used, clippy::unwrap_used, dead_code)]

use std::sync::Arc;
use std::time::Duration;

use ackflow_core::{Ackflow, Clock, Delivery, Queue, Settings, SystemClock};
use ackflow_http::{Anonymous, ApiState};
use ackflow_lambda::test_support::sqs_record;
use ackflow_processors::order::SqliteOrderBook;
use ackflow_sqlite::{Durability, SqliteBackend, SqliteQueue};
use aws_lambda_events::sqs::SqsBatchResponse;
use axum::body::Body;
use http_body_util::BodyExt as _;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};
use tempfile::TempDir;
use tower::ServiceExt as _;

/// The trace header Lambda hands the `api` function's invocation (`Tracing: Active`).
pub const INVOCATION_TRACE: &str =
    "Root=1-6745f1a0-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=1";

/// The trace header API Gateway puts on the request (used when the invocation has none).
pub const API_GATEWAY_TRACE: &str = "Root=1-6745f1a0-fedcba9876543210fedcba98";

pub struct Pipeline {
    pub app: Arc<Ackflow>,
    queue: Arc<SqliteQueue>,
    router: axum::Router,
    _dir: TempDir,
}

pub fn pipeline() -> Pipeline {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let settings = Settings::default();
    let path = dir.path().join("ackflow.db");
    let backend =
        SqliteBackend::open(&path, Durability::Normal, &settings, clock.clone()).expect("db");
    let book = Arc::new(SqliteOrderBook::new(backend.db.clone()).expect("order book"));
    let registry = ackflow_processors::registry_with(book, clock.clone(), true);
    let app = Arc::new(backend.ackflow(registry, clock, settings));
    let queue = backend.queue;
    let state = ApiState::new(app.clone(), Arc::new(Anonymous));
    let router = ackflow_lambda::instrument_router(ackflow_http::router(state));
    Pipeline {
        app,
        queue,
        router,
        _dir: dir,
    }
}

impl Pipeline {
    /// `POST /v1/jobs` through the `api` function's Router, in an invocation whose context
    /// carries `invocation_trace`; the request carries API Gateway's own trace header too.
    pub async fn submit(
        &self,
        body: Value,
        correlation_id: &str,
        invocation_trace: Option<&str>,
    ) -> Value {
        self.submit_with(body, correlation_id, invocation_trace, API_GATEWAY_TRACE)
            .await
    }

    /// Like [`Pipeline::submit`], with API Gateway's `X-Amzn-Trace-Id` header as given.
    pub async fn submit_with(
        &self,
        body: Value,
        correlation_id: &str,
        invocation_trace: Option<&str>,
        api_gateway_trace: &str,
    ) -> Value {
        let mut context = Context::default();
        context.request_id = "invocation-1".to_owned();
        context.xray_trace_id = invocation_trace.map(str::to_owned);
        let mut request = axum::http::Request::post("/v1/jobs")
            .header("content-type", "application/json")
            .header("x-correlation-id", correlation_id)
            .header("x-amzn-trace-id", api_gateway_trace)
            .body(Body::from(body.to_string()))
            .expect("request");
        request.extensions_mut().insert(context);
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("answered");
        assert_eq!(response.status(), 202, "accepted");
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("a job")
    }

    /// Receives every waiting message and hands them to the worker's lifter as one SQS event.
    pub async fn work(&self) -> (Vec<Delivery>, SqsBatchResponse) {
        let deliveries = self
            .queue
            .receive(10, Duration::from_secs(60))
            .await
            .expect("received");
        let records: Vec<Value> = deliveries.iter().map(sqs_record).collect();
        let event = LambdaEvent::new(json!({ "Records": records }), Context::default());
        let response = ackflow_lambda::process_batch(&self.app, event, &Default::default())
            .await
            .expect("a batch response");
        (deliveries, response)
    }
}
