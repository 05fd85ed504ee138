//! The wire types of the API: what the server writes and what clients (the CLI, the page) read.
//!
//! Each derives `Serialize`, `Deserialize` and [`utoipa::ToSchema`], so the OpenAPI document is
//! generated from the same definitions the server answers with. Core types that appear on the
//! wire ([`JobState`], [`Problem`], [`Timestamp`]) keep their core serialization; the `*Schema`
//! types here only describe them to OpenAPI, because the core depends on no HTTP crate.
//!
//! Shape conventions: timestamps are RFC 3339 text in UTC; optional fields of a job are always
//! present (`null` when not applicable), except `result`, `error`, `estimated_completion` and
//! `links.cancel`, which are left out when absent (listings never carry results: read the job).

use std::collections::BTreeMap;

use ackflow_core::report::Report;
use ackflow_core::{
    CorrelationId, HistoryEntry, Job, JobId, JobState, JobStatus, Kind, Problem, QueueDepth,
    Timestamp,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// The body of `POST /v1/jobs`.
///
/// Only `kind` and `input` are allowed at the top level; `input` must be a JSON object and may be
/// left out, which means `{}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = JobSubmission)]
pub struct Submit {
    /// Which kind of job, such as `order` or `demo`.
    #[schema(example = "demo")]
    pub kind: String,
    /// The job's input; its shape depends on the kind. Left out means `{}`.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub input: Value,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// A job as its owner sees it (`GET /v1/jobs/{id}` and the answers of `POST` and `DELETE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = Job)]
pub struct JobView {
    /// The job's id (a random UUID).
    #[schema(value_type = String, format = "uuid")]
    pub id: JobId,
    /// Its kind.
    #[schema(value_type = String, example = "demo")]
    pub kind: Kind,
    /// Where it is in its life.
    #[schema(value_type = JobStateSchema)]
    pub state: JobState,
    /// When it was accepted.
    #[schema(value_type = String, format = DateTime)]
    pub submitted_at: Timestamp,
    /// When it last changed.
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    /// When its latest attempt started.
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub started_at: Option<Timestamp>,
    /// When it reached a terminal state.
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub finished_at: Option<Timestamp>,
    /// Attempts started in this generation.
    pub attempts: u32,
    /// Attempts allowed per generation.
    pub max_attempts: u32,
    /// 0 at first; a redrive of a failed job starts the next generation with a fresh budget.
    pub generation: u32,
    /// The job is terminal by this time (plus one sweep period), whatever fails.
    #[schema(value_type = String, format = DateTime)]
    pub deadline: Timestamp,
    /// How far it has come.
    pub progress: ProgressView,
    /// The result, when the job succeeded (never in listings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub result: Option<Value>,
    /// Why it failed, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ProblemSchema>)]
    pub error: Option<Problem>,
    /// When it is expected to end, from recent processing times; left out when terminal or unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub estimated_completion: Option<Timestamp>,
    /// The correlation id of the request that created it (for support requests).
    #[schema(value_type = String)]
    pub correlation_id: CorrelationId,
    /// What happened, oldest first (the first entry and the most recent ones are kept).
    pub history: Vec<HistoryView>,
    /// Where to go from here.
    pub links: Links,
}

impl JobView {
    /// The view of a job header, without result or estimate (listings, cancel, accept).
    pub fn of_job(job: &Job) -> Self {
        let path = job_path(job.id);
        Self {
            id: job.id,
            kind: job.kind.clone(),
            state: job.state,
            submitted_at: job.submitted_at,
            updated_at: job.updated_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            generation: job.generation,
            deadline: job.deadline,
            progress: ProgressView {
                percent: job.progress.percent,
                message: job.progress.message.clone(),
            },
            result: None,
            error: job.error.clone(),
            estimated_completion: None,
            correlation_id: job.correlation_id.clone(),
            history: job.history.iter().map(HistoryView::from).collect(),
            links: Links {
                cancel: (job.state == JobState::Queued).then(|| path.clone()),
                self_: path,
            },
        }
    }

    /// The view of a status read: the header plus result and estimate.
    pub fn of_status(status: &JobStatus) -> Self {
        Self {
            result: status.result.clone(),
            estimated_completion: status.estimated_completion,
            ..Self::of_job(&status.job)
        }
    }
}

/// The path of a job's resource.
pub fn job_path(id: JobId) -> String {
    id.path()
}

/// How far a job has come, as its processor reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Progress)]
pub struct ProgressView {
    /// 0 to 100.
    #[schema(minimum = 0, maximum = 100)]
    pub percent: u8,
    /// A short message for people, such as "Reserving stock".
    pub message: String,
}

/// One line of a job's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = HistoryEntry)]
pub struct HistoryView {
    /// When it happened.
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// The state entered.
    #[schema(value_type = JobStateSchema)]
    pub state: JobState,
    /// What happened, in words for people.
    pub note: String,
}

impl From<&HistoryEntry> for HistoryView {
    fn from(h: &HistoryEntry) -> Self {
        Self {
            at: h.at,
            state: h.state,
            note: h.note.clone(),
        }
    }
}

/// Links of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = JobLinks)]
pub struct Links {
    /// The job itself.
    #[serde(rename = "self")]
    pub self_: String,
    /// `DELETE` this to cancel the job; present only while it is queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<String>,
}

/// A page of `GET /v1/jobs`: the caller's jobs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// The jobs (without results; read a job for its result).
    pub jobs: Vec<JobView>,
    /// Pass this as `cursor` to read the next page; `null` on the last page.
    #[schema(required = true)]
    pub next: Option<String>,
}

/// `GET /v1/report`: figures for the caller's jobs, from maintained aggregates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Report)]
pub struct ReportView {
    /// The window of the counters, in seconds.
    pub window_secs: u64,
    /// Jobs now queued and running; jobs that ended in the window, by terminal state.
    pub counts: StateCounts,
    /// Jobs accepted in the window.
    pub accepted: u64,
    /// Transient failures retried in the window.
    pub retried: u64,
    /// Accept→terminal latency of the jobs that ended in the window; `null` without any.
    #[schema(required = true)]
    pub latency: Option<LatencyView>,
    /// The oldest job that has not ended; `null` when none is open.
    #[schema(required = true)]
    pub oldest_open: Option<OldestOpenView>,
    /// The most frequent failure types in the window, most frequent first (at most 5).
    pub top_failures: Vec<FailureCountView>,
    /// Queue and dead-letter depth; `null` when the queue could not tell.
    #[schema(required = true)]
    pub queue: Option<QueueDepthView>,
}

/// Jobs per state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct StateCounts {
    /// Waiting for a worker now.
    #[schema(required = true)]
    pub queued: u64,
    /// Being worked on now.
    pub running: u64,
    /// Succeeded in the window.
    pub succeeded: u64,
    /// Failed in the window.
    pub failed: u64,
    /// Cancelled in the window.
    pub cancelled: u64,
}

