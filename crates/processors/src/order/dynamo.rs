//! [`OrderBook`] on DynamoDB: stock items seeded once, reservations as one transaction of a
//! marker and conditional decrements, confirmed orders written once, all in the jobs table
//! (its layout: `ackflow_aws::dynamo`).

use std::collections::HashMap;
use std::sync::Arc;

use ackflow_aws::dynamo::{
    failed_at, get_item, key, n, number_attr, s, transact, Item, TxError, CONDITION_FAILED, PK, SK,
};
use ackflow_aws::{classify, unexpected};
use ackflow_core::{async_trait, JobId, PortError};
use aws_sdk_dynamodb::types::{
    CancellationReason, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use serde_dynamo::aws_sdk_dynamodb_1::{from_item, to_item};

use super::{
    merge_lines, CatalogItem, ConfirmedOrder, OrderBook, OrderLine, ReserveError, CATALOG,
};

const STOCK: &str = "STOCK";
const RESERVATION: &str = "RESERVATION";
const ORDER: &str = "ORDER";
/// A transaction holds at most 100 items: the marker and 99 lines. (The `order` kind accepts
/// at most 50 lines.)
const MAX_LINES: usize = 99;
/// What the writes that stock catalog items are called in errors.
const SEEDING: &str = "stock the catalog";

/// The `order` processor's data on AWS, in the jobs table.
#[derive(Debug, Clone)]
pub struct DynamoOrderBook {
    client: Client,
    table: Arc<str>,
}

fn stock_pk(sku: &str) -> String {
    format!("STOCK#{sku}")
}

fn order_pk(id: JobId) -> String {
    format!("ORDER#{id}")
}

/// The stock item of a catalog item, with its initial stock.
fn initial_stock_item(item: &CatalogItem) -> Item {
    let mut stock = key(stock_pk(item.sku), STOCK);
    stock.insert("sku".into(), s(item.sku));
    stock.insert("available".into(), n(item.initial_stock));
    stock
}

fn available_of(item: &Item) -> Option<u32> {
    number_attr(item, "available").map(|n| u32::try_from(n).unwrap_or(0))
}

impl DynamoOrderBook {
    /// The order book in `table`. Its stock is seeded on first use (see
    /// [`OrderBook::reserve`]); [`DynamoOrderBook::seed`] stocks the whole catalog at once.
    pub fn new(client: Client, table: String) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Gives every catalog item that has no stock item yet its initial stock. Existing stock is
    /// left alone (`attribute_not_exists`), so seeding again never refills it.
    pub async fn seed(&self) -> Result<(), PortError> {
        let puts = CATALOG
            .iter()
            .map(|item| self.put_once(SEEDING, initial_stock_item(item)));
        futures_util::future::try_join_all(puts).await?;
        Ok(())
    }

    /// Puts `item` unless an item with its key exists; an existing one is left as it is and
    /// counts as done (a second seeding, a retried confirmation).
    async fn put_once(&self, what: &'static str, item: Item) -> Result<(), PortError> {
        let outcome = self
            .client
            .put_item()
            .table_name(&*self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await;
        match outcome {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(classify(what, e)),
        }
    }

    /// The stock of `sku`: its stock item's, or, for a catalog item not stocked yet, the
    /// initial stock its first order will seed; `None` for a SKU outside the catalog.
    async fn stock_of(&self, sku: &str) -> Result<Option<u32>, PortError> {
        let item = get_item(
            &self.client,
            &self.table,
            "read stock",
            key(stock_pk(sku), STOCK),
        )
        .await?;
        Ok(match item {
            Some(item) => available_of(&item),
            None => super::item(sku).map(|i| i.initial_stock),
        })
    }

    /// The reservation's transaction: its marker, then one conditional decrement per line.
    fn reservation(
        &self,
        order_id: JobId,
        lines: &[(String, u32)],
    ) -> Result<Vec<TransactWriteItem>, PortError> {
        const WHAT: &str = "reserve stock";
        let mut marker = key(order_pk(order_id), RESERVATION);
        let text = serde_json::to_string(
            &lines
                .iter()
                .map(|(sku, quantity)| OrderLine {
                    sku: sku.clone(),
                    quantity: *quantity,
                })
                .collect::<Vec<_>>(),
        )
        .map_err(|e| PortError::failed(WHAT, e))?;
        marker.insert("lines".into(), s(text));
        let marker = Put::builder()
            .table_name(&*self.table)
            .set_item(Some(marker))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
            .map_err(|e| PortError::failed(WHAT, e))?;
        let mut items = vec![TransactWriteItem::builder().put(marker).build()];
        for (sku, quantity) in lines {
            let take = Update::builder()
                .table_name(&*self.table)
                .set_key(Some(key(stock_pk(sku), STOCK)))
                .update_expression("SET #available = #available - :q")
                .condition_expression("attribute_exists(#pk) AND #available >= :q")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#available", "available")
                .expression_attribute_values(":q", n(quantity))
                // The stock item as it was when the condition failed: how many were left.
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .build()
                .map_err(|e| PortError::failed(WHAT, e))?;
            items.push(TransactWriteItem::builder().update(take).build());
        }
        Ok(items)
    }

    /// Why a reservation that was cancelled by a line's condition could not be served: the
    /// first line that was short.
    async fn shortfall(
        &self,
        lines: &[(String, u32)],
        reasons: &[CancellationReason],
    ) -> Result<ReserveError, PortError> {
        const WHAT: &str = "reserve stock";
        // Reason i + 1 belongs to line i; report the first line that could not be served.
        for (i, (sku, quantity)) in lines.iter().enumerate() {
            let Some(reason) = reasons.get(i + 1) else {
                break;
            };
            if reason.code() != Some(CONDITION_FAILED) {
                continue;
            }
            let available = match reason.item() {
                // No old item: the SKU is not stocked at all.
                Some(old) if !old.is_empty() => available_of(old),
                Some(_) => None,
                // A backend that does not return the old item: read it.
                None => self.stock_of(sku).await?,
            };
            return Ok(match available {
                None => ReserveError::UnknownSku(sku.clone()),
                Some(available) => ReserveError::OutOfStock {
                    sku: sku.clone(),
                    requested: *quantity,
                    available,
                },
            });
        }
        Err(unexpected(
            WHAT,
            "a condition failed, but on no item of the reservation",
        ))
    }
}

#[async_trait]
impl OrderBook for DynamoOrderBook {
    /// One transaction: a reservation marker for the order (`attribute_not_exists`) and a
    /// conditional decrement per line (`available >= :q`). When the marker exists the order is
    /// already reserved and nothing more is taken; when a line is short nothing is taken.
    ///
    /// Stock is seeded on first use: a catalog item with no stock item yet is given its
    /// initial stock ([`DynamoOrderBook::seed`]'s conditional put, which never refills) and
    /// the reservation is tried once more. So no function seeds at cold start, and a fresh
    /// deployment takes orders at once.
    async fn reserve(&self, order_id: JobId, lines: &[OrderLine]) -> Result<(), ReserveError> {
        const WHAT: &str = "reserve stock";
        let lines = merge_lines(lines);
        if lines.len() > MAX_LINES {
            return Err(unexpected(
                WHAT,
                format!(
                    "{} lines; one reservation holds at most {MAX_LINES}",
                    lines.len()
                ),
            )
            .into());
        }
        let mut seeded = false;
        loop {
            let reasons =
                match transact(&self.client, WHAT, self.reservation(order_id, &lines)?).await {
                    Ok(()) => return Ok(()),
                    Err(TxError::Port(e)) => return Err(e.into()),
                    Err(TxError::Cancelled(reasons)) => reasons,
                };
            if failed_at(&reasons, 0) {
                return Ok(()); // already reserved by an earlier delivery of this order
            }
            let mut unstocked: Vec<&CatalogItem> = Vec::new();
            for (i, (sku, _)) in lines.iter().enumerate() {
                let Some(reason) = reasons
                    .get(i + 1)
                    .filter(|r| r.code() == Some(CONDITION_FAILED))
                else {
                    continue;
                };
                // No old item: the SKU has no stock item (yet). DynamoDB returns none for an
                // absent item; reading it now instead would race the other reservations.
                let absent = reason.item().is_none_or(Item::is_empty);
                unstocked.extend(super::item(sku).filter(|_| absent));
            }
            if seeded || unstocked.is_empty() {
                return Err(self.shortfall(&lines, &reasons).await?);
            }
            for item in unstocked {
                self.put_once(SEEDING, initial_stock_item(item)).await?;
            }
            seeded = true;
        }
    }

    /// The first confirmation of an order wins (`attribute_not_exists`): a retried delivery
    /// that confirms it again (with a later `confirmed_at`) changes nothing.
    async fn confirm(&self, order: &ConfirmedOrder) -> Result<(), PortError> {
        const WHAT: &str = "store an order";
        let mut item: HashMap<_, _> = to_item(order).map_err(|e| PortError::failed(WHAT, e))?;
        item.extend(key(order_pk(order.order_id), ORDER));
        self.put_once(WHAT, item).await
    }

    async fn available(&self, sku: &str) -> Result<Option<u32>, PortError> {
        self.stock_of(sku).await
    }

    async fn order(&self, order_id: JobId) -> Result<Option<ConfirmedOrder>, PortError> {
        const WHAT: &str = "read an order";
        let item = get_item(
            &self.client,
            &self.table,
            WHAT,
            key(order_pk(order_id), ORDER),
        )
        .await?;
        item.map(|mut item| {
            item.remove(PK);
            item.remove(SK);
            from_item(item).map_err(|e| PortError::failed(WHAT, e))
        })
        .transpose()
    }
}
