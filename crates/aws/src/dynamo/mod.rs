//! The DynamoDB adapter [`DynamoJobStore`], and the item helpers that other data in its table
//! is written with (the `order` example's `DynamoOrderBook`, in `ackflow-processors`).
//!
//! # Table layout (single-table design)
//!
//! One table: key [`PK`] (S, partition) + [`SK`] (S, sort), on-demand billing, TTL on [`TTL`]
//! (epoch seconds). `template.yaml` and [`crate::schema::create_table`] declare exactly this.
//! In keys, a timestamp `T` is 16 lowercase hex digits of its milliseconds with the sign bit
//! flipped, so that string order is time order.
//!
//! | item | `PK` | `SK` | attributes | in indexes / TTL |
//! |---|---|---|---|---|
//! | job header | `JOB#{id}` | `JOB` | every field of [`ackflow_core::Job`] (serde_dynamo; its timestamps as RFC 3339 text), among them `owner` and `revision` (N, the fence of every write); `result_json` (S), a result of at most 1 KiB as JSON text | `ListByOwner` always; `DueForSweep` and `OpenByOwner` while not terminal; `ttl` once terminal |
//! | job input | `JOB#{id}` | `INPUT` | `owner`, `json` (S: the input as JSON text) | `ttl` from its write: a day past the latest the job can expire (deadline + retention), moved by a reopen |
//! | job result (over 1 KiB) | `JOB#{id}` | `RESULT` | `owner`, `json` (S) | `ttl` (written when the job succeeds) |
//! | Idempotency-Key | `OWNER#{owner}` | `KEY#{key}` | `job_id`, `body_hash` | `ttl` as the input's; taken only while its job exists and has not expired |
//! | gauges (a shard) | `OWNER#{owner}` | `GAUGES#{s}` | `queued`, `running` (N, changed with ADD by [`ReportFold`]) | — |
//! | counters of an hour (a shard) | `OWNER#{owner}` | `HOUR#{T}#{s}` | `hour` (N, ms); one N per counter, named `c:{counter}` (`c:accepted`, `c:state:failed`, `c:latency:7`, `c:failure:{type}`), changed with ADD by [`ReportFold`] | `ttl` = the hour + 35 days |
//! | fold marker | `FOLD#{event id}` | `FOLD` | `last` (S: the sequence number of the last stream record its fold applied) | `ttl` = its write + 48 h |
//! | stock (the `order` example's, as all three below) | `STOCK#{sku}` | `STOCK` | `sku`, `available` (N) | — |
//! | reservation | `ORDER#{id}` | `RESERVATION` | `lines` (S, JSON) | — |
//! | confirmed order | `ORDER#{id}` | `ORDER` | every field of the `order` example's `ConfirmedOrder` (serde_dynamo) | — |
//!
//! Global secondary indexes, all with projection `ALL` (only job headers carry their keys, so
//! only headers are in them, and a listing returns whole headers — input and result are items
//! of their own and never in an index):
//!
//! | index | partition key | sort key | holds | read by |
//! |---|---|---|---|---|
//! | [`LIST_INDEX`] `ListByOwner` | `ListPK` (S) = `OWNER#{owner}` | `ListSK` (S) = `{T of submitted_at}#{id}` | every job | `list`: newest first, `state`/`kind` as filters |
//! | [`SWEEP_INDEX`] `DueForSweep` | `SweepPK` (S) = `SWEEP#{n}`, n in 0..[`SWEEP_SHARDS`] | `SweepSK` (N) = `sweep_at`, ms | non-terminal jobs only (sparse) | `due_for_sweep` |
//! | [`OPEN_INDEX`] `OpenByOwner` | `OpenPK` (S) = `OWNER#{owner}` | `OpenSK` (S) = as `ListSK` | non-terminal jobs only (sparse) | `figures`: the oldest open job |
//!
//! Why so:
//! - Everything of one job shares its partition, and a job is read by id with a consistent
//!   `GetItem`; the owner is checked on the item (another owner's job reads as absent). The
//!   sort keys order `INPUT` < `JOB` < `RESULT`, so the header with its input (what an attempt
//!   needs) or with its result (what a status shows) is one consistent `Query` of a key range.
//! - Keys, gauges and counters are scoped by owner in the partition key, so owners never share
//!   an Idempotency-Key or a counter, whatever characters their names hold.
//! - The report's gauges and hour counters are not written with the jobs: the table's stream
//!   (new and old images) carries every header write to [`ReportFold`], which adds what it
//!   changes to them, exactly once, a batch of changes at a time (the `sweeper` function, on
//!   the stream's event source mapping). A job's writes then change its header and its input or
//!   result alone: one `PutItem` when only the header changes (a start, a failure, progress,
//!   a success whose result is small enough to sit in the header).
//!   The report lags the jobs by the stream's delay and the mapping's batching window (5 s).
//! - Gauges and hour counters are spread over [`AGGREGATE_SHARDS`] items per owner (`{s}`, from
//!   the fold's first record): folds of different stream shards run at once, and DynamoDB
//!   refuses a transaction on an item another one is writing (`TransactionConflict`, retried).
//!   `figures` sums the shards.
//! - The sweep index is sharded by job id over [`SWEEP_SHARDS`] partitions: every transition of
//!   every owner writes it, and one partition of an index takes about 1000 writes a second.
//!   `due_for_sweep` queries every shard and merges. (The shard count may only grow with a
//!   rewrite of the open jobs; it is a constant, not a knob.)
//! - A job leaving the sparse indexes is a header written without their attributes: every
//!   write puts the whole header (it is small: the history is capped, input and result live
//!   apart), so "REMOVE" is simply their absence.
//! - Index reads are eventually consistent (DynamoDB offers nothing else on a GSI): a listing
//!   or the sweeper may see a header a moment old. The sweeper's writes are fenced on the
//!   revision, so a stale one is refused and looked at again next sweep.
//! - Items are at most 400 KB: the core caps results (`Settings::result_limit`) and request
//!   bodies (`Settings::body_limit`) well below; a body limit raised above ~350 KiB would make
//!   large inputs fail to store.
//! - Terminal jobs expire through DynamoDB's TTL (within days after `ttl`, not on the second),
//!   so [`ackflow_core::JobStore::purge_expired`] deletes nothing. The input and key items get
//!   their `ttl` when written, from the job's deadline, so the write that ends a job changes
//!   its header alone (and its result); they may outlive the header by up to a day past its
//!   deadline, unreachable. An Idempotency-Key whose job is gone or has expired (or whose own
//!   `ttl` has passed) counts as free even before DynamoDB deletes anything.

