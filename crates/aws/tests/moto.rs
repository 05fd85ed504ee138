//! The AWS adapters over the wire.
//!
//! Against moto server (`ACKFLOW_MOTO_URL`, ignored without it; `infra/scripts/test-all` runs
//! them): every behaviour suite of `ackflow-testkit`, each behaviour on a fresh table or queue
//! pair with a unique name; then what only AWS shows — the redrive policy really moving a
//! message, racing conditional writes, the use cases end to end on these adapters; and, through
//! `ackflow_testkit::wire`'s proxy in front of moto, writes whose answers are lost.
//!
//! Without moto (they always run): error classification against a closed port, a connect that
//! times out, endpoints that cut the connection before or after reading the request, and a fake
//! endpoint that answers throttling, 5xx and validation errors.

// Test code: the fixtures' helpers panic on setup failures, which is what a test should do.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use ackflow_aws::dynamo::{ReportFold, TableChange};
use ackflow_aws::{https_client, schema, timeouts, Clients, DynamoJobStore, SqsQueue};
use ackflow_core::report::Deltas;
use ackflow_core::{
    Ackflow, Change, Clock, CorrelationId, Created, Disposition, IdempotencyKey, Job, JobId,
    JobPart, JobState, JobStore, Kind, ManualClock, NewJob, OutgoingMessage, Owner, PortError,
    Progress, Queue, QueueDepth, Settings, Submission, SystemClock, WriteError,
};
use ackflow_processors::order::{DynamoOrderBook, OrderBook};
use ackflow_processors::registry_with;
use ackflow_testkit::stream::{CatchUp, CatchingUp, StreamTail};
use ackflow_testkit::wire::{Hits, WireFault, WireFaultKind, WirePlan, WireProxy};
use ackflow_testkit::{OrderBookFixture, QueueFixture, RealTime, RedriveFixture, StoreFixture};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::config::Credentials;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use uuid::Uuid;

// ---- fixtures -----------------------------------------------------------------------------------

fn moto_url() -> String {
    std::env::var("ACKFLOW_MOTO_URL").expect(
        "ACKFLOW_MOTO_URL is not set: run infra/scripts/test-all, or \
         export ACKFLOW_MOTO_URL=$(infra/scripts/moto start)",
    )
}

/// Clients for the endpoint at `url`, configured explicitly (never from the process
/// environment, which tests share): static credentials, a fixed region, `attempts` attempts.
async fn clients_at(url: &str, attempts: u32) -> Clients {
    configured_clients(
        url,
        RetryConfig::standard().with_max_attempts(attempts),
        timeouts(),
    )
    .await
}

