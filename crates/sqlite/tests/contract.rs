//! Every behaviour suite of `ackflow-testkit` against the SQLite adapters, one fresh database
//! file per test; then what only SQLite promises: data survives reopening the file,
//! `release_in_flight` after a crash, `wait_for_work`, and the outbox's one transaction.

// Test code: the fixtures' helpers panic on setup failures, which is what a test should do.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ackflow_core::report::Deltas;
use ackflow_core::{
    Change, Created, Delivery, IdempotencyRecord, Job, JobState, JobStore, NewJob, Outbox,
    OutgoingMessage, Queue, QueueStep, Settings, Settled, WriteError,
};
use ackflow_processors::order::{OrderBook, OrderLine, SqliteOrderBook};
use ackflow_sqlite::{Db, Durability, SqliteBackend, SqliteOutbox, SqliteQueue, SqliteStore};
use ackflow_testkit::{
    Harness, ManualTime, OrderBookFixture, QueueFixture, RealTime, StoreFixture,
};
use tempfile::TempDir;

const MAX_RECEIVE_COUNT: u32 = 3;

fn fresh_db() -> (TempDir, Db) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&dir.path().join("ackflow.db"), Durability::Normal).expect("open");
    (dir, db)
}

async fn fresh_queue() -> QueueFixture<TempDir> {
    let (dir, db) = fresh_db();
    let harness = Arc::new(ManualTime::new());
    let queue = SqliteQueue::new(db, "jobs", MAX_RECEIVE_COUNT, harness.clock()).expect("queue");
    QueueFixture {
        queue: Arc::new(queue),
        max_receive_count: MAX_RECEIVE_COUNT,
        harness,
        guard: dir,
    }
}

async fn fresh_store() -> StoreFixture<TempDir> {
    let (dir, db) = fresh_db();
    StoreFixture {
        store: Arc::new(SqliteStore::new(db)),
        harness: Arc::new(ManualTime::new()),
        guard: dir,
    }
}

async fn fresh_order_book() -> OrderBookFixture<TempDir> {
    let (dir, db) = fresh_db();
    OrderBookFixture {
        book: Arc::new(SqliteOrderBook::new(db).expect("order book")),
        guard: dir,
    }
}

mod queue_contract {
    ackflow_testkit::queue_contract_tests!(super::fresh_queue);
}

/// The same queue on the machine's clock, with the suite really waiting: proves the suite's
/// margins hold in real time, as they must on SQS.
async fn fresh_queue_in_real_time() -> QueueFixture<TempDir> {
    let (dir, db) = fresh_db();
    let harness = Arc::new(RealTime);
    let queue = SqliteQueue::new(db, "jobs", MAX_RECEIVE_COUNT, harness.clock()).expect("queue");
    QueueFixture {
        queue: Arc::new(queue),
        max_receive_count: MAX_RECEIVE_COUNT,
        harness,
        guard: dir,
    }
}

mod queue_contract_in_real_time {
    ackflow_testkit::queue_contract_tests!(together: super::fresh_queue_in_real_time);
}

mod store_contract {
    ackflow_testkit::store_contract_tests!(super::fresh_store);
    ackflow_testkit::store_purge_tests!(super::fresh_store);
}

mod order_book_contract {
    ackflow_testkit::order_book_contract_tests!(super::fresh_order_book);
}

// ---- SQLite only ------------------------------------------------------------------------------

fn message(body: &str) -> OutgoingMessage {
    OutgoingMessage {
        body: body.to_owned(),
        attributes: vec![("ackflow-job-id".into(), body.into())],
        delay: Duration::ZERO,
    }
}

