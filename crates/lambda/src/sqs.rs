//! The SQS batch lifter: one Lambda invocation of the `worker` function gets a batch of SQS
//! records from the event source mapping and answers which of them failed
//! ([`SqsBatchResponse`], "ReportBatchItemFailures"); the mapping deletes the others.
//!
//! The per-record work ([`process_record`]) is apart from the lifter ([`process_batch`]) that
//! turns outcomes into the batch response, and each part is tested on its own.
//!
//! # Decisions
//!
//! - **Each record is decoded on its own** ([`delivery_from_record`]): the event is read as a
//!   list of JSON values, so one malformed record never makes the whole event unreadable.
//! - **Dispositions** ([`Disposition`], decided by the core) are settled by the core too
//!   ([`Ackflow::settle`] with [`Deleter::EventSource`]), exactly as on one machine but for who
//!   deletes: `Delete` → success (the mapping deletes the message); `RetryAfter(d)` → the
//!   message's visibility is set to `d`, then it is reported as a failure, so it comes back
//!   after the backoff and not after the queue's visibility timeout; `DeadLetter` → the message
//!   is moved to the dead-letter queue, then it is a success (if that fails, a failure: the
//!   message comes back and is tried again).
//! - **A panic** anywhere in a record's handling fails that record only.
//! - **A record without a message id** cannot be reported on its own: SQS treats an unknown or
//!   empty `itemIdentifier` as the failure of the whole batch, and so does this lifter, openly —
//!   the identifiable records are processed first, then the invocation returns an error
//!   ([`BatchError::Unidentifiable`]), so every message of the batch comes back. The records
//!   already handled are harmless duplicates then (every job write is fenced). SQS itself never
//!   sends such a record; it would take a hand-made or corrupted event.
//! - **A record that is not an SQS message** (but has an id) is reported as a failure; if it
//!   never becomes readable, the queue's redrive policy moves it to the dead-letter queue.
//! - **The invocation deadline** ([`lambda_runtime::Context::deadline`]): a record is started
//!   only while at least its lease (worker timeout + lease grace) and `margin` remain, so that
//!   an attempt's outcome is written before the end of the invocation. Records not started
//!   are made visible again at once (visibility 0) and reported as failures, so another
//!   invocation takes them without waiting for the visibility timeout. A deadline of 0
//!   ([`lambda_runtime::Context::default`], as in tests) means "unknown": no limit;
//!   one too small to be a time since the epoch (below [`RELATIVE_BELOW_MS`]) is what runtime
//!   emulators send (`cargo lambda watch` sends its 600 s timeout as `600000`) and is read as
//!   relative to the start of the invocation.
//! - **Within the invocation**: a started record is handled by [`Ackflow::handle_by`] with
//!   `margin` before the deadline as its finish line (no attempt starts whose lease would end
//!   later, for a record that waited for a permit or whose reads were slow), and is cut where
//!   it stands [`ANSWER_AHEAD`] of the deadline, reported as a failure, so that the invocation
//!   answers rather than being killed. A cut record's job is fenced as after any lost worker:
//!   it runs again once its lease ends.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use ackflow_core::job::attributes::TRACE_HEADER;
use ackflow_core::{
    error_chain, panic_message, Ackflow, Deleter, Delivery, Disposition, Receipt, Settled,
    Timestamp,
};
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsMessage};
use futures_util::{FutureExt as _, StreamExt as _};
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::Value;
use tracing::{debug, error, info, warn, Instrument as _};

use crate::deadline::ANSWER_AHEAD;

/// How a batch is worked through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// Records handled at once (at least 1).
    pub concurrency: usize,
    /// Time kept in reserve beyond an attempt's lease when deciding whether a record may still
    /// start: it covers the store calls after the lease and the batch response.
    pub margin: Duration,
}

impl BatchOptions {
    /// The default concurrency: SQS's largest batch without a batching window, so a normal
    /// batch runs all at once.
    pub const DEFAULT_CONCURRENCY: usize = 10;
    /// The default margin.
    pub const DEFAULT_MARGIN: Duration = Duration::from_secs(2);
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            concurrency: Self::DEFAULT_CONCURRENCY,
            margin: Self::DEFAULT_MARGIN,
        }
    }
}

/// Why a record could not become a [`Delivery`].
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// No `messageId`: the record cannot be named in a batch response.
    #[error("the record has no message id")]
    NoMessageId,
    /// No `receiptHandle`: the message could not be delayed or dead-lettered.
    #[error("record {message_id} has no receipt handle")]
    NoReceiptHandle {
        /// The record's message id.
        message_id: String,
    },
    /// The record is not shaped like an SQS message.
    #[error("record {message_id} is not an SQS message")]
    Malformed {
        /// The record's message id.
        message_id: String,
        /// What did not fit.
        #[source]
        source: serde_json::Error,
    },
}

