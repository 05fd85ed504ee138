//! The `order` processor's own data, behind its own port: stock and confirmed orders.
//! The single machine implements it on SQLite, AWS on DynamoDB; both pass the same contract
//! (`ackflow-testkit`).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use ackflow_core::{JobId, PortError, Timestamp};

/// One line of a cart: how many of which item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The catalog's stock-keeping unit, such as `mug-blue`.
    pub sku: String,
    /// How many, at least 1.
    pub quantity: u32,
}

/// A priced line of a confirmed order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedLine {
    /// The item.
    pub sku: String,
    /// Its name, for people.
    pub name: String,
    /// How many.
    pub quantity: u32,
    /// Price of one, in cents.
    pub unit_price_cents: u64,
    /// `quantity × unit_price_cents`.
    pub line_total_cents: u64,
}

/// An order that was reserved, priced and stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmedOrder {
    /// The order's id: the id of the job that placed it.
    pub order_id: JobId,
    /// Who ordered.
    pub customer: String,
    /// What, priced.
    pub lines: Vec<PricedLine>,
    /// The sum of the lines, in cents.
    pub total_cents: u64,
    /// When it was confirmed.
    pub confirmed_at: Timestamp,
}

/// Why a reservation did not happen. Nothing was reserved.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    /// Not enough of an item: the first line that could not be served.
    #[error("{sku}: {requested} requested, {available} available")]
    OutOfStock {
        /// The item.
        sku: String,
        /// How many the order asked for.
        requested: u32,
        /// How many are left.
        available: u32,
    },
    /// The item is not stocked at all.
    #[error("unknown sku {0}")]
    UnknownSku(String),
    /// The backend failed; trying again may help.
    #[error(transparent)]
    Port(#[from] PortError),
}

/// `lines` with the quantities of repeated SKUs summed, each SKU once, in order of first
/// appearance. The port promises distinct SKUs; adapters merge anyway, so that a careless caller
/// is served instead of failing on a reservation key (one transaction cannot touch an item twice).
pub fn merge_lines(lines: &[OrderLine]) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = Vec::with_capacity(lines.len());
    for line in lines {
        match out.iter_mut().find(|(sku, _)| *sku == line.sku) {
            Some((_, quantity)) => *quantity = quantity.saturating_add(line.quantity),
            None => out.push((line.sku.clone(), line.quantity)),
        }
    }
    out
}

/// Stock and orders.
#[async_trait]
pub trait OrderBook: Send + Sync + std::fmt::Debug {
    /// Reserves every line or none (lines name distinct SKUs). At most once per `order_id`: when
    /// this order already holds a reservation, returns `Ok` and reserves nothing more, so a
    /// retried delivery never reserves twice.
    async fn reserve(&self, order_id: JobId, lines: &[OrderLine]) -> Result<(), ReserveError>;

    /// Stores a confirmed order. Storing the same order again changes nothing.
    async fn confirm(&self, order: &ConfirmedOrder) -> Result<(), PortError>;

    /// How many of `sku` are left, `None` when it is not stocked.
    async fn available(&self, sku: &str) -> Result<Option<u32>, PortError>;

    /// A confirmed order.
    async fn order(&self, order_id: JobId) -> Result<Option<ConfirmedOrder>, PortError>;
}
