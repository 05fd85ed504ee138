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
    /// Receives beyond the attempt budget before a queue moves a message to its dead-letter
    /// queue. The store counts attempts and the worker fails a job at its last one; a queue's
    /// receive count also grows on throttles, whole-batch failures and duplicates, so the
    /// queue's own redrive is only a backstop (crashes, poison) and must not fire first.
    pub const RECEIVE_SLACK: u32 = 3;

    /// The queue's receive limit before it dead-letters a message by itself (SQS's
    /// `maxReceiveCount`, the SQLite queue's limit): max attempts + [`Self::RECEIVE_SLACK`].
    pub fn max_receive_count(&self) -> u32 {
        self.max_attempts.saturating_add(Self::RECEIVE_SLACK)
    }

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

/// The environment variables of the knobs, the same on every runtime and in `template.yaml`.
pub mod env {
    /// [`super::Settings::max_attempts`].
    pub const MAX_ATTEMPTS: &str = "ACKFLOW_MAX_ATTEMPTS";
    /// [`super::Settings::worker_timeout`], whole seconds.
    pub const WORKER_TIMEOUT_SECS: &str = "ACKFLOW_WORKER_TIMEOUT_SECS";
    /// [`super::Settings::lease_grace`], milliseconds.
    pub const LEASE_GRACE_MS: &str = "ACKFLOW_LEASE_GRACE_MS";
    /// [`super::Settings::visibility_timeout`], whole seconds.
    pub const VISIBILITY_TIMEOUT_SECS: &str = "ACKFLOW_VISIBILITY_TIMEOUT_SECS";
    /// [`super::Settings::backoff_base`], milliseconds.
    pub const BACKOFF_BASE_MS: &str = "ACKFLOW_BACKOFF_BASE_MS";
    /// [`super::Settings::backoff_max`], whole seconds.
    pub const BACKOFF_MAX_SECS: &str = "ACKFLOW_BACKOFF_MAX_SECS";
    /// [`super::Settings::job_deadline`], whole seconds.
    pub const JOB_DEADLINE_SECS: &str = "ACKFLOW_JOB_DEADLINE_SECS";
    /// [`super::Settings::sweep_period`], whole seconds.
    pub const SWEEP_PERIOD_SECS: &str = "ACKFLOW_SWEEP_PERIOD_SECS";
    /// [`super::Settings::resend_after`], whole seconds.
    pub const RESEND_AFTER_SECS: &str = "ACKFLOW_RESEND_AFTER_SECS";
    /// [`super::Settings::retention`], whole seconds.
    pub const RETENTION_SECS: &str = "ACKFLOW_RETENTION_SECS";
    /// [`super::Settings::body_limit`], bytes.
    pub const BODY_LIMIT_BYTES: &str = "ACKFLOW_BODY_LIMIT_BYTES";
    /// [`super::Settings::long_poll_cap`], whole seconds.
    pub const LONG_POLL_CAP_SECS: &str = "ACKFLOW_LONG_POLL_CAP_SECS";

    /// Every knob variable.
    pub const ALL: [&str; 12] = [
        MAX_ATTEMPTS,
        WORKER_TIMEOUT_SECS,
        LEASE_GRACE_MS,
        VISIBILITY_TIMEOUT_SECS,
        BACKOFF_BASE_MS,
        BACKOFF_MAX_SECS,
        JOB_DEADLINE_SECS,
        SWEEP_PERIOD_SECS,
        RESEND_AFTER_SECS,
        RETENTION_SECS,
        BODY_LIMIT_BYTES,
        LONG_POLL_CAP_SECS,
    ];
}

/// The values a knob's variable accepts, in its unit: bounded by what a job store can represent
/// and what a person would mean, so that no setting can write a timestamp past the year 9999 or
/// overflow a deadline's arithmetic. README's Configuration table lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnobRange {
    /// The variable.
    pub var: &'static str,
    /// The least value accepted.
    pub min: u64,
    /// The greatest value accepted.
    pub max: u64,
    /// What the number counts (`seconds`, `milliseconds`, `bytes`, `attempts`).
    pub unit: &'static str,
}

