//! [`JobStore`] on SQLite: the job header in `jobs`, input, result and Idempotency-Key apart,
//! and the report's gauges and counters updated in the same transaction as the job.
//!
//! The purge keeps the file from growing with time: it deletes the terminal jobs past their
//! expiry and, in the same write, the hourly counters the report's window no longer reaches.

use std::time::Duration;

use ackflow_core::report::Deltas;
use ackflow_core::{
    async_trait, Created, Cursor, Figures, IdempotencyRecord, Job, JobId, JobPart, JobState,
    JobStore, ListQuery, Owner, Page, PortError, Settings, Timestamp, WriteError,
};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use crate::db::{sql_limit, write_tx, Db, DbError};

/// The largest page a listing returns, whatever it is asked (the use case asks for at most 100).
const MAX_PAGE: usize = 1000;

/// The job store of the single machine.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    db: Db,
    /// The report's window ([`Settings::report_window`]): the purge deletes the counters of the
    /// hours before it.
    report_window: Duration,
}

impl SqliteStore {
    /// The store in `db`, for a report over the default [`Settings::report_window`].
    pub fn new(db: Db) -> Self {
        Self {
            db,
            report_window: Settings::default().report_window,
        }
    }

    /// The same store for a report over `window` (the use cases' [`Settings::report_window`]):
    /// the purge keeps every counter such a report sums.
    #[must_use]
    pub fn with_report_window(self, window: Duration) -> Self {
        Self {
            report_window: window,
            ..self
        }
    }
}

pub(crate) const INSERT_JOB: &str = "INSERT INTO jobs \
    (id, owner, kind, state, revision, submitted_at, updated_at, sweep_at, expires_at, idempotency_key, header) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
pub(crate) const SELECT_KEY: &str =
    "SELECT job_id, body_hash FROM idempotency_keys WHERE owner = ?1 AND key = ?2";
pub(crate) const SELECT_JOB: &str = "SELECT header FROM jobs WHERE id = ?1 AND owner = ?2";
pub(crate) const SELECT_INPUT: &str = "SELECT i.input FROM job_inputs i \
    JOIN jobs j ON j.id = i.job_id WHERE j.id = ?1 AND j.owner = ?2";
pub(crate) const SELECT_RESULT: &str = "SELECT r.result FROM job_results r \
    JOIN jobs j ON j.id = r.job_id WHERE j.id = ?1 AND j.owner = ?2";
pub(crate) const UPDATE_JOB: &str = "UPDATE jobs SET \
    state = ?4, revision = ?5, updated_at = ?6, sweep_at = ?7, expires_at = ?8, header = ?9 \
    WHERE id = ?1 AND owner = ?2 AND revision = ?3";
pub(crate) const SELECT_GAUGES: &str = "SELECT state, n FROM gauges WHERE owner = ?1 AND n > 0";
pub(crate) const SUM_COUNTERS: &str =
    "SELECT name, SUM(n) FROM counters WHERE owner = ?1 AND hour >= ?2 GROUP BY name";
/// Run once per non-terminal state; each is a few steps down `jobs_by_owner_state` (the first
/// readable row is the oldest: an unreadable one is passed over).
pub(crate) const OLDEST_IN_STATE: &str = "SELECT header, id FROM jobs \
    WHERE owner = ?1 AND state = ?2 ORDER BY submitted_at, id LIMIT 8";
pub(crate) const DUE_FOR_SWEEP: &str = "SELECT header, id FROM jobs \
    WHERE sweep_at IS NOT NULL AND sweep_at <= ?1 ORDER BY sweep_at LIMIT ?2";
/// The input, result and Idempotency-Key rows go with their job: `ON DELETE CASCADE`, and
/// foreign keys are on for every connection [`Db::open`] makes.
pub(crate) const PURGE_EXPIRED: &str = "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs \
    WHERE expires_at IS NOT NULL AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2)";
/// The counters of every owner's hours before `?1`, oldest first, at most `?2` rows.
pub(crate) const PRUNE_COUNTERS: &str = "DELETE FROM counters WHERE (owner, hour, name) IN \
    (SELECT owner, hour, name FROM counters WHERE hour < ?1 ORDER BY hour LIMIT ?2)";

