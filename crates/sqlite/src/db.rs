//! The SQLite file shared by the store, the queue and the order book: opening, pragmas,
//! migrations, and the one way blocking SQLite work is run from async code.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use ackflow_core::PortError;
use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};
use tokio::sync::oneshot;

use crate::schema::MIGRATIONS;
use crate::upkeep::{self, Upkeep};

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

/// The most writes one commit takes. Under load the writer finds many requests waiting and
/// commits them together; the cap keeps one batch's commit (and the latency of its first
/// request) short.
const MAX_BATCH: usize = 256;

/// Read-only connections: enough for the server's readers to overlap on two cores and the
/// disk, few enough that their page caches stay small.
const READERS: usize = 4;

/// One SQLite database file, shared by everything that stores data on the single machine.
///
/// Cheap to clone (an [`Arc`] inside). Two kinds of connection:
///
/// - *One writer, group commit.* Every write ([`Db::call`]) goes to one thread that owns the
///   only writing connection. It takes whatever requests are waiting (up to [`MAX_BATCH`]),
///   runs each in its own `SAVEPOINT` inside one `BEGIN IMMEDIATE` transaction, and commits
///   them together: one commit, and with [`Durability::Full`] one fsync, for the whole batch.
///   A request that fails rolls back to its savepoint and fails alone (unless the error ends
///   the whole transaction, as a full disk does: then the batch fails); an answer is given only
///   once the batch holding it has committed. Nothing waits for a batch to fill: an idle
///   writer commits the first request at once, and batches form only because requests arrive
///   while the previous commit runs. SQLite lets one writer in at a time whatever we do, so
///   several writing connections would only add `SQLITE_BUSY` retries between our own writes.
/// - *A small pool of read-only connections* ([`Db::read`]). In WAL mode a reader sees the last
///   commit and never waits for the writer, so status reads, long-polls and lists do not queue
///   behind writes. A write's answer is given after its commit, so a read that follows it sees
///   it.
///
/// Both run SQLite off the async worker threads (the writer on its own thread, reads on tokio's
/// blocking pool): SQLite calls block on disk I/O and on fsync.
///
/// Between batches the writer also keeps the write-ahead log bounded and the planner's
/// statistics fresh (see the `upkeep` module): under sustained load the readers' snapshots can
/// keep SQLite's own checkpoints from letting the log start over, and the log file never
/// shrinks by itself.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    /// To the writer thread, which ends when the last `Db` is dropped.
    writer: mpsc::Sender<Request>,
    readers: Vec<Mutex<Connection>>,
    /// Round robin over `readers`, so concurrent reads try different connections first.
    next_reader: AtomicUsize,
    written: Arc<WriteCounts>,
    path: PathBuf,
}

/// How the writer has batched so far: `requests / batches` is the mean batch size.
#[derive(Debug, Default)]
struct WriteCounts {
    batches: AtomicU64,
    requests: AtomicU64,
    wal_peak_bytes: AtomicU64,
}

/// What the writer has done since the file was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteStats {
    /// Transactions committed (or tried): one per batch.
    pub batches: u64,
    /// Write requests run in them.
    pub requests: u64,
    /// The largest the write-ahead log file (`<db>-wal`) has been, in bytes, as seen by the
    /// writer after each batch (the log only grows during one).
    pub wal_peak_bytes: u64,
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

/// The writer thread is gone: it could not start, or it panicked outside a request (a bug).
#[derive(Debug, thiserror::Error)]
#[error("the database's writer has stopped")]
struct WriterStopped;