/// The range of every knob variable ([`env::ALL`]).
pub const RANGES: [KnobRange; 12] = [
    range(env::MAX_ATTEMPTS, 1, 100, "attempts"),
    range(env::WORKER_TIMEOUT_SECS, 1, 86_400, "seconds"),
    range(env::LEASE_GRACE_MS, 0, 600_000, "milliseconds"),
    // SQS's own limit.
    range(env::VISIBILITY_TIMEOUT_SECS, 1, 43_200, "seconds"),
    range(env::BACKOFF_BASE_MS, 1, 3_600_000, "milliseconds"),
    range(env::BACKOFF_MAX_SECS, 1, 86_400, "seconds"),
    // 30 days.
    range(env::JOB_DEADLINE_SECS, 2, 2_592_000, "seconds"),
    range(env::SWEEP_PERIOD_SECS, 1, 3_600, "seconds"),
    range(env::RESEND_AFTER_SECS, 1, 2_592_000, "seconds"),
    // 400 days.
    range(env::RETENTION_SECS, 60, 34_560_000, "seconds"),
    // 4 MiB; a DynamoDB item holds 400 KB, so AWS deployments stay under about 350 KiB.
    range(env::BODY_LIMIT_BYTES, 1_024, 4_194_304, "bytes"),
    range(env::LONG_POLL_CAP_SECS, 0, 300, "seconds"),
];

const fn range(var: &'static str, min: u64, max: u64, unit: &'static str) -> KnobRange {
    KnobRange {
        var,
        min,
        max,
        unit,
    }
}

impl KnobRange {
    /// The range of `var`, if it is a knob variable.
    pub fn of(var: &str) -> Option<KnobRange> {
        RANGES.iter().find(|r| r.var == var).copied()
    }
}

/// A knob whose value cannot work; the message names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

