//! Issue #5, "crash": more than a thousand `demo` jobs are submitted while `ackflow serve` is
//! killed with SIGKILL at random moments and restarted on the same data directory, several times.
//! Afterwards every accepted job is terminal within the documented bound T, each result was
//! written once, and the server holds exactly the accepted jobs: none lost, none duplicated.
//!
//! Clients behave as a real client must across a crash: every job has its own Idempotency-Key,
//! and a request that got no answer (connection refused or cut, or a 5xx) is sent again with the
//! same key to the restarted server. "Accepted" means a 202 for the key.
//!
//! The kill schedule and the jobs come from a seeded generator; the seed is printed, and
//! `ACKFLOW_CRASH_SEED=<seed>` repeats them (where in the work a kill lands still depends on the
//! machine's timing, which is the point).

// Test code: a failed expectation is a failed test, and its message says which.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ackflow_core::settings::env;
use ackflow_core::{JobState, JobStore, ListQuery, Owner, Queue, SystemClock, Timestamp};
use ackflow_sqlite::{Db, Durability, SqliteQueue, SqliteStore};
use serde_json::{json, Value};
use tokio::sync::watch;

use support::{is_terminal, ServerProcess};

/// Jobs submitted (at least 1,000).
const JOBS: usize = 1200;
/// SIGKILLs, each followed by a restart on the same data directory.
const KILLS: usize = 6;
/// How long a server lives before its kill, drawn per kill.
const UPTIME_MS: (u64, u64) = (100, 800);
/// Concurrent clients submitting.
const SUBMITTERS: usize = 8;
/// Concurrent clients long-polling at the end.
const POLLERS: usize = 16;
/// Every job's attempt budget: above the most attempts a job that does not panic can need here
/// (its `fail_attempts` ≤ 2, plus one interrupted attempt per kill, plus slack for a timeout on a
/// busy machine), so such a job failing is a finding, not bad luck.
const MAX_ATTEMPTS: u32 = 12;
/// The job deadline and sweep period the server runs with: T = their sum.
const JOB_DEADLINE_SECS: u64 = 60;
const SWEEP_PERIOD_SECS: u64 = 1;
/// The whole test, so that a stuck job fails it with a message instead of hanging CI.
const WHOLE_TEST: Duration = Duration::from_secs(110);

/// Short timings, so that recovery after a kill takes a couple of seconds, not minutes: an
/// interrupted attempt's lease ends 2.3 s after it started, and a job whose message never made it
/// into the queue (a kill between the job's write and the send) is re-sent after 2 s.
fn server_env() -> Vec<(&'static str, String)> {
    vec![
        (env::MAX_ATTEMPTS, MAX_ATTEMPTS.to_string()),
        (env::WORKER_TIMEOUT_SECS, "2".into()),
        (env::LEASE_GRACE_MS, "300".into()),
        (env::VISIBILITY_TIMEOUT_SECS, "3".into()),
        (env::BACKOFF_BASE_MS, "50".into()),
        (env::BACKOFF_MAX_SECS, "1".into()),
        (env::JOB_DEADLINE_SECS, JOB_DEADLINE_SECS.to_string()),
        (env::SWEEP_PERIOD_SECS, SWEEP_PERIOD_SECS.to_string()),
        (env::RESEND_AFTER_SECS, "2".into()),
        // Panicking demo jobs and interrupted attempts are expected here; the log file keeps the
        // errors only.
        ("ACKFLOW_LOG", "error".into()),
    ]
}

/// SplitMix64: a small seeded generator, so that the schedule can be repeated from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (the modulo bias is irrelevant at these sizes).
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// One job the clients will submit.
#[derive(Debug, Clone)]
struct Planned {
    key: String,
    body: Value,
    panics: bool,
    fail_attempts: u32,
}

fn plan(seed: u64) -> (Vec<Planned>, Vec<Duration>) {
    let mut rng = Rng(seed);
    let jobs = (0..JOBS)
        .map(|i| {
            // A few jobs panic on every attempt (they end failed after the last one) and some fail
            // their first attempts, so that retries and backoff are under way when a kill lands.
            let panics = i % 200 == 7;
            let fail_attempts = if i % 25 == 3 {
                u32::try_from(rng.between(1, 2)).expect("small")
            } else {
                0
            };
            let input = json!({
                "steps": rng.between(0, 3),
                "step_ms": rng.between(5, 30),
                "fail_attempts": fail_attempts,
                "panic": panics,
            });
            Planned {
                key: format!("crash-{seed:x}-{i}"),
                body: json!({"kind": "demo", "input": input}),
                panics,
                fail_attempts,
            }
        })
        .collect();
    let uptimes = (0..KILLS)
        .map(|_| Duration::from_millis(rng.between(UPTIME_MS.0, UPTIME_MS.1)))
        .collect();
    (jobs, uptimes)
}

