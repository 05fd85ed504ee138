//! The schema, as an append-only list of migrations: `PRAGMA user_version` says how many of them
//! a file has seen. Never edit a released step; add a new one.

/// Step `i` takes a file from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[V1, V2, V3];

const V1: &str = r#"
-- ---- Job store ------------------------------------------------------------------------------
-- The header: one row per job, rewritten by every transition. The columns are the fields that
-- are indexed or written conditionally; `header` holds the whole job as JSON.
CREATE TABLE jobs (
    id              TEXT    NOT NULL PRIMARY KEY,   -- hyphenated UUID
    owner           TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    revision        INTEGER NOT NULL,
    submitted_at    INTEGER NOT NULL,               -- ms since the epoch
    updated_at      INTEGER NOT NULL,
    sweep_at        INTEGER,                        -- only while not terminal
    expires_at      INTEGER,                        -- only when terminal
    idempotency_key TEXT,
    header          TEXT    NOT NULL
) STRICT;

-- Listing: newest first, optionally by state or kind; also the oldest open job per state.
CREATE INDEX jobs_by_owner       ON jobs (owner, submitted_at, id);
CREATE INDEX jobs_by_owner_state ON jobs (owner, state, submitted_at, id);
CREATE INDEX jobs_by_owner_kind  ON jobs (owner, kind, submitted_at, id);
-- The sweeper's index of open jobs: terminal jobs are not in it at all.
CREATE INDEX jobs_to_sweep ON jobs (sweep_at) WHERE sweep_at IS NOT NULL;
-- Retention: only terminal jobs have an expiry.
CREATE INDEX jobs_to_expire ON jobs (expires_at) WHERE expires_at IS NOT NULL;

-- Input and result apart from the header, so that transitions never rewrite them.
CREATE TABLE job_inputs (
    job_id TEXT NOT NULL PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    input  TEXT NOT NULL
) STRICT;

CREATE TABLE job_results (
    job_id TEXT NOT NULL PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    result TEXT NOT NULL
) STRICT;

CREATE TABLE idempotency_keys (
    owner     TEXT NOT NULL,
    key       TEXT NOT NULL,
    job_id    TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    body_hash TEXT NOT NULL,
    PRIMARY KEY (owner, key)
) STRICT, WITHOUT ROWID;
-- Deleting a job checks this foreign key: without the index that check would scan the table.
CREATE INDEX idempotency_keys_by_job ON idempotency_keys (job_id);

-- The report's aggregates, changed in the same transaction as the jobs they count.
CREATE TABLE gauges (
    owner TEXT    NOT NULL,
    state TEXT    NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (owner, state)
) STRICT, WITHOUT ROWID;

CREATE TABLE counters (
    owner TEXT    NOT NULL,
    hour  INTEGER NOT NULL,                         -- start of the hour, ms since the epoch
    name  TEXT    NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (owner, hour, name)
) STRICT, WITHOUT ROWID;

-- ---- Queues ---------------------------------------------------------------------------------
-- `seq` orders messages sent at the same moment; `receipt` is the current delivery's handle.
CREATE TABLE queue_messages (
    seq           INTEGER PRIMARY KEY,
    queue         TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    attributes    TEXT    NOT NULL,                 -- JSON object
    sent_at       INTEGER NOT NULL,
    visible_at    INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT
) STRICT;
CREATE INDEX queue_messages_by_visibility ON queue_messages (queue, visible_at);
CREATE UNIQUE INDEX queue_messages_by_receipt ON queue_messages (receipt) WHERE receipt IS NOT NULL;

CREATE TABLE dead_letters (
    seq              INTEGER PRIMARY KEY,
    queue            TEXT    NOT NULL,
    id               TEXT    NOT NULL,
    body             TEXT    NOT NULL,
    attributes       TEXT    NOT NULL,
    sent_at          INTEGER NOT NULL,
    receive_count    INTEGER NOT NULL,
    dead_lettered_at INTEGER NOT NULL
) STRICT;
CREATE INDEX dead_letters_by_queue ON dead_letters (queue);

-- ---- Order book (the `order` processor's data) ----------------------------------------------
-- Read and written by `SqliteOrderBook` in ackflow-processors, not by this crate. The tables stay
-- in this released step: every file opened since holds them, and a step is never edited.
CREATE TABLE stock (
    sku       TEXT    NOT NULL PRIMARY KEY,
    available INTEGER NOT NULL CHECK (available >= 0)
) STRICT, WITHOUT ROWID;

CREATE TABLE reservations (
    order_id TEXT    NOT NULL,
    sku      TEXT    NOT NULL REFERENCES stock (sku),
    quantity INTEGER NOT NULL,
    PRIMARY KEY (order_id, sku)
) STRICT, WITHOUT ROWID;

CREATE TABLE orders (
    order_id TEXT NOT NULL PRIMARY KEY,
    body     TEXT NOT NULL
) STRICT, WITHOUT ROWID;
"#;

/// The redrive (`ackflow dlq redrive`) receives dead letters like messages: a visibility and a
/// receipt per receive, so that two operators (or a crash mid-way) never handle one twice at once.
const V2: &str = r#"
ALTER TABLE dead_letters ADD COLUMN visible_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dead_letters ADD COLUMN receipt TEXT;
CREATE UNIQUE INDEX dead_letters_by_receipt ON dead_letters (receipt) WHERE receipt IS NOT NULL;
"#;

/// The purge deletes the hourly counters the report's window has left behind, oldest first, for
/// every owner at once: the primary key starts with the owner, so without this index each purge
/// would scan the whole table. Adding to a counter changes only `n`, which the index does not
/// hold, so only an hour's first increment of a counter writes it.
const V3: &str = r#"
CREATE INDEX counters_by_hour ON counters (hour);
"#;
