//! A gRPC-shaped inner service and body for in-process tests and benchmarks: headers,
//! length-prefixed messages and `grpc-status: 0` trailers, with no network, no decoding and
//! no allocation of their own but the trailers' map, so a layer's cost is not diluted.

use std::{
    convert::Infallible,
    future::Future,
    hint::black_box,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, header::CONTENT_TYPE};
use http_body::{Body, Frame};
use tower_service::Service;

/// One gRPC message on the wire: flag byte, 4-byte length, a 5-byte payload.
pub const FRAME: &[u8] = b"\0\0\0\0\x05hello";

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// `frames` copies of [`FRAME`], then, for a response, `grpc-status: 0` trailers.
#[derive(Debug)]
pub struct GrpcBody {
    frames: usize,
    trailers: bool,
}

impl GrpcBody {
    /// A request body (a client stream's when `frames` > 1): messages, no trailers.
    pub fn request(frames: usize) -> Self {
        Self { frames, trailers: false }
    }

    /// A response body as tonic sends one: messages, then OK trailers.
    pub fn response(frames: usize) -> Self {
        Self { frames, trailers: true }
    }
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.frames > 0 {
            self.frames -= 1;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(FRAME)))));
        }
        if std::mem::take(&mut self.trailers) {
            let mut trailers = HeaderMap::with_capacity(1);
            trailers.insert(GRPC_STATUS, HeaderValue::from_static("0"));
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.frames == 0 && !self.trailers
    }
}

/// Reads the whole request, then answers `response_frames` messages and OK trailers: what
/// a tonic handler's service does, minus the decoding.
#[derive(Debug, Clone, Copy)]
pub struct GrpcEcho {
    /// Messages in each response.
    pub response_frames: usize,
}

impl GrpcEcho {
    /// One message in, one out.
    pub const UNARY: Self = Self { response_frames: 1 };
}

impl<B: Body + Unpin> Service<Request<B>> for GrpcEcho {
    type Response = Response<GrpcBody>;
    type Error = Infallible;
    type Future = GrpcEchoFuture<B>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        GrpcEchoFuture { body: request.into_body(), response_frames: self.response_frames }
    }
}

/// [`GrpcEcho`]'s future: a hand-written one rather than `Box::pin(async ..)`, so the bare
/// service allocates nothing per call.
#[derive(Debug)]
pub struct GrpcEchoFuture<B> {
    body: B,
    response_frames: usize,
}

impl<B: Body + Unpin> Future for GrpcEchoFuture<B> {
    type Output = Result<Response<GrpcBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        while let Some(frame) = ready!(Pin::new(&mut this.body).poll_frame(cx)) {
            black_box(frame.is_ok());
        }
        let mut response = Response::new(GrpcBody::response(this.response_frames));
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        Poll::Ready(Ok(response))
    }
}
