//! The operator's redrive (`ackflow dlq redrive`) end to end on a backend: a job's message is
//! dead-lettered by the queue itself (received too often), the redrive sends the job back, and a
//! worker finishes it.
//!
//! Each function takes a fresh [`RedriveFixture`]: the use cases with the `demo` processor on
//! the backend under test, reading a [`ManualClock`] that the scenario moves to pass job
//! deadlines (the queue may keep its own time: nothing here waits for a visibility timeout).

use std::sync::Arc;
use std::time::Duration;

use ackflow_core::service::dlq::REDRIVE_NOTE;
use ackflow_core::{
    Ackflow, CorrelationId, Job, JobState, ManualClock, OutgoingMessage, Owner, RedriveAction,
    RedriveReport, Submission,
};
use serde_json::json;

/// The use cases on a fresh backend, for one redrive scenario.
#[derive(Debug)]
pub struct RedriveFixture<G = ()> {
    /// The use cases, with the `demo` processor registered, reading `clock`.
    pub app: Ackflow,
    /// The use cases' clock.
    pub clock: Arc<ManualClock>,
    /// The queue's max receive count (SQS's redrive policy `maxReceiveCount`).
    pub max_receive_count: u32,
    /// Whatever must live as long as the backend.
    pub guard: G,
}

fn owner() -> Owner {
    Owner::anonymous()
}

async fn submit_demo(app: &Ackflow) -> Job {
    app.accept(Submission {
        owner: owner(),
        kind: "demo".to_owned(),
        input: json!({}),
        idempotency_key: None,
        correlation_id: CorrelationId::random(),
        trace_header: None,
    })
    .await
    .expect("accept a demo job")
    .job
}

async fn current(app: &Ackflow, job: &Job) -> Job {
    app.store()
        .get(&job.owner, job.id)
        .await
        .expect("read the job")
        .expect("the job exists")
}

/// Receives the queue's only message without ever settling it (a worker that dies every time)
/// until the queue moves it to the dead-letter queue.
async fn let_the_queue_dead_letter_it(f: &RedriveFixture<impl Sized>) {
    let queue = f.app.queue();
    for _ in 0..f.max_receive_count + 3 {
        // A zero visibility makes it receivable again at once.
        let got = queue.receive(10, Duration::ZERO).await.expect("receive");
        if got.is_empty() && queue.depth().await.expect("depth").dead == 1 {
            return;
        }
        assert!(got.len() <= 1, "one message expected: {got:#?}");
    }
    panic!(
        "the queue did not dead-letter the message after {} receives",
        f.max_receive_count + 3
    );
}

/// Runs the worker on every visible message until none is left.
async fn work_until_idle(app: &Ackflow) {
    let visibility = app.settings().visibility_timeout;
    for _ in 0..20 {
        let batch = app.queue().receive(10, visibility).await.expect("receive");
        if batch.is_empty() {
            return;
        }
        for delivery in batch {
            let disposition = app.handle(&delivery).await;
            app.settle(&delivery, disposition, ackflow_core::Deleter::Worker)
                .await
                .expect("settle");
        }
    }
    panic!("the worker never ran out of messages");
}

#[track_caller]
fn assert_counts(report: &RedriveReport, expected: [u64; 5], what: &str) {
    assert_eq!(
        [
            report.reopened,
            report.resent,
            report.discarded,
            report.unreadable,
            report.errors
        ],
        expected,
        "{what} (reopened, resent, discarded, unreadable, errors): {report:#?}"
    );
    assert_eq!(report.stopped, None, "{what}: {report:#?}");
}

