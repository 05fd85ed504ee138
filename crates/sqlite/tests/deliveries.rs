//! Property tests of duplicate, late and out-of-order deliveries: a job never moves backwards,
//! never runs again after it succeeded, never loses or changes its result, and its attempts
//! never decrease.
//!
//! Two levels:
//! - `pure`: random interleavings of workers holding stale copies of a job, the sweeper, the
//!   owner and the operator, against [`Job::apply`] and a store that fences every write on the
//!   revision read (what every adapter does);
//! - `on_sqlite`: random interleavings of receives, redeliveries of old messages (duplicates and
//!   earlier generations), attempts that finish after another took over, clock jumps, sweeps and
//!   redrives, through [`Ackflow::handle`] on the SQLite adapters, with a processor that the test
//!   holds until it decides how the attempt ends.
//!
//! Both run a bounded number of cases from a fixed seed, so a run is repeatable and quick.

// Test code: a failed expectation is a failed test, and its message says which.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ackflow_core::{Job, JobState, Settings};
use proptest::test_runner::{Config, RngSeed};

/// Where a job is in SPEC.md's order, as a key that only grows along legal edges:
/// (generation, attempt slot, phase). A queued job with `a` attempts waits for attempt `a + 1`;
/// a running one is in attempt `a`; a terminal one is past every attempt of its generation. A
/// redrive starts the next generation.
fn progress_key(job: &Job) -> (u32, u32, u8) {
    match job.state {
        JobState::Queued => (job.generation, job.attempts + 1, 0),
        JobState::Running => (job.generation, job.attempts, 1),
        _ => (job.generation, u32::MAX, 2),
    }
}

/// The tests' knobs: short times, so that clock jumps cross leases, backoffs, resend times and
/// deadlines within a few steps.
fn settings() -> Settings {
    Settings {
        max_attempts: 3,
        worker_timeout: Duration::from_secs(2),
        lease_grace: Duration::from_secs(1),
        visibility_timeout: Duration::from_secs(3),
        backoff_base: Duration::from_millis(200),
        backoff_max: Duration::from_secs(1),
        job_deadline: Duration::from_secs(60),
        sweep_period: Duration::from_secs(1),
        resend_after: Duration::from_secs(5),
        ..Settings::default()
    }
}

/// The clock jumps the interleavings draw from: within a lease, past a lease and a visibility
/// timeout, past the resend time, and half a deadline.
const JUMPS: [Duration; 5] = [
    Duration::from_millis(300),
    Duration::from_secs(4),
    Duration::from_secs(6),
    Duration::from_secs(12),
    Duration::from_secs(30),
];

fn config(cases: u32, seed: u64) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        // A fixed seed reproduces any failure; no regressions file to keep in step.
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    }
}

mod pure {
    use super::*;
    use ackflow_core::{
        Change, Clock as _, CorrelationId, Job, JobState, Kind, ManualClock, NewJob, Owner,
        Problem, Progress, Timestamp,
    };
    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// What happens next to the job.
    #[derive(Debug, Clone)]
    enum Step {
        /// A delivery of the current generation's message starts an attempt (if the job
        /// allows it); the worker keeps a copy of what it wrote.
        Deliver,
        /// Worker `n` (modulo the workers so far) writes from its copy, however stale.
        Finish(usize, Ending),
        /// Time passes.
        Jump(usize),
        /// The sweeper looks at the job.
        Sweep,
        /// The owner cancels.
        Cancel,
        /// The operator redrives.
        Redrive,
    }

    #[derive(Debug, Clone, Copy)]
    enum Ending {
        Succeed,
        Release,
        Reject,
        Progress,
    }

    fn step() -> impl Strategy<Value = Step> {
        let ending = prop_oneof![
            Just(Ending::Succeed),
            Just(Ending::Release),
            Just(Ending::Reject),
            Just(Ending::Progress),
        ];
        prop_oneof![
            4 => Just(Step::Deliver),
            4 => (0..8usize, ending).prop_map(|(n, e)| Step::Finish(n, e)),
            2 => (0..JUMPS.len()).prop_map(Step::Jump),
            1 => Just(Step::Sweep),
            1 => Just(Step::Cancel),
            1 => Just(Step::Redrive),
        ]
    }

    /// The stored job and result, written only when the writer read the stored revision.
    struct Store {
        job: Job,
        result: Option<Value>,
        /// Attempts started (processor invocations).
        invocations: u32,
        /// Invocations when the job succeeded, and its result then.
        succeeded: Option<(u32, Value)>,
    }

