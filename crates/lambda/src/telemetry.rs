//! What a function tells CloudWatch and X-Ray.
//!
//! - **Logs**: JSON lines on stdout, which Lambda sends to CloudWatch Logs, filtered by
//!   `ACKFLOW_LOG` (an `EnvFilter` directive such as `info` or `ackflow_core=debug`, default
//!   `info`). No ANSI colours and no timestamps of our own: CloudWatch stamps every line. Each
//!   line carries the fields of its spans: the API's `request` span (correlation id, trace
//!   header) and the worker's `job` span (job id, correlation id, kind, attempt, trace header),
//!   both opened by code shared with `ackflow serve`. The job events themselves (accepted,
//!   succeeded, failed, retried, …) are logged by [`ackflow_core::telemetry`].
//! - **Metrics**: the core records them through the `metrics` facade
//!   ([`ackflow_core::telemetry::metric`]); [`init_metrics`] installs a CloudWatch Embedded
//!   Metric Format recorder (`metrics_cloudwatch_embedded`) in namespace
//!   `ACKFLOW_METRICS_NAMESPACE` (default `ackflow`), and every invocation ends with
//!   [`flush_metrics`] ([`flushing`] for event handlers, [`instrument_router`] for the HTTP
//!   functions): Lambda may freeze the sandbox right after the response, so nothing is left
//!   waiting in memory. CloudWatch turns the EMF lines of the log into metrics; no API call,
//!   no extra permission.
//! - **X-Ray**: with `Tracing: Active`, Lambda hands each invocation its trace header
//!   ([`lambda_runtime::Context::xray_trace_id`]). [`instrument_router`] puts it on the request
//!   as `X-Amzn-Trace-Id` (replacing API Gateway's, which belongs to no traced segment), the
//!   shared middleware reads it, the core sends it with the job's message, and the SQS adapter
//!   sets it as the message's `AWSTraceHeader` system attribute — from which Lambda's SQS event
//!   source links the worker's invocation to the API's trace. The worker logs it in its `job`
//!   span.

use std::future::Future;
use std::io::Write as _;
use std::sync::OnceLock;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;
use lambda_http::RequestExt as _;
use metrics_cloudwatch_embedded::Collector;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The variable of the log filter.
pub const LOG_FILTER: &str = "ACKFLOW_LOG";
/// The variable of the metrics namespace ([`MetricsConfig`]).
pub const METRICS_NAMESPACE: &str = "ACKFLOW_METRICS_NAMESPACE";
/// The namespace when [`METRICS_NAMESPACE`] is unset or empty.
pub const DEFAULT_METRICS_NAMESPACE: &str = "ackflow";

/// Installs the JSON log subscriber ([`json_logs`] on stdout). Call once, first thing in
/// `main`; a second call does nothing (the first subscriber stays).
pub fn init_logs() {
    let filter = EnvFilter::try_from_env(LOG_FILTER).unwrap_or_else(|_| EnvFilter::new("info"));
    let _already_set = tracing::subscriber::set_global_default(json_logs(filter, std::io::stdout));
}

/// The functions' log format, writing to `writer` (tests capture it): one JSON object per
/// line, with the fields of every span it is in (`spans`, innermost last). The current span is
/// not written a second time on its own: CloudWatch bills the logs by the byte, and that copy
/// made a line about a third longer.
pub fn json_logs<W>(filter: EnvFilter, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .without_time()
        .with_current_span(false)
        .with_span_list(true)
        .finish()
}

/// Where the metrics go, read once at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// The CloudWatch namespace ([`METRICS_NAMESPACE`]).
    pub namespace: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_METRICS_NAMESPACE.to_owned(),
        }
    }
}

/// A metrics setting that cannot work; the message names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{METRICS_NAMESPACE} must be 1 to 255 characters (letters, digits, space, . - _ / # :) and not start with AWS/, not {0:?}")]
pub struct InvalidNamespace(pub String);

impl MetricsConfig {
    /// Reads [`METRICS_NAMESPACE`] through `lookup`, checked against CloudWatch's rules for a
    /// namespace so that a typo fails at startup rather than losing every metric.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, InvalidNamespace> {
        let namespace = match lookup(METRICS_NAMESPACE).map(|v| v.trim().to_owned()) {
            None => return Ok(Self::default()),
            Some(v) if v.is_empty() => return Ok(Self::default()),
            Some(v) => v,
        };
        let allowed = |c: char| c.is_ascii_alphanumeric() || " .-_/#:".contains(c);
        if namespace.len() > 255 || !namespace.chars().all(allowed) || namespace.starts_with("AWS/")
        {
            return Err(InvalidNamespace(namespace));
        }
        Ok(Self { namespace })
    }
}

