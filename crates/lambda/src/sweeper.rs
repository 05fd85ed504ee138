//! The `sweeper` function's handler: one [`Ackflow::sweep_until`] per scheduled invocation
//! (EventBridge, every `ACKFLOW_SWEEP_PERIOD_SECS`). The event itself carries nothing the sweep
//! needs, so any JSON is accepted — a manual `cargo lambda invoke` with `{}` works too.

use ackflow_core::error_chain;
use ackflow_core::{Ackflow, PortError, SweepReport};
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::Serialize;
use serde_json::Value;
use tracing::{error, info};

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