impl RecordError {
    /// The message id, when the record has one.
    pub fn message_id(&self) -> Option<&str> {
        match self {
            Self::NoMessageId => None,
            Self::NoReceiptHandle { message_id } | Self::Malformed { message_id, .. } => {
                Some(message_id)
            }
        }
    }
}

/// Why a whole invocation failed (the event source mapping then returns every message of the
/// batch to the queue).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The event is not an SQS event (no `Records` list).
    #[error("the event is not an SQS event")]
    NotAnSqsEvent(#[source] serde_json::Error),
    /// Some records had no message id and so could not be reported on their own.
    #[error("{count} record(s) without a message id; failing the whole batch")]
    Unidentifiable {
        /// How many.
        count: usize,
    },
}

impl From<BatchError> for Diagnostic {
    fn from(error: BatchError) -> Self {
        Diagnostic {
            error_type: match error {
                BatchError::NotAnSqsEvent(_) => "ackflow.NotAnSqsEvent",
                BatchError::Unidentifiable { .. } => "ackflow.UnidentifiableRecords",
            }
            .to_owned(),
            error_message: error.to_string(),
        }
    }
}

/// Reads one record of an SQS event into a [`Delivery`]: message id, receipt handle, body,
/// string message attributes (binary ones are skipped: ackflow sends none),
/// `ApproximateReceiveCount` from the system attributes (1 when missing or unreadable: it only
/// informs logs, the job's attempts are counted by the store) and the `AWSTraceHeader` system
/// attribute, as the core's trace header attribute
/// (`ackflow_core::job::attributes::TRACE_HEADER`). A missing body reads as empty,
/// which the core treats as an unreadable (poison) message.
pub fn delivery_from_record(record: Value) -> Result<Delivery, RecordError> {
    let message_id = record
        .get("messageId")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or(RecordError::NoMessageId)?;
    let message: SqsMessage =
        serde_json::from_value(record).map_err(|source| RecordError::Malformed {
            message_id: message_id.clone(),
            source,
        })?;
    let receipt = message
        .receipt_handle
        .filter(|r| !r.is_empty())
        .ok_or_else(|| RecordError::NoReceiptHandle {
            message_id: message_id.clone(),
        })?;
    let mut attributes: BTreeMap<String, String> = message
        .message_attributes
        .into_iter()
        .filter_map(|(name, attribute)| attribute.string_value.map(|value| (name, value)))
        .collect();
    if let Some(trace) = message.attributes.get("AWSTraceHeader") {
        attributes.insert(TRACE_HEADER.to_owned(), trace.clone());
    }
    let receive_count = message
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(1);
    Ok(Delivery {
        message_id,
        receipt: Receipt(receipt),
        body: message.body.unwrap_or_default(),
        attributes,
        receive_count,
    })
}

/// Handles one delivery with [`Ackflow::handle_by`] (`finish_by`: when the invocation's
/// time for it ends) and settles it with [`Deleter::EventSource`] (see the module's
/// decisions): [`Settled::ComesBack`] is reported as a batch item failure, and so is a record
/// whose settling failed (it comes back after the visibility timeout). Never panics: a panic
/// anywhere in here fails this record only.
pub async fn process_record(
    app: &Ackflow,
    delivery: &Delivery,
    finish_by: Option<Timestamp>,
) -> Settled {
    let work = async {
        let disposition = app.handle_by(delivery, finish_by).await;
        match app
            .settle(delivery, disposition, Deleter::EventSource)
            .await
        {
            Ok(settled) => settled,
            Err(e) => {
                warn!(?disposition, error = %error_chain(&e), "could not settle the record; it comes back after the visibility timeout");
                Settled::ComesBack
            }
        }
    };
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(settled) => settled,
        Err(panic) => {
            error!(
                panic = panic_message(panic.as_ref()),
                "handling the record panicked; it will come back"
            );
            Settled::ComesBack
        }
    }
}

/// What happened to one record of a batch, for the response and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RecordFate {
    Outcome(String, Settled),
    /// Not started: too little time was left.
    Unstarted(String),
    /// Still being handled when the invocation had to answer.
    Cut(String),
    /// Not readable as an SQS message, but named.
    Unreadable(String),
    /// Not named: fails the whole batch.
    Unidentifiable,
}