/// Why the metrics recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("could not install the CloudWatch metrics recorder: {0}")]
pub struct MetricsInitError(String);

static COLLECTOR: OnceLock<&'static Collector> = OnceLock::new();

/// Installs the CloudWatch EMF recorder as the process's `metrics` recorder and registers
/// ackflow's metric units ([`ackflow_core::telemetry::describe_metrics`]). Call once per process,
/// before the first job event; a second call fails (the first recorder stays).
pub fn init_metrics(config: &MetricsConfig) -> Result<(), MetricsInitError> {
    if COLLECTOR.get().is_some() {
        return Err(MetricsInitError("already installed".to_owned()));
    }
    let collector = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(config.namespace.clone())
        .init()
        .map_err(|e| MetricsInitError(e.to_string()))?;
    let _first = COLLECTOR.set(collector);
    ackflow_core::telemetry::describe_metrics();
    Ok(())
}

/// Writes the metrics recorded since the last flush as EMF lines to stdout (nothing when no
/// recorder is installed or nothing was recorded). A failure is logged, never raised: losing a
/// data point must not fail the invocation.
pub fn flush_metrics() {
    let mut lines = Vec::new();
    if let Err(e) = flush_metrics_to(&mut lines) {
        tracing::warn!(error = %e, "could not write the metrics");
        return;
    }
    if lines.is_empty() {
        return;
    }
    // One write of whole lines, so no log line of another task lands inside a document.
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(&lines).and_then(|()| stdout.flush()) {
        tracing::warn!(error = %e, "could not write the metrics");
    }
}

/// Writes the metrics recorded since the last flush as EMF lines to `writer`.
pub fn flush_metrics_to(writer: &mut impl std::io::Write) -> std::io::Result<()> {
    match COLLECTOR.get() {
        Some(collector) => collector.flush(writer),
        None => Ok(()),
    }
}

/// Runs `work` (one invocation) and then [`flush_metrics`].
pub async fn flushing<F: Future>(work: F) -> F::Output {
    let output = work.await;
    flush_metrics();
    output
}

/// The HTTP functions' Router, made ready for Lambda: each request adopts the invocation's
/// X-Ray trace header (see the module's docs), and the metrics are flushed once the response
/// is ready, before Lambda may freeze the sandbox.
pub fn instrument_router(router: axum::Router) -> axum::Router {
    router
        .layer(axum::middleware::map_response(flush_after))
        .layer(axum::middleware::map_request(adopt_invocation_trace))
}

/// Sets `X-Amzn-Trace-Id` from the Lambda invocation's trace header, when there is one.
async fn adopt_invocation_trace(mut request: Request) -> Request {
    let trace = request
        .lambda_context_ref()
        .and_then(|context| context.xray_trace_id.as_deref())
        .and_then(|trace| HeaderValue::from_str(trace).ok());
    if let Some(trace) = trace {
        request
            .headers_mut()
            .insert(ackflow_http::extract::X_AMZN_TRACE_ID, trace);
    }
    request
}

async fn flush_after(response: Response) -> Response {
    flush_metrics();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace(value: Option<&str>) -> Result<MetricsConfig, InvalidNamespace> {
        MetricsConfig::from_lookup(|name| {
            assert_eq!(name, METRICS_NAMESPACE);
            value.map(str::to_owned)
        })
    }

    #[test]
    fn the_metrics_namespace_defaults_to_ackflow_and_is_checked_against_cloudwatch_rules() {
        assert_eq!(namespace(None).expect("default").namespace, "ackflow");
        assert_eq!(namespace(Some(" ")).expect("default").namespace, "ackflow");
        assert_eq!(
            namespace(Some("shop/ackflow-prod"))
                .expect("valid")
                .namespace,
            "shop/ackflow-prod"
        );
        for bad in ["AWS/Lambda", "émoji", "a;b", &"n".repeat(256)] {
            let e = namespace(Some(bad)).expect_err(bad);
            assert!(e.to_string().contains(METRICS_NAMESPACE), "{e}");
        }
    }
}
