//! The job, its states, and every transition between them as a pure function.
//!
//! Stores never decide what a transition does: the use cases read a job, compute the next
//! version with [`Job::apply`], and ask the store to write it *only if* the stored revision is
//! still the one they read. Every transition bumps the revision, so the write is fenced on
//! state, generation and attempt (and on everything else): a late or duplicate worker can never
//! overwrite what another one wrote.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{
    Clock, CorrelationId, IdempotencyKey, JobId, Kind, Owner, Problem, Settings, Timestamp,
};

/// Version of the job record and message layout. Bumped on incompatible change; readers refuse
/// versions newer than theirs (the message goes back to the queue for a newer worker).
pub const SCHEMA_VERSION: u16 = 1;

/// Where a job is in its life. See the diagram in SPEC.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted and waiting for a worker (or for its next attempt).
    Queued,
    /// An attempt holds the job until its lease ends.
    Running,
    /// Finished with a result. Terminal.
    Succeeded,
    /// Finished with a problem. Terminal, though a redrive may reopen it.
    Failed,
    /// Cancelled by its owner while queued. Terminal.
    Cancelled,
}

impl JobState {
    /// Every state, in the order of the diagram.
    pub const ALL: [JobState; 5] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    /// Whether the job has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The name used in the API and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = crate::InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or(crate::InvalidId(
                "a state is one of queued, running, succeeded, failed, cancelled",
            ))
    }
}

/// How far a job has come, as the processor reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Progress {
    /// 0 to 100.
    pub percent: u8,
    /// A short status message for people, such as "Reserving stock".
    pub message: String,
}

impl Progress {
    /// Longest message kept; longer ones are cut (on a character boundary).
    pub const MESSAGE_LIMIT: usize = 200;

    /// A progress value, clamped to 0–100 and to [`Self::MESSAGE_LIMIT`] bytes.
    pub fn new(percent: u8, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > Self::MESSAGE_LIMIT {
            let mut cut = Self::MESSAGE_LIMIT;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        Self {
            percent: percent.min(100),
            message,
        }
    }
}

/// One line of a job's history, shown to its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When it happened.
    pub at: Timestamp,
    /// The state entered.
    pub state: JobState,
    /// What happened, in words for people.
    pub note: String,
}

/// The job header: the small record every transition rewrites. Input and result are kept apart
/// (see [`crate::JobStore`]), so a write never pays for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Layout version of this record.
    pub schema: u16,
    /// The job's id.
    pub id: JobId,
    /// Who may see it.
    pub owner: Owner,
    /// Which processor runs it.
    pub kind: Kind,
    /// Where it is.
    pub state: JobState,
    /// Bumped by every write; the fence of conditional writes and the ETag.
    pub revision: u64,
    /// Bumped by each redrive; messages of older generations are ignored.
    pub generation: u32,
    /// Attempts started in this generation, counted by the store.
    pub attempts: u32,
    /// The attempt budget of this generation.
    pub max_attempts: u32,
    /// When it was accepted.
    pub submitted_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// When its latest attempt started.
    pub started_at: Option<Timestamp>,
    /// When it reached a terminal state.
    pub finished_at: Option<Timestamp>,
    /// While running: until when the current attempt holds it.
    pub running_until: Option<Timestamp>,
    /// It is terminal by then (plus one sweep period), whatever fails.
    pub deadline: Timestamp,
    /// While not terminal: when the sweeper should look at it next. Indexed; absent when terminal.
    pub sweep_at: Option<Timestamp>,
    /// When terminal: when the record may be deleted.
    pub expires_at: Option<Timestamp>,
    /// The latest progress.
    pub progress: Progress,
    /// Why it failed, when failed.
    pub error: Option<Problem>,
    /// Whether a result is stored.
    pub has_result: bool,
    /// The correlation id of the request that created it.
    pub correlation_id: CorrelationId,
    /// The key it was submitted with, if any.
    pub idempotency_key: Option<IdempotencyKey>,
    /// What happened, newest last, capped at [`Settings::history_cap`].
    pub history: Vec<HistoryEntry>,
}

