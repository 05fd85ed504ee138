//! The extension point: one [`Processor`] per kind of job, gathered in a [`Registry`].
//!
//! A processor validates input cheaply when the job is accepted, and does the real work in the
//! worker. It ends with a result, a [`Rejection`] (permanent, worded for the person who sent
//! the job) or a transient error (the job is retried with backoff). Panics and timeouts count as
//! transient failures of that job only.
//!
//! ```
//! use ackflow_core::{async_trait, FieldError, JobContext, Kind, ProcessError, Processor, Registry, Rejection};
//! use serde_json::{json, Value};
//!
//! #[derive(Debug)]
//! struct Greet;
//!
//! #[async_trait]
//! impl Processor for Greet {
//!     fn kind(&self) -> Kind {
//!         Kind::parse("greet").expect("a valid kind")
//!     }
//!
//!     fn validate(&self, input: &Value) -> Result<(), Vec<FieldError>> {
//!         match input.get("name").and_then(Value::as_str) {
//!             Some(name) if !name.is_empty() => Ok(()),
//!             _ => Err(vec![FieldError::new("/name", "a non-empty string is required")]),
//!         }
//!     }
//!
//!     async fn process(&self, input: Value, ctx: &JobContext) -> Result<Value, ProcessError> {
//!         let name = input["name"].as_str().unwrap_or_default();
//!         if name == "Voldemort" {
//!             return Err(Rejection::new("unspeakable", "Name refused", "We do not greet that name; pick another.").into());
//!         }
//!         ctx.progress(50, "Composing the greeting").await;
//!         Ok(json!({ "greeting": format!("Hello, {name}!") }))
//!     }
//! }
//!
//! let registry = Registry::new().with(Greet);
//! assert!(registry.get(&Kind::parse("greet").unwrap()).is_some());
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::{FieldError, JobId, Kind, Owner, Problem, Progress, Timestamp};

/// A permanent, user-facing refusal: the job fails now with this problem (status 422).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// A stable slug, such as `out-of-stock`; the problem type becomes `urn:ackflow:problem:{kind}:{slug}`.
    pub slug: String,
    /// A short, fixed title.
    pub title: String,
    /// What happened and what to do, for the person who sent the job.
    pub detail: String,
    /// Fields at fault, with JSON pointers into the input.
    pub errors: Vec<FieldError>,
}

impl Rejection {
    /// A rejection.
    pub fn new(
        slug: impl Into<String>,
        title: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            slug: slug.into(),
            title: title.into(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// Adds fields at fault (pointers into the input; they are reported under `/input`).
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    /// The problem stored on the job.
    pub fn into_problem(self, kind: &Kind) -> Problem {
        let mut problem = Problem::new(
            &format!("{kind}:{}", self.slug),
            422,
            &self.title,
            self.detail,
        );
        problem.errors = self.errors.into_iter().map(|e| e.under("/input")).collect();
        problem
    }
}

/// How a processor's work ended, when it did not end with a result.
#[derive(Debug)]
pub enum ProcessError {
    /// Permanent: the job fails with this problem.
    Rejected(Rejection),
    /// Temporary: the job is tried again, up to the attempt budget. The error is logged with the
    /// job id; people see only that a temporary problem occurred.
    Transient(Box<dyn std::error::Error + Send + Sync>),
}

impl ProcessError {
    /// A transient failure caused by `error`.
    pub fn transient(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Transient(error.into())
    }
}

impl From<Rejection> for ProcessError {
    fn from(r: Rejection) -> Self {
        Self::Rejected(r)
    }
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected(r) => write!(f, "rejected: {}", r.detail),
            Self::Transient(e) => write!(f, "transient: {e}"),
        }
    }
}

/// Where progress reports go. The worker's implementation coalesces them into store writes.
#[async_trait]
pub trait ProgressSink: Send + Sync {
    /// Records the latest progress.
    async fn report(&self, progress: Progress);
    /// Whether this attempt lost the job (it was taken over, failed by the sweeper or cancelled):
    /// its writes will be refused, so the processor may stop early.
    fn abandoned(&self) -> bool;
}

#[derive(Debug)]
struct DiscardProgress;

#[async_trait]
impl ProgressSink for DiscardProgress {
    async fn report(&self, _progress: Progress) {}
    fn abandoned(&self) -> bool {
        false
    }
}

/// What a processor knows about the job it works on.
#[derive(Clone)]
pub struct JobContext {
    /// The job.
    pub id: JobId,
    /// Its owner.
    pub owner: Owner,
    /// This attempt, 1-based.
    pub attempt: u32,
    /// The attempt budget.
    pub max_attempts: u32,
    /// The job must be terminal by then.
    pub deadline: Timestamp,
    sink: Arc<dyn ProgressSink>,
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("attempt", &self.attempt)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl JobContext {
    /// A context whose progress goes to `sink`.
    pub fn new(
        id: JobId,
        owner: Owner,
        attempt: u32,
        max_attempts: u32,
        deadline: Timestamp,
        sink: Arc<dyn ProgressSink>,
    ) -> Self {
        Self {
            id,
            owner,
            attempt,
            max_attempts,
            deadline,
            sink,
        }
    }

    /// A context that discards progress, for testing processors on their own.
    pub fn detached(attempt: u32) -> Self {
        Self::new(
            JobId::random(),
            Owner::anonymous(),
            attempt,
            5,
            Timestamp::from_millis(i64::MAX),
            Arc::new(DiscardProgress),
        )
    }

    /// Reports progress: `percent` (0–100) and a short message for people.
    pub async fn progress(&self, percent: u8, message: impl Into<String>) {
        self.sink.report(Progress::new(percent, message)).await;
    }

    /// Whether this attempt no longer owns the job; see [`ProgressSink::abandoned`].
    pub fn is_abandoned(&self) -> bool {
        self.sink.abandoned()
    }
}

/// Does the work of one kind of job.
#[async_trait]
pub trait Processor: Send + Sync + fmt::Debug + 'static {
    /// The kind this processor handles.
    fn kind(&self) -> Kind;

    /// Cheap checks at accept time. Pointers are relative to the input (`/items/0/sku`);
    /// they are reported under `/input`.
    fn validate(&self, input: &Value) -> Result<(), Vec<FieldError>>;

    /// The work. Must be safe to run more than once for the same job (at-least-once delivery):
    /// side effects keyed by [`JobContext::id`].
    async fn process(&self, input: Value, ctx: &JobContext) -> Result<Value, ProcessError>;
}

/// The processors of a deployment, by kind.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    processors: BTreeMap<Kind, Arc<dyn Processor>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `processor`, replacing one of the same kind.
    pub fn with(mut self, processor: impl Processor) -> Self {
        self.register(Arc::new(processor));
        self
    }

    /// Adds a shared processor, replacing one of the same kind.
    pub fn register(&mut self, processor: Arc<dyn Processor>) {
        self.processors.insert(processor.kind(), processor);
    }

    /// The processor of `kind`.
    pub fn get(&self, kind: &Kind) -> Option<&Arc<dyn Processor>> {
        self.processors.get(kind)
    }

    /// The kinds served, sorted.
    pub fn kinds(&self) -> Vec<String> {
        self.processors.keys().map(ToString::to_string).collect()
    }
}
