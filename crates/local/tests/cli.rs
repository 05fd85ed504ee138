//! The client commands through the real `ackflow` binary against a real `ackflow serve` (port 0,
//! temporary data directory). stderr is a pipe here, not a terminal, so progress comes as plain
//! lines and the output is deterministic enough to check line by line.

// Test code: a failed expectation is a failed test, and its message says which.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::ServerProcess;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// `ackflow ARGS --server BASE`, with nothing from the test's environment.
fn command(base: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ackflow"));
    command
        .args(args)
        .args(["--server", base])
        .env("ACKFLOW_LOG", "warn")
        .env_remove("ACKFLOW_URL")
        .env_remove("ACKFLOW_TOKEN")
        .stdin(Stdio::null());
    command
}

/// Runs `ackflow ARGS --server BASE` to completion.
fn ackflow(base: &str, args: &[&str]) -> Output {
    command(base, args)
        .output()
        .expect("the ackflow binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("utf-8 stderr")
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {o:?}"))
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

#[test]
fn submit_wait_follows_a_demo_job_with_plain_progress_lines_and_ends_with_its_result() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path());

    let out = ackflow(
        &server.base,
        &[
            "submit",
            "--kind",
            "demo",
            "--input",
            r#"{"steps": 4, "step_ms": 50}"#,
            "--wait",
        ],
    );

    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    let mut lines = text.lines();
    let headline = lines.next().expect("a headline");
    let id = headline
        .strip_prefix("job ")
        .and_then(|rest| rest.strip_suffix(" (demo) succeeded after 1 attempt"))
        .unwrap_or_else(|| panic!("headline: {headline}"));
    assert!(is_uuid(id), "{id}");
    let result: Value = serde_json::from_str(&lines.collect::<Vec<_>>().join("\n"))
        .unwrap_or_else(|e| panic!("the result is pretty JSON ({e}): {text}"));
    assert_eq!(result["steps"], 4);

    // One plain line per visible change, no terminal control codes, percent never going back, and
    // the last one is the job at 100 %.
    let progress = stderr(&out);
    assert!(!progress.contains('\u{1b}'), "{progress:?}");
    let percents: Vec<u64> = progress
        .lines()
        .map(|line| {
            let (percent, rest) = line
                .trim_start()
                .split_once("% ")
                .unwrap_or_else(|| panic!("a progress line: {line:?}"));
            assert!(
                ["queued · ", "running · ", "succeeded · "]
                    .iter()
                    .any(|state| rest.starts_with(state)),
                "{line:?}"
            );
            percent.parse().expect("a percent")
        })
        .collect();
    assert!(!percents.is_empty(), "no progress shown");
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "{percents:?}");
    let last = progress.lines().last().expect("a last line");
    assert!(last.starts_with("100% succeeded · "), "{last:?}");
}

/// On a terminal the progress is one bar redrawn in place. `script` (util-linux, essential on
/// Debian) runs the command on a pseudo-terminal, as a person's shell would.
#[test]
fn on_a_terminal_the_progress_is_a_bar_redrawn_in_place() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path());
    let command = format!(
        "'{}' submit --kind demo --input '{{\"steps\": 5, \"step_ms\": 100}}' --wait --server '{}'",
        env!("CARGO_BIN_EXE_ackflow"),
        server.base
    );

    let out = Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env("ACKFLOW_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("util-linux `script` runs (apt-get install bsdutils)");

    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let screen = stdout(&out);
    // Redrawn in place (carriage return, erase line), never one line per change.
    assert!(screen.contains("\r\u{1b}[2K"), "{screen:?}");
    // A bar: `[===>   ]  NN% state · message` (which states it caught depends on timing).
    assert!(
        screen.contains(" [=") && screen.contains("] "),
        "{screen:?}"
    );
    assert!(
        ["% queued · ", "% running · ", "% succeeded · "]
            .iter()
            .any(|tail| screen.contains(tail)),
        "{screen:?}"
    );
    // The bar is cleared before the summary, which stands on its own line.
    assert!(
        screen.contains("\u{1b}[2Kjob ")
            && screen.contains(" (demo) succeeded after 1 attempt\r\n"),
        "{screen:?}"
    );
}

#[test]
fn watch_ends_with_the_problems_detail_and_exit_code_1_when_the_job_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path());
    let accepted = ackflow(
        &server.base,
        &[
            "submit",
            "--kind",
            "demo",
            "--input",
            r#"{"reject": "Blue Mug has 2 left; lower the quantity"}"#,
            "--json",
        ],
    );
    assert_eq!(accepted.status.code(), Some(0), "{accepted:?}");
    let id = json(&accepted)["id"].as_str().expect("an id").to_owned();

    let out = ackflow(&server.base, &["watch", &id]);

    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("job {id} (demo) failed after 1 attempt\n")),
        "{text}"
    );
    assert!(
        text.contains(": Blue Mug has 2 left; lower the quantity\n"),
        "{text}"
    );

    // The same with --json: the failed job on stdout for scripts, the detail on stderr for people.
    let out = ackflow(&server.base, &["watch", &id, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let job = json(&out);
    assert_eq!(job["state"], "failed");
    assert_eq!(
        job["error"]["detail"],
        "Blue Mug has 2 left; lower the quantity"
    );
    assert!(stderr(&out).contains("Blue Mug has 2 left; lower the quantity"));
}

#[test]
fn submit_and_status_with_json_print_the_job_for_scripts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path());

    let accepted = ackflow(
        &server.base,
        &[
            "submit",
            "--kind",
            "demo",
            "--idempotency-key",
            "cli-test-1",
            "--json",
        ],
    );
    assert_eq!(accepted.status.code(), Some(0), "{accepted:?}");
    let job = json(&accepted);
    let id = job["id"].as_str().expect("an id");
    assert_eq!(job["kind"], "demo");

    let waited = ackflow(&server.base, &["status", id, "--wait", "--json"]);
    assert_eq!(waited.status.code(), Some(0), "{waited:?}");
    assert_eq!(json(&waited)["state"], "succeeded");

    let now = ackflow(&server.base, &["status", id]);
    assert_eq!(now.status.code(), Some(0), "{now:?}");
    assert!(
        stdout(&now).starts_with(&format!("job {id} (demo) succeeded after 1 attempt\n")),
        "{now:?}"
    );

    // The same key again is the same job.
    let again = ackflow(
        &server.base,
        &[
            "submit",
            "--kind",
            "demo",
            "--idempotency-key",
            "cli-test-1",
            "--json",
        ],
    );
    assert_eq!(json(&again)["id"], id);
}