    impl Store {
        /// The conditional write: `before` is what the writer read.
        fn write(
            &mut self,
            before: &Job,
            change: Change,
            now: Timestamp,
            result: Option<Value>,
        ) -> Result<bool, TestCaseError> {
            if before.revision != self.job.revision {
                return Ok(false); // fenced: someone wrote since
            }
            let Ok(after) = before.apply(change.clone(), now, &settings()) else {
                return Ok(false);
            };
            let old = &self.job;
            prop_assert_eq!(
                after.revision,
                old.revision + 1,
                "every write bumps the revision"
            );
            prop_assert!(
                progress_key(&after) >= progress_key(old),
                "{:?} moved the job backwards: {} {:?} → {} {:?}",
                change,
                old.state,
                progress_key(old),
                after.state,
                progress_key(&after)
            );
            prop_assert!(
                old.state != JobState::Succeeded,
                "{:?} changed a succeeded job",
                change
            );
            prop_assert!(after.generation >= old.generation);
            if after.generation == old.generation {
                prop_assert!(after.attempts >= old.attempts, "attempts went down");
            }
            if change == Change::Start {
                self.invocations += 1;
            }
            if let Some(result) = result {
                prop_assert!(self.result.is_none(), "a result was overwritten");
                self.result = Some(result);
            }
            self.job = after;
            if self.job.state == JobState::Succeeded && self.succeeded.is_none() {
                let result = self.result.clone().expect("a succeeded job has its result");
                self.succeeded = Some((self.invocations, result));
            }
            Ok(true)
        }
    }

    fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
        let s = settings();
        let clock = ManualClock::new(Timestamp::from_millis(1_800_000_000_000));
        let job = Job::new(
            NewJob {
                owner: Owner::anonymous(),
                kind: Kind::parse("demo").expect("a kind"),
                correlation_id: CorrelationId::random(),
                idempotency_key: None,
            },
            &clock,
            &s,
        );
        let mut store = Store {
            job,
            result: None,
            invocations: 0,
            succeeded: None,
        };
        // What each worker wrote when its attempt started.
        let mut workers: Vec<Job> = Vec::new();
        for step in steps {
            let now = clock.now();
            let read = store.job.clone();
            match step {
                Step::Deliver => {
                    if store.write(&read, Change::Start, now, None)? {
                        workers.push(store.job.clone());
                    }
                }
                Step::Finish(n, ending) => {
                    if workers.is_empty() {
                        continue;
                    }
                    let copy = workers[n % workers.len()].clone();
                    let (change, result) = match ending {
                        Ending::Succeed => (
                            Change::Succeed,
                            Some(json!({"attempt": copy.attempts, "generation": copy.generation})),
                        ),
                        Ending::Release => (
                            Change::Release {
                                retry_at: now.plus(s.backoff_base),
                                note: "Trying again".into(),
                            },
                            None,
                        ),
                        Ending::Reject => (Change::Fail(Problem::unreadable_message()), None),
                        Ending::Progress => (Change::Progress(Progress::new(50, "Half way")), None),
                    };
                    let is_progress = matches!(ending, Ending::Progress);
                    if store.write(&copy, change, now, result)? && is_progress {
                        // The attempt goes on from what it wrote.
                        let i = n % workers.len();
                        workers[i] = store.job.clone();
                    }
                }
                Step::Jump(i) => clock.advance(JUMPS[i]),
                Step::Sweep => {
                    if !read.state.is_terminal() {
                        let change = if now >= read.deadline {
                            Change::Fail(Problem::deadline_exceeded())
                        } else {
                            Change::Resent
                        };
                        store.write(&read, change, now, None)?;
                    }
                }
                Step::Cancel => {
                    store.write(&read, Change::Cancel, now, None)?;
                }
                Step::Redrive => {
                    let reopen = Change::Reopen {
                        note: "Redriven".into(),
                    };
                    store.write(&read, reopen, now, None)?;
                }
            }
            if let Some((invocations, result)) = &store.succeeded {
                prop_assert_eq!(store.job.state, JobState::Succeeded);
                prop_assert_eq!(store.invocations, *invocations, "ran again after success");
                prop_assert_eq!(store.result.as_ref(), Some(result), "the result changed");
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(config(256, 0x5eed_a11c))]

        #[test]
        fn interleaved_deliveries_never_move_a_job_backwards_or_rerun_a_success(
            steps in proptest::collection::vec(step(), 1..40)
        ) {
            run(steps)?;
        }
    }
}

mod on_sqlite {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Arc;