impl StateCounts {
    fn of(counts: &BTreeMap<JobState, u64>) -> Self {
        let n = |s: JobState| counts.get(&s).copied().unwrap_or(0);
        Self {
            queued: n(JobState::Queued),
            running: n(JobState::Running),
            succeeded: n(JobState::Succeeded),
            failed: n(JobState::Failed),
            cancelled: n(JobState::Cancelled),
        }
    }
}

/// Accept→terminal latency (histogram bucket bounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Latency)]
pub struct LatencyView {
    /// Jobs that ended in the window.
    pub samples: u64,
    /// Median, in milliseconds.
    pub p50_ms: u64,
    /// 95th percentile, in milliseconds.
    pub p95_ms: u64,
}

/// The oldest job that has not ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = OldestOpen)]
pub struct OldestOpenView {
    /// Its id.
    #[schema(value_type = String, format = "uuid")]
    pub id: JobId,
    /// Its state.
    #[schema(value_type = JobStateSchema)]
    pub state: JobState,
    /// When it was accepted.
    #[schema(value_type = String, format = DateTime)]
    pub submitted_at: Timestamp,
    /// How long ago, in seconds.
    pub age_secs: u64,
}

/// How often a problem type ended jobs in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = FailureCount)]
pub struct FailureCountView {
    /// The problem type.
    #[serde(rename = "type")]
    pub type_: String,
    /// How many jobs failed with it.
    pub count: u64,
}

/// Approximate message counts of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = QueueDepth)]
pub struct QueueDepthView {
    /// Waiting to be received (including delayed ones).
    pub waiting: u64,
    /// Received and not yet finished.
    pub in_flight: u64,
    /// In the dead-letter queue.
    pub dead: u64,
}

impl From<QueueDepth> for QueueDepthView {
    fn from(d: QueueDepth) -> Self {
        Self {
            waiting: d.waiting,
            in_flight: d.in_flight,
            dead: d.dead,
        }
    }
}

impl From<Report> for ReportView {
    fn from(r: Report) -> Self {
        Self {
            window_secs: r.window_secs,
            counts: StateCounts::of(&r.counts),
            accepted: r.accepted,
            retried: r.retried,
            latency: r.latency.map(|l| LatencyView {
                samples: l.samples,
                p50_ms: l.p50_ms,
                p95_ms: l.p95_ms,
            }),
            oldest_open: r.oldest_open.map(|o| OldestOpenView {
                id: o.id,
                state: o.state,
                submitted_at: o.submitted_at,
                age_secs: o.age_secs,
            }),
            top_failures: r
                .top_failures
                .into_iter()
                .map(|f| FailureCountView {
                    type_: f.type_,
                    count: f.count,
                })
                .collect(),
            queue: r.queue.map(QueueDepthView::from),
        }
    }
}

// ---- Schemas of core types (OpenAPI only) -------------------------------------------------------

/// Where a job is in its life: `queued → running → succeeded | failed`, `queued → cancelled`,
/// and `failed → queued` on a redrive. `succeeded`, `failed` and `cancelled` are terminal.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = JobState)]
pub enum JobStateSchema {
    /// Accepted and waiting for a worker (or for its next attempt).
    Queued,
    /// An attempt is working on it.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Finished with a problem (see `error`).
    Failed,
    /// Cancelled by its owner while queued.
    Cancelled,
}

/// An RFC 9457 problem details object: the body of every 4xx and 5xx answer of ackflow
/// (`application/problem+json`), and the `error` of a failed job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemSchema {
    /// A stable identifier of the problem kind, such as `urn:ackflow:problem:invalid-input`.
    #[serde(rename = "type")]
    pub type_: String,
    /// A short, fixed summary of the problem kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened and what you can do about it.
    pub detail: String,
    /// The resource the problem is about, where that helps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Validation errors, each located by a JSON pointer into the request body.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldErrorSchema>,
    /// On a `503` to a submission only: the job that was recorded, or may have been, though it
    /// is not known to be queued. Look at it (the answer's `Location`) before submitting the
    /// work again without an Idempotency-Key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = "uuid")]
    pub job_id: Option<String>,
}

/// One invalid part of a request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = FieldError)]
pub struct FieldErrorSchema {
    /// A JSON pointer (RFC 6901) into the request body, such as `/input/items/0/quantity`.
    pub pointer: String,
    /// What is wrong there and how to fix it.
    pub detail: String,
}