/// The listing query for a combination of filters: `?1` owner, `?2` state, `?3` kind,
/// `?4`/`?5` the cursor's time and id, `?6` the row limit.
pub(crate) fn list_sql(state: bool, kind: bool, after: bool) -> String {
    let mut sql = String::from("SELECT header, id FROM jobs WHERE owner = ?1");
    if state {
        sql.push_str(" AND state = ?2");
    }
    if kind {
        sql.push_str(" AND kind = ?3");
    }
    if after {
        sql.push_str(" AND (submitted_at, id) < (?4, ?5)");
    }
    sql.push_str(" ORDER BY submitted_at DESC, id DESC LIMIT ?6");
    sql
}

/// The derived columns of a job. The store, not the caller, decides that only open jobs are
/// in the sweep index and only terminal ones expire, so a wrong header cannot hide a job from
/// the sweeper or delete an open one.
struct Columns {
    sweep_at: Option<i64>,
    expires_at: Option<i64>,
    header: String,
}

fn columns(job: &Job) -> Result<Columns, DbError> {
    let terminal = job.state.is_terminal();
    Ok(Columns {
        sweep_at: job.sweep_at.filter(|_| !terminal).map(Timestamp::as_millis),
        expires_at: job
            .expires_at
            .filter(|_| terminal)
            .map(Timestamp::as_millis),
        header: serde_json::to_string(job)?,
    })
}

fn read_job(header: &str) -> Result<Job, DbError> {
    Ok(serde_json::from_str(header)?)
}

/// A job read for a listing, a report or a sweep, which must not fail for every job because one
/// row cannot be read (damaged, or written by a version with other rules): that row is left out
/// and logged with its id; a request for that job alone still fails.
fn readable_job(id: &str, header: &str, what: &'static str) -> Option<Job> {
    match read_job(header) {
        Ok(job) => Some(job),
        Err(e) => {
            tracing::error!(job_id = id, error = %e, "a stored job cannot be read; it is left out of {what}");
            None
        }
    }
}

fn apply_deltas(tx: &Connection, owner: &Owner, deltas: &Deltas) -> Result<(), DbError> {
    let mut gauge = tx.prepare_cached(
        "INSERT INTO gauges (owner, state, n) VALUES (?1, ?2, ?3) \
         ON CONFLICT (owner, state) DO UPDATE SET n = n + excluded.n",
    )?;
    for (state, n) in &deltas.gauges {
        gauge.execute(params![owner.as_str(), state.as_str(), n])?;
    }
    let mut counter = tx.prepare_cached(
        "INSERT INTO counters (owner, hour, name, n) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (owner, hour, name) DO UPDATE SET n = n + excluded.n",
    )?;
    for (name, n) in &deltas.counters {
        counter.execute(params![owner.as_str(), deltas.hour.as_millis(), name, n])?;
    }
    Ok(())
}

pub(crate) fn select_job(conn: &Connection, owner: &str, id: &str) -> Result<Option<Job>, DbError> {
    conn.prepare_cached(SELECT_JOB)?
        .query_row(params![id, owner], |row| row.get::<_, String>(0))
        .optional()?
        .map(|h| read_job(&h))
        .transpose()
}

fn select_json(
    conn: &Connection,
    sql: &str,
    owner: &str,
    id: &str,
) -> Result<Option<Value>, DbError> {
    conn.prepare_cached(sql)?
        .query_row(params![id, owner], |row| row.get::<_, String>(0))
        .optional()?
        .map(|text| serde_json::from_str(&text).map_err(DbError::from))
        .transpose()
}

