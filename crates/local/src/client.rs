//! The CLI's side of the HTTP API: submit, read and follow jobs, read the report.
//!
//! Answers are read as JSON values rather than typed views, so that the CLI also copes with
//! errors it did not write: API Gateway answers some itself as `{"message": ...}`.

use std::time::Duration;

use anyhow::Context as _;
use reqwest::header::{ETAG, IF_NONE_MATCH, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::Value;

/// How long one long-poll asks the server to hold the request. The server shortens it to its cap
/// (20 s on one machine, 10 s by default on AWS); the client's own timeout sits well above it.
pub const LONG_POLL: Duration = Duration::from_secs(20);

/// Consecutive transient failures (gateway errors, 503, throttling, a dropped connection) that
/// following a job rides out before it gives up.
const TRANSIENT_TRIES: u32 = 5;

/// The longest pause between two tries after a transient failure, whatever `Retry-After` says.
const MAX_PAUSE: Duration = Duration::from_secs(10);

/// Where the server is and who we are.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Base URL of the ackflow API.
    #[arg(long, env = "ACKFLOW_URL", default_value = "http://127.0.0.1:3000")]
    pub server: String,
    /// Bearer token, when the server has authentication on.
    #[arg(long, env = "ACKFLOW_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// A small client of the ackflow HTTP API.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// An answer the server gave instead of what was asked: a problem (ours) or a gateway's message.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {text}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The problem's title and detail, or the gateway's message.
    pub text: String,
    /// The problem's `type`, when the answer was a problem.
    pub problem_type: Option<String>,
    /// The answer's `Retry-After`, when it had one in seconds.
    pub retry_after: Option<Duration>,
    /// Whether the answer was an error in ackflow's words (a problem) or a gateway's (its
    /// `message`), rather than something else's.
    pub from_ackflow: bool,
}

impl ApiError {
    /// Whether asking again later may work: throttling, a gateway that timed out or failed, a
    /// store or queue that is down for a moment.
    pub fn is_transient(&self) -> bool {
        matches!(self.status, 429 | 502 | 503 | 504)
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached or the connection broke.
    #[error("cannot reach {base}")]
    Unreachable {
        /// The server's base URL.
        base: String,
        /// What the HTTP client said.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The server answered 2xx with something that is not what the API promises.
    #[error("the server's answer is not what ackflow answers: {0}")]
    Unexpected(String),
    /// The answer is neither what was asked for nor an error in ackflow's (or a gateway's)
    /// words: the URL is likely not an ackflow server.
    #[error("the server at {base} did not answer like ackflow ({what})")]
    NotAckflow {
        /// The server's base URL.
        base: String,
        /// What was wrong with the answer.
        what: String,
    },
    /// A job id that cannot be one (ids are UUIDs); refused before it becomes part of a URL.
    #[error(
        "'{0}' is not a job id: job ids are UUIDs such as 0b0f5a4e-3c1d-4e8b-9a57-2f1c3d4e5f60"
    )]
    BadId(String),
}

impl ClientError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Api(e) => e.is_transient(),
            Self::Unexpected(_) | Self::NotAckflow { .. } | Self::BadId(_) => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api(e) => e.retry_after,
            _ => None,
        }
    }
}

/// A job as the server answered it, with its version.
#[derive(Debug, Clone)]
pub struct Versioned {
    /// The job, as JSON.
    pub job: Value,
    /// Its `ETag`, when the answer carried one.
    pub etag: Option<String>,
}

/// The outcome of one long-poll.
#[derive(Debug, Clone)]
pub enum Poll {
    /// The job is not the version the client has.
    Changed(Versioned),
    /// The wait ran out and the job is still the version the client has (304).
    Unchanged,
}