fn seed() -> u64 {
    // Set but empty counts as unset, as it does for the server's own variables.
    match std::env::var("ACKFLOW_CRASH_SEED")
        .ok()
        .filter(|text| !text.trim().is_empty())
    {
        Some(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("ACKFLOW_CRASH_SEED must be a whole number, not {text:?}")),
        None => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970");
            // Nanoseconds vary run to run; the value itself needs no quality.
            u64::try_from(now.as_nanos() % u128::from(u64::MAX)).expect("fits")
        }
    }
}

/// Where the test is, for the message of a timeout.
#[derive(Default)]
struct Phase(Mutex<String>);

impl Phase {
    fn set(&self, text: impl Into<String>) {
        *self.0.lock().expect("phase lock") = text.into();
    }
    fn get(&self) -> String {
        self.0.lock().expect("phase lock").clone()
    }
}

/// What the clients saw while submitting.
#[derive(Default)]
struct Submissions {
    /// Key → the job id of its 202.
    accepted: Mutex<HashMap<String, String>>,
    /// Requests sent again after no answer, a cut answer or a 5xx.
    resent: AtomicU64,
    /// 202s that were replays (`Idempotent-Replayed: true`): an earlier request with the key had
    /// created the job, but its answer was lost to a kill.
    replayed: AtomicU64,
    done: AtomicUsize,
}

/// What the kill loop saw just before each kill (from `GET /v1/report`), and when it killed.
#[derive(Debug, Clone, Copy)]
struct Kill {
    queued: Option<u64>,
    running: Option<u64>,
    while_submitting: bool,
}

fn start(dir: &Path, log: &Path) -> ServerProcess {
    let env = server_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let log = File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("the server log opens");
    ServerProcess::start_with(dir, &env, Stdio::from(log))
}

/// Sends `job` until a 202 names its job: on a refused or cut connection or a 5xx, the same
/// request (same key) goes again, to the restarted server once there is one.
async fn submit(
    http: &reqwest::Client,
    base: &mut watch::Receiver<String>,
    job: &Planned,
    seen: &Submissions,
) -> String {
    loop {
        let url = format!("{}/v1/jobs", *base.borrow_and_update());
        let sent = http
            .post(&url)
            .header("idempotency-key", &job.key)
            .json(&job.body)
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status() == 202 => {
                let replayed = resp.headers().contains_key("idempotent-replayed");
                // A kill can cut the body after the status line: then the answer is lost.
                if let Ok(body) = resp.json::<Value>().await {
                    let id = body["id"].as_str().expect("a 202 names its job").to_owned();
                    if replayed {
                        seen.replayed.fetch_add(1, Ordering::Relaxed);
                    }
                    return id;
                }
            }
            Ok(resp) if resp.status().is_server_error() => {}
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                panic!("{} was answered {status}: {text}", job.key);
            }
            Err(_) => {}
        }
        seen.resent.fetch_add(1, Ordering::Relaxed);
        // The server is down or restarting: wait for the next one's address, or a moment when the
        // answer was a 5xx from a live server (the client's backoff, not a race being hidden).
        let _ = tokio::time::timeout(Duration::from_millis(50), base.changed()).await;
    }
}

/// `(queued, running)` now, from the report's maintained gauges.
async fn gauges(http: &reqwest::Client, base: &str) -> (Option<u64>, Option<u64>) {
    let report = async {
        http.get(format!("{base}/v1/report"))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .ok()?
            .json::<Value>()
            .await
            .ok()
    };
    match report.await {
        Some(r) => (
            r["counts"]["queued"].as_u64(),
            r["counts"]["running"].as_u64(),
        ),
        None => (None, None),
    }
}

/// Long-polls a job until it is terminal (the whole test's timeout bounds the wait).
async fn until_terminal(http: &reqwest::Client, base: &str, id: &str) -> Value {
    let url = format!("{base}/v1/jobs/{id}");
    support::long_poll(http, &url, usize::MAX, is_terminal)
        .await
        .unwrap_or_else(|job| panic!("{url} never ended: {job}"))
}

fn millis_between(job: &Value, from: &str, to: &str) -> i64 {
    let at = |field: &str| {
        job[field]
            .as_str()
            .and_then(Timestamp::parse_rfc3339)
            .unwrap_or_else(|| panic!("{field} of {job}"))
    };
    at(to).as_millis() - at(from).as_millis()
}

