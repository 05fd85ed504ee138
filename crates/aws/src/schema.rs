//! Creates the table and the queue pair, for tests and scripts. `template.yaml` declares the same
//! resources for a deployment; both follow the constants of [`crate::dynamo`] and of this module.
//!
//! - Table: key `PK`/`SK` (S), on-demand billing, the three global secondary indexes of
//!   [`crate::dynamo`] (projection `ALL`), TTL on `ttl`, and a stream of new and old images
//!   (what [`crate::dynamo::ReportFold`] folds into the report).
//! - Queues: `{name}-dlq` (messages kept [`DLQ_RETENTION_SECS`], the maximum: no consumer
//!   deletes them, operators do), then `{name}` with its visibility timeout and
//!   `RedrivePolicy {deadLetterTargetArn, maxReceiveCount}`, where `maxReceiveCount` is
//!   [`ackflow_core::Settings::max_receive_count`]: the store's attempt budget plus
//!   [`ackflow_core::Settings::RECEIVE_SLACK`].

use std::time::Duration;

use ackflow_core::PortError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, IndexStatus, KeySchemaElement, KeyType,
    Projection, ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::dynamo::{
    LIST_INDEX, LIST_PK, LIST_SK, OPEN_INDEX, OPEN_PK, OPEN_SK, PK, SK, SWEEP_INDEX, SWEEP_PK,
    SWEEP_SK, TTL,
};
use crate::error::{build_failed, classify, unexpected};

/// The dead-letter queue's name is the queue's plus this.
pub const DLQ_SUFFIX: &str = "-dlq";
/// How long the dead-letter queue keeps messages: 14 days, SQS's maximum.
pub const DLQ_RETENTION_SECS: u32 = 1_209_600;
/// How long [`create_table`] waits for a new table to become active.
const TABLE_WAIT: Duration = Duration::from_secs(300);

/// Creates `table` (on-demand billing) with its key, its global secondary indexes, its stream
/// and TTL, and
/// waits until it is active. A table of that name that exists already is kept (and its TTL
/// enabled if it is not), so scripts may run this again.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), PortError> {
    const WHAT: &str = "create the table";
    let attribute = |name: &str, kind: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .map_err(|e| build_failed(WHAT, e))
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(|e| build_failed(WHAT, e))
    };
    let index = |name: &str, pk: &str, sk: &str| -> Result<GlobalSecondaryIndex, PortError> {
        GlobalSecondaryIndex::builder()
            .index_name(name)
            .key_schema(key(pk, KeyType::Hash)?)
            .key_schema(key(sk, KeyType::Range)?)
            // ALL: only job headers carry the index keys, and listings return whole headers.
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )
            .build()
            .map_err(|e| build_failed(WHAT, e))
    };
    use ScalarAttributeType::{N, S};
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(PK, KeyType::Hash)?)
        .key_schema(key(SK, KeyType::Range)?)
        .attribute_definitions(attribute(PK, S)?)
        .attribute_definitions(attribute(SK, S)?)
        .attribute_definitions(attribute(LIST_PK, S)?)
        .attribute_definitions(attribute(LIST_SK, S)?)
        .attribute_definitions(attribute(SWEEP_PK, S)?)
        .attribute_definitions(attribute(SWEEP_SK, N)?)
        .attribute_definitions(attribute(OPEN_PK, S)?)
        .attribute_definitions(attribute(OPEN_SK, S)?)
        .global_secondary_indexes(index(LIST_INDEX, LIST_PK, LIST_SK)?)
        .global_secondary_indexes(index(SWEEP_INDEX, SWEEP_PK, SWEEP_SK)?)
        .global_secondary_indexes(index(OPEN_INDEX, OPEN_PK, OPEN_SK)?)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .map_err(|e| build_failed(WHAT, e))?,
        )
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|se| se.is_resource_in_use_exception()) => {}
        Err(e) => return Err(classify(WHAT, e)),
    }
    wait_until_active(client, table).await?;

    // TTL can only be switched on for an active table, and switching it on twice is an error.
    let ttl = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| classify(WHAT, e))?;
    let status = ttl
        .time_to_live_description
        .and_then(|d| d.time_to_live_status);
    if !matches!(
        status,
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
    ) {
        client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(TTL)
                    .enabled(true)
                    .build()
                    .map_err(|e| build_failed(WHAT, e))?,
            )
            .send()
            .await
            .map_err(|e| classify(WHAT, e))?;
    }
    Ok(())
}

async fn wait_until_active(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<(), PortError> {
    const WHAT: &str = "wait for the table";
    let give_up = tokio::time::Instant::now() + TABLE_WAIT;
    loop {
        let out = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| classify(WHAT, e))?;
        let active = out.table.is_some_and(|t| {
            t.table_status == Some(TableStatus::Active)
                && t.global_secondary_indexes().iter().all(|i| {
                    i.index_status.is_none() || i.index_status == Some(IndexStatus::Active)
                })
        });
        if active {
            return Ok(());
        }
        if tokio::time::Instant::now() >= give_up {
            return Err(PortError::unavailable(
                WHAT,
                unexpected(
                    WHAT,
                    format!("table {table} is not active after {TABLE_WAIT:?}"),
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Creates the dead-letter queue `{name}-dlq`, then the queue `name` whose redrive policy moves
/// a message there on the receive after the `max_receive_count`-th, with the given visibility
/// timeout. Returns the URLs of the queue and of its dead-letter queue. Creating queues that
/// exist with the same attributes is not an error (SQS's rule).
pub async fn create_queues(
    client: &aws_sdk_sqs::Client,
    name: &str,
    max_receive_count: u32,
    visibility_timeout_secs: u32,
) -> Result<(String, String), PortError> {
    const WHAT: &str = "create the queues";
    // SQS queue names: 1 to 80 letters, digits, '-' or '_'; the suffix must still fit.
    let valid = !name.is_empty()
        && name.len() + DLQ_SUFFIX.len() <= 80
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(unexpected(
            WHAT,
            format!("invalid queue name {name:?}: 1 to 76 letters, digits, '-' or '_'"),
        ));
    }
    if max_receive_count == 0 || max_receive_count > 1000 {
        return Err(unexpected(WHAT, "max_receive_count must be 1 to 1000"));
    }
    let dlq_url = client
        .create_queue()
        .queue_name(format!("{name}{DLQ_SUFFIX}"))
        .attributes(
            QueueAttributeName::MessageRetentionPeriod,
            DLQ_RETENTION_SECS.to_string(),
        )
        .send()
        .await
        .map_err(|e| classify(WHAT, e))?
        .queue_url
        .ok_or_else(|| unexpected(WHAT, "SQS created the dead-letter queue without a URL"))?;
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| classify(WHAT, e))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| unexpected(WHAT, "SQS did not tell the dead-letter queue's ARN"))?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": max_receive_count.to_string(),
    });
    let queue_url = client
        .create_queue()
        .queue_name(name)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility_timeout_secs.to_string(),
        )
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await
        .map_err(|e| classify(WHAT, e))?
        .queue_url
        .ok_or_else(|| unexpected(WHAT, "SQS created the queue without a URL"))?;
    Ok((queue_url, dlq_url))
}
