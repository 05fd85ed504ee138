//! The report's aggregates: what each transition adds to them, and how they become figures.
//!
//! Stores keep two things per owner: *gauges* (jobs now queued or running) and *counters* per
//! hour (accepted, finished by state, an accept→terminal latency histogram, failure types).
//! The report sums the counters of its window: a handful of rows, never a scan of jobs.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::{Figures, Job, JobId, JobState, QueueDepth, Timestamp};

/// Upper bounds (ms) of the latency histogram's buckets; a last bucket takes the rest.
pub const LATENCY_BOUNDS_MS: [u64; 20] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 20_000, 30_000, 60_000, 120_000,
    300_000, 600_000, 1_200_000, 1_800_000, 3_600_000, 86_400_000,
];

/// Counter names.
pub mod counter {
    /// Jobs accepted.
    pub const ACCEPTED: &str = "accepted";
    /// Attempts that failed transiently and were retried.
    pub const RETRIED: &str = "retried";
    /// Failed jobs reopened by a redrive.
    pub const REDRIVEN: &str = "redriven";
    /// Prefix of "jobs that reached this terminal state".
    pub const STATE: &str = "state:";
    /// Prefix of latency histogram buckets.
    pub const LATENCY: &str = "latency:";
    /// Prefix of failure counts by problem type.
    pub const FAILURE: &str = "failure:";
}

const HOUR_MS: i64 = 3_600_000;

/// What one write adds to the aggregates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Deltas {
    /// Changes to the gauges of non-terminal states.
    pub gauges: Vec<(JobState, i64)>,
    /// Increments of hourly counters.
    pub counters: Vec<(String, u64)>,
    /// The start of the hour the counters belong to.
    pub hour: Timestamp,
}

impl Deltas {
    /// The start of the hour containing `t`.
    pub fn hour_of(t: Timestamp) -> Timestamp {
        Timestamp::from_millis(t.as_millis().div_euclid(HOUR_MS) * HOUR_MS)
    }

    /// What accepting `job` adds.
    pub fn created(job: &Job) -> Self {
        Self {
            gauges: vec![(job.state, 1)],
            counters: vec![(counter::ACCEPTED.to_owned(), 1)],
            hour: Self::hour_of(job.updated_at),
        }
    }

    /// What the write from `before` to `after` adds.
    pub fn between(before: &Job, after: &Job) -> Self {
        let mut d = Self {
            hour: Self::hour_of(after.updated_at),
            ..Self::default()
        };
        if before.state != after.state {
            if !before.state.is_terminal() {
                d.gauges.push((before.state, -1));
            }
            if !after.state.is_terminal() {
                d.gauges.push((after.state, 1));
            }
        }
        if after.state.is_terminal() && !before.state.is_terminal() {
            d.counters
                .push((format!("{}{}", counter::STATE, after.state), 1));
            let latency = after.updated_at.since(after.submitted_at);
            d.counters.push((
                format!("{}{}", counter::LATENCY, latency_bucket(latency)),
                1,
            ));
            if let Some(problem) = &after.error {
                d.counters
                    .push((format!("{}{}", counter::FAILURE, problem.type_), 1));
            }
        }
        if before.state == JobState::Running && after.state == JobState::Queued {
            d.counters.push((counter::RETRIED.to_owned(), 1));
        }
        if before.state == JobState::Failed && after.state == JobState::Queued {
            d.counters.push((counter::REDRIVEN.to_owned(), 1));
        }
        d
    }
}

/// The histogram bucket of a latency.
pub fn latency_bucket(latency: Duration) -> usize {
    let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
    LATENCY_BOUNDS_MS
        .iter()
        .position(|&bound| ms <= bound)
        .unwrap_or(LATENCY_BOUNDS_MS.len())
}

/// The latency at quantile `q` (0–1) of a histogram, as the upper bound of its bucket
/// (the last, open bucket reports its lower bound). `None` without samples.
pub fn quantile(histogram: &[u64], q: f64) -> Option<Duration> {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in histogram.iter().enumerate() {
        seen += n;
        if seen >= rank {
            let bound = LATENCY_BOUNDS_MS
                .get(i)
                .or(LATENCY_BOUNDS_MS.last())
                .copied()
                .unwrap_or(0);
            return Some(Duration::from_millis(bound));
        }
    }
    None
}

/// Accept→terminal latency over the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// Jobs that ended in the window.
    pub samples: u64,
    /// Median, in milliseconds (bucket upper bound).
    pub p50_ms: u64,
    /// 95th percentile, in milliseconds (bucket upper bound).
    pub p95_ms: u64,
}

