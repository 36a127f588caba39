//! The layer's status, latency and message semantics, driven in-process through
//! `tower::Service` with gRPC-shaped bodies: exact control over headers, chunk
//! boundaries, trailers, errors and panics that a well-behaved tonic server never sends.

mod common;

use std::{convert::Infallible, panic::AssertUnwindSafe};

use bytes::Bytes;
use common::*;
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody, combinators::UnsyncBoxBody};
use proptest::prelude::*;
use tonic_metrics::{BoxError, RequestBody, ServerMetricsLayer, names::*};
use tower::{Service, ServiceBuilder, ServiceExt};

type TestBody = UnsyncBoxBody<Bytes, BoxError>;

/// A response the inner service will give: head, data chunks, then an optional ending.
#[derive(Clone)]
struct Scripted {
    status: StatusCode,
    header_status: Option<HeaderValue>,
    chunks: Vec<Bytes>,
    end: End,
}

#[derive(Clone)]
enum End {
    Trailers(Option<HeaderValue>),
    Nothing,
    Error(fn() -> BoxError),
}

impl Scripted {
    fn ok(chunks: Vec<Bytes>) -> Self {
        Self {
            status: StatusCode::OK,
            header_status: None,
            chunks,
            end: End::Trailers(Some(HeaderValue::from_static("0"))),
        }
    }

