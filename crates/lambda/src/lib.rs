//! # ackflow-lambda
//!
//! The glue between AWS Lambda and ackflow's core: every function binary under `functions/` is a
//! screenful that calls into this crate. No behaviour of ackflow is written here — jobs,
//! dispositions, problems and routes are the core's and `ackflow-http`'s, exactly as under
//! `ackflow serve`; this crate only adapts Lambda's events to them.
//!
//! # Layout
//!
//! - [`sqs`]: the SQS batch lifter of the `worker` function — per-record decoding into
//!   [`ackflow_core::Delivery`], bounded concurrency, panics caught per record, the invocation
//!   deadline watched, the partial batch response.
//! - [`owner`]: [`JwtOwners`], the [`ackflow_http::OwnerResolver`] reading the JWT `sub` claim
//!   that API Gateway's authorizer verified.
//! - [`app`]: [`start`], which every function's `main` calls first with its [`FunctionKind`] —
//!   configuration read once, SDK clients built once, the backend of `ackflow-aws`
//!   ([`ackflow_aws::AwsBackend`]), the shipped processors, the use cases.
//! - [`deadline`]: [`answer_before_deadline`], the HTTP functions' own 503 ahead of the
//!   invocation's deadline, so a client never gets API Gateway's bare one.
//! - [`sweeper`]: the `sweeper` function's handler: the sweep on its schedule, the report's
//!   aggregates folded from the table's stream.
//! - [`telemetry`]: JSON logs for CloudWatch, EMF metrics flushed per invocation, the X-Ray
//!   trace header adopted from the invocation.
//! - `test_support` (feature `test-support`, never enabled by a function): the SQS event
//!   records the worker is handed, built for tests, benches and the end-to-end checks.

pub mod app;
pub mod deadline;
pub mod owner;
pub mod sqs;
pub mod sweeper;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use app::{function_from, start, Function, FunctionConfig, FunctionKind, StartupError};
pub use deadline::answer_before_deadline;
pub use owner::JwtOwners;
pub use sqs::{
    delivery_from_record, process_batch, process_record, BatchError, BatchOptions, RecordError,
};
pub use sweeper::{
    fold, housekeep, sweep, Housekeeping, StreamBatchResponse, StreamItemFailure, SweepError,
    SweepSummary,
};
pub use telemetry::{flush_metrics, flushing, init_logs, init_metrics, instrument_router};
