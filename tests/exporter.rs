//! The Prometheus exporter over real sockets (127.0.0.1 only): binding, errors, shutdown,
//! the global install, the allowlist, and a scrape after real gRPC traffic through
//! `ServerMetricsLayer`.
//!
//! Global state is per process, so every `install()` lives in one test
//! (`global_install_once_per_process`); every other test uses `build()` and its own recorder.

#![cfg(feature = "exporter")]

mod common;

use common::{ECHO, TestServer, echo_registry};

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener as StdTcpListener},
    time::Duration,
};

use tokio::net::TcpStream;
use tokio_stream::StreamExt;
use tonic_metrics::{Error, PrometheusExporter, ServerMetricsLayer, names::DEFAULT_BUCKETS};
use tonic_metrics_testing::{
    EchoClient, EchoRequest, STREAM_RESPONSES,
    exposition::{self, HttpResponse, Sample},
};

/// Upper bound on any single network step, so a regression fails instead of hanging.
const STEP: Duration = Duration::from_secs(10);

fn localhost0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

#[tokio::test]
async fn busy_port_is_a_bind_error_and_leaks_nothing() {
    let original = StdTcpListener::bind(localhost0()).unwrap();
    let addr = original.local_addr().unwrap();

    let error = build_err(PrometheusExporter::new().with_listen_addr(addr));
    match &error {
        Error::Bind { addr: failed, .. } => assert_eq!(*failed, addr),
        other => panic!("expected Error::Bind, got {other:?}"),
    }
    assert!(error.to_string().contains(&addr.to_string()), "message should name {addr}: {error}");
    assert!(error.to_string().contains("another process"), "{error}");

    // The port is still the original socket's: a connection lands on it (after the probe
    // the failed build made to see whether a sibling exporter holds the port).
    original.set_nonblocking(false).unwrap();
    let client = std::net::TcpStream::connect(addr).unwrap();
    let peers: Vec<_> = (0..2).map(|_| original.accept().unwrap().1).collect();
    assert!(peers.contains(&client.local_addr().unwrap()), "{peers:?}");
    drop(client);

    // And nothing else holds it: once the original is gone, it can be bound again.
    drop(original);
    StdTcpListener::bind(addr).expect("the failed build must not keep the port");
}

#[tokio::test]
async fn an_address_this_host_lacks_is_a_bind_error_saying_so() {
    // 192.0.2.1 (TEST-NET-1) is no interface's address here.
    let addr = SocketAddr::from(([192, 0, 2, 1], 0));
    let error = build_err(PrometheusExporter::new().with_listen_addr(addr));
    assert!(matches!(error, Error::Bind { .. }), "{error:?}");
    assert!(error.to_string().contains("not one of this host's"), "{error}");
}

