//! The HTTP connections of `ackflow serve`: accepted, timed out and capped, so that clients
//! that send nothing, or a header byte at a time, cannot hold the server's file descriptors.
//!
//! - A client has [`HEADER_READ_TIMEOUT`] to send a request's head, and a kept-alive
//!   connection is closed after the same time without a new request.
//! - At most [`Limits::max_connections`] are open at once, below the process's limit of open
//!   files (raised to its hard limit at startup: [`raise_open_files_limit`]). Beyond it, a new
//!   connection is answered at once with a 503 problem and closed, and the clients already
//!   connected go on being served.
//! - At a stop, no connection is accepted any more, and each open one finishes the request it
//!   is serving and closes.

use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long a client may take to send a request's head, and how long a kept-alive connection
/// may wait for its next request.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// File descriptors kept for the database, its write-ahead log, the log output and whatever
/// else the process opens, beside the connections.
const RESERVED_FILES: u64 = 64;

/// The most connections open at once when the file limit allows more.
const MAX_CONNECTIONS: u64 = 10_000;

/// What the connections may use.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
}

impl Limits {
    /// The limits for a process that may have `open_files` file descriptors open.
    pub fn for_open_files(open_files: u64) -> Self {
        let max = open_files
            .saturating_sub(RESERVED_FILES)
            .clamp(1, MAX_CONNECTIONS);
        Self {
            max_connections: usize::try_from(max).unwrap_or(1),
        }
    }
}

/// Raises the soft limit of open files to the hard limit, logs both, and returns the limit the
/// process now has (a service manager's default of 1,024 is soon reached by idle clients).
pub fn raise_open_files_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let (Some(soft), hard) = (limit.current, limit.maximum) else {
        info!("no limit of open files");
        return MAX_CONNECTIONS + RESERVED_FILES;
    };
    match hard {
        Some(hard) if soft < hard => {
            let raised = Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => {
                    info!(
                        soft_was = soft,
                        soft = hard,
                        hard,
                        "raised the limit of open files to its hard limit"
                    );
                    hard
                }
                Err(e) => {
                    warn!(soft, hard, error = %e, "the limit of open files could not be raised");
                    soft
                }
            }
        }
        None => {
            let raised = Rlimit {
                current: None,
                maximum: None,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => {
                    info!(soft_was = soft, "raised the limit of open files: none now");
                    MAX_CONNECTIONS + RESERVED_FILES
                }
                Err(e) => {
                    warn!(soft, error = %e, "the limit of open files could not be raised");
                    soft
                }
            }
        }
        Some(hard) => {
            info!(soft, hard, "the limit of open files");
            soft
        }
    }
}

/// Serves `router` on `listener` within `limits` until `stop`; then accepts no more, lets each
/// open connection finish its request, and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let permits = std::sync::Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let mut refused_since_log = 0u64;
    let mut last_log = tokio::time::Instant::now();
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors (or a connection reset before it was accepted):
                    // wait a moment rather than spin, and say so once a second at most.
                    if last_log.elapsed() >= Duration::from_secs(1) {
                        warn!(error = %e, "cannot accept a connection");
                        last_log = tokio::time::Instant::now();
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(&stream);
            refused_since_log += 1;
            if last_log.elapsed() >= Duration::from_secs(1) {
                warn!(
                    refused = refused_since_log,
                    max_connections = limits.max_connections,
                    "connections refused: as many are open as the server takes"
                );
                refused_since_log = 0;
                last_log = tokio::time::Instant::now();
            }
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(true);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Answers a connection the server has no room for, without waiting on it: a 503 problem with
/// `Retry-After`, written if the socket takes it at once, then closed.
fn refuse(stream: &tokio::net::TcpStream) {
    // A Problem is plain strings and numbers: serializing it cannot fail.
    let body =
        serde_json::to_string(&ackflow_core::Problem::too_many_connections()).unwrap_or_default();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         retry-after: 5\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}
