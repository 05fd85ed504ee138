//! The seeded catalog of the worked example: names and prices are fixed here; stock lives in
//! the [`super::OrderBook`] and starts at `initial_stock`.

/// One item for sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogItem {
    /// Stock-keeping unit.
    pub sku: &'static str,
    /// Name for people.
    pub name: &'static str,
    /// Price of one, in cents.
    pub unit_price_cents: u64,
    /// Stock when an order book is first created.
    pub initial_stock: u32,
}

/// Every item for sale.
pub const CATALOG: &[CatalogItem] = &[
    CatalogItem {
        sku: "mug-blue",
        name: "Blue Mug",
        unit_price_cents: 1250,
        initial_stock: 2,
    },
    CatalogItem {
        sku: "mug-red",
        name: "Red Mug",
        unit_price_cents: 1250,
        initial_stock: 50,
    },
    CatalogItem {
        sku: "tea-earl-grey",
        name: "Earl Grey Tea, 100 g",
        unit_price_cents: 690,
        initial_stock: 200,
    },
    CatalogItem {
        sku: "tea-sencha",
        name: "Sencha Tea, 100 g",
        unit_price_cents: 890,
        initial_stock: 120,
    },
    CatalogItem {
        sku: "teapot-cast-iron",
        name: "Cast Iron Teapot",
        unit_price_cents: 4900,
        initial_stock: 10,
    },
    CatalogItem {
        sku: "kettle-gooseneck",
        name: "Gooseneck Kettle",
        unit_price_cents: 7900,
        initial_stock: 5,
    },
    CatalogItem {
        sku: "coaster-cork",
        name: "Cork Coaster",
        unit_price_cents: 300,
        initial_stock: 1000,
    },
    CatalogItem {
        sku: "poster-limited",
        name: "Limited Edition Poster",
        unit_price_cents: 2500,
        initial_stock: 0,
    },
];

/// The catalog entry of `sku`.
pub fn item(sku: &str) -> Option<&'static CatalogItem> {
    CATALOG.iter().find(|i| i.sku == sku)
}
