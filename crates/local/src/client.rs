//! The CLI's side of the HTTP API: `ackflow submit` and `ackflow status`.
//!
//! Answers are read as JSON values rather than typed views, so that the CLI also copes with
//! errors it did not write: API Gateway answers some itself as `{"message": ...}`.

use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::Value;

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

/// An answer the server gave instead of a job: a problem (ours) or a gateway's message.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {text}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The problem's title and detail, or the gateway's message.
    pub text: String,
}

impl Client {
    /// A client of the server at `connection`.
    pub fn new(connection: &Connection) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
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

    /// Submits a job; returns the job as answered (202).
    pub async fn submit(
        &self,
        kind: &str,
        input: Value,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .request(reqwest::Method::POST, "/v1/jobs")
            .json(&serde_json::json!({ "kind": kind, "input": input }));
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        read(resp).await
    }

    /// The job `id`, waiting up to `wait` for a change from `etag`.
    pub async fn status(
        &self,
        id: &str,
        wait: Option<Duration>,
        etag: Option<&str>,
    ) -> anyhow::Result<Value> {
        let path = match wait {
            Some(w) => format!("/v1/jobs/{id}?wait={}", w.as_secs()),
            None => format!("/v1/jobs/{id}"),
        };
        let mut req = self.request(reqwest::Method::GET, &path);
        if let Some(etag) = etag {
            req = req.header("If-None-Match", etag);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        read(resp).await
    }

    /// Follows the job until it is terminal, long-polling; returns its last state.
    pub async fn wait_until_terminal(
        &self,
        id: &str,
        mut on_change: impl FnMut(&Value),
    ) -> anyhow::Result<Value> {
        let mut job = self.status(id, None, None).await?;
        loop {
            on_change(&job);
            if is_terminal(&job) {
                return Ok(job);
            }
            job = self.status(id, Some(Duration::from_secs(20)), None).await?;
        }
    }
}

/// Whether a job value is in a terminal state.
pub fn is_terminal(job: &Value) -> bool {
    matches!(
        job.get("state").and_then(Value::as_str),
        Some("succeeded" | "failed" | "cancelled")
    )
}

async fn read(resp: reqwest::Response) -> anyhow::Result<Value> {
    let status = resp.status();
    let body = resp.bytes().await.context("the answer was cut off")?;
    if status.is_success() {
        return serde_json::from_slice(&body)
            .context("the server answered something that is not JSON");
    }
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let text = match (
        value.get("title"),
        value.get("detail"),
        value.get("message"),
    ) {
        (Some(title), Some(detail), _) => format!(
            "{} — {}",
            title.as_str().unwrap_or(""),
            detail.as_str().unwrap_or("")
        ),
        (_, _, Some(message)) => message.as_str().unwrap_or("").to_owned(),
        _ => String::from_utf8_lossy(&body).chars().take(200).collect(),
    };
    bail!(ApiError {
        status: status.as_u16(),
        text
    })
}
