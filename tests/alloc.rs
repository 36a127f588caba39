//! Heap allocations per warm RPC and per streamed message in the layer's own code: zero.
//!
//! A counting global allocator (per thread, so other tests cannot interfere) measures the
//! same in-process call through a bare gRPC-shaped service and through the layer; the
//! difference is what the layer allocates. The same allocator measures the memory each
//! registered method costs. This binary also checks that a layer built before the global
//! recorder is installed still records into it.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tonic_metrics::{ClientMetricsLayer, GrpcType, MethodRegistry, Naming, ServerMetricsLayer};
use tonic_metrics_testing::inproc::{FRAME, GrpcBody, GrpcEcho};
use tower::{Layer, Service, ServiceExt};

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    /// Bytes allocated and not yet freed by this thread (frees of other threads'
    /// allocations make it drift, which the tests here avoid).
    static LIVE_BYTES: Cell<i64> = const { Cell::new(0) };
}

fn add_live_bytes(delta: i64) {
    let _ = LIVE_BYTES.try_with(|n| n.set(n.get() + delta));
}

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        add_live_bytes(layout.size() as i64);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add_live_bytes(-(layout.size() as i64));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        add_live_bytes(new_size as i64 - layout.size() as i64);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn live_bytes() -> i64 {
    LIVE_BYTES.with(Cell::get)
}

const PATH: &str = "/grpc.examples.echo.Echo/UnaryEcho";
/// Allocations of one full call (request built, response drained) through `service`.
fn one_call<S, B>(service: &mut S) -> u64
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body + Unpin,
    B::Error: std::fmt::Debug,
{
    let before = allocations();
    futures_executor::block_on(async {
        let request = Request::builder().uri(PATH).body(Full::new(Bytes::from_static(FRAME))).unwrap();
        let response = service.ready().await.unwrap().call(request).await.unwrap();
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
    });
    allocations() - before
}

fn per_call<S, B>(service: &mut S) -> u64
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body + Unpin,
    B::Error: std::fmt::Debug,
{
    for _ in 0..10 {
        one_call(service); // warm-up: first-use handle resolution allocates, once
    }
    // The median, because the recorder itself (not the layer) allocates now and then:
    // its histogram storage grows in blocks.
    let mut counts: Vec<u64> = (0..101).map(|_| one_call(service)).collect();
    counts.sort_unstable();
    counts[50]
}

#[test]
fn warm_unary_call_allocates_nothing_in_the_layer_and_records_into_a_late_global_recorder() {
    let registry = MethodRegistry::new().with_method("grpc.examples.echo.Echo", "UnaryEcho", GrpcType::Unary);
    // Built before any recorder is installed...
    let layer = ServerMetricsLayer::new().with_registry(registry);
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    // ... and layered (as tonic does at `serve`) after.
    let mut layered = layer.layer(GrpcEcho::UNARY);
    let mut bare = GrpcEcho::UNARY;

    let bare_allocations = per_call(&mut bare);
    let layered_allocations = per_call(&mut layered);
    println!("allocations per unary call: bare {bare_allocations}, with the layer {layered_allocations}");
    assert_eq!(layered_allocations, bare_allocations, "the layer allocated on a warm unary call");

    // The client side: a `Channel` only takes `tonic::body::Body`, so the counting request
    // body is boxed into one: exactly one allocation per call, and nothing else.
    let mut client = ClientMetricsLayer::new().layer(GrpcEcho::UNARY);
    let client_allocations = per_call(&mut client);
    println!("allocations per unary call through the client layer: {client_allocations}");
    assert_eq!(client_allocations, bare_allocations + 1, "the client layer allocated more than the request-body box");

    let snapshot = snapshotter.snapshot().into_vec();
    let value = |name: &str, code: Option<&str>| {
        snapshot.iter().find_map(|(key, _, _, value)| {
            let key = key.key();
            let server_side = key.name().starts_with("grpc_server");
            let code_matches =
                key.labels().find(|l| l.key() == "grpc_code").map(|l| l.value().to_string()).as_deref() == code;
            (server_side && key.name() == name && code_matches).then_some(match value {
                DebugValue::Counter(n) => *n,
                DebugValue::Histogram(values) => values.len() as u64,
                DebugValue::Gauge(_) => 0,
            })
        })
    };
    assert_eq!(value("grpc_server_started_total", None), Some(111));
    assert_eq!(value("grpc_server_handled_total", Some("OK")), Some(111));
    assert_eq!(value("grpc_server_msg_received_total", None), Some(111));
    assert_eq!(value("grpc_server_msg_sent_total", None), Some(111));
    assert_eq!(value("grpc_server_handling_seconds", None), Some(111));
}

