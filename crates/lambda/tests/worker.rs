//! The SQS batch lifter, driven with SQS events as Lambda delivers them (`LambdaEvent::new`),
//! over the real SQLite store and a recording queue: jobs are accepted through the core, their
//! messages turned into SQS records, and the batch response and the jobs' states checked.

// The harness's helpers are test code too; clippy's test exemption only sees `#[test]` functions.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ackflow_core::{
    async_trait, Ackflow, Clock, CorrelationId, DeadLetter, Delivery, FieldError, Job, JobContext,
    JobId, JobState, Kind, ManualClock, OutgoingMessage, Owner, PortError, ProcessError, Processor,
    Queue, QueueDepth, Receipt, Registry, Settings, Settled, Submission, SystemClock,
};
use ackflow_lambda::test_support::{sqs_event, SqsRecord};
use ackflow_lambda::{
    delivery_from_record, process_batch, process_record, BatchError, BatchOptions, RecordError,
};
use ackflow_processors::demo::Demo;
use ackflow_sqlite::{Db, Durability, SqliteStore};
use ackflow_testkit::paused::ClockHeld;
use aws_lambda_events::sqs::SqsBatchResponse;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};
use tempfile::TempDir;

// ---- the harness -------------------------------------------------------------------------------

/// A queue that records what the lifter asks of it. Sent messages are kept so that tests can
/// deliver them as SQS records; it never delivers anything by itself.
#[derive(Debug, Default)]
struct RecordingQueue {
    sent: Mutex<Vec<OutgoingMessage>>,
    visibility: Mutex<Vec<(Receipt, Duration)>>,
    dead: Mutex<Vec<Delivery>>,
    /// `dead_letter` fails for these message ids.
    refuse_dead_letter: Mutex<HashSet<String>>,
    /// `dead_letter` panics for these message ids.
    panic_on_dead_letter: Mutex<HashSet<String>>,
    /// `change_visibility` never answers, as a call that hangs past every timeout.
    hang_visibility: AtomicBool,
}

#[async_trait]
impl Queue for RecordingQueue {
    async fn send(&self, message: OutgoingMessage) -> Result<(), PortError> {
        self.sent.lock().unwrap().push(message);
        Ok(())
    }

    async fn receive(
        &self,
        _max: usize,
        _visibility: Duration,
    ) -> Result<Vec<Delivery>, PortError> {
        Ok(Vec::new())
    }

    async fn delete(&self, _receipt: &Receipt) -> Result<(), PortError> {
        Ok(())
    }

    async fn change_visibility(
        &self,
        receipt: &Receipt,
        timeout: Duration,
    ) -> Result<(), PortError> {
        if self.hang_visibility.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.visibility
            .lock()
            .unwrap()
            .push((receipt.clone(), timeout));
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery) -> Result<(), PortError> {
        if self
            .panic_on_dead_letter
            .lock()
            .unwrap()
            .contains(&delivery.message_id)
        {
            panic!("the dead-letter queue exploded");
        }
        if self
            .refuse_dead_letter
            .lock()
            .unwrap()
            .contains(&delivery.message_id)
        {
            return Err(PortError::unavailable("dead-letter", "throttled"));
        }
        self.dead.lock().unwrap().push(delivery.clone());
        Ok(())
    }

    async fn dead_letters(&self, _max: usize) -> Result<Vec<DeadLetter>, PortError> {
        Ok(Vec::new())
    }

    async fn depth(&self) -> Result<QueueDepth, PortError> {
        Ok(QueueDepth::default())
    }
}

impl RecordingQueue {
    fn visibility_of(&self, receipt: &str) -> Vec<Duration> {
        self.visibility
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _)| r.0 == receipt)
            .map(|(_, d)| *d)
            .collect()
    }
}

/// `tick`: advances the test clock by `{"advance_ms": n}` and counts how many run at once.
#[derive(Debug)]
struct Tick {
    clock: Arc<ManualClock>,
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

#[async_trait]
impl Processor for Tick {
    fn kind(&self) -> Kind {
        Kind::parse("tick").expect("kind")
    }

    fn validate(&self, input: &Value) -> Result<(), Vec<FieldError>> {
        match input.get("advance_ms") {
            Some(v) if v.is_u64() => Ok(()),
            _ => Err(vec![FieldError::new("/advance_ms", "a whole number")]),
        }
    }

