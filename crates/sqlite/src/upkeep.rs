//! What the writer does for the file between batches, so that it stays small and its queries
//! stay well planned under sustained load: checkpoints that keep the write-ahead log bounded,
//! and the planner's statistics.
//!
//! # The write-ahead log
//!
//! Commits append to `<db>-wal`; a checkpoint copies them into the database file. SQLite
//! checkpoints by itself after a commit that leaves at least `wal_autocheckpoint` (1000) pages in
//! the log, but only as far as no reader still needs (`PASSIVE`), and the log starts over from
//! its beginning only once all of it is copied and no reader is using it. With a pool of readers
//! under sustained load some read is nearly always in progress, so the log can go on growing, and
//! the file never shrinks by itself. Hence:
//!
//! - `journal_size_limit` ([`WAL_LIMIT`]): when the log starts over, the file is cut back to it.
//! - A log file past that limit makes the writer run a `RESTART` checkpoint after its batch: it
//!   waits (briefly, [`CHECKPOINT_WAIT`]) for the reads that began before it, so that the next
//!   commit starts the log over and truncates the file.
//! - An idle writer ([`IDLE`] without a write) runs a `TRUNCATE` checkpoint: the log is empty
//!   while nothing is written.
//!
//! The writer samples the log file's size after every batch (one `stat`, small next to a
//! commit); its peak is [`crate::WriteStats::wal_peak_bytes`].
//!
//! # Statistics
//!
//! `PRAGMA optimize` runs `ANALYZE` on the tables whose statistics are missing or out of date
//! (grown or shrunk tenfold), so the planner knows, say, that most jobs belong to one owner.
//! It runs at open and every [`OPTIMIZE_EVERY`], with `analysis_limit` keeping each `ANALYZE`
//! to a sample of rows, so its cost stays small however large the file grows. The writer's own
//! statements use a refresh at once; a read connection loads the statistics with the schema,
//! so it sees the first ones gathered (creating `sqlite_stat1` changes the schema) and later
//! refreshes only once the file is reopened.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// `journal_size_limit`, in bytes, and the log size past which the writer forces a checkpoint
/// that lets the log start over. About four times what the automatic checkpoints leave
/// (1000 pages of 4 KiB) when nothing holds them up, so a healthy log never reaches it.
pub(crate) const WAL_LIMIT: u64 = 16 * 1024 * 1024;

/// How long the writer waits for reads to finish in a checkpoint of its own. Writes wait behind
/// it, so it is short; a checkpoint that runs out of time is tried again later.
const CHECKPOINT_WAIT: Duration = Duration::from_millis(20);

/// Shortest time between two forced checkpoints under load: when a long read keeps one from
/// finishing, the writer does not stall every batch on it.
const RESTART_SPACING: Duration = Duration::from_secs(1);

/// How long the writer goes without a write before it empties the log.
pub(crate) const IDLE: Duration = Duration::from_secs(1);

/// Rows `ANALYZE` reads per index: SQLite's advice for `PRAGMA optimize` (100 to 1000 work well),
/// enough for the planner to tell a selective index from one that is not.
const ANALYSIS_LIMIT: i64 = 400;

/// How often the writer refreshes the statistics ("every few hours" is SQLite's advice for
/// long-lived connections); between runs only tables that grew or shrank tenfold need it.
const OPTIMIZE_EVERY: Duration = Duration::from_secs(6 * 3600);

/// `PRAGMA optimize` with the mask SQLite advises for long-lived connections: `ANALYZE` where it
/// may help (0x02), looking at every table (0x10000). Without that bit SQLite checks only the
/// tables whose statistics this connection's own queries used, and most queries run on the read
/// connections. Each `ANALYZE` is bounded by the connection's `analysis_limit`.
const OPTIMIZE_ALL_TABLES: &str = "PRAGMA optimize = 0x10002";

