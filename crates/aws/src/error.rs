//! SDK errors classified once: may the call have taken effect ([`PortError::Ambiguous`]), may
//! trying again help ([`PortError::Unavailable`]) or not ([`PortError::Failed`]).

use std::error::Error;

use ackflow_core::PortError;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};

/// Error codes that mean "too much now" or "the service failed now" across SQS and DynamoDB
/// (the SDK has already retried them a few times when we see them).
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TransactionInProgressException",
    "KmsThrottled",
    "KMS.ThrottlingException",
    "InternalServerError",
    "InternalFailure",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// Turns an SDK error of the call `what` into a [`PortError`], keeping it as the source.
///
/// Ambiguous: the request may have reached the service and no answer came back — a timeout,
/// an unreadable response, a connection reset or closed after the request was written. The
/// service may have applied it (a write whose answer was lost), so the caller must not take it
/// as not done. Unavailable: the request never reached the service, or the service answered
/// that it failed for now, and trying later may help — the connection could not be made
/// (refused, DNS, connect timeout), 5xx answers, throttling. A 5xx may still have applied a
/// write, so a caller for whom that matters reads back, as accepting a job does.
/// Failed: everything else — a request the service refuses (validation, a missing queue or
/// table, access denied) will be refused again.
pub fn classify<E>(what: &'static str, error: SdkError<E, HttpResponse>) -> PortError
where
    E: ProvideErrorMetadata + Error + Send + Sync + 'static,
{
    if is_ambiguous(&error) {
        PortError::ambiguous(what, error)
    } else if is_transient(&error) {
        PortError::unavailable(what, error)
    } else {
        PortError::failed(what, error)
    }
}

/// Whether the request may have taken effect although the call failed.
fn is_ambiguous<E>(error: &SdkError<E, HttpResponse>) -> bool
where
    E: Error + 'static,
{
    match error {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        // A dispatch failure is an error of the HTTP client, whatever its kind: "io" covers a
        // refused connect and a reset after the request was written alike, and a server that
        // reads the request and closes without answering is "other". Only the client's own
        // word that the request never left makes it safe to call the write not done.
        SdkError::DispatchFailure(failure) => !failure.is_user() && !never_sent(error),
        _ => false,
    }
}

/// Whether the SDK's HTTP client (hyper-util's client on hyper) says the request was never
/// written: the connect step failed (refused, DNS, connect timeout: hyper-util's `Connect`
/// errors), or hyper dropped the request before writing it (`Canceled`: it found the
/// connection closed first, and hands such requests back unsent).
///
/// Should the SDK change its HTTP client, neither type is found and every dispatch failure
/// counts as ambiguous: the cautious side (the tests of a refused connection would notice).
fn never_sent(error: &(dyn Error + 'static)) -> bool {
    chain(error).any(|e| {
        e.downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(hyper_util::client::legacy::Error::is_connect)
            || e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_canceled)
    })
}

/// `error` and every error after it. After an `io::Error` comes its payload (`get_ref`), since
/// `io::Error::source` skips the payload and goes to the payload's source.
fn chain<'a>(error: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(error), |&error| {
        match error.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|payload| payload as &(dyn Error + 'static)),
            None => error.source(),
        }
    })
}

/// Whether trying the call again later may succeed.
pub(crate) fn is_transient<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    match error {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        // A "user" dispatch failure is a request that cannot be sent (a malformed endpoint):
        // sending it again will not help.
        SdkError::DispatchFailure(failure) => !failure.is_user(),
        SdkError::ServiceError(service) => {
            service.raw().status().is_server_error() || is_transient_code(service.err().code())
        }
        // ConstructionFailure (the request could not be built) and variants the SDK may add.
        _ => false,
    }
}

pub(crate) fn is_transient_code(code: Option<&str>) -> bool {
    code.is_some_and(|code| TRANSIENT_CODES.contains(&code))
}

/// A request the adapter could not even build (a builder refused it): a bug, not an outage.
pub(crate) fn build_failed(what: &'static str, error: aws_sdk_sqs::error::BuildError) -> PortError {
    PortError::failed(what, error)
}

/// Corrupt or unexpected data in an answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unexpected(pub String);

/// An answer the adapter cannot make sense of, as a permanent [`PortError`].
pub fn unexpected(what: &'static str, message: impl Into<String>) -> PortError {
    PortError::failed(what, Unexpected(message.into()))
}
