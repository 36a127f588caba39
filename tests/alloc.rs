//! Heap allocations per warm RPC in the layer's own code: zero.
//!
//! A counting global allocator (per thread, so other tests cannot interfere) measures the
//! same in-process unary call through a bare gRPC-shaped service and through the layer;
//! the difference is what the layer allocates. This binary also checks that a layer
//! built before the global recorder is installed still records into it.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tonic_metrics::{ClientMetricsLayer, GrpcType, MethodRegistry, ServerMetricsLayer};
use tower::{Layer, Service, ServiceExt};

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

const PATH: &str = "/grpc.examples.echo.Echo/UnaryEcho";
const FRAME: &[u8] = b"\0\0\0\0\x05hello";

/// One data frame then `grpc-status: 0` trailers, like a unary tonic response.
struct UnaryBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for UnaryBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

/// A gRPC-shaped inner service: reads the request, answers one message and OK trailers.
#[derive(Clone)]
struct Unary;

impl<B: Body + Unpin + Send + 'static> Service<Request<B>> for Unary {
    type Response = Response<UnaryBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Response<UnaryBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Box::pin(async move {
            let mut body = request.into_body();
            while let Some(Ok(_)) = body.frame().await {}
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            Ok(Response::new(UnaryBody { data: Some(Bytes::from_static(FRAME)), trailers: Some(trailers) }))
        })
    }
}

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
    let mut layered = layer.layer(Unary);
    let mut bare = Unary;

    let bare_allocations = per_call(&mut bare);
    let layered_allocations = per_call(&mut layered);
    println!("allocations per unary call: bare {bare_allocations}, with the layer {layered_allocations}");
    assert_eq!(layered_allocations, bare_allocations, "the layer allocated on a warm unary call");

    // The client side: a `Channel` only takes `tonic::body::Body`, so the counting request
    // body is boxed into one: exactly one allocation per call, and nothing else.
    let mut client = ClientMetricsLayer::new().layer(Unary);
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
