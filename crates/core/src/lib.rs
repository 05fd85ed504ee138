//! # ackflow-core
//!
//! The heart of ackflow, the asynchronous request-reply toolkit: *acknowledge now, finish later*.
//! It knows jobs, their states and transitions, problems, processors and the use cases — and
//! nothing of HTTP frameworks, AWS or SQLite, which live behind the two ports.
//!
//! # Layout
//!
//! - [`canonical`]: canonical JSON and the body hash an Idempotency-Key is compared by.
//! - [`diagnostics`]: an error chain or a panic's message on one line, for the logs.
//! - [`ids`]: newtypes that only hold valid values ([`JobId`], [`Kind`], [`Owner`], [`IdempotencyKey`]).
//! - [`clock`]: millisecond [`Timestamp`]s and the [`Clock`] every time-dependent rule reads.
//! - [`job`]: the [`Job`] header and its state machine ([`Job::apply`]), the queue [`Envelope`].
//! - [`problem`]: RFC 9457 [`Problem`]s, every wording of ackflow's own in one place.
//! - [`processor`]: the [`Processor`] trait — the extension point — and the [`Registry`].
//! - [`ports`]: the [`JobStore`] and [`Queue`] traits the runtimes implement, and the
//!   [`Outbox`] of a runtime whose store and queue share transactions.
//! - [`report`]: the aggregates maintained on transitions and the [`Report`] built from them.
//! - [`service`]: the use cases on [`Ackflow`], one module each: accept, handle a delivery and
//!   settle it, status and long-poll, cancel, list, report, sweep, and the dead-letter cases.
//! - [`settings`]: the knobs, with the same meaning on every runtime.
//! - [`telemetry`]: the log line and metric of every job event, and the X-Ray [`TraceHeader`].

pub mod canonical;
pub mod clock;
pub mod diagnostics;
pub mod ids;
pub mod job;
pub mod ports;
pub mod problem;
pub mod processor;
pub mod report;
pub mod service;
pub mod settings;
pub mod telemetry;

pub use async_trait::async_trait;
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use diagnostics::{error_chain, panic_message};
pub use ids::{CorrelationId, IdempotencyKey, InvalidId, JobId, Kind, Owner};
pub use job::{
    Change, Envelope, HistoryEntry, IllegalTransition, Job, JobState, NewJob, Progress,
    SCHEMA_VERSION,
};
pub use ports::{
    Created, Cursor, DeadLetter, Delivery, Figures, IdempotencyRecord, JobPart, JobStore,
    ListQuery, Outbox, OutgoingMessage, Page, PortError, Queue, QueueDepth, QueueStep, Receipt,
    Received, StartPlan, Started, WriteError,
};
pub use problem::{FieldError, Problem};
pub use processor::{JobContext, ProcessError, Processor, ProgressSink, Registry, Rejection};
pub use report::{Deltas, Report};
pub use service::dlq::{DeadLetterView, RedriveAction, RedriveReport, Redriven};
pub use service::{
    AcceptError, Accepted, Ackflow, Deleter, Disposition, JobError, JobStatus, Recorded, Settled,
    Submission, SweepReport,
};
pub use settings::{Settings, SettingsError};
pub use telemetry::{InvalidTraceHeader, TraceHeader};
