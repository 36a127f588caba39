//! Reads the text that `metrics-exporter-prometheus`' `PrometheusHandle::render()` produces
//! back into the model, so the crate can keep the exporter as the store of the
//! application's own metrics and serve them in every format.
//!
//! The contract is a round trip: for any exporter state, [`text::write`](super::text::write)
//! of `parse(render())` gives `render()` back byte for byte (the parser keeps the order of
//! families, series, labels and buckets). Counters are `f64` in the model, so a counter past
//! 2^53 comes back rounded, as it would in Prometheus.
//!
//! Families open at `# TYPE` (taking the `# HELP` just before it); `_bucket`, `_sum`,
//! `_count` and `quantile` samples fold into their histogram or summary series with the
//! exporter's naming rule (a suffix the name already ends with is not repeated). A sample
//! no open family claims starts an untyped one. Anything else (other comments, malformed
//! lines, values that do not parse) is skipped: the parser never fails and never panics.

use super::model::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType, Quantile, Summary, Untyped,
};
use super::number::whole_u64;

/// Parses exporter text into families, in the order they appear.
pub(crate) fn parse(text: &str) -> Vec<MetricFamily> {
    let mut parser = Parser::default();
    for line in text.split('\n') {
        parser.line(line);
    }
    parser.families
}

#[derive(Default)]
struct Parser {
    families: Vec<MetricFamily>,
    /// The last `# HELP`: (name, unescaped text), claimed by a `# TYPE` of the same name.
    help: Option<(String, String)>,
}

/// One sample line, split up.
struct Sample<'a> {
    name: &'a str,
    labels: Vec<LabelPair>,
    value: f64,
    /// The value as written: a count past 2^53 is read from it, exactly.
    value_text: &'a str,
    timestamp: Option<i64>,
}

impl Parser {
    fn line(&mut self, line: &str) {
        if let Some(comment) = line.strip_prefix('#') {
            self.comment(comment);
        } else if !line.trim().is_empty()
            && let Some(sample) = split_sample(line)
        {
            self.sample(sample);
        }
    }

    fn comment(&mut self, comment: &str) {
        let comment = comment.trim_start_matches([' ', '\t']);
        if let Some(rest) = comment.strip_prefix("HELP ") {
            // The text runs from the single space after the name: a description may
            // itself start with spaces.
            let rest = rest.trim_start_matches([' ', '\t']);
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            self.help = Some((name.to_owned(), unescape_help(text)));
        } else if let Some(rest) = comment.strip_prefix("TYPE ") {
            let mut words = rest.split_whitespace();
            let (Some(name), Some(kind), None) = (words.next(), words.next(), words.next()) else { return };
            let kind = match kind {
                "counter" => MetricType::Counter,
                "gauge" => MetricType::Gauge,
                "histogram" => MetricType::Histogram,
                "summary" => MetricType::Summary,
                "untyped" => MetricType::Untyped,
                _ => return,
            };
            let help = self.help.take().filter(|(help_name, _)| help_name == name).map(|(_, text)| text);
            self.families.push(MetricFamily {
                name: Some(name.to_owned()),
                help,
                r#type: Some(kind as i32),
                metric: Vec::new(),
                unit: None,
            });
        }
    }

    fn sample(&mut self, mut sample: Sample<'_>) {
        if let Some(family) = self.families.last_mut()
            && let Some(name) = family.name.clone()
        {
            let claimed = match MetricType::try_from(family.r#type.unwrap_or_default()) {
                Ok(MetricType::Counter) if sample.name == name => push_value(family, &sample, |v| Metric {
                    counter: Some(Counter { value: Some(v), ..Default::default() }),
                    ..Default::default()
                }),
                Ok(MetricType::Gauge) if sample.name == name => push_value(family, &sample, |v| Metric {
                    gauge: Some(Gauge { value: Some(v) }),
                    ..Default::default()
                }),
                Ok(MetricType::Untyped) if sample.name == name => push_value(family, &sample, |v| Metric {
                    untyped: Some(Untyped { value: Some(v) }),
                    ..Default::default()
                }),
                Ok(MetricType::Histogram) => histogram_sample(family, &name, &mut sample),
                Ok(MetricType::Summary) => summary_sample(family, &name, &mut sample),
                _ => false,
            };
            if claimed {
                return;
            }
        }
        self.stray(&sample);
    }