impl Settings {
    /// Reads the knobs through `lookup` (the process environment: `|name| std::env::var(name).ok()`),
    /// starting from `base` for what is not set, and checks that they fit together. Unset derived
    /// knobs (visibility timeout, resend delay) follow the ones they derive from.
    pub fn from_lookup(
        base: Settings,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, SettingsError> {
        fn number(
            lookup: &impl Fn(&str) -> Option<String>,
            name: &str,
        ) -> Result<Option<u64>, SettingsError> {
            let value = match lookup(name) {
                None => return Ok(None),
                Some(v) if v.trim().is_empty() => return Ok(None),
                Some(v) => v,
            };
            let Some(range) = KnobRange::of(name) else {
                return Err(SettingsError(format!("{name} is not a knob")));
            };
            let refused = || {
                SettingsError(format!(
                    "{name} must be a whole number from {} to {} ({}), not {value:?}",
                    range.min, range.max, range.unit
                ))
            };
            match value.trim().parse::<u64>() {
                Ok(n) if (range.min..=range.max).contains(&n) => Ok(Some(n)),
                _ => Err(refused()),
            }
        }
        let secs = |name| number(&lookup, name).map(|v| v.map(Duration::from_secs));
        let millis = |name| number(&lookup, name).map(|v| v.map(Duration::from_millis));

        let mut s = base;
        if let Some(v) = number(&lookup, env::MAX_ATTEMPTS)? {
            s.max_attempts = u32::try_from(v)
                .map_err(|_| SettingsError(format!("{} is too large", env::MAX_ATTEMPTS)))?;
        }
        let worker_timeout = secs(env::WORKER_TIMEOUT_SECS)?;
        if let Some(v) = worker_timeout {
            s.worker_timeout = v;
        }
        if let Some(v) = millis(env::LEASE_GRACE_MS)? {
            s.lease_grace = v;
        }
        let backoff_max = secs(env::BACKOFF_MAX_SECS)?;
        if let Some(v) = backoff_max {
            s.backoff_max = v;
        }
        match secs(env::VISIBILITY_TIMEOUT_SECS)? {
            Some(v) => s.visibility_timeout = v,
            None if worker_timeout.is_some() => {
                s.visibility_timeout = s.worker_timeout + Duration::from_secs(10)
            }
            None => {}
        }
        if let Some(v) = millis(env::BACKOFF_BASE_MS)? {
            s.backoff_base = v;
        }
        if let Some(v) = secs(env::JOB_DEADLINE_SECS)? {
            s.job_deadline = v;
        }
        if let Some(v) = secs(env::SWEEP_PERIOD_SECS)? {
            s.sweep_period = v;
        }
        match secs(env::RESEND_AFTER_SECS)? {
            Some(v) => s.resend_after = v,
            None if worker_timeout.is_some()
                || backoff_max.is_some()
                || lookup(env::VISIBILITY_TIMEOUT_SECS).is_some() =>
            {
                s.resend_after = s.visibility_timeout + s.backoff_max + Duration::from_secs(30);
            }
            None => {}
        }
        if let Some(v) = secs(env::RETENTION_SECS)? {
            s.retention = v;
        }
        if let Some(v) = number(&lookup, env::BODY_LIMIT_BYTES)? {
            s.body_limit = usize::try_from(v)
                .map_err(|_| SettingsError(format!("{} is too large", env::BODY_LIMIT_BYTES)))?;
        }
        if let Some(v) = secs(env::LONG_POLL_CAP_SECS)? {
            s.long_poll_cap = v;
        }
        s.check()?;
        Ok(s)
    }

    /// Checks that the knobs fit together.
    pub fn check(&self) -> Result<(), SettingsError> {
        let fail = |m: String| Err(SettingsError(m));
        if self.max_attempts == 0 {
            return fail(format!("{} must be at least 1", env::MAX_ATTEMPTS));
        }
        if self.worker_timeout.is_zero() {
            return fail(format!("{} must be at least 1", env::WORKER_TIMEOUT_SECS));
        }
        if self.visibility_timeout < self.worker_timeout {
            return fail(format!(
                "{} must be at least {}, or messages come back while their attempt still runs",
                env::VISIBILITY_TIMEOUT_SECS,
                env::WORKER_TIMEOUT_SECS
            ));
        }
        if self.backoff_base.is_zero() || self.backoff_base > self.backoff_max {
            return fail(format!(
                "{} must be positive and at most {}",
                env::BACKOFF_BASE_MS,
                env::BACKOFF_MAX_SECS
            ));
        }
        if self.job_deadline <= self.lease() {
            return fail(format!(
                "{} must exceed the worker timeout plus the lease grace, or no attempt can start",
                env::JOB_DEADLINE_SECS
            ));
        }
        if self.sweep_period.is_zero() {
            return fail(format!("{} must be at least 1", env::SWEEP_PERIOD_SECS));
        }
        if self.body_limit < 1024 {
            return fail(format!("{} must be at least 1024", env::BODY_LIMIT_BYTES));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_dead_letters_by_itself_only_after_the_attempt_budget_and_its_slack() {
        let settings = Settings {
            max_attempts: 5,
            ..Settings::default()
        };
        assert_eq!(settings.max_receive_count(), 8);
    }
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(Settings::default(), |name| map.get(name).cloned())
    }

    #[test]
    fn no_variables_give_the_defaults() {
        assert_eq!(from(&[]), Ok(Settings::default()));
    }

    #[test]
    fn derived_knobs_follow_what_they_derive_from() {
        let s = from(&[
            (env::WORKER_TIMEOUT_SECS, "2"),
            (env::BACKOFF_MAX_SECS, "1"),
        ])
        .expect("valid");
        assert_eq!(s.visibility_timeout, Duration::from_secs(12));
        assert_eq!(s.resend_after, Duration::from_secs(12 + 1 + 30));
    }

    #[test]
    fn every_knob_out_of_its_range_is_refused_naming_it_and_the_range() {
        for range in RANGES {
            let mut out = vec![u64::MAX.to_string(), (range.max + 1).to_string()];
            if range.min > 0 {
                out.push((range.min - 1).to_string());
            }
            for value in out {
                let e = from(&[(range.var, &value)]).expect_err("refused");
                let bounds = format!("from {} to {}", range.min, range.max);
                assert!(e.0.contains(range.var) && e.0.contains(&bounds), "{e}");
            }
        }
    }

    #[test]
    fn the_largest_deadline_and_retention_are_accepted() {
        let s = from(&[
            (env::JOB_DEADLINE_SECS, "2592000"),
            (env::RETENTION_SECS, "34560000"),
            (env::LONG_POLL_CAP_SECS, "300"),
        ])
        .expect("accepted");
        assert_eq!(s.job_deadline, Duration::from_secs(2_592_000));
    }

    #[test]
    fn the_readme_lists_every_knobs_range() {
        let readme = include_str!("../../../README.md");
        for range in RANGES {
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{}`", range.var)))
                .unwrap_or_else(|| panic!("README has no row for {}", range.var));
            let bounds = format!("{}–{}", range.min, range.max);
            assert!(
                row.contains(&bounds),
                "README's {} row lacks {bounds}: {row}",
                range.var
            );
        }
    }

    #[test]
    fn bad_values_are_refused_naming_the_variable() {
        let e = from(&[(env::MAX_ATTEMPTS, "many")]).expect_err("refused");
        assert!(e.0.contains(env::MAX_ATTEMPTS), "{e}");
        let e = from(&[
            (env::WORKER_TIMEOUT_SECS, "60"),
            (env::VISIBILITY_TIMEOUT_SECS, "10"),
        ])
        .expect_err("refused");
        assert!(e.0.contains(env::VISIBILITY_TIMEOUT_SECS), "{e}");
        let e = from(&[(env::JOB_DEADLINE_SECS, "10")]).expect_err("refused");
        assert!(e.0.contains(env::JOB_DEADLINE_SECS), "{e}");
    }

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