/// [`clients_at`] with its own retries and timeouts.
async fn configured_clients(url: &str, retry: RetryConfig, timeouts: TimeoutConfig) -> Clients {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .timeout_config(timeouts)
        .retry_config(retry)
        .endpoint_url(url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .load()
        .await;
    Clients::from_sdk_config(&config)
}

async fn moto() -> Clients {
    clients_at(&moto_url(), 3).await
}

/// A name no other test uses on the shared moto server.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

const MAX_RECEIVE_COUNT: u32 = 3;

async fn fresh_queue_pair(clients: &Clients, max_receive_count: u32, visibility: u32) -> SqsQueue {
    let (queue, dlq) =
        schema::create_queues(&clients.sqs, &unique("q"), max_receive_count, visibility)
            .await
            .expect("create queues");
    SqsQueue::new(clients.sqs.clone(), queue, dlq)
}

async fn fresh_table(clients: &Clients) -> String {
    let table = unique("t");
    schema::create_table(&clients.dynamo, &table)
        .await
        .expect("create table");
    table
}

/// The store of `table`, its report folded from the table's stream before each read: the
/// tests' stand-in for the event source mapping that hands the stream to the `sweeper`
/// function on AWS. Records the fold has not taken stay pending for the next read.
fn folded_store(clients: &Clients, table: &str) -> Arc<dyn JobStore> {
    let store = DynamoJobStore::new(clients.dynamo.clone(), table.to_owned());
    Arc::new(CatchingUp::new(Arc::new(store), catch_up(clients, table)))
}

/// Folds what the stream of `table` gained since the last call.
fn catch_up(clients: &Clients, table: &str) -> CatchUp {
    let tail = Arc::new(StreamTail::new(&moto_url(), table));
    let fold = ReportFold::new(clients.dynamo.clone(), table.to_owned());
    let pending: Arc<tokio::sync::Mutex<Vec<TableChange>>> = Arc::default();
    Arc::new(move || {
        let (tail, fold, pending) = (tail.clone(), fold.clone(), pending.clone());
        Box::pin(async move {
            let mut pending = pending.lock().await;
            for record in tail.next_records().await? {
                pending.push(serde_json::from_value(record).map_err(|e| e.to_string())?);
            }
            match fold.fold(&pending).await {
                Ok(_) => {
                    pending.clear();
                    Ok(())
                }
                Err(failure) => {
                    let from = pending
                        .iter()
                        .position(|r| r.dynamodb.sequence_number == failure.sequence_number)
                        .unwrap_or(0);
                    pending.drain(..from);
                    Err(ackflow_core::error_chain(&failure))
                }
            }
        })
    })
}

async fn fresh_queue() -> QueueFixture {
    let clients = moto().await;
    QueueFixture {
        queue: Arc::new(fresh_queue_pair(&clients, MAX_RECEIVE_COUNT, 1).await),
        max_receive_count: MAX_RECEIVE_COUNT,
        harness: Arc::new(RealTime),
        guard: (),
    }
}

async fn fresh_store() -> StoreFixture {
    let clients = moto().await;
    let table = fresh_table(&clients).await;
    StoreFixture {
        store: folded_store(&clients, &table),
        harness: Arc::new(RealTime),
        guard: (),
    }
}

async fn fresh_order_book() -> OrderBookFixture {
    let clients = moto().await;
    let table = fresh_table(&clients).await;
    // Not seeded: the suite runs on stock seeded on first use.
    let book = DynamoOrderBook::new(clients.dynamo, table);
    OrderBookFixture {
        book: Arc::new(book),
        guard: (),
    }
}

/// The use cases with the `demo` processor on a fresh table and queue pair, on a manual clock
/// (the redrive scenarios move it past job deadlines; SQS keeps its own time).
async fn fresh_redrive() -> RedriveFixture {
    let clients = moto().await;
    let settings = Settings::default();
    let table = fresh_table(&clients).await;
    let queue = fresh_queue_pair(
        &clients,
        MAX_RECEIVE_COUNT,
        u32::try_from(settings.visibility_timeout.as_secs()).expect("secs"),
    )
    .await;
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let book = Arc::new(DynamoOrderBook::new(clients.dynamo.clone(), table.clone()));
    RedriveFixture {
        app: Ackflow::new(
            folded_store(&clients, &table),
            Arc::new(queue),
            registry_with(book, clock.clone(), true),
            clock.clone(),
            settings,
        ),
        clock,
        max_receive_count: MAX_RECEIVE_COUNT,
        guard: (),
    }
}

mod redrive {
    ackflow_testkit::redrive_tests!(
        #[ignore = "needs moto server: run infra/scripts/test-all"]
        super::fresh_redrive
    );
}

mod queue_contract {
    ackflow_testkit::queue_contract_tests!(
        #[ignore = "needs moto server: run infra/scripts/test-all"]
        together: super::fresh_queue
    );
}

mod store_contract {
    ackflow_testkit::store_contract_tests!(
        #[ignore = "needs moto server: run infra/scripts/test-all"]
        super::fresh_store
    );
}

mod order_book_contract {
    ackflow_testkit::order_book_contract_tests!(
        #[ignore = "needs moto server: run infra/scripts/test-all"]
        super::fresh_order_book
    );
}

// ---- AWS only, on moto ---------------------------------------------------------------------------

fn message(body: &str) -> OutgoingMessage {
    OutgoingMessage {
        body: body.to_owned(),
        attributes: vec![("ackflow-job-id".into(), body.into())],
        delay: Duration::ZERO,
    }
}

/// The redrive policy itself (not `dead_letter`): with `maxReceiveCount` 2 and the queue's own
/// one-second visibility timeout, the message is delivered twice, and the receive after the
/// second moves it to the dead-letter queue with its id and attributes.
#[tokio::test]
#[ignore = "needs moto server: run infra/scripts/test-all"]
async fn sqs_redrive_moves_a_message_to_the_dead_letter_queue_on_the_receive_after_the_last_allowed_one(
) {
    let clients = moto().await;
    let queue = fresh_queue_pair(&clients, 2, 1).await;
    queue.send(message("poison")).await.expect("send");

    let visibility = Duration::from_secs(1);
    let first = queue.receive(10, visibility).await.expect("receive");
    assert_eq!(first.len(), 1, "{first:#?}");
    assert_eq!(first[0].receive_count, 1);
    tokio::time::sleep(visibility + Duration::from_millis(500)).await;
    let second = queue.receive(10, visibility).await.expect("receive");
    assert_eq!(second.len(), 1, "{second:#?}");
    assert_eq!(second[0].receive_count, 2);
    assert_eq!(
        queue.dead_letters(10).await.expect("dead letters"),
        vec![],
        "nothing moves before the receive after the last allowed one"
    );
    tokio::time::sleep(visibility + Duration::from_millis(500)).await;
    let third = queue.receive(10, visibility).await.expect("receive");
    assert!(third.is_empty(), "delivered a third time: {third:#?}");

    let dead = queue.dead_letters(10).await.expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0].delivery.message_id, first[0].message_id);
    assert_eq!(dead[0].delivery.body, "poison");
    assert_eq!(
        dead[0].delivery.attributes.get("ackflow-job-id"),
        Some(&"poison".to_owned())
    );
    assert_eq!(
        queue.depth().await.expect("depth"),
        QueueDepth {
            waiting: 0,
            in_flight: 0,
            dead: 1
        }
    );
}

fn new_job(owner: &Owner) -> Job {
    Job::new(
        NewJob {
            owner: owner.clone(),
            kind: Kind::parse("demo").expect("kind"),
            correlation_id: CorrelationId::random(),
            idempotency_key: Some(IdempotencyKey::parse("race").expect("key")),
        },
        &SystemClock,
        &Settings::default(),
    )
}

/// An Idempotency-Key outlives its job's items by design (its expiry is set when it is written,
/// a day past the latest its job can expire), so it must not outlive the job's hold on it: a
/// key whose job has expired, or is gone, is taken over by the next create, and then holds the
/// new job.
#[tokio::test]
#[ignore = "needs moto server: run infra/scripts/test-all"]
async fn a_key_whose_job_expired_or_is_gone_is_free_again() {
    let clients = moto().await;
    let table = fresh_table(&clients).await;
    let store = DynamoJobStore::new(clients.dynamo.clone(), table.clone());
    let settings = Settings::default();
    let owner = Owner::parse("alice").expect("owner");
    let clock = ManualClock::new(SystemClock.now());
    let keyed = |clock: &ManualClock, key: &str| {
        Job::new(
            NewJob {
                owner: owner.clone(),
                kind: Kind::parse("demo").expect("kind"),
                correlation_id: CorrelationId::random(),
                idempotency_key: Some(IdempotencyKey::parse(key).expect("key")),
            },
            clock,
            &settings,
        )
    };
    let record = |key: &str| ackflow_core::IdempotencyRecord {
        key: IdempotencyKey::parse(key).expect("key"),
        body_hash: "same".into(),
    };
    let input = json!({});

    // Expired: the job ended, and its retention has passed.
    let first = keyed(&clock, "expiring");
    assert_eq!(
        store
            .create(&first, &input, Some(&record("expiring")))
            .await
            .expect("create"),
        Created::New
    );
    let running = first
        .apply(Change::Start, clock.now(), &settings)
        .expect("start");
    store
        .update(&first, &running, None, &Deltas::between(&first, &running))
        .await
        .expect("start");
    let done = running
        .apply(Change::Succeed, clock.now(), &settings)
        .expect("succeed");
    store
        .update(
            &running,
            &done,
            Some(&json!({})),
            &Deltas::between(&running, &done),
        )
        .await
        .expect("succeed");
    let again = keyed(&clock, "expiring");
    let held = store
        .create(&again, &input, Some(&record("expiring")))
        .await
        .expect("create");
    assert!(
        matches!(&held, Created::Existing { job, same_body: true } if job.id == first.id),
        "while the job is kept, its key names it: {held:?}"
    );
    clock.advance(settings.retention + Duration::from_secs(2));
    let second = keyed(&clock, "expiring");
    assert_eq!(
        store
            .create(&second, &input, Some(&record("expiring")))
            .await
            .expect("create"),
        Created::New,
        "the key of an expired job is free"
    );
    let third = keyed(&clock, "expiring");
    let held = store
        .create(&third, &input, Some(&record("expiring")))
        .await
        .expect("create");
    assert!(
        matches!(&held, Created::Existing { job, .. } if job.id == second.id),
        "and then holds the new job: {held:?}"
    );

    // Gone: DynamoDB deleted the expired header before the key.
    let lost = keyed(&clock, "vanishing");
    store
        .create(&lost, &input, Some(&record("vanishing")))
        .await
        .expect("create");
    clients
        .dynamo
        .delete_item()
        .table_name(&table)
        .key(
            "PK",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("JOB#{}", lost.id)),
        )
        .key(
            "SK",
            aws_sdk_dynamodb::types::AttributeValue::S("JOB".into()),
        )
        .send()
        .await
        .expect("delete the header");
    let next = keyed(&clock, "vanishing");
    assert_eq!(
        store
            .create(&next, &input, Some(&record("vanishing")))
            .await
            .expect("create"),
        Created::New,
        "the key of a job that is gone is free"
    );
}

