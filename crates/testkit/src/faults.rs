//! Fault injection around the two ports.
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
//! A scenario test that means one failure rather than all of them switches a fault on and off
//! for one operation ([`FaultPlan::inject_every`], [`FaultPlan::clear`]: an outage that lasts as
//! long as the test says), or holds the calls of one operation until it lets them through
//! ([`FaultPlan::hold`]: a send that hangs while its client goes away), or injects a fault the
//! matrix leaves out ([`Fault::Lost`], and [`Fault::Replayed`]: a write that landed, whose retry
//! met it). The wrappers are then
//! the only pass-through ports the tests need: every call the test does not touch reaches the
//! wrapped port unchanged.
//!
//! [`crate::invariants`] then plays the restarted runtime and judges every job at rest.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ackflow_core::report::Deltas;
use ackflow_core::{
    async_trait, Created, DeadLetter, Delivery, Figures, IdempotencyRecord, Job, JobId, JobStore,
    ListQuery, ManualClock, OutgoingMessage, Owner, Page, PortError, Queue, QueueDepth, Receipt,
    Timestamp, WriteError,
};
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};

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
    /// The call is not made and fails with [`PortError::Ambiguous`]: a timeout before the
    /// request reached the backend, which the caller cannot tell from [`Fault::Ambiguous`].
    Lost,
    /// The call happens (a write takes effect) and its answer is lost; the client's own retry
    /// then meets the write it made, so a conditional store write answers
    /// [`WriteError::Conflict`] (DynamoDB's `PutItem` carries no idempotency token, and this is
    /// what the SDK's retry of one whose answer was cut gets). Any other call fails as with
    /// [`Fault::Ambiguous`].
    Replayed,
}

impl Fault {
    /// The kinds the fault tests enumerate at every call. The latency (10 s) outlasts the leases,
    /// visibility timeouts and resend times of the fault tests' settings, and stays well within
    /// their deadlines. [`Fault::Lost`] is not among them: scenario tests inject it where they
    /// mean it.
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
            Fault::Lost => "lost",
            Fault::Replayed => "replayed",
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
    every: BTreeMap<Op, Fault>,
    holds: BTreeMap<Op, Arc<Hold>>,
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
    /// Make the call, then answer as its replay would ([`Fault::Replayed`]).
    Replay(PortError),
}

/// What a wrapped call answers: any port error, and for a conditional write its own conflict.
trait Answer: From<PortError> {
    /// The answer of a replayed call whose first try took effect; `None` where the call has no
    /// answer of its own for that, and the replay fails like a timeout.
    fn replayed() -> Option<Self> {
        None
    }
}

impl Answer for PortError {}

impl Answer for WriteError {
    fn replayed() -> Option<Self> {
        Some(WriteError::Conflict)
    }
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

    /// Injects `fault` on every call of `op` from now on, until [`FaultPlan::clear`]. A fault
    /// injected by index or by [`FaultPlan::inject_on`] wins over it.
    pub fn inject_every(&self, op: Op, fault: Fault) {
        self.lock().every.insert(op, fault);
    }

    /// Stops [`FaultPlan::inject_every`]'s fault on `op`.
    pub fn clear(&self, op: Op) {
        self.lock().every.remove(&op);
    }

    /// Makes every call of `op` wait at the returned [`Hold`] before it is made, until the test
    /// releases it.
    pub fn hold(&self, op: Op) -> Arc<Hold> {
        let hold = Arc::new(Hold {
            reached: Notify::new(),
            open: Semaphore::new(0),
        });
        self.lock().holds.insert(op, hold.clone());
        hold
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
            .or_else(|| state.every.get(&op))
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
            Some(Fault::Replayed) => Step::Replay(PortError::ambiguous(
                op.name(),
                Injected {
                    op,
                    call: index,
                    why: "answer lost; the retry met the first try's write",
                },
            )),
            Some(Fault::Lost) => Step::Refuse(PortError::ambiguous(
                op.name(),
                Injected {
                    op,
                    call: index,
                    why: "timed out before it was made",
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
        E: Answer,
    {
        let hold = {
            let state = self.lock();
            (!state.paused)
                .then(|| state.holds.get(&op).cloned())
                .flatten()
        };
        if let Some(hold) = hold {
            hold.wait().await;
        }
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
            Step::Replay(e) => {
                let _ = call.await;
                Err(E::replayed().unwrap_or_else(|| e.into()))
            }
        }
    }
}

/// Where the calls of one [`Op`] wait until the test lets them through ([`FaultPlan::hold`]).
#[derive(Debug)]
pub struct Hold {
    reached: Notify,
    open: Semaphore,
}

impl Hold {
    /// Returns once a call has reached the hold (at once if one did since the last return).
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Lets the waiting calls through, and every later one.
    pub fn release(&self) {
        // A closed semaphore is an open hold: every acquire fails at once.
        self.open.close();
    }

    async fn wait(&self) {
        self.reached.notify_one();
        let _ = self.open.acquire().await;
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
