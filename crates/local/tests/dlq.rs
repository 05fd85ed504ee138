//! The dead-letter use cases on SQLite (the testkit's redrive scenarios, plus an interrupted
//! redrive), and `ackflow dlq list|redrive` through the real binary while `ackflow serve` runs on
//! the same data directory.

// Test code: a failed expectation is a failed test, and its message says which.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{is_terminal, ServerProcess};

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use ackflow_core::service::dlq::{REDRIVE_HOLD, REDRIVE_NOTE};
use ackflow_core::{
    Ackflow, Clock, CorrelationId, Job, JobState, ManualClock, Owner, Queue, RedriveAction,
    Settings, Submission, SystemClock,
};
use ackflow_processors::order::SqliteOrderBook;
use ackflow_processors::registry_with;
use ackflow_sqlite::{Db, Durability, SqliteQueue, SqliteStore};
use ackflow_testkit::faults::{Fault, FaultPlan, FaultyQueue, Op};
use ackflow_testkit::RedriveFixture;
use serde_json::{json, Value};
use tempfile::TempDir;

/// The queue's max receive count in these tests: small, so that dead-lettering takes few receives.
const MAX_RECEIVE_COUNT: u32 = 2;

/// The use cases with the shipped processors on SQLite files in `dir`, on `clock`, with `queue`
/// wrapped by `wrap`.
fn app_in(
    dir: &Path,
    clock: Arc<ManualClock>,
    wrap: impl FnOnce(SqliteQueue) -> Arc<dyn Queue>,
) -> Ackflow {
    let db = Db::open(&dir.join("ackflow.db"), Durability::Normal).expect("db opens");
    let queue =
        SqliteQueue::new(db.clone(), "jobs", MAX_RECEIVE_COUNT, clock.clone()).expect("queue");
    let book = Arc::new(SqliteOrderBook::new(db.clone()).expect("order book"));
    Ackflow::new(
        Arc::new(SqliteStore::new(db)),
        wrap(queue),
        registry_with(book, clock.clone(), true),
        clock,
        Settings::default(),
    )
}

async fn fresh() -> RedriveFixture<TempDir> {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let app = app_in(dir.path(), clock.clone(), |q| Arc::new(q));
    RedriveFixture {
        app,
        clock,
        max_receive_count: MAX_RECEIVE_COUNT,
        guard: dir,
    }
}

mod redrive_on_sqlite {
    ackflow_testkit::redrive_tests!(super::fresh);
}

async fn submit_demo(app: &Ackflow) -> Job {
    app.accept(Submission {
        owner: Owner::anonymous(),
        kind: "demo".to_owned(),
        input: json!({}),
        idempotency_key: None,
        correlation_id: CorrelationId::random(),
        trace_header: None,
    })
    .await
    .expect("accept")
    .job
}

async fn get(app: &Ackflow, job: &Job) -> Job {
    app.store()
        .get(&job.owner, job.id)
        .await
        .expect("get")
        .expect("exists")
}

/// Receives the only message without settling it until the queue dead-letters it, then lets
/// the job's deadline pass and sweeps: a failed job with its message in the dead-letter queue.
async fn dead_letter_and_fail(app: &Ackflow, clock: &ManualClock, job: &Job) {
    for _ in 0..=MAX_RECEIVE_COUNT {
        app.queue()
            .receive(10, Duration::ZERO)
            .await
            .expect("receive");
    }
    assert_eq!(app.queue().depth().await.expect("depth").dead, 1);
    let s = app.settings();
    clock.advance(s.job_deadline + s.sweep_period + Duration::from_secs(1));
    app.sweep().await.expect("sweep");
    assert_eq!(get(app, job).await.state, JobState::Failed);
}

