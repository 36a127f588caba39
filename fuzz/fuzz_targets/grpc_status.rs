//! The `grpc-status` parser on arbitrary bytes: never panics, and reads a code only from
//! the canonical decimal spelling of `0..=16`; everything else is `Unknown`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tonic_metrics::GrpcCode;

fuzz_target!(|value: &[u8]| {
    let expected = std::str::from_utf8(value)
        .ok()
        .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .filter(|text| *text == "0" || !text.starts_with('0'))
        .and_then(|text| text.parse::<i32>().ok())
        .and_then(GrpcCode::from_i32)
        .unwrap_or(GrpcCode::Unknown);
    assert_eq!(GrpcCode::from_header_value(value), expected, "{value:?}");
});
