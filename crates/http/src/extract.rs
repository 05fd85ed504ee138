//! Extractors and request parsing. Every rejection is an [`ApiError`], so none of axum's own
//! plain-text rejections can reach a client.

use std::convert::Infallible;
use std::time::Duration;

use ackflow_core::{CorrelationId, FieldError, IdempotencyKey, JobId, Owner, Problem, TraceHeader};
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, IF_NONE_MATCH};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::ApiState;

/// Name of the header that carries the correlation id, in and out.
pub const X_CORRELATION_ID: &str = "x-correlation-id";

/// How the `X-Correlation-Id` request header is described on every operation. The server takes
/// the header as a hint, never as a reason to refuse a request: a value that is not 1 to 128 of
/// `[A-Za-z0-9-_.:]` is replaced by a generated one, so the document states no constraint.
/// (`doc` describes the answer header.) It lives beside the header's parsing
/// so that the handlers' annotations and the document read it from here.
pub(crate) const CORRELATION_IN: &str = "Ties the request's log lines together and is echoed on the answer. \
    1 to 128 letters, digits, `-`, `_`, `.` or `:`; any other value (or none) is replaced by a generated id.";
/// Name of the header that carries the X-Ray trace header (API Gateway sets it; on Lambda the
/// function's own trace id takes its place, see `ackflow_lambda::telemetry`).
pub const X_AMZN_TRACE_ID: &str = "x-amzn-trace-id";
/// Name of the header that carries the client's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The owner of the request, as the configured [`crate::OwnerResolver`] says.
#[derive(Debug, Clone)]
pub struct Caller(pub Owner);

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        state
            .owners
            .resolve(parts)
            .map(Caller)
            .map_err(ApiError::from)
    }
}

/// The request's correlation id (set by the middleware from `X-Correlation-Id`, or generated).
#[derive(Debug, Clone)]
pub struct Correlation(pub CorrelationId);

impl<S: Send + Sync> FromRequestParts<S> for Correlation {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(Self(
            parts
                .extensions
                .get::<CorrelationId>()
                .cloned()
                .unwrap_or_else(CorrelationId::random),
        ))
    }
}

/// The request's X-Ray trace header (set by the middleware from a well-formed `X-Amzn-Trace-Id`;
/// anything else is ignored, never refused).
#[derive(Debug, Clone)]
pub struct Trace(pub Option<TraceHeader>);

impl<S: Send + Sync> FromRequestParts<S> for Trace {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(Self(parts.extensions.get::<TraceHeader>().cloned()))
    }
}

/// The `{id}` of `/v1/jobs/{id}`. A malformed id is answered exactly like an unknown one (404),
/// so that the answer tells nothing about which ids exist.
#[derive(Debug, Clone, Copy)]
pub struct JobPath(pub JobId);

impl<S: Send + Sync> FromRequestParts<S> for JobPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| Problem::job_not_found())?;
        raw.parse()
            .map(JobPath)
            .map_err(|_| Problem::job_not_found().into())
    }
}

/// The query string as name/value pairs. Unknown parameters are ignored; an empty value counts
/// as absent (`?state=&kind=` is a form left blank).
#[derive(Debug, Clone, Default)]
pub struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    /// The value of `name`; a parameter given twice is a 400.
    pub fn get(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut values = self
            .0
            .iter()
            .filter(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(Problem::bad_request(format!(
                "The query parameter '{name}' is given more than once. Give it once."
            ))
            .into());
        }
        Ok(first)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|_| {
                Problem::bad_request(
                    "The query string could not be read. Encode it as application/x-www-form-urlencoded.",
                )
            })?;
        Ok(Self(pairs))
    }
}

/// A query parameter that is not valid: a 400 that names it and says why.
pub fn bad_param(name: &str, why: &str) -> ApiError {
    Problem::bad_request(format!("The query parameter '{name}' is not valid: {why}.")).into()
}