/// A change to a job. [`Job::apply`] says whether it is legal and what it produces.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// An attempt starts: `queued → running`, or takes over a `running` job whose lease ended.
    Start,
    /// The running attempt reports progress.
    Progress(Progress),
    /// The running attempt finished with a result.
    Succeed,
    /// The running attempt failed transiently and the job waits for another attempt.
    Release {
        /// When the next attempt may start.
        retry_at: Timestamp,
        /// Why, in words for people.
        note: String,
    },
    /// The job failed for good.
    Fail(Problem),
    /// The owner cancelled it while queued.
    Cancel,
    /// A redrive: `failed → queued` in a new generation with a fresh attempt budget and deadline.
    Reopen {
        /// Why, in words for people.
        note: String,
    },
    /// The sweeper re-sent the job's message; look again later.
    Resent,
}

impl Change {
    fn name(&self) -> &'static str {
        match self {
            Change::Start => "start",
            Change::Progress(_) => "progress",
            Change::Succeed => "succeed",
            Change::Release { .. } => "release",
            Change::Fail(_) => "fail",
            Change::Cancel => "cancel",
            Change::Reopen { .. } => "reopen",
            Change::Resent => "resend",
        }
    }
}

/// A change that the job's current state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {change} a {from} job")]
pub struct IllegalTransition {
    /// The state the job was in.
    pub from: JobState,
    /// The change refused.
    pub change: &'static str,
}

/// What [`Job::new`] needs.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The owner.
    pub owner: Owner,
    /// The kind.
    pub kind: Kind,
    /// The correlation id of the accepting request.
    pub correlation_id: CorrelationId,
    /// The client's Idempotency-Key, if any.
    pub idempotency_key: Option<IdempotencyKey>,
}

impl Job {
    /// A freshly accepted job: `queued`, revision 1, generation 0, no attempts.
    pub fn new(new: NewJob, clock: &dyn Clock, settings: &Settings) -> Self {
        let now = clock.now();
        let deadline = now.plus(settings.job_deadline);
        Self {
            schema: SCHEMA_VERSION,
            id: JobId::random(),
            owner: new.owner,
            kind: new.kind,
            state: JobState::Queued,
            revision: 1,
            generation: 0,
            attempts: 0,
            max_attempts: settings.max_attempts.max(1),
            submitted_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            running_until: None,
            deadline,
            sweep_at: Some(now.plus(settings.resend_after).min(deadline)),
            expires_at: None,
            progress: Progress::new(0, "Waiting in the queue"),
            error: None,
            has_result: false,
            correlation_id: new.correlation_id,
            idempotency_key: new.idempotency_key,
            history: vec![HistoryEntry {
                at: now,
                state: JobState::Queued,
                note: "Accepted".to_owned(),
            }],
        }
    }

    /// Whether the job failed because its message could not be queued after it was recorded
    /// ([`crate::Problem::enqueue_failed`]): it never ran, and a retry of the same submission
    /// reopens it rather than answering the failure.
    pub fn never_queued(&self) -> bool {
        self.state == JobState::Failed
            && self
                .error
                .as_ref()
                .is_some_and(crate::Problem::is_enqueue_failed)
    }

    /// Whether another delivery may take over this running job now.
    pub fn lease_expired(&self, now: Timestamp) -> bool {
        self.state == JobState::Running && self.running_until.is_none_or(|until| until <= now)
    }

