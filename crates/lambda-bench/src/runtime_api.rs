//! A stub of the Lambda Runtime API (version 2018-06-01) on 127.0.0.1: what a function's
//! runtime client (`lambda_runtime`) talks to inside a Lambda sandbox. The driver hands out
//! one invocation at a time ([`RuntimeApi::hand_out`]) and reads what the function did
//! ([`RuntimeApi::next_event`]): each `next` request, each response or error, an init error,
//! each stamped with the [`Instant`] it arrived.
//!
//! Routes: `GET /2018-06-01/runtime/invocation/next` (long-polls until an invocation is handed
//! out; answers with the event and the headers Lambda sends),
//! `POST /2018-06-01/runtime/invocation/{id}/response`, `POST …/{id}/error` and
//! `POST /2018-06-01/runtime/init/error` (each `202 {"status":"OK"}`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Mutex};

/// One invocation for the function.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The request id (`Lambda-Runtime-Aws-Request-Id`).
    pub request_id: String,
    /// The event, as JSON.
    pub event: Value,
    /// How long the function may take (`Lambda-Runtime-Deadline-Ms` is now + this).
    pub timeout: Duration,
    /// The function's ARN (`Lambda-Runtime-Invoked-Function-Arn`).
    pub function_arn: String,
}

/// What the function did, as seen by the stub.
#[derive(Debug, Clone)]
pub enum Seen {
    /// It asked for the next invocation (`GET …/invocation/next`): its first one ends init.
    Next {
        /// When the request arrived.
        at: Instant,
    },
    /// It answered an invocation.
    Response {
        /// The invocation's request id.
        request_id: String,
        /// The answer's body.
        body: Bytes,
        /// When it arrived.
        at: Instant,
    },
    /// It reported an invocation as failed.
    Error {
        /// The invocation's request id.
        request_id: String,
        /// The error's body (`errorType`, `errorMessage`).
        body: Bytes,
        /// When it arrived.
        at: Instant,
    },
    /// It could not start.
    InitError {
        /// The error's body.
        body: Bytes,
    },
}

#[derive(Debug)]
struct Shared {
    handouts: Mutex<mpsc::Receiver<Invocation>>,
    seen: mpsc::UnboundedSender<Seen>,
}

/// The running stub: its address (the value of `AWS_LAMBDA_RUNTIME_API`) and the driver's ends
/// of its channels. Dropping it stops handing out invocations.
#[derive(Debug)]
pub struct RuntimeApi {
    /// Where it listens.
    pub addr: SocketAddr,
    handouts: mpsc::Sender<Invocation>,
    seen: mpsc::UnboundedReceiver<Seen>,
    server: tokio::task::JoinHandle<()>,
}

/// Why the stub could not start.
#[derive(Debug, thiserror::Error)]
#[error("could not listen on 127.0.0.1")]
pub struct BindError(#[source] pub std::io::Error);

impl RuntimeApi {
    /// Listens on a free port of 127.0.0.1 and serves the Runtime API there.
    pub async fn start() -> Result<Self, BindError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(BindError)?;
        let addr = listener.local_addr().map_err(BindError)?;
        let (handouts_tx, handouts_rx) = mpsc::channel(1);
        let (seen_tx, seen_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            handouts: Mutex::new(handouts_rx),
            seen: seen_tx,
        });
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared);
        let server = tokio::spawn(async move {
            // Serving ends only when the task is aborted (on drop) or the listener fails; a
            // failure shows to the driver as a function that never asks for work.
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self {
            addr,
            handouts: handouts_tx,
            seen: seen_rx,
            server,
        })
    }

    /// Hands `invocation` to the function's pending (or next) `next` request. `false` when the
    /// stub no longer serves.
    pub async fn hand_out(&self, invocation: Invocation) -> bool {
        self.handouts.send(invocation).await.is_ok()
    }

    /// The next thing the function did, or `None` after `wait` without one.
    pub async fn next_event(&mut self, wait: Duration) -> Option<Seen> {
        tokio::time::timeout(wait, self.seen.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let _ = shared.seen.send(Seen::Next { at: Instant::now() });
    let handed = shared.handouts.lock().await.recv().await;
    let Some(invocation) = handed else {
        // The driver is done: the function is about to be stopped.
        return (StatusCode::GONE, HeaderMap::new(), Json(json!({}))).into_response();
    };
    let deadline = SystemTime::now()
        .checked_add(invocation.timeout)
        .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis());
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set(
        "lambda-runtime-aws-request-id",
        invocation.request_id.clone(),
    );
    set("lambda-runtime-deadline-ms", deadline.to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        invocation.function_arn.clone(),
    );
    set(
        "lambda-runtime-trace-id",
        format!(
            "Root=1-{:08x}-{:0>24};Parent=53995c3f42cd8ad8;Sampled=0",
            deadline / 1000,
            invocation
                .request_id
                .replace('-', "")
                .get(..24)
                .unwrap_or("0")
        ),
    );
    (StatusCode::OK, headers, Json(invocation.event)).into_response()
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(request_id): Path<String>,
    body: Bytes,
) -> impl IntoResponse {
    let at = Instant::now();
    let _ = shared.seen.send(Seen::Response {
        request_id,
        body,
        at,
    });
    accepted()
}

