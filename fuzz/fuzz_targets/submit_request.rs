//! `POST /v1/jobs` with arbitrary headers and body through the real router: see
//! `../shared/submit_request.rs` for the input format and the properties checked.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../shared/submit_request.rs"]
mod check;

/// One harness for the whole run: a fresh SQLite database per input would measure SQLite's
/// startup rather than the decoding. Accepted jobs accumulate, which is fine: every property is
/// relative to the state just before the input.
static HARNESS: OnceLock<check::Harness> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    HARNESS.get_or_init(check::Harness::new).check(data);
});
