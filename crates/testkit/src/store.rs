//! The [`JobStore`] contract: conditional writes, owners, Idempotency-Keys, aggregates,
//! listing, and the indexes the sweeper and the purge read.
//!
//! Jobs are built with [`Job::new`] and moved with [`Job::apply`] on a [`ManualClock`] that
//! starts at the harness's time, exactly as the use cases do; the store only ever sees the
//! timestamps inside them. A small ledger adds up the [`Deltas`] of every successful write, so
//! the aggregates are checked against what was written rather than against hand-made numbers.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use ackflow_core::canonical::body_hash;
use ackflow_core::report::{counter, Deltas};
use ackflow_core::{
    Change, Clock, CorrelationId, Created, Cursor, Figures, IdempotencyKey, IdempotencyRecord, Job,
    JobId, JobPart, JobState, JobStore, Kind, ListQuery, ManualClock, NewJob, Owner, Problem,
    Settings, Timestamp, WriteError,
};
use serde_json::{json, Value};

use crate::Harness;

const HOUR: Duration = Duration::from_secs(3600);

fn owner(name: &str) -> Owner {
    Owner::parse(name).expect("owner")
}

/// Builds and moves jobs like the use cases do, and remembers what each write added to the
/// aggregates.
struct Jobs {
    clock: ManualClock,
    settings: Settings,
    /// (owner, state) → gauge.
    gauges: Mutex<BTreeMap<(Owner, JobState), i64>>,
    /// (owner, hour, name) → count.
    counters: Mutex<BTreeMap<(Owner, Timestamp, String), u64>>,
}

