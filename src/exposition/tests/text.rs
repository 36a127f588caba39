//! The text writer against hand-written exporter output: every type, escaping, integer
//! counters, the suffix rule, infinite bounds, native-only histograms, odd input.

use super::{family, labels, render_text};
use crate::exposition::model::{
    Bucket, Counter, Gauge, Histogram, Metric, MetricFamily, MetricType, Quantile, Summary, Untyped,
};

#[test]
fn writes_each_type_as_the_exporter_does() {
    let families = vec![
        family(
            "requests_total",
            MetricType::Counter,
            Some("Requests, \"all\" of them\\\nand more"),
            vec![Metric {
                label: labels(&[("path", "/a\"b\\c\nd"), ("empty", "")]),
                counter: Some(Counter { value: Some(5.0), ..Default::default() }),
                ..Default::default()
            }],
        ),
        family(
            "temperature",
            MetricType::Gauge,
            None,
            vec![
                Metric { gauge: Some(Gauge { value: Some(0.5) }), ..Default::default() },
                Metric { label: labels(&[("k", "v")]), gauge: Some(Gauge { value: Some(-3.0) }), ..Default::default() },
                Metric {
                    label: labels(&[("k", "nan")]),
                    gauge: Some(Gauge { value: Some(f64::NAN) }),
                    ..Default::default()
                },
                Metric {
                    label: labels(&[("k", "inf")]),
                    gauge: Some(Gauge { value: Some(f64::INFINITY) }),
                    ..Default::default()
                },
            ],
        ),
        family(
            "latency_seconds",
            MetricType::Histogram,
            Some(""),
            vec![Metric {
                label: labels(&[("m", "x")]),
                histogram: Some(Histogram {
                    sample_count: Some(3),
                    sample_sum: Some(1.25),
                    bucket: [(0.005, 1), (1.0, 2), (10.0, 3)]
                        .iter()
                        .map(|&(b, c)| Bucket { upper_bound: Some(b), cumulative_count: Some(c), ..Default::default() })
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
        ),
        family(
            "rpc",
            MetricType::Summary,
            None,
            vec![Metric {
                summary: Some(Summary {
                    sample_count: Some(7),
                    sample_sum: Some(2.5),
                    quantile: vec![
                        Quantile { quantile: Some(0.0), value: Some(0.1) },
                        Quantile { quantile: Some(0.999), value: Some(2.0) },
                        Quantile { quantile: Some(1.0), value: Some(f64::NAN) },
                    ],
                    ..Default::default()
                }),
                ..Default::default()
            }],
        ),
        family(
            "legacy",
            MetricType::Untyped,
            None,
            vec![Metric { untyped: Some(Untyped { value: Some(1e21) }), ..Default::default() }],
        ),
    ];
    let expected = concat!(
        "# HELP requests_total Requests, \"all\" of them\\\\\\nand more\n",
        "# TYPE requests_total counter\n",
        "requests_total{path=\"/a\\\"b\\\\c\\nd\",empty=\"\"} 5\n",
        "\n",
        "# TYPE temperature gauge\n",
        "temperature 0.5\n",
        "temperature{k=\"v\"} -3\n",
        "temperature{k=\"nan\"} NaN\n",
        "temperature{k=\"inf\"} inf\n",
        "\n",
        "# HELP latency_seconds \n",
        "# TYPE latency_seconds histogram\n",
        "latency_seconds_bucket{m=\"x\",le=\"0.005\"} 1\n",
        "latency_seconds_bucket{m=\"x\",le=\"1\"} 2\n",
        "latency_seconds_bucket{m=\"x\",le=\"10\"} 3\n",
        "latency_seconds_bucket{m=\"x\",le=\"+Inf\"} 3\n",
        "latency_seconds_sum{m=\"x\"} 1.25\n",
        "latency_seconds_count{m=\"x\"} 3\n",
        "\n",
        "# TYPE rpc summary\n",
        "rpc{quantile=\"0\"} 0.1\n",
        "rpc{quantile=\"0.999\"} 2\n",
        "rpc{quantile=\"1\"} NaN\n",
        "rpc_sum 2.5\n",
        "rpc_count 7\n",
        "\n",
        "# TYPE legacy untyped\n",
        "legacy 1000000000000000000000\n",
        "\n",
    );
    assert_eq!(render_text(&families), expected);
}

#[test]
fn counters_print_as_integers_even_past_2_pow_53() {
    let counter = |v: f64| {
        let f = family(
            "c",
            MetricType::Counter,
            None,
            vec![Metric { counter: Some(Counter { value: Some(v), ..Default::default() }), ..Default::default() }],
        );
        render_text(&[f])
    };
    assert_eq!(counter(0.0), "# TYPE c counter\nc 0\n\n");
    assert_eq!(counter(-0.0), "# TYPE c counter\nc 0\n\n");
    assert_eq!(counter(2f64.powi(60)), "# TYPE c counter\nc 1152921504606846976\n\n");
    assert_eq!(counter(1.5), "# TYPE c counter\nc 1.5\n\n");
    assert_eq!(counter(f64::NAN), "# TYPE c counter\nc NaN\n\n");
    assert_eq!(counter(1e300).lines().nth(1).map(str::len), Some(2 + 301));
}

#[test]
fn suffixes_are_added_only_when_missing() {
    let histogram = Histogram {
        sample_count: Some(1),
        sample_sum: Some(1.0),
        bucket: vec![Bucket { upper_bound: Some(1.0), cumulative_count: Some(1), ..Default::default() }],
        ..Default::default()
    };
    let f = family(
        "checksum",
        MetricType::Histogram,
        None,
        vec![Metric { histogram: Some(histogram), ..Default::default() }],
    );
    assert_eq!(
        render_text(&[f]),
        "# TYPE checksum histogram\nchecksum_bucket{le=\"1\"} 1\nchecksum_bucket{le=\"+Inf\"} 1\nchecksum 1\nchecksum_count 1\n\n"
    );
}

#[test]
fn infinite_bounds_inside_the_list_print_as_display_and_the_last_as_plus_inf() {
    let bucket = |b: f64, c| Bucket { upper_bound: Some(b), cumulative_count: Some(c), ..Default::default() };
    let histogram = Histogram {
        sample_count: Some(4),
        sample_sum: Some(f64::NEG_INFINITY),
        bucket: vec![bucket(f64::NEG_INFINITY, 0), bucket(f64::INFINITY, 3), bucket(f64::INFINITY, 4)],
        ..Default::default()
    };
    let f = family("h", MetricType::Histogram, None, vec![Metric { histogram: Some(histogram), ..Default::default() }]);
    assert_eq!(
        render_text(&[f]),
        concat!(
            "# TYPE h histogram\n",
            "h_bucket{le=\"-inf\"} 0\n",
            "h_bucket{le=\"inf\"} 3\n",
            "h_bucket{le=\"+Inf\"} 4\n",
            "h_sum -inf\n",
            "h_count 4\n",
            "\n"
        )
    );
}

#[test]
fn native_only_histograms_are_skipped_and_mixed_ones_write_classic_buckets() {
    let native = Histogram {
        sample_count: Some(2),
        sample_sum: Some(3.0),
        schema: Some(3),
        zero_threshold: Some(1e-128),
        positive_span: vec![crate::exposition::model::BucketSpan { offset: Some(0), length: Some(1) }],
        positive_delta: vec![2],
        ..Default::default()
    };
    let mut mixed = native.clone();
    mixed.bucket = vec![Bucket { upper_bound: Some(5.0), cumulative_count: Some(2), ..Default::default() }];
    let only =
        family("n", MetricType::Histogram, Some("x"), vec![Metric { histogram: Some(native), ..Default::default() }]);
    let both = family("m", MetricType::Histogram, None, vec![Metric { histogram: Some(mixed), ..Default::default() }]);
    assert_eq!(render_text(&[only]), "");
    assert_eq!(
        render_text(&[both]),
        "# TYPE m histogram\nm_bucket{le=\"5\"} 2\nm_bucket{le=\"+Inf\"} 2\nm_sum 3\nm_count 2\n\n"
    );
}

#[test]
fn nameless_unknown_and_mismatched_input_never_panics() {
    let odd = vec![
        MetricFamily { name: None, ..Default::default() },
        MetricFamily { name: Some("x".into()), r#type: Some(99), ..Default::default() },
        // A counter family whose series carry no counter: the series is skipped.
        family(
            "y",
            MetricType::Counter,
            None,
            vec![Metric { gauge: Some(Gauge { value: Some(1.0) }), ..Default::default() }],
        ),
        // No type at all is proto2's default, a counter.
        MetricFamily {
            name: Some("z".into()),
            metric: vec![Metric { counter: Some(Counter::default()), ..Default::default() }],
            ..Default::default()
        },
    ];
    assert_eq!(render_text(&odd), "# TYPE y counter\n\n# TYPE z counter\nz 0\n\n");
}
