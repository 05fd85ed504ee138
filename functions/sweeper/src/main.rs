//! The `sweeper` function: the table's housekeeping. An EventBridge schedule invokes it every
//! sweep period for one sweep (deadlines, lost messages, expired jobs); the table's stream
//! invokes it with batches of changes, which it folds into the report's aggregates.

use lambda_runtime::service_fn;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    // Configuration read and clients built once per cold start, outside the handler.
    let function = ackflow_lambda::start(ackflow_lambda::FunctionKind::Sweeper).await?;
    let function = &function;
    // Metrics (jobs it fails past their deadline) are flushed at the end of each invocation.
    lambda_runtime::run(service_fn(|event| {
        ackflow_lambda::flushing(ackflow_lambda::housekeep(function, event))
    }))
    .await
}
