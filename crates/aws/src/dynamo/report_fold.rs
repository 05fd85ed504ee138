//! The report's aggregates, folded from the table's change stream.
//!
//! A job's writes change its header alone (with its input or result): the gauges and hour
//! counters the report reads are not in their transactions. Each header write appears in the
//! table's DynamoDB stream with its old and new image, and [`ReportFold`] turns a batch of
//! those records into the same [`Deltas`] the core computes for the write
//! ([`Deltas::created`] for a new header, [`Deltas::between`] the images for a changed one),
//! sums them per owner and hour, and adds them in one transaction per chunk of the batch.
//!
//! # Exactly once
//!
//! The stream delivers a record at least once, in order per item, and Lambda hands a batch
//! again (whole, or from the record a failure names) until it is folded. Each chunk's
//! transaction therefore also puts a marker item named by the chunk's first record
//! (`FOLD#{event id}`), recording the chunk's last sequence number, on the condition that no
//! such marker exists:
//! - a chunk applied before is refused whole, and the marker it ran into says up to which
//!   record it was applied; folding goes on after that record, as a new chunk;
//! - a chunk is cut the same way whatever follows it in the batch (its end depends only on
//!   the records from its start), so every chunk a retry folds starts where a chunk of an
//!   earlier attempt started, or after everything an earlier attempt applied.
//!
//! This holds as long as a retry starts at the start of a batch or at the record a failure
//! named, never in the middle of a chunk: the event source mapping must not bisect batches
//! (`BisectBatchOnFunctionError: false`), and retries until the record is folded
//! (`MaximumRetryAttempts: -1`); `template.yaml` says both.
//!
//! Markers expire after [`MARKER_RETENTION`], longer than the stream keeps a record (24 h).

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use ackflow_core::report::Deltas;
use ackflow_core::{Clock, Job, Owner, PortError, SystemClock, Timestamp};
use aws_sdk_dynamodb::types::{
    Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use serde::Deserialize;

use super::{
    failed_at, key, n, non_empty, owner_pk, s, string_attr, time_key, transact, TxError,
    AGGREGATE_SHARDS, HEADER, PK, SK, TTL,
};
use crate::error::build_failed;

/// Sort key prefix of an owner's gauges (`GAUGES#{shard}`).
pub(super) const GAUGES: &str = "GAUGES";
/// Counter attributes are prefixed, so no counter name can collide with `PK`, `hour` or `ttl`.
pub(super) const COUNTER_PREFIX: &str = "c:";
/// Hour items of the counters expire this long after their hour: far longer than any report
/// window (a day by default), and the table does not grow without end.
const COUNTER_RETENTION: Duration = Duration::from_secs(35 * 24 * 3600);
/// How long a chunk's marker is kept: twice as long as the stream keeps the records it names.
pub const MARKER_RETENTION: Duration = Duration::from_secs(48 * 3600);
/// DynamoDB's limit of items in one transaction; a chunk's marker is one of them.
const MAX_TRANSACTION_ITEMS: usize = 100;

/// One record of the table's stream, as Lambda hands it over (and as the Streams API's
/// `GetRecords` returns it).
#[derive(Debug, Clone, Deserialize)]
pub struct TableChange {
    /// Unique per record.
    #[serde(rename = "eventID")]
    pub event_id: String,
    /// What the stream says about the item.
    pub dynamodb: ChangeImages,
}

/// The part of a stream record that says what changed.
#[derive(Debug, Clone, Deserialize)]
pub struct ChangeImages {
    /// The record's position in its shard: a decimal number, up to 40 digits.
    #[serde(rename = "SequenceNumber")]
    pub sequence_number: String,
    /// The item before the write (absent for a new item).
    #[serde(rename = "OldImage", default)]
    pub old_image: Option<serde_dynamo::Item>,
    /// The item after the write (absent when it was deleted).
    #[serde(rename = "NewImage", default)]
    pub new_image: Option<serde_dynamo::Item>,
}

/// A batch of stream records, as Lambda invokes a function with it.
#[derive(Debug, Clone, Deserialize)]
pub struct ChangeBatch {
    /// The records, in stream order.
    #[serde(rename = "Records")]
    pub records: Vec<TableChange>,
}

/// What one [`ReportFold::fold`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Folded {
    /// Transactions written.
    pub transactions: usize,
    /// Records found already folded (a retried batch).
    pub already_folded: usize,
    /// Job headers that could not be read: their change is left out of the report (logged).
    pub unreadable: usize,
}

/// A fold stopped at a record: everything before it is folded, nothing from it on.
#[derive(Debug, thiserror::Error)]
#[error("could not fold the table's changes from record {sequence_number}")]
pub struct FoldFailure {
    /// The sequence number of the first record not folded: Lambda's retry starts there.
    pub sequence_number: String,
    /// Why.
    #[source]
    pub error: PortError,
}

/// Folds the table's change stream into the report's aggregates (see the module).
#[derive(Debug, Clone)]
pub struct ReportFold {
    client: Client,
    table: String,
}