/// `?wait=N`: whole seconds, clamped to `cap` (a longer wait is shortened, not refused, so a
/// client written for one runtime's cap works on the other's). Absent means no wait.
pub fn wait(raw: Option<&str>, cap: Duration) -> Result<Duration, ApiError> {
    let Some(raw) = raw else {
        return Ok(Duration::ZERO);
    };
    if !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_param(
            "wait",
            &format!(
                "it is a whole number of seconds, at most {} (longer waits are shortened)",
                cap.as_secs()
            ),
        ));
    }
    // All digits: only an overflow can fail, and that is "longer than the cap".
    let secs = raw.parse::<u64>().unwrap_or(u64::MAX);
    Ok(Duration::from_secs(secs).min(cap))
}

/// The entity tags of `If-None-Match`, weak ones compared as strong (RFC 9110 §13.1.2 uses
/// weak comparison here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum IfNoneMatch {
    /// No (readable) header.
    #[default]
    Absent,
    /// `*`: any current version matches.
    Any,
    /// These tags.
    Tags(Vec<String>),
}

impl IfNoneMatch {
    /// Reads the header.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let Some(value) = headers.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()) else {
            return Self::Absent;
        };
        if value.trim() == "*" {
            return Self::Any;
        }
        let tags: Vec<String> = value
            .split(',')
            .map(|t| t.trim())
            .map(|t| t.strip_prefix("W/").unwrap_or(t).to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        if tags.is_empty() {
            Self::Absent
        } else {
            Self::Tags(tags)
        }
    }

    /// The one tag to wait on, when there is exactly one (a long-poll waits for "differs from it").
    pub fn single(&self) -> Option<&str> {
        match self {
            Self::Tags(tags) if tags.len() == 1 => tags.first().map(String::as_str),
            _ => None,
        }
    }

    /// Whether `etag` is one the client already has.
    pub fn matches(&self, etag: &str) -> bool {
        match self {
            Self::Absent => false,
            Self::Any => true,
            Self::Tags(tags) => tags.iter().any(|t| t == etag),
        }
    }
}

/// 415 unless the content type is JSON: `application/json` or any `application/*+json`, with
/// or without parameters such as `charset`.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let essence = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some("application/json") => Ok(()),
        Some(t) if t.starts_with("application/") && t.ends_with("+json") => Ok(()),
        _ => Err(Problem::unsupported_media_type().into()),
    }
}

/// 413 at once when `Content-Length` announces more than `limit`, before reading anything.
pub fn reject_announced_oversize(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    let announced = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match announced {
        Some(n) if n > u64::try_from(limit).unwrap_or(u64::MAX) => {
            Err(Problem::payload_too_large(limit).into())
        }
        _ => Ok(()),
    }
}

/// The `Idempotency-Key` header, if any; a malformed one is a 400 (never silently ignored, or a
/// retry the client believes safe would create a second job).
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    // Two keys make the request ambiguous: an intermediary that reorders or merges headers could
    // turn a retry into a second job.
    if values.next().is_some() {
        return Err(Problem::bad_request(
            "The request has more than one Idempotency-Key header. Send exactly one.",
        )
        .into());
    }
    value
        .to_str()
        .ok()
        .and_then(|v| IdempotencyKey::parse(v).ok())
        .map(Some)
        .ok_or_else(|| {
            Problem::bad_request(
                "The Idempotency-Key header is not valid: it is 1 to 255 printable ASCII characters. \
                 Send a valid key, or none.",
            )
            .into()
        })
}

/// Reads the whole body, at most `limit` bytes (413 beyond; the rest is never read).
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(Problem::payload_too_large(limit).into())
        }
        Err(e) => {
            tracing::info!(error = %e, "request body could not be read");
            Err(Problem::bad_request(
                "The request body could not be read to its end. Send the request again.",
            )
            .into())
        }
    }
}