impl Jobs {
    fn new(h: &dyn Harness) -> Self {
        Self {
            clock: ManualClock::new(h.clock().now()),
            settings: Settings::default(),
            gauges: Mutex::default(),
            counters: Mutex::default(),
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    fn build(&self, owner: &Owner, kind: &str, key: Option<&str>) -> Job {
        Job::new(
            NewJob {
                owner: owner.clone(),
                kind: Kind::parse(kind).expect("kind"),
                correlation_id: CorrelationId::random(),
                idempotency_key: key.map(|k| IdempotencyKey::parse(k).expect("key")),
            },
            &self.clock,
            &self.settings,
        )
    }

    fn record(&self, owner: &Owner, deltas: &Deltas) {
        let mut gauges = self.gauges.lock().expect("ledger");
        for (state, n) in &deltas.gauges {
            *gauges.entry((owner.clone(), *state)).or_default() += n;
        }
        let mut counters = self.counters.lock().expect("ledger");
        for (name, n) in &deltas.counters {
            *counters
                .entry((owner.clone(), deltas.hour, name.clone()))
                .or_default() += n;
        }
    }

    /// A new queued job, created in `store` without a key.
    async fn create(&self, store: &dyn JobStore, owner: &Owner, kind: &str) -> Job {
        let job = self.build(owner, kind, None);
        self.create_job(store, &job, &input_of(&job), None).await;
        job
    }

    async fn create_job(
        &self,
        store: &dyn JobStore,
        job: &Job,
        input: &Value,
        key: Option<&IdempotencyRecord>,
    ) {
        let created = store.create(job, input, key).await.expect("create");
        assert_eq!(created, Created::New, "creating {}", job.id);
        self.record(&job.owner, &Deltas::created(job));
    }

    /// Applies `change` now and writes it; the write must succeed.
    async fn write(
        &self,
        store: &dyn JobStore,
        job: &Job,
        change: Change,
        result: Option<&Value>,
    ) -> Job {
        let after = job
            .apply(change, self.now(), &self.settings)
            .expect("a legal change");
        let deltas = Deltas::between(job, &after);
        store
            .update(job, &after, result, &deltas)
            .await
            .unwrap_or_else(|e| panic!("writing {} failed: {e:?}", job.id));
        self.record(&job.owner, &deltas);
        after
    }

    async fn succeed(&self, store: &dyn JobStore, job: &Job) -> Job {
        let running = self.write(store, job, Change::Start, None).await;
        let result = json!({"done": job.id.to_string()});
        self.write(store, &running, Change::Succeed, Some(&result))
            .await
    }

    /// The gauges the ledger expects for `owner`, zeros left out.
    fn expected_gauges(&self, owner: &Owner) -> BTreeMap<JobState, u64> {
        self.gauges
            .lock()
            .expect("ledger")
            .iter()
            .filter(|((o, _), n)| o == owner && **n > 0)
            .map(|((_, s), n)| (*s, u64::try_from(*n).unwrap_or(0)))
            .collect()
    }

    /// The counters the ledger expects for `owner` from the hour of `since` on.
    fn expected_counters(&self, owner: &Owner, since: Timestamp) -> BTreeMap<String, u64> {
        let from = Deltas::hour_of(since);
        let mut out = BTreeMap::new();
        for ((o, hour, name), n) in self.counters.lock().expect("ledger").iter() {
            if o == owner && *hour >= from {
                *out.entry(name.clone()).or_default() += n;
            }
        }
        out
    }
}

fn input_of(job: &Job) -> Value {
    json!({"for": job.id.to_string(), "steps": 3})
}

fn key_record(key: &str, kind: &str, input: &Value) -> IdempotencyRecord {
    IdempotencyRecord {
        key: IdempotencyKey::parse(key).expect("key"),
        body_hash: body_hash(kind, input),
    }
}

async fn figures(store: &dyn JobStore, owner: &Owner, since: Timestamp) -> Figures {
    store.figures(owner, since).await.expect("figures")
}

/// Gauges as the store reports them, zeros left out (a store may or may not keep zero rows).
fn nonzero(gauges: &BTreeMap<JobState, u64>) -> BTreeMap<JobState, u64> {
    gauges
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| (*s, *n))
        .collect()
}

async fn all_jobs(store: &dyn JobStore, owner: &Owner, mut query: ListQuery) -> Vec<Job> {
    let mut out = Vec::new();
    for _ in 0..1000 {
        let page = store.list(owner, &query).await.expect("list");
        out.extend(page.jobs);
        match page.next {
            Some(next) => query.after = Some(next),
            None => return out,
        }
    }
    panic!("listing never ended");
}

fn ids(jobs: &[Job]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}

/// Newest first: submitted_at descending, then id descending.
fn newest_first(mut jobs: Vec<Job>) -> Vec<JobId> {
    jobs.sort_by_key(|j| std::cmp::Reverse((j.submitted_at, j.id)));
    ids(&jobs)
}

fn query(limit: usize) -> ListQuery {
    ListQuery {
        limit,
        ..ListQuery::default()
    }
}

// ---- behaviours ---------------------------------------------------------------------------------

/// A created job reads back exactly as written, with its input and without a result.
pub async fn a_created_job_reads_back_with_its_input(store: &dyn JobStore, h: &dyn Harness) {
    let jobs = Jobs::new(h);
    let alice = owner("alice");
    let job = jobs.build(&alice, "demo", None);
    let input = json!({"steps": 3, "note": "Grüße 🎉", "nested": {"list": [1, 2.5, null, true]}});
    jobs.create_job(store, &job, &input, None).await;

    assert_eq!(
        store.get(&alice, job.id).await.expect("get"),
        Some(job.clone())
    );
    assert_eq!(
        store.input(&alice, job.id).await.expect("input"),
        Some(input.clone())
    );
    assert_eq!(store.result(&alice, job.id).await.expect("result"), None);
    assert_eq!(store.get(&alice, JobId::random()).await.expect("get"), None);
    assert_eq!(
        store.input(&alice, JobId::random()).await.expect("input"),
        None
    );
    // Read together, the same.
    assert_eq!(
        store
            .get_with(&alice, job.id, JobPart::Input)
            .await
            .expect("get_with"),
        Some((job.clone(), Some(input)))
    );
    assert_eq!(
        store
            .get_with(&alice, job.id, JobPart::Result)
            .await
            .expect("get_with"),
        Some((job, None))
    );
    for part in [JobPart::Input, JobPart::Result] {
        assert_eq!(
            store
                .get_with(&alice, JobId::random(), part)
                .await
                .expect("get_with"),
            None
        );
    }
}

/// Another owner's job does not exist for you: not by id, not its input or result, not in a
/// listing, not in the figures.
pub async fn another_owner_cannot_read_or_list_a_job(store: &dyn JobStore, h: &dyn Harness) {
    let jobs = Jobs::new(h);
    let (alice, mallory) = (owner("alice"), owner("mallory"));
    let queued = jobs.create(store, &alice, "demo").await;
    let done = jobs.create(store, &alice, "demo").await;
    let done = jobs.succeed(store, &done).await;

    for id in [queued.id, done.id] {
        assert_eq!(store.get(&mallory, id).await.expect("get"), None);
        assert_eq!(store.input(&mallory, id).await.expect("input"), None);
        assert_eq!(store.result(&mallory, id).await.expect("result"), None);
        for part in [JobPart::Input, JobPart::Result] {
            assert_eq!(
                store.get_with(&mallory, id, part).await.expect("get_with"),
                None
            );
        }
    }
    let page = store.list(&mallory, &query(100)).await.expect("list");
    assert!(page.jobs.is_empty() && page.next.is_none(), "{page:#?}");
    let f = figures(store, &mallory, jobs.now().minus(HOUR)).await;
    assert!(nonzero(&f.gauges).is_empty(), "{f:#?}");
    assert!(f.counters.is_empty(), "{f:#?}");
    assert_eq!(f.oldest_open, None);

    // Alice still sees both.
    assert_eq!(all_jobs(store, &alice, query(100)).await.len(), 2);
    assert!(store
        .result(&alice, done.id)
        .await
        .expect("result")
        .is_some());
}

/// The same Idempotency-Key with the same body returns the job created with it, and writes
/// no second job, input or count.
pub async fn the_same_key_and_body_return_the_existing_job_and_write_nothing(
    store: &dyn JobStore,
    h: &dyn Harness,
) {
    let jobs = Jobs::new(h);
    let alice = owner("alice");
    let input = json!({"steps": 1});
    let key = key_record("order-42", "demo", &input);
    let first = jobs.build(&alice, "demo", Some("order-42"));
    jobs.create_job(store, &first, &input, Some(&key)).await;

    jobs.advance(Duration::from_secs(5));
    let retry = jobs.build(&alice, "demo", Some("order-42"));
    let created = store
        .create(&retry, &input, Some(&key))
        .await
        .expect("create");
    assert_eq!(
        created,
        Created::Existing {
            job: Box::new(first.clone()),
            same_body: true
        }
    );
    assert_eq!(store.get(&alice, retry.id).await.expect("get"), None);
    assert_eq!(store.input(&alice, retry.id).await.expect("input"), None);
    assert_eq!(
        ids(&all_jobs(store, &alice, query(100)).await),
        vec![first.id]
    );
    let f = figures(store, &alice, jobs.now().minus(HOUR)).await;
    assert_eq!(f.counters.get(counter::ACCEPTED), Some(&1));
    assert_eq!(nonzero(&f.gauges), jobs.expected_gauges(&alice));
}

/// The same Idempotency-Key with another body returns the first job, says the body differs,
/// and writes nothing.
pub async fn the_same_key_with_another_body_is_reported_and_writes_nothing(
    store: &dyn JobStore,
    h: &dyn Harness,
) {
    let jobs = Jobs::new(h);
    let alice = owner("alice");
    let input = json!({"steps": 1});
    let first = jobs.build(&alice, "demo", Some("k"));
    jobs.create_job(
        store,
        &first,
        &input,
        Some(&key_record("k", "demo", &input)),
    )
    .await;

    let other_input = json!({"steps": 2});
    let other = jobs.build(&alice, "demo", Some("k"));
    let created = store
        .create(
            &other,
            &other_input,
            Some(&key_record("k", "demo", &other_input)),
        )
        .await
        .expect("create");
    assert_eq!(
        created,
        Created::Existing {
            job: Box::new(first.clone()),
            same_body: false
        }
    );
    assert_eq!(store.get(&alice, other.id).await.expect("get"), None);
    assert_eq!(
        store.input(&alice, first.id).await.expect("input"),
        Some(input)
    );
    let f = figures(store, &alice, jobs.now().minus(HOUR)).await;
    assert_eq!(f.counters.get(counter::ACCEPTED), Some(&1));
}

/// Two owners may use the same key: each gets their own job.
pub async fn idempotency_keys_are_scoped_by_owner(store: &dyn JobStore, h: &dyn Harness) {
    let jobs = Jobs::new(h);
    let (alice, bob) = (owner("alice"), owner("bob"));
    let input = json!({"steps": 1});
    let key = key_record("shared", "demo", &input);
    let a = jobs.build(&alice, "demo", Some("shared"));
    jobs.create_job(store, &a, &input, Some(&key)).await;
    let b = jobs.build(&bob, "demo", Some("shared"));
    jobs.create_job(store, &b, &input, Some(&key)).await;

    assert_eq!(store.get(&alice, a.id).await.expect("get"), Some(a));
    assert_eq!(store.get(&bob, b.id).await.expect("get"), Some(b));
}

/// A write fenced on a revision that is no longer stored (or on a job that does not exist) is
/// a conflict and changes nothing: not the job, not the result, not the aggregates.
pub async fn a_stale_revision_is_a_conflict_and_changes_nothing(
    store: &dyn JobStore,
    h: &dyn Harness,
) {
    let jobs = Jobs::new(h);
    let alice = owner("alice");
    let queued = jobs.create(store, &alice, "demo").await;
    jobs.advance(Duration::from_secs(1));
    let first_attempt = jobs.write(store, &queued, Change::Start, None).await;
    // The first attempt's lease runs out and a second delivery takes the job over.
    jobs.advance(jobs.settings.lease());
    let takeover = jobs.write(store, &first_attempt, Change::Start, None).await;
    let before = figures(store, &alice, jobs.now().minus(HOUR)).await;

    let stale_write = |from: &Job, change: Change, result: Option<Value>| {
        let after = from
            .apply(change, jobs.now(), &jobs.settings)
            .expect("a legal change from the stale version");
        let deltas = Deltas::between(from, &after);
        let from = from.clone();
        async move { store.update(&from, &after, result.as_ref(), &deltas).await }
    };
    // Another worker that read the queued version starts it too.
    let outcome = stale_write(&queued, Change::Start, None).await;
    assert!(matches!(outcome, Err(WriteError::Conflict)), "{outcome:?}");
    // The owner cancels from a version read before the start.
    let outcome = stale_write(&queued, Change::Cancel, None).await;
    assert!(matches!(outcome, Err(WriteError::Conflict)), "{outcome:?}");
    // The first attempt finishes late and tries to record its result.
    let outcome = stale_write(&first_attempt, Change::Succeed, Some(json!({"late": true}))).await;
    assert!(matches!(outcome, Err(WriteError::Conflict)), "{outcome:?}");

    assert_eq!(
        store.get(&alice, queued.id).await.expect("get"),
        Some(takeover)
    );
    assert_eq!(store.result(&alice, queued.id).await.expect("result"), None);
    assert_eq!(figures(store, &alice, jobs.now().minus(HOUR)).await, before);

    let ghost = jobs.build(&alice, "demo", None);
    let outcome = stale_write(&ghost, Change::Start, None).await;
    assert!(matches!(outcome, Err(WriteError::Conflict)), "{outcome:?}");
    assert_eq!(store.get(&alice, ghost.id).await.expect("get"), None);
}

/// The write that makes a job succeed stores its result beside it; the input is untouched.
pub async fn a_result_is_stored_with_the_write_that_succeeds_the_job(
    store: &dyn JobStore,
    h: &dyn Harness,
) {
    let jobs = Jobs::new(h);
    let alice = owner("alice");
    let queued = jobs.create(store, &alice, "order").await;
    let running = jobs.write(store, &queued, Change::Start, None).await;
    assert_eq!(store.result(&alice, queued.id).await.expect("result"), None);
    assert_eq!(
        store
            .get_with(&alice, queued.id, JobPart::Result)
            .await
            .expect("get_with"),
        Some((running.clone(), None))
    );

    jobs.advance(Duration::from_millis(1500));
    let result = json!({"order_id": queued.id.to_string(), "total_cents": 2500, "lines": [{"sku": "mug-blue"}]});
    let done = jobs
        .write(store, &running, Change::Succeed, Some(&result))
        .await;
    assert!(done.has_result);
    assert_eq!(
        store.get(&alice, queued.id).await.expect("get"),
        Some(done.clone())
    );
    assert_eq!(
        store.result(&alice, queued.id).await.expect("result"),
        Some(result.clone())
    );
    assert_eq!(
        store.input(&alice, queued.id).await.expect("input"),
        Some(input_of(&queued))
    );
    assert_eq!(
        store
            .get_with(&alice, queued.id, JobPart::Result)
            .await
            .expect("get_with"),
        Some((done.clone(), Some(result)))
    );
    assert_eq!(
        store
            .get_with(&alice, queued.id, JobPart::Input)
            .await
            .expect("get_with"),
        Some((done, Some(input_of(&queued))))
    );
}

/// The gauges count the jobs in each open state through every kind of transition.
pub async fn gauges_follow_every_transition(store: &dyn JobStore, h: &dyn Harness) {
    let jobs = Jobs::new(h);
    let alice = owner("alice");
    let since = jobs.now().minus(HOUR);
    let gauges = |queued: u64, running: u64| {
        [(JobState::Queued, queued), (JobState::Running, running)]
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect::<BTreeMap<_, _>>()
    };
    let check = |expected: BTreeMap<JobState, u64>, step: &'static str| {
        assert_eq!(
            jobs.expected_gauges(&alice),
            expected,
            "ledger after {step}"
        );
        expected
    };

