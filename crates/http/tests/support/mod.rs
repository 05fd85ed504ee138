//! What the tests of the Router share: the app over the real SQLite store and queue in a
//! temporary directory, driven through `router(...)` with `tower::ServiceExt::oneshot` (no
//! socket), the `echo` processor, and an answer read whole.

// Each test binary uses a part of this module; clippy's test exemption only sees `#[test]`s.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

use ackflow_core::{
    async_trait, Ackflow, Clock, FieldError, JobContext, JobStore, Kind, ProcessError, Processor,
    Queue, Registry, Settings, SystemClock,
};
use ackflow_http::{router, Anonymous, ApiState, OwnerResolver};
use ackflow_sqlite::{Db, Durability, SqliteQueue, SqliteStore};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use tempfile::TempDir;
use tower::ServiceExt as _;

/// `echo`: `{"text": string, "times": 1..=3 (optional)}` → `{"echo": text repeated}`.
#[derive(Debug)]
pub struct Echo;

#[async_trait]
impl Processor for Echo {
    fn kind(&self) -> Kind {
        Kind::parse("echo").expect("a valid kind")
    }

    fn validate(&self, input: &Value) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if !input.get("text").is_some_and(Value::is_string) {
            errors.push(FieldError::new("/text", "a string is required"));
        }
        if let Some(times) = input.get("times") {
            if !times.as_u64().is_some_and(|n| (1..=3).contains(&n)) {
                errors.push(FieldError::new("/times", "a whole number from 1 to 3"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    async fn process(&self, input: Value, _ctx: &JobContext) -> Result<Value, ProcessError> {
        let text = input["text"].as_str().unwrap_or_default();
        let times = input.get("times").and_then(Value::as_u64).unwrap_or(1);
        Ok(json!({ "echo": text.repeat(times as usize) }))
    }
}

/// A started app: its Router, the use cases behind it, and the directory its SQLite files live
/// in (removed when the app is dropped).
pub struct TestApp {
    pub router: Router,
    pub app: Arc<Ackflow>,
    _dir: TempDir,
}

/// The app most tests want: `echo`, anonymous owners, the default settings (the body limit a
/// deployment gets).
pub fn spawn_app() -> TestApp {
    TestApp::builder().start()
}

impl TestApp {
    /// An app to adjust before it starts; unchanged, it is [`spawn_app`]'s.
    pub fn builder() -> AppBuilder {
        AppBuilder {
            owners: Arc::new(Anonymous),
            settings: Settings::default(),
            registry: Registry::new().with(Echo),
            store: Box::new(|store| Arc::new(store)),
            queue: Box::new(|queue| Arc::new(queue)),
        }
    }

    /// The queue the use cases send to.
    pub fn queue(&self) -> &Arc<dyn Queue> {
        self.app.queue()
    }

    /// Sends `request` through the Router and reads the answer whole.
    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let (parts, body) = response.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.expect("body").to_bytes(),
        }
    }

    /// `GET uri`.
    pub async fn get(&self, uri: &str) -> Answer {
        self.send(get(uri)).await
    }
}

/// What a test may change about the app it starts; the SQLite adapters are always the real ones,
/// and a test that needs a failing port wraps or replaces one of them.
pub struct AppBuilder {
    owners: Arc<dyn OwnerResolver>,
    settings: Settings,
    registry: Registry,
    store: Box<dyn FnOnce(SqliteStore) -> Arc<dyn JobStore>>,
    queue: Box<dyn FnOnce(SqliteQueue) -> Arc<dyn Queue>>,
}

impl AppBuilder {
    /// Who the callers are.
    pub fn owners(mut self, owners: Arc<dyn OwnerResolver>) -> Self {
        self.owners = owners;
        self
    }

    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// The processors, instead of `echo` alone.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// The store the use cases get, made from the SQLite one.
    pub fn store(mut self, store: impl FnOnce(SqliteStore) -> Arc<dyn JobStore> + 'static) -> Self {
        self.store = Box::new(store);
        self
    }

    /// The queue the use cases get, made from the SQLite one.
    pub fn queue(mut self, queue: impl FnOnce(SqliteQueue) -> Arc<dyn Queue> + 'static) -> Self {
        self.queue = Box::new(queue);
        self
    }

    pub fn start(self) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(&dir.path().join("ackflow.db"), Durability::Normal).expect("db");
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = (self.store)(SqliteStore::new(db.clone()));
        let queue = (self.queue)(SqliteQueue::new(db, "jobs", 6, clock.clone()).expect("queue"));
        let app = Arc::new(Ackflow::new(
            store,
            queue,
            self.registry,
            clock,
            self.settings,
        ));
        TestApp {
            router: router(ApiState::new(app.clone(), self.owners)),
            app,
            _dir: dir,
        }
    }
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON; a body that is not JSON fails the test and shows it.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("utf-8")
    }

    /// The header's value, if it has one in visible ASCII.
    pub fn header(&self, name: impl axum::http::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `GET uri` without a body.
pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

/// `method uri` without a body.
pub fn request(method: Method, uri: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .expect("request")
}