/// Parses JSON, saying where it breaks but never echoing the body.
///
/// An object with the same key twice is refused: RFC 8259 leaves its meaning to the reader, so
/// a proxy or a log reader taking the first value would see another request than the one run
/// (serde_json keeps the last).
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice::<Distinct>(bytes)
        .map(|Distinct(value)| value)
        .map_err(|e| {
            use serde_json::error::Category;
            let what = match e.classify() {
                Category::Eof => "it ends too early",
                Category::Syntax => "syntax error",
                Category::Data if e.to_string().starts_with(DUPLICATE_KEY) => DUPLICATE_KEY,
                Category::Data | Category::Io => "unreadable value",
            };
            Problem::malformed_json(&format!(
                "{what} at line {}, column {}",
                e.line(),
                e.column()
            ))
            .into()
        })
}

/// What a repeated key is called in the 400's detail (the key itself is not quoted: it may be
/// huge).
const DUPLICATE_KEY: &str = "the same key twice in one object";

/// A JSON value whose objects have distinct keys (see [`parse_json`]). serde_json's depth limit
/// still applies: it is checked by the parser before any visitor runs.
struct Distinct(Value);

impl<'de> serde::Deserialize<'de> for Distinct {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DistinctVisitor).map(Distinct)
    }
}

struct DistinctVisitor;

impl<'de> serde::de::Visitor<'de> for DistinctVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        serde::Deserialize::deserialize(d).map(|Distinct(v)| v)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Distinct(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if fields.contains_key(&key) {
                return Err(serde::de::Error::custom(DUPLICATE_KEY));
            }
            let Distinct(value) = map.next_value()?;
            fields.insert(key, value);
        }
        Ok(Value::Object(fields))
    }
}

/// The `kind` and `input` of a submission body, or a 422 listing every misplaced field.
///
/// `kind` must be a string (whether it is a known kind is the use case's call); `input` must be
/// an object and may be left out, meaning `{}` (so `{"kind":"x"}` and `{"kind":"x","input":{}}`
/// are the same request, also for Idempotency-Key); no other top-level field is allowed, so a
/// typo such as `"imput"` is reported instead of silently dropped.
pub fn submission(body: Value) -> Result<(String, Value), ApiError> {
    let Value::Object(mut fields) = body else {
        return Err(Problem::invalid_input(vec![FieldError::new(
            "",
            "the body must be a JSON object with 'kind' and 'input'",
        )])
        .into());
    };
    let mut errors = Vec::new();
    let kind = match fields.remove("kind") {
        Some(Value::String(kind)) => Some(kind),
        Some(_) => {
            errors.push(FieldError::new(
                "/kind",
                "must be a string, such as \"demo\"",
            ));
            None
        }
        None => {
            errors.push(FieldError::new("/kind", "is required"));
            None
        }
    };
    let input = match fields.remove("input") {
        None => Some(Value::Object(Map::new())),
        Some(input @ Value::Object(_)) => Some(input),
        Some(_) => {
            errors.push(FieldError::new("/input", "must be a JSON object"));
            None
        }
    };
    // A bounded list: enough to fix the body, never a huge echo of it.
    const MAX_REPORTED: usize = 10;
    // A name is quoted (in the pointer) only while short: an answer never echoes a huge body.
    const MAX_QUOTED_NAME: usize = 64;
    for name in fields.keys().take(MAX_REPORTED) {
        errors.push(if name.len() <= MAX_QUOTED_NAME {
            FieldError::new(
                format!("/{}", escape_pointer(name)),
                "unknown field; only 'kind' and 'input' are allowed",
            )
        } else {
            FieldError::new(
                "",
                format!(
                    "an unknown field whose name is {} bytes long; only 'kind' and 'input' are allowed",
                    name.len()
                ),
            )
        });
    }
    match (kind, input) {
        (Some(kind), Some(input)) if errors.is_empty() => Ok((kind, input)),
        _ => Err(Problem::invalid_input(errors).into()),
    }
}

