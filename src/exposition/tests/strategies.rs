//! Generators of hostile snapshots: label values and help texts full of quotes,
//! backslashes, line feeds, braces, NULs and non-ASCII; NaN, infinities and negative
//! zeros; clashing names, reserved and repeated label names; unsorted and repeated bucket
//! bounds; over-long exemplars; native-only histograms.

use proptest::prelude::*;
use prost_types::Timestamp;

use crate::exposition::model::{
    Bucket, BucketSpan, Counter, Exemplar, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType, Quantile,
    Summary, Untyped,
};

/// A short string drawn mostly from characters that break naive writers.
pub(super) fn hostile_string() -> impl Strategy<Value = String> {
    let c = prop_oneof![
        3 => prop::sample::select(vec![
            '"', '\\', '\n', '\r', '\t', '{', '}', ',', '=', '#', ' ', '\0', 'é', '日', '🦀', '\u{2028}', '\u{7f}', 'n',
        ]),
        2 => prop::char::range('a', 'z'),
        1 => any::<char>(),
    ];
    prop::collection::vec(c, 0..12).prop_map(|chars| chars.into_iter().collect())
}

/// Floats with the special values over-represented.
pub(super) fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => -1e3..1e3f64,
        1 => prop::sample::select(vec![
            0.0, -0.0, 1.0, 0.005, 1e-10, 1e21, 2f64.powi(60), f64::NAN, f64::INFINITY, f64::NEG_INFINITY, f64::MIN_POSITIVE,
        ]),
        1 => any::<f64>(),
    ]
}

/// Mostly valid metric names, some ending in suffixes the formats treat specially.
pub(super) fn metric_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z_:][a-z0-9_:]{0,6}",
        2 => prop::sample::select(vec![
            "x", "x_total", "x_seconds", "x_count", "x_sum", "x_bucket", "x_created", "checksum", "_total", "a:b",
        ]).prop_map(String::from),
        1 => prop_oneof![Just(String::new()), Just("9x".to_owned()), Just("a-b".to_owned()), Just("é".to_owned())],
    ]
}

/// Mostly valid label names, some reserved (`le`, `quantile`, `__name__`) or invalid.
pub(super) fn label_name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-z_][a-z0-9_]{0,5}",
        1 => prop::sample::select(vec!["le", "quantile", "__name__", "__x", "", "1x", "a-b", "a:b"]).prop_map(String::from),
    ]
}

fn labels() -> impl Strategy<Value = Vec<LabelPair>> {
    prop::collection::vec((label_name(), hostile_string()), 0..4).prop_map(|pairs| {
        pairs.into_iter().map(|(name, value)| LabelPair { name: Some(name), value: Some(value) }).collect()
    })
}

fn exemplar() -> impl Strategy<Value = Option<Exemplar>> {
    let labels = prop::collection::vec(
        (label_name(), prop_oneof![3 => "[0-9a-f]{0,32}", 1 => hostile_string(), 1 => "x{100,130}"]),
        0..3,
    );
    let timestamp = prop::option::of((0i64..4_000_000_000, 0i32..1_000_000_000));
    prop::option::of((labels, float(), timestamp)).prop_map(|e| {
        e.map(|(labels, value, timestamp)| Exemplar {
            label: labels.into_iter().map(|(n, v)| LabelPair { name: Some(n), value: Some(v) }).collect(),
            value: Some(value),
            timestamp: timestamp.map(|(seconds, nanos)| Timestamp { seconds, nanos }),
        })
    })
}

