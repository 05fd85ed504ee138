//! # ackflow-http
//!
//! ackflow's HTTP API as one axum [`Router`]: the same value runs under `ackflow serve` (TCP)
//! and inside AWS Lambda (`lambda_http::run(router)`), so nothing here knows about sockets,
//! connection info or process-wide state. Every 4xx and 5xx answer is an RFC 9457 problem
//! (`application/problem+json`), including unknown routes, wrong methods and unreadable
//! requests; internals only reach the logs.
//!
//! # Layout
//!
//! - [`router`] and [`ApiState`]: the routes and what they share.
//! - [`auth`]: who is asking — the [`OwnerResolver`] port, [`Anonymous`], [`BearerTokens`].
//! - `jobs`, `report`, `page`: the handlers (small: parse, call one use case, answer).
//! - [`extract`]: extractors and request parsing, whose rejections are all problems.
//! - [`error`]: [`ApiError`], the one error type of the handlers.
//! - `middleware`: correlation id, request span and log line, panics → 500.
//! - [`view`]: the wire types (also read by the CLI).
//! - `doc`: the OpenAPI 3.1 document generated from the handlers' annotations ([`openapi`]).
//!
//! # Decisions
//!
//! - `POST /v1/jobs`: `input` may be left out and then means `{}`; top-level fields other than
//!   `kind` and `input` are a 422 (a typo is reported, not dropped). An idempotent replay answers
//!   like the first request (202, same job) plus `Idempotent-Replayed: true`.
//! - `GET /v1/jobs/{id}?wait=N`: `N` above the long-poll cap is shortened to the cap, not
//!   refused. Only a single `If-None-Match` tag is waited on; a list or `*` is answered at once
//!   (still 304 when it matches). Job answers are `Cache-Control: private, no-cache`.
//! - A malformed job id is answered like an unknown one (404).
//! - Query parameters: unknown ones are ignored, empty ones count as absent, repeated ones are a 400.

pub mod auth;
mod doc;
pub mod error;
pub mod extract;
mod jobs;
mod middleware;
mod page;
mod report;
pub mod view;

use std::sync::Arc;

use ackflow_core::Ackflow;
use axum::routing::{get, MethodRouter};
use axum::Router;

pub use auth::{Anonymous, BearerTokens, OwnerResolver};
pub use doc::openapi;
pub use error::ApiError;
pub use jobs::IDEMPOTENT_REPLAYED;

/// What every handler shares: the use cases and the way owners are found.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The use cases over the runtime's store and queue.
    pub app: Arc<Ackflow>,
    /// Who is asking.
    pub owners: Arc<dyn OwnerResolver>,
}

impl ApiState {
    /// The state of a router over `app`, with owners found by `owners`.
    pub fn new(app: Arc<Ackflow>, owners: Arc<dyn OwnerResolver>) -> Self {
        Self { app, owners }
    }
}

/// The whole API: `/v1/jobs`, `/v1/jobs/{id}`, `/v1/report`, `/` and `/openapi.json`, with
/// problem+json fallbacks for unknown routes (404) and methods (405).
pub fn router(state: ApiState) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| {
            router.route(path, methods)
        })
        .fallback(page::not_found)
        .method_not_allowed_fallback(page::method_not_allowed)
        .layer(axum::middleware::from_fn(middleware::correlate))
        .with_state(state)
}

/// Every path the router serves, as its routes spell them (`{id}` for a path parameter). The
/// OpenAPI tests hold the document to exactly these.
pub fn routed_paths() -> Vec<&'static str> {
    routes().into_iter().map(|(path, _)| path).collect()
}

/// The routes, in one table so that [`router`] and [`routed_paths`] cannot disagree.
fn routes() -> Vec<(&'static str, MethodRouter<ApiState>)> {
    vec![
        ("/", get(page::index)),
        ("/assets/{file}", get(page::asset)),
        ("/openapi.json", get(page::openapi_json)),
        ("/v1/jobs", get(jobs::list_jobs).post(jobs::submit)),
        ("/v1/jobs/{id}", get(jobs::get_job).delete(jobs::cancel_job)),
        ("/v1/report", get(report::report)),
    ]
}
