//! What the tests of the `ackflow` binary share: a real `ackflow serve` on a free port, and the
//! long-poll that waits for a job there.

#![allow(dead_code, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// A running `ackflow serve`, killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub base: String,
}

impl ServerProcess {
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[], Stdio::inherit())
    }

    /// Starts `ackflow serve` on `data_dir` with extra environment variables (they win over the
    /// defaults set here, so a test can choose short timings or a quieter log) and the server's
    /// stderr sent to `stderr` (a log file keeps a noisy test's output readable). Returns once
    /// the server has said where it listens.
    pub fn start_with(data_dir: &Path, env: &[(&str, &str)], stderr: Stdio) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ackflow"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("ACKFLOW_LOG", "warn")
            .env_remove("ACKFLOW_TOKENS")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("the ackflow binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut first = String::new();
        BufReader::new(stdout)
            .read_line(&mut first)
            .expect("the server prints where it listens");
        let base = first
            .trim()
            .strip_prefix("ackflow listening on ")
            .unwrap_or_else(|| panic!("a 'listening on' line, not {first:?}"))
            .to_owned();
        Self { child, base }
    }

    /// SIGKILL: no shutdown code runs (no flush, no graceful stop); returns once the process is
    /// reaped, so its files are free and its port is closed.
    pub fn kill_hard(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reaped");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a job view (JSON) is in a terminal state.
pub fn is_terminal(job: &Value) -> bool {
    matches!(
        job["state"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

/// Long-polls the job at `url` until `done` holds for it, and returns it; no sleeps: each
/// request names the version it has seen (If-None-Match) and the server holds it until the job
/// changes. After `answers` answers without `done`, returns the last job seen as the error.
pub async fn long_poll(
    http: &reqwest::Client,
    url: &str,
    answers: usize,
    done: impl Fn(&Value) -> bool,
) -> Result<Value, Value> {
    let mut etag = String::from("\"none\"");
    let mut job = Value::Null;
    for _ in 0..answers {
        let resp = http
            .get(format!("{url}?wait=5"))
            .header("if-none-match", &etag)
            .send()
            .await
            .expect("GET answered");
        if resp.status() == 304 {
            continue;
        }
        assert_eq!(resp.status(), 200, "GET {url}");
        etag = resp.headers()["etag"].to_str().expect("ascii").to_owned();
        job = resp.json().await.expect("a job");
        if done(&job) {
            return Ok(job);
        }
    }
    Err(job)
}
