//! [`JobStore`] on DynamoDB. The items and indexes are described in [`super`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ackflow_core::report::Deltas;
use ackflow_core::{
    async_trait, Created, Cursor, Figures, IdempotencyKey, IdempotencyRecord, Job, JobId, JobPart,
    JobState, JobStore, ListQuery, Owner, Page, PortError, Timestamp, WriteError,
};
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use serde_dynamo::aws_sdk_dynamodb_1::{from_item, to_item};
use serde_json::Value;

use super::report_fold::{COUNTER_PREFIX, GAUGES};
use super::{
    failed_at, get_item, job_pk, json_of, key, n, non_empty, number_attr, order_key, owner_pk,
    parse_order_key, s, string_attr, time_key, transact, Item, TxError, HEADER, LIST_INDEX,
    LIST_PK, LIST_SK, OPEN_INDEX, OPEN_PK, OPEN_SK, PK, SK, SWEEP_INDEX, SWEEP_PK, SWEEP_SHARDS,
    SWEEP_SK, TTL,
};
use crate::error::{build_failed, classify, unexpected};

const INPUT: &str = "INPUT";
const RESULT: &str = "RESULT";
/// The header attribute that holds a result of at most [`INLINE_RESULT_MAX`] bytes (JSON text).
const RESULT_JSON: &str = "result_json";
/// The largest result (as JSON text) kept in the job's header rather than in an item of its own.
/// The write that ends a job is then one `PutItem` of 1–2 write units instead of a transaction
/// of two items at twice the units each (4 or more), and a status read finds it in the header.
/// Larger ones get an item of their own, so that listings (the index holds whole headers) stay
/// light.
const INLINE_RESULT_MAX: usize = 1024;
/// How much longer than its job a job's input and Idempotency-Key are kept at most
/// ([`DynamoJobStore::records_expire_at`]).
const RECORDS_MARGIN: Duration = Duration::from_secs(24 * 3600);
/// The largest page a listing returns, whatever it is asked (the use case asks for at most 100).
const MAX_PAGE: usize = 1000;
/// How many queries one listing may make. DynamoDB applies `Limit` before the filter, so a
/// selective filter over many jobs could otherwise read on and on; past this the page ends
/// early, with a cursor where the reading stopped.
const LIST_ROUNDS: usize = 10;

/// The job store of the AWS runtime: one DynamoDB table (see [`super`] for its layout).
///
/// `create` is one `TransactWriteItems`: the header (conditional on `attribute_not_exists`),
/// the input and the Idempotency-Key, all or nothing. `update` is a conditional `PutItem` of the
/// header (on its `revision`) when nothing else changes, and a transaction with the result (or
/// a reopened job's records) otherwise. The report's aggregates are not written here: they are
/// folded from the table's stream ([`super::ReportFold`]). Reads of a job are consistent.
#[derive(Debug, Clone)]
pub struct DynamoJobStore {
    client: Client,
    table: Arc<str>,
    /// How long a terminal job is kept ([`ackflow_core::Settings::retention`]): its input and
    /// Idempotency-Key items are given their expiry when written, from it.
    retention: Duration,
}

impl DynamoJobStore {
    /// The store in `table`, keeping terminal jobs for the default
    /// [`ackflow_core::Settings::retention`].
    pub fn new(client: Client, table: String) -> Self {
        Self {
            client,
            table: table.into(),
            retention: ackflow_core::Settings::default().retention,
        }
    }

