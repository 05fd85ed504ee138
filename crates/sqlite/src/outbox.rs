//! The [`Outbox`] of the single machine: the job store and the job queue live in one SQLite
//! file, so a new job and its message are written in one transaction, and so are an attempt's
//! outcome and the delete or delay of its message.

use std::sync::Arc;
use std::time::Duration;

use ackflow_core::report::Deltas;
use ackflow_core::{
    async_trait, Created, IdempotencyRecord, Job, Outbox, OutgoingMessage, PortError, QueueStep,
    Receipt, Received, StartPlan, Started, WriteError,
};
use serde_json::Value;

use crate::{store, Db, SqliteQueue};

/// The store's and the queue's writes of one step, committed together.
#[derive(Debug, Clone)]
pub struct SqliteOutbox {
    db: Db,
    queue: Arc<SqliteQueue>,
}

impl SqliteOutbox {
    /// The outbox over `db`'s store and `queue`, which must be in `db`.
    pub fn new(db: Db, queue: Arc<SqliteQueue>) -> Self {
        Self { db, queue }
    }
}

#[async_trait]
impl Outbox for SqliteOutbox {
    async fn create_and_send(
        &self,
        job: &Job,
        input: &Value,
        key: Option<&IdempotencyRecord>,
        message: &OutgoingMessage,
    ) -> Result<Created, PortError> {
        let row = self
            .queue
            .row_of(message)
            .map_err(|e| PortError::failed("create and queue a job", e))?;
        let (job, input, key) = (job.clone(), input.clone(), key.cloned());
        let created = self
            .db
            .call("create and queue a job", move |c| {
                let created = store::create(c, &job, &input, key.as_ref())?;
                if matches!(created, Created::New) {
                    row.insert(c)?;
                }
                Ok(created)
            })
            .await?;
        if matches!(created, Created::New) {
            self.queue.wake();
        }
        Ok(created)
    }

    async fn update_and_settle(
        &self,
        before: &Job,
        after: &Job,
        result: Option<&Value>,
        deltas: &Deltas,
        receipt: &Receipt,
        step: QueueStep,
    ) -> Result<(), WriteError> {
        let step = self.queue.step_of(receipt, step);
        let makes_visible = step.makes_visible();
        let update = store::JobUpdate::of(before, after, result, deltas);
        let written = self
            .db
            .call("write an outcome and settle its message", move |c| {
                let written = update.write(c)?;
                if written {
                    step.apply(c)?;
                }
                Ok(written)
            })
            .await?;
        if !written {
            return Err(WriteError::Conflict);
        }
        if makes_visible {
            self.queue.wake();
        }
        Ok(())
    }

    async fn receive_and_start(
        &self,
        max: usize,
        visibility: Duration,
        plan: Arc<dyn StartPlan>,
    ) -> Result<Vec<Received>, PortError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let receive = self.queue.receive_of(max, visibility);
        self.db
            .call("receive messages and start their attempts", move |c| {
                let deliveries = receive.run(c)?;
                let mut received = Vec::with_capacity(deliveries.len());
                for delivery in deliveries {
                    // One job that cannot be read or started (a row written by another version)
                    // must not hold up the whole receive: its delivery goes to the worker
                    // unstarted, whose own path retries it and in the end dead-letters it.
                    // A failed start has written nothing: its update's savepoint rolled back.
                    let started = start(c, plan.as_ref(), &delivery).unwrap_or_else(|e| {
                        tracing::warn!(message_id = %delivery.message_id, error = %ackflow_core::error_chain(&e), "could not start an attempt in the receive; the worker will decide");
                        None
                    });
                    received.push(Received { delivery, started });
                }
                Ok(received)
            })
            .await
    }
}

/// Reads `delivery`'s job and writes the start `plan` decides on, if any.
fn start(
    conn: &mut rusqlite::Connection,
    plan: &dyn StartPlan,
    delivery: &ackflow_core::Delivery,
) -> Result<Option<Started>, crate::DbError> {
    let Some(envelope) = plan.envelope_of(delivery) else {
        return Ok(None);
    };
    let Some(before) = store::select_job(conn, envelope.owner.as_str(), &envelope.job.to_string())?
    else {
        return Ok(None);
    };
    let Some(running) = plan.start(&envelope, &before) else {
        return Ok(None);
    };
    // Read and written in the one writer's transaction: nothing can change the job between.
    let written = store::update(
        conn,
        &before,
        &running,
        None,
        &Deltas::between(&before, &running),
    )?;
    Ok(written.then_some(Started { before, running }))
}
