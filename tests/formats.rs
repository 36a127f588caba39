//! One `/metrics`, every format: the text format, OpenMetrics (with exemplars) and
//! protobuf (with native histograms) negotiated from `Accept` as Prometheus sends it, gzip
//! from `Accept-Encoding`, over real HTTP after real gRPC traffic.

#![cfg(feature = "exporter")]

mod common;

use std::{io::Read as _, net::SocketAddr, str::FromStr as _};

use common::{ECHO, TestServer, echo_registry, req};
use prost::Message as _;
use tonic::{Request, metadata::MetadataValue};
use tonic_metrics::{
    MetricsServer, PrometheusExporter, ServerMetricsLayer,
    exposition::model::{MetricFamily, MetricType},
};
use tonic_metrics_testing::exposition::{self, RawResponse, http_request_with};

/// Prometheus 2.42's `Accept` by default, and with `--enable-feature=native-histograms`.
const PROMETHEUS_DEFAULT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
const PROMETHEUS_NATIVE: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

struct Setup {
    server: TestServer,
    metrics: MetricsServer,
}

async fn setup(exporter: PrometheusExporter) -> Setup {
    let (recorder, metrics) = exporter.with_listen_addr("127.0.0.1:0".parse().unwrap()).build().unwrap();
    let layer = ServerMetricsLayer::new().with_registry(echo_registry()).with_recorder(recorder).with_exemplars();
    let server = TestServer::start(layer).await;
    let mut client = server.client().await;
    for traceparent in [Some(TRACE), Some(TRACE), None] {
        let mut request = Request::new(req("hi"));
        if let Some(value) = traceparent {
            request.metadata_mut().insert("traceparent", MetadataValue::from_str(value).unwrap());
        }
        client.unary_echo(request).await.unwrap();
    }
    client.unary_echo(req("fail:NotFound")).await.unwrap_err();
    Setup { server, metrics }
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    let response = http_request_with(addr, "GET", path, headers).await.unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    response
}

fn text(response: &RawResponse) -> String {
    String::from_utf8(response.body.clone()).unwrap()
}

fn decode(mut body: &[u8]) -> Vec<MetricFamily> {
    let mut families = Vec::new();
    while !body.is_empty() {
        families.push(MetricFamily::decode_length_delimited(&mut body).expect("a delimited MetricFamily"));
    }
    families
}

