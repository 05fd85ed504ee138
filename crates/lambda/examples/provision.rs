//! Creates the queue, its dead-letter queue and the table a deployment of ackflow needs, with
//! the same schema `template.yaml` declares (`ackflow_aws::schema`), on whatever endpoint the
//! SDK is pointed at (`AWS_ENDPOINT_URL`: moto server in `infra/scripts/e2e-lambda`). No AWS CLI
//! needed.
//!
//! ```sh
//! cargo run -p ackflow-lambda --example provision -- NAME
//! ```
//!
//! The queue's visibility timeout and `maxReceiveCount` follow the knobs in the environment
//! (`ACKFLOW_VISIBILITY_TIMEOUT_SECS`, `ACKFLOW_MAX_ATTEMPTS` + slack). Prints the variables
//! the functions read, one `NAME=value` a line, ready for `export`.

use ackflow_aws::schema::{create_queues, create_table};
use ackflow_aws::{env, Clients};
use ackflow_core::Settings;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let name = std::env::args()
        .nth(1)
        .ok_or("usage: provision NAME (queue NAME, dead-letter queue NAME-dlq, table NAME)")?;
    let settings = Settings::from_lookup(Settings::default(), |n| std::env::var(n).ok())?;
    let visibility = u32::try_from(settings.visibility_timeout.as_secs())?;
    let clients = Clients::from_env().await;
    let (queue_url, dlq_url) = create_queues(
        &clients.sqs,
        &name,
        settings.max_receive_count(),
        visibility,
    )
    .await
    .map_err(|e| ackflow_core::error_chain(&e))?;
    create_table(&clients.dynamo, &name)
        .await
        .map_err(|e| ackflow_core::error_chain(&e))?;
    println!("{}={queue_url}", env::QUEUE_URL);
    println!("{}={dlq_url}", env::DLQ_URL);
    println!("{}={name}", env::TABLE);
    Ok(())
}