/// What the checks of one terminal job found.
#[derive(Default)]
struct Tally {
    succeeded: usize,
    failed: usize,
    /// Jobs whose history shows an attempt taken over after its lease ran out (two attempt
    /// starts in a row): the attempt was running when its server was killed.
    interrupted: usize,
    max_terminal_ms: i64,
}

/// The checks of one job's final state against what was submitted.
fn check_terminal(planned: &Planned, job: &Value, tally: &mut Tally) {
    let id = job["id"].as_str().expect("id");
    let history: Vec<&str> = job["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["state"].as_str().expect("state"))
        .collect();
    // Each result written once: exactly one terminal entry, and it is the last thing that happened.
    let terminal_entries = history
        .iter()
        .filter(|s| matches!(**s, "succeeded" | "failed" | "cancelled"))
        .count();
    assert_eq!(terminal_entries, 1, "{} ({id}): {job}", planned.key);
    assert_eq!(
        history.last().copied(),
        job["state"].as_str(),
        "{} ({id}) ended, then something happened: {job}",
        planned.key
    );
    if history.windows(2).any(|w| w == ["running", "running"]) {
        tally.interrupted += 1;
    }
    tally.max_terminal_ms =
        tally
            .max_terminal_ms
            .max(millis_between(job, "submitted_at", "finished_at"));
    let attempts = job["attempts"].as_u64().expect("attempts");
    if planned.panics {
        // Every attempt panicked: failed after the last one, with words for a person.
        assert_eq!(job["state"], "failed", "{} ({id}): {job}", planned.key);
        assert_eq!(attempts, u64::from(MAX_ATTEMPTS), "{job}");
        let detail = job["error"]["detail"].as_str().expect("a problem detail");
        assert!(
            detail.contains(&format!("tried {MAX_ATTEMPTS} times")) && !detail.contains("panic"),
            "{} ({id}) failed without a human message: {detail}",
            planned.key
        );
        tally.failed += 1;
    } else {
        assert_eq!(
            job["state"], "succeeded",
            "{} ({id}) was accepted and should have succeeded: {job}",
            planned.key
        );
        // The result is the one of the attempt that succeeded, not of an earlier, interrupted one.
        assert_eq!(
            job["result"]["attempt"].as_u64(),
            Some(attempts),
            "{} ({id}): {job}",
            planned.key
        );
        assert!(
            attempts > u64::from(planned.fail_attempts),
            "{} ({id}) succeeded on an attempt that should have failed: {job}",
            planned.key
        );
        tally.succeeded += 1;
    }
}

/// All of the owner's jobs through the API, page by page.
async fn list_all(http: &reqwest::Client, base: &str) -> Vec<Value> {
    let mut jobs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/jobs?limit=100");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = http
            .get(url)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("a page");
        jobs.extend(page["jobs"].as_array().expect("jobs").iter().cloned());
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return jobs,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_jobs_survive_repeated_kill_9_with_none_lost_or_duplicated() {
    let seed = seed();
    eprintln!("crash: seed={seed} (ACKFLOW_CRASH_SEED={seed} repeats this schedule)");
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("server.log");
    let phase = Arc::new(Phase::default());
    let run = crash_run(seed, dir.path().join("data"), log.clone(), phase.clone());
    if tokio::time::timeout(WHOLE_TEST, run).await.is_err() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        panic!(
            "the crash test did not finish within {WHOLE_TEST:?} (seed {seed}), while {}; \
             the server log ends with:\n{}",
            phase.get(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
}

async fn crash_run(seed: u64, data: PathBuf, log: PathBuf, phase: Arc<Phase>) {
    let began = Instant::now();
    let (jobs, uptimes) = plan(seed);
    let jobs = Arc::new(jobs);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");

    phase.set("starting the first server");
    let server = {
        let (data, log) = (data.clone(), log.clone());
        tokio::task::spawn_blocking(move || start(&data, &log))
            .await
            .expect("started")
    };
    let (tx, rx) = watch::channel(server.base.clone());
    let seen = Arc::new(Submissions::default());

    // Submissions are spread over the planned uptimes, so that kills land while clients are
    // still submitting as well as while the worker has jobs queued and running.
    phase.set("submitting while killing");
    let t0 = tokio::time::Instant::now();
    let spread = uptimes.iter().sum::<Duration>().mul_f64(0.8);
    let next = Arc::new(AtomicUsize::new(0));
    let mut submitters = Vec::new();
    for _ in 0..SUBMITTERS {
        let (http, jobs, seen, next) = (http.clone(), jobs.clone(), seen.clone(), next.clone());
        let mut rx = rx.clone();
        submitters.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { return };
                let slot = spread.mul_f64(i as f64 / JOBS as f64);
                tokio::time::sleep_until(t0 + slot).await;
                let id = submit(&http, &mut rx, job, &seen).await;
                seen.accepted
                    .lock()
                    .expect("lock")
                    .insert(job.key.clone(), id);
                seen.done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let killer = {
        let (http, seen, data, log) = (http.clone(), seen.clone(), data.clone(), log.clone());
        tokio::spawn(async move {
            let mut server = server;
            let mut kills = Vec::new();
            for uptime in uptimes {
                // The random moment: how long this server lives is the seeded draw.
                tokio::time::sleep(uptime).await;
                let (queued, running) = gauges(&http, &server.base).await;
                let while_submitting = seen.done.load(Ordering::Relaxed) < JOBS;
                let (data, log) = (data.clone(), log.clone());
                server = tokio::task::spawn_blocking(move || {
                    server.kill_hard();
                    start(&data, &log)
                })
                .await
                .expect("restarted");
                tx.send_replace(server.base.clone());
                kills.push(Kill {
                    queued,
                    running,
                    while_submitting,
                });
            }
            (server, tx, kills)
        })
    };
    let (server, _tx, kills) = killer.await.expect("the kill loop");
    phase.set("finishing the submissions after the last kill");
    for s in submitters {
        s.await.expect("a submitter");
    }
    let submitted_in = began.elapsed();
    let accepted: HashMap<String, String> = seen.accepted.lock().expect("lock").clone();
    assert_eq!(accepted.len(), JOBS, "every key was accepted");

    // Every accepted job reaches a terminal state, checked one by one through long-polls.
    phase.set("waiting for every accepted job to be terminal");
    let base = server.base.clone();
    let finals = Arc::new(Mutex::new(HashMap::<String, Value>::new()));
    let order: Arc<Vec<(String, String)>> = Arc::new(accepted.clone().into_iter().collect());
    let next = Arc::new(AtomicUsize::new(0));
    let mut pollers = Vec::new();
    for _ in 0..POLLERS {
        let (http, base, order, next, finals) = (
            http.clone(),
            base.clone(),
            order.clone(),
            next.clone(),
            finals.clone(),
        );
        pollers.push(tokio::spawn(async move {
            while let Some((key, id)) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                let job = until_terminal(&http, &base, id).await;
                finals.lock().expect("lock").insert(key.clone(), job);
            }
        }));
    }
    for p in pollers {
        p.await.expect("a poller");
    }
    let terminal_in = began.elapsed();

    let finals = finals.lock().expect("lock").clone();
    let mut tally = Tally::default();
    for job in jobs.iter() {
        let final_job = &finals[&job.key];
        assert_eq!(final_job["id"].as_str(), Some(accepted[&job.key].as_str()));
        check_terminal(job, final_job, &mut tally);
    }
    let bound_t_ms = i64::try_from((JOB_DEADLINE_SECS + SWEEP_PERIOD_SECS) * 1000).expect("fits");
    assert!(
        tally.max_terminal_ms < bound_t_ms,
        "a job took {} ms from its 202 to its end; the bound T is {bound_t_ms} ms",
        tally.max_terminal_ms
    );

    // No job missing, nothing extra: the listing is exactly the accepted set.
    phase.set("listing every job");
    let listed = list_all(&http, &base).await;
    let listed_ids: HashSet<&str> = listed
        .iter()
        .map(|j| j["id"].as_str().expect("id"))
        .collect();
    let accepted_ids: HashSet<&str> = accepted.values().map(String::as_str).collect();
    let lost = accepted_ids.difference(&listed_ids).count();
    let extra = listed.len() - accepted_ids.intersection(&listed_ids).count();
    assert_eq!(lost, 0, "accepted jobs missing from the listing");
    assert_eq!(
        extra, 0,
        "jobs listed that no client was given (a key that made two jobs, say)"
    );

    // Each key is still one job: asking again with every key replays the job its 202 named.
    phase.set("replaying every key");
    let (_replay_tx, replay_rx) = watch::channel(base.clone());
    let mut replays = Vec::new();
    let per = JOBS.div_ceil(SUBMITTERS);
    for chunk in jobs.chunks(per) {
        let (http, chunk, accepted) = (http.clone(), chunk.to_vec(), accepted.clone());
        let mut rx = replay_rx.clone();
        replays.push(tokio::spawn(async move {
            let quiet = Submissions::default();
            for job in &chunk {
                let id = submit(&http, &mut rx, job, &quiet).await;
                assert_eq!(id, accepted[&job.key], "{} now names another job", job.key);
            }
            quiet.replayed.load(Ordering::Relaxed)
        }));
    }
    let mut replayed_again = 0;
    for r in replays {
        replayed_again += r.await.expect("a replayer");
    }
    assert_eq!(replayed_again, JOBS as u64, "every second POST is a replay");

    // The file itself, after one last SIGKILL: the jobs table holds one job per accepted key,
    // each terminal, with a result stored exactly for the succeeded ones, and no open job left in
    // the sweeper's index.
    phase.set("reading the SQLite file");
    tokio::task::spawn_blocking(move || server.kill_hard())
        .await
        .expect("killed");
    let db = Db::open(
        &data.join(ackflow_local::serve::DB_FILE),
        Durability::Normal,
    )
    .expect("the file opens");
    let store = SqliteStore::new(db.clone());
    let owner = Owner::anonymous();
    let mut stored = Vec::new();
    let mut query = ListQuery {
        limit: 500,
        ..ListQuery::default()
    };
    loop {
        let page = store.list(&owner, &query).await.expect("a page");
        stored.extend(page.jobs);
        match page.next {
            Some(c) => query.after = Some(c),
            None => break,
        }
    }
    let mut by_key: HashMap<String, String> = HashMap::new();
    let mut duplicates = 0usize;
    for job in &stored {
        let key = job
            .idempotency_key
            .as_ref()
            .expect("every job here was submitted with a key")
            .as_str()
            .to_owned();
        if by_key.insert(key, job.id.to_string()).is_some() {
            duplicates += 1;
        }
        assert!(job.state.is_terminal(), "{} is {:?}", job.id, job.state);
        let result = store.result(&owner, job.id).await.expect("a read");
        assert_eq!(
            result.is_some(),
            job.state == JobState::Succeeded,
            "{}: a result exactly when succeeded",
            job.id
        );
        if let Some(result) = result {
            assert_eq!(result["attempt"].as_u64(), Some(u64::from(job.attempts)));
        }
    }
    assert_eq!(duplicates, 0, "two stored jobs share an Idempotency-Key");
    assert_eq!(by_key, accepted, "the file holds exactly the accepted jobs");
    let open = store
        .due_for_sweep(Timestamp::from_millis(i64::MAX), 10)
        .await
        .expect("the index of open jobs");
    assert!(open.is_empty(), "open jobs left: {open:?}");
    let queue = SqliteQueue::new(
        db,
        "jobs",
        MAX_ATTEMPTS + ackflow_core::Settings::RECEIVE_SLACK,
        Arc::new(SystemClock),
    )
    .expect("the queue");
    let depth = queue.depth().await.expect("depth");

    let with_queued = kills.iter().filter(|k| k.queued > Some(0)).count();
    let with_running = kills.iter().filter(|k| k.running > Some(0)).count();
    let while_submitting = kills.iter().filter(|k| k.while_submitting).count();
    eprintln!(
        "crash: kills: {kills:?}\n\
         crash: {} requests sent again after a kill, {} answered as replays; submitting took {:?}, \
         all terminal after {:?}; {} succeeded, {} failed (the panicking ones), {} interrupted mid-attempt; \
         queue left: {} waiting, {} in flight, {} dead letters",
        seen.resent.load(Ordering::Relaxed),
        seen.replayed.load(Ordering::Relaxed),
        submitted_in,
        terminal_in,
        tally.succeeded,
        tally.failed,
        tally.interrupted,
        depth.waiting,
        depth.in_flight,
        depth.dead,
    );
    eprintln!(
        "crash: accepted={} kills={} lost={lost} duplicates={duplicates} max_terminal_ms={} bound_T_ms={bound_t_ms} seed={seed}",
        accepted.len(),
        kills.len(),
        tally.max_terminal_ms,
    );
    // The kills hit work in progress: clients still submitting, jobs waiting and jobs running.
    assert!(
        while_submitting >= 1,
        "no kill landed while clients were submitting: {kills:?}"
    );
    assert!(
        with_queued >= 1,
        "no kill landed while jobs were queued: {kills:?}"
    );
    assert!(
        with_running >= 1,
        "no kill landed while jobs were running: {kills:?}"
    );
    assert!(
        tally.interrupted >= 1,
        "no attempt was interrupted by a kill and taken over after its lease"
    );
}
