//! What `/metrics` serves: the data model and the formats written from it.
//!
//! Public here are the [`Format`]s a scrape can ask for and the [`model`] a snapshot is
//! made of ([`MetricsHandle::snapshot`](crate::exporter::MetricsHandle::snapshot) returns
//! one, for tests and tools that want numbers rather than text).
//!
//! Every format is written from one `&[MetricFamily]` snapshot, synchronously, into memory:
//! the Prometheus text format 0.0.4 (line for line what `metrics-exporter-prometheus`
//! renders), OpenMetrics 1.0.0 text (strict enough for the reference parsers, with
//! exemplars) and delimited protobuf `io.prometheus.client.MetricFamily` messages (with
//! native histograms). The scraper's `Accept` header picks one ([`Format::negotiate`]).

pub mod model;
pub(crate) mod negotiate;
pub(crate) mod number;
pub(crate) mod openmetrics;
pub(crate) mod parse;
pub(crate) mod protobuf;
pub(crate) mod sparse;
pub(crate) mod text;

#[cfg(test)]
mod tests;

pub use negotiate::Format;

use std::cmp::Ordering;
use std::fmt::{Display, Write as _};

use model::{Histogram, LabelPair, MetricFamily, MetricType};

/// Puts a snapshot in a deterministic order: families by [`family_order`], series by their
/// label pairs as they stand. Labels inside a series keep their order: the exporter writes
/// them in insertion order (global labels first) and the text format must match it.
pub(crate) fn sort(families: &mut [MetricFamily]) {
    families.sort_by(family_order);
    for family in families.iter_mut() {
        family.metric.sort_by(|a, b| a.label.cmp(&b.label));
    }
}

/// The order of families in a snapshot: by name, then by type.
pub(crate) fn family_order(a: &MetricFamily, b: &MetricFamily) -> Ordering {
    a.name.cmp(&b.name).then_with(|| a.r#type.cmp(&b.r#type))
}

/// Writes `families` in `format`, in their order; the bytes to send with
/// [`Format::content_type`].
pub(crate) fn encode(format: Format, families: &[MetricFamily]) -> Vec<u8> {
    match format {
        Format::Text => {
            let mut out = String::new();
            text::write(families, &mut out);
            out.into_bytes()
        }
        Format::OpenMetrics => {
            let mut out = String::new();
            openmetrics::write(families, &mut out);
            out.into_bytes()
        }
        Format::Protobuf => {
            let mut out = Vec::new();
            protobuf::write(families, &mut out);
            out
        }
    }
}

/// The type a family declares. An absent type is proto2's default, `Counter`; a number
/// outside `MetricType` (only a decoder of foreign bytes yields one) is `None`, and the
/// text writers leave such a family out rather than guess its shape.
pub(crate) fn family_type(family: &MetricFamily) -> Option<MetricType> {
    match family.r#type {
        None => Some(MetricType::Counter),
        Some(raw) => MetricType::try_from(raw).ok(),
    }
}

/// Whether a histogram series has native (sparse) buckets and no classic ones: the text
/// formats cannot show it, so they skip it as the exporter does.
pub(crate) fn is_native_only(histogram: &Histogram) -> bool {
    let native = histogram.schema.is_some()
        || histogram.zero_threshold.is_some()
        || histogram.zero_count.is_some()
        || !histogram.positive_span.is_empty()
        || !histogram.negative_span.is_empty();
    native && histogram.bucket.is_empty()
}

/// Whether a text writer leaves the whole family out: a histogram family whose every series
/// is native-only (the exporter writes nothing at all for those, not even `# TYPE`).
pub(crate) fn skip_native_family(family: &MetricFamily, kind: MetricType) -> bool {
    matches!(kind, MetricType::Histogram | MetricType::GaugeHistogram)
        && !family.metric.is_empty()
        && family.metric.iter().all(|m| m.histogram.as_ref().is_some_and(is_native_only))
}

/// Writes `{name="value",...}`, values escaped, with `extra` (`le`, `quantile`) last and
/// written as given.
pub(crate) fn write_labels(out: &mut String, labels: &[LabelPair], extra: Option<(&str, &dyn Display)>) {
    out.push('{');
    for (i, label) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(label.name.as_deref().unwrap_or_default());
        out.push_str("=\"");
        escape(label.value.as_deref().unwrap_or_default(), true, out);
        out.push('"');
    }
    if let Some((name, value)) = extra {
        if !labels.is_empty() {
            out.push(',');
        }
        // Writing into a String cannot fail.
        let _ = write!(out, "{name}=\"{value}\"");
    }
    out.push('}');
}

/// Escapes a label value or HELP text: backslash and line feed, and the double quote if
/// `quote` (label values in both formats and HELP in OpenMetrics; text 0.0.4 leaves quotes
/// in HELP alone).
///
/// The exporter's sanitizer reads a backslash pair in its input as already escaped, so its
/// output is always the canonical escaping of *some* value; the model holds that value (the
/// parser unescapes it), and escaping it canonically gives the exporter's bytes back.
/// Copying the sanitizer instead would collapse `\\\\` to `\\` on the way through.
pub(crate) fn escape(text: &str, quote: bool, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}
