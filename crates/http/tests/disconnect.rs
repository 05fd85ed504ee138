//! A client that hangs up while its job is being accepted: hyper drops the handler's future, and
//! the job must still get its message at once rather than wait minutes for the sweeper's resend.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;
use support::TestApp;

use std::sync::Arc;
use std::time::Duration;

use ackflow_core::{JobState, ListQuery, Owner, Registry};
use ackflow_processors::demo::Demo;
use ackflow_testkit::faults::{FaultPlan, FaultyQueue, Op};
use axum::body::Body;
use axum::http::{Method, Request};
use tower::ServiceExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_accept_still_gets_its_job_queued_at_once() {
    // The queue's sends say when they begin and then wait for the test to let them through.
    let faults = FaultPlan::new();
    let send = faults.hold(Op::QueueSend);
    let t = TestApp::builder()
        .registry(Registry::new().with(Demo::new()))
        .queue(move |queue| Arc::new(FaultyQueue::new(queue, faults)))
        .start();
    let (router, app, queue) = (t.router.clone(), &t.app, t.queue());

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
        () = send.reached() => {}
    }
    send.release();

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
