//! The OpenMetrics 1.0.0 text format.
//!
//! Shape, per the specification: `# TYPE`, then `# UNIT` (only when the family has a unit
//! and its name ends with `_<unit>`: strict parsers reject a mismatch), then `# HELP` with
//! `\\`, `\n` and `\"` escaped; counters named without `_total` and sampled with it;
//! histograms as `_bucket{le}` (`le` written as the text format writes it, `1`, `0.005`,
//! `+Inf`, so that a bucket is one series whichever format Prometheus negotiates), `_count`,
//! `_sum`; summaries as `quantile` samples, `_sum`, `_count`; untyped as `unknown`;
//! exemplars after counter and bucket samples as ` # {labels} value timestamp` (seconds);
//! `# EOF` at the end.
//!
//! One bad line makes a strict reader throw the whole scrape away, so what the format
//! cannot carry is left out instead of written wrong, each case by the rule it would break:
//!
//! - a family with an invalid name, or one whose name or sample names clash with an
//!   earlier family's (`foo` and `foo_total`, `foo` and `foo_count` of a histogram `foo`);
//! - a series with an invalid, `__`-reserved or repeated label name, a label called `le`
//!   in a histogram or `quantile` in a summary, or the same label set as an earlier series;
//! - a counter that is NaN or negative; a histogram series whose bucket counts fall or pass
//!   the total; `_sum` (and with it `_count`) when it is NaN, negative, or when buckets go
//!   below zero; a quantile outside `0..=1` or with a negative value; a summary's NaN or
//!   negative `_sum`;
//! - an exemplar whose labels pass 128 characters, have a bad name, or hold a double
//!   quote (the Python reference parser mis-tracks escaped quotes in exemplars);
//! - histograms with only native buckets (as in the text format) and `_created` samples
//!   (older Prometheus versions ingest those as series of their own; the protobuf format
//!   carries created timestamps instead).
//!
//! Buckets are written sorted by bound with repeats dropped (the exporter keeps configured
//! bounds as given), and the `+Inf` bucket always carries the series' count.

use std::collections::HashSet;
use std::fmt::{Display, Write};

use super::model::{Exemplar, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use super::number::{GoFloat, push_canonical, whole_u64};
use super::{escape, family_type, is_native_only, skip_native_family, write_labels};
use crate::exemplar::{exemplar_labels_ok, is_label_name};

/// The `Content-Type` of this format.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Appends `families` to `out` as one OpenMetrics exposition, `# EOF` included.
pub(crate) fn write(families: &[MetricFamily], out: &mut String) {
    let mut taken = HashSet::new();
    for family in families {
        write_family(family, &mut taken, out);
    }
    out.push_str("# EOF\n");
}

fn write_family(family: &MetricFamily, taken: &mut HashSet<String>, out: &mut String) {
    let Some(raw) = family.name.as_deref() else { return };
    let Some(kind) = family_type(family) else { return };
    if skip_native_family(family, kind) {
        return;
    }
    let (name, type_name, suffixes): (&str, &str, &[&str]) = match kind {
        MetricType::Counter => (raw.strip_suffix("_total").unwrap_or(raw), "counter", &["", "_total", "_created"]),
        MetricType::Gauge => (raw, "gauge", &[""]),
        MetricType::Untyped => (raw, "unknown", &[""]),
        MetricType::Summary => (raw, "summary", &["", "_count", "_sum", "_created"]),
        MetricType::Histogram => (raw, "histogram", &["", "_count", "_sum", "_bucket", "_created"]),
        MetricType::GaugeHistogram => (raw, "gaugehistogram", &["", "_gcount", "_gsum", "_bucket"]),
    };
    if !is_metric_name(name) {
        return;
    }
    // Every name the family may sample must be new to the exposition.
    let names: Vec<String> = suffixes.iter().map(|suffix| format!("{name}{suffix}")).collect();
    if names.iter().any(|n| taken.contains(n)) {
        return;
    }
    taken.extend(names);

    let _ = writeln!(out, "# TYPE {name} {type_name}");
    if let Some(unit) = family.unit.as_deref().filter(|u| !u.is_empty())
        && name.strip_suffix(unit).is_some_and(|stem| stem.ends_with('_'))
    {
        let _ = writeln!(out, "# UNIT {name} {unit}");
    }
    if let Some(help) = family.help.as_deref().filter(|h| !h.is_empty()) {
        let _ = write!(out, "# HELP {name} ");
        escape(help, true, out);
        out.push('\n');
    }

    let reserved = match kind {
        MetricType::Histogram | MetricType::GaugeHistogram => Some("le"),
        MetricType::Summary => Some("quantile"),
        _ => None,
    };
    let mut seen: HashSet<Vec<(&str, &str)>> = HashSet::new();
    for metric in &family.metric {
        let Some(key) = label_key(&metric.label, reserved) else { continue };
        if seen.contains(&key) {
            continue;
        }
        if write_series(out, name, kind, metric) {
            seen.insert(key);
        }
    }
}

/// The label set as a sorted key for uniqueness, or `None` if OpenMetrics cannot carry it.
fn label_key<'a>(labels: &'a [LabelPair], reserved: Option<&str>) -> Option<Vec<(&'a str, &'a str)>> {
    let mut key = Vec::with_capacity(labels.len());
    for label in labels {
        let name = label.name.as_deref().unwrap_or_default();
        if !is_label_name(name) || name.starts_with("__") || Some(name) == reserved {
            return None;
        }
        key.push((name, label.value.as_deref().unwrap_or_default()));
    }
    key.sort_unstable();
    // A repeated label name.
    if key.windows(2).any(|w| w[0].0 == w[1].0) {
        return None;
    }
    Some(key)
}