    /// A sample no open family claims: Prometheus reads it as untyped, and so do we.
    fn stray(&mut self, sample: &Sample<'_>) {
        let continues = self
            .families
            .last()
            .is_some_and(|f| f.name.as_deref() == Some(sample.name) && f.r#type == Some(MetricType::Untyped as i32));
        if !continues {
            self.families.push(MetricFamily {
                name: Some(sample.name.to_owned()),
                r#type: Some(MetricType::Untyped as i32),
                ..Default::default()
            });
        }
        if let Some(family) = self.families.last_mut() {
            push_value(family, sample, |v| Metric { untyped: Some(Untyped { value: Some(v) }), ..Default::default() });
        }
    }
}

/// Pushes a one-value series.
fn push_value(family: &mut MetricFamily, sample: &Sample<'_>, make: impl FnOnce(f64) -> Metric) -> bool {
    let mut metric = make(sample.value);
    metric.label = sample.labels.clone();
    metric.timestamp_ms = sample.timestamp;
    family.metric.push(metric);
    true
}

/// The exporter's suffix rule: `name_suffix`, unless `name` already ends with `suffix`.
fn suffixed(name: &str, suffix: &str) -> String {
    if name.ends_with(suffix) { name.to_owned() } else { format!("{name}_{suffix}") }
}

/// The series a `_bucket`/`_sum`/`_count`/quantile line belongs to: the last one if it has
/// the same labels and `fits` (the part is not there yet), else a new one. Going by
/// position rather than by label set keeps two series that render alike (the exporter
/// sanitizes label names, so `a-b` and `a_b` both print as `a_b`) apart.
fn series<'f>(
    family: &'f mut MetricFamily,
    sample: &Sample<'_>,
    fits: impl Fn(&mut Metric) -> bool,
    make: impl FnOnce() -> Metric,
) -> &'f mut Metric {
    let reuse = family
        .metric
        .last_mut()
        .is_some_and(|m| m.label == sample.labels && m.timestamp_ms == sample.timestamp && fits(m));
    if !reuse {
        let mut metric = make();
        metric.label = sample.labels.clone();
        metric.timestamp_ms = sample.timestamp;
        family.metric.push(metric);
    }
    // Just pushed or checked above: the family has a last series.
    let last = family.metric.len() - 1;
    &mut family.metric[last]
}

/// Folds a histogram's sample into its series; `false` if the name is not one of the
/// family's. A claimed line with an unusable value (a fractional count) still returns
/// `true`: it is dropped rather than misread as a stray untyped sample.
fn histogram_sample(family: &mut MetricFamily, name: &str, sample: &mut Sample<'_>) -> bool {
    let open = |m: &mut Metric| histogram_totals(m).is_some_and(|(sum, count)| sum.is_none() && count.is_none());
    if sample.name == suffixed(name, "bucket")
        && let Some(le) = take_label(&mut sample.labels, "le")
    {
        let (Some(bound), Some(count)) = (parse_f64(&le), sample_count(sample)) else { return true };
        let metric = series(family, sample, open, new_histogram);
        if let Some(h) = metric.histogram.as_mut() {
            h.bucket.push(Bucket { upper_bound: Some(bound), cumulative_count: Some(count), ..Default::default() });
        }
        true
    } else {
        total_sample(family, name, &suffixed(name, "sum"), sample, new_histogram, histogram_totals)
    }
}

/// Folds a summary's sample into its series, as [`histogram_sample`] does.
fn summary_sample(family: &mut MetricFamily, name: &str, sample: &mut Sample<'_>) -> bool {
    let sum_name = suffixed(name, "sum");
    // A summary whose name ends in `sum` writes its `_sum` under its own name; if its series
    // also has a label called `quantile`, the sum line looks like a quantile line. The
    // exporter writes the sum right after the quantiles, with the series' labels as they
    // are: that is how it is told apart.
    let sum_of_open_series = sample.name == sum_name
        && family.metric.last().is_some_and(|m| {
            m.label == sample.labels
                && m.timestamp_ms == sample.timestamp
                && m.summary
                    .as_ref()
                    .is_some_and(|s| !s.quantile.is_empty() && s.sample_sum.is_none() && s.sample_count.is_none())
        });
    if !sum_of_open_series
        && sample.name == name
        && let Some(q) = take_label(&mut sample.labels, "quantile")
    {
        let Some(quantile) = parse_f64(&q) else { return true };
        let open = |m: &mut Metric| summary_totals(m).is_some_and(|(sum, count)| sum.is_none() && count.is_none());
        if let Some(s) = series(family, sample, open, new_summary).summary.as_mut() {
            s.quantile.push(Quantile { quantile: Some(quantile), value: Some(sample.value) });
        }
        true
    } else {
        total_sample(family, name, &sum_name, sample, new_summary, summary_totals)
    }
}

/// The `_sum` and `_count` of a histogram or summary series, where the metric has one.
type Totals = fn(&mut Metric) -> Option<(&mut Option<f64>, &mut Option<u64>)>;

