//! The operator's dead-letter use cases: list what is in the dead-letter queue, and redrive it.
//!
//! The redrive is receive → (reopen the job) → send → delete, per message, in that order, so
//! that a crash between two steps loses nothing and repeats nothing harmful:
//!
//! - crash after the reopen, before the send: the job is `queued` in a new generation with a
//!   `sweep_at`, so the sweeper re-sends its message; the dead letter, now of an older generation,
//!   is discarded by the next redrive;
//! - crash after the send, before the delete: the dead letter comes back; its generation is older
//!   than the job's, so the next redrive deletes it without reopening the job a second time.
//!
//! SQS's `StartMessageMoveTask` is not used: it would move the messages back without reopening
//! their failed jobs (the worker would drop them as finished), and moto does not implement it.

use std::time::Duration;

use serde::Serialize;
use tracing::{info, warn};

use super::decode::{self, Undecodable};
use super::write::{TransitionError, CAS_ROUNDS};
use super::Ackflow;
use crate::error_chain;
use crate::job::attributes;
use crate::{Change, Delivery, Envelope, JobId, JobState, Kind, Owner, PortError, Timestamp};

/// How long a dead letter stays hidden in the dead-letter queue while the redrive handles it:
/// a handful of store and queue calls. One left in the queue (unreadable, or a step failed)
/// shows again after this.
pub const REDRIVE_HOLD: Duration = Duration::from_secs(30);

/// The most dead letters one receive asks for (SQS's batch).
const RECEIVE_BATCH: usize = 10;
/// Empty receives in a row that end a redrive.
const EMPTY_RECEIVES: u32 = 3;

/// The history note of a job the redrive sends back to the queue.
pub const REDRIVE_NOTE: &str = "Sent back to the queue by an operator after it was dead-lettered";

/// One dead letter, decoded for an operator: its message and, where the message names a job
/// that still exists, that job's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterView {
    /// The queue's id of the message.
    pub message_id: String,
    /// The job it is about: from the body, or from the attributes when the body is unreadable.
    pub job_id: Option<JobId>,
    /// The job's owner, found the same way.
    pub owner: Option<Owner>,
    /// The generation the message was sent for (absent when the body is unreadable).
    pub generation: Option<u32>,
    /// The job's kind, when the job exists.
    pub kind: Option<Kind>,
    /// The job's state now, when the job exists.
    pub state: Option<JobState>,
    /// The job's generation now, when the job exists.
    pub job_generation: Option<u32>,
    /// Why the job failed (its problem's title and detail), when it did.
    pub why: Option<String>,
    /// Why the body cannot be read, when it cannot: such a message needs an operator.
    pub unreadable: Option<String>,
    /// How many times the message was received.
    pub receive_count: u32,
    /// When it was dead-lettered, where the queue knows.
    pub dead_lettered_at: Option<Timestamp>,
}

/// What the redrive did with one dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum RedriveAction {
    /// The job had failed: it was reopened in `generation` and its message sent.
    Reopened {
        /// The job's new generation.
        generation: u32,
    },
    /// The job was still queued or running: a fresh message of its generation was sent.
    Resent,
    /// The copy was deleted without sending anything: the job finished, is gone, or the copy
    /// belongs to an older generation.
    Discarded {
        /// Why, in words for people.
        reason: String,
    },
    /// The body cannot be read: the message stays in the dead-letter queue for an operator.
    LeftUnreadable {
        /// Why it cannot be read.
        reason: String,
    },
    /// A step failed: the message stays in the dead-letter queue and the next redrive takes
    /// it again (safely: see the module's documentation).
    LeftAfterError {
        /// The error.
        error: String,
    },
}

/// One dead letter the redrive handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redriven {
    /// The queue's id of the dead letter.
    pub message_id: String,
    /// The job it named, when readable.
    pub job_id: Option<JobId>,
    /// What was done.
    #[serde(flatten)]
    pub action: RedriveAction,
}

/// What a redrive did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RedriveReport {
    /// Failed jobs reopened and sent back to the queue.
    pub reopened: u64,
    /// Open jobs whose message was sent again.
    pub resent: u64,
    /// Copies deleted without sending anything.
    pub discarded: u64,
    /// Unreadable messages left in the dead-letter queue.
    pub unreadable: u64,
    /// Messages left in the dead-letter queue because a step failed.
    pub errors: u64,
    /// When the dead-letter queue could not be read any further: why (the counts above are what
    /// was done before).
    pub stopped: Option<String>,
    /// Every message handled, in order.
    pub messages: Vec<Redriven>,
}

