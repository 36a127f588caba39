//! Summing the metrics of several processes into one exposition.
//!
//! Counters and histograms add up (classic buckets by upper bound, native buckets by
//! index), whether their process is alive or not: what a dead process counted stays in the
//! sum, so totals never go down. Gauges of live processes combine by their
//! [`GaugeAggregation`]. Summaries cannot be added up (quantiles do not sum), so each live
//! process' summary is served on its own, with a `pid` label.

use std::collections::{BTreeMap, HashMap};

use crate::exposition::{
    model::{self, Exemplar, Histogram, LabelPair, Metric, MetricFamily, MetricType},
    sparse,
};

/// How the gauges of the processes of a group combine into one value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GaugeAggregation {
    /// The sum over live processes (the default): in-flight calls, open connections,
    /// queue lengths.
    #[default]
    Sum,
    /// The largest value among live processes.
    Max,
    /// The smallest value among live processes.
    Min,
    /// One series per live process, with a `pid` label.
    PerProcess,
}

/// One process' families, as read from its snapshot.
#[derive(Debug)]
pub(crate) struct Contribution<'a> {
    pub pid: u32,
    pub alive: bool,
    pub families: &'a [MetricFamily],
}

/// What could not be merged (reported once per scrape by the caller).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Conflicts {
    /// Families whose type differs between processes (the first one seen wins).
    pub types: Vec<String>,
    /// Histogram series whose bucket bounds or native schema differ (skipped).
    pub layouts: Vec<String>,
}

type SeriesKey = Vec<(String, String)>;

fn key_of(labels: &[LabelPair]) -> SeriesKey {
    labels.iter().map(|l| (l.name.clone().unwrap_or_default(), l.value.clone().unwrap_or_default())).collect()
}

struct FamilyAcc {
    family: MetricFamily,
    kind: MetricType,
    series: BTreeMap<SeriesKey, Acc>,
}

enum Acc {
    Counter(f64, Option<Exemplar>),
    /// Live processes' values, by pid.
    Gauge(Vec<(u32, f64)>),
    Histogram(Box<HistogramAcc>),
    /// Live processes' summaries, by pid.
    Summary(Vec<(u32, model::Summary)>),
}

struct HistogramAcc {
    count: u64,
    sum: f64,
    bounds: Vec<f64>,
    cumulative: Vec<u64>,
    exemplars: Vec<Option<Exemplar>>,
    native: Option<NativeAcc>,
    native_exemplars: Vec<Exemplar>,
}

struct NativeAcc {
    schema: i32,
    zero_threshold: f64,
    zero: u64,
    buckets: BTreeMap<i64, u64>,
}