impl Client {
    /// A client of the server at `connection`.
    pub fn new(connection: &Connection) -> anyhow::Result<Self> {
        if let Some(token) = &connection.token {
            // A header cannot carry a newline or other control characters; say so rather than
            // let the HTTP client fail with "builder error".
            anyhow::ensure!(
                !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()),
                "the token (--token or ACKFLOW_TOKEN) holds a space, a newline or another \
                 character an Authorization header cannot carry"
            );
        }
        let http = reqwest::Client::builder()
            .timeout(LONG_POLL * 3)
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Self {
            http,
            base: connection.server.trim_end_matches('/').to_owned(),
            token: connection.token.clone(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        req.send().await.map_err(|source| ClientError::Unreachable {
            base: self.base.clone(),
            source,
        })
    }

    /// Submits a job; returns the job as answered (202) with its version.
    pub async fn submit(
        &self,
        kind: &str,
        input: Value,
        idempotency_key: Option<&str>,
    ) -> Result<Versioned, ClientError> {
        let mut req = self
            .request(reqwest::Method::POST, "/v1/jobs")
            .json(&serde_json::json!({ "kind": kind, "input": input }));
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        self.job_answer(self.send(req).await?).await
    }

    /// The job `id` as it is now.
    pub async fn job(&self, id: &str) -> Result<Versioned, ClientError> {
        let path = job_path(id)?;
        self.job_answer(self.send(self.request(reqwest::Method::GET, &path)).await?)
            .await
    }

    /// Waits up to `wait` (shortened by the server to its cap) for the job `id` to differ from the
    /// version `etag`.
    pub async fn poll(&self, id: &str, etag: &str, wait: Duration) -> Result<Poll, ClientError> {
        let path = format!("{}?wait={}", job_path(id)?, wait.as_secs());
        let req = self
            .request(reqwest::Method::GET, &path)
            .header(IF_NONE_MATCH, etag);
        let resp = self.send(req).await?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(Poll::Unchanged);
        }
        Ok(Poll::Changed(self.job_answer(resp).await?))
    }

    /// The caller's report (`GET /v1/report`), as JSON.
    pub async fn report(&self) -> Result<Value, ClientError> {
        let resp = self
            .send(self.request(reqwest::Method::GET, "/v1/report"))
            .await?;
        let report = self.answer(resp).await?.job;
        if !report.get("counts").is_some_and(Value::is_object) {
            return Err(self.not_ackflow("a report without counts"));
        }
        Ok(report)
    }

    /// A job answer: a job, or the error it is.
    async fn job_answer(&self, resp: reqwest::Response) -> Result<Versioned, ClientError> {
        let answer = self.answer(resp).await?;
        let text = |key: &str| answer.job.get(key).and_then(Value::as_str);
        let known_state =
            text("state").is_some_and(|s| s.parse::<ackflow_core::JobState>().is_ok());
        if text("id").is_some() && text("kind").is_some() && known_state {
            Ok(answer)
        } else {
            Err(self.not_ackflow("a job without an id, a kind and a state"))
        }
    }

    /// A successful answer's JSON, or the error it is: ackflow's problem, a gateway's message,
    /// or (anything else, unless it says to try again later) not an ackflow server at all.
    async fn answer(&self, resp: reqwest::Response) -> Result<Versioned, ClientError> {
        match versioned(resp).await {
            Err(ClientError::Unexpected(what)) => Err(self.not_ackflow(&what)),
            Err(ClientError::Api(e)) if !e.from_ackflow && !e.is_transient() => {
                Err(self.not_ackflow(&format!("a {} answer: {}", e.status, e.text)))
            }
            other => other,
        }
    }

    fn not_ackflow(&self, what: &str) -> ClientError {
        ClientError::NotAckflow {
            base: self.base.clone(),
            what: what.to_owned(),
        }
    }

