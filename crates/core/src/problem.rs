//! RFC 9457 problem details: the one shape of every error a person or program sees.
//!
//! Every problem kind ackflow itself produces has a constructor here, so that the wording is
//! written once and the catalog of `type`s is in one place (the OpenAPI document lists them).
//! `detail` is written for the person who sent the request; internals go to the logs.

use serde::{Deserialize, Serialize};

/// Prefix of every problem `type` ackflow defines. Processors may define their own types.
pub const TYPE_PREFIX: &str = "urn:ackflow:problem:";

/// One invalid part of a request, located by a JSON pointer (RFC 6901).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Where the problem is, such as `/input/items/0/quantity`.
    pub pointer: String,
    /// What is wrong there and how to fix it.
    pub detail: String,
}

impl FieldError {
    /// A field error at `pointer`.
    pub fn new(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            detail: detail.into(),
        }
    }

    /// The same error under `prefix` (`/items/0` under `/input` is `/input/items/0`).
    pub fn under(mut self, prefix: &str) -> Self {
        self.pointer = format!("{prefix}{}", self.pointer);
        self
    }
}

/// An RFC 9457 problem details object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// A stable identifier of the problem kind.
    #[serde(rename = "type")]
    pub type_: String,
    /// A short, fixed summary of the problem kind.
    pub title: String,
    /// The HTTP status this problem is answered with.
    pub status: u16,
    /// What happened here and what the reader can do about it.
    pub detail: String,
    /// The resource the problem is about, where that helps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Validation errors, each with a JSON pointer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The job a 503 after a possibly recorded job names ([`Problem::not_queued`]); its path
    /// is the problem's `instance` and the answer's `Location`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<crate::JobId>,
}

impl Problem {
    /// A problem of ackflow's own catalog: `slug` becomes `urn:ackflow:problem:{slug}`.
    pub fn new(slug: &str, status: u16, title: &str, detail: impl Into<String>) -> Self {
        Self {
            type_: format!("{TYPE_PREFIX}{slug}"),
            title: title.to_owned(),
            status,
            detail: detail.into(),
            instance: None,
            errors: Vec::new(),
            job_id: None,
        }
    }

    /// Adds the resource the problem is about.
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// Adds validation errors.
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    /// Whether this is [`Problem::enqueue_failed`]: the job was recorded, never queued, and a
    /// retry with its Idempotency-Key reopens it.
    pub fn is_enqueue_failed(&self) -> bool {
        // Compared with the catalog's own constructor, so the slug is written in one place.
        self.type_ == Self::enqueue_failed().type_
    }

    /// The catalog slug, when this is one of ackflow's own problems.
    pub fn slug(&self) -> Option<&str> {
        self.type_.strip_prefix(TYPE_PREFIX)
    }

    // ---- Request problems -------------------------------------------------------------------

    /// 400: the body is not JSON.
    pub fn malformed_json(why: &str) -> Self {
        Self::new(
            "malformed-json",
            400,
            "Malformed JSON",
            format!(
                "The request body is not valid JSON ({why}). Check the body and send it again."
            ),
        )
    }

