//! The X-Ray trace header on SQS, against moto server (`ACKFLOW_MOTO_URL`; ignored without it,
//! `infra/scripts/test-all` runs them): `SqsQueue` sends the core's trace header attribute as
//! SQS's `AWSTraceHeader` system attribute — what Lambda's SQS event source reads to link the
//! worker's trace to the API's — and reads it back into the delivery.

// Test code: the fixtures' helpers panic on setup failures, which is what a test should do.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use ackflow_aws::{https_client, schema, timeouts, Clients, SqsQueue};
use ackflow_core::job::attributes::{CORRELATION_ID, TRACE_HEADER};
use ackflow_core::{OutgoingMessage, Queue, TraceHeader};
use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::config::Credentials;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use uuid::Uuid;

const TRACE: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";

async fn moto() -> Clients {
    let url = std::env::var("ACKFLOW_MOTO_URL").expect(
        "ACKFLOW_MOTO_URL is not set: run infra/scripts/test-all, or \
         export ACKFLOW_MOTO_URL=$(infra/scripts/moto start)",
    );
    let config = aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .timeout_config(timeouts())
        .endpoint_url(url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .load()
        .await;
    Clients::from_sdk_config(&config)
}

async fn fresh_queue(clients: &Clients) -> SqsQueue {
    let name = format!("trace-{}", Uuid::new_v4().simple());
    let (queue, dlq) = schema::create_queues(&clients.sqs, &name, 3, 30)
        .await
        .expect("create queues");
    SqsQueue::new(clients.sqs.clone(), queue, dlq)
}

fn traced_message() -> OutgoingMessage {
    OutgoingMessage {
        body: "{}".to_owned(),
        attributes: vec![
            (CORRELATION_ID.to_owned(), "req-1".to_owned()),
            (TRACE_HEADER.to_owned(), TRACE.to_owned()),
        ],
        delay: Duration::ZERO,
    }
}

#[tokio::test]
#[ignore = "needs moto server: run infra/scripts/test-all"]
async fn a_sent_message_carries_the_trace_header_as_the_aws_trace_header_system_attribute() {
    let clients = moto().await;
    let queue = fresh_queue(&clients).await;
    queue.send(traced_message()).await.expect("sent");

    // Read it as Lambda's event source would: every system attribute, every message attribute.
    let out = clients
        .sqs
        .receive_message()
        .queue_url(queue.queue_url())
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .expect("received");
    let message = out.messages.unwrap_or_default().pop().expect("one message");
    let system = message.attributes.unwrap_or_default();
    assert_eq!(
        system
            .get(&MessageSystemAttributeName::AwsTraceHeader)
            .map(String::as_str),
        Some(TRACE)
    );
    let attributes = message.message_attributes.unwrap_or_default();
    assert!(
        !attributes.contains_key(TRACE_HEADER),
        "the trace header is a system attribute, not a message attribute: {attributes:?}"
    );
    assert!(attributes.contains_key(CORRELATION_ID));
}

#[tokio::test]
#[ignore = "needs moto server: run infra/scripts/test-all"]
async fn a_received_delivery_and_its_dead_letter_copy_keep_the_trace_header() {
    let clients = moto().await;
    let queue = fresh_queue(&clients).await;
    queue.send(traced_message()).await.expect("sent");

    let delivery = queue
        .receive(10, Duration::from_secs(30))
        .await
        .expect("received")
        .pop()
        .expect("one delivery");
    let expected = TraceHeader::parse(TRACE).expect("a trace header");
    assert_eq!(delivery.trace_header(), Some(expected.clone()));

    queue.dead_letter(&delivery).await.expect("dead-lettered");
    let copy = queue
        .dead_letters(10)
        .await
        .expect("peeked")
        .pop()
        .expect("one dead letter");
    assert_eq!(copy.delivery.trace_header(), Some(expected));
}

#[tokio::test]
#[ignore = "needs moto server: run infra/scripts/test-all"]
async fn a_message_without_a_trace_header_has_none() {
    let clients = moto().await;
    let queue = fresh_queue(&clients).await;
    let mut message = traced_message();
    message.attributes.retain(|(name, _)| name != TRACE_HEADER);
    queue.send(message).await.expect("sent");
    let delivery = queue
        .receive(10, Duration::from_secs(30))
        .await
        .expect("received")
        .pop()
        .expect("one delivery");
    assert_eq!(delivery.trace_header(), None);
    assert!(!delivery.attributes.contains_key(TRACE_HEADER));
}
