//! The use cases of `ackflow-core`, driven against the real SQLite adapters in a temporary
//! directory, with a clock the tests move by hand.

// Test code: a failed expectation is a failed test, and its message says which.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use ackflow_core::{
    AcceptError, Ackflow, Change, Clock, CorrelationId, Delivery, Disposition, IdempotencyKey,
    JobError, JobId, JobState, JobStore, ManualClock, OutgoingMessage, Owner, Queue, QueueDepth,
    Settings, Submission, Timestamp,
};
use ackflow_processors::order::SqliteOrderBook;
use ackflow_processors::registry_with;
use ackflow_sqlite::{Db, Durability, SqliteQueue, SqliteStore};
use ackflow_testkit::faults::{Fault, FaultPlan, FaultyQueue, Op};
use serde_json::{json, Value};

struct World {
    app: Ackflow,
    clock: Arc<ManualClock>,
    store: Arc<SqliteStore>,
    queue: Arc<FaultyQueue<SqliteQueue>>,
    /// The queue's faults: sends made to fail, to play an outage of SQS or of the queue table,
    /// or to time out (the message sent or not, the answer lost).
    faults: Arc<FaultPlan>,
    _dir: tempfile::TempDir,
}

fn world_with(settings: Settings) -> World {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(&dir.path().join("ackflow.db"), Durability::Normal).expect("db opens");
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
    let store = Arc::new(SqliteStore::new(db.clone()));
    let sqlite_queue =
        SqliteQueue::new(db.clone(), "jobs", settings.max_attempts + 3, clock.clone())
            .expect("queue");
    let faults = FaultPlan::new();
    let queue = Arc::new(FaultyQueue::new(sqlite_queue, faults.clone()));
    let book = Arc::new(SqliteOrderBook::new(db).expect("order book"));
    let registry = registry_with(book, clock.clone(), true);
    let app = Ackflow::new(
        store.clone(),
        queue.clone(),
        registry,
        clock.clone(),
        settings,
    );
    World {
        app,
        clock,
        store,
        queue,
        faults,
        _dir: dir,
    }
}

fn world() -> World {
    world_with(Settings::default())
}

fn owner() -> Owner {
    Owner::anonymous()
}

impl World {
    async fn submit(
        &self,
        kind: &str,
        input: Value,
    ) -> Result<ackflow_core::Accepted, AcceptError> {
        self.submit_keyed(kind, input, None).await
    }

    async fn submit_keyed(
        &self,
        kind: &str,
        input: Value,
        key: Option<&str>,
    ) -> Result<ackflow_core::Accepted, AcceptError> {
        self.app
            .accept(Submission {
                owner: owner(),
                kind: kind.to_owned(),
                input,
                idempotency_key: key.map(|k| IdempotencyKey::parse(k).expect("valid key")),
                correlation_id: CorrelationId::random(),
                trace_header: None,
            })
            .await
    }

    /// Receives one visible message.
    async fn next_delivery(&self) -> Option<Delivery> {
        let mut batch = self
            .queue
            .receive(1, self.app.settings().visibility_timeout)
            .await
            .expect("receive");
        batch.pop()
    }

    /// Receives the next message and handles and settles it like the worker does.
    async fn work_once(&self) -> Option<Disposition> {
        let delivery = self.next_delivery().await?;
        let disposition = self.app.handle(&delivery).await;
        self.app
            .settle(&delivery, disposition, ackflow_core::Deleter::Worker)
            .await
            .expect("settle");
        Some(disposition)
    }

    async fn job(&self, id: JobId) -> ackflow_core::Job {
        self.store
            .get(&owner(), id)
            .await
            .expect("store")
            .expect("job exists")
    }

    async fn depth(&self) -> QueueDepth {
        self.queue.depth().await.expect("depth")
    }
}

#[tokio::test]
async fn an_accepted_job_is_recorded_queued_with_one_message() {
    let w = world();
    let accepted = w
        .submit("demo", json!({"steps": 1}))
        .await
        .expect("accepted");
    assert!(!accepted.replayed);
    assert!(accepted.retry_after >= Duration::from_secs(1));
    let job = w.job(accepted.job.id).await;
    assert_eq!((job.state, job.attempts), (JobState::Queued, 0));
    assert_eq!(w.depth().await.waiting, 1);
}

