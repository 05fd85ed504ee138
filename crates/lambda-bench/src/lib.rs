//! # ackflow-lambda-bench
//!
//! What `infra/scripts/bench-lambda` measures the Lambda functions with: a stub of
//! the [Lambda Runtime API] ([`runtime_api`]) that the `runtime-stub` binary serves on
//! 127.0.0.1 while it execs one function binary, and the measuring helpers it uses
//! ([`process_cpu`], [`percentile`], [`check_response`], and [`tally`], the proxy that counts
//! the AWS calls a function makes and their DynamoDB capacity units). The `hello` binary is the
//! hello-world baseline.
//!
//! A separate crate rather than examples of `ackflow-lambda`: its binaries are built in the
//! same `cargo build --release` as the functions, with the functions' feature set, without
//! pulling `ackflow-lambda`'s dev-dependencies (SQLite, reqwest, ...) into a release build.
//!
//! Figures are recorded (docs/BENCHMARKS.md), never asserted: the tests here check the
//! mechanics only.
//!
//! [Lambda Runtime API]: https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html

pub mod runtime_api;
pub mod tally;

use std::time::Duration;

use serde_json::Value;

/// Why a process's CPU time could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatError {
    /// `/proc/PID/stat` could not be read (the process is gone, or this is not Linux).
    #[error("could not read /proc/{pid}/stat")]
    Read {
        /// The process.
        pid: u32,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file did not have the layout of proc(5).
    #[error("/proc/PID/stat has no {0} field")]
    Layout(&'static str),
}

/// The user + system CPU time, in clock ticks, from the text of `/proc/PID/stat` (proc(5):
/// fields 14 `utime` and 15 `stime`, counting from 1). The command name (field 2) may hold
/// spaces and parentheses, so the fields are counted from its last `)`.
pub fn cpu_ticks_from_stat(stat: &str) -> Result<u64, StatError> {
    let rest = stat
        .rfind(')')
        .map(|at| &stat[at + 1..])
        .ok_or(StatError::Layout("comm"))?;
    // After the command name: field 3 (state) is index 0, so field N is index N - 3.
    let mut fields = rest.split_whitespace();
    let utime = fields
        .nth(14 - 3)
        .and_then(|f| f.parse::<u64>().ok())
        .ok_or(StatError::Layout("utime"))?;
    let stime = fields
        .next()
        .and_then(|f| f.parse::<u64>().ok())
        .ok_or(StatError::Layout("stime"))?;
    Ok(utime + stime)
}

/// The CPU time (user + system, all threads, living and ended) that process `pid` has used so
/// far, with `ticks_per_second` from `getconf CLK_TCK`.
pub fn process_cpu(pid: u32, ticks_per_second: u64) -> Result<Duration, StatError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|source| StatError::Read { pid, source })?;
    let ticks = cpu_ticks_from_stat(&stat)?;
    let per_second = ticks_per_second.max(1);
    Ok(Duration::from_micros(
        ticks.saturating_mul(1_000_000) / per_second,
    ))
}

/// The nearest-rank percentile `p` (0 to 100) of `samples` (in any order); `None` when there
/// are none.
pub fn percentile(samples: &[Duration], p: u32) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    // Nearest rank: the smallest sample with at least p% of the samples at or below it.
    let rank = (u64::from(p.min(100)) * sorted.len() as u64).div_ceil(100);
    let index = usize::try_from(rank.max(1) - 1).unwrap_or(0);
    sorted.get(index.min(sorted.len() - 1)).copied()
}

/// Which function a run drives, which decides the events it is given and how its answers are
/// checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `functions/api`: API Gateway HTTP API (v2) `POST /v1/jobs` events.
    Api,
    /// `functions/status`: `GET /v1/jobs/{id}` events.
    Status,
    /// `functions/worker`: SQS events of one job message each.
    Worker,
    /// `functions/sweeper`: the EventBridge scheduled event.
    Sweeper,
    /// `functions/sweeper` handed the table's stream: batches of job header changes to fold.
    Fold,
    /// The hello-world baseline: any event.
    Hello,
}

impl Target {
    /// The target of a function name (`api`, `status`, `worker`, `sweeper`, `hello`), or `fold`
    /// (the `sweeper` binary on stream batches).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "api" => Some(Self::Api),
            "status" => Some(Self::Status),
            "worker" => Some(Self::Worker),
            "sweeper" => Some(Self::Sweeper),
            "fold" => Some(Self::Fold),
            "hello" => Some(Self::Hello),
            _ => None,
        }
    }
}