/// Writes one series; `false` if it had nothing OpenMetrics can carry.
fn write_series(out: &mut String, name: &str, kind: MetricType, metric: &Metric) -> bool {
    let line = Line { name, labels: &metric.label, timestamp_ms: metric.timestamp_ms };
    match kind {
        MetricType::Counter => {
            let Some(counter) = &metric.counter else { return false };
            let value = counter.value.unwrap_or(0.0);
            if value.is_nan() || value < 0.0 {
                return false;
            }
            let value = whole_u64(value).map_or(Num::Float(value), Num::Int);
            line.write(out, "_total", None, value, counter.exemplar.as_ref());
        }
        MetricType::Gauge => {
            let Some(gauge) = &metric.gauge else { return false };
            line.write(out, "", None, Num::Float(gauge.value.unwrap_or(0.0)), None);
        }
        MetricType::Untyped => {
            let Some(untyped) = &metric.untyped else { return false };
            line.write(out, "", None, Num::Float(untyped.value.unwrap_or(0.0)), None);
        }
        MetricType::Summary => {
            let Some(summary) = &metric.summary else { return false };
            for quantile in &summary.quantile {
                let (q, value) = (quantile.quantile.unwrap_or(0.0), quantile.value.unwrap_or(0.0));
                if (0.0..=1.0).contains(&q) && (value >= 0.0 || value.is_nan()) {
                    line.write(out, "", Some(("quantile", q)), Num::Float(value), None);
                }
            }
            line.write(out, "_count", None, Num::Int(summary.sample_count.unwrap_or(0)), None);
            let sum = summary.sample_sum.unwrap_or(0.0);
            if sum >= 0.0 {
                line.write(out, "_sum", None, Num::Float(sum), None);
            }
        }
        MetricType::Histogram | MetricType::GaugeHistogram => {
            let Some(histogram) = &metric.histogram else { return false };
            return write_histogram(out, &line, histogram, kind == MetricType::GaugeHistogram);
        }
    }
    true
}

