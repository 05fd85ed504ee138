//! The `order` kind: `{customer, items: [{sku, quantity}]}` — the cart → order example.
//!
//! At accept time the input is checked against the [`CATALOG`]: a customer (1 to 200
//! characters), 1 to 50 lines, each a known `sku` and a `quantity` from 1 to 1000. In the worker
//! the [`OrderProcessor`] merges lines of the same SKU, reserves stock in the [`OrderBook`]
//! (all lines or none), prices the order from the catalog in integer cents and stores it. Its
//! result is the [`ConfirmedOrder`] plus a `summary` for people; an item that is short is a
//! rejection (`out-of-stock`) naming the item, what is left and what to do.
//!
//! The book's adapters live here, beside the processor, so that the storage crates hold
//! ackflow's own data only: `SqliteOrderBook` (feature `sqlite`, in the file of
//! `ackflow-sqlite`) and `DynamoOrderBook` (feature `aws`, in the jobs table of `ackflow-aws`).

pub mod catalog;
#[cfg(feature = "aws")]
mod dynamo;
mod input;
mod port;
mod processor;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use catalog::{item, CatalogItem, CATALOG};
#[cfg(feature = "aws")]
pub use dynamo::DynamoOrderBook;
pub use input::OrderInput;
pub use port::{merge_lines, ConfirmedOrder, OrderBook, OrderLine, PricedLine, ReserveError};
pub use processor::OrderProcessor;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteOrderBook;
