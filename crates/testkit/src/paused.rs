//! Stores under tokio's paused clock.
//!
//! A test on a paused clock (`#[tokio::test(start_paused = true)]`) lets time jump to the next
//! timer whenever the runtime has nothing to do. A store that answers from a thread of its own,
//! as the SQLite writer does, looks idle to the runtime while it works, so time would jump in
//! the middle of a write: a deadline fires that real time would never have reached. The one
//! thing tokio waits for is work on its blocking pool, so [`ClockHeld`] keeps a blocking task
//! waiting for as long as each call is in flight.

use std::future::Future;

use ackflow_core::report::Deltas;
use ackflow_core::{
    async_trait, Created, Figures, IdempotencyRecord, Job, JobId, JobPart, JobStore, ListQuery,
    Owner, Page, PortError, Timestamp, WriteError,
};
use serde_json::Value;

/// A [`JobStore`] that delegates to `inner` and holds a paused clock still during each call.
#[derive(Debug)]
pub struct ClockHeld<S> {
    inner: S,
}

impl<S: JobStore> ClockHeld<S> {
    /// `inner`, each of whose calls a paused clock waits for.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

/// Runs `call` while a blocking task waits for it to finish.
async fn held<T>(call: impl Future<Output = T>) -> T {
    let (finished, wait) = std::sync::mpsc::channel::<()>();
    let holder = tokio::task::spawn_blocking(move || {
        // Returns when `finished` is dropped.
        let _ = wait.recv();
    });
    let answer = call.await;
    drop(finished);
    holder.await.expect("the holding task only waits");
    answer
}

#[async_trait]
impl<S: JobStore> JobStore for ClockHeld<S> {
    async fn create(
        &self,
        job: &Job,
        input: &Value,
        key: Option<&IdempotencyRecord>,
    ) -> Result<Created, PortError> {
        held(self.inner.create(job, input, key)).await
    }

    async fn get(&self, owner: &Owner, id: JobId) -> Result<Option<Job>, PortError> {
        held(self.inner.get(owner, id)).await
    }

    async fn input(&self, owner: &Owner, id: JobId) -> Result<Option<Value>, PortError> {
        held(self.inner.input(owner, id)).await
    }

    async fn result(&self, owner: &Owner, id: JobId) -> Result<Option<Value>, PortError> {
        held(self.inner.result(owner, id)).await
    }

    async fn get_with(
        &self,
        owner: &Owner,
        id: JobId,
        part: JobPart,
    ) -> Result<Option<(Job, Option<Value>)>, PortError> {
        held(self.inner.get_with(owner, id, part)).await
    }

    async fn update(
        &self,
        before: &Job,
        after: &Job,
        result: Option<&Value>,
        deltas: &Deltas,
    ) -> Result<(), WriteError> {
        held(self.inner.update(before, after, result, deltas)).await
    }

    async fn list(&self, owner: &Owner, query: &ListQuery) -> Result<Page, PortError> {
        held(self.inner.list(owner, query)).await
    }

    async fn figures(&self, owner: &Owner, since: Timestamp) -> Result<Figures, PortError> {
        held(self.inner.figures(owner, since)).await
    }

    async fn due_for_sweep(&self, now: Timestamp, limit: usize) -> Result<Vec<Job>, PortError> {
        held(self.inner.due_for_sweep(now, limit)).await
    }

    async fn purge_expired(&self, now: Timestamp, limit: usize) -> Result<u64, PortError> {
        held(self.inner.purge_expired(now, limit)).await
    }
}
