//! The `sweeper` function's handler, driven with the scheduled fixture event over the SQLite
//! store and queue, on a clock the test moves.

// The harness's helpers are test code too; clippy's test exemption only sees `#[test]` functions.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use ackflow_core::{
    Clock, CorrelationId, JobState, ManualClock, Owner, Registry, Settings, Submission, SystemClock,
};
use ackflow_lambda::{sweep, SweepSummary};
use ackflow_processors::demo::Demo;
use ackflow_sqlite::{Durability, SqliteBackend};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};

fn scheduled_event() -> Value {
    let path = format!(
        "{}/../../infra/events/scheduled.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON")
}

#[tokio::test]
async fn a_scheduled_invocation_fails_jobs_past_their_deadline_and_reports_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let settings = Settings::default();
    let path = dir.path().join("ackflow.db");
    let backend =
        SqliteBackend::open(&path, Durability::Normal, &settings, clock.clone()).expect("db");
    let app = backend.ackflow(
        Registry::new().with(Demo::new()),
        clock.clone(),
        settings.clone(),
    );
    let accepted = app
        .accept(Submission {
            owner: Owner::anonymous(),
            kind: "demo".into(),
            input: json!({}),
            idempotency_key: None,
            correlation_id: CorrelationId::random(),
            trace_header: None,
        })
        .await
        .expect("accepted");

    let nothing = sweep(
        &app,
        LambdaEvent::new(scheduled_event(), Context::default()),
    )
    .await
    .expect("swept");
    assert_eq!(
        nothing,
        SweepSummary {
            failed: 0,
            resent: 0,
            purged: 0,
            errors: 0,
            out_of_time: false
        }
    );

    // Nobody worked the queue: past the deadline the job is failed, never left spinning.
    clock.advance(settings.job_deadline + Duration::from_secs(1));
    let summary = sweep(&app, LambdaEvent::new(json!({}), Context::default()))
        .await
        .expect("swept");
    assert_eq!(summary.failed, 1);
    let job = app
        .status(&Owner::anonymous(), accepted.job.id)
        .await
        .expect("status")
        .job;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(
        job.error.as_ref().and_then(|p| p.slug()),
        Some("deadline-exceeded")
    );
    assert_eq!(
        serde_json::to_value(summary).expect("serializes"),
        json!({"failed": 1, "resent": 0, "purged": 0, "errors": 0, "out_of_time": false})
    );
}
