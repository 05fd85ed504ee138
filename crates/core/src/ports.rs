//! The two ports every runtime implements: a [`Queue`] with SQS semantics and a [`JobStore`]
//! with conditional writes. `tests/` in `ackflow-testkit` is their contract, run against every
//! adapter.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::report::Deltas;
use crate::{Envelope, IdempotencyKey, Job, JobId, JobState, Kind, Owner, Timestamp};

/// Why a port call failed. Adapters keep their SDK or SQLite error as the source and say once,
/// here, whether trying again may help.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The backend is unreachable, throttling or refused for now: the call did not take effect
    /// and may succeed later.
    #[error("{what} is unavailable")]
    Unavailable {
        /// Which call.
        what: &'static str,
        /// The adapter's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The request was sent but its answer was lost (a timeout, a connection cut mid-answer):
    /// the call may or may not have taken effect. Transient like [`PortError::Unavailable`];
    /// apart from it because a caller must not act as if nothing happened — a message whose
    /// send timed out may well be on the queue.
    #[error("{what} got no answer; its outcome is unknown")]
    Ambiguous {
        /// Which call.
        what: &'static str,
        /// The adapter's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Anything else: a bug, corrupt data, a misconfiguration.
    #[error("{what} failed")]
    Failed {
        /// Which call.
        what: &'static str,
        /// The adapter's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl PortError {
    /// A transient error of `what`.
    pub fn unavailable(
        what: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Unavailable {
            what,
            source: source.into(),
        }
    }

    /// A call of `what` whose outcome is unknown.
    pub fn ambiguous(
        what: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Ambiguous {
            what,
            source: source.into(),
        }
    }

    /// A permanent error of `what`.
    pub fn failed(
        what: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Failed {
            what,
            source: source.into(),
        }
    }
}

// ---- JobStore ----------------------------------------------------------------------------------

/// The Idempotency-Key record written together with a job, atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The client's key (scoped by the job's owner).
    pub key: IdempotencyKey,
    /// SHA-256 of the canonical JSON of `{kind, input}`: "the same body".
    pub body_hash: String,
}

/// What [`JobStore::create`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// The job is new.
    New,
    /// The owner already used this Idempotency-Key: here is that job, and whether its body was the same.
    Existing {
        /// The job created with the key.
        job: Box<Job>,
        /// Whether the request body hashed the same.
        same_body: bool,
    },
}

/// A part of a job stored apart from its header ([`JobStore::get_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobPart {
    /// The input it was submitted with.
    Input,
    /// The result, once it succeeded.
    Result,
}

/// Why a conditional write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The stored job is not at the revision the caller read (or is gone): someone else wrote first.
    #[error("the job changed since it was read")]
    Conflict,
    /// The store failed.
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Filters and position of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListQuery {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this kind.
    pub kind: Option<Kind>,
    /// At most this many (the use case bounds it).
    pub limit: usize,
    /// Continue after this position.
    pub after: Option<Cursor>,
}

/// A position in the "newest first" order: the last job of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Its submission time.
    pub submitted_at: Timestamp,
    /// Its id (ties).
    pub id: JobId,
}

impl Cursor {
    /// The position of `job`.
    pub fn of(job: &Job) -> Self {
        Self {
            submitted_at: job.submitted_at,
            id: job.id,
        }
    }

    /// Opaque text for clients.
    pub fn encode(&self) -> String {
        let raw = format!("{}.{}", self.submitted_at.as_millis(), self.id);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// Reads text made by [`Cursor::encode`]; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        if text.len() > 128 {
            return None;
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (millis, id) = raw.split_once('.')?;
        Some(Self {
            submitted_at: Timestamp::from_millis(millis.parse().ok()?),
            id: id.parse().ok()?,
        })
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The jobs, newest first.
    pub jobs: Vec<Job>,
    /// Where the next page starts, if there is one.
    pub next: Option<Cursor>,
}

/// The maintained aggregates the report is computed from (never a scan).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Figures {
    /// How many jobs are in each non-terminal state now.
    pub gauges: BTreeMap<JobState, u64>,
    /// Counters summed over the report window, keyed as [`crate::report::Deltas`] names them.
    pub counters: BTreeMap<String, u64>,
    /// The oldest non-terminal job, if any.
    pub oldest_open: Option<Job>,
}

/// Where jobs live: the header, the input and the result apart, plus the report's aggregates.
///
/// Every change is a conditional write on the revision the caller read ([`JobStore::update`]).
/// Aggregates change by the [`Deltas`] the core computes from the job before and after a write:
/// in the same atomic write as the job (SQLite), or folded from the store's own record of its
/// writes soon after (DynamoDB: its table's stream), where the report then lags the jobs by
/// that delay. Either way each write counts once.
#[async_trait]
pub trait JobStore: Send + Sync + std::fmt::Debug {
    /// Writes a new job, its input and (if any) its Idempotency-Key record atomically. When the
    /// owner already used the key, writes nothing and returns the job that has it.
    async fn create(
        &self,
        job: &Job,
        input: &Value,
        key: Option<&IdempotencyRecord>,
    ) -> Result<Created, PortError>;

