//! `ackflow dlq list|redrive`: the operator's view of the dead-letter queue, and the way back.
//!
//! On the single machine it opens the SQLite file of `ackflow serve` (the same `--data-dir`),
//! which may be serving at the same time: a running worker polls the queue table at least once a
//! second, so it picks up what the redrive sends within a second. With `--aws` (the cargo
//! feature `aws`) it reads the environment the functions read (`ACKFLOW_QUEUE_URL`,
//! `ACKFLOW_DLQ_URL`, `ACKFLOW_TABLE`, `AWS_*`) and works on SQS and DynamoDB.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use ackflow_core::{
    Ackflow, DeadLetterView, RedriveAction, RedriveReport, Registry, Settings, SystemClock,
};
use ackflow_sqlite::{Durability, SqliteBackend};
use anyhow::Context as _;

use crate::serve::DB_FILE;

/// `ackflow dlq`.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Show the messages in the dead-letter queue with their jobs' state, without changing anything.
    List {
        /// At most this many messages.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        target: Target,
    },
    /// Send dead-lettered jobs back to the queue: failed jobs are reopened in a new generation
    /// (a note in their history), open ones sent again, copies of finished jobs deleted;
    /// unreadable messages stay. Safe to repeat. Exits with 1 when a message was left behind.
    Redrive {
        /// At most this many messages.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        target: Target,
    },
}

/// How to print.
#[derive(Debug, Clone, clap::Args)]
pub struct Output {
    /// Print JSON (for scripts) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Which runtime's queue.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Directory of the SQLite database of `ackflow serve`.
    #[arg(long, env = "ACKFLOW_DATA_DIR", default_value = "./ackflow-data")]
    pub data_dir: PathBuf,
    /// `normal` or `full`, as for `ackflow serve`.
    #[arg(long, env = "ACKFLOW_DURABILITY", default_value = "normal")]
    pub durability: Durability,
    /// Work on the AWS deployment named by ACKFLOW_QUEUE_URL, ACKFLOW_DLQ_URL and ACKFLOW_TABLE
    /// (and the SDK's AWS_* variables) instead of the SQLite file.
    #[cfg(feature = "aws")]
    #[arg(long)]
    pub aws: bool,
}

/// Runs `ackflow dlq ...`.
pub async fn run(command: DlqCommand) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List {
            limit,
            output,
            target,
        } => {
            let app = open(&target).await?;
            let letters = app
                .list_dead_letters(limit)
                .await
                .context("cannot read the dead-letter queue")?;
            if output.json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
            } else {
                print!("{}", letters_table(&letters));
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Redrive {
            limit,
            output,
            target,
        } => {
            let app = open(&target).await?;
            let report = app
                .redrive_dead_letters(limit)
                .await
                .context("cannot read the dead-letter queue")?;
            if output.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report_text(&report));
            }
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// The use cases on the target's store and queue. No processor is registered: the redrive
/// never runs a job, the worker does.
async fn open(target: &Target) -> anyhow::Result<Ackflow> {
    #[cfg(feature = "aws")]
    if target.aws {
        return open_aws().await;
    }
    open_sqlite(target)
}

fn open_sqlite(target: &Target) -> anyhow::Result<Ackflow> {
    let settings = Settings::from_lookup(Settings::default(), |name| std::env::var(name).ok())?;
    let path = target.data_dir.join(DB_FILE);
    // Opening creates a missing file: an operator who mistyped the directory would see an
    // empty queue instead of an error.
    anyhow::ensure!(
        path.exists(),
        "no ackflow database at {} (use the --data-dir of `ackflow serve`)",
        path.display()
    );
    let clock = Arc::new(SystemClock);
    // The same queue, with the same receive limit, as `ackflow serve`.
    let backend = SqliteBackend::open(&path, target.durability, &settings, clock.clone())
        .with_context(|| format!("cannot open {}", path.display()))?;
    Ok(backend.ackflow(Registry::new(), clock, settings))
}