impl RedriveReport {
    fn push(&mut self, item: Redriven) {
        let counter = match item.action {
            RedriveAction::Reopened { .. } => &mut self.reopened,
            RedriveAction::Resent => &mut self.resent,
            RedriveAction::Discarded { .. } => &mut self.discarded,
            RedriveAction::LeftUnreadable { .. } => &mut self.unreadable,
            RedriveAction::LeftAfterError { .. } => &mut self.errors,
        };
        *counter += 1;
        self.messages.push(item);
    }

    /// Whether everything handled was sent back or discarded, and nothing was left behind.
    pub fn is_clean(&self) -> bool {
        self.unreadable == 0 && self.errors == 0 && self.stopped.is_none()
    }
}

/// The job named by an unreadable message's attributes, if they name one.
fn job_of_attributes(delivery: &Delivery) -> (Option<JobId>, Option<Owner>) {
    let id = delivery
        .attributes
        .get(attributes::JOB_ID)
        .and_then(|id| id.parse().ok());
    let owner = delivery
        .attributes
        .get(attributes::OWNER)
        .and_then(|o| Owner::parse(o.as_str()).ok());
    (id, owner)
}

fn unreadable_reason(e: Undecodable) -> String {
    match e {
        Undecodable::NewerSchema(v) => {
            format!("sent by a newer version of ackflow (schema {v}); redrive with that version")
        }
        Undecodable::Corrupt(why) => format!("not an ackflow message: {why}"),
    }
}

impl Ackflow {
    /// Up to `limit` messages of the dead-letter queue, each with its job's state, without
    /// removing them. An operator action: every owner's jobs.
    pub async fn list_dead_letters(&self, limit: usize) -> Result<Vec<DeadLetterView>, PortError> {
        let letters = self.queue.dead_letters(limit).await?;
        let mut out = Vec::with_capacity(letters.len());
        for letter in letters {
            let d = &letter.delivery;
            let mut view = DeadLetterView {
                message_id: d.message_id.clone(),
                job_id: None,
                owner: None,
                generation: None,
                kind: None,
                state: None,
                job_generation: None,
                why: None,
                unreadable: None,
                receive_count: d.receive_count,
                dead_lettered_at: letter.dead_lettered_at,
            };
            match decode::envelope(d) {
                Ok(envelope) => {
                    view.job_id = Some(envelope.job);
                    view.owner = Some(envelope.owner);
                    view.generation = Some(envelope.generation);
                }
                Err(e) => {
                    (view.job_id, view.owner) = job_of_attributes(d);
                    view.unreadable = Some(unreadable_reason(e));
                }
            }
            if let (Some(id), Some(owner)) = (view.job_id, view.owner.as_ref()) {
                if let Some(job) = self.store.get(owner, id).await? {
                    view.kind = Some(job.kind.clone());
                    view.state = Some(job.state);
                    view.job_generation = Some(job.generation);
                    view.why = job
                        .error
                        .as_ref()
                        .map(|p| format!("{}: {}", p.title, p.detail));
                }
            }
            out.push(view);
        }
        Ok(out)
    }

    /// Sends up to `limit` dead-lettered jobs back to the queue: a failed job is reopened in a
    /// new generation (fresh attempts and deadline, a note in its history) and sent; a job
    /// still queued or running is sent again; the copy is then deleted. Copies of finished,
    /// deleted or older-generation jobs are deleted; unreadable messages stay. Safe to repeat
    /// and to interrupt (see the module's documentation). An operator action: every owner's
    /// jobs.
    ///
    /// Fails only when the dead-letter queue cannot be read at all; later errors are in the
    /// report.
    pub async fn redrive_dead_letters(&self, limit: usize) -> Result<RedriveReport, PortError> {
        let mut report = RedriveReport::default();
        let mut received = 0;
        let mut empty_receives = 0;
        while received < limit {
            let want = (limit - received).min(RECEIVE_BATCH);
            let batch = match self.queue.receive_dead_letters(want, REDRIVE_HOLD).await {
                Ok(batch) => batch,
                Err(e) if received == 0 => return Err(e),
                Err(e) => {
                    warn!(error = %error_chain(&e), "could not receive more dead letters; stopping");
                    report.stopped = Some(error_chain(&e));
                    break;
                }
            };
            if batch.is_empty() {
                // SQS's short polling samples a subset of its servers, so an empty answer from
                // a small queue may not mean an empty queue: ask again a few times.
                empty_receives += 1;
                if empty_receives >= EMPTY_RECEIVES {
                    break;
                }
                continue;
            }
            empty_receives = 0;
            // Each message handled is hidden for REDRIVE_HOLD, so the next receive brings others
            // and the loop ends when the queue has nothing more to give.
            received += batch.len();
            for letter in batch {
                let item = self.redrive_one(&letter.delivery).await;
                report.push(item);
            }
        }
        info!(
            reopened = report.reopened,
            resent = report.resent,
            discarded = report.discarded,
            unreadable = report.unreadable,
            errors = report.errors,
            "redrive done"
        );
        Ok(report)
    }

