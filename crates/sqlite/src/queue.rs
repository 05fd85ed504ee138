//! [`Queue`] on SQLite with SQS semantics: at-least-once delivery, a visibility timeout per
//! receive, a receipt per delivery, a receive count, and a dead-letter table.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ackflow_core::{
    async_trait, Clock, DeadLetter, Delivery, OutgoingMessage, PortError, Queue, QueueDepth,
    QueueStep, Receipt, Timestamp,
};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::db::{sql_limit, write_tx, Db, DbError};

/// The most messages one receive hands out (SQS: 10), so that one call never holds the write
/// lock for long.
const MAX_RECEIVE: usize = 1000;

/// A named queue in the database.
///
/// Messages live in SQLite (WAL), so a sent message survives the process being killed at any
/// point after `send` returned.
///
/// # Receipts
///
/// Every receive gives the message a fresh random receipt; only the latest one acts on it.
/// A stale receipt (the visibility timeout ran out and another receive took the message) is
/// ignored, without an error, by [`Queue::delete`], [`Queue::change_visibility`] and
/// [`Queue::dead_letter`]: the newer delivery owns the message, and the late holder can do
/// nothing useful with an error. (SQS ignores a stale delete the same way.)
#[derive(Debug)]
pub struct SqliteQueue {
    db: Db,
    name: Arc<str>,
    max_receive_count: u32,
    clock: Arc<dyn Clock>,
    /// Wakes [`SqliteQueue::wait_for_work`] when this object makes a message visible.
    work: Notify,
}