    /// The next version of this job after `change` at `now`, or why the change is illegal.
    pub fn apply(
        &self,
        change: Change,
        now: Timestamp,
        settings: &Settings,
    ) -> Result<Job, IllegalTransition> {
        use JobState::*;
        let illegal = || IllegalTransition {
            from: self.state,
            change: change.name(),
        };
        let mut next = self.clone();
        next.revision = self.revision + 1;
        next.updated_at = now;
        let mut note: Option<String> = None;

        match (&change, self.state) {
            (Change::Start, Queued) => {}
            (Change::Start, Running) if self.lease_expired(now) => {}
            (Change::Start, _) => return Err(illegal()),
            (Change::Progress(_) | Change::Succeed | Change::Release { .. }, s) if s != Running => {
                return Err(illegal())
            }
            (Change::Fail(_) | Change::Resent, s) if s.is_terminal() => return Err(illegal()),
            (Change::Cancel, s) if s != Queued => return Err(illegal()),
            (Change::Reopen { .. }, s) if s != Failed => return Err(illegal()),
            _ => {}
        }

        match change {
            Change::Start => {
                next.state = Running;
                next.attempts = self.attempts + 1;
                next.started_at = Some(now);
                let until = now.plus(settings.lease());
                next.running_until = Some(until);
                next.sweep_at = Some(until.min(self.deadline));
                next.progress = Progress::new(self.progress.percent, "Working on it");
                note = Some(format!(
                    "Attempt {} of {} started",
                    next.attempts, self.max_attempts
                ));
            }
            Change::Progress(p) => next.progress = p,
            Change::Succeed => {
                next.state = Succeeded;
                next.progress = Progress::new(100, "Done");
                next.has_result = true;
                next.error = None;
                note = Some("Finished".to_owned());
            }
            Change::Release {
                retry_at,
                note: why,
            } => {
                next.state = Queued;
                next.running_until = None;
                next.sweep_at = Some(retry_at.plus(settings.resend_after).min(self.deadline));
                next.progress = Progress::new(self.progress.percent, why.clone());
                note = Some(why);
            }
            Change::Fail(problem) => {
                next.state = Failed;
                note = Some(problem.detail.clone());
                next.progress = Progress::new(self.progress.percent, problem.title.clone());
                next.error = Some(problem);
            }
            Change::Cancel => {
                next.state = Cancelled;
                next.progress = Progress::new(self.progress.percent, "Cancelled");
                note = Some("Cancelled by its owner".to_owned());
            }
            Change::Reopen { note: why } => {
                next.state = Queued;
                next.generation = self.generation + 1;
                next.attempts = 0;
                next.error = None;
                next.finished_at = None;
                next.expires_at = None;
                next.started_at = None;
                next.deadline = now.plus(settings.job_deadline);
                next.sweep_at = Some(now.plus(settings.resend_after).min(next.deadline));
                next.progress = Progress::new(0, "Waiting in the queue again");
                note = Some(why);
            }
            Change::Resent => {
                // The next look waits as long as the job has already waited in its state (at
                // least `resend_after`), so the interval doubles. A job queued for long behind a
                // backlog usually has its message waiting in line, not lost: re-sending at a fixed
                // period multiplied the queue under load (docs/BENCHMARKS.md). Doubling bounds the
                // duplicates to about log2(deadline / resend_after) per job; the deadline still
                // bounds the job.
                let since = self
                    .history
                    .last()
                    .map_or(self.submitted_at, |entry| entry.at);
                let waited = now.since(since).max(settings.resend_after);
                next.sweep_at = Some(now.plus(waited).min(self.deadline));
            }
        }

        if next.state.is_terminal() {
            next.finished_at = Some(now);
            next.running_until = None;
            next.sweep_at = None;
            next.expires_at = Some(now.plus(settings.retention));
        }
        if let Some(note) = note {
            next.history.push(HistoryEntry {
                at: now,
                state: next.state,
                note,
            });
            let excess = next
                .history
                .len()
                .saturating_sub(settings.history_cap.max(2));
            if excess > 0 {
                // Keep the first entry (acceptance) and the newest ones.
                next.history.drain(1..=excess);
            }
        }
        Ok(next)
    }

    /// The ETag of this version: changes whenever the job does.
    pub fn etag(&self) -> String {
        format!("\"{}-{}\"", self.id.as_uuid().simple(), self.revision)
    }
}

