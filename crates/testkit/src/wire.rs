//! A fault-injecting HTTP proxy between the AWS SDK and moto server.
//!
//! [`crate::faults`] wraps a port and fails its calls; this proxy fails the *wire* under a real
//! adapter, so the SDK's own retries, timeouts and error classification take part. The SDK's
//! `endpoint_url` points at [`WireProxy::url`], the proxy forwards to moto server, and per
//! *logical call* it injects one [`WireFault`]:
//!
//! - [`WireFault::ResetAfterForward`]: moto gets the request (the write takes effect), the
//!   client gets a TCP reset instead of the answer — the lost answer that makes a write
//!   ambiguous.
//! - [`WireFault::HangAfterForward`]: moto gets the request, the client never hears back, so
//!   its attempt timeout fires.
//! - [`WireFault::ServerError`] and [`WireFault::Throttle`]: an error answer without
//!   forwarding (500 `InternalServerError` / `InternalError`, 400 `ThrottlingException`, a
//!   code that both the SDK's retry classifier and ackflow-aws take as throttling).
//! - [`WireFault::Latency`]: a wait, then the call goes through.
//!
//! # Logical calls and attempts
//!
//! The SDK sends every attempt of one call with the same `amz-sdk-invocation-id` header (and
//! `amz-sdk-request: attempt=N; max=M`); the operation is the suffix of `x-amz-target`
//! (`DynamoDB_20120810.PutItem` is `PutItem`, `AmazonSQS.SendMessage` is `SendMessage`). A fault
//! is decided when the first attempt of a call arrives, with [`Hits`] saying whether it strikes
//! that attempt alone (the SDK's retry then succeeds) or every attempt (the call fails however
//! often it is tried). Requests without `x-amz-target` (moto's own API) pass untouched and
//! uncounted.
//!
//! # Two ways to drive it
//!
//! - A seeded [`WirePlan`]: the fault of the n-th call of each operation is a pure function of
//!   the seed, the operation and n ([`WirePlan::decide`]), so a run replays as far as the order
//!   of calls per operation does. Lost answers (reset, hang) strike writes only by default:
//!   a lost read is merely a slow read.
//! - A script for one-job reproductions: [`WireProxy::script`] queues a fault for the next call
//!   of an operation, ahead of the plan.
//!
//! [`WireProxy::quiet`] turns every fault off (so a test can drain at the end);
//! [`WireProxy::stats`] counts calls, attempts, faults and replays, and prints as a table.
//!
//! # What is emulated: idempotent transactions
//!
//! DynamoDB remembers a `TransactWriteItems` by its `ClientRequestToken` for ten minutes: the
//! same token with the same request answers the first success again without applying it
//! twice; the same token with another request is refused (400
//! `IdempotentParameterMismatchException`); the same token while the first is still running is
//! refused as `TransactionInProgressException`. The SDK fills the token in once per call and
//! keeps it across its retries, which is what makes a transaction retried after a lost answer
//! safe. moto ignores the token, and would apply the retry again (or cancel it on a condition
//! the first attempt made false), so the proxy keeps that memory itself: every 200 answer of a
//! tokened transaction is remembered, and repeats are answered from memory without reaching
//! moto. [`WireProxy::set_token_replay`] turns the emulation off, to show what it prevents.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// The operations that write: a lost answer leaves their outcome unknown.
pub const WRITES: &[&str] = &[
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "TransactWriteItems",
    "BatchWriteItem",
    "SendMessage",
    "SendMessageBatch",
    "DeleteMessage",
    "DeleteMessageBatch",
    "ChangeMessageVisibility",
    "ChangeMessageVisibilityBatch",
];

/// What the proxy does to one logical call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFault {
    /// Forward the request, then cut the client's connection with a TCP reset instead of the
    /// answer.
    ResetAfterForward,
    /// Forward the request, then never answer; the connection is held until the client closes
    /// it (at most [`HANG_LIMIT`]).
    HangAfterForward,
    /// Answer 500 without forwarding.
    ServerError,
    /// Answer 400 `ThrottlingException` without forwarding.
    Throttle,
    /// Wait this long, then forward as usual.
    Latency(Duration),
}

impl WireFault {
    /// Its kind, for counting.
    pub fn kind(self) -> WireFaultKind {
        match self {
            WireFault::ResetAfterForward => WireFaultKind::Reset,
            WireFault::HangAfterForward => WireFaultKind::Hang,
            WireFault::ServerError => WireFaultKind::ServerError,
            WireFault::Throttle => WireFaultKind::Throttle,
            WireFault::Latency(_) => WireFaultKind::Latency,
        }
    }
}

/// A [`WireFault`] without its latency, for rates and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WireFaultKind {
    /// [`WireFault::ResetAfterForward`].
    Reset,
    /// [`WireFault::HangAfterForward`].
    Hang,
    /// [`WireFault::ServerError`].
    ServerError,
    /// [`WireFault::Throttle`].
    Throttle,
    /// [`WireFault::Latency`].
    Latency,
}

impl WireFaultKind {
    /// Every kind, in the order the plan draws them and the stats print them.
    pub const ALL: [WireFaultKind; 5] = [
        WireFaultKind::Reset,
        WireFaultKind::Hang,
        WireFaultKind::ServerError,
        WireFaultKind::Throttle,
        WireFaultKind::Latency,
    ];

    /// A short column label.
    pub fn label(self) -> &'static str {
        match self {
            WireFaultKind::Reset => "reset",
            WireFaultKind::Hang => "hang",
            WireFaultKind::ServerError => "500",
            WireFaultKind::Throttle => "throttle",
            WireFaultKind::Latency => "latency",
        }
    }
}