/// The lifter: handles every record of an SQS event (at most `options.concurrency` at once,
/// none started too close to the invocation's deadline) and answers the failed ones as batch
/// item failures. Fails as a whole only when the event is not an SQS event or a record has no
/// message id (see the module's decisions).
pub async fn process_batch(
    app: &Ackflow,
    event: LambdaEvent<Value>,
    options: &BatchOptions,
) -> Result<SqsBatchResponse, BatchError> {
    #[derive(serde::Deserialize)]
    struct Records {
        #[serde(rename = "Records")]
        records: Vec<Value>,
    }
    let LambdaEvent { payload, context } = event;
    let Records { records } = serde_json::from_value(payload).map_err(BatchError::NotAnSqsEvent)?;
    let deadline = invocation_deadline(context.deadline, app.clock().now());
    let needed = app.settings().lease() + options.margin;
    let total = records.len();
    debug!(
        records = total,
        time_left_ms = deadline.map(|d| d.since(app.clock().now()).as_millis()),
        "batch received"
    );

    let fates: Vec<RecordFate> = futures_util::stream::iter(records)
        .map(|record| async move {
            let delivery = match delivery_from_record(record) {
                Ok(delivery) => delivery,
                Err(e) => {
                    return match e.message_id() {
                        Some(id) => {
                            error!(message_id = id, error = %error_chain(&e), "unreadable SQS record");
                            RecordFate::Unreadable(id.to_owned())
                        }
                        None => {
                            error!(error = %e, "SQS record without a message id");
                            RecordFate::Unidentifiable
                        }
                    };
                }
            };
            let span = tracing::info_span!(
                "record",
                message_id = %delivery.message_id,
                receive_count = delivery.receive_count
            );
            async {
                if let Some(deadline) = deadline {
                    let left = deadline.since(app.clock().now());
                    if left < needed {
                        let now = Disposition::RetryAfter(Duration::ZERO);
                        if let Err(e) = app.settle(&delivery, now, Deleter::EventSource).await {
                            warn!(error = %error_chain(&e), "could not return the unstarted message at once");
                        }
                        return RecordFate::Unstarted(delivery.message_id.clone());
                    }
                }
                let Some(deadline) = deadline else {
                    let outcome = process_record(app, &delivery, None).await;
                    return RecordFate::Outcome(delivery.message_id.clone(), outcome);
                };
                let finish_by = deadline.minus(options.margin);
                let answer_in = deadline
                    .since(app.clock().now())
                    .saturating_sub(ANSWER_AHEAD);
                match tokio::time::timeout(
                    answer_in,
                    process_record(app, &delivery, Some(finish_by)),
                )
                .await
                {
                    Ok(outcome) => RecordFate::Outcome(delivery.message_id.clone(), outcome),
                    Err(_) => RecordFate::Cut(delivery.message_id.clone()),
                }
            }
            .instrument(span)
            .await
        })
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;

    let mut response = SqsBatchResponse::default();
    let (mut unstarted, mut cut, mut unreadable, mut unidentifiable, mut failed) = (0, 0, 0, 0, 0);
    for fate in fates {
        let id = match fate {
            RecordFate::Outcome(_, Settled::Done) => continue,
            RecordFate::Outcome(id, Settled::ComesBack) => {
                failed += 1;
                id
            }
            RecordFate::Unstarted(id) => {
                unstarted += 1;
                id
            }
            RecordFate::Cut(id) => {
                cut += 1;
                id
            }
            RecordFate::Unreadable(id) => {
                unreadable += 1;
                id
            }
            RecordFate::Unidentifiable => {
                unidentifiable += 1;
                continue;
            }
        };
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = id;
        response.batch_item_failures.push(failure);
    }
    if unstarted > 0 {
        warn!(
            unstarted,
            ?needed,
            "records left unstarted near the invocation deadline; the function timeout must exceed the lease (worker timeout plus lease grace) plus the margin"
        );
    }
    if cut > 0 {
        error!(
            cut,
            "records still being handled at the invocation's deadline were cut; their messages come back, and their jobs run again once their leases end"
        );
    }
    info!(
        records = total,
        failed, unstarted, cut, unreadable, unidentifiable, "batch done"
    );
    if unidentifiable > 0 {
        return Err(BatchError::Unidentifiable {
            count: unidentifiable,
        });
    }
    Ok(response)
}

/// Lambda's deadline is in milliseconds since the epoch. 0 means unknown ([`Context::default`]).
/// A value before [`RELATIVE_BELOW_MS`] cannot be a real deadline: emulators send the function
/// timeout there instead (`cargo lambda watch` sends `600000`), so it is read as relative to
/// the start of the invocation.
pub(crate) fn invocation_deadline(deadline_ms: u64, now: Timestamp) -> Option<Timestamp> {
    let millis = i64::try_from(deadline_ms).ok().filter(|&ms| ms > 0)?;
    if millis < RELATIVE_BELOW_MS {
        Some(now.plus(Duration::from_millis(deadline_ms)))
    } else {
        Some(Timestamp::from_millis(millis))
    }
}

/// 2001-09-09T01:46:40Z in milliseconds since the epoch: deadlines below are relative.
pub const RELATIVE_BELOW_MS: i64 = 1_000_000_000_000;