    /// The same store for jobs kept `retention` once terminal (the use cases'
    /// [`ackflow_core::Settings::retention`]).
    pub fn keeping(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// When the input and Idempotency-Key items of `job` may expire: after the latest the
    /// job itself can expire (it ends by its deadline, and is kept `retention` from then),
    /// with a day to spare for a sweep delayed by an outage. Set when they are written, so
    /// that the write that ends a job touches its header alone; a reopen, which moves the
    /// deadline, moves it too. Until then a job's key stays taken only while its job exists
    /// and has not expired ([`DynamoJobStore::holder`]).
    fn records_expire_at(&self, job: &Job) -> i64 {
        job.deadline
            .plus(self.retention)
            .plus(RECORDS_MARGIN)
            .as_secs()
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn transact_item_put(
        &self,
        what: &'static str,
        item: Item,
        condition: Option<Condition>,
    ) -> Result<TransactWriteItem, PortError> {
        let mut put = Put::builder().table_name(&*self.table).set_item(Some(item));
        if let Some(c) = condition {
            put = put
                .condition_expression(c.expression)
                .set_expression_attribute_names(non_empty(c.names))
                .set_expression_attribute_values(non_empty(c.values))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
        }
        let put = put.build().map_err(|e| build_failed(what, e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn transact_item_update(
        &self,
        what: &'static str,
        key: Item,
        expression: String,
        condition: Option<&str>,
        names: BTreeMap<String, String>,
        values: BTreeMap<String, AttributeValue>,
    ) -> Result<TransactWriteItem, PortError> {
        let update = Update::builder()
            .table_name(&*self.table)
            .set_key(Some(key))
            .update_expression(expression)
            .set_condition_expression(condition.map(str::to_owned))
            .set_expression_attribute_names(non_empty(names.into_iter().collect()))
            .set_expression_attribute_values(non_empty(values.into_iter().collect()))
            .build()
            .map_err(|e| build_failed(what, e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Who holds an Idempotency-Key that a create found taken: the job its record names, and
    /// whether its body hash is the same; or, when that job is gone or has expired, nobody
    /// (`Free`, naming the stale holder so the next create may take the key over from it).
    async fn holder(
        &self,
        what: &'static str,
        owner: &Owner,
        key_item: Option<Item>,
        key: &IdempotencyRecord,
        now: Timestamp,
    ) -> Result<KeyHolder, PortError> {
        let key_item = match key_item {
            Some(item) => Some(item),
            None => {
                get_item(
                    &self.client,
                    &self.table,
                    what,
                    super::key(owner_pk(owner), &key_sk(&key.key)),
                )
                .await?
            }
        };
        let Some(key_item) = key_item else {
            // It expired and was deleted between the write and this read.
            return Ok(KeyHolder::Free(None));
        };
        let job_id: JobId = string_attr(&key_item, "job_id")
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| unexpected(what, "an Idempotency-Key record without a job id"))?;
        let same_body = string_attr(&key_item, "body_hash") == Some(key.body_hash.as_str());
        match self.get(owner, job_id).await? {
            // The job expired (DynamoDB deletes expired items within days, not on the second):
            // its key is free again.
            Some(job)
                if job
                    .expires_at
                    .is_some_and(|at| at.as_secs() < now.as_secs()) =>
            {
                Ok(KeyHolder::Free(Some(job_id)))
            }
            Some(job) => Ok(KeyHolder::Job(Created::Existing {
                job: Box::new(job),
                same_body,
            })),
            None => Ok(KeyHolder::Free(Some(job_id))),
        }
    }

    async fn read_json(
        &self,
        what: &'static str,
        owner: &Owner,
        id: JobId,
        sk: &str,
    ) -> Result<Option<Value>, PortError> {
        let item = get_item(&self.client, &self.table, what, key(job_pk(id), sk)).await?;
        owned_json(item, owner, what)
    }

    /// Every job of one shard of the sweep index due at `now`, at most `limit`, earliest first.
    async fn due_in_shard(
        &self,
        shard: u8,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Job>, PortError> {
        const WHAT: &str = "find jobs due for a sweep";
        let mut jobs = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&*self.table)
                .index_name(SWEEP_INDEX)
                .key_condition_expression("#pk = :pk AND #sk <= :now")
                .expression_attribute_names("#pk", SWEEP_PK)
                .expression_attribute_names("#sk", SWEEP_SK)
                .expression_attribute_values(":pk", s(sweep_pk(shard)))
                .expression_attribute_values(":now", n(now.as_millis()))
                .limit(page_limit(limit - jobs.len()))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| classify(WHAT, e))?;
            for item in out.items.unwrap_or_default() {
                jobs.push(read_job(item, WHAT)?);
            }
            start = out.last_evaluated_key;
            if jobs.len() >= limit || start.is_none() {
                return Ok(jobs);
            }
        }
    }
}

/// A condition of a `Put`.
struct Condition {
    expression: &'static str,
    names: std::collections::HashMap<String, String>,
    values: std::collections::HashMap<String, AttributeValue>,
}

impl Condition {
    /// The item must not exist yet.
    fn absent() -> Self {
        Self {
            expression: "attribute_not_exists(#pk)",
            names: [("#pk".to_owned(), PK.to_owned())].into(),
            values: Default::default(),
        }
    }
}

/// Who holds an Idempotency-Key ([`DynamoJobStore::holder`]).
enum KeyHolder {
    /// A live job.
    Job(Created),
    /// No live job: the record is gone, or names this job, which is gone or expired.
    Free(Option<JobId>),
}

fn page_limit(n: usize) -> i32 {
    i32::try_from(n.clamp(1, MAX_PAGE)).unwrap_or(1)
}

fn key_sk(key: &IdempotencyKey) -> String {
    format!("KEY#{key}")
}

fn sweep_pk(shard: u8) -> String {
    format!("SWEEP#{shard}")
}

/// The sweep shard of a job: from its random id, so jobs spread evenly.
fn sweep_shard(id: JobId) -> u8 {
    id.as_uuid().as_bytes()[15] % SWEEP_SHARDS
}

/// When the items of a job may expire: once it is terminal, at its `expires_at`.
fn ttl_of(job: &Job) -> Option<i64> {
    job.expires_at
        .filter(|_| job.state.is_terminal())
        .map(Timestamp::as_secs)
}

/// The header item of `job`. The store, not the caller, decides that only open jobs are in the
/// sparse indexes and only terminal ones expire, so a wrong header cannot hide a job from the
/// sweeper or expire an open one.
fn header_item(job: &Job, what: &'static str) -> Result<Item, PortError> {
    let mut item: Item = to_item(job).map_err(|e| PortError::failed(what, e))?;
    let position = order_key(job.submitted_at, job.id);
    item.insert(PK.into(), s(job_pk(job.id)));
    item.insert(SK.into(), s(HEADER));
    item.insert(LIST_PK.into(), s(owner_pk(&job.owner)));
    item.insert(LIST_SK.into(), s(position.clone()));
    if !job.state.is_terminal() {
        if let Some(at) = job.sweep_at {
            item.insert(SWEEP_PK.into(), s(sweep_pk(sweep_shard(job.id))));
            item.insert(SWEEP_SK.into(), n(at.as_millis()));
        }
        item.insert(OPEN_PK.into(), s(owner_pk(&job.owner)));
        item.insert(OPEN_SK.into(), s(position));
    }
    if let Some(ttl) = ttl_of(job) {
        item.insert(TTL.into(), n(ttl));
    }
    Ok(item)
}

/// The input or result item of a job, holding `json` (the value as JSON text).
fn json_item(job: &Job, sk: &str, json: String) -> Item {
    let mut item = key(job_pk(job.id), sk);
    item.insert("owner".into(), s(job.owner.as_str()));
    item.insert("json".into(), s(json));
    if let Some(ttl) = ttl_of(job) {
        item.insert(TTL.into(), n(ttl));
    }
    item
}

fn json_text(value: &Value, what: &'static str) -> Result<String, PortError> {
    serde_json::to_string(value).map_err(|e| PortError::failed(what, e))
}

/// The JSON of an input or result item, if it is `owner`'s (another owner's reads as absent).
fn owned_json(
    item: Option<Item>,
    owner: &Owner,
    what: &'static str,
) -> Result<Option<Value>, PortError> {
    match item {
        Some(item) if string_attr(&item, "owner") == Some(owner.as_str()) => {
            json_of(&item, what).map(Some)
        }
        _ => Ok(None),
    }
}

fn read_job(item: Item, what: &'static str) -> Result<Job, PortError> {
    from_item(item).map_err(|e| PortError::failed(what, e))
}

#[async_trait]
impl JobStore for DynamoJobStore {
    async fn create(
        &self,
        job: &Job,
        input: &Value,
        key: Option<&IdempotencyRecord>,
    ) -> Result<Created, PortError> {
        const WHAT: &str = "create a job";
        let records_expire_at = self.records_expire_at(job);
        // A key taken by a job that is gone or expired is taken over, once: the write is
        // then conditional on that stale holder, so a racing create cannot lose its key.
        let mut stale: Option<JobId> = None;
        for _ in 0..2 {
            let mut input_item = json_item(job, INPUT, json_text(input, WHAT)?);
            input_item.insert(TTL.into(), n(records_expire_at));
            let mut items = vec![
                self.transact_item_put(WHAT, header_item(job, WHAT)?, Some(Condition::absent()))?,
                self.transact_item_put(WHAT, input_item, Some(Condition::absent()))?,
            ];
            let key_index = items.len();
            if let Some(record) = key {
                let mut item = super::key(owner_pk(&job.owner), &key_sk(&record.key));
                item.insert("job_id".into(), s(job.id.to_string()));
                item.insert("body_hash".into(), s(record.body_hash.as_str()));
                item.insert(TTL.into(), n(records_expire_at));
                let mut condition = Condition {
                    expression: "attribute_not_exists(#pk) OR #ttl < :now",
                    names: [("#pk".into(), PK.into()), ("#ttl".into(), TTL.into())].into(),
                    values: [(":now".into(), n(job.submitted_at.as_secs()))].into(),
                };
                if let Some(stale) = stale {
                    condition.expression =
                        "attribute_not_exists(#pk) OR #ttl < :now OR #job = :stale";
                    condition.names.insert("#job".into(), "job_id".into());
                    condition
                        .values
                        .insert(":stale".into(), s(stale.to_string()));
                }
                items.push(self.transact_item_put(WHAT, item, Some(condition))?);
            }

            match transact(&self.client, WHAT, items).await {
                Ok(()) => return Ok(Created::New),
                Err(TxError::Cancelled(reasons)) => match key {
                    Some(record) if failed_at(&reasons, key_index) => {
                        let old = reasons.get(key_index).and_then(|r| r.item().cloned());
                        match self
                            .holder(WHAT, &job.owner, old, record, job.submitted_at)
                            .await?
                        {
                            KeyHolder::Job(created) => return Ok(created),
                            KeyHolder::Free(holder) => stale = holder,
                        }
                    }
                    _ => {
                        return Err(unexpected(
                            WHAT,
                            format!("the id of the new job {} is taken", job.id),
                        ))
                    }
                },
                Err(TxError::Port(e)) => return Err(e),
            }
        }
        // Another create took the key over from the same stale job in between: a retry
        // finds that job.
        Err(PortError::unavailable(
            WHAT,
            unexpected(
                WHAT,
                "the Idempotency-Key changed hands while it was claimed",
            ),
        ))
    }

    async fn get(&self, owner: &Owner, id: JobId) -> Result<Option<Job>, PortError> {
        const WHAT: &str = "read a job";
        let Some(item) = get_item(&self.client, &self.table, WHAT, key(job_pk(id), HEADER)).await?
        else {
            return Ok(None);
        };
        let job = read_job(item, WHAT)?;
        Ok((job.owner == *owner).then_some(job))
    }

    async fn input(&self, owner: &Owner, id: JobId) -> Result<Option<Value>, PortError> {
        self.read_json("read a job's input", owner, id, INPUT).await
    }

    /// One consistent query of the job's partition: the sort keys are ordered `INPUT` < `JOB`
    /// < `RESULT`, so the header and the part asked for are one key range. It costs a read
    /// unit per started 4 KB of both items, as two reads would, in one round trip.
    async fn get_with(
        &self,
        owner: &Owner,
        id: JobId,
        part: JobPart,
    ) -> Result<Option<(Job, Option<Value>)>, PortError> {
        const WHAT: &str = "read a job";
        let (part_sk, from, to) = match part {
            JobPart::Input => (INPUT, INPUT, HEADER),
            JobPart::Result => (RESULT, HEADER, RESULT),
        };
        let out = self
            .client
            .query()
            .table_name(&*self.table)
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :from AND :to")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", s(job_pk(id)))
            .expression_attribute_values(":from", s(from))
            .expression_attribute_values(":to", s(to))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify(WHAT, e))?;
        let (mut header, mut part_item) = (None, None);
        for item in out.items.unwrap_or_default() {
            match string_attr(&item, SK) {
                Some(HEADER) => header = Some(item),
                Some(sk) if sk == part_sk => part_item = Some(item),
                _ => {}
            }
        }
        let Some(header) = header else {
            return Ok(None);
        };
        let inline = string_attr(&header, RESULT_JSON).map(str::to_owned);
        let job = read_job(header, WHAT)?;
        if job.owner != *owner {
            return Ok(None);
        }
        // A result is shown only once the header says there is one.
        let value = match (part, inline) {
            (JobPart::Input, _) => owned_json(part_item, owner, WHAT)?,
            (JobPart::Result, _) if !job.has_result => None,
            (JobPart::Result, Some(text)) => {
                Some(serde_json::from_str(&text).map_err(|e| PortError::failed(WHAT, e))?)
            }
            (JobPart::Result, None) => owned_json(part_item, owner, WHAT)?,
        };
        Ok(Some((job, value)))
    }

    /// The result is in the header or beside it: one query of both, as [`Self::get_with`].
    async fn result(&self, owner: &Owner, id: JobId) -> Result<Option<Value>, PortError> {
        Ok(self
            .get_with(owner, id, JobPart::Result)
            .await?
            .and_then(|(_, result)| result))
    }

    async fn update(
        &self,
        before: &Job,
        after: &Job,
        result: Option<&Value>,
        // The report's aggregates are folded from the table's stream ([`super::ReportFold`]),
        // from the header's images: the write does not carry them.
        _deltas: &Deltas,
    ) -> Result<(), WriteError> {
        const WHAT: &str = "update a job";
        if before.id != after.id || before.owner != after.owner || before.kind != after.kind {
            return Err(unexpected(
                WHAT,
                format!(
                    "an update cannot change a job's id, owner or kind (job {})",
                    before.id
                ),
            )
            .into());
        }
        let fence = Condition {
            expression: "#revision = :revision AND #owner = :owner",
            names: [
                ("#revision".into(), "revision".into()),
                ("#owner".into(), "owner".into()),
            ]
            .into(),
            values: [
                (":revision".into(), n(before.revision)),
                (":owner".into(), s(before.owner.as_str())),
            ]
            .into(),
        };
        let mut header = header_item(after, WHAT)?;
        // Everything else the write changes, in the same transaction as the header.
        let mut items = Vec::new();
        if let Some(result) = result {
            // Fencing on the revision means only the one write that made the job succeed
            // gets here (no change leaves `succeeded`, so no later write drops it).
            let text = json_text(result, WHAT)?;
            if text.len() <= INLINE_RESULT_MAX {
                header.insert(RESULT_JSON.into(), s(text));
            } else {
                items.push(self.transact_item_put(WHAT, json_item(after, RESULT, text), None)?);
            }
        }
        if after.deadline != before.deadline {
            // A reopen: the job has a new deadline, so its records are kept longer
            // ([`DynamoJobStore::records_expire_at`]). The write that ends a job leaves them
            // alone. The conditions refuse to create a record that is gone (expired) or to
            // touch a key that another job now holds.
            let expression = "SET #ttl = :ttl";
            let mut values = BTreeMap::from([(":ttl".into(), n(self.records_expire_at(after)))]);
            let names = BTreeMap::from([("#pk".into(), PK.into()), ("#ttl".into(), TTL.into())]);
            items.push(self.transact_item_update(
                WHAT,
                key(job_pk(after.id), INPUT),
                expression.to_owned(),
                Some("attribute_exists(#pk)"),
                names.clone(),
                values.clone(),
            )?);
            if let Some(k) = &after.idempotency_key {
                let mut names = names;
                names.insert("#job".into(), "job_id".into());
                values.insert(":job".into(), s(after.id.to_string()));
                items.push(self.transact_item_update(
                    WHAT,
                    key(owner_pk(&after.owner), &key_sk(k)),
                    expression.to_owned(),
                    Some("attribute_exists(#pk) AND #job = :job"),
                    names,
                    values,
                )?);
            }
        }

        if items.is_empty() {
            // Only the header changes (progress, a lease taken over by the same state...):
            // a conditional PutItem, at half the cost of a transaction.
            let outcome = self
                .client
                .put_item()
                .table_name(&*self.table)
                .set_item(Some(header))
                .condition_expression(fence.expression)
                .set_expression_attribute_names(Some(fence.names))
                .set_expression_attribute_values(Some(fence.values))
                .send()
                .await;
            return match outcome {
                Ok(_) => Ok(()),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
                {
                    Err(WriteError::Conflict)
                }
                Err(e) => Err(classify(WHAT, e).into()),
            };
        }
        items.insert(0, self.transact_item_put(WHAT, header, Some(fence))?);
        match transact(&self.client, WHAT, items).await {
            Ok(()) => Ok(()),
            Err(TxError::Cancelled(reasons)) if failed_at(&reasons, 0) => Err(WriteError::Conflict),
            Err(TxError::Cancelled(_)) => Err(unexpected(
                WHAT,
                format!(
                    "the input or Idempotency-Key record of job {} is gone (expired)",
                    after.id
                ),
            )
            .into()),
            Err(TxError::Port(e)) => Err(e.into()),
        }
    }

    async fn list(&self, owner: &Owner, query: &ListQuery) -> Result<Page, PortError> {
        const WHAT: &str = "list jobs";
        // A page of zero would have no last job to continue from.
        let limit = query.limit.clamp(1, MAX_PAGE);
        let mut key_condition = String::from("#pk = :pk");
        let mut names = vec![("#pk", LIST_PK)];
        let mut values = vec![(":pk", s(owner_pk(owner)))];
        if let Some(after) = &query.after {
            key_condition.push_str(" AND #sk < :after");
            names.push(("#sk", LIST_SK));
            values.push((":after", s(order_key(after.submitted_at, after.id))));
        }
        let mut filters = Vec::new();
        if let Some(state) = query.state {
            filters.push("#state = :state");
            names.push(("#state", "state"));
            values.push((":state", s(state.as_str())));
        }
        if let Some(kind) = &query.kind {
            filters.push("#kind = :kind");
            names.push(("#kind", "kind"));
            values.push((":kind", s(kind.as_str())));
        }
        let filter = (!filters.is_empty()).then(|| filters.join(" AND "));

        let mut jobs = Vec::with_capacity(limit + 1);
        let mut start = None;
        for _ in 0..LIST_ROUNDS {
            // One job more than the page: whether it exists says whether there is a next page.
            let want = limit + 1 - jobs.len();
            // A filter drops some of what is read, so read more per round when filtering.
            let read = if filter.is_some() { want * 4 } else { want };
            let out = self
                .client
                .query()
                .table_name(&*self.table)
                .index_name(LIST_INDEX)
                .key_condition_expression(&key_condition)
                .set_filter_expression(filter.clone())
                .set_expression_attribute_names(Some(
                    names
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ))
                .set_expression_attribute_values(Some(
                    values
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), v.clone()))
                        .collect(),
                ))
                .scan_index_forward(false)
                .limit(page_limit(read))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| classify(WHAT, e))?;
            for item in out.items.unwrap_or_default() {
                jobs.push(read_job(item, WHAT)?);
            }
            start = out.last_evaluated_key;
            if jobs.len() > limit || start.is_none() {
                break;
            }
        }
        let next = if jobs.len() > limit {
            jobs.truncate(limit);
            jobs.last().map(Cursor::of)
        } else if let Some(stopped) = start {
            // The rounds ran out before the page filled: continue where the reading stopped.
            let (submitted_at, id) = string_attr(&stopped, LIST_SK)
                .and_then(parse_order_key)
                .ok_or_else(|| unexpected(WHAT, "a listing position without a sort key"))?;
            Some(Cursor { submitted_at, id })
        } else {
            None
        };
        Ok(Page { jobs, next })
    }

    async fn figures(&self, owner: &Owner, since: Timestamp) -> Result<Figures, PortError> {
        const WHAT: &str = "read the report's figures";
        let gauges = async {
            let mut gauges: BTreeMap<JobState, i64> = JobState::ALL
                .into_iter()
                .filter(|s| !s.is_terminal())
                .map(|s| (s, 0))
                .collect();
            let mut start = None;
            loop {
                let out = self
                    .client
                    .query()
                    .table_name(&*self.table)
                    .key_condition_expression("#pk = :pk AND begins_with(#sk, :gauges)")
                    .expression_attribute_names("#pk", PK)
                    .expression_attribute_names("#sk", SK)
                    .expression_attribute_values(":pk", s(owner_pk(owner)))
                    .expression_attribute_values(":gauges", s(format!("{GAUGES}#")))
                    .consistent_read(true)
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(|e| classify(WHAT, e))?;
                for item in out.items.unwrap_or_default() {
                    for (state, count) in &mut gauges {
                        *count += number_attr(&item, state.as_str()).unwrap_or(0);
                    }
                }
                start = out.last_evaluated_key;
                if start.is_none() {
                    break;
                }
            }
            // A shard may be negative (a job counted in and out of it); the sum is not.
            Ok::<_, PortError>(
                gauges
                    .into_iter()
                    .map(|(state, n)| (state, u64::try_from(n).unwrap_or(0)))
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        let counters = async {
            let mut counters: BTreeMap<String, u64> = BTreeMap::new();
            let mut start = None;
            loop {
                let out = self
                    .client
                    .query()
                    .table_name(&*self.table)
                    .key_condition_expression("#pk = :pk AND #sk BETWEEN :from AND :to")
                    .expression_attribute_names("#pk", PK)
                    .expression_attribute_names("#sk", SK)
                    .expression_attribute_values(":pk", s(owner_pk(owner)))
                    // From the window's first hour (before its first shard) to after the last
                    // shard of the last hour there can be ('~' sorts after every digit).
                    .expression_attribute_values(
                        ":from",
                        s(format!("HOUR#{}", time_key(Deltas::hour_of(since)))),
                    )
                    .expression_attribute_values(
                        ":to",
                        s(format!(
                            "HOUR#{}#~",
                            time_key(Timestamp::from_millis(i64::MAX))
                        )),
                    )
                    .consistent_read(true)
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(|e| classify(WHAT, e))?;
                for item in out.items.unwrap_or_default() {
                    for (name, value) in item {
                        let (Some(counter), AttributeValue::N(count)) =
                            (name.strip_prefix(COUNTER_PREFIX), value)
                        else {
                            continue;
                        };
                        let count = count.parse::<u64>().unwrap_or(0);
                        *counters.entry(counter.to_owned()).or_default() += count;
                    }
                }
                start = out.last_evaluated_key;
                if start.is_none() {
                    return Ok::<_, PortError>(counters);
                }
            }
        };
        let oldest = async {
            let out = self
                .client
                .query()
                .table_name(&*self.table)
                .index_name(OPEN_INDEX)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", OPEN_PK)
                .expression_attribute_values(":pk", s(owner_pk(owner)))
                .scan_index_forward(true)
                .limit(1)
                .send()
                .await
                .map_err(|e| classify(WHAT, e))?;
            out.items
                .unwrap_or_default()
                .into_iter()
                .next()
                .map(|item| read_job(item, WHAT))
                .transpose()
        };
        let (gauges, counters, oldest_open) =
            futures_util::future::try_join3(gauges, counters, oldest).await?;
        Ok(Figures {
            gauges,
            counters,
            oldest_open,
        })
    }

    async fn due_for_sweep(&self, now: Timestamp, limit: usize) -> Result<Vec<Job>, PortError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = limit.min(MAX_PAGE);
        let shards = (0..SWEEP_SHARDS).map(|shard| self.due_in_shard(shard, now, limit));
        let mut due: Vec<Job> = futures_util::future::try_join_all(shards)
            .await?
            .into_iter()
            .flatten()
            // The index is eventually consistent: a job that just ended may linger a moment.
            .filter(|job| !job.state.is_terminal())
            .collect();
        due.sort_by_key(|job| (job.sweep_at, job.id));
        due.truncate(limit);
        Ok(due)
    }

    /// DynamoDB deletes expired items itself (TTL on `ttl`): nothing to do.
    async fn purge_expired(&self, _now: Timestamp, _limit: usize) -> Result<u64, PortError> {
        Ok(0)
    }
}
