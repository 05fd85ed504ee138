//! The knobs, with the same names on both runtimes and in `template.yaml` (see README, "Configuration").

use std::time::Duration;

/// Every setting the use cases depend on. Runtimes read them once, at startup, from their own
/// configuration (CLI flags and environment on one machine, function environment on AWS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Attempts per generation, counted by the store on `queued → running` (`ACKFLOW_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// How long one attempt may run before it counts as a transient failure (`ACKFLOW_WORKER_TIMEOUT_SECS`).
    pub worker_timeout: Duration,
    /// Extra time on a lease beyond the worker timeout, so a slow final write is not taken for a crash.
    pub lease_grace: Duration,
    /// How long a received message stays invisible (`ACKFLOW_VISIBILITY_TIMEOUT_SECS`).
    pub visibility_timeout: Duration,
    /// First retry delay after a transient failure; doubles per attempt (`ACKFLOW_BACKOFF_BASE_MS`).
    pub backoff_base: Duration,
    /// Largest retry delay (`ACKFLOW_BACKOFF_MAX_SECS`).
    pub backoff_max: Duration,
    /// Every job is terminal by accept time + this (+ one sweep period) (`ACKFLOW_JOB_DEADLINE_SECS`).
    pub job_deadline: Duration,
    /// How often the sweeper runs (`ACKFLOW_SWEEP_PERIOD_SECS`).
    pub sweep_period: Duration,
    /// A queued job untouched for this long is presumed to have lost its message and is re-sent.
    pub resend_after: Duration,
    /// How long terminal jobs are kept (`ACKFLOW_RETENTION_SECS`).
    pub retention: Duration,
    /// Largest accepted request body (`ACKFLOW_BODY_LIMIT_BYTES`).
    pub body_limit: usize,
    /// Largest result a processor may return, serialized.
    pub result_limit: usize,
    /// Longest `?wait=` a status request may hold (`ACKFLOW_LONG_POLL_CAP_SECS`).
    pub long_poll_cap: Duration,
    /// Shortest time between two progress writes of one job (coalescing).
    pub progress_interval: Duration,
    /// Window of the report's latency figures and failure reasons.
    pub report_window: Duration,
    /// How many entries of a job's history are kept.
    pub history_cap: usize,
}

impl Default for Settings {
    fn default() -> Self {
        let worker_timeout = Duration::from_secs(30);
        let visibility_timeout = worker_timeout + Duration::from_secs(10);
        let backoff_max = Duration::from_secs(60);
        Self {
            max_attempts: 5,
            worker_timeout,
            lease_grace: Duration::from_secs(5),
            visibility_timeout,
            backoff_base: Duration::from_secs(1),
            backoff_max,
            job_deadline: Duration::from_secs(15 * 60),
            sweep_period: Duration::from_secs(10),
            resend_after: visibility_timeout + backoff_max + Duration::from_secs(30),
            retention: Duration::from_secs(7 * 24 * 3600),
            body_limit: 256 * 1024,
            result_limit: 128 * 1024,
            long_poll_cap: Duration::from_secs(20),
            progress_interval: Duration::from_millis(250),
            report_window: Duration::from_secs(24 * 3600),
            history_cap: 20,
        }
    }
}

impl Settings {
    /// How long a running attempt holds its job before another delivery may take it over.
    pub fn lease(&self) -> Duration {
        self.worker_timeout + self.lease_grace
    }

    /// The delay before attempt `attempt + 1`, after attempt `attempt` (1-based) failed:
    /// exponential from `backoff_base`, capped at `backoff_max`, with up to 20 % jitter
    /// so that a burst of failures does not come back as a burst.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let raw = self
            .backoff_base
            .saturating_mul(1u32 << exp)
            .min(self.backoff_max);
        let jitter = raw.mul_f64(fastrand::f64() * 0.2);
        (raw - jitter).max(Duration::from_millis(1))
    }

    /// The bound of invariant 2: an accepted job is terminal at most this long after its acceptance.
    pub fn terminal_bound(&self) -> Duration {
        self.job_deadline + self.sweep_period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let s = Settings::default();
        for attempt in 1..40 {
            let d = s.backoff(attempt);
            assert!(d <= s.backoff_max, "attempt {attempt}: {d:?}");
            assert!(d > Duration::ZERO);
        }
        assert!(s.backoff(1) <= Duration::from_secs(1));
        assert!(s.backoff(4) >= Duration::from_millis(6400));
    }

    #[test]
    fn the_default_deadline_leaves_room_for_every_attempt() {
        let s = Settings::default();
        let worst = (s.lease() + s.backoff_max) * s.max_attempts;
        assert!(worst < s.job_deadline, "{worst:?} >= {:?}", s.job_deadline);
    }
}
