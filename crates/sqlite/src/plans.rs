//! Every query that runs on a hot path uses an index: checked with `EXPLAIN QUERY PLAN` against
//! the real schema, so that a change to a query or an index that brings back a table scan fails
//! here rather than in production. Each check runs on a fresh file and on one whose statistics
//! `PRAGMA optimize` has gathered, since those may change the planner's mind.

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

/// Rows shaped like a server's after a while: nearly every job of one owner (authentication
/// off) and terminal, a few open ones, a queue with some messages in flight, dead letters, two
/// days of counters.
const SOME_OF_EVERYTHING: &str = r#"
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
INSERT INTO jobs (id, owner, kind, state, revision, submitted_at, updated_at, sweep_at,
                  expires_at, idempotency_key, header)
SELECT printf('job-%05d', i),
       CASE WHEN i % 50 = 0 THEN 'alice' ELSE 'anonymous' END,
       CASE WHEN i % 3 = 0 THEN 'order' ELSE 'demo' END,
       CASE i % 20 WHEN 0 THEN 'queued' WHEN 1 THEN 'running' WHEN 2 THEN 'failed'
                   ELSE 'succeeded' END,
       3, i * 1000, i * 1000 + 500,
       CASE WHEN i % 20 IN (0, 1) THEN i * 1000 + 60000 END,
       CASE WHEN i % 20 NOT IN (0, 1) THEN i * 1000 + 604800000 END,
       CASE WHEN i % 10 = 0 THEN printf('key-%05d', i) END,
       '{}'
FROM n;
INSERT INTO job_inputs (job_id, input) SELECT id, '{}' FROM jobs;
INSERT INTO job_results (job_id, result) SELECT id, '{}' FROM jobs WHERE state = 'succeeded';
INSERT INTO idempotency_keys (owner, key, job_id, body_hash)
SELECT owner, idempotency_key, id, 'hash' FROM jobs WHERE idempotency_key IS NOT NULL;
INSERT INTO gauges (owner, state, n) VALUES
    ('anonymous', 'queued', 245), ('anonymous', 'running', 245),
    ('alice', 'queued', 5), ('alice', 'running', 5);
WITH RECURSIVE h(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM h WHERE i < 47),
     c(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM c WHERE j < 29)
INSERT INTO counters (owner, hour, name, n)
SELECT o.owner, h.i * 3600000, printf('latency:%d', c.j), 1
FROM h, c, (SELECT 'anonymous' AS owner UNION ALL SELECT 'alice') AS o;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
INSERT INTO queue_messages (queue, id, body, attributes, sent_at, visible_at, receive_count,
                            receipt)
SELECT 'jobs', printf('m-%05d', i), '{}', '{}', i * 1000, i * 1000 + (i % 7) * 30000, i % 3,
       CASE WHEN i % 20 = 0 THEN printf('r-%05d', i) END
FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50)
INSERT INTO dead_letters (queue, id, body, attributes, sent_at, receive_count,
                          dead_lettered_at, visible_at, receipt)
SELECT 'jobs', printf('d-%05d', i), '{}', '{}', i * 1000, 8, i * 1000 + 1, 0,
       CASE WHEN i % 10 = 0 THEN printf('dr-%05d', i) END
FROM n;
"#;

