//! What the metrics layer costs per RPC, in process (no network, no runtime).
//!
//! ```text
//! cargo bench --bench overhead                 # all groups
//! cargo bench --bench overhead -- unary        # one group (criterion's name filter)
//! ```
//!
//! Every call goes through `tower::Service` into a minimal gRPC-shaped inner service: it
//! reads the request body to its end, answers `content-type: application/grpc`, one data
//! frame (or N) and `grpc-status: 0` trailers, and the response body is driven to its end,
//! so the layer's whole path (lookup, started, message counting, trailers, handled,
//! histogram) runs on every iteration. Futures are polled with a no-op waker: everything
//! is ready at once, so no executor cost hides the layer's.
//!
//! Groups:
//! - `unary`: the bare service; our server layer recording into a real Prometheus
//!   recorder (`PrometheusBuilder::build_recorder`, given with `with_recorder`); our layer
//!   with a no-op recorder (what runs when no recorder is installed); a "naive" facade
//!   layer written the way hand-rolled layers usually are (below); the client layer; and
//!   our layer recording into this crate's own exporter recorder
//!   (`PrometheusExporter::build_recorder`, what `install()` installs and the example
//!   server runs), without and with exemplars, for requests without and with a valid W3C
//!   `traceparent` header (`bare_traceparent` is the bare service given that request).
//! - `stream`: 1,000 response frames and 1,000 request frames per call, for the cost per
//!   message: the method registered as unary (message counting only), as bidi (and the
//!   time to first message), with message sizes on, and under `Naming::Grpc`.
//! - `methods`: 1 vs 10,000 registered methods, successive calls spread over all of them.
//! - `contention`: two threads calling the same method through clones of one service.
//!
//! The Prometheus recorder appends histogram samples to a lock-free queue that its
//! upkeep drains (every 5 s in a real exporter, on another thread). The loops here run
//! that upkeep between timed chunks, outside the timing, for our layer and the naive one
//! alike.
//!
//! For instruction counts (repeatable even on a busy machine), the binary also runs a
//! fixed number of calls of one variant without criterion:
//!
//! ```text
//! BENCH_CALLS=layer:10000 valgrind --tool=callgrind --toggle-collect='*call_loop*' \
//!     --callgrind-out-file=/dev/null target/release/deps/overhead-<hash>
//! ```
//!
//! with a variant of calls of one message each way: `bare`, `layer`, `noop`, `naive`,
//! `client-bare`, `client`, `bare-10k`, `layer-10k`, `noop-10k` (calls spread over 10,000
//! methods), `exporter` (the layer into this crate's exporter recorder), `exemplars` (the
//! same with `with_exemplars()`, no trace context), `bare-traced` and `exemplars-traced`
//! (requests with a valid `traceparent`); or, for calls of 1,000 response messages,
//! `stream-bare`, `stream-counts` (the method registered as unary), `stream-ttfm`,
//! `stream-sizes` or `stream-grpc` (`stream-req-*`: 1,000 request messages). The
//! difference between two counts (say 2,000 and 12,000 calls) divided by the difference in
//! calls is the cost of one call, set-up excluded. That mode never runs
//! the recorders' upkeep (a background task's work, paid per series every 5 s rather than
//! per call).

