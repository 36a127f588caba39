//! OpenMetrics output: golden expositions, and property tests over hostile snapshots that
//! read every output back with the strict reader and check that values, labels, help,
//! units and exemplars survive, and that exactly what the format cannot carry is dropped.

use proptest::prelude::*;

use super::om_reader::{self, Family, Sample, parse_number};
use super::{render_om, strategies};
use crate::exemplar::is_label_name;
use crate::exposition::model::{Bucket, Exemplar, Histogram, LabelPair, MetricFamily, MetricType};
use crate::exposition::openmetrics::is_metric_name;

/// Seconds as written (`-1.5`, `1700000000.123`) to nanoseconds, independently of the writer.
fn nanos(seconds: &str) -> i128 {
    let (negative, digits) = seconds.strip_prefix('-').map_or((false, seconds), |d| (true, d));
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let fraction = format!("{fraction:0<9}");
    let n = whole.parse::<i128>().unwrap() * 1_000_000_000 + fraction.parse::<i128>().unwrap();
    if negative { -n } else { n }
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

fn label_strings(labels: &[LabelPair]) -> Vec<(String, String)> {
    labels.iter().map(|l| (l.name.clone().unwrap_or_default(), l.value.clone().unwrap_or_default())).collect()
}

/// What a strict reader must see for an exemplar: it, if it is writable.
fn expected_exemplar(exemplar: Option<&Exemplar>) -> Option<Exemplar> {
    let e = exemplar?;
    let names: Vec<&str> = e.label.iter().map(|l| l.name.as_deref().unwrap_or_default()).collect();
    let chars: usize = e
        .label
        .iter()
        .map(|l| {
            l.name.as_deref().unwrap_or_default().chars().count()
                + l.value.as_deref().unwrap_or_default().chars().count()
        })
        .sum();
    let ok = names.iter().all(|n| is_label_name(n) && !n.starts_with("__"))
        && names.iter().enumerate().all(|(i, n)| !names[..i].contains(n))
        && e.label.iter().all(|l| !l.value.as_deref().unwrap_or_default().contains('"'))
        && chars <= 128;
    ok.then(|| e.clone())
}

fn check_exemplar(read: &Sample, want: Option<&Exemplar>) -> Result<(), TestCaseError> {
    let want = expected_exemplar(want);
    prop_assert_eq!(read.exemplar.is_some(), want.is_some(), "exemplar presence on {:?}", read);
    if let (Some(got), Some(want)) = (&read.exemplar, want) {
        prop_assert_eq!(&got.labels, &label_strings(&want.label));
        prop_assert!(same(got.value, want.value.unwrap_or(0.0)));
        let want_ts = want.timestamp.map(|t| i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos));
        prop_assert_eq!(got.timestamp.as_deref().map(nanos), want_ts);
    }
    Ok(())
}