/// Allocations of one call (warm; the median of several) with `request_frames` request
/// messages through `service`.
fn streaming_call<S, B>(service: &mut S, request_frames: usize) -> u64
where
    S: Service<Request<GrpcBody>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut once = || {
        let before = allocations();
        futures_executor::block_on(async {
            let request = Request::builder().uri(PATH).body(GrpcBody::request(request_frames)).unwrap();
            let response = service.ready().await.unwrap().call(request).await.unwrap();
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                frame.unwrap();
            }
        });
        allocations() - before
    };
    for _ in 0..3 {
        once();
    }
    let mut counts: Vec<u64> = (0..11).map(|_| once()).collect();
    counts.sort_unstable();
    counts[5]
}

/// A recorder that allocates nothing when it records: all its counters add to one atomic,
/// all its histograms count their observations and sum them into two (the debugging
/// recorder's histograms grow in blocks, which would hide the layer's own allocations
/// behind the recorder's once there is one observation per message).
#[derive(Debug, Clone, Default)]
struct Tally {
    counter: Arc<AtomicU64>,
    histogram: Arc<Observations>,
}

#[derive(Debug, Default)]
struct Observations {
    count: AtomicU64,
    sum: AtomicU64,
}

impl metrics::HistogramFn for Observations {
    fn record(&self, value: f64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value as u64, Ordering::Relaxed);
    }
}

impl metrics::Recorder for Tally {
    fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_histogram(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(self.counter.clone())
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
        metrics::Histogram::from_arc(self.histogram.clone())
    }
}

/// Streams of 1,000 messages each way through `layered` (a layer over the in-process
/// echo) cost no more allocations than through the bare echo, whatever the call itself
/// costs (`per_call`: the allocations the layer adds per call).
fn assert_nothing_allocated_per_message<S, B>(what: &str, per_call: u64, layered: impl Fn(GrpcEcho) -> S)
where
    S: Service<Request<GrpcBody>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body + Unpin,
    B::Error: std::fmt::Debug,
{
    const MANY: usize = 1_000;
    for (response_frames, request_frames, direction) in [(MANY, 1, "response"), (1, MANY, "request")] {
        let one = GrpcEcho::UNARY;
        let many = GrpcEcho { response_frames };
        let bare_one = streaming_call(&mut one.clone(), 1);
        let bare_many = streaming_call(&mut many.clone(), request_frames);
        let layered_one = streaming_call(&mut layered(one), 1);
        let layered_many = streaming_call(&mut layered(many), request_frames);
        println!(
            "{what}: allocations per call with {MANY} {direction} messages: bare {bare_one} -> {bare_many}, \
             with the layer {layered_one} -> {layered_many}"
        );
        // Whatever the inner service and body allocate per message (here: nothing, but
        // the trailers' map once per call) is the same with the layer; the layer adds none.
        assert_eq!(
            layered_many - layered_one,
            bare_many - bare_one,
            "{what}: the layer allocated per streamed {direction} message"
        );
        assert_eq!(layered_one, bare_one + per_call, "{what}: the layer allocated more per streaming call");
    }
}

fn bidi_registry() -> MethodRegistry {
    MethodRegistry::new().with_method("grpc.examples.echo.Echo", "UnaryEcho", GrpcType::BidiStream)
}

#[test]
fn streamed_messages_allocate_nothing_in_the_layer() {
    // An explicit recorder: the global one belongs to the other test of this binary. The
    // method is registered as bidi, so the time to first message is observed too.
    assert_nothing_allocated_per_message("server", 0, |echo| {
        ServerMetricsLayer::new().with_registry(bidi_registry()).with_recorder(DebuggingRecorder::new()).layer(echo)
    });
    // The client boxes its request body into `tonic::body::Body`: one allocation per call.
    assert_nothing_allocated_per_message("client", 1, |echo| {
        ClientMetricsLayer::new().with_registry(bidi_registry()).with_recorder(DebuggingRecorder::new()).layer(echo)
    });
}