impl Db {
    /// Opens (creating if needed) the database file at `path`, whose parent directory must
    /// exist, and brings its schema up to date. Turns on WAL mode, the busy timeout and foreign
    /// keys, sets `synchronous` from `durability`, and starts the writer thread and the read
    /// connections.
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
        let mut conn = connect(path).map_err(open_error("the file cannot be opened"))?;
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
        migrate(&mut conn).map_err(|e| match e {
            MigrateError::Sql(e) => open_error("migrating the schema failed")(e),
            MigrateError::Newer(e) => PortError::failed("open the database", e),
        })?;
        upkeep::prepare(&conn).map_err(open_error("limiting the write-ahead log failed"))?;
        let readers = (0..READERS)
            .map(|_| {
                let reader = connect(path)?;
                reader.pragma_update(None, "query_only", "ON")?;
                Ok(Mutex::new(reader))
            })
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(open_error("opening a read connection failed"))?;
        let (writer, requests) = mpsc::channel();
        let written = Arc::new(WriteCounts::default());
        let counts = Arc::clone(&written);
        let upkeep = Upkeep::new(path, BUSY_TIMEOUT);
        std::thread::Builder::new()
            .name("ackflow-sqlite-writer".into())
            .spawn(move || write_batches(conn, &requests, &counts, upkeep))
            .map_err(|e| PortError::failed("open the database", e))?;
        Ok(Db {
            inner: Arc::new(Inner {
                writer,
                readers,
                next_reader: AtomicUsize::new(0),
                written,
                path: path.to_owned(),
            }),
        })
    }

    /// The file this database lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// How many batches and write requests the writer has committed (or tried to), and the
    /// write-ahead log's peak size.
    pub fn write_stats(&self) -> WriteStats {
        let written = &self.inner.written;
        WriteStats {
            batches: written.batches.load(Ordering::Relaxed),
            requests: written.requests.load(Ordering::Relaxed),
            wal_peak_bytes: written.wal_peak_bytes.load(Ordering::Relaxed),
        }
    }

    /// How SQLite would answer `sql` (`EXPLAIN QUERY PLAN`, one line per step), its parameters
    /// bound to NULL. The plan does not depend on the values on a file without statistics, as
    /// the tests' fresh files are: `PRAGMA optimize` analyzes only tables that hold rows. For
    /// the tests that hold every hot statement to an index.
    pub fn query_plan(&self, sql: &str) -> Result<String, PortError> {
        let sql = format!("EXPLAIN QUERY PLAN {sql}");
        self.read_blocking("explain a query", move |c| {
            let mut stmt = c.prepare(&sql)?;
            let nulls = std::iter::repeat_n(rusqlite::types::Null, stmt.parameter_count());
            let rows = stmt.query_map(rusqlite::params_from_iter(nulls), |row| {
                row.get::<_, String>(3)
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?.join("\n"))
        })
    }

    /// Runs the write `f` on the writer's connection and returns its result once the batch
    /// holding it has committed. `what` names the call in errors.
    ///
    /// `f` runs inside a transaction, in a savepoint of its own: when it returns an error (or
    /// panics) its changes are rolled back and the other requests of its batch are unaffected.
    /// It may open savepoints of its own ([`write_tx`]) but not a transaction. It should only
    /// touch the database: the writer runs one request at a time.
    ///
    /// Public so that a processor's own data can live in the same file (the `order` example's
    /// stock, whose adapter is in `ackflow-processors`).
    pub async fn call<T, F>(&self, what: &'static str, f: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.submit(what, f, move |answer| {
            let _ = tx.send(answer); // the caller may have gone: nothing to tell
        })?;
        rx.await
            .unwrap_or_else(|_| Err(PortError::failed(what, WriterStopped)))
    }

    /// [`Db::call`], waiting on this thread (startup calls and synchronous callers).
    pub fn call_blocking<T, F>(&self, what: &'static str, f: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(what, f, move |answer| {
            let _ = tx.send(answer);
        })?;
        rx.recv()
            .unwrap_or_else(|_| Err(PortError::failed(what, WriterStopped)))
    }

    fn submit<T, F, A>(&self, what: &'static str, f: F, answer: A) -> Result<(), PortError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
        A: FnOnce(Result<T, PortError>) + Send + 'static,
    {
        let request: Request = Box::new(Pending { what, f, answer });
        self.inner
            .writer
            .send(request)
            .map_err(|_| PortError::failed(what, WriterStopped))
    }

    /// Runs the read `f` on one of the read-only connections, on the blocking pool. `f` sees
    /// the last commit; a write there fails (`PRAGMA query_only`). `what` names the call in
    /// errors.
    pub async fn read<T, F>(&self, what: &'static str, f: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        let db = self.clone();
        match tokio::task::spawn_blocking(move || db.read_blocking(what, f)).await {
            Ok(result) => result,
            // The closure panicked (a bug) or the runtime is shutting down.
            Err(join) => Err(PortError::failed(what, join)),
        }
    }

    /// [`Db::read`] on this thread.
    pub fn read_blocking<T, F>(&self, what: &'static str, f: F) -> Result<T, PortError>
    where
        F: FnOnce(&mut Connection) -> Result<T, DbError>,
    {
        let readers = &self.inner.readers;
        let first = self.inner.next_reader.fetch_add(1, Ordering::Relaxed);
        // A free connection if there is one, else wait for the one the round robin names.
        let mut conn = (0..readers.len())
            .find_map(|i| readers[(first + i) % readers.len()].try_lock().ok())
            .unwrap_or_else(|| {
                // A panic in a read leaves nothing half-done: reads change nothing.
                readers[first % readers.len()]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
            });
        f(&mut conn).map_err(|e| e.into_port(what))
    }
}

/// A write waiting for the writer.
type Request = Box<dyn Write>;

/// A write request, its result type erased.
trait Write: Send {
    /// Runs it on the writer's connection, inside the batch's transaction.
    fn run(self: Box<Self>, conn: &mut Connection) -> Ran;
    /// Answers it with the error that kept its batch from starting.
    fn refuse(self: Box<Self>, error: &BatchError);
}

/// The answer of a request whose changes are in the batch, given with the batch's commit.
type Answer = Box<dyn FnOnce(Result<(), &BatchError>) + Send>;

/// What a request left once it ran.
enum Ran {
    /// Its changes are in the batch; it is answered with the batch's commit.
    Wrote(Answer),
    /// It failed and rolled back to its savepoint; it has been answered.
    Failed,
}

struct Pending<F, A> {
    what: &'static str,
    f: F,
    answer: A,
}

impl<T, F, A> Write for Pending<F, A>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    A: FnOnce(Result<T, PortError>) + Send + 'static,
{
    fn run(self: Box<Self>, conn: &mut Connection) -> Ran {
        let Pending { what, f, answer } = *self;
        match run_in_savepoint(conn, f) {
            Ok(value) => Ran::Wrote(Box::new(move |commit: Result<(), &BatchError>| {
                answer(commit.map(|()| value).map_err(|e| e.to_port(what)));
            })),
            Err(e) => {
                answer(Err(e.into_port(what)));
                Ran::Failed
            }
        }
    }

    fn refuse(self: Box<Self>, error: &BatchError) {
        (self.answer)(Err(error.to_port(self.what)));
    }
}

/// Why the writes of a whole batch did not reach the file.
#[derive(Debug)]
struct BatchError {
    during: &'static str,
    cause: rusqlite::Error,
}

/// The batch's commit (or its start) failed: every write it held is lost, so each of their
/// callers is told so, with the SQLite error that decided it.
#[derive(Debug, thiserror::Error)]
#[error("the write was not committed: {during} failed")]
struct NotCommitted {
    during: &'static str,
    #[source]
    cause: rusqlite::Error,
}

impl BatchError {
    fn to_port(&self, what: &'static str) -> PortError {
        // rusqlite's error is not `Clone`; the code and message are all the callers need.
        let cause = match &self.cause {
            rusqlite::Error::SqliteFailure(code, message) => {
                rusqlite::Error::SqliteFailure(*code, message.clone())
            }
            other => rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
                Some(other.to_string()),
            ),
        };
        classify(
            what,
            NotCommitted {
                during: self.during,
                cause,
            },
        )
    }
}

