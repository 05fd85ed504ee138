//! A table's DynamoDB stream, read from moto server, and a store whose report catches up with
//! it before every read.
//!
//! On AWS the report's aggregates are folded from the table's stream by the `sweeper` function,
//! which Lambda's event source mapping invokes with each batch of changes. Tests have no event
//! source mapping: they play it. [`StreamTail`] reads what the stream gained since it last
//! looked (the Streams API: `DescribeStream`, `GetShardIterator`, `GetRecords`), and
//! [`CatchingUp`] wraps a store so that `figures` first hands those records to the fold: a
//! behaviour suite then sees the report as a deployment does once its stream is folded.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ackflow_core::{
    async_trait, Created, Deltas, Figures, IdempotencyRecord, Job, JobId, JobPart, JobStore,
    ListQuery, Owner, Page, PortError, Timestamp, WriteError,
};
use serde_json::{json, Value};
use tokio::sync::Mutex;

/// Reads a table's stream from moto server, from its start, a batch at a time.
#[derive(Debug)]
pub struct StreamTail {
    client: reqwest::Client,
    url: String,
    table: String,
    /// The sequence number of the last record read, per shard.
    read_up_to: Mutex<BTreeMap<String, String>>,
}

/// The Streams API's records per `GetRecords`, at most (DynamoDB's own limit).
const RECORDS_PER_READ: u64 = 1000;

impl StreamTail {
    /// The stream of `table` on the moto server at `url`.
    pub fn new(url: &str, table: &str) -> Self {
        Self {
            client: reqwest::Client::new(),
            url: url.trim_end_matches('/').to_owned(),
            table: table.to_owned(),
            read_up_to: Mutex::new(BTreeMap::new()),
        }
    }

    /// Every record the stream gained since the last call (since its start, the first time),
    /// in stream order per shard, each as the JSON Lambda would hand over.
    pub async fn next_records(&self) -> Result<Vec<Value>, String> {
        let mut read_up_to = self.read_up_to.lock().await;
        let streams = self
            .call("ListStreams", json!({ "TableName": self.table }))
            .await?;
        let arn = streams["Streams"][0]["StreamArn"]
            .as_str()
            .ok_or_else(|| format!("table {} has no stream", self.table))?
            .to_owned();
        let stream = self
            .call("DescribeStream", json!({ "StreamArn": arn }))
            .await?;
        let shards = stream["StreamDescription"]["Shards"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut records = Vec::new();
        for shard in shards {
            let Some(id) = shard["ShardId"].as_str() else {
                continue;
            };
            // A fresh iterator from the last record read: moto replaces a table's shard when a
            // transaction on it is cancelled (it puts back a copy), and an iterator kept across
            // calls would go on reading the replaced one.
            let from = match read_up_to.get(id) {
                Some(sequence) => json!({
                    "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                    "SequenceNumber": sequence,
                }),
                None => json!({ "ShardIteratorType": "TRIM_HORIZON" }),
            };
            let mut request = json!({ "StreamArn": arn, "ShardId": id });
            request
                .as_object_mut()
                .ok_or("a request is an object")?
                .extend(from.as_object().cloned().unwrap_or_default());
            let mut iterator = self.call("GetShardIterator", request).await?["ShardIterator"]
                .as_str()
                .ok_or("no shard iterator")?
                .to_owned();
            loop {
                let page = self
                    .call(
                        "GetRecords",
                        json!({ "ShardIterator": iterator, "Limit": RECORDS_PER_READ }),
                    )
                    .await?;
                let got = page["Records"].as_array().cloned().unwrap_or_default();
                if got.is_empty() {
                    break;
                }
                for mut record in got {
                    if let Some(sequence) = record["dynamodb"]["SequenceNumber"].as_str() {
                        read_up_to.insert(id.to_owned(), sequence.to_owned());
                    }
                    record["eventSourceARN"] = json!(arn);
                    records.push(record);
                }
                match page["NextShardIterator"].as_str() {
                    Some(next) => iterator = next.to_owned(),
                    None => break,
                }
            }
        }
        Ok(records)
    }

    async fn call(&self, operation: &str, body: Value) -> Result<Value, String> {
        let answer = self
            .client
            .post(format!("{}/", self.url))
            .header(
                "x-amz-target",
                format!("DynamoDBStreams_20120810.{operation}"),
            )
            .header("content-type", "application/x-amz-json-1.0")
            // moto routes a request by the service its credential scope names.
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, \
                 SignedHeaders=host, Signature=0",
            )
            .timeout(std::time::Duration::from_secs(10))
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("{operation}: {e}"))?;
        let status = answer.status();
        let text = answer
            .text()
            .await
            .map_err(|e| format!("{operation}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{operation}: {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{operation}: {e}: {text}"))
    }
}

/// What brings a store's report up to date: for a DynamoDB store, its stream folded.
pub type CatchUp =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// A store whose `figures` first runs its [`CatchUp`]; every other call goes straight through.
#[derive(Clone)]
pub struct CatchingUp {
    inner: Arc<dyn JobStore>,
    catch_up: CatchUp,
}

impl std::fmt::Debug for CatchingUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatchingUp")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl CatchingUp {
    /// `inner`, its report brought up to date by `catch_up` before each read.
    pub fn new(inner: Arc<dyn JobStore>, catch_up: CatchUp) -> Self {
        Self { inner, catch_up }
    }
}

#[async_trait]
impl JobStore for CatchingUp {
    async fn create(
        &self,
        job: &Job,
        input: &Value,
        key: Option<&IdempotencyRecord>,
    ) -> Result<Created, PortError> {
        self.inner.create(job, input, key).await
    }

    async fn get(&self, owner: &Owner, id: JobId) -> Result<Option<Job>, PortError> {
        self.inner.get(owner, id).await
    }

    async fn input(&self, owner: &Owner, id: JobId) -> Result<Option<Value>, PortError> {
        self.inner.input(owner, id).await
    }

    async fn result(&self, owner: &Owner, id: JobId) -> Result<Option<Value>, PortError> {
        self.inner.result(owner, id).await
    }

    async fn get_with(
        &self,
        owner: &Owner,
        id: JobId,
        part: JobPart,
    ) -> Result<Option<(Job, Option<Value>)>, PortError> {
        self.inner.get_with(owner, id, part).await
    }

    async fn update(
        &self,
        before: &Job,
        after: &Job,
        result: Option<&Value>,
        deltas: &Deltas,
    ) -> Result<(), WriteError> {
        self.inner.update(before, after, result, deltas).await
    }

    async fn list(&self, owner: &Owner, query: &ListQuery) -> Result<Page, PortError> {
        self.inner.list(owner, query).await
    }

    async fn figures(&self, owner: &Owner, since: Timestamp) -> Result<Figures, PortError> {
        (self.catch_up)()
            .await
            .map_err(|e| PortError::failed("fold the table's stream", e))?;
        self.inner.figures(owner, since).await
    }

    async fn due_for_sweep(&self, now: Timestamp, limit: usize) -> Result<Vec<Job>, PortError> {
        self.inner.due_for_sweep(now, limit).await
    }

    async fn purge_expired(&self, now: Timestamp, limit: usize) -> Result<u64, PortError> {
        self.inner.purge_expired(now, limit).await
    }
}
