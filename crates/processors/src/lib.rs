//! # ackflow-processors
//!
//! The processors that ship with ackflow.
//!
//! # Layout
//!
//! - [`demo`]: for trying the system and for tests driven from outside.
//! - [`order`]: the worked example — a cart checks out, the order is acknowledged at once and
//!   confirmed or rejected later; its data lives behind the [`order::OrderBook`] port.
//! - [`registry_with`]: both, ready for a runtime.
//!
//! Both parse their input into a typed value ([`demo::DemoInput`], [`order::OrderInput`]) with
//! the same rules at accept time and in the worker; every invalid field is reported at once,
//! with its JSON pointer, and unknown fields are refused so that a typo is never ignored.
//!
//! # Adding your own processor
//!
//! A deployment serves the processors of its [`Registry`]. Start from the shipped ones and add
//! yours:
//!
//! ```
//! use std::sync::Arc;
//!
//! use ackflow_core::{async_trait, Clock, FieldError, JobContext, Kind, ProcessError, Processor, Registry, SystemClock};
//! use ackflow_processors::{order::OrderBook, registry_with};
//! use serde_json::{json, Value};
//!
//! /// Counts the words of `{"text": "..."}`.
//! #[derive(Debug)]
//! struct WordCount;
//!
//! #[async_trait]
//! impl Processor for WordCount {
//!     fn kind(&self) -> Kind {
//!         Kind::parse("word-count").expect("a valid kind")
//!     }
//!
//!     fn validate(&self, input: &Value) -> Result<(), Vec<FieldError>> {
//!         match input.get("text") {
//!             Some(Value::String(_)) => Ok(()),
//!             _ => Err(vec![FieldError::new("/text", "a string is required")]),
//!         }
//!     }
//!
//!     async fn process(&self, input: Value, ctx: &JobContext) -> Result<Value, ProcessError> {
//!         ctx.progress(50, "Counting").await;
//!         let words = input["text"].as_str().unwrap_or_default().split_whitespace().count();
//!         Ok(json!({ "words": words }))
//!     }
//! }
//!
//! /// `book` is the runtime's order book (SQLite on one machine, DynamoDB on AWS).
//! fn registry(book: Arc<dyn OrderBook>, demo: bool) -> Registry {
//!     registry_with(book, Arc::new(SystemClock), demo).with(WordCount)
//! }
//! # #[derive(Debug)]
//! # struct NoBook;
//! # #[async_trait]
//! # impl OrderBook for NoBook {
//! #     async fn reserve(&self, _: ackflow_core::JobId, _: &[ackflow_processors::order::OrderLine]) -> Result<(), ackflow_processors::order::ReserveError> { unimplemented!() }
//! #     async fn confirm(&self, _: &ackflow_processors::order::ConfirmedOrder) -> Result<(), ackflow_core::PortError> { unimplemented!() }
//! #     async fn available(&self, _: &str) -> Result<Option<u32>, ackflow_core::PortError> { unimplemented!() }
//! #     async fn order(&self, _: ackflow_core::JobId) -> Result<Option<ackflow_processors::order::ConfirmedOrder>, ackflow_core::PortError> { unimplemented!() }
//! # }
//! # let book: Arc<dyn OrderBook> = Arc::new(NoBook);
//!
//! assert_eq!(registry(book.clone(), true).kinds(), ["demo", "order", "word-count"]);
//! assert_eq!(registry(book, false).kinds(), ["order", "word-count"]);
//! ```

use std::sync::Arc;

use ackflow_core::{Clock, Kind, Registry};

pub mod demo;
mod input;
pub mod order;

/// The shipped processors: `order`, keeping its data in `book` and stamping orders with
/// `clock`, and `demo` when `demo` is true (on by default on the single machine, off on AWS
/// unless configured).
pub fn registry_with(
    book: Arc<dyn order::OrderBook>,
    clock: Arc<dyn Clock>,
    demo: bool,
) -> Registry {
    let registry = Registry::new().with(order::OrderProcessor::new(book, clock));
    if demo {
        registry.with(demo::Demo::new())
    } else {
        registry
    }
}

/// The [`Kind`] named by one of this crate's constants.
#[allow(
    clippy::expect_used,
    reason = "the names are constants of this crate, checked by its tests"
)]
pub(crate) fn kind(name: &'static str) -> Kind {
    Kind::parse(name).expect("a constant kind name is valid")
}
