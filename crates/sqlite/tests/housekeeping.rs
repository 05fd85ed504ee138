//! The file stays small under sustained use: the purge takes the hourly counters the report's
//! window has left behind along with the expired jobs, and never one the report still sums.

// Test code: the fixtures' helpers panic on setup failures, which is what a test should do.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use ackflow_core::report::Deltas;
use ackflow_core::{
    Change, CorrelationId, Job, JobState, JobStore, Kind, ManualClock, NewJob, Owner, Registry,
    Settings, Timestamp,
};
use ackflow_sqlite::{Db, Durability, SqliteBackend, SqliteStore};
use ackflow_testkit::ManualTime;

const HOUR: Duration = Duration::from_secs(3600);

/// Half past the hour, so that `now - n hours` lies inside an hour, not on its edge.
fn half_past() -> Timestamp {
    ManualTime::START.plus(HOUR / 2)
}

/// A job accepted and cancelled at `at`: it adds to the counters of `at`'s hour, and being
/// terminal it is left alone by the sweeper (it expires only after the retention).
async fn accepted_and_cancelled_at(
    store: &dyn JobStore,
    clock: &ManualClock,
    settings: &Settings,
    at: Timestamp,
) {
    clock.set(at);
    let job = Job::new(
        NewJob {
            owner: Owner::anonymous(),
            kind: Kind::parse("demo").expect("kind"),
            correlation_id: CorrelationId::random(),
            idempotency_key: None,
        },
        clock,
        settings,
    );
    store
        .create(&job, &serde_json::json!({}), None)
        .await
        .expect("create");
    let cancelled = job.apply(Change::Cancel, at, settings).expect("cancel");
    store
        .update(&job, &cancelled, None, &Deltas::between(&job, &cancelled))
        .await
        .expect("cancel");
}

/// The hours that have counters in the file, oldest first.
fn counted_hours(db: &Db) -> Vec<Timestamp> {
    db.read_blocking("test", |c| {
        let mut stmt = c.prepare("SELECT DISTINCT hour FROM counters ORDER BY hour")?;
        let rows = stmt.query_map([], |row| row.get(0))?;
        Ok(rows
            .map(|hour| hour.map(Timestamp::from_millis))
            .collect::<Result<Vec<_>, _>>()?)
    })
    .expect("hours")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_prunes_counters_older_than_the_report_window_and_the_report_is_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A window other than the default: the backend hands the use cases' window to the store.
    let settings = Settings {
        report_window: HOUR * 3,
        ..Settings::default()
    };
    let clock = Arc::new(ManualClock::new(half_past()));
    let backend = SqliteBackend::open(
        &dir.path().join("ackflow.db"),
        Durability::Normal,
        &settings,
        clock.clone(),
    )
    .expect("open");
    let now = half_past();
    for hours_ago in [6, 5, 4, 1, 0] {
        accepted_and_cancelled_at(
            backend.store.as_ref(),
            &clock,
            &settings,
            now.minus(HOUR * hours_ago),
        )
        .await;
    }
    clock.set(now);
    let app = backend.ackflow(Registry::new(), clock.clone(), settings.clone());
    let before = app.report(&Owner::anonymous()).await.expect("report");
    assert_eq!(before.accepted, 2, "the report's window holds two hours");
    assert_eq!(before.counts[&JobState::Cancelled], 2);

    let swept = app.sweep().await.expect("sweep");
    assert_eq!(swept.purged, 0, "no job has expired: only counters went");

    let hour = |hours_ago| Deltas::hour_of(now.minus(HOUR * hours_ago));
    assert_eq!(
        counted_hours(&backend.db),
        vec![hour(4), hour(1), hour(0)],
        "the hours before the window are gone but the one just before it, kept as a margin"
    );
    let after = app.report(&Owner::anonymous()).await.expect("report");
    assert_eq!(after, before, "the report sums what it summed before");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_purge_prunes_at_most_its_limit_of_counters_oldest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&dir.path().join("ackflow.db"), Durability::Normal).expect("open");
    let store = SqliteStore::new(db.clone()).with_report_window(HOUR);
    let settings = Settings::default();
    let now = half_past();
    let clock = ManualClock::new(now);
    for hours_ago in [5, 4, 0] {
        accepted_and_cancelled_at(&store, &clock, &settings, now.minus(HOUR * hours_ago)).await;
    }
    let hour = |hours_ago| Deltas::hour_of(now.minus(HOUR * hours_ago));
    // Each job left three counters in its hour: accepted, its final state and its latency.
    let rows = |db: &Db| {
        db.read_blocking("test", |c| {
            Ok(c.query_row("SELECT count(*) FROM counters", [], |r| r.get::<_, i64>(0))?)
        })
        .expect("count")
    };
    assert_eq!(rows(&db), 9);

    assert_eq!(store.purge_expired(now, 3).await.expect("purge"), 0);
    assert_eq!(
        counted_hours(&db),
        vec![hour(4), hour(0)],
        "the oldest hour first"
    );
    assert_eq!(store.purge_expired(now, 2).await.expect("purge"), 0);
    assert_eq!(rows(&db), 4, "two rows of the next hour, no more");
    store.purge_expired(now, 2).await.expect("purge");
    assert_eq!(counted_hours(&db), vec![hour(0)]);
    store.purge_expired(now, 2).await.expect("purge");
    assert_eq!(counted_hours(&db), vec![hour(0)], "the window's hour stays");
}
