//! SDK errors classified once: may trying again help ([`PortError::Unavailable`]) or not
//! ([`PortError::Failed`]).

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
/// Ambiguous: the request went out and no answer came back — a timeout, an unreadable
/// response (a connection cut mid-answer), a dispatch that timed out. Unavailable: other
/// network failures (connection refused, DNS), 5xx answers and throttling. Failed: everything
/// else — a request the service refuses (validation, a missing queue or table, access denied)
/// will be refused again.
pub fn classify<E>(what: &'static str, error: SdkError<E, HttpResponse>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
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
fn is_ambiguous<E>(error: &SdkError<E, HttpResponse>) -> bool {
    match error {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(failure) => failure.is_timeout(),
        _ => false,
    }
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