fn open(path: &Path) -> Db {
    Db::open(path, Durability::Full).expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_jobs_and_stock_survive_closing_and_reopening_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ackflow.db");
    let time = ManualTime::new();
    let settings = Settings::default();
    let job = Job::new(
        NewJob {
            owner: ackflow_core::Owner::anonymous(),
            kind: ackflow_core::Kind::parse("demo").expect("kind"),
            correlation_id: ackflow_core::CorrelationId::random(),
            idempotency_key: None,
        },
        time.clock().as_ref(),
        &settings,
    );
    let order = ackflow_core::JobId::random();
    let in_flight_receipt = {
        let db = open(&path);
        let queue = SqliteQueue::new(db.clone(), "jobs", 3, time.clock()).expect("queue");
        let store = SqliteStore::new(db.clone());
        let book = SqliteOrderBook::new(db).expect("book");
        store
            .create(&job, &serde_json::json!({"steps": 1}), None)
            .await
            .expect("create");
        queue.send(message("in flight")).await.expect("send");
        queue.send(message("waiting")).await.expect("send");
        // SQLite hands out the oldest visible message first.
        let got = queue
            .receive(1, Duration::from_secs(60))
            .await
            .expect("receive");
        assert_eq!(got[0].body, "in flight");
        book.reserve(
            order,
            &[OrderLine {
                sku: "mug-red".into(),
                quantity: 5,
            }],
        )
        .await
        .expect("reserve");
        got[0].receipt.clone()
        // Everything is dropped here: the connection closes.
    };

    let db = open(&path);
    let queue = SqliteQueue::new(db.clone(), "jobs", 3, time.clock()).expect("queue");
    let store = SqliteStore::new(db.clone());
    let book = SqliteOrderBook::new(db).expect("book");
    assert_eq!(
        store.get(&job.owner, job.id).await.expect("get"),
        Some(job.clone())
    );
    let depth = queue.depth().await.expect("depth");
    assert_eq!((depth.waiting, depth.in_flight), (1, 1));
    let got = queue
        .receive(10, Duration::from_secs(60))
        .await
        .expect("receive");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "waiting");
    // The receipt handed out before the restart still deletes its message.
    queue.delete(&in_flight_receipt).await.expect("delete");
    let depth = queue.depth().await.expect("depth");
    assert_eq!((depth.waiting, depth.in_flight), (0, 1));
    assert_eq!(
        book.available("mug-red").await.expect("stock"),
        Some(45),
        "reopening does not restock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_in_flight_returns_received_messages_and_keeps_their_count() {
    let (_dir, db) = fresh_db();
    let time = ManualTime::new();
    let queue = SqliteQueue::new(db, "jobs", 3, time.clock()).expect("queue");
    for body in ["a", "b", "c"] {
        queue.send(message(body)).await.expect("send");
    }
    let mut delayed = message("delayed");
    delayed.delay = Duration::from_secs(600);
    queue.send(delayed).await.expect("send");
    let got = queue
        .receive(2, Duration::from_secs(600))
        .await
        .expect("receive");
    assert_eq!(got.len(), 2);

    // The process that received them is gone.
    assert_eq!(queue.release_in_flight().expect("release"), 2);
    let again = queue
        .receive(10, Duration::from_secs(600))
        .await
        .expect("receive");
    assert_eq!(
        again.len(),
        3,
        "the two released and the one never received"
    );
    for d in &again {
        let expected = if got.iter().any(|g| g.message_id == d.message_id) {
            2
        } else {
            1
        };
        assert_eq!(d.receive_count, expected, "{d:?}");
    }
    assert_eq!(
        queue.depth().await.expect("depth").waiting,
        1,
        "a delayed message that was never received is not released"
    );
    assert_eq!(queue.release_in_flight().expect("release"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_in_one_file_are_separate() {
    let (_dir, db) = fresh_db();
    let time = ManualTime::new();
    let jobs = SqliteQueue::new(db.clone(), "jobs", 3, time.clock()).expect("queue");
    let other = SqliteQueue::new(db, "other", 3, time.clock()).expect("queue");
    jobs.send(message("for jobs")).await.expect("send");
    assert!(other
        .receive(10, Duration::from_secs(1))
        .await
        .expect("receive")
        .is_empty());
    assert_eq!(other.depth().await.expect("depth").waiting, 0);
    let got = jobs
        .receive(10, Duration::from_secs(1))
        .await
        .expect("receive");
    assert_eq!(other.delete(&got[0].receipt).await.ok(), Some(()));
    assert_eq!(jobs.depth().await.expect("depth").in_flight, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_needs_a_name_and_a_receive_count() {
    let (_dir, db) = fresh_db();
    let clock = ManualTime::new().clock();
    assert!(SqliteQueue::new(db.clone(), "", 3, clock.clone()).is_err());
    assert!(SqliteQueue::new(db, "jobs", 0, clock).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_work_wakes_on_a_send() {
    let (_dir, db) = fresh_db();
    let time = ManualTime::new();
    let queue = Arc::new(SqliteQueue::new(db, "jobs", 3, time.clock()).expect("queue"));
    let waiter = {
        let queue = Arc::clone(&queue);
        tokio::spawn(async move {
            let started = Instant::now();
            queue.wait_for_work(Duration::from_secs(60)).await;
            started.elapsed()
        })
    };
    // Give the waiter time to start waiting; if it has not, it finds the message at once and
    // the test passes for the other reason, which is also correct behaviour.
    tokio::task::yield_now().await;
    queue.send(message("wake up")).await.expect("send");
    let waited = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("wait_for_work did not wake on a send")
        .expect("task");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_work_returns_at_once_when_a_message_is_visible() {
    let (_dir, db) = fresh_db();
    let time = ManualTime::new();
    let queue = SqliteQueue::new(db, "jobs", 3, time.clock()).expect("queue");
    queue.send(message("ready")).await.expect("send");
    tokio::time::timeout(
        Duration::from_secs(10),
        queue.wait_for_work(Duration::from_secs(60)),
    )
    .await
    .expect("a visible message is work");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_work_sleeps_until_the_next_message_becomes_visible() {
    let (_dir, db) = fresh_db();
    let time = ManualTime::new();
    let queue = SqliteQueue::new(db, "jobs", 3, time.clock()).expect("queue");
    let mut later = message("later");
    later.delay = Duration::from_millis(300);
    queue.send(later).await.expect("send");

    let started = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(10),
        queue.wait_for_work(Duration::from_secs(60)),
    )
    .await
    .expect("wait_for_work slept past the next visibility");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "returned before the message was visible: {waited:?}"
    );

    // With nothing in the queue it waits the whole `max_wait`.
    let (_dir2, db) = fresh_db();
    let empty = SqliteQueue::new(db, "jobs", 3, time.clock()).expect("queue");
    let started = Instant::now();
    empty.wait_for_work(Duration::from_millis(200)).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_to_the_same_file_sees_committed_writes() {
    // The CLI (`ackflow dlq`) opens the file while `ackflow serve` runs.
    let (dir, db) = fresh_db();
    let time = ManualTime::new();
    let queue = SqliteQueue::new(db, "jobs", 3, time.clock()).expect("queue");
    queue.send(message("shared")).await.expect("send");
    let second = Db::open(&dir.path().join("ackflow.db"), Durability::Normal).expect("open");
    let seen = SqliteQueue::new(second, "jobs", 3, time.clock()).expect("queue");
    assert_eq!(seen.depth().await.expect("depth").waiting, 1);
}

/// Set in the child process of the kill test: the database file to write to.
const CRASH_CHILD: &str = "ACKFLOW_SQLITE_CRASH_CHILD";
const CHILD_READY: &str = "ackflow-crash-child: ready";

/// The child: commits a job, messages and an in-flight delivery, says so, and waits to be killed
/// without ever closing the database.
fn crash_child(path: &Path) -> ! {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // Held until the kill: dropping them would close the connection cleanly.
    let _open = runtime.block_on(async {
        let db = Db::open(path, Durability::Normal).expect("open");
        let clock: Arc<dyn ackflow_core::Clock> = Arc::new(ackflow_core::SystemClock);
        let queue = SqliteQueue::new(db.clone(), "jobs", 3, clock.clone()).expect("queue");
        let store = SqliteStore::new(db.clone());
        let job = Job::new(
            NewJob {
                owner: ackflow_core::Owner::anonymous(),
                kind: ackflow_core::Kind::parse("demo").expect("kind"),
                correlation_id: ackflow_core::CorrelationId::random(),
                idempotency_key: None,
            },
            clock.as_ref(),
            &Settings::default(),
        );
        store
            .create(&job, &serde_json::json!({}), None)
            .await
            .expect("create");
        for i in 0..50 {
            queue.send(message(&format!("m{i}"))).await.expect("send");
        }
        let got = queue
            .receive(1, Duration::from_secs(3600))
            .await
            .expect("receive");
        assert_eq!(got.len(), 1);
        println!("{CHILD_READY} {}", job.id);
        (db, queue, store)
    });
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn committed_writes_survive_the_process_being_killed() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    if let Some(path) = std::env::var_os(CRASH_CHILD) {
        crash_child(Path::new(&path));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ackflow.db");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "committed_writes_survive_the_process_being_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("stdout");
    let job_id = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        // Anywhere in the line: libtest has already written "test … " on it.
        .find_map(|line| {
            line.split_once(CHILD_READY)
                .map(|(_, id)| id.trim().to_owned())
        });
    // SIGKILL: no destructor, no connection close, no WAL checkpoint.
    child.kill().expect("kill");
    child.wait().expect("reap");
    let wal = std::fs::metadata(dir.path().join("ackflow.db-wal")).map_or(0, |m| m.len());
    assert!(
        wal > 0,
        "the child's commits should still be in the write-ahead log, as after a real crash"
    );
    let job_id: ackflow_core::JobId = job_id
        .expect("the child never got ready")
        .parse()
        .expect("job id");

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let db = open(&path);
        let clock: Arc<dyn ackflow_core::Clock> = Arc::new(ackflow_core::SystemClock);
        let queue = SqliteQueue::new(db.clone(), "jobs", 3, clock).expect("queue");
        let store = SqliteStore::new(db);
        let job = store
            .get(&ackflow_core::Owner::anonymous(), job_id)
            .await
            .expect("get");
        assert!(job.is_some(), "the accepted job was lost");
        let depth = queue.depth().await.expect("depth");
        assert_eq!((depth.waiting, depth.in_flight), (49, 1), "{depth:?}");
        assert_eq!(queue.release_in_flight().expect("release"), 1);
        assert_eq!(queue.depth().await.expect("depth").waiting, 50);
    });
}

// ---- the outbox --------------------------------------------------------------------------------

struct OutboxWorld {
    _dir: TempDir,
    db: Db,
    time: ManualTime,
    store: SqliteStore,
    queue: Arc<SqliteQueue>,
    outbox: SqliteOutbox,
}

fn outbox_world() -> OutboxWorld {
    let (dir, db) = fresh_db();
    let time = ManualTime::new();
    let queue = Arc::new(SqliteQueue::new(db.clone(), "jobs", 3, time.clock()).expect("queue"));
    OutboxWorld {
        store: SqliteStore::new(db.clone()),
        outbox: SqliteOutbox::new(db.clone(), queue.clone()),
        queue,
        time,
        db,
        _dir: dir,
    }
}

/// Makes every `statement` (INSERT, DELETE) on the queue's messages fail, until the trigger
/// `refuse` is dropped.
async fn refuse_on_queue(world: &OutboxWorld, statement: &'static str) {
    world
        .db
        .call("refuse a queue statement", move |c| {
            c.execute_batch(&format!(
                "CREATE TRIGGER refuse BEFORE {statement} ON queue_messages \
                 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            ))?;
            Ok(())
        })
        .await
        .expect("trigger");
}

fn keyed_job(world: &OutboxWorld, key: &str) -> (Job, IdempotencyRecord) {
    let key = ackflow_core::IdempotencyKey::parse(key).expect("key");
    let job = Job::new(
        NewJob {
            owner: ackflow_core::Owner::anonymous(),
            kind: ackflow_core::Kind::parse("demo").expect("kind"),
            correlation_id: ackflow_core::CorrelationId::random(),
            idempotency_key: Some(key.clone()),
        },
        world.time.clock().as_ref(),
        &Settings::default(),
    );
    let record = IdempotencyRecord {
        key,
        body_hash: "same body".into(),
    };
    (job, record)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_records_a_new_job_with_its_message_and_a_replay_with_none() {
    let world = outbox_world();
    let (job, key) = keyed_job(&world, "k-1");
    let input = serde_json::json!({"steps": 0});
    let created = world
        .outbox
        .create_and_send(&job, &input, Some(&key), &message("first"))
        .await
        .expect("create and send");
    assert_eq!(created, Created::New);
    let owner = ackflow_core::Owner::anonymous();
    assert_eq!(
        world.store.get(&owner, job.id).await.expect("get"),
        Some(job.clone())
    );
    assert_eq!(
        world.store.input(&owner, job.id).await.expect("input"),
        Some(input.clone())
    );

    // The same key again: the first job comes back and no second message is written.
    let (again, _) = keyed_job(&world, "k-1");
    let replay = world
        .outbox
        .create_and_send(&again, &input, Some(&key), &message("second"))
        .await
        .expect("replay");
    assert_eq!(
        replay,
        Created::Existing {
            job: Box::new(job.clone()),
            same_body: true
        }
    );
    assert_eq!(world.store.get(&owner, again.id).await.expect("get"), None);
    let bodies: Vec<String> = world
        .queue
        .receive(10, Duration::from_secs(30))
        .await
        .expect("receive")
        .into_iter()
        .map(|d| d.body)
        .collect();
    assert_eq!(bodies, ["first"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_message_cannot_be_written_is_not_recorded_either() {
    let world = outbox_world();
    refuse_on_queue(&world, "INSERT").await;
    let (job, key) = keyed_job(&world, "k-2");
    world
        .outbox
        .create_and_send(&job, &serde_json::json!({}), Some(&key), &message("lost"))
        .await
        .expect_err("the message is refused");
    let owner = ackflow_core::Owner::anonymous();
    assert_eq!(world.store.get(&owner, job.id).await.expect("get"), None);
    // Nor its key: a retry after the failure creates the job afresh.
    world
        .db
        .call("accept messages", |c| {
            c.execute_batch("DROP TRIGGER refuse")?;
            Ok(())
        })
        .await
        .expect("drop trigger");
    let created = world
        .outbox
        .create_and_send(&job, &serde_json::json!({}), Some(&key), &message("kept"))
        .await
        .expect("create and send");
    assert_eq!(created, Created::New);
    assert_eq!(world.queue.depth().await.expect("depth").waiting, 1);
}

/// A job accepted through the outbox, its message received and its attempt started: what an
/// outcome is written over.
async fn started(world: &OutboxWorld, key: &str) -> (Job, Delivery) {
    let (job, record) = keyed_job(world, key);
    world
        .outbox
        .create_and_send(&job, &serde_json::json!({}), Some(&record), &message(key))
        .await
        .expect("create and send");
    let delivery = world
        .queue
        .receive(10, Duration::from_secs(30))
        .await
        .expect("receive")
        .into_iter()
        .find(|d| d.body == key)
        .expect("its message");
    let running = job
        .apply(
            Change::Start,
            world.time.clock().now(),
            &Settings::default(),
        )
        .expect("start");
    world
        .store
        .update(&job, &running, None, &Deltas::between(&job, &running))
        .await
        .expect("started");
    (running, delivery)
}

async fn settle_with_outcome(
    world: &OutboxWorld,
    running: &Job,
    change: Change,
    delivery: &Delivery,
    step: QueueStep,
) -> Result<Job, WriteError> {
    let after = running
        .apply(change, world.time.clock().now(), &Settings::default())
        .expect("a legal change");
    let result = serde_json::json!({"done": true});
    let result = (after.state == JobState::Succeeded).then_some(&result);
    world
        .outbox
        .update_and_settle(
            running,
            &after,
            result,
            &Deltas::between(running, &after),
            &delivery.receipt,
            step,
        )
        .await
        .map(|()| after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_and_its_message_delete_commit_together_and_a_lost_race_writes_neither() {
    let world = outbox_world();
    let owner = ackflow_core::Owner::anonymous();
    let (running, delivery) = started(&world, "done").await;
    let succeeded = settle_with_outcome(
        &world,
        &running,
        Change::Succeed,
        &delivery,
        QueueStep::Delete,
    )
    .await
    .expect("written");
    assert_eq!(
        world.store.get(&owner, running.id).await.expect("get"),
        Some(succeeded)
    );
    assert_eq!(
        world
            .store
            .result(&owner, running.id)
            .await
            .expect("result"),
        Some(serde_json::json!({"done": true}))
    );
    let depth = world.queue.depth().await.expect("depth");
    assert_eq!((depth.waiting, depth.in_flight), (0, 0), "{depth:?}");

    // The same outcome over the same stale revision loses, and leaves the next message alone.
    let (_, other) = started(&world, "other").await;
    let lost =
        settle_with_outcome(&world, &running, Change::Succeed, &other, QueueStep::Delete).await;
    assert!(matches!(lost, Err(WriteError::Conflict)), "{lost:?}");
    assert_eq!(world.queue.depth().await.expect("depth").in_flight, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_outcome_brings_its_message_back_after_the_delay_and_not_before() {
    let world = outbox_world();
    let (running, delivery) = started(&world, "again").await;
    let delay = Duration::from_secs(7);
    let retry_at = world.time.clock().now().plus(delay);
    let note = "trying again".to_owned();
    let released = settle_with_outcome(
        &world,
        &running,
        Change::Release { retry_at, note },
        &delivery,
        QueueStep::ComeBackAfter(delay),
    )
    .await
    .expect("written");
    assert_eq!(released.state, JobState::Queued);
    let visibility = Duration::from_secs(30);
    world.time.pass(delay - Duration::from_secs(1)).await;
    assert!(world
        .queue
        .receive(10, visibility)
        .await
        .expect("receive")
        .is_empty());
    world.time.pass(Duration::from_secs(1)).await;
    let back = world.queue.receive(10, visibility).await.expect("receive");
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0].message_id, delivery.message_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_whose_message_step_fails_is_not_written_either() {
    let world = outbox_world();
    let owner = ackflow_core::Owner::anonymous();
    let (running, delivery) = started(&world, "stuck").await;
    refuse_on_queue(&world, "DELETE").await;
    settle_with_outcome(
        &world,
        &running,
        Change::Succeed,
        &delivery,
        QueueStep::Delete,
    )
    .await
    .expect_err("the delete is refused");
    assert_eq!(
        world.store.get(&owner, running.id).await.expect("get"),
        Some(running.clone())
    );
    assert_eq!(
        world
            .store
            .result(&owner, running.id)
            .await
            .expect("result"),
        None
    );
    assert_eq!(world.queue.depth().await.expect("depth").in_flight, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_on_the_outbox_starts_in_its_receive_and_settles_in_its_outcome_write() {
    let (_dir, db) = fresh_db();
    let time = ManualTime::new();
    let settings = Settings::default();
    let backend = SqliteBackend::on(db.clone(), &settings, time.clock()).expect("backend");
    let registry = ackflow_core::Registry::new().with(ackflow_processors::demo::Demo::new());
    let app = backend.ackflow(registry, time.clock(), settings.clone());
    let owner = ackflow_core::Owner::anonymous();
    for (input, settled, state) in [
        (
            serde_json::json!({"steps": 0}),
            Settled::Done,
            JobState::Succeeded,
        ),
        (
            serde_json::json!({"steps": 0, "fail_attempts": 1}),
            Settled::ComesBack,
            JobState::Queued,
        ),
    ] {
        let accepted = app
            .accept(ackflow_core::Submission {
                owner: owner.clone(),
                kind: "demo".into(),
                input,
                idempotency_key: None,
                correlation_id: ackflow_core::CorrelationId::random(),
                trace_header: None,
            })
            .await
            .expect("accepted");
        let before = db.write_stats();
        let received = app
            .receive(10)
            .await
            .expect("receive")
            .pop()
            .expect("its message");
        assert!(
            received.started.is_some(),
            "the receive started the attempt"
        );
        assert_eq!(app.work(&received).await.expect("settled"), settled);
        let writes = db.write_stats().requests - before.requests;
        assert_eq!(
            writes, 2,
            "the receive with the start, then the outcome with its message's step"
        );
        let job = app
            .status(&owner, accepted.job.id)
            .await
            .expect("status")
            .job;
        assert_eq!(job.state, state);
        let depth = backend.queue.depth().await.expect("depth");
        let message_left = u64::from(settled == Settled::ComesBack);
        assert_eq!(depth.waiting + depth.in_flight, message_left, "{depth:?}");
    }
}

// ---- a row that cannot be read ---------------------------------------------------------------

/// A job row that cannot be read back (damaged, or holding a timestamp past the year 9999 from
/// before the settings had ranges) fails the requests for that job alone: the owner's listing,
/// the report and the sweep leave it out and go on with every other job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_job_row_fails_only_the_requests_for_that_job() {
    let (_dir, db) = fresh_db();
    let store = SqliteStore::new(db.clone());
    let owner = ackflow_core::Owner::anonymous();
    let new_job = || {
        Job::new(
            NewJob {
                owner: owner.clone(),
                kind: ackflow_core::Kind::parse("demo").expect("kind"),
                correlation_id: ackflow_core::CorrelationId::random(),
                idempotency_key: None,
            },
            &ackflow_core::SystemClock,
            &Settings::default(),
        )
    };
    let (good, bad) = (new_job(), new_job());
    for job in [&good, &bad] {
        store
            .create(job, &serde_json::json!({}), None)
            .await
            .expect("create");
    }
    let planted = bad.id.to_string();
    db.call("plant an unreadable row", move |c| {
        let changed = c.execute(
            r#"UPDATE jobs SET header = replace(header, '"deadline":"', '"deadline":"+1000') WHERE id = ?1"#,
            [&planted],
        )?;
        assert_eq!(changed, 1);
        Ok(())
    })
    .await
    .expect("planted");

    assert!(
        store.get(&owner, bad.id).await.is_err(),
        "its own request fails"
    );
    // Nor is one written any more: a job holding a time past the year 9999 is refused whole.
    let mut far = new_job();
    far.deadline = ackflow_core::Timestamp::from_millis(i64::MAX);
    assert!(store
        .create(&far, &serde_json::json!({}), None)
        .await
        .is_err());
    assert_eq!(store.get(&owner, far.id).await.expect("get"), None);
    let page = store
        .list(
            &owner,
            &ackflow_core::ListQuery {
                state: None,
                kind: None,
                limit: 10,
                after: None,
            },
        )
        .await
        .expect("the listing goes on");
    assert_eq!(
        page.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        [good.id]
    );
    let figures = store
        .figures(&owner, ackflow_core::Timestamp::from_millis(0))
        .await
        .expect("the report goes on");
    assert_eq!(figures.oldest_open.map(|j| j.id), Some(good.id));
    let due = store
        .due_for_sweep(good.deadline.plus(Duration::from_secs(3600)), 10)
        .await
        .expect("the sweep goes on");
    assert_eq!(due.iter().map(|j| j.id).collect::<Vec<_>>(), [good.id]);
}
