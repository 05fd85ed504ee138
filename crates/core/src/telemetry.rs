//! What ackflow tells operators about jobs, the same on every runtime: one INFO log line and one
//! metric per job event (accepted, succeeded, failed, cancelled, retried, redriven,
//! dead-lettered), and the trace header that links the API's trace to the worker's.
//!
//! # Decisions
//!
//! - **Events come from the transitions themselves.** [`transition`] is called for every job
//!   write that the store accepted, with the job before and after, so every path that ends a
//!   job (worker, sweeper, cancel, a failed enqueue, a redrive) is counted once — exactly like
//!   the report's aggregates ([`crate::report::Deltas::between`]), which therefore show the same
//!   figures on the single machine as the metrics on AWS.
//! - **Metrics go through the [`metrics`] facade**: without an installed recorder (the single
//!   machine, tests) they cost next to nothing and go nowhere; on Lambda, `ackflow-lambda`
//!   installs a CloudWatch EMF recorder. Names are in [`metric`].
//! - **Low cardinality**: the only dimension is the job's `kind` (a handful, fixed by the
//!   deployment's processors). Failure reasons are in the log line (`problem`) and in the
//!   report's top failures, not in metric dimensions.
//! - **No input or result bodies in logs**: lines carry ids, kind, states, counts and times.

use std::fmt;

use tracing::info;

use crate::{Delivery, Job, JobId, JobState};

/// Metric names (counters count jobs; the histogram is in milliseconds).
pub mod metric {
    /// Jobs accepted (new jobs, not idempotent replays). Dimension `kind`.
    pub const JOBS_ACCEPTED: &str = "jobs_accepted";
    /// Jobs that ended `succeeded`. Dimension `kind`.
    pub const JOBS_SUCCEEDED: &str = "jobs_succeeded";
    /// Jobs that ended `failed` (rejected, attempts spent, deadline, poison…). Dimension `kind`.
    pub const JOBS_FAILED: &str = "jobs_failed";
    /// Jobs that ended `cancelled`. Dimension `kind`.
    pub const JOBS_CANCELLED: &str = "jobs_cancelled";
    /// Attempts that failed transiently and were released for another. Dimension `kind`.
    pub const JOBS_RETRIED: &str = "jobs_retried";
    /// Failed jobs reopened (a redrive, or a resubmission after a failed enqueue). Dimension `kind`.
    pub const JOBS_REDRIVEN: &str = "jobs_redriven";
    /// Unreadable messages set aside for the dead-letter queue by the worker. No dimension: the
    /// kind of an unreadable message is unknown. (Messages that SQS's redrive policy moves are
    /// not seen by ackflow: the queue's own DLQ depth metric and alarm cover them.)
    pub const JOBS_DEAD_LETTERED: &str = "jobs_dead_lettered";
    /// Accept→terminal time of jobs that ended, in milliseconds. Dimension `kind`.
    pub const ACCEPT_TO_TERMINAL_MS: &str = "accept_to_terminal_ms";
    /// The one dimension.
    pub const KIND: &str = "kind";
}

/// Registers the unit and description of every metric with the installed recorder (call once
/// after installing it: exporters such as CloudWatch EMF take the unit from here).
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(metric::JOBS_ACCEPTED, Unit::Count, "Jobs accepted");
    describe_counter!(metric::JOBS_SUCCEEDED, Unit::Count, "Jobs that succeeded");
    describe_counter!(metric::JOBS_FAILED, Unit::Count, "Jobs that failed");
    describe_counter!(metric::JOBS_CANCELLED, Unit::Count, "Jobs cancelled");
    describe_counter!(metric::JOBS_RETRIED, Unit::Count, "Attempts retried");
    describe_counter!(metric::JOBS_REDRIVEN, Unit::Count, "Failed jobs reopened");
    describe_counter!(
        metric::JOBS_DEAD_LETTERED,
        Unit::Count,
        "Unreadable messages dead-lettered"
    );
    describe_histogram!(
        metric::ACCEPT_TO_TERMINAL_MS,
        Unit::Milliseconds,
        "Accept to terminal time"
    );
}

/// A new job was recorded (its message is sent next).
pub(crate) fn accepted(job: &Job) {
    info!(
        job_id = %job.id,
        correlation_id = %job.correlation_id,
        kind = %job.kind,
        "job accepted"
    );
    count(metric::JOBS_ACCEPTED, job);
}

/// The store accepted the write from `before` to `after`: logs and counts what it means.
pub(crate) fn transition(before: &Job, after: &Job) {
    if before.state == after.state {
        return;
    }
    let (job_id, correlation_id, kind) = (&after.id, &after.correlation_id, &after.kind);
    if after.state.is_terminal() && !before.state.is_terminal() {
        let elapsed = after.updated_at.since(after.submitted_at);
        let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let problem = after.error.as_ref().map(|p| p.type_.as_str());
        let (name, message) = match after.state {
            JobState::Succeeded => (metric::JOBS_SUCCEEDED, "job succeeded"),
            JobState::Cancelled => (metric::JOBS_CANCELLED, "job cancelled"),
            _ => (metric::JOBS_FAILED, "job failed"),
        };
        info!(
            %job_id, %correlation_id, %kind,
            state = %after.state,
            attempts = after.attempts,
            accept_to_terminal_ms = ms,
            problem,
            "{message}"
        );
        count(name, after);
        metrics::histogram!(metric::ACCEPT_TO_TERMINAL_MS, metric::KIND => kind.to_string())
            .record(elapsed.as_secs_f64() * 1000.0);
    } else if before.state == JobState::Running && after.state == JobState::Queued {
        info!(
            %job_id, %correlation_id, %kind,
            attempt = before.attempts,
            max_attempts = after.max_attempts,
            "job retried"
        );
        count(metric::JOBS_RETRIED, after);
    } else if before.state == JobState::Failed && after.state == JobState::Queued {
        info!(
            %job_id, %correlation_id, %kind,
            generation = after.generation,
            "job redriven"
        );
        count(metric::JOBS_REDRIVEN, after);
    }
}

