//! [`Queue`] on SQS: a standard queue whose redrive policy moves a message to its dead-letter
//! queue on the receive after the `maxReceiveCount`-th (see [`crate::schema::create_queues`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ackflow_core::job::attributes::TRACE_HEADER;
use ackflow_core::{
    async_trait, Clock, DeadLetter, Delivery, OutgoingMessage, PortError, Queue, QueueDepth,
    Receipt, SystemClock, Timestamp,
};
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{
    Message, MessageAttributeValue, MessageSystemAttributeName, MessageSystemAttributeNameForSends,
    MessageSystemAttributeValue, QueueAttributeName,
};
use aws_sdk_sqs::Client;
use tracing::warn;

use crate::error::{build_failed, classify};

/// SQS hands out at most ten messages per receive.
const MAX_BATCH: usize = 10;
/// The longest `DelaySeconds` SQS accepts (15 minutes).
const MAX_DELAY_SECS: u64 = 900;
/// The longest visibility timeout SQS accepts (12 hours).
const MAX_VISIBILITY_SECS: u64 = 43_200;
/// SQS carries at most ten message attributes.
const MAX_ATTRIBUTES: usize = 10;
/// How long [`Queue::dead_letter`] holds a message while it copies it to the dead-letter queue:
/// if the copy or the delete fails, the message comes back to the main queue after this.
const MOVE_HOLD: Duration = Duration::from_secs(30);

/// Attribute added to a message that [`Queue::dead_letter`] moved: when, in milliseconds since
/// the epoch. (Messages moved by the redrive policy carry none: SQS does not say when it moved
/// them.)
pub const DEAD_LETTERED_AT: &str = "ackflow-dead-lettered-at";
/// Attribute added to a message that [`Queue::dead_letter`] moved: its id in the main queue
/// (the copy in the dead-letter queue has a new one).
pub const ORIGINAL_MESSAGE_ID: &str = "ackflow-original-message-id";

/// The jobs queue and its dead-letter queue on SQS.
///
/// # Receipts
///
/// A stale receipt (the visibility timeout ran out and another receive took the message) is a
/// no-op without an error for [`Queue::delete`], [`Queue::change_visibility`] and
/// [`Queue::dead_letter`], like SQLite's queue: SQS ignores a stale delete, answers
/// `ReceiptHandleIsInvalid` to a stale visibility change (taken as the no-op), and
/// `dead_letter` first checks that its receipt is current by changing the visibility.
///
/// # Dead letters
///
/// [`Queue::dead_letters`] peeks at the dead-letter queue by receiving with a zero visibility
/// timeout: the messages stay where they are and visible, but each peek adds one to their
/// receive count (harmless: the dead-letter queue has no redrive policy of its own), and
/// SQS hands out at most ten messages per receive, so a peek sees at most about `max`
/// messages SQS chose, not necessarily the oldest.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    queue_url: Arc<str>,
    dlq_url: Arc<str>,
}

impl SqsQueue {
    /// The queue at `queue_url` with its dead-letter queue at `dlq_url`.
    pub fn new(client: Client, queue_url: String, dlq_url: String) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            dlq_url: dlq_url.into(),
        }
    }

    /// The URL of the jobs queue.
    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// The URL of the dead-letter queue.
    pub fn dlq_url(&self) -> &str {
        &self.dlq_url
    }

    async fn send_to(
        &self,
        what: &'static str,
        url: &str,
        body: String,
        attributes: impl IntoIterator<Item = (String, String)>,
        delay: Duration,
    ) -> Result<(), PortError> {
        let mut request = self
            .client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .delay_seconds(whole_secs(delay, MAX_DELAY_SECS));
        for (name, value) in attributes {
            if name == TRACE_HEADER {
                // Not a message attribute: SQS's own `AWSTraceHeader` system attribute, which
                // Lambda's event source reads to link the worker's trace to the sender's (and
                // which does not count against the ten message attributes).
                let trace = MessageSystemAttributeValue::builder()
                    .data_type("String")
                    .string_value(value)
                    .build()
                    .map_err(|e| build_failed(what, e))?;
                request = request.message_system_attributes(
                    MessageSystemAttributeNameForSends::AwsTraceHeader,
                    trace,
                );
                continue;
            }
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| build_failed(what, e))?;
            request = request.message_attributes(name, value);
        }
        request.send().await.map_err(|e| classify(what, e))?;
        Ok(())
    }

    async fn receive_from(
        &self,
        what: &'static str,
        url: &str,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Message>, PortError> {
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(i32::try_from(max.min(MAX_BATCH)).unwrap_or(1))
            .visibility_timeout(whole_secs(visibility, MAX_VISIBILITY_SECS))
            // Short polling: the worker (a Lambda event source, or a loop) decides how to wait.
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| classify(what, e))?;
        Ok(out.messages.unwrap_or_default())
    }

    /// Changes the visibility of a received message; `Ok(false)` when the receipt is stale.
    async fn set_visibility(
        &self,
        what: &'static str,
        receipt: &Receipt,
        timeout: Duration,
    ) -> Result<bool, PortError> {
        let outcome = self
            .client
            .change_message_visibility()
            .queue_url(&*self.queue_url)
            .receipt_handle(&receipt.0)
            .visibility_timeout(whole_secs(timeout, MAX_VISIBILITY_SECS))
            .send()
            .await;
        match outcome {
            Ok(_) => Ok(true),
            Err(e) => {
                let stale = e.as_service_error().is_some_and(|se| {
                    se.is_receipt_handle_is_invalid()
                        || se.is_message_not_inflight()
                        || stale_receipt_message(se.code(), se.message())
                });
                if stale {
                    Ok(false)
                } else {
                    Err(classify(what, e))
                }
            }
        }
    }

    /// Deletes a message of the queue at `url` by its receipt. A stale receipt is not an error:
    /// the message was already deleted (or the receipt is not one of ours), the goal of a delete
    /// is reached either way, and the late holder could do nothing with an error.
    async fn delete_from(
        &self,
        what: &'static str,
        url: &str,
        receipt: &Receipt,
    ) -> Result<(), PortError> {
        let outcome = self
            .client
            .delete_message()
            .queue_url(url)
            .receipt_handle(&receipt.0)
            .send()
            .await;
        match outcome {
            Ok(_) => Ok(()),
            #[allow(
                deprecated,
                reason = "older SQS endpoints still answer InvalidIdFormat"
            )]
            Err(e)
                if e.as_service_error().is_some_and(|se| {
                    se.is_receipt_handle_is_invalid() || se.is_invalid_id_format()
                }) =>
            {
                Ok(())
            }
            Err(e) => Err(classify(what, e)),
        }
    }

    async fn counts(&self, url: &str) -> Result<(u64, u64, u64), PortError> {
        const WHAT: &str = "read queue attributes";
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| classify(WHAT, e))?;
        let attributes = out.attributes.unwrap_or_default();
        let count = |name: QueueAttributeName| -> u64 {
            attributes
                .get(&name)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok((
            count(QueueAttributeName::ApproximateNumberOfMessages),
            count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        ))
    }
}