/// Checks one family as read against the model family it came from.
fn check_family(read: &Family, model: &MetricFamily, kind: MetricType) -> Result<(), TestCaseError> {
    let want_help = model.help.clone().filter(|h| !h.is_empty());
    prop_assert_eq!(&read.help, &want_help);
    let want_unit = model.unit.clone().filter(|u| !u.is_empty() && read.name.ends_with(&format!("_{u}")));
    prop_assert_eq!(&read.unit, &want_unit);
    let reserved = match kind {
        MetricType::Histogram | MetricType::GaugeHistogram => "le",
        MetricType::Summary => "quantile",
        _ => "",
    };
    let mut samples = read.samples.iter().peekable();
    let mut kept: Vec<Vec<(String, String)>> = Vec::new();
    for metric in &model.metric {
        let labels = label_strings(&metric.label);
        let mut sorted = labels.clone();
        sorted.sort();
        let valid_labels = labels.iter().all(|(n, _)| is_label_name(n) && !n.starts_with("__") && n != reserved)
            && sorted.windows(2).all(|w| w[0].0 != w[1].0)
            && !kept.contains(&sorted);
        let name = &read.name;
        let writable = valid_labels
            && match kind {
                MetricType::Counter => {
                    let v = metric.counter.as_ref().and_then(|c| c.value).unwrap_or(0.0);
                    !v.is_nan() && v >= 0.0
                }
                MetricType::Histogram | MetricType::GaugeHistogram => metric
                    .histogram
                    .as_ref()
                    .and_then(|h| histogram_samples(name, h, kind == MetricType::GaugeHistogram))
                    .is_some(),
                _ => true,
            };
        // A series left out leaves no sample: a stray one would be taken for the next
        // series' (and fail its comparison) or be left over at the end.
        if !writable {
            continue;
        }
        // The samples of this series: those with its labels, consecutive.
        let mut mine = Vec::new();
        while let Some(s) = samples.peek() {
            if s.labels_without(reserved) != labels {
                break;
            }
            mine.push(samples.next().unwrap_or_else(|| unreachable!()));
        }
        let ts = metric.timestamp_ms.map(|ms| i128::from(ms) * 1_000_000);
        for s in &mine {
            prop_assert_eq!(s.timestamp.as_deref().map(nanos), ts);
        }
        match kind {
            MetricType::Counter => {
                let c = metric.counter.as_ref().unwrap_or_else(|| unreachable!());
                prop_assert_eq!(mine.len(), 1);
                prop_assert_eq!(&mine[0].name, &format!("{name}_total"));
                prop_assert!(same(mine[0].value, c.value.unwrap_or(0.0)));
                check_exemplar(mine[0], c.exemplar.as_ref())?;
            }
            MetricType::Gauge | MetricType::Untyped => {
                let v = metric.gauge.as_ref().map(|g| g.value).or(metric.untyped.as_ref().map(|u| u.value)).flatten();
                prop_assert_eq!(mine.len(), 1);
                prop_assert!(same(mine[0].value, v.unwrap_or(0.0)));
            }
            MetricType::Summary => {
                let s = metric.summary.as_ref().unwrap_or_else(|| unreachable!());
                let mut want: Vec<(String, Option<f64>, f64)> = s
                    .quantile
                    .iter()
                    .map(|q| (q.quantile.unwrap_or(0.0), q.value.unwrap_or(0.0)))
                    .filter(|(q, v)| (0.0..=1.0).contains(q) && (*v >= 0.0 || v.is_nan()))
                    .map(|(q, v)| (name.clone(), Some(q), v))
                    .collect();
                want.push((format!("{name}_count"), None, s.sample_count.unwrap_or(0) as f64));
                let sum = s.sample_sum.unwrap_or(0.0);
                if sum >= 0.0 {
                    want.push((format!("{name}_sum"), None, sum));
                }
                compare(&mine, &want, reserved)?;
            }
            MetricType::Histogram | MetricType::GaugeHistogram => {
                let h = metric.histogram.as_ref().unwrap_or_else(|| unreachable!());
                let (want, exemplars) =
                    histogram_samples(name, h, kind == MetricType::GaugeHistogram).unwrap_or_else(|| unreachable!());
                compare(&mine, &want, reserved)?;
                for (sample, exemplar) in mine.iter().zip(exemplars) {
                    check_exemplar(sample, exemplar)?;
                }
            }
        }
        kept.push(sorted);
    }
    prop_assert!(samples.next().is_none(), "samples no series accounts for");
    Ok(())
}

/// The samples a histogram series must produce: buckets sorted and deduplicated, `+Inf`
/// with the count, then `_count`/`_sum` when the sum may be written; `None` if the series
/// cannot be written at all. Exemplars are per bucket sample.
type Expected<'a> = (Vec<(String, Option<f64>, f64)>, Vec<Option<&'a Exemplar>>);