#[tokio::test]
async fn a_delivery_runs_the_job_to_success_and_its_message_is_deleted() {
    let w = world();
    let id = w
        .submit("demo", json!({"steps": 2}))
        .await
        .expect("accepted")
        .job
        .id;
    assert_eq!(w.work_once().await, Some(Disposition::Delete));
    let status = w.app.status(&owner(), id).await.expect("status");
    assert_eq!(status.job.state, JobState::Succeeded);
    assert_eq!(status.job.attempts, 1);
    assert_eq!(status.job.progress.percent, 100);
    assert_eq!(status.result.expect("a result")["attempt"], 1);
    assert_eq!(
        status.retry_after, None,
        "a terminal job needs no Retry-After"
    );
    assert_eq!(w.depth().await, QueueDepth::default());
}

#[tokio::test]
async fn a_transient_failure_requeues_with_backoff_and_a_later_attempt_succeeds() {
    let w = world();
    let id = w
        .submit("demo", json!({"fail_attempts": 1}))
        .await
        .expect("accepted")
        .job
        .id;
    let Some(Disposition::RetryAfter(delay)) = w.work_once().await else {
        panic!("expected a retry")
    };
    assert!(delay <= w.app.settings().backoff_base);
    let job = w.job(id).await;
    assert_eq!((job.state, job.attempts), (JobState::Queued, 1));
    assert!(
        job.progress.message.contains("Attempt 1 of 5"),
        "{}",
        job.progress.message
    );
    assert!(
        w.next_delivery().await.is_none(),
        "the message waits out its backoff"
    );

    w.clock.advance(delay + Duration::from_millis(1));
    assert_eq!(w.work_once().await, Some(Disposition::Delete));
    let job = w.job(id).await;
    assert_eq!((job.state, job.attempts), (JobState::Succeeded, 2));
}

#[tokio::test]
async fn the_last_transient_failure_fails_the_job_saying_how_many_times_it_was_tried() {
    let w = world_with(Settings {
        max_attempts: 2,
        ..Settings::default()
    });
    let id = w
        .submit("demo", json!({"fail_attempts": 10}))
        .await
        .expect("accepted")
        .job
        .id;
    assert!(matches!(
        w.work_once().await,
        Some(Disposition::RetryAfter(_))
    ));
    w.clock.advance(Duration::from_secs(120));
    assert_eq!(w.work_once().await, Some(Disposition::Delete));
    let job = w.job(id).await;
    assert_eq!(job.state, JobState::Failed);
    let problem = job.error.expect("a problem");
    assert_eq!(problem.slug(), Some("attempts-exhausted"));
    assert!(
        problem.detail.contains("tried 2 times"),
        "{}",
        problem.detail
    );
}

#[tokio::test]
async fn a_panicking_processor_fails_only_its_attempt() {
    let w = world_with(Settings {
        max_attempts: 1,
        ..Settings::default()
    });
    let bad = w
        .submit("demo", json!({"panic": true}))
        .await
        .expect("accepted")
        .job
        .id;
    let good = w.submit("demo", json!({})).await.expect("accepted").job.id;
    assert_eq!(w.work_once().await, Some(Disposition::Delete));
    assert_eq!(w.work_once().await, Some(Disposition::Delete));
    let bad = w.job(bad).await;
    assert_eq!(bad.state, JobState::Failed);
    let detail = bad.error.expect("problem").detail;
    assert!(
        !detail.contains("panicked"),
        "internals must not reach the client: {detail}"
    );
    assert_eq!(w.job(good).await.state, JobState::Succeeded);
}

#[tokio::test]
async fn a_rejection_fails_the_job_at_once_with_the_processors_words() {
    let w = world();
    let id = w
        .submit("demo", json!({"reject": "the card was declined"}))
        .await
        .expect("accepted")
        .job
        .id;
    assert_eq!(w.work_once().await, Some(Disposition::Delete));
    let job = w.job(id).await;
    assert_eq!((job.state, job.attempts), (JobState::Failed, 1));
    let problem = job.error.expect("problem");
    assert_eq!(problem.status, 422);
    assert!(
        problem.detail.contains("the card was declined"),
        "{}",
        problem.detail
    );
}

#[tokio::test]
async fn a_duplicate_delivery_never_runs_a_succeeded_job_again() {
    let w = world();
    let id = w.submit("demo", json!({})).await.expect("accepted").job.id;
    let delivery = w.next_delivery().await.expect("a message");
    assert_eq!(w.app.handle(&delivery).await, Disposition::Delete);
    let first = w.app.status(&owner(), id).await.expect("status");
    // The same message again (SQS delivers at least once).
    assert_eq!(w.app.handle(&delivery).await, Disposition::Delete);
    let second = w.app.status(&owner(), id).await.expect("status");
    assert_eq!(first.job, second.job, "nothing changed");
    assert_eq!(first.result, second.result);
}

