//! The one fenced write every use case changes a job through: the core computes the next job
//! with [`Job::apply`], and the store writes it only if the stored revision is the one read.

use serde_json::Value;

use super::Ackflow;
use crate::report::Deltas;
use crate::{telemetry, Change, IllegalTransition, Job, PortError, WriteError};

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
