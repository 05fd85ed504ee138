//! Accepting work: validate with the processor, record the job, its input and its
//! Idempotency-Key in one atomic create, then send its message; or, through an [`Outbox`],
//! record and send in one transaction.
//!
//! [`Outbox`]: crate::Outbox

use std::time::Duration;

use serde_json::Value;
use tracing::{debug, error, warn};

use super::write::TransitionError;
use super::Ackflow;
use crate::canonical::body_hash;
use crate::job::attributes;
use crate::{
    error_chain, telemetry, Change, CorrelationId, Created, Envelope, FieldError, IdempotencyKey,
    IdempotencyRecord, Job, JobId, Kind, NewJob, OutgoingMessage, Owner, PortError, Problem,
    TraceHeader,
};

/// A request to do work.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Who asks.
    pub owner: Owner,
    /// The kind, as sent (checked here).
    pub kind: String,
    /// The input, as sent.
    pub input: Value,
    /// The client's Idempotency-Key, if any.
    pub idempotency_key: Option<IdempotencyKey>,
    /// The request's correlation id.
    pub correlation_id: CorrelationId,
    /// The request's X-Ray trace header, if any: the job's message carries it, so that the
    /// worker's trace is linked to the request's.
    pub trace_header: Option<TraceHeader>,
}

/// An accepted job.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The job as recorded.
    pub job: Job,
    /// When to look again.
    pub retry_after: Duration,
    /// Whether this answers an earlier submission with the same Idempotency-Key.
    pub replayed: bool,
}

/// Why a submission was not accepted. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// No processor for the kind.
    #[error("unknown kind {kind:?}")]
    UnknownKind {
        /// The kind sent.
        kind: String,
        /// The kinds served.
        known: Vec<String>,
    },
    /// The input does not fit the kind (pointers under `/input`).
    #[error("invalid input")]
    InvalidInput(Vec<FieldError>),
    /// The Idempotency-Key was used with another body.
    #[error("idempotency key reused with another body")]
    KeyReused,
    /// The store or the queue is down and nothing was recorded; retrying may help.
    #[error("the job could not be recorded")]
    Unavailable(#[source] PortError),
    /// The job was recorded, or may have been, but is not known to be on the queue: its create
    /// answered an error it may have outlived, or its send failed or timed out. Always a 503
    /// that names the job, so that the client can look at it instead of submitting it again: a
    /// job that exists and is queued is re-sent by the sweeper, one whose send surely failed is
    /// failed in words, and a retry with the same Idempotency-Key returns it (reopened if it
    /// was failed).
    #[error("job {job} may have been recorded but is not known to be queued")]
    NotQueued {
        /// The job's id, whether or not the store holds it.
        job: JobId,
        /// Whether the store is known to hold it.
        recorded: Recorded,
        /// Whether the submission carried an Idempotency-Key (the advice differs).
        keyed: bool,
        /// Why the create or the send failed.
        #[source]
        source: PortError,
    },
}

/// Whether a job that [`AcceptError::NotQueued`] names is in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// It is: its create succeeded, or a read after a failed create found it.
    Yes,
    /// Nobody knows: its create failed, and so did the read that would have told.
    Unknown,
}

impl AcceptError {
    /// The problem answered to the client.
    pub fn problem(&self) -> Problem {
        match self {
            Self::UnknownKind { kind, known } => Problem::unknown_kind(kind, known),
            Self::InvalidInput(errors) => Problem::invalid_input(errors.clone()),
            Self::KeyReused => Problem::idempotency_key_reused(),
            Self::Unavailable(_) => Problem::unavailable(),
            Self::NotQueued {
                job,
                recorded,
                keyed,
                ..
            } => Problem::not_queued(*job, *recorded, *keyed),
        }
    }
}

