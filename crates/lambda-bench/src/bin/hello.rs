//! The baseline of `infra/scripts/bench-lambda`: a hello-world `lambda_runtime` function (echoes
//! its event), built in this workspace with the same release profile and dependency versions
//! as the ackflow functions, so that their init time can be put against it.

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<Value, lambda_runtime::Error>(event.payload)
    }))
    .await
}
