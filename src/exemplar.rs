//! Exemplars: which trace a latency observation came from.
//!
//! With [`with_exemplars`](crate::GrpcMetricsLayer::with_exemplars) on, a layer reads the
//! trace id of each call from its W3C `traceparent` header (or asks an extractor the
//! application gives) and attaches it to the handling-time observation of that call. This
//! crate's exporter keeps the latest exemplar of every histogram bucket and serves it in
//! OpenMetrics and protobuf scrapes, so a latency spike on a dashboard links to a trace.
//!
//! The `metrics` facade has no exemplar argument, so the layer hands the exemplar to the
//! recorder through a thread-local slot that is set just around the one `record` call it
//! belongs to. A recorder that does not look (any other than this crate's) drops it.

use std::{cell::Cell, fmt, sync::Arc};

/// The longest exemplar label set OpenMetrics allows: 128 UTF-8 characters of label names
/// and values together.
pub const MAX_EXEMPLAR_CHARS: usize = 128;

/// The label set of an exemplar: a trace id, or labels an extractor chose.
#[derive(Clone, PartialEq, Eq)]
pub struct ExemplarLabels {
    repr: Repr,
}

#[derive(Clone, PartialEq, Eq)]
enum Repr {
    /// Kept as bytes so that reading a `traceparent` allocates nothing.
    TraceId([u8; 16]),
    Custom(Arc<[(String, String)]>),
}

impl ExemplarLabels {
    /// `{trace_id="<32 lowercase hex digits>"}`; `None` for the invalid all-zero id.
    pub fn from_trace_id(trace_id: [u8; 16]) -> Option<Self> {
        (trace_id != [0; 16]).then_some(Self { repr: Repr::TraceId(trace_id) })
    }

    /// The trace id of a W3C `traceparent` header value
    /// (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`); `None` if the value is
    /// not a valid one (wrong length or separators, upper-case or non-hex digits, version
    /// `ff`, an all-zero trace or parent id).
    pub fn from_traceparent(value: &[u8]) -> Option<Self> {
        Self::from_trace_id(parse_traceparent(value)?)
    }

    /// Labels of your own, e.g. `[("trace_id", id), ("span_id", span)]`. `None` if the set
    /// is empty, a name is not a valid Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`),
    /// starts with the reserved `__` or appears twice, a value holds a double quote, or names
    /// and values together exceed [`MAX_EXEMPLAR_CHARS`] characters (OpenMetrics' limit).
    /// The OpenMetrics writer would silently leave such an exemplar out of every scrape, so
    /// it is refused here instead.
    pub fn new<K, V>(labels: impl IntoIterator<Item = (K, V)>) -> Option<Self>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let labels: Vec<(String, String)> = labels.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        let writable = exemplar_labels_ok(labels.iter().map(|(name, value)| (name.as_str(), value.as_str())));
        (!labels.is_empty() && writable).then(|| Self { repr: Repr::Custom(labels.into()) })
    }

    /// The labels as name/value pairs.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        match &self.repr {
            Repr::TraceId(id) => vec![("trace_id".to_owned(), hex(id))],
            Repr::Custom(labels) => labels.to_vec(),
        }
    }
}

impl fmt::Debug for ExemplarLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.to_pairs()).finish()
    }
}

/// Picks an exemplar for a request from its headers and extensions (for example a trace
/// context another layer put there); `None` records the call without one.
pub type ExemplarExtractor =
    Arc<dyn Fn(&http::HeaderMap, &http::Extensions) -> Option<ExemplarLabels> + Send + Sync + 'static>;

/// The default extractor: the trace id of the request's `traceparent` header.
pub(crate) fn from_traceparent_header(headers: &http::HeaderMap, _: &http::Extensions) -> Option<ExemplarLabels> {
    static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
    ExemplarLabels::from_traceparent(headers.get(&TRACEPARENT)?.as_bytes())
}

thread_local! {
    /// The exemplar of the observation being recorded on this thread, if any.
    static PENDING: Cell<Option<ExemplarLabels>> = const { Cell::new(None) };
}

/// Runs `record` with `exemplar` offered to the recorder, and withdraws it afterwards so
/// that it can never attach to another observation.
pub(crate) fn offer<R>(exemplar: &ExemplarLabels, record: impl FnOnce() -> R) -> R {
    PENDING.with(|pending| pending.set(Some(exemplar.clone())));
    let result = record();
    PENDING.with(Cell::take);
    result
}

/// The exemplar offered for the observation being recorded now (taken: at most one
/// histogram gets it).
#[cfg_attr(not(feature = "exporter"), allow(dead_code))]
pub(crate) fn take_offered() -> Option<ExemplarLabels> {
    PENDING.with(Cell::take)
}