    use ackflow_core::{
        async_trait, Ackflow, Change, Clock as _, CorrelationId, Delivery, Deltas, Disposition,
        Envelope, FieldError, JobContext, JobId, Kind, ManualClock, OutgoingMessage, Owner,
        ProcessError, Processor, Registry, Rejection, Submission, Timestamp,
    };
    use ackflow_sqlite::{Db, Durability, SqliteQueue, SqliteStore};
    use ackflow_testkit::invariants::{check_terminal_and_legal, drive_until_quiet};
    use proptest::prelude::*;
    use serde_json::{json, Value};
    use tokio::sync::{mpsc, oneshot};
    use tokio::task::JoinHandle;

    /// How the test ends an attempt it holds.
    #[derive(Debug, Clone, Copy)]
    enum Verdict {
        Succeed,
        Transient,
        Reject,
    }

    /// A processor whose every attempt waits for the test's verdict (unless `auto` is set:
    /// then it succeeds at once), and counts its invocations.
    #[derive(Debug)]
    struct Held {
        invocations: Arc<AtomicU32>,
        auto: Arc<AtomicBool>,
        entered: mpsc::UnboundedSender<oneshot::Sender<Verdict>>,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("the test said this attempt fails for now")]
    struct Temporary;

    #[async_trait]
    impl Processor for Held {
        fn kind(&self) -> Kind {
            Kind::parse("held").expect("a kind")
        }

        fn validate(&self, _input: &Value) -> Result<(), Vec<FieldError>> {
            Ok(())
        }