#[tokio::test]
async fn a_duplicate_waits_out_a_live_lease_and_takes_over_an_expired_one() {
    let w = world();
    let id = w.submit("demo", json!({})).await.expect("accepted").job.id;
    let delivery = w.next_delivery().await.expect("a message");
    // Another worker started the job and then vanished.
    let queued = w.job(id).await;
    let running = queued
        .apply(Change::Start, w.clock.now(), w.app.settings())
        .expect("start");
    w.store
        .update(
            &queued,
            &running,
            None,
            &ackflow_core::Deltas::between(&queued, &running),
        )
        .await
        .expect("written");

    let Disposition::RetryAfter(wait) = w.app.handle(&delivery).await else {
        panic!("expected a wait")
    };
    assert!(
        wait >= w.app.settings().lease() - Duration::from_secs(1),
        "{wait:?}"
    );
    assert_eq!(w.job(id).await.attempts, 1, "a live lease is not taken");

    w.clock.advance(w.app.settings().lease());
    assert_eq!(w.app.handle(&delivery).await, Disposition::Delete);
    let job = w.job(id).await;
    assert_eq!((job.state, job.attempts), (JobState::Succeeded, 2));
    // The vanished worker comes back late: its write is fenced out.
    let late = running
        .apply(Change::Succeed, w.clock.now(), w.app.settings())
        .expect("legal in isolation");
    let refused = w
        .store
        .update(
            &running,
            &late,
            Some(&json!({"late": true})),
            &ackflow_core::Deltas::default(),
        )
        .await;
    assert!(matches!(refused, Err(ackflow_core::WriteError::Conflict)));
    assert_ne!(
        w.app.status(&owner(), id).await.expect("status").result,
        Some(json!({"late": true}))
    );
}

#[tokio::test]
async fn the_sweeper_fails_a_job_whose_deadline_passed_and_its_message_is_then_dropped() {
    let w = world();
    let id = w.submit("demo", json!({})).await.expect("accepted").job.id;
    w.clock.advance(w.app.settings().job_deadline);
    let report = w.app.sweep().await.expect("sweep");
    assert_eq!(report.failed, 1);
    let job = w.job(id).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(
        job.error.expect("problem").slug(),
        Some("deadline-exceeded")
    );
    assert_eq!(w.work_once().await, Some(Disposition::Delete));
}

#[tokio::test]
async fn a_job_too_close_to_its_deadline_is_failed_instead_of_started() {
    let w = world();
    let id = w.submit("demo", json!({})).await.expect("accepted").job.id;
    w.clock
        .advance(w.app.settings().job_deadline - w.app.settings().lease() + Duration::from_secs(1));
    assert_eq!(w.work_once().await, Some(Disposition::Delete));
    let job = w.job(id).await;
    assert_eq!((job.state, job.attempts), (JobState::Failed, 0));
}

#[tokio::test]
async fn the_sweeper_resends_the_message_of_a_job_that_lost_it() {
    let w = world();
    let id = w.submit("demo", json!({})).await.expect("accepted").job.id;
    let lost = w.next_delivery().await.expect("a message");
    w.queue.delete(&lost.receipt).await.expect("lost");
    assert_eq!(w.app.sweep().await.expect("sweep").resent, 0, "not yet due");
    w.clock.advance(w.app.settings().resend_after);
    assert_eq!(w.app.sweep().await.expect("sweep").resent, 1);
    assert_eq!(
        w.app.sweep().await.expect("sweep").resent,
        0,
        "re-sent once, then due again only later"
    );
    assert_eq!(w.work_once().await, Some(Disposition::Delete));
    assert_eq!(w.job(id).await.state, JobState::Succeeded);
}

#[tokio::test]
async fn an_unreadable_message_fails_its_job_and_goes_to_the_dead_letter_queue() {
    let w = world();
    let accepted = w.submit("demo", json!({})).await.expect("accepted").job;
    let good = w.next_delivery().await.expect("the real message");
    w.queue.delete(&good.receipt).await.expect("deleted");
    let envelope = ackflow_core::Envelope::for_job(&accepted);
    w.queue
        .send(OutgoingMessage {
            body: "{\"v\":1,\"job\":".into(),
            attributes: envelope.attributes(),
            delay: Duration::ZERO,
        })
        .await
        .expect("sent");
    assert_eq!(w.work_once().await, Some(Disposition::DeadLetter));
    let job = w.job(accepted.id).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(
        job.error.expect("problem").slug(),
        Some("unreadable-message")
    );
    assert_eq!(w.depth().await.dead, 1);
}

