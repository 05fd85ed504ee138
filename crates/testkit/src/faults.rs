//! Fault injection around the two ports, and the checks that a job ended in a legal state.
//!
//! [`FaultyStore`] and [`FaultyQueue`] wrap any [`JobStore`] and [`Queue`] and delegate every
//! call, after consulting one shared [`FaultPlan`]. The plan numbers every call made through
//! either wrapper (0, 1, 2, … in the order they happen), records which [`Op`] it was, and
//! injects a [`Fault`] on the calls it was told to. A test enumerates every failure point of a
//! use case by running it once without faults ([`FaultPlan::calls`] says how many calls it made
//! and which), then once per call index and fault kind:
//!
//! ```text
//! let plan = FaultPlan::new();
//! run_use_case(&plan).await;                   // fault-free: count the calls
//! for at in 0..plan.calls().len() {
//!     for fault in Fault::ALL_KINDS {
//!         let plan = FaultPlan::new();
//!         plan.inject(at, fault);
//!         run_use_case(&plan).await;           // then restart without faults and check
//!     }
//! }
//! ```
//!
//! A crash is modelled as "the process died between two writes": the call that crashes performs
//! its write (when it is a write), then it and every later call fail, so the code that goes on
//! running after the crash can no longer change anything through the ports — as if it had died.
//!
//! [`drive_until_quiet`] then plays the restarted runtime (worker and sweeper rounds on a moving
//! [`ManualClock`]), and [`check_terminal_and_legal`] asserts what SPEC.md promises of the job.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ackflow_core::report::Deltas;
use ackflow_core::{
    async_trait, Ackflow, Created, DeadLetter, Delivery, Figures, IdempotencyRecord, Job, JobId,
    JobState, JobStore, ListQuery, ManualClock, OutgoingMessage, Owner, Page, PortError, Problem,
    Queue, QueueDepth, Receipt, Timestamp, WriteError,
};
use serde_json::Value;

/// One operation of a port: the call site a fault is injected at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// [`JobStore::create`].
    StoreCreate,
    /// [`JobStore::get`].
    StoreGet,
    /// [`JobStore::input`].
    StoreInput,
    /// [`JobStore::result`].
    StoreResult,
    /// [`JobStore::update`].
    StoreUpdate,
    /// [`JobStore::list`].
    StoreList,
    /// [`JobStore::figures`].
    StoreFigures,
    /// [`JobStore::due_for_sweep`].
    StoreDueForSweep,
    /// [`JobStore::purge_expired`].
    StorePurgeExpired,
    /// [`Queue::send`].
    QueueSend,
    /// [`Queue::receive`].
    QueueReceive,
    /// [`Queue::delete`].
    QueueDelete,
    /// [`Queue::change_visibility`].
    QueueChangeVisibility,
    /// [`Queue::dead_letter`].
    QueueDeadLetter,
    /// [`Queue::dead_letters`].
    QueueDeadLetters,
    /// [`Queue::receive_dead_letters`].
    QueueReceiveDeadLetters,
    /// [`Queue::delete_dead_letter`].
    QueueDeleteDeadLetter,
    /// [`Queue::depth`].
    QueueDepth,
}

