//! The single machine logs the same job events as the Lambda functions: the real `ackflow serve`
//! with `ACKFLOW_LOG_FORMAT=json` writes an INFO line per event (accepted, succeeded, failed,
//! retried) with the job id, the request's correlation id, the kind and the accept→terminal
//! time; the worker's lines carry the trace header the request came with; and the report shows
//! the same figures as the lines.

// Test code: a failed expectation is a failed test, and its message says which.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::ServerProcess;

use std::path::Path;
use std::process::Stdio;

use serde_json::{json, Value};

const TRACE: &str = "Root=1-6745f1a0-0123456789abcdef01234567;Sampled=1";

/// `ackflow serve` on `data_dir` logging JSON at INFO to the file `log`, with short backoffs so
/// that the retried job ends quickly.
fn start(data_dir: &Path, log: &Path) -> ServerProcess {
    let env = [
        ("ACKFLOW_BACKOFF_BASE_MS", "50"),
        ("ACKFLOW_BACKOFF_MAX_SECS", "1"),
        ("ACKFLOW_LOG", "info"),
        ("ACKFLOW_LOG_FORMAT", "json"),
    ];
    let log = std::fs::File::create(log).expect("log file");
    ServerProcess::start_with(data_dir, &env, Stdio::from(log))
}

async fn submit(http: &reqwest::Client, base: &str, correlation_id: &str, body: Value) -> Value {
    let resp = http
        .post(format!("{base}/v1/jobs"))
        .header("x-correlation-id", correlation_id)
        .header("x-amzn-trace-id", TRACE)
        .json(&body)
        .send()
        .await
        .expect("POST answered");
    assert_eq!(resp.status(), 202);
    resp.json().await.expect("a job")
}

/// Long-polls the job until it has succeeded or failed.
async fn until_terminal(http: &reqwest::Client, base: &str, id: &str) -> Value {
    let ended = |job: &Value| matches!(job["state"].as_str(), Some("succeeded" | "failed"));
    support::long_poll(http, &format!("{base}/v1/jobs/{id}"), 200, ended)
        .await
        .unwrap_or_else(|_| panic!("job {id} did not end"))
}

/// The INFO line `message` about job `id`.
fn event<'a>(lines: &'a [Value], message: &str, id: &Value) -> &'a Value {
    lines
        .iter()
        .find(|l| l["fields"]["message"] == message && l["fields"]["job_id"] == *id)
        .unwrap_or_else(|| panic!("no {message:?} line for {id}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_single_machine_logs_each_job_event_with_its_ids_and_the_report_agrees() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("ackflow.log");
    let server = start(&dir.path().join("data"), &log);
    let http = reqwest::Client::new();
    let base = server.base.clone();

    let ok = submit(
        &http,
        &base,
        "local-ok",
        json!({"kind": "demo", "input": {"fail_attempts": 1}}),
    )
    .await;
    let rejected = submit(
        &http,
        &base,
        "local-rejected",
        json!({"kind": "demo", "input": {"reject": "not today"}}),
    )
    .await;
    let ok_id = ok["id"].as_str().expect("id");
    let rejected_id = rejected["id"].as_str().expect("id");
    assert_eq!(
        until_terminal(&http, &base, ok_id).await["state"],
        "succeeded"
    );
    assert_eq!(
        until_terminal(&http, &base, rejected_id).await["state"],
        "failed"
    );
    let report: Value = http
        .get(format!("{base}/v1/report"))
        .send()
        .await
        .expect("report answered")
        .json()
        .await
        .expect("a report");
    drop(server);

    let text = std::fs::read_to_string(&log).expect("the log");
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let ok_events: Vec<&str> = lines
        .iter()
        .filter(|l| l["fields"]["job_id"] == ok["id"])
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    assert!(ok_events.contains(&"job retried"), "{ok_events:?}");

    for (job, correlation_id, outcome) in [
        (&ok, "local-ok", "job succeeded"),
        (&rejected, "local-rejected", "job failed"),
    ] {
        let accepted = event(&lines, "job accepted", &job["id"]);
        assert_eq!(accepted["level"], "INFO");
        assert_eq!(accepted["fields"]["correlation_id"], correlation_id);
        assert_eq!(accepted["fields"]["kind"], "demo");

        let ended = event(&lines, outcome, &job["id"]);
        assert_eq!(ended["level"], "INFO");
        assert_eq!(ended["fields"]["correlation_id"], correlation_id);
        assert_eq!(ended["fields"]["kind"], "demo");
        assert!(ended["fields"]["accept_to_terminal_ms"].is_u64(), "{ended}");
        assert_eq!(ended["span"]["name"], "job", "{ended}");
        assert_eq!(ended["span"]["trace_header"], TRACE, "{ended}");
    }
    let retried = event(&lines, "job retried", &ok["id"]);
    assert_eq!(retried["fields"]["correlation_id"], "local-ok");
    assert_eq!(retried["fields"]["attempt"], 1);

    // The report, computed from the store, counts what the lines say.
    assert_eq!(report["accepted"], 2, "{report}");
    assert_eq!(report["retried"], 1, "{report}");
    assert_eq!(report["counts"]["succeeded"], 1, "{report}");
    assert_eq!(report["counts"]["failed"], 1, "{report}");
}