/// Housekeeping that failed. Nothing is lost: it is logged and tried again later.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpkeepError {
    /// A checkpoint of the writer's own failed (an I/O error, most likely).
    #[error("the {mode} checkpoint failed")]
    Checkpoint {
        mode: Checkpoint,
        #[source]
        source: rusqlite::Error,
    },
    /// Refreshing the planner's statistics failed.
    #[error("refreshing the query planner's statistics failed")]
    Optimize(#[source] rusqlite::Error),
}

/// The checkpoints the writer runs itself (SQLite's automatic ones are `PASSIVE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checkpoint {
    /// Copies the whole log, waiting for the reads that need it, so the next commit starts it
    /// over.
    Restart,
    /// `Restart`, then empties the log file.
    Truncate,
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Restart => "RESTART",
            Self::Truncate => "TRUNCATE",
        })
    }
}

/// What `PRAGMA wal_checkpoint` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpointed {
    /// A read (or another process's write) outlasted [`CHECKPOINT_WAIT`]: the log was copied
    /// only as far as it allowed.
    pub(crate) blocked: bool,
    /// Pages in the log, and how many of them are now in the database file.
    pub(crate) log_pages: i64,
    pub(crate) copied_pages: i64,
}

/// Sets the writer's connection up for its housekeeping and refreshes the statistics once:
/// a file opened after a while (or grown by an earlier run) gets its statistics before the
/// first query needs them. Run once the schema is migrated.
pub(crate) fn prepare(conn: &Connection) -> rusqlite::Result<()> {
    let limit = i64::try_from(WAL_LIMIT).unwrap_or(i64::MAX);
    conn.pragma_update_and_check(None, "journal_size_limit", limit, |_| Ok(()))?;
    conn.pragma_update_and_check(None, "analysis_limit", ANALYSIS_LIMIT, |_| Ok(()))?;
    if let Err(e) = optimize(conn) {
        // Statistics only make queries faster: the file is usable without them.
        tracing::warn!(error = %ackflow_core::error_chain(&e), "SQLite statistics not refreshed at open");
    }
    Ok(())
}

/// `PRAGMA optimize` over every table, bounded by the connection's `analysis_limit`.
pub(crate) fn optimize(conn: &Connection) -> Result<(), UpkeepError> {
    conn.execute_batch(OPTIMIZE_ALL_TABLES)
        .map_err(UpkeepError::Optimize)
}

/// Runs a `mode` checkpoint, waiting at most [`CHECKPOINT_WAIT`] for readers, then gives the
/// connection its usual busy timeout (`busy_timeout`) back.
pub(crate) fn checkpoint(
    conn: &Connection,
    mode: Checkpoint,
    busy_timeout: Duration,
) -> Result<Checkpointed, UpkeepError> {
    let error = |source| UpkeepError::Checkpoint { mode, source };
    conn.busy_timeout(CHECKPOINT_WAIT).map_err(error)?;
    let answer = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
        Ok(Checkpointed {
            blocked: row.get::<_, i64>(0)? != 0,
            log_pages: row.get(1)?,
            copied_pages: row.get(2)?,
        })
    });
    conn.busy_timeout(busy_timeout).map_err(error)?;
    answer.map_err(error)
}

/// The size of the log file now; 0 when there is none (the file is not in WAL mode, or the log
/// was removed when the last connection closed).
pub(crate) fn wal_size(wal: &Path) -> u64 {
    std::fs::metadata(wal).map_or(0, |m| m.len())
}

/// The log file of the database at `db`: SQLite's name for it, `<db>-wal`.
pub(crate) fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// The writer's housekeeping: what it has to do after a batch and when it is idle.
#[derive(Debug)]
pub(crate) struct Upkeep {
    wal: PathBuf,
    /// The writer's usual busy timeout, restored after each checkpoint of its own.
    busy_timeout: Duration,
    /// Something was committed since the last idle checkpoint.
    written: bool,
    last_restart: Option<Instant>,
    last_optimize: Instant,
}

