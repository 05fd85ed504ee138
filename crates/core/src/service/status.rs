//! Reading a job, waiting for it to change (long-poll), and the `Retry-After` and completion
//! estimates both answer with.

use std::time::Duration;

use serde_json::Value;
use tracing::debug;

use super::{Ackflow, JobError};
use crate::{Job, JobId, JobPart, Owner, Report, Timestamp};

/// How long a typical-latency figure is reused.
const ESTIMATE_TTL: Duration = Duration::from_secs(10);
/// How soon a long-poll first reads the job again; each later wait is twice the one before,
/// up to [`LONG_POLL_MAX_INTERVAL`]. A job that moves soon is seen soon, and one that waits
/// costs a read a second rather than five (about 23 reads over a 20 s long-poll, not 100).
const LONG_POLL_FIRST_INTERVAL: Duration = Duration::from_millis(200);
/// The longest wait between two reads of a long-poll: how late a change may be seen at most.
const LONG_POLL_MAX_INTERVAL: Duration = Duration::from_secs(1);

/// A job as its owner sees it.
#[derive(Debug, Clone)]
pub struct JobStatus {
    /// The header.
    pub job: Job,
    /// The result, when succeeded.
    pub result: Option<Value>,
    /// When to look again, while not terminal.
    pub retry_after: Option<Duration>,
    /// When it is expected to end, from recent processing times; `None` when terminal or unknown.
    pub estimated_completion: Option<Timestamp>,
}

impl Ackflow {
    /// The job `id` of `owner`, with its result when succeeded.
    pub async fn status(&self, owner: &Owner, id: JobId) -> Result<JobStatus, JobError> {
        let (job, result) = self.read_with_result(owner, id).await?;
        self.status_of(job, result).await
    }

    /// The job and, once it has one, its result, in one read where the store can.
    async fn read_with_result(
        &self,
        owner: &Owner,
        id: JobId,
    ) -> Result<(Job, Option<Value>), JobError> {
        self.store
            .get_with(owner, id, JobPart::Result)
            .await?
            .ok_or(JobError::NotFound)
    }

    async fn status_of(&self, job: Job, result: Option<Value>) -> Result<JobStatus, JobError> {
        let (retry_after, estimated_completion) = if job.state.is_terminal() {
            (None, None)
        } else {
            let typical = self.typical_latency(&job.owner).await;
            (
                Some(self.retry_after_from(&job, typical)),
                typical.map(|t| job.submitted_at.plus(t)),
            )
        };
        Ok(JobStatus {
            job,
            result,
            retry_after,
            estimated_completion,
        })
    }

    /// Like [`Ackflow::status`], but when the job's ETag is `etag`, waits up to `wait` (capped by
    /// the long-poll cap) for it to change. A terminal job never changes: it is answered at once.
    pub async fn wait_for_change(
        &self,
        owner: &Owner,
        id: JobId,
        etag: Option<&str>,
        wait: Duration,
    ) -> Result<JobStatus, JobError> {
        let give_up = tokio::time::Instant::now() + wait.min(self.settings.long_poll_cap);
        let mut interval = LONG_POLL_FIRST_INTERVAL;
        loop {
            let (job, result) = self.read_with_result(owner, id).await?;
            let unchanged = etag.is_some_and(|e| e == job.etag());
            if !unchanged || job.state.is_terminal() || tokio::time::Instant::now() >= give_up {
                return self.status_of(job, result).await;
            }
            tokio::time::sleep_until((tokio::time::Instant::now() + interval).min(give_up)).await;
            interval = (interval * 2).min(LONG_POLL_MAX_INTERVAL);
        }
    }

    /// The typical accept→terminal time of `owner`'s recent jobs (median), cached briefly.
    async fn typical_latency(&self, owner: &Owner) -> Option<Duration> {
        let now = self.clock.now();
        if let Ok(cache) = self.typical_latency.lock() {
            if let Some((at, value)) = cache.get(owner) {
                if now.since(*at) < ESTIMATE_TTL {
                    return *value;
                }
            }
        }
        let since = now.minus(self.settings.report_window);
        let value = match self.store.figures(owner, since).await {
            Ok(figures) => Report::from_figures(figures, self.settings.report_window, now, None)
                .latency
                .map(|l| Duration::from_millis(l.p50_ms)),
            Err(e) => {
                debug!(error = %e, "no processing statistics for the estimate");
                None
            }
        };
        if let Ok(mut cache) = self.typical_latency.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(owner.clone(), (now, value));
        }
        value
    }

    pub(super) async fn retry_after(&self, job: &Job) -> Duration {
        let typical = self.typical_latency(&job.owner).await;
        self.retry_after_from(job, typical)
    }

    /// An honest `Retry-After`: the time left until a typical job like this one ends, at least
    /// one second, at most half a minute (beyond that, polling sooner costs little).
    fn retry_after_from(&self, job: &Job, typical: Option<Duration>) -> Duration {
        let age = self.clock.now().since(job.submitted_at);
        let left = typical.map_or(Duration::from_secs(1), |t| t.saturating_sub(age));
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Duration::from_secs(secs.clamp(1, 30))
    }
}