async fn error(
    State(shared): State<Arc<Shared>>,
    Path(request_id): Path<String>,
    body: Bytes,
) -> impl IntoResponse {
    let at = Instant::now();
    let _ = shared.seen.send(Seen::Error {
        request_id,
        body,
        at,
    });
    accepted()
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> impl IntoResponse {
    let _ = shared.seen.send(Seen::InitError { body });
    accepted()
}

fn accepted() -> impl IntoResponse {
    (StatusCode::ACCEPTED, Json(json!({ "status": "OK" })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// One HTTP/1.1 exchange on a fresh connection; returns the whole response as text.
    async fn exchange(addr: SocketAddr, request: String) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("request written");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("answer read");
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn an_invocation_is_handed_out_with_lambdas_headers_and_its_answer_comes_back() {
        let mut api = RuntimeApi::start().await.expect("listening");
        let addr = api.addr;
        let poll = tokio::spawn(exchange(
            addr,
            "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
                .to_owned(),
        ));
        assert!(matches!(
            api.next_event(Duration::from_secs(10)).await,
            Some(Seen::Next { .. })
        ));
        assert!(
            api.hand_out(Invocation {
                request_id: "req-1".to_owned(),
                event: json!({ "hello": "world" }),
                timeout: Duration::from_secs(60),
                function_arn: "arn:aws:lambda:us-east-1:123456789012:function:hello".to_owned(),
            })
            .await
        );
        let handed = poll.await.expect("poll task").to_ascii_lowercase();
        assert!(handed.starts_with("http/1.1 200"), "{handed}");
        for header in [
            "lambda-runtime-aws-request-id: req-1",
            "lambda-runtime-deadline-ms: ",
            "lambda-runtime-invoked-function-arn: arn:aws:lambda:",
            "lambda-runtime-trace-id: root=1-",
        ] {
            assert!(handed.contains(header), "{header} missing from {handed}");
        }
        assert!(handed.contains(r#"{"hello":"world"}"#), "{handed}");

        let body = r#"{"ok":true}"#;
        let answer = exchange(
            addr,
            format!(
                "POST /2018-06-01/runtime/invocation/req-1/response HTTP/1.1\r\nhost: x\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
        match api.next_event(Duration::from_secs(10)).await {
            Some(Seen::Response {
                request_id, body, ..
            }) => {
                assert_eq!(request_id, "req-1");
                assert_eq!(&body[..], br#"{"ok":true}"#);
            }
            other => panic!("expected the response, saw {other:?}"),
        }
    }

    #[tokio::test]
    async fn errors_and_init_errors_are_reported_to_the_driver() {
        let mut api = RuntimeApi::start().await.expect("listening");
        let post = |path: &str| {
            format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
            )
        };
        let answer = exchange(api.addr, post("/2018-06-01/runtime/init/error")).await;
        assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
        assert!(matches!(
            api.next_event(Duration::from_secs(10)).await,
            Some(Seen::InitError { .. })
        ));
        let answer = exchange(api.addr, post("/2018-06-01/runtime/invocation/r9/error")).await;
        assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
        assert!(matches!(
            api.next_event(Duration::from_secs(10)).await,
            Some(Seen::Error { request_id, .. }) if request_id == "r9"
        ));
    }
}