    async fn process(&self, input: Value, _ctx: &JobContext) -> Result<Value, ProcessError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        // Long enough for every record the lifter started to be running at the same time.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.clock.advance(Duration::from_millis(
            input["advance_ms"].as_u64().unwrap_or(0),
        ));
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(json!({}))
    }
}

struct Harness {
    app: Arc<Ackflow>,
    queue: Arc<RecordingQueue>,
    clock: Arc<ManualClock>,
    most_at_once: Arc<AtomicUsize>,
    _dir: TempDir,
}

fn settings() -> Settings {
    Settings {
        max_attempts: 3,
        worker_timeout: Duration::from_secs(5),
        ..Settings::default()
    }
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(&dir.path().join("ackflow.db"), Durability::Normal).expect("db");
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let most_at_once = Arc::new(AtomicUsize::new(0));
    let queue = Arc::new(RecordingQueue::default());
    let registry = Registry::new().with(Demo::new()).with(Tick {
        clock: clock.clone(),
        running: Arc::new(AtomicUsize::new(0)),
        most: most_at_once.clone(),
    });
    let app = Arc::new(Ackflow::new(
        // Some tests run on a paused clock, which must not jump while SQLite's writer works.
        Arc::new(ClockHeld::new(SqliteStore::new(db))),
        queue.clone(),
        registry,
        clock.clone(),
        settings(),
    ));
    Harness {
        app,
        queue,
        clock,
        most_at_once,
        _dir: dir,
    }
}

impl Harness {
    /// Accepts a job and returns it with the SQS record of its message.
    async fn submit(&self, kind: &str, input: Value) -> (Job, Value) {
        let accepted = self
            .app
            .accept(Submission {
                owner: Owner::anonymous(),
                kind: kind.to_owned(),
                input,
                idempotency_key: None,
                correlation_id: CorrelationId::random(),
                trace_header: None,
            })
            .await
            .expect("accepted");
        let message = self
            .queue
            .sent
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("sent");
        let record = sqs_record(&format!("msg-{}", accepted.job.id), &message, 1);
        (accepted.job, record)
    }

    async fn job(&self, id: JobId) -> Job {
        self.app
            .status(&Owner::anonymous(), id)
            .await
            .expect("status")
            .job
    }

    async fn batch(&self, records: Vec<Value>) -> Result<SqsBatchResponse, BatchError> {
        self.batch_with(records, Context::default(), &BatchOptions::default())
            .await
    }

    async fn batch_with(
        &self,
        records: Vec<Value>,
        context: Context,
        options: &BatchOptions,
    ) -> Result<SqsBatchResponse, BatchError> {
        let event = LambdaEvent::new(sqs_event(records), context);
        process_batch(&self.app, event, options).await
    }
}

/// An SQS record as the event source mapping hands it to Lambda, every attribute of `message` a
/// message attribute.
fn sqs_record(message_id: &str, message: &OutgoingMessage, receive_count: u32) -> Value {
    let record = SqsRecord::new(
        message_id,
        format!("receipt-{message_id}"),
        message.body.clone(),
    )
    .receive_count(receive_count);
    message
        .attributes
        .iter()
        .fold(record, |record, (name, value)| {
            record.message_attribute(name, value)
        })
        .into_value()
}

fn failed_ids(response: &SqsBatchResponse) -> Vec<String> {
    let mut ids: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    ids.sort();
    ids
}

fn message_id(record: &Value) -> String {
    record["messageId"].as_str().expect("id").to_owned()
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/../../infra/events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("fixture JSON")
}

/// A context whose deadline is `left` after the test clock's now.
fn context_with(clock: &ManualClock, left: Duration) -> Context {
    let mut context = Context::default();
    context.deadline = u64::try_from(clock.now().plus(left).as_millis()).expect("positive");
    context
}

// ---- decoding ----------------------------------------------------------------------------------

