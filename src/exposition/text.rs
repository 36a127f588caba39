//! The Prometheus text format 0.0.4, written the way `metrics-exporter-prometheus` 0.18
//! renders it, so that serving `/metrics` from the model changes no byte a scraper sees.
//!
//! What the exporter does, and this writer copies:
//!
//! - per family: `# HELP` (only if described), `# TYPE`, the samples, then one blank line;
//! - numbers through Rust's `Display`: `5`, `0.5`, `NaN`, `inf`, `-inf`, never an exponent;
//!   counters as integers (they are `u64` in the exporter, `f64` in the model);
//! - histograms: the buckets in their order, a final `le="+Inf"` bucket, `_sum`, `_count`;
//!   summaries: `quantile` samples, `_sum`, `_count`;
//! - one departure: `le` and `quantile` are spelled as client_golang spells them (`0.005`,
//!   `1`, `10`, and with an exponent below 1e-4 and from 1e+06 on: `1e-05`, `1.048576e+06`,
//!   where the exporter writes `0.00001` and `1048576`), so that a bucket is the same series
//!   as a Go service's; every bound from 1e-4 to 1e+06 is spelled as before;
//! - a suffix is appended only if the name does not already end with it (`checksum` keeps
//!   its name for its `_sum` sample), which is the exporter's rule, odd as it is;
//! - the extra label (`le`, `quantile`) comes after the series' labels.
//!
//! Histogram families with only native buckets are left out, as the exporter does; a
//! series with both kinds writes its classic buckets.

use std::fmt::{Display, Write};

use super::model::{Metric, MetricFamily, MetricType};
use super::number::{GoFloat, whole_u64};
use super::{escape, family_type, is_native_only, skip_native_family, write_labels};

/// The `Content-Type` of this format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Appends `families` to `out` in the text format, in slice order.
pub(crate) fn write(families: &[MetricFamily], out: &mut String) {
    for family in families {
        write_family(family, out);
    }
}

fn write_family(family: &MetricFamily, out: &mut String) {
    let Some(name) = family.name.as_deref().filter(|name| !name.is_empty()) else { return };
    let Some(kind) = family_type(family) else { return };
    if skip_native_family(family, kind) {
        return;
    }
    if let Some(help) = &family.help {
        out.push_str("# HELP ");
        out.push_str(name);
        out.push(' ');
        escape(help, false, out);
        out.push('\n');
    }
    out.push_str("# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(type_name(kind));
    out.push('\n');
    for metric in &family.metric {
        match kind {
            MetricType::Counter => {
                if let Some(counter) = &metric.counter {
                    let value = counter.value.unwrap_or(0.0);
                    sample(out, name, None, metric, None, CounterValue(value));
                }
            }
            MetricType::Gauge => {
                if let Some(gauge) = &metric.gauge {
                    sample(out, name, None, metric, None, gauge.value.unwrap_or(0.0));
                }
            }
            MetricType::Untyped => {
                if let Some(untyped) = &metric.untyped {
                    sample(out, name, None, metric, None, untyped.value.unwrap_or(0.0));
                }
            }
            MetricType::Summary => write_summary(out, name, metric),
            MetricType::Histogram | MetricType::GaugeHistogram => write_histogram(out, name, metric),
        }
    }
    out.push('\n');
}

/// The `# TYPE` word. 0.0.4 has no gauge histogram: it is written with a histogram's shape.
fn type_name(kind: MetricType) -> &'static str {
    match kind {
        MetricType::Counter => "counter",
        MetricType::Gauge => "gauge",
        MetricType::Summary => "summary",
        MetricType::Untyped => "untyped",
        MetricType::Histogram | MetricType::GaugeHistogram => "histogram",
    }
}

fn write_summary(out: &mut String, name: &str, metric: &Metric) {
    let Some(summary) = &metric.summary else { return };
    for quantile in &summary.quantile {
        let q = quantile.quantile.unwrap_or(0.0);
        sample(out, name, None, metric, Some(("quantile", &GoFloat(q))), quantile.value.unwrap_or(0.0));
    }
    sample(out, name, Some("sum"), metric, None, summary.sample_sum.unwrap_or(0.0));
    sample(out, name, Some("count"), metric, None, summary.sample_count.unwrap_or(0));
}

fn write_histogram(out: &mut String, name: &str, metric: &Metric) {
    let Some(histogram) = &metric.histogram else { return };
    if is_native_only(histogram) {
        return;
    }
    let count = histogram.sample_count.unwrap_or(0);
    // The exporter always closes with its own `+Inf` bucket; a configured infinite bound
    // before it prints through `Display` (`inf`). Only the last one is `+Inf`.
    let closing = histogram
        .bucket
        .last()
        .is_some_and(|b| b.upper_bound == Some(f64::INFINITY))
        .then(|| histogram.bucket.len() - 1);
    for (i, bucket) in histogram.bucket.iter().enumerate() {
        let bound = bucket.upper_bound.unwrap_or(0.0);
        let cumulative = bucket.cumulative_count.unwrap_or(0);
        if Some(i) == closing {
            sample(out, name, Some("bucket"), metric, Some(("le", &"+Inf")), cumulative);
        } else if bound.is_infinite() {
            sample(out, name, Some("bucket"), metric, Some(("le", &bound)), cumulative);
        } else {
            sample(out, name, Some("bucket"), metric, Some(("le", &GoFloat(bound))), cumulative);
        }
    }
    if closing.is_none() {
        sample(out, name, Some("bucket"), metric, Some(("le", &"+Inf")), count);
    }
    sample(out, name, Some("sum"), metric, None, histogram.sample_sum.unwrap_or(0.0));
    sample(out, name, Some("count"), metric, None, count);
}

/// A counter's value: an integer as the exporter's `u64` prints it. `Display` of the `f64`
/// would round large integers to their shortest form (2^60 as `1152921504606847000`).
struct CounterValue(f64);

impl Display for CounterValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match whole_u64(self.0) {
            Some(v) => write!(f, "{v}"),
            None => write!(f, "{}", self.0),
        }
    }
}

/// One sample line: name (+ suffix), labels (+ the extra label last), value, timestamp.
fn sample(
    out: &mut String,
    name: &str,
    suffix: Option<&str>,
    metric: &Metric,
    extra: Option<(&str, &dyn Display)>,
    value: impl Display,
) {
    out.push_str(name);
    if let Some(suffix) = suffix.filter(|suffix| !name.ends_with(suffix)) {
        out.push('_');
        out.push_str(suffix);
    }
    if !metric.label.is_empty() || extra.is_some() {
        write_labels(out, &metric.label, extra);
    }
    // Writing into a String cannot fail.
    let _ = write!(out, " {value}");
    if let Some(ms) = metric.timestamp_ms {
        let _ = write!(out, " {ms}");
    }
    out.push('\n');
}
