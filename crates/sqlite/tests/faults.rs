//! Every failure point of the use cases, on the real SQLite adapters.
//!
//! Each use case (accept, the worker's handle + settle, cancel, the sweeper's resend and
//! deadline, the operator's redrive) runs once without faults through
//! [`FaultyStore`]/[`FaultyQueue`] to count its port calls; then once per call and fault kind
//! (unavailable, failed, latency, an ambiguous write, a crash after the write). After each run
//! the runtime "restarts": a fresh `Ackflow` on the same database file, without faults, plays
//! worker and sweeper rounds on a moving clock until quiet, and the job must have come to rest
//! in a legal terminal state (SPEC.md) with no message left behind.

// Test code: a failed expectation is a failed test, and its message says which.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ackflow_core::service::dlq::REDRIVE_HOLD;
use ackflow_core::{
    AcceptError, Ackflow, CorrelationId, IdempotencyKey, JobId, JobState, JobStore, ListQuery,
    ManualClock, Owner, Queue, Settings, Submission, Timestamp,
};
use ackflow_processors::order::SqliteOrderBook;
use ackflow_processors::registry_with;
use ackflow_sqlite::{Db, Durability, SqliteQueue, SqliteStore};
use ackflow_testkit::faults::{Fault, FaultPlan, FaultyQueue, FaultyStore, Op};
use ackflow_testkit::invariants::{check_terminal_and_legal, drive_until_quiet};
use serde_json::{json, Value};

/// Short times, so that recovery takes few rounds: the lease (3 s), the visibility timeout
/// (3 s) and the resend time (5 s) are all shorter than the injected latency (10 s), and the
/// deadline (60 s) much longer.
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

/// One round of recovery lets this much time pass.
const TICK: Duration = Duration::from_secs(1);
/// Well past the deadline plus a sweep period: a job still open then lingers.
const MAX_ROUNDS: u32 = 120;
const KEY: &str = "fault-test-key";

fn owner() -> Owner {
    Owner::anonymous()
}

/// The app over the SQLite file at `path`, its ports wrapped by `plan` when given.
fn app_on(path: &Path, clock: &Arc<ManualClock>, plan: Option<&Arc<FaultPlan>>) -> Ackflow {
    let s = settings();
    let db = Db::open(path, Durability::Normal).expect("db opens");
    let store = SqliteStore::new(db.clone());
    let queue =
        SqliteQueue::new(db.clone(), "jobs", s.max_attempts + 3, clock.clone()).expect("queue");
    let book = Arc::new(SqliteOrderBook::new(db).expect("order book"));
    let registry = registry_with(book, clock.clone(), true);
    let (store, queue): (Arc<dyn JobStore>, Arc<dyn Queue>) = match plan {
        Some(plan) => (
            Arc::new(FaultyStore::new(store, plan.clone())),
            Arc::new(FaultyQueue::new(queue, plan.clone())),
        ),
        None => (Arc::new(store), Arc::new(queue)),
    };
    Ackflow::new(store, queue, registry, clock.clone(), s)
}

fn submission(input: &Value) -> Submission {
    Submission {
        owner: owner(),
        kind: "demo".to_owned(),
        input: input.clone(),
        idempotency_key: Some(IdempotencyKey::parse(KEY).expect("valid key")),
        correlation_id: CorrelationId::random(),
        trace_header: None,
    }
}

/// The use cases, each with the state it starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    /// A client submits a job, and retries with the same key (whatever it was told).
    Accept,
    /// A client submits a job and never comes back.
    AcceptAbandoned,
    /// The worker receives, handles and settles the message of a queued job whose input is…
    Handle(Input),
    /// The owner cancels a queued job.
    Cancel,
    /// The sweeper re-sends the message of a queued job whose message was lost.
    SweepResend,
    /// The sweeper fails a job past its deadline.
    SweepDeadline,
    /// The operator redrives a dead-lettered job that failed.
    Redrive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    Succeeds,
    FailsOnce,
    Rejected,
}

impl Input {
    fn json(self) -> Value {
        match self {
            Input::Succeeds => json!({"steps": 1}),
            Input::FailsOnce => json!({"steps": 1, "fail_attempts": 1}),
            Input::Rejected => json!({"reject": "The warehouse is closed today."}),
        }
    }
}