/// Which attempts of a call a fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hits {
    /// The first attempt only: the SDK's retry meets a healthy wire.
    FirstAttempt,
    /// Every attempt: the call fails however often the SDK tries.
    EveryAttempt,
}

/// A set of operation names (`PutItem`, `SendMessage`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operations {
    /// Every operation.
    All,
    /// The writes of [`WRITES`].
    Writes,
    /// These operations.
    Only(Vec<String>),
    /// None.
    None,
}

impl Operations {
    /// These operations.
    pub fn only<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        Operations::Only(names.into_iter().map(Into::into).collect())
    }

    /// Whether `operation` is in the set.
    pub fn contains(&self, operation: &str) -> bool {
        match self {
            Operations::All => true,
            Operations::Writes => WRITES.contains(&operation),
            Operations::Only(names) => names.iter().any(|n| n == operation),
            Operations::None => false,
        }
    }
}

/// The probability of each fault kind per logical call. They are drawn in the order of
/// [`WireFaultKind::ALL`] from one roll, so they should sum to at most 1 (beyond it, the later
/// kinds lose their share).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaultRates {
    /// [`WireFault::ResetAfterForward`].
    pub reset: f64,
    /// [`WireFault::HangAfterForward`].
    pub hang: f64,
    /// [`WireFault::ServerError`].
    pub server_error: f64,
    /// [`WireFault::Throttle`].
    pub throttle: f64,
    /// [`WireFault::Latency`].
    pub latency: f64,
}

impl FaultRates {
    fn of(&self, kind: WireFaultKind) -> f64 {
        let rate = match kind {
            WireFaultKind::Reset => self.reset,
            WireFaultKind::Hang => self.hang,
            WireFaultKind::ServerError => self.server_error,
            WireFaultKind::Throttle => self.throttle,
            WireFaultKind::Latency => self.latency,
        };
        rate.max(0.0)
    }
}

/// A seeded random plan of faults.
#[derive(Debug, Clone, PartialEq)]
pub struct WirePlan {
    /// The seed every decision derives from.
    pub seed: u64,
    /// How likely each fault is per call.
    pub rates: FaultRates,
    /// The wait of a [`WireFault::Latency`], drawn in whole milliseconds from `start` to `end`
    /// (both included).
    pub latency: Range<Duration>,
    /// The share of faulted calls whose fault strikes every attempt rather than the first.
    pub every_attempt_share: f64,
    /// The operations the plan touches at all.
    pub operations: Operations,
    /// The operations whose answers the plan may lose (reset, hang): reads gain nothing from a
    /// lost answer but a retry, so by default [`Operations::Writes`].
    pub answer_loss: Operations,
}

impl WirePlan {
    /// No faults at all.
    pub fn quiet() -> Self {
        Self::seeded(0, FaultRates::default())
    }

    /// Faults at `rates` from `seed`, with the defaults: 20–200 ms of latency, half the faults
    /// on every attempt, every operation, lost answers on writes only.
    pub fn seeded(seed: u64, rates: FaultRates) -> Self {
        Self {
            seed,
            rates,
            latency: Duration::from_millis(20)..Duration::from_millis(200),
            every_attempt_share: 0.5,
            operations: Operations::All,
            answer_loss: Operations::Writes,
        }
    }

    /// The fault of the `n`-th logical call (from 0) of `operation`: the same for the same
    /// seed, operation and n, whatever else the plan decided before.
    pub fn decide(&self, operation: &str, n: u64) -> Option<(WireFault, Hits)> {
        if !self.operations.contains(operation) {
            return None;
        }
        let mut rng = fastrand::Rng::with_seed(call_seed(self.seed, operation, n));
        let roll = rng.f64();
        let loses_answers = self.answer_loss.contains(operation);
        let mut edge = 0.0;
        let kind = WireFaultKind::ALL.into_iter().find(|&kind| {
            let lost_answer = matches!(kind, WireFaultKind::Reset | WireFaultKind::Hang);
            if !lost_answer || loses_answers {
                edge += self.rates.of(kind);
            }
            roll < edge
        })?;
        let fault = match kind {
            WireFaultKind::Reset => WireFault::ResetAfterForward,
            WireFaultKind::Hang => WireFault::HangAfterForward,
            WireFaultKind::ServerError => WireFault::ServerError,
            WireFaultKind::Throttle => WireFault::Throttle,
            WireFaultKind::Latency => WireFault::Latency(self.draw_latency(&mut rng)),
        };
        let hits = if rng.f64() < self.every_attempt_share {
            Hits::EveryAttempt
        } else {
            Hits::FirstAttempt
        };
        Some((fault, hits))
    }

    fn draw_latency(&self, rng: &mut fastrand::Rng) -> Duration {
        let low = millis(self.latency.start);
        let high = millis(self.latency.end).max(low);
        Duration::from_millis(rng.u64(low..=high))
    }
}

