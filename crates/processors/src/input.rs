//! Reading a processor's JSON input field by field, collecting every error with its JSON
//! pointer (RFC 6901) instead of stopping at the first, so that a person fixes a request once.
//!
//! Processors parse their input into a typed value with these helpers both when a job is
//! accepted (`validate`) and when it runs (`process`): one set of rules, no second guess.

use std::fmt::Display;
use std::ops::RangeInclusive;

use ackflow_core::{FieldError, Rejection};
use serde_json::{Map, Value};

/// Collects field errors, up to [`Errors::LIMIT`].
#[derive(Debug, Default)]
pub(crate) struct Errors {
    list: Vec<FieldError>,
    left_out: usize,
}

impl Errors {
    /// Most errors reported for one input. An input with thousands of unknown fields must not
    /// turn into a response thousands of entries long; the first ones are enough to act on.
    pub(crate) const LIMIT: usize = 50;

    /// Records an error at `pointer`.
    pub(crate) fn push(&mut self, pointer: impl Into<String>, detail: impl Into<String>) {
        if self.list.len() < Self::LIMIT {
            self.list.push(FieldError::new(pointer, detail));
        } else {
            self.left_out += 1;
        }
    }

    /// `Ok(value)` when nothing was recorded, otherwise every error (and a note when some were
    /// left out).
    pub(crate) fn finish<T>(
        mut self,
        value: impl FnOnce() -> Option<T>,
    ) -> Result<T, Vec<FieldError>> {
        if self.list.is_empty() {
            // Every field helper records an error when it returns `None`, so `value` only
            // misses when a helper was not asked; report that rather than panic.
            return value().ok_or_else(|| {
                vec![FieldError::new(
                    "",
                    "the input could not be read; check it against the kind's documentation",
                )]
            });
        }
        if self.left_out > 0 {
            self.list.push(FieldError::new(
                "",
                format!(
                    "{} more errors were left out; correct these and send again to see the rest",
                    self.left_out
                ),
            ));
        }
        Err(self.list)
    }
}

/// `parent` extended by the object member `name`, escaped as RFC 6901 requires.
pub(crate) fn member(parent: &str, name: &str) -> String {
    format!("{parent}/{}", name.replace('~', "~0").replace('/', "~1"))
}

/// `parent` extended by the array index `index`.
pub(crate) fn index(parent: &str, index: usize) -> String {
    format!("{parent}/{index}")
}

/// The object at `at`, or an error saying an object was expected.
pub(crate) fn object<'a>(
    value: &'a Value,
    at: &str,
    errors: &mut Errors,
) -> Option<&'a Map<String, Value>> {
    let object = value.as_object();
    if object.is_none() {
        errors.push(
            at,
            format!("must be a JSON object, not {}", type_name(value)),
        );
    }
    object
}

/// The longest member name quoted whole, in a pointer or a detail. A longer one is cut, with a
/// `…` to say so: an answer never echoes a huge input, at whatever depth the name sits.
pub(crate) const MAX_QUOTED_NAME: usize = 64;

/// Records every member of `object` that is not in `allowed`: a typo must not be silently
/// ignored (`"stpes": 5` would otherwise run a job with no steps).
pub(crate) fn reject_unknown(
    object: &Map<String, Value>,
    allowed: &[&str],
    at: &str,
    errors: &mut Errors,
) {
    for name in object.keys().filter(|k| !allowed.contains(&k.as_str())) {
        let quoted = shorten(name, MAX_QUOTED_NAME);
        let detail = if quoted.len() < name.len() {
            format!(
                "unknown field '{quoted}' (its name, {} characters long, is cut here); the fields are: {}",
                name.chars().count(),
                allowed.join(", ")
            )
        } else {
            format!(
                "unknown field '{quoted}'; the fields are: {}",
                allowed.join(", ")
            )
        };
        errors.push(member(at, &quoted), detail);
    }
}