/// Workers that read the same version race to start the job: DynamoDB's condition on the
/// revision lets exactly one through; the others get `Conflict`, and the gauges count once.
/// The same holds for writes of the header alone (progress), which are a conditional `PutItem`
/// rather than a transaction.
#[tokio::test]
#[ignore = "needs moto server: run infra/scripts/test-all"]
async fn racing_writes_from_one_version_leave_one_winner_and_one_conflict() {
    let clients = moto().await;
    let store = folded_store(&clients, &fresh_table(&clients).await);
    let owner = Owner::parse("alice").expect("owner");
    let job = new_job(&owner);
    store
        .create(&job, &json!({"steps": 1}), None)
        .await
        .expect("create");

    let settings = Settings::default();
    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (store, job, settings) = (Arc::clone(&store), job.clone(), settings.clone());
        racers.spawn(async move {
            let after = job
                .apply(Change::Start, SystemClock.now(), &settings)
                .expect("start");
            let deltas = Deltas::between(&job, &after);
            store.update(&job, &after, None, &deltas).await
        });
    }
    let (mut won, mut conflicts) = (0, 0);
    while let Some(joined) = racers.join_next().await {
        match joined.expect("task") {
            Ok(()) => won += 1,
            Err(WriteError::Conflict) => conflicts += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!((won, conflicts), (1, 5));
    let stored = store.get(&owner, job.id).await.expect("get").expect("job");
    assert_eq!(
        (stored.state, stored.revision, stored.attempts),
        (JobState::Running, 2, 1)
    );
    let figures = store
        .figures(&owner, SystemClock.now().minus(Duration::from_secs(3600)))
        .await
        .expect("figures");
    assert_eq!(figures.gauges.get(&JobState::Running), Some(&1));
    assert_eq!(figures.gauges.get(&JobState::Queued), Some(&0));

    let mut racers = tokio::task::JoinSet::new();
    for percent in [10, 20, 30, 40] {
        let (store, job, settings) = (Arc::clone(&store), stored.clone(), settings.clone());
        racers.spawn(async move {
            let progress = ackflow_core::Progress::new(percent, "racing");
            let after = job
                .apply(Change::Progress(progress), SystemClock.now(), &settings)
                .expect("progress");
            assert_eq!(
                Deltas::between(&job, &after),
                Deltas {
                    hour: Deltas::hour_of(after.updated_at),
                    ..Deltas::default()
                }
            );
            store
                .update(&job, &after, None, &Deltas::between(&job, &after))
                .await
                .map(|()| percent)
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = racers.join_next().await {
        match joined.expect("task") {
            Ok(percent) => winners.push(percent),
            Err(WriteError::Conflict) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let latest = store.get(&owner, job.id).await.expect("get").expect("job");
    assert_eq!(latest.revision, 3);
    assert_eq!(latest.progress.percent, winners[0]);
}

/// The use cases of the core on the AWS adapters, as the functions will run them: accept a
/// demo job and two orders (one for an item that is sold out), let a worker receive, handle and
/// settle until the queue is empty, and find every job terminal with its result or problem,
/// the stock taken once, the report and the listing right, and the sweeper content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto server: run infra/scripts/test-all"]
async fn the_use_cases_run_end_to_end_on_sqs_and_dynamodb() {
    let clients = moto().await;
    let settings = Settings {
        max_attempts: 3,
        ..Settings::default()
    };
    let table = fresh_table(&clients).await;
    let queue = Arc::new(
        fresh_queue_pair(
            &clients,
            settings.max_receive_count(),
            u32::try_from(settings.visibility_timeout.as_secs()).expect("secs"),
        )
        .await,
    );
    let store = folded_store(&clients, &table);
    let book = Arc::new(DynamoOrderBook::new(clients.dynamo.clone(), table));
    book.seed().await.expect("seed");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let app = Ackflow::new(
        store.clone(),
        queue.clone(),
        registry_with(book.clone(), clock.clone(), true),
        clock,
        settings.clone(),
    );
    let owner = Owner::parse("auth0|alice").expect("owner");
    let submit = |kind: &str, input: serde_json::Value, key: Option<&str>| Submission {
        owner: owner.clone(),
        kind: kind.to_owned(),
        input,
        idempotency_key: key.map(|k| IdempotencyKey::parse(k).expect("key")),
        correlation_id: CorrelationId::random(),
        trace_header: None,
    };

    let demo = app
        .accept(submit("demo", json!({"steps": 3, "step_ms": 5}), None))
        .await
        .expect("accept demo");
    let order_input = json!({"customer": "Ada", "items": [{"sku": "mug-red", "quantity": 2}]});
    let order = app
        .accept(submit("order", order_input.clone(), Some("cart-1")))
        .await
        .expect("accept order");
    let replay = app
        .accept(submit("order", order_input, Some("cart-1")))
        .await
        .expect("replay");
    assert!(replay.replayed);
    assert_eq!(replay.job.id, order.job.id, "same key, same body, same job");
    let sold_out = app
        .accept(submit(
            "order",
            json!({"customer": "Bob", "items": [{"sku": "poster-limited", "quantity": 1}]}),
            None,
        ))
        .await
        .expect("accept sold-out order");
    for accepted in [&demo, &order, &sold_out] {
        assert_eq!(accepted.job.state, JobState::Queued);
    }

    // The worker: receive, handle, settle, until the three jobs are terminal.
    let ids = [demo.job.id, order.job.id, sold_out.job.id];
    for round in 0.. {
        assert!(round < 30, "the jobs did not finish");
        let mut open = 0;
        for id in ids {
            let status = app.status(&owner, id).await.expect("status");
            open += usize::from(!status.job.state.is_terminal());
        }
        if open == 0 {
            break;
        }
        for delivery in queue
            .receive(10, settings.visibility_timeout)
            .await
            .expect("receive")
        {
            let disposition = app.handle(&delivery).await;
            assert_eq!(disposition, Disposition::Delete, "{delivery:#?}");
            app.settle(&delivery, disposition, ackflow_core::Deleter::Worker)
                .await
                .expect("settle");
        }
    }

    let done = app.status(&owner, demo.job.id).await.expect("status");
    assert_eq!(done.job.state, JobState::Succeeded);
    assert_eq!(done.result, Some(json!({"steps": 3, "attempt": 1})));
    assert_eq!(done.job.progress.percent, 100);

    let placed = app.status(&owner, order.job.id).await.expect("status");
    assert_eq!(placed.job.state, JobState::Succeeded, "{:#?}", placed.job);
    let result = placed.result.expect("an order's result");
    assert_eq!(result["total_cents"], json!(2500), "{result}");
    let stored = book
        .order(order.job.id)
        .await
        .expect("order")
        .expect("a confirmed order");
    assert_eq!(stored.total_cents, 2500);
    assert_eq!(
        book.available("mug-red").await.expect("stock"),
        Some(48),
        "the stock was taken once"
    );

    let refused = app.status(&owner, sold_out.job.id).await.expect("status");
    assert_eq!(refused.job.state, JobState::Failed);
    let problem = refused.job.error.expect("a problem");
    assert!(problem.type_.ends_with("order:out-of-stock"), "{problem:?}");
    assert!(
        problem.detail.contains("Limited Edition Poster"),
        "{problem:?}"
    );

    let report = app.report(&owner).await.expect("report");
    assert_eq!(report.accepted, 3);
    assert_eq!(report.counts.get(&JobState::Succeeded), Some(&2));
    assert_eq!(report.counts.get(&JobState::Failed), Some(&1));
    assert_eq!(report.counts.get(&JobState::Queued), Some(&0));
    assert_eq!(report.oldest_open, None);
    assert_eq!(
        report.queue,
        Some(QueueDepth::default()),
        "every message was deleted"
    );

    let listed = app
        .list(&owner, ackflow_core::ListQuery::default())
        .await
        .expect("list");
    let listed: Vec<JobId> = listed.jobs.iter().map(|j| j.id).collect();
    assert_eq!(listed, vec![sold_out.job.id, order.job.id, demo.job.id]);

    let sweep = app.sweep().await.expect("sweep");
    assert_eq!(
        sweep,
        ackflow_core::SweepReport::default(),
        "nothing is left to sweep"
    );
}

// ---- lost answers, through the wire proxy --------------------------------------------------------

/// A proxy in front of moto server with no faults planned (each test scripts its own), and
/// clients through it that try a call `attempts` times.
async fn behind_proxy(attempts: u32) -> (WireProxy, Clients) {
    let proxy = WireProxy::start(&moto_url(), WirePlan::quiet())
        .await
        .expect("start the proxy");
    let clients = clients_at(&proxy.url(), attempts).await;
    (proxy, clients)
}

fn is_ambiguous(e: &PortError) -> bool {
    matches!(e, PortError::Ambiguous { .. })
}

/// moto gets every attempt of the send, the SDK no answer to any: the send is `Ambiguous`, not
/// `Unavailable` — rightly, since every attempt put a message on the queue.
#[tokio::test]
#[ignore = "needs moto server: run infra/scripts/test-all"]
async fn a_send_whose_answer_is_lost_on_every_attempt_is_ambiguous_and_the_message_arrives() {
    let (proxy, clients) = behind_proxy(3).await;
    let queue = fresh_queue_pair(&clients, MAX_RECEIVE_COUNT, 30).await;
    proxy.script(
        "SendMessage",
        WireFault::ResetAfterForward,
        Hits::EveryAttempt,
    );
    let e = queue
        .send(message("lost answer"))
        .await
        .expect_err("every answer is cut");
    assert!(is_ambiguous(&e), "{e:?}");

    let attempts = proxy.stats().operation("SendMessage").attempts;
    assert_eq!(attempts, 3, "{}", proxy.stats());
    let mut received = Vec::new();
    for _ in 0..10 {
        if received.len() >= 3 {
            break;
        }
        received.extend(
            queue
                .receive(10, Duration::from_secs(30))
                .await
                .expect("receive"),
        );
    }
    assert_eq!(received.len(), 3, "each attempt landed: {received:#?}");
    assert!(received.iter().all(|d| d.body == "lost answer"));
    println!("{}", proxy.stats());
}

/// The same for a job's progress, a conditional `PutItem`: the first attempt wrote it, the
/// retries met their condition already false, and no answer came back to any: `Ambiguous`
/// (not a conflict, not unavailable), and the job reads back with the progress.
#[tokio::test]
#[ignore = "needs moto server: run infra/scripts/test-all"]
async fn a_progress_write_whose_answer_is_lost_on_every_attempt_is_ambiguous_and_took_effect() {
    let (proxy, clients) = behind_proxy(3).await;
    let store = DynamoJobStore::new(clients.dynamo.clone(), fresh_table(&clients).await);
    let owner = Owner::parse("alice").expect("owner");
    let settings = Settings::default();
    let job = new_job(&owner);
    store.create(&job, &json!({}), None).await.expect("create");
    let running = job
        .apply(Change::Start, SystemClock.now(), &settings)
        .expect("start");
    store
        .update(&job, &running, None, &Deltas::between(&job, &running))
        .await
        .expect("start");
    let progressed = running
        .apply(
            Change::Progress(Progress::new(40, "lost answer")),
            SystemClock.now(),
            &settings,
        )
        .expect("progress");

    // The start was a `PutItem` too (the header alone changes).
    let before = proxy.stats().operation("PutItem").attempts;
    proxy.script("PutItem", WireFault::ResetAfterForward, Hits::EveryAttempt);
    let e = store
        .update(
            &running,
            &progressed,
            None,
            &Deltas::between(&running, &progressed),
        )
        .await
        .expect_err("every answer is cut");
    assert!(
        matches!(&e, WriteError::Port(e) if is_ambiguous(e)),
        "{e:?}"
    );
    let put = proxy.stats().operation("PutItem");
    assert_eq!(
        (put.faulted(WireFaultKind::Reset), put.attempts - before),
        (1, 3),
        "one PutItem, tried three times: {}",
        proxy.stats()
    );
    let stored = store.get(&owner, job.id).await.expect("get").expect("job");
    assert_eq!(
        (stored.revision, stored.progress.percent),
        (progressed.revision, 40)
    );
}

/// A transaction retried after its answer was lost: DynamoDB recognises the retry by its
/// `ClientRequestToken` (the SDK keeps it across attempts) and answers the first success
/// again, so the job is created once and counted once. Without that memory (moto alone) the
/// retry meets the job its first attempt wrote, and the create fails as if the id were taken.
#[tokio::test]
#[ignore = "needs moto server: run infra/scripts/test-all"]
async fn a_create_whose_answer_was_lost_succeeds_once_on_the_retry_with_the_same_token() {
    let (proxy, clients) = behind_proxy(3).await;
    let store = folded_store(&clients, &fresh_table(&clients).await);
    let owner = Owner::parse("alice").expect("owner");

    let job = new_job(&owner);
    proxy.script(
        "TransactWriteItems",
        WireFault::ResetAfterForward,
        Hits::FirstAttempt,
    );
    let created = store
        .create(&job, &json!({"steps": 1}), None)
        .await
        .expect("the retry is answered as the first attempt was");
    assert_eq!(created, Created::New);
    let tx = proxy.stats().operation("TransactWriteItems");
    assert_eq!(
        (tx.calls, tx.attempts, tx.replays),
        (1, 2, 1),
        "{}",
        proxy.stats()
    );
    assert!(store.get(&owner, job.id).await.expect("get").is_some());
    let figures = store
        .figures(&owner, SystemClock.now().minus(Duration::from_secs(3600)))
        .await
        .expect("figures");
    assert_eq!(
        figures.gauges.get(&JobState::Queued),
        Some(&1),
        "counted once"
    );

    proxy.set_token_replay(false);
    let other = new_job(&owner);
    proxy.script(
        "TransactWriteItems",
        WireFault::ResetAfterForward,
        Hits::FirstAttempt,
    );
    let e = store
        .create(&other, &json!({"steps": 1}), None)
        .await
        .expect_err("without the token memory the retry meets its own write");
    let source = std::error::Error::source(&e).map(ToString::to_string);
    assert!(
        matches!(e, PortError::Failed { .. }) && source.is_some_and(|s| s.contains("is taken")),
        "{e:?}"
    );
}

/// The faults the SDK retries: injected on the first attempt, each send goes through on the
/// second (a hang after the attempt timeout, so its first attempt landed too); injected on
/// every attempt, the SDK tries three times (a 400 is retried only when it reads as
/// throttling) and the adapter calls the failure `Unavailable`, on SQS and on DynamoDB alike.
#[tokio::test]
#[ignore = "needs moto server: run infra/scripts/test-all"]
async fn injected_throttling_and_server_errors_are_retried_by_the_sdk_then_unavailable() {
    let (proxy, clients) = behind_proxy(3).await;
    let queue = fresh_queue_pair(&clients, MAX_RECEIVE_COUNT, 30).await;
    let store = DynamoJobStore::new(clients.dynamo.clone(), fresh_table(&clients).await);
    let owner = Owner::parse("alice").expect("owner");
    for fault in [
        WireFault::Throttle,
        WireFault::ServerError,
        WireFault::Latency(Duration::from_millis(50)),
        WireFault::HangAfterForward,
    ] {
        proxy.script("SendMessage", fault, Hits::FirstAttempt);
        queue
            .send(message("m"))
            .await
            .expect("the retry goes through");
    }
    assert_eq!(
        proxy.stats().operation("SendMessage").attempts,
        7,
        "latency costs no retry: {}",
        proxy.stats()
    );

    for fault in [WireFault::Throttle, WireFault::ServerError] {
        proxy.script("SendMessage", fault, Hits::EveryAttempt);
        let e = queue
            .send(message("m"))
            .await
            .expect_err("every attempt fails");
        assert!(is_unavailable(&e), "{fault:?}: {e:?}");
        proxy.script("GetItem", fault, Hits::EveryAttempt);
        let e = store
            .get(&owner, JobId::random())
            .await
            .expect_err("every attempt fails");
        assert!(is_unavailable(&e), "{fault:?}: {e:?}");
    }
    let stats = proxy.stats();
    assert_eq!(
        stats.operation("SendMessage").attempts,
        7 + 2 * 3,
        "{stats}"
    );
    assert_eq!(stats.operation("GetItem").attempts, 2 * 3, "{stats}");
    println!("{stats}");
}

// ---- error classification, without moto --------------------------------------------------------

/// An address where nothing listens: bound, then released.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    format!("http://{address}")
}

fn is_unavailable(e: &PortError) -> bool {
    matches!(e, PortError::Unavailable { .. })
}

/// An endpoint that takes every request and never answers: the request is out, the outcome
/// unknown.
async fn silent_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                while matches!(socket.read(&mut buffer).await, Ok(n) if n > 0) {}
            });
        }
    });
    format!("http://{address}")
}