/// Cumulative buckets over random bounds (sometimes unsorted, repeated or infinite) and a
/// count at or above the last; sometimes native spans instead of or besides them.
fn histogram() -> impl Strategy<Value = Histogram> {
    let buckets = prop::collection::vec((float(), 0u64..5, exemplar()), 0..6);
    (buckets, 0u64..3, float(), any::<bool>(), 0u8..4).prop_map(|(raw, extra, sum, sorted, native)| {
        let mut raw = raw;
        if sorted {
            raw.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        let mut cumulative = 0;
        let bucket: Vec<Bucket> = raw
            .into_iter()
            .map(|(bound, step, exemplar)| {
                cumulative += step;
                Bucket { upper_bound: Some(bound), cumulative_count: Some(cumulative), exemplar, ..Default::default() }
            })
            .collect();
        let mut histogram =
            Histogram { sample_count: Some(cumulative + extra), sample_sum: Some(sum), bucket, ..Default::default() };
        if native == 0 {
            histogram.schema = Some(3);
            histogram.zero_threshold = Some(1e-128);
            histogram.positive_span = vec![BucketSpan { offset: Some(0), length: Some(1) }];
            histogram.positive_delta = vec![1];
            if extra == 0 {
                histogram.bucket.clear();
            }
        }
        histogram
    })
}

fn summary() -> impl Strategy<Value = Summary> {
    let quantile = (prop_oneof![4 => 0.0..=1.0f64, 1 => float()], float());
    (prop::collection::vec(quantile, 0..4), 0u64..100, float()).prop_map(|(quantiles, count, sum)| Summary {
        sample_count: Some(count),
        sample_sum: Some(sum),
        quantile: quantiles.into_iter().map(|(q, v)| Quantile { quantile: Some(q), value: Some(v) }).collect(),
        ..Default::default()
    })
}

/// One series of the given type, with an occasional timestamp.
fn metric(kind: MetricType) -> BoxedStrategy<Metric> {
    let value: BoxedStrategy<Metric> = match kind {
        // Mostly non-negative counters; one in twenty stays negative, which OpenMetrics drops.
        MetricType::Counter => (float(), exemplar(), 0..20)
            .prop_map(|(v, exemplar, dice)| Metric {
                counter: Some(Counter {
                    value: Some(if dice == 0 { v } else { v.abs() }),
                    exemplar,
                    created_timestamp: None,
                }),
                ..Default::default()
            })
            .boxed(),
        MetricType::Gauge => {
            float().prop_map(|v| Metric { gauge: Some(Gauge { value: Some(v) }), ..Default::default() }).boxed()
        }
        MetricType::Untyped => {
            float().prop_map(|v| Metric { untyped: Some(Untyped { value: Some(v) }), ..Default::default() }).boxed()
        }
        MetricType::Summary => summary().prop_map(|s| Metric { summary: Some(s), ..Default::default() }).boxed(),
        MetricType::Histogram | MetricType::GaugeHistogram => {
            histogram().prop_map(|h| Metric { histogram: Some(h), ..Default::default() }).boxed()
        }
    };
    (value, labels(), prop::option::weighted(0.1, -2_000_000_000_000i64..4_000_000_000_000))
        .prop_map(|(mut metric, label, timestamp_ms)| {
            metric.label = label;
            metric.timestamp_ms = timestamp_ms;
            metric
        })
        .boxed()
}

fn kind() -> impl Strategy<Value = MetricType> {
    prop::sample::select(vec![
        MetricType::Counter,
        MetricType::Gauge,
        MetricType::Untyped,
        MetricType::Summary,
        MetricType::Histogram,
        MetricType::GaugeHistogram,
    ])
}

/// One family: any type, name, unit and help, 0..4 series.
pub(super) fn family() -> impl Strategy<Value = MetricFamily> {
    let unit = prop::option::of(prop_oneof![
        3 => prop::sample::select(vec!["seconds", "bytes", "total", "count", ""]).prop_map(String::from),
        1 => hostile_string(),
    ]);
    (kind(), metric_name(), unit, prop::option::of(hostile_string()), any::<bool>()).prop_flat_map(
        |(kind, name, unit, help, with_unit_suffix)| {
            // Often make the name end with the unit, so `# UNIT` gets written.
            let name = match &unit {
                Some(unit) if with_unit_suffix && !unit.is_empty() => format!("{name}_{unit}"),
                _ => name,
            };
            prop::collection::vec(metric(kind), 0..4).prop_map(move |metric| MetricFamily {
                name: Some(name.clone()),
                help: help.clone(),
                r#type: Some(kind as i32),
                metric,
                unit: unit.clone(),
            })
        },
    )
}

/// A snapshot of 0..6 families (names may clash).
pub(super) fn families() -> impl Strategy<Value = Vec<MetricFamily>> {
    prop::collection::vec(family(), 0..6)
}
