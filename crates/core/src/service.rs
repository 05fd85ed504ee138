//! The use cases: accept, handle one delivery, read status (and wait for a change), cancel,
//! list, report, sweep. Both runtimes call exactly these; they differ only in their ports.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt as _;
use serde_json::Value;
use tracing::{debug, error, info, warn, Instrument as _};

use crate::canonical::body_hash;
use crate::job::attributes;
use crate::report::{Deltas, Report};
use crate::telemetry;
use crate::{
    Change, Clock, CorrelationId, Created, Delivery, Envelope, FieldError, IdempotencyKey,
    IdempotencyRecord, IllegalTransition, Job, JobContext, JobId, JobState, Kind, ListQuery,
    NewJob, OutgoingMessage, Owner, Page, PortError, Problem, Progress, ProgressSink, Queue,
    Registry, Settings, Timestamp, TraceHeader, WriteError, SCHEMA_VERSION,
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

/// Why a job could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// No such job for this owner.
    #[error("job not found")]
    NotFound,
    /// The job is not in a state that allows this.
    #[error("the job is {0}")]
    WrongState(JobState),
    /// The store is down.
    #[error("the store is unavailable")]
    Unavailable(#[from] PortError),
}

impl JobError {
    /// The problem answered to the client.
    pub fn problem(&self) -> Problem {
        match self {
            Self::NotFound => Problem::job_not_found(),
            Self::WrongState(state) => Problem::not_cancellable(*state),
            Self::Unavailable(_) => Problem::unavailable(),
        }
    }
}

/// A job as its owner sees it.
#[derive(Debug, Clone)]
pub struct JobStatus {
    /// The header.
    pub job: Job,
    /// The result, when succeeded.
    pub result: Option<Value>,
    /// When to look again, while not terminal.
    pub retry_after: Option<Duration>,
    /// When it is expected to end, from recent processing times; `None` when terminal or unknown.
    pub estimated_completion: Option<Timestamp>,
}

/// What to do with a delivery after handling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Done with it (the job is terminal, or the message is stale): delete it.
    Delete,
    /// Let it come back after this long (backoff, or another attempt holds the job).
    RetryAfter(Duration),
    /// Unreadable: move it to the dead-letter queue for an operator.
    DeadLetter,
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SweepReport {
    /// Jobs failed because their deadline passed.
    pub failed: u32,
    /// Jobs whose message was sent again.
    pub resent: u32,
    /// Expired terminal jobs deleted.
    pub purged: u64,
}

/// ackflow's use cases over a store, a queue and the processors.
#[derive(Debug)]
pub struct Ackflow {
    store: Arc<dyn crate::JobStore>,
    queue: Arc<dyn Queue>,
    registry: Registry,
    clock: Arc<dyn Clock>,
    settings: Settings,
    /// Typical accept→terminal time per owner, with when it was read: `Retry-After` and estimates
    /// come from it, and reading the aggregates on every request would double the store's load.
    typical_latency: Mutex<HashMap<Owner, (Timestamp, Option<Duration>)>>,
}

/// How long a typical-latency figure is reused.
const ESTIMATE_TTL: Duration = Duration::from_secs(10);
/// How often a long-poll reads the job again.
const LONG_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Page size bounds of listings.
const MAX_PAGE: usize = 100;
const DEFAULT_PAGE: usize = 20;
/// Conditional writes that lost a race are retried this often before giving up.
const CAS_ROUNDS: usize = 4;

/// The operator's dead-letter use cases (`ackflow dlq list|redrive`).
pub mod dlq;

impl Ackflow {
    /// The use cases over these ports.
    pub fn new(
        store: Arc<dyn crate::JobStore>,
        queue: Arc<dyn Queue>,
        registry: Registry,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> Self {
        Self {
            store,
            queue,
            registry,
            clock,
            settings,
            typical_latency: Mutex::new(HashMap::new()),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The processors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn crate::JobStore> {
        &self.store
    }

    /// The queue.
    pub fn queue(&self) -> &Arc<dyn Queue> {
        &self.queue
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    // ---- accept -------------------------------------------------------------------------------

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
                let enqueue_failed =
                    existing.error.as_ref().and_then(Problem::slug) == Some("enqueue-failed");
                if existing.state == JobState::Failed && enqueue_failed {
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

    async fn send(&self, job: &Job, delay: Duration) -> Result<(), PortError> {
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

    // ---- status -------------------------------------------------------------------------------

    /// The job `id` of `owner`, with its result when succeeded.
    pub async fn status(&self, owner: &Owner, id: JobId) -> Result<JobStatus, JobError> {
        let job = self.store.get(owner, id).await?.ok_or(JobError::NotFound)?;
        self.status_of(job).await
    }

    async fn status_of(&self, job: Job) -> Result<JobStatus, JobError> {
        let result = if job.has_result {
            self.store.result(&job.owner, job.id).await?
        } else {
            None
        };
        let (retry_after, estimated_completion) = if job.state.is_terminal() {
            (None, None)
        } else {
            let typical = self.typical_latency(&job.owner).await;
            (
                Some(self.retry_after_from(&job, typical)),
                typical.map(|t| job.submitted_at.plus(t)),
            )
        };
        Ok(JobStatus {
            job,
            result,
            retry_after,
            estimated_completion,
        })
    }

    /// Like [`Ackflow::status`], but when the job's ETag is `etag`, waits up to `wait` (capped by
    /// the long-poll cap) for it to change. A terminal job never changes: it is answered at once.
    pub async fn wait_for_change(
        &self,
        owner: &Owner,
        id: JobId,
        etag: Option<&str>,
        wait: Duration,
    ) -> Result<JobStatus, JobError> {
        let give_up = tokio::time::Instant::now() + wait.min(self.settings.long_poll_cap);
        loop {
            let job = self.store.get(owner, id).await?.ok_or(JobError::NotFound)?;
            let unchanged = etag.is_some_and(|e| e == job.etag());
            if !unchanged || job.state.is_terminal() || tokio::time::Instant::now() >= give_up {
                return self.status_of(job).await;
            }
            tokio::time::sleep_until(
                (tokio::time::Instant::now() + LONG_POLL_INTERVAL).min(give_up),
            )
            .await;
        }
    }

    /// The typical accept→terminal time of `owner`'s recent jobs (median), cached briefly.
    async fn typical_latency(&self, owner: &Owner) -> Option<Duration> {
        let now = self.clock.now();
        if let Ok(cache) = self.typical_latency.lock() {
            if let Some((at, value)) = cache.get(owner) {
                if now.since(*at) < ESTIMATE_TTL {
                    return *value;
                }
            }
        }
        let since = now.minus(self.settings.report_window);
        let value = match self.store.figures(owner, since).await {
            Ok(figures) => Report::from_figures(figures, self.settings.report_window, now, None)
                .latency
                .map(|l| Duration::from_millis(l.p50_ms)),
            Err(e) => {
                debug!(error = %e, "no processing statistics for the estimate");
                None
            }
        };
        if let Ok(mut cache) = self.typical_latency.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(owner.clone(), (now, value));
        }
        value
    }

    async fn retry_after(&self, job: &Job) -> Duration {
        let typical = self.typical_latency(&job.owner).await;
        self.retry_after_from(job, typical)
    }

    /// An honest `Retry-After`: the time left until a typical job like this one ends, at least
    /// one second, at most half a minute (beyond that, polling sooner costs little).
    fn retry_after_from(&self, job: &Job, typical: Option<Duration>) -> Duration {
        let age = self.clock.now().since(job.submitted_at);
        let left = typical.map_or(Duration::from_secs(1), |t| t.saturating_sub(age));
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Duration::from_secs(secs.clamp(1, 30))
    }

    // ---- cancel, list, report -----------------------------------------------------------------

    /// Cancels a queued job. Its message, when it arrives, is dropped.
    pub async fn cancel(&self, owner: &Owner, id: JobId) -> Result<Job, JobError> {
        for _ in 0..CAS_ROUNDS {
            let job = self.store.get(owner, id).await?.ok_or(JobError::NotFound)?;
            if job.state != JobState::Queued {
                return Err(JobError::WrongState(job.state));
            }
            match self.write(&job, Change::Cancel, None).await {
                Ok(cancelled) => return Ok(cancelled),
                Err(TransitionError::Conflict | TransitionError::Illegal(_)) => continue,
                Err(TransitionError::Port(e)) => return Err(JobError::Unavailable(e)),
            }
        }
        let job = self.store.get(owner, id).await?.ok_or(JobError::NotFound)?;
        Err(JobError::WrongState(job.state))
    }

    /// The owner's jobs, newest first; `limit` is bounded to 1–100 (default 20).
    pub async fn list(&self, owner: &Owner, mut query: ListQuery) -> Result<Page, PortError> {
        query.limit = if query.limit == 0 {
            DEFAULT_PAGE
        } else {
            query.limit.min(MAX_PAGE)
        };
        self.store.list(owner, &query).await
    }

    /// The owner's report, from maintained aggregates.
    pub async fn report(&self, owner: &Owner) -> Result<Report, PortError> {
        let now = self.clock.now();
        let figures = self
            .store
            .figures(owner, now.minus(self.settings.report_window))
            .await?;
        let queue = match self.queue.depth().await {
            Ok(depth) => Some(depth),
            Err(e) => {
                warn!(error = %error_chain(&e), "queue depth unavailable for the report");
                None
            }
        };
        Ok(Report::from_figures(
            figures,
            self.settings.report_window,
            now,
            queue,
        ))
    }

    // ---- the worker ---------------------------------------------------------------------------

    /// Handles one delivery: decides from the job's stored state whether to run an attempt, runs
    /// it (timeout and panics caught), and records the outcome with conditional writes. Never
    /// panics and never fails: every outcome is a [`Disposition`].
    pub async fn handle(&self, delivery: &Delivery) -> Disposition {
        let envelope = match decode(delivery) {
            Ok(envelope) => envelope,
            Err(Undecodable::NewerSchema(v)) => {
                // A newer deployment sent it; a newer worker will read it. Not poison.
                warn!(message_id = %delivery.message_id, schema = v, "message from a newer version; returning it");
                return Disposition::RetryAfter(self.settings.backoff_max);
            }
            Err(Undecodable::Corrupt(why)) => return self.poison(delivery, why).await,
        };
        // Every line about this delivery carries the job, its request's correlation id and the
        // trace header it came with; kind and attempt are filled in once the job is read.
        let span = tracing::info_span!(
            "job",
            job_id = %envelope.job,
            correlation_id = %envelope.correlation_id,
            generation = envelope.generation,
            kind = tracing::field::Empty,
            attempt = tracing::field::Empty,
            trace_header = tracing::field::Empty,
        );
        if let Some(trace) = delivery.trace_header() {
            span.record("trace_header", trace.as_str());
        }
        debug!(parent: &span, message_id = %delivery.message_id, receive_count = delivery.receive_count, "delivery received");
        match self.handle_envelope(&envelope).instrument(span).await {
            Ok(disposition) => disposition,
            Err(e) => {
                warn!(job_id = %envelope.job, error = %error_chain(&e), "store unavailable; the message will come back");
                Disposition::RetryAfter(self.settings.backoff_base)
            }
        }
    }

    /// An unreadable message: fail its job (found through the message attributes) and set the
    /// message aside for an operator.
    async fn poison(&self, delivery: &Delivery, why: String) -> Disposition {
        let owner = delivery
            .attributes
            .get(attributes::OWNER)
            .and_then(|o| Owner::parse(o.as_str()).ok());
        let id = delivery
            .attributes
            .get(attributes::JOB_ID)
            .and_then(|id| id.parse::<JobId>().ok());
        error!(message_id = %delivery.message_id, job_id = ?id, %why, "unreadable message");
        telemetry::dead_lettered(delivery, id);
        if let (Some(owner), Some(id)) = (owner, id) {
            if let Err(e) = self
                .fail_open_job(&owner, id, Problem::unreadable_message())
                .await
            {
                warn!(job_id = %id, error = %error_chain(&e), "could not fail the job of an unreadable message");
                return Disposition::RetryAfter(self.settings.backoff_base);
            }
        }
        Disposition::DeadLetter
    }

    async fn fail_open_job(
        &self,
        owner: &Owner,
        id: JobId,
        problem: Problem,
    ) -> Result<(), PortError> {
        for _ in 0..CAS_ROUNDS {
            let Some(job) = self.store.get(owner, id).await? else {
                return Ok(());
            };
            if job.state.is_terminal() {
                return Ok(());
            }
            match self.write(&job, Change::Fail(problem.clone()), None).await {
                Ok(_) => return Ok(()),
                Err(TransitionError::Port(e)) => return Err(e),
                Err(_) => continue,
            }
        }
        Ok(())
    }

    async fn handle_envelope(&self, envelope: &Envelope) -> Result<Disposition, PortError> {
        for _ in 0..CAS_ROUNDS {
            let Some(job) = self.store.get(&envelope.owner, envelope.job).await? else {
                info!(job_id = %envelope.job, "message for a job that no longer exists; dropping it");
                return Ok(Disposition::Delete);
            };
            let span = tracing::Span::current();
            span.record("kind", job.kind.as_str());
            span.record("attempt", job.attempts);
            if envelope.generation != job.generation {
                debug!(job_id = %job.id, "message of another generation; dropping it");
                return Ok(Disposition::Delete);
            }
            let now = self.clock.now();
            match job.state {
                s if s.is_terminal() => return Ok(Disposition::Delete),
                JobState::Running if !job.lease_expired(now) => {
                    // A duplicate while an attempt holds the job: come back when its lease ends,
                    // in case that attempt dies.
                    let left = job
                        .running_until
                        .map_or(Duration::ZERO, |until| until.since(now));
                    return Ok(Disposition::RetryAfter(left + Duration::from_millis(100)));
                }
                _ => {}
            }
            if now.plus(self.settings.lease()) > job.deadline {
                // Starting now could outlive the deadline: end it instead, so that a running
                // attempt never races the sweeper.
                return self
                    .finish_with(&job, Change::Fail(Problem::deadline_exceeded()))
                    .await;
            }
            if job.attempts >= job.max_attempts {
                // The last attempt died without recording its outcome (crash or lost write).
                return self
                    .finish_with(
                        &job,
                        Change::Fail(Problem::attempts_exhausted(job.attempts)),
                    )
                    .await;
            }
            match self.write(&job, Change::Start, None).await {
                Ok(running) => {
                    span.record("attempt", running.attempts);
                    return self.run_attempt(running).await;
                }
                Err(TransitionError::Port(e)) => return Err(e),
                Err(TransitionError::Conflict | TransitionError::Illegal(_)) => continue,
            }
        }
        Ok(Disposition::RetryAfter(self.settings.backoff_base))
    }

    /// Writes a terminal change and deletes the message (whatever won a race, the job is done
    /// or someone else holds it).
    async fn finish_with(&self, job: &Job, change: Change) -> Result<Disposition, PortError> {
        match self.write(job, change, None).await {
            Ok(_) | Err(TransitionError::Conflict | TransitionError::Illegal(_)) => {
                Ok(Disposition::Delete)
            }
            Err(TransitionError::Port(e)) => Err(e),
        }
    }

    async fn run_attempt(&self, running: Job) -> Result<Disposition, PortError> {
        let input = self.store.input(&running.owner, running.id).await?;
        let processor = self.registry.get(&running.kind).cloned();
        let sink = Arc::new(StoreProgress {
            store: Arc::clone(&self.store),
            clock: Arc::clone(&self.clock),
            settings: self.settings.clone(),
            state: tokio::sync::Mutex::new((running.clone(), self.clock.now())),
            abandoned: AtomicBool::new(false),
        });
        let outcome = match (input, processor) {
            (None, _) => Outcome::Rejected(Problem::unreadable_message()),
            (Some(_), None) => Outcome::Transient(format!(
                "no processor for kind '{}' in this deployment",
                running.kind
            )),
            (Some(input), Some(processor)) => {
                let ctx = JobContext::new(
                    running.id,
                    running.owner.clone(),
                    running.attempts,
                    running.max_attempts,
                    running.deadline,
                    sink.clone(),
                );
                let work = AssertUnwindSafe(processor.process(input, &ctx)).catch_unwind();
                match tokio::time::timeout(self.settings.worker_timeout, work).await {
                    Err(_) => Outcome::Transient(format!(
                        "timed out after {:?}",
                        self.settings.worker_timeout
                    )),
                    Ok(Err(panic)) => {
                        Outcome::Transient(format!("panicked: {}", panic_message(&panic)))
                    }
                    Ok(Ok(Ok(result))) => Outcome::Succeeded(result),
                    Ok(Ok(Err(crate::ProcessError::Rejected(r)))) => {
                        Outcome::Rejected(r.into_problem(&running.kind))
                    }
                    Ok(Ok(Err(crate::ProcessError::Transient(e)))) => {
                        Outcome::Transient(error_chain(e.as_ref()))
                    }
                }
            }
        };
        let current = sink.state.lock().await.0.clone();
        self.record_outcome(current, outcome).await
    }

    async fn record_outcome(
        &self,
        current: Job,
        outcome: Outcome,
    ) -> Result<Disposition, PortError> {
        let id = current.id;
        let (change, result, disposition) = match outcome {
            Outcome::Succeeded(result) => {
                let size = serde_json::to_vec(&result).map_or(usize::MAX, |v| v.len());
                if size > self.settings.result_limit {
                    error!(job_id = %id, size, "result too large");
                    (
                        Change::Fail(Problem::result_too_large(self.settings.result_limit)),
                        None,
                        Disposition::Delete,
                    )
                } else {
                    (Change::Succeed, Some(result), Disposition::Delete)
                }
            }
            Outcome::Rejected(problem) => (Change::Fail(problem), None, Disposition::Delete),
            Outcome::Transient(why) if current.attempts >= current.max_attempts => {
                warn!(job_id = %id, attempt = current.attempts, %why, "last attempt failed; failing the job");
                (
                    Change::Fail(Problem::attempts_exhausted(current.attempts)),
                    None,
                    Disposition::Delete,
                )
            }
            Outcome::Transient(why) => {
                let delay = self.settings.backoff(current.attempts);
                warn!(job_id = %id, attempt = current.attempts, %why, retry_in = ?delay, "attempt failed; retrying");
                let note = format!(
                    "Attempt {} of {} hit a temporary problem; trying again in {} s",
                    current.attempts,
                    current.max_attempts,
                    delay.as_secs().max(1)
                );
                let retry_at = self.clock.now().plus(delay);
                (
                    Change::Release { retry_at, note },
                    None,
                    Disposition::RetryAfter(delay),
                )
            }
        };
        match self.write(&current, change, result.as_ref()).await {
            Ok(_) => Ok(disposition),
            Err(TransitionError::Port(e)) => Err(e),
            Err(TransitionError::Conflict | TransitionError::Illegal(_)) => {
                // Someone else changed the job while this attempt ran (the sweeper failed it, or the
                // lease ran out and another delivery took it over): this attempt's outcome is dropped.
                warn!(job_id = %id, "the job changed during the attempt; its outcome is discarded");
                match self.store.get(&current.owner, id).await? {
                    Some(job)
                        if !job.state.is_terminal() && job.generation == current.generation =>
                    {
                        Ok(Disposition::RetryAfter(self.settings.backoff_base))
                    }
                    _ => Ok(Disposition::Delete),
                }
            }
        }
    }

    /// Carries out a disposition on a queue that the runtime drives itself (the single machine;
    /// on AWS the event source mapping deletes what the batch response does not name).
    pub async fn settle(
        &self,
        delivery: &Delivery,
        disposition: Disposition,
    ) -> Result<(), PortError> {
        match disposition {
            Disposition::Delete => self.queue.delete(&delivery.receipt).await,
            Disposition::RetryAfter(delay) => {
                self.queue.change_visibility(&delivery.receipt, delay).await
            }
            Disposition::DeadLetter => self.queue.dead_letter(delivery).await,
        }
    }

    // ---- the sweeper --------------------------------------------------------------------------

    /// Fails non-terminal jobs past their deadline, re-sends the messages of jobs that look lost,
    /// and purges expired terminal jobs. Reads the index of non-terminal jobs, never scans.
    pub async fn sweep(&self) -> Result<SweepReport, PortError> {
        const BATCH: usize = 100;
        const ROUNDS: usize = 20;
        let mut report = SweepReport::default();
        let now = self.clock.now();
        for _ in 0..ROUNDS {
            let due = self.store.due_for_sweep(now, BATCH).await?;
            let full = due.len() == BATCH;
            for job in due {
                if now >= job.deadline {
                    match self
                        .write(&job, Change::Fail(Problem::deadline_exceeded()), None)
                        .await
                    {
                        Ok(_) => {
                            warn!(job_id = %job.id, state = %job.state, "deadline passed; job failed");
                            report.failed += 1;
                        }
                        Err(TransitionError::Port(e)) => return Err(e),
                        Err(_) => {}
                    }
                    continue;
                }
                if job.state == JobState::Running && !job.lease_expired(now) {
                    continue; // not actually due (its lease was extended by a racing write)
                }
                // Queued for long, or running with an expired lease: the message may be lost.
                // A duplicate is harmless (every write is fenced), a lost job is not.
                if let Err(e) = self.send(&job, Duration::ZERO).await {
                    warn!(job_id = %job.id, error = %error_chain(&e), "sweeper could not re-send; will try again");
                    continue;
                }
                match self.write(&job, Change::Resent, None).await {
                    Ok(_) => {
                        info!(job_id = %job.id, state = %job.state, "message re-sent by the sweeper");
                        report.resent += 1;
                    }
                    Err(TransitionError::Port(e)) => return Err(e),
                    Err(_) => {}
                }
            }
            if !full {
                break;
            }
        }
        report.purged = self.store.purge_expired(now, 1000).await?;
        Ok(report)
    }

    // ---- writes -------------------------------------------------------------------------------

    /// Applies `change` to `job` and writes it conditionally, with the aggregates' deltas.
    async fn write(
        &self,
        job: &Job,
        change: Change,
        result: Option<&Value>,
    ) -> Result<Job, TransitionError> {
        let after = job.apply(change, self.clock.now(), &self.settings)?;
        let deltas = Deltas::between(job, &after);
        match self.store.update(job, &after, result, &deltas).await {
            Ok(()) => {
                telemetry::transition(job, &after);
                Ok(after)
            }
            Err(WriteError::Conflict) => Err(TransitionError::Conflict),
            Err(WriteError::Port(e)) => Err(TransitionError::Port(e)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum TransitionError {
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error("the job changed since it was read")]
    Conflict,
    #[error(transparent)]
    Port(PortError),
}

enum Outcome {
    Succeeded(Value),
    Rejected(Problem),
    Transient(String),
}

enum Undecodable {
    NewerSchema(u16),
    Corrupt(String),
}

fn decode(delivery: &Delivery) -> Result<Envelope, Undecodable> {
    let value: Value =
        serde_json::from_str(&delivery.body).map_err(|e| Undecodable::Corrupt(e.to_string()))?;
    let version = value
        .get("v")
        .and_then(Value::as_u64)
        .ok_or_else(|| Undecodable::Corrupt("no schema version".into()))?;
    let version =
        u16::try_from(version).map_err(|_| Undecodable::Corrupt("bad schema version".into()))?;
    if version > SCHEMA_VERSION {
        return Err(Undecodable::NewerSchema(version));
    }
    serde_json::from_value(value).map_err(|e| Undecodable::Corrupt(e.to_string()))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".to_owned())
}

/// An error and its sources on one line, for logs.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Progress of one attempt, coalesced into conditional writes at most every
/// `progress_interval`. Holds the job as last written, so the attempt's final write is fenced
/// on the latest revision.
struct StoreProgress {
    store: Arc<dyn crate::JobStore>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    /// The job as stored (but with the newest progress) and when progress was last written.
    /// A tokio mutex: it is held across the store write so that two reports never race.
    state: tokio::sync::Mutex<(Job, Timestamp)>,
    abandoned: AtomicBool,
}

#[async_trait]
impl ProgressSink for StoreProgress {
    async fn report(&self, progress: Progress) {
        if self.abandoned.load(Ordering::Relaxed) {
            return;
        }
        let mut state = self.state.lock().await;
        let now = self.clock.now();
        if now.since(state.1) < self.settings.progress_interval {
            // Not written now; the next write (progress or outcome) carries it.
            state.0.progress = progress;
            return;
        }
        let Ok(after) = state
            .0
            .apply(Change::Progress(progress.clone()), now, &self.settings)
        else {
            self.abandoned.store(true, Ordering::Relaxed);
            return;
        };
        match self
            .store
            .update(&state.0, &after, None, &Deltas::default())
            .await
        {
            Ok(()) => *state = (after, now),
            Err(WriteError::Conflict) => self.abandoned.store(true, Ordering::Relaxed),
            Err(WriteError::Port(e)) => {
                debug!(job_id = %state.0.id, error = %e, "progress not written");
                state.0.progress = progress;
            }
        }
    }

    fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed)
    }
}