impl ReportFold {
    /// The fold for `table`.
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }

    /// Folds `records` (one batch, in stream order): returns once every record is folded, or
    /// fails naming the first one that is not.
    pub async fn fold(&self, records: &[TableChange]) -> Result<Folded, FoldFailure> {
        const WHAT: &str = "fold the table's changes into the report";
        let mut folded = Folded::default();
        let changes: Vec<(&TableChange, Option<(Owner, Deltas)>)> = records
            .iter()
            .map(|record| {
                let deltas = deltas_of(record);
                if deltas.is_err() {
                    folded.unreadable += 1;
                }
                (record, deltas.unwrap_or(None))
            })
            .collect();
        let mut start = 0;
        while start < changes.len() {
            let chunk = Chunk::cut(&changes[start..]);
            let first = changes[start].0;
            let last = changes[start + chunk.records - 1].0;
            if chunk.sums.is_empty() {
                start += chunk.records;
                continue;
            }
            let fail = |error| FoldFailure {
                sequence_number: first.dynamodb.sequence_number.clone(),
                error,
            };
            let items = self
                .chunk_writes(WHAT, first, last, &chunk.sums)
                .map_err(fail)?;
            match transact(&self.client, WHAT, items).await {
                Ok(()) => {
                    folded.transactions += 1;
                    start += chunk.records;
                }
                Err(TxError::Cancelled(reasons)) if failed_at(&reasons, 0) => {
                    // Applied before, up to the record its marker names: go on after it.
                    let applied_to = reasons
                        .first()
                        .and_then(|r| r.item())
                        .and_then(|marker| string_attr(marker, "last"))
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            fail(crate::unexpected(
                                WHAT,
                                "a fold marker without its last record",
                            ))
                        })?;
                    let skipped = changes[start..]
                        .iter()
                        .take_while(|(record, _)| {
                            !sequence_after(&record.dynamodb.sequence_number, &applied_to)
                        })
                        .count();
                    folded.already_folded += skipped;
                    start += skipped.max(1);
                }
                Err(TxError::Cancelled(_)) => {
                    return Err(fail(crate::unexpected(
                        WHAT,
                        "a fold was refused without its marker's condition failing",
                    )))
                }
                Err(TxError::Port(e)) => return Err(fail(e)),
            }
        }
        Ok(folded)
    }

    /// The marker of a chunk from `first` to `last`, and the writes that add `sums`.
    fn chunk_writes(
        &self,
        what: &'static str,
        first: &TableChange,
        last: &TableChange,
        sums: &BTreeMap<Aggregate, Sums>,
    ) -> Result<Vec<TransactWriteItem>, PortError> {
        let mut marker = key(marker_pk(&first.event_id), MARKER_SK);
        marker.insert("last".into(), s(&last.dynamodb.sequence_number));
        marker.insert(
            TTL.into(),
            n(SystemClock.now().plus(MARKER_RETENTION).as_secs()),
        );
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(marker))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| build_failed(what, e))?;
        let mut items = vec![TransactWriteItem::builder().put(put).build()];
        // Concurrent folds (one per stream shard) spread over the shards of an aggregate.
        let shard = shard_of(&first.event_id);
        for (aggregate, sums) in sums {
            items.push(self.aggregate_write(what, aggregate, sums, shard)?);
        }
        Ok(items)
    }

    fn aggregate_write(
        &self,
        what: &'static str,
        aggregate: &Aggregate,
        sums: &Sums,
        shard: u8,
    ) -> Result<TransactWriteItem, PortError> {
        let (mut adds, mut names, mut values) = (Vec::new(), Vec::new(), Vec::new());
        for (i, (name, delta)) in sums.iter().enumerate() {
            adds.push(format!("#a{i} :a{i}"));
            names.push((format!("#a{i}"), name.clone()));
            values.push((format!(":a{i}"), n(delta)));
        }
        let (sk, expression) = match aggregate {
            Aggregate::Gauges(_) => (gauges_sk(shard), format!("ADD {}", adds.join(", "))),
            Aggregate::Hour(_, hour) => {
                names.push(("#hour".into(), "hour".into()));
                names.push(("#ttl".into(), TTL.into()));
                values.push((":hour".into(), n(hour.as_millis())));
                values.push((":ttl".into(), n(hour.plus(COUNTER_RETENTION).as_secs())));
                (
                    hour_sk(*hour, shard),
                    format!("ADD {} SET #hour = :hour, #ttl = :ttl", adds.join(", ")),
                )
            }
        };
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(owner_pk(aggregate.owner()), &sk)))
            .update_expression(expression)
            .set_expression_attribute_names(non_empty(names.into_iter().collect()))
            .set_expression_attribute_values(non_empty(values.into_iter().collect()))
            .build()
            .map_err(|e| build_failed(what, e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}

/// An aggregate item (before its shard is chosen).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Aggregate {
    /// The owner's gauges.
    Gauges(Owner),
    /// The owner's counters of the hour starting then.
    Hour(Owner, Timestamp),
}

