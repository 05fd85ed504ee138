//! The CloudWatch EMF metrics of the functions: jobs go through the `api` Router and the
//! worker's batch lifter with the EMF recorder installed ([`ackflow_lambda::init_metrics`]), and
//! the flushed lines are CloudWatch Embedded Metric Format documents with the right namespace,
//! dimension, units and values.
//!
//! One test only: the recorder is process-wide, so another test in this binary would add to
//! its counts.

// Test code: helpers panic on setup failures, which is what a test should do.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use ackflow_core::telemetry::metric;
use ackflow_core::{CorrelationId, JobState, Owner, Submission};
use ackflow_lambda::telemetry::{flush_metrics_to, MetricsConfig};
use serde_json::{json, Value};
use support::pipeline;

/// The EMF document of dimension `kind` = `kind`.
fn document<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    documents
        .iter()
        .find(|d| d[metric::KIND] == kind)
        .unwrap_or_else(|| panic!("no document for kind {kind}: {documents:#?}"))
}

/// The unit a document declares for `name` (`None` when the metric is not in it).
fn unit<'a>(document: &'a Value, name: &str) -> Option<&'a str> {
    document["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()?
        .iter()
        .find(|m| m["Name"] == name)
        .map(|m| m["Unit"].as_str().unwrap_or("None"))
}

#[tokio::test]
async fn processed_records_produce_emf_lines_with_counts_units_and_the_kind_dimension() {
    ackflow_lambda::init_metrics(&MetricsConfig {
        namespace: "ackflow-test".to_owned(),
    })
    .expect("recorder installed");
    let pipeline = pipeline();

    pipeline
        .submit(
            json!({"kind": "order", "input": {"customer": "Ada", "items": [{"sku": "mug-blue", "quantity": 1}]}}),
            "req-1",
            None,
        )
        .await;
    pipeline
        .submit(
            json!({"kind": "demo", "input": {"reject": "no, thanks"}}),
            "req-2",
            None,
        )
        .await;
    pipeline
        .submit(
            json!({"kind": "demo", "input": {"fail_attempts": 1}}),
            "req-3",
            None,
        )
        .await;
    let (deliveries, _) = pipeline.work().await;
    assert_eq!(deliveries.len(), 3);

    let mut out = Vec::new();
    flush_metrics_to(&mut out).expect("flushed");
    let text = String::from_utf8(out).expect("UTF-8");
    let documents: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();

    for d in &documents {
        let directive = &d["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "ackflow-test", "{d:#}");
        assert_eq!(directive["Dimensions"], json!([[metric::KIND]]), "{d:#}");
        assert!(d["_aws"]["Timestamp"].is_u64(), "{d:#}");
    }

    let order = document(&documents, "order");
    // The api Router flushed `jobs_accepted` with each response (to stdout, where Lambda sends
    // it to CloudWatch): the worker's flush does not repeat it.
    assert_eq!(unit(order, metric::JOBS_ACCEPTED), None, "{order:#}");
    assert_eq!(order[metric::JOBS_SUCCEEDED], 1, "{order:#}");
    assert_eq!(unit(order, metric::JOBS_SUCCEEDED), Some("Count"));
    assert_eq!(unit(order, metric::JOBS_FAILED), None, "nothing failed");
    let latencies = order[metric::ACCEPT_TO_TERMINAL_MS]
        .as_array()
        .expect("histogram values");
    assert_eq!(latencies.len(), 1, "{order:#}");
    assert!(latencies[0].as_f64().is_some_and(|ms| ms >= 0.0));
    assert_eq!(
        unit(order, metric::ACCEPT_TO_TERMINAL_MS),
        Some("Milliseconds")
    );

    let demo = document(&documents, "demo");
    assert_eq!(demo[metric::JOBS_FAILED], 1, "{demo:#}");
    assert_eq!(demo[metric::JOBS_RETRIED], 1, "{demo:#}");
    assert_eq!(
        unit(demo, metric::JOBS_SUCCEEDED),
        None,
        "nothing succeeded"
    );

    // The report, computed from the store's aggregates, shows the same figures.
    let report = pipeline
        .app
        .report(&Owner::anonymous())
        .await
        .expect("report");
    assert_eq!(report.accepted, 3);
    assert_eq!(report.retried, 1);
    assert_eq!(report.counts[&JobState::Succeeded], 1);
    assert_eq!(report.counts[&JobState::Failed], 1);
    let samples = report.latency.as_ref().map(|l| l.samples);
    assert_eq!(
        samples,
        Some(2),
        "one latency sample per ended job, like the histogram"
    );

    // A flush sends what happened since the last one: the next invocation starts from zero.
    let mut again = Vec::new();
    flush_metrics_to(&mut again).expect("flushed");
    assert!(again.is_empty(), "{}", String::from_utf8_lossy(&again));

    // An accept outside a Router (nothing flushes it yet) is counted like the others.
    pipeline
        .app
        .accept(Submission {
            owner: Owner::anonymous(),
            kind: "demo".to_owned(),
            input: json!({}),
            idempotency_key: None,
            correlation_id: CorrelationId::random(),
            trace_header: None,
        })
        .await
        .expect("accepted");
    let mut accepted = Vec::new();
    flush_metrics_to(&mut accepted).expect("flushed");
    let document: Value = serde_json::from_slice(&accepted).expect("one EMF line");
    assert_eq!(document[metric::KIND], "demo");
    assert_eq!(document[metric::JOBS_ACCEPTED], 1, "{document:#}");
    assert_eq!(unit(&document, metric::JOBS_ACCEPTED), Some("Count"));
}
