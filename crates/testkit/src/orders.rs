//! The [`OrderBook`] contract: reservations are all or nothing, at most once per order, and
//! never oversell, however many deliveries race; confirmed orders are stored once.
//!
//! Every behaviour starts from a fresh book stocked with the catalog's initial stock, and picks
//! its items from [`CATALOG`] by how much stock they have, so the suite follows the catalog.

use std::sync::Arc;

use ackflow_core::{JobId, Timestamp};
use ackflow_processors::order::{
    CatalogItem, ConfirmedOrder, OrderBook, OrderLine, PricedLine, ReserveError, CATALOG,
};
use tokio::task::JoinSet;

/// Items with at least `min` in stock, most stocked first.
fn stocked(min: u32) -> Vec<&'static CatalogItem> {
    let mut items: Vec<_> = CATALOG.iter().filter(|i| i.initial_stock >= min).collect();
    items.sort_by_key(|i| std::cmp::Reverse(i.initial_stock));
    items
}

/// The item with the least stock that still has some.
fn scarce() -> &'static CatalogItem {
    CATALOG
        .iter()
        .filter(|i| i.initial_stock > 0)
        .min_by_key(|i| i.initial_stock)
        .expect("the catalog has an item in stock")
}

fn line(item: &CatalogItem, quantity: u32) -> OrderLine {
    OrderLine {
        sku: item.sku.to_owned(),
        quantity,
    }
}

async fn available(book: &dyn OrderBook, sku: &str) -> Option<u32> {
    book.available(sku).await.expect("available")
}

/// The stock of every catalog item.
async fn all_stock(book: &dyn OrderBook) -> Vec<(&'static str, Option<u32>)> {
    let mut out = Vec::new();
    for item in CATALOG {
        out.push((item.sku, available(book, item.sku).await));
    }
    out
}

/// A reservation takes each line's quantity from its item's stock, and nothing else.
pub async fn a_reservation_takes_its_quantities_from_stock(book: Arc<dyn OrderBook>) {
    let items = stocked(3);
    let (a, b) = (items[0], items[1]);
    let before = all_stock(&*book).await;
    assert!(
        before.iter().all(|(_, n)| n.is_some()),
        "a fresh book stocks the catalog: {before:?}"
    );

    book.reserve(JobId::random(), &[line(a, 3), line(b, 1)])
        .await
        .expect("reserve");

    for (sku, was) in before {
        let taken = if sku == a.sku {
            3
        } else if sku == b.sku {
            1
        } else {
            0
        };
        assert_eq!(
            available(&*book, sku).await,
            was.map(|n| n - taken),
            "stock of {sku}"
        );
    }
    assert_eq!(available(&*book, "no-such-sku").await, None);
}

/// When one line cannot be served the order reserves nothing, and the error names the item,
/// how many were asked for and how many are left.
pub async fn a_reservation_is_all_or_nothing_when_one_line_is_short(book: Arc<dyn OrderBook>) {
    let plenty = stocked(10)[0];
    let short = scarce();
    let before = all_stock(&*book).await;

    let outcome = book
        .reserve(
            JobId::random(),
            &[line(plenty, 2), line(short, short.initial_stock + 1)],
        )
        .await;
    match outcome {
        Err(ReserveError::OutOfStock {
            sku,
            requested,
            available,
        }) => {
            assert_eq!(sku, short.sku);
            assert_eq!(requested, short.initial_stock + 1);
            assert_eq!(available, short.initial_stock);
        }
        other => panic!("expected OutOfStock, got {other:?}"),
    }
    assert_eq!(all_stock(&*book).await, before, "nothing was reserved");

    let sold_out = CATALOG.iter().find(|i| i.initial_stock == 0);
    if let Some(sold_out) = sold_out {
        let outcome = book
            .reserve(JobId::random(), &[line(plenty, 1), line(sold_out, 1)])
            .await;
        assert!(
            matches!(&outcome, Err(ReserveError::OutOfStock { sku, available: 0, .. }) if sku == sold_out.sku),
            "{outcome:?}"
        );
        assert_eq!(all_stock(&*book).await, before, "nothing was reserved");
    }
}

/// An item the book does not stock is refused by name, and the order's other lines are not
/// reserved.
pub async fn an_unknown_sku_is_refused_and_changes_nothing(book: Arc<dyn OrderBook>) {
    let plenty = stocked(10)[0];
    let before = all_stock(&*book).await;
    let outcome = book
        .reserve(
            JobId::random(),
            &[
                line(plenty, 1),
                OrderLine {
                    sku: "no-such-sku".into(),
                    quantity: 1,
                },
            ],
        )
        .await;
    assert!(
        matches!(&outcome, Err(ReserveError::UnknownSku(sku)) if sku == "no-such-sku"),
        "{outcome:?}"
    );
    assert_eq!(all_stock(&*book).await, before);
    assert_eq!(available(&*book, "no-such-sku").await, None);
}