#[tokio::test]
async fn one_endpoint_negotiates_every_format() {
    let Setup { server, metrics } = setup(PrometheusExporter::new().with_native_histograms()).await;
    let addr = metrics.local_addr();

    // No Accept (curl), or an unknown one: the text format, as before.
    for accept in [None, Some("application/json"), Some("*/*"), Some("text/plain;version=0.0.4")] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
        let response = get(addr, "/metrics", &headers).await;
        assert_eq!(response.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
        let samples = exposition::parse(&text(&response)).unwrap();
        let ok = [("grpc_method", "UnaryEcho"), ("grpc_code", "OK")];
        assert_eq!(exposition::sum(&samples, "grpc_server_handled_total", &ok), 3.0);
        // Native histograms on, and the text scraper still gets the classic buckets.
        assert_eq!(
            exposition::sum(
                &samples,
                "grpc_server_handling_seconds_bucket",
                &[("grpc_method", "UnaryEcho"), ("le", "+Inf")]
            ),
            4.0
        );
    }

    // Prometheus' default: OpenMetrics, with the exemplar of the traced calls.
    let response = get(addr, "/metrics", &[("Accept", PROMETHEUS_DEFAULT)]).await;
    assert_eq!(response.header("content-type"), Some("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    let body = text(&response);
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(body.contains("# TYPE grpc_server_handled counter\n"), "{body}");
    assert!(body.contains("# UNIT grpc_server_handling_seconds seconds\n"), "{body}");
    assert!(body.contains(&format!("grpc_server_handled_total{{grpc_type=\"unary\",grpc_service=\"{ECHO}\",grpc_method=\"UnaryEcho\",grpc_code=\"OK\"}} 3")), "{body}");
    let exemplar_lines: Vec<&str> = body.lines().filter(|line| line.contains(" # {trace_id=")).collect();
    assert_eq!(exemplar_lines.len(), 1, "one bucket got the traced calls: {exemplar_lines:?}");
    assert!(
        exemplar_lines[0].starts_with("grpc_server_handling_seconds_bucket{") && exemplar_lines[0].contains(TRACE_ID)
    );

    // Prometheus with native histograms: protobuf, classic and native buckets together.
    let response = get(addr, "/metrics", &[("Accept", PROMETHEUS_NATIVE)]).await;
    assert_eq!(
        response.header("content-type"),
        Some("application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited")
    );
    let families = decode(&response.body);
    let seconds = families.iter().find(|f| f.name.as_deref() == Some("grpc_server_handling_seconds")).unwrap();
    assert_eq!(seconds.r#type, Some(MetricType::Histogram as i32));
    let unary = seconds
        .metric
        .iter()
        .find(|m| m.label.iter().any(|l| l.value.as_deref() == Some("UnaryEcho")))
        .and_then(|m| m.histogram.clone())
        .unwrap();
    assert_eq!(unary.sample_count, Some(4));
    assert_eq!(unary.schema, Some(3));
    assert!(unary.zero_threshold.unwrap() > 0.0);
    let native_total: i64 = {
        let mut count = 0;
        unary
            .positive_delta
            .iter()
            .map(|delta| {
                count += delta;
                count
            })
            .sum()
    };
    assert_eq!(native_total + i64::try_from(unary.zero_count.unwrap()).unwrap(), 4);
    assert!(!unary.bucket.is_empty(), "classic buckets too");
    assert!(unary.bucket.iter().any(|b| b.exemplar.is_some()) && !unary.exemplars.is_empty(), "exemplars in protobuf");
    // Families in protobuf carry the same counts as in text.
    let handled = families.iter().find(|f| f.name.as_deref() == Some("grpc_server_handled_total")).unwrap();
    let total: f64 = handled.metric.iter().filter_map(|m| m.counter.as_ref()?.value).sum();
    assert_eq!(total, 4.0);

    // `?format=` for scrapers that cannot set headers.
    let response = get(addr, "/metrics?format=openmetrics", &[]).await;
    assert!(text(&response).ends_with("# EOF\n"));

    server.stop().await;
    metrics.shutdown().await;
}

#[tokio::test]
async fn gzip_when_the_scraper_accepts_it() {
    let Setup { server, metrics } = setup(PrometheusExporter::new()).await;
    let addr = metrics.local_addr();
    let plain = get(addr, "/metrics", &[("Accept", PROMETHEUS_DEFAULT)]).await;
    assert_eq!(plain.header("content-encoding"), None);
    let zipped = get(addr, "/metrics", &[("Accept", PROMETHEUS_DEFAULT), ("Accept-Encoding", "gzip")]).await;
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    assert_eq!(zipped.header("vary"), Some("Accept, Accept-Encoding"));
    assert_eq!(zipped.header("content-length"), Some(zipped.body.len().to_string().as_str()));
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&zipped.body[..]).read_to_end(&mut unzipped).unwrap();
    assert_eq!(unzipped, plain.body);
    assert!(zipped.body.len() * 4 < plain.body.len(), "{} vs {}", zipped.body.len(), plain.body.len());
    // `gzip;q=0` is a no.
    let refused = get(addr, "/metrics", &[("Accept-Encoding", "gzip;q=0, identity")]).await;
    assert_eq!(refused.header("content-encoding"), None);
    server.stop().await;
    metrics.shutdown().await;
}

#[tokio::test]
async fn invalid_traceparents_are_ignored_never_echoed() {
    let (recorder, metrics) =
        PrometheusExporter::new().with_listen_addr("127.0.0.1:0".parse().unwrap()).build().unwrap();
    let layer = ServerMetricsLayer::new().with_registry(echo_registry()).with_recorder(recorder).with_exemplars();
    let server = TestServer::start(layer).await;
    let mut client = server.client().await;
    let hostile = [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-\"}} 1 # {evil=\"x\"-00f067aa0ba902b7-01",
    ];
    for value in hostile {
        let mut request = Request::new(req("hi"));
        request.metadata_mut().insert("traceparent", MetadataValue::from_str(value).unwrap());
        client.unary_echo(request).await.unwrap();
    }
    let body = text(&get(metrics.local_addr(), "/metrics", &[("Accept", PROMETHEUS_DEFAULT)]).await);
    assert!(!body.contains("trace_id") && !body.contains("evil") && !body.contains("4BF92F"), "{body}");
    server.stop().await;
    metrics.shutdown().await;
}

#[tokio::test]
async fn the_applications_metrics_are_served_in_every_format() {
    let (recorder, metrics) = PrometheusExporter::new()
        .with_listen_addr("127.0.0.1:0".parse().unwrap())
        .with_buckets_for_metric("my_app_job_seconds", &[0.5, 1.0])
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        metrics::describe_counter!("my_app_jobs_total", metrics::Unit::Count, "Jobs done.");
        metrics::counter!("my_app_jobs_total", "kind" => "import").increment(7);
        metrics::gauge!("my_app_queue_depth").set(3.5);
        metrics::describe_histogram!("my_app_job_seconds", metrics::Unit::Seconds, "Job time.");
        metrics::histogram!("my_app_job_seconds").record(0.7);
    });
    let addr = metrics.local_addr();
    let text_body = text(&get(addr, "/metrics", &[]).await);
    assert!(text_body.contains("my_app_jobs_total{kind=\"import\"} 7\n"), "{text_body}");
    assert!(text_body.contains("my_app_queue_depth 3.5\n"), "{text_body}");
    assert!(text_body.contains("my_app_job_seconds_bucket{le=\"1\"} 1\n"), "{text_body}");
    let om = text(&get(addr, "/metrics", &[("Accept", PROMETHEUS_DEFAULT)]).await);
    assert!(
        om.contains("# TYPE my_app_jobs counter\n") && om.contains("my_app_jobs_total{kind=\"import\"} 7\n"),
        "{om}"
    );
    assert!(om.contains("# UNIT my_app_job_seconds seconds\n"), "{om}");
    assert!(om.contains("my_app_queue_depth 3.5\n"), "{om}");
    let families = decode(&get(addr, "/metrics", &[("Accept", PROMETHEUS_NATIVE)]).await.body);
    let names: Vec<_> = families.iter().filter_map(|f| f.name.clone()).collect();
    for name in ["my_app_jobs_total", "my_app_queue_depth", "my_app_job_seconds"] {
        assert!(names.iter().any(|n| n == name), "{name} missing from protobuf: {names:?}");
    }
    metrics.shutdown().await;
}

#[tokio::test]
async fn head_has_the_length_of_the_get_and_no_body() {
    let Setup { server, metrics } = setup(PrometheusExporter::new()).await;
    let addr = metrics.local_addr();
    let got = get(addr, "/metrics", &[("Accept", PROMETHEUS_DEFAULT)]).await;
    let head = http_request_with(addr, "HEAD", "/metrics", &[("Accept", PROMETHEUS_DEFAULT)]).await.unwrap();
    assert_eq!(head.header("content-length"), Some(got.body.len().to_string().as_str()));
    assert_eq!(head.header("content-type"), got.header("content-type"));
    assert!(head.body.is_empty());
    server.stop().await;
    metrics.shutdown().await;
}