    /// The job `id` of `owner`, if it exists (another owner's job does not).
    async fn get(&self, owner: &Owner, id: JobId) -> Result<Option<Job>, PortError>;

    /// The input of a job.
    async fn input(&self, owner: &Owner, id: JobId) -> Result<Option<Value>, PortError>;

    /// The result of a succeeded job.
    async fn result(&self, owner: &Owner, id: JobId) -> Result<Option<Value>, PortError>;

    /// The job `id` of `owner` with one of its parts, read together: what an attempt needs
    /// ([`JobPart::Input`]), or what its owner is shown ([`JobPart::Result`]: `None` until the
    /// job has one). A backend that keeps a job's items side by side reads them at once (one
    /// DynamoDB query instead of two reads); the default reads the header and then the part.
    async fn get_with(
        &self,
        owner: &Owner,
        id: JobId,
        part: JobPart,
    ) -> Result<Option<(Job, Option<Value>)>, PortError> {
        let Some(job) = self.get(owner, id).await? else {
            return Ok(None);
        };
        let value = match part {
            JobPart::Input => self.input(owner, id).await?,
            JobPart::Result if job.has_result => self.result(owner, id).await?,
            JobPart::Result => None,
        };
        Ok(Some((job, value)))
    }

    /// Replaces `before` with `after` only if the stored job is still at `before.revision`;
    /// stores `result` beside it when given, all atomically; and applies `deltas` to the
    /// aggregates, atomically with it or folded from the write later (see the trait).
    async fn update(
        &self,
        before: &Job,
        after: &Job,
        result: Option<&Value>,
        deltas: &Deltas,
    ) -> Result<(), WriteError>;

    /// The owner's jobs, newest first.
    async fn list(&self, owner: &Owner, query: &ListQuery) -> Result<Page, PortError>;

    /// The report's aggregates for `owner`, counters summed from `since` on.
    async fn figures(&self, owner: &Owner, since: Timestamp) -> Result<Figures, PortError>;

    /// Non-terminal jobs of every owner whose `sweep_at` is at or before `now`, oldest first,
    /// read through an index of non-terminal jobs.
    async fn due_for_sweep(&self, now: Timestamp, limit: usize) -> Result<Vec<Job>, PortError>;

    /// Deletes terminal jobs whose `expires_at` has passed, with their input, result and key;
    /// returns how many. Stores whose backend expires items itself (DynamoDB TTL) return 0.
    async fn purge_expired(&self, now: Timestamp, limit: usize) -> Result<u64, PortError>;
}

// ---- Outbox ------------------------------------------------------------------------------------

/// The steps that touch both the store and the queue, written as one transaction by a backend
/// that keeps both in one database (one machine: one SQLite file).
///
/// Without it (AWS: DynamoDB and SQS share no transaction) the core writes the store first and
/// then sends, and handles a send that fails or times out after the write. With it, a job is
/// never left open without its message, so that failure path cannot occur.
#[async_trait]
pub trait Outbox: Send + Sync + std::fmt::Debug {
    /// [`JobStore::create`], and when it creates the job (not when it returns an existing one),
    /// [`Queue::send`] of `message` in the same transaction.
    async fn create_and_send(
        &self,
        job: &Job,
        input: &Value,
        key: Option<&IdempotencyRecord>,
        message: &OutgoingMessage,
    ) -> Result<Created, PortError>;

    /// [`JobStore::update`], and when it writes the job, `step` for the received message that
    /// `receipt` names in the same transaction: an attempt's outcome and the end of its delivery
    /// land together or not at all. A receipt that no longer names a message (another delivery
    /// received it since) leaves the queue as it is; that delivery finds the job changed.
    async fn update_and_settle(
        &self,
        before: &Job,
        after: &Job,
        result: Option<&Value>,
        deltas: &Deltas,
        receipt: &Receipt,
        step: QueueStep,
    ) -> Result<(), WriteError>;

    /// [`Queue::receive`], and in the same transaction, for each message whose job `plan`
    /// starts an attempt of, that start written as [`JobStore::update`] writes it (with its
    /// aggregates). A message whose job `plan` does not start (or cannot name) is received only:
    /// the worker decides about it as about any delivery.
    async fn receive_and_start(
        &self,
        max: usize,
        visibility: Duration,
        plan: Arc<dyn StartPlan>,
    ) -> Result<Vec<Received>, PortError>;
}

/// The core's decision, run inside an adapter's receive transaction, of which received
/// messages start an attempt now ([`Outbox::receive_and_start`]).
pub trait StartPlan: Send + Sync {
    /// The envelope of `delivery`, naming its job, if its message can be read.
    fn envelope_of(&self, delivery: &Delivery) -> Option<Envelope>;