    let a = jobs.create(store, &alice, "demo").await;
    let b = jobs.create(store, &alice, "demo").await;
    let c = jobs.create(store, &alice, "demo").await;
    let expected = check(gauges(3, 0), "three accepted");
    assert_eq!(
        nonzero(&figures(store, &alice, since).await.gauges),
        expected
    );

    let a = jobs.write(store, &a, Change::Start, None).await;
    let expected = check(gauges(2, 1), "a started");
    assert_eq!(
        nonzero(&figures(store, &alice, since).await.gauges),
        expected
    );

    let retry_at = jobs.now().plus(Duration::from_secs(1));
    let a = jobs
        .write(
            store,
            &a,
            Change::Release {
                retry_at,
                note: "try again".into(),
            },
            None,
        )
        .await;
    let expected = check(gauges(3, 0), "a released");
    assert_eq!(
        nonzero(&figures(store, &alice, since).await.gauges),
        expected
    );

    jobs.succeed(store, &a).await;
    jobs.write(store, &b, Change::Cancel, None).await;
    let c = jobs
        .write(store, &c, Change::Fail(Problem::deadline_exceeded()), None)
        .await;
    let expected = check(gauges(0, 0), "all ended");
    assert_eq!(
        nonzero(&figures(store, &alice, since).await.gauges),
        expected
    );