impl Op {
    /// The call site's name, as `port.operation`.
    pub fn name(self) -> &'static str {
        match self {
            Op::StoreCreate => "store.create",
            Op::StoreGet => "store.get",
            Op::StoreInput => "store.input",
            Op::StoreResult => "store.result",
            Op::StoreUpdate => "store.update",
            Op::StoreList => "store.list",
            Op::StoreFigures => "store.figures",
            Op::StoreDueForSweep => "store.due_for_sweep",
            Op::StorePurgeExpired => "store.purge_expired",
            Op::QueueSend => "queue.send",
            Op::QueueReceive => "queue.receive",
            Op::QueueDelete => "queue.delete",
            Op::QueueChangeVisibility => "queue.change_visibility",
            Op::QueueDeadLetter => "queue.dead_letter",
            Op::QueueDeadLetters => "queue.dead_letters",
            Op::QueueReceiveDeadLetters => "queue.receive_dead_letters",
            Op::QueueDeleteDeadLetter => "queue.delete_dead_letter",
            Op::QueueDepth => "queue.depth",
        }
    }

    /// Whether the operation changes the backend (a receive does: it hides the message and
    /// counts the receive). Only a write can be ambiguous or crash *after* taking effect.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Op::StoreCreate
                | Op::StoreUpdate
                | Op::StorePurgeExpired
                | Op::QueueSend
                | Op::QueueReceive
                | Op::QueueDelete
                | Op::QueueChangeVisibility
                | Op::QueueDeadLetter
                | Op::QueueReceiveDeadLetters
                | Op::QueueDeleteDeadLetter
        )
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What happens to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call is not made and fails with [`PortError::Unavailable`] (an outage, a throttle).
    Unavailable,
    /// The call is not made and fails with [`PortError::Failed`] (a bug, corrupt data).
    Failed,
    /// The call takes this long, then happens as usual. With a clock attached to the plan
    /// ([`FaultPlan::with_clock`]) the world's time moves on by this much during the call (a
    /// lease or a deadline may run out meanwhile); without one, the call sleeps on tokio's clock.
    Latency(Duration),
    /// The call happens (a write takes effect), then fails with [`PortError::Unavailable`]: a
    /// timeout whose outcome the caller cannot know, such as an SQS `SendMessage` that timed
    /// out after the message was stored.
    Ambiguous,
    /// The process dies here: a write takes effect (a read does not happen), then this call and
    /// every later one through either wrapper fail.
    CrashAfterWrite,
}

impl Fault {
    /// One fault of each kind. The latency (10 s) outlasts the leases, visibility timeouts and
    /// resend times of the fault tests' settings, and stays well within their deadlines.
    pub const ALL_KINDS: [Fault; 5] = [
        Fault::Unavailable,
        Fault::Failed,
        Fault::Latency(Duration::from_secs(10)),
        Fault::Ambiguous,
        Fault::CrashAfterWrite,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Unavailable => "unavailable",
            Fault::Failed => "failed",
            Fault::Latency(_) => "latency",
            Fault::Ambiguous => "ambiguous",
            Fault::CrashAfterWrite => "crash",
        }
    }
}

/// The source of every injected error: which call it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    /// The call site.
    pub op: Op,
    /// The call's index in the plan.
    pub call: usize,
    /// Why: the fault, or an earlier crash.
    pub why: &'static str,
}

impl fmt::Display for Injected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "injected fault at call {} ({}): {}",
            self.call, self.op, self.why
        )
    }
}

impl std::error::Error for Injected {}

/// One call made through a wrapper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// Its index: the order in which calls were made through either wrapper.
    pub index: usize,
    /// The call site.
    pub op: Op,
    /// The fault injected, if any.
    pub fault: Option<Fault>,
    /// Whether the process had already crashed (the call failed without reaching the backend).
    pub after_crash: bool,
}

#[derive(Debug, Default)]
struct PlanState {
    calls: Vec<Call>,
    at_index: BTreeMap<usize, Fault>,
    at_op: BTreeMap<(Op, usize), Fault>,
    per_op: BTreeMap<Op, usize>,
    crashed: bool,
    paused: bool,
}

/// Which calls fail, and how; shared by a [`FaultyStore`] and a [`FaultyQueue`].
#[derive(Debug, Default)]
pub struct FaultPlan {
    state: Mutex<PlanState>,
    clock: Option<Arc<ManualClock>>,
}

/// What a wrapper does with one call, decided by the plan.
enum Step {
    /// Make the call and return its outcome.
    Pass,
    /// Do not make the call; fail.
    Refuse(PortError),
    /// Wait this long, then make the call.
    Delay(Duration),
    /// Make the call, then fail whatever it returned.
    ThenFail(PortError),
}

