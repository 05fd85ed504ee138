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
}

impl Ackflow {
    /// Fails non-terminal jobs past their deadline, re-sends the messages of jobs that look lost,
    /// and purges expired terminal jobs. Reads the index of non-terminal jobs, never scans.
    pub async fn sweep(&self) -> Result<SweepReport, PortError> {
        const BATCH: usize = 100;
        const ROUNDS: usize = 20;
        let mut report = SweepReport::default();
        let now = self.clock.now();
        for _ in 0..ROUNDS {
            let due = self.store.due_for_sweep(now, BATCH).await?;
            let full = due.len() == BATCH;
            for job in due {
                if now >= job.deadline {
                    match self
                        .write(&job, Change::Fail(Problem::deadline_exceeded()), None)
                        .await
                    {
                        Ok(_) => {
                            warn!(job_id = %job.id, state = %job.state, "deadline passed; job failed");
                            report.failed += 1;
                        }
                        Err(TransitionError::Port(e)) => return Err(e),
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
                    warn!(job_id = %job.id, error = %error_chain(&e), "sweeper could not re-send; will try again");
                    continue;
                }
                match self.write(&job, Change::Resent, None).await {
                    Ok(_) => {
                        info!(job_id = %job.id, state = %job.state, "message re-sent by the sweeper");
                        report.resent += 1;
                    }
                    Err(TransitionError::Port(e)) => return Err(e),
                    Err(_) => {}
                }
            }
            if !full {
                break;
            }
        }
        report.purged = self.store.purge_expired(now, 1000).await?;
        Ok(report)
    }
}