#[cfg(feature = "aws")]
async fn open_aws() -> anyhow::Result<Ackflow> {
    use ackflow_aws::{AwsBackend, AwsConfig, Clients};
    let backend = AwsBackend::new(AwsConfig::from_env()?, &Clients::from_env().await);
    Ok(backend.ackflow(Registry::new(), Arc::new(SystemClock)))
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The listing as a table, one dead letter a line.
pub fn letters_table(letters: &[DeadLetterView]) -> String {
    if letters.is_empty() {
        return "The dead-letter queue is empty.\n".to_owned();
    }
    let mut out = format!(
        "{:<36}  {:<10}  {:<9}  {:>3}  {:>8}  {:<24}  WHY\n",
        "JOB", "KIND", "STATE", "GEN", "RECEIVES", "DEAD-LETTERED AT"
    );
    for l in letters {
        let why = l
            .unreadable
            .clone()
            .or_else(|| l.why.clone())
            .unwrap_or_else(|| "-".to_owned());
        let generation = match (l.generation, l.job_generation) {
            (Some(m), Some(j)) if m != j => format!("{m}/{j}"),
            (m, _) => or_dash(m),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{:<36}  {:<10}  {:<9}  {:>3}  {:>8}  {:<24}  {why}",
            l.job_id.map_or_else(
                || format!("? message {}", l.message_id),
                |id| id.to_string()
            ),
            or_dash(l.kind.as_ref().map(|k| k.as_str())),
            or_dash(l.state.map(|s| s.as_str())),
            generation,
            l.receive_count,
            or_dash(l.dead_lettered_at.map(|t| t.to_rfc3339())),
        );
    }
    let _ = writeln!(out, "{} dead letter(s).", letters.len());
    out
}

/// The redrive's report: one line a message, then the counts.
pub fn report_text(report: &RedriveReport) -> String {
    let mut out = String::new();
    for m in &report.messages {
        let job = or_dash(m.job_id);
        let line = match &m.action {
            RedriveAction::Reopened { generation } => {
                format!("reopened   {job}  (generation {generation})")
            }
            RedriveAction::Resent => format!("resent     {job}"),
            RedriveAction::Discarded { reason } => format!("discarded  {job}  ({reason})"),
            RedriveAction::LeftUnreadable { reason } => format!(
                "LEFT       message {}  (unreadable: {reason})",
                m.message_id
            ),
            RedriveAction::LeftAfterError { error } => {
                format!("LEFT       {job}  (error: {error}; run the redrive again)")
            }
        };
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "Reopened {}, resent {}, discarded {}, left unreadable {}, left after an error {}.",
        report.reopened, report.resent, report.discarded, report.unreadable, report.errors
    );
    if let Some(why) = &report.stopped {
        let _ = writeln!(out, "Stopped early: {why}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ackflow_core::{JobId, JobState, Kind, Owner, Redriven, Timestamp};

    fn letter(job: Option<JobId>) -> DeadLetterView {
        DeadLetterView {
            message_id: "m-1".to_owned(),
            job_id: job,
            owner: job.map(|_| Owner::anonymous()),
            generation: job.map(|_| 0),
            kind: job.map(|_| Kind::parse("demo").expect("kind")),
            state: job.map(|_| JobState::Failed),
            job_generation: job.map(|_| 1),
            why: job.map(|_| "Too late: the job ran out of time".to_owned()),
            unreadable: job
                .is_none()
                .then(|| "not an ackflow message: x".to_owned()),
            receive_count: 4,
            dead_lettered_at: Some(Timestamp::from_millis(1_772_323_200_000)),
        }
    }

    #[test]
    fn the_listing_has_a_line_per_dead_letter_and_names_the_message_of_an_unreadable_one() {
        let id = JobId::random();
        let table = letters_table(&[letter(Some(id)), letter(None)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("JOB"), "{table}");
        assert!(lines[1].starts_with(&id.to_string()), "{table}");
        assert!(
            lines[1].contains("demo") && lines[1].contains("failed"),
            "{table}"
        );
        // The copy's generation and the job's differ: both are shown.
        assert!(lines[1].contains("0/1"), "{table}");
        assert!(lines[1].contains("2026-03-01T00:00:00"), "{table}");
        assert!(lines[2].starts_with("? message m-1"), "{table}");
        assert!(lines[2].ends_with("not an ackflow message: x"), "{table}");
        assert_eq!(lines[3], "2 dead letter(s).");
        assert_eq!(letters_table(&[]), "The dead-letter queue is empty.\n");
    }

    #[test]
    fn the_redrive_report_has_a_line_per_message_and_the_counts() {
        let id = JobId::random();
        let mut report = RedriveReport {
            reopened: 1,
            unreadable: 1,
            ..RedriveReport::default()
        };
        report.messages = vec![
            Redriven {
                message_id: "m-1".to_owned(),
                job_id: Some(id),
                action: RedriveAction::Reopened { generation: 2 },
            },
            Redriven {
                message_id: "m-2".to_owned(),
                job_id: None,
                action: RedriveAction::LeftUnreadable {
                    reason: "not an ackflow message".to_owned(),
                },
            },
        ];
        let text = report_text(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("reopened   {id}  (generation 2)"));
        assert!(lines[1].starts_with("LEFT       message m-2"), "{text}");
        assert_eq!(
            lines[2],
            "Reopened 1, resent 0, discarded 0, left unreadable 1, left after an error 0."
        );
    }
}
