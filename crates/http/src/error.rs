//! [`ApiError`]: everything a handler can fail with, answered as `application/problem+json`.
//!
//! Problems meant for the client are answered as they are. Port failures and the unexpected are
//! logged here with their whole error chain (inside the request's span, which carries the
//! correlation id) and answered with core's fixed wording, so no internals reach a response.

use std::time::Duration;

use ackflow_core::error_chain;
use ackflow_core::{AcceptError, JobError, JobId, PortError, Problem};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::error;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// `Retry-After` of a 503: the store or queue was unreachable, and a short pause is the honest
/// advice (SQS and DynamoDB throttles clear in seconds; a restarting SQLite file in less).
pub const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Why a request was not served.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A problem for the client, answered as it is (boxed: it is large, and errors travel far).
    #[error("{0}")]
    Problem(Box<Problem>),
    /// The store or the queue could not be reached: 503 with `Retry-After`.
    #[error("a backend is unavailable (job {job:?})")]
    Unavailable {
        /// The job the request was about, for the log.
        job: Option<JobId>,
        /// What failed.
        #[source]
        source: PortError,
    },
    /// A job was recorded, or may have been, but is not known to be queued: 503 with
    /// `Retry-After`, the job's id in the body and its `Location`, so that the client follows
    /// it instead of submitting the work again.
    #[error("job {job} may have been recorded but is not known to be queued")]
    NotQueued {
        /// The job.
        job: JobId,
        /// What the client is told ([`Problem::not_queued`]).
        problem: Box<Problem>,
        /// What failed.
        #[source]
        source: PortError,
    },
    /// Anything unexpected: 500.
    #[error("unexpected error (job {job:?})")]
    Internal {
        /// The job the request was about, for the log.
        job: Option<JobId>,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ApiError {
    /// A port error while serving a request about `job`: transient ones are a 503, the rest a 500.
    pub fn port(job: Option<JobId>, source: PortError) -> Self {
        match source {
            PortError::Unavailable { .. } | PortError::Ambiguous { .. } => {
                Self::Unavailable { job, source }
            }
            PortError::Failed { .. } => Self::Internal {
                job,
                source: Box::new(source),
            },
        }
    }

    /// A job use case's error for `job`.
    pub fn job(job: JobId, e: JobError) -> Self {
        match e {
            JobError::Unavailable(source) => Self::port(Some(job), source),
            JobError::WrongState(_) => e.problem().with_instance(crate::view::job_path(job)).into(),
            JobError::NotFound => e.problem().into(),
        }
    }

    /// The problem this error is answered with.
    pub fn problem(&self) -> Problem {
        match self {
            Self::Problem(p) => p.as_ref().clone(),
            Self::Unavailable { .. } => Problem::unavailable(),
            Self::NotQueued { problem, .. } => problem.as_ref().clone(),
            Self::Internal { .. } => Problem::internal(),
        }
    }
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        Self::Problem(Box::new(p))
    }
}

impl From<AcceptError> for ApiError {
    fn from(e: AcceptError) -> Self {
        let problem = e.problem();
        match e {
            AcceptError::Unavailable(source) => Self::port(None, source),
            // Whatever the queue said: a keyed retry recovers the job, a look at it tells a
            // keyless client whether to submit again.
            AcceptError::NotQueued { job, source, .. } => Self::NotQueued {
                job,
                problem: Box::new(problem),
                source,
            },
            _ => problem.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Problem(_) => {}
            Self::Unavailable { job, source } => {
                error!(job_id = job.map(tracing::field::display), error = %error_chain(source), "backend unavailable; answered 503");
            }
            Self::NotQueued { job, source, .. } => {
                error!(job_id = %job, error = %error_chain(source), "job not known to be queued; answered 503 naming it");
            }
            Self::Internal { job, source } => {
                error!(job_id = job.map(tracing::field::display), error = %error_chain(source.as_ref()), "unexpected error; answered 500");
            }
        }
        let mut response = problem_response(&self.problem());
        if matches!(self, Self::Unavailable { .. } | Self::NotQueued { .. }) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                retry_after_value(UNAVAILABLE_RETRY_AFTER),
            );
        }
        // The problem's `instance` is the job's address: `Location` says the same.
        if let Self::NotQueued { problem, .. } = &self {
            if let Some(location) = problem
                .instance
                .as_deref()
                .and_then(|path| HeaderValue::from_str(path).ok())
            {
                response.headers_mut().insert(header::LOCATION, location);
            }
        }
        response
    }
}

/// `problem` as a response: its status, `application/problem+json`, never cached.
pub fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // A Problem is plain strings and numbers: serializing it cannot fail.
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"ackflow\""),
        );
    }
    (status, headers, body).into_response()
}

/// A `Retry-After` value in whole seconds, at least 1.
pub fn retry_after_value(d: Duration) -> HeaderValue {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}