/// The body of a queue message: just enough to find the job. Small on purpose — the input stays
/// in the store, so a message never carries data that could go stale or exceed the queue's limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Schema version.
    pub v: u16,
    /// The job.
    pub job: JobId,
    /// Its owner.
    pub owner: Owner,
    /// The generation this message starts.
    pub generation: u32,
    /// The correlation id of the accepting request.
    pub correlation_id: CorrelationId,
}

/// Message attribute names, so that even an unreadable body can be traced to its job.
pub mod attributes {
    /// The job id.
    pub const JOB_ID: &str = "ackflow-job-id";
    /// The owner.
    pub const OWNER: &str = "ackflow-owner";
    /// The schema version.
    pub const SCHEMA: &str = "ackflow-schema";
    /// The correlation id.
    pub const CORRELATION_ID: &str = "ackflow-correlation-id";
    /// The X-Ray trace header of the request that sent it ([`crate::TraceHeader`]). The SQS
    /// adapter carries it as the message's `AWSTraceHeader` system attribute (so Lambda links
    /// the worker's trace), other queues as an ordinary attribute.
    pub const TRACE_HEADER: &str = "ackflow-trace-header";
}

impl Envelope {
    /// The message for `job`'s current generation.
    pub fn for_job(job: &Job) -> Self {
        Self {
            v: SCHEMA_VERSION,
            job: job.id,
            owner: job.owner.clone(),
            generation: job.generation,
            correlation_id: job.correlation_id.clone(),
        }
    }

