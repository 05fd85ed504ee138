//! Accepting work: validate with the processor, record the job, its input and its
//! Idempotency-Key in one atomic create, then send its message.

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
    /// The store or the queue is down; retrying may help.
    #[error("the job could not be recorded or queued")]
    Unavailable(#[source] PortError),
    /// The job was recorded but its message could not be sent (or its send timed out). Always
    /// a 503, whatever the queue's error: a retry with the same Idempotency-Key returns the job
    /// (reopened if it was failed), so trying again later is exactly what the client should do.
    #[error("job {job} was recorded but not queued")]
    NotQueued {
        /// The recorded job.
        job: JobId,
        /// Why the send failed.
        #[source]
        source: PortError,
    },
}

impl AcceptError {
    /// The problem answered to the client.
    pub fn problem(&self) -> Problem {
        match self {
            Self::UnknownKind { kind, known } => Problem::unknown_kind(kind, known),
            Self::InvalidInput(errors) => Problem::invalid_input(errors.clone()),
            Self::KeyReused => Problem::idempotency_key_reused(),
            Self::Unavailable(_) | Self::NotQueued { .. } => Problem::unavailable(),
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
        let created = self
            .store
            .create(&job, &input, key.as_ref())
            .await
            .map_err(|e| {
                error!(job_id = %job.id, error = %error_chain(&e), "could not record the job");
                AcceptError::Unavailable(e)
            })?;
        match created {
            Created::New => {
                telemetry::accepted(&job);
                self.enqueue_new(job, trace_header.as_ref()).await
            }
            Created::Existing {
                same_body: false, ..
            } => Err(AcceptError::KeyReused),
            Created::Existing {
                job: existing,
                same_body: true,
            } => {
                let existing = *existing;
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
                    return self.enqueue_new(reopened, trace_header.as_ref()).await;
                }
                debug!(job_id = %existing.id, "idempotent replay");
                let retry_after = self.retry_after(&existing).await;
                Ok(Accepted {
                    job: existing,
                    retry_after,
                    replayed: true,
                })
            }
        }
    }

    /// Sends the message of a just-recorded job. When the send surely failed, fails the job so
    /// that it does not linger; when its outcome is unknown (a timeout), the message may be on
    /// the queue, so the job stays `queued` and the sweeper re-sends it if it is not. Either way
    /// the client hears that the queue is unavailable, and a retry with the same
    /// Idempotency-Key returns the job.
    async fn enqueue_new(
        &self,
        job: Job,
        trace_header: Option<&TraceHeader>,
    ) -> Result<Accepted, AcceptError> {
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
                Err(AcceptError::NotQueued {
                    job: job.id,
                    source: e,
                })
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
                Err(AcceptError::NotQueued {
                    job: job.id,
                    source: e,
                })
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
        let envelope = Envelope::for_job(job);
        let mut attributes = envelope.attributes();
        if let Some(trace) = trace_header {
            attributes.push((
                attributes::TRACE_HEADER.to_owned(),
                trace.as_str().to_owned(),
            ));
        }
        self.queue
            .send(OutgoingMessage {
                body: envelope.to_body(),
                attributes,
                delay,
            })
            .await
    }
}