/// The worker set an unreadable message aside for the dead-letter queue.
pub(crate) fn dead_lettered(delivery: &Delivery, job: Option<JobId>) {
    info!(
        message_id = %delivery.message_id,
        job_id = job.map(tracing::field::display),
        correlation_id = delivery.attributes.get(crate::job::attributes::CORRELATION_ID),
        receive_count = delivery.receive_count,
        "message dead-lettered"
    );
    metrics::counter!(metric::JOBS_DEAD_LETTERED).increment(1);
}

fn count(name: &'static str, job: &Job) {
    metrics::counter!(name, metric::KIND => job.kind.to_string()).increment(1);
}

/// An X-Ray trace header (`Root=1-…;Parent=…;Sampled=…`), as API Gateway and Lambda hand it over
/// and as SQS carries it in a message's `AWSTraceHeader` system attribute, which links the
/// worker's trace to the API's.
///
/// Parsing is strict because the value goes into `SendMessage`: a header SQS would refuse must
/// never turn an accept into a 503, so anything doubtful is dropped instead.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TraceHeader(String);

/// Why a text is not a trace header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an X-Ray trace header (Root=1-xxxxxxxx-xxxxxxxxxxxxxxxxxxxxxxxx;...)")]
pub struct InvalidTraceHeader;

impl TraceHeader {
    /// The longest header accepted.
    pub const MAX_LEN: usize = 256;

    /// Parses a header: at most [`Self::MAX_LEN`] characters of `;`-separated `key=value`
    /// fields (keys letters and digits; values letters, digits, `-`, `_`, `.`, `:`), one of
    /// them a well-formed `Root`.
    pub fn parse(value: impl Into<String>) -> Result<Self, InvalidTraceHeader> {
        let value = value.into();
        let value_char = |c: char| c.is_ascii_alphanumeric() || "-_.:".contains(c);
        let mut has_root = false;
        if value.is_empty() || value.len() > Self::MAX_LEN {
            return Err(InvalidTraceHeader);
        }
        for field in value.split(';') {
            let (key, val) = field.split_once('=').ok_or(InvalidTraceHeader)?;
            if key.is_empty()
                || !key.chars().all(|c| c.is_ascii_alphanumeric())
                || val.is_empty()
                || !val.chars().all(value_char)
            {
                return Err(InvalidTraceHeader);
            }
            if key == "Root" {
                has_root = is_root(val);
                if !has_root {
                    return Err(InvalidTraceHeader);
                }
            }
        }
        if has_root {
            Ok(Self(value))
        } else {
            Err(InvalidTraceHeader)
        }
    }

    /// The header as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `1-` + 8 hex digits (epoch seconds) + `-` + 24 hex digits.
fn is_root(value: &str) -> bool {
    let mut parts = value.split('-');
    let hex = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("1"), Some(time), Some(id), None) if hex(time, 8) && hex(id, 24)
    )
}

impl fmt::Display for TraceHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for TraceHeader {
    type Err = InvalidTraceHeader;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Delivery {
    /// The trace header the message carried ([`crate::job::attributes::TRACE_HEADER`]), if any
    /// and well-formed.
    pub fn trace_header(&self) -> Option<TraceHeader> {
        self.attributes
            .get(crate::job::attributes::TRACE_HEADER)
            .and_then(|t| TraceHeader::parse(t.as_str()).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_and_api_gateway_trace_headers_are_accepted() {
        for good in [
            "Root=1-6745f1a0-0123456789abcdef01234567",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            "Root=1-64a15448-4aa914a00d66aa066325d7e3;Parent=60a7d0c22fb2f001;Sampled=0;Lineage=16f3a795:0",
            "Self=1-67891234-12456789abcdef012345678;Root=1-67891233-abcdef012345678912345678",
        ] {
            let header = TraceHeader::parse(good).expect(good);
            assert_eq!(header.as_str(), good);
        }
    }

    #[test]
    fn anything_sqs_could_refuse_is_not_a_trace_header() {
        for bad in [
            "",
            "Root=",
            "Parent=53995c3f42cd8ad8;Sampled=1",
            "Root=1-5759e988-bd862e3fe1be46a99427279",
            "Root=2-5759e988-bd862e3fe1be46a994272793",
            "Root=1-5759e98g-bd862e3fe1be46a994272793",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=a b",
            "Root=1-5759e988-bd862e3fe1be46a994272793;;Sampled=1",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1\n",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Ünï=1",
            &format!(
                "Root=1-5759e988-bd862e3fe1be46a994272793;Lineage={}",
                "a".repeat(300)
            ),
        ] {
            assert_eq!(TraceHeader::parse(bad), Err(InvalidTraceHeader), "{bad:?}");
        }
    }
}
