//! # ackflow-aws
//!
//! ackflow's adapters for AWS: the [`ackflow_core::Queue`] on SQS, the [`ackflow_core::JobStore`]
//! on one DynamoDB table (which the `order` example's book, in `ackflow-processors`, shares), and
//! the configuration a function reads from its environment. No Lambda code lives here
//! (`ackflow-lambda` has it), so these adapters run anywhere the AWS SDK runs.
//!
//! # Layout
//!
//! - [`AwsBackend`]: the one way to open ackflow on a deployment — the store and the queue that
//!   an [`AwsConfig`] names, on [`Clients`], and the [`ackflow_core::Ackflow`] use cases over them.
//! - [`AwsConfig`], [`Clients`]: what a function reads from its environment (queue URLs, table,
//!   the knobs) and the SDK clients, built once per process from one `SdkConfig`.
//! - [`SqsQueue`]: the queue and its dead-letter queue.
//! - [`dynamo`]: the single-table design — **the table of item types, keys and indexes is at
//!   the top of that module**; `template.yaml` declares the same — with [`DynamoJobStore`] and
//!   the item helpers ([`dynamo::transact`], [`dynamo::get_item`], …) that other data in the
//!   table is written with.
//! - [`schema`]: creates the table (keys, indexes, TTL) and the queue pair (redrive policy) for
//!   tests and scripts, from the same constants.
//!
//! Errors: every SDK error is classified once ([`classify`]): a request that may have reached
//! the service without an answer coming back (a timeout, a connection cut after the request was
//! written) becomes [`ackflow_core::PortError::Ambiguous`]; throttling, 5xx answers and
//! connections never made become [`ackflow_core::PortError::Unavailable`] (the use cases answer
//! 503 or retry); everything else [`ackflow_core::PortError::Failed`]. The SDK error is
//! kept as the source, for the logs.
//!
//! Every adapter passes the behaviour suites of `ackflow-testkit` against moto server
//! (`tests/moto.rs`).
//!
//! # Dependencies
//!
//! The SDK crates are used without their default features: one HTTPS client
//! ([`https_client`]: hyper 1 + rustls with the *ring* provider), no legacy hyper 0.14 / rustls
//! 0.21 stack and no aws-lc, so the functions cross-compile for arm64 with zig alone.

mod backend;
mod config;
pub mod dynamo;
mod error;
pub mod schema;
mod sqs;

pub use backend::AwsBackend;
pub use config::{
    env, https_client, timeouts, AwsConfig, BudgetError, Clients, ConfigError, SdkBudget,
    ANSWER_MARGIN, MIN_OPERATION,
};
pub use dynamo::DynamoJobStore;
pub use error::{classify, unexpected, Unexpected};
pub use sqs::SqsQueue;
