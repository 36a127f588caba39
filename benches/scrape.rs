//! What a `/metrics` scrape costs: rendering 100, 1,000 and 10,000 registered methods in
//! each format, and gzipping it.
//!
//! ```text
//! cargo bench --bench scrape
//! ```
//!
//! Each method's series are created at zero by the registry (as a real server's are) and
//! then get one call, so every method renders its three counters, `handled` for all 17
//! codes, and a histogram with the default 11 buckets, `_sum` and `_count`. The times are
//! those of `MetricsHandle::render_as` (snapshot and encode), what the exporter's listener
//! runs per scrape on its blocking pool, and of gzipping the text; criterion's throughput
//! is per registered method. The size of each rendering, plain and gzipped, is printed
//! once to stderr.
//!
//! `scrape/multiprocess-text/4x1000` is a whole `GET /metrics` over loopback from the serving
//! member of a multi-process group of four members of 1,000 methods each (members in one
//! process, each with its own lock and snapshot file, as separate processes would have):
//! reading the other three snapshots, summing, rendering.

use std::{
    hint::black_box,
    pin::pin,
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use http::{Request, Uri};
use http_body::Body;
use http_body_util::Full;
use tonic_metrics::{
    GrpcType, MethodRegistry, PrometheusExporter, ServerMetricsLayer,
    exporter::{Format, MetricsRecorder},
    multiprocess::MultiProcess,
};
use tower::{Layer, Service, service_fn};

/// One gRPC message on the wire: flag byte, 4-byte length, payload.
const FRAME: &[u8] = b"\0\0\0\0\x05hello";

/// Gives `recorder` `count` registered methods, each with one OK call.
fn one_call_per_method(recorder: MetricsRecorder, count: usize) {
    let mut registry = MethodRegistry::new();
    let mut paths = Vec::with_capacity(count);
    for i in 0..count {
        let (service, method) = (format!("bench.v1.Service{}", i / 100), format!("Method{}", i % 100));
        registry.add_method(&service, &method, GrpcType::Unary);
        paths.push(Uri::try_from(format!("/{service}/{method}")).expect("a valid path"));
    }
    // A trailers-only OK answer is enough to record one call per method.
    let inner = service_fn(|_: Request<_>| async {
        let mut response = http::Response::new(Full::new(Bytes::new()));
        response.headers_mut().insert("grpc-status", http::HeaderValue::from_static("0"));
        Ok::<_, std::convert::Infallible>(response)
    });
    let mut service = ServerMetricsLayer::new().with_registry(registry).with_recorder(recorder).layer(inner);
    let mut cx = Context::from_waker(Waker::noop());
    for path in paths {
        let mut request = Request::new(Full::new(Bytes::from_static(FRAME)));
        *request.uri_mut() = path;
        let Poll::Ready(Ok(response)) = pin!(service.call(request)).poll(&mut cx) else { unreachable!() };
        let mut body = pin!(response.into_body());
        while let Poll::Ready(Some(_)) = body.as_mut().poll_frame(&mut cx) {}
    }
}

fn scrape(c: &mut Criterion) {
    let mut group = c.benchmark_group("scrape");
    for count in [100, 1_000, 10_000] {
        let recorder = PrometheusExporter::new().build_recorder().expect("a valid configuration");
        let handle = recorder.handle();
        one_call_per_method(recorder, count);
        handle.run_upkeep();
        group.throughput(Throughput::Elements(count as u64));
        for (name, format) in
            [("text", Format::Text), ("openmetrics", Format::OpenMetrics), ("protobuf", Format::Protobuf)]
        {
            let body = handle.render_as(format);
            let zipped = gzip(&body);
            eprintln!(
                "scrape of {count} methods, {name}: {} bytes, {} gzipped ({:.1}%)",
                body.len(),
                zipped.len(),
                100.0 * zipped.len() as f64 / body.len() as f64
            );
            group.bench_function(BenchmarkId::new(name, count), |b| b.iter(|| black_box(handle.render_as(format))));
        }
        let text = handle.render_as(Format::Text);
        group.bench_function(BenchmarkId::new("gzip-text", count), |b| b.iter(|| black_box(gzip(&text))));
    }
    multiprocess(&mut group);
    group.finish();
}

/// Four members of 1,000 methods each; the first serves `/metrics`, the others stand by.
fn multiprocess(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    const MEMBERS: usize = 4;
    const METHODS: usize = 1_000;
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let _entered = runtime.enter();
    let dir = std::env::temp_dir().join(format!("tonic-metrics-bench-mp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let addr = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
    let interval = Duration::from_millis(200);
    let servers: Vec<_> = (0..MEMBERS)
        .map(|_| {
            let config = MultiProcess::new(&dir).with_group("bench").with_publish_interval(interval);
            let (recorder, server) = PrometheusExporter::new()
                .with_listen_addr(addr)
                .with_multiprocess(config)
                .build()
                .expect("a member of the group");
            one_call_per_method(recorder, METHODS);
            server
        })
        .collect();
    // Every member publishes its methods at its next interval.
    std::thread::sleep(interval * 5);
    let scrape = || runtime.block_on(tonic_metrics_testing::exposition::scrape(addr)).expect("a scrape");
    let text = scrape();
    let handled: f64 = text
        .lines()
        .filter(|line| line.starts_with("grpc_server_handled_total{") && line.contains("grpc_code=\"OK\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(handled, (MEMBERS * METHODS) as f64, "the sum over the members, before measuring it");
    eprintln!("multi-process scrape of {MEMBERS} x {METHODS} methods: {} bytes", text.len());
    group.throughput(Throughput::Elements((MEMBERS * METHODS) as u64));
    group.bench_function(BenchmarkId::new("multiprocess-text", format!("{MEMBERS}x{METHODS}")), |b| {
        b.iter(|| black_box(scrape()))
    });
    for server in servers {
        runtime.block_on(server.shutdown());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// gzip as the exporter does it (the fastest level).
fn gzip(body: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(body).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    scrape(&mut c);
    c.final_summary();
}