/// A queue pair at an endpoint that only fails: the URLs need only parse.
fn queue_at(sqs: aws_sdk_sqs::Client, url: &str) -> SqsQueue {
    SqsQueue::new(
        sqs,
        format!("{url}/123456789012/q"),
        format!("{url}/123456789012/q-dlq"),
    )
}

/// A send that went out and timed out may have reached SQS: it is `Ambiguous`, which makes
/// accept leave the job queued for the sweeper instead of failing it; a refused connection is
/// plainly `Unavailable` (nothing was sent).
#[tokio::test]
async fn a_send_that_times_out_is_ambiguous_and_a_refused_one_unavailable() {
    let url = silent_endpoint().await;
    let clients = configured_clients(
        &url,
        RetryConfig::disabled(),
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(2))
            .operation_attempt_timeout(Duration::from_millis(300))
            .operation_timeout(Duration::from_millis(300))
            .build(),
    )
    .await;
    let queue = queue_at(clients.sqs, &url);
    let e = queue.send(message("m")).await.expect_err("timed out");
    assert!(matches!(e, PortError::Ambiguous { .. }), "{e:?}");

    let refused = clients_at(&closed_port().await, 1).await;
    let queue = queue_at(refused.sqs, "http://127.0.0.1:1");
    let e = queue.send(message("m")).await.expect_err("refused");
    assert!(is_unavailable(&e), "{e:?}");
}

