//! The `ackflow` command: `serve`, the client commands `submit`, `status`, `watch`, `report`,
//! and the operator's `dlq list|redrive`.
//!
//! Client commands print for people by default (a progress bar on a terminal, plain lines when
//! stderr is not one, a summary or a table on stdout) and JSON on stdout with `--json`. Exit codes:
//! 0 done (and, when following a job, it succeeded); 1 the followed job failed or was cancelled;
//! 2 the command could not be carried out (usage, server unreachable, an error answer).

mod show;

use std::process::ExitCode;

use ackflow_http::view::ReportView;
use ackflow_local::client::{Client, Connection, Versioned};
use ackflow_local::config::ServeArgs;
use ackflow_local::Server;
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use serde_json::Value;
use show::Progress;

/// ackflow: acknowledge now, finish later.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API, the worker, the sweeper and the status page on one SQLite file.
    Serve(ServeArgs),
    /// Submit a job; with --wait, follow it to its end.
    Submit {
        /// The kind of job, such as `demo` or `order`.
        #[arg(long)]
        kind: String,
        /// The input, as JSON.
        #[arg(long, default_value = "{}")]
        input: String,
        /// Makes the submission safe to repeat.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Follow the job until it ends, showing its progress, and exit 1 unless it succeeded.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        connection: Connection,
    },
    /// Show a job as it is now.
    Status {
        /// The job's id.
        id: String,
        /// Follow the job until it ends (the same as `watch`).
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        connection: Connection,
    },
    /// Follow a job to its end with a live progress bar; exit 1 unless it succeeded.
    Watch {
        /// The job's id.
        id: String,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        connection: Connection,
    },
    /// Show the report of your jobs as a table: counts, latency, oldest open job, failures, queue.
    Report {
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        connection: Connection,
    },
    /// The dead-letter queue (an operator's command, on the data directory or, with `--aws`, on
    /// the AWS deployment): list it, or send its jobs back.
    #[command(subcommand)]
    Dlq(ackflow_local::dlq::DlqCommand),
}

/// How results are printed.
#[derive(Debug, Clone, Copy, clap::Args)]
struct Output {
    /// Print the answer as JSON on stdout (for scripts); progress still goes to stderr.
    #[arg(long)]
    json: bool,
}

/// Exit codes of the client commands, for scripts: the job ended but did not succeed is told apart
/// from "could not find out" (clap's usage errors are 2 as well).
const JOB_DID_NOT_SUCCEED: u8 = 1;
const COULD_NOT: u8 = 2;

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("ACKFLOW_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("ACKFLOW_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ackflow: {e:#}");
            ExitCode::from(COULD_NOT)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            args.check()?;
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))?;
            let server = Server::new(args).open()?;
            let shutdown = shutdown_signal()?;
            // The first line on stdout says where we listen, so that scripts and tests can start the
            // server on port 0 and find it; it comes once the database is open, so a server that
            // cannot start never announces itself.
            println!("ackflow listening on http://{}", listener.local_addr()?);
            server.serve(listener, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit {
            kind,
            input,
            idempotency_key,
            wait,
            output,
            connection,
        } => {
            let input: Value = serde_json::from_str(&input).context("--input is not valid JSON")?;
            let client = Client::new(&connection)?;
            let accepted = client
                .submit(&kind, input, idempotency_key.as_deref())
                .await?;
            if !wait {
                print_job(&accepted.job, output);
                return Ok(ExitCode::SUCCESS);
            }
            let id = accepted
                .job
                .get("id")
                .and_then(Value::as_str)
                .context("the server's answer has no job id")?
                .to_owned();
            follow(&client, &id, accepted, output).await
        }
        Command::Status {
            id,
            wait,
            output,
            connection,
        } => {
            let client = Client::new(&connection)?;
            let now = client.job(&id).await?;
            if wait {
                return follow(&client, &id, now, output).await;
            }
            print_job(&now.job, output);
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch {
            id,
            output,
            connection,
        } => {
            let client = Client::new(&connection)?;
            let now = client.job(&id).await?;
            follow(&client, &id, now, output).await
        }
        Command::Dlq(command) => ackflow_local::dlq::run(command).await,
        Command::Report { output, connection } => {
            let client = Client::new(&connection)?;
            let report = client.report().await?;
            if output.json {
                print_json(&report);
            } else {
                let report: ReportView = serde_json::from_value(report)
                    .context("the server's report is not one this client can read")?;
                print!("{}", show::report_table(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Follows a job from `start` to its end with live progress on stderr, then prints it; the exit
/// code says whether it succeeded.
async fn follow(
    client: &Client,
    id: &str,
    start: Versioned,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let mut progress = Progress::on_stderr();
    let followed = client.follow(id, start, |job| progress.update(job)).await;
    progress.finish();
    let job = followed?;
    print_job(&job, output);
    if output.json {
        // stdout carries the job for scripts; a person running it still reads why on stderr.
        if let Some(detail) = job.pointer("/error/detail").and_then(Value::as_str) {
            eprintln!("{detail}");
        }
    }
    let succeeded = job.get("state").and_then(Value::as_str) == Some("succeeded");
    Ok(if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(JOB_DID_NOT_SUCCEED)
    })
}

fn print_job(job: &Value, output: Output) {
    if output.json {
        print_json(job);
    } else {
        print!("{}", show::summary(job));
    }
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Completes on Ctrl-C or SIGTERM.
/// Listens for Ctrl-C (SIGINT) and SIGTERM from the moment it is called, so that a signal that
/// comes right after the server announced itself still stops it gracefully; the future ends at
/// the first one. A second one, while the server drains, stops the process at once.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            eprintln!("ackflow: a second signal; stopping at once");
            std::process::exit(EXIT_SECOND_SIGNAL);
        });
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// The exit status when a second signal cuts the drain short (128 + SIGINT, as shells report an
/// interrupted command).
#[cfg(unix)]
const EXIT_SECOND_SIGNAL: i32 = 130;