pub(crate) fn create(
    conn: &mut Connection,
    job: &Job,
    input: &Value,
    key: Option<&IdempotencyRecord>,
) -> Result<Created, DbError> {
    let tx = write_tx(conn)?;
    let owner = job.owner.as_str();
    if let Some(key) = key {
        let existing = tx
            .prepare_cached(SELECT_KEY)?
            .query_row(params![owner, key.key.as_str()], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .optional()?;
        if let Some((job_id, body_hash)) = existing {
            let Some(existing) = select_job(&tx, owner, &job_id)? else {
                return Err(DbError::Corrupt(format!(
                    "idempotency key of {owner} names the missing job {job_id}"
                )));
            };
            return Ok(Created::Existing {
                job: Box::new(existing),
                same_body: body_hash == key.body_hash,
            });
        }
    }
    let id = job.id.to_string();
    let cols = columns(job)?;
    tx.prepare_cached(INSERT_JOB)?.execute(params![
        id,
        owner,
        job.kind.as_str(),
        job.state.as_str(),
        job.revision,
        job.submitted_at.as_millis(),
        job.updated_at.as_millis(),
        cols.sweep_at,
        cols.expires_at,
        job.idempotency_key.as_ref().map(|k| k.as_str()),
        cols.header,
    ])?;
    tx.prepare_cached("INSERT INTO job_inputs (job_id, input) VALUES (?1, ?2)")?
        .execute(params![id, serde_json::to_string(input)?])?;
    if let Some(key) = key {
        tx.prepare_cached(
            "INSERT INTO idempotency_keys (owner, key, job_id, body_hash) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![owner, key.key.as_str(), id, key.body_hash])?;
    }
    apply_deltas(&tx, &job.owner, &Deltas::created(job))?;
    tx.commit()?;
    Ok(Created::New)
}

/// `Ok(false)`: the stored job is not at `before.revision` (or does not exist).
/// [`JobStore::update`]'s arguments, owned, for a write request that runs on the writer's thread.
#[derive(Debug)]
pub(crate) struct JobUpdate {
    before: Job,
    after: Job,
    result: Option<Value>,
    deltas: Deltas,
}

impl JobUpdate {
    pub(crate) fn of(before: &Job, after: &Job, result: Option<&Value>, deltas: &Deltas) -> Self {
        Self {
            before: before.clone(),
            after: after.clone(),
            result: result.cloned(),
            deltas: deltas.clone(),
        }
    }

    /// Whether the job was written: `false` when its stored revision is not `before`'s.
    pub(crate) fn write(&self, conn: &mut Connection) -> Result<bool, DbError> {
        update(
            conn,
            &self.before,
            &self.after,
            self.result.as_ref(),
            &self.deltas,
        )
    }
}

pub(crate) fn update(
    conn: &mut Connection,
    before: &Job,
    after: &Job,
    result: Option<&Value>,
    deltas: &Deltas,
) -> Result<bool, DbError> {
    if before.id != after.id || before.owner != after.owner || before.kind != after.kind {
        return Err(DbError::Invalid(format!(
            "an update cannot change a job's id, owner or kind (job {})",
            before.id
        )));
    }
    let tx = write_tx(conn)?;
    let id = before.id.to_string();
    let cols = columns(after)?;
    let changed = tx.prepare_cached(UPDATE_JOB)?.execute(params![
        id,
        before.owner.as_str(),
        before.revision,
        after.state.as_str(),
        after.revision,
        after.updated_at.as_millis(),
        cols.sweep_at,
        cols.expires_at,
        cols.header,
    ])?;
    if changed == 0 {
        return Ok(false); // dropping `tx` rolls back (nothing was written anyway)
    }
    if let Some(result) = result {
        // Fencing on the revision means only the one write that made the job succeed gets here.
        tx.prepare_cached(
            "INSERT INTO job_results (job_id, result) VALUES (?1, ?2) \
             ON CONFLICT (job_id) DO UPDATE SET result = excluded.result",
        )?
        .execute(params![id, serde_json::to_string(result)?])?;
    }
    apply_deltas(&tx, &before.owner, deltas)?;
    tx.commit()?;
    Ok(true)
}

fn list(conn: &Connection, owner: &Owner, query: &ListQuery) -> Result<Page, DbError> {
    // A page of zero would have no last job to continue from.
    let limit = query.limit.clamp(1, MAX_PAGE);
    let sql = list_sql(
        query.state.is_some(),
        query.kind.is_some(),
        query.after.is_some(),
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![
            owner.as_str(),
            query.state.map(JobState::as_str),
            query.kind.as_ref().map(|k| k.as_str()),
            query.after.as_ref().map(|c| c.submitted_at.as_millis()),
            query.after.as_ref().map(|c| c.id.to_string()),
            sql_limit(limit + 1),
        ],
        |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
    )?;
    let mut jobs = Vec::with_capacity(limit + 1);
    for row in rows {
        let (header, id) = row?;
        jobs.extend(readable_job(&id, &header, "a listing"));
    }
    let next = if jobs.len() > limit {
        jobs.truncate(limit);
        jobs.last().map(Cursor::of)
    } else {
        None
    };
    Ok(Page { jobs, next })
}

fn figures(conn: &mut Connection, owner: &Owner, since: Timestamp) -> Result<Figures, DbError> {
    // A read transaction: gauges, counters and the oldest job come from one snapshot.
    let tx = conn.transaction()?;
    let mut figures = Figures::default();
    {
        let mut stmt = tx.prepare_cached(SELECT_GAUGES)?;
        let rows = stmt.query_map(params![owner.as_str()], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?))
        })?;
        for row in rows {
            let (state, n) = row?;
            let state = state
                .parse::<JobState>()
                .map_err(|_| DbError::Corrupt(format!("gauge of unknown state {state:?}")))?;
            figures.gauges.insert(state, n);
        }
        let mut stmt = tx.prepare_cached(SUM_COUNTERS)?;
        let rows = stmt.query_map(
            params![owner.as_str(), Deltas::hour_of(since).as_millis()],
            |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)),
        )?;
        for row in rows {
            let (name, n) = row?;
            figures.counters.insert(name, u64::try_from(n).unwrap_or(0));
        }
        let mut oldest: Option<Job> = None;
        let mut stmt = tx.prepare_cached(OLDEST_IN_STATE)?;
        for state in JobState::ALL.into_iter().filter(|s| !s.is_terminal()) {
            let mut rows = stmt.query_map(params![owner.as_str(), state.as_str()], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?;
            let mut job = None;
            for row in rows.by_ref() {
                let (header, id) = row?;
                job = readable_job(&id, &header, "the report");
                if job.is_some() {
                    break;
                }
            }
            if let Some(job) = job {
                if oldest
                    .as_ref()
                    .is_none_or(|o| (job.submitted_at, job.id) < (o.submitted_at, o.id))
                {
                    oldest = Some(job);
                }
            }
        }
        figures.oldest_open = oldest;
    }
    tx.commit()?;
    Ok(figures)
}

