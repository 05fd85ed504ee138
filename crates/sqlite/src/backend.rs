//! The one way to open ackflow on a SQLite file: the store and the queue over one [`Db`], with
//! the queue's name and receive limit decided here, so that `ackflow serve`, `ackflow dlq` and
//! the tests can never open the same file with two different queues.

use std::path::Path;
use std::sync::Arc;

use ackflow_core::{Ackflow, Clock, PortError, Registry, Settings};

use crate::{Db, Durability, SqliteOutbox, SqliteQueue, SqliteStore};

/// The name of the job queue in the file.
pub const QUEUE_NAME: &str = "jobs";

/// ackflow's ports on one SQLite file. Cheap to clone: every part shares the one [`Db`].
#[derive(Debug, Clone)]
pub struct SqliteBackend {
    /// The file.
    pub db: Db,
    /// The job store.
    pub store: Arc<SqliteStore>,
    /// The job queue, dead-lettering a message by itself after
    /// [`Settings::max_receive_count`] receives.
    pub queue: Arc<SqliteQueue>,
}

impl SqliteBackend {
    /// Opens (creating if needed, migrating if older) the database file at `path`, whose
    /// directory must exist, with the store and the job queue.
    ///
    /// Blocks the calling thread (it is meant for startup).
    pub fn open(
        path: &Path,
        durability: Durability,
        settings: &Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, PortError> {
        Self::on(Db::open(path, durability)?, settings, clock)
    }

    /// The store and the job queue over an open `db`. The store keeps the counters of
    /// `settings`' report window, so [`SqliteBackend::ackflow`] is to be given the same settings.
    pub fn on(db: Db, settings: &Settings, clock: Arc<dyn Clock>) -> Result<Self, PortError> {
        let queue = SqliteQueue::new(db.clone(), QUEUE_NAME, settings.max_receive_count(), clock)?;
        let store = SqliteStore::new(db.clone()).with_report_window(settings.report_window);
        Ok(Self {
            store: Arc::new(store),
            queue: Arc::new(queue),
            db,
        })
    }

    /// The use cases over this file's store and queue, accepting through their outbox.
    pub fn ackflow(
        &self,
        registry: Registry,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> Ackflow {
        Ackflow::new(
            self.store.clone(),
            self.queue.clone(),
            registry,
            clock,
            settings,
        )
        .with_outbox(Arc::new(SqliteOutbox::new(
            self.db.clone(),
            self.queue.clone(),
        )))
    }
}
