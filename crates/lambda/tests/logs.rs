//! The functions' JSON log lines along one job's path (`api` function → SQS → `worker`
//! function), captured in the functions' own format ([`ackflow_lambda::telemetry::json_logs`]):
//! the job id and the request's correlation id are on the accept line and on the worker's
//! outcome line, the X-Ray trace header of the API's invocation reaches the worker, and the
//! job's input is in no line.

// Test code: helpers panic on setup failures, which is what a test should do.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use ackflow_lambda::telemetry::json_logs;
use serde_json::{json, Value};
use support::{pipeline, API_GATEWAY_TRACE, INVOCATION_TRACE};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Collects whatever the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> MakeWriter<'w> for Captured {
    type Writer = Self;
    fn make_writer(&'w self) -> Self {
        self.clone()
    }
}

impl Captured {
    fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .expect("UTF-8 logs")
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }
}

/// The line whose message is `message`.
fn line<'a>(lines: &'a [Value], message: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["fields"]["message"] == message)
        .unwrap_or_else(|| panic!("no {message:?} line in {lines:#?}"))
}

/// The span named `name` that `line` was logged in.
fn span<'a>(line: &'a Value, name: &str) -> &'a Value {
    line["spans"]
        .as_array()
        .and_then(|spans| spans.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no {name:?} span on {line:#}"))
}

#[tokio::test]
async fn one_jobs_lines_carry_its_id_and_correlation_id_from_accept_to_outcome_and_never_its_input()
{
    let captured = Captured::default();
    // Current-thread runtime: every task of this test logs through this subscriber.
    let _logs =
        tracing::subscriber::set_default(json_logs(EnvFilter::new("info"), captured.clone()));
    let pipeline = pipeline();

    let secret = "Ada Lovelace, 12 Secret Lane";
    let job = pipeline
        .submit(
            json!({"kind": "order", "input": {"customer": secret, "items": [{"sku": "mug-blue", "quantity": 1}]}}),
            "req-obs-1",
            Some(INVOCATION_TRACE),
        )
        .await;
    let job_id = job["id"].as_str().expect("an id").to_owned();
    let (deliveries, response) = pipeline.work().await;
    assert_eq!(deliveries.len(), 1);
    assert!(response.batch_item_failures.is_empty(), "{response:?}");

    let lines = captured.lines();

    // The API: the accept line names the job and the request, inside the request's span,
    // which carries the invocation's trace header (not API Gateway's).
    let accepted = line(&lines, "job accepted");
    assert_eq!(accepted["level"], "INFO");
    assert_eq!(accepted["fields"]["job_id"], job_id.as_str());
    assert_eq!(accepted["fields"]["correlation_id"], "req-obs-1");
    assert_eq!(accepted["fields"]["kind"], "order");
    let request = span(accepted, "request");
    assert_eq!(request["correlation_id"], "req-obs-1");
    assert_eq!(request["trace_header"], INVOCATION_TRACE);

    // The message carried the trace header to the worker (as SQS's AWSTraceHeader).
    assert_eq!(
        deliveries[0]
            .trace_header()
            .as_ref()
            .map(ackflow_core::TraceHeader::as_str),
        Some(INVOCATION_TRACE)
    );

    // The worker: the outcome line names the job, the request, the kind and the time it took,
    // inside the delivery's `job` span with the attempt and the trace header it received.
    let succeeded = line(&lines, "job succeeded");
    assert_eq!(succeeded["level"], "INFO");
    assert_eq!(succeeded["fields"]["job_id"], job_id.as_str());
    assert_eq!(succeeded["fields"]["correlation_id"], "req-obs-1");
    assert_eq!(succeeded["fields"]["kind"], "order");
    assert!(
        succeeded["fields"]["accept_to_terminal_ms"].is_u64(),
        "{succeeded:#}"
    );
    let delivery = span(succeeded, "job");
    assert_eq!(delivery["job_id"], job_id.as_str());
    assert_eq!(delivery["correlation_id"], "req-obs-1");
    assert_eq!(delivery["kind"], "order");
    assert_eq!(delivery["attempt"], 1);
    assert_eq!(delivery["trace_header"], INVOCATION_TRACE);
    assert_eq!(
        span(succeeded, "record")["message_id"],
        deliveries[0].message_id.as_str()
    );

    // The status record keeps the correlation id.
    assert_eq!(job["correlation_id"], "req-obs-1");

    // No input body in any line.
    let all = serde_json::to_string(&lines).expect("JSON");
    assert!(
        !all.contains("Secret Lane"),
        "the input leaked into the logs"
    );
}

#[tokio::test]
async fn a_failed_and_a_retried_job_are_logged_with_their_problem_and_attempt() {
    let captured = Captured::default();
    let _logs =
        tracing::subscriber::set_default(json_logs(EnvFilter::new("info"), captured.clone()));
    let pipeline = pipeline();

    let rejected = pipeline
        .submit(
            json!({"kind": "demo", "input": {"steps": 1, "step_ms": 0, "reject": "no, thanks"}}),
            "req-reject",
            None,
        )
        .await;
    let flaky = pipeline
        .submit(
            json!({"kind": "demo", "input": {"steps": 1, "step_ms": 0, "fail_attempts": 1}}),
            "req-flaky",
            None,
        )
        .await;
    let (deliveries, _) = pipeline.work().await;
    assert_eq!(deliveries.len(), 2);

    let lines = captured.lines();
    let failed = line(&lines, "job failed");
    assert_eq!(failed["fields"]["job_id"], rejected["id"]);
    assert_eq!(failed["fields"]["correlation_id"], "req-reject");
    assert_eq!(failed["fields"]["kind"], "demo");
    assert!(failed["fields"]["problem"].is_string(), "{failed:#}");
    assert!(
        failed["fields"]["accept_to_terminal_ms"].is_u64(),
        "{failed:#}"
    );
    // Without the invocation's trace header, API Gateway's travels.
    assert_eq!(span(failed, "job")["trace_header"], API_GATEWAY_TRACE);

    let retried = line(&lines, "job retried");
    assert_eq!(retried["fields"]["job_id"], flaky["id"]);
    assert_eq!(retried["fields"]["correlation_id"], "req-flaky");
    assert_eq!(retried["fields"]["attempt"], 1);
}

#[tokio::test]
async fn a_malformed_trace_header_is_dropped_and_never_refuses_the_job() {
    // Every test of this binary logs through its own subscriber: a thread without one would
    // share the callsites' cached interest with the others and could make them miss lines.
    let captured = Captured::default();
    let _logs =
        tracing::subscriber::set_default(json_logs(EnvFilter::new("info"), captured.clone()));
    let pipeline = pipeline();
    for (i, bad) in [
        "Root=not-a-trace",
        "Root=1-6745f1a0-0123456789abcdef01234567;x=a b",
    ]
    .into_iter()
    .enumerate()
    {
        let job = pipeline
            .submit_with(
                json!({"kind": "demo", "input": {}}),
                &format!("req-bad-trace-{i}"),
                None,
                bad,
            )
            .await;
        assert_eq!(job["state"], "queued");
    }
    let (deliveries, response) = pipeline.work().await;
    assert_eq!(deliveries.len(), 2);
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert!(!captured.lines().is_empty());
    for delivery in &deliveries {
        assert_eq!(delivery.trace_header(), None);
        assert!(
            !delivery
                .attributes
                .contains_key(ackflow_core::job::attributes::TRACE_HEADER),
            "{delivery:?}"
        );
    }
}