fn write_histogram(out: &mut String, line: &Line<'_>, histogram: &Histogram, gauge: bool) -> bool {
    if is_native_only(histogram) {
        return false;
    }
    let count = histogram.sample_count.unwrap_or(0);
    let mut buckets: Vec<(f64, u64, Option<&Exemplar>)> = histogram
        .bucket
        .iter()
        .map(|b| (b.upper_bound.unwrap_or(0.0), b.cumulative_count.unwrap_or(0), b.exemplar.as_ref()))
        .filter(|(bound, _, _)| !bound.is_nan() && *bound != f64::INFINITY)
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Keeps the first of equal bounds (-0.0 and 0.0 included).
    buckets.dedup_by(|later, earlier| later.0 == earlier.0);
    let mut previous = 0;
    for &(_, cumulative, _) in &buckets {
        if cumulative < previous || cumulative > count {
            return false;
        }
        previous = cumulative;
    }
    let inf_exemplar =
        histogram.bucket.iter().rev().find(|b| b.upper_bound == Some(f64::INFINITY)).and_then(|b| b.exemplar.as_ref());
    for &(bound, cumulative, exemplar) in &buckets {
        line.write(out, "_bucket", Some(("le", bound)), Num::Int(cumulative), exemplar);
    }
    line.write(out, "_bucket", Some(("le", f64::INFINITY)), Num::Int(count), inf_exemplar);

    let negative_buckets = buckets.first().is_some_and(|b| b.0 < 0.0);
    let sum = histogram.sample_sum.unwrap_or(0.0);
    if gauge {
        // A gauge histogram's sum may go negative only along with its buckets.
        if !sum.is_nan() && (sum >= 0.0 || negative_buckets) {
            line.write(out, "_gcount", None, Num::Int(count), None);
            line.write(out, "_gsum", None, Num::Float(sum), None);
        }
    } else if !negative_buckets && sum >= 0.0 {
        // `_count` comes if and only if `_sum` does.
        line.write(out, "_count", None, Num::Int(count), None);
        line.write(out, "_sum", None, Num::Float(sum), None);
    }
    true
}

/// The parts every sample line of one series shares.
struct Line<'a> {
    name: &'a str,
    labels: &'a [LabelPair],
    timestamp_ms: Option<i64>,
}

/// A sample value: counts, and counters that are whole, as integers.
enum Num {
    Int(u64),
    Float(f64),
}

impl Line<'_> {
    fn write(
        &self,
        out: &mut String,
        suffix: &str,
        extra: Option<(&str, f64)>,
        value: Num,
        exemplar: Option<&Exemplar>,
    ) {
        out.push_str(self.name);
        out.push_str(suffix);
        if !self.labels.is_empty() || extra.is_some() {
            // `le` and `quantile` are spelled as client_golang's text format spells them
            // (`1`, `0.005`, `1e-05`, `+Inf`), as this crate's text format does too, not in
            // OpenMetrics' canonical form (`1.0`): the label value is the series' identity,
            // and Prometheus 2 stores it as written, so a bucket must be the same series
            // whichever format Prometheus negotiates, and the same as a Go service's.
            // Dashboards and alerts written for Go services select buckets as Go writes them
            // (`le="1"`) and keep working. Prometheus 3 normalizes both spellings on
            // ingestion; the reference parsers accept both.
            let extra = extra.map(|(name, v)| (name, GoFloat(v)));
            write_labels(out, self.labels, extra.as_ref().map(|(name, v)| (*name, v as &dyn Display)));
        }
        out.push(' ');
        match value {
            Num::Int(v) => {
                let _ = write!(out, "{v}");
            }
            Num::Float(v) => push_canonical(out, v),
        }
        if let Some(ms) = self.timestamp_ms {
            out.push(' ');
            push_seconds(out, i128::from(ms) * 1_000_000);
        }
        if let Some(exemplar) = exemplar.filter(|e| exemplar_fits(e)) {
            out.push_str(" # ");
            write_labels(out, &exemplar.label, None);
            out.push(' ');
            push_canonical(out, exemplar.value.unwrap_or(0.0));
            if let Some(ts) = &exemplar.timestamp {
                out.push(' ');
                push_seconds(out, i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos));
            }
        }
        out.push('\n');
    }
}

/// Whether an exemplar can be written: by the rule `ExemplarLabels::new` applies too.
fn exemplar_fits(exemplar: &Exemplar) -> bool {
    exemplar_labels_ok(
        exemplar.label.iter().map(|l| (l.name.as_deref().unwrap_or_default(), l.value.as_deref().unwrap_or_default())),
    )
}

/// Writes a time given in nanoseconds as seconds, exactly: `1700000000.123`, `-1.5`, `0`.
pub(super) fn push_seconds(out: &mut String, nanos: i128) {
    if nanos < 0 {
        out.push('-');
    }
    let nanos = nanos.unsigned_abs();
    let _ = write!(out, "{}", nanos / 1_000_000_000);
    let fraction = nanos % 1_000_000_000;
    if fraction != 0 {
        let digits = format!("{fraction:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`: a metric name OpenMetrics 1.0 can write unquoted.
pub(crate) fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}