impl Aggregate {
    fn owner(&self) -> &Owner {
        match self {
            Self::Gauges(owner) | Self::Hour(owner, _) => owner,
        }
    }
}

/// What a chunk adds to one aggregate item: attribute name → sum.
type Sums = BTreeMap<String, i64>;

/// The records of one transaction, and what they add.
struct Chunk {
    records: usize,
    sums: BTreeMap<Aggregate, Sums>,
}

impl Chunk {
    /// As many of `changes` as fit one transaction, taken from the start (at least one).
    fn cut(changes: &[(&TableChange, Option<(Owner, Deltas)>)]) -> Self {
        let mut chunk = Self {
            records: 0,
            sums: BTreeMap::new(),
        };
        for (_, change) in changes {
            if let Some((owner, deltas)) = change {
                let new_items = aggregates_of(owner, deltas)
                    .filter(|a| !chunk.sums.contains_key(a))
                    .count();
                // One item of the transaction is the marker.
                if chunk.sums.len() + new_items + 1 > MAX_TRANSACTION_ITEMS && chunk.records > 0 {
                    break;
                }
                add(&mut chunk.sums, owner, deltas);
            }
            chunk.records += 1;
        }
        // Deltas that cancel out (a gauge counted in and out) write nothing.
        for sums in chunk.sums.values_mut() {
            sums.retain(|_, sum| *sum != 0);
        }
        chunk.sums.retain(|_, sums| !sums.is_empty());
        chunk
    }
}

/// The aggregate items `deltas` add to.
fn aggregates_of(owner: &Owner, deltas: &Deltas) -> impl Iterator<Item = Aggregate> {
    let gauges = (!deltas.gauges.is_empty()).then(|| Aggregate::Gauges(owner.clone()));
    let hour = (!deltas.counters.is_empty()).then(|| Aggregate::Hour(owner.clone(), deltas.hour));
    gauges.into_iter().chain(hour)
}

fn add(sums: &mut BTreeMap<Aggregate, Sums>, owner: &Owner, deltas: &Deltas) {
    for (state, delta) in &deltas.gauges {
        *sums
            .entry(Aggregate::Gauges(owner.clone()))
            .or_default()
            .entry(state.as_str().to_owned())
            .or_default() += delta;
    }
    for (name, delta) in &deltas.counters {
        *sums
            .entry(Aggregate::Hour(owner.clone(), deltas.hour))
            .or_default()
            .entry(format!("{COUNTER_PREFIX}{name}"))
            .or_default() += i64::try_from(*delta).unwrap_or(i64::MAX);
    }
}

/// What a record adds to its owner's aggregates: `None` for anything but a job header written
/// (a deleted header, an expired one, changes nothing: the gauges count open jobs, which never
/// expire, and the counters count what happened).
fn deltas_of(record: &TableChange) -> Result<Option<(Owner, Deltas)>, PortError> {
    const WHAT: &str = "read a job header from the table's stream";
    let Some(new) = &record.dynamodb.new_image else {
        return Ok(None);
    };
    if !matches!(new.inner().get(SK), Some(serde_dynamo::AttributeValue::S(sk)) if sk == HEADER) {
        return Ok(None);
    }
    let read = |image: &serde_dynamo::Item| -> Result<Job, PortError> {
        serde_dynamo::from_item(image.clone()).map_err(|e: serde_dynamo::Error| {
            tracing::error!(
                event_id = %record.event_id,
                error = %e,
                "a job header in the table's stream cannot be read; its change is left out of the report"
            );
            PortError::failed(WHAT, e)
        })
    };
    let after = read(new)?;
    let deltas = match &record.dynamodb.old_image {
        Some(old) => Deltas::between(&read(old)?, &after),
        None => Deltas::created(&after),
    };
    Ok(Some((after.owner, deltas)))
}

/// Whether sequence number `a` comes after `b` (both decimal, without leading zeros).
fn sequence_after(a: &str, b: &str) -> bool {
    (a.len(), a) > (b.len(), b)
}

const MARKER_SK: &str = "FOLD";

fn marker_pk(event_id: &str) -> String {
    format!("FOLD#{event_id}")
}

fn shard_of(event_id: &str) -> u8 {
    let mut hasher = DefaultHasher::new();
    event_id.hash(&mut hasher);
    (hasher.finish() % u64::from(AGGREGATE_SHARDS)) as u8
}

pub(super) fn gauges_sk(shard: u8) -> String {
    format!("{GAUGES}#{shard}")
}

pub(super) fn hour_sk(hour: Timestamp, shard: u8) -> String {
    format!("HOUR#{}#{shard}", time_key(hour))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert!(sequence_after("10", "9"));
        assert!(sequence_after(
            "1100000000017454423010",
            "1100000000017454423009"
        ));
        assert!(!sequence_after("9", "10"));
        assert!(!sequence_after("42", "42"));
    }
}