impl Case {
    fn is_accept(self) -> bool {
        matches!(self, Case::Accept | Case::AcceptAbandoned)
    }

    fn input(self) -> Value {
        match self {
            Case::Handle(input) => input.json(),
            _ => Input::Succeeds.json(),
        }
    }
}

/// What the caller of the use case was told.
#[derive(Debug)]
enum Told {
    Ok,
    /// The error, for the failure message.
    Err(#[allow(dead_code, reason = "read through Debug in failure messages")] String),
}

/// One run of a use case under `fault` at call `at`, then the restart and the checks.
struct Run {
    /// The port calls the use case made, by name.
    calls: Vec<&'static str>,
    /// The state the job came to rest in (none when no job was recorded).
    end: Option<JobState>,
    /// Whether the caller was told of an error.
    told_error: bool,
}

async fn run(case: Case, inject: Option<(usize, Fault)>) -> Result<Run, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ackflow.db");
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
    let plan = FaultPlan::with_clock(clock.clone());
    let app = app_on(&path, &clock, Some(&plan));
    let s = settings();
    let input = case.input();

    // ---- the state the use case starts from (no faults, calls not counted) -------------------
    plan.pause();
    let mut job: Option<JobId> = None;
    if !case.is_accept() {
        let accepted = app.accept(submission(&input)).await.expect("setup accept");
        job = Some(accepted.job.id);
    }
    match case {
        Case::SweepResend | Case::SweepDeadline | Case::Redrive => {
            let batch = app
                .queue()
                .receive(1, s.visibility_timeout)
                .await
                .expect("setup receive");
            let delivery = batch.first().expect("the job's message");
            if case == Case::Redrive {
                app.queue()
                    .dead_letter(delivery)
                    .await
                    .expect("setup dead letter");
            } else {
                // The message is lost.
                app.queue()
                    .delete(&delivery.receipt)
                    .await
                    .expect("setup delete");
            }
            let wait = if case == Case::SweepResend {
                s.resend_after
            } else {
                s.job_deadline
            };
            clock.advance(wait + TICK);
            if case == Case::Redrive {
                let swept = app.sweep().await.expect("setup sweep");
                assert_eq!(
                    swept.failed, 1,
                    "the dead-lettered job fails at its deadline"
                );
            }
        }
        _ => {}
    }
    if let Some((at, fault)) = inject {
        plan.inject(at, fault);
    }
    plan.resume();

    // ---- the use case, through the faulty ports --------------------------------------------
    let told = match case {
        Case::Accept | Case::AcceptAbandoned => match app.accept(submission(&input)).await {
            Ok(accepted) => {
                job = Some(accepted.job.id);
                Told::Ok
            }
            Err(e @ (AcceptError::Unavailable(_) | AcceptError::NotQueued { .. })) => {
                Told::Err(e.to_string())
            }
            Err(other) => return Err(format!("accept answered {other:?}, not 503")),
        },
        Case::Handle(_) => match app.queue().receive(1, s.visibility_timeout).await {
            Ok(batch) => {
                for delivery in &batch {
                    let disposition = app.handle(delivery).await;
                    // A failed settle leaves the message to come back: the worker logs it.
                    let _ = app
                        .settle(delivery, disposition, ackflow_core::Deleter::Worker)
                        .await;
                }
                Told::Ok
            }
            Err(e) => Told::Err(e.to_string()),
        },
        Case::Cancel => {
            let id = job.expect("a job");
            match app.cancel(&owner(), id).await {
                Ok(_) => Told::Ok,
                Err(e) => Told::Err(e.to_string()),
            }
        }
        Case::SweepResend | Case::SweepDeadline => match app.sweep().await {
            Ok(_) => Told::Ok,
            Err(e) => Told::Err(e.to_string()),
        },
        Case::Redrive => match app.redrive_dead_letters(10).await {
            Ok(report) if report.is_clean() => Told::Ok,
            Ok(report) => Told::Err(format!("{:?}", report.messages)),
            Err(e) => Told::Err(e.to_string()),
        },
    };
    let calls: Vec<&'static str> = plan.calls().iter().map(|c| c.op.name()).collect();
    let injected = plan.injected().len();
    if injected != usize::from(inject.is_some()) {
        return Err(format!("{injected} faults injected, not one"));
    }
    drop(app);

