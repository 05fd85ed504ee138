//! The checks of `infra/scripts/e2e-lambda`: drives the real function binaries under
//! `cargo lambda watch` (function URLs and the Invoke API) against moto server, and plays the
//! SQS event source mapping itself, faults included. Run by the script, which provisions the
//! queue and table, exports the functions' environment and starts the emulator; on its own:
//!
//! ```sh
//! E2E_INVOKE_URL=http://127.0.0.1:9000 ACKFLOW_QUEUE_URL=... ACKFLOW_DLQ_URL=... \
//!   cargo run -p ackflow-lambda --example e2e_lambda
//! ```
//!
//! # The event source mapping player
//!
//! One round ([`E2e::play`]) does what Lambda's SQS poller does: receive up to ten messages
//! (with the queue's visibility timeout), build the SQS event, invoke `worker`, then delete the
//! messages not named in `batchItemFailures`. It follows the mapping's rules for the bad paths:
//! a function error or timeout returns the whole batch (nothing deleted); an `itemIdentifier`
//! that is not in the batch fails the whole batch; a throttled invocation leaves the messages to
//! come back after their visibility timeout. [`Fault`] makes a round take one of those paths.
//!
//! # Faults of the functions themselves
//!
//! Beyond the mapping's bad paths: a processor panics every attempt (and the same `worker`
//! process, found through /proc by this run's `ACKFLOW_QUEUE_URL`, serves on); SendMessage fails after the job was recorded (the queue is deleted and
//! recreated under the same name, so the functions' queue URL stays valid); and a message is
//! received past `maxReceiveCount` without being deleted, so SQS itself dead-letters it.
//!
//! Not here: killing the `worker` process mid-job. `cargo lambda watch` (1.x) treats a function
//! process that dies as fatal and stops every function ("command killed code=ForceStop",
//! "terminating lambda scheduler"), where Lambda would start a new instance; the crash is
//! covered on one machine by crates/local/tests/crash.rs and by the timeout fault above.
//!
//! # The table's stream
//!
//! [`E2e::fold_stream`] plays the mapping of the table's stream to `sweeper`: it hands the
//! function what the stream gained (job headers only, as the mapping's filter), and on a
//! `batchItemFailures` answer hands it the batch again from the record named. Before the
//! report is read, the whole stream is folded, and then handed over again, as a retried batch
//! would be: the report must count every job once.
//!
//! Prints one `ok N - what` line per check and, last, `checks passed: N`; exits non-zero at the
//! first failed check.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use ackflow_aws::{dynamo, Clients, SqsQueue};
use ackflow_core::Queue as _;
use ackflow_lambda::test_support::{sqs_event, SqsRecord};
use ackflow_testkit::stream::StreamTail;
use anyhow::{anyhow, bail, ensure, Context as _, Result};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName,
};
use reqwest::Method;
use serde_json::{json, Value};

/// How one round of the player goes wrong (or not).
#[derive(Debug, Clone)]
enum Fault {
    /// The mapping works as on AWS.
    None,
    /// The invocation fails: a record without a message id is slipped into the event (the
    /// worker handles the others, then fails the invocation); nothing is deleted.
    FunctionError,
    /// The invocation runs but its answer is lost, as on a timeout; nothing is deleted.
    Timeout,
    /// An identifier that is not in the batch is added to the answer: the whole batch fails.
    UnknownId,
    /// Lambda throttles: the batch is received but the function is not invoked.
    Throttle,
    /// The bodies of these jobs' messages are corrupted before the invocation.
    Poison(HashSet<String>),
    /// These jobs' messages are deleted without being processed (a lost message).
    Lose(HashSet<String>),
}

/// What one round saw.
#[derive(Debug, Default)]
struct Round {
    /// Job ids (from the message attributes) of the messages received.
    jobs: Vec<String>,
    /// Message ids received.
    messages: Vec<String>,
    /// Receipt handles by message id.
    receipts: HashMap<String, String>,
    /// Identifiers the function reported as failed.
    failures: Vec<String>,
    /// Whether the invocation failed as a whole.
    function_error: bool,
    /// Message ids deleted by the player.
    deleted: Vec<String>,
}

/// The most records a stream batch holds here: the template's `BatchSize`.
const STREAM_BATCH: usize = 1000;

/// What every check works with: the emulator's address, the SQS clients and this run's queue,
/// the functions' settings that the checks wait on, and what the player has seen.
struct E2e {
    http: reqwest::Client,
    base: String,
    sqs: aws_sdk_sqs::Client,
    queue: SqsQueue,
    queue_url: String,
    queue_arn: String,
    /// The functions' `ACKFLOW_RESEND_AFTER_SECS`: how long the sweeper leaves a queued job.
    resend_after: Duration,
    /// The functions' `ACKFLOW_MAX_ATTEMPTS`.
    max_attempts: u64,
    /// The highest `ApproximateReceiveCount` seen per job id.
    receive_counts: HashMap<String, u32>,
    /// The table's stream, read from moto server.
    stream: StreamTail,
    /// Every job header record of the stream handed to `sweeper` so far.
    folded: Vec<Value>,
    /// Checks passed so far (they are numbered in the output).
    passed: u32,
}

