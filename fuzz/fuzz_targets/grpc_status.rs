//! The `grpc-status` parser on arbitrary bytes: never panics, and reads a code only from
//! the canonical decimal spelling of `0..=16`; everything else is `Unknown`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tonic_metrics::GrpcCode;

#[path = "../../tests/reference/mod.rs"]
mod reference;

fuzz_target!(|value: &[u8]| {
    let expected = reference::grpc_status(value);
    assert_eq!(GrpcCode::from_header_value(value), expected, "{value:?}");
});
