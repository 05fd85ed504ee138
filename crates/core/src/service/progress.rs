//! The progress sink of one attempt: what a processor reports through its `JobContext`,
//! written to the store without ever racing the attempt's own final write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use tracing::debug;

use super::write::holds;
use crate::report::Deltas;
use crate::{
    Change, Clock, Job, JobStore, Progress, ProgressSink, Settings, Timestamp, WriteError,
};

/// Progress of one attempt, coalesced into conditional writes at most every
/// `progress_interval`. Holds the job as last written, so the attempt's final write is fenced
/// on the latest revision.
pub(super) struct StoreProgress {
    store: Arc<dyn JobStore>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    /// The job as stored (but with the newest progress) and when progress was last written.
    /// A tokio mutex: it is held across the store write so that two reports never race.
    state: tokio::sync::Mutex<(Job, Timestamp)>,
    abandoned: AtomicBool,
}

impl StoreProgress {
    /// The sink of the attempt that just wrote `running`.
    pub(super) fn new(
        store: Arc<dyn JobStore>,
        clock: Arc<dyn Clock>,
        settings: Settings,
        running: Job,
    ) -> Self {
        let now = clock.now();
        Self {
            store,
            clock,
            settings,
            state: tokio::sync::Mutex::new((running, now)),
            abandoned: AtomicBool::new(false),
        }
    }

    /// The job as this attempt last wrote it, with the newest progress: the attempt's outcome
    /// is written over exactly this revision.
    pub(super) async fn current(&self) -> Job {
        self.state.lock().await.0.clone()
    }
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
            Err(WriteError::Conflict) => match holds(self.store.as_ref(), &after).await {
                // The write landed and only its answer was lost: the attempt goes on.
                Ok(true) => *state = (after, now),
                // Someone else wrote (the lease ran out, the sweeper failed the job), or the
                // store cannot say: the attempt's outcome would be fenced out anyway.
                Ok(false) | Err(_) => self.abandoned.store(true, Ordering::Relaxed),
            },
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