use std::{
    future::Future,
    hint::black_box,
    pin::{Pin, pin},
    sync::{Arc, Barrier, OnceLock},
    task::{Context, Poll, Waker, ready},
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion, Throughput};
use http::{HeaderName, HeaderValue, Method, Request, Response, Uri};
use http_body::{Body, Frame};
use metrics::{counter, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tonic_metrics::{
    ClientMetricsLayer, GrpcType, MethodRegistry, Naming, PrometheusExporter, ServerMetricsLayer,
    exporter::MetricsHandle,
    names::{
        A66_LATENCY_BUCKETS, A66_SIZE_BUCKETS, DEFAULT_BUCKETS, FIRST_MESSAGE_BUCKETS, GRPC_SERVER_CALL_DURATION,
        GRPC_SERVER_CALL_RCVD_BYTES, GRPC_SERVER_CALL_SENT_BYTES, SERVER_TIME_TO_FIRST_MESSAGE, SIZE_BUCKETS,
    },
};
use tonic_metrics_testing::inproc::{GrpcBody, GrpcEcho};
use tower::{Layer, Service};

const SERVICE: &str = "grpc.examples.echo.Echo";
const METHOD: &str = "UnaryEcho";
const PATH: &str = "/grpc.examples.echo.Echo/UnaryEcho";
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// A valid W3C `traceparent` (the spec's example): its trace id becomes the exemplar.
const TRACEPARENT_VALUE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// Calls per timed chunk; the recorders' upkeep runs between chunks. About what a real
/// exporter sees between two upkeeps (every 5 s) at the ~40k calls/s this kind of
/// machine serves over loopback. Much shorter chunks would distort the spread-over-many-
/// methods case: the first histogram sample of a method after an upkeep allocates a fresh
/// block in the recorder, so upkeep after every few calls would make nearly every call pay
/// for one.
const CHUNK: u64 = 200_000;
const STREAM_FRAMES: usize = 1_000;
const MANY_METHODS: usize = 10_000;

// ---------------------------------------------------------------------------------------
// Driving the gRPC-shaped inner service (`tonic_metrics_testing::inproc::GrpcEcho`).
// ---------------------------------------------------------------------------------------

/// A request to `uri` with a body of `frames` messages, and the `GrpcMethod` extension
/// generated clients set (a client layer reads it; the server layer ignores it).
fn request(uri: &Uri, frames: usize) -> Request<GrpcBody> {
    let mut request = Request::new(GrpcBody::request(frames));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri.clone();
    request
}

/// The same request with a valid `traceparent` header, as a traced client sends it.
fn traced_request(uri: &Uri) -> Request<GrpcBody> {
    let mut request = request(uri, 1);
    request.headers_mut().insert(TRACEPARENT, HeaderValue::from_static(TRACEPARENT_VALUE));
    request
}

fn client_request(uri: &Uri) -> Request<GrpcBody> {
    let mut request = request(uri, 1);
    request.extensions_mut().insert(tonic::GrpcMethod::new(SERVICE, METHOD));
    request
}

/// One full call: `poll_ready`, `call`, the response future, the body to its end.
fn drive<S, B>(service: &mut S, request: Request<GrpcBody>)
where
    S: Service<Request<GrpcBody>, Response = Response<B>>,
    B: Body,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(service.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let future = pin!(service.call(request));
    let Poll::Ready(Ok(response)) = future.poll(&mut cx) else { panic!("the call did not complete at once") };
    let mut body = pin!(response.into_body());
    while let Poll::Ready(Some(frame)) = body.as_mut().poll_frame(&mut cx) {
        black_box(frame.is_ok());
    }
}

// ---------------------------------------------------------------------------------------
// The naive comparator.
// ---------------------------------------------------------------------------------------

/// A metrics layer written the way hand-rolled ones usually are, recording the same
/// series as ours: the path is split and its parts copied into `String`s on every call,
/// and every record goes through a `counter!`/`histogram!` macro, which builds a `Key`
/// (a label `Vec`) and looks it up in the recorder each time. Messages are counted one
/// per data frame with a lookup each, as go-grpc-prometheus' own interceptors do
/// (`WithLabelValues(..).Inc()` per message); the status is read from the trailers (or
/// the headers of a trailers-only response). It is deliberately not a straw man: no
/// boxed future, no boxed body, no drop handling.
#[derive(Debug, Clone, Copy)]
struct NaiveLayer;

impl<S> Layer<S> for NaiveLayer {
    type Service = Naive<S>;

    fn layer(&self, inner: S) -> Naive<S> {
        Naive { inner }
    }
}

#[derive(Debug, Clone)]
struct Naive<S> {
    inner: S,
}

/// The label values of one call, shared by its future and bodies.
#[derive(Debug)]
struct NaiveLabels {
    service: String,
    method: String,
}

impl<S, B, RB> Service<Request<B>> for Naive<S>
where
    S: Service<Request<NaiveRequestBody<B>>, Response = Response<RB>>,
    S::Future: Unpin,
{
    type Response = Response<NaiveResponseBody<RB>>;
    type Error = S::Error;
    type Future = NaiveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path();
        let (service, method) =
            path.strip_prefix('/').and_then(|path| path.split_once('/')).unwrap_or(("unknown", "unknown"));
        let labels = Arc::new(NaiveLabels { service: service.to_owned(), method: method.to_owned() });
        counter!("grpc_server_started_total", "grpc_type" => "unary", "grpc_service" => labels.service.clone(), "grpc_method" => labels.method.clone())
            .increment(1);
        let start = Instant::now();
        let body_labels = labels.clone();
        let future = self.inner.call(request.map(|inner| NaiveRequestBody { inner, labels: body_labels }));
        NaiveFuture { inner: future, labels: Some(labels), start }
    }
}