/// A queue that cannot be created as asked.
#[derive(Debug, thiserror::Error)]
#[error("invalid queue: {0}")]
struct InvalidQueue(&'static str);

pub(crate) const SEND: &str = "INSERT INTO queue_messages \
    (queue, id, body, attributes, sent_at, visible_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
/// Visible messages after a position in (visible_at, seq) order.
pub(crate) const CANDIDATES: &str = "SELECT seq, id, body, attributes, receive_count, visible_at \
    FROM queue_messages WHERE queue = ?1 AND visible_at <= ?2 AND (visible_at, seq) > (?3, ?4) \
    ORDER BY visible_at, seq LIMIT ?5";
pub(crate) const DELIVER: &str = "UPDATE queue_messages \
    SET receive_count = receive_count + 1, visible_at = ?2, receipt = ?3 WHERE seq = ?1";
pub(crate) const MOVE_TO_DLQ: &str = "INSERT INTO dead_letters \
    (queue, id, body, attributes, sent_at, receive_count, dead_lettered_at) \
    SELECT queue, id, body, attributes, sent_at, receive_count, ?2 FROM queue_messages WHERE seq = ?1";
pub(crate) const DELETE_SEQ: &str = "DELETE FROM queue_messages WHERE seq = ?1";
pub(crate) const DELETE: &str = "DELETE FROM queue_messages WHERE queue = ?1 AND receipt = ?2";
pub(crate) const CHANGE_VISIBILITY: &str =
    "UPDATE queue_messages SET visible_at = ?3 WHERE queue = ?1 AND receipt = ?2";
pub(crate) const SEQ_OF_RECEIPT: &str =
    "SELECT seq FROM queue_messages WHERE queue = ?1 AND receipt = ?2";
pub(crate) const DEAD_LETTERS: &str =
    "SELECT id, body, attributes, receive_count, dead_lettered_at \
    FROM dead_letters WHERE queue = ?1 ORDER BY seq LIMIT ?2";
/// Visible dead letters, oldest first, for the redrive.
pub(crate) const DEAD_CANDIDATES: &str =
    "SELECT seq, id, body, attributes, receive_count, dead_lettered_at \
    FROM dead_letters WHERE queue = ?1 AND visible_at <= ?2 ORDER BY seq LIMIT ?3";
pub(crate) const HOLD_DEAD: &str =
    "UPDATE dead_letters SET visible_at = ?2, receipt = ?3 WHERE seq = ?1";
pub(crate) const DELETE_DEAD: &str = "DELETE FROM dead_letters WHERE queue = ?1 AND receipt = ?2";
pub(crate) const COUNT_ALL: &str = "SELECT count(*) FROM queue_messages WHERE queue = ?1";
pub(crate) const COUNT_IN_FLIGHT: &str = "SELECT count(*) FROM queue_messages \
    WHERE queue = ?1 AND visible_at > ?2 AND receive_count > 0";
pub(crate) const COUNT_DEAD: &str = "SELECT count(*) FROM dead_letters WHERE queue = ?1";
pub(crate) const NEXT_VISIBLE: &str = "SELECT min(visible_at) FROM queue_messages WHERE queue = ?1";
pub(crate) const RELEASE: &str = "UPDATE queue_messages SET visible_at = ?2 \
    WHERE queue = ?1 AND visible_at > ?2 AND receive_count > 0";

impl SqliteQueue {
    /// The queue `name` in `db`. A message received `max_receive_count` times is moved to the
    /// dead-letter table by the next receive (like SQS's redrive policy); `clock` decides
    /// visibility, so tests can move time.
    pub fn new(
        db: Db,
        name: &str,
        max_receive_count: u32,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, PortError> {
        if name.is_empty() || name.len() > 80 || name.chars().any(char::is_control) {
            return Err(PortError::failed(
                "create the queue",
                InvalidQueue("a queue name is 1 to 80 characters without control characters"),
            ));
        }
        if max_receive_count == 0 {
            return Err(PortError::failed(
                "create the queue",
                InvalidQueue("max_receive_count must be at least 1"),
            ));
        }
        Ok(Self {
            db,
            name: name.into(),
            max_receive_count,
            clock,
            work: Notify::new(),
        })
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns when a message may be receivable: right after a send / visibility change on this
    /// queue object, or when the earliest invisible message becomes visible, or after `max_wait`
    /// — whichever is first. Returns at once when a message is visible now.
    ///
    /// Sends by other processes (or other `SqliteQueue` objects) on the same file are only seen
    /// when `max_wait` runs out, so keep it short (a second or so).
    pub async fn wait_for_work(&self, max_wait: Duration) {
        // Register for a wake-up *before* looking at the table, so that a send between the look
        // and the wait is not missed.
        let notified = self.work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let queue = Arc::clone(&self.name);
        let next = self
            .db
            .read("look for the next visible message", move |c| {
                Ok(c.prepare_cached(NEXT_VISIBLE)?
                    .query_row(params![&*queue], |row| row.get::<_, Option<i64>>(0))?)
            })
            .await;
        let now = self.clock.now();
        let wait = match next {
            Ok(Some(at)) => Timestamp::from_millis(at).since(now).min(max_wait),
            Ok(None) => max_wait,
            Err(e) => {
                tracing::debug!(error = %e, "could not look for the next message; waiting");
                max_wait
            }
        };
        if wait.is_zero() {
            return;
        }
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep(wait) => {}
        }
    }

    /// Makes every received-but-undeleted message visible now and returns how many. Only correct
    /// when this process is the only consumer: `ackflow serve` calls it at startup, because
    /// whatever was in flight belonged to a process that is gone. Receive counts are kept, so a
    /// message that crashes the process on every delivery still ends in the dead-letter table.
    pub fn release_in_flight(&self) -> Result<u64, PortError> {
        let now = self.clock.now().as_millis();
        let queue = Arc::clone(&self.name);
        let released = self
            .db
            .call_blocking("release in-flight messages", move |c| {
                Ok(c.prepare_cached(RELEASE)?.execute(params![&*queue, now])?)
            })?;
        if released > 0 {
            self.work.notify_waiters();
        }
        Ok(u64::try_from(released).unwrap_or(u64::MAX))
    }

    /// Wakes [`SqliteQueue::wait_for_work`]: call it once a message written elsewhere (by the
    /// outbox) has committed.
    pub(crate) fn wake(&self) {
        self.work.notify_waiters();
    }

    /// The row [`Queue::send`] writes for `message`, for a transaction that writes more.
    pub(crate) fn row_of(&self, message: &OutgoingMessage) -> Result<MessageRow, DbError> {
        let now = self.clock.now();
        let attributes: BTreeMap<&str, &str> = message
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Ok(MessageRow {
            queue: Arc::clone(&self.name),
            id: Uuid::new_v4().to_string(),
            body: message.body.clone(),
            attributes: serde_json::to_string(&attributes)?,
            sent_at: now.as_millis(),
            visible_at: now.plus(message.delay).as_millis(),
        })
    }
}

impl SqliteQueue {
    /// What [`Queue::delete`] or [`Queue::change_visibility`] writes for `step`, for a
    /// transaction that writes more.
    pub(crate) fn step_of(&self, receipt: &Receipt, step: QueueStep) -> StepRow {
        let visible_at = match step {
            QueueStep::Delete => None,
            QueueStep::ComeBackAfter(delay) => {
                Some(self.clock.now().as_millis().saturating_add(millis(delay)))
            }
        };
        StepRow {
            queue: Arc::clone(&self.name),
            receipt: receipt.0.clone(),
            visible_at,
        }
    }
}

impl SqliteQueue {
    /// What [`Queue::receive`] writes, for a transaction that writes more.
    pub(crate) fn receive_of(&self, max: usize, visibility: Duration) -> ReceiveStep {
        ReceiveStep {
            queue: Arc::clone(&self.name),
            max: max.min(MAX_RECEIVE),
            visibility,
            max_receive_count: self.max_receive_count,
            now: self.clock.now(),
        }
    }
}

/// A receive of up to `max` visible messages, as of `now`.
#[derive(Debug)]
pub(crate) struct ReceiveStep {
    queue: Arc<str>,
    max: usize,
    visibility: Duration,
    max_receive_count: u32,
    now: Timestamp,
}

impl ReceiveStep {
    pub(crate) fn run(&self, conn: &mut Connection) -> Result<Vec<Delivery>, DbError> {
        receive(
            conn,
            &self.queue,
            self.max,
            self.visibility,
            self.max_receive_count,
            self.now,
        )
    }
}

/// A received message's delete, or its new visibility: a statement on `queue_messages` by
/// receipt. A receipt that names no message any more changes nothing.
#[derive(Debug)]
pub(crate) struct StepRow {
    queue: Arc<str>,
    receipt: String,
    /// `None` deletes the message.
    visible_at: Option<i64>,
}

impl StepRow {
    pub(crate) fn apply(&self, conn: &Connection) -> Result<(), DbError> {
        match self.visible_at {
            None => conn
                .prepare_cached(DELETE)?
                .execute(params![&*self.queue, self.receipt])?,
            Some(at) => conn.prepare_cached(CHANGE_VISIBILITY)?.execute(params![
                &*self.queue,
                self.receipt,
                at
            ])?,
        };
        Ok(())
    }

    /// Whether the step makes the message visible again (and a waiting worker should look).
    pub(crate) fn makes_visible(&self) -> bool {
        self.visible_at.is_some()
    }
}

/// A message about to be sent: one row of `queue_messages`.
#[derive(Debug)]
pub(crate) struct MessageRow {
    queue: Arc<str>,
    id: String,
    body: String,
    attributes: String,
    sent_at: i64,
    visible_at: i64,
}

impl MessageRow {
    pub(crate) fn insert(&self, conn: &Connection) -> Result<(), DbError> {
        conn.prepare_cached(SEND)?.execute(params![
            &*self.queue,
            self.id,
            self.body,
            self.attributes,
            self.sent_at,
            self.visible_at,
        ])?;
        Ok(())
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn attributes_of(text: &str) -> Result<BTreeMap<String, String>, DbError> {
    Ok(serde_json::from_str(text)?)
}

struct Candidate {
    seq: i64,
    id: String,
    body: String,
    attributes: String,
    receive_count: u32,
    visible_at: i64,
}

fn receive(
    conn: &mut Connection,
    queue: &str,
    max: usize,
    visibility: Duration,
    max_receive_count: u32,
    now: Timestamp,
) -> Result<Vec<Delivery>, DbError> {
    let tx = write_tx(conn)?;
    let now_ms = now.as_millis();
    let visible_until = now.plus(visibility).as_millis();
    let mut deliveries = Vec::new();
    // Walk the visible messages in order; those already received too often go to the
    // dead-letter table instead, and the walk continues until `max` are delivered. With a zero
    // visibility a delivered message stays visible and may come up again: `seen` skips it.
    let mut seen = HashSet::new();
    let mut position = (i64::MIN, i64::MIN);
    while deliveries.len() < max {
        let want = max - deliveries.len();
        let candidates: Vec<Candidate> = {
            let mut stmt = tx.prepare_cached(CANDIDATES)?;
            let rows = stmt.query_map(
                params![queue, now_ms, position.0, position.1, sql_limit(want)],
                |row| {
                    Ok(Candidate {
                        seq: row.get(0)?,
                        id: row.get(1)?,
                        body: row.get(2)?,
                        attributes: row.get(3)?,
                        receive_count: row.get(4)?,
                        visible_at: row.get(5)?,
                    })
                },
            )?;
            rows.collect::<Result<_, _>>()?
        };
        let exhausted = candidates.len() < want;
        for c in candidates {
            position = (c.visible_at, c.seq);
            if !seen.insert(c.seq) {
                continue;
            }
            if c.receive_count >= max_receive_count {
                tx.prepare_cached(MOVE_TO_DLQ)?
                    .execute(params![c.seq, now_ms])?;
                tx.prepare_cached(DELETE_SEQ)?.execute(params![c.seq])?;
                tracing::warn!(queue, message_id = %c.id, receive_count = c.receive_count, "message received too often; moved to the dead-letter queue");
                continue;
            }
            let receipt = Uuid::new_v4().simple().to_string();
            tx.prepare_cached(DELIVER)?
                .execute(params![c.seq, visible_until, receipt])?;
            deliveries.push(Delivery {
                message_id: c.id,
                receipt: Receipt(receipt),
                body: c.body,
                attributes: attributes_of(&c.attributes)?,
                receive_count: c.receive_count + 1,
            });
        }
        if exhausted {
            break;
        }
    }
    tx.commit()?;
    Ok(deliveries)
}

fn dead_letter(
    conn: &mut Connection,
    queue: &str,
    receipt: &str,
    now: Timestamp,
) -> Result<(), DbError> {
    let tx = write_tx(conn)?;
    let seq: Option<i64> = tx
        .prepare_cached(SEQ_OF_RECEIPT)?
        .query_row(params![queue, receipt], |row| row.get(0))
        .optional()?;
    if let Some(seq) = seq {
        tx.prepare_cached(MOVE_TO_DLQ)?
            .execute(params![seq, now.as_millis()])?;
        tx.prepare_cached(DELETE_SEQ)?.execute(params![seq])?;
    }
    tx.commit()?;
    Ok(())
}

fn dead_letters(conn: &Connection, queue: &str, max: usize) -> Result<Vec<DeadLetter>, DbError> {
    let mut stmt = conn.prepare_cached(DEAD_LETTERS)?;
    let rows = stmt.query_map(params![queue, sql_limit(max)], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, u32>(3)?,
            row.get::<_, i64>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, body, attributes, receive_count, at) = row?;
        out.push(DeadLetter {
            delivery: Delivery {
                message_id: id,
                // A dead letter is not a delivery of this queue: nothing can delete or delay
                // it through the main queue, so it carries no receipt.
                receipt: Receipt(String::new()),
                body,
                attributes: attributes_of(&attributes)?,
                receive_count,
            },
            dead_lettered_at: Some(Timestamp::from_millis(at)),
        });
    }
    Ok(out)
}

fn receive_dead_letters(
    conn: &mut Connection,
    queue: &str,
    max: usize,
    visibility: Duration,
    now: Timestamp,
) -> Result<Vec<DeadLetter>, DbError> {
    let tx = write_tx(conn)?;
    let visible_until = now.plus(visibility).as_millis();
    let rows: Vec<(i64, String, String, String, u32, i64)> = {
        let mut stmt = tx.prepare_cached(DEAD_CANDIDATES)?;
        let rows = stmt.query_map(params![queue, now.as_millis(), sql_limit(max)], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
            ))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let mut out = Vec::with_capacity(rows.len());
    for (seq, id, body, attributes, receive_count, at) in rows {
        let receipt = Uuid::new_v4().simple().to_string();
        tx.prepare_cached(HOLD_DEAD)?
            .execute(params![seq, visible_until, receipt])?;
        out.push(DeadLetter {
            delivery: Delivery {
                message_id: id,
                receipt: Receipt(receipt),
                body,
                attributes: attributes_of(&attributes)?,
                // The count of the main queue, which is what dead-lettered it; receives from the
                // dead-letter queue are not counted.
                receive_count,
            },
            dead_lettered_at: Some(Timestamp::from_millis(at)),
        });
    }
    tx.commit()?;
    Ok(out)
}

fn depth(conn: &mut Connection, queue: &str, now: Timestamp) -> Result<QueueDepth, DbError> {
    let tx = conn.transaction()?;
    let count = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<u64, DbError> {
        Ok(tx.prepare_cached(sql)?.query_row(p, |row| row.get(0))?)
    };
    let all = count(COUNT_ALL, &[&queue])?;
    let in_flight = count(COUNT_IN_FLIGHT, &[&queue, &now.as_millis()])?;
    let dead = count(COUNT_DEAD, &[&queue])?;
    Ok(QueueDepth {
        waiting: all.saturating_sub(in_flight),
        in_flight,
        dead,
    })
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn send(&self, message: OutgoingMessage) -> Result<(), PortError> {
        let row = self
            .row_of(&message)
            .map_err(|e| PortError::failed("send a message", e))?;
        self.db
            .call("send a message", move |c| row.insert(c))
            .await?;
        self.wake();
        Ok(())
    }

    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, PortError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let step = self.receive_of(max, visibility);
        self.db.call("receive messages", move |c| step.run(c)).await
    }

    async fn delete(&self, receipt: &Receipt) -> Result<(), PortError> {
        let step = self.step_of(receipt, QueueStep::Delete);
        self.db
            .call("delete a message", move |c| step.apply(c))
            .await
    }

    async fn change_visibility(
        &self,
        receipt: &Receipt,
        timeout: Duration,
    ) -> Result<(), PortError> {
        let step = self.step_of(receipt, QueueStep::ComeBackAfter(timeout));
        self.db
            .call("change a message's visibility", move |c| step.apply(c))
            .await?;
        self.wake();
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery) -> Result<(), PortError> {
        let queue = Arc::clone(&self.name);
        let receipt = delivery.receipt.0.clone();
        let now = self.clock.now();
        self.db
            .call("dead-letter a message", move |c| {
                dead_letter(c, &queue, &receipt, now)
            })
            .await
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, PortError> {
        let queue = Arc::clone(&self.name);
        self.db
            .read("list dead letters", move |c| dead_letters(c, &queue, max))
            .await
    }

    async fn receive_dead_letters(
        &self,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<DeadLetter>, PortError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let max = max.min(MAX_RECEIVE);
        let queue = Arc::clone(&self.name);
        let now = self.clock.now();
        self.db
            .call("receive dead letters", move |c| {
                receive_dead_letters(c, &queue, max, visibility, now)
            })
            .await
    }

    async fn delete_dead_letter(&self, receipt: &Receipt) -> Result<(), PortError> {
        let queue = Arc::clone(&self.name);
        let receipt = receipt.0.clone();
        self.db
            .call("delete a dead letter", move |c| {
                c.prepare_cached(DELETE_DEAD)?
                    .execute(params![&*queue, receipt])?;
                Ok(())
            })
            .await
    }

    async fn depth(&self) -> Result<QueueDepth, PortError> {
        let queue = Arc::clone(&self.name);
        let now = self.clock.now();
        self.db
            .read("count messages", move |c| depth(c, &queue, now))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::MIGRATIONS;
    use ackflow_core::ManualClock;

    /// A file written by the first release (schema 1, before dead letters had receipts) keeps
    /// its dead letters, and the redrive can receive and delete them after the upgrade.
    #[tokio::test]
    async fn dead_letters_of_a_schema_1_file_can_be_received_after_the_upgrade() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.db");
        {
            let c = Connection::open(&path).expect("open");
            c.execute_batch(MIGRATIONS[0]).expect("schema 1");
            c.pragma_update(None, "user_version", 1).expect("version");
            c.execute(
                "INSERT INTO dead_letters (queue, id, body, attributes, sent_at, receive_count, \
                 dead_lettered_at) VALUES ('jobs', 'm-1', 'old', '{}', 1, 8, 2)",
                [],
            )
            .expect("an old dead letter");
        }
        let db = Db::open(&path, crate::Durability::Normal).expect("open and migrate");
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_000)));
        let queue = SqliteQueue::new(db, "jobs", 3, clock).expect("queue");

        let got = queue
            .receive_dead_letters(10, Duration::from_secs(30))
            .await
            .expect("receive dead letters");
        assert_eq!(got.len(), 1, "{got:#?}");
        assert_eq!(got[0].delivery.body, "old");
        assert_eq!(got[0].delivery.receive_count, 8);
        assert_eq!(got[0].dead_lettered_at, Some(Timestamp::from_millis(2)));
        queue
            .delete_dead_letter(&got[0].delivery.receipt)
            .await
            .expect("delete");
        assert_eq!(queue.depth().await.expect("depth").dead, 0);
    }
}
