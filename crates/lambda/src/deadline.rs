//! The HTTP functions answer before Lambda kills them. A function killed at its timeout leaves
//! its client with API Gateway's bare 503: no problem body, no `Retry-After`, nothing about
//! the job. The SDK's timeouts are fitted into the function's ([`crate::FunctionKind::sdk_budget`])
//! so that the use cases finish in time by construction; this guard is what still answers when
//! something outside the SDK's calls eats the time (a starved CPU, the adapter's own retries of
//! a cancelled transaction).

use std::time::Duration;

use ackflow_core::{Clock as _, Problem, SystemClock, Timestamp};
use ackflow_http::error::{problem_response, retry_after_value, UNAVAILABLE_RETRY_AFTER};
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use lambda_http::RequestExt as _;

/// How long before the invocation's deadline the guard answers: room to write the answer and
/// hand it to the runtime.
pub const ANSWER_AHEAD: Duration = Duration::from_millis(500);

/// `router`, answering [`Problem::out_of_time`] with `Retry-After` to any request still running
/// [`ANSWER_AHEAD`] of its invocation's deadline. Requests without a Lambda context (or with no
/// deadline in it) run unguarded.
pub fn answer_before_deadline(router: axum::Router) -> axum::Router {
    router.layer(axum::middleware::from_fn(guard))
}

async fn guard(request: Request, next: Next) -> Response {
    let Some(left) = request
        .lambda_context_ref()
        .and_then(|context| time_left(context.deadline, SystemClock.now()))
    else {
        return next.run(request).await;
    };
    let path = request.uri().path().to_owned();
    match tokio::time::timeout(left.saturating_sub(ANSWER_AHEAD), next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            // The request's work is dropped where it stood. A submission cut between its create
            // and its send is a job the sweeper re-sends; the client is told it may exist.
            tracing::error!(
                path,
                "the request did not finish before the invocation's deadline; answered 503"
            );
            let mut response = problem_response(&Problem::out_of_time());
            response.headers_mut().insert(
                header::RETRY_AFTER,
                retry_after_value(UNAVAILABLE_RETRY_AFTER),
            );
            response
        }
    }
}

/// The time left at `now` until the invocation's deadline `deadline_ms`, read as the batch
/// lifter reads it ([`crate::sqs`]: 0 is no deadline, a value too small to be a time since the
/// epoch is an emulator's timeout).
pub(crate) fn time_left(deadline_ms: u64, now: Timestamp) -> Option<Duration> {
    crate::sqs::invocation_deadline(deadline_ms, now).map(|deadline| deadline.since(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use http_body_util::BodyExt as _;
    use lambda_runtime::Context;
    use std::time::{SystemTime, UNIX_EPOCH};
    use tower::ServiceExt as _;

    /// A route that never answers, as a request whose every call hangs would.
    fn stuck() -> axum::Router {
        answer_before_deadline(
            axum::Router::new().route("/v1/jobs", get(std::future::pending::<&'static str>)),
        )
    }

    fn request(deadline: SystemTime) -> Request {
        let mut context = Context::default();
        context.deadline = u64::try_from(
            deadline
                .duration_since(UNIX_EPOCH)
                .expect("after the epoch")
                .as_millis(),
        )
        .expect("fits");
        let mut request = Request::get("/v1/jobs")
            .body(Body::empty())
            .expect("request");
        request.extensions_mut().insert(context);
        request
    }

    #[tokio::test]
    async fn a_request_still_running_at_the_deadline_gets_the_services_own_503() {
        let deadline = SystemTime::now() + ANSWER_AHEAD + Duration::from_millis(300);
        let response = stuck().oneshot(request(deadline)).await.expect("answered");
        assert!(SystemTime::now() < deadline, "answered before the deadline");
        assert_eq!(response.status(), 503);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let problem: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(problem["type"], "urn:ackflow:problem:service-unavailable");
        assert!(
            problem["detail"]
                .as_str()
                .expect("detail")
                .contains("Idempotency-Key"),
            "{problem}"
        );
    }

    #[tokio::test]
    async fn a_request_that_finishes_in_time_is_answered_as_it_is() {
        let router = answer_before_deadline(
            axum::Router::new().route("/v1/jobs", get(|| async { "listed" })),
        );
        let response = router
            .oneshot(request(SystemTime::now() + Duration::from_secs(10)))
            .await
            .expect("answered");
        assert_eq!(response.status(), 200);
    }

    #[test]
    fn no_deadline_means_no_guard_and_a_past_one_leaves_nothing() {
        let now = Timestamp::from_millis(1_800_000_000_000);
        assert_eq!(time_left(0, now), None);
        assert_eq!(
            time_left(1_800_000_002_500, now),
            Some(Duration::from_millis(2_500))
        );
        assert_eq!(time_left(1_799_999_999_000, now), Some(Duration::ZERO));
    }

    #[test]
    fn an_emulators_timeout_is_read_as_time_left() {
        let now = Timestamp::from_millis(1_800_000_000_000);
        assert_eq!(time_left(600_000, now), Some(Duration::from_secs(600)));
    }
}
