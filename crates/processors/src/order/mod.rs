//! The `order` kind: `{customer, items: [{sku, quantity}]}` — the cart → order example.
//!
//! At accept time the input is checked against the [`CATALOG`]: a customer (1 to 200
//! characters), 1 to 50 lines, each a known `sku` and a `quantity` from 1 to 1000. In the worker
//! the [`OrderProcessor`] merges lines of the same SKU, reserves stock in the [`OrderBook`]
//! (all lines or none), prices the order from the catalog in integer cents and stores it. Its
//! result is the [`ConfirmedOrder`] plus a `summary` for people; an item that is short is a
//! rejection (`out-of-stock`) naming the item, what is left and what to do.

pub mod catalog;
mod input;
mod port;
mod processor;

pub use catalog::{item, CatalogItem, CATALOG};
pub use input::OrderInput;
pub use port::{merge_lines, ConfirmedOrder, OrderBook, OrderLine, PricedLine, ReserveError};
pub use processor::OrderProcessor;