/// Nothing listening: every adapter call is `Unavailable` (a retry later may succeed), with the
/// SDK's error kept as the source.
#[tokio::test]
async fn a_refused_connection_is_unavailable_for_every_adapter() {
    let clients = clients_at(&closed_port().await, 1).await;
    let queue = queue_at(clients.sqs.clone(), "http://127.0.0.1:1");
    let store = DynamoJobStore::new(clients.dynamo.clone(), "t".into());
    let book = DynamoOrderBook::new(clients.dynamo, "t".into());
    let owner = Owner::anonymous();

    let e = queue.send(message("m")).await.expect_err("refused");
    assert!(is_unavailable(&e), "{e:?}");
    let e = queue.depth().await.expect_err("refused");
    assert!(is_unavailable(&e), "{e:?}");
    let e = store
        .get(&owner, JobId::random())
        .await
        .expect_err("refused");
    assert!(is_unavailable(&e), "{e:?}");
    assert!(
        std::error::Error::source(&e).is_some(),
        "the SDK error is kept"
    );
    let job = new_job(&owner);
    let e = store
        .create(&job, &json!({}), None)
        .await
        .expect_err("refused");
    assert!(is_unavailable(&e), "{e:?}");
    let e = book.available("mug-red").await.expect_err("refused");
    assert!(is_unavailable(&e), "{e:?}");
}