    jobs.write(
        store,
        &c,
        Change::Reopen {
            note: "redriven".into(),
        },
        None,
    )
    .await;
    let expected = check(gauges(1, 0), "c redriven");
    assert_eq!(
        nonzero(&figures(store, &alice, since).await.gauges),
        expected
    );
}

/// Counters (accepted, terminal states, latency buckets, failure types) are summed over the
/// hours from `since` on: an old hour's counts are outside a recent window and inside a wide one.
pub async fn counters_count_within_the_window_and_not_outside_it(
    store: &dyn JobStore,
    h: &dyn Harness,
) {
    let jobs = Jobs::new(h);
    let alice = owner("alice");
    let now = jobs.now();

    // Three hours ago: a job accepted and succeeded.
    jobs.clock.set(now.minus(HOUR * 3));
    let old = jobs.create(store, &alice, "demo").await;
    jobs.advance(Duration::from_secs(1));
    jobs.succeed(store, &old).await;

    // Now: one job failed after two seconds, one still queued.
    jobs.clock.set(now);
    let failing = jobs.create(store, &alice, "demo").await;
    jobs.create(store, &alice, "demo").await;
    jobs.advance(Duration::from_secs(2));
    let problem = Problem::attempts_exhausted(5);
    jobs.write(store, &failing, Change::Fail(problem.clone()), None)
        .await;

    let recent = figures(store, &alice, now).await;
    assert_eq!(recent.counters, jobs.expected_counters(&alice, now));
    assert_eq!(recent.counters.get(counter::ACCEPTED), Some(&2));
    assert_eq!(recent.counters.get("state:failed"), Some(&1));
    assert_eq!(recent.counters.get("state:succeeded"), None);
    assert_eq!(
        recent
            .counters
            .get(&format!("{}{}", counter::FAILURE, problem.type_)),
        Some(&1)
    );
    let latencies: u64 = recent
        .counters
        .iter()
        .filter(|(name, _)| name.starts_with(counter::LATENCY))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(latencies, 1, "one job ended in the window");

    let wide = figures(store, &alice, now.minus(HOUR * 4)).await;
    assert_eq!(
        wide.counters,
        jobs.expected_counters(&alice, now.minus(HOUR * 4))
    );
    assert_eq!(wide.counters.get(counter::ACCEPTED), Some(&3));
    assert_eq!(wide.counters.get("state:succeeded"), Some(&1));

    let future = figures(store, &alice, now.plus(HOUR * 3)).await;
    assert!(future.counters.is_empty(), "{:#?}", future.counters);
    assert_eq!(
        nonzero(&future.gauges),
        BTreeMap::from([(JobState::Queued, 1)]),
        "gauges are not windowed"
    );
}

