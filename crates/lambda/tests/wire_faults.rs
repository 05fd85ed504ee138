//! The AWS path under faults on the wire: a few hundred jobs through the `api`, `worker` and
//! `sweeper` functions as they are built on Lambda (the AWS adapters, the SDK's timeouts fitted
//! into each function's timeout, the api's deadline guard), with a seeded
//! [`ackflow_testkit::wire::WireProxy`] between them and moto server that resets, hangs and
//! loses answers to writes and answers 500s, throttles and latency to any call.
//!
//! Each function runs as Lambda runs it: every invocation is cut at the function's timeout, and
//! an api invocation cut there is the bare 503 API Gateway would answer. The worker is fed as
//! the SQS event source mapping feeds it (batches received from the queue, the records not
//! reported as failures deleted), and the sweeper is invoked on its schedule. The mapping's own
//! calls are AWS's and do not cross the proxy; every call a function makes does.
//!
//! Clients behave as the answers tell them to: with an Idempotency-Key they retry a 503 with it;
//! without one they follow the job a 503 names as recorded, look at one it names as possibly
//! recorded (submitting again only on a 404), and submit again only when told nothing was
//! accepted.
//!
//! What must hold, whatever the faults:
//! - every api answer is ackflow's own: a 202, or a problem+json 503 with `Retry-After`;
//! - no function outlives its timeout (the sweeper stops starting work in time, too);
//! - an Idempotency-Key names exactly one job, and no submission's work is done by two jobs;
//! - every job reaches a terminal state within its deadline plus a sweep, its history ends
//!   with its one terminal entry, and the queue ends empty;
//! - a processor completes once per job, unless an attempt's lease truly ran out before its
//!   outcome could be written.
//!
//! `ACKFLOW_WIRE_SEED` picks the faults (default 1, what CI runs) and `ACKFLOW_WIRE_JOBS` the
//! number of submissions (default 240, over [`DEPLOYMENTS`] deployments). Needs moto server
//! (`ACKFLOW_MOTO_URL`); ignored without it, `infra/scripts/test-all` runs it. A run prints what
//! the proxy did per operation and what the clients and workers saw.

// The harness's helpers are test code too; clippy's test exemption only sees `#[test]` functions.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ackflow_aws::schema::{create_queues, create_table};
use ackflow_aws::{https_client, AwsBackend, AwsConfig, Clients, SdkBudget};
use ackflow_core::{
    Ackflow, Clock as _, Created, Deltas, FieldError, Figures, IdempotencyRecord, Job, JobContext,
    JobId, JobPart, JobState, JobStore, Kind, ListQuery, Owner, Page, PortError, ProcessError,
    Processor, Registry, Settings, SystemClock, Timestamp, WriteError,
};
use ackflow_http::{Anonymous, ApiState};
use ackflow_lambda::deadline::ANSWER_AHEAD;
use ackflow_lambda::test_support::{sqs_event, SqsRecord, QUEUE_ARN};
use ackflow_lambda::{BatchOptions, FunctionKind};
use ackflow_testkit::wire::{FaultRates, Hits, WireFault, WirePlan, WireProxy};
use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::config::retry::RetryPartition;
use aws_sdk_sqs::config::Credentials;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use axum::body::Body;
use http_body_util::BodyExt as _;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};
use tower::ServiceExt as _;

// ---- the deployment, scaled down ----------------------------------------------------------------

/// The functions' timeouts. The api's is the template's smallest; the worker's is its attempt
/// plus the template's 10 s headroom scaled down, so its lease ends 5 s before it.
const API_TIMEOUT: Duration = Duration::from_secs(7);
const WORKER_TIMEOUT: Duration = Duration::from_secs(10);
const SWEEPER_TIMEOUT: Duration = Duration::from_secs(15);
/// The queue's visibility timeout: above the worker's timeout, so that no message comes back
/// while an invocation holds it.
const VISIBILITY: Duration = Duration::from_secs(12);
/// Concurrent worker invocations (the mapping's MaximumConcurrency) and concurrent clients.
const WORKERS: usize = 4;
const CLIENTS: usize = 8;
/// The workload is spread over this many deployments, one after another, each with its own
/// table and queues: moto copies a whole table for every transaction it runs, so one table of a
/// few hundred jobs would make moto, not ackflow, what the run measures.
const DEPLOYMENTS: u64 = 3;

