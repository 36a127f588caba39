//! Content negotiation: which format to answer a scrape with, from its `Accept` header, and
//! whether to gzip it, from `Accept-Encoding`.
//!
//! Prometheus lists the formats it can read, most wanted first, with falling q-values
//! (`tests/negotiate.rs` in this module holds the exact headers every version sends). The rules:
//!
//! - protobuf is `application/vnd.google.protobuf` with `proto=io.prometheus.client.MetricFamily`
//!   and `encoding=delimited`;
//! - `application/openmetrics-text` version 1.0.0, 0.0.1 or none is OpenMetrics (written as
//!   1.0.0, which 0.0.1 readers take);
//! - `text/plain` version 0.0.4, 1.0.0 or none is the text format; other versions of a known
//!   type, unknown types and other parameters (`escaping=`, `charset=`) do not matter;
//! - the highest q wins, q=0 means "not this", ties go to the entry listed first;
//! - wildcards (`*/*`, `text/*`) never outrank a format named outright: the answer to them
//!   is the text format, which is also the answer when nothing else is acceptable (no
//!   header, an empty or garbled one). This is client_golang's rule too, and it matters:
//!   Prometheus 2.49.0 sent `*/*;q=2` after `protobuf;q=0.5`, and took protobuf then.
//!
//! The parser is a single pass over the header that tolerates anything (quoted commas,
//! stray semicolons, odd bytes, megabytes of it) and never panics.

/// A format `/metrics` can answer with; a scrape's `Accept` header picks one
/// ([`MetricsHandle::render_as`](crate::exporter::MetricsHandle::render_as) renders any).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// Prometheus text 0.0.4.
    Text,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
    /// Delimited protobuf `io.prometheus.client.MetricFamily`.
    Protobuf,
}

impl Format {
    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => super::text::CONTENT_TYPE,
            Format::OpenMetrics => super::openmetrics::CONTENT_TYPE,
            Format::Protobuf => super::protobuf::CONTENT_TYPE,
        }
    }

    /// The format to answer an `Accept` header with: protobuf, OpenMetrics or the text
    /// format as the header prefers them (q-values respected, a wildcard never outranking a
    /// format named outright); the text format when nothing supported is asked for.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let mut best: Option<(Format, u32)> = None;
        for range in split_unquoted(accept.unwrap_or_default(), ',') {
            let Some((format, q)) = media_range(range) else { continue };
            // Strictly greater: on a tie the earlier entry stays.
            if q > 0 && best.is_none_or(|(_, top)| q > top) {
                best = Some((format, q));
            }
        }
        best.map_or(Format::Text, |(format, _)| format)
    }
}

/// Whether the client takes a gzip body: `gzip` (or `x-gzip`) with q > 0, or, when gzip is
/// not named, `*` with q > 0. `gzip;q=0`, `identity` alone or no header mean no.
pub(crate) fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    let mut wildcard = None;
    for coding in split_unquoted(accept_encoding.unwrap_or_default(), ',') {
        let mut parts = split_unquoted(coding, ';');
        let name = parts.next().unwrap_or_default().trim();
        let Some(q) = q_value(parts) else { continue };
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            return q > 0;
        }
        if name == "*" {
            wildcard = Some(q > 0);
        }
    }
    wildcard.unwrap_or(false)
}