fn required(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

impl E2e {
    /// Reads the script's environment (the queue it provisioned, the emulator's address).
    async fn from_env() -> Result<Self> {
        let clients = Clients::from_env().await;
        let queue_url = required("ACKFLOW_QUEUE_URL")?;
        let dlq_url = required("ACKFLOW_DLQ_URL")?;
        let queue_arn = clients
            .sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await?
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .ok_or_else(|| anyhow!("the queue has no ARN"))?;
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()?,
            base: required("E2E_INVOKE_URL")?,
            sqs: clients.sqs.clone(),
            queue: SqsQueue::new(clients.sqs.clone(), queue_url.clone(), dlq_url),
            queue_url,
            queue_arn,
            resend_after: Duration::from_secs(required("ACKFLOW_RESEND_AFTER_SECS")?.parse()?),
            max_attempts: required("ACKFLOW_MAX_ATTEMPTS")?.parse()?,
            receive_counts: HashMap::new(),
            stream: StreamTail::new(&required("AWS_ENDPOINT_URL")?, &required("ACKFLOW_TABLE")?),
            folded: Vec::new(),
            passed: 0,
        })
    }

    /// Passes (and numbers) the check `what`, or fails the run with `detail`.
    fn check(&mut self, what: &str, ok: bool, detail: impl std::fmt::Display) -> Result<()> {
        if !ok {
            bail!("check failed: {what}: {detail}");
        }
        self.passed += 1;
        println!("ok {} - {what}", self.passed);
        Ok(())
    }

    // ---- the HTTP API through function URLs --------------------------------------------------

    /// Sends a request as API Gateway would route it: GETs to `status`, the rest to `api`.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, reqwest::header::HeaderMap, Value)> {
        let function = if method == Method::GET {
            "status"
        } else {
            "api"
        };
        let url = format!("{}/lambda-url/{function}{path}", self.base);
        let mut request = self.http.request(method, &url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.with_context(|| url.clone())?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, headers, body))
    }

    async fn submit(&self, input: Value) -> Result<String> {
        let (status, _, body) = self
            .request(
                Method::POST,
                "/v1/jobs",
                Some(&json!({"kind": "demo", "input": input})),
                &[],
            )
            .await?;
        ensure!(status == 202, "submit answered {status}: {body}");
        body["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no id in {body}"))
    }

    async fn job(&self, id: &str) -> Result<Value> {
        let (status, _, body) = self
            .request(Method::GET, &format!("/v1/jobs/{id}"), None, &[])
            .await?;
        ensure!(status == 200, "status of {id} answered {status}: {body}");
        Ok(body)
    }

    // ---- the Invoke API --------------------------------------------------------------------

    /// Invokes `function` with `event`; `Err` body on a function error.
    async fn invoke(&self, function: &str, event: &Value) -> Result<Result<Value, Value>> {
        let url = format!("{}/2015-03-31/functions/{function}/invocations", self.base);
        let response = self.http.post(&url).json(event).send().await?;
        let status = response.status();
        let function_error = response.headers().contains_key("x-amz-function-error");
        let body: Value = serde_json::from_slice(&response.bytes().await?).unwrap_or(Value::Null);
        if !status.is_success() || function_error || body.get("errorType").is_some() {
            Ok(Err(body))
        } else {
            Ok(Ok(body))
        }
    }

    async fn sweep(&self) -> Result<Value> {
        let event = fixture("scheduled.json")?;
        self.invoke("sweeper", &event)
            .await?
            .map_err(|e| anyhow!("the sweeper failed: {e}"))
    }

    // ---- the stream mapping player ---------------------------------------------------------

    /// Hands `sweeper` what the table's stream gained since the last call, in batches of at
    /// most [`STREAM_BATCH`], each again from the record its answer names until it is folded.
    async fn fold_stream(&mut self) -> Result<()> {
        let records: Vec<Value> = self
            .stream
            .next_records()
            .await
            .map_err(|e| anyhow!("the table's stream: {e}"))?
            .into_iter()
            .filter(|r| r["dynamodb"]["Keys"]["SK"]["S"] == dynamo::HEADER)
            .collect();
        self.hand_over(&records).await?;
        self.folded.extend(records);
        Ok(())
    }

    /// Hands `records` to `sweeper` as the stream's event source mapping would.
    async fn hand_over(&self, records: &[Value]) -> Result<()> {
        let mut from = 0;
        let mut tries = 0;
        while from < records.len() {
            let batch = &records[from..records.len().min(from + STREAM_BATCH)];
            let answer = self
                .invoke("sweeper", &json!({ "Records": batch }))
                .await?
                .map_err(|e| anyhow!("the sweeper failed a stream batch: {e}"))?;
            match answer["batchItemFailures"][0]["itemIdentifier"].as_str() {
                None => {
                    ensure!(
                        answer["batchItemFailures"] == json!([]),
                        "the sweeper answered a stream batch with {answer}"
                    );
                    from += batch.len();
                    tries = 0;
                }
                Some(failed) => {
                    tries += 1;
                    ensure!(tries < 5, "a stream batch failed {tries} times: {answer}");
                    from += batch
                        .iter()
                        .position(|r| r["dynamodb"]["SequenceNumber"] == failed)
                        .ok_or_else(|| anyhow!("{failed} is not in the batch: {answer}"))?;
                }
            }
        }
        Ok(())
    }

    // ---- the event source mapping player ---------------------------------------------------

    async fn play(&mut self, fault: &Fault) -> Result<Round> {
        let received = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .context("receive")?;
        let mut round = Round::default();
        let mut records = Vec::new();
        let mut lost = Vec::new();
        for message in received.messages() {
            let id = message.message_id().unwrap_or_default().to_owned();
            let receipt = message.receipt_handle().unwrap_or_default().to_owned();
            let job = message
                .message_attributes()
                .and_then(|a| a.get("ackflow-job-id"))
                .and_then(MessageAttributeValue::string_value)
                .unwrap_or_default()
                .to_owned();
            let count = message
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|c| c.parse::<u32>().ok())
                .unwrap_or(0);
            let seen = self.receive_counts.entry(job.clone()).or_insert(0);
            *seen = (*seen).max(count);
            round.jobs.push(job.clone());
            round.messages.push(id.clone());
            round.receipts.insert(id.clone(), receipt.clone());
            if matches!(fault, Fault::Lose(jobs) if jobs.contains(&job)) {
                lost.push((id, receipt));
                continue;
            }
            let mut body = message.body().unwrap_or_default().to_owned();
            if matches!(fault, Fault::Poison(jobs) if jobs.contains(&job)) {
                body = "{\"v\":1,\"job\":".to_owned();
            }
            records.push(
                SqsRecord::from_message(message, &self.queue_arn)
                    .body(body)
                    .into_value(),
            );
        }
        self.delete(&lost).await?;
        round.deleted.extend(lost.into_iter().map(|(id, _)| id));
        if records.is_empty() || matches!(fault, Fault::Throttle) {
            return Ok(round);
        }
        let batch: HashSet<String> = records
            .iter()
            .filter_map(|r| r["messageId"].as_str().map(str::to_owned))
            .collect();
        if matches!(fault, Fault::FunctionError) {
            let mut unnamed = records[0].clone();
            if let Some(record) = unnamed.as_object_mut() {
                record.remove("messageId");
            }
            records.push(unnamed);
        }
        let answer = self.invoke("worker", &sqs_event(records)).await?;
        let response = match answer {
            Err(_) => {
                round.function_error = true;
                return Ok(round);
            }
            Ok(response) => response,
        };
        if matches!(fault, Fault::Timeout) {
            return Ok(round);
        }
        let mut failures: Vec<String> = response["batchItemFailures"]
            .as_array()
            .ok_or_else(|| anyhow!("not a batch response: {response}"))?
            .iter()
            .map(|f| f["itemIdentifier"].as_str().unwrap_or_default().to_owned())
            .collect();
        if matches!(fault, Fault::UnknownId) {
            failures.push("00000000-0000-0000-0000-000000000000".to_owned());
        }
        round.failures = failures.clone();
        if failures.iter().any(|f| f.is_empty() || !batch.contains(f)) {
            // The mapping's rule: an unknown or empty identifier fails the whole batch.
            return Ok(round);
        }
        let done: Vec<(String, String)> = round
            .receipts
            .iter()
            .filter(|(id, _)| batch.contains(*id) && !failures.contains(id))
            .map(|(id, receipt)| (id.clone(), receipt.clone()))
            .collect();
        self.delete(&done).await?;
        round.deleted.extend(done.into_iter().map(|(id, _)| id));
        Ok(round)
    }

    async fn delete(&self, messages: &[(String, String)]) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let entries = messages
            .iter()
            .enumerate()
            .map(|(n, (_, receipt))| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(format!("m{n}"))
                    .receipt_handle(receipt)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.sqs
            .delete_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .context("delete")?;
        Ok(())
    }

    /// Plays rounds with `fault` until a message of every job in `jobs` was received; returns
    /// the rounds that received any of them.
    async fn play_until_received(&mut self, fault: &Fault, jobs: &[&str]) -> Result<Vec<Round>> {
        let give_up = Instant::now() + Duration::from_secs(20);
        let mut missing: HashSet<&str> = jobs.iter().copied().collect();
        let mut rounds = Vec::new();
        while !missing.is_empty() {
            ensure!(
                Instant::now() < give_up,
                "messages of {missing:?} never arrived"
            );
            let round = self.play(fault).await?;
            if round.jobs.iter().any(|j| missing.contains(j.as_str())) {
                missing.retain(|m| !round.jobs.iter().any(|j| j == m));
                rounds.push(round);
            }
        }
        Ok(rounds)
    }

    /// Plays normal rounds until every job of `ids` is terminal; returns their last views.
    async fn drain(&mut self, ids: &[&str]) -> Result<Vec<Value>> {
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            let mut views = Vec::new();
            for id in ids {
                views.push(self.job(id).await?);
            }
            if views.iter().all(|v| {
                matches!(
                    v["state"].as_str(),
                    Some("succeeded" | "failed" | "cancelled")
                )
            }) {
                return Ok(views);
            }
            ensure!(
                Instant::now() < give_up,
                "jobs never ended: {}",
                Value::Array(views)
            );
            self.play(&Fault::None).await?;
        }
    }

    /// Messages in the queue, visible or not (approximate, as SQS counts).
    async fn queued_messages(&self) -> Result<u64> {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .context("queue attributes")?;
        Ok(attributes
            .attributes()
            .map(|a| a.values().filter_map(|v| v.parse::<u64>().ok()).sum())
            .unwrap_or(0))
    }

    /// Deletes the queue (so that SendMessage fails for real) and returns what recreates it as
    /// it was: its name and the attributes that configure it (visibility, redrive policy…).
    async fn delete_queue(&self) -> Result<(String, HashMap<QueueAttributeName, String>)> {
        let name = self
            .queue_url
            .rsplit('/')
            .next()
            .ok_or_else(|| anyhow!("no queue name in {}", self.queue_url))?
            .to_owned();
        let all = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .context("queue attributes")?;
        let settable = [
            QueueAttributeName::VisibilityTimeout,
            QueueAttributeName::RedrivePolicy,
            QueueAttributeName::MessageRetentionPeriod,
            QueueAttributeName::MaximumMessageSize,
            QueueAttributeName::DelaySeconds,
            QueueAttributeName::ReceiveMessageWaitTimeSeconds,
        ];
        let attributes: HashMap<QueueAttributeName, String> = all
            .attributes()
            .map(|a| {
                a.iter()
                    .filter(|(k, _)| settable.contains(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        ensure!(
            attributes.contains_key(&QueueAttributeName::RedrivePolicy),
            "the queue has no redrive policy to restore: {attributes:?}"
        );
        self.sqs
            .delete_queue()
            .queue_url(&self.queue_url)
            .send()
            .await
            .context("delete the queue")?;
        Ok((name, attributes))
    }

    /// Recreates the queue deleted by [`Self::delete_queue`]; its URL must not change, since
    /// the functions were configured with it.
    async fn restore_queue(
        &self,
        name: &str,
        attributes: HashMap<QueueAttributeName, String>,
    ) -> Result<()> {
        let created = self
            .sqs
            .create_queue()
            .queue_name(name)
            .set_attributes(Some(attributes))
            .send()
            .await
            .context("recreate the queue")?;
        ensure!(
            created.queue_url() == Some(self.queue_url.as_str()),
            "the recreated queue has another URL: {:?}",
            created.queue_url()
        );
        Ok(())
    }

    /// Receives the queue's messages and makes them visible again at once, without invoking
    /// anything: a consumer that keeps failing before it can delete (each receive counts toward
    /// `maxReceiveCount`). Returns whether a message of `job` was among them.
    async fn receive_and_drop(&self, job: &str) -> Result<bool> {
        let received = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await
            .context("receive")?;
        let mut seen = false;
        for message in received.messages() {
            seen |= message
                .message_attributes()
                .and_then(|a| a.get("ackflow-job-id"))
                .and_then(MessageAttributeValue::string_value)
                == Some(job);
            self.sqs
                .change_message_visibility()
                .queue_url(&self.queue_url)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .visibility_timeout(0)
                .send()
                .await
                .context("change visibility")?;
        }
        Ok(seen)
    }

    async fn dead_lettered(&self, job: &str) -> Result<bool> {
        let dead = self
            .queue
            .dead_letters(10)
            .await
            .map_err(|e| anyhow!(ackflow_core::error_chain(&e)))?;
        Ok(dead.iter().any(|d| {
            d.delivery
                .attributes
                .get("ackflow-job-id")
                .map(String::as_str)
                == Some(job)
        }))
    }
}

/// The pid of the `worker` function's process serving this run: the emulator starts
/// `target/debug/worker` with the script's environment, so it is the `worker` whose
/// `ACKFLOW_QUEUE_URL` is this run's queue (another run on the machine has another queue).
fn worker_pid(queue_url: &str) -> Result<Option<u32>> {
    let wanted = format!("ACKFLOW_QUEUE_URL={queue_url}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").context("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may end between listing and reading: skip what cannot be read.
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let program = cmdline.split(|&b| b == 0).next().unwrap_or_default();
        if !program.ends_with(b"/worker") {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|&b| b == 0)
            .any(|var| var == wanted.as_bytes())
        {
            found.push(pid);
        }
    }
    ensure!(found.len() <= 1, "several worker processes: {found:?}");
    Ok(found.first().copied())
}

fn fixture(name: &str) -> Result<Value> {
    let path = format!("{}/../../infra/events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    Ok(serde_json::from_str(&text)?)
}

fn slug(problem: &Value) -> &str {
    problem["type"]
        .as_str()
        .and_then(|t| t.rsplit(':').next())
        .unwrap_or_default()
}

/// Waits until `at` (RFC 3339) has passed by `extra`: for rules that are about time itself.
async fn wait_past(at: &Value, extra: Duration) -> Result<()> {
    let at = at
        .as_str()
        .and_then(ackflow_core::Timestamp::parse_rfc3339)
        .ok_or_else(|| anyhow!("not a time: {at}"))?;
    let now = ackflow_core::SystemClock;
    let left = at.plus(extra).since(ackflow_core::Clock::now(&now));
    tokio::time::sleep(left).await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut e2e = E2e::from_env().await?;
    jobs_succeed_are_retried_or_fail_with_their_problem(&mut e2e).await?;
    a_poison_message_fails_its_job_alone_and_is_dead_lettered(&mut e2e).await?;
    a_resubmission_with_the_same_key_returns_the_same_job_and_it_runs_once(&mut e2e).await?;
    a_returned_batch_comes_back_and_its_jobs_run_once(&mut e2e).await?;
    a_throttled_batch_comes_back_and_attempts_are_the_stores(&mut e2e).await?;
    a_message_of_a_newer_schema_is_kept_for_a_newer_worker(&mut e2e).await?;
    a_cancelled_job_stays_cancelled_when_its_message_arrives(&mut e2e).await?;
    a_jwt_owners_job_is_not_another_owners(&mut e2e).await?;
    the_sweeper_resends_a_lost_message(&mut e2e).await?;
    the_sweeper_fails_a_job_past_its_deadline(&mut e2e).await?;
    a_processor_panic_fails_only_its_job_and_the_worker_serves_on(&mut e2e).await?;
    a_failed_enqueue_fails_the_job_and_a_keyed_retry_queues_it_again(&mut e2e).await?;
    a_message_sqs_dead_lettered_before_its_job_ran_does_not_strand_it(&mut e2e).await?;
    the_report_counts_the_failures_and_sees_the_dead_letter_queue(&mut e2e).await?;
    println!("checks passed: {}", e2e.passed);
    Ok(())
}

// ---- the checks, in the order main runs them ----------------------------------------------------

/// A job succeeds with its result, a transient failure is retried, a rejection fails the job.
async fn jobs_succeed_are_retried_or_fail_with_their_problem(e2e: &mut E2e) -> Result<()> {
    let ok = e2e.submit(json!({"steps": 2, "step_ms": 20})).await?;
    let retried = e2e.submit(json!({"fail_attempts": 1})).await?;
    let rejected = e2e
        .submit(json!({"reject": "The blue mug is sold out"}))
        .await?;
    let views = e2e.drain(&[&ok, &retried, &rejected]).await?;
    e2e.check(
        "a job succeeds with its result",
        views[0]["state"] == "succeeded"
            && views[0]["result"]["steps"] == 2
            && views[0]["attempts"] == 1,
        &views[0],
    )?;
    e2e.check(
        "a transient failure is retried and then succeeds",
        views[1]["state"] == "succeeded"
            && views[1]["attempts"] == 2
            && views[1]["result"]["attempt"] == 2,
        &views[1],
    )?;
    e2e.check(
        "a rejection fails the job with its problem",
        views[2]["state"] == "failed"
            && views[2]["error"]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("The blue mug is sold out"))
            && views[2]["attempts"] == 1,
        &views[2],
    )?;
    Ok(())
}

/// A poison message among batch-mates fails its own job only, and SQS keeps it.
async fn a_poison_message_fails_its_job_alone_and_is_dead_lettered(e2e: &mut E2e) -> Result<()> {
    let mate_a = e2e.submit(json!({})).await?;
    let poisoned = e2e.submit(json!({})).await?;
    let mate_b = e2e.submit(json!({})).await?;
    let rounds = e2e
        .play_until_received(
            &Fault::Poison(HashSet::from([poisoned.clone()])),
            &[&poisoned],
        )
        .await?;
    let poison_round = rounds
        .iter()
        .find(|r| r.jobs.contains(&poisoned))
        .ok_or_else(|| anyhow!("no round with the poison"))?;
    let mates_in_batch = poison_round
        .jobs
        .iter()
        .filter(|j| **j == mate_a || **j == mate_b)
        .count();
    e2e.check(
        "a poison message shares its batch and fails no record of it",
        mates_in_batch > 0 && poison_round.failures.is_empty() && !poison_round.function_error,
        format!("{poison_round:?}"),
    )?;
    let views = e2e.drain(&[&mate_a, &poisoned, &mate_b]).await?;
    e2e.check(
        "the poison message's job fails as unreadable; its batch-mates succeed",
        views[1]["state"] == "failed"
            && slug(&views[1]["error"]) == "unreadable-message"
            && views[0]["state"] == "succeeded"
            && views[2]["state"] == "succeeded",
        Value::Array(views.clone()),
    )?;
    let dead = e2e.dead_lettered(&poisoned).await?;
    e2e.check(
        "the poison message is kept in the dead-letter queue",
        dead,
        "not found",
    )?;
    Ok(())
}

/// An Idempotency-Key replays its job, refuses another body, and the job runs once.
async fn a_resubmission_with_the_same_key_returns_the_same_job_and_it_runs_once(
    e2e: &mut E2e,
) -> Result<()> {
    let key = format!("e2e-lambda-{}", std::process::id());
    let body = json!({"kind": "demo", "input": {"steps": 1}});
    let (first_status, _, first) = e2e
        .request(
            Method::POST,
            "/v1/jobs",
            Some(&body),
            &[("idempotency-key", &key)],
        )
        .await?;
    let (again_status, again_headers, again) = e2e
        .request(
            Method::POST,
            "/v1/jobs",
            Some(&body),
            &[("idempotency-key", &key)],
        )
        .await?;
    e2e.check(
        "a resubmission with the same Idempotency-Key returns the same job",
        first_status == 202
            && again_status == 202
            && first["id"] == again["id"]
            && again_headers
                .get("idempotent-replayed")
                .is_some_and(|v| v == "true"),
        format!("{first_status} {first} / {again_status} {again}"),
    )?;
    let (other_status, other_headers, other) = e2e
        .request(
            Method::POST,
            "/v1/jobs",
            Some(&json!({"kind": "demo", "input": {"steps": 2}})),
            &[("idempotency-key", &key)],
        )
        .await?;
    e2e.check(
        "the same Idempotency-Key with another body is a 422 problem",
        other_status == 422
            && other_headers
                .get("content-type")
                .is_some_and(|v| v == "application/problem+json"),
        format!("{other_status} {other}"),
    )?;
    let idempotent = first["id"].as_str().unwrap_or_default().to_owned();
    let views = e2e.drain(&[&idempotent]).await?;
    e2e.check(
        "the resubmitted job ran once",
        views[0]["state"] == "succeeded" && views[0]["attempts"] == 1,
        &views[0],
    )?;
    Ok(())
}

/// A function error, a timeout or an unknown itemIdentifier returns the whole batch; its jobs still run once.
async fn a_returned_batch_comes_back_and_its_jobs_run_once(e2e: &mut E2e) -> Result<()> {
    for (fault, what) in [
        (
            Fault::FunctionError,
            "a function error returns the whole batch",
        ),
        (
            Fault::Timeout,
            "a timed-out invocation returns the whole batch",
        ),
        (
            Fault::UnknownId,
            "an unknown itemIdentifier fails the whole batch",
        ),
    ] {
        let first = e2e.submit(json!({})).await?;
        let second = e2e.submit(json!({})).await?;
        let rounds = e2e.play_until_received(&fault, &[&first, &second]).await?;
        let returned = rounds.iter().all(|r| r.deleted.is_empty())
            && (!matches!(fault, Fault::FunctionError) || rounds.iter().all(|r| r.function_error));
        e2e.check(what, returned, format!("{rounds:?}"))?;
        // The returned messages come back; their jobs ran already, so they are only deleted.
        e2e.play_until_received(&Fault::None, &[&first, &second])
            .await?;
        let views = e2e.drain(&[&first, &second]).await?;
        let received = [&first, &second].map(|j| e2e.receive_counts.get(j.as_str()).copied());
        e2e.check(
            &format!("{what}: its jobs succeed once, though delivered again"),
            views
                .iter()
                .all(|v| v["state"] == "succeeded" && v["attempts"] == 1)
                && received.iter().all(|c| c.is_some_and(|c| c >= 2)),
            format!(
                "{} receive counts {received:?}",
                Value::Array(views.clone())
            ),
        )?;
    }
    Ok(())
}

/// A throttled batch comes back; attempts are counted by the store, not by receives.
async fn a_throttled_batch_comes_back_and_attempts_are_the_stores(e2e: &mut E2e) -> Result<()> {
    let throttled = e2e.submit(json!({})).await?;
    e2e.play_until_received(&Fault::Throttle, &[&throttled])
        .await?;
    e2e.play_until_received(&Fault::Throttle, &[&throttled])
        .await?;
    let views = e2e.drain(&[&throttled]).await?;
    let received = e2e.receive_counts.get(&throttled).copied().unwrap_or(0);
    e2e.check(
        "a throttled batch comes back; attempts are the store's, not the receive count",
        views[0]["state"] == "succeeded" && views[0]["attempts"] == 1 && received >= 3,
        format!("{} received {received} times", views[0]),
    )?;
    Ok(())
}

/// A message of a newer schema is returned to the queue, not dead-lettered.
async fn a_message_of_a_newer_schema_is_kept_for_a_newer_worker(e2e: &mut E2e) -> Result<()> {
    let newer_job = "2d8e7c80-3b90-4e30-9f9c-4d3b5e6f7081";
    let newer_attribute = |v: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
    };
    e2e.sqs
        .send_message()
        .queue_url(&e2e.queue_url)
        .message_body(format!(
            "{{\"v\":99,\"job\":\"{newer_job}\",\"owner\":\"anonymous\",\"generation\":0,\"correlation_id\":\"e2e\"}}"
        ))
        .message_attributes("ackflow-job-id", newer_attribute(newer_job)?)
        .message_attributes("ackflow-schema", newer_attribute("99")?)
        .send()
        .await?;
    let rounds = e2e.play_until_received(&Fault::None, &[newer_job]).await?;
    let round = rounds
        .iter()
        .find(|r| r.jobs.iter().any(|j| j == newer_job))
        .ok_or_else(|| anyhow!("no round with the newer message"))?;
    let newer_message = round
        .jobs
        .iter()
        .position(|j| j == newer_job)
        .map(|i| round.messages[i].clone())
        .unwrap_or_default();
    let kept = round.failures.contains(&newer_message) && !round.deleted.contains(&newer_message);
    e2e.check(
        "a message of a newer schema is returned for a newer worker, not dead-lettered",
        kept && !e2e.dead_lettered(newer_job).await?,
        format!("{round:?}"),
    )?;
    if let Some(receipt) = round.receipts.get(&newer_message) {
        e2e.delete(&[(newer_message.clone(), receipt.clone())])
            .await?;
    }
    Ok(())
}

/// Cancel, through the real binaries.
async fn a_cancelled_job_stays_cancelled_when_its_message_arrives(e2e: &mut E2e) -> Result<()> {
    let cancelled = e2e.submit(json!({})).await?;
    let (status, _, view) = e2e
        .request(Method::DELETE, &format!("/v1/jobs/{cancelled}"), None, &[])
        .await?;
    let views = e2e.drain(&[&cancelled]).await?;
    e2e.play(&Fault::None).await?;
    let after = e2e.job(&cancelled).await?;
    e2e.check(
        "a cancelled job stays cancelled when its message arrives",
        status == 200
            && view["state"] == "cancelled"
            && views[0]["state"] == "cancelled"
            && after["attempts"] == 0,
        &after,
    )?;
    Ok(())
}

/// Owners through the real binary: the JWT fixture event against an anonymous read.
async fn a_jwt_owners_job_is_not_another_owners(e2e: &mut E2e) -> Result<()> {
    let answer = e2e
        .invoke("api", &fixture("apigw-v2-post-job-jwt.json")?)
        .await?
        .map_err(|e| anyhow!("api failed: {e}"))?;
    let alices: Value =
        serde_json::from_str(answer["body"].as_str().unwrap_or_default()).unwrap_or(Value::Null);
    let alices_id = alices["id"].as_str().unwrap_or_default().to_owned();
    let (anonymous_status, _, _) = e2e
        .request(Method::GET, &format!("/v1/jobs/{alices_id}"), None, &[])
        .await?;
    e2e.check(
        "a JWT owner's job (fixture event) is not another owner's",
        answer["statusCode"] == 202 && !alices_id.is_empty() && anonymous_status == 404,
        format!("{answer} / {anonymous_status}"),
    )?;
    Ok(())
}

/// A message lost before it was handled is re-sent by the sweeper.
async fn the_sweeper_resends_a_lost_message(e2e: &mut E2e) -> Result<()> {
    let lost = e2e.submit(json!({})).await?;
    e2e.play_until_received(&Fault::Lose(HashSet::from([lost.clone()])), &[&lost])
        .await?;
    let view = e2e.job(&lost).await?;
    wait_past(
        &view["updated_at"],
        e2e.resend_after + Duration::from_millis(500),
    )
    .await?;
    let swept = e2e.sweep().await?;
    let views = e2e.drain(&[&lost]).await?;
    e2e.check(
        "the sweeper re-sends a lost message and the job then succeeds",
        swept["resent"].as_u64().is_some_and(|n| n >= 1) && views[0]["state"] == "succeeded",
        format!("{swept} {}", views[0]),
    )?;
    Ok(())
}

/// A job whose message is lost and whose deadline passes is failed by the sweeper.
async fn the_sweeper_fails_a_job_past_its_deadline(e2e: &mut E2e) -> Result<()> {
    let late = e2e.submit(json!({})).await?;
    e2e.play_until_received(&Fault::Lose(HashSet::from([late.clone()])), &[&late])
        .await?;
    let view = e2e.job(&late).await?;
    wait_past(&view["deadline"], Duration::from_millis(500)).await?;
    let swept = e2e.sweep().await?;
    let view = e2e.job(&late).await?;
    e2e.check(
        "the sweeper fails a job whose deadline passed (no infinite spinner)",
        swept["failed"].as_u64().is_some_and(|n| n >= 1)
            && view["state"] == "failed"
            && slug(&view["error"]) == "deadline-exceeded",
        format!("{swept} {view}"),
    )?;
    Ok(())
}

/// A processor that panics every attempt, next to a job that succeeds.
async fn a_processor_panic_fails_only_its_job_and_the_worker_serves_on(
    e2e: &mut E2e,
) -> Result<()> {
    let max_attempts = e2e.max_attempts;
    let before = worker_pid(&e2e.queue_url)?;
    let panicking = e2e.submit(json!({"panic": true})).await?;
    let mate = e2e.submit(json!({"steps": 1})).await?;
    let views = e2e.drain(&[&panicking, &mate]).await?;
    let after = worker_pid(&e2e.queue_url)?;
    let detail = views[0]["error"]["detail"].as_str().unwrap_or_default();
    e2e.check(
        "a processor panic fails only its job, after max attempts and with a human message; the same worker process serves on",
        views[0]["state"] == "failed"
            && slug(&views[0]["error"]) == "attempts-exhausted"
            && views[0]["attempts"] == max_attempts
            && detail.contains(&format!("tried {max_attempts} times"))
            && !detail.to_lowercase().contains("panic")
            && views[1]["state"] == "succeeded"
            && before.is_some()
            && before == after,
        format!("worker {before:?} then {after:?}; {}", Value::Array(views.clone())),
    )?;
    Ok(())
}

/// An enqueue that fails after the job was recorded.
async fn a_failed_enqueue_fails_the_job_and_a_keyed_retry_queues_it_again(
    e2e: &mut E2e,
) -> Result<()> {
    // SendMessage fails for real: the queue is deleted, then recreated with the same name (so
    // the same URL) and attributes. Nothing may be in flight meanwhile.
    let give_up = Instant::now() + Duration::from_secs(20);
    while e2e.queued_messages().await? > 0 {
        ensure!(Instant::now() < give_up, "the queue never emptied");
        e2e.play(&Fault::None).await?;
    }
    let (name, attributes) = e2e.delete_queue().await?;
    let key = format!("e2e-lambda-enqueue-{}", std::process::id());
    let body = json!({"kind": "demo", "input": {"steps": 1}});
    let refused = e2e
        .request(
            Method::POST,
            "/v1/jobs",
            Some(&body),
            &[("idempotency-key", &key)],
        )
        .await;
    let listed = e2e
        .request(Method::GET, "/v1/jobs?limit=1", None, &[])
        .await;
    // Restored before anything is checked, so that a failed check leaves a working queue.
    e2e.restore_queue(&name, attributes).await?;
    let (status, headers, problem) = refused?;
    let (_, _, list) = listed?;
    let unqueued = list["jobs"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let recorded = e2e.job(&unqueued).await?;
    e2e.check(
        "an enqueue that fails after the job was recorded is a 503 problem with Retry-After, and the job is failed (enqueue-failed), not left queued",
        // SQS's "queue does not exist" is a permanent error for the adapter, yet the answer is
        // 503: the job is recorded, and a retry with the same key reopens it.
        status == 503
            && headers.contains_key("retry-after")
            && headers
                .get("content-type")
                .is_some_and(|v| v == "application/problem+json")
            && recorded["state"] == "failed"
            && slug(&recorded["error"]) == "enqueue-failed",
        format!("{status} {problem} / {recorded}"),
    )?;
    let (status, _, retried) = e2e
        .request(
            Method::POST,
            "/v1/jobs",
            Some(&body),
            &[("idempotency-key", &key)],
        )
        .await?;
    let views = e2e.drain(&[&unqueued]).await?;
    e2e.check(
        "a retry with the same Idempotency-Key queues that same job again, and it succeeds",
        status == 202 && retried["id"] == unqueued.as_str() && views[0]["state"] == "succeeded",
        format!("{status} {retried} / {}", views[0]),
    )?;
    Ok(())
}

/// A message SQS itself dead-letters.
async fn a_message_sqs_dead_lettered_before_its_job_ran_does_not_strand_it(
    e2e: &mut E2e,
) -> Result<()> {
    // Received more than maxReceiveCount times and never deleted (a consumer that keeps dying
    // before it can delete): SQS moves it to the DLQ on the next receive, and the job never ran.
    let never_ran = e2e.submit(json!({})).await?;
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = e2e.receive_and_drop(&never_ran).await?;
        if !seen && e2e.dead_lettered(&never_ran).await? {
            break;
        }
        ensure!(
            Instant::now() < give_up,
            "SQS never dead-lettered the message of {never_ran}"
        );
    }
    let stranded = e2e.job(&never_ran).await?;
    wait_past(
        &stranded["updated_at"],
        e2e.resend_after + Duration::from_millis(500),
    )
    .await?;
    let swept = e2e.sweep().await?;
    let views = e2e.drain(&[&never_ran]).await?;
    let at = |v: &Value| v.as_str().and_then(ackflow_core::Timestamp::parse_rfc3339);
    let ended_in_time = matches!(
        (at(&views[0]["finished_at"]), at(&views[0]["deadline"])),
        (Some(finished), Some(deadline)) if finished <= deadline
    );
    e2e.check(
        "a message SQS dead-lettered before its job ran does not strand the job: the sweeper re-sends it and it ends by its deadline",
        stranded["state"] == "queued"
            && stranded["attempts"] == 0
            && swept["resent"].as_u64().is_some_and(|n| n >= 1)
            && views[0]["state"] == "succeeded"
            && ended_in_time,
        format!("{stranded} / {swept} / {}", views[0]),
    )?;
    Ok(())
}

/// The report, after every check above, with the table's stream folded; and again after the
/// whole stream is handed over a second time.
async fn the_report_counts_the_failures_and_sees_the_dead_letter_queue(
    e2e: &mut E2e,
) -> Result<()> {
    e2e.fold_stream().await?;
    let (status, _, report) = e2e.request(Method::GET, "/v1/report", None, &[]).await?;
    e2e.check(
        "the report, folded from the table's stream by the sweeper, counts the failures and sees the dead-letter queue",
        status == 200
            && report["counts"]["failed"].as_u64().is_some_and(|n| n >= 3)
            && report["queue"]["dead"].as_u64().is_some_and(|n| n >= 1),
        &report,
    )?;
    let folded = e2e.folded.clone();
    e2e.hand_over(&folded).await?;
    let (status, _, again) = e2e.request(Method::GET, "/v1/report", None, &[]).await?;
    let counts = |r: &Value| (r["accepted"].clone(), r["counts"].clone());
    e2e.check(
        "the stream handed over again (a retried batch) counts nothing twice",
        status == 200 && counts(&again) == counts(&report) && report["accepted"].as_u64() > Some(0),
        json!({"before": report, "after": again, "records": folded.len()}),
    )?;
    Ok(())
}