/// A file with [`SOME_OF_EVERYTHING`], reopened: opening it gathers the planner's statistics,
/// as it does for a server restarted on its file.
fn with_statistics() -> (tempfile::TempDir, Db) {
    let (dir, db) = fresh();
    db.call_blocking("fill the file", |c| {
        c.execute_batch(SOME_OF_EVERYTHING)?;
        Ok(())
    })
    .expect("rows");
    drop(db);
    let db = Db::open(&dir.path().join("plans.db"), Durability::Normal).expect("reopen");
    let analyzed: i64 = db
        .read_blocking("test", |c| {
            Ok(
                c.query_row("SELECT count(DISTINCT tbl) FROM sqlite_stat1", [], |r| {
                    r.get(0)
                })?,
            )
        })
        .expect("statistics");
    assert!(analyzed >= 6, "only {analyzed} tables analyzed");
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

fn job_reads_and_writes_use_keys_and_indexes(db: &Db) {
    // `jobs.id` is a TEXT primary key, which SQLite keeps in an automatic unique index.
    for sql in [
        store::SELECT_JOB,
        store::UPDATE_JOB,
        store::SELECT_INPUT,
        store::SELECT_RESULT,
    ] {
        assert_uses(db, sql, "jobs", "sqlite_autoindex_jobs_1 (id=?)");
    }
    assert_uses(
        db,
        store::SELECT_INPUT,
        "i",
        "sqlite_autoindex_job_inputs_1",
    );
    assert_uses(
        db,
        store::SELECT_RESULT,
        "r",
        "sqlite_autoindex_job_results_1",
    );
    assert_uses(db, store::SELECT_KEY, "idempotency_keys", "PRIMARY KEY");
    assert_uses(db, store::SELECT_GAUGES, "gauges", "PRIMARY KEY");
    assert_uses(db, store::SUM_COUNTERS, "counters", "PRIMARY KEY");
}

fn every_listing_walks_an_owner_index_without_sorting(db: &Db) {
    for state in [false, true] {
        for kind in [false, true] {
            for after in [false, true] {
                let sql = store::list_sql(state, kind, after);
                let plan = plan(db, &sql);
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

fn the_sweeper_and_the_purge_read_their_indexes(db: &Db) {
    assert_uses(db, store::DUE_FOR_SWEEP, "jobs", "jobs_to_sweep");
    assert_uses(db, store::PURGE_EXPIRED, "jobs", "jobs_to_expire");
    assert_uses(db, store::PRUNE_COUNTERS, "counters", "counters_by_hour");
    assert_uses(db, store::OLDEST_IN_STATE, "jobs", "jobs_by_owner_state");
    for sql in [
        store::DUE_FOR_SWEEP,
        store::PURGE_EXPIRED,
        store::PRUNE_COUNTERS,
        store::OLDEST_IN_STATE,
    ] {
        assert!(!plan(db, sql).contains("TEMP B-TREE"), "{sql} sorts");
    }
}

fn queue_operations_use_the_visibility_and_receipt_indexes(db: &Db) {
    for sql in [
        queue::CANDIDATES,
        queue::COUNT_ALL,
        queue::COUNT_IN_FLIGHT,
        queue::NEXT_VISIBLE,
        queue::RELEASE,
    ] {
        assert_uses(db, sql, "queue_messages", "queue_messages_by_visibility");
    }
    assert!(!plan(db, queue::CANDIDATES).contains("TEMP B-TREE"));
    for sql in [
        queue::DELETE,
        queue::CHANGE_VISIBILITY,
        queue::SEQ_OF_RECEIPT,
    ] {
        assert_uses(db, sql, "queue_messages", "queue_messages_by_receipt");
    }
    for sql in [queue::DELIVER, queue::DELETE_SEQ, queue::MOVE_TO_DLQ] {
        assert_uses(db, sql, "queue_messages", "INTEGER PRIMARY KEY");
    }
    assert_uses(
        db,
        queue::DEAD_LETTERS,
        "dead_letters",
        "dead_letters_by_queue",
    );
    assert_uses(
        db,
        queue::COUNT_DEAD,
        "dead_letters",
        "dead_letters_by_queue",
    );
    assert_uses(
        db,
        queue::DEAD_CANDIDATES,
        "dead_letters",
        "dead_letters_by_queue",
    );
    assert!(!plan(db, queue::DEAD_CANDIDATES).contains("TEMP B-TREE"));
    assert_uses(db, queue::HOLD_DEAD, "dead_letters", "INTEGER PRIMARY KEY");
    assert_uses(
        db,
        queue::DELETE_DEAD,
        "dead_letters",
        "dead_letters_by_receipt",
    );
}

/// Each check as a test on a fresh file (no statistics: the plans SQLite starts with) and on a
/// file with statistics (the plans of a server that has run a while: `PRAGMA optimize` gathers
/// them).
macro_rules! on_both_files {
    ($($check:ident),* $(,)?) => {
        mod on_a_fresh_file {
            $(
                #[test]
                fn $check() {
                    let (_dir, db) = super::fresh();
                    super::$check(&db);
                }
            )*
        }
        mod on_a_file_with_statistics {
            $(
                #[test]
                fn $check() {
                    let (_dir, db) = super::with_statistics();
                    super::$check(&db);
                }
            )*
        }
    };
}

on_both_files!(
    job_reads_and_writes_use_keys_and_indexes,
    every_listing_walks_an_owner_index_without_sorting,
    the_sweeper_and_the_purge_read_their_indexes,
    queue_operations_use_the_visibility_and_receipt_indexes,
);