fn settings() -> Settings {
    let mut s = Settings::default();
    s.max_attempts = 5;
    s.worker_timeout = Duration::from_secs(4);
    s.lease_grace = Duration::from_secs(1);
    s.visibility_timeout = VISIBILITY;
    s.backoff_base = Duration::from_millis(200);
    s.backoff_max = Duration::from_secs(2);
    s.job_deadline = Duration::from_secs(60);
    s.sweep_period = Duration::from_secs(2);
    s.resend_after = VISIBILITY + s.backoff_max + Duration::from_secs(2);
    s.progress_interval = Duration::from_millis(50);
    s.check().expect("settings that can work");
    s
}

/// Faults per logical call: about a fifth of all calls, half of them on every attempt.
fn plan(seed: u64) -> WirePlan {
    WirePlan::seeded(
        seed,
        FaultRates {
            reset: 0.04,
            hang: 0.03,
            server_error: 0.04,
            throttle: 0.04,
            latency: 0.05,
        },
    )
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} is a number")))
        .unwrap_or(default)
}

// ---- the processor that counts ------------------------------------------------------------------

/// One run of the processor that got to its result.
#[derive(Debug, Clone)]
struct Completion {
    job: JobId,
    attempt: u32,
    marker: String,
    /// The worker invocation that ran it.
    invocation: u64,
}

/// One try at writing an attempt's outcome (the running job made terminal, or released).
#[derive(Debug, Clone)]
struct OutcomeTry {
    job: JobId,
    attempt: u32,
    /// Until when the attempt held the job.
    lease_end: Timestamp,
    /// When the try's answer came back: a try that hangs or is retried by the SDK ends well
    /// after it began, and it is at its end that the attempt decides whether time is left.
    answered_at: Timestamp,
    written: bool,
}

/// A worker invocation: whether Lambda would have killed it.
#[derive(Debug, Clone, Copy)]
struct Invocation {
    killed: bool,
    /// It answered at its deadline, having cut the records still running.
    cut: bool,
}

#[derive(Debug, Default)]
struct Ledger {
    completions: Mutex<Vec<Completion>>,
    invocations: Mutex<BTreeMap<u64, Invocation>>,
    outcomes: Mutex<Vec<OutcomeTry>>,
}

/// The worker's job store, noting every try at an attempt's outcome: whether a job whose
/// processor completed was run again because its lease truly ran out, or because the attempt
/// gave its outcome up too early.
#[derive(Debug)]
struct NotingOutcomes {
    store: Arc<dyn JobStore>,
    ledger: Arc<Ledger>,
}

#[async_trait]
impl JobStore for NotingOutcomes {
    async fn create(
        &self,
        job: &Job,
        input: &Value,
        key: Option<&IdempotencyRecord>,
    ) -> Result<Created, PortError> {
        self.store.create(job, input, key).await
    }

    async fn get(&self, owner: &Owner, id: JobId) -> Result<Option<Job>, PortError> {
        self.store.get(owner, id).await
    }

    async fn input(&self, owner: &Owner, id: JobId) -> Result<Option<Value>, PortError> {
        self.store.input(owner, id).await
    }

    async fn result(&self, owner: &Owner, id: JobId) -> Result<Option<Value>, PortError> {
        self.store.result(owner, id).await
    }

    async fn get_with(
        &self,
        owner: &Owner,
        id: JobId,
        part: JobPart,
    ) -> Result<Option<(Job, Option<Value>)>, PortError> {
        self.store.get_with(owner, id, part).await
    }

    async fn update(
        &self,
        before: &Job,
        after: &Job,
        result: Option<&Value>,
        deltas: &Deltas,
    ) -> Result<(), WriteError> {
        let written = self.store.update(before, after, result, deltas).await;
        let answered_at = SystemClock.now();
        if before.state == JobState::Running && after.state != JobState::Running {
            self.ledger.outcomes.lock().unwrap().push(OutcomeTry {
                job: before.id,
                attempt: before.attempts,
                lease_end: before.running_until.unwrap_or(answered_at),
                answered_at,
                written: written.is_ok(),
            });
        }
        written
    }

    async fn list(&self, owner: &Owner, query: &ListQuery) -> Result<Page, PortError> {
        self.store.list(owner, query).await
    }

    async fn figures(&self, owner: &Owner, since: Timestamp) -> Result<Figures, PortError> {
        self.store.figures(owner, since).await
    }

    async fn due_for_sweep(&self, now: Timestamp, limit: usize) -> Result<Vec<Job>, PortError> {
        self.store.due_for_sweep(now, limit).await
    }

    async fn purge_expired(&self, now: Timestamp, limit: usize) -> Result<u64, PortError> {
        self.store.purge_expired(now, limit).await
    }
}

