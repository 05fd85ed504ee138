//! The SQS events the `worker` function is handed, built for tests, benches and the end-to-end
//! checks (behind the `test-support` feature, which no function enables).
//!
//! Lambda's SQS event source mapping receives messages and hands the function a batch of
//! records; [`process_batch`](crate::process_batch) decodes each one. Whatever plays that
//! mapping outside AWS builds the records here, in the shape of `infra/events/sqs-*.json`:
//!
//! - [`SqsRecord::from_delivery`]: from a core [`Delivery`] (a message received from the SQLite
//!   queue standing in for SQS), its trace header as SQS's `AWSTraceHeader` system attribute;
//! - [`SqsRecord::from_message`]: from a message received with the SQS SDK (moto server), its
//!   system and message attributes as SQS returned them;
//! - [`SqsRecord::new`]: from nothing but an id, a receipt handle and a body, for hand-made
//!   batches.
//!
//! [`sqs_event`] puts records into the event of one invocation:
//!
//! ```
//! use ackflow_lambda::test_support::{sqs_event, SqsRecord};
//!
//! let record = SqsRecord::new("msg-1", "receipt-1", "{}").receive_count(2);
//! let event = sqs_event([record]);
//! assert_eq!(event["Records"][0]["attributes"]["ApproximateReceiveCount"], "2");
//! ```

use ackflow_core::job::attributes::TRACE_HEADER;
use ackflow_core::Delivery;
use aws_sdk_sqs::types::Message;
use serde_json::{json, Map, Value};

/// The queue a record comes from unless it says otherwise (the fixtures' account and region).
pub const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:ackflow-jobs";

/// One record of an SQS event, as the event source mapping builds it from a received message.
#[derive(Debug, Clone, PartialEq)]
pub struct SqsRecord {
    /// `attributes`: SQS's system attributes.
    system: Map<String, Value>,
    /// `messageAttributes`: the sender's.
    message_attributes: Map<String, Value>,
    /// Every other field.
    fields: Map<String, Value>,
}

impl SqsRecord {
    /// A first receive of `body` from [`QUEUE_ARN`], with the system attributes SQS always sends
    /// (fixed times and sender, so that events are reproducible) and no message attributes.
    pub fn new(
        message_id: impl Into<String>,
        receipt_handle: impl Into<String>,
        body: impl Into<String>,
    ) -> Self {
        let system = json!({
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1795687200000",
            "SenderId": "AROAEXAMPLE:ackflow-api",
            "ApproximateFirstReceiveTimestamp": "1795687200050"
        });
        let fields = json!({
            "messageId": message_id.into(),
            "receiptHandle": receipt_handle.into(),
            "body": body.into(),
            "md5OfBody": "00000000000000000000000000000000",
            "eventSource": "aws:sqs",
            "eventSourceARN": QUEUE_ARN,
            "awsRegion": "us-east-1"
        });
        Self {
            system: object(system),
            message_attributes: Map::new(),
            fields: object(fields),
        }
    }

    /// The record of `delivery`: its id, receipt, body and receive count; its trace header as
    /// the `AWSTraceHeader` system attribute (where SQS puts the header a message was sent
    /// with), every other attribute as a string message attribute.
    pub fn from_delivery(delivery: &Delivery) -> Self {
        let mut record = Self::new(
            delivery.message_id.clone(),
            delivery.receipt.0.clone(),
            delivery.body.clone(),
        )
        .receive_count(delivery.receive_count);
        for (name, value) in &delivery.attributes {
            record = if name == TRACE_HEADER {
                record.trace_header(value)
            } else {
                record.message_attribute(name, value)
            };
        }
        record
    }

    /// The record of `message`, received from the queue `queue_arn` with all its system and
    /// message attributes asked for: everything as SQS returned it, nothing made up.
    pub fn from_message(message: &Message, queue_arn: impl Into<String>) -> Self {
        let system: Map<String, Value> = message
            .attributes()
            .map(|a| {
                a.iter()
                    .map(|(k, v)| (k.as_str().to_owned(), json!(v)))
                    .collect()
            })
            .unwrap_or_default();
        let message_attributes: Map<String, Value> = message
            .message_attributes()
            .map(|a| {
                a.iter()
                    .map(|(k, v)| (k.clone(), attribute(v.string_value(), v.data_type())))
                    .collect()
            })
            .unwrap_or_default();
        let fields = json!({
            "messageId": message.message_id(),
            "receiptHandle": message.receipt_handle(),
            "body": message.body(),
            "md5OfBody": message.md5_of_body(),
            "md5OfMessageAttributes": message.md5_of_message_attributes(),
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn.into(),
            "awsRegion": "us-east-1",
        });
        Self {
            system,
            message_attributes,
            fields: object(fields),
        }
    }

    /// Received `count` times, this time included.
    pub fn receive_count(self, count: u32) -> Self {
        self.system_attribute("ApproximateReceiveCount", &count.to_string())
    }

    /// Sent with the X-Ray trace header `header`.
    pub fn trace_header(self, header: &str) -> Self {
        self.system_attribute("AWSTraceHeader", header)
    }

    /// With the string message attribute `name` = `value`.
    pub fn message_attribute(mut self, name: &str, value: &str) -> Self {
        self.message_attributes
            .insert(name.to_owned(), attribute(Some(value), "String"));
        self
    }

    /// With `body` instead of the message's own (a poison message, say).
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.fields
            .insert("body".to_owned(), Value::String(body.into()));
        self
    }

    /// The record as the JSON the function receives.
    pub fn into_value(self) -> Value {
        let mut fields = self.fields;
        fields.insert("attributes".to_owned(), Value::Object(self.system));
        fields.insert(
            "messageAttributes".to_owned(),
            Value::Object(self.message_attributes),
        );
        Value::Object(fields)
    }

    fn system_attribute(mut self, name: &str, value: &str) -> Self {
        self.system
            .insert(name.to_owned(), Value::String(value.to_owned()));
        self
    }
}

impl From<SqsRecord> for Value {
    fn from(record: SqsRecord) -> Self {
        record.into_value()
    }
}

/// The record of `delivery` as JSON: [`SqsRecord::from_delivery`].
pub fn sqs_record(delivery: &Delivery) -> Value {
    SqsRecord::from_delivery(delivery).into_value()
}

/// The event of one `worker` invocation: `{"Records": [...]}`.
pub fn sqs_event<R: Into<Value>>(records: impl IntoIterator<Item = R>) -> Value {
    let records: Vec<Value> = records.into_iter().map(Into::into).collect();
    json!({ "Records": records })
}

/// A message attribute as the event source mapping writes it.
fn attribute(string_value: Option<&str>, data_type: &str) -> Value {
    json!({
        "stringValue": string_value,
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": data_type,
    })
}

/// The fields of a `json!` object literal (always an object; anything else has none).
fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(fields) => fields,
        _ => Map::new(),
    }
}
