//! `ackflow serve`: API, worker, sweeper (and status page) in one process on one SQLite file.

use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ackflow_core::{Processor, SystemClock};
use ackflow_http::{Anonymous, ApiState, BearerTokens, OwnerResolver};
use ackflow_processors::order::SqliteOrderBook;
use ackflow_processors::registry_with;
use ackflow_sqlite::SqliteBackend;
use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{parse_tokens, ServeArgs};
use crate::{listen, worker};

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

    /// Serves on `listener` until `shutdown` completes: [`Server::open`], then
    /// [`OpenServer::serve`].
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.open()?.serve(listener, shutdown).await
    }

    /// Everything before serving: the settings and tokens checked, the data directory and the
    /// database opened (created private) and migrated, the messages a stopped process left in
    /// flight released, the use cases built. A server announces itself only after this
    /// succeeded; every error names what it could not use and why.
    pub fn open(self) -> anyhow::Result<OpenServer> {
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
        private_dir(&args.data_dir)?;
        let lock = hold_data_dir(&args.data_dir)?;
        let db_path = args.data_dir.join(DB_FILE);
        private_db_files(&db_path)?;
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
        Ok(OpenServer {
            app,
            queue: backend.queue,
            owners,
            settings,
            concurrency: args.concurrency,
            demo: args.demo,
            db_path,
            _lock: lock,
        })
    }
}

/// A server whose database is open: [`OpenServer::serve`] takes requests.
pub struct OpenServer {
    app: Arc<ackflow_core::Ackflow>,
    queue: Arc<ackflow_sqlite::SqliteQueue>,
    owners: Arc<dyn OwnerResolver>,
    settings: ackflow_core::Settings,
    concurrency: usize,
    demo: bool,
    db_path: PathBuf,
    /// Held while the server lives ([`hold_data_dir`]).
    _lock: std::fs::File,
}

impl std::fmt::Debug for OpenServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenServer")
            .field("db_path", &self.db_path)
            .finish_non_exhaustive()
    }
}

impl OpenServer {
    /// Serves on `listener` until `shutdown` completes; then stops taking requests, lets the
    /// attempts in flight finish (up to the worker timeout) and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            app,
            queue,
            owners,
            settings,
            concurrency,
            demo,
            db_path,
            _lock,
        } = self;
        let stop = CancellationToken::new();
        let worker = tokio::spawn(worker::run(
            app.clone(),
            queue,
            concurrency,
            settings.worker_timeout + settings.lease_grace,
            stop.clone(),
        ));
        let sweeper = tokio::spawn(worker::sweep_periodically(
            app.clone(),
            settings.sweep_period,
            stop.clone(),
        ));

        let router = ackflow_http::router(ApiState { app, owners });
        info!(address = %listener.local_addr()?, data = %db_path.display(), kinds = ?demo, "ackflow serving");
        let signal = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            signal.cancel();
        });
        let limits = listen::Limits::for_open_files(listen::raise_open_files_limit());
        info!(
            max_connections = limits.max_connections,
            header_read_timeout_secs = listen::HEADER_READ_TIMEOUT.as_secs(),
            "connections"
        );
        let mut http = tokio::spawn(listen::serve(listener, router, limits, stop.clone()));
        tokio::select! {
            served = &mut http => served??,
            () = stop.cancelled() => {
                // Requests in flight (a long-poll included) get the drain period to finish; a
                // connection that still holds a request after it (a client that sent half a
                // header and went quiet) must not keep the process alive.
                let drain = settings.long_poll_cap + DRAIN_MARGIN;
                info!(drain_secs = drain.as_secs(), "stopping: no new connections; requests in flight may finish");
                match tokio::time::timeout(drain, &mut http).await {
                    Ok(served) => served??,
                    Err(_) => {
                        http.abort();
                        warn!(drain_secs = drain.as_secs(), "connections still open after the drain period are closed");
                    }
                }
            }
        }
        stop.cancel();
        worker.await?;
        sweeper.await?;
        info!("ackflow stopped");
        Ok(())
    }
}

/// How much longer than the longest long-poll requests in flight get to finish at a stop.
const DRAIN_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "ackflow.lock";

/// An exclusive lock on the data directory's lock file, holding this process's id, for as long
/// as the file is open (the kernel releases it when the process ends, however it ends). A
/// second `serve` on the same directory would take the first one's in-flight messages for a
/// crash's leftovers and deliver them again; it stops instead, naming the holder. The `dlq`
/// commands do not take it: they work beside a running server.
fn hold_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::io::{Read as _, Seek as _, Write as _};
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            anyhow::bail!(
                "{} is already served by {} (its lock is {}); stop that server first",
                dir.display(),
                if holder.is_empty() {
                    "another process".to_owned()
                } else {
                    format!("process {holder}")
                },
                path.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(file)
}

/// The data directory, created readable by its owner alone (0700) whatever the umask: the
/// database holds every owner's inputs, results and Idempotency-Keys. One that exists is left
/// as its owner made it, with a warning when other local users can read it.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        let mode = std::fs::metadata(dir)
            .with_context(|| format!("cannot read the data directory {}", dir.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            warn!(
                dir = %dir.display(),
                mode = format!("{:o}", mode & 0o777),
                "other local users can read the data directory, which holds every job's input and result; chmod 700 it"
            );
        }
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))
}

/// The database file created readable and writable by its owner alone (0600) whatever the
/// umask, or made so when it exists; SQLite gives its `-wal` and `-shm` files the database
/// file's permissions, and those that exist already are made so too.
fn private_db_files(db: &Path) -> anyhow::Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(db)
        .with_context(|| format!("cannot open {}", db.display()))?;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let path = PathBuf::from(name);
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot make {} private", path.display()))?;
        }
    }
    Ok(())
}
