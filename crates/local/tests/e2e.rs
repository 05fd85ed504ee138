//! End to end through the real `ackflow` binary: start `serve` on port 0 with a temporary data
//! directory, drive it over HTTP, kill it with SIGKILL and start it again.

// Test code: a failed expectation is a failed test, and its message says which.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

mod support;
use support::{is_terminal, ServerProcess};

/// `ackflow serve` with short timings, so that retries and crash recovery take seconds, not
/// minutes.
fn start_server(data_dir: &Path) -> ServerProcess {
    ServerProcess::start_with(
        data_dir,
        &[
            ("ACKFLOW_WORKER_TIMEOUT_SECS", "2"),
            ("ACKFLOW_LEASE_GRACE_MS", "500"),
            ("ACKFLOW_BACKOFF_BASE_MS", "50"),
            ("ACKFLOW_BACKOFF_MAX_SECS", "1"),
        ],
        Stdio::inherit(),
    )
}

async fn submit(
    http: &reqwest::Client,
    base: &str,
    body: Value,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let resp = http
        .post(format!("{base}/v1/jobs"))
        .json(&body)
        .send()
        .await
        .expect("POST answered");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.json().await.expect("a JSON body");
    (status, headers, body)
}

/// Long-polls the job until it is terminal.
async fn until_terminal(http: &reqwest::Client, base: &str, location: &str) -> Value {
    support::long_poll(http, &format!("{base}{location}"), 200, is_terminal)
        .await
        .unwrap_or_else(|job| panic!("{location} did not reach a terminal state: {job}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_and_order_jobs_reach_their_terminal_states_through_the_real_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(dir.path());
    let http = reqwest::Client::new();
    let base = server.base.clone();

    let (status, headers, job) = submit(
        &http,
        &base,
        json!({"kind": "demo", "input": {"steps": 3, "step_ms": 50}}),
    )
    .await;
    assert_eq!(status, 202);
    let location = headers["location"].to_str().expect("ascii").to_owned();
    assert_eq!(
        location,
        format!("/v1/jobs/{}", job["id"].as_str().expect("id"))
    );
    let retry_after: u64 = headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry_after >= 1);
    let done = until_terminal(&http, &base, &location).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["progress"]["percent"], 100);
    assert!(done["result"].is_object(), "{done}");

    // A transient failure on the first two attempts, then success on the third.
    let (_, headers, _) = submit(
        &http,
        &base,
        json!({"kind": "demo", "input": {"fail_attempts": 2}}),
    )
    .await;
    let done = until_terminal(&http, &base, headers["location"].to_str().expect("ascii")).await;
    assert_eq!(
        (done["state"].as_str(), done["attempts"].as_u64()),
        (Some("succeeded"), Some(3)),
        "{done}"
    );

    // The order example: confirmed, then rejected with a message that names the item.
    let cart = json!({"kind": "order", "input": {"customer": "ada", "items": [{"sku": "mug-red", "quantity": 2}]}});
    let (status, headers, _) = submit(&http, &base, cart).await;
    assert_eq!(status, 202);
    let done = until_terminal(&http, &base, headers["location"].to_str().expect("ascii")).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["total_cents"], 2500, "{done}");

    let greedy = json!({"kind": "order", "input": {"customer": "bob", "items": [{"sku": "mug-blue", "quantity": 3}]}});
    let (_, headers, _) = submit(&http, &base, greedy).await;
    let done = until_terminal(&http, &base, headers["location"].to_str().expect("ascii")).await;
    assert_eq!(done["state"], "failed", "{done}");
    let detail = done["error"]["detail"].as_str().expect("a problem detail");
    assert!(detail.contains("Blue Mug"), "{detail}");
    assert_eq!(done["error"]["status"], 422);

    // Bad input changes nothing and gets a problem.
    let resp = http
        .post(format!("{base}/v1/jobs"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_9_and_a_restart_lose_no_accepted_job() {
    const JOBS: usize = 60;
    let dir = tempfile::tempdir().expect("temp dir");
    let http = reqwest::Client::new();

    let server = start_server(dir.path());
    let mut locations = Vec::new();
    for i in 0..JOBS {
        let input = json!({"steps": 2, "step_ms": 20 + (i % 5) * 10});
        let (status, headers, _) =
            submit(&http, &server.base, json!({"kind": "demo", "input": input})).await;
        assert_eq!(status, 202);
        locations.push(headers["location"].to_str().expect("ascii").to_owned());
    }
    // Kill while jobs are queued and running: wait until at least one has finished, so the kill
    // lands in the middle of the work rather than before it.
    let first = until_terminal(&http, &server.base, &locations[0]).await;
    assert_eq!(first["state"], "succeeded");
    server.kill_hard();

    let server = start_server(dir.path());
    let (mut succeeded, mut interrupted) = (0, 0);
    for location in &locations {
        let job = until_terminal(&http, &server.base, location).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert!(job["result"].is_object(), "{job}");
        succeeded += 1;
        interrupted += usize::from(job["attempts"].as_u64() > Some(1));
    }
    assert_eq!(succeeded, JOBS);
    eprintln!("kill -9: {JOBS} accepted, {succeeded} succeeded after the restart, {interrupted} were interrupted mid-attempt");
    let listed: Value = http
        .get(format!("{}/v1/jobs?limit=100", server.base))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(
        listed["jobs"].as_array().map(Vec::len),
        Some(JOBS),
        "no job is missing and none was duplicated"
    );
}

/// A mistake in the configuration stops `serve` before it says where it listens, so a script that
/// waits for that line never talks to a server that is about to exit.
#[test]
fn a_bad_configuration_is_refused_before_the_server_announces_itself() {
    let data = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_ackflow"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("ACKFLOW_TOKENS", "short=alice")
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("listening"), "announced: {stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ACKFLOW_TOKENS"), "unexplained: {stderr}");
}
