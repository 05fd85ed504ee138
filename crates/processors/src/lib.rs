//! # ackflow-processors
//!
//! The processors that ship with ackflow.
//!
//! # Layout
//!
//! - [`demo`]: for trying the system and for tests driven from outside.
//! - [`order`]: the worked example — a cart checks out, the order is acknowledged at once and
//!   confirmed or rejected later; its data lives behind the [`order::OrderBook`] port.

pub mod demo;
pub mod order;