    /// 400: a query parameter or header could not be understood.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new("bad-request", 400, "Bad request", detail)
    }

    /// 400: a list cursor that this server did not hand out.
    pub fn bad_cursor() -> Self {
        Self::new(
            "bad-cursor",
            400,
            "Invalid cursor",
            "The cursor is not one this server handed out. Start again from the first page without a cursor.",
        )
    }

    /// 401: authentication is on and the request has no valid token.
    pub fn unauthorized() -> Self {
        Self::new(
            "unauthorized",
            401,
            "Authentication required",
            "Send a valid token in the Authorization header as 'Bearer <token>'.",
        )
    }

    /// 404: no such job for this owner (another owner's job is also "not found").
    pub fn job_not_found() -> Self {
        Self::new(
            "job-not-found",
            404,
            "Job not found",
            "There is no job with this id for you. It may have expired after its retention period, or the id is mistyped.",
        )
    }

    /// 404: no such route.
    pub fn route_not_found() -> Self {
        Self::new(
            "not-found",
            404,
            "Not found",
            "There is nothing at this address. See /openapi.json for the API.",
        )
    }

    /// 405: the route exists, the method does not.
    pub fn method_not_allowed() -> Self {
        Self::new(
            "method-not-allowed",
            405,
            "Method not allowed",
            "This address does not accept this method. See /openapi.json for the API.",
        )
    }

    /// 409: cancel of a job that has already started or ended.
    pub fn not_cancellable(state: crate::JobState) -> Self {
        Self::new(
            "not-cancellable",
            409,
            "Job cannot be cancelled",
            format!("Only a queued job can be cancelled; this one is {state}."),
        )
    }

    /// 413: the body is larger than the configured limit.
    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Self::new(
            "payload-too-large",
            413,
            "Request too large",
            format!("The request body is larger than the limit of {limit_bytes} bytes. Send less input."),
        )
    }

    /// 501: a `Transfer-Encoding` other than `chunked` alone. Read as plain, a compressed body
    /// would be taken for what it is not (RFC 9112 §6.1: a coding the server does not know is
    /// refused).
    pub fn unsupported_transfer_encoding() -> Self {
        Self::new(
            "unsupported-transfer-encoding",
            501,
            "Transfer encoding not supported",
            "Send the body as it is, or with 'Transfer-Encoding: chunked' alone; no other transfer coding is accepted.",
        )
    }

    /// 415: not JSON.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            "unsupported-media-type",
            415,
            "Unsupported media type",
            "Send the body as JSON with the header 'Content-Type: application/json'.",
        )
    }

    /// 422: nobody processes this kind.
    pub fn unknown_kind(kind: &str, known: &[String]) -> Self {
        Self::new(
            "unknown-kind",
            422,
            "Unknown kind",
            format!(
                "Nothing here processes jobs of kind '{}'. Known kinds: {}.",
                quoted(kind),
                known.join(", ")
            ),
        )
        .with_errors(vec![FieldError::new("/kind", "not a known kind")])
    }

    /// 422: the input does not fit the kind.
    pub fn invalid_input(errors: Vec<FieldError>) -> Self {
        Self::new(
            "invalid-input",
            422,
            "Invalid input",
            "Some fields of the request are not valid; each is listed under 'errors'. Correct them and send again.",
        )
        .with_errors(errors)
    }

    /// 422: the Idempotency-Key was used before with another body.
    pub fn idempotency_key_reused() -> Self {
        Self::new(
            "idempotency-key-reused",
            422,
            "Idempotency-Key reused",
            "This Idempotency-Key was already used with a different request body. Use a new key for a new request.",
        )
    }

    /// 503: the server has as many connections open as it takes.
    pub fn too_many_connections() -> Self {
        Self::new(
            "service-unavailable",
            503,
            "Service unavailable",
            "The server has as many connections open as it takes. Try again in a few seconds.",
        )
    }

    /// 503: the queue or the store is unreachable; nothing was accepted.
    pub fn unavailable() -> Self {
        Self::new(
            "service-unavailable",
            503,
            "Service unavailable",
            "The service cannot take requests right now and nothing was accepted. Try again in a moment; \
             with the same Idempotency-Key a retry is safe.",
        )
    }

    /// 503: the job `job` was recorded, or may have been (`recorded`), but is not known to be
    /// on the queue. The advice depends on whether the client sent an Idempotency-Key
    /// (`keyed`): with one, a retry is safe and returns this job; without one, a second
    /// submission could do the work twice, so the client should look at the job first.
    pub fn not_queued(job: crate::JobId, recorded: crate::Recorded, keyed: bool) -> Self {
        let path = job.path();
        let recorded = recorded == crate::Recorded::Yes;
        let what = if recorded {
            format!("Job {job} was recorded, but the service could not confirm that it was queued.")
        } else {
            format!(
                "The service could not confirm whether job {job} was recorded, nor that it was queued."
            )
        };
        let advice = match (keyed, recorded) {
            (true, _) => format!(
                "Try again in a moment with the same Idempotency-Key: the retry answers with this job \
                 and queues it if it needs to be. You can also follow it at {path}."
            ),
            (false, true) => format!(
                "Do not submit it again: look at it at {path} first. It either runs or says why it could not."
            ),
            (false, false) => format!(
                "Look at {path} before submitting again: if it is there, it runs or says why it \
                 could not; if it is not found, nothing was recorded and you can submit again."
            ),
        };
        let mut problem = Self::new(
            "service-unavailable",
            503,
            "Service unavailable",
            format!("{what} {advice}"),
        )
        .with_instance(path);
        problem.job_id = Some(job);
        problem
    }

    /// 503: the request could not be finished before the function running it had to answer.
    /// A submission may have been recorded, so the advice is a keyed retry or a look at the
    /// client's jobs, never a blind resubmission.
    pub fn out_of_time() -> Self {
        Self::new(
            "service-unavailable",
            503,
            "Service unavailable",
            "The service could not finish this request in time. Try again in a moment. A submission \
             retried with the same Idempotency-Key is safe; without one, look at your jobs \
             (GET /v1/jobs) before submitting again, since this one may have been recorded.",
        )
    }

    /// 500: something unexpected; the details are in the logs.
    pub fn internal() -> Self {
        Self::new(
            "internal",
            500,
            "Internal error",
            "Something went wrong on our side and has been logged. Try again later.",
        )
    }

    // ---- Problems stored on failed jobs ----------------------------------------------------

    /// The job's deadline passed before it could finish.
    pub fn deadline_exceeded() -> Self {
        Self::new(
            "deadline-exceeded",
            503,
            "Not finished in time",
            "The system is busy and could not finish this request in time. Nothing was charged; please try again.",
        )
    }

    /// Every attempt failed with a transient error.
    pub fn attempts_exhausted(attempts: u32) -> Self {
        Self::new(
            "attempts-exhausted",
            503,
            "Failed after retries",
            format!(
                "This request was tried {attempts} times and failed each time because of a temporary problem. \
                 Nothing was charged; please try again later."
            ),
        )
    }

    /// The job was recorded but its message could not be queued.
    pub fn enqueue_failed() -> Self {
        Self::new(
            "enqueue-failed",
            503,
            "Could not be queued",
            "The request was received but could not be queued, so it was not processed. Nothing was charged; \
             please send it again.",
        )
    }

    /// The job's message could not be read (corrupt, or from an incompatible version).
    pub fn unreadable_message() -> Self {
        Self::new(
            "unreadable-message",
            500,
            "Request could not be read",
            "The queued request could not be read back and was set aside for an operator. Nothing was charged; \
             please send it again.",
        )
    }

    /// The processor's result is larger than the store keeps.
    pub fn result_too_large(limit_bytes: usize) -> Self {
        Self::new(
            "result-too-large",
            500,
            "Result too large",
            format!(
                "The job finished but its result is larger than the {limit_bytes} bytes that can be kept. \
                 Ask for less output."
            ),
        )
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.title, self.status, self.detail)
    }
}

