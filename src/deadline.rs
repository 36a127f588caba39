//! The deadline a request carries in its `grpc-timeout` header.

use std::time::Duration;

use http::{HeaderMap, HeaderName};

/// Looked up by a `HeaderName` constant: a `&str` key is parsed and validated on every call.
static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The timeout in a request's `grpc-timeout` header, if it has a valid one.
pub(crate) fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    parse_grpc_timeout(headers.get(&GRPC_TIMEOUT)?.as_bytes())
}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits and a unit, `H`, `M`, `S`, `m`
/// (milliseconds), `u` (microseconds) or `n` (nanoseconds), as the gRPC over HTTP/2 spec
/// writes it. Anything else is no deadline, as tonic treats it.
pub(crate) fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // At most 8 digits: the value fits a u64 with room for the hour multiplier.
    let amount = digits.iter().fold(0u64, |acc, digit| acc * 10 + u64::from(digit - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_values_parse() {
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout(b"3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout(b"99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse_grpc_timeout(b"0n"), Some(Duration::ZERO));
        assert_eq!(parse_grpc_timeout(b"99999999H"), Some(Duration::from_secs(99_999_999 * 3600)));
    }

    #[test]
    fn invalid_values_are_no_deadline() {
        for bad in [&b""[..], b"m", b"123456789m", b"-1m", b"1.5S", b"10", b"10s", b"10 m", b" 10m", b"\xffm", b"1h"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
