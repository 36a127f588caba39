//! The `traceparent` parser on arbitrary bytes: never panics, and agrees with a naive
//! field-splitting reference on which values carry a trace id, and which.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tonic_metrics::__fuzz::parse_traceparent;

#[path = "../../tests/reference/mod.rs"]
mod reference;

fuzz_target!(|value: &[u8]| {
    assert_eq!(parse_traceparent(value), reference::traceparent(value), "{:?}", String::from_utf8_lossy(value));
});