/// A fake DynamoDB endpoint that answers every request with `status` and an error of `code`.
async fn fake_dynamodb(status: u16, code: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Read the whole request, so the client sees a clean answer.
                if !read_whole_request(&mut socket).await {
                    return;
                }
                let body = format!(
                    r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"fake {code}"}}"#
                );
                let answer = format!(
                    "HTTP/1.1 {status} Fake\r\ncontent-type: application/x-amz-json-1.0\r\n\
                     x-amzn-errortype: {code}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://{address}")
}

/// Throttling and server errors are `Unavailable`; a request the service refuses as invalid is
/// `Failed` (sending it again would be refused again). Also for transactions: a throttled
/// `create` is `Unavailable`.
#[tokio::test]
async fn throttling_and_server_errors_are_unavailable_and_validation_errors_failed() {
    let owner = Owner::anonymous();
    for (status, code, transient) in [
        (400, "ThrottlingException", true),
        (400, "ProvisionedThroughputExceededException", true),
        (500, "InternalServerError", true),
        (503, "ServiceUnavailable", true),
        (400, "ValidationException", false),
        (400, "ResourceNotFoundException", false),
        (400, "AccessDeniedException", false),
    ] {
        let clients = clients_at(&fake_dynamodb(status, code).await, 1).await;
        let store = DynamoJobStore::new(clients.dynamo, "t".into());
        let e = store
            .get(&owner, JobId::random())
            .await
            .expect_err("the fake refuses everything");
        assert_eq!(is_unavailable(&e), transient, "{status} {code}: {e:?}");
        let e = store
            .create(&new_job(&owner), &json!({}), None)
            .await
            .expect_err("the fake refuses everything");
        assert_eq!(is_unavailable(&e), transient, "{status} {code}: {e:?}");
    }
}

/// Reads one request's head and body (by its Content-Length) from `socket`; false when the
/// client went away first.
async fn read_whole_request(socket: &mut TcpStream) -> bool {
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let Ok(read) = socket.read(&mut buffer).await else {
            return false;
        };
        if read == 0 {
            return false;
        }
        request.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&request);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if request.len() >= head_end + 4 + length {
                return true;
            }
        }
    }
}

/// How [`cutting_endpoint`] ends a connection instead of answering.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Reads the request, then resets the connection.
    ResetAfterReading,
    /// Reads the request, then closes the connection.
    CloseAfterReading,
}

/// An endpoint that takes every request and cuts the connection instead of answering.
async fn cutting_endpoint(cut: Cut) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                if !read_whole_request(&mut socket).await {
                    return;
                }
                match cut {
                    Cut::ResetAfterReading => {
                        socket.set_zero_linger().expect("SO_LINGER");
                        drop(socket);
                    }
                    Cut::CloseAfterReading => {
                        let _ = socket.shutdown().await;
                    }
                }
            });
        }
    });
    format!("http://{address}")
}

