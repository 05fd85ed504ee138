//! `/v1/jobs`: submit, read (with long-poll), cancel, list.

use std::time::Duration;

use ackflow_core::{Accepted, Cursor, JobState, Kind, ListQuery, Problem, Submission};
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, ETAG, LINK, LOCATION, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tracing::Instrument as _;

use crate::error::{retry_after_value, ApiError};
use crate::extract::{
    self, bad_param, Caller, Correlation, IfNoneMatch, JobPath, QueryParams, Trace, CORRELATION_IN,
};
use crate::view::{job_path, JobList, JobView, ProblemSchema, Submit};
use crate::ApiState;

/// Set on the answer to a submission that repeats an earlier one with the same Idempotency-Key.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Job answers may be stored by the client but must be revalidated (ETag) before reuse, and never
/// by a shared cache: they belong to one owner.
const REVALIDATE: &str = "private, no-cache";

/// Submit a job.
///
/// Validates the body and the input, records the job durably and queues it. A `202` means the job
/// will reach a terminal state by its `deadline`. With an `Idempotency-Key`, repeating the same
/// request returns the same job (no second job); the same key with another body is a `422`.
/// `input` may be left out, meaning `{}`; fields other than `kind` and `input` are refused.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    operation_id = "submitJob",
    security((), ("bearer" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255,
            description = "1 to 255 printable ASCII characters; makes the request safe to retry."),
        ("X-Correlation-Id" = Option<String>, Header, description = CORRELATION_IN),
    ),
    request_body(content = Submit, content_type = "application/json",
        description = "The kind of job and its input. Any `application/*+json` type is accepted too."),
    responses(
        (status = 202, description = "Accepted: the job is durable and queued (or an idempotent replay).",
            body = JobView,
            headers(
                ("Location" = String, description = "The job's address, `/v1/jobs/{id}`."),
                ("Retry-After" = u64, description = "Seconds until the job is likely to have ended (at least 1)."),
                ("ETag" = String, description = "The job's version; send it as `If-None-Match` when polling."),
                ("Idempotent-Replayed" = bool, description = "`true` when this answers an earlier request with the same Idempotency-Key."),
            )),
        (status = 400, description = "Malformed JSON (with line and column), or an invalid Idempotency-Key.",
            body = ProblemSchema, content_type = "application/problem+json"),
        (status = 401, description = "Authentication is on and the token is missing or wrong.",
            body = ProblemSchema, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than the configured limit.",
            body = ProblemSchema, content_type = "application/problem+json"),
        (status = 415, description = "The body is not declared as JSON.",
            body = ProblemSchema, content_type = "application/problem+json"),
        (status = 422, description = "Unknown kind, invalid input, misplaced fields (each located by a JSON pointer under `errors`), or an Idempotency-Key reused with another body.",
            body = ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Unexpected error; nothing is known to have been accepted.",
            body = ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "The queue or the store is unavailable. Without `job_id`, nothing was accepted. \
            With `job_id` (and `Location`), the job was recorded, or may have been, but is not known to be queued: \
            `detail` says which. Retrying with the same Idempotency-Key is safe either way and answers with that job; \
            without a key, look at the job first: if it exists it runs (or says why it could not), and only a `404` \
            there means nothing was recorded.",
            body = ProblemSchema, content_type = "application/problem+json",
            headers(
                ("Retry-After" = u64, description = "Seconds to wait before trying again."),
                ("Location" = String, description = "With `job_id` only: the job's address.")
            )),
    )
)]
pub(crate) async fn submit(
    State(state): State<ApiState>,
    Caller(owner): Caller,
    Correlation(correlation_id): Correlation,
    Trace(trace_header): Trace,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = state.app.settings().body_limit;
    extract::require_json(&headers)?;
    extract::reject_announced_oversize(&headers, limit)?;
    let idempotency_key = extract::idempotency_key(&headers)?;
    let bytes = extract::read_body(body, limit).await?;
    let (kind, input) = extract::submission(extract::parse_json(&bytes)?)?;
    let submission = Submission {
        owner,
        kind,
        input,
        idempotency_key,
        correlation_id,
        trace_header,
    };
    // Accepting runs in its own task: hyper drops a handler's future when the client hangs up,
    // and a job dropped between its record and its message would wait for the sweeper's resend
    // (minutes) instead of running now. The task keeps the request's span for the logs.
    let app = state.app.clone();
    let accepting = tokio::spawn(
        async move { app.accept(submission).await }.instrument(tracing::Span::current()),
    );
    let accepted = accepting.await.map_err(|e| ApiError::Internal {
        job: None,
        source: Box::new(e),
    })??;
    Ok(accepted_response(&accepted))
}

