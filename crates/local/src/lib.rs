//! # ackflow-local
//!
//! ackflow on one machine: `ackflow serve` runs the HTTP API, the worker, the sweeper and the
//! status page in one process, on one SQLite file. It is a real runtime: a 202 means the job is
//! committed to SQLite, and a `kill -9` at any point loses no accepted job.
//!
//! # Layout
//!
//! - [`config`]: flags and `ACKFLOW_*` variables, read once into typed values.
//! - [`serve`]: [`Server::run`] — wires store, queue, processors, worker, sweeper and Router; stops
//!   cleanly when its shutdown future completes (tests start it on port 0).
//! - [`worker`]: the bounded-concurrency worker loop and the periodic sweeper.
//! - [`dlq`]: `ackflow dlq list|redrive` on the SQLite file, or on AWS with the `aws` feature.
//! - [`client`]: the CLI's HTTP client (`ackflow submit`, `ackflow status`).
//!
//! Serving your own processors without forking:
//!
//! ```no_run
//! # async fn example(args: ackflow_local::config::ServeArgs) -> anyhow::Result<()> {
//! # #[derive(Debug)] struct MyProcessor;
//! # #[ackflow_core::async_trait] impl ackflow_core::Processor for MyProcessor {
//! #   fn kind(&self) -> ackflow_core::Kind { ackflow_core::Kind::parse("mine").unwrap() }
//! #   fn validate(&self, _: &serde_json::Value) -> Result<(), Vec<ackflow_core::FieldError>> { Ok(()) }
//! #   async fn process(&self, _: serde_json::Value, _: &ackflow_core::JobContext) -> Result<serde_json::Value, ackflow_core::ProcessError> { Ok(serde_json::Value::Null) }
//! # }
//! let listener = tokio::net::TcpListener::bind(args.listen).await?;
//! ackflow_local::Server::new(args)
//!     .with_processor(MyProcessor)
//!     .run(listener, async { let _ = tokio::signal::ctrl_c().await; })
//!     .await
//! # }
//! ```

pub mod client;
pub mod config;
pub mod dlq;
pub mod listen;
pub mod serve;
pub mod worker;

pub use serve::{OpenServer, Server};
