//! Hostile and malformed input from a raw HTTP/2 client (the `h2` crate) against a real
//! tonic server with `ServerMetricsLayer`, over loopback: floods of distinct paths, odd
//! paths, broken request bodies, wrong headers, and an inner service that answers with
//! invalid statuses. Each case must not panic, must be counted exactly once under a label
//! from the bounded set (when it reaches the service at all), and must leave well-formed
//! traffic arriving at the same time unaffected.
//!
//! The memory check counts live heap bytes with a counting global allocator. Every test
//! takes the `SERIAL` lock (the memory test exclusively), so nothing else allocates while
//! it measures.

mod common;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    collections::BTreeSet,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use common::*;
use h2::{Reason, client::SendRequest};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use tokio::{
    net::TcpListener,
    sync::{RwLock, oneshot},
    task::JoinHandle,
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{server::NamedService, transport::Server};
use tonic_metrics::{DEFAULT_MAX_METHODS, MetricsServer, PrometheusExporter, ServerMetricsLayer, names::*};
use tonic_metrics_testing::{EchoServer, EchoService, exposition};

// ---------------------------------------------------------------------------------------
// Live heap bytes
// ---------------------------------------------------------------------------------------

struct CountingAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Panics anywhere in the process (a server task, the layer, a client), counted by a hook
/// that every test installs: hyper would swallow a panic in a stream task otherwise. (A
/// failed assertion is a panic too, so one failing test makes the others report it.)
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

fn assert_no_panics() {
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "something panicked (see the output above)");
}

/// Tests share the process' heap: the memory test runs alone.
static SERIAL: RwLock<()> = RwLock::const_new(());

// ---------------------------------------------------------------------------------------
// Server and raw client
// ---------------------------------------------------------------------------------------

/// A tonic server with `layer` in front of the echo service and the misbehaving one.
struct RawServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RawServer {
    async fn start(layer: ServerMetricsLayer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(
            Server::builder()
                .layer(layer)
                .add_service(EchoServer::new(EchoService))
                .add_service(Misbehaving)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = signal.await;
                }),
        );
        Self { addr, shutdown: Some(shutdown), task }
    }

    async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