impl Upkeep {
    /// The housekeeping of the database at `db`, whose statistics were refreshed just now
    /// ([`prepare`]).
    pub(crate) fn new(db: &Path, busy_timeout: Duration) -> Self {
        Self {
            wal: wal_path(db),
            busy_timeout,
            written: false,
            last_restart: None,
            last_optimize: Instant::now(),
        }
    }

    /// How long the writer may wait for a request before [`Upkeep::when_idle`] is due; `None`
    /// when there is nothing to do however long it waits.
    pub(crate) fn idle_after(&self) -> Option<Duration> {
        self.written.then_some(IDLE)
    }

    /// After a batch: samples the log's size (returned, for the peak) and runs what is due.
    pub(crate) fn after_batch(&mut self, conn: &Connection) -> u64 {
        self.written = true;
        let size = wal_size(&self.wal);
        let now = Instant::now();
        if size > WAL_LIMIT
            && self
                .last_restart
                .is_none_or(|at| now.duration_since(at) >= RESTART_SPACING)
        {
            self.last_restart = Some(now);
            self.run(conn, Checkpoint::Restart);
        }
        if now.duration_since(self.last_optimize) >= OPTIMIZE_EVERY {
            self.last_optimize = now;
            if let Err(e) = optimize(conn) {
                tracing::warn!(error = %ackflow_core::error_chain(&e), "SQLite statistics not refreshed");
            }
        }
        size
    }

    /// After [`IDLE`] without a write: empties the log. Tried once per idle spell: a read that
    /// keeps it from finishing is not waited out again until something more is written.
    pub(crate) fn when_idle(&mut self, conn: &Connection) {
        self.written = false;
        self.run(conn, Checkpoint::Truncate);
    }