#[tokio::test]
async fn a_redrive_interrupted_before_its_delete_is_finished_by_the_next_without_a_second_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    // A redrive that dies between its send and its delete: deleting a dead letter fails.
    let faults = FaultPlan::new();
    faults.inject_every(Op::QueueDeleteDeadLetter, Fault::Unavailable);
    let app = app_in(dir.path(), clock.clone(), |inner| {
        Arc::new(FaultyQueue::new(inner, faults.clone()))
    });
    let job = submit_demo(&app).await;
    dead_letter_and_fail(&app, &clock, &job).await;

    let first = app.redrive_dead_letters(10).await.expect("redrive");
    assert_eq!((first.reopened, first.errors), (0, 1), "{first:#?}");
    assert!(!first.is_clean());
    let reopened = get(&app, &job).await;
    assert_eq!(reopened.state, JobState::Queued);
    assert_eq!(reopened.generation, job.generation + 1);
    assert_eq!(app.queue().depth().await.expect("depth").dead, 1);

    // The "restarted" redrive: the dead letter is visible again once its hold ran out.
    faults.clear(Op::QueueDeleteDeadLetter);
    clock.advance(REDRIVE_HOLD + Duration::from_secs(1));
    let second = app.redrive_dead_letters(10).await.expect("redrive");
    assert_eq!(
        (
            second.reopened,
            second.resent,
            second.discarded,
            second.errors
        ),
        (0, 0, 1, 0),
        "{second:#?}"
    );
    assert!(matches!(
        second.messages[0].action,
        RedriveAction::Discarded { .. }
    ));
    let after = get(&app, &job).await;
    assert_eq!(after.generation, job.generation + 1, "reopened twice");
    assert_eq!(
        after
            .history
            .iter()
            .filter(|h| h.note == REDRIVE_NOTE)
            .count(),
        1
    );
    let depth = app.queue().depth().await.expect("depth");
    assert_eq!(
        (depth.waiting, depth.dead),
        (1, 0),
        "one message for the job"
    );

    let delivery = app
        .queue()
        .receive(10, Duration::from_secs(60))
        .await
        .expect("receive")
        .pop()
        .expect("the job's message");
    let disposition = app.handle(&delivery).await;
    app.settle(&delivery, disposition, ackflow_core::Deleter::Worker)
        .await
        .expect("settle");
    assert_eq!(get(&app, &job).await.state, JobState::Succeeded);
}

// ---- through the binary ---------------------------------------------------------------------

/// Puts a failed demo job with its message in the dead-letter queue into `dir`, as a worker
/// that kept crashing and a sweeper would (before any server runs there).
async fn seed_a_dead_lettered_failed_job(dir: &Path) -> Job {
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let app = app_in(dir, clock.clone(), |q| Arc::new(q));
    let job = submit_demo(&app).await;
    dead_letter_and_fail(&app, &clock, &job).await;
    job
}