/// A whole number in `range` at `at`.
pub(crate) fn whole_number(
    value: &Value,
    at: &str,
    range: RangeInclusive<u64>,
    errors: &mut Errors,
) -> Option<u64> {
    let (min, max) = (*range.start(), *range.end());
    let out_of_range = |shown: &dyn Display| format!("must be from {min} to {max}, not {shown}");
    match value {
        Value::Number(n) => {
            if let Some(v) = n.as_u64() {
                if range.contains(&v) {
                    return Some(v);
                }
                errors.push(at, out_of_range(&v));
            } else if let Some(v) = n.as_i64() {
                errors.push(at, out_of_range(&v));
            } else {
                // A float: either a fraction or a whole number beyond 64 bits.
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 => errors.push(at, out_of_range(n)),
                    _ => errors.push(
                        at,
                        format!("must be a whole number from {min} to {max}, not {n}"),
                    ),
                }
            }
        }
        other => errors.push(
            at,
            format!(
                "must be a whole number from {min} to {max}, not {}",
                type_name(other)
            ),
        ),
    }
    None
}

/// A boolean at `at`.
pub(crate) fn boolean(value: &Value, at: &str, errors: &mut Errors) -> Option<bool> {
    let b = value.as_bool();
    if b.is_none() {
        errors.push(
            at,
            format!("must be true or false, not {}", type_name(value)),
        );
    }
    b
}

/// A string at `at` that is not blank and at most `max_chars` characters long.
pub(crate) fn text<'a>(
    value: &'a Value,
    at: &str,
    max_chars: usize,
    errors: &mut Errors,
) -> Option<&'a str> {
    match value {
        Value::String(s) if s.trim().is_empty() => {
            errors.push(at, "must not be empty or blank");
            None
        }
        Value::String(s) => {
            let chars = s.chars().count();
            if chars > max_chars {
                errors.push(
                    at,
                    format!("must be at most {max_chars} characters long, not {chars}"),
                );
                None
            } else {
                Some(s)
            }
        }
        other => {
            errors.push(at, format!("must be a string, not {}", type_name(other)));
            None
        }
    }
}

/// What JSON calls the type of `value`, for error messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `s`, cut to `max_chars` characters with an ellipsis: user text quoted back in an error
/// message must not make the message arbitrarily long.
pub(crate) fn shorten(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(max_chars).collect();
        cut.push('…');
        cut
    }
}

/// The rejection of a job whose stored input no longer passes validation (it was accepted by
/// a version with other rules): nothing was done, and the person learns what to fix.
pub(crate) fn invalid_input(errors: Vec<FieldError>) -> Rejection {
    Rejection::new(
        "invalid-input",
        "Invalid input",
        "Some fields of the input are not valid; each is listed under 'errors'. Nothing was done. \
         Correct them and send the request again.",
    )
    .with_errors(errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_escape_tilde_and_slash() {
        assert_eq!(member("", "a/b~c"), "/a~1b~0c");
        assert_eq!(index("/items", 3), "/items/3");
    }

    #[test]
    fn whole_numbers_are_checked_for_type_fraction_sign_and_range() {
        let mut errors = Errors::default();
        assert_eq!(whole_number(&json!(7), "/n", 0..=10, &mut errors), Some(7));
        for bad in [
            json!(11),
            json!(-1),
            json!(2.5),
            json!(1e30),
            json!("7"),
            json!(null),
        ] {
            assert_eq!(whole_number(&bad, "/n", 0..=10, &mut errors), None, "{bad}");
        }
        let list = errors.finish(|| Some(())).unwrap_err();
        let details: Vec<_> = list.iter().map(|e| e.detail.as_str()).collect();
        assert_eq!(
            details,
            [
                "must be from 0 to 10, not 11",
                "must be from 0 to 10, not -1",
                "must be a whole number from 0 to 10, not 2.5",
                "must be from 0 to 10, not 1e+30",
                "must be a whole number from 0 to 10, not a string",
                "must be a whole number from 0 to 10, not null",
            ]
        );
    }

    #[test]
    fn errors_beyond_the_limit_are_counted_not_listed() {
        let mut errors = Errors::default();
        for i in 0..Errors::LIMIT + 7 {
            errors.push(index("", i), "bad");
        }
        let list = errors.finish(|| Some(())).unwrap_err();
        assert_eq!(list.len(), Errors::LIMIT + 1);
        assert!(list[Errors::LIMIT].detail.starts_with("7 more errors"));
    }

    #[test]
    fn long_user_text_is_shortened_when_quoted() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcdef", 3), "abc…");
    }
}