/// With message sizes on, one histogram observation per message and still no allocation;
/// the observations are real: one per message, summing to the messages' lengths.
#[test]
fn message_sizes_allocate_nothing_per_message() {
    let tally = Tally::default();
    assert_nothing_allocated_per_message("server with sizes", 0, |echo| {
        ServerMetricsLayer::new()
            .with_registry(bidi_registry())
            .with_message_sizes()
            .with_recorder(tally.clone())
            .layer(echo)
    });
    let observations = tally.histogram.count.load(Ordering::Relaxed);
    let bytes = tally.histogram.sum.load(Ordering::Relaxed);
    // Per call (14 per variant): one latency, one time to first message, and a size per message.
    let calls: u64 = 2 * 2 * 14;
    let messages: u64 = 14 * 2 * (2 + 1_001);
    assert_eq!(observations, 2 * calls + messages, "latency, first message and sizes");
    assert_eq!(bytes, 5 * messages, "every in-process message is 5 bytes (`hello`)");

    assert_nothing_allocated_per_message("client with sizes", 1, |echo| {
        ClientMetricsLayer::new()
            .with_registry(bidi_registry())
            .with_message_sizes()
            .with_recorder(Tally::default())
            .layer(echo)
    });
}

/// Under gRPC naming each call shares its request byte count between the request body and
/// the call: one small allocation per call (an `Arc<AtomicU64>`), none per message.
#[test]
fn grpc_naming_allocates_one_counter_per_call_and_nothing_per_message() {
    let server = || ServerMetricsLayer::new().with_naming(Naming::Grpc).with_registry(bidi_registry());
    let client = || ClientMetricsLayer::new().with_naming(Naming::Grpc).with_registry(bidi_registry());
    assert_nothing_allocated_per_message("server, gRPC naming", 1, |echo| {
        server().with_recorder(Tally::default()).layer(echo)
    });
    assert_nothing_allocated_per_message("client, gRPC naming", 2, |echo| {
        client().with_recorder(Tally::default()).layer(echo)
    });

    let mut bare_echo = GrpcEcho::UNARY;
    let bare = per_call(&mut bare_echo);
    let tally = Tally::default();
    let server_allocations = per_call(&mut server().with_recorder(tally.clone()).layer(GrpcEcho::UNARY));
    let client_allocations = per_call(&mut client().with_recorder(Tally::default()).layer(GrpcEcho::UNARY));
    println!(
        "allocations per unary call, gRPC naming: bare {bare}, server {server_allocations}, client {client_allocations}"
    );
    assert_eq!(server_allocations, bare + 1, "server: the request byte counter only");
    assert_eq!(client_allocations, bare + 2, "client: the request-body box and the byte counter only");
    // 111 calls: a duration (under a second: 0 once truncated) and two byte totals each,
    // 5 bytes of request and 5 of response.
    assert_eq!(tally.histogram.count.load(Ordering::Relaxed), 3 * 111);
    assert_eq!(tally.histogram.sum.load(Ordering::Relaxed), 10 * 111);
}

/// `count` registered methods, 100 per service, with realistic name lengths.
fn registry_of(count: usize) -> MethodRegistry {
    (0..count).fold(MethodRegistry::new(), |registry, i| {
        registry.with_method(
            &format!("example.api.v1.Service{}", i / 100),
            &format!("GetThing{}", i % 100),
            GrpcType::Unary,
        )
    })
}

/// Bytes still allocated after layering a service with a registry of `count` methods
/// (built beforehand: the registry is the caller's) and the recorder `make` builds
/// (built beforehand too: only what registration adds to it counts).
fn retained_bytes<R: metrics::Recorder + Send + Sync + 'static>(
    count: usize,
    make: impl Fn() -> R,
) -> (i64, impl Sized) {
    let registry = registry_of(count);
    let recorder = make();
    let before = live_bytes();
    // Layering creates the table and every method's zero-valued series.
    let service = ServerMetricsLayer::new().with_registry(registry).with_recorder(recorder).layer(GrpcEcho::UNARY);
    (live_bytes() - before, service)
}