impl Default for WirePlan {
    fn default() -> Self {
        Self::quiet()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The seed of one decision: FNV-1a of the operation, mixed with the plan's seed and the call's
/// index by splitmix64. Hand-written rather than `std`'s hasher, whose output may change
/// between Rust releases and would silently change every seeded run.
fn call_seed(seed: u64, operation: &str, n: u64) -> u64 {
    let mut name = 0xcbf2_9ce4_8422_2325_u64;
    for byte in operation.bytes() {
        name = (name ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    splitmix(splitmix(seed ^ name) ^ n)
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

// ---- counts -------------------------------------------------------------------------------------

/// What the proxy saw and did for one operation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperationStats {
    /// Logical calls (distinct invocation ids).
    pub calls: u64,
    /// Attempts (requests), retries included.
    pub attempts: u64,
    /// Calls given a fault, by kind.
    pub faulted: BTreeMap<WireFaultKind, u64>,
    /// Of those, the calls whose fault struck every attempt.
    pub every_attempt: u64,
    /// Attempts answered from the transaction memory instead of moto.
    pub replays: u64,
}

impl OperationStats {
    /// Calls given a fault of `kind`.
    pub fn faulted(&self, kind: WireFaultKind) -> u64 {
        self.faulted.get(&kind).copied().unwrap_or(0)
    }

    fn add(&mut self, other: &OperationStats) {
        self.calls += other.calls;
        self.attempts += other.attempts;
        for (kind, count) in &other.faulted {
            *self.faulted.entry(*kind).or_default() += count;
        }
        self.every_attempt += other.every_attempt;
        self.replays += other.replays;
    }
}

/// Counts per operation since the proxy started; prints as a table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WireStats {
    /// By operation name.
    pub operations: BTreeMap<String, OperationStats>,
}

impl WireStats {
    /// The counts of every operation added up.
    pub fn total(&self) -> OperationStats {
        let mut total = OperationStats::default();
        for stats in self.operations.values() {
            total.add(stats);
        }
        total
    }

    /// The counts of `operation` (zero when it was never called).
    pub fn operation(&self, operation: &str) -> OperationStats {
        self.operations.get(operation).cloned().unwrap_or_default()
    }
}

impl fmt::Display for WireStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, name: &str, s: &OperationStats| {
            write!(f, "{name:<28} {:>6} {:>8}", s.calls, s.attempts)?;
            for kind in WireFaultKind::ALL {
                write!(f, " {:>8}", s.faulted(kind))?;
            }
            writeln!(f, " {:>6} {:>7}", s.every_attempt, s.replays)
        };
        write!(f, "{:<28} {:>6} {:>8}", "operation", "calls", "attempts")?;
        for kind in WireFaultKind::ALL {
            write!(f, " {:>8}", kind.label())?;
        }
        writeln!(f, " {:>6} {:>7}", "every", "replays")?;
        for (name, stats) in &self.operations {
            row(f, name, stats)?;
        }
        row(f, "total", &self.total())
    }
}

// ---- the proxy ----------------------------------------------------------------------------------

/// How long a [`WireFault::HangAfterForward`] holds a connection the client does not close.
pub const HANG_LIMIT: Duration = Duration::from_secs(120);

/// How long DynamoDB remembers a transaction's `ClientRequestToken`.
const TOKEN_MEMORY: Duration = Duration::from_secs(600);

/// Calls (invocation ids) and tokens remembered at most; the oldest are forgotten first. An
/// SDK call lasts seconds, so only a long, busy run ever forgets one still retrying.
const MEMORY_LIMIT: usize = 16_384;

/// The biggest request head and body the proxy reads (SQS bodies are at most 256 KiB, a
/// DynamoDB item 400 KiB).
const HEAD_LIMIT: usize = 64 * 1024;
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// A running proxy on `127.0.0.1`. Dropping it stops it: the accept loop and every
/// connection (a held one included) end.
#[derive(Debug)]
pub struct WireProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl WireProxy {
    /// Starts a proxy on a free port of 127.0.0.1 that forwards to `upstream_url` (moto
    /// server's `http://127.0.0.1:PORT`) and injects what `plan` says.
    pub async fn start(upstream_url: &str, plan: WirePlan) -> io::Result<WireProxy> {
        let upstream = upstream_url.trim_end_matches('/').to_owned();
        if !upstream.starts_with("http://") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the upstream must be a plain http:// URL, not {upstream_url:?}"),
            ));
        }
        let client = reqwest::Client::builder()
            // Never through a proxy the environment may name: the upstream is local.
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(io::Error::other)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            client,
            state: Mutex::new(State::new(plan)),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(WireProxy {
            address,
            shared,
            accept,
        })
    }

    /// The URL to give the SDK as its endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Queues `fault` for the next logical call of `operation`, ahead of the plan. Scripted
    /// faults of one operation strike its calls in the order they were queued.
    pub fn script(&self, operation: &str, fault: WireFault, hits: Hits) {
        self.shared
            .state()
            .scripts
            .entry(operation.to_owned())
            .or_default()
            .push_back((fault, hits));
    }

    /// Replaces the plan for the calls that start from now on.
    pub fn set_plan(&self, plan: WirePlan) {
        self.shared.state().plan = plan;
    }

    /// No more faults: a quiet plan, the script emptied, and the calls still retrying freed
    /// from theirs, so that a test can drain.
    pub fn quiet(&self) {
        let mut state = self.shared.state();
        state.plan = WirePlan::quiet();
        state.scripts.clear();
        for fault in state.calls.values_mut() {
            *fault = None;
        }
    }

    /// Whether repeated `TransactWriteItems` are answered from the token memory, as DynamoDB
    /// does (on by default). Off, they reach moto, which applies them again.
    pub fn set_token_replay(&self, on: bool) {
        self.shared.state().token_replay = on;
    }

    /// The counts so far.
    pub fn stats(&self) -> WireStats {
        self.shared.state().stats.clone()
    }
}

impl Drop for WireProxy {
    fn drop(&mut self) {
        // The accept task owns the connections' JoinSet: aborting it aborts them all.
        self.accept.abort();
    }
}

#[derive(Debug)]
struct Shared {
    upstream: String,
    /// One client for every forward, so connections to moto are pooled when it allows.
    client: reqwest::Client,
    /// Never held across an await: every decision is taken, and recorded, at once.
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not take the proxy down with it for the others.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug)]
struct State {
    plan: WirePlan,
    scripts: HashMap<String, VecDeque<(WireFault, Hits)>>,
    /// The calls seen, by invocation id, with the fault that strikes their later attempts.
    calls: HashMap<String, Option<WireFault>>,
    call_order: VecDeque<String>,
    /// How many calls of each operation were seen: the index of the next one.
    next_index: HashMap<String, u64>,
    token_replay: bool,
    tokens: HashMap<String, Remembered>,
    token_order: VecDeque<String>,
    /// Tokens whose first request is still at moto.
    tokens_in_flight: HashSet<String>,
    stats: WireStats,
}