    /// The running job to write over `job` (the one `envelope` names, as read in the
    /// transaction), if its message starts an attempt of it now.
    fn start(&self, envelope: &Envelope, job: &Job) -> Option<Job>;
}

/// A received message, with the attempt its receive started, if it started one.
#[derive(Debug, Clone)]
pub struct Received {
    /// The message.
    pub delivery: Delivery,
    /// The attempt written in the receive's transaction.
    pub started: Option<Started>,
}

impl From<Delivery> for Received {
    fn from(delivery: Delivery) -> Self {
        Self {
            delivery,
            started: None,
        }
    }
}

/// An attempt's start, as written: the job before and after.
#[derive(Debug, Clone)]
pub struct Started {
    /// The job as read, queued.
    pub before: Job,
    /// The job as written, running.
    pub running: Job,
}

/// What becomes of a received message once its job's outcome is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueStep {
    /// The job is done with it: [`Queue::delete`].
    Delete,
    /// It comes back after this long: [`Queue::change_visibility`].
    ComeBackAfter(Duration),
}

// ---- Queue -------------------------------------------------------------------------------------

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The body.
    pub body: String,
    /// Attributes that travel beside it.
    pub attributes: Vec<(String, String)>,
    /// Invisible for this long after sending.
    pub delay: Duration,
}

/// The handle that deletes or delays one received message (SQS's receipt handle).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Receipt(pub String);

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The queue's id of the message (SQS `messageId`).
    pub message_id: String,
    /// What deletes or delays it.
    pub receipt: Receipt,
    /// The raw body, decoded by the core.
    pub body: String,
    /// Its attributes.
    pub attributes: BTreeMap<String, String>,
    /// How many times it has been received, this time included (grows on duplicates and throttles
    /// too: the job's attempts are the store's, not this).
    pub receive_count: u32,
}

/// A message in the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message.
    pub delivery: Delivery,
    /// When it was dead-lettered, where known.
    pub dead_lettered_at: Option<Timestamp>,
}

/// Approximate message counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QueueDepth {
    /// Waiting to be received (including delayed ones).
    pub waiting: u64,
    /// Received and not yet deleted.
    pub in_flight: u64,
    /// In the dead-letter queue.
    pub dead: u64,
}

/// A queue with SQS semantics: at-least-once delivery, a visibility timeout per receive, a
/// receive count, and a dead-letter queue that takes messages received too often.
#[async_trait]
pub trait Queue: Send + Sync + std::fmt::Debug {
    /// Sends a message. A transient error may still have sent it (ambiguous): duplicates are
    /// harmless because every job write is fenced.
    async fn send(&self, message: OutgoingMessage) -> Result<(), PortError>;

    /// Receives up to `max` messages, each hidden for `visibility`. Messages received more than
    /// the queue's max receive count are moved to the dead-letter queue instead of being returned.
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, PortError>;

    /// Deletes a received message. A stale receipt is not an error.
    async fn delete(&self, receipt: &Receipt) -> Result<(), PortError>;

    /// Makes a received message visible again after `timeout` (backoff).
    async fn change_visibility(
        &self,
        receipt: &Receipt,
        timeout: Duration,
    ) -> Result<(), PortError>;

    /// Moves a received message to the dead-letter queue now (a poison message).
    async fn dead_letter(&self, delivery: &Delivery) -> Result<(), PortError>;

    /// Messages in the dead-letter queue, without removing them.
    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, PortError>;

    /// Receives up to `max` messages of the dead-letter queue, each hidden there for `visibility`
    /// and carrying a receipt for [`Queue::delete_dead_letter`] (the redrive: receive, send a
    /// fresh message to the main queue, then delete the dead letter). A message not deleted
    /// comes back in the dead-letter queue after `visibility`; the dead-letter queue never
    /// dead-letters anything itself.
    ///
    /// Every backend implements it; the default, for test doubles, is an error.
    async fn receive_dead_letters(
        &self,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<DeadLetter>, PortError> {
        let _ = (max, visibility);
        Err(PortError::failed(
            "receive dead letters",
            "this queue cannot receive from its dead-letter queue",
        ))
    }

    /// Deletes a dead letter received by [`Queue::receive_dead_letters`]. A stale receipt is not
    /// an error (like [`Queue::delete`]).
    ///
    /// Every backend implements it; the default, for test doubles, is an error.
    async fn delete_dead_letter(&self, receipt: &Receipt) -> Result<(), PortError> {
        let _ = receipt;
        Err(PortError::failed(
            "delete a dead letter",
            "this queue cannot delete from its dead-letter queue",
        ))
    }

    /// Approximate counts.
    async fn depth(&self) -> Result<QueueDepth, PortError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_foreign_text() {
        let c = Cursor {
            submitted_at: Timestamp::from_millis(42),
            id: JobId::random(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        for bad in ["", "!!!", "bm90IGEgY3Vyc29y", &"A".repeat(500)] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }
}