/// The writer thread: takes the requests that are waiting, runs them in one transaction and
/// answers them after its commit, until every `Db` is dropped. Between batches, and when no
/// request comes for a while, it does the file's housekeeping.
fn write_batches(
    mut conn: Connection,
    requests: &mpsc::Receiver<Request>,
    counts: &WriteCounts,
    mut upkeep: Upkeep,
) {
    while let Some(first) = next_request(&conn, requests, &mut upkeep) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        counts.batches.fetch_add(1, Ordering::Relaxed);
        counts
            .requests
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        write_batch(&mut conn, batch);
        let wal = upkeep.after_batch(&conn);
        counts.wal_peak_bytes.fetch_max(wal, Ordering::Relaxed);
    }
}

/// Waits for the next request, doing the idle housekeeping if none comes for a while; `None`
/// once every `Db` is dropped.
fn next_request(
    conn: &Connection,
    requests: &mpsc::Receiver<Request>,
    upkeep: &mut Upkeep,
) -> Option<Request> {
    loop {
        let Some(idle) = upkeep.idle_after() else {
            return requests.recv().ok();
        };
        match requests.recv_timeout(idle) {
            Ok(request) => return Some(request),
            Err(mpsc::RecvTimeoutError::Timeout) => upkeep.when_idle(conn),
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        }
    }
}