impl Ackflow {
    /// Validates, records and enqueues a job. A success means the job is durable and will reach a
    /// terminal state; an error means nothing was accepted.
    pub async fn accept(&self, submission: Submission) -> Result<Accepted, AcceptError> {
        let Submission {
            owner,
            kind,
            input,
            idempotency_key,
            correlation_id,
            trace_header,
        } = submission;
        let unknown = || AcceptError::UnknownKind {
            kind: kind.clone(),
            known: self.registry.kinds(),
        };
        let parsed_kind = Kind::parse(kind.as_str()).map_err(|_| unknown())?;
        let processor = self.registry.get(&parsed_kind).ok_or_else(unknown)?;
        processor.validate(&input).map_err(|errors| {
            AcceptError::InvalidInput(errors.into_iter().map(|e| e.under("/input")).collect())
        })?;

        let key = idempotency_key.clone().map(|key| IdempotencyRecord {
            key,
            body_hash: body_hash(&kind, &input),
        });
        let job = Job::new(
            NewJob {
                owner,
                kind: parsed_kind,
                correlation_id,
                idempotency_key,
            },
            self.clock.as_ref(),
            &self.settings,
        );
        let keyed = key.is_some();
        if let Some(outbox) = &self.outbox {
            let message = self.message_of(&job, Duration::ZERO, trace_header.as_ref());
            return match outbox
                .create_and_send(&job, &input, key.as_ref(), &message)
                .await
            {
                Ok(Created::New) => {
                    telemetry::accepted(&job);
                    let retry_after = self.retry_after(&job).await;
                    Ok(Accepted {
                        job,
                        retry_after,
                        replayed: false,
                    })
                }
                Ok(Created::Existing { job, same_body }) => {
                    self.replay(*job, same_body, keyed, trace_header.as_ref())
                        .await
                }
                Err(e) => {
                    // One transaction: nothing of the job, or of its message, was written.
                    error!(job_id = %job.id, error = %error_chain(&e), "could not record the job");
                    Err(AcceptError::Unavailable(e))
                }
            };
        }
        let created = match self.store.create(&job, &input, key.as_ref()).await {
            Ok(created) => created,
            Err(e @ PortError::Failed { .. }) => {
                error!(job_id = %job.id, error = %error_chain(&e), "could not record the job");
                return Err(AcceptError::Unavailable(e));
            }
            Err(e) => {
                return self
                    .after_failed_create(job, keyed, e, trace_header.as_ref())
                    .await
            }
        };
        match created {
            Created::New => {
                telemetry::accepted(&job);
                self.enqueue_new(job, keyed, trace_header.as_ref()).await
            }
            Created::Existing { job, same_body } => {
                self.replay(*job, same_body, keyed, trace_header.as_ref())
                    .await
            }
        }
    }

    /// A submission whose Idempotency-Key the owner already used for `existing`: that job,
    /// reopened and queued again when it never was (the first try got a 503), or, for another
    /// body, the key's misuse.
    async fn replay(
        &self,
        existing: Job,
        same_body: bool,
        keyed: bool,
        trace_header: Option<&TraceHeader>,
    ) -> Result<Accepted, AcceptError> {
        if !same_body {
            return Err(AcceptError::KeyReused);
        }
        if existing.never_queued() {
            // The first try got a 503: this retry is what the client was told to do.
            let reopened = self
                .write(
                    &existing,
                    Change::Reopen {
                        note: "Submitted again".to_owned(),
                    },
                    None,
                )
                .await
                .map_err(|e| match e {
                    TransitionError::Port(e) => AcceptError::Unavailable(e),
                    other => AcceptError::Unavailable(PortError::unavailable(
                        "reopen",
                        other.to_string(),
                    )),
                })?;
            return self.enqueue_new(reopened, keyed, trace_header).await;
        }
        debug!(job_id = %existing.id, "idempotent replay");
        let retry_after = self.retry_after(&existing).await;
        Ok(Accepted {
            job: existing,
            retry_after,
            replayed: true,
        })
    }

