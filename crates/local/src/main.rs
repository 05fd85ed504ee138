//! The `ackflow` command: `serve`, `submit`, `status`.

use std::process::ExitCode;

use ackflow_local::client::{is_terminal, Client, Connection};
use ackflow_local::config::ServeArgs;
use ackflow_local::Server;
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use serde_json::Value;

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
    /// Submit a job and print it (as JSON).
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
        /// Follow the job until it ends and print its final state.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// Print a job (as JSON).
    Status {
        /// The job's id.
        id: String,
        /// Follow the job until it ends.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        connection: Connection,
    },
}

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
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))?;
            // The first line on stdout says where we listen, so that scripts and tests can start the
            // server on port 0 and find it.
            println!("ackflow listening on http://{}", listener.local_addr()?);
            Server::new(args).run(listener, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit {
            kind,
            input,
            idempotency_key,
            wait,
            connection,
        } => {
            let input: Value = serde_json::from_str(&input).context("--input is not valid JSON")?;
            let client = Client::new(&connection)?;
            let job = client
                .submit(&kind, input, idempotency_key.as_deref())
                .await?;
            if !wait {
                print_json(&job);
                return Ok(ExitCode::SUCCESS);
            }
            let id = job
                .get("id")
                .and_then(Value::as_str)
                .context("the answer has no job id")?
                .to_owned();
            finish(&client, &id).await
        }
        Command::Status {
            id,
            wait,
            connection,
        } => {
            let client = Client::new(&connection)?;
            if wait {
                return finish(&client, &id).await;
            }
            print_json(&client.status(&id, None, None).await?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Follows a job to its end, printing progress to stderr and the final job to stdout; the exit
/// code says whether it succeeded.
async fn finish(client: &Client, id: &str) -> anyhow::Result<ExitCode> {
    let job = client
        .wait_until_terminal(id, |job| {
            if !is_terminal(job) {
                let percent = job
                    .pointer("/progress/percent")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let message = job
                    .pointer("/progress/message")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                eprintln!("{percent:>3}% {message}");
            }
        })
        .await?;
    print_json(&job);
    if let Some(detail) = job.pointer("/error/detail").and_then(Value::as_str) {
        eprintln!("{detail}");
    }
    let succeeded = job.get("state").and_then(Value::as_str) == Some("succeeded");
    Ok(if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