#[test]
fn a_fixture_record_decodes_into_a_delivery_with_its_string_attributes_and_receive_count() {
    let event = fixture("sqs-batch.json");
    let record = event["Records"][2].clone();
    let delivery = delivery_from_record(record).expect("decoded");
    assert_eq!(delivery.message_id, "a1b2c3d4-0003-4000-8000-000000000003");
    assert_eq!(
        delivery.receipt,
        Receipt("AQEBa1b2c3d4000340008000000000000003fixture-receipt-handle".into())
    );
    assert_eq!(delivery.receive_count, 2);
    assert_eq!(delivery.attributes["ackflow-schema"], "99");
    assert_eq!(
        delivery.attributes["ackflow-job-id"],
        "2d8e7c80-3b90-4e30-9f9c-4d3b5e6f7081"
    );
    assert!(delivery.body.contains("\"v\":99"), "{}", delivery.body);
}

#[test]
fn records_without_an_id_a_receipt_or_an_sqs_shape_are_refused_each_with_its_reason() {
    let good = fixture("sqs-batch.json")["Records"][0].clone();

    let mut no_id = good.clone();
    no_id.as_object_mut().unwrap().remove("messageId");
    assert!(matches!(
        delivery_from_record(no_id),
        Err(RecordError::NoMessageId)
    ));

    let mut empty_id = good.clone();
    empty_id["messageId"] = json!("");
    assert!(matches!(
        delivery_from_record(empty_id),
        Err(RecordError::NoMessageId)
    ));

    let mut no_receipt = good.clone();
    no_receipt["receiptHandle"] = Value::Null;
    let e = delivery_from_record(no_receipt).expect_err("refused");
    assert_eq!(e.message_id(), Some("a1b2c3d4-0001-4000-8000-000000000001"));
    assert!(matches!(e, RecordError::NoReceiptHandle { .. }));

    let mut malformed = good.clone();
    malformed["attributes"] = json!(42);
    assert!(matches!(
        delivery_from_record(malformed),
        Err(RecordError::Malformed { .. })
    ));
}

#[test]
fn a_missing_body_reads_as_empty_and_a_missing_receive_count_as_one() {
    let mut record = fixture("sqs-batch.json")["Records"][0].clone();
    record.as_object_mut().unwrap().remove("body");
    record["attributes"] = json!({});
    let delivery = delivery_from_record(record).expect("decoded");
    assert_eq!(delivery.body, "");
    assert_eq!(delivery.receive_count, 1);
}

// ---- one record ----------------------------------------------------------------------------------

#[tokio::test]
async fn a_good_record_succeeds_its_job_and_is_left_for_the_mapping_to_delete() {
    let h = harness();
    let (job, record) = h.submit("demo", json!({"steps": 2})).await;
    let response = h.batch(vec![record]).await.expect("batch");
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let job = h.job(job.id).await;
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.attempts, 1);
    assert!(h.queue.visibility.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_transient_failure_is_reported_and_delayed_by_the_backoff_then_succeeds() {
    let h = harness();
    let (job, record) = h.submit("demo", json!({"fail_attempts": 1})).await;
    let id = message_id(&record);

    let response = h.batch(vec![record.clone()]).await.expect("batch");
    assert_eq!(failed_ids(&response), std::slice::from_ref(&id));
    let delays = h.queue.visibility_of(&format!("receipt-{id}"));
    assert_eq!(delays.len(), 1, "{delays:?}");
    assert!(delays[0] > Duration::ZERO && delays[0] <= settings().backoff_base);
    let queued = h.job(job.id).await;
    assert_eq!(
        (queued.state, queued.attempts),
        (JobState::Queued, 1),
        "{queued:?}"
    );

    // The message comes back after the backoff.
    h.clock.advance(settings().backoff_base);
    let response = h.batch(vec![record]).await.expect("batch");
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let done = h.job(job.id).await;
    assert_eq!((done.state, done.attempts), (JobState::Succeeded, 2));
}

#[tokio::test]
async fn a_rejection_fails_the_job_with_its_problem_and_the_message_is_deleted() {
    let h = harness();
    let (job, record) = h
        .submit("demo", json!({"reject": "Blue Mug is sold out"}))
        .await;
    let response = h.batch(vec![record]).await.expect("batch");
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let job = h.job(job.id).await;
    assert_eq!(job.state, JobState::Failed);
    let problem = job.error.expect("a problem");
    assert!(
        problem.detail.contains("Blue Mug is sold out"),
        "{problem:?}"
    );
}

#[tokio::test]
async fn a_processor_panic_is_a_transient_failure_of_that_record_only() {
    let h = harness();
    let (panicky, panicky_record) = h.submit("demo", json!({"panic": true})).await;
    let (good, good_record) = h.submit("demo", json!({})).await;
    let response = h
        .batch(vec![panicky_record.clone(), good_record])
        .await
        .expect("batch");
    assert_eq!(failed_ids(&response), [message_id(&panicky_record)]);
    assert_eq!(h.job(panicky.id).await.state, JobState::Queued);
    assert_eq!(h.job(good.id).await.state, JobState::Succeeded);
}

// ---- batches -----------------------------------------------------------------------------------

#[tokio::test]
async fn a_poison_record_is_dead_lettered_and_fails_its_job_without_harming_its_batch_mates() {
    let h = harness();
    let (first, first_record) = h.submit("demo", json!({})).await;
    let (poisoned, mut poison_record) = h.submit("demo", json!({})).await;
    let (last, last_record) = h.submit("demo", json!({})).await;
    poison_record["body"] = json!("{\"v\":1,\"job\":");
    let poison_id = message_id(&poison_record);

    let response = h
        .batch(vec![first_record, poison_record, last_record])
        .await
        .expect("batch");
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(h.job(first.id).await.state, JobState::Succeeded);
    assert_eq!(h.job(last.id).await.state, JobState::Succeeded);
    let poisoned = h.job(poisoned.id).await;
    assert_eq!(poisoned.state, JobState::Failed);
    assert_eq!(
        poisoned.error.as_ref().and_then(|p| p.slug()),
        Some("unreadable-message")
    );
    let dead: Vec<String> = h
        .queue
        .dead
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.message_id.clone())
        .collect();
    assert_eq!(dead, [poison_id]);
}

