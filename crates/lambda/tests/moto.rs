//! The function wiring on the real AWS adapters, against moto server (`ACKFLOW_MOTO_URL`;
//! ignored without it, `infra/scripts/test-all` runs it): a [`Function`] built from its
//! configuration serves the API fixture events, its worker lifter works a batch received from
//! SQS, and the order book, seeded on first use, takes an order.

// The harness's helpers are test code too; clippy's test exemption only sees `#[test]` functions.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ackflow_aws::schema::{create_queues, create_table};
use ackflow_aws::{https_client, Clients};
use ackflow_lambda::test_support::{sqs_event, SqsRecord, QUEUE_ARN};
use ackflow_lambda::{
    function_from, housekeep, process_batch, BatchOptions, Function, FunctionConfig, Housekeeping,
};
use ackflow_testkit::stream::StreamTail;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::config::Credentials;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use http_body_util::BodyExt as _;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};
use tower::ServiceExt as _;

async fn moto() -> Clients {
    assert!(
        std::env::var("ACKFLOW_MOTO_URL").is_ok(),
        "ACKFLOW_MOTO_URL is not set: run infra/scripts/test-all, or \
         export ACKFLOW_MOTO_URL=$(infra/scripts/moto start)",
    );
    let url = moto_url();
    // Explicit, never from the process environment that tests share.
    let config = aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .endpoint_url(url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .load()
        .await;
    Clients::from_sdk_config(&config)
}

/// A function over a fresh queue pair and table with unique names.
fn moto_url() -> String {
    std::env::var("ACKFLOW_MOTO_URL").expect("ACKFLOW_MOTO_URL")
}

async fn function(clients: &Clients) -> (Function, String) {
    let name = format!("lambda-{}", uuid_like());
    let (queue_url, dlq_url) = create_queues(&clients.sqs, &name, 6, 1)
        .await
        .expect("queues");
    create_table(&clients.dynamo, &name).await.expect("table");
    let vars: HashMap<&str, String> = HashMap::from([
        (ackflow_aws::env::QUEUE_URL, queue_url.clone()),
        (ackflow_aws::env::DLQ_URL, dlq_url),
        (ackflow_aws::env::TABLE, name),
        (ackflow_lambda::app::env::DEMO, "true".to_owned()),
        (ackflow_lambda::owner::ALLOW_ANONYMOUS, "true".to_owned()),
        (
            ackflow_core::settings::env::WORKER_TIMEOUT_SECS,
            "5".to_owned(),
        ),
        (
            ackflow_core::settings::env::VISIBILITY_TIMEOUT_SECS,
            "5".to_owned(),
        ),
    ]);
    let config = FunctionConfig::from_lookup(|n| vars.get(n).cloned()).expect("config");
    let function = function_from(config, clients).await.expect("built");
    (function, queue_url)
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/../../infra/events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON")
}

async fn call(function: &Function, event: &Value) -> (u16, Value) {
    let request = lambda_http::request::from_str(&event.to_string()).expect("v2 event");
    let response = ackflow_http::router(function.api_state())
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Receives what the queue holds as the SQS event the mapping would build.
async fn receive_event(clients: &Clients, queue_url: &str, want: usize) -> Value {
    let give_up = Instant::now() + Duration::from_secs(10);
    let mut records = Vec::new();
    while records.len() < want {
        assert!(Instant::now() < give_up, "only {} messages", records.len());
        let received = clients
            .sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .expect("receive");
        records.extend(
            received
                .messages()
                .iter()
                .map(|m| SqsRecord::from_message(m, QUEUE_ARN)),
        );
    }
    sqs_event(records)
}

/// The worker's batch lifter on the `count` messages the queue holds: every record handled.
async fn work(function: &Function, clients: &Clients, queue_url: &str, count: usize) {
    let event = receive_event(clients, queue_url, count).await;
    let response = process_batch(
        &function.app,
        LambdaEvent::new(event, Context::default()),
        &BatchOptions::default(),
    )
    .await
    .expect("batch");
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
}

#[tokio::test]
#[ignore = "needs moto server: run infra/scripts/test-all"]
async fn a_function_built_from_its_configuration_serves_the_api_and_works_its_queue() {
    let clients = moto().await;
    let (function, queue_url) = function(&clients).await;

    let (status, demo) = call(&function, &fixture("apigw-v2-post-job.json")).await;
    assert_eq!(status, 202, "{demo}");
    let mut order_event = fixture("apigw-v2-post-job.json");
    order_event["body"] = json!(json!({
        "kind": "order",
        "input": {"customer": "alice@example.com", "items": [{"sku": "mug-red", "quantity": 2}]}
    })
    .to_string());
    order_event["headers"]
        .as_object_mut()
        .unwrap()
        .remove("idempotency-key");
    order_event["headers"]
        .as_object_mut()
        .unwrap()
        .remove("content-length");
    let (status, order) = call(&function, &order_event).await;
    assert_eq!(status, 202, "{order}");

    work(&function, &clients, &queue_url, 2).await;

    for job in [&demo, &order] {
        let mut get = fixture("apigw-v2-get-job.json");
        let id = job["id"].as_str().unwrap();
        let path = format!("/v1/jobs/{id}");
        get["rawPath"] = json!(path);
        get["requestContext"]["http"]["path"] = json!(path);
        let (status, view) = call(&function, &get).await;
        assert_eq!(status, 200, "{view}");
        // The order can only succeed if the order book seeded its stock on first use.
        assert_eq!(view["state"], "succeeded", "{view}");
    }
}

/// The `sweeper` function handed the table's stream, as its event source mapping hands it:
/// the report the API serves counts the jobs once, however often a batch comes again; a
/// scheduled event still sweeps.
#[tokio::test]
#[ignore = "needs moto server: run infra/scripts/test-all"]
async fn the_sweeper_folds_the_tables_stream_into_the_report_once() {
    let clients = moto().await;
    let (function, queue_url) = function(&clients).await;
    let tail = StreamTail::new(&moto_url(), &function.config.aws.table);

    for _ in 0..2 {
        let (status, job) = call(&function, &fixture("apigw-v2-post-job.json")).await;
        assert_eq!(status, 202, "{job}");
        let mut fresh = fixture("apigw-v2-post-job.json");
        fresh["headers"]
            .as_object_mut()
            .unwrap()
            .remove("idempotency-key");
        let (status, job) = call(&function, &fresh).await;
        assert_eq!(status, 202, "{job}");
    }
    work(&function, &clients, &queue_url, 3).await;

    let (status, before) = call(&function, &fixture("apigw-v2-get-report.json")).await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(before["accepted"], 0, "nothing folded yet: {before}");

    let records = tail.next_records().await.expect("the stream");
    let batch = json!({ "Records": records });
    for _ in 0..2 {
        let answer = housekeep(
            &function,
            LambdaEvent::new(batch.clone(), Context::default()),
        )
        .await
        .expect("folded");
        assert_eq!(
            serde_json::to_value(&answer).expect("JSON"),
            json!({"batchItemFailures": []})
        );
    }
    let (status, after) = call(&function, &fixture("apigw-v2-get-report.json")).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(
        after["accepted"], 3,
        "one job replayed, three accepted: {after}"
    );
    assert_eq!(after["counts"]["succeeded"], 3, "{after}");
    assert_eq!(after["counts"]["queued"], 0, "{after}");

    let swept = housekeep(&function, LambdaEvent::new(json!({}), Context::default()))
        .await
        .expect("swept");
    assert!(matches!(swept, Housekeeping::Swept(_)), "{swept:?}");
}