/// A request that reached the server and whose connection was then cut may have been carried
/// out, whether the server reset the connection or closed it: every adapter call is
/// `Ambiguous`, none merely `Unavailable`.
#[tokio::test]
async fn a_connection_cut_after_the_request_was_read_is_ambiguous_for_every_adapter() {
    let owner = Owner::anonymous();
    for cut in [Cut::ResetAfterReading, Cut::CloseAfterReading] {
        let url = cutting_endpoint(cut).await;
        let clients = clients_at(&url, 1).await;
        let queue = queue_at(clients.sqs, &url);
        let store = DynamoJobStore::new(clients.dynamo, "t".into());

        let e = queue.send(message("m")).await.expect_err("cut");
        assert!(is_ambiguous(&e), "{cut:?}: {e:?}");
        let e = store
            .create(&new_job(&owner), &json!({}), None)
            .await
            .expect_err("cut");
        assert!(is_ambiguous(&e), "{cut:?}: {e:?}");
        let e = store.get(&owner, JobId::random()).await.expect_err("cut");
        assert!(is_ambiguous(&e), "{cut:?}: {e:?}");
    }
}

/// A listener whose accept queue is full and never drained: a connect to it hangs, as to a
/// host that drops the SYN. The listener and the connection that fills the queue must live as
/// long as the test.
async fn unanswered_connects() -> (String, TcpListener, TcpStream) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let listener = socket.listen(0).expect("listen");
    let address = listener.local_addr().expect("address");
    let filler = TcpStream::connect(address).await.expect("fill the queue");
    (format!("http://{address}"), listener, filler)
}

/// A connect that times out sent nothing: `Unavailable`, although it is a timeout.
#[tokio::test]
async fn a_connect_that_times_out_is_unavailable() {
    let (url, _listener, _filler) = unanswered_connects().await;
    let clients = configured_clients(
        &url,
        RetryConfig::disabled(),
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_millis(300))
            .operation_attempt_timeout(Duration::from_secs(5))
            .operation_timeout(Duration::from_secs(5))
            .build(),
    )
    .await;
    let queue = queue_at(clients.sqs, &url);
    let e = queue.send(message("m")).await.expect_err("connect timeout");
    assert!(is_unavailable(&e), "{e:?}");
}

// ---- the report folded from the table's stream ----------------------------------------------------

/// `count` jobs of `owners` (one each, round robin) accepted, and the first of them started.
async fn jobs_of(store: &DynamoJobStore, owners: &[Owner], count: usize) -> Vec<Job> {
    let mut jobs = Vec::new();
    for i in 0..count {
        let mut job = new_job(&owners[i % owners.len()]);
        job.idempotency_key = None;
        store
            .create(&job, &json!({"steps": 1}), None)
            .await
            .expect("create");
        jobs.push(job);
    }
    jobs
}

/// A fresh table's store (its report not folded), the fold of its stream, and the stream.
async fn fold_world(clients: &Clients) -> (DynamoJobStore, ReportFold, StreamTail) {
    let table = fresh_table(clients).await;
    (
        DynamoJobStore::new(clients.dynamo.clone(), table.clone()),
        ReportFold::new(clients.dynamo.clone(), table.clone()),
        StreamTail::new(&moto_url(), &table),
    )
}

/// The stream's records so far, as the fold takes them.
async fn stream_of(tail: &StreamTail) -> Vec<TableChange> {
    tail.next_records()
        .await
        .expect("read the stream")
        .into_iter()
        .map(|r| serde_json::from_value(r).expect("a stream record"))
        .collect()
}

/// Folded once, or again and again in the ways Lambda hands a batch over again (whole, grown
/// by what came after it, shrunk, from a record in its middle that a failure named), every
/// change is counted once, and the report reads as the writes say.
#[tokio::test]
#[ignore = "needs moto server: run infra/scripts/test-all"]
async fn the_fold_counts_each_change_once_however_its_batch_is_handed_over_again() {
    let clients = moto().await;
    let (store, fold, tail) = fold_world(&clients).await;
    let owner = Owner::parse("alice").expect("owner");
    let settings = Settings::default();

    let jobs = jobs_of(&store, std::slice::from_ref(&owner), 3).await;
    let mut records = stream_of(&tail).await;
    // Start one job and fail another, with their progress in between (which counts nothing).
    let now = SystemClock.now();
    let running = jobs[0].apply(Change::Start, now, &settings).expect("start");
    store
        .update(&jobs[0], &running, None, &Deltas::default())
        .await
        .expect("start");
    let progressed = running
        .apply(Change::Progress(Progress::new(50, "half")), now, &settings)
        .expect("progress");
    store
        .update(&running, &progressed, None, &Deltas::default())
        .await
        .expect("progress");
    let failed = jobs[1]
        .apply(Change::Cancel, now, &settings)
        .expect("cancel");
    store
        .update(&jobs[1], &failed, None, &Deltas::default())
        .await
        .expect("cancel");
    records.extend(stream_of(&tail).await);
    assert_eq!(
        records.len(),
        9,
        "three headers and their inputs, three changes"
    );

    let first = fold.fold(&records[..2]).await.expect("fold");
    assert_eq!(first.transactions, 1);
    // The same batch again, grown: its first two records were folded.
    let again = fold.fold(&records).await.expect("fold");
    assert_eq!((again.already_folded, again.transactions), (2, 1));
    // Whole, shrunk, and from a record in the middle: all folded before.
    for batch in [&records[..], &records[..3], &records[2..]] {
        let folded = fold.fold(batch).await.expect("fold");
        assert_eq!(folded.transactions, 0, "{folded:?}");
    }

    let figures = store
        .figures(&owner, now.minus(Duration::from_secs(3600)))
        .await
        .expect("figures");
    assert_eq!(figures.gauges.get(&JobState::Queued), Some(&1));
    assert_eq!(figures.gauges.get(&JobState::Running), Some(&1));
    assert_eq!(figures.counters.get("accepted"), Some(&3));
    assert_eq!(figures.counters.get("state:cancelled"), Some(&1));
    assert_eq!(figures.counters.get("retried"), None);
}