    fn body(self) -> TestBody {
        let mut frames: Vec<Result<Frame<Bytes>, BoxError>> =
            self.chunks.into_iter().map(|c| Ok(Frame::data(c))).collect();
        match self.end {
            End::Trailers(status) => {
                let mut trailers = HeaderMap::new();
                if let Some(status) = status {
                    trailers.insert("grpc-status", status);
                }
                frames.push(Ok(Frame::trailers(trailers)));
            }
            End::Nothing => {}
            End::Error(make) => frames.push(Err(make())),
        }
        StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    fn response(self) -> Response<TestBody> {
        let status = self.status;
        let header_status = self.header_status.clone();
        let mut response = Response::new(self.body());
        *response.status_mut() = status;
        if let Some(value) = header_status {
            response.headers_mut().insert("grpc-status", value);
        }
        response
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The layer over an inner service that reads the whole request body, then answers
/// with `script` (or fails, if `script` is `None`).
fn stack(
    recorder: metrics_util::debugging::DebuggingRecorder,
    script: Option<Scripted>,
) -> impl Service<Request<TestBody>, Response = Response<tonic_metrics::ResponseBody<TestBody>>, Error = BoxError> {
    let layer = ServerMetricsLayer::new().with_registry(echo_registry()).with_recorder(recorder);
    ServiceBuilder::new().layer(layer).service(tower::service_fn(move |request: Request<RequestBody<TestBody>>| {
        let script = script.clone();
        async move {
            let _ = request.into_body().collect().await;
            match script {
                Some(script) => Ok(script.response()),
                None => Err::<_, BoxError>("the inner service failed".into()),
            }
        }
    }))
}

fn request(chunks: Vec<Bytes>) -> Request<TestBody> {
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks.into_iter().map(|c| Ok(Frame::data(c))).collect();
    Request::builder()
        .uri(format!("/{ECHO}/UnaryEcho"))
        .body(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync())
        .unwrap()
}

/// Runs one RPC through the layer and drains the response; returns what was recorded.
async fn run(script: Option<Scripted>, request_chunks: Vec<Bytes>) -> Recorded {
    let (recorder, m) = Recorded::new();
    let service = stack(recorder, script);
    if let Ok(response) = service.oneshot(request(request_chunks)).await {
        let _ = response.into_body().collect().await;
    }
    m
}

fn unary() -> Labels {
    method("unary", "UnaryEcho")
}

fn handled(m: &Recorded, code: &str) -> Option<u64> {
    m.counter(SERVER_HANDLED, &with_code(unary(), code))
}

#[tokio::test]
async fn invalid_grpc_status_values_count_as_unknown() {
    for bad in [&b"abc"[..], b"-1", b"99", b"", b"\xe9", b"1 ", b"17"] {
        let value = HeaderValue::from_bytes(bad).unwrap();
        // In the trailers...
        let m = run(Some(Scripted { end: End::Trailers(Some(value.clone())), ..Scripted::ok(vec![]) }), vec![]).await;
        assert_eq!(handled(&m, "Unknown"), Some(1), "trailer {bad:?}");
        assert_eq!(m.counter_sum(SERVER_HANDLED), 1);
        // ... and in a trailers-only response.
        let script = Scripted { header_status: Some(value), end: End::Nothing, ..Scripted::ok(vec![]) };
        let m = run(Some(script), vec![]).await;
        assert_eq!(handled(&m, "Unknown"), Some(1), "header {bad:?}");
        assert_eq!(m.counter_sum(SERVER_HANDLED), 1);
    }
}

#[tokio::test]
async fn every_valid_code_is_read_from_trailers_and_headers() {
    for code in tonic_metrics::GrpcCode::ALL {
        let value = HeaderValue::from_str(&code.as_i32().to_string()).unwrap();
        let m = run(Some(Scripted { end: End::Trailers(Some(value.clone())), ..Scripted::ok(vec![]) }), vec![]).await;
        assert_eq!(handled(&m, code.as_str()), Some(1));
        let script = Scripted { header_status: Some(value), end: End::Nothing, ..Scripted::ok(vec![]) };
        let m = run(Some(script), vec![]).await;
        assert_eq!(handled(&m, code.as_str()), Some(1));
    }
}

#[tokio::test]
async fn non_200_responses_map_by_http_status() {
    let cases = [
        (400, "Internal"),
        (401, "Unauthenticated"),
        (403, "PermissionDenied"),
        (404, "Unimplemented"),
        (429, "Unavailable"),
        (502, "Unavailable"),
        (503, "Unavailable"),
        (504, "Unavailable"),
        (500, "Unknown"),
        (302, "Unknown"),
    ];
    for (status, code) in cases {
        let script =
            Scripted { status: StatusCode::from_u16(status).unwrap(), end: End::Nothing, ..Scripted::ok(vec![]) };
        let m = run(Some(script), vec![]).await;
        assert_eq!(handled(&m, code), Some(1), "HTTP {status}");
        assert_eq!(m.counter_sum(SERVER_HANDLED), 1);
    }
}

#[tokio::test]
async fn a_body_ending_without_status_is_unknown() {
    let frames = Bytes::from(frame(b"payload"));
    let m = run(Some(Scripted { end: End::Nothing, ..Scripted::ok(vec![frames]) }), vec![]).await;
    assert_eq!(handled(&m, "Unknown"), Some(1));
    assert_eq!(m.counter(SERVER_MSG_SENT, &unary()), Some(1));
    // Trailers without grpc-status.
    let m = run(Some(Scripted { end: End::Trailers(None), ..Scripted::ok(vec![]) }), vec![]).await;
    assert_eq!(handled(&m, "Unknown"), Some(1));
}

#[tokio::test]
async fn inner_service_errors_are_unknown() {
    let m = run(None, vec![]).await;
    assert_eq!(handled(&m, "Unknown"), Some(1));
    assert_eq!(m.counter(SERVER_STARTED, &unary()), Some(1));
}

#[tokio::test]
async fn body_errors_carry_their_status_or_are_unknown() {
    let m = run(Some(Scripted { end: End::Error(|| "connection lost".into()), ..Scripted::ok(vec![]) }), vec![]).await;
    assert_eq!(handled(&m, "Unknown"), Some(1));
    let status = || -> BoxError { Box::new(tonic::Status::resource_exhausted("too big")) };
    let m = run(Some(Scripted { end: End::Error(status), ..Scripted::ok(vec![]) }), vec![]).await;
    assert_eq!(handled(&m, "ResourceExhausted"), Some(1));
}

#[tokio::test]
async fn dropped_response_body_is_canceled_once() {
    let (recorder, m) = Recorded::new();
    let script = Scripted::ok(vec![Bytes::from(frame(b"one")), Bytes::from(frame(b"two"))]);
    let service = stack(recorder, Some(script));
    let response = service.oneshot(request(vec![])).await.unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);
    assert_eq!(handled(&m, "Canceled"), Some(1));
    assert_eq!(m.counter_sum(SERVER_HANDLED), 1);
    assert_eq!(m.counter(SERVER_MSG_SENT, &unary()), Some(1));
}

#[tokio::test]
async fn dropped_response_future_is_canceled_once() {
    let (recorder, m) = Recorded::new();
    let mut service = stack(recorder, Some(Scripted::ok(vec![])));
    let future = service.ready().await.unwrap().call(request(vec![]));
    drop(future);
    assert_eq!(handled(&m, "Canceled"), Some(1));
    assert_eq!(m.counter(SERVER_STARTED, &unary()), Some(1));
}

#[tokio::test]
async fn a_panicking_handler_is_counted_exactly_once() {
    let (recorder, m) = Recorded::new();
    let layer = ServerMetricsLayer::new().with_registry(echo_registry()).with_recorder(recorder);
    let mut service =
        ServiceBuilder::new().layer(layer).service(tower::service_fn(|_: Request<RequestBody<TestBody>>| async {
            if true {
                panic!("handler bug");
            }
            Ok::<Response<TestBody>, Infallible>(Scripted::ok(vec![]).response())
        }));
    let future = service.ready().await.unwrap().call(request(vec![]));
    let outcome = AssertUnwindSafe(future).catch_unwind().await;
    assert!(outcome.is_err(), "the panic reaches the caller");
    assert_eq!(handled(&m, "Canceled"), Some(1));
    assert_eq!(m.counter_sum(SERVER_HANDLED), 1);

    // A panic in `call` itself (before any future exists) is counted too.
    let (recorder, m) = Recorded::new();
    let layer = ServerMetricsLayer::new().with_registry(echo_registry()).with_recorder(recorder);
    let mut service = ServiceBuilder::new().layer(layer).service(PanicsInCall);
    let ready = service.ready().await.unwrap();
    assert!(std::panic::catch_unwind(AssertUnwindSafe(|| ready.call(request(vec![])))).is_err());
    assert_eq!(handled(&m, "Canceled"), Some(1));
    assert_eq!(m.counter(SERVER_STARTED, &unary()), Some(1));
}

#[derive(Clone)]
struct PanicsInCall;

impl Service<Request<RequestBody<TestBody>>> for PanicsInCall {
    type Response = Response<TestBody>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<RequestBody<TestBody>>) -> Self::Future {
        panic!("bug in call")
    }
}

#[tokio::test]
async fn torn_and_odd_frames_in_both_directions() {
    let mut stream = frame(b"");
    stream.extend(frame(&[7; 70_000]));
    stream.push(1); // compressed flag of a frame
    stream.extend(3u32.to_be_bytes());
    stream.extend(b"zip");
    stream.extend(&frame(b"torn")[..6]);
    let chunks: Vec<Bytes> = stream.chunks(1000).map(Bytes::copy_from_slice).collect();
    let m = run(Some(Scripted::ok(chunks.clone())), chunks).await;
    assert_eq!(m.counter(SERVER_MSG_SENT, &unary()), Some(3));
    assert_eq!(m.counter(SERVER_MSG_RECEIVED, &unary()), Some(3));
    // A 4 GiB length prefix waits for bytes that never come, without panicking.
    let huge = vec![Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3])];
    let m = run(Some(Scripted::ok(huge.clone())), huge).await;
    assert_eq!(m.counter(SERVER_MSG_SENT, &unary()), Some(0));
    assert_eq!(handled(&m, "OK"), Some(1));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Message counts do not depend on how the bytes are cut into chunks.
    #[test]
    fn message_counts_survive_any_chunking(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..12),
        request_cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..16),
        response_cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let bytes: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
        let cut = |cuts: &[prop::sample::Index]| -> Vec<Bytes> {
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            points.extend([0, bytes.len()]);
            points.sort_unstable();
            points.windows(2).map(|w| Bytes::copy_from_slice(&bytes[w[0]..w[1]])).collect()
        };
        let (requests, responses) = (cut(&request_cuts), cut(&response_cuts));
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let m = runtime.block_on(run(Some(Scripted::ok(responses)), requests));
        prop_assert_eq!(m.counter(SERVER_MSG_SENT, &unary()), Some(payloads.len() as u64));
        prop_assert_eq!(m.counter(SERVER_MSG_RECEIVED, &unary()), Some(payloads.len() as u64));
        prop_assert_eq!(handled(&m, "OK"), Some(1));
    }
}

/// A body that reports its end right after its only data frame, with no trailers: hyper
/// stops polling such a body and drops it.
struct EndsAfterData(Option<Bytes>);

impl http_body::Body for EndsAfterData {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.take().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}

#[tokio::test]
async fn a_body_that_ends_without_trailers_and_is_dropped_is_unknown_not_canceled() {
    let (recorder, m) = Recorded::new();
    let layer = ServerMetricsLayer::new().with_registry(echo_registry()).with_recorder(recorder);
    let service =
        ServiceBuilder::new().layer(layer).service(tower::service_fn(|_: Request<RequestBody<TestBody>>| async {
            Ok::<_, Infallible>(Response::new(EndsAfterData(Some(Bytes::from(frame(b"only"))))))
        }));
    let response = service.oneshot(request(vec![])).await.unwrap();
    let mut body = response.into_body();
    assert!(body.frame().await.unwrap().unwrap().is_data());
    assert!(http_body::Body::is_end_stream(&body));
    drop(body); // as hyper does once the body says it is over
    assert_eq!(handled(&m, "Unknown"), Some(1));
    assert_eq!(m.counter_sum(SERVER_HANDLED), 1);
    assert_eq!(m.counter(SERVER_MSG_SENT, &unary()), Some(1));
}