/// A transaction DynamoDB would recognise by its token.
#[derive(Debug)]
struct Remembered {
    request: Value,
    answer: Answer,
    at: Instant,
}

impl State {
    fn new(plan: WirePlan) -> Self {
        Self {
            plan,
            scripts: HashMap::new(),
            calls: HashMap::new(),
            call_order: VecDeque::new(),
            next_index: HashMap::new(),
            token_replay: true,
            tokens: HashMap::new(),
            token_order: VecDeque::new(),
            tokens_in_flight: HashSet::new(),
            stats: WireStats::default(),
        }
    }

    /// Counts one attempt of `operation` and says which fault strikes it: for the first
    /// attempt of a call, the script's or the plan's decision; for a later one, the call's
    /// fault if it strikes every attempt.
    fn on_attempt(&mut self, operation: &str, invocation: Option<&str>) -> Option<WireFault> {
        let stats = self
            .stats
            .operations
            .entry(operation.to_owned())
            .or_default();
        stats.attempts += 1;
        if let Some(later) = invocation.and_then(|id| self.calls.get(id)) {
            return *later;
        }
        stats.calls += 1;
        let index = self.next_index.entry(operation.to_owned()).or_default();
        let n = *index;
        *index += 1;
        let decided = self
            .scripts
            .get_mut(operation)
            .and_then(VecDeque::pop_front)
            .or_else(|| self.plan.decide(operation, n));
        if let Some((fault, hits)) = decided {
            *stats.faulted.entry(fault.kind()).or_default() += 1;
            stats.every_attempt += u64::from(hits == Hits::EveryAttempt);
        }
        if let Some(id) = invocation {
            let later =
                decided.and_then(|(fault, hits)| (hits == Hits::EveryAttempt).then_some(fault));
            remember(&mut self.calls, &mut self.call_order, id.to_owned(), later);
        }
        decided.map(|(fault, _)| fault)
    }

    /// What DynamoDB would answer a transaction with `token` from its memory, if anything;
    /// `None` means "send it on" (and the token is then in flight).
    fn recall(&mut self, token: &str, request: &Value) -> Option<Answer> {
        if self
            .tokens
            .get(token)
            .is_some_and(|r| r.at.elapsed() > TOKEN_MEMORY)
        {
            self.tokens.remove(token);
        }
        let answer = if let Some(remembered) = self.tokens.get(token) {
            if remembered.request == *request {
                remembered.answer.clone()
            } else {
                error_answer(
                    400,
                    "IdempotentParameterMismatchException",
                    "the ClientRequestToken was used with another request",
                )
            }
        } else if self.tokens_in_flight.contains(token) {
            error_answer(
                400,
                "TransactionInProgressException",
                "a request with this ClientRequestToken is in progress",
            )
        } else {
            self.tokens_in_flight.insert(token.to_owned());
            return None;
        };
        self.stats
            .operations
            .entry("TransactWriteItems".to_owned())
            .or_default()
            .replays += 1;
        Some(answer)
    }

    /// Records moto's answer to the transaction with `token`: DynamoDB remembers successes.
    fn settle_token(&mut self, token: &str, request: Value, answer: &Answer) {
        self.tokens_in_flight.remove(token);
        if answer.status == 200 {
            let remembered = Remembered {
                request,
                answer: answer.clone(),
                at: Instant::now(),
            };
            remember(
                &mut self.tokens,
                &mut self.token_order,
                token.to_owned(),
                remembered,
            );
        }
    }
}

/// Inserts into a map bounded by [`MEMORY_LIMIT`], forgetting the oldest keys first.
fn remember<V>(map: &mut HashMap<String, V>, order: &mut VecDeque<String>, key: String, value: V) {
    if map.insert(key.clone(), value).is_none() {
        order.push_back(key);
    }
    while order.len() > MEMORY_LIMIT {
        if let Some(oldest) = order.pop_front() {
            map.remove(&oldest);
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                while connections.try_join_next().is_some() {}
                connections.spawn(serve(stream, Arc::clone(&shared)));
            }
            // Out of file descriptors, say: wait for connections to end rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// What to do with a client connection after an answer.
enum Next {
    KeepAlive,
    Close,
}

/// Serves one client connection, request after request (the SDK keeps connections alive).
async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut buffer = Vec::new();
    loop {
        let request = match read_request(&mut stream, &mut buffer).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(e) => {
                let answer = error_answer(400, "BadRequest", &e.to_string());
                let _ = stream.write_all(&answer.encode(true)).await;
                return;
            }
        };
        match handle(&shared, request, &mut stream).await {
            Next::KeepAlive => continue,
            Next::Close => return,
        }
    }
}

