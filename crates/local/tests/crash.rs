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
//!
//! A second test aims at the writer's group commit: kills land while 64 clients keep a batch of
//! accepts waiting at every commit, and after each kill the file itself is read, before the next
//! server opens it, for a 202 without its job or an open job without its queue message.

// Test code: a failed expectation is a failed test, and its message says which.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ackflow_core::job::attributes;
use ackflow_core::settings::env;
use ackflow_core::{
    Envelope, Job, JobId, JobState, JobStore, ListQuery, Owner, Queue, SystemClock, Timestamp,
};
use ackflow_sqlite::{Db, Durability, SqliteQueue, SqliteStore, QUEUE_NAME};
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
    start_with(dir, log, &server_env())
}

/// [`start`] with the environment `vars` instead of [`server_env`].
fn start_with(dir: &Path, log: &Path, vars: &[(&'static str, String)]) -> ServerProcess {
    let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
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

/// Long-polls every accepted job (key → job id) until it is terminal, [`POLLERS`] at a time, and
/// returns the terminal views by key.
async fn all_terminal(
    http: &reqwest::Client,
    base: &str,
    accepted: &HashMap<String, String>,
) -> HashMap<String, Value> {
    let finals = Arc::new(Mutex::new(HashMap::<String, Value>::new()));
    let order: Arc<Vec<(String, String)>> = Arc::new(accepted.clone().into_iter().collect());
    let next = Arc::new(AtomicUsize::new(0));
    let mut pollers = Vec::new();
    for _ in 0..POLLERS {
        let (http, base, order, next, finals) = (
            http.clone(),
            base.to_owned(),
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
    Arc::try_unwrap(finals)
        .expect("the pollers are done")
        .into_inner()
        .expect("lock")
}

/// The data directory's SQLite file, opened as `ackflow serve` opens it (the server must be
/// dead: this runs SQLite's recovery of what the kill left in the write-ahead log).
fn open_file(data: &Path) -> Db {
    Db::open(
        &data.join(ackflow_local::serve::DB_FILE),
        Durability::Normal,
    )
    .expect("the file opens")
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
    within(WHOLE_TEST, seed, &log, &phase, run).await;
}

/// Runs `run`, failing with where it was (`phase`) and the end of the server log when it takes
/// longer than `limit`, so that a stuck job fails the test with a message instead of hanging CI.
async fn within(
    limit: Duration,
    seed: u64,
    log: &Path,
    phase: &Phase,
    run: impl std::future::Future<Output = ()>,
) {
    if tokio::time::timeout(limit, run).await.is_err() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        panic!(
            "the crash test did not finish within {limit:?} (seed {seed}), while {}; \
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
    let finals = all_terminal(&http, &base, &accepted).await;
    let terminal_in = began.elapsed();

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
    let db = open_file(&data);
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

// ---- A kill -9 in the middle of a group commit ------------------------------------------------

/// Concurrent clients of the group-commit test: with this many requests outstanding the writer
/// finds a batch of accepts waiting at every commit.
const BATCH_SUBMITTERS: usize = 64;
/// SIGKILLs, each followed by a look at the file and a restart on it.
const BATCH_KILLS: usize = 5;
/// How long a server lives before its kill, counted from its first answer, drawn per kill.
const BATCH_UPTIME_MS: (u64, u64) = (150, 600);
/// The whole group-commit test.
const BATCH_WHOLE_TEST: Duration = Duration::from_secs(50);

/// [`server_env`], with the sweeper's re-send of a queued job put off past the test's end: a job
/// left without its message stays without one, so that every look at the file sees what each
/// earlier server left, not what the sweeper has repaired since.
fn batch_env() -> Vec<(&'static str, String)> {
    let mut vars = server_env();
    for (name, value) in &mut vars {
        if *name == env::RESEND_AFTER_SECS {
            *value = "55".into();
        }
    }
    vars
}

/// Job `i` of the group-commit test: a short `demo` job that succeeds on its first attempt, so
/// that the work is writes (accepts, starts, results, deletes), not waiting.
fn batch_job(seed: u64, i: usize) -> Planned {
    let mut rng = Rng(seed ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let input = json!({
        "steps": rng.between(0, 2),
        "step_ms": rng.between(0, 3),
    });
    Planned {
        key: format!("batch-{seed:x}-{i}"),
        body: json!({"kind": "demo", "input": input}),
        panics: false,
        fail_attempts: 0,
    }
}

/// Returns once the server at `base` answers a request (its file is open and it serves).
async fn until_answering(http: &reqwest::Client, base: &str) {
    loop {
        let answer = http
            .get(format!("{base}/v1/report"))
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One queue message as stored: the job its attribute names, and its body's envelope.
struct StoredMessage {
    attribute: String,
    envelope: Envelope,
}

/// What the file holds, read straight from its tables.
struct FileContents {
    jobs: Vec<Job>,
    /// Job ids with an input row.
    inputs: HashSet<String>,
    /// Idempotency-Key → the job id of its row.
    keys: HashMap<String, String>,
    /// The job queue's messages (waiting and in flight).
    messages: Vec<StoredMessage>,
    /// The report's gauges: state → n.
    gauges: HashMap<String, i64>,
    dead_letters: i64,
}

/// Reads the file of a dead server (blocks).
fn read_file(data: &Path) -> FileContents {
    let db = open_file(data);
    db.read_blocking("the test reads the file", |c| {
        let mut jobs = Vec::new();
        for header in c
            .prepare("SELECT header FROM jobs")?
            .query_map([], |row| row.get::<_, String>(0))?
        {
            jobs.push(serde_json::from_str::<Job>(&header?)?);
        }
        let inputs = c
            .prepare("SELECT job_id FROM job_inputs")?
            .query_map([], |row| row.get::<_, String>(0))?
            .collect::<Result<_, _>>()?;
        let keys = c
            .prepare("SELECT key, job_id FROM idempotency_keys WHERE owner = ?1")?
            .query_map([Owner::anonymous().as_str()], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut messages = Vec::new();
        for row in c
            .prepare("SELECT attributes, body FROM queue_messages WHERE queue = ?1")?
            .query_map([QUEUE_NAME], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?
        {
            let (attributes, body) = row?;
            let attributes: HashMap<String, String> = serde_json::from_str(&attributes)?;
            messages.push(StoredMessage {
                attribute: attributes
                    .get(attributes::JOB_ID)
                    .cloned()
                    .unwrap_or_default(),
                envelope: serde_json::from_str(&body)?,
            });
        }
        let gauges = c
            .prepare("SELECT state, n FROM gauges WHERE owner = ?1")?
            .query_map([Owner::anonymous().as_str()], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })?
            .collect::<Result<_, _>>()?;
        let dead_letters = c.query_row(
            "SELECT count(*) FROM dead_letters WHERE queue = ?1",
            [QUEUE_NAME],
            |row| row.get(0),
        )?;
        Ok(FileContents {
            jobs,
            inputs,
            keys,
            messages,
            gauges,
            dead_letters,
        })
    })
    .expect("the file reads")
}

/// What one look at the file found.
#[derive(Debug, Clone, Copy)]
struct FileFigures {
    jobs: usize,
    held: usize,
    queued: usize,
    running: usize,
    messages: usize,
    dead_letters: i64,
}

/// The checks of the file against the 202s the clients `held` (key → job id) when its server
/// died; `when` names the look in messages.
fn check_file(file: &FileContents, held: &HashMap<String, String>, when: &str) -> FileFigures {
    // Each job was written whole: with its input, its key and the key's row, and no key made
    // two jobs.
    let mut by_key: HashMap<&str, &Job> = HashMap::new();
    for job in &file.jobs {
        let id = job.id.to_string();
        let key = job
            .idempotency_key
            .as_ref()
            .unwrap_or_else(|| panic!("{when}: {id} has no Idempotency-Key"))
            .as_str();
        if let Some(other) = by_key.insert(key, job) {
            panic!("{when}: the key {key} made two jobs, {} and {id}", other.id);
        }
        assert!(
            file.inputs.contains(&id),
            "{when}: {id} ({key}) has no input"
        );
        assert_eq!(
            file.keys.get(key),
            Some(&id),
            "{when}: the key row of {key} does not name its job {id}"
        );
    }
    assert_eq!(
        file.keys.len(),
        file.jobs.len(),
        "{when}: key rows without their job"
    );
    // 1. A 202 means the job is in the file.
    for (key, id) in held {
        let job = by_key.get(key.as_str()).unwrap_or_else(|| {
            panic!("{when}: a client holds a 202 for {key} ({id}), but the file has no such job")
        });
        assert_eq!(
            job.id.to_string(),
            *id,
            "{when}: {key} names another job than its 202"
        );
    }
    // 2. An open job has its message: the queue holds one that names it, of its generation.
    let mut queued_for: HashSet<(JobId, u32)> = HashSet::new();
    for message in &file.messages {
        assert_eq!(
            message.attribute,
            message.envelope.job.to_string(),
            "{when}: a message whose attribute and body name different jobs"
        );
        queued_for.insert((message.envelope.job, message.envelope.generation));
    }
    let (mut queued, mut running) = (0, 0);
    for job in &file.jobs {
        match job.state {
            JobState::Queued => queued += 1,
            JobState::Running => running += 1,
            _ => continue,
        }
        assert!(
            queued_for.contains(&(job.id, job.generation)),
            "{when}: {} ({:?}, generation {}) has no message in the queue: {job:?}",
            job.id,
            job.state,
            job.generation
        );
    }
    // The report's gauges were written in the same transactions as the jobs they count.
    for (state, n) in [(JobState::Queued, queued), (JobState::Running, running)] {
        assert_eq!(
            file.gauges.get(state.as_str()).copied().unwrap_or(0),
            i64::try_from(n).expect("fits"),
            "{when}: the {state} gauge disagrees with the jobs ({:?})",
            file.gauges
        );
    }
    FileFigures {
        jobs: file.jobs.len(),
        held: held.len(),
        queued,
        running,
        messages: file.messages.len(),
        dead_letters: file.dead_letters,
    }
}

/// The writer commits every write request waiting for it in one transaction, each request in a
/// savepoint of its own, and a new job goes in with its input, key, gauges and queue message.
/// A SIGKILL that lands while such a batch is being written must take it all or leave it all:
/// every job a client holds a 202 for is in the file, no job is there without its message, and
/// no key made two jobs. 64 clients submit as fast as they are answered, so that every commit
/// is a batch, and the server is killed a few hundred milliseconds after its first answer,
/// several times; after each kill the file is read directly, before the next server opens it.
/// After the last restart every accepted job must still succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_9_during_a_group_commit_leaves_no_202_without_its_job_and_no_job_without_its_message(
) {
    let seed = seed();
    eprintln!("group commit: seed={seed} (ACKFLOW_CRASH_SEED={seed} repeats this schedule)");
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("server.log");
    let phase = Arc::new(Phase::default());
    let run = group_commit_run(seed, dir.path().join("data"), log.clone(), phase.clone());
    within(BATCH_WHOLE_TEST, seed, &log, &phase, run).await;
}

async fn group_commit_run(seed: u64, data: PathBuf, log: PathBuf, phase: Arc<Phase>) {
    let began = Instant::now();
    let mut rng = Rng(seed);
    let uptimes: Vec<Duration> = (0..BATCH_KILLS)
        .map(|_| Duration::from_millis(rng.between(BATCH_UPTIME_MS.0, BATCH_UPTIME_MS.1)))
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");
    let restart = |data: PathBuf, log: PathBuf| {
        tokio::task::spawn_blocking(move || start_with(&data, &log, &batch_env()))
    };

    phase.set("starting the first server");
    let mut server = restart(data.clone(), log.clone()).await.expect("started");
    let (tx, rx) = watch::channel(server.base.clone());
    let seen = Arc::new(Submissions::default());
    // Job `i` is submitted iff `i < next` once the submitters are done: each takes an index
    // only after seeing that new jobs are still wanted, and then submits it until its 202.
    let next = Arc::new(AtomicUsize::new(0));
    let wanted = Arc::new(AtomicBool::new(true));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut submitters = Vec::new();
    for _ in 0..BATCH_SUBMITTERS {
        let (http, seen, next, wanted, in_flight) = (
            http.clone(),
            seen.clone(),
            next.clone(),
            wanted.clone(),
            in_flight.clone(),
        );
        let mut rx = rx.clone();
        submitters.push(tokio::spawn(async move {
            while wanted.load(Ordering::Relaxed) {
                let job = batch_job(seed, next.fetch_add(1, Ordering::Relaxed));
                in_flight.fetch_add(1, Ordering::Relaxed);
                let id = submit(&http, &mut rx, &job, &seen).await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
                seen.accepted.lock().expect("lock").insert(job.key, id);
            }
        }));
    }

    let mut previous_jobs = 0;
    for (k, uptime) in uptimes.iter().enumerate() {
        let kill = k + 1;
        phase.set(format!("waiting for server {kill} to answer"));
        until_answering(&http, &server.base).await;
        tokio::time::sleep(*uptime).await;
        phase.set(format!("kill {kill}: killing and reading the file"));
        let outstanding = in_flight.load(Ordering::Relaxed);
        let (file, held) = {
            let (data, seen) = (data.clone(), seen.clone());
            tokio::task::spawn_blocking(move || {
                server.kill_hard();
                // Taken after the kill: every 202 in it came from a server that is now dead.
                let held = seen.accepted.lock().expect("lock").clone();
                (read_file(&data), held)
            })
            .await
            .expect("killed and read")
        };
        let figures = check_file(&file, &held, &format!("after kill {kill}"));
        let committed = figures.jobs - previous_jobs;
        previous_jobs = figures.jobs;
        eprintln!(
            "group commit: kill {kill} after {} ms up, {outstanding} requests outstanding: \
             {} jobs in the file ({committed} new), {} 202s held and present, \
             {} queued + {} running jobs each with its message ({} messages, {} dead letters)",
            uptime.as_millis(),
            figures.jobs,
            figures.held,
            figures.queued,
            figures.running,
            figures.messages,
            figures.dead_letters,
        );
        // The kill landed amid the writes of a busy server.
        assert!(outstanding > 0, "kill {kill}: no request was outstanding");
        assert!(committed > 0, "kill {kill}: its server committed no job");
        phase.set(format!("restarting after kill {kill}"));
        server = restart(data.clone(), log.clone()).await.expect("restarted");
        tx.send_replace(server.base.clone());
    }

    phase.set("finishing the submissions after the last kill");
    wanted.store(false, Ordering::Relaxed);
    for s in submitters {
        s.await.expect("a submitter");
    }
    let submitted = next.load(Ordering::Relaxed);
    let accepted: HashMap<String, String> = seen.accepted.lock().expect("lock").clone();
    assert_eq!(accepted.len(), submitted, "every key was accepted");
    let submitted_in = began.elapsed();

    phase.set("waiting for every accepted job to be terminal");
    let finals = all_terminal(&http, &server.base, &accepted).await;
    let mut tally = Tally::default();
    for i in 0..submitted {
        let job = batch_job(seed, i);
        let final_job = &finals[&job.key];
        assert_eq!(final_job["id"].as_str(), Some(accepted[&job.key].as_str()));
        check_terminal(&job, final_job, &mut tally);
    }
    let terminal_in = began.elapsed();

    // The file at the end: exactly the accepted jobs, none open.
    phase.set("reading the file at the end");
    let file = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || {
            server.kill_hard();
            read_file(&data)
        })
        .await
        .expect("killed and read")
    };
    let figures = check_file(&file, &accepted, "at the end");
    assert_eq!(
        figures.jobs,
        accepted.len(),
        "jobs in the file that no client was given"
    );
    assert_eq!(
        (figures.queued, figures.running, figures.dead_letters),
        (0, 0, 0),
        "open jobs or dead letters left at the end"
    );
    eprintln!(
        "group commit: accepted={} kills={BATCH_KILLS} succeeded={} resent={} replayed={} \
         interrupted={} messages_left={} submitting took {submitted_in:?}, all terminal after \
         {terminal_in:?}, seed={seed}",
        accepted.len(),
        tally.succeeded,
        seen.resent.load(Ordering::Relaxed),
        seen.replayed.load(Ordering::Relaxed),
        tally.interrupted,
        figures.messages,
    );
}