tokio::task_local! {
    /// The worker invocation a record is handled in (the batch lifter runs its records on the
    /// invocation's task).
    static INVOCATION: u64;
}

/// `count` jobs: report progress twice, then answer with the submission's marker, noting each
/// completed run in the ledger.
#[derive(Debug)]
struct Counting {
    ledger: Arc<Ledger>,
}

#[async_trait]
impl Processor for Counting {
    fn kind(&self) -> Kind {
        Kind::parse("count").expect("a kind")
    }

    fn validate(&self, input: &Value) -> Result<(), Vec<FieldError>> {
        match input["marker"].as_str() {
            Some(_) => Ok(()),
            None => Err(vec![FieldError::new("/marker", "a string is required")]),
        }
    }

    async fn process(&self, input: Value, ctx: &JobContext) -> Result<Value, ProcessError> {
        let marker = input["marker"].as_str().unwrap_or_default().to_owned();
        ctx.progress(10, "Counting").await;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(60..160))).await;
        ctx.progress(60, "Counting on").await;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(60..160))).await;
        self.ledger.completions.lock().unwrap().push(Completion {
            job: ctx.id,
            attempt: ctx.attempt,
            marker: marker.clone(),
            invocation: INVOCATION.try_with(|i| *i).unwrap_or(u64::MAX),
        });
        Ok(json!({ "marker": marker }))
    }
}

// ---- the functions ------------------------------------------------------------------------------

fn moto_url() -> String {
    std::env::var("ACKFLOW_MOTO_URL").expect(
        "ACKFLOW_MOTO_URL is not set: run infra/scripts/test-all, or \
         export ACKFLOW_MOTO_URL=$(infra/scripts/moto start)",
    )
}

/// Clients at `url` with the SDK timeouts of `budget`, and their own retry quota.
///
/// The SDK's retry token bucket is shared by every client of a process with the same retry
/// partition. On Lambda each function instance is a process of its own; here every function of
/// every deployment and both tests share one, so each client set gets a partition of its own,
/// or the faults of one run would drain the retries of another.
async fn clients_at(url: &str, budget: SdkBudget) -> Clients {
    static PARTITIONS: AtomicU64 = AtomicU64::new(0);
    let partition = PARTITIONS.fetch_add(1, Ordering::Relaxed);
    let config = aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .timeout_config(budget.timeout_config())
        .endpoint_url(url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .load()
        .await;
    Clients {
        sqs: aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&config)
                .retry_partition(RetryPartition::new(format!("sqs-{partition}")))
                .build(),
        ),
        dynamo: aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&config)
                .retry_partition(RetryPartition::new(format!("dynamodb-{partition}")))
                .build(),
        ),
    }
}

/// A function of `kind` whose calls cross the proxy, with the SDK budget it gets on Lambda.
async fn function(
    kind: FunctionKind,
    timeout: Duration,
    proxy: &WireProxy,
    config: &AwsConfig,
    ledger: &Arc<Ledger>,
) -> Arc<Ackflow> {
    let budget = kind
        .sdk_budget(&config.settings, timeout)
        .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
    function_within(budget, proxy, config, ledger).await
}

/// A function whose calls cross the proxy with the SDK timeouts of `budget`.
async fn function_within(
    budget: SdkBudget,
    proxy: &WireProxy,
    config: &AwsConfig,
    ledger: &Arc<Ledger>,
) -> Arc<Ackflow> {
    let clients = clients_at(&proxy.url(), budget).await;
    let registry = Registry::new().with(Counting {
        ledger: ledger.clone(),
    });
    let backend = AwsBackend::new(config.clone(), &clients);
    let store: Arc<dyn JobStore> = Arc::new(NotingOutcomes {
        store: backend.store.clone(),
        ledger: ledger.clone(),
    });
    Arc::new(Ackflow::new(
        store,
        backend.queue.clone(),
        registry,
        Arc::new(SystemClock),
        config.settings.clone(),
    ))
}

