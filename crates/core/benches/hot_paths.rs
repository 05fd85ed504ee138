//! The CPU work of the core's hot paths, apart from any I/O:
//!
//! - `accept/*`: what accepting a `demo` job costs before the store write — decode the request
//!   body, check the kind, validate the input with the shipped `demo` processor, build the job
//!   header, and encode what is written: the header record, the queue message body and its
//!   attributes.
//! - `deliver/decode_envelope`: the worker's first step on a message body.
//! - `transition/*`: [`Job::apply`] for each edge of a normal run (start, succeed) and for a
//!   refused one (a late delivery trying to start a succeeded job).
//!
//! Run with `cargo bench -p ackflow-core --bench hot_paths` (infra/scripts/bench does, and
//! records the figures in docs/BENCHMARKS.md).

// A benchmark is test code: a broken fixture should stop it loudly (clippy exempts only `#[test]`).
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use ackflow_core::{
    Change, Clock, CorrelationId, Envelope, Job, JobState, Kind, ManualClock, NewJob, Owner,
    Processor, Settings, Timestamp,
};
use ackflow_processors::demo::Demo;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde::Deserialize;
use serde_json::Value;

/// The body a client sends, as the HTTP layer reads it (`ackflow_http::view::Submit`, which the
/// core cannot depend on): only `kind` and `input`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Submit {
    kind: String,
    #[serde(default)]
    input: Value,
}

/// The body infra/scripts/bench's load generator posts.
const BODY: &[u8] = br#"{"kind":"demo","input":{"steps":0}}"#;

fn start() -> Timestamp {
    // 2026-11-27T00:00:00Z: any fixed instant, so that every run encodes the same timestamps.
    Timestamp::from_millis(1_795_737_600_000)
}

fn new_job(clock: &dyn Clock, settings: &Settings) -> Job {
    Job::new(
        NewJob {
            owner: Owner::anonymous(),
            kind: Kind::parse("demo").expect("demo is a kind"),
            correlation_id: CorrelationId::random(),
            idempotency_key: None,
        },
        clock,
        settings,
    )
}

fn accept(c: &mut Criterion) {
    let settings = Settings::default();
    let clock = ManualClock::new(start());
    let demo = Demo::new();
    let mut group = c.benchmark_group("accept");
    group.throughput(Throughput::Elements(1));

    group.bench_function("decode_validate", |b| {
        b.iter(|| {
            let submit: Submit =
                serde_json::from_slice(black_box(BODY)).expect("the body is a submission");
            let kind = Kind::parse(submit.kind).expect("a kind");
            demo.validate(&submit.input).expect("valid input");
            (kind, submit.input)
        })
    });

    group.bench_function("encode_job_and_message", |b| {
        let job = new_job(&clock, &settings);
        b.iter(|| {
            let header = serde_json::to_vec(black_box(&job)).expect("a job encodes");
            let envelope = Envelope::for_job(&job);
            (header, envelope.to_body(), envelope.attributes())
        })
    });

    // The whole CPU part of an accept, as one figure.
    group.bench_function("decode_validate_encode", |b| {
        b.iter(|| {
            let submit: Submit =
                serde_json::from_slice(black_box(BODY)).expect("the body is a submission");
            let kind = Kind::parse(submit.kind).expect("a kind");
            demo.validate(&submit.input).expect("valid input");
            let job = Job::new(
                NewJob {
                    owner: Owner::anonymous(),
                    kind,
                    correlation_id: CorrelationId::random(),
                    idempotency_key: None,
                },
                &clock,
                &settings,
            );
            let header = serde_json::to_vec(&job).expect("encodes");
            let input = serde_json::to_vec(&submit.input).expect("the input encodes");
            let envelope = Envelope::for_job(&job);
            (header, input, envelope.to_body(), envelope.attributes())
        })
    });
    group.finish();

    let body = Envelope::for_job(&new_job(&clock, &settings)).to_body();
    let mut group = c.benchmark_group("deliver");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode_envelope", |b| {
        b.iter(|| serde_json::from_str::<Envelope>(black_box(&body)).expect("an envelope"))
    });
    group.finish();
}

fn transitions(c: &mut Criterion) {
    let settings = Settings::default();
    let clock = ManualClock::new(start());
    let queued = new_job(&clock, &settings);
    let later = start().plus(Duration::from_millis(5));
    let running = queued
        .apply(Change::Start, later, &settings)
        .expect("queued → running");
    let succeeded = running
        .apply(Change::Succeed, later, &settings)
        .expect("running → succeeded");
    assert_eq!(succeeded.state, JobState::Succeeded);

    let mut group = c.benchmark_group("transition");
    group.throughput(Throughput::Elements(1));
    group.bench_function("start", |b| {
        b.iter(|| black_box(&queued).apply(Change::Start, later, &settings))
    });
    group.bench_function("succeed", |b| {
        b.iter(|| black_box(&running).apply(Change::Succeed, later, &settings))
    });
    group.bench_function("refused_late_start", |b| {
        b.iter(|| black_box(&succeeded).apply(Change::Start, later, &settings))
    });
    group.finish();
}

criterion_group!(benches, accept, transitions);
criterion_main!(benches);