#[test]
fn report_prints_a_table_for_people_and_json_for_scripts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path());
    for input in [r#"{"steps": 1}"#, r#"{"reject": "no thanks"}"#] {
        let out = ackflow(
            &server.base,
            &["submit", "--kind", "demo", "--input", input, "--wait"],
        );
        assert!(out.status.code().is_some_and(|c| c <= 1), "{out:?}");
    }

    let out = ackflow(&server.base, &["report"]);

    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let table = stdout(&out);
    assert!(table.starts_with("Jobs in the last "), "{table}");
    let row = |label: &str| -> String {
        table
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no '{label}' row: {table}"))
            .split_whitespace()
            .last()
            .expect("a figure")
            .to_owned()
    };
    assert_eq!(row("succeeded"), "1");
    assert_eq!(row("failed"), "1");
    assert_eq!(row("accepted"), "2");
    assert_eq!(row("jobs measured"), "2");
    assert!(table.contains("\nTOP FAILURES "), "{table}");
    assert!(
        table.contains("urn:ackflow:problem:demo:rejected"),
        "{table}"
    );

    let out = ackflow(&server.base, &["report", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report = json(&out);
    assert_eq!(report["counts"]["succeeded"], 1);
    assert_eq!(report["counts"]["failed"], 1);
}

#[test]
fn an_unknown_or_malformed_job_id_is_exit_code_2_in_words() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path());

    let out = ackflow(
        &server.base,
        &["watch", "0b0f5a4e-3c1d-4e8b-9a57-2f1c3d4e5f60"],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let said = stderr(&out);
    assert!(said.starts_with("ackflow: 404: "), "{said}");
    assert!(!said.contains('{'), "no raw JSON: {said}");

    let out = ackflow(&server.base, &["status", "../v1/report"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("is not a job id"), "{out:?}");
}

/// An API Gateway in front of ackflow answers some errors itself, as `{"message": ...}`.
#[test]
fn a_gateways_own_error_message_is_shown_as_it_is() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
    let base = format!("http://{}", listener.local_addr().expect("an address"));
    let gateway = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("a connection");
        // Read the request head (the report request has no body).
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).expect("the request");
            head.push(byte[0]);
        }
        let body = r#"{"message":"Unauthorized"}"#;
        write!(
            stream,
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("the answer");
        String::from_utf8(head).expect("an ASCII request head")
    });

    let out = ackflow(&base, &["report", "--token", "expired"]);

    let request = gateway.join().expect("the gateway thread");
    assert!(request.starts_with("GET /v1/report "), "{request}");
    assert!(
        request
            .to_ascii_lowercase()
            .contains("authorization: bearer expired\r\n"),
        "{request}"
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(stderr(&out), "ackflow: 401: Unauthorized\n");
}

/// A server that answers every request with `status` and `body` (JSON), whatever was asked.
fn answering(status: &'static str, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
    let base = format!("http://{}", listener.local_addr().expect("an address"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if stream.read_exact(&mut byte).is_err() {
                    break;
                }
                head.push(byte[0]);
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    base
}

/// `ackflow ARGS --server BASE`, which must end within `limit`.
fn ackflow_within(base: &str, args: &[&str], limit: std::time::Duration) -> Output {
    let mut child = command(base, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the ackflow binary runs");
    let until = std::time::Instant::now() + limit;
    while child.try_wait().expect("status").is_none() {
        if std::time::Instant::now() > until {
            child.kill().expect("kill");
            panic!(
                "`ackflow {}` was still running after {limit:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Something that answers 200 with a body that is not a job, or an error that is neither a
/// problem nor a gateway's message, is not taken for ackflow: exit 2, in words, and `watch`
/// does not poll it on and on.
#[test]
fn an_endpoint_that_does_not_answer_like_ackflow_is_exit_code_2() {
    let id = "0b0f5a4e-3c1d-4e8b-9a57-2f1c3d4e5f60";
    let empty = answering("200 OK", "{}");
    let not_found = answering("404 Not Found", r#"{"error":"no such page"}"#);
    for (base, args) in [
        (&empty, vec!["status", id]),
        (&empty, vec!["watch", id]),
        (&empty, vec!["report"]),
        (&not_found, vec!["status", id]),
    ] {
        let out = ackflow_within(base, &args, std::time::Duration::from_secs(20));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(
            stderr(&out).contains(&format!("the server at {base} did not answer like ackflow")),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn a_token_a_header_cannot_carry_is_refused_in_words() {
    let base = answering("200 OK", "{}");
    let out = ackflow(&base, &["report", "--token", "secret\nsecret"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr(&out).contains("an Authorization header cannot carry"),
        "{}",
        stderr(&out)
    );
}
