//! Cancelling a queued job.

use super::write::{TransitionError, CAS_ROUNDS};
use super::{Ackflow, JobError};
use crate::{Change, Job, JobId, JobState, Owner};

impl Ackflow {
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
}
