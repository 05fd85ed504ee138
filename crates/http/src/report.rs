//! `/v1/report`.

use axum::extract::State;
use axum::http::header::CACHE_CONTROL;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::ApiError;
use crate::extract::{Caller, CORRELATION_IN};
use crate::view::{ProblemSchema, ReportView};
use crate::ApiState;

/// Figures for your jobs.
///
/// Counts by state (now queued and running; ended in the window by terminal state), accepted and
/// retried counts, p50/p95 accept→terminal time, the oldest job that has not ended, the most
/// frequent failure types, and the queue's depth where the queue can tell. Read from maintained
/// aggregates, never a scan.
#[utoipa::path(
    get,
    path = "/v1/report",
    tag = "report",
    operation_id = "getReport",
    security((), ("bearer" = [])),
    params(
        ("X-Correlation-Id" = Option<String>, Header, description = CORRELATION_IN),
    ),
    responses(
        (status = 200, description = "The report.", body = ReportView),
        (status = 401, description = "Authentication is on and the token is missing or wrong.",
            body = ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Unexpected error.",
            body = ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable.",
            body = ProblemSchema, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
    )
)]
pub(crate) async fn report(
    State(state): State<ApiState>,
    Caller(owner): Caller,
) -> Result<Response, ApiError> {
    let report = state
        .app
        .report(&owner)
        .await
        .map_err(|e| ApiError::port(None, e))?;
    Ok((
        [(CACHE_CONTROL, "no-store")],
        Json(ReportView::from(report)),
    )
        .into_response())
}
