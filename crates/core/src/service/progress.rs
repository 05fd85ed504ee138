//! The progress sink of one attempt: what a processor reports through its `JobContext`,
//! written to the store without ever racing the attempt's own final write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use tracing::debug;

use super::write::holds;
use crate::report::Deltas;
use crate::{
    Change, Clock, Job, JobStore, PortError, Progress, ProgressSink, Settings, Timestamp,
    WriteError,
};

/// Progress of one attempt, coalesced into conditional writes at most every
/// `progress_interval`. Holds the job as last written, so the attempt's final write is fenced
/// on the latest revision.
pub(super) struct StoreProgress {
    store: Arc<dyn JobStore>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    /// A tokio mutex: it is held across the store write so that two reports never race.
    state: tokio::sync::Mutex<State>,
    abandoned: AtomicBool,
}

struct State {
    /// The job as stored, but with the newest progress.
    job: Job,
    /// When progress was last written.
    written_at: Timestamp,
    /// A progress write that failed in a way that may have landed (a lost answer, a timeout, a
    /// 500): until a read tells, the stored revision may be this one rather than `job`'s, and
    /// every later write fenced on `job` would be refused as if the attempt had been taken over.
    unconfirmed: Option<Job>,
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
            state: tokio::sync::Mutex::new(State {
                job: running,
                written_at: now,
                unconfirmed: None,
            }),
            abandoned: AtomicBool::new(false),
        }
    }

    /// The job as this attempt last wrote it, with the newest progress: the attempt's outcome
    /// is written over exactly this revision.
    pub(super) async fn current(&self) -> Job {
        let mut state = self.state.lock().await;
        self.confirm(&mut state).await;
        state.job.clone()
    }

    /// Reads what an unconfirmed progress write did. Landed, the attempt goes on from the
    /// revision it wrote (keeping the newest progress); not landed, from the one before; someone
    /// else's write, the next fenced write finds out. Returns whether the revision is known: a
    /// failed read leaves the write unconfirmed.
    async fn confirm(&self, state: &mut State) -> bool {
        let Some(unconfirmed) = state.unconfirmed.take() else {
            return true;
        };
        match self.store.get(&unconfirmed.owner, unconfirmed.id).await {
            Ok(Some(stored)) if stored == unconfirmed => {
                let newest = std::mem::take(&mut state.job.progress);
                state.job = stored;
                state.job.progress = newest;
                true
            }
            Ok(_) => true,
            Err(e) => {
                debug!(job_id = %unconfirmed.id, error = %e, "could not read whether progress was written");
                state.unconfirmed = Some(unconfirmed);
                false
            }
        }
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
        if now.since(state.written_at) < self.settings.progress_interval
            || !self.confirm(&mut state).await
        {
            // Not written now; the next write (progress or outcome) carries it.
            state.job.progress = progress;
            return;
        }
        let Ok(after) = state
            .job
            .apply(Change::Progress(progress.clone()), now, &self.settings)
        else {
            self.abandoned.store(true, Ordering::Relaxed);
            return;
        };
        // Unconfirmed until the store answers: should the attempt's timeout drop this future
        // mid-write, the write may still land, and the outcome must be fenced on what it wrote.
        state.unconfirmed = Some(after.clone());
        let written = self
            .store
            .update(&state.job, &after, None, &Deltas::default())
            .await;
        state.unconfirmed = None;
        match written {
            Ok(()) => (state.job, state.written_at) = (after, now),
            Err(WriteError::Conflict) => match holds(self.store.as_ref(), &after).await {
                // The write landed and only its answer was lost: the attempt goes on.
                Ok(true) => (state.job, state.written_at) = (after, now),
                // Someone else wrote (the lease ran out, the sweeper failed the job), or the
                // store cannot say: the attempt's outcome would be fenced out anyway.
                Ok(false) | Err(_) => self.abandoned.store(true, Ordering::Relaxed),
            },
            Err(WriteError::Port(e)) => {
                debug!(job_id = %state.job.id, error = %e, "progress not written, or its answer lost");
                state.job.progress = progress;
                if !matches!(e, PortError::Failed { .. }) {
                    state.unconfirmed = Some(after);
                }
            }
        }
    }

    fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed)
    }
}
