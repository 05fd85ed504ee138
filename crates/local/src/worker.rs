//! The in-process worker: receives batches from the SQLite queue and runs each delivery through
//! [`Ackflow::work`], at most `concurrency` at once.

use std::sync::Arc;
use std::time::Duration;

use ackflow_core::{error_chain, Ackflow};
use ackflow_sqlite::SqliteQueue;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Largest batch taken from the queue at once: one transaction receives the messages and starts
/// their attempts, so a larger batch is fewer commits; it stays small enough that the writer's
/// other requests (accepts, outcomes) never wait long behind it.
const MAX_BATCH: usize = 64;
/// How long an idle worker waits before looking at the queue again, even without a wake-up.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Runs until `shutdown` is cancelled, then lets the attempts in flight finish for up to
/// `grace`. Attempts still running after that are dropped: their leases expire and their
/// messages come back, so nothing is lost.
pub async fn run(
    app: Arc<Ackflow>,
    queue: Arc<SqliteQueue>,
    concurrency: usize,
    grace: Duration,
    shutdown: CancellationToken,
) {
    // Permits bound the attempts in flight; a batch never asks for more messages than there are
    // free permits, so a received message never waits (and never burns its visibility) in memory.
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    loop {
        while let Some(done) = tasks.try_join_next() {
            if let Err(e) = done {
                error!(error = %e, "a worker task failed");
            }
        }
        let free = permits.available_permits().min(MAX_BATCH);
        if free == 0 {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(done) = tasks.join_next() => {
                    if let Err(e) = done { error!(error = %e, "a worker task failed"); }
                }
            }
            continue;
        }
        // Not raced against shutdown: the receive is short, and once its transaction has started
        // attempts, dropping it would leave jobs running with nobody to run them until their
        // leases end, each having spent an attempt.
        let batch = match app.receive(free).await {
            Ok(batch) => batch,
            Err(e) => {
                warn!(error = %error_chain(&e), "queue unavailable; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(IDLE_WAIT) => continue,
                }
            }
        };
        if batch.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = queue.wait_for_work(IDLE_WAIT) => continue,
            }
        }
        for received in batch {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                break;
            };
            let app = Arc::clone(&app);
            tasks.spawn(async move {
                let _permit = permit;
                if let Err(e) = app.work(&received).await {
                    // The message comes back after its visibility timeout; fencing makes that safe.
                    warn!(message_id = %received.delivery.message_id, error = %error_chain(&e), "could not settle a delivery");
                }
            });
        }
    }
    info!(
        in_flight = tasks.len(),
        "worker stopping; letting attempts in flight finish"
    );
    let drained = tokio::time::timeout(grace, async {
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                error!(error = %e, "a worker task failed");
            }
        }
    })
    .await;
    if drained.is_err() {
        warn!(
            abandoned = tasks.len(),
            "attempts still running at shutdown; their messages will come back"
        );
        tasks.abort_all();
    }
}

/// Runs the sweeper every `period` until `shutdown` is cancelled.
pub async fn sweep_periodically(app: Arc<Ackflow>, period: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match app.sweep().await {
            Ok(report)
                if report.failed + report.resent + report.errors > 0 || report.purged > 0 =>
            {
                info!(
                    failed = report.failed,
                    resent = report.resent,
                    purged = report.purged,
                    errors = report.errors,
                    "sweep"
                );
            }
            Ok(_) => {}
            Err(e) => warn!(error = %error_chain(&e), "sweep failed; will try again"),
        }
    }
}
