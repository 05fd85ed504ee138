//! How the CLI shows jobs and the report to a person: a live progress bar on a terminal, one
//! plain line per change otherwise (logs, pipes, tests), a closing summary, and the report as a
//! table. Scripts pass `--json` and read stdout instead.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::time::Duration;

use ackflow_core::{Clock as _, SystemClock, Timestamp};
use ackflow_http::view::ReportView;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

/// Live progress of one job on stderr.
#[derive(Debug)]
pub enum Progress {
    /// stderr is a terminal: a bar redrawn in place.
    Bar(ProgressBar),
    /// stderr is not a terminal: one line per visible change, nothing redrawn.
    Lines {
        /// The last line written, so that a change nobody can see (a new ETag with the same
        /// state, percent and message) writes nothing.
        last: Option<String>,
    },
}

impl Progress {
    /// A bar when stderr is a terminal, plain lines otherwise.
    pub fn on_stderr() -> Self {
        if !std::io::stderr().is_terminal() {
            return Self::Lines { last: None };
        }
        let bar = ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::stderr());
        // The template is a constant: it only fails to parse if it is edited wrongly, and then
        // the default style is still a working bar.
        if let Ok(style) = ProgressStyle::with_template("{spinner} [{bar:30}] {pos:>3}% {wide_msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        // The spinner keeps moving while a long-poll waits, so a quiet job does not look hung.
        bar.enable_steady_tick(Duration::from_millis(120));
        Self::Bar(bar)
    }

    /// Shows `job` as it is now (called after every answer, changed or not, so that a job that
    /// outlives its estimate says so even while nothing else changes).
    pub fn update(&mut self, job: &Value) {
        let percent = percent(job);
        let mut message = format!("{} · {}", state(job), progress_message(job));
        if overdue(job, SystemClock.now()) {
            message.push_str(" (taking longer than estimated)");
        }
        match self {
            Self::Bar(bar) => {
                bar.set_position(percent);
                bar.set_message(message);
            }
            Self::Lines { last } => {
                let line = format!("{percent:>3}% {message}");
                if last.as_deref() != Some(line.as_str()) {
                    eprintln!("{line}");
                    *last = Some(line);
                }
            }
        }
    }

