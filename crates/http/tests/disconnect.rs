//! A client that hangs up while its job is being accepted: hyper drops the handler's future, and
//! the job must still get its message at once rather than wait minutes for the sweeper's resend.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use ackflow_core::{
    async_trait, Ackflow, Clock, DeadLetter, Delivery, JobState, ListQuery, OutgoingMessage, Owner,
    PortError, Queue, QueueDepth, Receipt, Settings, SystemClock,
};
use ackflow_http::{router, Anonymous, ApiState};
use ackflow_processors::demo::Demo;
use ackflow_sqlite::{Db, Durability, SqliteQueue, SqliteStore};
use axum::body::Body;
use axum::http::{Method, Request};
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt as _;

/// A queue whose sends say when they begin and then wait for the test to let them through.
#[derive(Debug)]
struct GatedQueue {
    inner: SqliteQueue,
    send_started: Notify,
    gate: Semaphore,
}

#[async_trait]
impl Queue for GatedQueue {
    async fn send(&self, message: OutgoingMessage) -> Result<(), PortError> {
        self.send_started.notify_one();
        let _pass = self.gate.acquire().await.expect("gate open");
        self.inner.send(message).await
    }
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, PortError> {
        self.inner.receive(max, visibility).await
    }
    async fn delete(&self, receipt: &Receipt) -> Result<(), PortError> {
        self.inner.delete(receipt).await
    }
    async fn change_visibility(
        &self,
        receipt: &Receipt,
        timeout: Duration,
    ) -> Result<(), PortError> {
        self.inner.change_visibility(receipt, timeout).await
    }
    async fn dead_letter(&self, delivery: &Delivery) -> Result<(), PortError> {
        self.inner.dead_letter(delivery).await
    }
    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, PortError> {
        self.inner.dead_letters(max).await
    }
    async fn depth(&self) -> Result<QueueDepth, PortError> {
        self.inner.depth().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_accept_still_gets_its_job_queued_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(&dir.path().join("ackflow.db"), Durability::Normal).expect("db");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let queue = Arc::new(GatedQueue {
        inner: SqliteQueue::new(db.clone(), "jobs", 6, clock.clone()).expect("queue"),
        send_started: Notify::new(),
        gate: Semaphore::new(0),
    });
    let app = Arc::new(Ackflow::new(
        Arc::new(SqliteStore::new(db)),
        queue.clone(),
        ackflow_core::Registry::new().with(Demo::new()),
        clock,
        Settings::default(),
    ));
    let router = router(ApiState::new(app.clone(), Arc::new(Anonymous)));

    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/jobs")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"kind":"demo","input":{}}"#))
        .expect("request");
    // The job is recorded and its send has begun: now the client goes away, which drops the
    // request's future exactly as hyper does on a closed connection.
    tokio::select! {
        answer = router.oneshot(request) => panic!("answered before the send was let through: {answer:?}"),
        () = queue.send_started.notified() => {}
    }
    queue.gate.add_permits(1);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while queue.depth().await.expect("depth").waiting == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the message was never sent: the accept died with its request"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let jobs = app
        .list(&Owner::anonymous(), ListQuery::default())
        .await
        .expect("list")
        .jobs;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].state, JobState::Queued);
    assert_eq!(queue.depth().await.expect("depth").waiting, 1);
}
