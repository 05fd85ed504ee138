//! How `ackflow serve` stops, through the real binary: on SIGTERM it stops accepting, gives
//! requests in flight a drain period (the long-poll cap + 5 s), then closes what is left and
//! exits 0, even when a client holds half a request; a connection that has not sent a whole
//! head holds nothing up; a second signal stops it at once.

// Test code: a failed expectation is a failed test, and its message says which.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::ServerProcess;

fn signal(server: &ServerProcess, name: &str) {
    let sent = Command::new("kill")
        .args([format!("-{name}"), server.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
}

/// A connection that sent half a request head and then nothing.
fn half_head(server: &ServerProcess) -> TcpStream {
    let mut stream = connect(server);
    stream
        .write_all(b"GET /v1/jobs HTTP/1.1\r\nHost: ackflow\r\nAccept: ")
        .expect("half a head");
    stream
}

/// A request in flight: its head sent whole, its body (1,000 bytes announced) only begun.
fn half_body(server: &ServerProcess) -> TcpStream {
    let mut stream = connect(server);
    stream
        .write_all(
            b"POST /v1/jobs HTTP/1.1\r\nHost: ackflow\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n{\"kind\":\"demo\",",
        )
        .expect("half a request");
    stream
}

fn connect(server: &ServerProcess) -> TcpStream {
    TcpStream::connect(server.base.trim_start_matches("http://")).expect("connect")
}

/// The server's exit, or `None` when it is still running after `limit`.
fn exit_within(server: &mut ServerProcess, limit: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = server.child.try_wait().expect("status") {
            return Some(status);
        }
        if Instant::now() > until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) until `log` holds `text`.
fn logged_within(log: &Path, text: &str, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if std::fs::read_to_string(log).is_ok_and(|l| l.contains(text)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn start(dir: &Path, log: &Path, long_poll_cap: &str) -> ServerProcess {
    ServerProcess::start_with(
        dir,
        &[
            ("ACKFLOW_LONG_POLL_CAP_SECS", long_poll_cap),
            ("ACKFLOW_LOG", "info"),
            ("ACKFLOW_LOG_FORMAT", "json"),
        ],
        Stdio::from(std::fs::File::create(log).expect("log")),
    )
}

#[test]
fn a_request_in_flight_keeps_a_stopping_server_no_longer_than_the_drain_period() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("serve.log");
    // Drain period: 1 s + 5 s.
    let mut server = start(&dir.path().join("data"), &log, "1");
    let _quiet = half_head(&server);
    let _in_flight = half_body(&server);
    let asked = Instant::now();
    signal(&server, "TERM");
    let status = exit_within(&mut server, Duration::from_secs(30));
    let took = asked.elapsed();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{logged}");
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(20),
        "took {took:?}: {logged}"
    );
    assert!(
        logged.contains(r#""drain_secs":6"#)
            && logged.contains("still open after the drain period are closed"),
        "the drain period and the closing are logged: {logged}"
    );
}

#[test]
fn a_half_sent_head_does_not_hold_a_stop() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("serve.log");
    let mut server = start(&dir.path().join("data"), &log, "300");
    let _quiet = half_head(&server);
    signal(&server, "TERM");
    let status = exit_within(&mut server, Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn a_second_signal_stops_a_draining_server_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("serve.log");
    // Drain period: 300 s + 5 s, far longer than the test waits.
    let mut server = start(&dir.path().join("data"), &log, "300");
    let _in_flight = half_body(&server);
    signal(&server, "TERM");
    assert!(
        logged_within(&log, "stopping", Duration::from_secs(10)),
        "the first signal starts the drain"
    );
    assert!(exit_within(&mut server, Duration::from_millis(300)).is_none());
    signal(&server, "TERM");
    let status = exit_within(&mut server, Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(130),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