use std::collections::HashMap;
use std::time::Duration;

use ackflow_core::{JobId, Owner, PortError, Timestamp};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason, TransactWriteItem};
use aws_sdk_dynamodb::Client;

use crate::error::{classify, unexpected};

mod report_fold;
mod store;

pub use report_fold::{ChangeBatch, ChangeImages, FoldFailure, Folded, ReportFold, TableChange};
pub use store::DynamoJobStore;

/// Partition key of the table.
pub const PK: &str = "PK";
/// Sort key of the table.
pub const SK: &str = "SK";
/// Sort key of a job header.
pub const HEADER: &str = "JOB";
/// The TTL attribute (epoch seconds).
pub const TTL: &str = "ttl";
/// Index of an owner's jobs, newest first.
pub const LIST_INDEX: &str = "ListByOwner";
/// Partition key of [`LIST_INDEX`].
pub const LIST_PK: &str = "ListPK";
/// Sort key of [`LIST_INDEX`].
pub const LIST_SK: &str = "ListSK";
/// Sparse index of non-terminal jobs by `sweep_at`.
pub const SWEEP_INDEX: &str = "DueForSweep";
/// Partition key of [`SWEEP_INDEX`].
pub const SWEEP_PK: &str = "SweepPK";
/// Sort key of [`SWEEP_INDEX`] (a number).
pub const SWEEP_SK: &str = "SweepSK";
/// Sparse index of an owner's non-terminal jobs, oldest first.
pub const OPEN_INDEX: &str = "OpenByOwner";
/// Partition key of [`OPEN_INDEX`].
pub const OPEN_PK: &str = "OpenPK";
/// Sort key of [`OPEN_INDEX`].
pub const OPEN_SK: &str = "OpenSK";
/// How many partitions [`SWEEP_INDEX`] spreads its jobs over.
pub const SWEEP_SHARDS: u8 = 4;
/// How many items an owner's gauges, and each hour's counters, are spread over.
pub const AGGREGATE_SHARDS: u8 = 4;

/// An item as the SDK hands it over.
pub type Item = HashMap<String, AttributeValue>;

/// A string attribute.
pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// A number attribute.
pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The primary key of an item: `pk` and `sk`.
pub fn key(pk: String, sk: &str) -> Item {
    HashMap::from([(PK.to_owned(), s(pk)), (SK.to_owned(), s(sk))])
}

pub(crate) fn job_pk(id: JobId) -> String {
    format!("JOB#{id}")
}

pub(crate) fn owner_pk(owner: &Owner) -> String {
    format!("OWNER#{owner}")
}

const SIGN: u64 = 1 << 63;

/// A timestamp as 16 hex digits whose string order is time order (negative times included).
pub(crate) fn time_key(t: Timestamp) -> String {
    format!("{:016x}", (t.as_millis() as u64) ^ SIGN)
}

fn time_of_key(text: &str) -> Option<Timestamp> {
    if text.len() != 16 {
        return None;
    }
    let raw = u64::from_str_radix(text, 16).ok()? ^ SIGN;
    Some(Timestamp::from_millis(raw as i64))
}

/// The position of a job in submission order: `{T}#{id}`. Ids are hyphenated lowercase UUIDs
/// of fixed length, so string order is (submitted_at, id) order, as the core's cursors want.
pub(crate) fn order_key(submitted_at: Timestamp, id: JobId) -> String {
    format!("{}#{id}", time_key(submitted_at))
}

/// Reads an [`order_key`].
pub(crate) fn parse_order_key(text: &str) -> Option<(Timestamp, JobId)> {
    let (time, id) = text.split_once('#')?;
    Some((time_of_key(time)?, id.parse().ok()?))
}