#[tokio::test]
async fn a_message_from_a_newer_version_is_returned_to_the_queue_not_poisoned() {
    let w = world();
    w.queue
        .send(OutgoingMessage {
            body: json!({"v": 99, "whatever": true}).to_string(),
            attributes: vec![],
            delay: Duration::ZERO,
        })
        .await
        .expect("sent");
    assert!(matches!(
        w.work_once().await,
        Some(Disposition::RetryAfter(_))
    ));
    assert_eq!(w.depth().await.dead, 0);
}

#[tokio::test]
async fn an_idempotent_resubmission_returns_the_same_job_and_queues_nothing_new() {
    let w = world();
    let first = w
        .submit_keyed("demo", json!({"steps": 1, "step_ms": 0}), Some("cart-42"))
        .await
        .expect("accepted");
    // Same body, other key order.
    let again = w
        .submit_keyed("demo", json!({"step_ms": 0, "steps": 1}), Some("cart-42"))
        .await
        .expect("replayed");
    assert!(again.replayed);
    assert_eq!(again.job.id, first.job.id);
    assert_eq!(w.depth().await.waiting, 1, "no second message");
    let other = w
        .submit_keyed("demo", json!({"steps": 2}), Some("cart-42"))
        .await;
    assert!(matches!(other, Err(AcceptError::KeyReused)));
    assert_eq!(other.expect_err("refused").problem().status, 422);
}

#[tokio::test]
async fn a_failed_enqueue_answers_unavailable_fails_the_job_and_a_keyed_retry_reopens_it() {
    let w = world();
    w.faults.inject_every(Op::QueueSend, Fault::Unavailable);
    let refused = w.submit_keyed("demo", json!({}), Some("k-1")).await;
    let Err(AcceptError::NotQueued { .. }) = refused else {
        panic!("expected 503")
    };
    assert_eq!(refused.expect_err("refused").problem().status, 503);
    let page = w
        .app
        .list(&owner(), ackflow_core::ListQuery::default())
        .await
        .expect("list");
    assert_eq!(page.jobs.len(), 1);
    assert_eq!(
        page.jobs[0].state,
        JobState::Failed,
        "the job does not linger as queued"
    );

    w.faults.clear(Op::QueueSend);
    let retried = w
        .submit_keyed("demo", json!({}), Some("k-1"))
        .await
        .expect("accepted on retry");
    assert_eq!(retried.job.id, page.jobs[0].id);
    assert_eq!(
        (retried.job.state, retried.job.generation),
        (JobState::Queued, 1)
    );
    assert_eq!(w.work_once().await, Some(Disposition::Delete));
    assert_eq!(w.job(retried.job.id).await.state, JobState::Succeeded);
}

/// A send that timed out may have reached the queue: failing the job would make the worker drop
/// a message that did arrive, so the job stays queued and the answer is still a 503.
#[tokio::test]
async fn a_send_that_timed_out_after_delivering_leaves_the_job_queued_and_it_runs_once() {
    let w = world();
    w.faults.inject_every(Op::QueueSend, Fault::Ambiguous);
    let refused = w.submit_keyed("demo", json!({}), Some("k-t")).await;
    assert_eq!(refused.expect_err("503").problem().status, 503);
    w.faults.clear(Op::QueueSend);

    let retried = w
        .submit_keyed("demo", json!({}), Some("k-t"))
        .await
        .expect("a keyed retry succeeds");
    assert!(retried.replayed);
    assert_eq!(retried.job.state, JobState::Queued, "not failed");
    assert_eq!(
        w.depth().await.waiting,
        1,
        "the retry queued no second message"
    );
    assert_eq!(w.work_once().await, Some(Disposition::Delete));
    assert_eq!(w.job(retried.job.id).await.state, JobState::Succeeded);
    assert_eq!(w.work_once().await, None, "it ran once");
}

