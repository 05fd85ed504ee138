//! Reading a queue message back into the job's [`Envelope`], telling a message of a newer
//! version (returned to the queue for a newer worker) from a corrupt one (poison).

use serde_json::Value;

use crate::{Delivery, Envelope, SCHEMA_VERSION};

/// Why a message's body is not an envelope this version can act on.
#[derive(Debug)]
pub(super) enum Undecodable {
    /// Sent by a newer deployment, with this schema version: not poison.
    NewerSchema(u16),
    /// Unreadable, for this reason.
    Corrupt(String),
}

/// The envelope of `delivery`.
pub(super) fn envelope(delivery: &Delivery) -> Result<Envelope, Undecodable> {
    let value: Value =
        serde_json::from_str(&delivery.body).map_err(|e| Undecodable::Corrupt(e.to_string()))?;
    let version = value
        .get("v")
        .and_then(Value::as_u64)
        .ok_or_else(|| Undecodable::Corrupt("no schema version".into()))?;
    let version =
        u16::try_from(version).map_err(|_| Undecodable::Corrupt("bad schema version".into()))?;
    if version > SCHEMA_VERSION {
        return Err(Undecodable::NewerSchema(version));
    }
    serde_json::from_value(value).map_err(|e| Undecodable::Corrupt(e.to_string()))
}
