//! The sweeper: deadlines, lost messages, expired jobs.

use std::time::Duration;

use tracing::{info, warn};

use super::write::TransitionError;
use super::Ackflow;
use crate::{error_chain, Change, JobState, PortError, Problem};

/// What one sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SweepReport {
    /// Jobs failed because their deadline passed.
    pub failed: u32,
    /// Jobs whose message was sent again.
    pub resent: u32,
    /// Expired terminal jobs deleted.
    pub purged: u64,
    /// Jobs the sweep could not write (or re-send) because the store or the queue failed for
    /// them; they stay due, and the next sweep tries them again.
    pub errors: u32,
    /// Whether the sweep stopped at its time limit ([`Ackflow::sweep_until`]) with work left:
    /// the rest stays due for the next sweep.
    pub out_of_time: bool,
}

impl Ackflow {
    /// Fails non-terminal jobs past their deadline, re-sends the messages of jobs that look lost,
    /// and purges expired terminal jobs. Reads the index of non-terminal jobs, never scans.
    ///
    /// One job's failed write does not stop the sweep: the others are as due as it is, and an
    /// outage of one partition or a throttle of one write says nothing about the next. Those
    /// jobs are counted in [`SweepReport::errors`] and stay due. Only a failed read of the index
    /// ends the sweep early, with an error: nothing else can be done without it.
    pub async fn sweep(&self) -> Result<SweepReport, PortError> {
        self.sweep_until(None).await
    }

    /// [`Ackflow::sweep`], starting nothing (no page read, no job's writes, no purge) at or
    /// after `stop_starting`: a sweeper that is killed at a timeout stops in time to answer,
    /// and what it did not reach stays due for the next sweep.
    pub async fn sweep_until(
        &self,
        stop_starting: Option<tokio::time::Instant>,
    ) -> Result<SweepReport, PortError> {
        const BATCH: usize = 100;
        const ROUNDS: usize = 20;
        let mut report = SweepReport::default();
        let now = self.clock.now();
        let out_of_time = |report: &mut SweepReport| {
            let late = stop_starting.is_some_and(|t| tokio::time::Instant::now() >= t);
            if late && !report.out_of_time {
                warn!("the sweep reached its time limit; what is left stays due for the next one");
            }
            report.out_of_time |= late;
            late
        };
        for _ in 0..ROUNDS {
            if out_of_time(&mut report) {
                return Ok(report);
            }
            let due = self.store.due_for_sweep(now, BATCH).await?;
            let full = due.len() == BATCH;
            let errors_before = report.errors;
            let read = due.len();
            for job in due {
                if out_of_time(&mut report) {
                    return Ok(report);
                }
                if now >= job.deadline {
                    match self
                        .write(&job, Change::Fail(Problem::deadline_exceeded()), None)
                        .await
                    {
                        Ok(_) => {
                            warn!(job_id = %job.id, state = %job.state, "deadline passed; job failed");
                            report.failed += 1;
                        }
                        Err(TransitionError::Port(e)) => report.could_not(&job, "fail", &e),
                        Err(_) => {}
                    }
                    continue;
                }
                if job.state == JobState::Running && !job.lease_expired(now) {
                    continue; // not actually due (its lease was extended by a racing write)
                }
                // Queued for long, or running with an expired lease: the message may be lost.
                // A duplicate is harmless (every write is fenced), a lost job is not.
                if let Err(e) = self.send(&job, Duration::ZERO).await {
                    report.could_not(&job, "re-send", &e);
                    continue;
                }
                match self.write(&job, Change::Resent, None).await {
                    Ok(_) => {
                        info!(job_id = %job.id, state = %job.state, "message re-sent by the sweeper");
                        report.resent += 1;
                    }
                    Err(TransitionError::Port(e)) => {
                        report.could_not(&job, "record the re-send of", &e)
                    }
                    Err(_) => {}
                }
            }
            // A page that failed whole would be read again unchanged: the next sweep retries it.
            let all_failed = read > 0 && (report.errors - errors_before) as usize == read;
            if !full || all_failed {
                break;
            }
        }
        if out_of_time(&mut report) {
            return Ok(report);
        }
        match self.store.purge_expired(now, 1000).await {
            Ok(purged) => report.purged = purged,
            Err(e) => {
                warn!(error = %error_chain(&e), "sweeper could not purge expired jobs; the next sweep will");
                report.errors += 1;
            }
        }
        Ok(report)
    }
}

impl SweepReport {
    /// Counts a job the sweep could not `act` on, and logs why.
    fn could_not(&mut self, job: &crate::Job, act: &str, e: &PortError) {
        warn!(job_id = %job.id, state = %job.state, error = %error_chain(e), "sweeper could not {act} the job; the next sweep tries again");
        self.errors += 1;
    }
}