/// Memory per registered method, from the difference between 1,100 and 100 methods (so
/// that fixed costs cancel out): the layer's own (method table, labels, handles; with a
/// no-op recorder), and with the series this crate's exporter keeps for each method (the
/// three counters, `handled` at zero for all 17 codes, and the histogram); and the size of
/// `/metrics` at 1,000 methods.
#[test]
fn memory_per_registered_method_is_bounded() {
    const SMALL: usize = 100;
    const LARGE: usize = 1_100;
    let per_method = |make: &dyn Fn(usize) -> i64| (make(LARGE) - make(SMALL)) / (LARGE - SMALL) as i64;

    let layer_only = per_method(&|n| retained_bytes(n, || metrics::NoopRecorder).0);
    println!("bytes per registered method, layer only (no-op recorder): {layer_only}");
    assert!(layer_only > 0 && layer_only < 2_048, "{layer_only} bytes per method in the layer");

    #[cfg(feature = "exporter")]
    {
        let exporter = || tonic_metrics::PrometheusExporter::new().build_recorder().unwrap();
        let with_series = per_method(&|n| retained_bytes(n, exporter).0);
        println!("bytes per registered method, layer and the exporter's series (17 handled codes): {with_series}");
        assert!(with_series < 12_288, "{with_series} bytes per method with the exporter's series");

        // `/metrics` at 1,000 methods, every series at zero as a registry creates them.
        let recorder = exporter();
        let handle = recorder.handle();
        let _service =
            ServerMetricsLayer::new().with_registry(registry_of(1_000)).with_recorder(recorder).layer(GrpcEcho::UNARY);
        let text = handle.render();
        let lines = text.lines().filter(|line| !line.starts_with('#') && !line.is_empty()).count();
        let mut gzipped = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gzipped, text.as_bytes()).unwrap();
        let gzipped = gzipped.finish().unwrap().len();
        println!("/metrics at 1,000 methods: {} bytes, {lines} series, {gzipped} bytes gzipped", text.len());
        // 3 counters + 17 handled + 11 buckets, +Inf, _sum and _count per method.
        assert_eq!(lines, 1_000 * (3 + 17 + 14));
        assert!(text.len() < 6_000_000 && gzipped * 10 < text.len(), "{} bytes, {gzipped} gzipped", text.len());
    }
}

/// Exemplars cost no allocation per call: none when the request carries no trace context
/// (nothing is read but one header lookup), and none when it does (the trace id is kept
/// inline, the bucket's slot was allocated with the first exemplar).
#[cfg(feature = "exporter")]
#[test]
fn exemplars_allocate_nothing_per_call_with_or_without_trace_context() {
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let recorder = tonic_metrics::PrometheusExporter::new().build_recorder().unwrap();
    let handle = recorder.handle();
    let registry = MethodRegistry::new().with_method("grpc.examples.echo.Echo", "UnaryEcho", GrpcType::Unary);
    let layer = ServerMetricsLayer::new().with_registry(registry).with_recorder(recorder).with_exemplars();

    let mut bare_echo = GrpcEcho::UNARY;
    let bare = per_call(&mut bare_echo);
    let untraced = per_call(&mut layer.layer(GrpcEcho::UNARY));
    println!("allocations per unary call, exemplars on, no trace context: bare {bare}, with the layer {untraced}");
    assert_eq!(untraced, bare, "the layer allocated on a call without trace context");

    // The same calls with a `traceparent` (inserting it allocates the same on both sides).
    fn traced<S>(inner: S) -> impl Service<Request<Full<Bytes>>, Response = S::Response, Error = S::Error>
    where
        S: Service<Request<Full<Bytes>>>,
    {
        tower::ServiceBuilder::new()
            .map_request(|mut request: Request<Full<Bytes>>| {
                request.headers_mut().insert("traceparent", http::HeaderValue::from_static(TRACEPARENT));
                request
            })
            .service(inner)
    }
    let bare = per_call(&mut traced(GrpcEcho::UNARY));
    let with_context = per_call(&mut traced(layer.layer(GrpcEcho::UNARY)));
    println!(
        "allocations per unary call, exemplars on, with trace context: bare {bare}, with the layer {with_context}"
    );
    assert_eq!(with_context, bare, "the layer allocated on a call with trace context");
    let exposition = String::from_utf8(handle.render_as(tonic_metrics::exporter::Format::OpenMetrics)).unwrap();
    assert!(exposition.contains("trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\""), "{exposition}");
}