fn histogram_samples<'a>(name: &str, h: &'a Histogram, gauge: bool) -> Option<Expected<'a>> {
    if crate::exposition::is_native_only(h) {
        return None;
    }
    let count = h.sample_count.unwrap_or(0);
    let mut finite: Vec<&Bucket> =
        h.bucket.iter().filter(|b| b.upper_bound.is_some_and(|u| !u.is_nan() && u != f64::INFINITY)).collect();
    finite.sort_by(|a, b| a.upper_bound.unwrap_or(0.0).total_cmp(&b.upper_bound.unwrap_or(0.0)));
    // `Some(-0.0) == Some(0.0)`: a negative and a positive zero bound are one bucket.
    finite.dedup_by(|a, b| a.upper_bound == b.upper_bound);
    let counts: Vec<u64> = finite.iter().map(|b| b.cumulative_count.unwrap_or(0)).collect();
    if counts.windows(2).any(|w| w[1] < w[0]) || counts.iter().any(|&c| c > count) {
        return None;
    }
    let mut samples: Vec<(String, Option<f64>, f64)> = finite
        .iter()
        .map(|b| (format!("{name}_bucket"), b.upper_bound, b.cumulative_count.unwrap_or(0) as f64))
        .collect();
    let mut exemplars: Vec<Option<&Exemplar>> = finite.iter().map(|b| b.exemplar.as_ref()).collect();
    samples.push((format!("{name}_bucket"), Some(f64::INFINITY), count as f64));
    exemplars
        .push(h.bucket.iter().rev().find(|b| b.upper_bound == Some(f64::INFINITY)).and_then(|b| b.exemplar.as_ref()));
    let negative = finite.first().is_some_and(|b| b.upper_bound.unwrap_or(0.0) < 0.0);
    let sum = h.sample_sum.unwrap_or(0.0);
    let (with_sum, count_name, sum_name) = if gauge {
        (!sum.is_nan() && (sum >= 0.0 || negative), "_gcount", "_gsum")
    } else {
        (!negative && sum >= 0.0, "_count", "_sum")
    };
    if with_sum {
        samples.push((format!("{name}{count_name}"), None, count as f64));
        samples.push((format!("{name}{sum_name}"), None, sum));
    }
    Some((samples, exemplars))
}

fn compare(read: &[&Sample], want: &[(String, Option<f64>, f64)], reserved: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(read.len(), want.len(), "{:?} vs {:?}", read, want);
    for (got, (name, extra, value)) in read.iter().zip(want) {
        prop_assert_eq!(&got.name, name);
        let got_extra = got.label(reserved).and_then(parse_number);
        prop_assert_eq!(got_extra.is_some(), extra.is_some());
        if let (Some(a), Some(b)) = (got_extra, extra) {
            prop_assert!(same(a, *b), "{} {} vs {}", reserved, a, b);
        }
        prop_assert!(same(got.value, *value), "{}: {} vs {}", name, got.value, value);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever the snapshot, the output is a valid exposition.
    #[test]
    fn any_snapshot_writes_a_valid_exposition(families in strategies::families()) {
        let text = render_om(&families);
        if let Err(why) = om_reader::read(&text) {
            return Err(TestCaseError::fail(format!("{why}\n{text}")));
        }
    }

    /// With names that cannot clash, every family and series that OpenMetrics can carry is
    /// there with its values, labels, help, unit and exemplars; the rest is absent.
    #[test]
    fn values_labels_and_metadata_survive(families in strategies::families()) {
        let families: Vec<MetricFamily> = families.into_iter().enumerate().map(|(i, mut f)| {
            f.name = f.name.map(|n| format!("f{i}_{n}"));
            f
        }).collect();
        let text = render_om(&families);
        let read = om_reader::read(&text).map_err(|why| TestCaseError::fail(format!("{why}\n{text}")))?;
        let mut read = read.iter();
        for model in &families {
            let kind = crate::exposition::family_type(model).unwrap_or(MetricType::Untyped);
            let raw = model.name.as_deref().unwrap_or_default();
            let name = if kind == MetricType::Counter { raw.strip_suffix("_total").unwrap_or(raw) } else { raw };
            if !is_metric_name(name) || crate::exposition::skip_native_family(model, kind) {
                continue;
            }
            let Some(family) = read.next() else { return Err(TestCaseError::fail(format!("{name} missing\n{text}"))) };
            prop_assert_eq!(&family.name, name);
            check_family(family, model, kind).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        }
        prop_assert!(read.next().is_none());
    }
}