/// Whole seconds, rounded up (SQS counts in seconds; rounding down would make a message come
/// back early), capped at what SQS accepts.
fn whole_secs(d: Duration, cap: u64) -> i32 {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    i32::try_from(secs.min(cap)).unwrap_or(i32::MAX)
}

/// SQS's answer to a visibility change of a message that was deleted or received again:
/// `InvalidParameterValue` about the receipt handle ("Message does not exist or is not available
/// for visibility timeout change").
fn stale_receipt_message(code: Option<&str>, message: Option<&str>) -> bool {
    code == Some("InvalidParameterValue") && message.is_some_and(|m| m.contains("ReceiptHandle"))
}

/// A received message as a [`Delivery`]; `None` when SQS left out the id or the receipt
/// (nothing could act on it; it comes back after its visibility timeout and, if it keeps
/// coming back so, ends in the dead-letter queue).
fn delivery(message: Message) -> Option<Delivery> {
    let receive_count = message
        .attributes
        .as_ref()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|v| v.parse().ok())
        // Asked for every system attribute: a missing count is SQS's omission; this is at
        // least the first receive.
        .unwrap_or(1);
    let mut attributes: BTreeMap<String, String> = message
        .message_attributes
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, value)| value.string_value.map(|v| (name, v)))
        .collect();
    // The trace header travels as a system attribute (see `send_to`); the core reads it among
    // the message's attributes, as on every queue.
    if let Some(trace) = message
        .attributes
        .as_ref()
        .and_then(|a| a.get(&MessageSystemAttributeName::AwsTraceHeader))
    {
        attributes.insert(TRACE_HEADER.to_owned(), trace.clone());
    }
    match (message.message_id, message.receipt_handle) {
        (Some(message_id), Some(receipt)) => Some(Delivery {
            message_id,
            receipt: Receipt(receipt),
            body: message.body.unwrap_or_default(),
            attributes,
            receive_count,
        }),
        (id, _) => {
            warn!(message_id = ?id, "SQS returned a message without an id or receipt; skipped");
            None
        }
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, message: OutgoingMessage) -> Result<(), PortError> {
        self.send_to(
            "send a message",
            &self.queue_url,
            message.body,
            message.attributes,
            message.delay,
        )
        .await
    }

    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, PortError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let messages = self
            .receive_from("receive messages", &self.queue_url, max, visibility)
            .await?;
        Ok(messages.into_iter().filter_map(delivery).collect())
    }

    async fn delete(&self, receipt: &Receipt) -> Result<(), PortError> {
        self.delete_from("delete a message", &self.queue_url, receipt)
            .await
    }

    async fn change_visibility(
        &self,
        receipt: &Receipt,
        timeout: Duration,
    ) -> Result<(), PortError> {
        self.set_visibility("change a message's visibility", receipt, timeout)
            .await
            .map(drop)
    }

    async fn dead_letter(&self, delivery: &Delivery) -> Result<(), PortError> {
        const WHAT: &str = "dead-letter a message";
        // SQS cannot move a message by hand: copy it to the dead-letter queue, then delete it
        // here. Holding it first checks that the receipt is current (a stale holder must not
        // copy a message another delivery owns) and keeps it from being received while it is
        // copied; if anything below fails it comes back after MOVE_HOLD and is handled again.
        if !self
            .set_visibility(WHAT, &delivery.receipt, MOVE_HOLD)
            .await?
        {
            return Ok(());
        }
        let mut attributes = delivery.attributes.clone();
        let marks = [
            (DEAD_LETTERED_AT, SystemClock.now().as_millis().to_string()),
            (ORIGINAL_MESSAGE_ID, delivery.message_id.clone()),
        ];
        for (name, value) in marks {
            // The message's own attributes come first: add ours only where there is room
            // (the trace header is a system attribute: it takes no room).
            let used = attributes.keys().filter(|k| *k != TRACE_HEADER).count();
            if used < MAX_ATTRIBUTES {
                attributes.entry(name.to_owned()).or_insert(value);
            }
        }
        self.send_to(
            WHAT,
            &self.dlq_url,
            delivery.body.clone(),
            attributes,
            Duration::ZERO,
        )
        .await?;
        // Were this delete to fail, the message would be in both queues; the copy is only
        // for operators, and every job write is fenced, so a duplicate is harmless.
        self.delete(&delivery.receipt).await
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, PortError> {
        const WHAT: &str = "list dead letters";
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        // A zero visibility leaves every message visible, so SQS may hand out the same ones
        // again: stop as soon as a receive brings nothing new.
        for _ in 0..max.div_ceil(MAX_BATCH) + 2 {
            if out.len() >= max {
                break;
            }
            let batch = self
                .receive_from(WHAT, &self.dlq_url, max - out.len(), Duration::ZERO)
                .await?;
            let mut new = 0;
            for message in batch {
                let Some(mut delivery) = delivery(message) else {
                    continue;
                };
                if !seen.insert(delivery.message_id.clone()) || out.len() >= max {
                    continue;
                }
                new += 1;
                // A dead letter is not a delivery of the main queue: nothing may delete or
                // delay it through that queue, so it carries no receipt (like SQLite's).
                delivery.receipt = Receipt(String::new());
                let dead_lettered_at = delivery
                    .attributes
                    .get(DEAD_LETTERED_AT)
                    .and_then(|v| v.parse().ok())
                    .map(Timestamp::from_millis);
                out.push(DeadLetter {
                    delivery,
                    dead_lettered_at,
                });
            }
            if new == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// One receive from the dead-letter queue (SQS hands out at most ten messages per call, so
    /// this returns at most ten: the redrive calls it until it comes back empty). The receive
    /// count is SQS's `ApproximateReceiveCount`, which keeps counting in the dead-letter queue.
    async fn receive_dead_letters(
        &self,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<DeadLetter>, PortError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let messages = self
            .receive_from("receive dead letters", &self.dlq_url, max, visibility)
            .await?;
        Ok(messages
            .into_iter()
            .filter_map(delivery)
            .map(|delivery| {
                let dead_lettered_at = delivery
                    .attributes
                    .get(DEAD_LETTERED_AT)
                    .and_then(|v| v.parse().ok())
                    .map(Timestamp::from_millis);
                DeadLetter {
                    delivery,
                    dead_lettered_at,
                }
            })
            .collect())
    }

    async fn delete_dead_letter(&self, receipt: &Receipt) -> Result<(), PortError> {
        self.delete_from("delete a dead letter", &self.dlq_url, receipt)
            .await
    }

    async fn depth(&self) -> Result<QueueDepth, PortError> {
        let (main, dead) = futures_util::future::try_join(
            self.counts(&self.queue_url),
            self.counts(&self.dlq_url),
        )
        .await?;
        let (visible, in_flight, delayed) = main;
        Ok(QueueDepth {
            waiting: visible + delayed,
            in_flight,
            dead: dead.0 + dead.1 + dead.2,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_up_to_whole_seconds_and_are_capped() {
        assert_eq!(whole_secs(Duration::ZERO, 900), 0);
        assert_eq!(whole_secs(Duration::from_millis(1), 900), 1);
        assert_eq!(whole_secs(Duration::from_millis(1000), 900), 1);
        assert_eq!(whole_secs(Duration::from_millis(1001), 900), 2);
        assert_eq!(whole_secs(Duration::from_secs(3600), 900), 900);
        assert_eq!(whole_secs(Duration::MAX, MAX_VISIBILITY_SECS), 43_200);
    }

    #[test]
    fn only_a_complaint_about_the_receipt_counts_as_stale() {
        let about_receipt = "Value x for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not available for visibility timeout change.";
        assert!(stale_receipt_message(
            Some("InvalidParameterValue"),
            Some(about_receipt)
        ));
        assert!(!stale_receipt_message(
            Some("InvalidParameterValue"),
            Some("Value 99999 for parameter VisibilityTimeout is invalid.")
        ));
        assert!(!stale_receipt_message(
            Some("AccessDenied"),
            Some(about_receipt)
        ));
    }
}