#[derive(Debug)]
struct NaiveRequestBody<B> {
    inner: B,
    labels: Arc<NaiveLabels>,
}

impl<B: Body + Unpin> Body for NaiveRequestBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && frame.is_data()
        {
            let labels = &self.labels;
            counter!("grpc_server_msg_received_total", "grpc_type" => "unary", "grpc_service" => labels.service.clone(), "grpc_method" => labels.method.clone())
                .increment(1);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

struct NaiveFuture<F> {
    inner: F,
    labels: Option<Arc<NaiveLabels>>,
    start: Instant,
}

/// Records `handled` and the latency for a status read from a header value.
fn naive_handled(labels: &NaiveLabels, status: Option<&HeaderValue>, start: Instant) {
    let code = status
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map_or(tonic::Code::Unknown, tonic::Code::from_i32);
    counter!("grpc_server_handled_total", "grpc_type" => "unary", "grpc_service" => labels.service.clone(), "grpc_method" => labels.method.clone(), "grpc_code" => format!("{code:?}"))
        .increment(1);
    histogram!("grpc_server_handling_seconds", "grpc_type" => "unary", "grpc_service" => labels.service.clone(), "grpc_method" => labels.method.clone())
        .record(start.elapsed().as_secs_f64());
}

impl<F, RB, E> Future for NaiveFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>> + Unpin,
{
    type Output = Result<Response<NaiveResponseBody<RB>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = ready!(Pin::new(&mut self.inner).poll(cx))?;
        let labels = self.labels.take().expect("polled after completion");
        let start = self.start;
        // A trailers-only response (a handler's `Err`) carries its status in the headers.
        let labels = match response.headers().get(GRPC_STATUS) {
            Some(status) => {
                naive_handled(&labels, Some(status), start);
                None
            }
            None => Some(labels),
        };
        Poll::Ready(Ok(response.map(|inner| NaiveResponseBody { inner, labels, start })))
    }
}

#[derive(Debug)]
struct NaiveResponseBody<B> {
    inner: B,
    /// `None` once `handled` is recorded.
    labels: Option<Arc<NaiveLabels>>,
    start: Instant,
}

