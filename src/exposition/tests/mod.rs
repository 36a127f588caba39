//! Tests across the formats: the exporter round trip, OpenMetrics read back strictly and
//! by the Python reference parser, and every `Accept` header Prometheus has sent.

mod negotiate;
mod om_golden;
mod om_reader;
mod openmetrics;
mod parse;
mod python;
mod roundtrip;
mod strategies;
mod text;

use super::model::{Counter, LabelPair, Metric, MetricFamily, MetricType};
use super::{Format, encode, protobuf, sort};

/// `families` in the text format.
fn render_text(families: &[MetricFamily]) -> String {
    let mut out = String::new();
    super::text::write(families, &mut out);
    out
}

/// `families` in OpenMetrics.
fn render_om(families: &[MetricFamily]) -> String {
    let mut out = String::new();
    super::openmetrics::write(families, &mut out);
    out
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs.iter().map(|(n, v)| LabelPair { name: Some((*n).into()), value: Some((*v).into()) }).collect()
}

fn family(name: &str, kind: MetricType, help: Option<&str>, metric: Vec<Metric>) -> MetricFamily {
    MetricFamily { name: Some(name.into()), help: help.map(Into::into), r#type: Some(kind as i32), metric, unit: None }
}

fn counter(name: &str, kind: MetricType, z_values: &[&str]) -> MetricFamily {
    let metric = z_values
        .iter()
        .map(|v| Metric {
            label: labels(&[("z", v), ("a", "1")]),
            counter: Some(Counter { value: Some(1.0), ..Default::default() }),
            ..Default::default()
        })
        .collect();
    family(name, kind, None, metric)
}

#[test]
fn sort_orders_families_and_series_but_not_labels() {
    let mut families = vec![
        counter("b", MetricType::Counter, &["y", "x"]),
        counter("a", MetricType::Gauge, &[]),
        counter("a", MetricType::Counter, &["2", "10", "1"]),
    ];
    sort(&mut families);
    let order: Vec<_> = families.iter().map(|f| (f.name.clone().unwrap_or_default(), f.r#type)).collect();
    assert_eq!(order, [("a".into(), Some(0)), ("a".into(), Some(1)), ("b".into(), Some(0))]);
    let series: Vec<_> = families[0].metric.iter().map(|m| m.label[0].value.clone().unwrap_or_default()).collect();
    assert_eq!(series, ["1", "10", "2"]);
    // Inside a series the labels keep their order (`z` before `a`), as the exporter writes them.
    assert_eq!(families[2].metric[0].label[0].name.as_deref(), Some("z"));
}

#[test]
fn encode_writes_each_format() {
    let families = vec![counter("requests_total", MetricType::Counter, &["x"])];
    let text = String::from_utf8(encode(Format::Text, &families)).unwrap();
    assert_eq!(text, "# TYPE requests_total counter\nrequests_total{z=\"x\",a=\"1\"} 1\n\n");
    let om = String::from_utf8(encode(Format::OpenMetrics, &families)).unwrap();
    assert_eq!(om, "# TYPE requests counter\nrequests_total{z=\"x\",a=\"1\"} 1\n# EOF\n");
    let proto = encode(Format::Protobuf, &families);
    assert_eq!(protobuf::decode_delimited(&proto).unwrap(), families);
}
