//! Newtypes that can only hold valid values: parse, don't validate.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// Why a string was refused as one of the identifiers below.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidId(pub &'static str);

/// A job's identifier: a random (v4) UUID, so ids cannot be guessed or enumerated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(Uuid);

impl JobId {
    /// The job's address on the HTTP API, `/v1/jobs/{id}`: where a client follows it.
    pub fn path(self) -> String {
        format!("/v1/jobs/{self}")
    }

    /// A fresh, unguessable id.
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl FromStr for JobId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the canonical hyphenated form: one job, one spelling of its id (ETags, logs, URLs).
        if s.len() != 36 {
            return Err(InvalidId(
                "a job id is a UUID such as 0b6c5a6e-1f7e-4c1e-9d7a-2b1f3c4d5e6f",
            ));
        }
        Uuid::parse_str(s).map(JobId).map_err(|_| {
            InvalidId("a job id is a UUID such as 0b6c5a6e-1f7e-4c1e-9d7a-2b1f3c4d5e6f")
        })
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident, $check:path) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses `value`, refusing what the type cannot hold.
            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                $check(&value)?;
                Ok(Self(value))
            }

            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn check_kind(s: &str) -> Result<(), InvalidId> {
    const WHY: &str = "a kind is 1 to 64 characters: lowercase letters, digits, '-' or '_', starting with a letter";
    let mut chars = s.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if first_ok && rest_ok && s.len() <= 64 {
        Ok(())
    } else {
        Err(InvalidId(WHY))
    }
}

fn check_owner(s: &str) -> Result<(), InvalidId> {
    // JWT `sub` claims are free-form strings; bound them and keep out control characters,
    // because owners end up in keys, logs and message attributes.
    if s.is_empty() || s.len() > 256 || s.chars().any(char::is_control) {
        Err(InvalidId(
            "an owner is 1 to 256 characters without control characters",
        ))
    } else {
        Ok(())
    }
}

fn check_idempotency_key(s: &str) -> Result<(), InvalidId> {
    if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        Err(InvalidId(
            "an Idempotency-Key is 1 to 255 printable ASCII characters",
        ))
    } else {
        Ok(())
    }
}

fn check_correlation_id(s: &str) -> Result<(), InvalidId> {
    if s.is_empty()
        || s.len() > 128
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        Err(InvalidId(
            "a correlation id is 1 to 128 characters: letters, digits, '-', '_', '.' or ':'",
        ))
    } else {
        Ok(())
    }
}

string_newtype!(
    /// The name of a kind of job, such as `order` or `demo`; it selects the [`crate::Processor`].
    Kind,
    check_kind
);
string_newtype!(
    /// Who a job belongs to: a JWT `sub` on AWS, a configured token's owner on one machine,
    /// or [`Owner::anonymous`] when authentication is off. Every port call is scoped by it.
    Owner,
    check_owner
);
string_newtype!(
    /// A client-chosen key that makes a submission safe to retry (see SPEC.md, `Idempotency-Key`).
    IdempotencyKey,
    check_idempotency_key
);
string_newtype!(
    /// Ties the log lines of one request together across API, queue and worker.
    CorrelationId,
    check_correlation_id
);

impl Owner {
    /// The single owner used when authentication is off.
    pub fn anonymous() -> Self {
        Self("anonymous".to_owned())
    }
}

impl CorrelationId {
    /// A fresh random correlation id, for requests that did not bring one.
    pub fn random() -> Self {
        Self(Uuid::new_v4().simple().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_round_trip_and_reject_other_spellings() {
        let id = JobId::random();
        assert_eq!(id.to_string().parse::<JobId>(), Ok(id));
        assert!("not-a-uuid".parse::<JobId>().is_err());
        assert!(id.as_uuid().simple().to_string().parse::<JobId>().is_err());
    }

    #[test]
    fn kinds_are_lowercase_names() {
        assert!(Kind::parse("order").is_ok());
        assert!(Kind::parse("image-resize_2").is_ok());
        for bad in ["", "Order", "9lives", "a b", &"x".repeat(65)] {
            assert!(Kind::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn idempotency_keys_are_printable_ascii() {
        assert!(IdempotencyKey::parse("order-42 retry").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("tab\there").is_err());
        assert!(IdempotencyKey::parse("é").is_err());
        assert!(IdempotencyKey::parse("k".repeat(256)).is_err());
    }

    #[test]
    fn deserializing_checks_the_value() {
        assert!(serde_json::from_str::<Kind>("\"BAD\"").is_err());
        assert!(serde_json::from_str::<Owner>("\"alice\"").is_ok());
    }
}
