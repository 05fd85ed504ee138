//! [`OrderBook`] on SQLite: stock seeded from the catalog, reservations taken with conditional
//! decrements in one transaction, confirmed orders stored once. The tables are in the file's
//! schema (`ackflow-sqlite`'s first migration): `stock`, `reservations`, `orders`.

use ackflow_core::{async_trait, JobId, PortError};
use ackflow_sqlite::rusqlite::{params, Connection, OptionalExtension};
use ackflow_sqlite::{write_tx, Db, DbError};

use super::{merge_lines, ConfirmedOrder, OrderBook, OrderLine, ReserveError, CATALOG};

/// The `order` processor's data on the single machine.
#[derive(Debug, Clone)]
pub struct SqliteOrderBook {
    db: Db,
}

impl SqliteOrderBook {
    /// The order book in `db`. Items of the catalog that are not stocked yet get their initial
    /// stock; existing stock is left alone, so reopening never refills it.
    ///
    /// Blocks the calling thread (it is meant for startup).
    pub fn new(db: Db) -> Result<Self, PortError> {
        db.call_blocking("stock the catalog", |c| {
            let tx = write_tx(c)?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO stock (sku, available) VALUES (?1, ?2)",
                )?;
                for item in CATALOG {
                    insert.execute(params![item.sku, item.initial_stock])?;
                }
            }
            tx.commit()?;
            Ok(())
        })?;
        Ok(Self { db })
    }
}

const HAS_RESERVATION: &str = "SELECT 1 FROM reservations WHERE order_id = ?1 LIMIT 1";
const TAKE_STOCK: &str =
    "UPDATE stock SET available = available - ?2 WHERE sku = ?1 AND available >= ?2";
const AVAILABLE: &str = "SELECT available FROM stock WHERE sku = ?1";

enum Refusal {
    OutOfStock {
        sku: String,
        requested: u32,
        available: u32,
    },
    UnknownSku(String),
}

fn reserve(
    conn: &mut Connection,
    order_id: &str,
    lines: &[(String, u32)],
) -> Result<Result<(), Refusal>, DbError> {
    let tx = write_tx(conn)?;
    let already = tx
        .prepare_cached(HAS_RESERVATION)?
        .query_row(params![order_id], |_| Ok(()))
        .optional()?
        .is_some();
    if already {
        return Ok(Ok(()));
    }
    for (sku, quantity) in lines {
        let taken = tx
            .prepare_cached(TAKE_STOCK)?
            .execute(params![sku, quantity])?;
        if taken == 0 {
            let available: Option<u32> = tx
                .prepare_cached(AVAILABLE)?
                .query_row(params![sku], |row| row.get(0))
                .optional()?;
            // Dropping `tx` rolls back the lines already taken: all or nothing.
            return Ok(Err(match available {
                None => Refusal::UnknownSku(sku.clone()),
                Some(available) => Refusal::OutOfStock {
                    sku: sku.clone(),
                    requested: *quantity,
                    available,
                },
            }));
        }
        tx.prepare_cached(
            "INSERT INTO reservations (order_id, sku, quantity) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![order_id, sku, quantity])?;
    }
    tx.commit()?;
    Ok(Ok(()))
}

#[async_trait]
impl OrderBook for SqliteOrderBook {
    async fn reserve(&self, order_id: JobId, lines: &[OrderLine]) -> Result<(), ReserveError> {
        let lines = merge_lines(lines);
        let outcome = self
            .db
            .call("reserve stock", move |c| {
                reserve(c, &order_id.to_string(), &lines)
            })
            .await?;
        outcome.map_err(|refusal| match refusal {
            Refusal::OutOfStock {
                sku,
                requested,
                available,
            } => ReserveError::OutOfStock {
                sku,
                requested,
                available,
            },
            Refusal::UnknownSku(sku) => ReserveError::UnknownSku(sku),
        })
    }

    /// The first confirmation of an order wins: a retried delivery that confirms it again (with
    /// a later `confirmed_at`) changes nothing.
    async fn confirm(&self, order: &ConfirmedOrder) -> Result<(), PortError> {
        let id = order.order_id.to_string();
        let body =
            serde_json::to_string(order).map_err(|e| PortError::failed("store an order", e))?;
        self.db
            .call("store an order", move |c| {
                c.prepare_cached("INSERT OR IGNORE INTO orders (order_id, body) VALUES (?1, ?2)")?
                    .execute(params![id, body])?;
                Ok(())
            })
            .await
    }

    async fn available(&self, sku: &str) -> Result<Option<u32>, PortError> {
        let sku = sku.to_owned();
        self.db
            .read("read stock", move |c| {
                Ok(c.prepare_cached(AVAILABLE)?
                    .query_row(params![sku], |row| row.get(0))
                    .optional()?)
            })
            .await
    }

    async fn order(&self, order_id: JobId) -> Result<Option<ConfirmedOrder>, PortError> {
        self.db
            .read("read an order", move |c| {
                c.prepare_cached("SELECT body FROM orders WHERE order_id = ?1")?
                    .query_row(params![order_id.to_string()], |row| row.get::<_, String>(0))
                    .optional()?
                    .map(|body| serde_json::from_str(&body).map_err(DbError::from))
                    .transpose()
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use ackflow_sqlite::{Db, Durability};

    use super::{AVAILABLE, HAS_RESERVATION, TAKE_STOCK};

    /// Every statement of a reservation is answered through a primary key, checked with
    /// `EXPLAIN QUERY PLAN` against the real schema: a change that brings back a table scan
    /// fails here rather than under load.
    #[test]
    fn order_book_statements_use_primary_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("plans.db"), Durability::Normal).expect("open");
        for (sql, table) in [
            (HAS_RESERVATION, "reservations"),
            (TAKE_STOCK, "stock"),
            (AVAILABLE, "stock"),
        ] {
            let plan = db.query_plan(sql).expect("explain");
            assert!(
                !plan.contains(&format!("SCAN {table}")),
                "{sql}\nscans:\n{plan}"
            );
            assert!(
                plan.contains("PRIMARY KEY"),
                "{sql}\nno primary key:\n{plan}"
            );
        }
    }
}