impl<B: Body + Unpin> Body for NaiveResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let (Some(Ok(frame)), Some(labels)) = (&frame, &self.labels) {
            if frame.is_data() {
                counter!("grpc_server_msg_sent_total", "grpc_type" => "unary", "grpc_service" => labels.service.clone(), "grpc_method" => labels.method.clone())
                    .increment(1);
            } else if let Some(trailers) = frame.trailers_ref() {
                naive_handled(labels, trailers.get(GRPC_STATUS), self.start);
                self.labels = None;
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

// ---------------------------------------------------------------------------------------
// Recorders and set-up.
// ---------------------------------------------------------------------------------------

/// A Prometheus recorder as the crate's exporter configures it (real histogram buckets,
/// each family's defaults).
fn prometheus_recorder() -> PrometheusRecorder {
    let buckets: [(Matcher, &[f64]); 6] = [
        (Matcher::Full(SERVER_TIME_TO_FIRST_MESSAGE.to_owned()), FIRST_MESSAGE_BUCKETS),
        (Matcher::Suffix("_seconds".to_owned()), DEFAULT_BUCKETS),
        (Matcher::Suffix("_bytes".to_owned()), SIZE_BUCKETS),
        (Matcher::Full(GRPC_SERVER_CALL_DURATION.to_owned()), A66_LATENCY_BUCKETS),
        (Matcher::Full(GRPC_SERVER_CALL_SENT_BYTES.to_owned()), A66_SIZE_BUCKETS),
        (Matcher::Full(GRPC_SERVER_CALL_RCVD_BYTES.to_owned()), A66_SIZE_BUCKETS),
    ];
    buckets
        .into_iter()
        .fold(PrometheusBuilder::new(), |builder, (matcher, buckets)| {
            builder.set_buckets_for_metric(matcher, buckets).expect("valid buckets")
        })
        .build_recorder()
}

/// Upkeep handles of every Prometheus recorder made so far, drained between timed chunks.
fn handles() -> &'static std::sync::Mutex<Vec<PrometheusHandle>> {
    static HANDLES: OnceLock<std::sync::Mutex<Vec<PrometheusHandle>>> = OnceLock::new();
    HANDLES.get_or_init(Default::default)
}

/// Upkeep handles of every exporter recorder (this crate's) made so far.
fn exporter_handles() -> &'static std::sync::Mutex<Vec<MetricsHandle>> {
    static HANDLES: OnceLock<std::sync::Mutex<Vec<MetricsHandle>>> = OnceLock::new();
    HANDLES.get_or_init(Default::default)
}

fn upkeep() {
    for handle in handles().lock().unwrap().iter() {
        handle.run_upkeep();
    }
    for handle in exporter_handles().lock().unwrap().iter() {
        handle.run_upkeep();
    }
}

/// A fresh Prometheus recorder for one layer; its handle joins the upkeep list.
fn explicit_recorder() -> PrometheusRecorder {
    let recorder = prometheus_recorder();
    handles().lock().unwrap().push(recorder.handle());
    recorder
}

/// The server layer recording into a fresh recorder of this crate's exporter, configured
/// as `PrometheusExporter::new()` configures it (what the example server installs); its
/// handle joins the upkeep list. Only this recorder keeps exemplars.
fn exporter_layer() -> ServerMetricsLayer {
    let recorder = PrometheusExporter::new().build_recorder().expect("a valid configuration");
    exporter_handles().lock().unwrap().push(recorder.handle());
    ServerMetricsLayer::new().with_registry(echo_registry()).with_recorder(recorder)
}

/// The naive layer's `counter!`/`histogram!` record into the global recorder: a
/// Prometheus one, installed once.
fn install_global_recorder() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let recorder = prometheus_recorder();
        handles().lock().unwrap().push(recorder.handle());
        metrics::set_global_recorder(recorder).expect("no other global recorder");
    });
}

fn echo_registry() -> MethodRegistry {
    MethodRegistry::new().with_method(SERVICE, METHOD, GrpcType::Unary)
}

/// The bench method registered as bidi streaming: its time to first message is observed.
fn streaming_registry() -> MethodRegistry {
    MethodRegistry::new().with_method(SERVICE, METHOD, GrpcType::BidiStream)
}