#[tokio::test]
async fn a_send_that_timed_out_before_delivering_is_resent_by_the_sweeper() {
    let w = world();
    w.faults.inject_every(Op::QueueSend, Fault::Lost);
    let refused = w.submit_keyed("demo", json!({}), Some("k-lost")).await;
    assert_eq!(refused.expect_err("503").problem().status, 503);
    w.faults.clear(Op::QueueSend);
    assert_eq!(w.depth().await.waiting, 0);
    let page = w
        .app
        .list(&owner(), ackflow_core::ListQuery::default())
        .await
        .expect("list");
    let id = page.jobs[0].id;
    assert_eq!(page.jobs[0].state, JobState::Queued);

    w.clock.advance(w.app.settings().resend_after);
    assert_eq!(w.app.sweep().await.expect("sweep").resent, 1);
    assert_eq!(w.work_once().await, Some(Disposition::Delete));
    assert_eq!(w.job(id).await.state, JobState::Succeeded);
}

#[tokio::test]
async fn only_a_queued_job_can_be_cancelled_and_its_message_is_then_dropped() {
    let w = world();
    let id = w.submit("demo", json!({})).await.expect("accepted").job.id;
    assert_eq!(
        w.app.cancel(&owner(), id).await.expect("cancelled").state,
        JobState::Cancelled
    );
    assert!(matches!(
        w.app.cancel(&owner(), id).await,
        Err(JobError::WrongState(JobState::Cancelled))
    ));
    assert_eq!(w.work_once().await, Some(Disposition::Delete));
    assert_eq!(w.job(id).await.state, JobState::Cancelled);
    let stranger = Owner::parse("mallory").expect("owner");
    assert!(matches!(
        w.app.cancel(&stranger, id).await,
        Err(JobError::NotFound)
    ));
}

#[tokio::test]
async fn an_out_of_stock_order_is_rejected_naming_the_item_and_reserves_nothing() {
    let w = world();
    let ok = w
        .submit(
            "order",
            json!({"customer": "ada", "items": [{"sku": "mug-blue", "quantity": 1}]}),
        )
        .await
        .expect("ok");
    let greedy =
        w.submit("order", json!({"customer": "bob", "items": [{"sku": "tea-sencha", "quantity": 1}, {"sku": "mug-blue", "quantity": 2}]}))
            .await
            .expect("accepted");
    assert_eq!(w.work_once().await, Some(Disposition::Delete));
    assert_eq!(w.work_once().await, Some(Disposition::Delete));
    assert_eq!(w.job(ok.job.id).await.state, JobState::Succeeded);
    let rejected = w.job(greedy.job.id).await;
    assert_eq!(rejected.state, JobState::Failed);
    let problem = rejected.error.expect("problem");
    assert!(problem.detail.contains("Blue Mug"), "{}", problem.detail);
    assert!(
        problem.detail.contains('1'),
        "says what is left: {}",
        problem.detail
    );
    // The next order for the last mug still gets it: the rejected order reserved nothing.
    let last = w
        .submit(
            "order",
            json!({"customer": "cy", "items": [{"sku": "mug-blue", "quantity": 1}]}),
        )
        .await
        .expect("ok");
    assert_eq!(w.work_once().await, Some(Disposition::Delete));
    assert_eq!(w.job(last.job.id).await.state, JobState::Succeeded);
}

#[tokio::test]
async fn the_report_counts_transitions_without_scanning() {
    let w = world();
    w.submit("demo", json!({})).await.expect("accepted");
    w.submit("demo", json!({"reject": "no"}))
        .await
        .expect("accepted");
    w.submit("demo", json!({})).await.expect("accepted");
    w.work_once().await;
    w.work_once().await;
    let report = w.app.report(&owner()).await.expect("report");
    assert_eq!(report.accepted, 3);
    assert_eq!(report.counts[&JobState::Succeeded], 1);
    assert_eq!(report.counts[&JobState::Failed], 1);
    assert_eq!(report.counts[&JobState::Queued], 1);
    assert_eq!(report.top_failures.len(), 1);
    assert!(report.oldest_open.is_some());
    assert_eq!(report.queue.expect("depth").waiting, 1);
    assert!(report.latency.is_some());
}

#[tokio::test]
async fn a_long_poll_answers_at_once_on_a_change_and_after_the_wait_without_one() {
    let w = world();
    let job = w.submit("demo", json!({})).await.expect("accepted").job;
    let etag = job.etag();
    let at_once = w
        .app
        .wait_for_change(&owner(), job.id, Some("\"other\""), Duration::from_secs(5))
        .await
        .expect("status");
    assert_eq!(at_once.job.etag(), etag);
    let started = std::time::Instant::now();
    let unchanged = w
        .app
        .wait_for_change(&owner(), job.id, Some(&etag), Duration::from_millis(300))
        .await
        .expect("status");
    assert_eq!(unchanged.job.etag(), etag);
    assert!(started.elapsed() >= Duration::from_millis(300));
}