/// Sums `contributions` into one exposition, sorted by family name.
pub(crate) fn merge(
    contributions: &[Contribution<'_>],
    gauge_mode: impl Fn(&str) -> GaugeAggregation,
) -> (Vec<MetricFamily>, Conflicts) {
    let mut conflicts = Conflicts::default();
    let mut families: BTreeMap<String, FamilyAcc> = BTreeMap::new();
    for contribution in contributions {
        for family in contribution.families {
            let name = family.name.clone().unwrap_or_default();
            let kind = family.r#type.and_then(|t| MetricType::try_from(t).ok()).unwrap_or(MetricType::Untyped);
            let acc = families.entry(name.clone()).or_insert_with(|| FamilyAcc {
                family: MetricFamily { metric: Vec::new(), ..family.clone() },
                kind,
                series: BTreeMap::new(),
            });
            if acc.kind != kind {
                if !conflicts.types.contains(&name) {
                    conflicts.types.push(name.clone());
                }
                continue;
            }
            for metric in &family.metric {
                add_series(acc, &name, metric, contribution, &mut conflicts);
            }
        }
    }
    let out = families
        .into_values()
        .filter_map(|acc| {
            let mut family = acc.family;
            let mode = gauge_mode(family.name.as_deref().unwrap_or_default());
            family.metric = acc.series.into_iter().flat_map(|(key, acc)| finish(key, acc, mode)).collect();
            (!family.metric.is_empty()).then_some(family)
        })
        .collect();
    (out, conflicts)
}

fn add_series(acc: &mut FamilyAcc, name: &str, metric: &Metric, from: &Contribution<'_>, conflicts: &mut Conflicts) {
    let key = key_of(&metric.label);
    match acc.kind {
        MetricType::Counter => {
            let counter = metric.counter.clone().unwrap_or_default();
            let entry = acc.series.entry(key).or_insert(Acc::Counter(0.0, None));
            if let Acc::Counter(total, exemplar) = entry {
                *total += counter.value.unwrap_or(0.0);
                *exemplar = latest(exemplar.take(), counter.exemplar);
            }
        }
        MetricType::Gauge | MetricType::Untyped => {
            if from.alive {
                let gauge = metric.gauge.as_ref().and_then(|g| g.value);
                let value = gauge.or(metric.untyped.as_ref().and_then(|u| u.value)).unwrap_or(0.0);
                if let Acc::Gauge(values) = acc.series.entry(key).or_insert(Acc::Gauge(Vec::new())) {
                    values.push((from.pid, value));
                }
            }
        }
        MetricType::Summary => {
            if from.alive
                && let Some(summary) = &metric.summary
                && let Acc::Summary(summaries) = acc.series.entry(key).or_insert(Acc::Summary(Vec::new()))
            {
                summaries.push((from.pid, summary.clone()));
            }
        }
        MetricType::Histogram | MetricType::GaugeHistogram => {
            let Some(histogram) = &metric.histogram else { return };
            match acc.series.get_mut(&key) {
                None => {
                    acc.series.insert(key, Acc::Histogram(Box::new(HistogramAcc::from(histogram))));
                }
                Some(Acc::Histogram(existing)) => {
                    if !existing.add(histogram) {
                        conflicts.layouts.push(format!("{name}{key:?}"));
                    }
                }
                Some(_) => {}
            }
        }
    }
}

fn labels_of(key: &SeriesKey, pid: Option<u32>) -> Vec<LabelPair> {
    let pair = |name: &str, value: &str| LabelPair { name: Some(name.to_owned()), value: Some(value.to_owned()) };
    let mut labels: Vec<LabelPair> = key.iter().map(|(name, value)| pair(name, value)).collect();
    if let Some(pid) = pid {
        labels.push(pair("pid", &pid.to_string()));
    }
    labels
}

fn finish(key: SeriesKey, acc: Acc, mode: GaugeAggregation) -> Vec<Metric> {
    match acc {
        Acc::Counter(value, exemplar) => vec![Metric {
            label: labels_of(&key, None),
            counter: Some(model::Counter { value: Some(value), exemplar, ..Default::default() }),
            ..Default::default()
        }],
        Acc::Gauge(values) => {
            let gauge =
                |label, value| Metric { label, gauge: Some(model::Gauge { value: Some(value) }), ..Default::default() };
            let all = values.iter().map(|(_, value)| *value);
            match mode {
                GaugeAggregation::PerProcess => {
                    values.iter().map(|(pid, value)| gauge(labels_of(&key, Some(*pid)), *value)).collect()
                }
                GaugeAggregation::Max => vec![gauge(labels_of(&key, None), all.fold(f64::NEG_INFINITY, f64::max))],
                GaugeAggregation::Min => vec![gauge(labels_of(&key, None), all.fold(f64::INFINITY, f64::min))],
                GaugeAggregation::Sum => vec![gauge(labels_of(&key, None), all.sum())],
            }
        }
        Acc::Summary(summaries) => summaries
            .into_iter()
            .map(|(pid, summary)| Metric {
                label: labels_of(&key, Some(pid)),
                summary: Some(summary),
                ..Default::default()
            })
            .collect(),
        Acc::Histogram(histogram) => {
            vec![Metric { label: labels_of(&key, None), histogram: Some(histogram.finish()), ..Default::default() }]
        }
    }
}

/// The later of two exemplars (by timestamp).
fn latest(a: Option<Exemplar>, b: Option<Exemplar>) -> Option<Exemplar> {
    let at = |e: &Exemplar| e.timestamp.map(|t| (t.seconds, t.nanos));
    match (a, b) {
        (Some(a), Some(b)) => Some(if at(&b) >= at(&a) { b } else { a }),
        (a, b) => a.or(b),
    }
}

impl HistogramAcc {
    fn from(h: &Histogram) -> Self {
        let mut acc = Self {
            count: 0,
            sum: 0.0,
            bounds: h.bucket.iter().map(|b| b.upper_bound.unwrap_or(f64::INFINITY)).collect(),
            cumulative: vec![0; h.bucket.len()],
            exemplars: vec![None; h.bucket.len()],
            native: h.schema.map(|schema| NativeAcc {
                schema,
                zero_threshold: h.zero_threshold.unwrap_or(0.0),
                zero: 0,
                buckets: BTreeMap::new(),
            }),
            native_exemplars: Vec::new(),
        };
        acc.add(h);
        acc
    }

    /// Adds one process' histogram; `false` (and nothing added) if its layout differs.
    fn add(&mut self, h: &Histogram) -> bool {
        let bounds_match = h.bucket.len() == self.bounds.len()
            && h.bucket.iter().zip(&self.bounds).all(|(b, bound)| b.upper_bound.unwrap_or(f64::INFINITY) == *bound);
        let native_match = match (&self.native, h.schema) {
            (None, None) => true,
            (Some(native), Some(schema)) => {
                native.schema == schema && native.zero_threshold == h.zero_threshold.unwrap_or(0.0)
            }
            _ => false,
        };
        if !bounds_match || !native_match {
            return false;
        }
        // The counts come from files: a damaged or hostile one must not overflow (a panic
        // in a debug build), and a count pinned at the maximum is visibly wrong.
        self.count = self.count.saturating_add(h.sample_count.unwrap_or(0));
        self.sum += h.sample_sum.unwrap_or(0.0);
        for (i, bucket) in h.bucket.iter().enumerate() {
            self.cumulative[i] = self.cumulative[i].saturating_add(bucket.cumulative_count.unwrap_or(0));
            self.exemplars[i] = latest(self.exemplars[i].take(), bucket.exemplar.clone());
        }
        if let Some(native) = &mut self.native {
            native.zero = native.zero.saturating_add(h.zero_count.unwrap_or(0));
            for (index, count) in sparse::decode(&h.positive_span, &h.positive_delta) {
                let total = native.buckets.entry(index).or_default();
                *total = total.saturating_add(count);
            }
        }
        self.native_exemplars.extend(h.exemplars.iter().cloned());
        true
    }

    fn finish(self) -> Histogram {
        let mut h = Histogram {
            sample_count: Some(self.count),
            sample_sum: Some(self.sum),
            bucket: self
                .bounds
                .iter()
                .zip(self.cumulative)
                .zip(self.exemplars)
                .map(|((bound, count), exemplar)| model::Bucket {
                    cumulative_count: Some(count),
                    upper_bound: Some(*bound),
                    exemplar,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        if let Some(native) = self.native {
            h.schema = Some(native.schema);
            h.zero_threshold = Some(native.zero_threshold);
            h.zero_count = Some(native.zero);
            let (spans, deltas) = sparse::encode(native.buckets);
            h.positive_span = spans;
            h.positive_delta = deltas;
            // Keep the latest exemplar per native bucket's neighbourhood bounded: the newest
            // few are enough for a dashboard link.
            let mut exemplars = self.native_exemplars;
            exemplars.sort_by_key(|e| e.timestamp.map(|t| (t.seconds, t.nanos)));
            let keep = exemplars.len().saturating_sub(16);
            h.exemplars = exemplars.split_off(keep);
        }
        h
    }
}

/// Gauge aggregation modes by family name, with a default.
#[derive(Debug, Clone, Default)]
pub(crate) struct GaugeModes {
    pub default: GaugeAggregation,
    pub by_name: HashMap<String, GaugeAggregation>,
}

impl GaugeModes {
    pub fn of(&self, name: &str) -> GaugeAggregation {
        self.by_name.get(name).copied().unwrap_or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::model::{Bucket, Counter, Gauge, Summary};

    fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
        pairs.iter().map(|(k, v)| LabelPair { name: Some((*k).into()), value: Some((*v).into()) }).collect()
    }

    fn family(name: &str, kind: MetricType, metric: Vec<Metric>) -> MetricFamily {
        MetricFamily { name: Some(name.into()), help: Some("h".into()), r#type: Some(kind as i32), metric, unit: None }
    }

    fn counter(value: f64) -> Metric {
        Metric {
            label: labels(&[("code", "OK")]),
            counter: Some(Counter { value: Some(value), ..Default::default() }),
            ..Default::default()
        }
    }

    fn gauge(value: f64) -> Metric {
        Metric { label: labels(&[]), gauge: Some(Gauge { value: Some(value) }), ..Default::default() }
    }

    fn histogram(counts: [u64; 3], native: &[(i64, u64)]) -> Metric {
        let mut h = Histogram {
            sample_count: Some(counts[2]),
            sample_sum: Some(1.5),
            bucket: [0.1, 1.0, f64::INFINITY]
                .iter()
                .zip(counts)
                .map(|(b, c)| Bucket { upper_bound: Some(*b), cumulative_count: Some(c), ..Default::default() })
                .collect(),
            schema: Some(3),
            zero_threshold: Some(1e-6),
            zero_count: Some(1),
            ..Default::default()
        };
        (h.positive_span, h.positive_delta) = sparse::encode(native.iter().copied());
        Metric { label: labels(&[]), histogram: Some(h), ..Default::default() }
    }

    #[test]
    fn counters_and_histograms_add_up_dead_or_alive() {
        let a = [
            family("c_total", MetricType::Counter, vec![counter(2.0)]),
            family("h", MetricType::Histogram, vec![histogram([1, 2, 3], &[(-20, 1), (-18, 2)])]),
        ];
        let b = [
            family("c_total", MetricType::Counter, vec![counter(5.0)]),
            family("h", MetricType::Histogram, vec![histogram([0, 4, 4], &[(-18, 3), (5, 1)])]),
        ];
        let (merged, conflicts) = merge(
            &[Contribution { pid: 1, alive: true, families: &a }, Contribution { pid: 2, alive: false, families: &b }],
            |_| GaugeAggregation::Sum,
        );
        assert_eq!(conflicts, Conflicts::default());
        assert_eq!(merged[0].metric[0].counter.as_ref().unwrap().value, Some(7.0));
        let h = merged[1].metric[0].histogram.as_ref().unwrap();
        let counts: Vec<_> = h.bucket.iter().map(|b| b.cumulative_count.unwrap()).collect();
        assert_eq!(counts, [1, 6, 7]);
        assert_eq!((h.sample_count, h.sample_sum, h.zero_count), (Some(7), Some(3.0), Some(2)));
        assert_eq!(sparse::decode(&h.positive_span, &h.positive_delta), [(-20, 1), (-18, 5), (5, 1)]);
    }

    #[test]
    fn gauges_of_live_processes_combine_by_mode() {
        let a = [family("g", MetricType::Gauge, vec![gauge(3.0)])];
        let b = [family("g", MetricType::Gauge, vec![gauge(5.0)])];
        let dead = [family("g", MetricType::Gauge, vec![gauge(100.0)])];
        let parts = [
            Contribution { pid: 1, alive: true, families: &a },
            Contribution { pid: 2, alive: true, families: &b },
            Contribution { pid: 3, alive: false, families: &dead },
        ];
        let value = |mode| {
            let (merged, _) = merge(&parts, |_| mode);
            merged[0]
                .metric
                .iter()
                .map(|m| (m.label.len(), m.gauge.as_ref().unwrap().value.unwrap()))
                .collect::<Vec<_>>()
        };
        assert_eq!(value(GaugeAggregation::Sum), [(0, 8.0)]);
        assert_eq!(value(GaugeAggregation::Max), [(0, 5.0)]);
        assert_eq!(value(GaugeAggregation::Min), [(0, 3.0)]);
        assert_eq!(value(GaugeAggregation::PerProcess), [(1, 3.0), (1, 5.0)]);
    }

    #[test]
    fn counts_from_files_saturate_instead_of_overflowing() {
        // A native bucket holds at most `i64::MAX` per file: three of them overflow a u64.
        let huge = [family("h", MetricType::Histogram, vec![histogram([u64::MAX; 3], &[(1, u64::MAX >> 1)])])];
        let dead = || Contribution { pid: 1, alive: false, families: &huge };
        let (merged, _) = merge(&[dead(), dead(), dead()], |_| GaugeAggregation::Sum);
        let h = merged[0].metric[0].histogram.as_ref().unwrap();
        assert_eq!((h.sample_count, h.zero_count), (Some(u64::MAX), Some(3)));
        assert!(h.bucket.iter().all(|b| b.cumulative_count == Some(u64::MAX)));
        assert_eq!(sparse::decode(&h.positive_span, &h.positive_delta), [(1, u64::MAX >> 1)]);
    }

    #[test]
    fn summaries_stay_per_live_process_and_layout_conflicts_are_reported() {
        let summary =
            Metric { summary: Some(Summary { sample_count: Some(1), ..Default::default() }), ..Default::default() };
        let a = [
            family("s", MetricType::Summary, vec![summary.clone()]),
            family("h", MetricType::Histogram, vec![histogram([1, 1, 1], &[])]),
        ];
        let mut other = histogram([1, 1, 1], &[]);
        other.histogram.as_mut().unwrap().bucket[0].upper_bound = Some(0.2);
        let b = [family("s", MetricType::Summary, vec![summary]), family("h", MetricType::Histogram, vec![other])];
        let (merged, conflicts) = merge(
            &[Contribution { pid: 1, alive: true, families: &a }, Contribution { pid: 2, alive: true, families: &b }],
            |_| GaugeAggregation::Sum,
        );
        assert_eq!(merged.iter().find(|f| f.name.as_deref() == Some("s")).unwrap().metric.len(), 2);
        assert_eq!(conflicts.layouts.len(), 1);
    }
}
