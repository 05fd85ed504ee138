//! Every query that runs on a hot path uses an index: checked with `EXPLAIN QUERY PLAN` against
//! the real schema, so that a change to a query or an index that brings back a table scan fails
//! here rather than in production.

use crate::db::Db;
use crate::{queue, store, Durability};

fn plan(db: &Db, sql: &str) -> String {
    db.query_plan(sql)
        .unwrap_or_else(|e| panic!("cannot explain {sql}: {e:?}"))
}

fn fresh() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&dir.path().join("plans.db"), Durability::Normal).expect("open");
    (dir, db)
}

/// `sql` is answered through `index` and never scans `table`.
#[track_caller]
fn assert_uses(db: &Db, sql: &str, table: &str, index: &str) {
    let plan = plan(db, sql);
    assert!(
        !plan.contains(&format!("SCAN {table}")),
        "{sql}\nscans {table}:\n{plan}"
    );
    assert!(plan.contains(index), "{sql}\ndoes not use {index}:\n{plan}");
}

#[test]
fn job_reads_and_writes_use_keys_and_indexes() {
    let (_dir, db) = fresh();
    // `jobs.id` is a TEXT primary key, which SQLite keeps in an automatic unique index.
    for sql in [
        store::SELECT_JOB,
        store::UPDATE_JOB,
        store::SELECT_INPUT,
        store::SELECT_RESULT,
    ] {
        assert_uses(&db, sql, "jobs", "sqlite_autoindex_jobs_1 (id=?)");
    }
    assert_uses(
        &db,
        store::SELECT_INPUT,
        "i",
        "sqlite_autoindex_job_inputs_1",
    );
    assert_uses(
        &db,
        store::SELECT_RESULT,
        "r",
        "sqlite_autoindex_job_results_1",
    );
    assert_uses(&db, store::SELECT_KEY, "idempotency_keys", "PRIMARY KEY");
    assert_uses(&db, store::SELECT_GAUGES, "gauges", "PRIMARY KEY");
    assert_uses(&db, store::SUM_COUNTERS, "counters", "PRIMARY KEY");
}

#[test]
fn every_listing_walks_an_owner_index_without_sorting() {
    let (_dir, db) = fresh();
    for state in [false, true] {
        for kind in [false, true] {
            for after in [false, true] {
                let sql = store::list_sql(state, kind, after);
                let plan = plan(&db, &sql);
                assert!(!plan.contains("SCAN jobs"), "{sql}\n{plan}");
                assert!(plan.contains("USING INDEX jobs_by_owner"), "{sql}\n{plan}");
                if !(state && kind) {
                    // With both filters SQLite picks one of the two indexes and may sort; the
                    // other combinations come out of the index in order.
                    assert!(!plan.contains("TEMP B-TREE"), "{sql}\n{plan}");
                }
            }
        }
    }
}

#[test]
fn the_sweeper_and_the_purge_read_their_partial_indexes() {
    let (_dir, db) = fresh();
    assert_uses(&db, store::DUE_FOR_SWEEP, "jobs", "jobs_to_sweep");
    assert_uses(&db, store::PURGE_EXPIRED, "jobs", "jobs_to_expire");
    assert_uses(&db, store::OLDEST_IN_STATE, "jobs", "jobs_by_owner_state");
    for sql in [
        store::DUE_FOR_SWEEP,
        store::PURGE_EXPIRED,
        store::OLDEST_IN_STATE,
    ] {
        assert!(!plan(&db, sql).contains("TEMP B-TREE"), "{sql} sorts");
    }
}

#[test]
fn queue_operations_use_the_visibility_and_receipt_indexes() {
    let (_dir, db) = fresh();
    for sql in [
        queue::CANDIDATES,
        queue::COUNT_ALL,
        queue::COUNT_IN_FLIGHT,
        queue::NEXT_VISIBLE,
        queue::RELEASE,
    ] {
        assert_uses(&db, sql, "queue_messages", "queue_messages_by_visibility");
    }
    assert!(!plan(&db, queue::CANDIDATES).contains("TEMP B-TREE"));
    for sql in [
        queue::DELETE,
        queue::CHANGE_VISIBILITY,
        queue::SEQ_OF_RECEIPT,
    ] {
        assert_uses(&db, sql, "queue_messages", "queue_messages_by_receipt");
    }
    for sql in [queue::DELIVER, queue::DELETE_SEQ, queue::MOVE_TO_DLQ] {
        assert_uses(&db, sql, "queue_messages", "INTEGER PRIMARY KEY");
    }
    assert_uses(
        &db,
        queue::DEAD_LETTERS,
        "dead_letters",
        "dead_letters_by_queue",
    );
    assert_uses(
        &db,
        queue::COUNT_DEAD,
        "dead_letters",
        "dead_letters_by_queue",
    );
    assert_uses(
        &db,
        queue::DEAD_CANDIDATES,
        "dead_letters",
        "dead_letters_by_queue",
    );
    assert!(!plan(&db, queue::DEAD_CANDIDATES).contains("TEMP B-TREE"));
    assert_uses(&db, queue::HOLD_DEAD, "dead_letters", "INTEGER PRIMARY KEY");
    assert_uses(
        &db,
        queue::DELETE_DEAD,
        "dead_letters",
        "dead_letters_by_receipt",
    );
}