/// The oldest job that has not ended (queued or running) is reported; ended jobs and other
/// owners' jobs are not.
pub async fn the_oldest_open_job_is_the_oldest_non_terminal_one(
    store: &dyn JobStore,
    h: &dyn Harness,
) {
    let jobs = Jobs::new(h);
    let (alice, bob) = (owner("alice"), owner("bob"));
    let oldest = |f: Figures| f.oldest_open.map(|j| j.id);
    let since = jobs.now().minus(HOUR);

    jobs.create(store, &bob, "demo").await; // older, but bob's
    jobs.advance(Duration::from_secs(1));
    assert_eq!(oldest(figures(store, &alice, since).await), None);
    let first = jobs.create(store, &alice, "demo").await;
    jobs.advance(Duration::from_secs(1));
    let second = jobs.create(store, &alice, "demo").await;
    jobs.advance(Duration::from_secs(1));
    let third = jobs.create(store, &alice, "demo").await;
    assert_eq!(oldest(figures(store, &alice, since).await), Some(first.id));

    let first = jobs.write(store, &first, Change::Start, None).await;
    assert_eq!(
        oldest(figures(store, &alice, since).await),
        Some(first.id),
        "a running job is open"
    );
    let running = jobs
        .write(store, &first, Change::Succeed, Some(&json!({})))
        .await;
    assert!(running.state.is_terminal());
    assert_eq!(oldest(figures(store, &alice, since).await), Some(second.id));

    jobs.write(store, &second, Change::Cancel, None).await;
    assert_eq!(oldest(figures(store, &alice, since).await), Some(third.id));
    jobs.write(
        store,
        &third,
        Change::Fail(Problem::deadline_exceeded()),
        None,
    )
    .await;
    assert_eq!(oldest(figures(store, &alice, since).await), None);
}