/// The server layer variants of the `stream` group, by name.
fn stream_layers() -> [(&'static str, ServerMetricsLayer); 4] {
    let layer = |registry| ServerMetricsLayer::new().with_registry(registry).with_recorder(explicit_recorder());
    [
        // Registered as unary: counting only, as before time to first message existed.
        ("layer_prometheus", layer(echo_registry())),
        // Registered as bidi: counting and the time to first message.
        ("layer_prometheus_ttfm", layer(streaming_registry())),
        // ... and a size observation per message.
        ("layer_prometheus_sizes", layer(streaming_registry()).with_message_sizes()),
        // gRPC's own metrics: per-call byte totals.
        ("layer_prometheus_grpc", layer(streaming_registry()).with_naming(Naming::Grpc)),
    ]
}

/// `count` methods, 100 per service, and the path of each.
fn many_methods(count: usize) -> (MethodRegistry, Vec<Uri>) {
    let mut registry = MethodRegistry::new();
    let mut paths = Vec::with_capacity(count);
    for i in 0..count {
        let service = format!("bench.v1.Service{}", i / 100);
        let method = format!("Method{}", i % 100);
        registry.add_method(&service, &method, GrpcType::Unary);
        paths.push(Uri::try_from(format!("/{service}/{method}")).expect("a valid path"));
    }
    (registry, paths)
}

/// Runs `iters` calls of `call`, timing chunks of [`CHUNK`] and running the recorders'
/// upkeep (untimed) between them.
fn timed(iters: u64, mut call: impl FnMut()) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK);
        let start = Instant::now();
        for _ in 0..n {
            call();
        }
        total += start.elapsed();
        left -= n;
        upkeep();
    }
    total
}

// ---------------------------------------------------------------------------------------
// Benchmarks.
// ---------------------------------------------------------------------------------------

fn unary(c: &mut Criterion) {
    install_global_recorder();
    let uri = Uri::from_static(PATH);
    let mut group = c.benchmark_group("unary");
    group.throughput(Throughput::Elements(1));

    let mut bare = GrpcEcho::UNARY;
    group.bench_function("bare", |b| b.iter_custom(|iters| timed(iters, || drive(&mut bare, request(&uri, 1)))));

    let mut layer = ServerMetricsLayer::new()
        .with_registry(echo_registry())
        .with_recorder(explicit_recorder())
        .layer(GrpcEcho::UNARY);
    group.bench_function("layer_prometheus", |b| {
        b.iter_custom(|iters| timed(iters, || drive(&mut layer, request(&uri, 1))))
    });

    let mut noop = ServerMetricsLayer::new()
        .with_registry(echo_registry())
        .with_recorder(metrics::NoopRecorder)
        .layer(GrpcEcho::UNARY);
    group.bench_function("layer_noop", |b| b.iter_custom(|iters| timed(iters, || drive(&mut noop, request(&uri, 1)))));

    let mut naive = NaiveLayer.layer(GrpcEcho::UNARY);
    group.bench_function("naive_prometheus", |b| {
        b.iter_custom(|iters| timed(iters, || drive(&mut naive, request(&uri, 1))))
    });

    // The client side: the bare inner service gets the same request (with its
    // `GrpcMethod` extension), the layered one gets it boxed into `tonic::body::Body`.
    let mut client_bare = GrpcEcho::UNARY;
    group.bench_function("client_bare", |b| {
        b.iter_custom(|iters| timed(iters, || drive(&mut client_bare, client_request(&uri))))
    });
    let mut client = ClientMetricsLayer::new()
        .with_registry(echo_registry())
        .with_recorder(explicit_recorder())
        .layer(GrpcEcho::UNARY);
    group.bench_function("client_layer_prometheus", |b| {
        b.iter_custom(|iters| timed(iters, || drive(&mut client, client_request(&uri))))
    });

    // This crate's exporter recorder: the default layer, then exemplars on, for calls
    // without trace context and with a valid `traceparent` (its bare baseline is the bare
    // service given the same traced request).
    let mut exporter = exporter_layer().layer(GrpcEcho::UNARY);
    group.bench_function("layer_exporter", |b| {
        b.iter_custom(|iters| timed(iters, || drive(&mut exporter, request(&uri, 1))))
    });
    let mut exemplars = exporter_layer().with_exemplars().layer(GrpcEcho::UNARY);
    group.bench_function("layer_exporter_exemplars", |b| {
        b.iter_custom(|iters| timed(iters, || drive(&mut exemplars, request(&uri, 1))))
    });
    let mut bare_traced = GrpcEcho::UNARY;
    group.bench_function("bare_traceparent", |b| {
        b.iter_custom(|iters| timed(iters, || drive(&mut bare_traced, traced_request(&uri))))
    });
    let mut exemplars_traced = exporter_layer().with_exemplars().layer(GrpcEcho::UNARY);
    group.bench_function("layer_exporter_exemplars_traceparent", |b| {
        b.iter_custom(|iters| timed(iters, || drive(&mut exemplars_traced, traced_request(&uri))))
    });
    group.finish();
}

