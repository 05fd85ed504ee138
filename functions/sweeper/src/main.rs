//! The `sweeper` function: an EventBridge schedule invokes it every sweep period; each
//! invocation runs one sweep (deadlines, lost messages, expired jobs). Any event is accepted.

use lambda_runtime::service_fn;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    // Configuration read and clients built once per cold start, outside the handler.
    let function = ackflow_lambda::start(ackflow_lambda::FunctionKind::Sweeper).await?;
    let app = function.app.as_ref();
    // Metrics (jobs it fails past their deadline) are flushed at the end of each invocation.
    lambda_runtime::run(service_fn(|event| {
        ackflow_lambda::flushing(ackflow_lambda::sweep(app, event))
    }))
    .await
}
