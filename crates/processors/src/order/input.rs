//! The `order` input: `{customer, items: [{sku, quantity}]}`.

use serde::Serialize;
use serde_json::{json, Value};

use ackflow_core::FieldError;

use super::{catalog, OrderLine, CATALOG};
use crate::input::{self, Errors};

/// A parsed `order` input. Serializes to the JSON the processor reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderInput {
    /// Who orders: a name or a customer reference.
    pub customer: String,
    /// The cart, in the order given; the same SKU may appear on several lines.
    pub items: Vec<OrderLine>,
}

impl OrderInput {
    /// Longest customer, in characters.
    pub const MAX_CUSTOMER_CHARS: usize = 200;
    /// Most cart lines.
    pub const MAX_ITEMS: usize = 50;
    /// Largest quantity of one line.
    pub const MAX_QUANTITY: u32 = 1000;

    const FIELDS: [&'static str; 2] = ["customer", "items"];
    const ITEM_FIELDS: [&'static str; 2] = ["sku", "quantity"];

    /// Parses `input`, reporting every invalid field with its JSON pointer (relative to the input).
    pub fn parse(input: &Value) -> Result<Self, Vec<FieldError>> {
        let mut errors = Errors::default();
        let Some(object) = input::object(input, "", &mut errors) else {
            return errors.finish(|| None);
        };
        input::reject_unknown(object, &Self::FIELDS, "", &mut errors);

        let customer = match object.get("customer") {
            None => {
                errors.push("/customer", "is required: who the order is for");
                None
            }
            Some(v) => input::text(v, "/customer", Self::MAX_CUSTOMER_CHARS, &mut errors),
        };
        let items = match object.get("items") {
            None => {
                errors.push(
                    "/items",
                    "is required: a list of {\"sku\", \"quantity\"} lines",
                );
                None
            }
            Some(Value::Array(lines)) => {
                if lines.is_empty() {
                    errors.push("/items", "must list at least one item");
                } else if lines.len() > Self::MAX_ITEMS {
                    errors.push(
                        "/items",
                        format!(
                            "may list at most {} lines, not {}; split the order",
                            Self::MAX_ITEMS,
                            lines.len()
                        ),
                    );
                }
                // Every line is checked even when there are too many: the error list is
                // bounded by `Errors::LIMIT`, and the person learns about bad lines at once.
                let parsed: Vec<_> = lines
                    .iter()
                    .enumerate()
                    .map(|(i, line)| Self::line(line, &input::index("/items", i), &mut errors))
                    .collect();
                parsed.into_iter().collect::<Option<Vec<_>>>()
            }
            Some(other) => {
                errors.push(
                    "/items",
                    format!(
                        "must be a list of {{\"sku\", \"quantity\"}} lines, not {}",
                        input::type_name(other)
                    ),
                );
                None
            }
        };
        errors.finish(|| {
            Some(Self {
                customer: customer?.to_owned(),
                items: items?,
            })
        })
    }

    fn line(value: &Value, at: &str, errors: &mut Errors) -> Option<OrderLine> {
        let object = input::object(value, at, errors)?;
        input::reject_unknown(object, &Self::ITEM_FIELDS, at, errors);
        let sku_at = input::member(at, "sku");
        let sku = match object.get("sku") {
            None => {
                errors.push(sku_at, format!("is required; {}", known_skus()));
                None
            }
            Some(Value::String(sku)) if catalog::item(sku).is_some() => Some(sku.clone()),
            Some(Value::String(sku)) => {
                errors.push(
                    sku_at,
                    format!(
                        "'{}' is not in the catalog; {}",
                        input::shorten(sku, 60),
                        known_skus()
                    ),
                );
                None
            }
            Some(other) => {
                errors.push(
                    sku_at,
                    format!(
                        "must be a string, not {}; {}",
                        input::type_name(other),
                        known_skus()
                    ),
                );
                None
            }
        };
        let quantity_at = input::member(at, "quantity");
        let quantity = match object.get("quantity") {
            None => {
                errors.push(
                    quantity_at,
                    format!("is required: how many, 1 to {}", Self::MAX_QUANTITY),
                );
                None
            }
            Some(v) => {
                input::whole_number(v, &quantity_at, 1..=u64::from(Self::MAX_QUANTITY), errors)
                    .and_then(|q| u32::try_from(q).ok())
            }
        };
        Some(OrderLine {
            sku: sku?,
            quantity: quantity?,
        })
    }

    /// The input as the JSON the processor reads.
    pub fn to_json(&self) -> Value {
        json!({ "customer": self.customer, "items": self.items })
    }
}

/// How to find a valid SKU: the catalog is small, so the list itself is the answer.
fn known_skus() -> String {
    let skus: Vec<&str> = CATALOG.iter().map(|i| i.sku).collect();
    format!("the catalog's SKUs are: {}", skus.join(", "))
}
