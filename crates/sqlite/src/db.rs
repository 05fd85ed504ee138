//! The SQLite file shared by the store, the queue and the order book: opening, pragmas,
//! migrations, and the one way blocking SQLite work is run from async code.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ackflow_core::PortError;
use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

use crate::schema::MIGRATIONS;

/// How hard a commit tries to reach the disk.
///
/// The database runs in WAL mode in both cases, so a crash never corrupts it; the choice is only
/// about how many of the latest commits a crash may take away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `PRAGMA synchronous = NORMAL`: a commit is in the write-ahead log (in the operating
    /// system's cache) when it returns, so it survives the *process* dying at any point — a
    /// panic, an OOM kill, `kill -9`. A power loss or kernel crash may lose the last commits
    /// (never corrupt the file). The default: it is what "the 202 survives a crash" needs, at a
    /// fraction of the cost of an fsync per commit.
    #[default]
    Normal,
    /// `PRAGMA synchronous = FULL`: the log is fsynced on every commit, so a commit also survives
    /// power loss, at the price of one fsync (often milliseconds) per write.
    Full,
}

impl Durability {
    /// The name used in configuration: `normal` or `full`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Full => "full",
        }
    }

    fn pragma(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that is neither `normal` nor `full`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("durability is `normal` or `full`, not {0:?}")]
pub struct UnknownDurability(pub String);

impl FromStr for Durability {
    type Err = UnknownDurability;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "normal" => Ok(Self::Normal),
            "full" => Ok(Self::Full),
            _ => Err(UnknownDurability(s.to_owned())),
        }
    }
}

/// How long a statement waits for another process's write lock (the `ackflow` CLI reading the
/// same file, say) before giving up with `SQLITE_BUSY`, which becomes [`PortError::Unavailable`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One SQLite database file, shared by everything that stores data on the single machine.
///
/// Cheap to clone (an [`Arc`] inside). Every call runs on one connection behind a mutex, on
/// tokio's blocking pool:
///
/// - *One connection:* SQLite lets one writer in at a time whatever we do, and in WAL mode a
///   single connection never blocks itself, so several connections would only add `SQLITE_BUSY`
///   retries between our own writers. Statements are short (indexed lookups, small rows), so
///   serialising them costs little and keeps every transaction trivially isolated.
/// - *A `std` mutex, on the blocking pool:* SQLite calls block on disk I/O (and on fsync with
///   [`Durability::Full`]); running them on async worker threads would stall every other task.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    /// Held only inside `spawn_blocking` (or in the few synchronous startup calls), never across
    /// an `.await`.
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// The database file could not be opened or prepared.
#[derive(Debug, thiserror::Error)]
#[error("could not open the SQLite database {path:?}: {why}")]
struct OpenError {
    path: PathBuf,
    why: &'static str,
    #[source]
    source: Option<rusqlite::Error>,
}

/// The file was written by a newer version of ackflow.
#[derive(Debug, thiserror::Error)]
#[error("the database has schema version {found}, newer than this ackflow knows ({known}); upgrade ackflow")]
struct NewerSchema {
    found: i64,
    known: i64,
}

impl Db {
    /// Opens (creating if needed) the database file at `path`, whose parent directory must
    /// exist, and brings its schema up to date. Turns on WAL mode, the busy timeout and foreign
    /// keys, and sets `synchronous` from `durability`.
    ///
    /// Blocks the calling thread (it is meant for startup).
    pub fn open(path: &Path, durability: Durability) -> Result<Db, PortError> {
        let open_error = |why: &'static str| {
            let path = path.to_owned();
            move |source: rusqlite::Error| {
                classify(
                    "open the database",
                    OpenError {
                        path,
                        why,
                        source: Some(source),
                    },
                )
            }
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.is_dir() {
                return Err(PortError::failed(
                    "open the database",
                    OpenError {
                        path: path.to_owned(),
                        why: "its directory does not exist",
                        source: None,
                    },
                ));
            }
        }
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_error("the file cannot be opened"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(open_error("setting the busy timeout failed"))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(open_error("switching to WAL mode failed"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Some file systems (network mounts) cannot do WAL; the data is still safe in the
            // rollback journal, only slower and with readers blocked during writes.
            tracing::warn!(path = %path.display(), %mode, "SQLite could not use WAL mode");
        }
        conn.pragma_update(None, "synchronous", durability.pragma())
            .map_err(open_error("setting synchronous failed"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_error("turning on foreign keys failed"))?;
        migrate(&mut conn).map_err(|e| match e {
            MigrateError::Sql(e) => open_error("migrating the schema failed")(e),
            MigrateError::Newer(e) => PortError::failed("open the database", e),
        })?;
        Ok(Db {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                path: path.to_owned(),
            }),
        })
    }