/// Text the sender chose, as quoted back in a detail: at most 64 characters (an answer never
/// echoes a huge input) and no control characters (a detail is shown to people and logged).
fn quoted(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    let mut out: String = text
        .chars()
        .take(MAX_CHARS)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect();
    if text.chars().nth(MAX_CHARS).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_kind_is_quoted_short_and_without_control_characters() {
        let long = Problem::unknown_kind(&"k".repeat(200 * 1024), &["demo".to_owned()]);
        assert!(long.detail.len() < 200, "{}", long.detail);
        assert!(long.detail.contains(&format!("'{}…'", "k".repeat(64))));
        let odd = Problem::unknown_kind("a\nb\u{0}", &[]);
        assert!(
            odd.detail.contains("'a\u{FFFD}b\u{FFFD}'"),
            "{}",
            odd.detail
        );
    }

    #[test]
    fn problems_serialize_as_rfc9457() {
        let p = Problem::invalid_input(vec![FieldError::new(
            "/input/steps",
            "must be at most 1000",
        )]);
        let v = serde_json::to_value(&p).expect("serializes");
        assert_eq!(v["type"], "urn:ackflow:problem:invalid-input");
        assert_eq!(v["status"], 422);
        assert_eq!(v["errors"][0]["pointer"], "/input/steps");
        assert!(v.get("instance").is_none());
        assert_eq!(p.slug(), Some("invalid-input"));
    }
}