pub(crate) fn string_attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v),
        _ => None,
    }
}

/// The number attribute `name` of `item`, if it has one that fits an `i64`.
pub fn number_attr(item: &Item, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().ok(),
        _ => None,
    }
}

/// `Some(map)` unless empty: DynamoDB refuses empty expression-attribute maps.
pub(crate) fn non_empty<K, V>(map: HashMap<K, V>) -> Option<HashMap<K, V>> {
    (!map.is_empty()).then_some(map)
}

/// Why a transaction did not happen.
#[derive(Debug)]
pub enum TxError {
    /// A condition failed: the reasons, one per item in order (`code` is
    /// `ConditionalCheckFailed` for the failed ones, `None` for the others).
    Cancelled(Vec<CancellationReason>),
    /// The call failed.
    Port(PortError),
}

/// The cancellation code of an item whose condition failed.
pub const CONDITION_FAILED: &str = "ConditionalCheckFailed";

/// How often a transaction that lost a race (`TransactionConflict`: another transaction held
/// one of its items) or was throttled is tried. Conflicts are routine here: concurrent folds add
/// to the same aggregate items, and racing reservations take from the same stock item; SQLite
/// would have made them wait, DynamoDB refuses them at once.
const TX_TRIES: u32 = 8;

/// Whether the condition of the transaction's item `index` is what cancelled it.
pub fn failed_at(reasons: &[CancellationReason], index: usize) -> bool {
    reasons
        .get(index)
        .is_some_and(|r| r.code() == Some(CONDITION_FAILED))
}

/// Runs one `TransactWriteItems`, retrying conflicts and throttles with jittered backoff.
/// The SDK gives every call a `ClientRequestToken`, so its own retries of one call (after a
/// timeout, say) cannot apply it twice.
pub async fn transact(
    client: &Client,
    what: &'static str,
    items: Vec<TransactWriteItem>,
) -> Result<(), TxError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let outcome = client
            .transact_write_items()
            .set_transact_items(Some(items.clone()))
            .send()
            .await;
        let error = match outcome {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let reasons = match error.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
                c.cancellation_reasons().to_vec()
            }
            _ => return Err(TxError::Port(classify(what, error))),
        };
        if reasons.iter().any(|r| r.code() == Some(CONDITION_FAILED)) {
            return Err(TxError::Cancelled(reasons));
        }
        let transient = reasons.iter().any(|r| {
            matches!(
                r.code(),
                Some(
                    "TransactionConflict"
                        | "ThrottlingError"
                        | "ProvisionedThroughputExceeded"
                        | "RequestLimitExceeded"
                )
            )
        });
        if transient && attempt < TX_TRIES {
            tokio::time::sleep(backoff(attempt)).await;
            continue;
        }
        return Err(TxError::Port(if transient {
            PortError::unavailable(what, error)
        } else {
            PortError::failed(what, error)
        }));
    }
}

/// 10 ms doubling per attempt, up to 640 ms, with full jitter so racers spread out.
fn backoff(attempt: u32) -> Duration {
    let cap = 10u64 << attempt.min(6);
    Duration::from_millis(fastrand::u64(cap / 2..=cap))
}

/// A consistent `GetItem`.
pub async fn get_item(
    client: &Client,
    table: &str,
    what: &'static str,
    key: Item,
) -> Result<Option<Item>, PortError> {
    let out = client
        .get_item()
        .table_name(table)
        .set_key(Some(key))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| classify(what, e))?;
    Ok(out.item)
}

/// JSON text of an item's `json` attribute, parsed.
pub(crate) fn json_of(item: &Item, what: &'static str) -> Result<serde_json::Value, PortError> {
    let text = string_attr(item, "json").ok_or_else(|| unexpected(what, "an item without json"))?;
    serde_json::from_str(text).map_err(|e| PortError::failed(what, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_keys_sort_like_times_and_round_trip() {
        let times = [
            i64::MIN,
            -86_400_000,
            -1,
            0,
            1,
            999,
            1_772_323_200_000,
            i64::MAX,
        ]
        .map(Timestamp::from_millis);
        for pair in times.windows(2) {
            assert!(time_key(pair[0]) < time_key(pair[1]), "{pair:?}");
        }
        for t in times {
            assert_eq!(time_of_key(&time_key(t)), Some(t));
        }
    }

    #[test]
    fn order_keys_sort_by_time_then_id_and_round_trip() {
        let t = Timestamp::from_millis(1_772_323_200_000);
        let (a, b) = {
            let (x, y) = (JobId::random(), JobId::random());
            if x < y {
                (x, y)
            } else {
                (y, x)
            }
        };
        assert!(order_key(t, a) < order_key(t, b), "ties are ordered by id");
        assert!(order_key(t, b) < order_key(t.plus(Duration::from_millis(1)), a));
        assert_eq!(parse_order_key(&order_key(t, a)), Some((t, a)));
        assert_eq!(parse_order_key("nonsense"), None);
        assert_eq!(parse_order_key("0123#not-an-id"), None);
    }
}
