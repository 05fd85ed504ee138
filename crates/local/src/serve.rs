//! `ackflow serve`: API, worker, sweeper (and status page) in one process on one SQLite file.

use std::future::Future;
use std::sync::Arc;

use ackflow_core::{Processor, SystemClock};
use ackflow_http::{Anonymous, ApiState, BearerTokens, OwnerResolver};
use ackflow_processors::order::SqliteOrderBook;
use ackflow_processors::registry_with;
use ackflow_sqlite::SqliteBackend;
use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{parse_tokens, ServeArgs};
use crate::worker;

/// The name of the SQLite file inside the data directory.
pub const DB_FILE: &str = "ackflow.db";

/// A configured server: `ackflow serve` as a library, so that tests start it on port 0 and stop
/// it cleanly, and so that users serve their own processors without forking.
#[derive(Debug)]
pub struct Server {
    args: ServeArgs,
    extra: Vec<Arc<dyn Processor>>,
}

impl Server {
    /// A server with the shipped processors.
    pub fn new(args: ServeArgs) -> Self {
        Self {
            args,
            extra: Vec::new(),
        }
    }

    /// Adds (or replaces, by kind) a processor.
    pub fn with_processor(mut self, processor: impl Processor) -> Self {
        self.extra.push(Arc::new(processor));
        self
    }

    /// Serves on `listener` until `shutdown` completes; then stops taking requests, lets the
    /// attempts in flight finish (up to the worker timeout) and returns.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self { args, extra } = self;
        let settings = args.settings()?;
        let owners: Arc<dyn OwnerResolver> = {
            let tokens = parse_tokens(&args.tokens)?;
            if tokens.is_empty() {
                Arc::new(Anonymous)
            } else {
                Arc::new(BearerTokens::new(tokens))
            }
        };
        std::fs::create_dir_all(&args.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                args.data_dir.display()
            )
        })?;
        let db_path = args.data_dir.join(DB_FILE);
        let clock = Arc::new(SystemClock);
        let backend = SqliteBackend::open(&db_path, args.durability, &settings, clock.clone())
            .with_context(|| format!("cannot open {}", db_path.display()))?;
        // This process is the queue's only consumer: whatever was in flight belonged to a process that
        // is gone (a crash or kill -9), so it can be delivered again now rather than after its timeout.
        let released = backend.queue.release_in_flight()?;
        if released > 0 {
            info!(
                released,
                "messages in flight at the last stop are visible again"
            );
        }
        let book = Arc::new(SqliteOrderBook::new(backend.db.clone())?);
        let mut registry = registry_with(book, clock.clone(), args.demo);
        for processor in extra {
            registry.register(processor);
        }
        let app = Arc::new(backend.ackflow(registry, clock, settings.clone()));

        let stop = CancellationToken::new();
        let worker = tokio::spawn(worker::run(
            app.clone(),
            backend.queue.clone(),
            args.concurrency,
            settings.worker_timeout + settings.lease_grace,
            stop.clone(),
        ));
        let sweeper = tokio::spawn(worker::sweep_periodically(
            app.clone(),
            settings.sweep_period,
            stop.clone(),
        ));

        let router = ackflow_http::router(ApiState { app, owners });
        info!(address = %listener.local_addr()?, data = %db_path.display(), kinds = ?args.demo, "ackflow serving");
        let signal = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            signal.cancel();
        });
        let http_stop = stop.clone();
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { http_stop.cancelled().await })
            .await?;
        stop.cancel();
        worker.await?;
        sweeper.await?;
        info!("ackflow stopped");
        Ok(())
    }
}
