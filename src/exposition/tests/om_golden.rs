//! OpenMetrics by example: the showcase snapshot against its exact exposition, exact
//! seconds, names, and the strict reader refusing what the specification forbids (so that
//! its acceptance means something). Canonical numbers are tested in `number.rs`.

use super::om_reader::{self, read};
use super::{labels, render_om};
use crate::exemplar::is_label_name;
use crate::exposition::model::{
    Bucket, Counter, Exemplar, Gauge, Histogram, Metric, MetricFamily, MetricType, Quantile, Summary,
};
use crate::exposition::openmetrics::{is_metric_name, push_seconds};

fn exemplar(pairs: &[(&str, &str)], value: f64, seconds: i64, nanos: i32) -> Exemplar {
    Exemplar { label: labels(pairs), value: Some(value), timestamp: Some(prost_types::Timestamp { seconds, nanos }) }
}

/// A snapshot that touches every rule, used by the golden test and the Python check.
pub(super) fn showcase() -> Vec<MetricFamily> {
    let bucket = |b: f64, c: u64, e: Option<Exemplar>| Bucket {
        upper_bound: Some(b),
        cumulative_count: Some(c),
        exemplar: e,
        ..Default::default()
    };
    let family = |name: &str, kind: MetricType, unit: Option<&str>, help: Option<&str>, metric: Vec<Metric>| {
        MetricFamily { unit: unit.map(Into::into), ..super::family(name, kind, help, metric) }
    };
    vec![
        family(
            "grpc_server_handled_total",
            MetricType::Counter,
            None,
            Some("Handled \"RPCs\"\\\nall"),
            vec![Metric {
                label: labels(&[("grpc_method", "Say\"Hi\"\\\n}{,=# "), ("grpc_code", "")]),
                counter: Some(Counter {
                    value: Some(5.0),
                    exemplar: Some(exemplar(
                        &[("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")],
                        0.123,
                        1_700_000_000,
                        123_000_000,
                    )),
                    created_timestamp: None,
                }),
                ..Default::default()
            }],
        ),
        family(
            "sent_bytes_total",
            MetricType::Counter,
            Some("bytes"),
            None,
            vec![Metric { counter: Some(Counter { value: Some(2.5), ..Default::default() }), ..Default::default() }],
        ),
        family(
            "rpc_seconds",
            MetricType::Histogram,
            Some("seconds"),
            Some("Latency."),
            vec![Metric {
                label: labels(&[("m", "é日🦀\0\r\t")]),
                histogram: Some(Histogram {
                    sample_count: Some(4),
                    sample_sum: Some(12.5),
                    bucket: vec![
                        bucket(10.0, 3, Some(exemplar(&[], 9.8, 1_520_879_607, 789_000_000))),
                        bucket(0.005, 1, None),
                        bucket(1e-5, 0, None),
                        bucket(1.0, 2, Some(exemplar(&[("trace_id", &"x".repeat(121))], 0.5, 0, 0))),
                        bucket(1e6, 4, None),
                        bucket(1.0, 2, None),
                        bucket(f64::INFINITY, 4, Some(exemplar(&[("t", "inf")], 1e300, 5, 0))),
                    ],
                    ..Default::default()
                }),
                ..Default::default()
            }],
        ),
        family(
            "temperature_celsius",
            MetricType::Gauge,
            Some("seconds"),
            Some(""),
            vec![
                Metric { gauge: Some(Gauge { value: Some(f64::NAN) }), ..Default::default() },
                Metric {
                    label: labels(&[("a", "1")]),
                    gauge: Some(Gauge { value: Some(-0.0) }),
                    timestamp_ms: Some(1_520_879_607_789),
                    ..Default::default()
                },
                Metric { label: labels(&[("a", "1")]), gauge: Some(Gauge { value: Some(7.0) }), ..Default::default() },
            ],
        ),
        family(
            "rpc_size",
            MetricType::Summary,
            None,
            None,
            vec![Metric {
                summary: Some(Summary {
                    sample_count: Some(17),
                    sample_sum: Some(f64::NAN),
                    quantile: vec![
                        Quantile { quantile: Some(0.5), value: Some(f64::NAN) },
                        Quantile { quantile: Some(0.99), value: Some(f64::INFINITY) },
                        Quantile { quantile: Some(1.5), value: Some(1.0) },
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
            None,
            vec![Metric {
                untyped: Some(crate::exposition::model::Untyped { value: Some(1e21) }),
                ..Default::default()
            }],
        ),
        // Clashes with the counter `sent_bytes`' sample name: left out.
        family("sent_bytes_total", MetricType::Gauge, None, None, vec![]),
        family(
            "below_zero",
            MetricType::Histogram,
            None,
            None,
            vec![Metric {
                histogram: Some(Histogram {
                    sample_count: Some(1),
                    sample_sum: Some(-3.0),
                    bucket: vec![bucket(-1.0, 1, None)],
                    ..Default::default()
                }),
                ..Default::default()
            }],
        ),
    ]
}

#[test]
fn golden() {
    let expected = concat!(
        "# TYPE grpc_server_handled counter\n",
        "# HELP grpc_server_handled Handled \\\"RPCs\\\"\\\\\\nall\n",
        "grpc_server_handled_total{grpc_method=\"Say\\\"Hi\\\"\\\\\\n}{,=# \",grpc_code=\"\"} 5 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.123 1700000000.123\n",
        "# TYPE sent_bytes counter\n",
        "# UNIT sent_bytes bytes\n",
        "sent_bytes_total 2.5\n",
        "# TYPE rpc_seconds histogram\n",
        "# UNIT rpc_seconds seconds\n",
        "# HELP rpc_seconds Latency.\n",
        "rpc_seconds_bucket{m=\"é日🦀\0\r\t\",le=\"1e-05\"} 0\n",
        "rpc_seconds_bucket{m=\"é日🦀\0\r\t\",le=\"0.005\"} 1\n",
        "rpc_seconds_bucket{m=\"é日🦀\0\r\t\",le=\"1\"} 2\n",
        "rpc_seconds_bucket{m=\"é日🦀\0\r\t\",le=\"10\"} 3 # {} 9.8 1520879607.789\n",
        "rpc_seconds_bucket{m=\"é日🦀\0\r\t\",le=\"1e+06\"} 4\n",
        "rpc_seconds_bucket{m=\"é日🦀\0\r\t\",le=\"+Inf\"} 4 # {t=\"inf\"} 1e+300 5\n",
        "rpc_seconds_count{m=\"é日🦀\0\r\t\"} 4\n",
        "rpc_seconds_sum{m=\"é日🦀\0\r\t\"} 12.5\n",
        "# TYPE temperature_celsius gauge\n",
        "temperature_celsius NaN\n",
        "temperature_celsius{a=\"1\"} -0.0 1520879607.789\n",
        "# TYPE rpc_size summary\n",
        "rpc_size{quantile=\"0.5\"} NaN\n",
        "rpc_size{quantile=\"0.99\"} +Inf\n",
        "rpc_size_count 17\n",
        "# TYPE legacy unknown\n",
        "legacy 1e+21\n",
        "# TYPE below_zero histogram\n",
        "below_zero_bucket{le=\"-1\"} 1\n",
        "below_zero_bucket{le=\"+Inf\"} 1\n",
        "# EOF\n",
    );
    // Of note: the buckets sorted and the repeated 1.0 gone; the 1.0 bucket lost its
    // 8+121 character exemplar, the 10.0 one kept its empty one; the second `{a="1"}`
    // gauge, the NaN summary sum, the 1.5 quantile and the clashing `sent_bytes_total`
    // gauge are left out; no `_count`/`_sum` for the histogram below zero.
    let text = render_om(&showcase());
    assert_eq!(text, expected);
    om_reader::read(&text).unwrap();
    assert_eq!(render_om(&[]), "# EOF\n");
}

#[test]
fn seconds_are_exact() {
    let secs = |n: i128| {
        let mut out = String::new();
        push_seconds(&mut out, n);
        out
    };
    assert_eq!(secs(1_700_000_000_123_000_000), "1700000000.123");
    assert_eq!(secs(0), "0");
    assert_eq!(secs(-1_500_000_000), "-1.5");
    assert_eq!(secs(1), "0.000000001");
    assert_eq!(secs(i128::from(i64::MIN) * 1_000_000_000 - 999_999_999), "-9223372036854775808.999999999");
}

#[test]
fn names() {
    assert!(is_metric_name("a:b_c9"));
    assert!(!is_metric_name("9a"));
    assert!(!is_metric_name(""));
    assert!(!is_metric_name("a-b"));
    assert!(is_label_name("_x"));
    assert!(!is_label_name("a:b"));
    assert!(!is_label_name("é"));
}

#[test]
fn the_reader_rejects_what_the_specification_forbids() {
    let ok = "# TYPE a counter\n# HELP a x\na_total 1\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_count 2\nh_sum 3.0\n# EOF\n";
    assert!(read(ok).is_ok(), "{:?}", read(ok));
    let bad = [
        ("missing EOF", "# TYPE a gauge\na 1\n"),
        ("blank line", "# TYPE a gauge\n\na 1\n# EOF\n"),
        ("counter without _total", "# TYPE a counter\na 1\n# EOF\n"),
        ("negative counter", "# TYPE a counter\na_total -1\n# EOF\n"),
        ("NaN counter", "# TYPE a counter\na_total NaN\n# EOF\n"),
        ("clash", "# TYPE a counter\na_total 1\n# TYPE a_total gauge\na_total 1\n# EOF\n"),
        ("le not canonical", "# TYPE h histogram\nh_bucket{le=\"Inf\"} 1\n# EOF\n"),
        (
            "le spelled otherwise than in text",
            "# TYPE h histogram\nh_bucket{le=\"1.0\"} 1\nh_bucket{le=\"+Inf\"} 1\n# EOF\n",
        ),
        ("no +Inf", "# TYPE h histogram\nh_bucket{le=\"1\"} 1\n# EOF\n"),
        ("count without sum", "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n# EOF\n"),
        ("count mismatch", "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 2\nh_sum 1\n# EOF\n"),
        (
            "out of order",
            "# TYPE h histogram\nh_bucket{le=\"2.0\"} 1\nh_bucket{le=\"1.0\"} 1\nh_bucket{le=\"+Inf\"} 1\n# EOF\n",
        ),
        (
            "sum with negative buckets",
            "# TYPE h histogram\nh_bucket{le=\"-1.0\"} 0\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 1\n# EOF\n",
        ),
        ("unit mismatch", "# TYPE a gauge\n# UNIT a seconds\n# EOF\n"),
        ("raw quote", "# TYPE a gauge\na{l=\"x\"y\"} 1\n# EOF\n"),
        ("bad escape", "# TYPE a gauge\na{l=\"\\t\"} 1\n# EOF\n"),
        ("duplicate label", "# TYPE a gauge\na{l=\"1\",l=\"2\"} 1\n# EOF\n"),
        ("repeated series", "# TYPE a gauge\na{l=\"1\"} 1\na{l=\"1\"} 2\n# EOF\n"),
        ("exemplar on gauge", "# TYPE a gauge\na 1 # {t=\"x\"} 1\n# EOF\n"),
        ("long exemplar", &format!("# TYPE a counter\na_total 1 # {{t=\"{}\"}} 1\n# EOF\n", "x".repeat(128))),
        ("quantile range", "# TYPE s summary\ns{quantile=\"1.5\"} 1\n# EOF\n"),
        ("negative quantile value", "# TYPE s summary\ns{quantile=\"0.5\"} -1\n# EOF\n"),
        ("bad number", "# TYPE a gauge\na 1_000\n# EOF\n"),
        ("two spaces", "# TYPE a gauge\na  1\n# EOF\n"),
    ];
    for (why, text) in bad {
        assert!(read(text).is_err(), "accepted ({why}): {text}");
    }
}