/// A retried delivery reserves nothing more for an order that already holds a reservation,
/// whatever its lines say.
pub async fn a_second_reservation_for_the_same_order_takes_nothing_more(book: Arc<dyn OrderBook>) {
    let items = stocked(10);
    let (a, b) = (items[0], items[1]);
    let order = JobId::random();
    book.reserve(order, &[line(a, 2)]).await.expect("reserve");
    let after_first = all_stock(&*book).await;

    book.reserve(order, &[line(a, 2)])
        .await
        .expect("a repeated reservation is not an error");
    book.reserve(order, &[line(b, 5)])
        .await
        .expect("a repeated reservation is not an error");
    assert_eq!(all_stock(&*book).await, after_first);
    assert_eq!(available(&*book, a.sku).await, Some(a.initial_stock - 2));
}

/// A refused reservation leaves no trace: the same order can reserve what is there later.
pub async fn a_refused_reservation_does_not_block_a_later_one_for_the_same_order(
    book: Arc<dyn OrderBook>,
) {
    let short = scarce();
    let order = JobId::random();
    let outcome = book
        .reserve(order, &[line(short, short.initial_stock + 1)])
        .await;
    assert!(
        matches!(outcome, Err(ReserveError::OutOfStock { .. })),
        "{outcome:?}"
    );
    book.reserve(order, &[line(short, 1)])
        .await
        .expect("reserve what is left");
    assert_eq!(
        available(&*book, short.sku).await,
        Some(short.initial_stock - 1)
    );
}

/// Many orders racing for the last items: exactly as many succeed as there are items, the rest
/// are told it is out of stock, and stock ends at zero, never below. Many deliveries of one
/// order racing: it reserves once.
pub async fn concurrent_reservations_never_oversell(book: Arc<dyn OrderBook>) {
    let short = scarce();
    let racers = short.initial_stock * 4 + 4;
    let mut tasks = JoinSet::new();
    for _ in 0..racers {
        let book = Arc::clone(&book);
        tasks.spawn(async move { book.reserve(JobId::random(), &[line(short, 1)]).await });
    }
    let (mut won, mut lost) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("task") {
            Ok(()) => won += 1,
            Err(ReserveError::OutOfStock { available, .. }) => {
                assert_eq!(available, 0, "refused while stock was left");
                lost += 1;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(won, short.initial_stock);
    assert_eq!(lost, racers - short.initial_stock);
    assert_eq!(available(&*book, short.sku).await, Some(0));

    let plenty = stocked(10)[0];
    let order = JobId::random();
    let mut tasks = JoinSet::new();
    for _ in 0..8 {
        let book = Arc::clone(&book);
        tasks.spawn(async move { book.reserve(order, &[line(plenty, 3)]).await });
    }
    while let Some(joined) = tasks.join_next().await {
        joined
            .expect("task")
            .expect("every delivery of the order succeeds");
    }
    assert_eq!(
        available(&*book, plenty.sku).await,
        Some(plenty.initial_stock - 3),
        "one order, reserved once"
    );
}

/// A confirmed order reads back; confirming it again (a retried delivery, with a later
/// timestamp) is not an error and keeps the first confirmation.
pub async fn confirming_an_order_again_changes_nothing(book: Arc<dyn OrderBook>) {
    let item = stocked(1)[0];
    let order_id = JobId::random();
    assert_eq!(book.order(order_id).await.expect("order"), None);
    let order = ConfirmedOrder {
        order_id,
        customer: "Ada Lovelace".into(),
        lines: vec![PricedLine {
            sku: item.sku.into(),
            name: item.name.into(),
            quantity: 2,
            unit_price_cents: item.unit_price_cents,
            line_total_cents: item.unit_price_cents * 2,
        }],
        total_cents: item.unit_price_cents * 2,
        confirmed_at: Timestamp::from_millis(1_772_323_200_123),
    };
    book.confirm(&order).await.expect("confirm");
    assert_eq!(
        book.order(order_id).await.expect("order"),
        Some(order.clone())
    );

    book.confirm(&order).await.expect("confirming again");
    let retried = ConfirmedOrder {
        confirmed_at: Timestamp::from_millis(1_772_323_260_000),
        ..order.clone()
    };
    book.confirm(&retried)
        .await
        .expect("confirming again later");
    assert_eq!(
        book.order(order_id).await.expect("order"),
        Some(order),
        "the first confirmation stands"
    );
    assert_eq!(book.order(JobId::random()).await.expect("order"), None);
}
