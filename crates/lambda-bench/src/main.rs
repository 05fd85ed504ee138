//! `runtime-stub`: execs one Lambda function binary against a stub of the Lambda Runtime API
//! on 127.0.0.1 and measures it, as `infra/scripts/bench-lambda` runs it:
//!
//! ```text
//! runtime-stub --function api|status|worker|sweeper|fold|hello --binary PATH
//!              [--n N] [--batch K] [--moto-pid PID] [--panic-check] [--log FILE] [--events DIR]
//!              [--connections keep-alive|close]
//! ```
//!
//! 1. Before the function starts, on the moto server the SDK is pointed at (`AWS_ENDPOINT_URL`):
//!    a fresh queue, dead-letter queue and table for this run, and the events — `api`: `POST
//!    /v1/jobs` of a demo job (infra/events/apigw-v2-post-job.json without its Idempotency-Key,
//!    so each one creates a job); `status`: `GET /v1/jobs/{id}` of a job accepted through the
//!    core; `worker`: (N + 1) × K demo jobs accepted through the core (as `api` does), their
//!    messages received from the queue and wrapped K records to an SQS event (`--batch K`,
//!    1 to 10, default 1);
//!    `sweeper`: the scheduled event; `fold` (the `sweeper` binary): (N + 1) × K demo jobs
//!    accepted and worked through the core, and the job header records of the table's stream,
//!    the records of K jobs to a stream batch (`--batch K`: jobs per batch, as a batching window
//!    gathers them); `hello`: `{}`. (`hello` needs no moto.)
//! 2. Execs the binary with the environment of a Lambda sandbox (`AWS_LAMBDA_RUNTIME_API`, the
//!    function's name, memory, version) plus its queue and table, and times exec → its first
//!    `next` request (init), then the first invocation (handed out → answered), then N more
//!    (warm), reading the CPU time of the function's process and of moto server's
//!    (`--moto-pid`) from /proc just before and after those N.
//! 3. Checks every answer (`api` 202, `status` 200, `worker` no batch item failure) and prints
//!    one line: `stub: function=NAME init_ms=… init_cpu_ms=… first_ms=… warm_p50_ms=…
//!    warm_p90_ms=… cpu_us=… moto_cpu_us=… calls=… wcu=… rcu=… ops=… n=N` (`init_cpu_ms`: the
//!    function's own CPU time by its first `next`; `calls`, `wcu`, `rcu` and each operation in
//!    `ops`: per warm invocation, counted by the [`tally`] proxy the function reaches moto
//!    through; `log_bytes`: what it wrote to stdout and stderr per warm invocation, with
//!    `--log`). Exits non-zero when an answer is wrong, the function
//!    reports an error or dies.
//!
//! `--panic-check` (worker): the first job is a demo job with `"panic": true`; its invocation
//! must answer with that record as a batch item failure, and the process must still be there to
//! answer the N invocations after it (catching a processor's panic needs unwinding: the release
//! profile must never set `panic = "abort"`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ackflow_aws::schema::{create_queues, create_table};
use ackflow_aws::Clients;
use ackflow_core::service::Submission;
use ackflow_core::{CorrelationId, Owner};
use ackflow_lambda::test_support::{sqs_event, SqsRecord};
use ackflow_lambda::FunctionConfig;
use ackflow_lambda_bench::runtime_api::{Invocation, RuntimeApi, Seen};
use ackflow_lambda_bench::tally::{self, Connections, Counts};
use ackflow_lambda_bench::{check_response, percentile, process_cpu, Target};
use ackflow_testkit::stream::StreamTail;
use anyhow::{anyhow, bail, ensure, Context as _, Result};
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName};
use serde_json::{json, Value};

/// How long the function may take to start and to answer one invocation before the run fails.
const INIT_LIMIT: Duration = Duration::from_secs(60);
const INVOCATION_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Args {
    target: Target,
    name: String,
    binary: PathBuf,
    n: usize,
    batch: usize,
    moto_pid: Option<u32>,
    panic_check: bool,
    log: Option<PathBuf>,
    events: PathBuf,
    connections: Connections,
}