fn ackflow(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ackflow"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("ACKFLOW_LOG", "warn")
        .output()
        .expect("the ackflow binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Long-polls the job until it is terminal after a redrive.
async fn until_terminal(base: &str, id: &str) -> Value {
    let redriven = |job: &Value| {
        is_terminal(job)
            && job["history"]
                .as_array()
                .is_some_and(|h| h.iter().any(|e| e["note"] == REDRIVE_NOTE))
    };
    support::long_poll(
        &reqwest::Client::new(),
        &format!("{base}/v1/jobs/{id}"),
        100,
        redriven,
    )
    .await
    .unwrap_or_else(|job| panic!("job {id} was not finished after the redrive: {job}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn dlq_list_shows_a_dead_lettered_job_and_dlq_redrive_hands_it_to_the_running_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let job = seed_a_dead_lettered_failed_job(dir.path()).await;
    let id = job.id.to_string();

    let listed = ackflow(dir.path(), &["dlq", "list"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let table = text(&listed.stdout);
    assert!(table.contains(&id), "{table}");
    assert!(
        table.contains("demo") && table.contains("failed"),
        "{table}"
    );
    assert!(table.contains("1 dead letter(s)."), "{table}");

    let listed = ackflow(dir.path(), &["dlq", "list", "--json"]);
    let letters: Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(letters[0]["job_id"], json!(id), "{letters}");
    assert_eq!(letters[0]["state"], "failed");
    assert_eq!(letters[0]["generation"], json!(job.generation));

    let server = ServerProcess::start(dir.path());
    // Once the server answers, its worker runs (it starts before the API): the message the
    // redrive sends from this other process must be found by the worker's polling.
    let before: Value = reqwest::get(format!("{}/v1/jobs/{id}", server.base))
        .await
        .expect("GET answered")
        .json()
        .await
        .expect("a job");
    assert_eq!(before["state"], "failed", "{before}");
    let redriven = ackflow(dir.path(), &["dlq", "redrive", "--json"]);
    assert!(redriven.status.success(), "{}", text(&redriven.stderr));
    let report: Value = serde_json::from_slice(&redriven.stdout).expect("JSON");
    assert_eq!(report["reopened"], 1, "{report}");
    assert_eq!(report["messages"][0]["job_id"], json!(id));
    assert_eq!(report["messages"][0]["action"], "reopened");

    let done = until_terminal(&server.base, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["generation"], json!(job.generation + 1));

    let again = ackflow(dir.path(), &["dlq", "redrive"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains("Reopened 0, resent 0, discarded 0"),
        "{}",
        text(&again.stdout)
    );
    let empty = ackflow(dir.path(), &["dlq", "list"]);
    assert!(
        text(&empty.stdout).contains("The dead-letter queue is empty."),
        "{}",
        text(&empty.stdout)
    );
}

#[test]
fn dlq_on_a_directory_without_a_database_is_an_error_that_names_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nowhere");
    let out = ackflow(&missing, &["dlq", "list"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no ackflow database"),
        "{}",
        text(&out.stderr)
    );
}

// ---- through the binary, on AWS (moto) -----------------------------------------------------------

#[cfg(feature = "aws")]
mod on_aws {
    use super::*;

    use ackflow_aws::{https_client, schema, Clients, DynamoJobStore, SqsQueue};
    use ackflow_core::JobId;
    use ackflow_processors::order::DynamoOrderBook;
    use aws_config::{BehaviorVersion, Region};
    use aws_sdk_sqs::config::Credentials;

    /// The variables the functions (and `ackflow dlq --aws`) read, pointing at moto.
    struct Deployment {
        env: Vec<(&'static str, String)>,
        app: Ackflow,
        clock: Arc<ManualClock>,
    }

    async fn deployment() -> Deployment {
        let url = std::env::var("ACKFLOW_MOTO_URL").expect(
            "ACKFLOW_MOTO_URL is not set: run infra/scripts/test-all, or \
             export ACKFLOW_MOTO_URL=$(infra/scripts/moto start)",
        );
        let config = aws_config::defaults(BehaviorVersion::latest())
            .http_client(https_client())
            .endpoint_url(&url)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .load()
            .await;
        let clients = Clients::from_sdk_config(&config);
        let name = format!("dlq-cli-{}", JobId::random().as_uuid().simple());
        schema::create_table(&clients.dynamo, &name)
            .await
            .expect("create table");
        let settings = Settings::default();
        let (queue_url, dlq_url) = schema::create_queues(
            &clients.sqs,
            &name,
            MAX_RECEIVE_COUNT,
            u32::try_from(settings.visibility_timeout.as_secs()).expect("secs"),
        )
        .await
        .expect("create queues");
        let clock = Arc::new(ManualClock::new(SystemClock.now()));
        let book = Arc::new(DynamoOrderBook::new(clients.dynamo.clone(), name.clone()));
        let app = Ackflow::new(
            Arc::new(DynamoJobStore::new(clients.dynamo.clone(), name.clone())),
            Arc::new(SqsQueue::new(
                clients.sqs.clone(),
                queue_url.clone(),
                dlq_url.clone(),
            )),
            registry_with(book, clock.clone(), true),
            clock.clone(),
            settings,
        );
        Deployment {
            env: vec![
                ("ACKFLOW_QUEUE_URL", queue_url),
                ("ACKFLOW_DLQ_URL", dlq_url),
                ("ACKFLOW_TABLE", name),
                ("AWS_ENDPOINT_URL", url),
                ("AWS_REGION", "us-east-1".to_owned()),
                ("AWS_ACCESS_KEY_ID", "test".to_owned()),
                ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ],
            app,
            clock,
        }
    }

    fn ackflow_aws(d: &Deployment, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_ackflow"))
            .args(args)
            .arg("--aws")
            .envs(d.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env_remove("AWS_PROFILE")
            .env("ACKFLOW_LOG", "warn")
            .output()
            .expect("the ackflow binary runs")
    }

    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "needs moto server: run infra/scripts/test-all"]
    async fn dlq_redrive_with_aws_brings_a_dead_lettered_job_back_on_sqs_and_dynamodb() {
        let d = deployment().await;
        let job = submit_demo(&d.app).await;
        dead_letter_and_fail(&d.app, &d.clock, &job).await;
        let id = job.id.to_string();

        let listed = ackflow_aws(&d, &["dlq", "list"]);
        assert!(listed.status.success(), "{}", text(&listed.stderr));
        let table = text(&listed.stdout);
        assert!(table.contains(&id) && table.contains("failed"), "{table}");

        let redriven = ackflow_aws(&d, &["dlq", "redrive", "--json"]);
        assert!(redriven.status.success(), "{}", text(&redriven.stderr));
        let report: Value = serde_json::from_slice(&redriven.stdout).expect("JSON");
        assert_eq!(report["reopened"], 1, "{report}");
        assert_eq!(report["messages"][0]["job_id"], json!(id));

        // The worker (here in-process, as the Lambda would) finishes the job. The redrive gave
        // it a deadline on the real clock, which the test's clock passed to fail it: back to now.
        d.clock.set(SystemClock.now());
        let delivery = d
            .app
            .queue()
            .receive(10, Duration::from_secs(60))
            .await
            .expect("receive")
            .pop()
            .expect("the redriven message");
        let disposition = d.app.handle(&delivery).await;
        d.app
            .settle(&delivery, disposition, ackflow_core::Deleter::Worker)
            .await
            .expect("settle");
        let done = get(&d.app, &job).await;
        assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
        assert_eq!(done.generation, job.generation + 1);
        assert!(done.history.iter().any(|h| h.note == REDRIVE_NOTE));

        let again = ackflow_aws(&d, &["dlq", "redrive"]);
        assert!(again.status.success(), "{}", text(&again.stderr));
        assert!(
            text(&again.stdout).contains("Reopened 0, resent 0, discarded 0"),
            "{}",
            text(&again.stdout)
        );
    }
}

#[tokio::test]
async fn the_copy_of_a_job_that_no_longer_exists_is_discarded() {
    let f = fresh().await;
    let app = &f.app;
    let job = submit_demo(app).await;
    for _ in 0..=MAX_RECEIVE_COUNT {
        app.queue()
            .receive(10, Duration::ZERO)
            .await
            .expect("receive");
    }
    app.cancel(&job.owner, job.id).await.expect("cancel");
    f.clock
        .advance(app.settings().retention + Duration::from_secs(1));
    assert_eq!(
        app.store()
            .purge_expired(f.clock.now(), 10)
            .await
            .expect("purge"),
        1
    );

    let report = app.redrive_dead_letters(10).await.expect("redrive");
    assert_eq!(report.discarded, 1, "{report:#?}");
    assert!(report.is_clean());
    assert_eq!(
        report.messages[0].action,
        RedriveAction::Discarded {
            reason: "the job no longer exists".to_owned()
        }
    );
    assert_eq!(app.queue().depth().await.expect("depth").dead, 0);
}