/// The oldest job that has not ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OldestOpen {
    /// Its id.
    pub id: JobId,
    /// Its state.
    pub state: JobState,
    /// When it was accepted.
    pub submitted_at: Timestamp,
    /// How long ago, in seconds.
    pub age_secs: u64,
}

/// How often a problem type ended jobs in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureCount {
    /// The problem type.
    #[serde(rename = "type")]
    pub type_: String,
    /// How many jobs failed with it.
    pub count: u64,
}

/// `GET /v1/report`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The window of the counters, in seconds.
    pub window_secs: u64,
    /// Jobs now queued and running; jobs that ended in the window by terminal state.
    pub counts: BTreeMap<JobState, u64>,
    /// Jobs accepted in the window.
    pub accepted: u64,
    /// Transient failures retried in the window.
    pub retried: u64,
    /// Accept→terminal latency of the jobs that ended in the window.
    pub latency: Option<Latency>,
    /// The oldest job that has not ended.
    pub oldest_open: Option<OldestOpen>,
    /// The most frequent failure types in the window, most frequent first (at most 5).
    pub top_failures: Vec<FailureCount>,
    /// Queue and dead-letter depth, where the queue could tell.
    pub queue: Option<QueueDepth>,
}

impl Report {
    /// Builds the report from the store's figures.
    pub fn from_figures(
        figures: Figures,
        window: Duration,
        now: Timestamp,
        queue: Option<QueueDepth>,
    ) -> Self {
        let mut counts: BTreeMap<JobState, u64> =
            JobState::ALL.into_iter().map(|s| (s, 0)).collect();
        for (state, n) in &figures.gauges {
            counts.insert(*state, *n);
        }
        let mut histogram = vec![0u64; LATENCY_BOUNDS_MS.len() + 1];
        let mut failures = Vec::new();
        let (mut accepted, mut retried) = (0, 0);
        for (name, n) in &figures.counters {
            if let Some(state) = name
                .strip_prefix(counter::STATE)
                .and_then(|s| s.parse::<JobState>().ok())
            {
                counts.insert(state, *n);
            } else if let Some(i) = name
                .strip_prefix(counter::LATENCY)
                .and_then(|s| s.parse::<usize>().ok())
            {
                if let Some(slot) = histogram.get_mut(i) {
                    *slot += n;
                }
            } else if let Some(t) = name.strip_prefix(counter::FAILURE) {
                failures.push(FailureCount {
                    type_: t.to_owned(),
                    count: *n,
                });
            } else if name == counter::ACCEPTED {
                accepted = *n;
            } else if name == counter::RETRIED {
                retried = *n;
            }
        }
        failures.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.type_.cmp(&b.type_)));
        failures.truncate(5);
        let latency = match (quantile(&histogram, 0.5), quantile(&histogram, 0.95)) {
            (Some(p50), Some(p95)) => Some(Latency {
                samples: histogram.iter().sum(),
                p50_ms: u64::try_from(p50.as_millis()).unwrap_or(u64::MAX),
                p95_ms: u64::try_from(p95.as_millis()).unwrap_or(u64::MAX),
            }),
            _ => None,
        };
        let oldest_open = figures.oldest_open.map(|job| OldestOpen {
            id: job.id,
            state: job.state,
            submitted_at: job.submitted_at,
            age_secs: now.since(job.submitted_at).as_secs(),
        });
        Self {
            window_secs: window.as_secs(),
            counts,
            accepted,
            retried,
            latency,
            oldest_open,
            top_failures: failures,
            queue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_upper_bounds() {
        assert_eq!(latency_bucket(Duration::from_millis(0)), 0);
        assert_eq!(latency_bucket(Duration::from_millis(10)), 0);
        assert_eq!(latency_bucket(Duration::from_millis(11)), 1);
        assert_eq!(
            latency_bucket(Duration::from_secs(10 * 86_400)),
            LATENCY_BOUNDS_MS.len()
        );
    }

    #[test]
    fn quantiles_come_from_the_histogram() {
        let mut h = vec![0u64; LATENCY_BOUNDS_MS.len() + 1];
        h[3] = 90; // ≤ 100 ms
        h[8] = 10; // ≤ 5 s
        assert_eq!(quantile(&h, 0.5), Some(Duration::from_millis(100)));
        assert_eq!(quantile(&h, 0.95), Some(Duration::from_millis(5_000)));
        assert_eq!(quantile(&[0, 0], 0.5), None);
    }
}