    async fn redrive_one(&self, delivery: &Delivery) -> Redriven {
        let message_id = delivery.message_id.clone();
        let envelope = match decode::envelope(delivery) {
            Ok(envelope) => envelope,
            Err(e) => {
                let reason = unreadable_reason(e);
                let (job_id, _) = job_of_attributes(delivery);
                warn!(%message_id, job_id = ?job_id, %reason, "unreadable dead letter; left for an operator");
                return Redriven {
                    message_id,
                    job_id,
                    action: RedriveAction::LeftUnreadable { reason },
                };
            }
        };
        let job_id = Some(envelope.job);
        let action = match self.redrive_envelope(&envelope).await {
            Ok(action) => match self.queue.delete_dead_letter(&delivery.receipt).await {
                Ok(()) => action,
                Err(e) => RedriveAction::LeftAfterError {
                    error: format!(
                        "{action:?} done, but the dead letter was not deleted: {}",
                        error_chain(&e)
                    ),
                },
            },
            Err(e) => RedriveAction::LeftAfterError {
                error: error_chain(&e),
            },
        };
        match &action {
            RedriveAction::LeftAfterError { error } => {
                warn!(job_id = %envelope.job, %message_id, %error, "redrive step failed; the dead letter stays");
            }
            action => {
                info!(job_id = %envelope.job, %message_id, ?action, "dead letter redriven");
            }
        }
        Redriven {
            message_id,
            job_id,
            action,
        }
    }

    /// Reopens or re-sends the job of one dead letter; what to do with the copy is the caller's.
    async fn redrive_envelope(&self, envelope: &Envelope) -> Result<RedriveAction, PortError> {
        for _ in 0..CAS_ROUNDS {
            let Some(job) = self.store.get(&envelope.owner, envelope.job).await? else {
                return Ok(RedriveAction::Discarded {
                    reason: "the job no longer exists".to_owned(),
                });
            };
            if envelope.generation != job.generation {
                // Already redriven (or resubmitted) since this copy was sent: the generation
                // fences it, so the job is never reopened twice for one dead letter.
                return Ok(RedriveAction::Discarded {
                    reason: format!(
                        "the copy is of generation {}, the job is at {}",
                        envelope.generation, job.generation
                    ),
                });
            }
            match job.state {
                JobState::Failed => {
                    let reopened = match self
                        .write(
                            &job,
                            Change::Reopen {
                                note: REDRIVE_NOTE.to_owned(),
                            },
                            None,
                        )
                        .await
                    {
                        Ok(reopened) => reopened,
                        Err(TransitionError::Port(e)) => return Err(e),
                        Err(TransitionError::Conflict | TransitionError::Illegal(_)) => continue,
                    };
                    // If this send fails the job stays queued with a sweep time: the sweeper
                    // sends its message.
                    self.send(&reopened, Duration::ZERO).await?;
                    return Ok(RedriveAction::Reopened {
                        generation: reopened.generation,
                    });
                }
                JobState::Queued | JobState::Running => {
                    // The queue gave up on the message before the store gave up on the job
                    // (crashes, or the store unavailable): the job still needs a message. A
                    // duplicate of a message already on its way is harmless (writes are fenced).
                    self.send(&job, Duration::ZERO).await?;
                    return Ok(RedriveAction::Resent);
                }
                state => {
                    return Ok(RedriveAction::Discarded {
                        reason: format!("the job is {}", state.as_str()),
                    })
                }
            }
        }
        Err(PortError::unavailable(
            "redrive a job",
            "the job kept changing while it was redriven",
        ))
    }
}
