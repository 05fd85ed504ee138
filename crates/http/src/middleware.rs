//! The one middleware around every route (and the fallbacks): correlation id in and out, a
//! tracing span per request, a log line per answer, and panics turned into a 500 problem.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use ackflow_core::{CorrelationId, Problem, TraceHeader};
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use futures_util::FutureExt as _;
use tracing::Instrument as _;

use crate::error::problem_response;
use crate::extract::{X_AMZN_TRACE_ID, X_CORRELATION_ID};

/// Adopts the request's `X-Correlation-Id` when it is valid (else makes one), runs the request
/// inside a span that carries it (and the X-Ray trace header, when the request has a well-formed
/// one), and echoes it on the response, whatever the response is.
pub(crate) async fn correlate(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(X_CORRELATION_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| CorrelationId::parse(v).ok())
        .unwrap_or_else(CorrelationId::random);
    request.extensions_mut().insert(id.clone());
    let trace = request
        .headers()
        .get(X_AMZN_TRACE_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| TraceHeader::parse(v).ok());
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        correlation_id = %id,
        trace_header = tracing::field::Empty,
    );
    if let Some(trace) = trace {
        span.record("trace_header", trace.as_str());
        request.extensions_mut().insert(trace);
    }
    let started = Instant::now();
    let refused = unsupported_transfer_encoding(&request);
    let mut response = async move {
        if refused {
            return problem_response(&Problem::unsupported_transfer_encoding());
        }
        match AssertUnwindSafe(next.run(request)).catch_unwind().await {
            Ok(response) => response,
            Err(panic) => {
                // The server must stay up and the client must get a problem, not a dropped connection.
                tracing::error!(panic = %ackflow_core::panic_message(panic.as_ref()), "handler panicked; answered 500");
                problem_response(&Problem::internal())
            }
        }
    }
    .instrument(span.clone())
    .await;
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert(X_CORRELATION_ID, value);
    }
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "answered"
        );
    });
    response
}

/// Whether the request names a transfer coding other than `chunked` alone (`gzip, chunked`,
/// say): the HTTP server has decoded the chunks and would hand the rest over as if plain.
fn unsupported_transfer_encoding(request: &Request) -> bool {
    let mut codings = request
        .headers()
        .get_all(axum::http::header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty());
    match (codings.next(), codings.next()) {
        (None, _) => false,
        (Some(only), None) => only != "chunked",
        _ => true,
    }
}