impl FaultPlan {
    /// A plan that injects nothing (yet) and only records the calls.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A plan whose [`Fault::Latency`] moves `clock` forward instead of sleeping.
    pub fn with_clock(clock: Arc<ManualClock>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            clock: Some(clock),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PlanState> {
        // A panicking test thread poisons nothing this plan relies on: the state stays usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Injects `fault` on the call numbered `index` (0-based, counted over both wrappers).
    pub fn inject(&self, index: usize, fault: Fault) {
        self.lock().at_index.insert(index, fault);
    }

    /// Injects `fault` on the `nth` (0-based) call of `op`.
    pub fn inject_on(&self, op: Op, nth: usize, fault: Fault) {
        self.lock().at_op.insert((op, nth), fault);
    }

    /// Stops counting and injecting (calls pass through unrecorded) until [`FaultPlan::resume`]:
    /// for a test's own setup through the wrapped ports.
    pub fn pause(&self) {
        self.lock().paused = true;
    }

    /// Counts and injects again.
    pub fn resume(&self) {
        self.lock().paused = false;
    }

    /// Every call recorded so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls at which a fault was injected.
    pub fn injected(&self) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.fault.is_some())
            .copied()
            .collect()
    }

    /// Whether a [`Fault::CrashAfterWrite`] has happened.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    fn step(&self, op: Op) -> Step {
        let mut state = self.lock();
        if state.paused {
            return Step::Pass;
        }
        let index = state.calls.len();
        let nth = {
            let n = state.per_op.entry(op).or_insert(0);
            let nth = *n;
            *n += 1;
            nth
        };
        let injected = |why| {
            PortError::unavailable(
                op.name(),
                Injected {
                    op,
                    call: index,
                    why,
                },
            )
        };
        if state.crashed {
            state.calls.push(Call {
                index,
                op,
                fault: None,
                after_crash: true,
            });
            return Step::Refuse(injected("the process crashed earlier"));
        }
        let fault = state
            .at_index
            .get(&index)
            .or_else(|| state.at_op.get(&(op, nth)))
            .copied();
        state.calls.push(Call {
            index,
            op,
            fault,
            after_crash: false,
        });
        match fault {
            None => Step::Pass,
            Some(Fault::Unavailable) => Step::Refuse(injected("unavailable")),
            Some(Fault::Failed) => Step::Refuse(PortError::failed(
                op.name(),
                Injected {
                    op,
                    call: index,
                    why: "failed",
                },
            )),
            Some(Fault::Latency(d)) => Step::Delay(d),
            Some(Fault::Ambiguous) => Step::ThenFail(PortError::ambiguous(
                op.name(),
                Injected {
                    op,
                    call: index,
                    why: "timed out; outcome unknown",
                },
            )),
            Some(Fault::CrashAfterWrite) => {
                state.crashed = true;
                let error = injected("the process crashed here");
                if op.is_write() {
                    Step::ThenFail(error)
                } else {
                    Step::Refuse(error)
                }
            }
        }
    }

    async fn delay(&self, d: Duration) {
        match &self.clock {
            Some(clock) => {
                clock.advance(d);
                // Let other tasks see the call as pending, as a real slow call would.
                tokio::task::yield_now().await;
            }
            None => tokio::time::sleep(d).await,
        }
    }

    /// Runs one call of `op` under the plan: `call` is the delegation to the wrapped port.
    async fn run<T, E, F>(&self, op: Op, call: F) -> Result<T, E>
    where
        F: std::future::Future<Output = Result<T, E>>,
        E: From<PortError>,
    {
        match self.step(op) {
            Step::Pass => call.await,
            Step::Refuse(e) => Err(e.into()),
            Step::Delay(d) => {
                self.delay(d).await;
                call.await
            }
            Step::ThenFail(e) => {
                // The outcome is dropped on purpose: the caller cannot know it.
                let _ = call.await;
                Err(e.into())
            }
        }
    }
}