fn accepted_response(accepted: &Accepted) -> Response {
    let job = &accepted.job;
    let mut response = job_response(
        StatusCode::ACCEPTED,
        &JobView::of_job(job),
        &job.etag(),
        // A replay may answer with a job that has already ended: nothing left to wait for.
        (!job.state.is_terminal()).then_some(accepted.retry_after),
        "no-store",
    );
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&job_path(job.id)) {
        headers.insert(LOCATION, location);
    }
    if accepted.replayed {
        headers.insert(
            HeaderName::from_static(IDEMPOTENT_REPLAYED),
            HeaderValue::from_static("true"),
        );
    }
    response
}

/// Read a job, optionally waiting for it to change.
///
/// With `If-None-Match` set to the job's current `ETag` and `wait=N`, the request is held until
/// the job changes or `N` seconds pass (`N` above the configured cap is shortened to the cap);
/// an unchanged job is then answered `304`. A terminal job is answered at once. An id that does
/// not exist, is malformed or belongs to someone else is a `404`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    operation_id = "getJob",
    security((), ("bearer" = [])),
    params(
        ("id" = String, Path, description = "The job's id."),
        ("wait" = Option<u64>, Query, minimum = 0,
            description = "Long-poll: seconds to wait for a change from `If-None-Match` (shortened to the cap, 20 s on one machine, 10 s on AWS by default)."),
        ("If-None-Match" = Option<String>, Header,
            description = "The `ETag` the client has; unchanged → `304`."),
        ("X-Correlation-Id" = Option<String>, Header, description = CORRELATION_IN),
    ),
    responses(
        (status = 200, description = "The job (with its result when it succeeded).", body = JobView,
            headers(
                ("ETag" = String, description = "The job's version."),
                ("Retry-After" = u64, description = "While the job has not ended: seconds until it is likely to have."),
                ("Cache-Control" = String, description = "`private, no-cache`: revalidate with the ETag."),
            )),
        (status = 304, description = "Unchanged since `If-None-Match` (after the wait, if any).",
            headers(
                ("ETag" = String, description = "The job's version."),
                ("Retry-After" = u64, description = "While the job has not ended: when to ask again."),
            )),
        (status = 400, description = "`wait` is not a whole number of seconds.",
            body = ProblemSchema, content_type = "application/problem+json"),
        (status = 401, description = "Authentication is on and the token is missing or wrong.",
            body = ProblemSchema, content_type = "application/problem+json"),
        (status = 404, description = "No such job for you.",
            body = ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Unexpected error.",
            body = ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable.",
            body = ProblemSchema, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
    )
)]
pub(crate) async fn get_job(
    State(state): State<ApiState>,
    Caller(owner): Caller,
    JobPath(id): JobPath,
    params: QueryParams,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let wait = extract::wait(params.get("wait")?, state.app.settings().long_poll_cap)?;
    let if_none_match = IfNoneMatch::from_headers(&headers);
    // Only a single tag can be waited on; with a list (or `*`) the job is answered at once.
    let status = state
        .app
        .wait_for_change(&owner, id, if_none_match.single(), wait)
        .await
        .map_err(|e| ApiError::job(id, e))?;
    let etag = status.job.etag();
    if if_none_match.matches(&etag) {
        let headers = validators(&etag, status.retry_after, REVALIDATE);
        return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    Ok(job_response(
        StatusCode::OK,
        &JobView::of_status(&status),
        &etag,
        status.retry_after,
        REVALIDATE,
    ))
}

/// Cancel a queued job.
///
/// Only a `queued` job can be cancelled; its message is dropped when it arrives. A job that is
/// running or has ended is a `409`.
#[utoipa::path(
    delete,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    operation_id = "cancelJob",
    security((), ("bearer" = [])),
    params(
        ("id" = String, Path, description = "The job's id."),
        ("X-Correlation-Id" = Option<String>, Header, description = CORRELATION_IN),
    ),
    responses(
        (status = 200, description = "Cancelled; the job as it is now.", body = JobView,
            headers(("ETag" = String, description = "The job's version."))),
        (status = 401, description = "Authentication is on and the token is missing or wrong.",
            body = ProblemSchema, content_type = "application/problem+json"),
        (status = 404, description = "No such job for you.",
            body = ProblemSchema, content_type = "application/problem+json"),
        (status = 409, description = "The job is running or has ended.",
            body = ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Unexpected error.",
            body = ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable.",
            body = ProblemSchema, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
    )
)]
pub(crate) async fn cancel_job(
    State(state): State<ApiState>,
    Caller(owner): Caller,
    JobPath(id): JobPath,
) -> Result<Response, ApiError> {
    let job = state
        .app
        .cancel(&owner, id)
        .await
        .map_err(|e| ApiError::job(id, e))?;
    Ok(job_response(
        StatusCode::OK,
        &JobView::of_job(&job),
        &job.etag(),
        None,
        "no-store",
    ))
}