        async fn process(&self, _input: Value, ctx: &JobContext) -> Result<Value, ProcessError> {
            let n = self.invocations.fetch_add(1, Ordering::SeqCst) + 1;
            let verdict = if self.auto.load(Ordering::SeqCst) {
                Verdict::Succeed
            } else {
                let (tx, rx) = oneshot::channel();
                let _ = self.entered.send(tx);
                rx.await.unwrap_or(Verdict::Transient)
            };
            match verdict {
                Verdict::Succeed => Ok(json!({"invocation": n, "attempt": ctx.attempt})),
                Verdict::Transient => Err(ProcessError::transient(Temporary)),
                Verdict::Reject => {
                    Err(
                        Rejection::new("refused", "Refused", "The test refused this request.")
                            .into(),
                    )
                }
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// The worker receives the next visible message and handles it.
        Receive,
        /// A message received before is delivered again (a duplicate, or a late copy of an
        /// older generation or attempt).
        Redeliver(usize),
        /// A held attempt ends; its message is settled when `settle` (or left to come back).
        Finish(usize, Verdict, bool),
        /// Time passes.
        Jump(usize),
        /// The sweeper runs.
        Sweep,
        /// The operator redrives the job if it failed: a new generation and its message.
        Redrive,
    }

    fn step() -> impl Strategy<Value = Step> {
        let verdict = prop_oneof![
            3 => Just(Verdict::Succeed),
            2 => Just(Verdict::Transient),
            1 => Just(Verdict::Reject),
        ];
        prop_oneof![
            4 => Just(Step::Receive),
            3 => (0..16usize).prop_map(Step::Redeliver),
            4 => (0..8usize, verdict, any::<bool>()).prop_map(|(n, v, s)| Step::Finish(n, v, s)),
            3 => (0..JUMPS.len()).prop_map(Step::Jump),
            1 => Just(Step::Sweep),
            1 => Just(Step::Redrive),
        ]
    }

    struct Pending {
        delivery: Delivery,
        verdict: oneshot::Sender<Verdict>,
        task: JoinHandle<Disposition>,
        /// The job as its attempt started it.
        started: Job,
    }

    /// How often the interleavings reached the situations the properties are about.
    #[derive(Debug, Default, Clone, Copy)]
    struct Seen {
        /// Attempts that ended after the job had moved on (taken over, swept, released).
        late_finishes: u32,
        /// Deliveries of a job that had already succeeded.
        deliveries_after_success: u32,
        /// Deliveries of an older generation's message.
        old_generation_deliveries: u32,
        /// Takeovers: an attempt started while an earlier one was still held.
        takeovers: u32,
    }

    static SEEN: std::sync::Mutex<Seen> = std::sync::Mutex::new(Seen {
        late_finishes: 0,
        deliveries_after_success: 0,
        old_generation_deliveries: 0,
        takeovers: 0,
    });

    fn seen(f: impl FnOnce(&mut Seen)) {
        if let Ok(mut s) = SEEN.lock() {
            f(&mut s);
        }
    }

    struct Rig {
        app: Arc<Ackflow>,
        clock: Arc<ManualClock>,
        invocations: Arc<AtomicU32>,
        auto: Arc<AtomicBool>,
        entered: mpsc::UnboundedReceiver<oneshot::Sender<Verdict>>,
        owner: Owner,
        id: JobId,
        /// Every delivery received so far.
        seen: Vec<Delivery>,
        /// Attempts the processor is holding.
        pending: Vec<Pending>,
        /// Invocations when the job was first seen succeeded, and its result then.
        succeeded: Option<(u32, Value)>,
        last: Option<Job>,
        _dir: tempfile::TempDir,
    }

    impl Rig {
        async fn new() -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            let db = Db::open(&dir.path().join("ackflow.db"), Durability::Normal).expect("db");
            let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
            let s = settings();
            let queue = SqliteQueue::new(db.clone(), "jobs", s.max_attempts + 3, clock.clone())
                .expect("queue");
            let invocations = Arc::new(AtomicU32::new(0));
            let auto = Arc::new(AtomicBool::new(false));
            let (tx, entered) = mpsc::unbounded_channel();
            let registry = Registry::new().with(Held {
                invocations: invocations.clone(),
                auto: auto.clone(),
                entered: tx,
            });
            let app = Arc::new(Ackflow::new(
                Arc::new(SqliteStore::new(db)),
                Arc::new(queue),
                registry,
                clock.clone(),
                s,
            ));
            let owner = Owner::anonymous();
            let accepted = app
                .accept(Submission {
                    owner: owner.clone(),
                    kind: "held".into(),
                    input: json!({}),
                    idempotency_key: None,
                    correlation_id: CorrelationId::random(),
                    trace_header: None,
                })
                .await
                .expect("accepted");
            Self {
                app,
                clock,
                invocations,
                auto,
                entered,
                owner,
                id: accepted.job.id,
                seen: Vec::new(),
                pending: Vec::new(),
                succeeded: None,
                last: None,
                _dir: dir,
            }
        }

        /// Handles `delivery` in a task until it either finishes (then settles it) or waits in
        /// the processor (then holds it).
        async fn deliver(&mut self, delivery: Delivery) {
            let before = self.job().await;
            if before.state == JobState::Succeeded {
                seen(|s| s.deliveries_after_success += 1);
            }
            let generation = serde_json::from_str::<Envelope>(&delivery.body)
                .map(|e| e.generation)
                .expect("our own message");
            if generation < before.generation {
                seen(|s| s.old_generation_deliveries += 1);
            }
            let app = Arc::clone(&self.app);
            let d = delivery.clone();
            let mut task = tokio::spawn(async move { app.handle(&d).await });
            tokio::select! {
                biased;
                verdict = self.entered.recv() => {
                    let verdict = verdict.expect("the processor is alive");
                    let started = self.job().await;
                    if !self.pending.is_empty() {
                        seen(|s| s.takeovers += 1);
                    }
                    self.pending.push(Pending { delivery, verdict, task, started });
                }
                disposition = &mut task => {
                    let disposition = disposition.expect("handle never panics");
                    let _ = self.app.settle(&delivery, disposition, ackflow_core::Deleter::Worker).await;
                }
            }
        }

        async fn step(&mut self, step: Step) {
            match step {
                Step::Receive => {
                    let visibility = self.app.settings().visibility_timeout;
                    let batch = self
                        .app
                        .queue()
                        .receive(1, visibility)
                        .await
                        .expect("receive");
                    for delivery in batch {
                        self.seen.push(delivery.clone());
                        self.deliver(delivery).await;
                    }
                }
                Step::Redeliver(i) => {
                    if !self.seen.is_empty() {
                        let delivery = self.seen[i % self.seen.len()].clone();
                        self.deliver(delivery).await;
                    }
                }
                Step::Finish(i, verdict, settle) => {
                    if !self.pending.is_empty() {
                        let held = self.pending.remove(i % self.pending.len());
                        if self.job().await.revision != held.started.revision {
                            seen(|s| s.late_finishes += 1);
                        }
                        let _ = held.verdict.send(verdict);
                        let disposition = held.task.await.expect("handle never panics");
                        if settle {
                            let _ = self
                                .app
                                .settle(&held.delivery, disposition, ackflow_core::Deleter::Worker)
                                .await;
                        }
                    }
                }
                Step::Jump(i) => self.clock.advance(JUMPS[i]),
                Step::Sweep => {
                    self.app.sweep().await.expect("sweep");
                }
                Step::Redrive => self.redrive().await,
            }
        }

        async fn job(&self) -> Job {
            self.app
                .store()
                .get(&self.owner, self.id)
                .await
                .expect("get")
                .expect("job")
        }

        /// What the operator's redrive does to a failed job: reopen it in a new generation
        /// (fenced like every write) and send that generation's message.
        async fn redrive(&self) {
            let store = self.app.store();
            let job = store
                .get(&self.owner, self.id)
                .await
                .expect("get")
                .expect("job");
            if job.state != JobState::Failed {
                return;
            }
            let now = self.clock.now();
            let reopen = Change::Reopen {
                note: "Redriven by the test".into(),
            };
            let after = job.apply(reopen, now, self.app.settings()).expect("reopen");
            if store
                .update(&job, &after, None, &Deltas::between(&job, &after))
                .await
                .is_ok()
            {
                let envelope = Envelope::for_job(&after);
                self.app
                    .queue()
                    .send(OutgoingMessage {
                        body: envelope.to_body(),
                        attributes: envelope.attributes(),
                        delay: Duration::ZERO,
                    })
                    .await
                    .expect("send");
            }
        }

        /// The properties, against the job as stored now and as it was at the last look.
        async fn observe(&mut self) -> Result<(), TestCaseError> {
            let store = self.app.store();
            let job = store
                .get(&self.owner, self.id)
                .await
                .expect("get")
                .expect("job");
            let result = store.result(&self.owner, self.id).await.expect("result");
            if let Some(last) = &self.last {
                prop_assert!(
                    progress_key(&job) >= progress_key(last),
                    "moved backwards: {} {:?} → {} {:?}; history {:?}",
                    last.state,
                    progress_key(last),
                    job.state,
                    progress_key(&job),
                    job.history
                );
                prop_assert!(job.revision >= last.revision);
                if job.generation == last.generation {
                    prop_assert!(job.attempts >= last.attempts, "attempts went down");
                }
            }
            prop_assert!(
                job.attempts <= job.max_attempts,
                "{} attempts",
                job.attempts
            );
            prop_assert_eq!(job.state == JobState::Succeeded, result.is_some());
            let invocations = self.invocations.load(Ordering::SeqCst);
            match &self.succeeded {
                Some((at_success, first)) => {
                    prop_assert_eq!(job.state, JobState::Succeeded, "left success");
                    prop_assert_eq!(invocations, *at_success, "ran again after success");
                    prop_assert_eq!(result.as_ref(), Some(first), "the result changed");
                }
                None if job.state == JobState::Succeeded => {
                    self.succeeded = Some((invocations, result.clone().expect("a result")));
                }
                None => {}
            }
            self.last = Some(job);
            Ok(())
        }

        /// Lets every held attempt end as transient, then plays the worker and sweeper until
        /// quiet: the job must end terminal and legal, and a success must still stand.
        async fn finish(&mut self) -> Result<(), TestCaseError> {
            self.auto.store(true, Ordering::SeqCst);
            for held in std::mem::take(&mut self.pending) {
                drop(held.verdict);
                let disposition = held.task.await.expect("handle never panics");
                let _ = self
                    .app
                    .settle(&held.delivery, disposition, ackflow_core::Deleter::Worker)
                    .await;
            }
            self.observe().await?;
            let watch = [(self.owner.clone(), self.id)];
            let quiet = drive_until_quiet(&self.app, &self.clock, &watch, JUMPS[0], 1000).await;
            prop_assert!(quiet.is_ok(), "{:?}", quiet);
            self.observe().await?;
            let store = self.app.store();
            let job = store
                .get(&self.owner, self.id)
                .await
                .expect("get")
                .expect("job");
            let result = store.result(&self.owner, self.id).await.expect("result");
            let legal = check_terminal_and_legal(&job, result.as_ref(), settings().history_cap);
            prop_assert!(legal.is_ok(), "{:?}", legal);
            Ok(())
        }
    }

    async fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
        let mut rig = Rig::new().await;
        for step in steps {
            rig.step(step).await;
            rig.observe().await?;
        }
        rig.finish().await
    }

    #[test]
    fn interleaved_deliveries_through_the_worker_never_move_a_job_backwards_or_rerun_a_success() {
        let mut runner = proptest::test_runner::TestRunner::new(config(64, 0xacc_f10e));
        let outcome = runner.run(&proptest::collection::vec(step(), 1..30), |steps| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(run(steps))
        });
        let seen = *SEEN.lock().expect("counts");
        println!("deliveries on SQLite: 64 cases; reached {seen:?}");
        if let Err(e) = outcome {
            panic!("{e}");
        }
        // The interleavings must reach what the properties are about, or they prove little.
        assert!(seen.late_finishes > 0, "no late finish: {seen:?}");
        assert!(
            seen.deliveries_after_success > 0,
            "no delivery after success: {seen:?}"
        );
        assert!(
            seen.old_generation_deliveries > 0,
            "no old generation: {seen:?}"
        );
        assert!(seen.takeovers > 0, "no takeover: {seen:?}");
    }
}