    /// Follows the job from `start` until it has ended, long-polling; calls `on_answer` with the
    /// job as it stands after every answer (the first one included; an unchanged job again after
    /// each long-poll that ran out) and returns the last version.
    ///
    /// Transient failures (a gateway's 502/504, 503, 429, a dropped connection) are ridden out,
    /// up to a few in a row, pausing as `Retry-After` says: the job goes on regardless, and
    /// someone watching it should not lose track because of one bad moment.
    pub async fn follow(
        &self,
        id: &str,
        start: Versioned,
        mut on_answer: impl FnMut(&Value),
    ) -> Result<Value, ClientError> {
        let mut current = start;
        on_answer(&current.job);
        let mut failures = 0;
        while !is_terminal(&current.job) {
            let outcome = match &current.etag {
                Some(etag) => self.poll(id, etag, LONG_POLL).await,
                // Without a version there is nothing to wait on; this only happens behind a
                // proxy that drops ETags, and then the server's Retry-After paces the reads.
                None => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    self.job(id).await.map(Poll::Changed)
                }
            };
            match outcome {
                Ok(Poll::Unchanged) => {
                    failures = 0;
                    on_answer(&current.job);
                }
                Ok(Poll::Changed(next)) => {
                    failures = 0;
                    current = next;
                    on_answer(&current.job);
                }
                Err(e) if e.is_transient() && failures < TRANSIENT_TRIES => {
                    failures += 1;
                    let pause = e
                        .retry_after()
                        .unwrap_or(Duration::from_secs(1 << failures))
                        .min(MAX_PAUSE);
                    tracing::debug!(error = %e, ?pause, "transient failure while following the job");
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(current.job)
    }
}

/// `/v1/jobs/{id}`, once `id` is known to be a UUID (so it cannot change the URL's meaning).
fn job_path(id: &str) -> Result<String, ClientError> {
    let well_formed = id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if well_formed {
        Ok(format!("/v1/jobs/{id}"))
    } else {
        Err(ClientError::BadId(id.to_owned()))
    }
}

/// Whether a job value is in a terminal state.
pub fn is_terminal(job: &Value) -> bool {
    matches!(
        job.get("state").and_then(Value::as_str),
        Some("succeeded" | "failed" | "cancelled")
    )
}

/// A successful answer's JSON body and ETag, or the error it is.
async fn versioned(resp: reqwest::Response) -> Result<Versioned, ClientError> {
    let status = resp.status();
    let etag = resp
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = resp
        .bytes()
        .await
        .map_err(|e| ClientError::Unexpected(format!("the answer ({status}) was cut off: {e}")))?;
    if status.is_success() {
        let job = serde_json::from_slice(&body)
            .map_err(|_| ClientError::Unexpected(format!("the {status} answer is not JSON")))?;
        return Ok(Versioned { job, etag });
    }
    Err(ClientError::Api(api_error(status, &body, retry_after)))
}

/// An error answer in words: a problem's title and detail, a gateway's message, or the start of
/// whatever else came back.
fn api_error(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> ApiError {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text_of = |key: &str| value.get(key).and_then(Value::as_str);
    let text = match (text_of("title"), text_of("detail"), text_of("message")) {
        (Some(title), Some(detail), _) => format!("{title} — {detail}"),
        (Some(title), None, _) => title.to_owned(),
        (None, _, Some(message)) => message.to_owned(),
        _ => {
            let raw: String = String::from_utf8_lossy(body).chars().take(200).collect();
            let raw = raw.trim();
            if raw.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("no explanation")
                    .to_owned()
            } else {
                raw.to_owned()
            }
        }
    };
    ApiError {
        status: status.as_u16(),
        text,
        problem_type: text_of("type").map(str::to_owned),
        retry_after,
        from_ackflow: text_of("title").is_some() || text_of("message").is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_reads_as_its_title_and_detail() {
        let body = br#"{"type":"urn:ackflow:problem:job-not-found","title":"Job not found","status":404,"detail":"No job with this id."}"#;
        let e = api_error(StatusCode::NOT_FOUND, body, None);
        assert_eq!(e.text, "Job not found — No job with this id.");
        assert_eq!(
            e.problem_type.as_deref(),
            Some("urn:ackflow:problem:job-not-found")
        );
        assert!(!e.is_transient());
    }

    #[test]
    fn an_api_gateway_message_reads_as_the_message_and_its_throttling_is_transient() {
        let e = api_error(
            StatusCode::TOO_MANY_REQUESTS,
            br#"{"message":"Too Many Requests"}"#,
            Some(Duration::from_secs(2)),
        );
        assert_eq!(e.text, "Too Many Requests");
        assert!(e.is_transient());
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
    }

    #[test]
    fn an_empty_error_answer_reads_as_its_status() {
        let e = api_error(StatusCode::BAD_GATEWAY, b"", None);
        assert_eq!(e.text, "Bad Gateway");
    }

    #[test]
    fn only_uuids_become_job_paths() {
        assert_eq!(
            job_path("0b0f5a4e-3c1d-4e8b-9a57-2f1c3d4e5f60").expect("a uuid"),
            "/v1/jobs/0b0f5a4e-3c1d-4e8b-9a57-2f1c3d4e5f60"
        );
        for bad in ["", "../report", "0b0f5a4e-3c1d-4e8b-9a57-2f1c3d4e5f6?", "x"] {
            assert!(matches!(job_path(bad), Err(ClientError::BadId(_))), "{bad}");
        }
    }
}