    fn run(&self, conn: &Connection, mode: Checkpoint) {
        match checkpoint(conn, mode, self.busy_timeout) {
            Ok(done) => tracing::debug!(
                %mode,
                blocked = done.blocked,
                log_pages = done.log_pages,
                copied_pages = done.copied_pages,
                "SQLite checkpoint"
            ),
            Err(e) => {
                tracing::warn!(error = %ackflow_core::error_chain(&e), "SQLite checkpoint failed; tried again later")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Db, Durability};

    fn open(path: &Path) -> Db {
        Db::open(path, Durability::Normal).expect("open")
    }

    fn blobs(db: &Db) {
        db.call_blocking("test", |c| {
            c.execute_batch("CREATE TABLE t (b BLOB NOT NULL)")?;
            Ok(())
        })
        .expect("table");
    }

    /// Commits one 64 KiB row: sixteen pages and more in the log.
    fn write_blob(db: &Db) {
        db.call_blocking("test write", |c| {
            c.execute("INSERT INTO t (b) VALUES (randomblob(65536))", [])?;
            Ok(())
        })
        .expect("write");
    }

    /// A connection of its own in a read transaction: until it ends, no checkpoint can copy
    /// what was committed after it began.
    fn hold_a_snapshot(path: &Path) -> Connection {
        let reader = Connection::open(path).expect("reader");
        reader.execute_batch("BEGIN").expect("begin");
        reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
            .expect("read");
        reader
    }

    fn until(deadline: Duration, mut done: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        done()
    }

    #[test]
    fn the_writer_limits_the_log_and_bounds_each_analysis() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(&dir.path().join("a.db"));
        let (journal, analysis): (i64, i64) = db
            .call_blocking("test", |c| {
                Ok((
                    c.pragma_query_value(None, "journal_size_limit", |r| r.get(0))?,
                    c.pragma_query_value(None, "analysis_limit", |r| r.get(0))?,
                ))
            })
            .expect("pragmas");
        assert_eq!(u64::try_from(journal).ok(), Some(WAL_LIMIT));
        assert_eq!(analysis, ANALYSIS_LIMIT);
    }

    #[test]
    fn opening_a_file_that_holds_rows_gathers_the_planners_statistics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.db");
        let stats = |db: &Db| -> i64 {
            db.read_blocking("test", |c| {
                let kept: i64 = c.query_row(
                    "SELECT count(*) FROM sqlite_schema WHERE name = 'sqlite_stat1'",
                    [],
                    |r| r.get(0),
                )?;
                if kept == 0 {
                    return Ok(0);
                }
                Ok(c.query_row(
                    "SELECT count(*) FROM sqlite_stat1 WHERE tbl = 'counters'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .expect("stats")
        };
        let db = open(&path);
        assert_eq!(stats(&db), 0, "empty tables are not analyzed");
        db.call_blocking("test", |c| {
            for hour in 0..50_i64 {
                c.execute(
                    "INSERT INTO counters (owner, hour, name, n) VALUES ('alice', ?1, 'accepted', 1)",
                    [hour],
                )?;
            }
            Ok(())
        })
        .expect("counters");
        drop(db);
        let db = open(&path);
        assert!(stats(&db) > 0, "the counters' indexes have statistics");
    }

    #[test]
    fn a_checkpoint_of_the_writers_own_waits_for_readers_only_briefly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.db");
        let writer = Connection::open(&path).expect("writer");
        writer
            .pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))
            .expect("wal");
        writer
            .execute_batch("CREATE TABLE t (b BLOB NOT NULL); INSERT INTO t VALUES (x'00')")
            .expect("table");
        let reader = hold_a_snapshot(&path);
        writer
            .execute("INSERT INTO t VALUES (x'01')", [])
            .expect("a commit the reader does not see");
        let usual = Duration::from_secs(5);
        let start = Instant::now();
        let done = checkpoint(&writer, Checkpoint::Restart, usual).expect("checkpoint");
        assert!(
            done.blocked,
            "the reader's snapshot keeps the log: {done:?}"
        );
        assert!(
            start.elapsed() < usual / 5,
            "gave up after {:?}",
            start.elapsed()
        );
        let timeout: i64 = writer
            .pragma_query_value(None, "busy_timeout", |r| r.get(0))
            .expect("busy timeout");
        assert_eq!(timeout, 5000, "the usual busy timeout is back");
        drop(reader);
        let done = checkpoint(&writer, Checkpoint::Truncate, usual).expect("checkpoint");
        assert!(!done.blocked, "{done:?}");
        assert_eq!(wal_size(&wal_path(&path)), 0);
    }

    #[test]
    fn a_log_held_up_by_a_reader_is_cut_back_once_it_is_done_and_emptied_when_idle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.db");
        let wal = wal_path(&path);
        let db = open(&path);
        blobs(&db);
        let reader = hold_a_snapshot(&path);
        let mut writes = 0;
        while wal_size(&wal) <= WAL_LIMIT {
            write_blob(&db);
            writes += 1;
            assert!(writes < 2000, "the log stays at {} bytes", wal_size(&wal));
        }
        let grown = wal_size(&wal);
        // The writer samples after answering: the next write is taken only once it has.
        write_blob(&db);
        assert!(
            db.write_stats().wal_peak_bytes >= grown,
            "{:?}",
            db.write_stats()
        );

        drop(reader);
        let cut_back = until(Duration::from_secs(10), || {
            write_blob(&db);
            // Well within the idle time: the writer is busy throughout.
            std::thread::sleep(Duration::from_millis(10));
            wal_size(&wal) <= WAL_LIMIT
        });
        assert!(cut_back, "the log stays at {} bytes", wal_size(&wal));

        let emptied = until(IDLE * 5, || wal_size(&wal) == 0);
        assert!(emptied, "an idle writer leaves {} bytes", wal_size(&wal));
        assert!(db.write_stats().wal_peak_bytes > WAL_LIMIT);
    }
}