/// A metrics port held by another process of the same program is the multi-process trap
/// (only one process would ever be scraped): the error says so and names the way out.
/// (Here the "other process" is this one: the probe reads the holder's program and pid.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_held_by_a_sibling_exporter_names_multi_process_mode() {
    let (_recorder, first) = PrometheusExporter::new().with_listen_addr(localhost0()).build().unwrap();
    let error = build_err(PrometheusExporter::new().with_listen_addr(first.local_addr()));
    match &error {
        Error::PortHeldBySibling { addr, pid, .. } => {
            assert_eq!((*addr, *pid), (first.local_addr(), std::process::id()));
        }
        other => panic!("expected Error::PortHeldBySibling, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("multi-process") && message.contains("TONIC_METRICS_MULTIPROC_DIR"), "{message}");
    first.shutdown().await;
}

#[test]
fn port_overflow_and_listen_addr_derivation() {
    let overflow = PrometheusExporter::for_grpc_addr("127.0.0.1:65535".parse().unwrap());
    let error = overflow.listen_addr().unwrap_err();
    assert!(matches!(error, Error::PortOverflow { grpc_port: 65535 }), "{error:?}");
    assert!(error.to_string().contains("65535"), "{error}");

    let derived = PrometheusExporter::for_grpc_addr("127.0.0.1:50051".parse().unwrap());
    assert_eq!(derived.listen_addr().unwrap(), "127.0.0.1:50052".parse::<SocketAddr>().unwrap());
    let ephemeral = PrometheusExporter::for_grpc_addr(localhost0());
    assert_eq!(ephemeral.listen_addr().unwrap(), localhost0());
    // An explicit port wins over the derived one, and keeps the gRPC host.
    let explicit = PrometheusExporter::for_grpc_addr("127.0.0.1:65535".parse().unwrap()).with_port(9100);
    assert_eq!(explicit.listen_addr().unwrap(), "127.0.0.1:9100".parse::<SocketAddr>().unwrap());
}

#[tokio::test]
async fn port_overflow_fails_the_build() {
    let error = build_err(PrometheusExporter::for_grpc_addr("127.0.0.1:65535".parse().unwrap()));
    assert!(matches!(error, Error::PortOverflow { grpc_port: 65535 }), "{error:?}");
}

#[tokio::test]
async fn idle_connections_are_bounded_and_the_listener_recovers() {
    use tokio::io::AsyncReadExt;
    let (_recorder, server) = PrometheusExporter::new().with_listen_addr(localhost0()).build().unwrap();
    let addr = server.local_addr();
    // 64 connections that never send a request hold every slot.
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(STEP, extra.read(&mut buf)).await.expect("the extra connection is closed");
    assert!(matches!(read, Ok(0) | Err(_)), "the 65th connection must be closed, got {read:?}");
    drop(idle);
    let deadline = std::time::Instant::now() + STEP;
    loop {
        match tokio::time::timeout(Duration::from_secs(1), exposition::http_request(addr, "GET", "/metrics")).await {
            Ok(Ok(response)) if response.status == 200 => break,
            _ => assert!(std::time::Instant::now() < deadline, "the listener did not recover"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn dropping_the_handle_keeps_serving() {
    let (_recorder, metrics) = PrometheusExporter::new().with_listen_addr(localhost0()).build().unwrap();
    let addr = metrics.local_addr();
    drop(metrics);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(http(addr, "GET", "/metrics").await.status, 200);
}

#[tokio::test]
async fn shutdown_frees_the_port() {
    let (_recorder, server) = PrometheusExporter::new().with_listen_addr(localhost0()).build().unwrap();
    let addr = server.local_addr();
    assert_eq!(addr.ip(), localhost0().ip());
    assert_ne!(addr.port(), 0, "local_addr must report the real port");

    let response = http(addr, "GET", "/metrics").await;
    assert_eq!(response.status, 200, "{response:?}");

    server.shutdown().await;
    let connected = tokio::time::timeout(STEP, TcpStream::connect(addr)).await.unwrap();
    assert!(connected.is_err(), "nothing should accept on {addr} after shutdown");
    StdTcpListener::bind(addr).expect("shutdown must free the port");
}

/// The only test that touches the global recorder.
#[tokio::test]
async fn global_install_once_per_process() {
    let first = PrometheusExporter::new().with_listen_addr(localhost0()).install().expect("first install");
    metrics::counter!("tonic_metrics_install_probe_total").increment(1);
    assert!(first.render().contains("tonic_metrics_install_probe_total 1"), "{}", first.render());
    let response = http(first.local_addr(), "GET", "/metrics").await;
    assert_eq!(response.status, 200, "{response:?}");

    let port = free_port();
    match PrometheusExporter::new().with_listen_addr(port).install() {
        Err(Error::RecorderAlreadyInstalled) => {}
        Err(other) => panic!("expected RecorderAlreadyInstalled, got {other:?}"),
        Ok(server) => panic!("second install succeeded on {}", server.local_addr()),
    }
    StdTcpListener::bind(port).expect("a failed install must not keep its port");

    let port = free_port();
    assert!(PrometheusExporter::new().with_listen_addr(port).install_or_warn().is_none());
    StdTcpListener::bind(port).expect("a failed install_or_warn must not keep its port");

    first.shutdown().await;
}

#[test]
fn build_outside_a_runtime_is_no_runtime() {
    let error = build_err(PrometheusExporter::new().with_listen_addr(localhost0()));
    assert!(matches!(error, Error::NoRuntime), "{error:?}");
    assert!(error.to_string().contains("Tokio runtime"), "{error}");
}

#[tokio::test]
async fn invalid_buckets_and_allowlist_entries_are_typed_errors() {
    let buckets: [&[f64]; 5] = [&[], &[0.5, 0.1], &[0.1, 0.1], &[0.1, f64::NAN], &[0.1, f64::INFINITY]];
    for bad in buckets {
        let error = build_err(PrometheusExporter::new().with_listen_addr(localhost0()).with_buckets(bad));
        assert!(matches!(error, Error::InvalidBuckets(_)), "{bad:?}: {error:?}");
        assert!(error.to_string().contains("buckets"), "{error}");
    }
    for bad in ["not-an-address", "10.0.0.0/33", "127.0.0.1:80", ""] {
        let error = build_err(PrometheusExporter::new().with_listen_addr(localhost0()).with_allowed_address(bad));
        match &error {
            Error::InvalidAllowlistEntry(entry) => assert_eq!(entry, bad),
            other => panic!("{bad:?}: expected InvalidAllowlistEntry, got {other:?}"),
        }
        assert!(error.to_string().contains(&format!("{bad:?}")), "{error}");
    }
    // Valid ones build.
    for good in ["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"] {
        let (_recorder, server) =
            PrometheusExporter::new().with_listen_addr(localhost0()).with_allowed_address(good).build().unwrap();
        server.shutdown().await;
    }
}

#[tokio::test]
async fn allowlist_forbids_other_addresses() {
    let (_recorder, server) =
        PrometheusExporter::new().with_listen_addr(localhost0()).with_allowed_address("10.0.0.0/8").build().unwrap();
    let response = http(server.local_addr(), "GET", "/metrics").await;
    assert_eq!(response.status, 403, "{response:?}");
    server.shutdown().await;

    for allowed in ["127.0.0.1", "127.0.0.0/8"] {
        let (_recorder, server) =
            PrometheusExporter::new().with_listen_addr(localhost0()).with_allowed_address(allowed).build().unwrap();
        let response = http(server.local_addr(), "GET", "/metrics").await;
        assert_eq!(response.status, 200, "{allowed}: {response:?}");
        server.shutdown().await;
    }
}

#[tokio::test]
async fn scrape_endpoint_speaks_http() {
    let (recorder, server) = PrometheusExporter::new().with_listen_addr(localhost0()).build().unwrap();
    let addr = server.local_addr();
    metrics::with_local_recorder(&recorder, || metrics::counter!("probe_total").increment(1));

    let ok = http(addr, "GET", "/metrics").await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(ok.header("content-type").is_some_and(|v| v.starts_with("text/plain; version=0.0.4")), "{ok:?}");

    let missing = http(addr, "GET", "/nope").await;
    assert_eq!(missing.status, 404, "{missing:?}");

    let post = http(addr, "POST", "/metrics").await;
    assert_eq!(post.status, 405, "{post:?}");
    assert!(post.header("allow").is_some_and(|v| v.contains("GET")), "{post:?}");

    let head = http(addr, "HEAD", "/metrics").await;
    assert_eq!(head.status, 200, "{head:?}");
    assert!(head.body.is_empty(), "{head:?}");
    let length: usize = head.header("content-length").expect("HEAD keeps Content-Length").parse().unwrap();
    assert_eq!(length, ok.body.len(), "HEAD announces what GET sends: {head:?}");

    server.shutdown().await;
}

#[tokio::test]
async fn scrape_after_real_traffic_has_exact_values() {
    let (recorder, metrics) = PrometheusExporter::new().with_listen_addr(localhost0()).build().unwrap();
    let registry = echo_registry();
    let grpc = TestServer::start(ServerMetricsLayer::new().with_registry(registry).with_recorder(recorder)).await;
    drive_traffic(grpc.addr).await;

    let response = http(metrics.local_addr(), "GET", "/metrics").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        response.header("content-type").is_some_and(|v| v.starts_with("text/plain; version=0.0.4")),
        "{response:?}"
    );
    let text = &response.body;
    let samples = exposition::parse(text).unwrap();

    let unary = [("grpc_type", "unary"), ("grpc_service", ECHO), ("grpc_method", "UnaryEcho")];
    let stream = [("grpc_type", "server_stream"), ("grpc_service", ECHO), ("grpc_method", "ServerStreamingEcho")];
    let with_code = |base: &[(&'static str, &'static str)], code: &'static str| {
        let mut labels = base.to_vec();
        labels.push(("grpc_code", code));
        labels
    };

    assert_eq!(value(&samples, "grpc_server_started_total", &unary), 4.0);
    assert_eq!(value(&samples, "grpc_server_handled_total", &with_code(&unary, "OK")), 3.0);
    assert_eq!(value(&samples, "grpc_server_handled_total", &with_code(&unary, "NotFound")), 1.0);
    // As go-grpc-prometheus counts unary messages: one in per call, one out per success.
    assert_eq!(value(&samples, "grpc_server_msg_received_total", &unary), 4.0);
    assert_eq!(value(&samples, "grpc_server_msg_sent_total", &unary), 3.0);

    assert_eq!(value(&samples, "grpc_server_started_total", &stream), 1.0);
    assert_eq!(value(&samples, "grpc_server_handled_total", &with_code(&stream, "OK")), 1.0);
    assert_eq!(value(&samples, "grpc_server_msg_sent_total", &stream), STREAM_RESPONSES as f64);
    assert_eq!(value(&samples, "grpc_server_msg_received_total", &stream), 1.0);

    // Real buckets (never a summary), cumulative, with +Inf equal to the count.
    check_histogram(&samples, &unary, 4.0);
    check_histogram(&samples, &stream, 1.0);
    assert!(text.contains("le=\"0.005\""), "{text}");
    for sample in &samples {
        assert!(!sample.labels.contains_key("quantile"), "summary-style series: {sample:?}");
    }
    assert!(!text.contains(" summary\n"), "{text}");

    for line in [
        "# HELP grpc_server_started_total ",
        "# TYPE grpc_server_started_total counter",
        "# HELP grpc_server_handled_total ",
        "# TYPE grpc_server_handled_total counter",
        "# HELP grpc_server_handling_seconds ",
        "# TYPE grpc_server_handling_seconds histogram",
    ] {
        assert!(text.lines().any(|l| l.starts_with(line)), "missing {line:?} in\n{text}");
    }

    // Registered but never called: present at zero from the start.
    for (kind, method) in [("client_stream", "ClientStreamingEcho"), ("bidi_stream", "BidirectionalStreamingEcho")] {
        let idle = [("grpc_type", kind), ("grpc_service", ECHO), ("grpc_method", method)];
        assert_eq!(value(&samples, "grpc_server_started_total", &idle), 0.0, "{method}");
        assert_eq!(value(&samples, "grpc_server_handled_total", &with_code(&idle, "OK")), 0.0, "{method}");
        assert_eq!(value(&samples, "grpc_server_msg_received_total", &idle), 0.0, "{method}");
        assert_eq!(value(&samples, "grpc_server_msg_sent_total", &idle), 0.0, "{method}");
        check_histogram(&samples, &idle, 0.0);
    }

    grpc.stop().await;
    metrics.shutdown().await;
}

/// `promtool check metrics` on a real scrape; runs when `PROMTOOL` names the binary.
#[tokio::test]
async fn promtool_accepts_a_real_scrape() {
    if std::env::var_os("PROMTOOL").is_none_or(|p| p.is_empty()) {
        eprintln!("promtool_accepts_a_real_scrape: skipped (set PROMTOOL=/path/to/promtool to run it)");
        return;
    }
    let (recorder, metrics) = PrometheusExporter::new().with_listen_addr(localhost0()).build().unwrap();
    let registry = echo_registry();
    let grpc = TestServer::start(ServerMetricsLayer::new().with_registry(registry).with_recorder(recorder)).await;
    drive_traffic(grpc.addr).await;
    let response = http(metrics.local_addr(), "GET", "/metrics").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert!(response.body.contains("grpc_server_handling_seconds_bucket"), "{}", response.body);

    let scrape = response.body.clone();
    assert!(tokio::task::spawn_blocking(move || common::promtool_check_metrics(&scrape)).await.unwrap());

    grpc.stop().await;
    metrics.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The error of a build that must fail.
#[test]
fn buckets_by_exposed_name_apply_and_a_counters_name_is_refused() {
    let recorder = PrometheusExporter::new()
        .with_buckets_for_metric("grpc_server_handling_seconds", &[0.25, 4.0])
        .with_global_label("service.name", "checkout")
        .build_recorder()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        metrics::histogram!("grpc_server_handling_seconds", "grpc_method" => "M").record(0.1);
        metrics::counter!("my_app_jobs_total").increment(1);
    });
    let text = recorder.handle().render();
    assert!(
        text.contains(r#"grpc_server_handling_seconds_bucket{service_name="checkout",grpc_method="M",le="0.25"} 1"#),
        "buckets by recorded name, global label names made valid on this crate's series too:\n{text}"
    );
    assert!(text.contains(r#"my_app_jobs_total{service_name="checkout"} 1"#), "{text}");

    let recorder = PrometheusExporter::new()
        .with_buckets_for_metric("rpc_server_call_duration_seconds", &[0.25, 4.0])
        .build_recorder()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        metrics::histogram!("rpc.server.call.duration", "rpc.method" => "S/M").record(0.1);
    });
    let text = recorder.handle().render();
    assert!(text.contains(r#"le="0.25"} 1"#) && text.contains(r#"le="4"} 1"#), "buckets by exposed name:\n{text}");

    for counter in ["grpc_server_handled_total", "grpc.server.call.started", "grpc_server_call_started_total"] {
        match PrometheusExporter::new().with_buckets_for_metric(counter, &[1.0]).build_recorder() {
            Err(error @ Error::NotAHistogram(_)) => assert!(error.to_string().contains(counter), "{error}"),
            other => panic!("{counter}: expected NotAHistogram, got {:?}", other.err()),
        }
    }
}

fn build_err(exporter: PrometheusExporter) -> Error {
    match exporter.build() {
        Ok((_, server)) => panic!("expected an error, but the exporter started on {}", server.local_addr()),
        Err(error) => error,
    }
}

/// A 127.0.0.1 address whose port was free a moment ago.
fn free_port() -> SocketAddr {
    StdTcpListener::bind(localhost0()).unwrap().local_addr().unwrap()
}

/// 3 UnaryEcho OK, 1 UnaryEcho `fail:NotFound`, 1 plain ServerStreamingEcho (5 responses).
async fn drive_traffic(addr: SocketAddr) {
    tokio::time::timeout(STEP, async {
        let mut client = EchoClient::connect(format!("http://{addr}")).await.unwrap();
        for i in 0..3 {
            let message = format!("hello {i}");
            let reply = client.unary_echo(EchoRequest { message: message.clone() }).await.unwrap();
            assert_eq!(reply.into_inner().message, message);
        }
        let status = client.unary_echo(EchoRequest { message: "fail:NotFound".into() }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);

        let mut stream =
            client.server_streaming_echo(EchoRequest { message: "stream".into() }).await.unwrap().into_inner();
        let mut received = 0;
        while let Some(reply) = stream.next().await {
            assert_eq!(reply.unwrap().message, "stream");
            received += 1;
        }
        assert_eq!(received, STREAM_RESPONSES);
    })
    .await
    .expect("gRPC traffic timed out");
}

/// A bare HTTP/1.1 request (`Connection: close`, read to EOF), bounded in time, whose
/// body must be sent with an exact `Content-Length`.
async fn http(addr: SocketAddr, method: &str, path: &str) -> HttpResponse {
    let response = tokio::time::timeout(STEP, exposition::http_request(addr, method, path))
        .await
        .unwrap_or_else(|_| panic!("{method} http://{addr}{path} timed out"))
        .unwrap_or_else(|error| panic!("{method} http://{addr}{path}: {error}"));
    assert!(response.header("transfer-encoding").is_none(), "expected a Content-Length body: {response:?}");
    if method != "HEAD"
        && let Some(length) = response.header("content-length")
    {
        assert_eq!(length.parse::<usize>().unwrap(), response.body.len(), "{response:?}");
    }
    response
}

/// The value of the one sample named `name` with exactly these labels.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let found: Vec<&Sample> = samples.iter().filter(|s| s.name == name && s.labels == wanted).collect();
    match found.as_slice() {
        [one] => one.value,
        _ => {
            let same_name: Vec<&Sample> = samples.iter().filter(|s| s.name == name).collect();
            panic!("{} samples of {name}{wanted:?}; samples named {name}: {same_name:#?}", found.len())
        }
    }
}

/// `grpc_server_handling_seconds` for `labels`: a cumulative bucket per default boundary
/// plus `+Inf`, which equals `_count` and `count`.
fn check_histogram(samples: &[Sample], labels: &[(&str, &str)], count: f64) {
    let name = "grpc_server_handling_seconds";
    let mut previous = 0.0;
    let boundaries = DEFAULT_BUCKETS.iter().map(|b| b.to_string()).chain(["+Inf".to_owned()]);
    for le in boundaries {
        let bucket = samples
            .iter()
            .find(|s| {
                s.name == format!("{name}_bucket")
                    && s.labels.get("le").is_some_and(|v| v.parse::<f64>().ok() == le.parse::<f64>().ok())
                    && labels.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
                    && s.labels.len() == labels.len() + 1
            })
            .unwrap_or_else(|| panic!("no {name}_bucket{{le=\"{le}\"}} for {labels:?}"));
        assert!(bucket.value >= previous, "buckets must be cumulative: {bucket:?} after {previous}");
        previous = bucket.value;
    }
    assert_eq!(previous, count, "{name}_bucket{{le=\"+Inf\"}} for {labels:?}");
    assert_eq!(value(samples, &format!("{name}_count"), labels), count, "{labels:?}");
    let sum = value(samples, &format!("{name}_sum"), labels);
    assert!(sum.is_finite() && sum >= 0.0, "{name}_sum for {labels:?}: {sum}");
    if count == 0.0 {
        assert_eq!(sum, 0.0);
    }
}