#[tokio::test]
async fn a_failed_dead_letter_leaves_the_poison_record_failed_so_it_comes_back() {
    let h = harness();
    let (_, mut poison_record) = h.submit("demo", json!({})).await;
    poison_record["body"] = json!("not json");
    let poison_id = message_id(&poison_record);
    h.queue
        .refuse_dead_letter
        .lock()
        .unwrap()
        .insert(poison_id.clone());
    let response = h.batch(vec![poison_record]).await.expect("batch");
    assert_eq!(failed_ids(&response), [poison_id]);
}

#[tokio::test]
async fn a_panic_while_settling_a_record_fails_that_record_only() {
    let h = harness();
    let (_, mut poison_record) = h.submit("demo", json!({})).await;
    poison_record["body"] = json!("not json");
    let (good, good_record) = h.submit("demo", json!({})).await;
    let poison_id = message_id(&poison_record);
    h.queue
        .panic_on_dead_letter
        .lock()
        .unwrap()
        .insert(poison_id.clone());

    let response = h
        .batch(vec![poison_record, good_record])
        .await
        .expect("batch");
    assert_eq!(failed_ids(&response), [poison_id]);
    assert_eq!(h.job(good.id).await.state, JobState::Succeeded);
}

#[tokio::test]
async fn the_fixture_batch_settles_each_record_on_its_own() {
    // Its jobs are not in this store: the good record's message is stale (deleted), the poison
    // one goes to the dead-letter queue, the newer-schema one comes back later, not as poison.
    let h = harness();
    let event = fixture("sqs-batch.json");
    let response = process_batch(
        &h.app,
        LambdaEvent::new(event, Context::default()),
        &BatchOptions::default(),
    )
    .await
    .expect("batch");
    assert_eq!(
        failed_ids(&response),
        ["a1b2c3d4-0003-4000-8000-000000000003"]
    );
    let dead: Vec<String> = h
        .queue
        .dead
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.message_id.clone())
        .collect();
    assert_eq!(dead, ["a1b2c3d4-0002-4000-8000-000000000002"]);
    let newer = h
        .queue
        .visibility_of("AQEBa1b2c3d4000340008000000000000003fixture-receipt-handle");
    assert_eq!(newer, [settings().backoff_max]);
}

