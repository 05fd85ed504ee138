//! "The same body" for Idempotency-Key: a hash of canonical JSON, so key order and whitespace
//! do not make two equal requests differ.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Writes `value` as canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace,
/// strings and numbers as serde_json writes them.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write(value, &mut out);
    out
}

fn write(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Hex SHA-256 of the canonical JSON of `{kind, input}`.
pub fn body_hash(kind: &str, input: &Value) -> String {
    let body = serde_json::json!({ "kind": kind, "input": input });
    let digest = Sha256::digest(canonical_json(&body).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_and_whitespace_do_not_change_the_hash() {
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": "é"}}"#).expect("json");
        let b: Value = serde_json::from_str(r#"{"a":{"x":"é","y":[1,2]},"b":1}"#).expect("json");
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"é","y":[1,2]},"b":1}"#);
        assert_eq!(body_hash("demo", &a), body_hash("demo", &b));
    }

    #[test]
    fn a_different_kind_or_value_changes_the_hash() {
        let input = json!({"steps": 1});
        assert_ne!(body_hash("demo", &input), body_hash("order", &input));
        assert_ne!(
            body_hash("demo", &input),
            body_hash("demo", &json!({"steps": 2}))
        );
        assert_ne!(
            body_hash("demo", &json!([1, 2])),
            body_hash("demo", &json!([2, 1]))
        );
    }
}
