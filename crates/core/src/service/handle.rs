//! The worker's path: one delivery in, a [`Disposition`] out. Decides from the job's stored
//! state whether to run an attempt, runs it (timeout and panics caught) and records its outcome
//! with conditional writes.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use serde_json::Value;
use tracing::{debug, error, info, warn, Instrument as _};

use super::decode::{self, Undecodable};
use super::progress::StoreProgress;
use super::write::{TransitionError, CAS_ROUNDS};
use super::Ackflow;
use crate::job::attributes;
use crate::{
    error_chain, panic_message, telemetry, Change, Clock, Delivery, Envelope, Job, JobContext,
    JobId, JobPart, JobState, Owner, PortError, Problem, ProcessError, QueueStep, Receipt,
    Settings, StartPlan, Started, Timestamp,
};

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

impl Ackflow {
    /// Handles one delivery: decides from the job's stored state whether to run an attempt, runs
    /// it (timeout and panics caught), and records the outcome with conditional writes. Never
    /// panics and never fails: every outcome is a [`Disposition`].
    pub async fn handle(&self, delivery: &Delivery) -> Disposition {
        self.handle_by(delivery, None).await
    }

    /// [`Ackflow::handle`] by a worker whose own time ends (a Lambda invocation): no attempt
    /// starts whose lease would end after `finish_by`, so that its outcome, written within the
    /// lease, is written in the worker's time too. A delivery there is too little time for
    /// comes back at once (`RetryAfter(0)`) for a worker that has the time, rather than having
    /// its work done and then cut off unwritten.
    pub async fn handle_by(
        &self,
        delivery: &Delivery,
        finish_by: Option<Timestamp>,
    ) -> Disposition {
        self.handle_delivery(delivery, finish_by, None, None)
            .await
            .disposition
    }