#[tokio::test]
async fn an_unreadable_record_is_reported_alone_and_its_batch_mates_proceed() {
    let h = harness();
    let (good, good_record) = h.submit("demo", json!({})).await;
    let (odd, mut odd_record) = h.submit("demo", json!({})).await;
    odd_record["messageAttributes"] = json!("not a map");
    let response = h
        .batch(vec![odd_record.clone(), good_record])
        .await
        .expect("batch");
    assert_eq!(failed_ids(&response), [message_id(&odd_record)]);
    assert_eq!(h.job(good.id).await.state, JobState::Succeeded);
    assert_eq!(h.job(odd.id).await.state, JobState::Queued);
}

#[tokio::test]
async fn a_record_without_a_message_id_fails_the_whole_batch_after_the_others_are_handled() {
    let h = harness();
    let (good, good_record) = h.submit("demo", json!({})).await;
    let (anonymous, mut anonymous_record) = h.submit("demo", json!({})).await;
    anonymous_record
        .as_object_mut()
        .unwrap()
        .remove("messageId");
    let error = h
        .batch(vec![good_record, anonymous_record])
        .await
        .expect_err("the whole batch fails");
    assert!(matches!(error, BatchError::Unidentifiable { count: 1 }));
    let diagnostic = lambda_runtime::Diagnostic::from(error);
    assert_eq!(diagnostic.error_type, "ackflow.UnidentifiableRecords");
    // The identifiable record was handled; its message comes back and is then dropped as done.
    assert_eq!(h.job(good.id).await.state, JobState::Succeeded);
    assert_eq!(h.job(anonymous.id).await.state, JobState::Queued);
}

#[tokio::test]
async fn an_event_that_is_not_an_sqs_event_fails_the_invocation() {
    let h = harness();
    let event = LambdaEvent::new(fixture("scheduled.json"), Context::default());
    let error = process_batch(&h.app, event, &BatchOptions::default())
        .await
        .expect_err("refused");
    assert!(matches!(error, BatchError::NotAnSqsEvent(_)));
}

#[tokio::test]
async fn an_empty_batch_has_no_failures() {
    let h = harness();
    let response = h.batch(Vec::new()).await.expect("batch");
    assert!(response.batch_item_failures.is_empty());
    let body = serde_json::to_value(&response).expect("serializes");
    assert_eq!(body, json!({"batchItemFailures": []}));
}

// ---- concurrency and the deadline -------------------------------------------------------------

#[tokio::test]
async fn records_run_concurrently_but_never_more_than_the_bound() {
    let h = harness();
    let mut records = Vec::new();
    let mut jobs = Vec::new();
    for _ in 0..8 {
        let (job, record) = h.submit("tick", json!({"advance_ms": 0})).await;
        jobs.push(job);
        records.push(record);
    }
    let options = BatchOptions {
        concurrency: 3,
        ..BatchOptions::default()
    };
    let response = h
        .batch_with(records, Context::default(), &options)
        .await
        .expect("batch");
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(h.most_at_once.load(Ordering::SeqCst), 3);
    for job in jobs {
        assert_eq!(h.job(job.id).await.state, JobState::Succeeded);
    }
}

#[tokio::test]
async fn no_record_starts_when_less_than_its_lease_and_the_margin_remain() {
    let h = harness();
    let (first, first_record) = h.submit("demo", json!({})).await;
    let (second, second_record) = h.submit("demo", json!({})).await;
    let options = BatchOptions::default();
    let left = settings().lease() + options.margin - Duration::from_millis(1);
    let response = h
        .batch_with(
            vec![first_record.clone(), second_record.clone()],
            context_with(&h.clock, left),
            &options,
        )
        .await
        .expect("batch");
    assert_eq!(failed_ids(&response), {
        let mut ids = vec![message_id(&first_record), message_id(&second_record)];
        ids.sort();
        ids
    });
    // Returned at once rather than after the visibility timeout, and never attempted.
    for (job, record) in [(first, first_record), (second, second_record)] {
        let receipt = format!("receipt-{}", message_id(&record));
        assert_eq!(h.queue.visibility_of(&receipt), [Duration::ZERO]);
        let job = h.job(job.id).await;
        assert_eq!((job.state, job.attempts), (JobState::Queued, 0));
    }
}

