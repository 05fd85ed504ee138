//! # ackflow-sqlite
//!
//! ackflow's adapters for the single machine: one SQLite file holds the jobs and the queue (and
//! the `order` example's stock, whose adapter lives beside its processor), so that a 202 means the job is on disk and a `kill -9` loses nothing
//! that was acknowledged (see [`Durability`] for exactly what a commit survives).
//!
//! # Layout
//!
//! - [`SqliteBackend`]: the one way to open ackflow on a file — the store and the job queue over
//!   one [`Db`], and the [`ackflow_core::Ackflow`] use cases over them.
//! - [`Db`]: the file — WAL mode, pragmas, schema migrations (`PRAGMA user_version`), the one
//!   writer that commits the waiting writes together (group commit) and between batches keeps
//!   the write-ahead log bounded and the planner's statistics fresh, and the read-only
//!   connections reads run on.
//! - [`SqliteStore`]: the [`ackflow_core::JobStore`] — job header, input, result,
//!   Idempotency-Keys and the report's aggregates, each change atomic (its own savepoint in the
//!   writer's batch).
//! - [`SqliteOutbox`]: the [`ackflow_core::Outbox`] — a new job and its message in one
//!   transaction, so an accepted job is never left open without its message.
//! - [`SqliteQueue`]: the [`ackflow_core::Queue`] with SQS semantics (visibility timeouts,
//!   receipts, receive counts, a dead-letter table), plus [`SqliteQueue::wait_for_work`] so a
//!   worker loop sleeps instead of polling.
//! - [`Db::call`], [`write_tx`] and [`DbError`]: the connection, for data of a processor kept in
//!   the same file (the `order` example's `SqliteOrderBook` in `ackflow-processors`), with
//!   [`rusqlite`] re-exported so that such an adapter builds against the same SQLite.
//!
//! Errors: busy, locked, I/O and full-disk errors become [`ackflow_core::PortError::Unavailable`]
//! (the use cases answer 503 or retry); everything else [`ackflow_core::PortError::Failed`]. The
//! SQLite error is kept as the source.
//!
//! Every adapter passes the behaviour suites of `ackflow-testkit` (`tests/contract.rs`).

mod backend;
mod db;
mod outbox;
mod queue;
mod schema;
mod store;
mod upkeep;

#[cfg(test)]
mod plans;

pub use backend::{SqliteBackend, QUEUE_NAME};
pub use db::{write_tx, Db, DbError, Durability, UnknownDurability, WriteStats};
pub use outbox::SqliteOutbox;
pub use queue::SqliteQueue;
pub use rusqlite;
pub use store::SqliteStore;