/// A Lambda context whose deadline is `timeout` from now.
fn context(timeout: Duration, request_id: String) -> Context {
    let deadline = std::time::SystemTime::now() + timeout;
    let mut context = Context::default();
    context.request_id = request_id;
    context.deadline = u64::try_from(
        deadline
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    context
}

/// What a client received from the api.
#[derive(Debug)]
enum Answer {
    /// The function ran out of time: API Gateway's bare 503.
    Killed,
    Http {
        status: u16,
        retry_after: Option<String>,
        problem_json: bool,
        body: Value,
    },
}

struct Api {
    router: axum::Router,
    invocations: AtomicU64,
}

impl Api {
    async fn submit(&self, marker: &str, key: Option<&str>) -> Answer {
        let mut request =
            axum::http::Request::post("/v1/jobs").header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let body = json!({"kind": "count", "input": {"marker": marker}}).to_string();
        self.invoke(request.body(Body::from(body)).unwrap()).await
    }

    /// `GET /v1/jobs/{id}`, as a client following a job does (API Gateway routes it to the
    /// status function; the router is the same).
    async fn look(&self, job: JobId) -> Answer {
        let request = axum::http::Request::get(job.path())
            .body(Body::empty())
            .unwrap();
        self.invoke(request).await
    }

    /// One invocation, cut at the function's timeout as Lambda would.
    async fn invoke(&self, mut request: axum::http::Request<Body>) -> Answer {
        let n = self.invocations.fetch_add(1, Ordering::Relaxed);
        request
            .extensions_mut()
            .insert(context(API_TIMEOUT, format!("api-{n}")));
        let answered = tokio::time::timeout(API_TIMEOUT, async {
            let response = self.router.clone().oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let problem_json = response
                .headers()
                .get("content-type")
                .is_some_and(|v| v == "application/problem+json");
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            Answer::Http {
                status,
                retry_after,
                problem_json,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            }
        })
        .await;
        answered.unwrap_or(Answer::Killed)
    }
}

// ---- the clients --------------------------------------------------------------------------------

/// What one submission's client saw.
#[derive(Debug, Default)]
struct Submitted {
    marker: String,
    keyed: bool,
    /// Every job an answer named as accepted or recorded.
    jobs: BTreeSet<JobId>,
    /// Jobs a 503 named as possibly recorded: each exists or not.
    maybe: BTreeSet<JobId>,
    /// Answers that were not ackflow's own (killed invocations, a 503 without `Retry-After` or
    /// problem body, an unexpected status).
    foreign: Vec<String>,
    /// 503s answered.
    unavailable: u32,
    /// Whether the client ended without knowing its job (a keyless client told the request
    /// ran out of time, or that gave up).
    unknown: bool,
}

fn job_id(body: &Value, field: &str) -> Option<JobId> {
    body[field].as_str().map(|s| s.parse().expect("a job id"))
}

/// What a keyless client learns by looking at a job a 503 said may have been recorded.
enum Looked {
    Exists,
    NotFound,
    CouldNotTell,
}

async fn look(api: &Api, job: JobId, seen: &mut Submitted) -> Looked {
    for _ in 0..10 {
        match api.look(job).await {
            Answer::Http { status: 200, .. } => return Looked::Exists,
            Answer::Http { status: 404, .. } => return Looked::NotFound,
            Answer::Http { status: 503, .. } => {}
            Answer::Killed => seen
                .foreign
                .push("the status function was killed".to_owned()),
            Answer::Http { status, body, .. } => {
                seen.foreign
                    .push(format!("looking: an unexpected {status}: {body}"));
                return Looked::CouldNotTell;
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    Looked::CouldNotTell
}

async fn submit(api: &Api, marker: String, keyed: bool) -> Submitted {
    let key = keyed.then(|| format!("key-{marker}"));
    let mut seen = Submitted {
        marker: marker.clone(),
        keyed,
        ..Submitted::default()
    };
    for _ in 0..20 {
        match api.submit(&marker, key.as_deref()).await {
            Answer::Killed => {
                seen.foreign
                    .push("the api was killed at its timeout".to_owned());
                if !keyed {
                    seen.unknown = true;
                    return seen;
                }
            }
            Answer::Http {
                status: 202, body, ..
            } => {
                seen.jobs
                    .insert(job_id(&body, "id").expect("a 202 names its job"));
                return seen;
            }
            Answer::Http {
                status: 503,
                retry_after,
                problem_json,
                body,
            } => {
                seen.unavailable += 1;
                if retry_after.is_none() || !problem_json {
                    seen.foreign
                        .push(format!("a 503 without Retry-After or problem: {body}"));
                }
                let detail = body["detail"].as_str().unwrap_or_default();
                let named = job_id(&body, "job_id");
                let uncertain = detail.contains("could not confirm whether");
                match named {
                    Some(job) if uncertain => {
                        seen.maybe.insert(job);
                    }
                    Some(job) => {
                        seen.jobs.insert(job);
                    }
                    None => {}
                }
                if !keyed {
                    match named {
                        // Follow the recorded job instead of submitting the work again.
                        Some(_) if !uncertain => return seen,
                        // Look first; only a 404 means nothing was recorded.
                        Some(job) => match look(api, job, &mut seen).await {
                            Looked::Exists => return seen,
                            Looked::NotFound => {}
                            Looked::CouldNotTell => {
                                seen.unknown = true;
                                return seen;
                            }
                        },
                        None if detail.contains("nothing was accepted") => {}
                        None => {
                            seen.unknown = true;
                            return seen;
                        }
                    }
                }
            }
            Answer::Http { status, body, .. } => {
                seen.foreign.push(format!("an unexpected {status}: {body}"));
                return seen;
            }
        }
        // Retry-After, scaled down as every duration here is.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    seen.unknown = true;
    seen
}

// ---- the event sources --------------------------------------------------------------------------

/// The SQS event source mapping: receives batches from the queue (AWS's own calls, not through
/// the proxy), invokes the worker with each, cut at its timeout, and deletes the records not
/// reported as failures.
async fn event_source(
    direct: Clients,
    queue_url: String,
    worker: Arc<Ackflow>,
    ledger: Arc<Ledger>,
    next_invocation: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let received = direct
            .sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await;
        // The mapping polls again after a failed poll, as AWS's does (moto can fall behind).
        let Ok(received) = received else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let messages = received.messages().to_vec();
        if messages.is_empty() {
            continue;
        }
        let records: Vec<SqsRecord> = messages
            .iter()
            .map(|m| SqsRecord::from_message(m, QUEUE_ARN))
            .collect();
        let n = next_invocation.fetch_add(1, Ordering::Relaxed);
        let invoked = Instant::now();
        let event = LambdaEvent::new(
            sqs_event(records),
            context(WORKER_TIMEOUT, format!("worker-{n}")),
        );
        let options = BatchOptions::default();
        let run = INVOCATION.scope(n, ackflow_lambda::process_batch(&worker, event, &options));
        let outcome = tokio::time::timeout(WORKER_TIMEOUT, run).await;
        let took = invoked.elapsed();
        ledger.invocations.lock().unwrap().insert(
            n,
            Invocation {
                killed: outcome.is_err(),
                cut: took >= WORKER_TIMEOUT - ANSWER_AHEAD - Duration::from_millis(50),
            },
        );
        let Ok(Ok(response)) = outcome else {
            continue;
        };
        let failed: BTreeSet<String> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        for message in &messages {
            if failed.contains(message.message_id().unwrap_or_default()) {
                continue;
            }
            let deleted = direct
                .sqs
                .delete_message()
                .queue_url(&queue_url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await;
            // A failed delete leaves the message to come back after its visibility timeout,
            // when the worker finds its job at rest and lets it go; a handle made stale by a
            // later receive deletes nothing (SQS answers success, moto, patched to act on the
            // latest handle only, ReceiptHandleIsInvalid).
            drop(deleted);
        }
    }
}

/// The schedule: a sweep every sweep period, each invocation cut at the sweeper's timeout.
async fn schedule(
    sweeper: Arc<Ackflow>,
    killed: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let event = LambdaEvent::new(json!({}), context(SWEEPER_TIMEOUT, format!("sweep-{n}")));
        if tokio::time::timeout(SWEEPER_TIMEOUT, ackflow_lambda::sweep(&sweeper, event))
            .await
            .is_err()
        {
            killed.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(sweeper.settings().sweep_period).await;
    }
}

/// Whether the queue holds nothing, visible, in flight or delayed (false when moto cannot say).
async fn queue_is_empty(direct: &Clients, queue_url: &str) -> bool {
    let attributes = direct
        .sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await;
    let Ok(attributes) = attributes else {
        return false;
    };
    attributes
        .attributes()
        .into_iter()
        .flatten()
        .all(|(_, v)| v == "0")
}

// ---- one submission whose every call hangs -----------------------------------------------------

/// The api's answer to one keyless submission whose create hangs on every attempt and whose
/// read-back fails, its SDK calls bounded by `budget`, behind the deadline guard when `guarded`.
async fn a_hung_submission(budget: SdkBudget, guarded: bool) -> Answer {
    let direct = clients_at(&moto_url(), SdkBudget::DEFAULT).await;
    let config = deployment_named(&direct, "wire-hung").await;
    let proxy = WireProxy::start(&moto_url(), WirePlan::quiet())
        .await
        .expect("proxy");
    proxy.script(
        "TransactWriteItems",
        WireFault::HangAfterForward,
        Hits::EveryAttempt,
    );
    proxy.script("GetItem", WireFault::ServerError, Hits::EveryAttempt);
    let app = function_within(budget, &proxy, &config, &Arc::new(Ledger::default())).await;
    let router = ackflow_http::router(ApiState::new(app, Arc::new(Anonymous)));
    let api = Api {
        router: if guarded {
            ackflow_lambda::answer_before_deadline(router)
        } else {
            router
        },
        invocations: AtomicU64::new(0),
    };
    api.submit("hung", None).await
}

#[tokio::test]
#[ignore = "needs moto server: run infra/scripts/test-all"]
async fn a_submission_whose_calls_all_hang_is_answered_by_ackflow_within_the_api_timeout() {
    let fitted = FunctionKind::Api
        .sdk_budget(&settings(), API_TIMEOUT)
        .expect("fits");
    // As deployed: the use case itself answers, in time, naming the job it may have recorded.
    match a_hung_submission(fitted, true).await {
        Answer::Http {
            status: 503,
            retry_after: Some(_),
            problem_json: true,
            body,
        } => assert!(job_id(&body, "job_id").is_some(), "names the job: {body}"),
        other => panic!("not ackflow's 503: {other:?}"),
    }
    // With the fixed bounds every function had before (5 s an attempt, 15 s a call) and no
    // guard, Lambda kills the function and the client gets API Gateway's bare 503.
    assert!(matches!(
        a_hung_submission(SdkBudget::DEFAULT, false).await,
        Answer::Killed
    ));
    // The guard alone still answers with ackflow's own 503.
    match a_hung_submission(SdkBudget::DEFAULT, true).await {
        Answer::Http {
            status: 503,
            retry_after: Some(_),
            problem_json: true,
            ..
        } => {}
        other => panic!("not ackflow's 503: {other:?}"),
    }
}

// ---- the run ------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs moto server: run infra/scripts/test-all"]
async fn under_faults_on_the_wire_every_job_ends_once_and_every_answer_is_ackflows_own() {
    // The functions' logs, when asked for (ACKFLOW_LOG=warn, say): what a violation's job went
    // through.
    if std::env::var_os(ackflow_lambda::telemetry::LOG_FILTER).is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env(
                ackflow_lambda::telemetry::LOG_FILTER,
            ))
            .with_test_writer()
            .try_init();
    }
    let seed = env_number("ACKFLOW_WIRE_SEED", 1);
    let jobs = env_number("ACKFLOW_WIRE_JOBS", 240);
    let mut violations = Vec::new();
    for deployment in 0..DEPLOYMENTS {
        violations.extend(run(seed, deployment, jobs / DEPLOYMENTS).await);
    }
    assert!(
        violations.is_empty(),
        "seed {seed}: {} violations, the first: {:#?}",
        violations.len(),
        &violations[..violations.len().min(40)]
    );
}

/// A fresh queue pair and table, named after `prefix` and the time.
async fn deployment_named(direct: &Clients, prefix: &str) -> AwsConfig {
    let settings = settings();
    let name = format!(
        "{prefix}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let (queue_url, dlq_url) = create_queues(
        &direct.sqs,
        &name,
        settings.max_receive_count(),
        u32::try_from(VISIBILITY.as_secs()).unwrap(),
    )
    .await
    .expect("queues");
    create_table(&direct.dynamo, &name).await.expect("table");
    AwsConfig {
        queue_url,
        dlq_url,
        table: name,
        settings,
    }
}

/// One deployment's run: `submissions` jobs under the faults of `seed` (drawn anew for each
/// deployment), and what did not hold.
async fn run(seed: u64, deployment: u64, submissions: u64) -> Vec<String> {
    let moto = moto_url();
    let direct = clients_at(&moto, SdkBudget::DEFAULT).await;
    let settings = settings();

    let config = deployment_named(&direct, &format!("wire-{seed}-{deployment}")).await;
    let queue_url = config.queue_url.clone();

    let proxy = WireProxy::start(
        &moto,
        plan(seed.wrapping_mul(1000).wrapping_add(deployment)),
    )
    .await
    .expect("proxy");
    let ledger = Arc::new(Ledger::default());
    let api_app = function(FunctionKind::Api, API_TIMEOUT, &proxy, &config, &ledger).await;
    let worker = function(
        FunctionKind::Worker,
        WORKER_TIMEOUT,
        &proxy,
        &config,
        &ledger,
    )
    .await;
    let sweeper = function(
        FunctionKind::Sweeper,
        SWEEPER_TIMEOUT,
        &proxy,
        &config,
        &ledger,
    )
    .await;
    // What the test reads to check, past the proxy.
    let reader = {
        let registry = Registry::new().with(Counting {
            ledger: Arc::new(Ledger::default()),
        });
        AwsBackend::new(config.clone(), &direct).ackflow(registry, Arc::new(SystemClock))
    };
    let api = Arc::new(Api {
        router: ackflow_lambda::answer_before_deadline(ackflow_http::router(ApiState::new(
            api_app,
            Arc::new(Anonymous),
        ))),
        invocations: AtomicU64::new(0),
    });

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let next_invocation = Arc::new(AtomicU64::new(0));
    let sweeps_killed = Arc::new(AtomicU64::new(0));
    let mut sources = Vec::new();
    for _ in 0..WORKERS {
        sources.push(tokio::spawn(event_source(
            direct.clone(),
            queue_url.clone(),
            worker.clone(),
            ledger.clone(),
            next_invocation.clone(),
            stop.clone(),
        )));
    }
    sources.push(tokio::spawn(schedule(
        sweeper.clone(),
        sweeps_killed.clone(),
        stop.clone(),
    )));

    // The clients: half with an Idempotency-Key, half without.
    let started = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel::<(String, bool)>(submissions as usize);
    for i in 0..submissions {
        tx.send((format!("s{i}"), i % 2 == 0)).await.unwrap();
    }
    drop(tx);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (api, rx) = (api.clone(), rx.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let next = rx.lock().await.recv().await;
                let Some((marker, keyed)) = next else {
                    return seen;
                };
                seen.push(submit(&api, marker, keyed).await);
            }
        }));
    }
    let mut submitted = Vec::new();
    for client in clients {
        submitted.extend(client.await.unwrap());
    }
    let submitted_in = started.elapsed();

    // Every job any client heard of or any worker ran comes to rest.
    let owner = Owner::anonymous();
    let mut jobs: BTreeSet<JobId> = submitted.iter().flat_map(|s| s.jobs.clone()).collect();
    let bound = settings.job_deadline + settings.sweep_period + SWEEPER_TIMEOUT;
    let give_up = Instant::now() + bound + Duration::from_secs(10);
    let mut at_rest: BTreeMap<JobId, Job> = BTreeMap::new();
    // A job a 503 said may have been recorded is expected only once it is found.
    let maybe: BTreeSet<JobId> = submitted.iter().flat_map(|s| s.maybe.clone()).collect();
    loop {
        jobs.extend(ledger.completions.lock().unwrap().iter().map(|c| c.job));
        for id in maybe.difference(&jobs.clone()) {
            if let Ok(Some(_)) = reader.store().get(&owner, *id).await {
                jobs.insert(*id);
            }
        }
        for id in &jobs {
            if at_rest.contains_key(id) {
                continue;
            }
            if let Ok(Some(job)) = reader.store().get(&owner, *id).await {
                if job.state.is_terminal() {
                    at_rest.insert(*id, job);
                }
            }
        }
        if at_rest.len() == jobs.len() && queue_is_empty(&direct, &queue_url).await {
            break;
        }
        if Instant::now() >= give_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for source in sources {
        source.await.unwrap();
    }

    // ---- what held, and what did not --------------------------------------------------------
    let mut violations = Vec::new();
    for id in jobs.iter().filter(|id| !at_rest.contains_key(id)) {
        let stored = reader.store().get(&owner, *id).await.ok().flatten();
        violations.push(format!(
            "{id}: not at rest after {:?}: {:?}",
            started.elapsed(),
            stored.map(|j| (j.state, j.history))
        ));
    }
    if !queue_is_empty(&direct, &queue_url).await {
        violations.push("the queue still holds messages".to_owned());
    }
    for s in &submitted {
        for f in &s.foreign {
            violations.push(format!("{}: {f}", s.marker));
        }
        let named: BTreeSet<JobId> = s
            .jobs
            .iter()
            .chain(s.maybe.iter().filter(|id| jobs.contains(id)))
            .copied()
            .collect();
        if s.keyed && named.len() != 1 {
            violations.push(format!("{}: its key named {named:?}", s.marker));
        }
        if !s.keyed && named.len() > 1 {
            violations.push(format!("{}: answers named {named:?}", s.marker));
        }
    }
    let completions = ledger.completions.lock().unwrap().clone();
    let invocations = ledger.invocations.lock().unwrap().clone();
    let mut by_marker: BTreeMap<&str, BTreeSet<JobId>> = BTreeMap::new();
    let mut by_job: BTreeMap<JobId, Vec<&Completion>> = BTreeMap::new();
    for c in &completions {
        by_marker.entry(&c.marker).or_default().insert(c.job);
        by_job.entry(c.job).or_default().push(c);
    }
    for (marker, ran) in &by_marker {
        if ran.len() > 1 {
            violations.push(format!("{marker}: its work was done by {ran:?}"));
        }
    }
    // A job runs again legitimately when an attempt that completed could not write its outcome
    // for as long as its lease lasted (every try failed, and the last was answered within one
    // retry delay, at most 1.6 s, of the lease's end or past it), or when its invocation was cut at its
    // deadline (or killed, which is a violation of its own).
    let outcomes = ledger.outcomes.lock().unwrap().clone();
    let (mut redone, mut redone_after_lease) = (0, 0);
    for (job, runs) in &by_job {
        for earlier in &runs[..runs.len() - 1] {
            redone += 1;
            let tries: Vec<&OutcomeTry> = outcomes
                .iter()
                .filter(|t| t.job == *job && t.attempt == earlier.attempt)
                .collect();
            let out_of_time = invocations
                .get(&earlier.invocation)
                .is_some_and(|i| i.killed || i.cut);
            let lease_ran_out = !tries.is_empty()
                && tries.iter().all(|t| !t.written)
                && tries.iter().any(|t| {
                    t.answered_at >= t.lease_end
                        || t.lease_end.since(t.answered_at) <= Duration::from_millis(2500)
                });
            if out_of_time || lease_ran_out {
                redone_after_lease += 1;
            } else {
                violations.push(format!(
                    "{job}: completed again although attempt {} gave its outcome up within its lease: {tries:?}",
                    earlier.attempt
                ));
            }
        }
    }
    let killed_workers = invocations.values().filter(|i| i.killed).count();
    if killed_workers > 0 {
        violations.push(format!(
            "{killed_workers} worker invocations outlived their timeout"
        ));
    }
    let killed_sweeps = sweeps_killed.load(Ordering::Relaxed);
    if killed_sweeps > 0 {
        violations.push(format!("{killed_sweeps} sweeps outlived their timeout"));
    }
    let mut states: BTreeMap<&'static str, u32> = BTreeMap::new();
    for (id, job) in &at_rest {
        *states.entry(job.state.as_str()).or_default() += 1;
        // One terminal entry per generation: a terminal entry is the last, or followed by the
        // reopening of a job whose message never made it to the queue.
        let reopened_only = job
            .history
            .windows(2)
            .all(|w| !w[0].state.is_terminal() || w[1].state == JobState::Queued);
        if !reopened_only || !job.history.last().is_some_and(|h| h.state.is_terminal()) {
            violations.push(format!("{id}: history {:?}", job.history));
        }
        let took = job
            .finished_at
            .map(|f| f.since(job.submitted_at))
            .unwrap_or_default();
        if took > bound {
            violations.push(format!("{id}: at rest {took:?} after it was submitted"));
        }
        if job.state == JobState::Succeeded && !by_job.contains_key(id) {
            violations.push(format!("{id}: succeeded without its processor completing"));
        }
    }

    // moto keeps what it was given for as long as it runs: the next deployment (and the rest of
    // the suite) should not pay for this one's table.
    let _ = direct
        .dynamo
        .delete_table()
        .table_name(&config.table)
        .send()
        .await;
    for queue in [&config.queue_url, &config.dlq_url] {
        let _ = direct.sqs.delete_queue().queue_url(queue).send().await;
    }
    let stats = proxy.stats();
    println!(
        "seed {seed}, deployment {deployment}: {submissions} submissions in {submitted_in:?}, {} jobs at rest after {:?}\n\
         states {states:?}; 503s answered {}; clients left not knowing their job {}\n\
         processor completions {}, redone {redone} (after a spent lease {redone_after_lease}); \
         worker invocations {} (cut at their deadline {}); sweeps killed {}\n{stats}",
        at_rest.len(),
        started.elapsed(),
        submitted.iter().map(|s| s.unavailable).sum::<u32>(),
        submitted.iter().filter(|s| s.unknown).count(),
        completions.len(),
        invocations.len(),
        invocations.values().filter(|i| i.cut).count(),
        sweeps_killed.load(Ordering::Relaxed),
    );
    if stats.total().faulted.values().sum::<u64>() == 0 {
        violations.push("the plan injected no fault: the run proves nothing".to_owned());
    }
    violations
}