fn parse_args() -> Result<Args> {
    let mut args = std::env::args().skip(1);
    let mut name = None;
    let mut binary = None;
    let mut n = 20;
    let mut batch = 1;
    let mut moto_pid = None;
    let mut panic_check = false;
    let mut log = None;
    let mut events = PathBuf::from("infra/events");
    let mut connections = Connections::default();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow!("{arg} needs a value"));
        match arg.as_str() {
            "--function" => name = Some(value()?),
            "--binary" => binary = Some(PathBuf::from(value()?)),
            "--n" => n = value()?.parse().context("--n")?,
            "--batch" => batch = value()?.parse().context("--batch")?,
            "--moto-pid" => moto_pid = Some(value()?.parse().context("--moto-pid")?),
            "--panic-check" => panic_check = true,
            "--log" => log = Some(PathBuf::from(value()?)),
            "--events" => events = PathBuf::from(value()?),
            "--connections" => {
                connections = match value()?.as_str() {
                    "keep-alive" => Connections::KeepAlive,
                    "close" => Connections::Close,
                    other => bail!("--connections must be keep-alive or close, not {other:?}"),
                }
            }
            other => bail!("unknown argument {other:?} (see the doc comment of runtime-stub)"),
        }
    }
    let name = name.ok_or_else(|| anyhow!("--function is required"))?;
    let target = Target::from_name(&name)
        .ok_or_else(|| anyhow!("--function must be api, status, worker, sweeper, fold or hello"))?;
    ensure!(
        !panic_check || target == Target::Worker,
        "--panic-check is for the worker"
    );
    ensure!(
        (1..=10).contains(&batch)
            && (batch == 1 || matches!(target, Target::Worker | Target::Fold)),
        "--batch is for the worker, 1 to 10 records (an SQS batch), and fold, 1 to 10 jobs"
    );
    Ok(Args {
        target,
        name,
        binary: binary.ok_or_else(|| anyhow!("--binary is required"))?,
        n,
        batch,
        moto_pid,
        panic_check,
        log,
        events,
        connections,
    })
}

/// One event to hand out and the batch item failures its answer must report.
#[derive(Debug, Clone)]
struct Planned {
    event: Value,
    failed: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let (vars, plan) = if args.target == Target::Hello {
        let plan = (0..=args.n)
            .map(|i| Planned {
                event: json!({ "hello": i }),
                failed: Vec::new(),
            })
            .collect();
        (HashMap::new(), plan)
    } else {
        prepare(&args).await?
    };
    let report = drive(&args, &vars, &plan).await?;
    println!("{report}");
    Ok(())
}