/// A listing is the owner's jobs, newest first, in their current version, filtered by state,
/// by kind, or both.
pub async fn listing_is_newest_first_and_filters_by_state_and_kind(
    store: &dyn JobStore,
    h: &dyn Harness,
) {
    let jobs = Jobs::new(h);
    let (alice, bob) = (owner("alice"), owner("bob"));
    let mut current = Vec::new();
    for i in 0..6 {
        let kind = if i % 2 == 0 { "demo" } else { "order" };
        current.push(jobs.create(store, &alice, kind).await);
        jobs.create(store, &bob, kind).await;
        jobs.advance(Duration::from_secs(1));
    }
    current[0] = jobs.succeed(store, &current[0]).await;
    current[3] = jobs.write(store, &current[3], Change::Start, None).await;
    current[4] = jobs.write(store, &current[4], Change::Cancel, None).await;

    let listed = all_jobs(store, &alice, query(100)).await;
    assert_eq!(ids(&listed), newest_first(current.clone()));
    for job in &listed {
        let expected = current.iter().find(|j| j.id == job.id).expect("known");
        assert_eq!(job, expected, "a listing shows the current version");
    }

    let expect =
        |f: &dyn Fn(&Job) -> bool| newest_first(current.iter().filter(|j| f(j)).cloned().collect());
    let queued = ListQuery {
        state: Some(JobState::Queued),
        ..query(100)
    };
    assert_eq!(
        ids(&all_jobs(store, &alice, queued).await),
        expect(&|j| j.state == JobState::Queued)
    );
    let orders = ListQuery {
        kind: Some(Kind::parse("order").expect("kind")),
        ..query(100)
    };
    assert_eq!(
        ids(&all_jobs(store, &alice, orders).await),
        expect(&|j| j.kind.as_str() == "order")
    );
    let queued_orders = ListQuery {
        state: Some(JobState::Queued),
        kind: Some(Kind::parse("order").expect("kind")),
        ..query(100)
    };
    let got = ids(&all_jobs(store, &alice, queued_orders).await);
    assert_eq!(
        got,
        expect(&|j| j.state == JobState::Queued && j.kind.as_str() == "order")
    );
    assert!(!got.is_empty(), "the scenario has queued orders");
    let none = ListQuery {
        state: Some(JobState::Failed),
        ..query(100)
    };
    assert!(all_jobs(store, &alice, none).await.is_empty());
}