async fn handle(shared: &Shared, request: Request, stream: &mut TcpStream) -> Next {
    let close = request.wants_close();
    let Some(operation) = request.operation().map(str::to_owned) else {
        let answer = forward(shared, &request).await;
        return write_answer(stream, &answer, close).await;
    };
    let service = Service::of(request.header("x-amz-target").unwrap_or_default());
    let fault = shared
        .state()
        .on_attempt(&operation, request.header("amz-sdk-invocation-id"));
    match fault {
        Some(WireFault::ServerError) => {
            let answer = error_answer(500, service.server_error_code(), "injected");
            return write_answer(stream, &answer, close).await;
        }
        Some(WireFault::Throttle) => {
            let answer = error_answer(400, "ThrottlingException", "injected");
            return write_answer(stream, &answer, close).await;
        }
        Some(WireFault::Latency(wait)) => tokio::time::sleep(wait).await,
        Some(WireFault::ResetAfterForward | WireFault::HangAfterForward) | None => {}
    }
    let answer = if operation == "TransactWriteItems" {
        forward_transaction(shared, &request).await
    } else {
        forward(shared, &request).await
    };
    match fault {
        Some(WireFault::ResetAfterForward) => {
            // SO_LINGER 0: closing sends a reset, not a FIN, so the client's read fails as a
            // cut connection does, not as an orderly end.
            let _ = stream.set_zero_linger();
            Next::Close
        }
        Some(WireFault::HangAfterForward) => {
            hold(stream).await;
            Next::Close
        }
        _ => write_answer(stream, &answer, close).await,
    }
}

/// A `TransactWriteItems` with DynamoDB's token memory (see the module's documentation).
async fn forward_transaction(shared: &Shared, request: &Request) -> Answer {
    let parsed: Option<Value> = serde_json::from_slice(&request.body).ok();
    let token = parsed
        .as_ref()
        .and_then(|body| body.get("ClientRequestToken")?.as_str())
        .map(str::to_owned);
    let (Some(token), Some(parsed)) = (token, parsed) else {
        return forward(shared, request).await;
    };
    // `None`: the emulation is off; `Some(None)`: a token DynamoDB would not recognise.
    let recalled = {
        let mut state = shared.state();
        state.token_replay.then(|| state.recall(&token, &parsed))
    };
    match recalled {
        None => forward(shared, request).await,
        Some(Some(answer)) => answer,
        Some(None) => {
            let answer = forward(shared, request).await;
            shared.state().settle_token(&token, parsed, &answer);
            answer
        }
    }
}

/// Holds a connection whose answer is withheld until the client gives up on it.
async fn hold(stream: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(HANG_LIMIT, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

async fn write_answer(stream: &mut TcpStream, answer: &Answer, close: bool) -> Next {
    match stream.write_all(&answer.encode(close)).await {
        Ok(()) if !close => Next::KeepAlive,
        _ => Next::Close,
    }
}

/// Sends `request` to the upstream and reads its whole answer; a failure to reach it is a 502,
/// which the SDK retries like any server error.
async fn forward(shared: &Shared, request: &Request) -> Answer {
    match try_forward(shared, request).await {
        Ok(answer) => answer,
        Err(e) => error_answer(502, "BadGateway", &format!("upstream: {e}")),
    }
}

async fn try_forward(shared: &Shared, request: &Request) -> Result<Answer, reqwest::Error> {
    let method =
        reqwest::Method::from_bytes(request.method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let mut upstream = shared
        .client
        .request(method, format!("{}{}", shared.upstream, request.target));
    for (name, value) in &request.headers {
        // The Host header goes through as the SDK wrote it: the proxy is transparent.
        if !is_framing(name) {
            upstream = upstream.header(name.as_str(), value.as_str());
        }
    }
    let response = upstream.body(request.body.clone()).send().await?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter(|(name, _)| !is_framing(name.as_str()))
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response.bytes().await?.to_vec();
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// Headers of one hop's framing, which the proxy writes itself on each side.
fn is_framing(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "content-length",
        "te",
        "trailer",
        "upgrade",
    ]
    .iter()
    .any(|framing| name.eq_ignore_ascii_case(framing))
}

/// The AWS service a request is for, by its `x-amz-target` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Sqs,
    Other,
}

impl Service {
    fn of(target: &str) -> Self {
        if target.starts_with("AmazonSQS.") {
            Service::Sqs
        } else {
            Service::Other
        }
    }

    /// The code the service answers an internal failure with.
    fn server_error_code(self) -> &'static str {
        match self {
            Service::Sqs => "InternalError",
            Service::Other => "InternalServerError",
        }
    }
}

// ---- HTTP/1.1, as much as the SDK speaks ---------------------------------------------------------

/// One request from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Request {
    method: String,
    /// The path and query, as written on the request line.
    target: String,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The operation named by `x-amz-target` (`DynamoDB_20120810.PutItem` is `PutItem`).
    fn operation(&self) -> Option<&str> {
        let target = self.header("x-amz-target")?;
        let operation = target.rsplit_once('.').map_or(target, |(_, op)| op);
        (!operation.is_empty()).then_some(operation)
    }

    /// Whether the client wants the connection closed after this exchange.
    fn wants_close(&self) -> bool {
        let connection = self.header("connection").unwrap_or_default();
        let says = |word: &str| {
            connection
                .split(',')
                .any(|token| token.trim().eq_ignore_ascii_case(word))
        };
        if self.version.eq_ignore_ascii_case("HTTP/1.0") {
            !says("keep-alive")
        } else {
            says("close")
        }
    }
}

