//! The connections of `ackflow serve`, through the real binary under a small limit of open
//! files (`prlimit`): clients that send half a request head and go quiet are closed after the
//! header timeout, connections beyond the cap are answered 503 at once, and a client already
//! connected goes on being served meanwhile.

// Test code: a failed expectation is a failed test, and its message says which.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `ackflow serve` with at most `files` open files; its address and the process.
fn serve_with_open_files(files: u32, dir: &std::path::Path) -> Option<(String, Child)> {
    let probe = Command::new("prlimit").arg("--version").output();
    if probe.is_err() {
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return None;
    }
    let mut child = Command::new("prlimit")
        .arg(format!("--nofile={files}:{files}"))
        .arg(env!("CARGO_BIN_EXE_ackflow"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("ACKFLOW_LOG", "warn")
        .env_remove("ACKFLOW_TOKENS")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("prlimit starts");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("a line");
    let address = first
        .trim()
        .strip_prefix("ackflow listening on http://")
        .unwrap_or_else(|| panic!("not a listening line: {first:?}"))
        .to_owned();
    Some((address, child))
}

fn connect(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
}

/// One `GET /v1/report` on `stream`, kept alive; the status line of the answer.
fn report_on(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /v1/report HTTP/1.1\r\nHost: ackflow\r\n\r\n")
        .expect("request");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header");
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().expect("length");
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    status.trim().to_owned()
}

/// What the server answers a connection that sends nothing: the start of its answer, or "" when
/// it closes without one, within `limit`.
fn answer_to_silence(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    }
}

#[test]
fn quiet_clients_are_closed_and_connections_beyond_the_cap_refused_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    // 160 files: the cap is 160 - 64 = 96 connections.
    let Some((address, mut server)) = serve_with_open_files(160, &dir.path().join("data")) else {
        return;
    };
    let mut kept = connect(&address);
    assert_eq!(report_on(&mut kept), "HTTP/1.1 200 OK");

    // Slowloris: half a head each, then nothing.
    let mut quiet = Vec::new();
    for _ in 0..95 {
        let mut s = connect(&address);
        s.write_all(b"GET /v1/report HTTP/1.1\r\nHo")
            .expect("half a head");
        quiet.push(s);
    }
    // The cap is reached: the next connection is answered 503 at once.
    let mut beyond = connect(&address);
    let started = Instant::now();
    let refused = answer_to_silence(&mut beyond, Duration::from_secs(5)).expect("an answer");
    assert!(
        refused.starts_with("HTTP/1.1 503"),
        "beyond the cap: {refused:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "promptly");
    // The client already connected is still served.
    assert_eq!(report_on(&mut kept), "HTTP/1.1 200 OK");

    // The quiet ones are closed after the header timeout (10 s), and then there is room again.
    let until = Instant::now() + Duration::from_secs(30);
    for s in &mut quiet {
        let left = until.saturating_duration_since(Instant::now());
        assert!(
            answer_to_silence(s, left.max(Duration::from_millis(1))).is_some(),
            "a quiet connection was not closed in time"
        );
    }
    let mut fresh = connect(&address);
    assert_eq!(report_on(&mut fresh), "HTTP/1.1 200 OK");
    server.kill().expect("kill");
    server.wait().expect("reaped");
}