/// Following cursors visits every job exactly once, newest first, jobs submitted in the same
/// millisecond included; the last page has no cursor, even when it is full.
pub async fn pages_with_cursors_cover_every_job_exactly_once(
    store: &dyn JobStore,
    h: &dyn Harness,
) {
    let jobs = Jobs::new(h);
    let alice = owner("alice");
    let mut created = Vec::new();
    for i in 0..21 {
        created.push(jobs.create(store, &alice, "demo").await);
        if i % 3 == 2 {
            // Three jobs per millisecond: ties are ordered by id.
            jobs.advance(Duration::from_millis(1));
        }
    }
    let expected = newest_first(created.clone());

    let mut seen = Vec::new();
    let mut q = query(7);
    let mut pages = 0;
    loop {
        let page = store.list(&alice, &q).await.expect("list");
        pages += 1;
        assert!(page.jobs.len() <= 7, "a page holds at most its limit");
        seen.extend(ids(&page.jobs));
        match page.next {
            Some(next) => {
                assert_eq!(Some(&next), page.jobs.last().map(Cursor::of).as_ref());
                q.after = Some(next);
            }
            None => break,
        }
        assert!(pages < 10, "listing never ended");
    }
    assert_eq!(seen, expected);
    assert_eq!(pages, 3, "21 jobs in pages of 7 are 3 pages");

    // With a filter, and a last page that is not full.
    for job in created.iter().step_by(4) {
        jobs.write(store, job, Change::Cancel, None).await;
    }
    let queued: Vec<JobId> = {
        let cancelled: Vec<JobId> = created.iter().step_by(4).map(|j| j.id).collect();
        expected
            .iter()
            .copied()
            .filter(|id| !cancelled.contains(id))
            .collect()
    };
    let q = ListQuery {
        state: Some(JobState::Queued),
        ..query(4)
    };
    assert_eq!(ids(&all_jobs(store, &alice, q).await), queued);
}

/// The sweeper's query returns the open jobs of every owner whose `sweep_at` has come, earliest
/// first, up to the limit; never an ended job, never one whose time has not come.
pub async fn due_for_sweep_returns_only_open_jobs_whose_time_has_come(
    store: &dyn JobStore,
    h: &dyn Harness,
) {
    let jobs = Jobs::new(h);
    let (alice, bob) = (owner("alice"), owner("bob"));
    let start = jobs.now();
    let queued = jobs.create(store, &alice, "demo").await;
    let done = jobs.create(store, &alice, "demo").await;
    jobs.succeed(store, &done).await;
    let cancelled = jobs.create(store, &alice, "demo").await;
    jobs.write(store, &cancelled, Change::Cancel, None).await;
    jobs.advance(Duration::from_secs(1));
    let running = jobs.create(store, &bob, "demo").await;
    let running = jobs.write(store, &running, Change::Start, None).await;

    let due = |now: Timestamp, limit: usize| async move {
        ids(&store.due_for_sweep(now, limit).await.expect("due"))
    };
    let q_at = queued.sweep_at.expect("a queued job has a sweep time");
    let r_at = running.sweep_at.expect("a running job has a sweep time");
    assert!(r_at < q_at, "the scenario sweeps the running job first");

    assert_eq!(due(start, 100).await, Vec::<JobId>::new());
    assert_eq!(due(r_at.minus(Duration::from_millis(1)), 100).await, vec![]);
    assert_eq!(
        due(r_at, 100).await,
        vec![running.id],
        "due at its sweep time"
    );
    assert_eq!(due(q_at, 100).await, vec![running.id, queued.id]);
    assert_eq!(due(q_at, 1).await, vec![running.id], "the limit holds");
    let far = q_at.plus(HOUR * 24 * 365);
    let listed = store.due_for_sweep(far, 100).await.expect("due");
    assert_eq!(
        listed,
        vec![running.clone(), queued.clone()],
        "current versions"
    );

    // A write that moves the sweep time moves the job in the index.
    let resent = jobs.write(store, &queued, Change::Resent, None).await;
    assert!(resent.sweep_at > queued.sweep_at);
    assert_eq!(due(q_at, 100).await, vec![running.id]);
    // And a job that ends leaves it.
    jobs.write(
        store,
        &running,
        Change::Fail(Problem::deadline_exceeded()),
        None,
    )
    .await;
    assert_eq!(due(far, 100).await, vec![queued.id]);
}