    // ---- the restart: fresh ports on the same file, no faults ------------------------------
    let app = app_on(&path, &clock, None);
    let listed = app
        .store()
        .list(
            &owner(),
            &ListQuery {
                limit: 10,
                ..ListQuery::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    match (case, &told) {
        (Case::Accept | Case::AcceptAbandoned, Told::Ok) => {
            let id = job.expect("accepted");
            if listed.jobs.iter().map(|j| j.id).collect::<Vec<_>>() != [id] {
                return Err(format!(
                    "a 202 for {id}, but the store holds {:?}",
                    listed.jobs
                ));
            }
        }
        (Case::Accept | Case::AcceptAbandoned, Told::Err(_)) if listed.jobs.len() > 1 => {
            return Err(format!("a failed accept left {} jobs", listed.jobs.len()));
        }
        _ => {}
    }
    if case == Case::Accept {
        // The client retries with the same key, as a 503 tells it to (and a 202's client may
        // retry too, having lost the answer): one job either way.
        let retried = app
            .accept(submission(&input))
            .await
            .map_err(|e| format!("the retry with the same key was refused: {e:?}"))?;
        if let Some(first) = listed.jobs.first() {
            if retried.job.id != first.id {
                return Err("the retry made a second job".into());
            }
        }
        job = Some(retried.job.id);
    }
    if case == Case::Redrive {
        // The operator runs the redrive again once the dead letters it held are visible again.
        clock.advance(REDRIVE_HOLD + TICK);
        let report = app
            .redrive_dead_letters(10)
            .await
            .map_err(|e| format!("the second redrive failed: {e}"))?;
        if !report.is_clean() {
            return Err(format!("the second redrive left {:?}", report.messages));
        }
    }
    if case == Case::AcceptAbandoned && job.is_none() {
        // Told 503: the job the failed accept may have left is the one to watch, if any.
        job = listed.jobs.first().map(|j| j.id);
    }
    let Some(id) = job else {
        // Nothing was recorded and nobody retried: nothing may be left behind.
        let depth = app.queue().depth().await.map_err(|e| e.to_string())?;
        if depth.waiting + depth.in_flight + depth.dead != 0 {
            return Err(format!("no job, but messages are left: {depth:?}"));
        }
        return Ok(Run {
            calls,
            end: None,
            told_error: true,
        });
    };
    let watch = [(owner(), id)];
    drive_until_quiet(&app, &clock, &watch, TICK, MAX_ROUNDS).await?;

    // ---- the checks --------------------------------------------------------------------------
    let listed = app
        .store()
        .list(
            &owner(),
            &ListQuery {
                limit: 10,
                ..ListQuery::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    if listed.jobs.len() != 1 {
        return Err(format!("{} jobs in the store, not one", listed.jobs.len()));
    }
    let stored = app
        .store()
        .get(&owner(), id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the job is gone")?;
    let result = app
        .store()
        .result(&owner(), id)
        .await
        .map_err(|e| e.to_string())?;
    check_terminal_and_legal(&stored, result.as_ref(), s.history_cap)?;
    let dead = app.queue().depth().await.map_err(|e| e.to_string())?.dead;
    if dead != 0 {
        return Err(format!("{dead} dead letters left behind"));
    }
    let slug = stored
        .error
        .as_ref()
        .and_then(|p| p.slug())
        .map(str::to_owned);
    let expected = match (case, &told) {
        (Case::Handle(Input::Rejected), _) => stored.state == JobState::Failed,
        (Case::Cancel, Told::Ok) => stored.state == JobState::Cancelled,
        (Case::Cancel, Told::Err(_)) => {
            matches!(stored.state, JobState::Cancelled | JobState::Succeeded)
        }
        (Case::SweepDeadline, _) => slug.as_deref() == Some("deadline-exceeded"),
        // A 503 with the job recorded: it either ran anyway (its message went out, or the
        // sweeper re-sent it) or failed saying it was not queued.
        (Case::AcceptAbandoned, Told::Err(_)) => {
            stored.state == JobState::Succeeded || slug.as_deref() == Some("enqueue-failed")
        }
        // Everything else is a demo job that works: whatever failed on the way, it gets done.
        _ => stored.state == JobState::Succeeded,
    };
    if !expected {
        return Err(format!(
            "ended {} ({slug:?}) after {told:?}; history {:?}",
            stored.state, stored.history
        ));
    }
    Ok(Run {
        calls,
        end: Some(stored.state),
        told_error: matches!(told, Told::Err(_)),
    })
}

/// Runs `case` without faults, then with every fault kind at every one of its calls; fails
/// with every broken run listed. Prints how many failure points were tried.
async fn every_failure_point(case: Case) {
    let clean = run(case, None)
        .await
        .unwrap_or_else(|e| panic!("{case:?} without faults: {e}"));
    let mut broken = Vec::new();
    let mut ends: BTreeMap<String, u32> = BTreeMap::new();
    let mut told_errors = 0;
    for at in 0..clean.calls.len() {
        for fault in Fault::ALL_KINDS {
            match run(case, Some((at, fault))).await {
                Ok(r) => {
                    let end = r.end.map_or("no job".to_owned(), |s| s.to_string());
                    *ends.entry(end).or_default() += 1;
                    told_errors += u32::from(r.told_error);
                }
                Err(e) => broken.push(format!(
                    "{} at call {at} ({}): {e}",
                    fault.name(),
                    clean.calls[at]
                )),
            }
        }
    }
    println!(
        "faults {case:?}: {} failure points × {} kinds = {} runs; calls {:?}; caller told of an error in {told_errors}; ends {ends:?}",
        clean.calls.len(),
        Fault::ALL_KINDS.len(),
        clean.calls.len() * Fault::ALL_KINDS.len(),
        clean.calls,
    );
    assert!(
        broken.is_empty(),
        "{case:?}: {} of {} runs broke:\n{}",
        broken.len(),
        clean.calls.len() * Fault::ALL_KINDS.len(),
        broken.join("\n")
    );
}

#[tokio::test]
async fn every_failure_point_of_accept_ends_with_one_terminal_job_after_a_retry() {
    every_failure_point(Case::Accept).await;
}

#[tokio::test]
async fn every_failure_point_of_an_abandoned_accept_leaves_no_job_or_a_terminal_one() {
    every_failure_point(Case::AcceptAbandoned).await;
}

#[tokio::test]
async fn every_failure_point_of_handling_a_delivery_ends_with_the_job_succeeded() {
    every_failure_point(Case::Handle(Input::Succeeds)).await;
}

#[tokio::test]
async fn every_failure_point_of_a_transient_failure_ends_with_a_later_attempt_succeeding() {
    every_failure_point(Case::Handle(Input::FailsOnce)).await;
}

#[tokio::test]
async fn every_failure_point_of_a_rejection_ends_with_the_job_failed() {
    every_failure_point(Case::Handle(Input::Rejected)).await;
}

#[tokio::test]
async fn every_failure_point_of_cancel_ends_cancelled_or_done() {
    every_failure_point(Case::Cancel).await;
}

#[tokio::test]
async fn every_failure_point_of_the_sweepers_resend_ends_with_the_job_succeeded() {
    every_failure_point(Case::SweepResend).await;
}

#[tokio::test]
async fn every_failure_point_of_the_sweepers_deadline_ends_with_the_job_failed_in_words() {
    every_failure_point(Case::SweepDeadline).await;
}

#[tokio::test]
async fn every_failure_point_of_the_redrive_ends_with_the_job_succeeded_once_rerun() {
    every_failure_point(Case::Redrive).await;
}

// ---- lost answers and failed outcome writes: finished work is not redone ----------------------

/// Counts its runs; reports progress once, after moving the world's clock past the progress
/// interval so that the report is written.
#[derive(Debug)]
struct CountsRuns {
    runs: Arc<std::sync::atomic::AtomicUsize>,
    clock: Arc<ManualClock>,
}

#[ackflow_core::async_trait]
impl ackflow_core::Processor for CountsRuns {
    fn kind(&self) -> ackflow_core::Kind {
        ackflow_core::Kind::parse("counted").expect("kind")
    }

    fn validate(&self, _input: &Value) -> Result<(), Vec<ackflow_core::FieldError>> {
        Ok(())
    }

    async fn process(
        &self,
        _input: Value,
        ctx: &ackflow_core::JobContext,
    ) -> Result<Value, ackflow_core::ProcessError> {
        self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.clock.advance(settings().progress_interval);
        ctx.progress(50, "half way").await;
        Ok(json!({"done": true}))
    }
}

/// An app on a fresh SQLite file whose store and queue go through one fault plan on a manual
/// clock, for the one-job reproductions; `backend` reaches the file without faults.
struct OneJob {
    app: Ackflow,
    backend: ackflow_sqlite::SqliteBackend,
    plan: Arc<FaultPlan>,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

impl OneJob {
    fn new(
        registry: impl FnOnce(
            &ackflow_sqlite::SqliteBackend,
            Arc<ManualClock>,
        ) -> ackflow_core::Registry,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
        let plan = FaultPlan::with_clock(clock.clone());
        let s = settings();
        let backend = ackflow_sqlite::SqliteBackend::open(
            &dir.path().join("ackflow.db"),
            Durability::Normal,
            &s,
            clock.clone(),
        )
        .expect("db opens");
        let store = Arc::new(FaultyStore::new(
            backend.store.as_ref().clone(),
            plan.clone(),
        ));
        // A second handle on the backend's queue: the faults reach the app alone.
        let faulty = ackflow_sqlite::SqliteBackend::on(backend.db.clone(), &s, clock.clone())
            .expect("queue");
        let queue = Arc::new(FaultyQueue::new(
            Arc::into_inner(faulty.queue).expect("one handle"),
            plan.clone(),
        ));
        let registry = registry(&backend, clock.clone());
        let app = Ackflow::new(store, queue, registry, clock.clone(), s);
        Self {
            app,
            backend,
            plan,
            clock,
            _dir: dir,
        }
    }

    /// With the counting kind only, its runs counted in `runs`.
    fn counting(runs: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        Self::new(|_, clock| {
            ackflow_core::Registry::new().with(CountsRuns {
                runs: runs.clone(),
                clock,
            })
        })
    }

    /// With the shipped processors (`demo` included).
    fn shipped() -> Self {
        Self::new(|backend, clock| {
            let book = Arc::new(SqliteOrderBook::new(backend.db.clone()).expect("order book"));
            registry_with(book, clock, true)
        })
    }

    /// The jobs the file holds, whatever the faults.
    async fn jobs(&self) -> Vec<ackflow_core::Job> {
        self.backend
            .store
            .list(&owner(), &ListQuery::default())
            .await
            .expect("list")
            .jobs
    }

    /// Messages waiting on the queue.
    async fn waiting(&self) -> u64 {
        self.backend.queue.depth().await.expect("depth").waiting
    }
}

/// One job of the counting kind, accepted without faults, and the worker's handling of its
/// first delivery with `fault` injected on the `nth` store write of that handling (0: the
/// attempt's start, 1: its progress, 2: its outcome), the job's clock ticking in real time. Returns the job as stored afterwards,
/// the disposition, and how often the processor ran.
async fn handle_once_with(
    nth: usize,
    fault: Fault,
) -> (ackflow_core::Job, ackflow_core::Disposition, usize) {
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let one = OneJob::counting(&runs);
    let (app, backend, plan, s) = (&one.app, &one.backend, &one.plan, settings());

    plan.pause();
    let accepted = app
        .accept(Submission {
            kind: "counted".to_owned(),
            ..submission(&json!({}))
        })
        .await
        .expect("accept");
    plan.inject_on(Op::StoreUpdate, nth, fault);
    plan.resume();
    let batch = app
        .queue()
        .receive(1, s.visibility_timeout)
        .await
        .expect("receive");
    // The job's time moves on while the worker waits between two tries, as in the world: a
    // retry that recomputed its write would then differ from the try that landed.
    let ticker = tokio::spawn({
        let clock = one.clock.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                clock.advance(Duration::from_millis(5));
            }
        }
    });
    let disposition = app.handle(batch.first().expect("the job's message")).await;
    ticker.abort();
    let job = backend
        .store
        .get(&owner(), accepted.job.id)
        .await
        .expect("get")
        .expect("the job");
    let injected = plan.injected();
    assert_eq!(
        injected.len(),
        1,
        "the fault was injected once: {injected:?}"
    );
    (
        job,
        disposition,
        runs.load(std::sync::atomic::Ordering::SeqCst),
    )
}

/// With `fault` on the `nth` store write of the handling, the processor ran once, the job
/// succeeded and its message is deleted.
async fn assert_done_once_despite(nth: usize, fault: Fault) {
    let (job, disposition, runs) = handle_once_with(nth, fault).await;
    assert_eq!(runs, 1, "{fault:?}");
    assert_eq!(job.state, JobState::Succeeded, "{fault:?}: {job:?}");
    assert_eq!(disposition, ackflow_core::Disposition::Delete, "{fault:?}");
}

#[tokio::test]
async fn a_start_whose_answer_was_lost_and_whose_retry_met_it_runs_the_attempt() {
    assert_done_once_despite(0, Fault::Replayed).await;
}

#[tokio::test]
async fn progress_whose_answer_was_lost_and_whose_retry_met_it_does_not_end_the_attempt() {
    assert_done_once_despite(1, Fault::Replayed).await;
}

#[tokio::test]
async fn progress_that_landed_but_answered_an_error_does_not_fence_out_the_outcome() {
    for fault in [Fault::Ambiguous, Fault::Unavailable, Fault::Lost] {
        assert_done_once_despite(1, fault).await;
    }
}

#[tokio::test]
async fn an_outcome_write_that_fails_once_is_retried_within_the_lease() {
    for fault in [Fault::Unavailable, Fault::Ambiguous, Fault::Lost] {
        assert_done_once_despite(2, fault).await;
    }
}

#[tokio::test]
async fn an_outcome_write_that_fails_for_good_is_given_up_and_the_job_left_to_its_lease() {
    let (job, _, runs) = handle_once_with(2, Fault::Failed).await;
    assert_eq!(runs, 1);
    assert_eq!(job.state, JobState::Running, "{job:?}");
}

#[tokio::test]
async fn a_worker_without_time_for_a_whole_lease_gives_the_delivery_back_untouched() {
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let one = OneJob::counting(&runs);
    let (app, s) = (&one.app, settings());
    let accepted = app
        .accept(Submission {
            kind: "counted".to_owned(),
            ..submission(&json!({}))
        })
        .await
        .expect("accept");
    let batch = app
        .queue()
        .receive(1, s.visibility_timeout)
        .await
        .expect("receive");
    let delivery = batch.first().expect("the job's message");
    let lease_end = ackflow_core::Clock::now(one.clock.as_ref()).plus(s.lease());

    let short = lease_end.minus(Duration::from_millis(1));
    assert_eq!(
        app.handle_by(delivery, Some(short)).await,
        ackflow_core::Disposition::RetryAfter(Duration::ZERO)
    );
    let job = one
        .app
        .status(&owner(), accepted.job.id)
        .await
        .expect("status")
        .job;
    assert_eq!((job.state, job.attempts), (JobState::Queued, 0));
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 0);

    // With the lease's time, the attempt runs.
    assert_eq!(
        app.handle_by(delivery, Some(lease_end)).await,
        ackflow_core::Disposition::Delete
    );
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
}

// ---- accept: a 503 tells the truth about the job --------------------------------------------

/// A keyless `demo` submission, and one with [`KEY`].
fn demo(keyed: bool) -> Submission {
    Submission {
        kind: "demo".to_owned(),
        idempotency_key: keyed.then(|| IdempotencyKey::parse(KEY).expect("key")),
        ..submission(&json!({}))
    }
}

#[tokio::test]
async fn a_create_that_landed_though_it_answered_an_error_is_accepted_and_queued() {
    // The write happens, its answer does not come back: without a read, a keyless client is
    // told nothing was accepted while the sweeper later runs the job.
    for keyed in [false, true] {
        let one = OneJob::shipped();
        one.plan.inject_on(Op::StoreCreate, 0, Fault::Ambiguous);
        let accepted = one.app.accept(demo(keyed)).await.expect("accepted");
        let jobs = one.jobs().await;
        assert_eq!(jobs.len(), 1, "keyed {keyed}");
        assert_eq!(jobs[0].id, accepted.job.id);
        assert_eq!(one.waiting().await, 1, "its message is on the queue");
    }
}

#[tokio::test]
async fn a_create_that_did_not_land_says_nothing_was_accepted() {
    let one = OneJob::shipped();
    one.plan.inject_on(Op::StoreCreate, 0, Fault::Lost);
    let e = one.app.accept(demo(false)).await.expect_err("refused");
    assert!(matches!(e, AcceptError::Unavailable(_)), "{e:?}");
    assert_eq!(e.problem().job_id, None);
    assert!(e.problem().detail.contains("nothing was accepted"));
    assert!(one.jobs().await.is_empty());
}

#[tokio::test]
async fn a_create_whose_fate_cannot_be_read_names_the_job_that_may_exist() {
    for keyed in [false, true] {
        let one = OneJob::shipped();
        one.plan.inject_on(Op::StoreCreate, 0, Fault::Ambiguous);
        one.plan.inject_on(Op::StoreGet, 0, Fault::Unavailable);
        let e = one.app.accept(demo(keyed)).await.expect_err("503");
        let AcceptError::NotQueued { job, recorded, .. } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(*recorded, ackflow_core::Recorded::Unknown);
        let problem = e.problem();
        assert_eq!(problem.status, 503);
        assert_eq!(problem.job_id, Some(*job));
        assert_eq!(problem.instance, Some(format!("/v1/jobs/{job}")));
        let advice = if keyed {
            "same Idempotency-Key"
        } else {
            "if it is not found, nothing was recorded"
        };
        assert!(problem.detail.contains(advice), "{}", problem.detail);
        assert_eq!(one.jobs().await.len(), 1, "the job that may exist does");
    }
}

#[tokio::test]
async fn a_send_that_timed_out_or_failed_names_the_recorded_job() {
    // A timed-out send, and a failed send whose marking as failed failed as well: the job is
    // queued either way and the sweeper will send it, so a keyless client must not resubmit.
    let send_timed_out: &[(Op, usize, Fault)] = &[(Op::QueueSend, 0, Fault::Lost)];
    let send_and_mark_failed: &[(Op, usize, Fault)] = &[
        (Op::QueueSend, 0, Fault::Unavailable),
        (Op::StoreUpdate, 0, Fault::Unavailable),
    ];
    for faults in [send_timed_out, send_and_mark_failed] {
        for keyed in [false, true] {
            let one = OneJob::shipped();
            for (op, nth, fault) in faults {
                one.plan.inject_on(*op, *nth, *fault);
            }
            let e = one.app.accept(demo(keyed)).await.expect_err("503");
            let problem = e.problem();
            let jobs = one.jobs().await;
            assert_eq!(jobs.len(), 1, "{faults:?}");
            assert_eq!(jobs[0].state, JobState::Queued, "{faults:?}");
            assert_eq!(problem.job_id, Some(jobs[0].id), "{faults:?} keyed {keyed}");
            let advice = if keyed {
                "same Idempotency-Key"
            } else {
                "Do not submit it again"
            };
            assert!(problem.detail.contains(advice), "{}", problem.detail);
        }
    }
}

// ---- the sweeper ------------------------------------------------------------------------------

#[tokio::test]
async fn a_sweep_at_its_time_limit_starts_nothing_and_leaves_the_jobs_due() {
    let one = OneJob::shipped();
    one.app.accept(demo(false)).await.expect("accepted");
    one.clock.advance(settings().job_deadline + TICK);
    let report = one
        .app
        .sweep_until(Some(tokio::time::Instant::now()))
        .await
        .expect("the sweep answers");
    assert!(report.out_of_time, "{report:?}");
    assert_eq!((report.failed, report.errors), (0, 0), "{report:?}");
    let report = one.app.sweep_until(None).await.expect("the next sweep");
    assert_eq!(
        (report.failed, report.out_of_time),
        (1, false),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_sweep_carries_on_past_one_jobs_failed_write_and_counts_it() {
    let one = OneJob::shipped();
    for _ in 0..3 {
        one.app.accept(demo(false)).await.expect("accepted");
    }
    one.clock.advance(settings().job_deadline + TICK);
    one.plan.inject_on(Op::StoreUpdate, 0, Fault::Unavailable);
    let report = one.app.sweep().await.expect("the sweep finishes");
    assert_eq!((report.failed, report.errors), (2, 1), "{report:?}");
    let report = one.app.sweep().await.expect("the next sweep");
    assert_eq!((report.failed, report.errors), (1, 0), "{report:?}");
    assert!(one
        .jobs()
        .await
        .iter()
        .all(|job| job.state == JobState::Failed));
}