    /// Removes the bar (the summary that follows says how it ended).
    pub fn finish(self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Whether a job that has not ended is past its `estimated_completion`: instead of a bar that
/// seems stuck, the person is told the estimate was too short.
fn overdue(job: &Value, now: Timestamp) -> bool {
    if matches!(state(job), "succeeded" | "failed" | "cancelled") {
        return false;
    }
    job.get("estimated_completion")
        .and_then(|v| serde_json::from_value::<Timestamp>(v.clone()).ok())
        .is_some_and(|estimate| estimate < now)
}

fn state(job: &Value) -> &str {
    job.get("state")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
}

fn percent(job: &Value) -> u64 {
    job.pointer("/progress/percent")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .min(100)
}

fn progress_message(job: &Value) -> &str {
    job.pointer("/progress/message")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// What a person reads when a job has been followed to its end (or looked at once): a headline,
/// then the result (pretty JSON) when it succeeded, or the problem's detail when it failed.
pub fn summary(job: &Value) -> String {
    let id = job.get("id").and_then(Value::as_str).unwrap_or("?");
    let kind = job.get("kind").and_then(Value::as_str).unwrap_or("?");
    let attempts = job.get("attempts").and_then(Value::as_u64).unwrap_or(0);
    let mut out = format!("job {id} ({kind}) {}", state(job));
    match state(job) {
        "succeeded" => {
            let _ = writeln!(out, " after {}", plural(attempts, "attempt"));
            if let Some(result) = job.get("result") {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(result).unwrap_or_default()
                );
            }
        }
        "failed" => {
            let _ = writeln!(out, " after {}", plural(attempts, "attempt"));
            let title = job.pointer("/error/title").and_then(Value::as_str);
            let detail = job.pointer("/error/detail").and_then(Value::as_str);
            match (title, detail) {
                (Some(t), Some(d)) => {
                    let _ = writeln!(out, "{t}: {d}");
                }
                (t, d) => {
                    let _ = writeln!(out, "{}", d.or(t).unwrap_or("no reason was given"));
                }
            }
            if let Some(problem_type) = job.pointer("/error/type").and_then(Value::as_str) {
                let _ = writeln!(out, "({problem_type})");
            }
        }
        "cancelled" => out.push('\n'),
        _ => {
            let _ = writeln!(out, ": {}% {}", percent(job), progress_message(job));
        }
    }
    out
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The report as a table of two columns, figures right-aligned.
pub fn report_table(report: &ReportView) -> String {
    let mut rows: Vec<(String, String)> = vec![
        ("queued now".into(), report.counts.queued.to_string()),
        ("running now".into(), report.counts.running.to_string()),
        ("succeeded".into(), report.counts.succeeded.to_string()),
        ("failed".into(), report.counts.failed.to_string()),
        ("cancelled".into(), report.counts.cancelled.to_string()),
        ("accepted".into(), report.accepted.to_string()),
        ("retried".into(), report.retried.to_string()),
    ];
    match &report.latency {
        Some(l) => {
            rows.push(("p50 accept → end".into(), millis(l.p50_ms)));
            rows.push(("p95 accept → end".into(), millis(l.p95_ms)));
            rows.push(("jobs measured".into(), l.samples.to_string()));
        }
        None => rows.push(("accept → end".into(), "no job ended".into())),
    }
    match &report.oldest_open {
        Some(o) => rows.push((
            "oldest open job".into(),
            format!("{} ({}, {})", o.id, o.state, seconds(o.age_secs)),
        )),
        None => rows.push(("oldest open job".into(), "none".into())),
    }
    match &report.queue {
        Some(q) => {
            rows.push(("queue waiting".into(), q.waiting.to_string()));
            rows.push(("queue in flight".into(), q.in_flight.to_string()));
            rows.push(("dead letters".into(), q.dead.to_string()));
        }
        None => rows.push(("queue".into(), "depth unknown".into())),
    }

    let mut out = format!("Jobs in the last {}\n\n", seconds(report.window_secs));
    table(&mut out, ("", ""), &rows);
    out.push('\n');
    if report.top_failures.is_empty() {
        out.push_str("No job failed.\n");
    } else {
        let failures: Vec<(String, String)> = report
            .top_failures
            .iter()
            .map(|f| (f.type_.clone(), f.count.to_string()))
            .collect();
        table(&mut out, ("TOP FAILURES", "JOBS"), &failures);
    }
    out
}

/// Rows of a left column and a right-aligned right column, under an optional header.
fn table(out: &mut String, header: (&str, &str), rows: &[(String, String)]) {
    let chars = |s: &str| s.chars().count();
    let left = rows
        .iter()
        .map(|(l, _)| chars(l))
        .chain([chars(header.0)])
        .max()
        .unwrap_or(0);
    let right = rows
        .iter()
        .map(|(_, r)| chars(r))
        .chain([chars(header.1)])
        .max()
        .unwrap_or(0);
    if !header.0.is_empty() || !header.1.is_empty() {
        let _ = writeln!(out, "{:<left$}  {:>right$}", header.0, header.1);
    }
    for (l, r) in rows {
        let _ = writeln!(out, "{l:<left$}  {r:>right$}");
    }
}

fn millis(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1_000.0)
    } else {
        seconds(ms / 1_000)
    }
}

fn seconds(s: u64) -> String {
    match s {
        0..=119 => format!("{s} s"),
        120..=7_199 => format!("{} min", s / 60),
        7_200..=172_799 => format!("{} h", s / 3_600),
        _ => format!("{} days", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_read_in_the_unit_a_person_would_use() {
        assert_eq!(millis(850), "850 ms");
        assert_eq!(millis(1_250), "1.2 s");
        assert_eq!(millis(90_000), "90 s");
        assert_eq!(seconds(86_400), "24 h");
        assert_eq!(seconds(7 * 86_400), "7 days");
    }

    #[test]
    fn a_job_past_its_estimate_is_overdue_until_it_ends() {
        let now = Timestamp::parse_rfc3339("2026-11-27T10:00:00Z").expect("a time");
        let job =
            |state: &str, estimate: &str| json!({"state": state, "estimated_completion": estimate});
        assert!(overdue(&job("running", "2026-11-27T09:59:59Z"), now));
        assert!(!overdue(&job("running", "2026-11-27T10:00:01Z"), now));
        assert!(!overdue(&job("succeeded", "2026-11-27T09:00:00Z"), now));
        assert!(!overdue(&json!({"state": "queued"}), now));
    }

    #[test]
    fn a_failed_job_is_summarised_by_its_problem() {
        let job = json!({
            "id": "0b0f5a4e-3c1d-4e8b-9a57-2f1c3d4e5f60", "kind": "order", "state": "failed",
            "attempts": 1,
            "error": {"type": "urn:ackflow:problem:order:out-of-stock", "title": "Out of stock",
                      "status": 422, "detail": "Blue Mug has 2 left; lower the quantity."}
        });
        assert_eq!(
            summary(&job),
            "job 0b0f5a4e-3c1d-4e8b-9a57-2f1c3d4e5f60 (order) failed after 1 attempt\n\
             Out of stock: Blue Mug has 2 left; lower the quantity.\n\
             (urn:ackflow:problem:order:out-of-stock)\n"
        );
    }

    #[test]
    fn the_report_table_aligns_its_figures() {
        let report: ReportView = serde_json::from_value(json!({
            "window_secs": 86400,
            "counts": {"queued": 1, "running": 0, "succeeded": 12, "failed": 3, "cancelled": 0},
            "accepted": 16, "retried": 2,
            "latency": {"samples": 15, "p50_ms": 120, "p95_ms": 2500},
            "oldest_open": null,
            "top_failures": [{"type": "urn:ackflow:problem:demo:rejected", "count": 3}],
            "queue": {"waiting": 1, "in_flight": 0, "dead": 0}
        }))
        .expect("a report");
        let table = report_table(&report);
        assert!(table.starts_with("Jobs in the last 24 h\n\n"), "{table}");
        assert!(table.contains("\nsucceeded             12\n"), "{table}");
        assert!(table.contains("\np95 accept → end   2.5 s\n"), "{table}");
        assert!(
            table.contains("\nurn:ackflow:problem:demo:rejected     3\n"),
            "{table}"
        );
    }
}