fn stream(c: &mut Criterion) {
    install_global_recorder();
    let uri = Uri::from_static(PATH);
    let mut group = c.benchmark_group("stream");
    // Per message: criterion reports time per element, i.e. per streamed message.
    group.throughput(Throughput::Elements(STREAM_FRAMES as u64));
    let streaming = GrpcEcho { response_frames: STREAM_FRAMES };
    let cases: [(&str, GrpcEcho, usize); 2] =
        [("response_1000", streaming, 1), ("request_1000", GrpcEcho::UNARY, STREAM_FRAMES)];
    for (name, echo, request_frames) in cases {
        let mut bare = echo;
        group.bench_function(BenchmarkId::new(name, "bare"), |b| {
            b.iter_custom(|iters| timed(iters, || drive(&mut bare, request(&uri, request_frames))))
        });
        for (variant, layer) in stream_layers() {
            let mut layer = layer.layer(echo);
            group.bench_function(BenchmarkId::new(name, variant), |b| {
                b.iter_custom(|iters| timed(iters, || drive(&mut layer, request(&uri, request_frames))))
            });
        }
        let mut naive = NaiveLayer.layer(echo);
        group.bench_function(BenchmarkId::new(name, "naive_prometheus"), |b| {
            b.iter_custom(|iters| timed(iters, || drive(&mut naive, request(&uri, request_frames))))
        });
    }
    group.finish();
}

fn methods(c: &mut Criterion) {
    let mut group = c.benchmark_group("methods");
    group.throughput(Throughput::Elements(1));
    for count in [1, MANY_METHODS] {
        let (registry, paths) = many_methods(count);
        // Successive calls walk all methods, so a large table is not kept warm in cache
        // by hitting one entry.
        let mut next = 0;
        let mut bare = GrpcEcho::UNARY;
        group.bench_function(BenchmarkId::new("bare", count), |b| {
            b.iter_custom(|iters| {
                timed(iters, || {
                    next = (next + 1) % paths.len();
                    drive(&mut bare, request(&paths[next], 1));
                })
            })
        });
        // With a no-op recorder, what is left is the layer's own lookup and bookkeeping:
        // this separates its scaling from that of the recorder's storage.
        let mut noop = ServerMetricsLayer::new()
            .with_registry(registry.clone())
            .with_recorder(metrics::NoopRecorder)
            .layer(GrpcEcho::UNARY);
        group.bench_function(BenchmarkId::new("layer_noop", count), |b| {
            b.iter_custom(|iters| {
                timed(iters, || {
                    next = (next + 1) % paths.len();
                    drive(&mut noop, request(&paths[next], 1));
                })
            })
        });
        let mut layer =
            ServerMetricsLayer::new().with_registry(registry).with_recorder(explicit_recorder()).layer(GrpcEcho::UNARY);
        group.bench_function(BenchmarkId::new("layer_prometheus", count), |b| {
            b.iter_custom(|iters| {
                timed(iters, || {
                    next = (next + 1) % paths.len();
                    drive(&mut layer, request(&paths[next], 1));
                })
            })
        });
    }
    group.finish();
}

