//! Naive reference implementations of the parsers that read untrusted bytes, shared
//! by the property tests (`tests/parsers.rs`) and the `cargo fuzz` targets (`fuzz/`, which
//! include this file by path): each is the obvious, slow way, to compare the real one with.
#![allow(dead_code)]

use tonic_metrics::{__fuzz::MAX_PATH_LEN, GrpcCode};

/// Whole gRPC frames in `bytes`, and whether it ends inside one, parsing the whole buffer
/// at once.
pub fn frames(bytes: &[u8]) -> (u64, bool) {
    let (lengths, mid_frame) = frame_lengths(bytes);
    (lengths.len() as u64, mid_frame)
}

/// The length field of each whole gRPC frame in `bytes`, in order, and whether it ends
/// inside one, parsing the whole buffer at once.
pub fn frame_lengths(bytes: &[u8]) -> (Vec<u32>, bool) {
    let mut at = 0usize;
    let mut lengths = Vec::new();
    loop {
        if at == bytes.len() {
            return (lengths, false);
        }
        if bytes.len() - at < 5 {
            return (lengths, true);
        }
        let length = u32::from_be_bytes(bytes[at + 1..at + 5].try_into().unwrap());
        if bytes.len() - at - 5 < length as usize {
            return (lengths, true);
        }
        at += 5 + length as usize;
        lengths.push(length);
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

/// The trace id of a W3C `traceparent` value, read field by field with `str` splitting:
/// `version-traceid-parentid-flags`, lowercase hex, version `ff` and all-zero ids invalid,
/// version `00` exactly four fields, later versions possibly more.
pub fn traceparent(value: &[u8]) -> Option<[u8; 16]> {
    // Lossy: a later version's extra fields may hold any bytes (a header value can carry
    // obs-text), and only the first four fields are read.
    let text = String::from_utf8_lossy(value);
    let fields: Vec<&str> = text.split('-').collect();
    let lower_hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if fields.len() < 4 || !fields[..4].iter().zip([2, 32, 16, 2]).all(|(f, len)| lower_hex(f, len)) {
        return None;
    }
    let version = u8::from_str_radix(fields[0], 16).ok()?;
    if version == 0xff || (version == 0 && fields.len() != 4) {
        return None;
    }
    let trace = u128::from_str_radix(fields[1], 16).ok()?;
    let parent = u64::from_str_radix(fields[2], 16).ok()?;
    (trace != 0 && parent != 0).then(|| trace.to_be_bytes())
}

/// A `grpc-timeout` value: 1 to 8 decimal digits and one of `HMSmun`.
pub fn grpc_timeout(value: &[u8]) -> Option<std::time::Duration> {
    let text = std::str::from_utf8(value).ok()?;
    let unit = text.chars().last()?;
    let digits = &text[..text.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    use std::time::Duration;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}