/// One raw HTTP/2 connection.
async fn connect(addr: SocketAddr) -> SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// What the raw client saw of one request.
#[derive(Debug, Default)]
struct Seen {
    status: Option<StatusCode>,
    header_status: Option<HeaderValue>,
    trailer_status: Option<HeaderValue>,
    /// An HTTP/2 error instead of (part of) a response.
    error: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum BodyEnd {
    /// END_STREAM after the body.
    Eos,
    /// RST_STREAM(CANCEL) after the body: a request body that errors mid-stream.
    Reset,
}

/// A gRPC-shaped POST to `path` (raw bytes, as little validated as `http` allows).
fn grpc_request(path: &str) -> Request<()> {
    Request::builder()
        .method(Method::POST)
        .uri(format!("http://127.0.0.1{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// Sends `request` with `body` (none: END_STREAM on the headers) and reads the answer.
async fn send(client: &SendRequest<Bytes>, request: Request<()>, body: Option<Bytes>, end: BodyEnd) -> Seen {
    let mut seen = Seen::default();
    let result: Result<(), h2::Error> = async {
        let mut client = client.clone().ready().await?;
        let (response, mut stream) = client.send_request(request, body.is_none() && end == BodyEnd::Eos)?;
        if let Some(body) = body {
            stream.send_data(body, end == BodyEnd::Eos)?;
        }
        if end == BodyEnd::Reset {
            // Give the data a moment to reach the server before the reset.
            tokio::time::sleep(Duration::from_millis(20)).await;
            stream.send_reset(Reason::CANCEL);
            return Ok(());
        }
        let response = response.await?;
        seen.status = Some(response.status());
        seen.header_status = response.headers().get("grpc-status").cloned();
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        seen.trailer_status = body.trailers().await?.and_then(|t| t.get("grpc-status").cloned());
        Ok(())
    }
    .await;
    if let Err(error) = result {
        seen.error = Some(error.to_string());
    }
    seen
}

/// One gRPC message frame.
fn frame(compressed: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::from(compressed)];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An encoded `EchoRequest { message }`.
fn echo_request(message: &str) -> Vec<u8> {
    prost::Message::encode_to_vec(&tonic_metrics_testing::EchoRequest { message: message.into() })
}

/// Well-formed unary calls through a real tonic client, in the background, until stopped:
/// the service must keep answering them while the hostile traffic runs.
struct Bystander {
    stop: Arc<AtomicBool>,
    task: JoinHandle<u64>,
}

impl Bystander {
    async fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let mut client = tonic_metrics_testing::EchoClient::new(channel);
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut calls = 0;
            while !flag.load(Ordering::Relaxed) || calls == 0 {
                let reply = client.unary_echo(req("bystander")).await.expect("well-formed traffic must succeed");
                assert_eq!(reply.into_inner().message, "bystander");
                calls += 1;
            }
            calls
        });
        Self { stop, task }
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("the bystander hung").unwrap()
    }
}

// ---------------------------------------------------------------------------------------
// Floods of distinct paths: bounded series, flat memory
// ---------------------------------------------------------------------------------------

/// Distinct random paths per flood test. A debug build on 2 cores answers about 5,500 a
/// second (4 connections, 64 streams in flight on each), so 100,000 take 18 s there: the
/// default keeps the two floods near 10 s together, and `HOSTILE_FLOOD=100000` runs the
/// full count (1.3 s in a release build).
fn flood_size(default: usize) -> usize {
    std::env::var("HOSTILE_FLOOD").ok().and_then(|n| n.parse().ok()).unwrap_or(default)
}

/// Sends `count` requests to distinct random paths (`seed` keeps batches disjoint); every
/// answer must be a 200 with a gRPC status. Returns how many answers said Unimplemented.
async fn flood(clients: &[SendRequest<Bytes>], seed: u64, count: usize) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let unimplemented = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for client in clients {
        for _ in 0..64 {
            let (client, next, unimplemented) = (client.clone(), next.clone(), unimplemented.clone());
            workers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return;
                    }
                    let mut x = seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    x ^= x >> 31;
                    let path = format!("/scan{:x}.S{i}/M{x:016x}", x % 4099);
                    let seen = send(&client, grpc_request(&path), None, BodyEnd::Eos).await;
                    assert_eq!(seen.status, Some(StatusCode::OK), "{path}: {seen:?}");
                    if seen.header_status.as_ref().is_some_and(|v| v == "12") {
                        unimplemented.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for worker in workers {
        worker.await.unwrap();
    }
    unimplemented.load(Ordering::Relaxed)
}

/// Distinct label sets of `grpc_server_started_total` in an exposition.
fn started_series(text: &str) -> Vec<exposition::Sample> {
    exposition::parse(text).unwrap().into_iter().filter(|s| s.name == SERVER_STARTED).collect()
}

/// Runs the flood in two halves over the same connections and returns the growth of live
/// heap bytes over the second half, once the first has warmed every cache and pool.
///
/// The exporter buffers histogram observations (about 16 bytes each) until its upkeep (every
/// 5 s) or a scrape drains them, so each measurement follows a render.
async fn two_floods(addr: SocketAddr, total: usize, metrics: &MetricsServer) -> (usize, i64) {
    let clients = vec![connect(addr).await, connect(addr).await, connect(addr).await, connect(addr).await];
    let started = std::time::Instant::now();
    let first = flood(&clients, 1, total / 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(metrics.render());
    let before = LIVE_BYTES.load(Ordering::Relaxed) as i64;
    let second = flood(&clients, 2, total - total / 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(metrics.render());
    let after = LIVE_BYTES.load(Ordering::Relaxed) as i64;
    eprintln!(
        "{total} distinct paths in {:.1} s; live heap {before} -> {after} bytes ({:+} over the second {})",
        started.elapsed().as_secs_f64(),
        after - before,
        total - total / 2
    );
    (first + second, after - before)
}

/// Growth allowed over the second half of a flood: 256 KiB whatever the count (buffers
/// that settle at a high-water mark), plus 64 bytes a request for histogram observations
/// whose blocks the exporter frees lazily (epoch-based, so when depends on scheduling)
/// after a render drained them (seen: up to 17 bytes a request), while keeping any
/// per-path state (a path string, a map entry and a handle: 100 bytes or more) fails the
/// test.
fn max_growth(requests: usize) -> i64 {
    256 * 1024 + requests as i64 * 64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_paths_keeps_one_unknown_series_and_flat_memory() {
    let _alone = SERIAL.write().await;
    count_panics();
    let (recorder, metrics) =
        PrometheusExporter::new().with_listen_addr("127.0.0.1:0".parse().unwrap()).build().unwrap();
    let server =
        RawServer::start(ServerMetricsLayer::new().with_registry(echo_registry()).with_recorder(recorder)).await;
    let total = flood_size(40_000);
    let (unimplemented, growth) = two_floods(server.addr, total, &metrics).await;
    assert_eq!(unimplemented, total, "every unknown path is answered Unimplemented");
    assert!(growth < max_growth(total / 2), "live heap grew by {growth} bytes over {} new paths", total / 2);

    let text = exposition::scrape(metrics.local_addr()).await.unwrap();
    let started = started_series(&text);
    // The 4 registered methods (at zero) and one `unknown` pair holding the flood.
    assert_eq!(started.len(), 5, "{started:#?}");
    let unknown: Vec<_> = started.iter().filter(|s| s.labels["grpc_service"] == UNKNOWN).collect();
    assert_eq!(unknown.len(), 1, "{unknown:#?}");
    assert_eq!(unknown[0].labels["grpc_method"], UNKNOWN);
    assert_eq!(unknown[0].value, total as f64);
    let handled = exposition::sum(&exposition::parse(&text).unwrap(), SERVER_HANDLED, &[("grpc_method", UNKNOWN)]);
    assert_eq!(handled, total as f64, "each counted exactly once");
    assert_no_panics();
    server.stop().await;
    metrics.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_registry_a_flood_stops_at_the_cap_with_flat_memory() {
    let _alone = SERIAL.write().await;
    count_panics();
    let (recorder, metrics) =
        PrometheusExporter::new().with_listen_addr("127.0.0.1:0".parse().unwrap()).build().unwrap();
    let server = RawServer::start(ServerMetricsLayer::new().with_recorder(recorder)).await;
    // The first half fills the cap (and more), the second must add nothing.
    let total = flood_size(20_000);
    let (unimplemented, growth) = two_floods(server.addr, total, &metrics).await;
    assert_eq!(unimplemented, total);
    assert!(growth < max_growth(total / 2), "live heap grew by {growth} bytes over {} new paths", total / 2);

    let text = metrics.render();
    let started = started_series(&text);
    // The first DEFAULT_MAX_METHODS paths get their own series, the rest share `unknown`.
    assert_eq!(started.len(), DEFAULT_MAX_METHODS + 1);
    let sum: f64 = started.iter().map(|s| s.value).sum();
    assert_eq!(sum, total as f64);
    let unknown = started.iter().find(|s| s.labels["grpc_service"] == UNKNOWN).unwrap();
    assert_eq!(unknown.value, (total - DEFAULT_MAX_METHODS) as f64);
    assert_no_panics();
    server.stop().await;
    metrics.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Odd paths, bodies and headers, one request at a time
// ---------------------------------------------------------------------------------------

/// Counter deltas per label set, so each hostile request can be checked on its own.
struct Deltas {
    metrics: Recorded,
    started: u64,
    handled: u64,
}

impl Deltas {
    fn new(metrics: &Recorded) -> Self {
        let mut deltas = Self { metrics: metrics.clone(), started: 0, handled: 0 };
        deltas.mark();
        deltas
    }

    /// Started and handled RPCs outside the bystander's `UnaryEcho`.
    fn totals(&self) -> (u64, u64) {
        let not_bystander = |(labels, value): (Labels, u64)| (labels["grpc_method"] != "UnaryEcho").then_some(value);
        let started = self.metrics.series(SERVER_STARTED).into_iter().filter_map(not_bystander).sum();
        let handled = self.metrics.series(SERVER_HANDLED).into_iter().filter_map(not_bystander).sum();
        (started, handled)
    }

    fn mark(&mut self) {
        (self.started, self.handled) = self.totals();
    }

    /// Waits until the last request is counted as handled (`expected` times: 1, or 0 when
    /// the HTTP/2 layer refused it before any service saw it). A count that arrives late
    /// shows up in the next case's `expect`, which then fails.
    async fn expect(&mut self, what: &str, expected: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (started, handled) = self.totals();
            if started - self.started == expected && handled - self.handled == expected {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: started +{}, handled +{}, expected +{expected}",
                started - self.started,
                handled - self.handled
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.mark();
    }
}

/// Every label value the server recorded is from the bounded set: the echo methods, the
/// misbehaving service, `unknown`, and only label-safe `/service/method` names.
fn assert_labels_bounded(metrics: &Recorded, allowed_extra: &[&str]) {
    let mut services = BTreeSet::new();
    for name in [SERVER_STARTED, SERVER_HANDLED, SERVER_MSG_RECEIVED, SERVER_MSG_SENT] {
        for (labels, _) in metrics.series(name) {
            services.insert((labels["grpc_service"].clone(), labels["grpc_method"].clone()));
            if let Some(code) = labels.get("grpc_code") {
                assert!(tonic_metrics::GrpcCode::from_name(code).is_some(), "{labels:?}");
            }
        }
    }
    for (service, method) in &services {
        let known =
            [ECHO, MISBEHAVING, UNKNOWN].contains(&service.as_str()) || allowed_extra.contains(&service.as_str());
        assert!(known, "unexpected series {service}/{method}: {services:?}");
        for name in [service, method] {
            assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.'), "{name:?}");
        }
    }
}

/// The set-up every one-request-at-a-time case shares: a server behind `layer` (recording
/// into `metrics`), a raw HTTP/2 client, and a well-formed bystander calling alongside.
struct Hostile {
    _shared: tokio::sync::RwLockReadGuard<'static, ()>,
    metrics: Recorded,
    server: RawServer,
    client: SendRequest<Bytes>,
    bystander: Bystander,
}

impl Hostile {
    async fn start(layer: ServerMetricsLayer) -> Self {
        let _shared = SERIAL.read().await;
        count_panics();
        let (recorder, metrics) = Recorded::new();
        let server = RawServer::start(layer.with_recorder(recorder)).await;
        let client = connect(server.addr).await;
        let bystander = Bystander::start(server.addr).await;
        Self { _shared, metrics, server, client, bystander }
    }

    /// The bystander's calls all succeeded, nothing panicked; stops the server.
    async fn finish(self) {
        assert!(self.bystander.finish().await > 0);
        assert_no_panics();
        self.server.stop().await;
    }
}

#[tokio::test]
async fn odd_paths_are_counted_once_under_bounded_labels() {
    // No registry, so that nothing but the layer's own checks keeps these out of labels.
    let hostile = Hostile::start(ServerMetricsLayer::new()).await;
    let (metrics, client) = (&hostile.metrics, &hostile.client);
    let mut deltas = Deltas::new(metrics);

    // `http` refuses URIs of 64 KiB and more; 60 KiB is the longest a client can send.
    let long = format!("/{}/M", "s".repeat(60 * 1024));
    let medium = format!("/{}/M", "s".repeat(8 * 1024));
    let paths: Vec<&str> = vec![
        "/",
        "/svc",
        "/svc/",
        "//M",
        "//svc//M",
        "/svc//M",
        "/a/b/c",
        "/a%2Fb/M",
        "/%C3%A9t%C3%A9/M",
        "/svc%00/M",
        "/svc/M%20",
        "/grpc.examples.echo.Echo/UnaryEcho/extra",
        "/sv\"c/M",
        "/s{v}c/M",
        &medium,
        &long,
    ];
    for path in &paths {
        let seen =
            send(client, grpc_request(path), Some(Bytes::from(frame(false, &echo_request("hi")))), BodyEnd::Eos).await;
        let shown =
            if path.len() > 80 { format!("{}... ({} bytes)", &path[..40], path.len()) } else { path.to_string() };
        // A 60 KiB path is over hyper's header list limit (16 KiB): HTTP/2 refuses it before
        // any service runs, so nothing can count it. Everything else reaches the layer.
        let reaches = path.len() < 16 * 1024;
        eprintln!("{shown}: {seen:?}");
        if reaches {
            assert_eq!(seen.status, Some(StatusCode::OK), "{shown}: {seen:?}");
            assert_eq!(seen.header_status.as_ref().map(|v| v.as_bytes()), Some(&b"12"[..]), "{shown}: {seen:?}");
        }
        deltas.expect(&shown, u64::from(reaches)).await;
    }
    // The path is all a layer sees of the empty or absent path too: `http` turns both into `/`.
    let seen = send(client, grpc_request(""), None, BodyEnd::Eos).await;
    assert_eq!(seen.status, Some(StatusCode::OK), "{seen:?}");
    deltas.expect("empty path", 1).await;
    // Bytes outside ASCII cannot be sent: `http` (on both ends) refuses them in a URI.
    assert!(http::uri::PathAndQuery::from_maybe_shared(Bytes::from_static(b"/sv\xffc/M")).is_err());

    // A query string is not part of the path: `/svc/M?x=1` is the method svc/M.
    let seen = send(client, grpc_request("/svc.Q/M?x=1"), None, BodyEnd::Eos).await;
    assert_eq!(seen.status, Some(StatusCode::OK), "{seen:?}");
    deltas.expect("query", 1).await;
    let svc = labels(&[("grpc_type", "unknown"), ("grpc_service", "svc.Q"), ("grpc_method", "M")]);
    assert_eq!(metrics.counter(SERVER_STARTED, &svc), Some(1));

    let unknown = labels(&[("grpc_type", "unknown"), ("grpc_service", UNKNOWN), ("grpc_method", UNKNOWN)]);
    let reached = paths.iter().filter(|p| p.len() < 16 * 1024).count() as u64 + 1;
    assert_eq!(metrics.counter(SERVER_STARTED, &unknown), Some(reached));
    assert_eq!(metrics.counter(SERVER_HANDLED, &with_code(unknown, "Unimplemented")), Some(reached));
    assert_labels_bounded(metrics, &["svc.Q"]);
    hostile.finish().await;
}

#[tokio::test]
async fn broken_request_bodies_are_counted_once() {
    let hostile = Hostile::start(ServerMetricsLayer::new().with_registry(echo_registry())).await;
    let (metrics, client) = (&hostile.metrics, &hostile.client);
    let mut deltas = Deltas::new(metrics);

    let hi = echo_request("hi");
    let whole = frame(false, &hi);
    let mut longer_prefix = frame(false, &hi);
    longer_prefix[4] += 100; // announces 100 more bytes than it carries
    let mut torn = whole.clone();
    torn.extend_from_slice(&whole[..4]);
    let zero_length = [frame(false, b""), frame(false, b""), frame(false, b"")].concat();
    let cases: Vec<(&str, &str, Option<Vec<u8>>, BodyEnd)> = vec![
        ("no body at all", "ServerStreamingEcho", None, BodyEnd::Eos),
        ("length prefix larger than the body", "ServerStreamingEcho", Some(longer_prefix.clone()), BodyEnd::Eos),
        ("4 GiB length prefix", "ServerStreamingEcho", Some(vec![0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]), BodyEnd::Eos),
        (
            "4 GiB length prefix, client stream",
            "ClientStreamingEcho",
            Some(vec![0, 0xff, 0xff, 0xff, 0xff]),
            BodyEnd::Eos,
        ),
        ("torn frame at the end", "ClientStreamingEcho", Some(torn.clone()), BodyEnd::Eos),
        ("torn frame after a unary message", "ServerStreamingEcho", Some(torn), BodyEnd::Eos),
        ("compressed flag without grpc-encoding", "ServerStreamingEcho", Some(frame(true, &hi)), BodyEnd::Eos),
        ("zero-length messages", "ClientStreamingEcho", Some(zero_length.clone()), BodyEnd::Eos),
        ("zero-length unary message", "ServerStreamingEcho", Some(frame(false, b"")), BodyEnd::Eos),
        ("not protobuf", "ServerStreamingEcho", Some(frame(false, &[0xff; 9])), BodyEnd::Eos),
        ("reset mid-stream", "ClientStreamingEcho", Some(whole.clone()), BodyEnd::Reset),
        ("reset mid-frame", "BidirectionalStreamingEcho", Some(longer_prefix), BodyEnd::Reset),
    ];
    for (what, method, body, end) in cases {
        let path = format!("/{ECHO}/{method}");
        let seen = send(client, grpc_request(&path), body.map(Bytes::from), end).await;
        eprintln!("{what}: {seen:?}");
        if end == BodyEnd::Eos {
            assert_eq!(seen.status, Some(StatusCode::OK), "{what}: {seen:?}");
            assert!(seen.header_status.is_some() || seen.trailer_status.is_some(), "{what}: {seen:?}");
        }
        deltas.expect(what, 1).await;
    }
    let recorded: Vec<_> = metrics.series(SERVER_HANDLED).into_iter().filter(|(_, n)| *n > 0).collect();
    eprintln!("recorded: {recorded:?}");
    // Zero-length messages are messages: 3 counted in, a successful answer out.
    let client_stream = method("client_stream", "ClientStreamingEcho");
    assert!(metrics.counter(SERVER_HANDLED, &with_code(client_stream.clone(), "OK")).unwrap() >= 1);
    assert_labels_bounded(metrics, &[]);
    hostile.finish().await;
}

#[tokio::test]
async fn odd_headers_are_counted_once() {
    let hostile = Hostile::start(ServerMetricsLayer::new().with_registry(echo_registry())).await;
    let (metrics, client) = (&hostile.metrics, &hostile.client);
    let mut deltas = Deltas::new(metrics);
    let body = Bytes::from(frame(false, &echo_request("hi")));
    let path = format!("/{ECHO}/ServerStreamingEcho");

    type Change = fn(&mut HeaderMap);
    let variants: Vec<(&str, Change)> = vec![
        ("wrong content-type", |h| {
            h.insert("content-type", HeaderValue::from_static("text/plain"));
        }),
        ("missing content-type", |h| {
            h.remove("content-type");
        }),
        ("missing te", |h| {
            h.remove("te");
        }),
        ("grpc-timeout garbage", |h| {
            h.insert("grpc-timeout", HeaderValue::from_static("soon"));
        }),
        ("grpc-encoding unknown", |h| {
            h.insert("grpc-encoding", HeaderValue::from_static("snappy"));
        }),
    ];
    for (what, change) in variants {
        let mut request = grpc_request(&path);
        change(request.headers_mut());
        let seen = send(client, request, Some(body.clone()), BodyEnd::Eos).await;
        eprintln!("{what}: {seen:?}");
        assert!(seen.error.is_none(), "{what}: {seen:?}");
        deltas.expect(what, 1).await;
    }
    // A GET is still a request on a gRPC path: counted like any other.
    let mut get = grpc_request(&path);
    *get.method_mut() = Method::GET;
    let seen = send(client, get, None, BodyEnd::Eos).await;
    eprintln!("GET: {seen:?}");
    deltas.expect("GET", 1).await;
    assert_labels_bounded(metrics, &[]);
    hostile.finish().await;
}

// ---------------------------------------------------------------------------------------
// An inner service that answers badly
// ---------------------------------------------------------------------------------------

const MISBEHAVING: &str = "hostile.Misbehaving";

/// Answers `/hostile.Misbehaving/<Case>` with a response no gRPC server should send.
#[derive(Clone)]
struct Misbehaving;

impl NamedService for Misbehaving {
    const NAME: &'static str = MISBEHAVING;
}

/// (method, HTTP status, `grpc-status` in the headers, `grpc-status` in the trailers, code
/// the layer must record).
#[allow(clippy::type_complexity)]
const ANSWERS: &[(&str, u16, Option<&[u8]>, Option<&[u8]>, &str)] = &[
    ("HeaderAbc", 200, Some(b"abc"), None, "Unknown"),
    ("HeaderMinusOne", 200, Some(b"-1"), None, "Unknown"),
    ("Header99", 200, Some(b"99"), None, "Unknown"),
    ("HeaderEmpty", 200, Some(b""), None, "Unknown"),
    ("HeaderNonAscii", 200, Some(b"\xc3\xa9"), None, "Unknown"),
    ("TrailerAbc", 200, None, Some(b"abc"), "Unknown"),
    ("TrailerNonAscii", 200, None, Some(b"\xff"), "Unknown"),
    ("TrailerPadded", 200, None, Some(b" 0"), "Unknown"),
    ("TrailerMissing", 200, None, None, "Unknown"),
    ("TrailerOk", 200, None, Some(b"0"), "OK"),
    ("Http400", 400, None, None, "Internal"),
    ("Http404", 404, None, None, "Unimplemented"),
    ("Http500", 500, None, None, "Unknown"),
    ("Http503", 503, None, None, "Unavailable"),
    ("Http302WithStatus", 302, Some(b"0"), None, "Unknown"),
];

impl tower::Service<Request<tonic::body::Body>> for Misbehaving {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        let method = request.uri().path().rsplit('/').next().unwrap_or_default().to_string();
        let (_, status, header, trailer, _) =
            ANSWERS.iter().find(|answer| answer.0 == method).copied().unwrap_or(("", 404, None, None, ""));
        let body = match header {
            // Trailers-only: the status (if any) is in the head, the body is empty.
            Some(_) => tonic::body::Body::empty(),
            None => {
                let mut trailers = HeaderMap::new();
                if let Some(value) = trailer {
                    trailers.insert("grpc-status", HeaderValue::from_bytes(value).unwrap());
                }
                let frames = vec![
                    Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(frame(false, b"")))),
                    Ok(http_body::Frame::trailers(trailers)),
                ];
                tonic::body::Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(frames)))
            }
        };
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        response.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc"));
        if let Some(value) = header {
            response.headers_mut().insert("grpc-status", HeaderValue::from_bytes(value).unwrap());
        }
        std::future::ready(Ok(response))
    }
}

#[tokio::test]
async fn invalid_statuses_from_the_inner_service_are_bounded_codes() {
    let hostile = Hostile::start(ServerMetricsLayer::new()).await;
    let (metrics, client) = (&hostile.metrics, &hostile.client);
    let mut deltas = Deltas::new(metrics);
    let body = Bytes::from(frame(false, b""));
    for (method, status, ..) in ANSWERS {
        let seen =
            send(client, grpc_request(&format!("/{MISBEHAVING}/{method}")), Some(body.clone()), BodyEnd::Eos).await;
        assert_eq!(seen.status.map(|s| s.as_u16()), Some(*status), "{method}: {seen:?}");
        deltas.expect(method, 1).await;
    }
    for (method, _, _, _, code) in ANSWERS {
        let labels = labels(&[("grpc_type", "unknown"), ("grpc_service", MISBEHAVING), ("grpc_method", method)]);
        assert_eq!(metrics.counter(SERVER_HANDLED, &with_code(labels.clone(), code)), Some(1), "{method}");
        let all: u64 = metrics
            .series(SERVER_HANDLED)
            .into_iter()
            .filter(|(l, _)| l["grpc_method"] == *method)
            .map(|(_, v)| v)
            .sum();
        assert_eq!(all, 1, "{method} counted once");
    }
    assert_labels_bounded(metrics, &[]);
    hostile.finish().await;
}