    /// The file this database lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// How SQLite would answer `sql` (`EXPLAIN QUERY PLAN`, one line per step), its parameters
    /// bound to NULL: the plan does not depend on the values, as no `ANALYZE` statistics are
    /// kept. For the tests that hold every hot statement to an index.
    pub fn query_plan(&self, sql: &str) -> Result<String, PortError> {
        self.call_blocking("explain a query", |c| {
            let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
            let nulls = std::iter::repeat_n(rusqlite::types::Null, stmt.parameter_count());
            let rows = stmt.query_map(rusqlite::params_from_iter(nulls), |row| {
                row.get::<_, String>(3)
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?.join("\n"))
        })
    }

    /// Runs `f` on the connection, on the blocking pool. `what` names the call in errors.
    ///
    /// Public so that a processor's own data can live in the same file (the `order` example's
    /// stock, whose adapter is in `ackflow-processors`).
    pub async fn call<T, F>(&self, what: &'static str, f: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        let db = self.clone();
        match tokio::task::spawn_blocking(move || db.call_blocking(what, f)).await {
            Ok(result) => result,
            // The closure panicked (a bug) or the runtime is shutting down.
            Err(join) => Err(PortError::failed(what, join)),
        }
    }

    /// Runs `f` on the connection on this thread (startup calls and the blocking pool).
    pub fn call_blocking<T, F>(&self, what: &'static str, f: F) -> Result<T, PortError>
    where
        F: FnOnce(&mut Connection) -> Result<T, DbError>,
    {
        // A panic while the lock was held cannot leave a transaction half-done: rusqlite's
        // `Transaction` rolls back when dropped during unwinding. So a poisoned lock still guards
        // a consistent connection, and refusing it would take the whole database down for good.
        let mut conn = self
            .inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut conn).map_err(|e| e.into_port(what))
    }
}

/// A row count for a `LIMIT`: SQLite takes an `i64`, callers a `usize`.
pub(crate) fn sql_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Starts a write transaction that takes the write lock at once (`BEGIN IMMEDIATE`), so that it
/// never fails half-way through on a lock upgrade.
pub fn write_tx(conn: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

/// What can go wrong inside a database call.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite said no.
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    /// A stored value could not be read back (or a value could not be written as JSON).
    #[error("stored data is unreadable")]
    Json(#[from] serde_json::Error),
    /// A stored value has an impossible shape.
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// The caller asked for something this adapter refuses (a bug in the caller).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl DbError {
    fn into_port(self, what: &'static str) -> PortError {
        match self {
            DbError::Sql(e) => classify(what, e),
            other => PortError::failed(what, other),
        }
    }
}

/// Busy, locked, I/O and full-disk errors may go away: [`PortError::Unavailable`]. Anything
/// else is a bug or a damaged file: [`PortError::Failed`].
fn classify<E>(what: &'static str, e: E) -> PortError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(rusqlite::Error::SqliteFailure(failure, _)) = err.downcast_ref() {
            return if matches!(
                failure.code,
                ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::DiskFull
                    | ErrorCode::CannotOpen
                    | ErrorCode::OutOfMemory
            ) {
                PortError::unavailable(what, e)
            } else {
                PortError::failed(what, e)
            };
        }
        source = err.source();
    }
    PortError::failed(what, e)
}

enum MigrateError {
    Sql(rusqlite::Error),
    Newer(NewerSchema),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}

/// Applies the migrations the file has not seen yet, each in its own transaction together with
/// the new `user_version`, so a crash mid-way leaves the file at a known version.
fn migrate(conn: &mut Connection) -> Result<(), MigrateError> {
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    loop {
        let tx = write_tx(conn)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > known {
            return Err(MigrateError::Newer(NewerSchema {
                found: version,
                known,
            }));
        }
        let Some(step) = usize::try_from(version)
            .ok()
            .and_then(|v| MIGRATIONS.get(v))
        else {
            tx.commit()?;
            return Ok(());
        };
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
        tracing::info!(version = version + 1, "SQLite schema migrated");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_parses_its_own_names() {
        for d in [Durability::Normal, Durability::Full] {
            assert_eq!(d.as_str().parse::<Durability>(), Ok(d));
        }
        assert_eq!("FULL".parse::<Durability>(), Ok(Durability::Full));
        assert!("fast".parse::<Durability>().is_err());
    }

    #[test]
    fn opening_sets_wal_and_synchronous_and_migrates_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.db");
        for (durability, expected) in [(Durability::Full, 2), (Durability::Normal, 1)] {
            let db = Db::open(&path, durability).expect("open");
            let (mode, sync, version, fk): (String, i64, i64, i64) = db
                .call_blocking("test", |c| {
                    Ok((
                        c.pragma_query_value(None, "journal_mode", |r| r.get(0))?,
                        c.pragma_query_value(None, "synchronous", |r| r.get(0))?,
                        c.pragma_query_value(None, "user_version", |r| r.get(0))?,
                        c.pragma_query_value(None, "foreign_keys", |r| r.get(0))?,
                    ))
                })
                .expect("pragmas");
            assert_eq!(mode, "wal");
            assert_eq!(sync, expected);
            assert_eq!(version, MIGRATIONS.len() as i64);
            assert_eq!(fk, 1);
        }
    }

    #[test]
    fn a_missing_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err =
            Db::open(&dir.path().join("nope/a.db"), Durability::Normal).expect_err("no directory");
        let text = ackflow_core::error_chain(&err);
        assert!(text.contains("directory does not exist"), "{text}");
        assert!(matches!(err, PortError::Failed { .. }));
    }

    #[test]
    fn a_database_from_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.db");
        let db = Db::open(&path, Durability::Normal).expect("open");
        db.call_blocking("test", |c| {
            c.pragma_update(None, "user_version", 999)?;
            Ok(())
        })
        .expect("bump");
        drop(db);
        let err = Db::open(&path, Durability::Normal).expect_err("newer");
        let text = ackflow_core::error_chain(&err);
        assert!(text.contains("newer than this ackflow"), "{text}");
    }

    #[test]
    fn busy_and_io_errors_are_transient_and_the_rest_permanent() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert!(matches!(
            DbError::from(busy).into_port("x"),
            PortError::Unavailable { .. }
        ));
        let constraint = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
            None,
        );
        assert!(matches!(
            DbError::from(constraint).into_port("x"),
            PortError::Failed { .. }
        ));
        assert!(matches!(
            DbError::Corrupt("x".into()).into_port("x"),
            PortError::Failed { .. }
        ));
    }
}
