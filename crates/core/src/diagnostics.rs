//! Errors and panics as one line each, for the logs. Clients never see these: they get a
//! [`crate::Problem`]; the logs get the whole chain with the job id.

use std::any::Any;

/// An error and its sources on one line, for logs.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The message of a caught panic's payload (`panic!("...")` carries a `&str` or a `String`).
///
/// Pass the payload (`panic.as_ref()`, or `&*panic`). A reference to the `Box` itself also
/// coerces to `&dyn Any`, and would otherwise read as "a non-string panic": it is unwrapped
/// here, so that mistake cannot hide a panic's message.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(inner) = payload.downcast_ref::<Box<dyn Any + Send>>() {
        return panic_message(inner.as_ref());
    }
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caught(f: impl FnOnce() + std::panic::UnwindSafe) -> Box<dyn Any + Send> {
        std::panic::catch_unwind(f).expect_err("it panics")
    }

    #[test]
    fn a_panics_message_is_read_from_its_payload_or_from_a_reference_to_its_box() {
        let literal = caught(|| panic!("out of cheese"));
        assert_eq!(panic_message(literal.as_ref()), "out of cheese");
        let formatted = caught(|| panic!("{} left", 2));
        assert_eq!(panic_message(formatted.as_ref()), "2 left");
        // `&formatted` is a `&Box<dyn Any + Send>`, which coerces to `&dyn Any` as well.
        assert_eq!(panic_message(&formatted), "2 left");
        let other = caught(|| std::panic::panic_any(7_u8));
        assert_eq!(panic_message(other.as_ref()), "a non-string panic");
    }

    #[test]
    fn an_error_chain_names_every_source() {
        let io = std::io::Error::other("disk on fire");
        #[derive(Debug, thiserror::Error)]
        #[error("could not write")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(error_chain(&Outer(io)), "could not write: disk on fire");
    }
}