/// A [`JobStore`] that delegates to `inner` under a [`FaultPlan`].
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    plan: Arc<FaultPlan>,
}

impl<S: JobStore> FaultyStore<S> {
    /// `inner`, with faults from `plan`.
    pub fn new(inner: S, plan: Arc<FaultPlan>) -> Self {
        Self { inner, plan }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

#[async_trait]
impl<S: JobStore> JobStore for FaultyStore<S> {
    async fn create(
        &self,
        job: &Job,
        input: &Value,
        key: Option<&IdempotencyRecord>,
    ) -> Result<Created, PortError> {
        self.plan
            .run(Op::StoreCreate, self.inner.create(job, input, key))
            .await
    }

    async fn get(&self, owner: &Owner, id: JobId) -> Result<Option<Job>, PortError> {
        self.plan.run(Op::StoreGet, self.inner.get(owner, id)).await
    }

    async fn input(&self, owner: &Owner, id: JobId) -> Result<Option<Value>, PortError> {
        self.plan
            .run(Op::StoreInput, self.inner.input(owner, id))
            .await
    }

    async fn result(&self, owner: &Owner, id: JobId) -> Result<Option<Value>, PortError> {
        self.plan
            .run(Op::StoreResult, self.inner.result(owner, id))
            .await
    }

    async fn update(
        &self,
        before: &Job,
        after: &Job,
        result: Option<&Value>,
        deltas: &Deltas,
    ) -> Result<(), WriteError> {
        self.plan
            .run(
                Op::StoreUpdate,
                self.inner.update(before, after, result, deltas),
            )
            .await
    }

    async fn list(&self, owner: &Owner, query: &ListQuery) -> Result<Page, PortError> {
        self.plan
            .run(Op::StoreList, self.inner.list(owner, query))
            .await
    }

    async fn figures(&self, owner: &Owner, since: Timestamp) -> Result<Figures, PortError> {
        self.plan
            .run(Op::StoreFigures, self.inner.figures(owner, since))
            .await
    }

    async fn due_for_sweep(&self, now: Timestamp, limit: usize) -> Result<Vec<Job>, PortError> {
        self.plan
            .run(Op::StoreDueForSweep, self.inner.due_for_sweep(now, limit))
            .await
    }

    async fn purge_expired(&self, now: Timestamp, limit: usize) -> Result<u64, PortError> {
        self.plan
            .run(Op::StorePurgeExpired, self.inner.purge_expired(now, limit))
            .await
    }
}

/// A [`Queue`] that delegates to `inner` under a [`FaultPlan`].
#[derive(Debug)]
pub struct FaultyQueue<Q> {
    inner: Q,
    plan: Arc<FaultPlan>,
}

impl<Q: Queue> FaultyQueue<Q> {
    /// `inner`, with faults from `plan`.
    pub fn new(inner: Q, plan: Arc<FaultPlan>) -> Self {
        Self { inner, plan }
    }

    /// The wrapped queue.
    pub fn inner(&self) -> &Q {
        &self.inner
    }
}

#[async_trait]
impl<Q: Queue> Queue for FaultyQueue<Q> {
    async fn send(&self, message: OutgoingMessage) -> Result<(), PortError> {
        self.plan.run(Op::QueueSend, self.inner.send(message)).await
    }

    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, PortError> {
        self.plan
            .run(Op::QueueReceive, self.inner.receive(max, visibility))
            .await
    }

    async fn delete(&self, receipt: &Receipt) -> Result<(), PortError> {
        self.plan
            .run(Op::QueueDelete, self.inner.delete(receipt))
            .await
    }

    async fn change_visibility(
        &self,
        receipt: &Receipt,
        timeout: Duration,
    ) -> Result<(), PortError> {
        self.plan
            .run(
                Op::QueueChangeVisibility,
                self.inner.change_visibility(receipt, timeout),
            )
            .await
    }

    async fn dead_letter(&self, delivery: &Delivery) -> Result<(), PortError> {
        self.plan
            .run(Op::QueueDeadLetter, self.inner.dead_letter(delivery))
            .await
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, PortError> {
        self.plan
            .run(Op::QueueDeadLetters, self.inner.dead_letters(max))
            .await
    }

    async fn receive_dead_letters(
        &self,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<DeadLetter>, PortError> {
        self.plan
            .run(
                Op::QueueReceiveDeadLetters,
                self.inner.receive_dead_letters(max, visibility),
            )
            .await
    }

    async fn delete_dead_letter(&self, receipt: &Receipt) -> Result<(), PortError> {
        self.plan
            .run(
                Op::QueueDeleteDeadLetter,
                self.inner.delete_dead_letter(receipt),
            )
            .await
    }

    async fn depth(&self) -> Result<QueueDepth, PortError> {
        self.plan.run(Op::QueueDepth, self.inner.depth()).await
    }
}

// ---- the restarted runtime and the checks ------------------------------------------------------

/// What [`drive_until_quiet`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quiet {
    /// Rounds played (each: drain the queue through the worker, sweep, let time pass).
    pub rounds: u32,
    /// Deliveries handled.
    pub deliveries: u32,
    /// Simulated time that passed.
    pub elapsed: Duration,
}

/// Plays the single machine's worker and sweeper on `app` (fault-free ports) until every job
/// of `watch` is terminal and the queue holds no message, moving `clock` by `tick` per round,
/// for at most `max_rounds` rounds. Returns what it did, or the last state when it never got
/// quiet (a job that lingers is what invariant 2 forbids).
///
/// Each round receives and handles every visible message (settling each as the worker does),
/// then sweeps, then lets `tick` pass.
pub async fn drive_until_quiet(
    app: &Ackflow,
    clock: &ManualClock,
    watch: &[(Owner, JobId)],
    tick: Duration,
    max_rounds: u32,
) -> Result<Quiet, String> {
    let mut quiet = Quiet::default();
    let visibility = app.settings().visibility_timeout;
    let err = |what: &str, e: PortError| format!("{what} failed on fault-free ports: {e}");
    for round in 1..=max_rounds {
        quiet.rounds = round;
        // Drain: bounded, since a message can come back at once (a zero-delay release).
        for _ in 0..100 {
            let batch = app
                .queue()
                .receive(10, visibility)
                .await
                .map_err(|e| err("receive", e))?;
            if batch.is_empty() {
                break;
            }
            for delivery in batch {
                quiet.deliveries += 1;
                let disposition = app.handle(&delivery).await;
                app.settle(&delivery, disposition, ackflow_core::Deleter::Worker)
                    .await
                    .map_err(|e| err("settle", e))?;
            }
        }
        app.sweep().await.map_err(|e| err("sweep", e))?;
        let mut all_terminal = true;
        for (owner, id) in watch {
            let job = app
                .store()
                .get(owner, *id)
                .await
                .map_err(|e| err("get", e))?;
            if job.is_some_and(|j| !j.state.is_terminal()) {
                all_terminal = false;
            }
        }
        let depth = app.queue().depth().await.map_err(|e| err("depth", e))?;
        if all_terminal && depth.waiting == 0 && depth.in_flight == 0 {
            return Ok(quiet);
        }
        clock.advance(tick);
        quiet.elapsed += tick;
    }
    let mut states = Vec::new();
    for (owner, id) in watch {
        let job = app.store().get(owner, *id).await.ok().flatten();
        states.push(job.map(|j| (j.state, j.attempts, j.generation)));
    }
    let depth = app.queue().depth().await.ok();
    Err(format!(
        "not quiet after {max_rounds} rounds ({:?} of simulated time): jobs {states:?}, queue {depth:?}",
        quiet.elapsed
    ))
}

/// Whether `to` may follow `from` in a job's history (SPEC.md's diagram plus the takeover of a
/// running job whose lease ended, which starts a new attempt).
pub fn legal_step(from: JobState, to: JobState) -> bool {
    use JobState::*;
    matches!(
        (from, to),
        (Queued, Running)
            | (Queued, Failed)
            | (Queued, Cancelled)
            | (Running, Running)
            | (Running, Queued)
            | (Running, Succeeded)
            | (Running, Failed)
            | (Failed, Queued)
    )
}

/// Whether a problem stored on a failed job is written for people: a title and a sentence,
/// and none of the internals SPEC.md keeps out of problems (Debug output, error chains, SQL,
/// paths, the injected faults' own text).
pub fn human_worded(problem: &Problem) -> Result<(), String> {
    let text = format!("{} {}", problem.title, problem.detail);
    if problem.title.trim().is_empty() || problem.detail.trim().is_empty() {
        return Err(format!("empty title or detail: {problem:?}"));
    }
    if !problem.detail.trim_end().ends_with(['.', '!', '?']) {
        return Err(format!("detail is not a sentence: {:?}", problem.detail));
    }
    for internal in [
        "injected",
        "Injected",
        "Unavailable {",
        "Failed {",
        "::",
        "PortError",
        "sqlite",
        "SQL",
        "{",
        "/tmp",
        "panicked at",
    ] {
        if text.contains(internal) {
            return Err(format!(
                "problem shows internals ({internal:?}): {problem:?}"
            ));
        }
    }
    Ok(())
}

/// Checks what SPEC.md promises of a job that has come to rest: it is terminal; its history
/// starts with its acceptance, follows the diagram step by step in time order and ends in its
/// state; its attempts are within budget; it has a result exactly when it succeeded and a
/// human-worded problem exactly when it failed; its lease and sweep time are cleared.
/// `result` is what the store returns as its result.
pub fn check_terminal_and_legal(
    job: &Job,
    result: Option<&Value>,
    history_cap: usize,
) -> Result<(), String> {
    let fail = |why: String| Err(format!("job {} ({}): {why}", job.id, job.state));
    if !job.state.is_terminal() {
        return fail("not terminal".into());
    }
    if job.attempts > job.max_attempts {
        return fail(format!(
            "{} attempts of at most {}",
            job.attempts, job.max_attempts
        ));
    }
    let Some(first) = job.history.first() else {
        return fail("no history".into());
    };
    if first.state != JobState::Queued {
        return fail(format!("history starts {}", first.state));
    }
    let complete = job.history.len() < history_cap.max(2);
    for (i, pair) in job.history.windows(2).enumerate() {
        let (a, b) = (&pair[0], &pair[1]);
        if b.at < a.at {
            return fail(format!("history goes back in time at entry {}", i + 1));
        }
        // With a full history the entries after the first were cut: the first step is unknown.
        if (complete || i > 0) && !legal_step(a.state, b.state) {
            return fail(format!(
                "illegal step {} → {} at entry {}: {:?}",
                a.state,
                b.state,
                i + 1,
                job.history
            ));
        }
    }
    if job.history.last().map(|e| e.state) != Some(job.state) {
        return fail(format!("history ends elsewhere: {:?}", job.history));
    }
    let succeeded = job.state == JobState::Succeeded;
    if job.has_result != succeeded || result.is_some() != succeeded {
        return fail(format!(
            "has_result {} / stored result {:?}",
            job.has_result,
            result.is_some()
        ));
    }
    match (&job.error, job.state) {
        (Some(problem), JobState::Failed) => {
            if let Err(why) = human_worded(problem) {
                return fail(why);
            }
        }
        (None, JobState::Failed) => return fail("failed without a problem".into()),
        (Some(problem), _) => {
            return fail(format!("a problem on a {} job: {problem:?}", job.state))
        }
        (None, _) => {}
    }
    if job.finished_at.is_none() || job.running_until.is_some() || job.sweep_at.is_some() {
        return fail(format!(
            "finished_at {:?}, running_until {:?}, sweep_at {:?}",
            job.finished_at, job.running_until, job.sweep_at
        ));
    }
    Ok(())
}