/// A job failed by the sweeper (deadline passed) while its message sat in the dead-letter queue
/// is listed with why it failed; the redrive reopens it in the next generation with a note in
/// its history and deletes the dead letter; the worker then finishes it; a second redrive has
/// nothing to do.
pub async fn a_failed_dead_lettered_job_is_reopened_by_the_redrive_and_then_succeeds(
    f: RedriveFixture<impl Sized>,
) {
    let app = &f.app;
    let job = submit_demo(app).await;
    let_the_queue_dead_letter_it(&f).await;
    let settings = app.settings().clone();
    f.clock
        .advance(settings.job_deadline + settings.sweep_period + Duration::from_secs(1));
    app.sweep().await.expect("sweep");
    let failed = current(app, &job).await;
    assert_eq!(failed.state, JobState::Failed, "{failed:#?}");

    let listed = app.list_dead_letters(10).await.expect("list dead letters");
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0].job_id, Some(job.id));
    assert_eq!(listed[0].state, Some(JobState::Failed));
    assert_eq!(listed[0].generation, Some(job.generation));
    assert_eq!(listed[0].kind.as_ref().map(|k| k.as_str()), Some("demo"));
    assert!(listed[0].why.is_some(), "{listed:#?}");
    assert_eq!(listed[0].unreadable, None);

    let report = app.redrive_dead_letters(10).await.expect("redrive");
    assert_counts(&report, [1, 0, 0, 0, 0], "first redrive");
    assert_eq!(
        report.messages[0].action,
        RedriveAction::Reopened {
            generation: job.generation + 1
        }
    );
    assert_eq!(report.messages[0].job_id, Some(job.id));
    assert_eq!(app.queue().depth().await.expect("depth").dead, 0);
    let reopened = current(app, &job).await;
    assert_eq!(reopened.state, JobState::Queued);
    assert_eq!(reopened.generation, job.generation + 1);
    assert_eq!(reopened.attempts, 0);

    work_until_idle(app).await;
    let done = current(app, &job).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
    assert_eq!(done.generation, job.generation + 1);
    assert!(
        done.history.iter().any(|h| h.note == REDRIVE_NOTE),
        "no redrive note in {:#?}",
        done.history
    );

    let again = app.redrive_dead_letters(10).await.expect("second redrive");
    assert_eq!(
        again,
        RedriveReport::default(),
        "a repeated redrive did something"
    );
    assert_eq!(current(app, &job).await.generation, job.generation + 1);
}

/// A job still queued when the queue gave up on its message (the worker kept dying) gets a fresh
/// message of the same generation; the worker then finishes it.
pub async fn a_queued_dead_lettered_job_is_sent_again_by_the_redrive_and_then_succeeds(
    f: RedriveFixture<impl Sized>,
) {
    let app = &f.app;
    let job = submit_demo(app).await;
    let_the_queue_dead_letter_it(&f).await;
    assert_eq!(current(app, &job).await.state, JobState::Queued);

    let report = app.redrive_dead_letters(10).await.expect("redrive");
    assert_counts(&report, [0, 1, 0, 0, 0], "redrive");
    assert_eq!(report.messages[0].action, RedriveAction::Resent);
    assert_eq!(app.queue().depth().await.expect("depth").dead, 0);

    work_until_idle(app).await;
    let done = current(app, &job).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
    assert_eq!(
        done.generation, job.generation,
        "a resend is no new generation"
    );
    assert!(!done.history.iter().any(|h| h.note == REDRIVE_NOTE));
}

/// The copy of a job that ended meanwhile (here: cancelled) is deleted without sending
/// anything; an unreadable message stays in the dead-letter queue for an operator.
pub async fn a_finished_jobs_copy_is_discarded_and_an_unreadable_message_stays(
    f: RedriveFixture<impl Sized>,
) {
    let app = &f.app;
    let job = submit_demo(app).await;
    let_the_queue_dead_letter_it(&f).await;
    app.cancel(&job.owner, job.id).await.expect("cancel");

    app.queue()
        .send(OutgoingMessage {
            body: "not an envelope".to_owned(),
            attributes: vec![("ackflow-job-id".to_owned(), job.id.to_string())],
            delay: Duration::ZERO,
        })
        .await
        .expect("send");
    let poison = app
        .queue()
        .receive(10, Duration::from_secs(60))
        .await
        .expect("receive");
    assert_eq!(poison.len(), 1, "{poison:#?}");
    app.queue()
        .dead_letter(&poison[0])
        .await
        .expect("dead letter");
    let listed = app.list_dead_letters(10).await.expect("list dead letters");
    assert_eq!(listed.len(), 2, "{listed:#?}");
    assert_eq!(
        listed.iter().filter(|l| l.unreadable.is_some()).count(),
        1,
        "{listed:#?}"
    );

    let report = app.redrive_dead_letters(10).await.expect("redrive");
    assert_counts(&report, [0, 0, 1, 1, 0], "redrive");
    assert!(!report.is_clean());
    let depth = app.queue().depth().await.expect("depth");
    assert_eq!(
        (depth.waiting, depth.dead),
        (0, 1),
        "only the unreadable message stays"
    );
    assert_eq!(current(app, &job).await.state, JobState::Cancelled);
}
