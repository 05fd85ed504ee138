//! The SQS batch lifter: what one `worker` invocation costs around the jobs' own work, for a
//! batch of 10 records (SQS's largest batch without a batching window).
//!
//! - `batch/decode_10_records`: the event's JSON text → the records → the core's
//!   [`Delivery`]s ([`delivery_from_record`], one record at a time, as the lifter does).
//! - `batch/lift_10_duplicates`: [`process_batch`] on the event of 10 jobs that have already
//!   succeeded — every record is decoded, its job read from the store (SQLite in a temp dir,
//!   standing in for DynamoDB as in the crate's tests), found terminal and settled as `Delete`,
//!   and the batch response is built. This is the lifter's whole path with the cheapest possible
//!   job work, so the figure is the lifter's and the store read's overhead per batch.
//!
//! Run with `cargo bench -p ackflow-lambda --bench batch` (infra/scripts/bench does, and
//! records the figures in docs/BENCHMARKS.md).

// A benchmark is test code: a broken fixture should stop it loudly (clippy exempts only `#[test]`).
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use ackflow_core::{
    Ackflow, Clock, CorrelationId, Delivery, Owner, Queue, Settings, Submission, SystemClock,
};
use ackflow_lambda::test_support::{sqs_event, sqs_record};
use ackflow_lambda::{delivery_from_record, process_batch, BatchOptions};
use ackflow_processors::order::SqliteOrderBook;
use ackflow_sqlite::{Durability, SqliteBackend};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};

const RECORDS: usize = 10;

/// An app on SQLite in `dir`, and the event of 10 `demo` jobs it has already run to success.
fn app_with_finished_batch(
    runtime: &tokio::runtime::Runtime,
    dir: &std::path::Path,
) -> (Ackflow, Value) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let settings = Settings::default();
    let path = dir.join("ackflow.db");
    let backend =
        SqliteBackend::open(&path, Durability::Normal, &settings, clock.clone()).expect("db");
    let book = Arc::new(SqliteOrderBook::new(backend.db.clone()).expect("order book"));
    let registry = ackflow_processors::registry_with(book, clock.clone(), true);
    let app = backend.ackflow(registry, clock, settings);
    let queue = backend.queue;
    runtime.block_on(async {
        for _ in 0..RECORDS {
            app.accept(Submission {
                owner: Owner::anonymous(),
                kind: "demo".to_owned(),
                input: json!({"steps": 0}),
                idempotency_key: None,
                correlation_id: CorrelationId::random(),
                trace_header: None,
            })
            .await
            .expect("accepted");
        }
        let deliveries = queue
            .receive(RECORDS, Duration::from_secs(60))
            .await
            .expect("received");
        assert_eq!(deliveries.len(), RECORDS, "every job's message");
        let event = sqs_event(deliveries.iter().map(sqs_record));
        let first = process_batch(
            &app,
            LambdaEvent::new(event.clone(), Context::default()),
            &BatchOptions::default(),
        )
        .await
        .expect("a batch response");
        assert!(first.batch_item_failures.is_empty(), "every job succeeded");
        (app, event)
    })
}

fn batch(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let (app, event) = app_with_finished_batch(&runtime, dir.path());
    let text = event.to_string();

    let mut group = c.benchmark_group("batch");
    // Figures per record, so that batches of other sizes compare.
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("decode_10_records", |b| {
        b.iter(|| {
            let event: Value = serde_json::from_str(black_box(&text)).expect("an event");
            let Value::Object(mut event) = event else {
                panic!("an object")
            };
            let Some(Value::Array(records)) = event.remove("Records") else {
                panic!("a Records list")
            };
            records
                .into_iter()
                .map(|record| delivery_from_record(record).expect("a delivery"))
                .collect::<Vec<Delivery>>()
        })
    });
    group.bench_function("lift_10_duplicates", |b| {
        b.iter(|| {
            let response = runtime
                .block_on(process_batch(
                    &app,
                    LambdaEvent::new(black_box(event.clone()), Context::default()),
                    &BatchOptions::default(),
                ))
                .expect("a batch response");
            assert!(response.batch_item_failures.is_empty());
            response
        })
    });
    group.finish();
}

criterion_group!(benches, batch);
criterion_main!(benches);
