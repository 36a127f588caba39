//! The `grpc-timeout` parser on arbitrary bytes: never panics or overflows, and agrees
//! with a naive `str`-based reference.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tonic_metrics::__fuzz::parse_grpc_timeout;

#[path = "../../tests/reference/mod.rs"]
mod reference;

fuzz_target!(|value: &[u8]| {
    assert_eq!(parse_grpc_timeout(value), reference::grpc_timeout(value), "{:?}", String::from_utf8_lossy(value));
});