/// Whether a function's answer to one event is what that event should get: `202` for a job
/// submitted to `api`, `200` for a job read from `status`, a batch response for `worker` that
/// fails exactly the records in `failed` (message ids), a stream batch folded whole for `fold`,
/// anything for `sweeper` and `hello`.
/// `Err` says what was wrong, for the report.
pub fn check_response(target: Target, answer: &Value, failed: &[&str]) -> Result<(), String> {
    let status = |expected: u64| match answer.get("statusCode").and_then(Value::as_u64) {
        Some(code) if code == expected => Ok(()),
        _ => Err(format!("expected statusCode {expected}, got {answer}")),
    };
    match target {
        Target::Api => status(202),
        Target::Status => status(200),
        Target::Worker => {
            let mut reported: Vec<&str> = answer
                .get("batchItemFailures")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("not a batch response: {answer}"))?
                .iter()
                .map(|f| {
                    f.get("itemIdentifier")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                })
                .collect();
            reported.sort_unstable();
            let mut expected = failed.to_vec();
            expected.sort_unstable();
            if reported == expected {
                Ok(())
            } else {
                Err(format!(
                    "expected batch item failures {expected:?}, got {answer}"
                ))
            }
        }
        Target::Fold if answer == &serde_json::json!({"batchItemFailures": []}) => Ok(()),
        Target::Fold => Err(format!("expected the batch folded whole, got {answer}")),
        Target::Sweeper | Target::Hello => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cpu_ticks_are_utime_plus_stime_even_when_the_command_name_has_spaces_and_parens() {
        // A real line's layout (proc(5)), with utime 1234 and stime 56.
        let stat = "4242 (tokio (rt) 1) S 1 4242 4242 0 -1 4194560 2048 0 0 0 1234 56 0 0 20 0 \
                    3 0 1000 10000000 500 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 \
                    0 0 0 0 0";
        assert_eq!(cpu_ticks_from_stat(stat).expect("parsed"), 1290);
    }

    #[test]
    fn a_stat_line_without_the_cpu_fields_is_refused() {
        assert!(cpu_ticks_from_stat("4242 (x) S 1 2 3").is_err());
        assert!(cpu_ticks_from_stat("no command name").is_err());
    }

    #[test]
    fn this_process_has_used_some_cpu_by_the_time_it_asks() {
        // Burn a little CPU so that at least one tick is accounted.
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let cpu = process_cpu(std::process::id(), 100).expect("readable");
        assert!(cpu > Duration::ZERO);
    }

    #[test]
    fn percentiles_follow_the_nearest_rank_rule() {
        let ms = |v: u64| Duration::from_millis(v);
        let samples = [ms(5), ms(1), ms(4), ms(2), ms(3)];
        assert_eq!(percentile(&samples, 50), Some(ms(3)));
        assert_eq!(percentile(&samples, 90), Some(ms(5)));
        assert_eq!(percentile(&samples, 0), Some(ms(1)));
        assert_eq!(percentile(&samples, 100), Some(ms(5)));
        assert_eq!(percentile(&[ms(1), ms(2)], 50), Some(ms(1)));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn a_worker_answer_must_fail_exactly_the_records_expected() {
        let none = json!({ "batchItemFailures": [] });
        let one = json!({ "batchItemFailures": [{ "itemIdentifier": "m1" }] });
        assert!(check_response(Target::Worker, &none, &[]).is_ok());
        assert!(check_response(Target::Worker, &one, &["m1"]).is_ok());
        assert!(check_response(Target::Worker, &one, &[]).is_err());
        assert!(check_response(Target::Worker, &none, &["m1"]).is_err());
        assert!(check_response(Target::Worker, &json!({}), &[]).is_err());
    }

    #[test]
    fn api_answers_must_carry_the_expected_status_code() {
        assert!(check_response(Target::Api, &json!({ "statusCode": 202 }), &[]).is_ok());
        assert!(check_response(Target::Api, &json!({ "statusCode": 400 }), &[]).is_err());
        assert!(check_response(Target::Status, &json!({ "statusCode": 200 }), &[]).is_ok());
        assert!(check_response(Target::Status, &json!({ "body": "" }), &[]).is_err());
    }

    #[test]
    fn function_names_map_to_targets() {
        assert_eq!(Target::from_name("worker"), Some(Target::Worker));
        assert_eq!(Target::from_name("hello"), Some(Target::Hello));
        assert_eq!(Target::from_name("nope"), None);
    }
}