    /// The message body.
    pub fn to_body(&self) -> String {
        // Serializing these plain fields cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The message attributes that travel beside the body.
    pub fn attributes(&self) -> Vec<(String, String)> {
        vec![
            (attributes::JOB_ID.to_owned(), self.job.to_string()),
            (attributes::OWNER.to_owned(), self.owner.to_string()),
            (attributes::SCHEMA.to_owned(), self.v.to_string()),
            (
                attributes::CORRELATION_ID.to_owned(),
                self.correlation_id.to_string(),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ManualClock, Problem};
    use std::time::Duration;

    fn fresh() -> (Job, Settings, ManualClock) {
        let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
        let settings = Settings::default();
        let job = Job::new(
            NewJob {
                owner: Owner::anonymous(),
                kind: Kind::parse("demo").expect("kind"),
                correlation_id: CorrelationId::random(),
                idempotency_key: None,
            },
            &clock,
            &settings,
        );
        (job, settings, clock)
    }

    #[test]
    fn a_new_job_is_queued_and_due_for_a_sweep_before_its_deadline() {
        let (job, s, clock) = fresh();
        assert_eq!(job.state, JobState::Queued);
        assert_eq!(job.revision, 1);
        assert_eq!(job.deadline, clock.now().plus(s.job_deadline));
        assert!(job.sweep_at.is_some_and(|t| t <= job.deadline));
    }

    #[test]
    fn start_counts_the_attempt_and_takes_a_lease() {
        let (job, s, clock) = fresh();
        let now = clock.now();
        let running = job.apply(Change::Start, now, &s).expect("legal");
        assert_eq!(running.state, JobState::Running);
        assert_eq!(running.attempts, 1);
        assert_eq!(running.revision, 2);
        assert_eq!(running.running_until, Some(now.plus(s.lease())));
        assert!(
            running.apply(Change::Start, now, &s).is_err(),
            "a held lease cannot be taken"
        );
        let later = now.plus(s.lease());
        let taken = running
            .apply(Change::Start, later, &s)
            .expect("an expired lease can be taken over");
        assert_eq!(taken.attempts, 2);
    }

    #[test]
    fn the_sweepers_resends_of_a_waiting_job_come_ever_further_apart() {
        let (job, s, _clock) = fresh();
        let mut job = job;
        let mut looks = Vec::new();
        while let Some(due) = job.sweep_at.filter(|due| *due < job.deadline) {
            looks.push(due.since(job.submitted_at).as_secs());
            job = job.apply(Change::Resent, due, &s).expect("resent");
        }
        let r = s.resend_after.as_secs();
        assert_eq!(&looks[..3], &[r, 2 * r, 4 * r], "{looks:?}");
        assert!(
            looks.len() as f64 <= 2.0 + (s.job_deadline.as_secs_f64() / r as f64).log2(),
            "{looks:?}"
        );
        assert_eq!(
            job.sweep_at,
            Some(job.deadline),
            "the deadline is the last look"
        );
    }

    #[test]
    fn terminal_jobs_refuse_every_change_but_a_redrive_of_a_failure() {
        let (job, s, clock) = fresh();
        let now = clock.now();
        let running = job.apply(Change::Start, now, &s).expect("start");
        let done = running.apply(Change::Succeed, now, &s).expect("succeed");
        assert_eq!(done.expires_at, Some(now.plus(s.retention)));
        assert_eq!(done.sweep_at, None);
        for change in [
            Change::Start,
            Change::Succeed,
            Change::Fail(Problem::internal()),
            Change::Cancel,
            Change::Resent,
            Change::Reopen {
                note: String::new(),
            },
            Change::Progress(Progress::new(5, "x")),
        ] {
            assert!(
                done.apply(change.clone(), now, &s).is_err(),
                "{change:?} moved a succeeded job"
            );
        }
        let failed = job
            .apply(Change::Fail(Problem::deadline_exceeded()), now, &s)
            .expect("fail");
        let reopened = failed
            .apply(
                Change::Reopen {
                    note: "Redriven".into(),
                },
                now,
                &s,
            )
            .expect("reopen");
        assert_eq!(
            (reopened.state, reopened.generation, reopened.attempts),
            (JobState::Queued, 1, 0)
        );
        assert_eq!(reopened.error, None);
    }

    #[test]
    fn only_a_job_failed_by_its_enqueue_counts_as_never_queued() {
        let (job, settings, clock) = fresh();
        assert!(!job.never_queued());
        let unqueued = job
            .apply(
                Change::Fail(Problem::enqueue_failed()),
                clock.now(),
                &settings,
            )
            .expect("legal");
        assert!(unqueued.never_queued());
        let timed_out = job
            .apply(
                Change::Fail(Problem::deadline_exceeded()),
                clock.now(),
                &settings,
            )
            .expect("legal");
        assert!(!timed_out.never_queued());
    }

    #[test]
    fn only_a_queued_job_can_be_cancelled() {
        let (job, s, clock) = fresh();
        let now = clock.now();
        assert_eq!(
            job.apply(Change::Cancel, now, &s).expect("cancel").state,
            JobState::Cancelled
        );
        let running = job.apply(Change::Start, now, &s).expect("start");
        assert!(running.apply(Change::Cancel, now, &s).is_err());
    }

    #[test]
    fn a_release_requeues_with_a_note_and_history_is_capped() {
        let (mut job, s, clock) = fresh();
        for i in 0..50 {
            clock.advance(Duration::from_secs(1));
            let now = clock.now();
            let running = job.apply(Change::Start, now, &s).expect("start");
            job = running
                .apply(
                    Change::Release {
                        retry_at: now,
                        note: format!("retry {i}"),
                    },
                    now,
                    &s,
                )
                .expect("release");
        }
        assert_eq!(job.state, JobState::Queued);
        assert_eq!(job.history.len(), s.history_cap);
        assert_eq!(job.history[0].note, "Accepted");
        assert_eq!(
            job.history.last().map(|h| h.note.as_str()),
            Some("retry 49")
        );
    }

    #[test]
    fn progress_messages_are_cut_on_a_character_boundary() {
        let p = Progress::new(150, "é".repeat(300));
        assert_eq!(p.percent, 100);
        assert!(p.message.len() <= Progress::MESSAGE_LIMIT);
    }
}
