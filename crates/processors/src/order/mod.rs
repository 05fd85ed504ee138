//! The `order` kind: `{customer, items: [{sku, quantity}]}`.

pub mod catalog;
mod port;

pub use catalog::{item, CatalogItem, CATALOG};
pub use port::{ConfirmedOrder, OrderBook, OrderLine, PricedLine, ReserveError};