/// An answer to write to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    /// The answer on the wire, framed by Content-Length.
    fn encode(&self, close: bool) -> Vec<u8> {
        let reason = reqwest::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let mut head = format!("HTTP/1.1 {} {reason}\r\n", self.status);
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("content-length: {}\r\n", self.body.len()));
        if close {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// An AWS JSON-protocol error answer (both DynamoDB and SQS speak `application/x-amz-json-1.0`).
fn error_answer(status: u16, code: &str, message: &str) -> Answer {
    let body = serde_json::json!({"__type": code, "message": message}).to_string();
    Answer {
        status,
        headers: vec![
            ("content-type".into(), "application/x-amz-json-1.0".into()),
            ("x-amzn-requestid".into(), "wire-proxy".into()),
        ],
        body: body.into_bytes(),
    }
}

/// Reads the next request from `reader`; `buffer` keeps what was read beyond it for the next
/// call. `Ok(None)` when the client closed the connection between requests.
async fn read_request<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut Vec<u8>,
) -> io::Result<Option<Request>> {
    let head_end = loop {
        if let Some(end) = find_head_end(buffer) {
            break end;
        }
        if buffer.len() > HEAD_LIMIT {
            return Err(invalid("request head too large"));
        }
        if fill(reader, buffer).await? == 0 {
            return if buffer.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
    };
    let mut request = parse_head(&buffer[..head_end])?;
    let length = body_length(&request)?;
    let total = head_end + 4 + length;
    while buffer.len() < total {
        if fill(reader, buffer).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    request.body = buffer[head_end + 4..total].to_vec();
    buffer.drain(..total);
    Ok(Some(request))
}

async fn fill<R: AsyncRead + Unpin>(reader: &mut R, buffer: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let read = reader.read(&mut chunk).await?;
    buffer.extend_from_slice(&chunk[..read]);
    Ok(read)
}

/// Where the head ends: the index of its closing CRLFCRLF.
fn find_head_end(buffer: &[u8]) -> Option<usize> {
    buffer.windows(4).position(|w| w == b"\r\n\r\n")
}

/// The request line and headers (the head without its closing CRLFCRLF).
fn parse_head(head: &[u8]) -> io::Result<Request> {
    let head = std::str::from_utf8(head).map_err(|_| invalid("request head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("malformed request line"));
    };
    let headers = lines
        .map(|line| {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid("malformed header"))?;
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect::<io::Result<_>>()?;
    Ok(Request {
        method: method.to_owned(),
        target: target.to_owned(),
        version: version.to_owned(),
        headers,
        body: Vec::new(),
    })
}

/// The body's length by Content-Length. The SDK frames its bodies so; chunked bodies are
/// refused rather than half-supported.
fn body_length(request: &Request) -> io::Result<usize> {
    if request.header("transfer-encoding").is_some() {
        return Err(invalid("chunked request bodies are not supported"));
    }
    let length = match request.header("content-length") {
        None => 0,
        Some(text) => text
            .parse::<usize>()
            .map_err(|_| invalid("malformed content-length"))?,
    };
    if length > BODY_LIMIT {
        return Err(invalid("request body too large"));
    }
    Ok(length)
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    // ---- the plan ----

    fn busy(seed: u64) -> WirePlan {
        WirePlan::seeded(
            seed,
            FaultRates {
                reset: 0.1,
                hang: 0.05,
                server_error: 0.1,
                throttle: 0.1,
                latency: 0.15,
            },
        )
    }

    fn decisions(plan: &WirePlan, operation: &str) -> Vec<Option<(WireFault, Hits)>> {
        (0..200).map(|n| plan.decide(operation, n)).collect()
    }

    #[test]
    fn the_same_seed_decides_the_same_faults_and_another_seed_others() {
        assert_eq!(
            decisions(&busy(7), "PutItem"),
            decisions(&busy(7), "PutItem")
        );
        assert_ne!(
            decisions(&busy(7), "PutItem"),
            decisions(&busy(8), "PutItem")
        );
        assert_ne!(
            decisions(&busy(7), "PutItem"),
            decisions(&busy(7), "UpdateItem"),
            "each operation draws its own sequence"
        );
    }

    #[test]
    fn a_decision_depends_on_its_index_alone_not_on_the_calls_before() {
        let plan = busy(42);
        let forward: Vec<_> = (0..50).map(|n| plan.decide("SendMessage", n)).collect();
        let backward: Vec<_> = (0..50)
            .rev()
            .map(|n| plan.decide("SendMessage", n))
            .collect();
        assert_eq!(forward, backward.into_iter().rev().collect::<Vec<_>>());
    }

    #[test]
    fn faults_come_at_about_their_rates() {
        let plan = busy(1);
        let mut counts: BTreeMap<WireFaultKind, u64> = BTreeMap::new();
        let mut every = 0;
        let calls = 20_000;
        for n in 0..calls {
            if let Some((fault, hits)) = plan.decide("PutItem", n) {
                *counts.entry(fault.kind()).or_default() += 1;
                every += u64::from(hits == Hits::EveryAttempt);
            }
        }
        let share = |kind| counts.get(&kind).copied().unwrap_or(0) as f64 / calls as f64;
        for (kind, rate) in [
            (WireFaultKind::Reset, 0.1),
            (WireFaultKind::Hang, 0.05),
            (WireFaultKind::ServerError, 0.1),
            (WireFaultKind::Throttle, 0.1),
            (WireFaultKind::Latency, 0.15),
        ] {
            assert!((share(kind) - rate).abs() < 0.015, "{kind:?}: {counts:?}");
        }
        let faulted: u64 = counts.values().sum();
        let every_share = every as f64 / faulted as f64;
        assert!((every_share - 0.5).abs() < 0.03, "{every_share}");
    }

    #[test]
    fn answers_are_lost_on_writes_only_by_default() {
        let plan = WirePlan::seeded(
            3,
            FaultRates {
                reset: 0.5,
                hang: 0.5,
                ..FaultRates::default()
            },
        );
        assert!(decisions(&plan, "GetItem").iter().all(Option::is_none));
        assert!(decisions(&plan, "ReceiveMessage")
            .iter()
            .all(Option::is_none));
        let writes = decisions(&plan, "SendMessage");
        assert!(writes.iter().all(Option::is_some));
        assert!(writes
            .iter()
            .flatten()
            .any(|(f, _)| *f == WireFault::ResetAfterForward));
        assert!(writes
            .iter()
            .flatten()
            .any(|(f, _)| *f == WireFault::HangAfterForward));

        let everywhere = WirePlan {
            answer_loss: Operations::All,
            ..plan
        };
        assert!(decisions(&everywhere, "GetItem")
            .iter()
            .all(Option::is_some));
    }

    #[test]
    fn a_plan_touches_only_its_operations_and_a_quiet_one_none() {
        let plan = WirePlan {
            operations: Operations::only(["DeleteMessage"]),
            ..WirePlan::seeded(
                5,
                FaultRates {
                    throttle: 1.0,
                    ..FaultRates::default()
                },
            )
        };
        assert!(decisions(&plan, "SendMessage").iter().all(Option::is_none));
        assert!(decisions(&plan, "DeleteMessage")
            .iter()
            .all(|d| matches!(d, Some((WireFault::Throttle, _)))));
        assert!(decisions(&WirePlan::quiet(), "PutItem")
            .iter()
            .all(Option::is_none));
    }

    #[test]
    fn latency_is_drawn_within_its_range() {
        let plan = WirePlan {
            latency: Duration::from_millis(30)..Duration::from_millis(40),
            every_attempt_share: 0.0,
            ..WirePlan::seeded(
                9,
                FaultRates {
                    latency: 1.0,
                    ..FaultRates::default()
                },
            )
        };
        for decision in decisions(&plan, "Query") {
            let Some((WireFault::Latency(wait), Hits::FirstAttempt)) = decision else {
                panic!("{decision:?}");
            };
            assert!((30..=40).contains(&wait.as_millis()), "{wait:?}");
        }
    }

    #[test]
    fn a_call_is_decided_once_and_its_fault_follows_it_through_every_attempt_or_only_the_first() {
        let mut state = State::new(WirePlan::quiet());
        state.scripts.entry("PutItem".into()).or_default().extend([
            (WireFault::ServerError, Hits::FirstAttempt),
            (WireFault::Throttle, Hits::EveryAttempt),
        ]);
        assert_eq!(
            state.on_attempt("PutItem", Some("a")),
            Some(WireFault::ServerError)
        );
        assert_eq!(state.on_attempt("PutItem", Some("a")), None);
        assert_eq!(
            state.on_attempt("PutItem", Some("b")),
            Some(WireFault::Throttle)
        );
        assert_eq!(
            state.on_attempt("PutItem", Some("b")),
            Some(WireFault::Throttle)
        );
        assert_eq!(
            state.on_attempt("PutItem", Some("c")),
            None,
            "the script is spent"
        );
        let put = state.stats.operation("PutItem");
        assert_eq!((put.calls, put.attempts, put.every_attempt), (3, 5, 1));
        assert_eq!(put.faulted(WireFaultKind::ServerError), 1);
        assert_eq!(put.faulted(WireFaultKind::Throttle), 1);
    }

    #[test]
    fn the_token_memory_replays_the_same_request_and_refuses_another() {
        let mut state = State::new(WirePlan::quiet());
        let request = serde_json::json!({"ClientRequestToken": "t", "TransactItems": [1]});
        assert_eq!(state.recall("t", &request), None, "first time: send it on");
        let busy = state.recall("t", &request).expect("in flight");
        assert!(String::from_utf8_lossy(&busy.body).contains("TransactionInProgressException"));
        let ok = Answer {
            status: 200,
            headers: vec![],
            body: b"{}".to_vec(),
        };
        state.settle_token("t", request.clone(), &ok);
        assert_eq!(state.recall("t", &request), Some(ok));
        let other = serde_json::json!({"ClientRequestToken": "t", "TransactItems": [2]});
        let refused = state.recall("t", &other).expect("answered");
        assert_eq!(refused.status, 400);
        assert!(
            String::from_utf8_lossy(&refused.body).contains("IdempotentParameterMismatchException")
        );
        assert_eq!(state.stats.operation("TransactWriteItems").replays, 3);

        let failed = error_answer(400, "ValidationException", "refused");
        assert_eq!(state.recall("u", &request), None);
        state.settle_token("u", request.clone(), &failed);
        assert_eq!(
            state.recall("u", &request),
            None,
            "failures are not remembered"
        );
    }

    #[test]
    fn stats_print_one_row_per_operation_and_a_total() {
        let mut state = State::new(WirePlan::quiet());
        state.on_attempt("SendMessage", Some("a"));
        state.on_attempt("GetItem", Some("b"));
        let table = state.stats.to_string();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("operation"), "{table}");
        assert!(lines[1].starts_with("GetItem"), "{table}");
        assert!(lines[3].starts_with("total"), "{table}");
    }

    // ---- HTTP ----

    const TWO_REQUESTS: &[u8] =
        b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: DynamoDB_20120810.PutItem\r\n\
        Content-Length: 5\r\n\r\nhelloGET /moto-api/ HTTP/1.1\r\nhost: x\r\n\r\n";

    #[tokio::test]
    async fn requests_are_read_one_after_another_from_one_connection() {
        let mut reader = TWO_REQUESTS;
        let mut buffer = Vec::new();
        let first = read_request(&mut reader, &mut buffer)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (first.method.as_str(), first.target.as_str()),
            ("POST", "/")
        );
        assert_eq!(first.body, b"hello");
        assert_eq!(
            first.header("x-amz-target"),
            Some("DynamoDB_20120810.PutItem")
        );
        assert_eq!(first.operation(), Some("PutItem"));
        let second = read_request(&mut reader, &mut buffer)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second.target, "/moto-api/");
        assert_eq!(second.body, b"");
        assert_eq!(second.operation(), None);
        assert_eq!(read_request(&mut reader, &mut buffer).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_truncated_or_chunked_request_is_an_error() {
        let mut buffer = Vec::new();
        let mut truncated: &[u8] = b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nhal";
        let e = read_request(&mut truncated, &mut buffer).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let mut buffer = Vec::new();
        let mut chunked: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let e = read_request(&mut chunked, &mut buffer).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let mut buffer = Vec::new();
        let mut garbage: &[u8] = b"NONSENSE\r\n\r\n";
        assert!(read_request(&mut garbage, &mut buffer).await.is_err());
    }

    #[test]
    fn the_operation_is_the_suffix_of_the_target_and_close_is_understood() {
        let mut request =
            parse_head(b"POST / HTTP/1.1\r\nx-amz-target: AmazonSQS.SendMessage").unwrap();
        assert_eq!(request.operation(), Some("SendMessage"));
        assert!(!request.wants_close());
        request.headers.push(("Connection".into(), "Close".into()));
        assert!(request.wants_close());
        let old = parse_head(b"GET / HTTP/1.0").unwrap();
        assert!(old.wants_close());
    }

    #[test]
    fn an_answer_is_framed_by_its_length() {
        let answer = error_answer(500, "InternalServerError", "injected");
        let wire = String::from_utf8(answer.encode(false)).unwrap();
        let (head, body) = wire.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(!head.contains("connection: close"));
        assert_eq!(
            serde_json::from_str::<Value>(body).unwrap(),
            serde_json::json!({"__type": "InternalServerError", "message": "injected"})
        );
        assert!(String::from_utf8(answer.encode(true))
            .unwrap()
            .contains("connection: close\r\n"));
    }

    // ---- the proxy over a socket ----

    /// An upstream that answers every request 200 with `{"n": <its count>}`.
    async fn counting_upstream() -> (String, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let count = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&count);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    if let Ok(Some(_)) = read_request(&mut stream, &mut buffer).await {
                        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                        let answer = Answer {
                            status: 200,
                            headers: vec![],
                            body: format!("{{\"n\":{n}}}").into_bytes(),
                        };
                        let _ = stream.write_all(&answer.encode(true)).await;
                    }
                });
            }
        });
        (url, count)
    }

    fn sdk_request(operation: &str, invocation: &str, body: &str) -> Vec<u8> {
        format!(
            "POST / HTTP/1.1\r\nhost: proxy\r\nx-amz-target: DynamoDB_20120810.{operation}\r\n\
             amz-sdk-invocation-id: {invocation}\r\namz-sdk-request: attempt=1; max=3\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// Sends one request on a new connection: the answer's status and body, or the error.
    async fn exchange(proxy: &WireProxy, request: &[u8]) -> io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(proxy.address).await?;
        stream.write_all(request).await?;
        let mut buffer = Vec::new();
        let head_end = loop {
            if let Some(end) = find_head_end(&buffer) {
                break end;
            }
            if fill(&mut stream, &mut buffer).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        while buffer.len() < head_end + 4 + length {
            fill(&mut stream, &mut buffer).await?;
        }
        let status = head[9..12].parse().unwrap();
        let body = String::from_utf8_lossy(&buffer[head_end + 4..]).into_owned();
        Ok((status, body))
    }

    #[tokio::test]
    async fn injected_errors_never_reach_the_upstream_and_a_reset_comes_after_it() {
        let (upstream, count) = counting_upstream().await;
        let proxy = WireProxy::start(&upstream, WirePlan::quiet())
            .await
            .unwrap();
        proxy.script("PutItem", WireFault::ServerError, Hits::FirstAttempt);
        proxy.script("PutItem", WireFault::Throttle, Hits::FirstAttempt);
        proxy.script("PutItem", WireFault::ResetAfterForward, Hits::FirstAttempt);

        let (status, body) = exchange(&proxy, &sdk_request("PutItem", "a", "{}"))
            .await
            .unwrap();
        assert_eq!(status, 500);
        assert!(body.contains("InternalServerError"), "{body}");
        let (status, body) = exchange(&proxy, &sdk_request("PutItem", "b", "{}"))
            .await
            .unwrap();
        assert_eq!(status, 400);
        assert!(body.contains("ThrottlingException"), "{body}");
        assert_eq!(count.load(Ordering::SeqCst), 0);

        let e = exchange(&proxy, &sdk_request("PutItem", "c", "{}"))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e:?}");
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "forwarded before the reset"
        );
        let (status, body) = exchange(&proxy, &sdk_request("PutItem", "c", "{}"))
            .await
            .unwrap();
        assert_eq!(
            (status, body.as_str()),
            (200, "{\"n\":2}"),
            "the retry goes through"
        );

        let stats = proxy.stats();
        assert_eq!(stats.operation("PutItem").calls, 3);
        assert_eq!(stats.operation("PutItem").attempts, 4);
        assert_eq!(stats.total().faulted(WireFaultKind::Reset), 1);
    }

    #[tokio::test]
    async fn a_repeated_transaction_token_is_answered_from_memory_unless_replay_is_off() {
        let (upstream, count) = counting_upstream().await;
        let proxy = WireProxy::start(&upstream, WirePlan::quiet())
            .await
            .unwrap();
        let body = r#"{"ClientRequestToken":"tok","TransactItems":[]}"#;
        let first = exchange(&proxy, &sdk_request("TransactWriteItems", "a", body))
            .await
            .unwrap();
        let again = exchange(&proxy, &sdk_request("TransactWriteItems", "a", body))
            .await
            .unwrap();
        assert_eq!(first, (200, "{\"n\":1}".to_owned()));
        assert_eq!(again, first, "the first answer, replayed");
        assert_eq!(count.load(Ordering::SeqCst), 1);

        proxy.set_token_replay(false);
        let forwarded = exchange(&proxy, &sdk_request("TransactWriteItems", "a", body))
            .await
            .unwrap();
        assert_eq!(forwarded, (200, "{\"n\":2}".to_owned()));
        assert_eq!(proxy.stats().operation("TransactWriteItems").replays, 1);
    }
}