#[tokio::test]
async fn records_stop_starting_once_the_deadline_comes_near_and_the_rest_come_back_unstarted() {
    let h = harness();
    let options = BatchOptions {
        concurrency: 1,
        ..BatchOptions::default()
    };
    let needed = settings().lease() + options.margin;
    // Each job takes 4 s of (test) time; the invocation has room to start exactly two.
    let mut records = Vec::new();
    let mut jobs = Vec::new();
    for _ in 0..4 {
        let (job, record) = h.submit("tick", json!({"advance_ms": 4000})).await;
        jobs.push(job);
        records.push(record);
    }
    let context = context_with(&h.clock, needed + Duration::from_secs(5));
    let response = h
        .batch_with(records.clone(), context, &options)
        .await
        .expect("batch");
    let mut expected: Vec<String> = records[2..].iter().map(message_id).collect();
    expected.sort();
    assert_eq!(failed_ids(&response), expected);
    let states: Vec<JobState> = {
        let mut states = Vec::new();
        for job in &jobs {
            states.push(h.job(job.id).await.state);
        }
        states
    };
    assert_eq!(
        states,
        [
            JobState::Succeeded,
            JobState::Succeeded,
            JobState::Queued,
            JobState::Queued
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_record_still_running_at_the_deadline_is_cut_and_the_invocation_answers_in_time() {
    let h = harness();
    // The attempt fails once, so settling the record changes its visibility, and that hangs.
    let (job, record) = h.submit("demo", json!({"fail_attempts": 1})).await;
    h.queue.hang_visibility.store(true, Ordering::SeqCst);
    let options = BatchOptions::default();
    let left = settings().lease() + options.margin;
    let started = tokio::time::Instant::now();
    let batch = h.batch_with(vec![record.clone()], context_with(&h.clock, left), &options);
    let response = tokio::time::timeout(left, batch)
        .await
        .expect("answered before the deadline")
        .expect("batch");
    assert_eq!(
        started.elapsed(),
        left - ackflow_lambda::deadline::ANSWER_AHEAD
    );
    assert_eq!(failed_ids(&response), [message_id(&record)]);
    // The outcome was written before the cut: the job waits for its retry.
    let job = h.job(job.id).await;
    assert_eq!((job.state, job.attempts), (JobState::Queued, 1));
}

#[tokio::test]
async fn a_zero_deadline_means_unknown_and_puts_no_limit() {
    let h = harness();
    let (job, record) = h.submit("demo", json!({})).await;
    let mut context = Context::default();
    context.deadline = 0;
    let response = h
        .batch_with(vec![record], context, &BatchOptions::default())
        .await
        .expect("batch");
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(h.job(job.id).await.state, JobState::Succeeded);
}

#[tokio::test]
async fn a_deadline_too_small_to_be_a_time_is_read_as_relative_like_the_emulator_sends_it() {
    let h = harness();
    let (fits, fits_record) = h.submit("demo", json!({})).await;
    let mut context = Context::default();
    // `cargo lambda watch` sends its 600 s timeout as the deadline.
    context.deadline = 600_000;
    let response = h
        .batch_with(vec![fits_record], context, &BatchOptions::default())
        .await
        .expect("batch");
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(h.job(fits.id).await.state, JobState::Succeeded);

    let (short, short_record) = h.submit("demo", json!({})).await;
    let mut context = Context::default();
    context.deadline = 1_000; // one second: less than the worker timeout
    let response = h
        .batch_with(
            vec![short_record.clone()],
            context,
            &BatchOptions::default(),
        )
        .await
        .expect("batch");
    assert_eq!(failed_ids(&response), [message_id(&short_record)]);
    assert_eq!(h.job(short.id).await.state, JobState::Queued);
}

#[tokio::test]
async fn process_record_alone_reports_done_for_a_stale_message() {
    let h = harness();
    let (job, record) = h.submit("demo", json!({})).await;
    let delivery = delivery_from_record(record).expect("decoded");
    assert_eq!(process_record(&h.app, &delivery, None).await, Settled::Done);
    assert_eq!(h.job(job.id).await.state, JobState::Succeeded);
    // A duplicate of a succeeded job's message never runs it again.
    assert_eq!(process_record(&h.app, &delivery, None).await, Settled::Done);
    assert_eq!(h.job(job.id).await.attempts, 1);
}
