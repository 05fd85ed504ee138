//! The legality checks of a job at rest, and the restarted runtime that brings jobs to rest.
//!
//! After a use case ran through [`crate::faults`]' wrappers (an outage, an ambiguous write, a
//! crash between two writes), [`drive_until_quiet`] plays the restarted runtime on fault-free
//! ports (worker and sweeper rounds on a moving [`ManualClock`]) until every watched job is
//! terminal and the queue is empty, and [`check_terminal_and_legal`] asserts what SPEC.md
//! promises of each job then: a legal history ([`legal_step`]), attempts within budget, a result
//! exactly when it succeeded, a problem written for people ([`human_worded`]) exactly when it
//! failed.

use std::time::Duration;

use ackflow_core::{Ackflow, Job, JobId, JobState, ManualClock, Owner, PortError, Problem};
use serde_json::Value;

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