/// Creates this run's queue and table and plans its N + 1 events.
async fn prepare(args: &Args) -> Result<(HashMap<String, String>, Vec<Planned>)> {
    let clients = Clients::from_env().await;
    let settings = ackflow_core::Settings::from_lookup(ackflow_core::Settings::default(), |n| {
        std::env::var(n).ok()
    })
    .context("the ACKFLOW_ knobs")?;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let name = format!("bench-{}-{}-{stamp}", args.name, std::process::id());
    let visibility = u32::try_from(settings.visibility_timeout.as_secs()).unwrap_or(u32::MAX);
    let (queue_url, dlq_url) = create_queues(
        &clients.sqs,
        &name,
        settings.max_receive_count(),
        visibility,
    )
    .await
    .map_err(|e| anyhow!(ackflow_core::error_chain(&e)))?;
    create_table(&clients.dynamo, &name)
        .await
        .map_err(|e| anyhow!(ackflow_core::error_chain(&e)))?;
    let vars: HashMap<String, String> = [
        (ackflow_aws::env::QUEUE_URL, queue_url.clone()),
        (ackflow_aws::env::DLQ_URL, dlq_url),
        (ackflow_aws::env::TABLE, name.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config =
        FunctionConfig::from_lookup(|k| vars.get(k).cloned().or_else(|| std::env::var(k).ok()))
            .map_err(|e| anyhow!(ackflow_core::error_chain(&e)))?;
    ensure!(
        config.demo,
        "the benchmark submits demo jobs: set ACKFLOW_DEMO=true"
    );
    let function = ackflow_lambda::function_from(config, &clients)
        .await
        .map_err(|e| anyhow!(ackflow_core::error_chain(&e)))?;
    let count = args.n + 1;
    let plan = match args.target {
        Target::Api => {
            let mut event = fixture(&args.events, "apigw-v2-post-job.json")?;
            if let Some(headers) = event["headers"].as_object_mut() {
                headers.remove("idempotency-key");
                headers.remove("content-length");
            }
            event["body"] = json!(r#"{"kind":"demo","input":{}}"#);
            vec![
                Planned {
                    event,
                    failed: Vec::new()
                };
                count
            ]
        }
        Target::Status => {
            let job = accept(&function, json!({})).await?;
            let mut event = fixture(&args.events, "apigw-v2-get-job.json")?;
            let path = format!("/v1/jobs/{job}");
            event["rawPath"] = json!(path);
            event["requestContext"]["http"]["path"] = json!(path);
            event["pathParameters"]["id"] = json!(job);
            vec![
                Planned {
                    event,
                    failed: Vec::new()
                };
                count
            ]
        }
        Target::Sweeper => vec![
            Planned {
                event: fixture(&args.events, "scheduled.json")?,
                failed: Vec::new()
            };
            count
        ],
        Target::Worker => worker_plan(args, &function, &clients.sqs, &queue_url, &name).await?,
        Target::Fold => fold_plan(args, &function, &name).await?,
        Target::Hello => Vec::new(),
    };
    Ok((vars, plan))
}

fn fixture(dir: &Path, name: &str) -> Result<Value> {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}", path.display()))
}

/// Accepts a demo job through the core, as `api` does; returns its id.
async fn accept(function: &ackflow_lambda::Function, input: Value) -> Result<String> {
    let accepted = function
        .app
        .accept(Submission {
            owner: Owner::anonymous(),
            kind: "demo".to_owned(),
            input,
            idempotency_key: None,
            correlation_id: CorrelationId::random(),
            trace_header: None,
        })
        .await
        .map_err(|e| anyhow!(ackflow_core::error_chain(&e)))?;
    Ok(accepted.job.id.to_string())
}

/// N + 1 jobs (the first one panicking with `--panic-check`), their messages received, one SQS
/// event of one record each, in the order the jobs were accepted.
async fn worker_plan(
    args: &Args,
    function: &ackflow_lambda::Function,
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    name: &str,
) -> Result<Vec<Planned>> {
    let mut jobs = Vec::new();
    for i in 0..(args.n + 1) * args.batch {
        let input = if args.panic_check && i == 0 {
            json!({ "panic": true })
        } else {
            json!({})
        };
        jobs.push(accept(function, input).await?);
    }
    let mut records: HashMap<String, Value> = HashMap::new();
    let started = Instant::now();
    while records.len() < jobs.len() {
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "only {} of {} job messages came back from the queue",
            records.len(),
            jobs.len()
        );
        let received = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .context("receive the job messages")?;
        for message in received.messages() {
            let job = message
                .message_attributes()
                .and_then(|a| a.get("ackflow-job-id"))
                .and_then(MessageAttributeValue::string_value)
                .unwrap_or_default()
                .to_owned();
            records.insert(
                job,
                SqsRecord::from_message(
                    message,
                    format!("arn:aws:sqs:us-east-1:123456789012:{name}"),
                )
                .into_value(),
            );
        }
    }
    jobs.chunks(args.batch)
        .enumerate()
        .map(|(i, batch)| {
            let batch = batch
                .iter()
                .map(|job| {
                    records
                        .remove(job)
                        .ok_or_else(|| anyhow!("no message for job {job}"))
                })
                .collect::<Result<Vec<_>>>()?;
            let failed = if args.panic_check && i == 0 {
                vec![batch[0]["messageId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()]
            } else {
                Vec::new()
            };
            Ok(Planned {
                event: sqs_event(batch),
                failed,
            })
        })
        .collect()
}

/// N + 1 stream batches, each the job header records of K jobs accepted and worked through the
/// core, in stream order: what the table's stream mapping hands the `sweeper`.
async fn fold_plan(
    args: &Args,
    function: &ackflow_lambda::Function,
    table: &str,
) -> Result<Vec<Planned>> {
    let mut jobs = Vec::new();
    for _ in 0..(args.n + 1) * args.batch {
        jobs.push(accept(function, json!({})).await?);
    }
    let started = Instant::now();
    let mut done = 0;
    while done < jobs.len() {
        ensure!(
            started.elapsed() < Duration::from_secs(120),
            "only {done} of {} jobs were worked",
            jobs.len()
        );
        for received in function
            .app
            .receive(10)
            .await
            .map_err(|e| anyhow!(ackflow_core::error_chain(&e)))?
        {
            function
                .app
                .work(&received)
                .await
                .map_err(|e| anyhow!(ackflow_core::error_chain(&e)))?;
            done += 1;
        }
    }
    let endpoint = std::env::var("AWS_ENDPOINT_URL").context("AWS_ENDPOINT_URL")?;
    let records = StreamTail::new(&endpoint, table)
        .next_records()
        .await
        .map_err(|e| anyhow!("the table's stream: {e}"))?;
    let mut batches: Vec<Vec<Value>> = vec![Vec::new(); args.n + 1];
    for record in records {
        // Job headers only, as the template's filter; each job's records to its batch.
        if record["dynamodb"]["Keys"]["SK"]["S"] != ackflow_aws::dynamo::HEADER {
            continue;
        }
        let pk = record["dynamodb"]["Keys"]["PK"]["S"].as_str().unwrap_or("");
        let job = pk.strip_prefix("JOB#").unwrap_or(pk);
        let index = jobs
            .iter()
            .position(|j| j == job)
            .ok_or_else(|| anyhow!("a record of an unknown job {job}"))?;
        batches[index / args.batch].push(record);
    }
    Ok(batches
        .into_iter()
        .map(|records| Planned {
            event: json!({ "Records": records }),
            failed: Vec::new(),
        })
        .collect())
}

/// Kills the function when the run ends, however it ends.
struct Function(Child);

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for what the function does next; fails when it dies or takes longer than `limit`.
async fn seen(api: &mut RuntimeApi, function: &mut Function, limit: Duration) -> Result<Seen> {
    let started = Instant::now();
    loop {
        if let Some(seen) = api.next_event(Duration::from_millis(50)).await {
            return Ok(seen);
        }
        if let Some(status) = function.0.try_wait().context("the function's status")? {
            bail!("the function exited ({status})");
        }
        ensure!(
            started.elapsed() < limit,
            "the function did nothing for {limit:?}"
        );
    }
}

fn millis(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Runs the function through `plan` and returns the report line.
async fn drive(args: &Args, vars: &HashMap<String, String>, plan: &[Planned]) -> Result<String> {
    let ticks = clock_ticks()?;
    let mut api = RuntimeApi::start().await?;
    let mut command = Command::new(&args.binary);
    // The function reaches moto through the counting proxy; this stub's own setup went direct.
    let tally = match args.target {
        Target::Hello => None,
        _ => {
            let (proxy, tally) = tally::start(moto_addr()?, args.connections).await?;
            command.env("AWS_ENDPOINT_URL", format!("http://{proxy}"));
            Some(tally)
        }
    };
    command
        .envs(vars)
        .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", &args.name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", args.name),
        )
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .stdin(Stdio::null());
    match &args.log {
        Some(path) => {
            let log = std::fs::File::create(path).with_context(|| format!("{}", path.display()))?;
            command.stdout(log.try_clone()?).stderr(log);
        }
        None => {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    let arn = format!(
        "arn:aws:lambda:us-east-1:123456789012:function:{}",
        args.name
    );
    let execed = Instant::now();
    let mut function = Function(
        command
            .spawn()
            .with_context(|| format!("exec {}", args.binary.display()))?,
    );
    let pid = function.0.id();

    let mut init = None;
    let mut init_cpu = None;
    let mut first = None;
    let mut warm = Vec::with_capacity(plan.len());
    let mut cpu_before = Duration::ZERO;
    let mut moto_before = Duration::ZERO;
    let mut calls_before = Counts::default();
    let mut log_before = 0;
    for (i, planned) in plan.iter().enumerate() {
        // Hand out each invocation when the function asks for it, as Lambda does.
        let limit = if i == 0 { INIT_LIMIT } else { INVOCATION_LIMIT };
        let asked = match seen(&mut api, &mut function, limit).await? {
            Seen::Next { at } => at,
            Seen::InitError { body } => {
                bail!("init error: {}", String::from_utf8_lossy(&body))
            }
            other => bail!("unexpected before invocation {i}: {other:?}"),
        };
        if i == 0 {
            init = Some(asked.duration_since(execed));
            // What init cost the function itself, apart from waiting on the emulator.
            init_cpu = Some(process_cpu(pid, ticks)?);
        }
        if i == 1 {
            cpu_before = process_cpu(pid, ticks)?;
            moto_before = moto_cpu(args.moto_pid, ticks)?;
            calls_before = tally.as_ref().map(|t| t.snapshot()).unwrap_or_default();
            log_before = log_size(args.log.as_deref());
        }
        let request_id = format!("00000000-0000-4000-8000-{i:012}");
        let handed = Instant::now();
        ensure!(
            api.hand_out(Invocation {
                request_id: request_id.clone(),
                event: planned.event.clone(),
                timeout: INVOCATION_LIMIT,
                function_arn: arn.clone(),
            })
            .await,
            "the stub stopped serving"
        );
        let (answer, at) = match seen(&mut api, &mut function, INVOCATION_LIMIT).await? {
            Seen::Response {
                request_id: answered,
                body,
                at,
            } if answered == request_id => (body, at),
            Seen::Error { body, .. } => {
                bail!("invocation {i} failed: {}", String::from_utf8_lossy(&body))
            }
            other => bail!("unexpected during invocation {i}: {other:?}"),
        };
        let took = at.duration_since(handed);
        let answer: Value = serde_json::from_slice(&answer)
            .with_context(|| format!("invocation {i}'s answer is not JSON"))?;
        let failed: Vec<&str> = planned.failed.iter().map(String::as_str).collect();
        check_response(args.target, &answer, &failed)
            .map_err(|e| anyhow!("invocation {i}: {e}"))?;
        if i == 0 {
            first = Some(took);
        } else {
            warm.push(took);
        }
    }
    let cpu = process_cpu(pid, ticks)?.saturating_sub(cpu_before);
    let moto = moto_cpu(args.moto_pid, ticks)?.saturating_sub(moto_before);
    let calls = tally
        .as_ref()
        .map(|t| t.snapshot().since(&calls_before))
        .unwrap_or_default();
    let log_bytes = log_size(args.log.as_deref()).saturating_sub(log_before);
    if let Some(status) = function.0.try_wait()? {
        bail!("the function exited after its last invocation ({status})");
    }
    let n = warm.len();
    let per = |d: Duration| {
        u64::try_from(d.as_micros())
            .unwrap_or(u64::MAX)
            .checked_div(n as u64)
            .map_or_else(|| "-".to_owned(), |us| us.to_string())
    };
    let opt = |d: Option<Duration>| d.map_or_else(|| "-".to_owned(), millis);
    let moto = if args.moto_pid.is_some() {
        per(moto)
    } else {
        "-".to_owned()
    };
    let per_call = |x: f64| {
        if n == 0 {
            "-".to_owned()
        } else {
            format!("{:.2}", x / n as f64)
        }
    };
    // `dynamodb:PutItem/1.00,sqs:SendMessage/1.00`: each operation per warm invocation.
    let ops = calls
        .calls
        .iter()
        .map(|(op, count)| format!("{op}/{}", per_call(*count as f64)))
        .collect::<Vec<_>>()
        .join(",");
    Ok(format!(
        "stub: function={} init_ms={} init_cpu_ms={} first_ms={} warm_p50_ms={} warm_p90_ms={} cpu_us={} \
         moto_cpu_us={moto} calls={} wcu={} rcu={} ops={} log_bytes={} n={n}",
        args.name,
        opt(init),
        opt(init_cpu),
        opt(first),
        opt(percentile(&warm, 50)),
        opt(percentile(&warm, 90)),
        per(cpu),
        per_call(calls.total_calls() as f64),
        per_call(calls.write_units),
        per_call(calls.read_units),
        if ops.is_empty() { "-" } else { &ops },
        if args.log.is_some() {
            per_call(log_bytes as f64)
        } else {
            "-".to_owned()
        },
    ))
}

/// The size of the function's log file so far (0 without one): what its logs cost to ingest.
fn log_size(path: Option<&Path>) -> u64 {
    path.and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len())
}

/// The address of the moto server the SDK is pointed at (`AWS_ENDPOINT_URL`, plain HTTP).
fn moto_addr() -> Result<std::net::SocketAddr> {
    let url = std::env::var("AWS_ENDPOINT_URL").context("AWS_ENDPOINT_URL names moto server")?;
    let host = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("AWS_ENDPOINT_URL must be plain http: {url}"))?
        .trim_end_matches('/');
    std::net::ToSocketAddrs::to_socket_addrs(host)
        .with_context(|| format!("AWS_ENDPOINT_URL {url}"))?
        .next()
        .ok_or_else(|| anyhow!("AWS_ENDPOINT_URL {url} names no address"))
}

fn moto_cpu(pid: Option<u32>, ticks: u64) -> Result<Duration> {
    match pid {
        Some(pid) => Ok(process_cpu(pid, ticks).context("moto server's CPU time")?),
        None => Ok(Duration::ZERO),
    }
}

/// `getconf CLK_TCK`: the unit of the CPU times in /proc/PID/stat (100 on Linux, asked rather
/// than assumed).
fn clock_ticks() -> Result<u64> {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("getconf CLK_TCK")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("getconf CLK_TCK")
}