fn write_batch(conn: &mut Connection, batch: Vec<Request>) {
    let mut waiting: Vec<Answer> = Vec::new();
    let mut open = false;
    for request in batch {
        if !open {
            if let Err(cause) = conn.execute_batch("BEGIN IMMEDIATE") {
                // Another process holds the write lock past the busy timeout, or the disk
                // failed: this request fails, and the next one tries again.
                let error = BatchError {
                    during: "starting the transaction",
                    cause,
                };
                request.refuse(&error);
                continue;
            }
            open = true;
        }
        match request.run(conn) {
            Ran::Wrote(answer) => waiting.push(answer),
            Ran::Failed => {}
        }
        if conn.is_autocommit() {
            // An I/O, full-disk or out-of-memory error inside the request made SQLite roll back
            // the whole transaction: the writes before it are lost too.
            let error = BatchError {
                during: "the transaction, rolled back by SQLite after an error,",
                cause: rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                    Some("the transaction was rolled back".into()),
                ),
            };
            for answer in waiting.drain(..) {
                answer(Err(&error));
            }
            open = false;
        }
    }
    if !open {
        return;
    }
    let committed = conn.execute_batch("COMMIT").map_err(|cause| BatchError {
        during: "the commit",
        cause,
    });
    if committed.is_err() && !conn.is_autocommit() {
        // A failed COMMIT may leave the transaction open; end it so the next batch can begin.
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::error!(error = %e, "could not roll back a failed commit");
        }
    }
    for answer in waiting {
        answer(committed.as_ref().map(|_| ()));
    }
}

/// Runs `f` in a savepoint: released when `f` succeeds, rolled back when it fails or panics.
fn run_in_savepoint<T, F>(conn: &mut Connection, f: F) -> Result<T, DbError>
where
    F: FnOnce(&mut Connection) -> Result<T, DbError>,
{
    conn.execute_batch("SAVEPOINT request")?;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn)));
    match outcome {
        Ok(Ok(value)) => {
            conn.execute_batch("RELEASE request")?;
            Ok(value)
        }
        Ok(Err(e)) => {
            roll_back_request(conn);
            Err(e)
        }
        Err(panic) => {
            roll_back_request(conn);
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Err(DbError::Invalid(format!("the write panicked: {why}")))
        }
    }
}

fn roll_back_request(conn: &mut Connection) {
    if conn.is_autocommit() {
        return; // SQLite already rolled the whole transaction back
    }
    if let Err(e) = conn.execute_batch("ROLLBACK TO request; RELEASE request") {
        tracing::error!(error = %e, "could not roll back a failed write");
    }
}