fn histogram_totals(metric: &mut Metric) -> Option<(&mut Option<f64>, &mut Option<u64>)> {
    metric.histogram.as_mut().map(|h| (&mut h.sample_sum, &mut h.sample_count))
}

fn summary_totals(metric: &mut Metric) -> Option<(&mut Option<f64>, &mut Option<u64>)> {
    metric.summary.as_mut().map(|s| (&mut s.sample_sum, &mut s.sample_count))
}

fn new_histogram() -> Metric {
    Metric { histogram: Some(Histogram::default()), ..Default::default() }
}

fn new_summary() -> Metric {
    Metric { summary: Some(Summary::default()), ..Default::default() }
}

/// Folds a `_sum` (named `sum_name`) or `_count` line into a histogram or summary series,
/// which fold them alike; `false` if the line is neither.
fn total_sample(
    family: &mut MetricFamily,
    name: &str,
    sum_name: &str,
    sample: &Sample<'_>,
    new: fn() -> Metric,
    totals: Totals,
) -> bool {
    if sample.name == sum_name {
        let fits = |m: &mut Metric| totals(m).is_some_and(|(sum, _)| sum.is_none());
        if let Some((sum, _)) = totals(series(family, sample, fits, new)) {
            *sum = Some(sample.value);
        }
        true
    } else if sample.name == suffixed(name, "count") {
        let Some(value) = sample_count(sample) else { return true };
        let fits = |m: &mut Metric| totals(m).is_some_and(|(_, count)| count.is_none());
        if let Some((_, count)) = totals(series(family, sample, fits, new)) {
            *count = Some(value);
        }
        true
    } else {
        false
    }
}

/// Removes the last label called `name` (the exporter appends `le`/`quantile` after the
/// series' own labels, which may hold one of the same name) and returns its value.
fn take_label(labels: &mut Vec<LabelPair>, name: &str) -> Option<String> {
    let at = labels.iter().rposition(|l| l.name.as_deref() == Some(name))?;
    labels.remove(at).value
}

/// Splits `name{labels} value [timestamp]`; `None` for anything malformed.
fn split_sample(line: &str) -> Option<Sample<'_>> {
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        rest = parse_labels(body, &mut labels)?;
    }
    let mut words = rest.split([' ', '\t']).filter(|w| !w.is_empty());
    // Every value is a float (counts too), so a line whose value is not one is skipped here.
    let value_text = words.next()?;
    let value = parse_f64(value_text)?;
    let timestamp = match words.next() {
        Some(ts) => Some(ts.parse::<i64>().ok()?),
        None => None,
    };
    if words.next().is_some() {
        return None;
    }
    Some(Sample { name, labels, value, value_text, timestamp })
}

/// Parses `k="v",...}` into `labels`; returns what follows the closing brace.
fn parse_labels<'a>(mut s: &'a str, labels: &mut Vec<LabelPair>) -> Option<&'a str> {
    loop {
        s = s.trim_start_matches([' ', '\t']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some(rest);
        }
        let eq = s.find('=')?;
        let name = s[..eq].trim_matches([' ', '\t']);
        if name.is_empty() || name.contains([',', '}', '"']) {
            return None;
        }
        let body = s[eq + 1..].trim_start_matches([' ', '\t']).strip_prefix('"')?;
        let (value, rest) = unescape_quoted(body)?;
        labels.push(LabelPair { name: Some(name.to_owned()), value: Some(value) });
        s = rest.trim_start_matches([' ', '\t']);
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return None;
        }
    }
}

/// Reads a label value up to its closing quote, undoing `\\`, `\"` and `\n`; an unknown
/// escape is kept as written. Returns the value and what follows the quote.
fn unescape_quoted(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                Some((_, 'n')) => value.push('\n'),
                Some((_, other)) => {
                    value.push('\\');
                    value.push(other);
                }
                None => return None,
            },
            c => value.push(c),
        }
    }
    None
}

/// Undoes HELP escaping (`\\`, `\n`); other backslashes stay as written.
fn unescape_help(text: &str) -> String {
    let mut help = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            help.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => help.push('\\'),
            Some('n') => help.push('\n'),
            Some(other) => {
                help.push('\\');
                help.push(other);
            }
            None => help.push('\\'),
        }
    }
    help
}

/// A float as the exporter prints it (`Display`: `NaN`, `inf`, `-inf`) or as Prometheus
/// does (`+Inf`, `-Inf`, exponents); Rust's parser takes all of these.
fn parse_f64(s: &str) -> Option<f64> {
    s.parse().ok()
}

/// A sample's value as a count: an integer, or a float that holds one exactly.
fn sample_count(sample: &Sample<'_>) -> Option<u64> {
    sample.value_text.parse::<u64>().ok().or_else(|| whole_u64(sample.value))
}
