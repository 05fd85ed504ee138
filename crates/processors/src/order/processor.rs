//! The `order` processor: check the cart, reserve stock, price, confirm.

use std::sync::Arc;

use ackflow_core::{
    async_trait, Clock, FieldError, JobContext, Kind, PortError, ProcessError, Processor, Rejection,
};
use serde_json::Value;

use super::{catalog, ConfirmedOrder, OrderBook, OrderInput, OrderLine, PricedLine, ReserveError};
use crate::input;

/// The `order` processor: a cart becomes a confirmed order, or a rejection that says which item
/// stood in the way and what to do.
///
/// Safe to run more than once for the same job: the reservation is keyed by the job id (the
/// order id), and an order already confirmed by an earlier attempt is returned as it was stored.
#[derive(Debug, Clone)]
pub struct OrderProcessor {
    book: Arc<dyn OrderBook>,
    clock: Arc<dyn Clock>,
}

impl OrderProcessor {
    /// The kind it serves.
    pub const KIND: &'static str = "order";

    /// An order processor keeping stock and orders in `book`, stamping orders with `clock`.
    pub fn new(book: Arc<dyn OrderBook>, clock: Arc<dyn Clock>) -> Self {
        Self { book, clock }
    }
}

/// Which order-book call failed, for the logs (people only learn that a temporary problem
/// occurred; the job is tried again).
#[derive(Debug, thiserror::Error)]
enum BookError {
    #[error("looking up order {0}")]
    Lookup(ackflow_core::JobId, #[source] PortError),
    #[error("reserving stock for order {0}")]
    Reserve(ackflow_core::JobId, #[source] PortError),
    #[error("confirming order {0}")]
    Confirm(ackflow_core::JobId, #[source] PortError),
    #[error("serializing order {0}")]
    Serialize(ackflow_core::JobId, #[source] serde_json::Error),
}

/// A cart line after merging: the quantity of one SKU over the whole cart, and the first line
/// it came from (where a problem with it is pointed at).
#[derive(Debug)]
struct Merged {
    line: OrderLine,
    first_index: usize,
}

#[async_trait]
impl Processor for OrderProcessor {
    fn kind(&self) -> Kind {
        crate::kind(Self::KIND)
    }

    fn validate(&self, input: &Value) -> Result<(), Vec<FieldError>> {
        OrderInput::parse(input).map(drop)
    }

    async fn process(&self, input: Value, ctx: &JobContext) -> Result<Value, ProcessError> {
        let id = ctx.id;
        ctx.progress(10, "Checking the cart").await;
        let input = OrderInput::parse(&input).map_err(input::invalid_input)?;
        let merged = merge(&input.items)?;
        // Priced before anything is reserved: the port cannot release a reservation, so every
        // reason to refuse the order that needs no stock must come first.
        let (lines, total_cents) = price(&merged)?;

        // A retry after the order was confirmed (the job's final write was lost) returns the
        // stored order, so the result never differs from what was kept (`confirmed_at`).
        let confirmed = self
            .book
            .order(id)
            .await
            .map_err(|e| ProcessError::transient(BookError::Lookup(id, e)))?;
        let order = match confirmed {
            Some(order) => order,
            None => {
                ctx.progress(40, "Reserving stock").await;
                let reservation: Vec<OrderLine> = merged.iter().map(|m| m.line.clone()).collect();
                self.book
                    .reserve(id, &reservation)
                    .await
                    .map_err(|e| refusal(e, &merged, id))?;

                ctx.progress(70, "Pricing the order").await;
                let order = ConfirmedOrder {
                    order_id: id,
                    customer: input.customer,
                    lines,
                    total_cents,
                    confirmed_at: self.clock.now(),
                };

                ctx.progress(90, "Confirming the order").await;
                self.book
                    .confirm(&order)
                    .await
                    .map_err(|e| ProcessError::transient(BookError::Confirm(id, e)))?;
                order
            }
        };

        let summary = summary(&order);
        let mut result = serde_json::to_value(&order)
            .map_err(|e| ProcessError::transient(BookError::Serialize(id, e)))?;
        if let Value::Object(fields) = &mut result {
            fields.insert("summary".to_owned(), Value::String(summary));
        }
        Ok(result)
    }
}

/// Sums the quantities of lines naming the same SKU, keeping the cart's order: the port wants
/// distinct SKUs, and stock is checked against what the whole cart asks for.
fn merge(items: &[OrderLine]) -> Result<Vec<Merged>, Rejection> {
    let mut merged: Vec<Merged> = Vec::with_capacity(items.len());
    for (index, line) in items.iter().enumerate() {
        match merged.iter_mut().find(|m| m.line.sku == line.sku) {
            Some(m) => {
                m.line.quantity = m
                    .line
                    .quantity
                    .checked_add(line.quantity)
                    .ok_or_else(too_large)?;
            }
            None => merged.push(Merged {
                line: line.clone(),
                first_index: index,
            }),
        }
    }
    Ok(merged)
}

/// The priced lines and their total, in cents, from the catalog.
fn price(merged: &[Merged]) -> Result<(Vec<PricedLine>, u64), Rejection> {
    let mut total: u64 = 0;
    let mut lines = Vec::with_capacity(merged.len());
    for m in merged {
        let item =
            catalog::item(&m.line.sku).ok_or_else(|| unknown_item(&m.line.sku, m.first_index))?;
        let line_total = u64::from(m.line.quantity)
            .checked_mul(item.unit_price_cents)
            .ok_or_else(too_large)?;
        total = total.checked_add(line_total).ok_or_else(too_large)?;
        lines.push(PricedLine {
            sku: item.sku.to_owned(),
            name: item.name.to_owned(),
            quantity: m.line.quantity,
            unit_price_cents: item.unit_price_cents,
            line_total_cents: line_total,
        });
    }
    Ok((lines, total))
}

/// What a failed reservation means for the person who ordered.
fn refusal(error: ReserveError, merged: &[Merged], id: ackflow_core::JobId) -> ProcessError {
    let first_index = |sku: &str| {
        merged
            .iter()
            .find(|m| m.line.sku == sku)
            .map(|m| m.first_index)
    };
    match error {
        ReserveError::OutOfStock {
            sku,
            requested,
            available,
        } => {
            let name = catalog::item(&sku).map_or(sku.as_str(), |i| i.name);
            let (detail, field) = if available == 0 {
                (
                    format!(
                        "{name} is sold out; remove it from your order, then order again. \
                         Nothing was reserved or charged."
                    ),
                    "sold out".to_owned(),
                )
            } else {
                (
                    format!(
                        "{name} has {available} left and your order asked for {requested}; \
                         lower the quantity or remove it, then order again. \
                         Nothing was reserved or charged."
                    ),
                    format!("only {available} left; the order asks for {requested}"),
                )
            };
            let errors = first_index(&sku)
                .map(|i| {
                    vec![FieldError::new(
                        input::member(&input::index("/items", i), "quantity"),
                        field,
                    )]
                })
                .unwrap_or_default();
            Rejection::new("out-of-stock", "Out of stock", detail)
                .with_errors(errors)
                .into()
        }
        ReserveError::UnknownSku(sku) => match first_index(&sku) {
            Some(i) => unknown_item(&sku, i).into(),
            None => Rejection::new(
                "unknown-item",
                "Unknown item",
                format!(
                    "'{}' is not sold; remove it from your order, then order again.",
                    input::shorten(&sku, 60)
                ),
            )
            .into(),
        },
        ReserveError::Port(e) => ProcessError::transient(BookError::Reserve(id, e)),
    }
}

fn unknown_item(sku: &str, index: usize) -> Rejection {
    Rejection::new(
        "unknown-item",
        "Unknown item",
        format!(
            "'{}' is not sold any more; remove it from your order, then order again. \
             Nothing was reserved or charged.",
            input::shorten(sku, 60)
        ),
    )
    .with_errors(vec![FieldError::new(
        input::member(&input::index("/items", index), "sku"),
        "not sold any more",
    )])
}

/// Within the input's bounds (50 lines × 1000 × the dearest item) no total overflows; this is
/// the answer should the bounds or prices ever allow it.
fn too_large() -> Rejection {
    Rejection::new(
        "order-too-large",
        "Order too large",
        "The order's total is too large to be priced. Nothing was reserved or charged; \
         split it into smaller orders.",
    )
}

/// "Order confirmed: 3 items, 37.50".
fn summary(order: &ConfirmedOrder) -> String {
    let count: u64 = order.lines.iter().map(|l| u64::from(l.quantity)).sum();
    let noun = if count == 1 { "item" } else { "items" };
    format!(
        "Order confirmed: {count} {noun}, {}",
        money(order.total_cents)
    )
}

/// Cents as a decimal amount, such as `37.50`.
fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, quantity: u32) -> OrderLine {
        OrderLine {
            sku: sku.to_owned(),
            quantity,
        }
    }

    #[test]
    fn amounts_are_written_with_two_decimals() {
        assert_eq!(money(0), "0.00");
        assert_eq!(money(5), "0.05");
        assert_eq!(money(3750), "37.50");
        assert_eq!(money(123_456), "1234.56");
    }

    #[test]
    fn duplicate_skus_are_merged_in_cart_order_and_remember_their_first_line() {
        let merged = merge(&[
            line("mug-red", 2),
            line("tea-sencha", 1),
            line("mug-red", 3),
        ])
        .unwrap();
        let got: Vec<_> = merged
            .iter()
            .map(|m| (m.line.sku.as_str(), m.line.quantity, m.first_index))
            .collect();
        assert_eq!(got, [("mug-red", 5, 0), ("tea-sencha", 1, 1)]);
    }

    #[test]
    fn a_quantity_that_overflows_is_refused_not_wrapped() {
        let err = merge(&[line("mug-red", u32::MAX), line("mug-red", 1)]).unwrap_err();
        assert_eq!(err.slug, "order-too-large");
    }

    #[test]
    fn prices_come_from_the_catalog() {
        let merged = merge(&[line("mug-red", 2), line("coaster-cork", 3)]).unwrap();
        let (lines, total) = price(&merged).unwrap();
        assert_eq!(lines[0].line_total_cents, 2 * 1250);
        assert_eq!(lines[0].name, "Red Mug");
        assert_eq!(lines[1].line_total_cents, 3 * 300);
        assert_eq!(total, 2 * 1250 + 3 * 300);
    }
}