    /// The body of [`Ackflow::handle_by`]. With `settle_with`, an attempt's outcome is written
    /// together with its delivery's queue step (through the outbox), and the answer says so;
    /// `started` is the attempt the receive already started.
    pub(super) async fn handle_delivery(
        &self,
        delivery: &Delivery,
        finish_by: Option<Timestamp>,
        settle_with: Option<&Receipt>,
        started: Option<Started>,
    ) -> Handled {
        let envelope = match decode::envelope(delivery) {
            Ok(envelope) => envelope,
            Err(Undecodable::NewerSchema(v)) => {
                // A newer deployment sent it; a newer worker will read it. Not poison.
                warn!(message_id = %delivery.message_id, schema = v, "message from a newer version; returning it");
                return Disposition::RetryAfter(self.settings.backoff_max).into();
            }
            Err(Undecodable::Corrupt(why)) => return self.poison(delivery, why).await.into(),
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
        match self
            .handle_envelope(&envelope, finish_by, settle_with, started)
            .instrument(span)
            .await
        {
            Ok(handled) => handled,
            Err(e) => {
                warn!(job_id = %envelope.job, error = %error_chain(&e), "store unavailable; the message will come back");
                Disposition::RetryAfter(self.settings.backoff_base).into()
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

    async fn handle_envelope(
        &self,
        envelope: &Envelope,
        finish_by: Option<Timestamp>,
        settle_with: Option<&Receipt>,
        started: Option<Started>,
    ) -> Result<Handled, PortError> {
        if let Some(Started { before, running }) = started {
            // The receive's transaction wrote the start (on one machine, through the outbox).
            telemetry::transition(&before, &running);
            let span = tracing::Span::current();
            span.record("kind", running.kind.as_str());
            span.record("attempt", running.attempts);
            let input = self.store.input(&running.owner, running.id).await?;
            return self.run_attempt(running, input, settle_with).await;
        }
        for _ in 0..CAS_ROUNDS {
            // The input is read with the job, in one read where the store can: an attempt
            // needs both, and a delivery that does not start one is rare.
            let Some((job, input)) = self
                .store
                .get_with(&envelope.owner, envelope.job, JobPart::Input)
                .await?
            else {
                info!(job_id = %envelope.job, "message for a job that no longer exists; dropping it");
                return Ok(Disposition::Delete.into());
            };
            let span = tracing::Span::current();
            span.record("kind", job.kind.as_str());
            span.record("attempt", job.attempts);
            let now = self.clock.now();
            match next_step(&self.settings, envelope, &job, now, finish_by) {
                Next::Drop => {
                    debug!(job_id = %job.id, state = %job.state.as_str(), generation = job.generation, "message of an ended job or of another generation; dropping it");
                    return Ok(Disposition::Delete.into());
                }
                Next::AfterTheLease(left) => {
                    return Ok(Disposition::RetryAfter(left + Duration::from_millis(100)).into());
                }
                Next::End(change) => return self.finish_with(&job, change).await.map(Into::into),
                Next::TooLittleTime => {
                    info!(job_id = %job.id, "too little time left here for an attempt; the message goes back at once");
                    return Ok(Disposition::RetryAfter(Duration::ZERO).into());
                }
                Next::Start => {}
            }
            match self.write(&job, Change::Start, None).await {
                Ok(running) => {
                    span.record("attempt", running.attempts);
                    return self.run_attempt(running, input, settle_with).await;
                }
                Err(TransitionError::Port(e)) => return Err(e),
                Err(TransitionError::Conflict | TransitionError::Illegal(_)) => continue,
            }
        }
        Ok(Disposition::RetryAfter(self.settings.backoff_base).into())
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

    async fn run_attempt(
        &self,
        running: Job,
        input: Option<Value>,
        settle_with: Option<&Receipt>,
    ) -> Result<Handled, PortError> {
        let processor = self.registry.get(&running.kind).cloned();
        let sink = Arc::new(StoreProgress::new(
            Arc::clone(&self.store),
            Arc::clone(&self.clock),
            self.settings.clone(),
            running.clone(),
        ));
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
                        Outcome::Transient(format!("panicked: {}", panic_message(panic.as_ref())))
                    }
                    Ok(Ok(Ok(result))) => Outcome::Succeeded(result),
                    Ok(Ok(Err(ProcessError::Rejected(r)))) => {
                        Outcome::Rejected(r.into_problem(&running.kind))
                    }
                    Ok(Ok(Err(ProcessError::Transient(e)))) => {
                        Outcome::Transient(error_chain(e.as_ref()))
                    }
                }
            }
        };
        let current = sink.current().await;
        self.record_outcome(current, outcome, settle_with).await
    }

    async fn record_outcome(
        &self,
        current: Job,
        outcome: Outcome,
        settle_with: Option<&Receipt>,
    ) -> Result<Handled, PortError> {
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
        let settle = settle_with
            .filter(|_| self.outbox.is_some())
            .and_then(|receipt| Some((receipt, disposition.queue_step()?)));
        match self
            .write_outcome(&current, change, result.as_ref(), settle)
            .await
        {
            Ok(_) => Ok(Handled {
                disposition,
                settled: settle.is_some(),
            }),
            Err(TransitionError::Port(e)) => Err(e),
            Err(TransitionError::Conflict | TransitionError::Illegal(_)) => {
                // Someone else changed the job while this attempt ran (the sweeper failed it, or the
                // lease ran out and another delivery took it over): this attempt's outcome is dropped.
                warn!(job_id = %id, "the job changed during the attempt; its outcome is discarded");
                match self.store.get(&current.owner, id).await? {
                    Some(job)
                        if !job.state.is_terminal() && job.generation == current.generation =>
                    {
                        Ok(Disposition::RetryAfter(self.settings.backoff_base).into())
                    }
                    _ => Ok(Disposition::Delete.into()),
                }
            }
        }
    }

    /// Writes an attempt's outcome, retrying a store that is unavailable (or whose answer was
    /// lost) for as long as the attempt's lease lasts: the work is done, and dropping it would have the processor run again once
    /// the lease runs out. The write is fenced on the revision, so a retry can never overwrite a
    /// job someone else took over. Past the lease, the error is returned and the delivery comes
    /// back as after any failed write.
    async fn write_outcome(
        &self,
        current: &Job,
        change: Change,
        result: Option<&Value>,
        settle: Option<(&Receipt, QueueStep)>,
    ) -> Result<Job, TransitionError> {
        // The lease is measured once on the job's clock and then waited out on tokio's, so a
        // store that never recovers cannot keep the worker here past the lease.
        let lease_left = current
            .running_until
            .map_or(Duration::ZERO, |until| until.since(self.clock.now()));
        let give_up_at = tokio::time::Instant::now() + lease_left;
        // Computed once: a retry after a lost answer writes the very same job, so that meeting
        // its own landed write is recognised as success rather than as a takeover.
        let after = current.apply(change, self.clock.now(), &self.settings)?;
        let mut retry = 0;
        loop {
            let error = match self
                .write_settling(current, after.clone(), result, settle)
                .await
            {
                // An outage or a lost answer may pass; a permanent failure will not.
                Err(TransitionError::Port(
                    e @ (PortError::Unavailable { .. } | PortError::Ambiguous { .. }),
                )) => e,
                other => return other,
            };
            let delay = outcome_retry_delay(retry);
            if tokio::time::Instant::now() + delay >= give_up_at {
                warn!(job_id = %current.id, retries = retry, error = %error_chain(&error), "the attempt's outcome could not be written within its lease; the delivery will come back");
                return Err(TransitionError::Port(error));
            }
            retry += 1;
            warn!(job_id = %current.id, retry, retry_in = ?delay, error = %error_chain(&error), "the attempt's outcome was not written; retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

/// The wait before retry `n` of an outcome's write: 100 ms doubling up to 2 s, with jitter so
/// that the workers of one outage do not return together.
fn outcome_retry_delay(n: u32) -> Duration {
    let cap_ms = 100u64 << n.min(4);
    Duration::from_millis(fastrand::u64(cap_ms / 2..=cap_ms))
}

/// What a delivery does with its job, decided from the job as read.
enum Next {
    /// The job ended, or the message is of another generation: the message is done.
    Drop,
    /// A duplicate while an attempt holds the job: come back when its lease (this much) ends,
    /// in case that attempt dies.
    AfterTheLease(Duration),
    /// End the job with this change instead of starting it.
    End(Change),
    /// The worker's own time ends before an attempt's lease would.
    TooLittleTime,
    /// Start an attempt.
    Start,
}

fn next_step(
    settings: &Settings,
    envelope: &Envelope,
    job: &Job,
    now: Timestamp,
    finish_by: Option<Timestamp>,
) -> Next {
    if envelope.generation != job.generation || job.state.is_terminal() {
        return Next::Drop;
    }
    if job.state == JobState::Running && !job.lease_expired(now) {
        let left = job
            .running_until
            .map_or(Duration::ZERO, |until| until.since(now));
        return Next::AfterTheLease(left);
    }
    if now.plus(settings.lease()) > job.deadline {
        // Starting now could outlive the deadline: end it instead, so that a running attempt
        // never races the sweeper.
        return Next::End(Change::Fail(Problem::deadline_exceeded()));
    }
    if job.attempts >= job.max_attempts {
        // The last attempt died without recording its outcome (crash or lost write).
        return Next::End(Change::Fail(Problem::attempts_exhausted(job.attempts)));
    }
    if finish_by.is_some_and(|by| now.plus(settings.lease()) > by) {
        return Next::TooLittleTime;
    }
    Next::Start
}

/// The core's start decision for an adapter's receive transaction
/// ([`crate::Outbox::receive_and_start`]): the same [`next_step`] the worker takes after reading
/// the job itself.
#[derive(Debug)]
pub(super) struct AttemptStarts {
    pub(super) clock: Arc<dyn Clock>,
    pub(super) settings: Settings,
}

impl StartPlan for AttemptStarts {
    fn envelope_of(&self, delivery: &Delivery) -> Option<Envelope> {
        decode::envelope(delivery).ok()
    }

    fn start(&self, envelope: &Envelope, job: &Job) -> Option<Job> {
        if envelope.job != job.id || envelope.owner != job.owner {
            return None;
        }
        let now = self.clock.now();
        match next_step(&self.settings, envelope, job, now, None) {
            Next::Start => job.apply(Change::Start, now, &self.settings).ok(),
            _ => None,
        }
    }
}

/// A delivery handled: what to do with it, and whether that is already done.
#[derive(Debug, Clone, Copy)]
pub(super) struct Handled {
    pub(super) disposition: Disposition,
    /// The disposition was carried out in the same transaction as the attempt's outcome.
    pub(super) settled: bool,
}

impl From<Disposition> for Handled {
    fn from(disposition: Disposition) -> Self {
        Self {
            disposition,
            settled: false,
        }
    }
}

impl Disposition {
    /// The queue step that carries this out for a received message, where there is one.
    fn queue_step(self) -> Option<QueueStep> {
        match self {
            Disposition::Delete => Some(QueueStep::Delete),
            Disposition::RetryAfter(delay) => Some(QueueStep::ComeBackAfter(delay)),
            // Dead-lettering moves the message to another queue: not an outcome's step.
            Disposition::DeadLetter => None,
        }
    }
}

/// How an attempt ended, before it is written.
enum Outcome {
    Succeeded(Value),
    Rejected(Problem),
    Transient(String),
}