/// A JSON pointer reference token (RFC 6901 §3).
fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;

    fn problem(e: ApiError) -> Problem {
        e.problem()
    }

    #[test]
    fn json_reads_as_serde_json_reads_it_when_every_key_is_distinct() {
        let text =
            r#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":{"d":18446744073709551615},"e":""}"#;
        let ours = parse_json(text.as_bytes()).expect("parses");
        let theirs: Value = serde_json::from_str(text).expect("parses");
        assert_eq!(ours, theirs);
    }

    #[test]
    fn a_key_given_twice_at_any_depth_is_a_400_that_does_not_quote_it() {
        for text in [
            r#"{"kind":"a","kind":"b"}"#,
            r#"{"input":{"items":[{"sku":"x","sku":"y"}]}}"#,
        ] {
            let p = problem(parse_json(text.as_bytes()).expect_err("refused"));
            assert_eq!(p.status, 400, "{text}");
            assert!(p.detail.contains(DUPLICATE_KEY), "{}", p.detail);
            assert!(
                !p.detail.contains("sku") && !p.detail.contains("kind"),
                "{}",
                p.detail
            );
        }
    }

    #[test]
    fn json_content_types_with_parameters_and_suffixes_are_accepted() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.ackflow+json",
        ] {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ok));
            assert!(require_json(&h).is_ok(), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/jsonx",
            "application/x-www-form-urlencoded",
        ] {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(bad));
            assert_eq!(problem(require_json(&h).expect_err(bad)).status, 415);
        }
        assert!(require_json(&HeaderMap::new()).is_err());
    }

    #[test]
    fn waits_are_whole_seconds_clamped_to_the_cap() {
        let cap = Duration::from_secs(20);
        assert_eq!(wait(None, cap).ok(), Some(Duration::ZERO));
        assert_eq!(wait(Some("3"), cap).ok(), Some(Duration::from_secs(3)));
        assert_eq!(wait(Some("21"), cap).ok(), Some(cap));
        assert_eq!(wait(Some("99999999999999999999999"), cap).ok(), Some(cap));
        for bad in ["-1", "1.5", "soon", " 1"] {
            assert_eq!(problem(wait(Some(bad), cap).expect_err(bad)).status, 400);
        }
    }

    #[test]
    fn if_none_match_compares_weakly_and_understands_lists_and_star() {
        let mut h = HeaderMap::new();
        h.insert(IF_NONE_MATCH, HeaderValue::from_static("W/\"a-1\""));
        let inm = IfNoneMatch::from_headers(&h);
        assert_eq!(inm.single(), Some("\"a-1\""));
        assert!(inm.matches("\"a-1\""));
        h.insert(IF_NONE_MATCH, HeaderValue::from_static("\"a-1\", \"a-2\""));
        let inm = IfNoneMatch::from_headers(&h);
        assert_eq!(inm.single(), None);
        assert!(inm.matches("\"a-2\"") && !inm.matches("\"a-3\""));
        h.insert(IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(IfNoneMatch::from_headers(&h).matches("\"anything\""));
        assert!(!IfNoneMatch::from_headers(&HeaderMap::new()).matches("\"a-1\""));
    }

    #[test]
    fn a_submission_lists_every_misplaced_field_by_pointer() {
        let err =
            submission(json!({"kind": 7, "input": [], "a/b": 1, "x~": 2})).expect_err("refused");
        let pointers: Vec<String> = problem(err).errors.into_iter().map(|e| e.pointer).collect();
        assert_eq!(pointers, ["/kind", "/input", "/a~1b", "/x~0"]);
        let err = submission(json!([1])).expect_err("refused");
        assert_eq!(problem(err).errors[0].pointer, "");
    }

    #[test]
    fn a_missing_input_means_an_empty_object() {
        let (kind, input) = submission(json!({"kind": "demo"})).expect("accepted");
        assert_eq!((kind.as_str(), input), ("demo", json!({})));
    }

    #[test]
    fn malformed_json_is_located_without_echoing_the_body() {
        let p = problem(parse_json(b"{\"secret\": tru").expect_err("refused"));
        assert_eq!(p.status, 400);
        assert!(p.detail.contains("line 1"), "{}", p.detail);
        assert!(!p.detail.contains("secret"), "{}", p.detail);
    }
}