/// A connection to `path` with the busy timeout and foreign keys every connection needs.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// A row count for a `LIMIT`: SQLite takes an `i64`, callers a `usize`.
pub(crate) fn sql_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A savepoint inside a [`Db::call`]: its changes stay together (dropped uncommitted, they roll
/// back) within the writer's transaction, which already holds the write lock.
pub fn write_tx(conn: &mut Connection) -> rusqlite::Result<rusqlite::Savepoint<'_>> {
    conn.savepoint()
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
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
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

    fn scratch() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("a.db"), Durability::Normal).expect("open");
        db.call_blocking("test", |c| {
            c.execute_batch("CREATE TABLE t (x INTEGER NOT NULL)")?;
            Ok(())
        })
        .expect("table");
        (dir, db)
    }

    fn rows(db: &Db) -> Vec<i64> {
        db.read_blocking("test", |c| {
            let mut stmt = c.prepare("SELECT x FROM t ORDER BY x")?;
            let rows = stmt.query_map([], |row| row.get(0))?;
            Ok(rows.collect::<Result<Vec<i64>, _>>()?)
        })
        .expect("rows")
    }

    fn insert(x: i64) -> impl FnOnce(&mut Connection) -> Result<(), DbError> + Send {
        move |c| {
            c.execute("INSERT INTO t (x) VALUES (?1)", [x])?;
            Ok(())
        }
    }

    /// Occupies the writer until the returned sender is dropped or sent to, so that what is
    /// submitted meanwhile waits and forms the next batch. The gate's own write (row 0) is
    /// uncommitted while it holds.
    fn hold_the_writer(db: &Db) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (entered, inside) = std::sync::mpsc::channel::<()>();
        let db = db.clone();
        let gate = tokio::spawn(async move {
            db.call("gate", move |c| {
                c.execute("INSERT INTO t (x) VALUES (0)", [])?;
                entered.send(()).expect("test waits");
                let _ = held.recv();
                Ok(())
            })
            .await
            .expect("gate");
        });
        inside.recv().expect("the writer runs the gate");
        (release, gate)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_writes_commit_as_one_batch_and_a_failed_one_rolls_back_alone() {
        let (_dir, db) = scratch();
        let (release, gate) = hold_the_writer(&db);
        let before = db.write_stats();
        let mut answers = Vec::new();
        for x in 1..=6_i64 {
            let write = insert(x);
            let (tx, rx) = oneshot::channel();
            let f = move |c: &mut Connection| {
                write(c)?;
                match x % 3 {
                    0 => Err(DbError::Invalid(format!("refuses {x}"))),
                    2 => panic!("a bug while writing {x}"),
                    _ => Ok(x),
                }
            };
            db.submit("test write", f, move |answer| {
                let _ = tx.send(answer);
            })
            .expect("submitted");
            answers.push((x, rx));
        }
        for (_, rx) in &mut answers {
            assert!(
                rx.try_recv().is_err(),
                "answered while the gate holds the writer"
            );
        }
        release.send(()).expect("gate waits");
        gate.await.expect("gate");
        let mut answered = Vec::new();
        for (x, rx) in answers {
            answered.push((x, rx.await.expect("answered")));
        }
        for (x, outcome) in &answered {
            match x % 3 {
                1 => assert_eq!(outcome.as_ref().ok(), Some(x)),
                _ => assert!(
                    matches!(outcome, Err(PortError::Failed { .. })),
                    "{x}: {outcome:?}"
                ),
            }
        }
        assert_eq!(
            rows(&db),
            vec![0, 1, 4],
            "the refused and the panicked writes left nothing"
        );
        let after = db.write_stats();
        assert_eq!(
            (
                after.batches - before.batches,
                after.requests - before.requests
            ),
            (1, 6),
            "the six writes that waited behind the gate went in one batch"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_does_not_wait_for_the_writer_and_sees_only_commits() {
        let (_dir, db) = scratch();
        db.call("test write", insert(7)).await.expect("write");
        // Answered, so committed: a read on another connection sees it.
        assert_eq!(rows(&db), vec![7]);
        let (release, gate) = hold_the_writer(&db);
        // The writer is inside a transaction with row 0 written; the read is answered anyway,
        // from the last commit.
        assert_eq!(rows(&db), vec![7]);
        release.send(()).expect("gate waits");
        gate.await.expect("gate");
        assert_eq!(rows(&db), vec![0, 7]);
        let e = db
            .read("test", |c| Ok(c.execute("DELETE FROM t", [])?))
            .await
            .expect_err("read-only");
        assert!(matches!(e, PortError::Failed { .. }), "{e:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_file_fails_the_write_as_unavailable_and_the_writer_carries_on() {
        let (_dir, db) = scratch();
        let pages: i64 = db
            .call("test", |c| {
                Ok(c.query_row("PRAGMA page_count", [], |r| r.get(0))?)
            })
            .await
            .expect("pages");
        db.call("test", move |c| {
            c.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
            Ok(())
        })
        .await
        .expect("cap the file");
        let big = "x".repeat(64 * 1024);
        let e = db
            .call("test write", move |c| {
                c.execute("INSERT INTO t (x) VALUES (length(?1))", [&big])?;
                c.execute("CREATE TABLE filler (b BLOB)", [])?;
                c.execute("INSERT INTO filler VALUES (zeroblob(1000000))", [])?;
                Ok(())
            })
            .await
            .expect_err("the file is full");
        assert!(matches!(e, PortError::Unavailable { .. }), "{e:?}");
        assert!(rows(&db).is_empty(), "nothing of the failed write is kept");
        db.call("test", |c| {
            c.query_row("PRAGMA max_page_count = 1073741823", [], |_| Ok(()))?;
            Ok(())
        })
        .await
        .expect("room again");
        db.call("test write", insert(3))
            .await
            .expect("writes again");
        assert_eq!(rows(&db), vec![3]);
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
