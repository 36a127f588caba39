//! The OpenTelemetry naming scheme, end to end: a real tonic server and client with
//! `Naming::OpenTelemetry`, scraped over HTTP from the crate's exporter.

#![cfg(feature = "exporter")]

mod common;

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use common::{ECHO, TestServer, echo_registry, req};
use tonic_metrics::{ClientMetricsLayer, Naming, PrometheusExporter, ServerMetricsLayer, names::OTEL_BUCKETS};
use tonic_metrics_testing::{
    EchoClient, EchoRequest, EchoResponse,
    exposition::{self, Sample},
};
use tower::ServiceBuilder;

const STEP: Duration = Duration::from_secs(20);

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let found: Vec<&Sample> = samples.iter().filter(|s| s.name == name && s.labels == wanted).collect();
    match found.as_slice() {
        [] => None,
        [one] => Some(one.value),
        many => panic!("{} samples of {name}{wanted:?}: {many:#?}", many.len()),
    }
}

#[tokio::test]
async fn opentelemetry_naming_records_call_duration_with_semconv_attributes() {
    let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (recorder, metrics) = PrometheusExporter::new().with_listen_addr(localhost).build().unwrap();
    let recorder = std::sync::Arc::new(recorder);
    let server = TestServer::start(
        ServerMetricsLayer::new()
            .with_naming(Naming::OpenTelemetry)
            .with_registry(echo_registry())
            .with_shared_recorder(recorder.clone()),
    )
    .await;
    let channel = server.channel().await;
    let client_layer = ClientMetricsLayer::new()
        .with_naming(Naming::OpenTelemetry)
        .with_registry(echo_registry())
        .with_shared_recorder(recorder.clone());
    let mut client = EchoClient::new(ServiceBuilder::new().layer(client_layer).service(channel.clone()));

    tokio::time::timeout(STEP, async {
        for _ in 0..3 {
            client.unary_echo(req("hello")).await.unwrap();
        }
        let status = client.unary_echo(req("fail:DeadlineExceeded")).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        let status = client.unary_echo(req("fail:Cancelled")).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Cancelled);
        // An unregistered method on the server (its client has no such method, so send it raw).
        let mut raw = tonic::client::Grpc::new(channel.clone());
        raw.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_static("/no.such.Service/Nope");
        let codec = tonic_prost::ProstCodec::<EchoRequest, EchoResponse>::default();
        let status = raw.unary(tonic::Request::new(req("x")), path, codec).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
    })
    .await
    .expect("gRPC traffic timed out");

    let response = exposition::http_request(metrics.local_addr(), "GET", "/metrics").await.unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    let text = &response.body;
    let samples = exposition::parse(text).unwrap();

    // Only the duration histograms: no go-grpc-prometheus family alongside.
    assert!(!text.contains("grpc_server_") && !text.contains("grpc_client_"), "{text}");
    for side in ["server", "client"] {
        let name = format!("rpc_{side}_call_duration_seconds");
        assert!(text.contains(&format!("# TYPE {name} histogram")), "{text}");
        assert!(text.contains(&format!("# HELP {name} ")), "{text}");
    }

    let unary = format!("{ECHO}/UnaryEcho");
    let attrs = |code: &'static str| {
        vec![("rpc_system_name", "grpc"), ("rpc_method", unary.as_str()), ("rpc_response_status_code", code)]
    };
    for side in ["server", "client"] {
        let count = |code| value(&samples, &format!("rpc_{side}_call_duration_seconds_count"), &attrs(code));
        assert_eq!(count("OK"), Some(3.0), "{side}\n{text}");
        assert_eq!(count("DEADLINE_EXCEEDED"), Some(1.0), "{side}\n{text}");
        assert_eq!(count("CANCELLED"), Some(1.0), "{side}\n{text}");
        // OpenTelemetry's bucket advice: 0.075 is one of its boundaries, not Prometheus'.
        let mut bucket = attrs("OK");
        bucket.push(("le", "0.075"));
        assert!(value(&samples, &format!("rpc_{side}_call_duration_seconds_bucket"), &bucket).is_some());
        let mut inf = attrs("OK");
        inf.push(("le", "+Inf"));
        assert_eq!(value(&samples, &format!("rpc_{side}_call_duration_seconds_bucket"), &inf), Some(3.0));
        let ok: BTreeMap<String, String> =
            attrs("OK").iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let buckets = samples
            .iter()
            .filter(|s| s.name == format!("rpc_{side}_call_duration_seconds_bucket"))
            .filter(|s| s.labels.iter().filter(|(k, _)| *k != "le").eq(ok.iter()))
            .count();
        assert_eq!(buckets, OTEL_BUCKETS.len() + 1, "one bucket per boundary plus +Inf");
    }

    // Registered, never called: present at zero; the unregistered method is `_OTHER`.
    let bidi = format!("{ECHO}/BidirectionalStreamingEcho");
    let idle = [("rpc_system_name", "grpc"), ("rpc_method", bidi.as_str()), ("rpc_response_status_code", "OK")];
    assert_eq!(value(&samples, "rpc_server_call_duration_seconds_count", &idle), Some(0.0), "{text}");
    let other = [("rpc_system_name", "grpc"), ("rpc_method", "_OTHER"), ("rpc_response_status_code", "UNIMPLEMENTED")];
    assert_eq!(value(&samples, "rpc_server_call_duration_seconds_count", &other), Some(1.0), "{text}");

    // Every label set is one of the bounded OpenTelemetry attribute sets.
    for sample in samples.iter().filter(|s| s.name.starts_with("rpc_")) {
        let keys: Vec<&str> = sample.labels.keys().map(String::as_str).filter(|k| *k != "le").collect();
        assert_eq!(keys, ["rpc_method", "rpc_response_status_code", "rpc_system_name"], "{sample:?}");
    }

    // The exposition is clean for promtool too (when CI names it).
    common::promtool_check_metrics(text);

    server.stop().await;
    metrics.shutdown().await;
}

/// The exporter names OpenTelemetry's histograms as OpenTelemetry's Prometheus translation
/// does (dots to underscores, the unit as a suffix), and leaves the go-grpc-prometheus
/// names as they are (they already end in their unit and `_total`).
#[tokio::test]
async fn the_exporter_names_each_scheme_as_its_users_expect() {
    let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (recorder, metrics) = PrometheusExporter::new().with_listen_addr(localhost).build().unwrap();
    let server = TestServer::start(
        ServerMetricsLayer::new()
            .with_naming(Naming::OpenTelemetry)
            .with_registry(echo_registry())
            .with_recorder(recorder),
    )
    .await;
    server.client().await.unary_echo(req("hello")).await.unwrap();
    let text = metrics.render();
    assert!(text.contains("rpc_server_call_duration_seconds_bucket{"), "{text}");
    assert!(!text.contains("rpc_server_call_duration_bucket"), "{text}");
    server.stop().await;
    metrics.shutdown().await;

    let (recorder, metrics) = PrometheusExporter::new().with_listen_addr(localhost).build().unwrap();
    let server =
        TestServer::start(ServerMetricsLayer::new().with_registry(echo_registry()).with_recorder(recorder)).await;
    server.client().await.unary_echo(req("hello")).await.unwrap();
    let text = metrics.render();
    for name in ["grpc_server_handled_total{", "grpc_server_msg_sent_total{", "grpc_server_handling_seconds_bucket{"] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    assert!(!text.contains("_seconds_seconds") && !text.contains("_total_total"), "{text}");
    server.stop().await;
    metrics.shutdown().await;
}
