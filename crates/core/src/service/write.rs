//! The one fenced write every use case changes a job through: the core computes the next job
//! with [`Job::apply`], and the store writes it only if the stored revision is the one read.

use serde_json::Value;

use super::Ackflow;
use crate::report::Deltas;
use crate::{
    telemetry, Change, IllegalTransition, Job, JobStore, PortError, QueueStep, Receipt, WriteError,
};

/// Conditional writes that lost a race are retried this often before giving up.
pub(super) const CAS_ROUNDS: usize = 4;

/// Why a transition was not written.
#[derive(Debug, thiserror::Error)]
pub(super) enum TransitionError {
    /// The change is not allowed from the job's state.
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    /// Another writer changed the job since it was read: read it again and decide anew.
    #[error("the job changed since it was read")]
    Conflict,
    /// The store is down.
    #[error(transparent)]
    Port(PortError),
}

impl Ackflow {
    /// Applies `change` to `job` and writes it conditionally, with the aggregates' deltas.
    pub(super) async fn write(
        &self,
        job: &Job,
        change: Change,
        result: Option<&Value>,
    ) -> Result<Job, TransitionError> {
        let after = job.apply(change, self.clock.now(), &self.settings)?;
        self.write_prepared(job, after, result).await
    }

    /// Writes `after`, computed from `job` with [`Job::apply`], conditionally on `job`'s
    /// revision. A caller that retries a write whose outcome it does not know retries the same
    /// `after`: recomputed, it would carry a new `updated_at`, and the check that a conflict is
    /// the earlier try's own landed write ([`holds`]) could never recognise it.
    pub(super) async fn write_prepared(
        &self,
        job: &Job,
        after: Job,
        result: Option<&Value>,
    ) -> Result<Job, TransitionError> {
        self.write_settling(job, after, result, None).await
    }

    /// [`Ackflow::write_prepared`], and with `settle` and an outbox, the delivery's queue step in
    /// the same transaction. Without an outbox the step is left to the caller, who settles the
    /// delivery after the write as on AWS.
    pub(super) async fn write_settling(
        &self,
        job: &Job,
        after: Job,
        result: Option<&Value>,
        settle: Option<(&Receipt, QueueStep)>,
    ) -> Result<Job, TransitionError> {
        let deltas = Deltas::between(job, &after);
        let written = match (settle, &self.outbox) {
            (Some((receipt, step)), Some(outbox)) => {
                outbox
                    .update_and_settle(job, &after, result, &deltas, receipt, step)
                    .await
            }
            _ => self.store.update(job, &after, result, &deltas).await,
        };
        // A landed write that lost its answer carried its queue step with it: [`holds`] says
        // that the one transaction holding both committed.
        match written {
            Ok(()) => {
                telemetry::transition(job, &after);
                Ok(after)
            }
            Err(WriteError::Conflict) => {
                if holds(self.store.as_ref(), &after)
                    .await
                    .map_err(TransitionError::Port)?
                {
                    telemetry::transition(job, &after);
                    Ok(after)
                } else {
                    Err(TransitionError::Conflict)
                }
            }
            Err(WriteError::Port(e)) => Err(TransitionError::Port(e)),
        }
    }
}

/// Whether the store holds exactly `written`: asked after a conditional write answered a
/// conflict. A write can take effect and lose its answer; the client's retry of it then meets
/// its own revision and is refused (DynamoDB's `PutItem` carries no idempotency token, so the
/// SDK's retry of a write whose answer was cut does exactly this). Every write stamps
/// `updated_at` and bumps the revision, so no other writer leaves the same job behind: equal
/// means this write landed, with its result and aggregates, which it wrote atomically.
pub(super) async fn holds(store: &dyn JobStore, written: &Job) -> Result<bool, PortError> {
    Ok(store.get(&written.owner, written.id).await?.as_ref() == Some(written))
}