/// Both threads make `iters` calls through their own clone of `service`; the time is
/// the wall time of the pair, so it reads as time per call of each thread.
fn two_threads<S, B>(service: &S, iters: u64) -> Duration
where
    S: Service<Request<GrpcBody>, Response = Response<B>> + Clone + Send,
    B: Body,
{
    let uri = Uri::from_static(PATH);
    let barrier = Barrier::new(2);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let mut service = service.clone();
                let (uri, barrier) = (&uri, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        drive(&mut service, request(uri, 1));
                    }
                    start.elapsed()
                })
            })
            .collect();
        let elapsed = threads.into_iter().map(|t| t.join().expect("bench thread panicked")).max().unwrap_or_default();
        upkeep();
        elapsed
    })
}

fn contention(c: &mut Criterion) {
    install_global_recorder();
    let mut group = c.benchmark_group("contention_2_threads");
    group.throughput(Throughput::Elements(1));
    // The recorders' upkeep runs after each sample (both threads joined), untimed.
    let bare = GrpcEcho::UNARY;
    group.bench_function("bare", |b| b.iter_custom(|iters| two_threads(&bare, iters)));
    let layer = ServerMetricsLayer::new()
        .with_registry(echo_registry())
        .with_recorder(explicit_recorder())
        .layer(GrpcEcho::UNARY);
    group.bench_function("layer_prometheus", |b| b.iter_custom(|iters| two_threads(&layer, iters)));
    // Without the recorder's shared atomics, what is left is the layer's own sharing (the
    // method's reference count).
    let noop = ServerMetricsLayer::new()
        .with_registry(echo_registry())
        .with_recorder(metrics::NoopRecorder)
        .layer(GrpcEcho::UNARY);
    group.bench_function("layer_noop", |b| b.iter_custom(|iters| two_threads(&noop, iters)));
    let naive = NaiveLayer.layer(GrpcEcho::UNARY);
    group.bench_function("naive_prometheus", |b| b.iter_custom(|iters| two_threads(&naive, iters)));
    group.finish();
}

/// The measured loop of [`fixed_calls`], a function of its own so that callgrind can
/// count inside it only (`--toggle-collect=*call_loop*`): set-up work such as the
/// Prometheus recorder's clock calibration runs for a wall-clock time, so its instruction
/// count varies from run to run.
#[inline(never)]
fn call_loop(calls: usize, mut call: Box<dyn FnMut(usize)>) {
    // No upkeep here: it runs on the exporter's own task every 5 s, and its cost grows
    // with the number of series, not with the calls (with 10,000 methods one run costs
    // as much as thousands of calls, which would swamp the per-call figure).
    for i in 0..calls {
        call(i);
    }
}