/// A batch of more owners than one transaction holds is folded in several; a transaction whose
/// answer was lost is found applied by its marker when it is sent again, and a fold that fails
/// names the record to retry from, before which everything is folded.
#[tokio::test]
#[ignore = "needs moto server: run infra/scripts/test-all"]
async fn a_wide_batch_is_folded_in_chunks_each_once_through_lost_answers_and_failures() {
    let (proxy, clients) = behind_proxy(3).await;
    let (store, fold, tail) = fold_world(&clients).await;
    // Each owner's first job touches two aggregates (gauges, the hour's counters).
    let owners: Vec<Owner> = (0..120)
        .map(|i| Owner::parse(format!("owner-{i}")).expect("owner"))
        .collect();
    jobs_of(&store, &owners, owners.len()).await;
    let records = stream_of(&tail).await;

    // The first chunk's answer is lost on every attempt (it is applied), and without the
    // proxy's memory of transaction tokens its retries meet the marker: applied before.
    proxy.set_token_replay(false);
    proxy.script(
        "TransactWriteItems",
        WireFault::ResetAfterForward,
        Hits::FirstAttempt,
    );
    // The next chunk fails on every attempt.
    let failure = {
        proxy.script(
            "TransactWriteItems",
            WireFault::ServerError,
            Hits::EveryAttempt,
        );
        fold.fold(&records)
            .await
            .expect_err("the second chunk fails")
    };
    let from = records
        .iter()
        .position(|r| r.dynamodb.sequence_number == failure.sequence_number)
        .expect("the failure names a record of the batch");
    assert!(from > 0, "the first chunk was folded");
    assert!(
        from < records.len() - 1,
        "a chunk holds fewer than 120 owners"
    );

    let rest = fold.fold(&records[from..]).await.expect("fold");
    assert!(rest.transactions >= 2, "{rest:?}");
    let whole = fold.fold(&records).await.expect("fold");
    assert_eq!(whole.transactions, 0, "everything was folded: {whole:?}");
    assert_eq!(whole.already_folded, records.len());

    for owner in [&owners[0], &owners[from], &owners[119]] {
        let figures = store
            .figures(owner, SystemClock.now().minus(Duration::from_secs(3600)))
            .await
            .expect("figures");
        assert_eq!(figures.gauges.get(&JobState::Queued), Some(&1), "{owner}");
        assert_eq!(figures.counters.get("accepted"), Some(&1), "{owner}");
    }
}

/// A header the fold cannot read is left out of the report (and logged), and the batch goes on.
#[tokio::test]
#[ignore = "needs moto server: run infra/scripts/test-all"]
async fn an_unreadable_header_in_the_stream_is_left_out_and_its_batch_goes_on() {
    let clients = moto().await;
    let (store, fold, tail) = fold_world(&clients).await;
    let owner = Owner::parse("alice").expect("owner");
    jobs_of(&store, std::slice::from_ref(&owner), 2).await;
    let mut records = stream_of(&tail).await;
    if let Some(image) = records[0].dynamodb.new_image.as_mut() {
        image.inner_mut().insert(
            "state".into(),
            serde_dynamo::AttributeValue::S("lost".into()),
        );
    }
    let folded = fold.fold(&records).await.expect("fold");
    assert_eq!((folded.unreadable, folded.transactions), (1, 1));
    let figures = store
        .figures(&owner, SystemClock.now().minus(Duration::from_secs(3600)))
        .await
        .expect("figures");
    assert_eq!(figures.counters.get("accepted"), Some(&1));
}

/// A small result is kept in the job's header, so the write that ends the job is one
/// `PutItem`; a large one gets an item of its own, in a transaction. Both read back whole,
/// with the job and alone.
#[tokio::test]
#[ignore = "needs moto server: run infra/scripts/test-all"]
async fn a_small_result_sits_in_the_header_and_a_large_one_beside_it() {
    let (proxy, clients) = behind_proxy(3).await;
    let table = fresh_table(&clients).await;
    let store = DynamoJobStore::new(clients.dynamo.clone(), table.clone());
    let owner = Owner::parse("alice").expect("owner");
    let settings = Settings::default();
    let large = json!({"text": "x".repeat(2000)});
    for (result, own_item) in [(json!({"total_cents": 2500}), false), (large, true)] {
        let mut job = new_job(&owner);
        job.idempotency_key = None;
        store.create(&job, &json!({}), None).await.expect("create");
        let now = SystemClock.now();
        let running = job.apply(Change::Start, now, &settings).expect("start");
        store
            .update(&job, &running, None, &Deltas::default())
            .await
            .expect("start");
        let done = running
            .apply(Change::Succeed, now, &settings)
            .expect("succeed");
        let (puts, transactions) = (
            proxy.stats().operation("PutItem").calls,
            proxy.stats().operation("TransactWriteItems").calls,
        );
        store
            .update(&running, &done, Some(&result), &Deltas::default())
            .await
            .expect("succeed");
        assert_eq!(
            (
                proxy.stats().operation("PutItem").calls - puts,
                proxy.stats().operation("TransactWriteItems").calls - transactions,
            ),
            if own_item { (0, 1) } else { (1, 0) },
            "{}",
            proxy.stats()
        );
        let item = clients
            .dynamo
            .get_item()
            .table_name(&table)
            .key("PK", AttributeValue::S(format!("JOB#{}", job.id)))
            .key("SK", AttributeValue::S("RESULT".into()))
            .send()
            .await
            .expect("get item")
            .item;
        assert_eq!(item.is_some(), own_item);
        let (read, with) = store
            .get_with(&owner, job.id, JobPart::Result)
            .await
            .expect("read")
            .expect("the job");
        assert_eq!(
            (read.state, with),
            (JobState::Succeeded, Some(result.clone()))
        );
        assert_eq!(
            store.result(&owner, job.id).await.expect("result"),
            Some(result)
        );
        let stranger = Owner::parse("mallory").expect("owner");
        assert_eq!(store.result(&stranger, job.id).await.expect("result"), None);
    }
}