/// List your jobs, newest first.
///
/// Filters by `state` and `kind`; `limit` is 1 to 100 (default 20). Pass the answer's `next` as
/// `cursor` for the following page (also given as a `Link: <…>; rel="next"` header). Empty
/// parameters count as absent. Listed jobs carry no `result`: read the job for it.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    operation_id = "listJobs",
    security((), ("bearer" = [])),
    params(
        ("state" = Option<crate::view::JobStateSchema>, Query, description = "Only jobs in this state."),
        ("kind" = Option<String>, Query, description = "Only jobs of this kind."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size, 1 to 100 (default 20)."),
        ("cursor" = Option<String>, Query, description = "The `next` of the previous page."),
        ("X-Correlation-Id" = Option<String>, Header, description = CORRELATION_IN),
    ),
    responses(
        (status = 200, description = "A page of jobs.", body = JobList,
            headers(("Link" = String, description = "`<…>; rel=\"next\"` when there is a next page."))),
        (status = 400, description = "A parameter is not valid, or the cursor is not one this server handed out.",
            body = ProblemSchema, content_type = "application/problem+json"),
        (status = 401, description = "Authentication is on and the token is missing or wrong.",
            body = ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Unexpected error.",
            body = ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable.",
            body = ProblemSchema, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
    )
)]
pub(crate) async fn list_jobs(
    State(state): State<ApiState>,
    Caller(owner): Caller,
    params: QueryParams,
) -> Result<Response, ApiError> {
    let filter_state = params
        .get("state")?
        .map(|s| s.parse::<JobState>().map_err(|e| bad_param("state", e.0)))
        .transpose()?;
    let kind = params
        .get("kind")?
        .map(|k| Kind::parse(k).map_err(|e| bad_param("kind", e.0)))
        .transpose()?;
    let limit = params.get("limit")?.map(page_size).transpose()?;
    let after = params
        .get("cursor")?
        .map(|c| Cursor::decode(c).ok_or_else(|| ApiError::from(Problem::bad_cursor())))
        .transpose()?;
    let query = ListQuery {
        state: filter_state,
        kind: kind.clone(),
        // 0 asks the use case for its default page size.
        limit: limit.unwrap_or(0),
        after,
    };
    let page = state
        .app
        .list(&owner, query)
        .await
        .map_err(|e| ApiError::port(None, e))?;
    let next = page.next.as_ref().map(Cursor::encode);
    let mut headers = HeaderMap::new();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(cursor) = &next {
        // Every part is URL-safe as it is: states and kinds are [a-z0-9_-], cursors base64url.
        let mut url = format!("/v1/jobs?cursor={cursor}");
        if let Some(s) = filter_state {
            url.push_str(&format!("&state={s}"));
        }
        if let Some(k) = &kind {
            url.push_str(&format!("&kind={k}"));
        }
        if let Some(l) = limit {
            url.push_str(&format!("&limit={l}"));
        }
        if let Ok(link) = HeaderValue::from_str(&format!("<{url}>; rel=\"next\"")) {
            headers.insert(LINK, link);
        }
    }
    let list = JobList {
        jobs: page.jobs.iter().map(JobView::of_job).collect(),
        next,
    };
    Ok((headers, Json(list)).into_response())
}

fn page_size(raw: &str) -> Result<usize, ApiError> {
    raw.parse::<usize>()
        .ok()
        .filter(|n| (1..=100).contains(n))
        .ok_or_else(|| bad_param("limit", "it is a whole number from 1 to 100"))
}

/// A job answer: JSON body plus its validators.
fn job_response(
    status: StatusCode,
    view: &JobView,
    etag: &str,
    retry_after: Option<Duration>,
    cache_control: &'static str,
) -> Response {
    (
        status,
        validators(etag, retry_after, cache_control),
        Json(view),
    )
        .into_response()
}

/// `ETag`, `Retry-After` (while the job has not ended) and `Cache-Control`.
fn validators(etag: &str, retry_after: Option<Duration>, cache_control: &'static str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(ETAG, value);
    }
    if let Some(d) = retry_after {
        headers.insert(RETRY_AFTER, retry_after_value(d));
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache_control));
    headers
}