/// Parses a `traceparent` value into its trace id, per W3C Trace Context level 1.
pub(crate) fn parse_traceparent(value: &[u8]) -> Option<[u8; 16]> {
    // version "-" trace-id "-" parent-id "-" flags: 2 + 1 + 32 + 1 + 16 + 1 + 2 = 55 bytes.
    const LEN: usize = 55;
    let head = value.get(..LEN)?;
    let version = hex_byte(head[0], head[1])?;
    // Version ff is invalid; version 00 has exactly 55 bytes; later versions may append
    // fields after a '-'.
    let rest_ok = match version {
        0xff => false,
        0x00 => value.len() == LEN,
        _ => value.len() == LEN || value[LEN] == b'-',
    };
    if !rest_ok || head[2] != b'-' || head[35] != b'-' || head[52] != b'-' {
        return None;
    }
    let mut trace_id = [0u8; 16];
    for (i, byte) in trace_id.iter_mut().enumerate() {
        *byte = hex_byte(head[3 + 2 * i], head[4 + 2 * i])?;
    }
    let mut parent_nonzero = false;
    for i in 0..8 {
        parent_nonzero |= hex_byte(head[36 + 2 * i], head[37 + 2 * i])? != 0;
    }
    hex_byte(head[53], head[54])?;
    (trace_id != [0; 16] && parent_nonzero).then_some(trace_id)
}

/// Two lowercase hex digits (the spec's HEXDIGLC) as a byte.
fn hex_byte(high: u8, low: u8) -> Option<u8> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    Some(digit(high)? << 4 | digit(low)?)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().flat_map(|b| [DIGITS[usize::from(b >> 4)] as char, DIGITS[usize::from(b & 15)] as char]).collect()
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`: a label name Prometheus and OpenMetrics 1.0 accept. Here rather
/// than in the exposition (which needs feature `exporter`) so that `ExemplarLabels::new` and
/// the OpenMetrics writer share one rule.
pub(crate) fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether the OpenMetrics writer can carry an exemplar with these labels: valid names, none
/// `__`-reserved or repeated, no double quote in a value (the Python reference parser
/// mis-tracks escaped quotes in exemplars) and at most [`MAX_EXEMPLAR_CHARS`] characters of
/// names and values. An empty set passes: the format allows `# {}`.
pub(crate) fn exemplar_labels_ok<'a, I>(labels: I) -> bool
where
    I: Iterator<Item = (&'a str, &'a str)> + Clone,
{
    let mut chars = 0;
    for (i, (name, value)) in labels.clone().enumerate() {
        chars += name.chars().count() + value.chars().count();
        // Failing at the limit bounds the quadratic repeat check to a few dozen labels.
        if chars > MAX_EXEMPLAR_CHARS || !is_label_name(name) || name.starts_with("__") || value.contains('"') {
            return false;
        }
        if labels.clone().take(i).any(|(earlier, _)| earlier == name) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_gives_its_trace_id() {
        let labels = ExemplarLabels::from_traceparent(VALID.as_bytes()).unwrap();
        assert_eq!(labels.to_pairs(), [("trace_id".to_owned(), "4bf92f3577b34da6a3ce929d0e0e4736".to_owned())]);
        // A later version may carry more fields after a '-'.
        let future = format!("01{}-extra", &VALID[2..]);
        assert!(ExemplarLabels::from_traceparent(future.as_bytes()).is_some());
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        let zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let zero_parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        let upper = VALID.to_uppercase();
        let bad = [
            "",
            "00",
            &VALID[..54],
            &format!("{VALID}-"),
            &format!("ff{}", &VALID[2..]),
            zero_trace,
            zero_parent,
            &upper,
            &VALID.replace('-', "_"),
            &format!("01{}x", &VALID[2..]),
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ];
        for value in bad {
            assert_eq!(ExemplarLabels::from_traceparent(value.as_bytes()), None, "{value:?}");
        }
    }

    #[test]
    fn custom_labels_stay_within_the_openmetrics_limit() {
        assert!(ExemplarLabels::new([("trace_id", "a".repeat(120))]).is_some());
        assert!(ExemplarLabels::new([("trace_id", "a".repeat(121))]).is_none());
        assert!(ExemplarLabels::new([("trace_id", "é".repeat(120))]).is_some(), "characters, not bytes");
        assert!(ExemplarLabels::new(Vec::<(String, String)>::new()).is_none());
        assert!(ExemplarLabels::new([("bad name", "x")]).is_none());
        assert!(ExemplarLabels::new([("1x", "x")]).is_none());
    }

    #[test]
    fn labels_the_openmetrics_writer_would_drop_are_refused() {
        assert!(ExemplarLabels::new([("trace_id", "a"), ("span_id", "b")]).is_some());
        assert!(ExemplarLabels::new([("_x", "a\\b\n")]).is_some(), "escaped characters are fine");
        assert!(ExemplarLabels::new([("__trace_id", "a")]).is_none(), "reserved name");
        assert!(ExemplarLabels::new([("trace_id", "a"), ("trace_id", "b")]).is_none(), "repeated name");
        assert!(ExemplarLabels::new([("trace_id", "a\"b")]).is_none(), "double quote in a value");
    }

    #[test]
    fn an_offer_is_taken_once_and_withdrawn_after() {
        let labels = ExemplarLabels::from_traceparent(VALID.as_bytes()).unwrap();
        let taken = offer(&labels, || (take_offered(), take_offered()));
        assert_eq!(taken, (Some(labels.clone()), None));
        offer(&labels, || ());
        assert_eq!(take_offered(), None, "an untaken offer does not linger");
    }
}
