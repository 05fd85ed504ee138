//! The `sweeper` function's handler ([`housekeep`]): the table's housekeeping, on two event
//! sources.
//! - On its schedule (EventBridge, every `ACKFLOW_SWEEP_PERIOD_SECS`): one
//!   [`Ackflow::sweep_until`]. The event carries nothing the sweep needs, so any JSON without
//!   `Records` is accepted — a manual `cargo lambda invoke` with `{}` works too.
//! - On the table's stream (an event with `Records`): the batch folded into the report's
//!   aggregates ([`ReportFold`]), answered with the first record not folded as the batch's
//!   failure, so that the retry starts there.

use ackflow_aws::dynamo::{ChangeBatch, ReportFold};
use ackflow_core::error_chain;
use ackflow_core::{Ackflow, PortError, SweepReport};
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::Serialize;
use serde_json::Value;
use tracing::{error, info};

use crate::Function;

/// What the `sweeper` function answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Housekeeping {
    /// A scheduled sweep's summary.
    Swept(SweepSummary),
    /// A stream batch's partial batch response.
    Folded(StreamBatchResponse),
}

/// The partial batch response of a stream batch (`ReportBatchItemFailures`): at most one
/// failure, the first record not folded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamBatchResponse {
    /// The records to retry from.
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<StreamItemFailure>,
}

/// A record of a stream batch to retry from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamItemFailure {
    /// The record's sequence number.
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

/// The `sweeper` function's handler: a stream batch is folded, any other event sweeps.
pub async fn housekeep(
    function: &Function,
    event: LambdaEvent<Value>,
) -> Result<Housekeeping, SweepError> {
    if event.payload.get("Records").is_none() {
        return sweep(&function.app, event).await.map(Housekeeping::Swept);
    }
    fold(&function.fold, event.payload)
        .await
        .map(Housekeeping::Folded)
}

/// Folds one stream batch and logs what it did.
pub async fn fold(fold: &ReportFold, payload: Value) -> Result<StreamBatchResponse, SweepError> {
    let batch: ChangeBatch = serde_json::from_value(payload).map_err(|e| {
        error!(error = %e, "a stream batch that cannot be read");
        SweepError(PortError::failed("read a stream batch", e))
    })?;
    let failures = match fold.fold(&batch.records).await {
        Ok(folded) => {
            info!(
                records = batch.records.len(),
                transactions = folded.transactions,
                already_folded = folded.already_folded,
                unreadable = folded.unreadable,
                "stream batch folded into the report"
            );
            Vec::new()
        }
        Err(failure) => {
            error!(
                records = batch.records.len(),
                from = %failure.sequence_number,
                error = %error_chain(&failure),
                "stream batch not folded; it is retried from the record named"
            );
            vec![StreamItemFailure {
                item_identifier: failure.sequence_number,
            }]
        }
    };
    Ok(StreamBatchResponse {
        batch_item_failures: failures,
    })
}

/// What one sweep did: the function's result (visible in `cargo lambda invoke` and in the
/// Lambda console) and a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SweepSummary {
    /// Jobs failed because their deadline passed.
    pub failed: u32,
    /// Jobs whose message was sent again.
    pub resent: u32,
    /// Expired terminal jobs deleted (0 on DynamoDB, whose TTL deletes them).
    pub purged: u64,
    /// Jobs the sweep could not act on this time (the store or queue failed for them); they
    /// stay due for the next sweep.
    pub errors: u32,
    /// Whether the sweep stopped early to answer within the invocation's time; what it did not
    /// reach stays due for the next sweep.
    pub out_of_time: bool,
}

impl From<SweepReport> for SweepSummary {
    fn from(r: SweepReport) -> Self {
        Self {
            failed: r.failed,
            resent: r.resent,
            purged: r.purged,
            errors: r.errors,
            out_of_time: r.out_of_time,
        }
    }
}

/// The sweep could not finish: the store's index of due jobs could not be read (one job's
/// failed write does not end a sweep: it is counted in [`SweepSummary::errors`]). The invocation fails (EventBridge
/// retries it, and the next period sweeps anyway); what was done before the error stays done.
#[derive(Debug, thiserror::Error)]
#[error("the sweep could not finish")]
pub struct SweepError(#[source] pub PortError);

impl From<SweepError> for Diagnostic {
    fn from(error: SweepError) -> Self {
        Diagnostic {
            error_type: "ackflow.SweepFailed".to_owned(),
            error_message: error.to_string(),
        }
    }
}

/// Runs one sweep and logs its [`SweepSummary`].
pub async fn sweep(app: &Ackflow, event: LambdaEvent<Value>) -> Result<SweepSummary, SweepError> {
    let scheduled_at = event
        .payload
        .get("time")
        .and_then(Value::as_str)
        .map(str::to_owned);
    // The last third of the invocation's time is kept for the calls still in flight when the
    // sweep stops starting new ones (FunctionKind::sdk_budget fits them in it).
    let stop_starting = crate::deadline::time_left(event.context.deadline, app.clock().now())
        .map(|left| tokio::time::Instant::now() + left * 2 / 3);
    match app.sweep_until(stop_starting).await {
        Ok(report) => {
            let summary = SweepSummary::from(report);
            info!(
                failed = summary.failed,
                resent = summary.resent,
                purged = summary.purged,
                errors = summary.errors,
                out_of_time = summary.out_of_time,
                scheduled_at,
                "sweep done"
            );
            Ok(summary)
        }
        Err(e) => {
            error!(error = %error_chain(&e), scheduled_at, "sweep failed");
            Err(SweepError(e))
        }
    }
}