    /// A create that failed transiently may still have landed: an answer cut on its way back,
    /// a timeout after the write, or a DynamoDB 500 (whose write may or may not have happened).
    /// The job's id is fresh and random, so reading it tells. Found, the job is ours and goes
    /// on to its send as if the create had answered; not found, nothing was recorded; and when
    /// the read fails too, the client hears the job's id with the truth: it may exist.
    async fn after_failed_create(
        &self,
        job: Job,
        keyed: bool,
        create_error: PortError,
        trace_header: Option<&TraceHeader>,
    ) -> Result<Accepted, AcceptError> {
        match self.store.get(&job.owner, job.id).await {
            Ok(Some(stored)) => {
                warn!(job_id = %job.id, error = %error_chain(&create_error), "the job's create answered an error but the job is recorded; going on to queue it");
                telemetry::accepted(&stored);
                self.enqueue_new(stored, keyed, trace_header).await
            }
            Ok(None) => {
                error!(job_id = %job.id, error = %error_chain(&create_error), "could not record the job");
                Err(AcceptError::Unavailable(create_error))
            }
            Err(read_error) => {
                error!(job_id = %job.id, error = %error_chain(&create_error), read_error = %error_chain(&read_error), "could not record the job, nor read whether it was");
                Err(AcceptError::NotQueued {
                    job: job.id,
                    recorded: Recorded::Unknown,
                    keyed,
                    source: create_error,
                })
            }
        }
    }

    /// Sends the message of a just-recorded job. When the send surely failed, fails the job so
    /// that it does not linger; when its outcome is unknown (a timeout), the message may be on
    /// the queue, so the job stays `queued` and the sweeper re-sends it if it is not. Either way
    /// the client hears that the job was recorded and is not known to be queued, with its id,
    /// and a retry with the same Idempotency-Key returns the job.
    async fn enqueue_new(
        &self,
        job: Job,
        keyed: bool,
        trace_header: Option<&TraceHeader>,
    ) -> Result<Accepted, AcceptError> {
        let job_id = job.id;
        let not_queued = move |source| AcceptError::NotQueued {
            job: job_id,
            recorded: Recorded::Yes,
            keyed,
            source,
        };
        match self.send_traced(&job, Duration::ZERO, trace_header).await {
            Ok(()) => {
                let retry_after = self.retry_after(&job).await;
                Ok(Accepted {
                    job,
                    retry_after,
                    replayed: false,
                })
            }
            Err(e @ PortError::Ambiguous { .. }) => {
                // Failing the job here would make the worker drop a message that did arrive.
                warn!(job_id = %job.id, error = %error_chain(&e), "the job's message may not be on the queue; it stays queued and the sweeper re-sends it if it is not");
                Err(not_queued(e))
            }
            Err(e) => {
                error!(job_id = %job.id, error = %error_chain(&e), "could not enqueue the job");
                // If this write fails too, the job stays queued and the sweeper re-sends it;
                // a retry with the same Idempotency-Key returns it either way.
                if let Err(e2) = self
                    .write(&job, Change::Fail(Problem::enqueue_failed()), None)
                    .await
                {
                    warn!(job_id = %job.id, error = %e2, "could not mark the unqueued job failed; the sweeper will re-send it");
                }
                Err(not_queued(e))
            }
        }
    }

    /// Sends the message of `job`'s current generation, now or after `delay` (the sweeper's and
    /// the redrive's re-sends).
    pub(super) async fn send(&self, job: &Job, delay: Duration) -> Result<(), PortError> {
        self.send_traced(job, delay, None).await
    }

    /// Sends the message of `job`'s current generation, with the trace header of the request
    /// that caused it, when there is one.
    async fn send_traced(
        &self,
        job: &Job,
        delay: Duration,
        trace_header: Option<&TraceHeader>,
    ) -> Result<(), PortError> {
        self.queue
            .send(self.message_of(job, delay, trace_header))
            .await
    }

    /// The message of `job`'s current generation.
    fn message_of(
        &self,
        job: &Job,
        delay: Duration,
        trace_header: Option<&TraceHeader>,
    ) -> OutgoingMessage {
        let envelope = Envelope::for_job(job);
        let mut attributes = envelope.attributes();
        if let Some(trace) = trace_header {
            attributes.push((
                attributes::TRACE_HEADER.to_owned(),
                trace.as_str().to_owned(),
            ));
        }
        OutgoingMessage {
            body: envelope.to_body(),
            attributes,
            delay,
        }
    }
}