/// `BENCH_CALLS=<variant>:<calls>`: makes that many calls of one variant and exits (for
/// `valgrind --tool=callgrind`); see the module docs.
fn fixed_calls(spec: &str) {
    let (variant, calls) = spec.split_once(':').expect("BENCH_CALLS=<variant>:<calls>");
    let calls: usize = calls.parse().expect("a number of calls");
    let uri = Uri::from_static(PATH);
    install_global_recorder();
    let paths = many_methods(MANY_METHODS).1;
    let run = |call: Box<dyn FnMut(usize)>| call_loop(calls, call);
    let server = || ServerMetricsLayer::new().with_registry(echo_registry()).with_recorder(explicit_recorder());
    match variant {
        "bare" => {
            let mut bare = GrpcEcho::UNARY;
            run(Box::new(move |_| drive(&mut bare, request(&uri, 1))));
        }
        "layer" => {
            let mut layer = server().layer(GrpcEcho::UNARY);
            run(Box::new(move |_| drive(&mut layer, request(&uri, 1))));
        }
        "noop" => {
            let layer = ServerMetricsLayer::new().with_registry(echo_registry()).with_recorder(metrics::NoopRecorder);
            let mut layer = layer.layer(GrpcEcho::UNARY);
            run(Box::new(move |_| drive(&mut layer, request(&uri, 1))));
        }
        "naive" => {
            let mut naive = NaiveLayer.layer(GrpcEcho::UNARY);
            run(Box::new(move |_| drive(&mut naive, request(&uri, 1))));
        }
        "exporter" => {
            let mut layer = exporter_layer().layer(GrpcEcho::UNARY);
            run(Box::new(move |_| drive(&mut layer, request(&uri, 1))));
        }
        "exemplars" => {
            let mut layer = exporter_layer().with_exemplars().layer(GrpcEcho::UNARY);
            run(Box::new(move |_| drive(&mut layer, request(&uri, 1))));
        }
        "bare-traced" => {
            let mut bare = GrpcEcho::UNARY;
            run(Box::new(move |_| drive(&mut bare, traced_request(&uri))));
        }
        "exemplars-traced" => {
            let mut layer = exporter_layer().with_exemplars().layer(GrpcEcho::UNARY);
            run(Box::new(move |_| drive(&mut layer, traced_request(&uri))));
        }
        "client-bare" => {
            let mut bare = GrpcEcho::UNARY;
            run(Box::new(move |_| drive(&mut bare, client_request(&uri))));
        }
        "client" => {
            let mut client = ClientMetricsLayer::new()
                .with_registry(echo_registry())
                .with_recorder(explicit_recorder())
                .layer(GrpcEcho::UNARY);
            run(Box::new(move |_| drive(&mut client, client_request(&uri))));
        }
        "bare-10k" => {
            let mut bare = GrpcEcho::UNARY;
            run(Box::new(move |i| drive(&mut bare, request(&paths[i % paths.len()], 1))));
        }
        "noop-10k" => {
            let (registry, paths) = many_methods(MANY_METHODS);
            let layer = ServerMetricsLayer::new().with_registry(registry).with_recorder(metrics::NoopRecorder);
            let mut layer = layer.layer(GrpcEcho::UNARY);
            run(Box::new(move |i| drive(&mut layer, request(&paths[i % paths.len()], 1))));
        }
        "layer-10k" => {
            let (registry, paths) = many_methods(MANY_METHODS);
            let mut layer = ServerMetricsLayer::new()
                .with_registry(registry)
                .with_recorder(explicit_recorder())
                .layer(GrpcEcho::UNARY);
            run(Box::new(move |i| drive(&mut layer, request(&paths[i % paths.len()], 1))));
        }
        stream if stream.starts_with("stream-") => {
            // `stream-<variant>`: 1,000 response messages; `stream-req-<variant>`: 1,000
            // request messages.
            let (variant, echo, request_frames) = match stream.strip_prefix("stream-req-") {
                Some(variant) => (variant, GrpcEcho::UNARY, STREAM_FRAMES),
                None => (&stream["stream-".len()..], GrpcEcho { response_frames: STREAM_FRAMES }, 1),
            };
            if variant == "bare" {
                let mut bare = echo;
                run(Box::new(move |_| drive(&mut bare, request(&uri, request_frames))));
                return;
            }
            let wanted =
                if variant == "counts" { "layer_prometheus".to_owned() } else { format!("layer_prometheus_{variant}") };
            let layer = stream_layers().into_iter().find(|(name, _)| *name == wanted).expect("a stream variant").1;
            let mut layer = layer.layer(echo);
            run(Box::new(move |_| drive(&mut layer, request(&uri, request_frames))));
        }
        other => panic!("unknown variant {other:?}"),
    }
}

fn main() {
    if let Ok(spec) = std::env::var("BENCH_CALLS") {
        fixed_calls(&spec);
        return;
    }
    // Short samples: the whole suite (this file and `scrape`) stays within a few minutes.
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    unary(&mut c);
    stream(&mut c);
    methods(&mut c);
    contention(&mut c);
    c.final_summary();
}
