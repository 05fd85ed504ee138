//! The use cases: accept, handle one delivery, read status (and wait for a change), cancel,
//! list, report, sweep, and the operator's dead-letter cases. Both runtimes call exactly these;
//! they differ only in their ports.
//!
//! One module per use case (`accept`, `handle` and `settle` for the worker's path, `work` for
//! a worker that drives its own queue, `status`,
//! `cancel`, `list`, `report`, `sweep`, [`dlq`]); this one holds what they share: the
//! [`Ackflow`] hub and the error of reading or changing a job. Every change to a job goes
//! through one fenced write (`write`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Clock, JobState, Owner, PortError, Problem, Queue, Registry, Settings, Timestamp};

mod accept;
mod cancel;
mod decode;
pub mod dlq;
mod handle;
mod list;
mod progress;
mod report;
mod settle;
mod status;
mod sweep;
mod work;
mod write;

pub use accept::{AcceptError, Accepted, Recorded, Submission};
pub use handle::Disposition;
pub use settle::{Deleter, Settled};
pub use status::JobStatus;
pub use sweep::SweepReport;

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

/// ackflow's use cases over a store, a queue and the processors.
#[derive(Debug)]
pub struct Ackflow {
    store: Arc<dyn crate::JobStore>,
    queue: Arc<dyn Queue>,
    /// The store and the queue in one transaction, where the backend has it.
    outbox: Option<Arc<dyn crate::Outbox>>,
    registry: Registry,
    clock: Arc<dyn Clock>,
    settings: Settings,
    /// Typical accept→terminal time per owner, with when it was read: `Retry-After` and estimates
    /// come from it, and reading the aggregates on every request would double the store's load.
    typical_latency: Mutex<HashMap<Owner, (Timestamp, Option<Duration>)>>,
}

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
            outbox: None,
            registry,
            clock,
            settings,
            typical_latency: Mutex::new(HashMap::new()),
        }
    }

    /// Accepts through `outbox`: a new job and its message in one transaction. Its store and
    /// queue must be the ones given to [`Ackflow::new`].
    #[must_use]
    pub fn with_outbox(mut self, outbox: Arc<dyn crate::Outbox>) -> Self {
        self.outbox = Some(outbox);
        self
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
}
