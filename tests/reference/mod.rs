//! Naive reference implementations of the three parsers that read untrusted bytes, shared
//! by the property tests (`tests/parsers.rs`) and the `cargo fuzz` targets (`fuzz/`, which
//! include this file by path): each is the obvious, slow way, to compare the real one with.
#![allow(dead_code)]

use tonic_metrics::{__fuzz::MAX_PATH_LEN, GrpcCode};

/// Whole gRPC frames in `bytes`, and whether it ends inside one, parsing the whole buffer
/// at once.
pub fn frames(bytes: &[u8]) -> (u64, bool) {
    let (mut at, mut count) = (0usize, 0u64);
    loop {
        if at == bytes.len() {
            return (count, false);
        }
        if bytes.len() - at < 5 {
            return (count, true);
        }
        let length = u32::from_be_bytes(bytes[at + 1..at + 5].try_into().unwrap()) as usize;
        if bytes.len() - at - 5 < length {
            return (count, true);
        }
        at += 5 + length;
        count += 1;
    }
}

/// `/service/method` with both parts non-empty, no further `/`, within the length cap.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    match path.split('/').collect::<Vec<_>>().as_slice() {
        ["", service, method] if !service.is_empty() && !method.is_empty() && path.len() <= MAX_PATH_LEN => {
            Some((service, method))
        }
        _ => None,
    }
}

/// A code only from the canonical decimal spelling of `0..=16`; everything else `Unknown`.
pub fn grpc_status(value: &[u8]) -> GrpcCode {
    std::str::from_utf8(value)
        .ok()
        .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .filter(|text| *text == "0" || !text.starts_with('0'))
        .and_then(|text| text.parse::<i32>().ok())
        .and_then(GrpcCode::from_i32)
        .unwrap_or(GrpcCode::Unknown)
}