/// The format one media range names and its q in thousandths, or `None` if it names none
/// we write (wildcards included) or is malformed.
fn media_range(range: &str) -> Option<(Format, u32)> {
    let mut parts = split_unquoted(range, ';');
    let media_type = parts.next()?.trim();
    let (kind, subtype) = media_type.split_once('/')?;
    let (kind, subtype) = (kind.trim(), subtype.trim());
    let mut version = None;
    let mut proto = None;
    let mut encoding = None;
    let mut q = 1000;
    for param in parts {
        let Some((name, value)) = param.split_once('=') else { continue };
        let (name, value) = (name.trim(), unquote(value.trim()));
        if name.eq_ignore_ascii_case("q") {
            q = parse_q(value)?;
        } else if name.eq_ignore_ascii_case("version") {
            version = Some(value);
        } else if name.eq_ignore_ascii_case("proto") {
            proto = Some(value);
        } else if name.eq_ignore_ascii_case("encoding") {
            encoding = Some(value);
        }
    }
    let format = if kind.eq_ignore_ascii_case("application") && subtype.eq_ignore_ascii_case("vnd.google.protobuf") {
        (proto == Some("io.prometheus.client.MetricFamily") && encoding == Some("delimited"))
            .then_some(Format::Protobuf)?
    } else if kind.eq_ignore_ascii_case("application") && subtype.eq_ignore_ascii_case("openmetrics-text") {
        matches!(version, None | Some("1.0.0" | "0.0.1")).then_some(Format::OpenMetrics)?
    } else if kind.eq_ignore_ascii_case("text") && subtype.eq_ignore_ascii_case("plain") {
        matches!(version, None | Some("0.0.4" | "1.0.0")).then_some(Format::Text)?
    } else {
        return None;
    };
    Some((format, q))
}

/// The q of a list entry's parameters (1 if absent), or `None` if it is malformed.
fn q_value<'a>(params: impl Iterator<Item = &'a str>) -> Option<u32> {
    let mut q = 1000;
    for param in params {
        if let Some((name, value)) = param.split_once('=')
            && name.trim().eq_ignore_ascii_case("q")
        {
            q = parse_q(unquote(value.trim()))?;
        }
    }
    Some(q)
}

/// A q-value in thousandths. RFC 9110 allows `0`..`1` with up to three decimals; above 1
/// counts as 1 (Prometheus 2.49.0 sent `q=2`), extra decimals are cut, anything that is not
/// digits with at most one dot is malformed.
fn parse_q(value: &str) -> Option<u32> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) {
        return None;
    }
    if whole.bytes().any(|b| b != b'0') {
        return Some(1000);
    }
    let thousandths =
        fraction.bytes().chain(std::iter::repeat(b'0')).take(3).fold(0, |acc, b| acc * 10 + u32::from(b - b'0'));
    Some(thousandths)
}

/// Strips one pair of surrounding double quotes (a quoted-string parameter value).
fn unquote(value: &str) -> &str {
    value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value)
}

/// Splits on `sep` outside double-quoted strings (which may hold `\"`), so that a quoted
/// parameter value with a comma or semicolon in it stays whole.
fn split_unquoted(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        let mut quoted = false;
        let mut escaped = false;
        for (i, c) in s.char_indices() {
            if escaped {
                escaped = false;
            } else if quoted && c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = !quoted;
            } else if c == sep && !quoted {
                rest = Some(&s[i + c.len_utf8()..]);
                return Some(&s[..i]);
            }
        }
        rest = None;
        Some(s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_values() {
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("2"), Some(1000));
        assert_eq!(parse_q("0"), Some(0));
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("0.75"), Some(750));
        assert_eq!(parse_q("0.0001"), Some(0));
        assert_eq!(parse_q("0.1239"), Some(123));
        assert_eq!(parse_q("00.5"), Some(500));
        for bad in ["", ".5", "-1", "0.5.1", "1e3", "inf", "NaN", "0,5", " 0.5x"] {
            assert_eq!(parse_q(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn splitting_respects_quotes() {
        let parts: Vec<_> = split_unquoted(r#"a;b="x,\";y";c"#, ';').collect();
        assert_eq!(parts, ["a", r#"b="x,\";y""#, "c"]);
        let parts: Vec<_> = split_unquoted("", ',').collect();
        assert_eq!(parts, [""]);
        let parts: Vec<_> = split_unquoted(r#"unterminated "quote, here"#, ',').collect();
        assert_eq!(parts, [r#"unterminated "quote, here"#]);
    }

    #[test]
    fn content_types() {
        assert_eq!(Format::Text.content_type(), "text/plain; version=0.0.4; charset=utf-8");
        assert_eq!(Format::OpenMetrics.content_type(), "application/openmetrics-text; version=1.0.0; charset=utf-8");
        assert_eq!(
            Format::Protobuf.content_type(),
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
        );
    }
}