fn due_for_sweep(conn: &Connection, now: Timestamp, limit: usize) -> Result<Vec<Job>, DbError> {
    let mut stmt = conn.prepare_cached(DUE_FOR_SWEEP)?;
    let rows = stmt.query_map(params![now.as_millis(), sql_limit(limit)], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })?;
    let mut due = Vec::new();
    for row in rows {
        let (header, id) = row?;
        due.extend(readable_job(&id, &header, "the sweep"));
    }
    Ok(due)
}

/// The first hour whose counters the purge at `now` keeps, for a report over `window`.
///
/// The report sums the hours from the one holding `now - window` on; the hour before it is kept
/// as well, so that a report whose `now` is a little behind the purge's (it started just before
/// the sweep, or its clock is behind) still finds every hour it sums.
fn oldest_counted_hour(now: Timestamp, window: Duration) -> Timestamp {
    let first_read = Deltas::hour_of(now.minus(window));
    Deltas::hour_of(first_read.minus(Duration::from_millis(1)))
}

/// Deletes at most `limit` expired jobs and at most `limit` counter rows older than
/// [`oldest_counted_hour`], in one savepoint; returns the number of jobs.
fn purge_expired(
    conn: &mut Connection,
    now: Timestamp,
    report_window: Duration,
    limit: usize,
) -> Result<u64, DbError> {
    let tx = write_tx(conn)?;
    let purged = tx
        .prepare_cached(PURGE_EXPIRED)?
        .execute(params![now.as_millis(), sql_limit(limit)])?;
    let pruned = tx.prepare_cached(PRUNE_COUNTERS)?.execute(params![
        oldest_counted_hour(now, report_window).as_millis(),
        sql_limit(limit)
    ])?;
    tx.commit()?;
    if pruned > 0 {
        tracing::debug!(
            counters = pruned,
            "purged counters older than the report's window"
        );
    }
    Ok(u64::try_from(purged).unwrap_or(u64::MAX))
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn create(
        &self,
        job: &Job,
        input: &Value,
        key: Option<&IdempotencyRecord>,
    ) -> Result<Created, PortError> {
        let (job, input, key) = (job.clone(), input.clone(), key.cloned());
        self.db
            .call("create a job", move |c| {
                create(c, &job, &input, key.as_ref())
            })
            .await
    }

    async fn get(&self, owner: &Owner, id: JobId) -> Result<Option<Job>, PortError> {
        let owner = owner.clone();
        self.db
            .read("read a job", move |c| {
                select_job(c, owner.as_str(), &id.to_string())
            })
            .await
    }

    async fn input(&self, owner: &Owner, id: JobId) -> Result<Option<Value>, PortError> {
        let owner = owner.clone();
        self.db
            .read("read a job's input", move |c| {
                select_json(c, SELECT_INPUT, owner.as_str(), &id.to_string())
            })
            .await
    }

    async fn result(&self, owner: &Owner, id: JobId) -> Result<Option<Value>, PortError> {
        let owner = owner.clone();
        self.db
            .read("read a job's result", move |c| {
                select_json(c, SELECT_RESULT, owner.as_str(), &id.to_string())
            })
            .await
    }

    /// Both from one read connection in one go: one snapshot, one trip to the pool.
    async fn get_with(
        &self,
        owner: &Owner,
        id: JobId,
        part: JobPart,
    ) -> Result<Option<(Job, Option<Value>)>, PortError> {
        let owner = owner.clone();
        self.db
            .read("read a job", move |c| {
                let tx = c.transaction()?;
                let id = id.to_string();
                let Some(job) = select_job(&tx, owner.as_str(), &id)? else {
                    return Ok(None);
                };
                let value = match part {
                    JobPart::Input => select_json(&tx, SELECT_INPUT, owner.as_str(), &id)?,
                    JobPart::Result if job.has_result => {
                        select_json(&tx, SELECT_RESULT, owner.as_str(), &id)?
                    }
                    JobPart::Result => None,
                };
                Ok(Some((job, value)))
            })
            .await
    }

    async fn update(
        &self,
        before: &Job,
        after: &Job,
        result: Option<&Value>,
        deltas: &Deltas,
    ) -> Result<(), WriteError> {
        let update = JobUpdate::of(before, after, result, deltas);
        let written = self
            .db
            .call("update a job", move |c| update.write(c))
            .await?;
        if written {
            Ok(())
        } else {
            Err(WriteError::Conflict)
        }
    }

    async fn list(&self, owner: &Owner, query: &ListQuery) -> Result<Page, PortError> {
        let (owner, query) = (owner.clone(), query.clone());
        self.db
            .read("list jobs", move |c| list(c, &owner, &query))
            .await
    }

    async fn figures(&self, owner: &Owner, since: Timestamp) -> Result<Figures, PortError> {
        let owner = owner.clone();
        self.db
            .read("read the report's figures", move |c| {
                figures(c, &owner, since)
            })
            .await
    }

    async fn due_for_sweep(&self, now: Timestamp, limit: usize) -> Result<Vec<Job>, PortError> {
        self.db
            .read("find jobs due for a sweep", move |c| {
                due_for_sweep(c, now, limit)
            })
            .await
    }

    async fn purge_expired(&self, now: Timestamp, limit: usize) -> Result<u64, PortError> {
        let window = self.report_window;
        self.db
            .call("purge expired jobs", move |c| {
                purge_expired(c, now, window, limit)
            })
            .await
    }
}