/// The purge deletes terminal jobs whose expiry has passed — header, input, result and
/// Idempotency-Key, so the key can be used again — and nothing else.
pub async fn purge_deletes_only_expired_terminal_jobs_and_frees_their_key(
    store: &dyn JobStore,
    h: &dyn Harness,
) {
    let jobs = Jobs::new(h);
    let alice = owner("alice");
    let input = json!({"steps": 1});
    let key = key_record("k-expiring", "demo", &input);
    let done = jobs.build(&alice, "demo", Some("k-expiring"));
    jobs.create_job(store, &done, &input, Some(&key)).await;
    let done = jobs.succeed(store, &done).await;
    let expires = done.expires_at.expect("a terminal job expires");

    jobs.advance(HOUR);
    let later = jobs.create(store, &alice, "demo").await;
    let later = jobs
        .write(
            store,
            &later,
            Change::Fail(Problem::deadline_exceeded()),
            None,
        )
        .await;
    let open = jobs.create(store, &alice, "demo").await;

    let purged = store
        .purge_expired(expires.minus(Duration::from_millis(1)), 100)
        .await
        .expect("purge");
    assert_eq!(purged, 0, "nothing has expired yet");
    assert!(store.get(&alice, done.id).await.expect("get").is_some());

    let purged = store.purge_expired(expires, 100).await.expect("purge");
    assert_eq!(purged, 1);
    assert_eq!(store.get(&alice, done.id).await.expect("get"), None);
    assert_eq!(store.input(&alice, done.id).await.expect("input"), None);
    assert_eq!(store.result(&alice, done.id).await.expect("result"), None);
    assert_eq!(store.get(&alice, later.id).await.expect("get"), Some(later));
    assert_eq!(
        store.get(&alice, open.id).await.expect("get"),
        Some(open.clone())
    );

    let again = jobs.build(&alice, "demo", Some("k-expiring"));
    let created = store
        .create(&again, &input, Some(&key))
        .await
        .expect("create");
    assert_eq!(created, Created::New, "the expired job's key is free again");

    let purged = store
        .purge_expired(expires.plus(HOUR * 24 * 365 * 100), 100)
        .await
        .expect("purge");
    assert_eq!(
        purged, 1,
        "the later failure expires too; open jobs never do"
    );
    assert_eq!(store.get(&alice, open.id).await.expect("get"), Some(open));
    assert!(store.get(&alice, again.id).await.expect("get").is_some());
}

/// One purge deletes at most `limit` jobs; the rest go in the next ones.
pub async fn purge_takes_at_most_its_limit(store: &dyn JobStore, h: &dyn Harness) {
    let jobs = Jobs::new(h);
    let alice = owner("alice");
    let mut latest = Timestamp::from_millis(i64::MIN);
    for _ in 0..3 {
        let job = jobs.create(store, &alice, "demo").await;
        let cancelled = jobs.write(store, &job, Change::Cancel, None).await;
        latest = latest.max(cancelled.expires_at.expect("expires"));
        jobs.advance(Duration::from_secs(1));
    }
    assert_eq!(store.purge_expired(latest, 2).await.expect("purge"), 2);
    assert_eq!(store.purge_expired(latest, 2).await.expect("purge"), 1);
    assert_eq!(store.purge_expired(latest, 2).await.expect("purge"), 0);
    assert!(all_jobs(store, &alice, query(100)).await.is_empty());
}
