//! The `worker` function: the SQS event source mapping (with `ReportBatchItemFailures`) hands
//! it batches of job messages; each record is handled by the core and the failed ones are
//! answered as batch item failures (see `ackflow_lambda::sqs`).

use lambda_runtime::service_fn;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    // Configuration read and clients built once per cold start, outside the handler.
    let function = ackflow_lambda::start(ackflow_lambda::FunctionKind::Worker).await?;
    let app = function.app.as_ref();
    let options = &function.config.batch;
    // Metrics are flushed at the end of each invocation, before Lambda may freeze the sandbox.
    lambda_runtime::run(service_fn(|event| {
        ackflow_lambda::flushing(ackflow_lambda::process_batch(app, event, options))
    }))
    .await
}
